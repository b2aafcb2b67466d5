"""Calibration data for INT8 quantization and the ``--exclude`` patterns both targets take.

Torch-free (numpy + OpenCV): crops of the user's images turned into the model's own inputs
(:mod:`mirnet.sdk.mixture`: its training degradations by default; calibrating a restorer on clean
frames is a bug, ARCHITECTURE.md section 5).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from mirnet.sdk.errors import ConfigError
from mirnet.sdk.mixture import ModelInputs

__all__ = ["load_calibration", "split_patterns", "METHODS", "DEFAULT_METHODS", "DEFAULT_CALIB_IMAGES",
           "DEFAULT_CALIB_SIZE", "DEFAULT_PERCENTILE"]

METHODS = ("max", "entropy", "percentile")
DEFAULT_CALIB_IMAGES = 32
DEFAULT_CALIB_SIZE = 128
# Activation range calibration per target when none is given. The Q/DQ targets clip at the
# 99.999th percentile: on the bundled denoiser (16 CBSD68 crops, post-training only) it lost
# 0.098 dB on its training mixture and 0.108 dB on AWGN sigma 25, where max lost 0.127 / 0.172 and
# the 99.99th percentile 0.088 / 0.126 (README, Benchmarks). ONNX Runtime's static quantizer keeps
# max, the range it was measured with; NNCF (openvino) chooses its own ranges.
DEFAULT_METHODS = {"tensorrt": "percentile", "cpu": "percentile", "onnxruntime": "max", "openvino": "max"}
DEFAULT_PERCENTILE = 99.999


def load_calibration(folder: str | os.PathLike | None, *, inputs: ModelInputs, n: int = DEFAULT_CALIB_IMAGES,
                     size: int = DEFAULT_CALIB_SIZE, multiple: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` calibration crops ``N x 3 x S x S`` (float32 RGB [0, 1]) of the model's own ``inputs``:
    each a random rescale (0.5-1x, never below ``S``) and random ``S x S`` crop of an image
    (images cycled in a seeded random order), randomly flipped, then degraded by ``inputs``
    (crop ``i`` with ``default_rng([seed, 1, i])``); for ``inputs.kind == "pairs"`` the crops come
    from the degraded side of the pairs and ``folder`` is not used. ``S`` is ``size`` rounded up
    to ``multiple`` and to an even number (4:2:0 codecs)."""
    import cv2

    from mirnet.sdk.evalsets import find_pairs, pair_folders
    from mirnet.sdk.media import list_images, load_rgb

    for name, value, lo in (("--calib-images", n, 1), ("calibration size", size, 8)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ConfigError(f"{name} {value!r}: give an integer >= {lo}")
    step = multiple * 2 // math.gcd(multiple, 2)
    size = -(-int(size) // step) * step
    synth = inputs.synthesizer()
    if synth is None:
        low, high, low_prefix, high_prefix = find_pairs(inputs.pairs)
        files = [lo for lo, _ in pair_folders(low, high, low_prefix=low_prefix, high_prefix=high_prefix)]
    else:
        if folder is None:
            raise ConfigError(f"calibration from {inputs.description} needs --calib DIR (clean images)")
        files = list_images(folder)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    cache: dict[int, np.ndarray] = {}
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        k = int(order[i % len(files)])
        if k not in cache:
            cache[k] = load_rgb(files[k])
        img = cache[k]
        h, w = img.shape[:2]
        lo = size / min(h, w)
        scale = float(rng.uniform(max(0.5, lo), max(1.0, lo)))
        if abs(scale - 1.0) > 1e-6:
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = img[y:y + size, x:x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if synth is not None:
            crop = synth(np.ascontiguousarray(crop), np.random.default_rng([seed, 1, i]))[0]
        out[i] = crop.transpose(2, 0, 1)
        if len(cache) > 64:
            cache.clear()
    return out


def split_patterns(exclude: Iterable[str] | str | None) -> list[str]:
    """``--exclude`` values (repeated and/or comma-separated) as a list of unique patterns."""
    if exclude is None:
        return []
    if isinstance(exclude, str):
        exclude = [exclude]
    out = []
    for item in exclude:
        out += [p.strip() for p in str(item).split(",") if p.strip()]
    return list(dict.fromkeys(out))
