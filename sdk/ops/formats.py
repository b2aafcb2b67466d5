"""Normalise user image kinds to HxWx3 uint8/uint16 and back.

Accepted inputs: uint8, uint16, float32 or float64 arrays shaped HxW or HxWx1
(gray), HxWx3 (colour, channel order untouched) or HxWx4 (colour + alpha).
Float images are taken as [0,1] and stored as uint16 with
``floor(fmin(fmax(float32(x), 0), 1) * float32(65535) + float32(0.5))``
(NaN -> 0), and come back as ``float32(u) * float32(1/65535)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ACCEPTED = "HxW, HxWx1, HxWx3 or HxWx4 arrays of dtype uint8, uint16, float32 or float64"


@dataclass(frozen=True, eq=False)
class ImageKind:
    """What :func:`to_rgb3` removed from an image, so :func:`from_rgb3` can restore it.

    ``channels``: 1 (gray), 3 or 4; ``dtype``: input dtype name; ``alpha``: the
    input alpha plane (HxW, input dtype) or None; ``is_float``: input was float;
    ``gray_2d``: gray input was HxW rather than HxWx1.
    """

    channels: int
    dtype: str
    alpha: np.ndarray | None
    is_float: bool
    gray_2d: bool = False


def _round_scale(x: np.ndarray, scale: float) -> np.ndarray:
    """``floor(clip(float32(x), 0, 1) * scale + 0.5)`` in float32, NaN -> 0."""
    y = np.fmin(np.fmax(x.astype(np.float32), np.float32(0)), np.float32(1))
    y *= np.float32(scale)
    y += np.float32(0.5)
    return np.floor(y, out=y)


def to_rgb3(img: np.ndarray) -> tuple[np.ndarray, ImageKind]:
    """Return ``(img3, kind)``: a C-contiguous HxWx3 uint8/uint16 array and what to restore.

    Gray is replicated to 3 channels; alpha is split off; float becomes uint16.
    Raises ValueError naming the shape/dtype for anything else.
    """
    if not isinstance(img, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(img).__name__}; accepted: {_ACCEPTED}")
    dt = img.dtype
    if dt not in _INT_DTYPES + _FLOAT_DTYPES:
        raise ValueError(f"unsupported dtype {dt} (shape {img.shape}); accepted: {_ACCEPTED}")
    if img.ndim == 2:
        channels = 1
    elif img.ndim == 3 and img.shape[2] in (1, 3, 4):
        channels = img.shape[2]
    else:
        raise ValueError(f"unsupported shape {img.shape} (dtype {dt}); accepted: {_ACCEPTED}")
    if img.size == 0:
        raise ValueError(f"empty image of shape {img.shape}; accepted: non-empty {_ACCEPTED}")

    alpha = np.array(img[:, :, 3]) if channels == 4 else None
    is_float = dt in _FLOAT_DTYPES
    x = _round_scale(img, 65535.0).astype(np.uint16) if is_float else img
    if channels == 1:
        x = x.reshape(x.shape[:2] + (1,))
        x = np.repeat(x, 3, axis=2)
    elif channels == 4:
        x = x[:, :, :3]
    kind = ImageKind(channels, dt.name, alpha, is_float, gray_2d=img.ndim == 2)
    return np.ascontiguousarray(x), kind


def from_rgb3(out3: np.ndarray, kind: ImageKind) -> np.ndarray:
    """Inverse of :func:`to_rgb3` for a (possibly resized) HxWx3 result.

    Gray: ``floor((float32(c0) + c1 + c2) / float32(3) + float32(0.5))`` shaped
    HxW or HxWx1 like the input. Alpha is re-attached unchanged, or resized with
    cv2.INTER_LINEAR when the output size differs (super-resolution). Float
    inputs come back as float32 in [0,1]; otherwise the input dtype is kept.
    """
    work = np.dtype(np.uint16) if kind.is_float else np.dtype(kind.dtype)
    if not isinstance(out3, np.ndarray) or out3.ndim != 3 or out3.shape[2] != 3 or out3.dtype != work:
        shape = getattr(out3, "shape", type(out3).__name__)
        dtype = getattr(out3, "dtype", None)
        raise ValueError(f"out3 must be a HxWx3 {work} array for this kind, got shape {shape} dtype {dtype}")
    h, w = out3.shape[:2]

    if kind.channels == 1:
        # channel by channel: numpy's reduction over a last axis of 3 is ten times slower, and
        # integer sums up to 3 * 65535 are exact in float32 in any order
        s = out3[:, :, 0].astype(np.float32)
        s += out3[:, :, 1]
        s += out3[:, :, 2]
        s /= np.float32(3)
        s += np.float32(0.5)
        x = np.floor(s, out=s).astype(work)
        if not kind.gray_2d:
            x = x[:, :, None]
    else:
        x = out3
    if kind.is_float:
        x = x.astype(np.float32) * np.float32(1.0 / 65535.0)

    if kind.alpha is not None:
        alpha = kind.alpha
        if alpha.shape != (h, w):
            import cv2

            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        x = np.concatenate([x, alpha.astype(x.dtype, copy=False)[:, :, None]], axis=2)
    return np.ascontiguousarray(x)
