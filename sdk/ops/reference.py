"""NumPy reference for pre/post-processing; it defines the numbers.

Any accelerated kernel (C++/CUDA) must reproduce these functions bit-exactly
for integer outputs. All arithmetic is IEEE float32 with round-to-nearest-even
and no fused multiply-add (use ``__fmul_rn``/``__fadd_rn`` in CUDA):

* preprocess:  ``y = float32(x) * float32(1/255)``   (uint8)
               ``y = float32(x) * float32(1/65535)`` (uint16)
  then, for float16 output, one float32 -> float16 round-to-nearest-even cast.
* postprocess: ``c = fmin(fmax(float32(t), 0), 1)``  (NaN -> 0, like CUDA fmaxf)
               ``y = floor(c * float32(255) + float32(0.5))`` (65535 for uint16),
  each operation rounded to float32 separately.
* padding: bottom/right only, "reflect" (edge pixel not repeated, OpenCV
  BORDER_REFLECT_101). Source index for padded position ``i`` along an axis of
  length ``n``: ``0`` if ``n == 1``, else ``m = i mod (2n-2)``;
  ``m if m < n else 2n-2-m``. This periodic rule equals ``np.pad(mode="reflect")``
  for every size, including pads larger than the image (e.g. 1x1 or 2x3 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_ORDERS = ("bgr", "rgb")
_FLOAT_OUT = (np.dtype(np.float32), np.dtype(np.float16))


def pad_amount(h: int, w: int, multiple: int) -> tuple[int, int]:
    """Return ``(pad_bottom, pad_right)`` that round ``h`` and ``w`` up to ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if h < 1 or w < 1:
        raise ValueError(f"h and w must be >= 1, got h={h}, w={w}")
    return (-h) % multiple, (-w) % multiple


def reflect_indices(n: int, pad: int) -> np.ndarray:
    """Source indices (int64, length ``n + pad``) of an axis of length ``n`` reflect-padded at the end."""
    i = np.arange(n + pad)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i %= period
    return np.where(i < n, i, period - i)


def _check_order(order: str) -> None:
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")


def _preprocess_nhwc(x: np.ndarray, order: str, multiple: int, dtype: object) -> np.ndarray:
    """(N,H,W,3) uint8/uint16 -> (N,3,Hp,Wp) RGB float in [0,1]."""
    _check_order(order)
    out_dtype = np.dtype(dtype)
    if out_dtype not in _FLOAT_OUT:
        raise ValueError(f"dtype must be float32 or float16, got {out_dtype}")
    if x.dtype not in _SCALES:
        raise ValueError(f"image dtype must be uint8 or uint16, got {x.dtype}")
    _, h, w, _ = x.shape
    pad_b, pad_r = pad_amount(h, w, multiple)
    if pad_b:
        x = x[:, reflect_indices(h, pad_b)]
    if pad_r:
        x = x[:, :, reflect_indices(w, pad_r)]
    if order == "bgr":
        x = x[..., ::-1]
    y = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)
    y *= np.float32(1.0 / _SCALES[x.dtype])
    return y if out_dtype == np.float32 else y.astype(out_dtype)


def _check_image(img: np.ndarray, name: str = "img") -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        shape = getattr(img, "shape", type(img).__name__)
        raise ValueError(f"{name} must be a non-empty HxWx3 uint8/uint16 array, got shape {shape}")


def preprocess(
    img: np.ndarray, *, order: str = "bgr", multiple: int = 4, dtype: object = np.float32
) -> np.ndarray:
    """HxWx3 uint8/uint16 image -> (1,3,Hp,Wp) RGB NCHW tensor in [0,1].

    ``order`` is the channel order of ``img`` ("bgr" or "rgb"). Values are
    ``float32(x) * float32(1/255)`` (``1/65535`` for uint16), then cast to
    ``dtype`` (float32 or float16). Hp, Wp are H, W rounded up to ``multiple``
    with bottom/right reflect padding (see module docstring).
    """
    _check_image(img)
    return _preprocess_nhwc(img[None], order, multiple, dtype)


