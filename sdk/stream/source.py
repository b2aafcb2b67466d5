"""The frame source model: :class:`Frame`, the :class:`Source` base class, and the two kinds of
source the concrete ones (files, capture, mjpeg, gstreamer) build on.

``source.read(timeout)`` returns the next :class:`Frame`, or None when no frame came within
``timeout`` seconds or the stream ended; the end is told apart by ``source.eof`` becoming True. A
source that failed (a file that cannot be decoded, a live source that could not reconnect) raises
:class:`~mirnet.sdk.errors.SourceError`.

:class:`PulledSource` (files, folders, iterables) decodes on demand in the reader's thread.
:class:`LiveSource` (camera, RTSP, HTTP, GStreamer) is read by a background thread into a small
buffer (``buffer`` frames, a :class:`~mirnet.sdk.stream.queue.BoundedQueue`). With ``drop=True``
(policy ``latest``) a full buffer drops its oldest frame (counted in ``source.dropped``), so
capture never stalls; with ``drop=False`` the reader waits. When the connection drops they
reconnect with exponential backoff (:class:`Reconnect`), counted in ``source.reconnects``
(successes) and ``source.reconnect_attempts``. The first connection is not retried: a wrong
address fails at once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, SourceError
from .queue import EMPTY, END, BoundedQueue

log = logging.getLogger("mirnet.stream")

__all__ = ["Frame", "Reconnect", "Source", "PulledSource", "LiveSource", "EndOfStream"]


@dataclass(eq=False)
class Frame:
    """One captured image. ``index`` counts frames from 0 in capture order (frames a live source
    dropped leave gaps); ``capture_time`` is ``time.monotonic()`` when the frame was captured
    (read from the file, received from the network); ``grab_s`` the seconds spent grabbing and
    decoding it; ``stream_time`` the source's own timestamp of the frame in seconds (RTP/container
    time, a camera buffer's time), None when the source has none. Frames that waited in a
    decoder's or a socket's buffer are grabbed late, so only ``stream_time`` tells their true age
    (see :class:`~mirnet.sdk.stream.stats.StreamStats`)."""

    index: int
    capture_time: float
    image: np.ndarray
    grab_s: float = 0.0
    stream_time: float | None = None


@dataclass(frozen=True)
class Reconnect:
    """Exponential backoff for live sources: wait ``initial_s * factor**(n-1)`` seconds (at most
    ``max_delay_s``) before attempt n; give up with SourceError after ``max_attempts`` failed
    attempts in a row (None: retry forever)."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 8.0
    max_attempts: int | None = 10

    def __post_init__(self):
        if self.initial_s < 0 or self.max_delay_s < 0:
            raise ConfigError(f"Reconnect delays must be >= 0, got initial_s={self.initial_s}, "
                              f"max_delay_s={self.max_delay_s}")
        if self.factor < 1:
            raise ConfigError(f"Reconnect factor={self.factor}: must be >= 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ConfigError(f"Reconnect max_attempts={self.max_attempts}: use >= 0 or None (forever)")

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.initial_s * self.factor ** max(0, attempt - 1))


class EndOfStream(Exception):
    """Raised by a live source's ``_grab`` at a clean end of stream (no reconnection)."""


class Source:
    """Base class. ``live``: frames come at the producer's pace (camera, network) rather than on
    demand (files). ``fps``: the nominal rate when known, else None. Counters: ``frames``
    captured (including those a live source's buffer ``dropped`` later), ``reconnects``
    (successful) and ``reconnect_attempts``."""

    live = False
    dropped = 0

    def __init__(self, uri: str):
        self.uri = uri
        self.fps: float | None = None
        self.eof = False
        self.frames = 0
        self.reconnects = 0
        self.reconnect_attempts = 0

    def open(self) -> "Source":
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def counters(self) -> dict:
        return {"frames": self.frames, "dropped": self.dropped, "reconnects": self.reconnects,
                "reconnect_attempts": self.reconnect_attempts}

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read(timeout=1.0)
            if frame is not None:
                yield frame
            elif self.eof:
                return

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class PulledSource(Source):
    """Finite sources decoded on demand in the reader's thread (``timeout`` is not needed)."""

    def _next_image(self) -> np.ndarray | None:
        raise NotImplementedError

    def read(self, timeout: float | None = None) -> Frame | None:
        if self.eof:
            return None
        t0 = time.monotonic()
        image = self._next_image()
        t1 = time.monotonic()
        if image is None:
            self.eof = True
            return None
        frame = Frame(self.frames, t1, image, t1 - t0)
        self.frames += 1
        return frame



