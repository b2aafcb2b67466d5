"""Image and video files: reading, atomic writing, and the suffixes ``mirnet restore`` accepts."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .artifact import atomic_write_bytes
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v")
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def _cv2():
    import cv2

    return cv2


def kind_of(path: str | os.PathLike) -> str | None:
    """``"image"``, ``"video"`` or None, by suffix."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read keeping bit depth and alpha (OpenCV's IMREAD_UNCHANGED: BGR, BGRA, gray; 8 or 16 bit)."""
    cv2 = _cv2()
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    return image


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by suffix and write atomically (JPEG quality 95; 16-bit kept where the format can)."""
    cv2 = _cv2()
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode a {image.dtype} {image.shape} image as {path.suffix}")
    atomic_write_bytes(path, buf.tobytes())


class VideoReader:
    """Frames of a video file as uint8 BGR arrays."""

    def __init__(self, path: str | os.PathLike):
        cv2 = _cv2()
        self.path = Path(path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise InputError(f"{path}: not a readable video (corrupt or unsupported codec)")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._cap.read()
            if not ok:
                return
            yield frame

    def close(self) -> None:
        self._cap.release()


class VideoWriter:
    """Writes to a hidden temporary file and renames it on ``close()``: an interrupted run never
    leaves a truncated file under the final name (``abort()`` deletes the partial file)."""

    def __init__(self, path: str | os.PathLike, fps: float, size_wh: tuple[int, int]):
        cv2 = _cv2()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise InputError(f"{path}: cannot write video as {suffix!r}; use one of {sorted(_FOURCC)}")
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*_FOURCC[suffix]), fps, size_wh)
        if not self._writer.isOpened():
            raise InputError(f"{path}: OpenCV cannot open a {suffix} video writer here")
        self.size_wh = size_wh
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size_wh:
            raise InputError(f"{self.path}: frame {frame.shape[1]}x{frame.shape[0]} differs from the "
                             f"video size {self.size_wh[0]}x{self.size_wh[1]}")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)
