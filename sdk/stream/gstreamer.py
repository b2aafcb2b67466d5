"""GStreamer sources: ``gst://`` pipelines and Jetson CSI cameras (``csi://``), run through
OpenCV's GStreamer backend when it has one, else a ``gst-launch-1.0`` subprocess."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque

import numpy as np

from ..errors import MissingDependencyError, SourceError
from .process import stop_process
from .source import EndOfStream, LiveSource

__all__ = ["GstSource", "cv2_has_gstreamer", "gst_backend", "gst_argv", "csi_pipeline", "GST_INSTALL_HINT"]

GST_INSTALL_HINT = (
    "install GStreamer's command-line tools (Debian/Ubuntu: sudo apt-get install gstreamer1.0-tools "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good), or use an OpenCV built with GStreamer "
    "(JetPack's python3-opencv has it; pip's opencv-python-headless does not)")


def cv2_has_gstreamer() -> bool:
    """Whether this OpenCV was built with its GStreamer video backend."""
    import cv2

    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def gst_backend() -> str:
    """How GStreamer pipelines run here: ``"opencv"`` (cv2 built with GStreamer), ``"launch"``
    (a ``gst-launch-1.0`` subprocess) or MissingDependencyError saying how to get GStreamer."""
    import cv2

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


class GstSource(LiveSource):
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
            import cv2

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
                raise EndOfStream
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
                    raise EndOfStream
                raise ConnectionError(f"gst-launch-1.0 exited with code {rc} ({self._tail()})")
            got += n
        rows = np.frombuffer(buf, np.uint8).reshape(h, stride)
        return rows[:, :w * c].reshape(h, w, c) if stride != w * c else rows.reshape(h, w, c)

    def _stream_time(self) -> float | None:
        """The buffer timestamp of the frame (OpenCV's GStreamer backend; the gst-launch path has none)."""
        if self._cap is None:
            return None
        import cv2

        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000.0 if ms > 0 else None

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
