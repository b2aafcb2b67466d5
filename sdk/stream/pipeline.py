"""The real-time pipeline: capture -> preprocess -> infer -> postprocess -> sink, overlapping.

Capture, preprocess, infer and postprocess each run in a thread, joined by bounded queues; the
sink runs in the thread that calls :meth:`Stream.run` (OpenCV windows and signal handlers want
the main thread). Policies:

* ``latest`` (real time, the default for live sources): the queues in front of preprocess and
  infer keep only the newest frames; when a later stage is busy the stale ones are dropped and
  counted, and capture never waits.
* ``block`` (the default for files and folders): every queue waits; nothing is dropped. On a live
  source that is faster than the pipeline the backlog then builds up in the source's decoder or
  receive buffer, where no drop is counted: latency grows without bound. Only the frames' age
  (``stats["frame_age"]``) shows it, and the stream warns when it starts.

Recordings keep real time: for a live source under ``latest`` the video and network sinks put each
frame at its capture time and repeat the previous frame over the gaps drops leave
(:attr:`Sink.real_time <mirnet.sdk.stream.sinks.Sink>`), so a file lasts as long as the scene did.

A frame whose size or format differs from the previous one re-initialises the pipeline for it
(batches are split at the change, the network runs at the new size) and is reported once per
change (log warning, ``stats["events"]``, ``stats["size_changes"]``); video and network sinks,
which keep one size, scale such frames to their size and say so.

When the backend has a device path (``supports_device_io``: a TensorRT engine, PyTorch on CUDA, a
``mirnet serve`` server, whose time splits into ``infer`` on the server and ``network``),
uint8 colour frames skip the CPU preprocess and postprocess work: the infer stage hands them to
``backend.restore_frames_async`` (upload, pre-processing, network, post-processing, download next
to the network) and keeps one batch in flight while the next is submitted. Gray, alpha, 16-bit and
float frames, and frames the Restorer tiles, take the CPU path.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np

from ..errors import ConfigError
from ..zoo import DEFAULT_MODEL
from .queue import EMPTY, END, BoundedQueue
from .registry import open_source
from .sinks import Sink, open_sink, to_bgr8
from .source import Frame, Reconnect, Source
from .stats import StreamStats, serve_prometheus

log = logging.getLogger("mirnet.stream")

__all__ = ["Stream", "POLICIES", "describe_image", "side_by_side"]

POLICIES = ("latest", "block")


class _Item:
    __slots__ = ("frame", "prepared", "output", "image", "timings")

    def __init__(self, frame: Frame):
        self.frame = frame
        self.prepared = self.output = self.image = None
        self.timings = {"capture": frame.grab_s}


def describe_image(image: np.ndarray) -> str:
    """``"640x360 BGR uint8"``-style description of an image's size and format."""
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else image.shape[2]
    fmt = {1: "gray", 3: "BGR", 4: "BGRA"}.get(c, f"{c}-channel")
    return f"{w}x{h} {fmt} {image.dtype}"


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left | right`` side by side as one 8-bit BGR image, ``left`` scaled to ``right``'s height
    (super-resolution outputs are larger than their inputs)."""
    import cv2

    a, b = to_bgr8(left), to_bgr8(right)
    if a.shape[0] != b.shape[0]:
        w = max(1, round(a.shape[1] * b.shape[0] / a.shape[0]))
        a = cv2.resize(a, (w, b.shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(np.concatenate([a, b], axis=1))


class Stream:
    """Restore a live or recorded stream frame by frame.

    ``source``: a URI or path (see :mod:`mirnet.sdk.stream.registry`), a camera index, a
    :class:`Source`, or any iterable of images. ``sink``: a URI or path (see
    :mod:`mirnet.sdk.stream.sinks`), a :class:`Sink`, a callable ``fn(image, frame)``, or None
    (discard). ``model``: a bundled name, a model file, an opened Backend, or a
    :class:`~mirnet.sdk.Restorer` (not closed by the stream). ``gray_model``: what restores gray
    frames (see :class:`~mirnet.sdk.Restorer`; ignored when ``model`` is a Restorer). ``policy``: ``"latest"`` or
    ``"block"``; None picks ``latest`` for live sources and ``block`` for files. ``batch``: frames
    per inference call (``block`` waits for full batches; ``latest`` takes what is ready).
    ``side_by_side``: write ``input | output``. ``max_frames``: stop after reading that many.
    ``stats_json``: write the stats there every ``stats_interval`` seconds and at the end.
    ``prometheus``: serve the stats at ``http://127.0.0.1:PORT/metrics`` while running (0: any
    free port, see ``prometheus_port``). ``status``: True (stderr) or a text stream for a live
    one-line status. ``reconnect``: backoff of live sources. ``fps``: frame rate written to video
    and network sinks (default: the source's).

    ``run()`` blocks until the source ends, ``max_frames`` is reached, :meth:`stop` is called
    (from another thread or a signal handler) or an error occurs, finalises the sink (a video is
    closed and playable) and returns :meth:`stats`. Errors are raised after finalising; a
    KeyboardInterrupt stops without draining, finalises, and is raised again.
    """

    def __init__(self, source, sink=None, *, model=DEFAULT_MODEL, backend: str = "auto",
                 threads: int | None = None, device: str = "cpu", tile: int | None = None,
                 policy: str | None = None, batch: int = 1, side_by_side: bool = False,
                 max_frames: int | None = None, stats_json: str | os.PathLike | None = None,
                 stats_interval: float = 1.0, prometheus: int | None = None,
                 status: bool | TextIO = False, reconnect: Reconnect | None = None,
                 fps: float | None = None, order: str = "bgr", queue_size: int | None = None,
                 window: int = 8192, gray_model="auto"):
        if policy is not None and policy not in POLICIES:
            raise ConfigError(f"policy={policy!r}: valid policies are {POLICIES} (or None: latest for live "
                              f"sources, block for files)")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"batch={batch!r}: must be an integer >= 1")
        if max_frames is not None and max_frames < 0:
            raise ConfigError(f"max_frames={max_frames}: must be >= 0 (or None: until the source ends)")
        if stats_interval <= 0:
            raise ConfigError(f"stats_interval={stats_interval}: must be > 0 seconds")
        if prometheus is not None and not 0 <= prometheus <= 65535:
            raise ConfigError(f"prometheus={prometheus}: not a TCP port (0-65535)")
        if queue_size is not None and queue_size < 1:
            raise ConfigError(f"queue_size={queue_size}: must be >= 1")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                                or not (math.isfinite(fps) and fps > 0)):
            raise ConfigError(f"fps={fps!r}: must be a finite number > 0 (frames per second of the output), "
                              f"or None for the source's")
        self.source_spec, self.sink_spec, self.model = source, sink, model
        self.backend_name, self.threads, self.device, self.tile = backend, threads, device, tile
        self.gray_model = gray_model
        self.policy, self.batch, self.side_by_side, self.max_frames = policy, batch, side_by_side, max_frames
        self.stats_json, self.stats_interval, self.prometheus = stats_json, stats_interval, prometheus
        self.status, self.reconnect, self.fps, self.order = status, reconnect, fps, order
        self.queue_size, self.window = queue_size, window
        self.prometheus_port: int | None = None
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._errors: list[BaseException] = []
        self._stats = StreamStats(window=window)
        self._ran = False

    # ------------------------------------------------------------------ control
    def stop(self, *, drain: bool = True) -> None:
        """Stop reading; with ``drain`` the frames in flight are still written (thread-safe, and
        safe to call from a signal handler)."""
        self._stop.set()
        if not drain:
            self._abort.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stats(self) -> dict:
        """The current statistics (schema in :mod:`mirnet.sdk.stream.stats`)."""
        return self._stats.snapshot()

    # ------------------------------------------------------------------ stages
    def _fail(self, exc: BaseException, *, drain: bool = False) -> None:
        """Record an error and stop; ``drain`` (a source failure) still writes the frames already
        captured, otherwise (a failing stage or sink) they are discarded."""
        self._errors.append(exc)
        self._stop.set()
        if not drain:
            self._abort.set()

    def _capture(self, source: Source, out: BoundedQueue) -> None:
        prev = None
        n = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    break
                frame = source.read(timeout=0.2)
                if frame is None:
                    if source.eof:
                        break
                    continue
                n += 1
                sig = (frame.image.shape, frame.image.dtype.str)
                if prev is not None and sig != prev[0]:
                    msg = (f"frame {frame.index}: input changed from {prev[1]} to {describe_image(frame.image)}; "
                           f"re-initialising the pipeline for the new size")
                    log.warning("%s", msg)
                    self._stats.event(msg)
                    with self._stats.lock:
                        self._stats.size_changes += 1
                if prev is None or sig != prev[0]:
                    prev = (sig, describe_image(frame.image))
                self._stats.frame_in(frame.capture_time, time.monotonic(), frame.stream_time)
                out.put(_Item(frame))
        except BaseException as exc:
            self._fail(exc, drain=True)
        finally:
            out.put(END)

    def _worker(self, inq: BoundedQueue, outq: BoundedQueue, fn: Callable[[_Item], None]) -> None:
        try:
            while True:
                item = inq.get()
                if item is END:
                    break
                if self._abort.is_set():
                    continue
                fn(item)
                outq.put(item)
        except BaseException as exc:
            self._fail(exc)
            while inq.get() is not END:  # let upstream finish
                pass
        finally:
            outq.put(END)

    def _on_device(self, image: np.ndarray) -> bool:
        """Whether ``image`` takes the backend's device path (pre/post-processing next to the network:
        TensorRT or PyTorch on a GPU), see :meth:`Restorer.frames_path`. Other kinds (gray, alpha,
        16-bit, float, frames the Restorer tiles) are prepared and finished on the CPU."""
        return self._device_io and self._restorer.frames_path([image])

    def _preprocess(self, item: _Item) -> None:
        t0 = time.perf_counter()
        if not self._on_device(item.frame.image):  # device frames stay uint8 (prepared is None)
            item.prepared = self._restorer.prepare(item.frame.image, order=self.order)
        item.timings["preprocess"] = time.perf_counter() - t0

    def _postprocess(self, item: _Item) -> None:
        t0 = time.perf_counter()
        out = item.output if item.prepared is None else self._restorer.finish(item.prepared, item.output)
        item.image = side_by_side(item.frame.image, out) if self.side_by_side else out
        item.prepared = item.output = None
        item.timings["postprocess"] = time.perf_counter() - t0

    def _infer(self, inq: BoundedQueue, outq: BoundedQueue, policy: str) -> None:
        """Batches frames of one shape; device batches (see :meth:`_on_device`) are submitted to the
        backend asynchronously and handed on one batch later, so the next batch's upload and
        pre-processing overlap this one's compute; the batch in flight is handed on at once when
        nothing else is waiting."""
        pending = None
        in_flight = None  # (future, items, start) of the device batch running on the backend
        try:
            while True:
                if pending is not None:
                    first, pending = pending, None
                else:
                    first = inq.get(timeout=None if in_flight is None else 0)
                if first is EMPTY:
                    self._hand_on(in_flight, outq)
                    in_flight = None
                    continue
                if first is END:
                    self._hand_on(in_flight, outq)
                    in_flight = None
                    break
                if self._abort.is_set():
                    continue
                batch = [first]
                key = _batch_key(first)
                while len(batch) < self.batch:
                    nxt = inq.get(timeout=None if policy == "block" else 0)
                    if nxt is EMPTY:
                        break
                    if nxt is END or _batch_key(nxt) != key:
                        pending = nxt
                        break
                    batch.append(nxt)
                if first.prepared is None:
                    t0 = time.perf_counter()
                    future = self._restorer.backend.restore_frames_async(
                        [it.frame.image for it in batch], order=self.order)
                    self._hand_on(in_flight, outq)
                    in_flight = (future, batch, t0)
                    continue
                self._hand_on(in_flight, outq)
                in_flight = None
                x = batch[0].prepared.tensor if len(batch) == 1 else np.concatenate(
                    [it.prepared.tensor for it in batch])
                t0 = time.perf_counter()
                y = self._restorer.infer_tensor(x)
                self._emit(batch, y, time.perf_counter() - t0, outq)
        except BaseException as exc:
            self._fail(exc)
            while pending is not END and inq.get() is not END:
                pending = None
        finally:
            outq.put(END)

    def _hand_on(self, in_flight: tuple | None, outq: BoundedQueue) -> None:
        """Wait for the device batch ``in_flight`` (if any) and pass its images on."""
        if in_flight is not None:
            future, batch, t0 = in_flight
            images = future.result()
            # a remote backend's future splits its time into the server's and the network's
            self._emit(batch, images, time.perf_counter() - t0, outq, getattr(future, "timings", None))

    def _emit(self, batch: list[_Item], outputs, seconds: float, outq: BoundedQueue,
              timings: dict[str, float] | None = None) -> None:
        with self._stats.lock:
            self._stats.batches += 1
        for it, out in zip(batch, outputs, strict=True):
            it.output = out
            it.timings.update(timings or {"infer": seconds})
            outq.put(it)

    # ------------------------------------------------------------------ run
    def _open_restorer(self):
        from ..restorer import Restorer

        if isinstance(self.model, Restorer):
            return self.model, False
        return Restorer(self.model, backend=self.backend_name, threads=self.threads, device=self.device,
                        tile=self.tile, gray_model=self.gray_model), True

    def run(self) -> dict:
        """Run to the end (see the class docstring) and return the final statistics."""
        if self._ran:
            raise ConfigError("a Stream runs once; make a new one")
        self._ran = True
        stats = self._stats
        source = sink = server = restorer = None
        own_restorer = False
        threads: list[threading.Thread] = []
        interrupted = False
        try:
            if self.stats_json is not None and not os.path.isdir(os.path.dirname(os.fspath(self.stats_json)) or "."):
                raise ConfigError(f"stats_json={os.fspath(self.stats_json)!r}: its folder does not exist")
            # the sink first (a missing tool or GUI fails before the model loads), the source last
            # (a live source starts capturing when opened: frames during the model load are stale)
            sink = open_sink(self.sink_spec, fps=self.fps)
            restorer, own_restorer = self._open_restorer()
            self._restorer = restorer
            self._device_io = restorer.backend.supports_device_io
            source = open_source(self.source_spec, reconnect=self.reconnect,
                                 drop=self.policy != "block", buffer=max(1, self.batch))
            policy = self.policy or ("latest" if source.live else "block")
            if hasattr(source, "drop"):
                source.drop = policy == "latest"
            if source.live and policy == "block":
                log.warning("%s: policy block on a live source: when restoring is slower than the source, "
                            "frames queue up in its decoder or receive buffer, where no drop is counted, and "
                            "latency grows without bound (watch the frame age in the stats); use policy "
                            "latest to stay real time", source.uri)
            if sink.fps is None:
                sink.fps = source.fps
            sink.real_time = source.live and policy == "latest"
            stats.source, stats.sink = source, sink
            stats.info = {"source": source.uri, "sink": sink.uri, "model": _model_name(self.model, restorer),
                          "backend": getattr(restorer.backend, "name", type(restorer.backend).__name__),
                          "precision": getattr(restorer.backend, "precision", None),
                          "gray_model": restorer.gray_description,
                          "policy": policy, "batch": self.batch, "side_by_side": self.side_by_side}
            if self.prometheus is not None:
                try:
                    server = serve_prometheus(stats, self.prometheus)
                except OSError as exc:
                    raise ConfigError(f"prometheus={self.prometheus}: cannot listen on 127.0.0.1:"
                                      f"{self.prometheus} ({exc}); choose another port") from exc
                self.prometheus_port = server.server_address[1]
            # small queues: enough for every stage to find its next item ready (the overlap), no
            # more (frames waiting in queues are glass-to-glass latency); infer's input holds a
            # second batch in block mode so the next one forms while the current one runs
            leaky = policy == "latest"
            size = self.queue_size or (self.batch if leaky else self.batch + 1)
            drop = stats.drop
            q_pre = BoundedQueue(size, leaky=leaky, abort=self._abort, on_drop=drop)
            q_inf = BoundedQueue(max(size, self.batch if leaky else 2 * self.batch), leaky=leaky, abort=self._abort,
                           on_drop=drop)
            q_post = BoundedQueue(max(size, self.batch), leaky=False, abort=self._abort)
            q_sink = BoundedQueue(size, leaky=False, abort=self._abort)
            threads = [
                threading.Thread(target=self._capture, args=(source, q_pre), name="stream capture"),
                threading.Thread(target=self._worker, args=(q_pre, q_inf, self._preprocess),
                                 name="stream preprocess"),
                threading.Thread(target=self._infer, args=(q_inf, q_post, policy), name="stream infer"),
                threading.Thread(target=self._worker, args=(q_post, q_sink, self._postprocess),
                                 name="stream postprocess"),
            ]
            for t in threads:
                t.daemon = True
                t.start()
            stats.state = "running"
            interrupted = self._sink_loop(sink, q_sink)
        except KeyboardInterrupt:
            interrupted = True
            self.stop(drain=False)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=30)
            if source is not None:
                try:
                    source.close()
                except Exception as exc:  # closing must not hide the run's own result
                    log.warning("%s: close failed: %s", source.uri, exc)
            if sink is not None:
                self._finalise(sink)
            if own_restorer and restorer is not None:
                restorer.close()
            if server is not None:
                server.shutdown()
                server.server_close()
            errors = [e for e in self._errors if not isinstance(e, KeyboardInterrupt)]
            stats.state = ("failed" if errors else "interrupted" if interrupted or self._interrupted
                           else "finished")
            stats.error = f"{type(errors[0]).__name__}: {errors[0]}" if errors else None
            self._report(final=True)
        if errors:
            raise errors[0]
        if interrupted:
            raise KeyboardInterrupt
        return stats.snapshot()

    _interrupted = False

    def mark_interrupted(self) -> None:
        """Record that a signal stopped the stream (the CLI's handlers call this, then stop())."""
        self._interrupted = True

    def _finalise(self, sink: Sink) -> None:
        try:
            if sink.frames == 0 and self._errors:
                sink.abort()
            else:
                sink.close()
        except BaseException as exc:
            self._fail(exc)

    def _sink_loop(self, sink: Sink, inq: BoundedQueue) -> bool:
        stats = self._stats
        status_every = 0.5 if self._status_tty() else 5.0
        next_json = time.monotonic()
        next_status = next_json + status_every
        interrupted = False
        while True:
            try:
                now = time.monotonic()
                if self.stats_json and now >= next_json:
                    stats.write_json(self.stats_json)
                    next_json = now + self.stats_interval
                if self.status and now >= next_status:
                    self._report()
                    next_status = now + status_every
                item = inq.get(timeout=0.1)
                if item is EMPTY:
                    continue
                if item is END:
                    break
                if self._abort.is_set():
                    continue
                t0 = time.perf_counter()
                sink.write(item.image, item.frame)
                written = time.monotonic()
                item.timings["sink"] = time.perf_counter() - t0
                stats.record(item.timings, item.frame.capture_time, written)
                if sink.wants_stop:
                    self.stop()
            except KeyboardInterrupt:
                interrupted = True
                self.stop(drain=False)
            except BaseException as exc:  # a failed write: stop here (the stages give up once aborted)
                self._fail(exc)
                break
        return interrupted

    def _status_stream(self) -> TextIO | None:
        if self.status is True:
            return sys.stderr
        return self.status or None

    def _status_tty(self) -> bool:
        stream = self._status_stream()
        return bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def _report(self, final: bool = False) -> None:
        if final and self.stats_json:
            try:
                self._stats.write_json(self.stats_json)
            except OSError as exc:
                log.warning("cannot write %s: %s", self.stats_json, exc)
        stream = self._status_stream()
        if stream is None:
            return
        line = self._stats.status_line()
        if self._status_tty():
            stream.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
        elif not final:
            stream.write(line + "\n")
        stream.flush()


def _batch_key(item: _Item) -> tuple:
    """Items of one key form one batch: the prepared tensor's shape, or a device frame's shape."""
    if item.prepared is None:
        return ("device", *item.frame.image.shape)
    return item.prepared.tensor.shape


def _model_name(model, restorer) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return str(getattr(restorer.backend, "path", type(restorer.backend).__name__))


def run_stream(source, sink=None, **kwargs) -> dict:
    """``Stream(source, sink, **kwargs).run()``."""
    return Stream(source, sink, **kwargs).run()

