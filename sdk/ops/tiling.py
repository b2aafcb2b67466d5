"""Running a network over a float image: padded whole (:func:`run_padded`), or in overlapping tiles
with linear feathering (:func:`run_tiled`) for inputs too large to run at once."""

from __future__ import annotations

from collections.abc import Callable
from math import isqrt

import numpy as np

from . import native

#: Approximate peak activation bytes per input pixel per mid-network channel:
#: float32 (4 bytes) times ~12 live feature maps at full resolution.
BYTES_PER_CHANNEL_PIXEL = 4 * 12
MIN_TILE = 64


def _check_overlap(tile: int, overlap: int) -> None:
    if not tile > overlap >= 0:
        raise ValueError(f"need tile > overlap >= 0, got tile={tile}, overlap={overlap}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of ``tile``-sized windows covering ``[0, length)``.

    Stride is ``tile - overlap`` so neighbours share at least ``overlap``
    pixels; the last window ends exactly at ``length``. ``[0]`` if ``length <= tile``.
    """
    _check_overlap(tile, overlap)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def _ramp(n: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    if (start or end) and not n > overlap >= 0:
        raise ValueError(
            f"need tile > overlap >= 0 on sides with a neighbour, got tile={n}, overlap={overlap}"
        )
    r = np.ones(n, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 1) / np.float32(overlap + 1)
    if start and overlap:
        r[:overlap] = np.minimum(r[:overlap], ramp)
    if end and overlap:
        r[n - overlap :] = np.minimum(r[n - overlap :], ramp[::-1])
    return r


def feather_weights(
    tile_h: int, tile_w: int, overlap: int, *, top: bool, bottom: bool, left: bool, right: bool
) -> np.ndarray:
    """float32 (tile_h, tile_w) blend weights: 1 inside, ``(i+1)/(overlap+1)`` ramps.

    A ramp is applied only on sides flagged as having a neighbour tile (image
    borders keep weight 1); where two ramps meet the minimum is taken. All
    weights are > 0.
    """
    return np.outer(_ramp(tile_h, overlap, top, bottom), _ramp(tile_w, overlap, left, right))


def run_padded(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, *, multiple: int = 4,
               scale: int = 1) -> np.ndarray:
    """Run ``fn`` (N,C,H,W float32 -> N,C_out,H*scale,W*scale) on one float ``H x W x C`` image:
    reflect-pad bottom/right to ``multiple`` (edge-pad images of one pixel), run, crop back and
    clip to [0, 1]. Returns float32 ``H*scale x W*scale x C_out``. The one pad/run/crop used by
    evaluation, validation, the quality gate and the benchmark's quality columns."""
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ValueError(f"run_padded takes one H x W x C image, got {getattr(image, 'shape', type(image))}")
    h, w = image.shape[:2]
    mode = "reflect" if min(h, w) > 1 else "edge"
    padded = np.pad(image, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode=mode)
    x = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)[None]
    y = np.asarray(fn(x))[0, :, :h * scale, :w * scale]
    return np.clip(y.transpose(1, 2, 0), 0.0, 1.0).astype(np.float32, copy=False)


def run_tiled(
    x: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int,
    overlap: int,
    multiple: int = 4,
    scale: int = 1,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``x`` (N,C,H,W) and blend the results.

    ``tile`` is rounded down to a multiple of ``multiple`` (at least ``multiple``)
    and clamped to H and W; H and W must already be multiples of ``multiple``.
    ``fn`` maps (N,C,th,tw) -> (N,C_out,th*scale,tw*scale). The result is
    ``sum(w * fn(tile)) / sum(w)`` in float32 with :func:`feather_weights`
    (overlap scaled by ``scale``), so pointwise ``fn`` is reproduced exactly
    up to float32 rounding.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N,C,H,W), got shape {x.shape}")
    if multiple < 1 or scale < 1:
        raise ValueError(f"multiple and scale must be >= 1, got multiple={multiple}, scale={scale}")
    n, _, h, w = x.shape
    if h % multiple or w % multiple:
        raise ValueError(f"H and W must be multiples of {multiple} (pad first), got {h}x{w}")
    t = max(multiple, tile // multiple * multiple)
    th, tw = min(t, h), min(t, w)
    if overlap < 0 or ((h > t or w > t) and overlap >= t):
        raise ValueError(
            f"need tile > overlap >= 0 (tile rounded to a multiple of {multiple}), "
            f"got tile={t}, overlap={overlap}"
        )
    ys = tile_starts(h, th, overlap) if h > t else [0]
    xs = tile_starts(w, tw, overlap) if w > t else [0]

    s = scale
    acc: np.ndarray | None = None
    wsum = np.zeros((h * s, w * s), np.float32)
    for y0 in ys:
        for x0 in xs:
            out = np.asarray(fn(x[:, :, y0 : y0 + th, x0 : x0 + tw]), dtype=np.float32)
            if out.ndim != 4 or out.shape[0] != n or out.shape[2:] != (th * s, tw * s):
                raise ValueError(
                    f"fn returned shape {out.shape}, expected ({n}, C_out, {th * s}, {tw * s})"
                )
            if acc is None:
                acc = np.zeros((n, out.shape[1], h * s, w * s), np.float32)
            wt = feather_weights(
                th * s,
                tw * s,
                overlap * s,
                top=y0 > 0,
                bottom=y0 + th < h,
                left=x0 > 0,
                right=x0 + tw < w,
            )
            # acc[..., region] += out * wt; wsum[region] += wt (C++ kernel when built, same numbers)
            native.tile_accumulate(acc, wsum, out, wt, y0 * s, x0 * s)
    assert acc is not None  # ys and xs are never empty
    native.tile_normalize(acc, wsum)
    return acc


def plan_tile(h: int, w: int, *, channels_mid: int, budget_bytes: int, multiple: int = 4) -> int | None:
    """Tile size for an h x w input under ``budget_bytes``, or None if untiled fits.

    Cost model (an approximation of peak activation memory): pixels *
    ``channels_mid * BYTES_PER_CHANNEL_PIXEL``. Returns the largest square tile,
    a multiple of ``multiple``, within budget, but never below 64 rounded up to
    ``multiple`` (the budget may then be exceeded).
    """
    if min(h, w, channels_mid, budget_bytes, multiple) < 1:
        raise ValueError(
            f"h, w, channels_mid, budget_bytes, multiple must be >= 1, got h={h}, w={w}, "
            f"channels_mid={channels_mid}, budget_bytes={budget_bytes}, multiple={multiple}"
        )
    bpp = channels_mid * BYTES_PER_CHANNEL_PIXEL
    if h * w * bpp <= budget_bytes:
        return None
    t = isqrt(budget_bytes // bpp) // multiple * multiple
    return max(t, -(-MIN_TILE // multiple) * multiple)
