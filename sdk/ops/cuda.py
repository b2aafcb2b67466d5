"""CUDA versions of the pre/post-processing kernels, from ``mirnet.sdk._ext`` built with CUDA.

Same numbers as :mod:`mirnet.sdk.ops.reference` and the C++ kernels (bit-exact). Two forms:

* host arrays (:func:`preprocess`, :func:`postprocess`, ...): copy to the GPU, run, copy back,
  synchronously; for tests and simple use.
* device pointers (``*_device``): ints (e.g. TensorRT binding addresses, ``CudaBuffer.ptr``) and a
  ``cudaStream_t`` as an int; the kernel is only enqueued on that stream (zero copy, no sync).

Raises :class:`~mirnet.sdk.errors.MissingDependencyError` when the extension has no CUDA kernels or
no CUDA device/driver is usable, :class:`~mirnet.sdk.errors.InputError` for bad arguments, and
RuntimeError (with the CUDA error string) when CUDA itself fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from . import native

_REBUILD = ("reinstall on a machine with a CUDA toolkit (bin/nvcc and include/cuda_runtime.h under "
            "CUDA_HOME or /usr/local/cuda) with: pip install -e . (without MIRNET_NO_CUDA)")


def _module() -> ModuleType | None:
    try:
        from .. import _ext
    except ImportError:
        return None
    return _ext


def kernels_built() -> bool:
    """True when ``mirnet.sdk._ext`` exists and was compiled with the CUDA kernels."""
    ext = _module()
    return bool(ext is not None and ext.has_cuda_kernels)


def available() -> bool:
    """True when the CUDA kernels are built and a CUDA device with a working driver is present."""
    ext = _module()
    return bool(ext is not None and ext.cuda_available())


def info() -> dict[str, Any]:
    """Built-in kernels, devices, runtime/driver versions, and the reason when CUDA is unusable."""
    ext = _module()
    if ext is None:
        return {"has_cuda_kernels": False, "available": False, "error": "mirnet.sdk._ext is not built"}
    return ext.cuda_info()


def require() -> ModuleType:
    """The extension module, or MissingDependencyError saying what is missing and how to fix it."""
    ext = _module()
    if ext is None:
        raise MissingDependencyError(f"the C++ extension mirnet.sdk._ext is not built; {_REBUILD}")
    if not ext.has_cuda_kernels:
        raise MissingDependencyError(
            "mirnet.sdk._ext was built without CUDA kernels (no CUDA toolkit found at build time, or "
            f"MIRNET_NO_CUDA=1); {_REBUILD}")
    if not ext.cuda_available():
        raise MissingDependencyError(
            f"no usable CUDA device ({ext.cuda_info().get('error', 'unknown reason')}); the CUDA kernels "
            "need an NVIDIA GPU and driver; use mirnet.sdk.ops (CPU) instead")
    return ext


# ---------------------------------------------------------------- host arrays


def preprocess(img: np.ndarray, *, order: str = "bgr", multiple: int = 4,
               dtype: object = np.float32) -> np.ndarray:
    """CUDA :func:`mirnet.sdk.ops.preprocess`: HxWx3 -> (1,3,Hp,Wp)."""
    ext = require()
    with native.input_errors():
        name = native.check_preprocess(img, order, multiple, dtype)
        return ext.cuda_preprocess(np.ascontiguousarray(img), order, int(multiple), name)


def preprocess_batch(imgs: Sequence[np.ndarray], *, order: str = "bgr", multiple: int = 4,
                     dtype: object = np.float32) -> np.ndarray:
    """CUDA :func:`mirnet.sdk.ops.preprocess_batch`: N images -> (N,3,Hp,Wp)."""
    ext = require()
    with native.input_errors():
        stacked, name = native.stack_batch(imgs, order, multiple, dtype)
        return ext.cuda_preprocess(stacked, order, int(multiple), name)


def postprocess(t: np.ndarray, out_hw: tuple[int, int], *, order: str = "bgr",
                out_dtype: object = np.uint8) -> np.ndarray:
    """CUDA :func:`mirnet.sdk.ops.postprocess`: (1,3,H,W) or (3,H,W) -> hxwx3."""
    ext = require()
    with native.input_errors():
        hw, name = native.check_postprocess(t, False, out_hw, order, out_dtype)
        return ext.cuda_postprocess(np.ascontiguousarray(t), hw, order, name)[0]


def postprocess_batch(t: np.ndarray, out_hw: tuple[int, int], *, order: str = "bgr",
                      out_dtype: object = np.uint8) -> list[np.ndarray]:
    """CUDA :func:`mirnet.sdk.ops.postprocess_batch`: (N,3,H,W) -> N hxwx3 images."""
    ext = require()
    with native.input_errors():
        hw, name = native.check_postprocess(t, True, out_hw, order, out_dtype)
        return list(ext.cuda_postprocess(np.ascontiguousarray(t), hw, order, name))


def preprocess_nv12(frame: np.ndarray, *, multiple: int = 4, dtype: object = np.float32) -> np.ndarray:
    """CUDA :func:`mirnet.sdk.ops.preprocess_nv12`."""
    ext = require()
    with native.input_errors():
        name = native.check_yuv(frame, True, multiple, dtype)
        return ext.cuda_preprocess_nv12(np.ascontiguousarray(frame), int(multiple), name)


def preprocess_yuyv(frame: np.ndarray, *, multiple: int = 4, dtype: object = np.float32) -> np.ndarray:
    """CUDA :func:`mirnet.sdk.ops.preprocess_yuyv`."""
    ext = require()
    with native.input_errors():
        name = native.check_yuv(frame, False, multiple, dtype)
        return ext.cuda_preprocess_yuyv(np.ascontiguousarray(frame), int(multiple), name)


def tile_accumulate(acc: np.ndarray, wsum: np.ndarray, out: np.ndarray, weight: np.ndarray,
                    y0: int, x0: int) -> None:
    """CUDA tile accumulation on host float32 arrays (in place), as used by ``run_tiled``."""
    ext = require()
    with native.input_errors():
        ext.cuda_tile_accumulate(acc, wsum, np.ascontiguousarray(out), np.ascontiguousarray(weight),
                                 int(y0), int(x0))


def tile_normalize(acc: np.ndarray, wsum: np.ndarray) -> None:
    """CUDA ``acc /= wsum`` on host float32 arrays (in place)."""
    ext = require()
    with native.input_errors():
        ext.cuda_tile_normalize(acc, wsum)


# ---------------------------------------------------------------- device pointers (asynchronous)


def buffer(nbytes: int):
    """A device allocation (``CudaBuffer``: ``.ptr``, ``.upload(arr)``, ``.download(arr)``, ``.free()``)."""
    ext = require()
    with native.input_errors():
        return ext.CudaBuffer(int(nbytes))


def synchronize(stream: int = 0) -> None:
    """Wait for ``stream`` (0: the whole device)."""
    require().cuda_synchronize(int(stream))


def preprocess_device(src: int, dst: int, n: int, h: int, w: int, *, src_dtype: object = "uint8",
                      order: str = "bgr", multiple: int = 4, dst_dtype: object = "float32",
                      stream: int = 0) -> tuple[int, int, int, int]:
    """Enqueue (n,h,w,3) image at ``src`` -> (n,3,hp,wp) RGB tensor at ``dst``; returns that shape."""
    ext = require()
    with native.input_errors():
        return ext.cuda_preprocess_ptr(int(src), int(dst), n, h, w, np.dtype(src_dtype).name, order,
                                       int(multiple), np.dtype(dst_dtype).name, int(stream))


def postprocess_device(src: int, dst: int, n: int, h: int, w: int, out_hw: tuple[int, int], *,
                       src_dtype: object = "float32", order: str = "bgr", dst_dtype: object = "uint8",
                       stream: int = 0) -> None:
    """Enqueue (n,3,h,w) tensor at ``src`` -> (n,out_h,out_w,3) image at ``dst``."""
    ext = require()
    with native.input_errors():
        ext.cuda_postprocess_ptr(int(src), int(dst), n, h, w, tuple(out_hw), np.dtype(src_dtype).name, order,
                                 np.dtype(dst_dtype).name, int(stream))


def preprocess_nv12_device(src: int, dst: int, h: int, w: int, *, multiple: int = 4,
                           dst_dtype: object = "float32", stream: int = 0) -> tuple[int, int, int, int]:
    """Enqueue NV12 frame (h*3/2, w) at ``src`` -> (1,3,hp,wp) at ``dst``; returns that shape."""
    ext = require()
    with native.input_errors():
        return ext.cuda_preprocess_nv12_ptr(int(src), int(dst), h, w, int(multiple), np.dtype(dst_dtype).name,
                                            int(stream))


def preprocess_yuyv_device(src: int, dst: int, h: int, w: int, *, multiple: int = 4,
                           dst_dtype: object = "float32", stream: int = 0) -> tuple[int, int, int, int]:
    """Enqueue YUYV frame (h, w, 2) at ``src`` -> (1,3,hp,wp) at ``dst``; returns that shape."""
    ext = require()
    with native.input_errors():
        return ext.cuda_preprocess_yuyv_ptr(int(src), int(dst), h, w, int(multiple), np.dtype(dst_dtype).name,
                                            int(stream))
