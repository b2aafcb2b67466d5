"""Frame sinks by URI, one dispatch table.

=============================  ==============================================================
``out.mp4``, ``file://out.mkv``  video file (mp4, mkv, avi, mov, m4v) through
                                 :class:`mirnet.sdk.media.VideoWriter`: written under a hidden
                                 name and renamed when closed, so the file is always playable
``frames/``, ``out/%06d.jpg``    image folder (``<frame index>.png``) or a printf pattern
``display://[title]``            an OpenCV window (needs the ``gui`` extra); q or Esc stops
``rtsp://host:8554/live``        H.264 pushed to an RTSP server (e.g. mediamtx) by an ``ffmpeg``
``rtp://host:5004``              or ``gst-launch-1.0`` subprocess: we do not serve RTSP. RTP is
                                 H.264 with payload type 96 (:func:`rtp_sdp` describes it)
``null://``                      discards frames (speed measurements)
a Python callable                ``fn(image, frame)`` for every frame
=============================  ==============================================================

A sink receives uint8/uint16 images of any kind; video, display and network sinks convert to
8-bit BGR. Sinks that keep one frame size (video files, network) scale frames of another size to
the first one and say so once per new size. Sinks that write at a fixed rate (video files,
network) keep real time for live sources (``real_time``, see :class:`Sink`). A failed write raises
:class:`~mirnet.sdk.errors.OutputError` naming the output and the cause (a full disk).
"""
from __future__ import annotations

import errno
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

from ..errors import ConfigError, InputError, MirnetError, MissingDependencyError, OutputError
from .gstreamer import gst_argv
from .process import stop_process
from .registry import parse_uri
from .source import Frame

log = logging.getLogger("mirnet.stream")

__all__ = ["Sink", "VideoFileSink", "FolderSink", "DisplaySink", "NetworkSink", "CallbackSink",
           "NullSink", "SINKS", "open_sink", "to_bgr8", "ffmpeg_command", "gst_command", "rtp_sdp",
           "DEFAULT_FPS"]

#: the frame rate of video files and network streams when neither the caller nor the source gives one
DEFAULT_FPS = 25.0

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
    ``wants_stop`` when its user asks to stop (a closed window).

    ``real_time`` (set by :class:`~mirnet.sdk.stream.Stream` for a live source under policy
    ``latest``): sinks that write at a fixed rate put each frame at its capture time on the ``fps``
    grid, repeating the previous frame over the slots that dropped frames left (``repeated``) and
    skipping a frame whose slot is already written, i.e. a source faster than ``fps``
    (``skipped``), so the output lasts as long as the scene did. Otherwise each frame takes the
    next slot (files: nothing is lost, nothing repeated)."""

    real_time = False

    def __init__(self, uri: str):
        self.uri = uri
        self.frames = 0
        self.repeated = 0
        self.skipped = 0
        self.fps: float | None = None
        self.wants_stop = False
        self._t0: float | None = None
        self._slots = 0

    def open(self, fps: float | None = None) -> "Sink":
        self.fps = fps
        return self

    def write(self, image: np.ndarray, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.close()

    def counters(self) -> dict:
        return {"frames": self.frames, "repeated": self.repeated, "skipped": self.skipped}

    def _gap(self, frame: Frame) -> int | None:
        """For fixed-rate sinks: how many slots before ``frame`` to fill with the previous frame
        (0 without ``real_time``), or None when ``frame``'s slot is already written (skip it)."""
        if not self.real_time:
            return 0
        if self._t0 is None:
            self._t0 = frame.capture_time
        gap = round((frame.capture_time - self._t0) * (self.fps or DEFAULT_FPS)) - self._slots
        if gap >= 0:
            return gap
        self.skipped += 1
        if self.skipped == 1:
            log.warning("%s: frames come faster than this output's %g fps; frames whose time slot is already "
                        "written are skipped to keep real time (set the output rate to the source's: --fps, "
                        "or Stream(fps=...))", self.uri, self.fps or DEFAULT_FPS)
        return None

    def _wrote(self, gap: int) -> None:
        self._slots += gap + 1
        self.repeated += gap
        self.frames += 1

    def _write_error(self, exc: OSError, what: str) -> MirnetError:
        """``exc`` as an OutputError naming this output and the cause (an OutputError as it is)."""
        if isinstance(exc, MirnetError):
            return exc
        hint = "; free space on that disk or write elsewhere" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return OutputError(f"{self.uri}: {what} could not be written ({exc.strerror or exc}){hint}")

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
        self._previous: np.ndarray | None = None

    def open(self, fps: float | None = None) -> "Sink":
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: folder {self.path.parent} does not exist")
        return super().open(fps)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        from ..media import VideoWriter

        image = to_bgr8(image)
        if self._writer is None:
            self.size_wh = (image.shape[1], image.shape[0])
            self._writer = VideoWriter(self.path, self.fps or DEFAULT_FPS, self.size_wh)
        gap = self._gap(frame)
        if gap is None:
            return
        image = self._fit(image, frame)
        try:
            for _ in range(gap):
                self._writer.write(self._previous)
            self._writer.write(image)
        except OSError as exc:  # the partial file is removed: a failed write leaves no broken video
            self.abort()
            raise self._write_error(exc, f"frame {frame.index}") from exc
        self._previous = image
        self._wrote(gap)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:
                writer.abort()
                raise self._write_error(exc, "the finished video") from exc

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
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.uri}: cannot create the folder {self.folder} ({exc.strerror or exc}); "
                              f"choose another output folder") from exc
        return super().open(fps)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        from ..media import write_image

        path = Path(self.pattern % frame.index) if self.pattern else self.folder / f"{frame.index:06d}.png"
        try:
            write_image(path, image)
        except OSError as exc:
            raise self._write_error(exc, f"frame {frame.index} ({path.name})") from exc
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


