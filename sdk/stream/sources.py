"""Frame sources by URI, one dispatch table (pattern: jetson-utils ``videoSource``).

================================  =========================================================
``clip.mp4``, ``file://clip.mp4``  video file (OpenCV/FFmpeg); ``file://clip.mp4?loop=1`` loops
``frames/``, ``frames/*.png``      image folder or glob, sorted by name (``file://DIR?fps=25``)
``0``, ``/dev/video0``,            camera (V4L2 on Linux); ``?width=1280&height=720&fps=30&fourcc=MJPG``
``v4l2:///dev/video0``
``rtsp://host/path``               RTSP through OpenCV's FFmpeg backend (live, reconnects)
``http://host/video.mjpg``         MJPEG over HTTP(S) (``multipart/x-mixed-replace``), parsed here:
                                   works with or without a Content-Length per part (live, reconnects)
``gst://PIPELINE``                 a GStreamer pipeline ending in raw video (live, reconnects;
                                   a clean end of stream ends it)
``csi://0``                        Jetson CSI camera through ``nvarguscamerasrc``
                                   (``?width=1920&height=1080&fps=30&flip=0``)
================================  =========================================================

``open_source(uri)`` returns an opened :class:`Source`. ``source.read(timeout)`` returns the next
:class:`Frame`, or None when no frame came within ``timeout`` seconds or the stream ended; the
end is told apart by ``source.eof`` becoming True. A source that failed (a file that cannot be
decoded, a live source that could not reconnect) raises :class:`~mirnet.sdk.errors.SourceError`.

Live sources (camera, RTSP, HTTP, GStreamer) are read by a background thread into a small buffer
(``buffer`` frames). With ``drop=True`` (policy ``latest``) a full buffer drops its oldest frame
(counted in ``source.dropped``), so capture never stalls; with ``drop=False`` the reader waits.
When the connection drops they reconnect with exponential backoff (:class:`Reconnect`), counted in
``source.reconnects`` (successes) and ``source.reconnect_attempts``. The first connection is not
retried: a wrong address fails at once.
"""
from __future__ import annotations

import base64
import glob
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, MissingDependencyError, SourceError

log = logging.getLogger("mirnet.stream")

__all__ = ["Frame", "Reconnect", "Source", "VideoFileSource", "ImageFolderSource", "IterableSource",
           "CameraSource", "RtspSource", "HttpMjpegSource", "GstSource", "MultipartParser",
           "SOURCES", "open_source", "parse_uri", "csi_pipeline", "gst_argv", "gst_backend", "jpeg_end"]

GST_INSTALL_HINT = (
    "install GStreamer's command-line tools (Debian/Ubuntu: sudo apt-get install gstreamer1.0-tools "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good), or use an OpenCV built with GStreamer "
    "(JetPack's python3-opencv has it; pip's opencv-python-headless does not)")


@dataclass(eq=False)
class Frame:
    """One captured image. ``index`` counts frames from 0 in capture order (frames a live source
    dropped leave gaps); ``capture_time`` is ``time.monotonic()`` when the frame was captured
    (read from the file, received from the network); ``grab_s`` the seconds spent grabbing and
    decoding it."""

    index: int
    capture_time: float
    image: np.ndarray
    grab_s: float = 0.0


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


class _EndOfStream(Exception):
    """Raised by a live source's ``_grab`` at a clean end of stream (no reconnection)."""


# ---------------------------------------------------------------------------- base classes
class Source:
    """Base class. ``live``: frames come at the producer's pace (camera, network) rather than on
    demand (files). ``fps``: the nominal rate when known, else None. Counters: ``frames``
    captured (including those a live source's buffer ``dropped`` later), ``reconnects``
    (successful) and ``reconnect_attempts``."""

    live = False

    def __init__(self, uri: str):
        self.uri = uri
        self.fps: float | None = None
        self.eof = False
        self.frames = 0
        self.dropped = 0
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


class _PulledSource(Source):
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


