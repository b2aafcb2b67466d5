"""Live sources read with OpenCV's ``cv2.VideoCapture``: local cameras (V4L2) and RTSP."""
from __future__ import annotations

import os

import numpy as np

from ..errors import SourceError
from .source import LiveSource

__all__ = ["CameraSource", "RtspSource"]


class _CaptureSource(LiveSource):
    """Live sources read with ``cv2.VideoCapture`` (``_grab`` returns within the read timeout)."""

    _cap = None

    def _open_capture(self):
        raise NotImplementedError

    def _connect(self) -> None:
        import cv2

        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.uri}: cannot open it ({self._hint()})")
        self._cap = cap
        self.fps = self.fps or cap.get(cv2.CAP_PROP_FPS) or None

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
        import cv2

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
        import cv2

        ms = int(self.timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _hint(self) -> str:
        return "check the address, credentials and that the server is up; OpenCV needs its FFmpeg backend"
