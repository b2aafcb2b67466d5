"""The remote backend: uint8 frames to a ``mirnet serve`` Triton server over gRPC or HTTP.

``grpc://HOST[:PORT][/MODEL][?timeout=S&reconnect=S]`` (port 8001) or ``http://...`` (port 8000).
The server's model (``mirnet`` by default) takes ``image``: UINT8 N x H x W x 3 BGR frames and
returns ``restored`` (UINT8, the same layout times the model's scale) and ``server_ms`` (its own
pre-processing + network + post-processing time per frame); pre/post-processing run on the server,
so this is a frame path (``supports_device_io``, :meth:`RemoteBackend.restore_frames_async`) and
``Restorer.restore`` and ``Stream`` send frames as they are. ``infer`` (the float path: gray,
alpha, tiles) sends 8-bit content as frames too and refuses 16-bit or float images.

``timeout``: seconds one request may take (default 10). ``reconnect``: seconds to keep retrying,
with exponential backoff, while the server is unreachable or restarting (default 30; 0: fail at
once); a request that fails that way is sent again, so a restarted server loses no frame.
``tritonclient`` is imported when a backend opens (``pip install 'mirnet-edge[serve]'``).
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, InputError, ServerError, require
from .base import Backend, InputSpec, check_frames

log = logging.getLogger("mirnet.remote")

__all__ = ["RemoteBackend", "RemoteTarget", "parse_url", "is_remote", "SCHEMES", "MODEL_NAME", "INPUT",
           "OUTPUT", "TIMING"]

#: URL schemes and their default ports (Triton's)
SCHEMES = {"grpc": 8001, "http": 8000}
#: the protocol of ``mirnet serve``: model name, input, outputs
MODEL_NAME, INPUT, OUTPUT, TIMING = "mirnet", "image", "restored", "server_ms"
QUERY_KEYS = ("timeout", "reconnect")
# gRPC status codes after which the same request is sent again: the server is down, restarting
# (its model not loaded yet) or did not answer in time; a restoration is idempotent
_RETRY_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "NOT_FOUND")
_PROBE = 16  # side of the frame that measures the server model's scale when connecting


def is_remote(model) -> bool:
    """Whether ``model`` names a server (``grpc://`` or ``http://``) rather than a model file."""
    return isinstance(model, str) and model.split("://", 1)[0].lower() in SCHEMES and "://" in model


@dataclass(frozen=True)
class RemoteTarget:
    """A parsed server URL (see the module docstring)."""

    scheme: str
    host: str
    port: int
    model: str = MODEL_NAME
    timeout: float = 10.0
    reconnect: float = 30.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}"


def parse_url(url: str) -> RemoteTarget:
    """``grpc://host:8001/model?timeout=5&reconnect=60`` -> RemoteTarget; ConfigError names the bad part."""
    form = "grpc://HOST[:PORT][/MODEL][?timeout=SECONDS&reconnect=SECONDS] or http://..."
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"{url!r}: unknown server scheme {parts.scheme!r}; valid schemes are "
                          f"{', '.join(s + '://' for s in SCHEMES)} ({form})")
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError:
        raise ConfigError(f"{url!r}: the port is not a number in 1-65535 ({form})") from None
    if not parts.hostname:
        raise ConfigError(f"{url!r}: no host; expected {form}")
    model = parts.path.strip("/") or MODEL_NAME
    if "/" in model:
        raise ConfigError(f"{url!r}: the path names one model (e.g. /{MODEL_NAME}), got {model!r}")
    values = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in QUERY_KEYS:
            raise ConfigError(f"{url!r}: unknown parameter {key!r}; valid parameters are {QUERY_KEYS}")
        try:
            values[key] = float(value)
        except ValueError:
            raise ConfigError(f"{url!r}: {key}={value!r} is not a number of seconds") from None
    target = RemoteTarget(scheme, parts.hostname, port, model, **values)
    _check_times(target.timeout, target.reconnect)
    return target


def _check_times(timeout: float, reconnect: float) -> None:
    if not timeout > 0:
        raise ConfigError(f"timeout={timeout}: seconds a request may take, must be > 0")
    if not reconnect >= 0:
        raise ConfigError(f"reconnect={reconnect}: seconds to retry an unreachable server, must be >= 0 "
                          f"(0: fail at once)")