class LiveSource(Source):
    """Sources read by a background thread. Subclasses implement ``_connect`` (raise on failure),
    ``_grab`` (block for the next image; raise EndOfStream at a clean end, anything else when the
    connection is lost), ``_disconnect`` and, when ``_grab`` can block for long, ``_interrupt``
    (thread-safe: unblock ``_grab`` from ``close()``)."""

    live = True

    def __init__(self, uri: str, *, reconnect: Reconnect | None = None, buffer: int = 1,
                 drop: bool = True, timeout: float = 5.0):
        super().__init__(uri)
        if buffer < 1:
            raise ConfigError(f"buffer={buffer}: must be >= 1 frame")
        self.reconnect = reconnect or Reconnect()
        self.buffer, self.timeout = buffer, timeout
        self._stop = threading.Event()
        self._frames = BoundedQueue(buffer, leaky=drop, abort=self._stop)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def drop(self) -> bool:
        """Policy ``latest``: a full buffer drops its oldest frame; else capture waits for the reader."""
        return self._frames.leaky

    @drop.setter
    def drop(self, value: bool) -> None:
        self._frames.leaky = value

    @property
    def dropped(self) -> int:
        return self._frames.dropped

    # subclass hooks
    def _connect(self) -> None:
        raise NotImplementedError

    def _grab(self) -> np.ndarray:
        raise NotImplementedError

    def _disconnect(self) -> None:
        pass

    def _interrupt(self) -> None:
        pass

    def _stream_time(self) -> float | None:
        """The source's timestamp (seconds) of the image ``_grab`` just returned, None if it has none."""
        return None

    def open(self) -> "Source":
        try:
            self._connect()
        except SourceError:
            self._disconnect()
            raise
        except Exception as exc:
            self._disconnect()
            raise SourceError(f"{self.uri}: cannot connect ({exc})") from exc
        self._thread = threading.Thread(target=self._run, name=f"source {self.uri}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    t0 = time.monotonic()
                    image = self._grab()
                    t1 = time.monotonic()
                except EndOfStream:
                    break
                except Exception as exc:  # connection lost: any error of the transport
                    if self._stop.is_set():
                        break
                    self._disconnect()
                    if not self._reconnect_after(exc):
                        break
                    continue
                frame = Frame(self.frames, t1, image, t1 - t0, self._stream_time())
                self.frames += 1  # captured, whether or not the buffer keeps it
                self._frames.put(frame)
        except BaseException as exc:  # a bug here must reach the reader, not vanish in the thread
            self._error = SourceError(f"{self.uri}: reader failed ({type(exc).__name__}: {exc})")
        finally:
            self._disconnect()
            self._frames.put(END)

    def _reconnect_after(self, cause: BaseException) -> bool:
        log.warning("%s: connection lost (%s); reconnecting", self.uri, cause)
        failed = 0
        while not self._stop.is_set():
            limit = self.reconnect.max_attempts
            if limit is not None and failed >= limit:
                flag = f"--reconnect-attempts {limit} on the command line, " if limit else ""
                self._error = SourceError(
                    f"{self.uri}: connection lost ({cause}); gave up after {failed} reconnection "
                    f"attempt(s) in a row, the limit ({flag}Reconnect(max_attempts={limit}) in Python); "
                    f"raise it, or retry forever with --reconnect-attempts 0 / max_attempts=None")
                return False
            if self._stop.wait(self.reconnect.delay(failed + 1)):
                return False
            self.reconnect_attempts += 1
            try:
                self._connect()
            except Exception as exc:
                self._disconnect()
                cause, failed = exc, failed + 1
                continue
            self.reconnects += 1
            log.warning("%s: reconnected (attempt %d)", self.uri, failed + 1)
            return True
        return False

    def read(self, timeout: float | None = None) -> Frame | None:
        item = self._frames.get(timeout)
        if item is EMPTY:
            return None
        if item is END:
            if self._error is not None:
                raise self._error
            self.eof = True
            return None
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._interrupt()
            self._thread.join(timeout=self.timeout + 2)
            self._thread = None
        else:
            self._disconnect()