class _LiveSource(Source):
    """Sources read by a background thread. Subclasses implement ``_connect`` (raise on failure),
    ``_grab`` (block for the next image; raise _EndOfStream at a clean end, anything else when the
    connection is lost), ``_disconnect`` and, when ``_grab`` can block for long, ``_interrupt``
    (thread-safe: unblock ``_grab`` from ``close()``)."""

    live = True

    def __init__(self, uri: str, *, reconnect: Reconnect | None = None, buffer: int = 1,
                 drop: bool = True, timeout: float = 5.0):
        super().__init__(uri)
        if buffer < 1:
            raise ConfigError(f"buffer={buffer}: must be >= 1 frame")
        self.reconnect = reconnect or Reconnect()
        self.buffer, self.drop, self.timeout = buffer, drop, timeout
        self._queue: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._ended = False
        self._thread: threading.Thread | None = None

    # subclass hooks
    def _connect(self) -> None:
        raise NotImplementedError

    def _grab(self) -> np.ndarray:
        raise NotImplementedError

    def _disconnect(self) -> None:
        pass

    def _interrupt(self) -> None:
        pass

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
                except _EndOfStream:
                    break
                except Exception as exc:  # connection lost: any error of the transport
                    if self._stop.is_set():
                        break
                    self._disconnect()
                    if not self._reconnect_after(exc):
                        break
                    continue
                frame = Frame(self.frames, t1, image, t1 - t0)
                self.frames += 1  # captured, whether or not the buffer keeps it
                self._push(frame)
        except BaseException as exc:  # a bug here must reach the reader, not vanish in the thread
            self._error = SourceError(f"{self.uri}: reader failed ({type(exc).__name__}: {exc})")
        finally:
            self._disconnect()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _reconnect_after(self, cause: BaseException) -> bool:
        log.warning("%s: connection lost (%s); reconnecting", self.uri, cause)
        failed = 0
        while not self._stop.is_set():
            if self.reconnect.max_attempts is not None and failed >= self.reconnect.max_attempts:
                self._error = SourceError(
                    f"{self.uri}: connection lost ({cause}); gave up after {failed} reconnection "
                    f"attempt(s) (Reconnect.max_attempts={self.reconnect.max_attempts})")
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

    def _push(self, frame: Frame) -> None:
        with self._cond:
            while len(self._queue) >= self.buffer:
                if self.drop:
                    self._queue.popleft()
                    self.dropped += 1
                elif self._stop.is_set():
                    return
                else:
                    self._cond.wait(0.1)
            self._queue.append(frame)
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    self.eof = True
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            frame = self._queue.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._interrupt()
            self._thread.join(timeout=self.timeout + 2)
            self._thread = None
        else:
            self._disconnect()


# ---------------------------------------------------------------------------- files and folders
def _cv2():
    import cv2

    return cv2


class VideoFileSource(_PulledSource):
    """A video file through OpenCV; ``loop=True`` starts again at the end (forever)."""

    def __init__(self, path: str | os.PathLike, *, loop: bool = False, fps: float | None = None):
        super().__init__(str(path))
        self.path, self.loop = Path(path), loop
        self._cap = None
        self._fps_override = fps

    def open(self) -> "Source":
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        self._cap = self._capture()
        self.fps = self._fps_override or self._cap.get(_cv2().CAP_PROP_FPS) or 25.0
        return self

    def _capture(self):
        cap = _cv2().VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"{self.path}: not a readable video (corrupt or unsupported codec)")
        return cap

    def _next_image(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok and self.loop and self.frames:
            self._cap.release()
            self._cap = self._capture()
            ok, image = self._cap.read()
        return image if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(_PulledSource):
    """Every image file in a folder (not recursive) or matching a glob, in name order; images keep
    their kind (8/16 bit, gray, alpha) as :func:`mirnet.sdk.media.read_image` reads them."""

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, loop: bool = False):
        super().__init__(str(path))
        self.pattern, self.loop = str(path), loop
        self.fps = fps or 25.0
        self.files: list[Path] = []
        self._pos = 0

    def open(self) -> "Source":
        from ..media import kind_of

        if os.path.isdir(self.pattern):
            files = [p for p in Path(self.pattern).iterdir()]
        else:
            files = [Path(p) for p in glob.glob(self.pattern)]
        self.files = sorted(p for p in files if p.is_file() and kind_of(p) == "image"
                            and not p.name.startswith("."))
        if not self.files:
            raise SourceError(f"{self.pattern}: no image files (suffixes png, jpg, bmp, tif, webp, ...) found")
        return self

    def _next_image(self) -> np.ndarray | None:
        from ..media import read_image

        if self._pos >= len(self.files):
            if not self.loop:
                return None
            self._pos = 0
        path = self.files[self._pos]
        self._pos += 1
        try:
            return read_image(path)
        except InputError as exc:
            raise SourceError(str(exc)) from exc


