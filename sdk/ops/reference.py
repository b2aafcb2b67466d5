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
* camera formats (NV12, YUYV; 8-bit): BT.601 *limited range* YCbCr -> RGB in
  [0,1]; each chroma sample is shared by its 2x2 (NV12) or 2x1 (YUYV) block of
  pixels (nearest upsampling). In float32, every operation rounded separately,
  in exactly this order (constants are float32 roundings of the doubles shown)::

      y = (float32(Y)  - 16)  / float32(219)
      u = (float32(Cb) - 128) / float32(224)
      v = (float32(Cr) - 128) / float32(224)
      R = clip(y + float32(1.402) * v)
      G = clip((y - float32(0.344136286) * u) - float32(0.714136286) * v)
      B = clip(y + float32(1.772) * u)

  with ``clip(x) = fmin(fmax(x, 0), 1)``. The coefficients are BT.601's
  ``Kr = 0.299, Kb = 0.114`` (``1.402 = 2(1-Kr)``, ``1.772 = 2(1-Kb)``,
  ``0.344136286 = 2Kb(1-Kb)/Kg``, ``0.714136286 = 2Kr(1-Kr)/Kg``, ``Kg = 0.587``);
  the IEEE divisions by 219 and 224 undo the limited-range scaling of luma
  (16..235) and chroma (16..240 around 128), so Y=16 gives exactly 0 and
  Y=235 exactly 1 for neutral chroma. Padding (reflect, as above) is applied to the
  converted RGB image, then the float16 cast if asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_ORDERS = ("bgr", "rgb")
_FLOAT_OUT = (np.dtype(np.float32), np.dtype(np.float16))

# BT.601 limited range -> RGB [0,1] (module docstring); the C++/CUDA kernels use the same doubles.
_Y_OFFSET, _C_OFFSET = np.float32(16), np.float32(128)
_Y_RANGE, _C_RANGE = np.float32(219), np.float32(224)
_R_V, _G_U, _G_V, _B_U = (np.float32(c) for c in (1.402, 0.344136286, 0.714136286, 1.772))


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


def _check_float_out(dtype: object) -> np.dtype:
    out_dtype = np.dtype(dtype)
    if out_dtype not in _FLOAT_OUT:
        raise ValueError(f"dtype must be float32 or float16, got {out_dtype}")
    return out_dtype


def _check_int_out(dtype: object) -> np.dtype:
    odt = np.dtype(dtype)
    if odt not in _SCALES:
        raise ValueError(f"out_dtype must be uint8 or uint16, got {odt}")
    return odt


def _check_out_hw(out_hw: tuple[int, int], hw: tuple[int, ...]) -> tuple[int, int]:
    h, w = (int(v) for v in out_hw)
    if not (1 <= h <= hw[0] and 1 <= w <= hw[1]):
        raise ValueError(f"out_hw must satisfy 1 <= (h, w) <= {tuple(hw)}, got {tuple(out_hw)}")
    return h, w


def _preprocess_nhwc(x: np.ndarray, order: str, multiple: int, dtype: object) -> np.ndarray:
    """(N,H,W,3) uint8/uint16 -> (N,3,Hp,Wp) RGB float in [0,1]."""
    _check_order(order)
    out_dtype = _check_float_out(dtype)
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


def check_batch(imgs: Sequence[np.ndarray]) -> np.ndarray:
    """Validate a batch of images of one shape and dtype; returns the first."""
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
    return first


def preprocess_batch(
    imgs: Sequence[np.ndarray], *, order: str = "bgr", multiple: int = 4, dtype: object = np.float32
) -> np.ndarray:
    """Same as :func:`preprocess` for images of identical shape and dtype -> (N,3,Hp,Wp)."""
    check_batch(imgs)
    return _preprocess_nhwc(np.stack(imgs), order, multiple, dtype)


def _postprocess_nchw(
    t: np.ndarray, out_hw: tuple[int, int], order: str, out_dtype: object
) -> np.ndarray:
    """(N,3,H,W) float -> (N,h,w,3) integer image."""
    _check_order(order)
    odt = _check_int_out(out_dtype)
    h, w = _check_out_hw(out_hw, t.shape[2:])
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


# ---------------------------------------------------------------- camera formats (8-bit YUV)


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """uint8 Y, Cb, Cr planes of one shape (chroma already upsampled) -> float32 (..., 3) RGB."""
    yf = (y.astype(np.float32) - _Y_OFFSET) / _Y_RANGE
    uf = (u.astype(np.float32) - _C_OFFSET) / _C_RANGE
    vf = (v.astype(np.float32) - _C_OFFSET) / _C_RANGE
    r = yf + _R_V * vf
    g = (yf - _G_U * uf) - _G_V * vf
    b = yf + _B_U * uf
    rgb = np.stack([r, g, b], axis=-1)
    return np.fmin(np.fmax(rgb, np.float32(0)), np.float32(1))


