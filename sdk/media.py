"""Image and video files: the one image reader (and its suffix list), folder listing, the one
normalisation to float RGB, atomic writing, and the suffixes ``mirnet restore`` accepts.

Everything that reads images (restore, stream folders, eval sets, calibration, the quality gate,
training) goes through :func:`read_image`; everything that wants float RGB in [0, 1] through
:func:`load_rgb` (or :func:`read_rgb` + :func:`mirnet.sdk.metrics.to_float`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .artifact import atomic_write_bytes
from .errors import ConfigError, InputError

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


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (any of :data:`IMAGE_SUFFIXES`, any case; hidden files
    skipped), sorted by name. ConfigError if the folder is missing or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"image folder {str(folder)!r} {what} (resolved: {folder.resolve()}); "
                          f"give a folder of {'/'.join(IMAGE_SUFFIXES)} files")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"image folder {str(folder)!r} holds no image file; valid extensions: "
                          f"{', '.join(IMAGE_SUFFIXES)} (is the data in a sub-folder?)")
    return files


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read keeping bit depth and alpha (OpenCV's IMREAD_UNCHANGED: BGR, BGRA, gray; 8 or 16 bit)."""
    cv2 = _cv2()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    return image


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``H x W x 3`` RGB in its integer dtype (uint8 or uint16): gray replicated to
    three channels, alpha dropped, float files stored at 16 bits (see :func:`mirnet.sdk.ops.to_rgb3`)."""
    from .ops.formats import to_rgb3

    try:
        rgb3, _ = to_rgb3(read_image(path))
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return np.ascontiguousarray(rgb3[:, :, ::-1])


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as float32 ``H x W x 3`` RGB in [0, 1] (:func:`read_rgb`, then 8-bit / 255,
    16-bit / 65535)."""
    from .metrics import to_float

    return to_float(read_rgb(path))


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by suffix and write atomically (JPEG quality 95; 16-bit kept where the format can)."""
    cv2 = _cv2()
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode a {image.dtype} {image.shape} image as {path.suffix}")
    atomic_write_bytes(path, buf.tobytes())


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