class IterableSource(_PulledSource):
    """Frames from any iterable of images (numpy arrays): ``Stream(my_generator(), ...)``."""

    def __init__(self, images: Iterable[np.ndarray], *, fps: float | None = None, live: bool = False):
        super().__init__(f"<{type(images).__name__}>")
        self._it = iter(images)
        self.fps = fps
        self.live = live

    def _next_image(self) -> np.ndarray | None:
        image = next(self._it, None)
        if image is not None and not isinstance(image, np.ndarray):
            raise SourceError(f"{self.uri}: item {self.frames} is a {type(image).__name__}, not a numpy image")
        return image


# ---------------------------------------------------------------------------- OpenCV live sources
class _CaptureSource(_LiveSource):
    """Live sources read with ``cv2.VideoCapture`` (``_grab`` returns within the read timeout)."""

    _cap = None

    def _open_capture(self):
        raise NotImplementedError

    def _connect(self) -> None:
        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.uri}: cannot open it ({self._hint()})")
        self._cap = cap
        self.fps = self.fps or cap.get(_cv2().CAP_PROP_FPS) or None

    def _hint(self) -> str:
        return "check the address and that the device or server is up"

    def _grab(self) -> np.ndarray:
        ok, image = self._cap.read()
        if not ok or image is None:
            raise ConnectionError("no frame from the capture")
        return image

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraSource(_CaptureSource):
    """A local camera by index (``0``) or device (``/dev/video0``), V4L2 on Linux."""

    def __init__(self, device: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, fourcc: str | None = None, **kwargs):
        super().__init__(str(device), **kwargs)
        self.device, self.width, self.height, self.want_fps, self.fourcc = device, width, height, fps, fourcc

    def _open_capture(self):
        cv2 = _cv2()
        api = cv2.CAP_V4L2 if os.name == "posix" and os.uname().sysname == "Linux" else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.device, api)
        if cap.isOpened():
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                                (cv2.CAP_PROP_FPS, self.want_fps)):
                if value:
                    cap.set(prop, float(value))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _hint(self) -> str:
        return ("no such camera, or it is busy or not permitted: list devices with "
                "`v4l2-ctl --list-devices` and check membership of the 'video' group")


