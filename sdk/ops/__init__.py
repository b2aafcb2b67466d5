"""Image pre/post-processing reference ops, format normalisation and tiling (NumPy only)."""

from .formats import ImageKind, from_rgb3, to_rgb3
from .reference import pad_amount, postprocess, postprocess_batch, preprocess, preprocess_batch
from .tiling import feather_weights, plan_tile, run_tiled, tile_starts

__all__ = [
    "ImageKind",
    "feather_weights",
    "from_rgb3",
    "pad_amount",
    "plan_tile",
    "postprocess",
    "postprocess_batch",
    "preprocess",
    "preprocess_batch",
    "run_tiled",
    "tile_starts",
    "to_rgb3",
]