def nv12_hw(frame: np.ndarray) -> tuple[int, int]:
    """Image ``(H, W)`` of an NV12 frame, a ``(H*3/2, W)`` uint8 array (H, W even)."""
    shape = getattr(frame, "shape", type(frame).__name__)
    dtype = getattr(frame, "dtype", None)
    if (
        not isinstance(frame, np.ndarray) or frame.ndim != 2 or dtype != np.uint8
        or frame.shape[0] % 3 or frame.shape[0] == 0 or frame.shape[1] == 0 or frame.shape[1] % 2
    ):
        raise ValueError(
            "nv12 frame must be a (H*3/2, W) uint8 array (Y plane, then interleaved UV rows) "
            f"with H and W even and >= 2, got shape {shape} dtype {dtype}"
        )
    return frame.shape[0] * 2 // 3, frame.shape[1]


def yuyv_hw(frame: np.ndarray) -> tuple[int, int]:
    """Image ``(H, W)`` of a YUYV (YUY2) frame, a ``(H, W, 2)`` uint8 array (W even)."""
    shape = getattr(frame, "shape", type(frame).__name__)
    dtype = getattr(frame, "dtype", None)
    if (
        not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 2
        or dtype != np.uint8 or frame.shape[0] == 0 or frame.shape[1] == 0 or frame.shape[1] % 2
    ):
        raise ValueError(
            "yuyv frame must be a (H, W, 2) uint8 array (bytes Y0 U Y1 V per pixel pair) "
            f"with W even and >= 2, got shape {shape} dtype {dtype}"
        )
    return frame.shape[0], frame.shape[1]


def nv12_to_rgb(frame: np.ndarray) -> np.ndarray:
    """NV12 frame ``(H*3/2, W)`` uint8 -> float32 HxWx3 RGB in [0,1] (BT.601 limited range).

    Rows ``0..H-1`` are the Y plane; rows ``H..H*3/2-1`` hold H/2 rows of W/2
    interleaved ``(U, V)`` pairs; pixel ``(i, j)`` uses the pair at ``(i//2, j//2)``.
    Arithmetic: module docstring.
    """
    h, w = nv12_hw(frame)
    uv = frame[h:].reshape(h // 2, w // 2, 2)
    up = np.repeat(np.repeat(uv, 2, axis=0), 2, axis=1)
    return _yuv_to_rgb(frame[:h], up[..., 0], up[..., 1])


def yuyv_to_rgb(frame: np.ndarray) -> np.ndarray:
    """YUYV/YUY2 frame ``(H, W, 2)`` uint8 -> float32 HxWx3 RGB in [0,1] (BT.601 limited range).

    Each row is the byte sequence ``Y0 U Y1 V`` per pixel pair, i.e. ``frame[i, j, 0]``
    is the luma of pixel ``j``; ``frame[i, 2k, 1]`` is U and ``frame[i, 2k+1, 1]`` is V
    of pixels ``2k`` and ``2k+1``. Arithmetic: module docstring.
    """
    h, w = yuyv_hw(frame)
    u = np.repeat(frame[:, 0::2, 1], 2, axis=1)
    v = np.repeat(frame[:, 1::2, 1], 2, axis=1)
    return _yuv_to_rgb(frame[:, :, 0], u, v)


def _rgb_to_tensor(rgb: np.ndarray, multiple: int, dtype: object) -> np.ndarray:
    """float32 HxWx3 RGB -> (1,3,Hp,Wp), reflect-padded, cast to ``dtype``."""
    out_dtype = _check_float_out(dtype)
    h, w, _ = rgb.shape
    pad_b, pad_r = pad_amount(h, w, multiple)
    if pad_b:
        rgb = rgb[reflect_indices(h, pad_b)]
    if pad_r:
        rgb = rgb[:, reflect_indices(w, pad_r)]
    y = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    return y if out_dtype == np.float32 else y.astype(out_dtype)


def preprocess_nv12(frame: np.ndarray, *, multiple: int = 4, dtype: object = np.float32) -> np.ndarray:
    """NV12 frame ``(H*3/2, W)`` uint8 -> (1,3,Hp,Wp) RGB NCHW tensor in [0,1].

    :func:`nv12_to_rgb`, then reflect padding to ``multiple`` and the cast to
    ``dtype`` (float32 or float16), as :func:`preprocess`.
    """
    _check_float_out(dtype)
    pad_amount(1, 1, multiple)
    return _rgb_to_tensor(nv12_to_rgb(frame), multiple, dtype)


def preprocess_yuyv(frame: np.ndarray, *, multiple: int = 4, dtype: object = np.float32) -> np.ndarray:
    """YUYV frame ``(H, W, 2)`` uint8 -> (1,3,Hp,Wp) RGB NCHW tensor in [0,1].

    :func:`yuyv_to_rgb`, then reflect padding to ``multiple`` and the cast to
    ``dtype`` (float32 or float16), as :func:`preprocess`.
    """
    _check_float_out(dtype)
    pad_amount(1, 1, multiple)
    return _rgb_to_tensor(yuyv_to_rgb(frame), multiple, dtype)