def preprocess_batch(
    imgs: Sequence[np.ndarray], *, order: str = "bgr", multiple: int = 4, dtype: object = np.float32
) -> np.ndarray:
    """Same as :func:`preprocess` for images of identical shape and dtype -> (N,3,Hp,Wp)."""
    if len(imgs) == 0:
        raise ValueError("imgs must contain at least one image, got an empty sequence")
    for k, img in enumerate(imgs):
        _check_image(img, f"imgs[{k}]")
    first = imgs[0]
    for k, img in enumerate(imgs):
        if img.shape != first.shape or img.dtype != first.dtype:
            raise ValueError(
                f"all images must share shape and dtype; imgs[0] is {first.shape} {first.dtype}, "
                f"imgs[{k}] is {img.shape} {img.dtype}"
            )
    return _preprocess_nhwc(np.stack(imgs), order, multiple, dtype)


def _postprocess_nchw(
    t: np.ndarray, out_hw: tuple[int, int], order: str, out_dtype: object
) -> np.ndarray:
    """(N,3,H,W) float -> (N,h,w,3) integer image."""
    _check_order(order)
    odt = np.dtype(out_dtype)
    if odt not in _SCALES:
        raise ValueError(f"out_dtype must be uint8 or uint16, got {odt}")
    h, w = (int(v) for v in out_hw)
    if not (1 <= h <= t.shape[2] and 1 <= w <= t.shape[3]):
        raise ValueError(f"out_hw must satisfy 1 <= (h, w) <= {t.shape[2:]}, got {tuple(out_hw)}")
    x = t[:, :, :h, :w].astype(np.float32)
    x = np.fmin(np.fmax(x, np.float32(0)), np.float32(1))
    x *= np.float32(_SCALES[odt])
    x += np.float32(0.5)
    np.floor(x, out=x)
    if order == "bgr":
        x = x[:, ::-1]
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(odt)


def _check_tensor(t: np.ndarray, ndims: tuple[int, ...]) -> None:
    if not isinstance(t, np.ndarray) or t.ndim not in ndims or t.shape[-3] != 3:
        shape = getattr(t, "shape", type(t).__name__)
        want = " or ".join({3: "(3,H,W)", 4: "(N,3,H,W)"}[n] for n in ndims)
        raise ValueError(f"t must be a {want} float array, got shape {shape}")
    if t.dtype not in _FLOAT_OUT:
        raise ValueError(f"t dtype must be float32 or float16, got {t.dtype}")


def postprocess(
    t: np.ndarray, out_hw: tuple[int, int], *, order: str = "bgr", out_dtype: object = np.uint8
) -> np.ndarray:
    """(1,3,H,W) or (3,H,W) RGB float tensor -> C-contiguous hxwx3 image in ``order``.

    Crops the top-left ``out_hw = (h, w)``; per value:
    ``floor(fmin(fmax(float32(t), 0), 1) * float32(S) + float32(0.5))`` with
    S = 255 (uint8) or 65535 (uint16); NaN maps to 0, exact halves round up.
    """
    _check_tensor(t, (3, 4))
    if t.ndim == 4 and t.shape[0] != 1:
        raise ValueError(f"t must have batch size 1 (use postprocess_batch), got shape {t.shape}")
    return _postprocess_nchw(t.reshape((1,) + t.shape[-3:]), out_hw, order, out_dtype)[0]


def postprocess_batch(
    t: np.ndarray, out_hw: tuple[int, int], *, order: str = "bgr", out_dtype: object = np.uint8
) -> list[np.ndarray]:
    """Same as :func:`postprocess` for a (N,3,H,W) tensor -> list of N hxwx3 images."""
    _check_tensor(t, (4,))
    return list(_postprocess_nchw(t, out_hw, order, out_dtype))