class RtspSource(_CaptureSource):
    """RTSP through OpenCV's FFmpeg backend (open and read time out after ``timeout`` seconds;
    for RTSP over TCP set ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp``)."""

    def _open_capture(self):
        cv2 = _cv2()
        ms = int(self.timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _hint(self) -> str:
        return "check the address, credentials and that the server is up; OpenCV needs its FFmpeg backend"


# ---------------------------------------------------------------------------- HTTP MJPEG
def jpeg_end(data: bytes | bytearray, start: int = 0) -> int | None:
    """Index just past the end-of-image marker of the JPEG that starts at ``data[start]``, or None
    when ``data`` holds only part of it (or no JPEG starts there). Walks the marker segments, so an
    EXIF thumbnail's own end marker is not taken for the frame's end."""
    n = len(data)
    if n - start < 4 or data[start] != 0xFF or data[start + 1] != 0xD8:
        return None
    i = start + 2
    while i + 1 < n:
        if data[i] != 0xFF:
            return None  # not a marker where one must be: corrupt
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0xD9:
            return i + 2
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return None
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
        if m != 0xDA:
            continue
        # entropy-coded data after start-of-scan: the next FF not followed by 00, RSTn or FF
        while True:
            k = data.find(b"\xff", i)
            if k < 0 or k + 1 >= n:
                return None
            nxt = data[k + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                i = k + 2
            elif nxt == 0xFF:
                i = k + 1
            else:
                i = k
                break
    return None


class MultipartParser:
    """Incremental parser of a ``multipart/x-mixed-replace`` body (MJPEG over HTTP).

    ``feed(bytes)`` returns the complete part bodies found so far. A part ends after its
    ``Content-Length`` when the server sends one; otherwise a JPEG part ends at its end-of-image
    marker (found by walking the JPEG segments, so the frame is not held back until the next part
    arrives) and any other part at the next boundary. ``boundary`` may be given with or without
    its leading dashes, or None to take it from the first ``--`` line. ``closed`` becomes True at
    the closing boundary.
    """

    def __init__(self, boundary: str | bytes | None = None, *, max_part: int = 64 << 20):
        if isinstance(boundary, str):
            boundary = boundary.encode("latin-1")
        boundary = boundary.strip().strip(b'"').lstrip(b"-") if boundary else None
        self.delim = b"--" + boundary if boundary else None
        self.max_part = max_part
        self.closed = False
        self._buf = bytearray()
        self._state = "seek"
        self._length: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        parts: list[bytes] = []
        while not self.closed and self._step(parts):
            pass
        if len(self._buf) > self.max_part:
            raise SourceError(f"no complete part in {len(self._buf)} bytes: not an MJPEG stream, or parts "
                              f"larger than {self.max_part} bytes")
        return parts

    def _step(self, parts: list[bytes]) -> bool:
        buf = self._buf
        if self._state == "seek":
            if self.delim is None:
                m = re.search(rb"(?:^|\n)--([^\r\n]+)\r?\n", buf)
                if m is None:
                    return False
                self.delim = b"--" + m.group(1).strip().lstrip(b"-")
            p = buf.find(self.delim)
            if p < 0:
                keep = len(self.delim)
                if len(buf) > keep:
                    del buf[:len(buf) - keep]
                return False
            del buf[:p + len(self.delim)]
            self._state = "headers"
            return True
        if self._state == "headers":
            if buf[:2] == b"--":
                self.closed = True
                return False
            ends = [(i, n) for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
            if not ends:
                return False
            i, n = min(ends)
            header_lines = bytes(buf[:i]).decode("latin-1").splitlines()[1:]
            del buf[:i + n]
            self._length = None
            for line in header_lines:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length" and value.strip().isdigit():
                    self._length = int(value.strip())
            self._state = "body"
            return True
        # body
        if self._length is not None:
            if len(buf) < self._length:
                return False
            parts.append(bytes(buf[:self._length]))
            del buf[:self._length]
        else:
            end = jpeg_end(buf)
            if end is None:
                p = buf.find(self.delim)
                if p < 0:
                    return False
                end = p
                while end > 0 and buf[end - 1] in b"\r\n":
                    end -= 1
            parts.append(bytes(buf[:end]))
            del buf[:end]
        self._state = "seek"
        return True


class HttpMjpegSource(_LiveSource):
    """MJPEG over HTTP(S): one long response of ``multipart/x-mixed-replace`` JPEG parts (the
    format of mjpg-streamer, motion, most IP cameras). Credentials in the URL
    (``http://user:pass@host/...``) are sent as Basic authentication."""

    def __init__(self, url: str, **kwargs):
        super().__init__(url, **kwargs)
        parts = urllib.parse.urlsplit(url)
        self._headers = {"User-Agent": "mirnet-edge", "Accept": "multipart/x-mixed-replace, */*"}
        if parts.username is not None:
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            self.uri = urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))
        self.url = url
        self._resp = None
        self._parser: MultipartParser | None = None
        self._parts: deque[bytes] = deque()
        self.corrupt = 0

    def _connect(self) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url, headers=self._headers)
        try:
            resp = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{self.uri}: HTTP {exc.code} {exc.reason}") from exc
        ctype = resp.headers.get_content_type()
        if not ctype.startswith("multipart/"):
            resp.close()
            raise SourceError(f"{self.uri}: the server sends Content-Type {ctype!r}; an MJPEG stream is "
                              f"multipart/x-mixed-replace (for other video over HTTP, try a gst:// pipeline)")
        self._resp = resp
        self._parser = MultipartParser(resp.headers.get_param("boundary"))
        self._parts.clear()

    def _grab(self) -> np.ndarray:
        cv2 = _cv2()
        while True:
            while not self._parts:
                resp = self._resp
                if resp is None:
                    raise ConnectionError("closed")
                data = resp.read1(1 << 16)
                if not data:
                    raise ConnectionError("the server closed the stream")
                self._parts.extend(self._parser.feed(data))
                if self._parser.closed and not self._parts:
                    raise ConnectionError("the server ended the multipart stream")
            body = self._parts.popleft()
            image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) if body else None
            if image is not None:
                return image
            self.corrupt += 1
            log.warning("%s: skipped a part of %d bytes that is not a decodable image", self.uri, len(body))

    def _interrupt(self) -> None:
        resp = self._resp
        try:
            sock = resp.fp.raw._sock if resp is not None else None
            if sock is not None:
                import socket

                sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass

    def _disconnect(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            try:
                resp.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------- GStreamer
def cv2_has_gstreamer() -> bool:
    """Whether this OpenCV was built with its GStreamer video backend."""
    return re.search(r"GStreamer:\s*YES", _cv2().getBuildInformation()) is not None


def gst_backend() -> str:
    """How GStreamer pipelines run here: ``"opencv"`` (cv2 built with GStreamer), ``"launch"``
    (a ``gst-launch-1.0`` subprocess) or MissingDependencyError saying how to get GStreamer."""
    cv2 = _cv2()
    if cv2_has_gstreamer():
        return "opencv"
    if shutil.which("gst-launch-1.0"):
        return "launch"
    raise MissingDependencyError(
        f"gst:// and csi:// sources need GStreamer, which this machine lacks: OpenCV {cv2.__version__} "
        f"is built without it and gst-launch-1.0 is not on PATH; {GST_INSTALL_HINT}")


def gst_argv(pipeline: str) -> list[str]:
    """A pipeline description as gst-launch-1.0 arguments: one token per word (gst-launch quotes
    every argument, so a whole pipeline in one argument is a syntax error); shell-style quotes
    keep a property value with spaces together."""
    import shlex

    try:
        return shlex.split(pipeline)
    except ValueError:
        return pipeline.split()


def csi_pipeline(sensor_id: int = 0, *, width: int = 1920, height: int = 1080, fps: int = 30,
                 flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (nvarguscamerasrc), ending in BGR frames."""
    return (f"nvarguscamerasrc sensor-id={int(sensor_id)} ! "
            f"video/x-raw(memory:NVMM), width=(int){int(width)}, height=(int){int(height)}, "
            f"framerate=(fraction){int(fps)}/1, format=(string)NV12 ! "
            f"nvvidconv flip-method={int(flip)} ! video/x-raw, format=(string)BGRx ! "
            f"videoconvert ! video/x-raw, format=(string)BGR")


_CAPS_RE = re.compile(r"GstFdSink:mirnet_sink\.GstPad:sink: caps = (video/x-raw.*)")


def _cap_field(caps: str, name: str) -> str | None:
    m = re.search(rf"\b{name}=\((?:int|fraction|string)\)([^,;\s]+)", caps)
    return m.group(1) if m else None


class GstSource(_LiveSource):
    """A GStreamer pipeline ending in raw video; ``videoconvert ! video/x-raw,format=BGR`` and a
    sink are appended. Runs through OpenCV's GStreamer backend when cv2 has it, else as a
    ``gst-launch-1.0 -v`` subprocess writing frames of the negotiated caps to a pipe. A clean end
    of stream (EOS) ends the source; an error reconnects (restarts the pipeline)."""

    def __init__(self, pipeline: str, *, uri: str | None = None, end_is_eof: bool = True, **kwargs):
        super().__init__(uri or f"gst://{pipeline}", **kwargs)
        if not pipeline.strip():
            raise SourceError("gst://: empty pipeline; e.g. gst://videotestsrc ! video/x-raw,width=640,height=480")
        self.pipeline = pipeline.strip().rstrip("!").strip()
        self.end_is_eof = end_is_eof
        self.backend = gst_backend()
        self._cap = None
        self._proc: subprocess.Popen | None = None
        self._rfd: int | None = None
        self._lines: deque[str] = deque(maxlen=30)
        self._caps: str | None = None
        self._caps_event = threading.Event()
        self._shape: tuple[int, int, int] | None = None

    def _tail(self) -> str:
        lines = [ln for ln in self._lines if not ln.startswith("/Gst")]
        return " | ".join(lines[-6:]) or "no output"

    def _connect(self) -> None:
        tail = " ! videoconvert ! video/x-raw, format=(string)BGR"
        if self.backend == "opencv":
            cv2 = _cv2()
            drop = "true" if self.drop else "false"
            cap = cv2.VideoCapture(f"{self.pipeline}{tail} ! appsink name=mirnet_sink drop={drop} "
                                   f"max-buffers={self.buffer} sync=false", cv2.CAP_GSTREAMER)
            if not cap.isOpened():
                cap.release()
                raise SourceError(f"{self.uri}: OpenCV's GStreamer backend cannot start the pipeline "
                                  f"(check it with: gst-launch-1.0 {self.pipeline} ! fakesink)")
            self._cap = cap
            self.fps = self.fps or cap.get(cv2.CAP_PROP_FPS) or None
            return
        rfd, wfd = os.pipe()
        argv = [shutil.which("gst-launch-1.0") or "gst-launch-1.0", "-v", "-e",
                *gst_argv(f"{self.pipeline}{tail} ! fdsink name=mirnet_sink fd={wfd} sync=false")]
        self._lines.clear()
        self._caps, self._caps_event = None, threading.Event()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, pass_fds=(wfd,), text=True, errors="replace")
        except OSError as exc:
            os.close(rfd)
            raise SourceError(f"{self.uri}: cannot run gst-launch-1.0 ({exc})") from exc
        finally:
            os.close(wfd)
        self._proc, self._rfd = proc, rfd
        threading.Thread(target=self._watch, args=(proc, self._caps_event), daemon=True,
                         name="gst-launch output").start()
        if not self._caps_event.wait(self.timeout) or self._caps is None:
            self._disconnect()
            raise SourceError(f"{self.uri}: gst-launch-1.0 negotiated no raw video within {self.timeout:g} s "
                              f"({self._tail()})")
        caps = self._caps
        w, h, rate = _cap_field(caps, "width"), _cap_field(caps, "height"), _cap_field(caps, "framerate")
        if not (w and h):
            self._disconnect()
            raise SourceError(f"{self.uri}: cannot read the frame size from the caps {caps!r}")
        self._shape = (int(h), int(w), 3)
        if rate and "/" in rate:
            num, den = rate.split("/", 1)
            self.fps = self.fps or (float(num) / float(den) if float(den) and float(num) else None)

    def _watch(self, proc: subprocess.Popen, event: threading.Event) -> None:
        with proc.stdout:  # read to the end (gst-launch must never block on a full pipe), then close
            for line in proc.stdout:
                line = line.rstrip()
                self._lines.append(line)
                m = _CAPS_RE.search(line)
                if m and self._caps is None:
                    self._caps = m.group(1)
                    event.set()
        event.set()  # the process ended: stop waiting

    def _grab(self) -> np.ndarray:
        if self._cap is not None:
            ok, image = self._cap.read()
            if ok and image is not None:
                return image
            if self.end_is_eof:
                raise _EndOfStream
            raise ConnectionError("the pipeline stopped")
        h, w, c = self._shape
        stride = -(-w * c // 4) * 4  # GStreamer pads raw rows to 4 bytes
        size = stride * h
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            n = os.readv(self._rfd, [view[got:]]) if self._rfd is not None else 0
            if n == 0:
                rc = self._proc.wait() if self._proc is not None else -1
                if got == 0 and rc == 0 and self.end_is_eof:
                    raise _EndOfStream
                raise ConnectionError(f"gst-launch-1.0 exited with code {rc} ({self._tail()})")
            got += n
        rows = np.frombuffer(buf, np.uint8).reshape(h, stride)
        return rows[:, :w * c].reshape(h, w, c) if stride != w * c else rows.reshape(h, w, c)

    def _interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            stop_process(proc, 3)
        rfd, self._rfd = self._rfd, None
        if rfd is not None:
            os.close(rfd)


def stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    """Wait ``grace_s`` for ``proc`` to exit, then terminate it, then kill it."""
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- dispatch
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)


def parse_uri(uri: str | os.PathLike | int) -> tuple[str, str]:
    """``(scheme, rest)``: ``("file", "clip.mp4")`` for plain paths, ``("v4l2", "0")`` for a
    camera index, ``("v4l2", "/dev/video0")`` for a device, else the URI's own scheme."""
    if isinstance(uri, int):
        return "v4l2", str(uri)
    text = os.fspath(uri)
    m = _SCHEME_RE.match(text)
    if m:
        return m.group(1).lower(), m.group(2)
    if text.isdigit() or text.startswith("/dev/video"):
        return "v4l2", text
    return "file", text


def _split_query(rest: str, valid: tuple[str, ...], uri: str) -> tuple[str, dict[str, str]]:
    path, _, query = rest.partition("?")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{uri}: unknown option(s) {unknown}; valid options are {list(valid)}")
    return urllib.parse.unquote(path), options


def _num(options: dict, key: str, uri: str, cast=int):
    if key not in options:
        return None
    try:
        return cast(options[key])
    except ValueError:
        raise ConfigError(f"{uri}: option {key}={options[key]!r} is not a number") from None


def _flag(options: dict, key: str) -> bool:
    return options.get(key, "0").lower() in ("1", "true", "yes", "on", "")


def _open_file(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    from ..media import kind_of

    path, options = _split_query(rest, ("loop", "fps"), uri) if uri.startswith("file://") else (rest, {})
    fps = _num(options, "fps", uri, float) or common.get("fps")
    loop = _flag(options, "loop") if "loop" in options else common.get("loop", False)
    if os.path.isdir(path) or any(ch in path for ch in "*?["):
        return ImageFolderSource(path, fps=fps, loop=loop)
    if kind_of(path) == "image":
        return ImageFolderSource(path, fps=fps, loop=loop)
    if not os.path.exists(path):
        raise SourceError(f"{uri}: no such file or folder (sources: a video file, an image folder, a "
                          f"camera index, or a URI with one of the schemes {sorted(SOURCES)})")
    return VideoFileSource(path, loop=loop, fps=fps)


def _open_v4l2(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    path, options = _split_query(rest, ("width", "height", "fps", "fourcc"), uri)
    device: int | str = int(path) if path.isdigit() else path
    if isinstance(device, str) and not os.path.exists(device):
        raise SourceError(f"{uri}: no such camera device {device} (list them with `v4l2-ctl --list-devices`)")
    return CameraSource(device, width=_num(options, "width", uri), height=_num(options, "height", uri),
                        fps=_num(options, "fps", uri, float), fourcc=options.get("fourcc"), **live_kw)


def _open_rtsp(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    return RtspSource(uri, **live_kw)


def _open_http(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    return HttpMjpegSource(uri, **live_kw)


def _open_gst(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    return GstSource(rest, uri=uri, **live_kw)


def _open_csi(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    sensor, options = _split_query(rest, ("width", "height", "fps", "flip"), uri)
    sensor = sensor.strip("/") or "0"
    if not sensor.isdigit():
        raise ConfigError(f"{uri}: the CSI sensor id must be a number, e.g. csi://0")
    kw = {k: _num(options, k, uri) for k in ("width", "height", "fps", "flip") if k in options}
    return GstSource(csi_pipeline(int(sensor), **kw), uri=uri, end_is_eof=False, **live_kw)


#: scheme -> opener; plain paths are ``file``, camera indices and /dev/video* are ``v4l2``.
SOURCES: dict[str, Callable[[str, str, dict, dict], Source]] = {
    "file": _open_file,
    "v4l2": _open_v4l2,
    "rtsp": _open_rtsp,
    "rtsps": _open_rtsp,
    "http": _open_http,
    "https": _open_http,
    "gst": _open_gst,
    "csi": _open_csi,
}


def open_source(uri: str | os.PathLike | int | Source | Iterable[np.ndarray], *,
                reconnect: Reconnect | None = None, drop: bool = True, buffer: int = 1,
                timeout: float = 5.0, loop: bool = False, fps: float | None = None) -> Source:
    """Open a source by URI (see the module docstring) and return it; a :class:`Source` is opened
    and returned as it is, any other iterable of images is wrapped in :class:`IterableSource`.
    ``reconnect``, ``drop``, ``buffer`` and ``timeout`` (seconds to connect and between frames
    before a live source counts as dropped) apply to live sources; ``loop`` and ``fps`` to files."""
    if isinstance(uri, Source):
        return uri.open()
    if not isinstance(uri, (str, os.PathLike, int)):
        if isinstance(uri, Iterable) and not isinstance(uri, (bytes, np.ndarray)):
            return IterableSource(uri, fps=fps).open()
        raise ConfigError(f"source {uri!r}: expected a URI, a path, a camera index, a Source or an "
                          f"iterable of images")
    scheme, rest = parse_uri(uri)
    opener = SOURCES.get(scheme)
    if opener is None:
        raise ConfigError(f"source {os.fspath(uri) if not isinstance(uri, int) else uri}: unknown scheme "
                          f"{scheme!r}; valid schemes are {sorted(SOURCES)} (or a path or camera index)")
    text = str(uri) if isinstance(uri, int) else os.fspath(uri)
    live_kw = dict(reconnect=reconnect, drop=drop, buffer=buffer, timeout=timeout)
    return opener(text, rest, live_kw, {"loop": loop, "fps": fps}).open()