class RemoteBackend(Backend):
    """Frames to a ``mirnet serve`` server (see the module docstring). Opening waits up to
    ``reconnect`` seconds for the server and its model to be ready, checks that the model speaks
    the protocol, and measures its scale with one small frame. ``reconnects`` counts the requests
    that succeeded after retrying (a server that was down, restarting or slow to answer)."""

    name = "remote"
    supports_device_io = True

    def __init__(self, url: str, *, timeout: float | None = None, reconnect: float | None = None):
        target = parse_url(url)
        if timeout is not None or reconnect is not None:
            target = RemoteTarget(target.scheme, target.host, target.port, target.model,
                                  target.timeout if timeout is None else timeout,
                                  target.reconnect if reconnect is None else reconnect)
            _check_times(target.timeout, target.reconnect)
        self.target, self.url = target, target.url
        self._triton = require(f"tritonclient.{target.scheme}", "serve")
        self._utils = require("tritonclient.utils", "serve")
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mirnet-remote")
        self.reconnects = 0
        try:
            scale = self._pool.submit(self._open).result()
        except BaseException:
            self.close()
            raise
        # pre/post-processing and padding happen on the server, and so do the activations: the
        # client pads nothing (pad_multiple 1) and never tiles on its own (activation_channels 0)
        self.input_spec = InputSpec(channels=3, out_channels=3, pad_multiple=1, scale=scale,
                                    input_name=INPUT, output_name=OUTPUT, activation_channels=0)

    # ------------------------------------------------------------------ the frame path
    def restore_frames_async(self, frames: Sequence[np.ndarray], order: str = "bgr", *,
                             camera: str | None = None) -> Future:
        """Send uint8 H x W x 3 ``frames`` of one shape and return at once; the future's ``result()``
        is the list of restored uint8 images in ``order``, and its ``timings`` (set before the result)
        ``{"infer": server seconds, "network": the rest of the round trip}``."""
        check_frames(frames, order, camera)
        if camera is not None:
            raise InputError(f"camera={camera!r}: the server takes H x W x 3 frames; convert camera frames "
                             f"to BGR first (cv2.cvtColor with COLOR_YUV2BGR_NV12 or COLOR_YUV2BGR_YUYV)")
        self._check_open()
        batch = np.stack(frames)
        if order == "rgb":
            batch = batch[..., ::-1]
        future: Future = Future()
        self._pool.submit(self._fulfil, future, batch, order)
        return future

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The float path: N x 3 x H x W RGB in [0, 1] holding 8-bit values (what the Restorer makes
        of uint8 gray, alpha or colour images) goes to the server as frames; InputError otherwise."""
        self.input_spec.check(batch)
        self._check_open()
        scaled = batch.astype(np.float32) * 255
        frames = np.rint(scaled)
        if frames.size and float(np.abs(scaled - frames).max()) > 1e-3:
            raise InputError("the server takes 8-bit frames and this image has finer levels (16-bit or float); "
                             "restore it with a local model, e.g. Restorer('denoise-lite')")
        frames = np.ascontiguousarray(frames.clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)[..., ::-1])
        images, _ = self._pool.submit(self._restore, frames).result()
        out = np.stack(images)[..., ::-1].transpose(0, 3, 1, 2)
        return out.astype(np.float32) * np.float32(1 / 255)

    def close(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # closing must not hide the caller's own result
                log.debug("%s: closing a client failed: %s", self.url, exc)

    # ------------------------------------------------------------------ internals (pool threads)
    def _check_open(self) -> None:
        if self._pool is None:
            raise ConfigError(f"{self.url}: the backend is closed")

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.target.scheme == "grpc":
                client = self._triton.InferenceServerClient(self.target.address)
            else:
                client = self._triton.InferenceServerClient(self.target.address, connection_timeout=self.target.timeout,
                                                            network_timeout=self.target.timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        """Forget this thread's client after a transport failure: a new one connects afresh (gRPC's
        own reconnection backoff would otherwise delay the first request after a restart)."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception as exc:  # a broken connection may fail to close; it is dropped anyway
                log.debug("%s: closing a failed client: %s", self.url, exc)

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (OSError, _NotReady)):  # HTTP: refused, reset, timed out
            return True
        if isinstance(exc, self._utils.InferenceServerException):
            status = str(exc.status() or "")
            if self.target.scheme == "grpc":
                return status.rsplit(".", 1)[-1] in _RETRY_GRPC
            # HTTP: no status for a dropped connection; 400 "unknown model" while a server restarts
            return status in ("", "None", "503", "504") or "unknown model" in str(exc.message())
        return type(exc).__module__.split(".")[0] in ("gevent", "geventhttpclient")

    def _with_retry(self, what: str, call):
        """``call(client)`` with this thread's client; transport failures are retried with backoff for
        up to ``reconnect`` seconds (a new client each time), then ServerError."""
        start = delay = None
        while True:
            try:
                result = call(self._client())
            except Exception as exc:
                if not self._retryable(exc):
                    raise ServerError(f"{self.url}: {what} failed: {_describe(exc)}") from exc
                self._drop_client()
                now = time.monotonic()
                if start is None:
                    start, delay = now, 0.05
                    if self.target.reconnect > 0:
                        log.warning("%s: %s failed (%s); retrying for up to %g s", self.url, what, _describe(exc),
                                    self.target.reconnect)
                if now - start >= self.target.reconnect:
                    raise ServerError(
                        f"{self.url}: {what} failed for {now - start:.1f} s ({_describe(exc)}); start the server "
                        f"(`mirnet serve`), check the address, or wait longer with ?reconnect=SECONDS") from exc
                time.sleep(min(delay, self.target.reconnect - (now - start)))
                delay = min(2 * delay, 2.0)
                continue
            if start is not None:
                with self._lock:
                    self.reconnects += 1
                log.warning("%s: reconnected after %.1f s", self.url, time.monotonic() - start)
            return result

    def _open(self) -> int:
        """Wait for the model and check its protocol; returns the model's scale."""
        name = self.target.model

        def ready(client):
            if not client.is_model_ready(name):
                raise _NotReady(f"model {name!r} is not ready")
            return client

        def describe(client):
            meta = client.get_model_metadata(name, **self._as_json)
            config = client.get_model_config(name, **self._as_json)
            return meta, config.get("config", config)

        try:
            self._with_retry(f"waiting for model {name!r}", ready)
        except ServerError as exc:
            if not isinstance(exc.__cause__, _NotReady):
                raise
            raise ServerError(f"{self.url}: the server answers but model {name!r} is not ready after "
                              f"{self.target.reconnect:g} s{self._available_models()}; name the model in the URL "
                              f"path ({self.target.scheme}://{self.target.address}/MODEL)") from exc.__cause__
        meta, config = self._with_retry("reading the model's metadata", describe)
        inputs = {t["name"]: t["datatype"] for t in meta.get("inputs", [])}
        outputs = {t["name"]: t["datatype"] for t in meta.get("outputs", [])}
        if inputs != {INPUT: "UINT8"} or outputs.get(OUTPUT) != "UINT8":
            raise ConfigError(
                f"{self.url}: model {name!r} takes {inputs} and returns {outputs}; the remote backend speaks the "
                f"protocol of `mirnet serve` (input {INPUT!r} UINT8 N x H x W x 3 BGR, output {OUTPUT!r} UINT8): "
                f"serve the model with `mirnet serve --model MODEL`")
        timed = outputs.get(TIMING) == "FP32"
        max_batch = int(config.get("max_batch_size", 0))
        if max_batch < 1:
            raise ConfigError(f"{self.url}: model {name!r} has max_batch_size {max_batch}; the protocol batches "
                              f"frames (N x H x W x 3): serve it with `mirnet serve`")
        self._max_batch, self._timed = max_batch, timed
        probe = np.zeros((1, _PROBE, _PROBE, 3), np.uint8)
        images, _ = self._restore(probe)
        return max(1, images[0].shape[0] // _PROBE)

    @property
    def _as_json(self) -> dict:
        return {"as_json": True} if self.target.scheme == "grpc" else {}

    def _available_models(self) -> str:
        """``"; models on the server: [...]"`` (PyTriton leaves its repository index empty: then
        whether ``mirnet serve``'s model is there), or ``""`` when that cannot be told."""
        try:
            client = self._client()
            index = client.get_model_repository_index(**self._as_json)
            models = index.get("models", []) if isinstance(index, dict) else index
            names = sorted({m.get("name") for m in models} - {None})
            if not names and client.is_model_ready(MODEL_NAME):
                names = [MODEL_NAME]
        except Exception as exc:  # the server went away meanwhile: the message says enough without
            log.debug("%s: listing the models failed: %s", self.url, exc)
            return ""
        return f"; models on the server: {names}" if names else ""

    def _request(self, client, chunk: np.ndarray):
        t = self._triton
        inp = t.InferInput(INPUT, list(chunk.shape), "UINT8")
        inp.set_data_from_numpy(chunk)
        outputs = [t.InferRequestedOutput(OUTPUT)] + ([t.InferRequestedOutput(TIMING)] if self._timed else [])
        if self.target.scheme == "grpc":
            return client.infer(self.target.model, [inp], outputs=outputs, client_timeout=self.target.timeout)
        return client.infer(self.target.model, [inp], outputs=outputs)

    def _restore(self, batch: np.ndarray) -> tuple[list[np.ndarray], dict]:
        """BGR uint8 N x H x W x 3 -> (restored BGR images, {"infer", "network"} seconds), in chunks
        of the server's max batch."""
        images: list[np.ndarray] = []
        server_s = round_trip = 0.0
        for i in range(0, len(batch), self._max_batch):
            chunk = np.ascontiguousarray(batch[i:i + self._max_batch])
            t0 = time.perf_counter()
            result = self._with_retry("a request", lambda client, chunk=chunk: self._request(client, chunk))
            round_trip += time.perf_counter() - t0
            out = result.as_numpy(OUTPUT)
            if out is None or out.ndim != 4 or len(out) != len(chunk):
                raise ServerError(f"{self.url}: the server answered {len(chunk)} frames with "
                                  f"{None if out is None else out.shape}; expected {len(chunk)} x H x W x 3")
            if self._timed:
                server_s += float(np.max(result.as_numpy(TIMING))) / 1e3
            images.extend(out)
        return images, {"infer": server_s, "network": max(0.0, round_trip - server_s)}

    def _fulfil(self, future: Future, batch: np.ndarray, order: str) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            images, timings = self._restore(batch)
            if order == "rgb":
                images = [np.ascontiguousarray(image[..., ::-1]) for image in images]
            future.timings = timings
            future.set_result(images)
        except BaseException as exc:
            future.set_exception(exc)


class _NotReady(Exception):
    """The server answers but the model is not loaded (yet)."""


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    status = getattr(exc, "status", None)
    status = status() if callable(status) else None
    return f"{status}: {text}" if status else f"{type(exc).__name__}: {text}"
