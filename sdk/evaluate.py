"""``mirnet eval``: PSNR/SSIM of a model (any backend) or a classical baseline on a data folder.

Protocols:
- ``sigma``: the standard AWGN benchmark: float noise N(0, sigma/255) added to the clean image,
  the generator reset to seed 0 for every image, no clipping or rounding unless ``clip`` (then the
  noisy input is clipped to [0, 1] and rounded to uint8 levels). PSNR/SSIM on RGB (or Y with
  ``y_channel``) in [0, 1], the restored output clipped to [0, 1], averaged over images.
- ``pairs``: degraded/clean folder pairs matched by file name.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .evalsets import EvalSet, find_pairs
from .metrics import psnr, rgb_to_y, ssim

__all__ = ["evaluate", "score", "nlm", "NLM_PARAMS"]

#: OpenCV fastNlMeansDenoisingColored settings of the classical baseline (tuned on CBSD68, sigma 25)
NLM_PARAMS = {"h": 18, "hColor": 22, "templateWindowSize": 3, "searchWindowSize": 11}


def nlm(degraded: np.ndarray) -> np.ndarray:
    """The classical baseline: OpenCV non-local means on a float RGB ``H x W x 3`` image in [0, 1]
    (rounded to uint8 first, as a camera frame would be). Returns float32 RGB in [0, 1]."""
    import cv2

    u8 = (np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)
    bgr = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(u8[..., ::-1]), None, **NLM_PARAMS)
    return bgr[..., ::-1].astype(np.float32) / np.float32(255)


def score(run: Callable[[np.ndarray], np.ndarray], pairs: Iterable[tuple[np.ndarray, np.ndarray]], *,
          y_channel: bool = False) -> dict:
    """Mean PSNR/SSIM of ``run`` (float ``H x W x 3`` RGB in, the same out, clipped to [0, 1]) over
    ``(degraded, clean)`` pairs, on RGB or BT.601 Y; also the mean seconds per image."""
    scores_p, scores_s, seconds = [], [], 0.0
    for degraded, clean in pairs:
        t0 = time.perf_counter()
        out = run(degraded)
        seconds += time.perf_counter() - t0
        a, b = (rgb_to_y(out), rgb_to_y(clean)) if y_channel else (out, clean)
        scores_p.append(psnr(a, b))
        scores_s.append(ssim(a, b))
    if not scores_p:
        raise ConfigError("no image pairs to score")
    return {"psnr": float(np.mean(scores_p)), "ssim": float(np.mean(scores_s)), "n": len(scores_p),
            "seconds_per_image": seconds / len(scores_p)}


def _model_fn(restorer) -> Callable[[np.ndarray], np.ndarray]:
    from .ops import run_padded

    spec = restorer.spec

    def run(degraded: np.ndarray) -> np.ndarray:
        return run_padded(restorer.infer_tensor, degraded, multiple=spec.pad_multiple, scale=spec.scale)

    return run


def evaluate(data: str | Path, *, model: str | None = None, baseline: str | None = None,
             sigma: float | None = None, pairs: bool = False, y_channel: bool = False,
             clip: bool = False, limit: int | None = None, backend: str = "auto",
             threads: int | None = None, holdout_every: int = 0) -> dict:
    """Evaluate ``model`` (or ``baseline='nlm'``, OpenCV fastNlMeansDenoisingColored)."""
    data = Path(data)
    if (sigma is None) == (not pairs):
        raise ConfigError("give exactly one of --sigma S (clean images + AWGN) or --pairs")
    if (model is None) == (baseline is None):
        raise ConfigError("give exactly one of --model or --baseline")
    if baseline not in (None, "nlm"):
        raise ConfigError(f"--baseline {baseline!r}: the only baseline is 'nlm'")
    if pairs:
        low, high, low_prefix, high_prefix = find_pairs(data)
        evalset = EvalSet.from_pairs(low, high, limit=limit, low_prefix=low_prefix, high_prefix=high_prefix,
                                     holdout_every=holdout_every)
        protocol = "paired folders matched by name" + (
            f", every {holdout_every}th pair (held out of training)" if holdout_every else "")
    else:
        evalset = EvalSet.from_clean(data, sigma, limit=limit, clip=clip)
        protocol = (f"AWGN sigma {sigma:g}/255, float noise, seed 0 per image, "
                    + ("input clipped and rounded to uint8" if clip else "no clipping"))
    protocol += "; metrics on " + ("Y (BT.601)" if y_channel else "RGB") + ", output clipped to [0, 1]"
    if baseline:
        result = score(nlm, evalset, y_channel=y_channel)
    else:
        from .restorer import Restorer

        with Restorer(model, backend=backend, threads=threads, tile=None) as restorer:
            result = score(_model_fn(restorer), evalset, y_channel=y_channel)
    return {"model": model or f"baseline:{baseline}", "data": str(data), "protocol": protocol,
            "sigma": sigma, **result}
