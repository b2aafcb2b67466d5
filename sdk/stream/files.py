"""Finite sources read on demand: video files, image folders or globs, and any iterable of images."""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError, SourceError
from .source import PulledSource, Source

__all__ = ["VideoFileSource", "ImageFolderSource", "IterableSource"]


class VideoFileSource(PulledSource):
    """A video file through OpenCV; ``loop=True`` starts again at the end (forever).
    ``frame_count``: the number of frames the file's header claims once opened (None: unknown)."""

    def __init__(self, path: str | os.PathLike, *, loop: bool = False, fps: float | None = None):
        super().__init__(str(path))
        self.path, self.loop = Path(path), loop
        self.frame_count: int | None = None
        self._cap = None
        self._fps_override = fps

    def open(self) -> "Source":
        import cv2

        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        self._cap = self._capture()
        self.fps = self._fps_override or self._cap.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        return self

    def _capture(self):
        import cv2

        cap = cv2.VideoCapture(str(self.path))
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


class ImageFolderSource(PulledSource):
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


class IterableSource(PulledSource):
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