def rtp_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``rtp://host:port`` output; ConfigError when either is missing."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise ConfigError(f"{url}: an RTP output needs a host and a port, e.g. rtp://127.0.0.1:5004 (the UDP "
                          f"port the receiver listens on)")
    return parts.hostname, port


def rtp_sdp(url: str, codec: str = "H264") -> str:
    """The SDP of what a :class:`NetworkSink` sends to ``rtp://host:port``: H.264 with payload type
    96 (``codec="JPEG"``: RFC 2435 JPEG, payload type 26, GStreamer's fallback without an H.264
    encoder). Receivers need it: ``ffplay -protocol_whitelist file,udp,rtp -i stream.sdp``."""
    host, port = rtp_address(url)
    family = "IP6" if ":" in host else "IP4"
    payload, rtpmap = (96, "H264/90000") if codec == "H264" else (26, "JPEG/90000")
    lines = ["v=0", f"o=- 0 0 IN {family} {host}", "s=mirnet-edge", f"c=IN {family} {host}", "t=0 0",
             f"m=video {port} RTP/AVP {payload}", f"a=rtpmap:{payload} {rtpmap}"]
    if codec == "H264":
        lines.append(f"a=fmtp:{payload} packetization-mode=1")
    return "\n".join(lines) + "\n"


def ffmpeg_command(url: str, width: int, height: int, fps: float, *, exe: str = "ffmpeg") -> list[str]:
    """ffmpeg reading raw BGR frames on stdin and sending H.264 (x264, zero latency) to
    ``rtsp://`` (publishing to an RTSP server over TCP) or ``rtp://host:port`` (payload type 96)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("rtsp"):
        out = ["-f", "rtsp", "-rtsp_transport", "tcp", url]
    else:
        rtp_address(url)
        out = ["-f", "rtp", "-payload_type", "96", url]
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
    host, port = rtp_address(url)
    udp = f"udpsink host={host} port={port} sync=false"
    if enc is None:
        return [exe, "-q", "-e", *gst_argv(f"{src} ! video/x-raw, format=I420 ! jpegenc quality=85 ! rtpjpegpay ! {udp}")]
    return [exe, "-q", "-e", *gst_argv(f"{src} ! {enc} ! rtph264pay config-interval=1 pt=96 ! {udp}")]


class NetworkSink(_FixedSize, Sink):
    """``rtsp://`` / ``rtp://`` output through an ``ffmpeg`` (preferred) or ``gst-launch-1.0``
    subprocess found on PATH; ``tool`` forces one of them. ``rtsp://`` publishes to an RTSP server
    that runs elsewhere (mediamtx, gst-rtsp-server): we do not serve RTSP. ``rtp://host:port``
    sends H.264 (payload type 96) over UDP; when it starts, ``sdp`` holds the session description
    a receiver needs, and it is logged."""

    TOOLS = ("ffmpeg", "gst-launch-1.0")

    def __init__(self, url: str, *, tool: str | None = None):
        super().__init__(url)
        if tool is not None and tool not in self.TOOLS:
            raise ConfigError(f"tool={tool!r}: valid tools are {self.TOOLS}")
        if url.split("://", 1)[0].lower() == "rtp":
            rtp_address(url)
        self.sdp: str | None = None
        found = [(t, shutil.which(t)) for t in ((tool,) if tool else self.TOOLS)]
        found = [(t, exe) for t, exe in found if exe]
        if not found:
            raise MissingDependencyError(f"{url}: network output needs {tool or 'ffmpeg or gst-launch-1.0'} "
                                         f"on PATH; {NETWORK_INSTALL_HINT}")
        self.tool, self.exe = found[0]
        self._proc: subprocess.Popen | None = None
        self._lines: deque[str] = deque(maxlen=20)
        self._stride = 0
        self._previous: memoryview | None = None

    def command(self, width: int, height: int, fps: float) -> list[str]:
        if self.tool == "ffmpeg":
            return ffmpeg_command(self.uri, width, height, fps, exe=self.exe)
        return gst_command(self.uri, width, height, fps, exe=self.exe)

    def _start(self, width: int, height: int) -> None:
        argv = self.command(width, height, self.fps or DEFAULT_FPS)
        self._stride = 0 if self.tool == "ffmpeg" else -(-width * 3 // 4) * 4
        if self.uri.split("://", 1)[0].lower() == "rtp":
            self.sdp = rtp_sdp(self.uri, "JPEG" if "rtpjpegpay" in argv else "H264")
            log.warning("%s: sending RTP; a receiver needs this SDP (save it as stream.sdp, then e.g. "
                        "`ffplay -protocol_whitelist file,udp,rtp -i stream.sdp`):\n%s", self.uri, self.sdp.rstrip())
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
        gap = self._gap(frame)
        if gap is None:
            return
        image = self._fit(image, frame)
        data = image
        if self._stride and self._stride != image.shape[1] * 3:
            h = image.shape[0]
            data = np.zeros((h, self._stride), np.uint8)
            data[:, :image.shape[1] * 3] = image.reshape(h, -1)
        data = memoryview(np.ascontiguousarray(data)).cast("B")
        try:
            for _ in range(gap):
                self._proc.stdin.write(self._previous)
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError) as exc:
            rc = self._proc.poll()
            raise InputError(f"{self.uri}: {self.tool} stopped (exit code {rc}): "
                             f"{' | '.join(self._lines) or exc}") from exc
        self._previous = data
        self._wrote(gap)

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
