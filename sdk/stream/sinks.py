"""Frame sinks by URI, one dispatch table.

=============================  ==============================================================
``out.mp4``, ``file://out.mkv``  video file (mp4, mkv, avi, mov, m4v) through
                                 :class:`mirnet.sdk.media.VideoWriter`: written under a hidden
                                 name and renamed when closed, so the file is always playable
``frames/``, ``out/%06d.jpg``    image folder (``<frame index>.png``) or a printf pattern
``display://[title]``            an OpenCV window (needs the ``gui`` extra); q or Esc stops
``rtsp://host:8554/live``        H.264 pushed to an RTSP server (e.g. mediamtx) by an ``ffmpeg``
``rtp://host:5004``              or ``gst-launch-1.0`` subprocess
``null://``                      discards frames (speed measurements)
a Python callable                ``fn(image, frame)`` for every frame
=============================  ==============================================================

A sink receives uint8/uint16 images of any kind; video, display and network sinks convert to
8-bit BGR. Sinks that keep one frame size (video files, network) scale frames of another size to
the first one and say so once per new size.
"""
from __future__ import annotations

import fractions
import logging
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, MissingDependencyError
from .gstreamer import gst_argv
from .process import stop_process
from .registry import parse_uri
from .source import Frame

log = logging.getLogger("mirnet.stream")

__all__ = ["Sink", "VideoFileSink", "FolderSink", "DisplaySink", "NetworkSink", "CallbackSink",
           "NullSink", "SINKS", "open_sink", "to_bgr8", "ffmpeg_command", "gst_command"]

NETWORK_INSTALL_HINT = ("install ffmpeg (Debian/Ubuntu: sudo apt-get install ffmpeg) or GStreamer "
                        "(sudo apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base "
                        "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly, plus gstreamer1.0-rtsp "
                        "for rtsp://)")


