"""``mirnet serve``: one Triton Inference Server (through PyTriton) for many cameras.

The server exposes model ``mirnet``: input ``image`` (UINT8, N x H x W x 3, BGR like the SDK),
outputs ``restored`` (UINT8, N x H*s x W*s x 3) and ``server_ms`` (FP32, N x 1: the time this
process spent on the frame's batch, so that clients can tell network time from compute).
Pre/post-processing and the network run in this process through :class:`~mirnet.sdk.Restorer`
(the same numbers as ``Restorer.restore``), one Restorer per model instance. Triton batches
requests of equal-size frames across clients (``max_batch``, ``max_queue_delay_us``), serves HTTP
and gRPC (health: ``/v2/health/ready``, ``/v2/models/mirnet/ready``) and Prometheus metrics
(``/metrics``). :meth:`Server.stop` lets Triton finish the requests in flight first.

PyTriton's Python-backend stub is a separate program that loads libpython; it must load the
running interpreter's own library (a different build of the same version, e.g. Debian's, fails
with ``'_thread.RLock' object has no attribute '_recursion_count'``), so the server is started
with this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sysconfig
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from .backends.remote import INPUT, MODEL_NAME, OUTPUT, TIMING
from .errors import ConfigError, MirnetError, ServerError, require
from .triton_repo import check_batching
from .zoo import DEFAULT_MODEL

log = logging.getLogger("mirnet.serve")

__all__ = ["Server", "python_backend_library_path"]


def python_backend_library_path(current: str | None) -> str | None:
    """``LD_LIBRARY_PATH`` (``current``) with this interpreter's shared-library folder first, so that
    PyTriton's Python-backend stub loads this interpreter's libpython; ``current`` unchanged when
    the interpreter has no shared library."""
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if not (libdir and library and os.path.isfile(os.path.join(libdir, library))):
        return current
    rest = [p for p in (current or "").split(os.pathsep) if p and p != libdir]
    return os.pathsep.join([libdir, *rest])


@contextlib.contextmanager
def _library_path() -> Iterator[None]:
    """``LD_LIBRARY_PATH`` of :func:`python_backend_library_path` while PyTriton starts tritonserver
    (it copies ``os.environ`` into the child), restored afterwards."""
    saved = os.environ.get("LD_LIBRARY_PATH")
    path = python_backend_library_path(saved)
    if path is not None:
        os.environ["LD_LIBRARY_PATH"] = path
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved


def _check_port(name: str, value: int) -> None:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{name}={value!r}: not a TCP port (1-65535)")


def _check_free(host: str, port: int, flag: str) -> None:
    """ServerError unless ``port`` can be listened on (gRPC listens with SO_REUSEPORT, so a second
    server on a busy port would start and share it silently)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServerError(f"port {port} on {host} is not free ({exc.strerror}); pick another with {flag} "
                              f"or stop the process that holds it") from exc


