"""Backend choice for the pre/post-processing ops: C++ (``mirnet.sdk._ext``) or the NumPy reference.

The C++ kernels reproduce :mod:`mirnet.sdk.ops.reference` bit-exactly, so the choice changes speed,
never numbers. ``MIRNET_OPS`` selects: unset/``auto`` (the extension when it imports, else NumPy),
``cpp`` (the extension, or raise MissingDependencyError) or ``numpy`` (always the reference).
:data:`BACKEND` says which is in use. Every public function here validates its arguments like the
reference and raises :class:`~mirnet.sdk.errors.InputError` (a ValueError) for unusable input.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

import numpy as np

from ..errors import ConfigError, InputError, MirnetError, MissingDependencyError
from . import reference as ref

_CHOICES = ("auto", "cpp", "numpy")


def _load() -> tuple[ModuleType | None, str]:
    choice = os.environ.get("MIRNET_OPS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"MIRNET_OPS={choice!r}: valid values are {_CHOICES}")
    if choice == "numpy":
        return None, "MIRNET_OPS=numpy"
    # OpenMP threads that spin while waiting (libgomp's default) steal the cores they wait for
    # when the machine is shared (inference threads, other processes): on the 2-core box under
    # load, 2 threads took 8 ms for a 1080p preprocess against 2.5 ms with passive waiting.
    # libgomp reads the policy once, when it is loaded with the extension; the variable is
    # removed again so that child processes and other OpenMP runtimes do not see it. An explicit
    # OMP_WAIT_POLICY from the user wins.
    set_policy = "OMP_WAIT_POLICY" not in os.environ
    if set_policy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from .. import _ext
    except ImportError as exc:
        if choice == "cpp":
            raise MissingDependencyError(
                f"MIRNET_OPS=cpp but the C++ extension mirnet.sdk._ext does not import ({exc}); rebuild it "
                "with: pip install -e . (needs a C++17 compiler with OpenMP), or unset MIRNET_OPS") from exc
        if not isinstance(exc, ModuleNotFoundError):  # built but broken: say so, then use NumPy
            warnings.warn(f"mirnet.sdk._ext failed to import ({exc}); using the NumPy reference ops",
                          RuntimeWarning, stacklevel=2)
        return None, f"mirnet.sdk._ext does not import: {exc}"
    finally:
        if set_policy:
            del os.environ["OMP_WAIT_POLICY"]
    return _ext, ""


#: The extension module, or None when the NumPy reference is used.
EXT, WHY_NUMPY = _load()
#: "cpp" (mirnet.sdk._ext) or "numpy" (mirnet.sdk.ops.reference).
BACKEND = "numpy" if EXT is None else "cpp"


@contextmanager
def input_errors() -> Iterator[None]:
    """Re-raise ValueError/TypeError (from the reference or the extension) as InputError."""
    try:
        yield
    except MirnetError:
        raise
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc)) from exc


def _contig(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


# ---- argument checks shared by the C++ and CUDA paths (same messages as the reference)


def check_preprocess(img: np.ndarray, order: str, multiple: int, dtype: object, name: str = "img") -> str:
    """Validate a preprocess call; return the output dtype name."""
    ref._check_image(img, name)
    ref._check_order(order)
    out_dtype = ref._check_float_out(dtype)
    if img.dtype not in ref._SCALES:
        raise ValueError(f"image dtype must be uint8 or uint16, got {img.dtype}")
    ref.pad_amount(1, 1, multiple)
    return out_dtype.name


def stack_batch(imgs: Sequence[np.ndarray], order: str, multiple: int, dtype: object) -> tuple[np.ndarray, str]:
    """Validate a preprocess_batch call; return the C-contiguous (N,H,W,3) stack and the dtype name."""
    first = ref.check_batch(imgs)
    name = check_preprocess(first, order, multiple, dtype, "imgs[0]")
    return _contig(first[None] if len(imgs) == 1 else np.stack(imgs)), name


def check_postprocess(t: np.ndarray, batch: bool, out_hw: tuple[int, int], order: str,
                      out_dtype: object) -> tuple[tuple[int, int], str]:
    """Validate a postprocess(_batch) call; return ``(h, w)`` and the output dtype name."""
    ref._check_tensor(t, (4,) if batch else (3, 4))
    if not batch and t.ndim == 4 and t.shape[0] != 1:
        raise ValueError(f"t must have batch size 1 (use postprocess_batch), got shape {t.shape}")
    ref._check_order(order)
    odt = ref._check_int_out(out_dtype)
    return ref._check_out_hw(out_hw, t.shape[-2:]), odt.name


def check_yuv(frame: np.ndarray, nv12: bool, multiple: int, dtype: object) -> str:
    """Validate a preprocess_nv12/yuyv call; return the output dtype name."""
    (ref.nv12_hw if nv12 else ref.yuyv_hw)(frame)
    out_dtype = ref._check_float_out(dtype)
    ref.pad_amount(1, 1, multiple)
    return out_dtype.name


# ---- public ops


def preprocess(
    img: np.ndarray, *, order: str = "bgr", multiple: int = 4, dtype: object = np.float32
) -> np.ndarray:
    """HxWx3 uint8/uint16 image -> (1,3,Hp,Wp) RGB NCHW tensor in [0,1]; see :func:`reference.preprocess`."""
    with input_errors():
        if EXT is None:
            return ref.preprocess(img, order=order, multiple=multiple, dtype=dtype)
        name = check_preprocess(img, order, multiple, dtype)
        return EXT.preprocess(_contig(img), order, int(multiple), name)


def preprocess_batch(
    imgs: Sequence[np.ndarray], *, order: str = "bgr", multiple: int = 4, dtype: object = np.float32
) -> np.ndarray:
    """Images of one shape and dtype -> (N,3,Hp,Wp); see :func:`reference.preprocess_batch`."""
    with input_errors():
        if EXT is None:
            return ref.preprocess_batch(imgs, order=order, multiple=multiple, dtype=dtype)
        stacked, name = stack_batch(imgs, order, multiple, dtype)
        return EXT.preprocess(stacked, order, int(multiple), name)


def postprocess(
    t: np.ndarray, out_hw: tuple[int, int], *, order: str = "bgr", out_dtype: object = np.uint8
) -> np.ndarray:
    """(1,3,H,W) or (3,H,W) float tensor -> hxwx3 integer image; see :func:`reference.postprocess`."""
    with input_errors():
        if EXT is None:
            return ref.postprocess(t, out_hw, order=order, out_dtype=out_dtype)
        hw, name = check_postprocess(t, False, out_hw, order, out_dtype)
        return EXT.postprocess(_contig(t), hw, order, name)[0]


def postprocess_batch(
    t: np.ndarray, out_hw: tuple[int, int], *, order: str = "bgr", out_dtype: object = np.uint8
) -> list[np.ndarray]:
    """(N,3,H,W) float tensor -> list of N hxwx3 images; see :func:`reference.postprocess_batch`."""
    with input_errors():
        if EXT is None:
            return ref.postprocess_batch(t, out_hw, order=order, out_dtype=out_dtype)
        hw, name = check_postprocess(t, True, out_hw, order, out_dtype)
        return list(EXT.postprocess(_contig(t), hw, order, name))


def preprocess_nv12(frame: np.ndarray, *, multiple: int = 4, dtype: object = np.float32) -> np.ndarray:
    """NV12 ``(H*3/2, W)`` uint8 frame -> (1,3,Hp,Wp) RGB tensor; see :func:`reference.preprocess_nv12`."""
    with input_errors():
        if EXT is None:
            return ref.preprocess_nv12(frame, multiple=multiple, dtype=dtype)
        name = check_yuv(frame, True, multiple, dtype)
        return EXT.preprocess_nv12(_contig(frame), int(multiple), name)


def preprocess_yuyv(frame: np.ndarray, *, multiple: int = 4, dtype: object = np.float32) -> np.ndarray:
    """YUYV ``(H, W, 2)`` uint8 frame -> (1,3,Hp,Wp) RGB tensor; see :func:`reference.preprocess_yuyv`."""
    with input_errors():
        if EXT is None:
            return ref.preprocess_yuyv(frame, multiple=multiple, dtype=dtype)
        name = check_yuv(frame, False, multiple, dtype)
        return EXT.preprocess_yuyv(_contig(frame), int(multiple), name)


def tile_accumulate(acc: np.ndarray, wsum: np.ndarray, out: np.ndarray, weight: np.ndarray,
                    y0: int, x0: int) -> None:
    """In place: ``acc[:, :, y0:y0+th, x0:x0+tw] += out * weight`` and ``wsum[...] += weight`` (float32).

    ``acc`` (N,C,H,W) and ``wsum`` (H,W) are C-contiguous float32 arrays updated in place.
    """
    th, tw = weight.shape
    if EXT is None:
        region = (slice(y0, y0 + th), slice(x0, x0 + tw))
        acc[(slice(None), slice(None)) + region] += out * weight
        wsum[region] += weight
        return
    EXT.tile_accumulate(acc, wsum, _contig(np.asarray(out, np.float32)), _contig(weight), int(y0), int(x0))


def tile_normalize(acc: np.ndarray, wsum: np.ndarray) -> None:
    """In place: ``acc /= wsum`` (wsum (H,W) broadcast over acc's (N,C) planes)."""
    if EXT is None:
        acc /= wsum
        return
    EXT.tile_normalize(acc, wsum)
