"""Image pre/post-processing, camera formats, format normalisation and tiling.

The NumPy reference (:mod:`.reference`) defines the numbers; the C++ extension
``mirnet.sdk._ext`` (OpenMP, built by ``pip install``) reproduces them bit-exactly and is used when it
imports. :data:`BACKEND` says which runs ("cpp" or "numpy"); ``MIRNET_OPS=numpy`` forces the
reference. CUDA versions of the kernels: :mod:`.cuda`. Bad input raises
:class:`~mirnet.sdk.errors.InputError` (a ValueError).
"""

from . import cuda
from .formats import ImageKind, from_rgb3, to_rgb3
from .native import (
    BACKEND,
    postprocess,
    postprocess_batch,
    preprocess,
    preprocess_batch,
    preprocess_nv12,
    preprocess_yuyv,
)
from .reference import nv12_to_rgb, pad_amount, yuyv_to_rgb
from .tiling import feather_weights, plan_tile, run_padded, run_tiled, tile_starts

__all__ = [
    "BACKEND",
    "ImageKind",
    "cuda",
    "feather_weights",
    "from_rgb3",
    "nv12_to_rgb",
    "pad_amount",
    "plan_tile",
    "postprocess",
    "postprocess_batch",
    "preprocess",
    "preprocess_batch",
    "preprocess_nv12",
    "preprocess_yuyv",
    "run_padded",
    "run_tiled",
    "tile_starts",
    "to_rgb3",
    "yuyv_to_rgb",
]