class Server:
    """A Triton server for ``model`` (a bundled name or a model file, run with ``backend``,
    ``threads``, ``device`` and ``gray_model`` like :class:`~mirnet.sdk.Restorer`: gray frames from
    monochrome and IR cameras run on a bundled model's gray specialist by default).

    ``host``: the address HTTP and gRPC listen on (``0.0.0.0``: every interface). ``max_batch``:
    frames per server-side batch; ``max_queue_delay_us``: how long Triton holds a request to batch
    it with others. ``instances``: model instances (one Restorer each) running batches in
    parallel. ``exit_timeout``: seconds :meth:`stop` lets requests in flight finish.

    ``start()`` returns once the model is ready (ServerError with Triton's log otherwise);
    ``stop()`` finishes the requests in flight, stops Triton and closes the Restorers. Also a
    context manager.
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, *, backend: str = "auto",
                 threads: int | None = None, device: str = "cpu", gray_model: str | os.PathLike | None = "auto",
                 host: str = "0.0.0.0",
                 http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002, max_batch: int = 8,
                 max_queue_delay_us: int = 2000, instances: int = 1, exit_timeout: int = 10):
        for name, port in (("http_port", http_port), ("grpc_port", grpc_port), ("metrics_port", metrics_port)):
            _check_port(name, port)
        if len({http_port, grpc_port, metrics_port}) != 3:
            raise ConfigError(f"http_port={http_port}, grpc_port={grpc_port}, metrics_port={metrics_port}: "
                              f"the three ports must differ")
        check_batching(max_batch, max_queue_delay_us, instances)
        if not isinstance(exit_timeout, int) or exit_timeout < 1:
            raise ConfigError(f"exit_timeout={exit_timeout!r}: seconds, must be an integer >= 1")
        self.model, self.backend, self.threads, self.device = model, backend, threads, device
        self.gray_model = gray_model
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.max_batch, self.max_queue_delay_us = max_batch, max_queue_delay_us
        self.instances, self.exit_timeout = instances, exit_timeout
        self.restorers: list = []
        self._triton = None
        self._workspace: str | None = None

    @property
    def urls(self) -> dict[str, str]:
        """Where clients connect (``grpc://`` and ``http://`` for :class:`~mirnet.sdk.Restorer`)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return {"grpc": f"grpc://{host}:{self.grpc_port}", "http": f"http://{host}:{self.http_port}",
                "metrics": f"http://{host}:{self.metrics_port}/metrics"}

    def start(self) -> "Server":
        if self._triton is not None:
            raise ConfigError("the server is already running; stop() it first")
        triton_mod = require("pytriton.triton", "serve")
        config_mod = require("pytriton.model_config", "serve")
        from .restorer import Restorer

        for port, flag in ((self.http_port, "--http-port"), (self.grpc_port, "--grpc-port"),
                           (self.metrics_port, "--metrics-port")):
            _check_free(self.host, port, flag)
        try:
            self.restorers = [Restorer(self.model, backend=self.backend, threads=self.threads, device=self.device,
                                       gray_model=self.gray_model) for _ in range(self.instances)]
            spec = self.restorers[0].spec
            if spec.channels != 3 or spec.out_channels != 3:
                raise ConfigError(f"{self.model}: the model takes {spec.channels} and returns {spec.out_channels} "
                                  f"channels; the server restores H x W x 3 frames")
            self._workspace = tempfile.mkdtemp(prefix="mirnet-serve-")
            config = triton_mod.TritonConfig(
                http_address=self.host, http_port=self.http_port, grpc_address=self.host, grpc_port=self.grpc_port,
                metrics_address=self.host, metrics_port=self.metrics_port, exit_timeout_secs=self.exit_timeout,
                strict_readiness=True)
            self._triton = triton_mod.Triton(config=config, workspace=os.path.join(self._workspace, "pytriton"))
            tensor = config_mod.Tensor
            self._triton.bind(
                model_name=MODEL_NAME, infer_func=[self._infer_function(r) for r in self.restorers],
                inputs=[tensor(name=INPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[tensor(name=OUTPUT, dtype=np.uint8, shape=(-1, -1, 3)),
                         tensor(name=TIMING, dtype=np.float32, shape=(1,))],
                config=config_mod.ModelConfig(max_batch_size=self.max_batch, batcher=config_mod.DynamicBatcher(
                    max_queue_delay_microseconds=self.max_queue_delay_us)),
                strict=True)
            with _library_path():
                self._triton.run()
        except MirnetError:
            self.stop()
            raise
        except Exception as exc:  # PyTriton raises its own and builtin errors when Triton cannot start
            logs = self._server_logs()
            self.stop()
            raise ServerError(f"Triton did not start ({type(exc).__name__}: {exc}){logs}") from exc
        return self

    def is_alive(self) -> bool:
        """Whether Triton and the model are up (False once stopped or when Triton died)."""
        return self._triton is not None and self._triton.is_alive()

    def stop(self) -> None:
        """Let the requests in flight finish (up to ``exit_timeout`` s), stop Triton, close the Restorers."""
        triton, self._triton = self._triton, None
        if triton is not None:
            triton.stop()
        for restorer in self.restorers:
            restorer.close()
        self.restorers = []
        workspace, self._workspace = self._workspace, None
        if workspace is not None:
            shutil.rmtree(workspace, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _server_logs(self, lines: int = 20) -> str:
        server = getattr(self._triton, "_triton_server", None)
        text = server.logs() if server is not None else ""
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return ("\nTriton's log ends with:\n" + "\n".join(tail)) if tail else ""

    @staticmethod
    def _infer_function(restorer):
        """One model instance: Triton's batch of requests (equal-size frames) through ``restorer``."""
        def infer(requests):
            frames = [frame for request in requests for frame in request[INPUT]]
            t0 = time.perf_counter()
            images = restorer.restore_batch(frames)
            ms = np.float32((time.perf_counter() - t0) * 1e3)
            out, k = [], 0
            for request in requests:
                n = len(request[INPUT])
                out.append({OUTPUT: np.stack(images[k:k + n]), TIMING: np.full((n, 1), ms, np.float32)})
                k += n
            return out

        return infer