def _cv2():
    import cv2

    return cv2


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 BGR view of any image kind (gray, BGRA, 16-bit, float in [0, 1])."""
    cv2 = _cv2()
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return np.ascontiguousarray(image)


class Sink:
    """Base class: ``open(fps)`` once, ``write(image, frame)`` per frame, then ``close()`` (finalise)
    or ``abort()`` (nothing useful was written). ``frames`` counts frames written; a sink sets
    ``wants_stop`` when its user asks to stop (a closed window)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.frames = 0
        self.fps: float | None = None
        self.wants_stop = False

    def open(self, fps: float | None = None) -> "Sink":
        self.fps = fps
        return self

    def write(self, image: np.ndarray, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class _FixedSize:
    """For sinks that keep the first frame's size: scale others to it, saying so once per size."""

    size_wh: tuple[int, int] | None = None

    def _fit(self, image: np.ndarray, frame: Frame) -> np.ndarray:
        h, w = image.shape[:2]
        if self.size_wh is None or (w, h) == self.size_wh:
            return image
        warned = self.__dict__.setdefault("_warned_sizes", set())
        if (w, h) not in warned:
            warned.add((w, h))
            log.warning("%s: frame %d is %dx%d but this output keeps one size, %dx%d: frames of the new "
                        "size are scaled to it", self.uri, frame.index, w, h, *self.size_wh)
        return _cv2().resize(image, self.size_wh, interpolation=_cv2().INTER_AREA)


class VideoFileSink(_FixedSize, Sink):
    """A video file; opened at the first frame (its size), finalised (renamed into place) by
    ``close()``. ``abort()`` deletes the partial file."""

    def __init__(self, path: str | os.PathLike):
        from ..media import VIDEO_SUFFIXES

        super().__init__(str(path))
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{path}: not a video suffix; use one of {list(VIDEO_SUFFIXES)}")
        self._writer = None

    def open(self, fps: float | None = None) -> "Sink":
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: folder {self.path.parent} does not exist")
        return super().open(fps)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        from ..media import VideoWriter

        image = to_bgr8(image)
        if self._writer is None:
            self.size_wh = (image.shape[1], image.shape[0])
            self._writer = VideoWriter(self.path, self.fps or 25.0, self.size_wh)
        self._writer.write(self._fit(image, frame))
        self.frames += 1

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()


class FolderSink(Sink):
    """One image file per frame: ``DIR/<index:06d>.png`` or a printf pattern such as
    ``out/frame_%05d.jpg`` (the frame index). Image kinds (16-bit, alpha) are kept where the
    format can hold them. Files are written atomically."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(str(path))
        text = os.fspath(path)
        self.pattern = text if "%" in text else None
        self.folder = Path(text).parent if self.pattern else Path(text)
        if self.pattern:
            try:
                self.pattern % 0
            except (TypeError, ValueError):
                raise ConfigError(f"{text}: a file pattern needs one integer field such as %06d") from None

    def open(self, fps: float | None = None) -> "Sink":
        self.folder.mkdir(parents=True, exist_ok=True)
        return super().open(fps)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        from ..media import write_image

        path = Path(self.pattern % frame.index) if self.pattern else self.folder / f"{frame.index:06d}.png"
        write_image(path, image)
        self.frames += 1


def has_gui() -> bool:
    """Whether this OpenCV can open windows (opencv-python-headless cannot)."""
    return re.search(r"GUI:\s*NONE", _cv2().getBuildInformation()) is None


class DisplaySink(Sink):
    """An OpenCV window. Runs in the thread that calls ``Stream.run()`` (OpenCV's GUI wants one
    thread). Pressing q or Esc, or closing the window, stops the stream."""

    def __init__(self, title: str = "mirnet"):
        super().__init__(f"display://{title}")
        cv2 = _cv2()
        if not has_gui():
            raise MissingDependencyError(
                f"display:// needs OpenCV with GUI support, and this OpenCV ({cv2.__version__}, "
                f"opencv-python-headless) has none: pip uninstall -y opencv-python-headless && "
                f"pip install 'mirnet-edge[gui]'; or write to a file, a folder or rtsp:// instead")
        self.title = title or "mirnet"
        self._shown = False

    def write(self, image: np.ndarray, frame: Frame) -> None:
        cv2 = _cv2()
        try:
            cv2.imshow(self.title, to_bgr8(image))
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            raise InputError(f"display://: OpenCV cannot show a window here ({exc}); is DISPLAY set?") from exc
        self._shown = True
        self.frames += 1
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        if key in (27, ord("q")) or closed:
            self.wants_stop = True

    def close(self) -> None:
        if self._shown:
            cv2 = _cv2()
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


def _fraction(fps: float) -> str:
    f = fractions.Fraction(fps).limit_denominator(1001)
    return f"{f.numerator}/{f.denominator}"


def ffmpeg_command(url: str, width: int, height: int, fps: float, *, exe: str = "ffmpeg") -> list[str]:
    """ffmpeg reading raw BGR frames on stdin and sending H.264 (x264, zero latency) to
    ``rtsp://`` (publishing to an RTSP server over TCP) or ``rtp://host:port``."""
    scheme = url.split("://", 1)[0].lower()
    out = ["-f", "rtsp", "-rtsp_transport", "tcp", url] if scheme.startswith("rtsp") else ["-f", "rtp", url]
    return [exe, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
            "-s", f"{width}x{height}", "-r", _fraction(fps), "-i", "-", "-an",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
            "-g", str(max(1, round(fps))), *out]


def _gst_has(element: str) -> bool:
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return False
    return subprocess.run([inspect, "--exists", element], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def gst_command(url: str, width: int, height: int, fps: float, *, exe: str = "gst-launch-1.0",
                has: Callable[[str], bool] = _gst_has) -> list[str]:
    """gst-launch-1.0 reading raw BGR frames on stdin (rows padded to 4 bytes) and sending
    H.264 (nvv4l2h264enc on Jetson, else x264enc) over RTP/UDP or to an RTSP server
    (rtspclientsink); RTP falls back to JPEG (rtpjpegpay, 4:2:0) when no H.264 encoder is installed."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    src = (f"fdsrc fd=0 ! rawvideoparse width={width} height={height} format=bgr "
           f"framerate={_fraction(fps)} ! videoconvert")
    gop = max(1, round(fps))
    if has("nvv4l2h264enc"):
        enc = (f"video/x-raw, format=I420 ! nvvidconv ! video/x-raw(memory:NVMM), format=I420 ! "
               f"nvv4l2h264enc insert-sps-pps=true iframeinterval={gop} ! h264parse")
    elif has("x264enc"):
        enc = (f"video/x-raw, format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
               f"key-int-max={gop} ! h264parse")
    else:
        enc = None
    if scheme.startswith("rtsp"):
        if enc is None or not has("rtspclientsink"):
            raise MissingDependencyError(
                f"{url}: sending RTSP with GStreamer needs an H.264 encoder (x264enc: Debian package "
                f"gstreamer1.0-plugins-ugly) and rtspclientsink (gstreamer1.0-rtsp); or "
                f"sudo apt-get install ffmpeg")
        return [exe, "-q", "-e", *gst_argv(f"{src} ! {enc} ! rtspclientsink location={url}")]
    if not parts.hostname or not parts.port:
        raise ConfigError(f"{url}: an RTP output needs a host and a port, e.g. rtp://127.0.0.1:5004")
    udp = f"udpsink host={parts.hostname} port={parts.port} sync=false"
    if enc is None:
        return [exe, "-q", "-e", *gst_argv(f"{src} ! video/x-raw, format=I420 ! jpegenc quality=85 ! rtpjpegpay ! {udp}")]
    return [exe, "-q", "-e", *gst_argv(f"{src} ! {enc} ! rtph264pay config-interval=1 pt=96 ! {udp}")]


class NetworkSink(_FixedSize, Sink):
    """``rtsp://`` / ``rtp://`` output through an ``ffmpeg`` (preferred) or ``gst-launch-1.0``
    subprocess found on PATH; ``tool`` forces one of them."""

    TOOLS = ("ffmpeg", "gst-launch-1.0")

    def __init__(self, url: str, *, tool: str | None = None):
        super().__init__(url)
        if tool is not None and tool not in self.TOOLS:
            raise ConfigError(f"tool={tool!r}: valid tools are {self.TOOLS}")
        found = [(t, shutil.which(t)) for t in ((tool,) if tool else self.TOOLS)]
        found = [(t, exe) for t, exe in found if exe]
        if not found:
            raise MissingDependencyError(f"{url}: network output needs {tool or 'ffmpeg or gst-launch-1.0'} "
                                         f"on PATH; {NETWORK_INSTALL_HINT}")
        self.tool, self.exe = found[0]
        self._proc: subprocess.Popen | None = None
        self._lines: deque[str] = deque(maxlen=20)
        self._stride = 0

    def command(self, width: int, height: int, fps: float) -> list[str]:
        if self.tool == "ffmpeg":
            return ffmpeg_command(self.uri, width, height, fps, exe=self.exe)
        return gst_command(self.uri, width, height, fps, exe=self.exe)

    def _start(self, width: int, height: int) -> None:
        argv = self.command(width, height, self.fps or 25.0)
        self._stride = 0 if self.tool == "ffmpeg" else -(-width * 3 // 4) * 4
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT)
        except OSError as exc:
            raise InputError(f"{self.uri}: cannot run {self.tool} ({exc})") from exc
        threading.Thread(target=self._drain, args=(self._proc,), daemon=True, name=f"{self.tool} output").start()

    def _drain(self, proc: subprocess.Popen) -> None:
        with proc.stdout:
            for line in proc.stdout:
                self._lines.append(line.decode("utf-8", "replace").rstrip())

    def write(self, image: np.ndarray, frame: Frame) -> None:
        image = to_bgr8(image)
        if self._proc is None:
            self.size_wh = (image.shape[1], image.shape[0])
            self._start(*self.size_wh)
        image = self._fit(image, frame)
        data = image
        if self._stride and self._stride != image.shape[1] * 3:
            h = image.shape[0]
            data = np.zeros((h, self._stride), np.uint8)
            data[:, :image.shape[1] * 3] = image.reshape(h, -1)
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(data)).cast("B"))
        except (BrokenPipeError, OSError) as exc:
            rc = self._proc.poll()
            raise InputError(f"{self.uri}: {self.tool} stopped (exit code {rc}): "
                             f"{' | '.join(self._lines) or exc}") from exc
        self.frames += 1

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        stop_process(proc, 10)  # closing stdin lets the encoder finish the stream


class CallbackSink(Sink):
    """Calls ``fn(image, frame)`` for every frame (in the thread that runs the stream)."""

    def __init__(self, fn: Callable[[np.ndarray, Frame], object]):
        super().__init__(f"<callback {getattr(fn, '__name__', type(fn).__name__)}>")
        self.fn = fn

    def write(self, image: np.ndarray, frame: Frame) -> None:
        self.fn(image, frame)
        self.frames += 1


class NullSink(Sink):
    """Counts and discards frames."""

    def __init__(self, uri: str = "null://"):
        super().__init__(uri)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        self.frames += 1


def _open_file_sink(uri: str, rest: str) -> Sink:
    from ..media import kind_of

    path = urllib.parse.unquote(rest) if uri.startswith("file://") else rest
    kind = kind_of(path)
    if kind == "video":
        return VideoFileSink(path)
    if "%" in path and kind == "image":
        return FolderSink(path)
    if kind is None and (os.path.isdir(path) or path.endswith(("/", os.sep)) or not Path(path).suffix):
        return FolderSink(path)
    raise InputError(f"sink {uri}: cannot tell what to write from {Path(path).suffix!r}; use a video file "
                     f"(.mp4, .mkv, .avi), a folder, a pattern like out/%06d.png, or a URI with one of the "
                     f"schemes {sorted(SINKS)}")


#: scheme -> opener; plain paths are ``file``.
SINKS: dict[str, Callable[[str, str], Sink]] = {
    "file": _open_file_sink,
    "display": lambda uri, rest: DisplaySink(rest.strip("/") or "mirnet"),
    "rtsp": lambda uri, rest: NetworkSink(uri),
    "rtsps": lambda uri, rest: NetworkSink(uri),
    "rtp": lambda uri, rest: NetworkSink(uri),
    "null": lambda uri, rest: NullSink(uri),
}


def open_sink(uri: str | os.PathLike | Sink | Callable | None, *, fps: float | None = None) -> Sink:
    """Open a sink by URI (see the module docstring); a :class:`Sink` is opened as it is, a
    callable becomes a :class:`CallbackSink`, None a :class:`NullSink`. ``fps`` is the frame rate
    written into video files and network streams."""
    if uri is None:
        sink: Sink = NullSink()
    elif isinstance(uri, Sink):
        sink = uri
    elif isinstance(uri, (str, os.PathLike)):
        text = os.fspath(uri)
        scheme, rest = parse_uri(text)
        if scheme == "v4l2":  # a bare number is a folder name for a sink, not a camera
            scheme, rest = "file", text
        opener = SINKS.get(scheme)
        if opener is None:
            raise ConfigError(f"sink {text}: unknown scheme {scheme!r}; valid schemes are {sorted(SINKS)} "
                              f"(or a path)")
        sink = opener(text, rest)
    elif callable(uri):
        sink = CallbackSink(uri)
    else:
        raise ConfigError(f"sink {uri!r}: expected a URI, a path, a Sink or a callable")
    return sink.open(fps)
