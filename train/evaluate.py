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
from pathlib import Path

import numpy as np

from mirnet.sdk.errors import ConfigError

from .data import EvalSet
from .metrics import psnr, rgb_to_y, ssim

PAIR_NAMES = (("low", "high"), ("NOISY", "GT"), ("input", "target"), ("lq", "gt"))
NLM_PARAMS = {"h": 18, "hColor": 22, "templateWindowSize": 3, "searchWindowSize": 11}


def find_pairs(folder: Path) -> tuple[Path, Path]:
    for low, high in PAIR_NAMES:
        if (folder / low).is_dir() and (folder / high).is_dir():
            return folder / low, folder / high
    raise ConfigError(f"{folder}: --pairs needs sub-folders named one of "
                      f"{[f'{a}/{b}' for a, b in PAIR_NAMES]}")


def _nlm(degraded: np.ndarray) -> np.ndarray:
    import cv2

    u8 = (np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)
    bgr = cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, **NLM_PARAMS)
    return bgr[..., ::-1].astype(np.float32) / 255


def _model_fn(model: str, backend: str, threads: int | None):
    from mirnet.sdk import Restorer

    restorer = Restorer(model, backend=backend, threads=threads, tile=None)
    m = restorer.spec.pad_multiple

    def run(degraded: np.ndarray) -> np.ndarray:
        h, w = degraded.shape[:2]
        x = np.pad(degraded, ((0, -h % m), (0, -w % m), (0, 0)), mode="reflect")
        y = restorer.infer_tensor(np.ascontiguousarray(x.transpose(2, 0, 1))[None])
        return np.clip(y[0, :, :h, :w].transpose(1, 2, 0), 0, 1)

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
        evalset = EvalSet.from_pairs(*find_pairs(data), limit=limit, holdout_every=holdout_every)
        protocol = "paired folders matched by name" + (
            f", every {holdout_every}th pair (held out of training)" if holdout_every else "")
    else:
        evalset = EvalSet.from_clean(data, sigma, limit=limit, clip=clip)
        protocol = (f"AWGN sigma {sigma:g}/255, float noise, seed 0 per image, "
                    + ("input clipped and rounded to uint8" if clip else "no clipping"))
    protocol += "; metrics on " + ("Y (BT.601)" if y_channel else "RGB") + ", output clipped to [0, 1]"
    run = _nlm if baseline else _model_fn(model, backend, threads)
    scores_p, scores_s, seconds = [], [], 0.0
    for degraded, clean in evalset:
        t0 = time.perf_counter()
        out = run(degraded)
        seconds += time.perf_counter() - t0
        a, b = (rgb_to_y(out), rgb_to_y(clean)) if y_channel else (out, clean)
        scores_p.append(psnr(a, b))
        scores_s.append(ssim(a, b))
    if not scores_p:
        raise ConfigError(f"{data}: no images to evaluate")
    return {"model": model or f"baseline:{baseline}", "data": str(data), "protocol": protocol,
            "sigma": sigma, "psnr": float(np.mean(scores_p)), "ssim": float(np.mean(scores_s)),
            "n": len(scores_p), "seconds_per_image": seconds / len(scores_p)}
