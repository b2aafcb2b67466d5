"""Restore a video file into a video file through the stream pipeline, losing no frame: what
``mirnet restore`` does with videos (``mirnet stream`` with policy ``block``, all-or-nothing)."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .files import VideoFileSource
from .pipeline import Stream
from .sinks import VideoFileSink
from .source import Frame

if TYPE_CHECKING:
    from ..restorer import Restorer

__all__ = ["restore_video"]


class _PendingVideo(VideoFileSink):
    """A video file that the stream's ``close()`` leaves under its hidden partial name:
    :meth:`publish` renames it into place, ``abort()`` deletes it. Reports each frame written to
    ``progress(done, total)``."""

    def __init__(self, path: str | os.PathLike, source: VideoFileSource,
                 progress: Callable[[int, int | None], object] | None):
        super().__init__(path)
        self.source, self.progress = source, progress

    def write(self, image: np.ndarray, frame: Frame) -> None:
        super().write(image, frame)
        if self.progress is not None:
            self.progress(self.frames, self.source.frame_count)

    def close(self) -> None:
        """Keep the file pending: the stream stops the same way whether or not every frame came."""

    def publish(self) -> None:
        super().close()


def restore_video(restorer: Restorer, src: str | os.PathLike, dst: str | os.PathLike, *,
                  progress: Callable[[int, int | None], object] | None = None) -> dict:
    """Restore every frame of the video file ``src`` with ``restorer`` (an opened
    :class:`~mirnet.sdk.Restorer`, left open for the next file) into the video file ``dst`` at
    ``src``'s frame rate, through :class:`~mirnet.sdk.stream.Stream` with policy ``block``.

    ``dst`` is written under a hidden partial name (``.NAME.partial.SUFFIX`` beside it) and renamed
    into place only when the whole video was restored; on any error or KeyboardInterrupt the
    partial file is deleted and the exception raised. ``progress(done, total)`` is called after
    each frame written, ``total`` being the frame count ``src``'s header claims (None: unknown).
    Raises :class:`~mirnet.sdk.errors.InputError` when ``src`` is not a readable video or holds no
    decodable frame, :class:`~mirnet.sdk.errors.OutputError` when ``dst`` cannot be written.
    Returns the stream's statistics plus ``declared_frames``, the frame count ``src``'s container
    declares (None: unknown): a video that decodes to fewer frames is truncated or corrupt, and
    its output holds only the frames that could be decoded."""
    source = VideoFileSource(src)
    sink = _PendingVideo(dst, source, progress)
    try:
        stats = Stream(source, sink, model=restorer, policy="block").run()
        if sink.frames == 0:
            raise InputError(f"{src}: video holds no decodable frames")
        sink.publish()
    except BaseException:
        sink.abort()
        raise
    return {**stats, "frames": sink.frames, "declared_frames": source.frame_count}
