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

__all__ = ["evaluate", "score", "nlm", "tune_nlm", "NLM_PARAMS", "NLM_TUNED"]

#: OpenCV non-local means settings of the classical baseline (tuned on CBSD68, AWGN sigma 25)
NLM_PARAMS = {"h": 18, "hColor": 22, "templateWindowSize": 3, "searchWindowSize": 11}
#: the baseline's strength per camera protocol, tuned on val: ``mirnet eval --baseline nlm --tune
#: --protocol P --data CBSD68 --crop 256`` (all 68 images; h = hColor from :data:`NLM_GRID`)
NLM_TUNED: dict[str, dict] = {
    "camera-h264": {**NLM_PARAMS, "h": 8, "hColor": 8},
    "camera-jpeg": {**NLM_PARAMS, "h": 10, "hColor": 10},
    "camera-mono": {**NLM_PARAMS, "h": 33, "hColor": 33},
    "camera-h264-mono": {**NLM_PARAMS, "h": 22, "hColor": 22},
}
NLM_GRID = (2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 27, 33, 40)


def nlm(degraded: np.ndarray, params: dict = NLM_PARAMS) -> np.ndarray:
    """The classical baseline: OpenCV non-local means on a float RGB ``H x W x 3`` image in [0, 1]
    (rounded to uint8 first, as a camera frame would be): fastNlMeansDenoising on gray frames
    (three equal channels), fastNlMeansDenoisingColored otherwise. Returns float32 RGB in [0, 1]."""
    import cv2

    u8 = (np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)
    windows = {k: params[k] for k in ("templateWindowSize", "searchWindowSize")}
    if np.array_equal(u8[..., 0], u8[..., 1]) and np.array_equal(u8[..., 0], u8[..., 2]):
        gray = cv2.fastNlMeansDenoising(np.ascontiguousarray(u8[..., 0]), None, h=params["h"], **windows)
        return np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / np.float32(255)
    bgr = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(u8[..., ::-1]), None, h=params["h"],
                                          hColor=params["hColor"], **windows)
    return bgr[..., ::-1].astype(np.float32) / np.float32(255)


def tune_nlm(pairs: Iterable[tuple[np.ndarray, np.ndarray]], grid: Iterable[int] = NLM_GRID) -> dict:
    """The :data:`NLM_PARAMS` whose ``h`` (= ``hColor``) from ``grid`` gives the best mean PSNR on
    ``pairs`` (tune on validation data only)."""
    pairs = list(pairs)
    best = None
    for h in grid:
        params = {**NLM_PARAMS, "h": h, "hColor": h}
        value = score(lambda degraded, params=params: nlm(degraded, params), pairs)["psnr"]
        if best is None or value > best[0]:
            best = (value, params)
    return best[1]


def score(run: Callable[[np.ndarray], np.ndarray], pairs: Iterable[tuple[np.ndarray, np.ndarray]], *,
          y_channel: bool = False) -> dict:
    """Mean PSNR/SSIM of ``run`` (float ``H x W x 3`` RGB in, the same out, clipped to [0, 1]) over
    ``(degraded, clean)`` pairs, on RGB or BT.601 Y; also the mean seconds per image."""
    scores_p, scores_s, scores_in, seconds = [], [], [], 0.0
    for degraded, clean in pairs:
        t0 = time.perf_counter()
        out = run(degraded)
        seconds += time.perf_counter() - t0
        a, b = (rgb_to_y(out), rgb_to_y(clean)) if y_channel else (out, clean)
        scores_p.append(psnr(a, b))
        scores_s.append(ssim(a, b))
        scores_in.append(psnr(np.clip(degraded, 0, 1), clean))
    if not scores_p:
        raise ConfigError("no image pairs to score")
    return {"psnr": float(np.mean(scores_p)), "ssim": float(np.mean(scores_s)), "input_psnr": float(np.mean(scores_in)),
            "n": len(scores_p), "seconds_per_image": seconds / len(scores_p)}


def _model_fn(restorer) -> Callable[[np.ndarray], np.ndarray]:
    from .ops import run_padded

    spec = restorer.spec

    def run(degraded: np.ndarray) -> np.ndarray:
        return run_padded(restorer.infer_tensor, degraded, multiple=spec.pad_multiple, scale=spec.scale)

    return run


def evaluate(data: str | Path, *, model: str | None = None, baseline: str | None = None,
             sigma: float | None = None, pairs: bool = False, protocol: str | None = None,
             y_channel: bool = False, clip: bool = False, limit: int | None = None, crop: int | None = None,
             backend: str = "auto", threads: int | None = None, holdout_every: int = 0,
             tune: bool = False, gray: bool = False, gray_model: str | None = "auto") -> dict:
    """Evaluate ``model`` (or ``baseline='nlm'``, OpenCV non-local means, tuned per camera
    protocol) on clean images + AWGN (``sigma``), paired folders (``pairs``) or clean images
    filmed by a camera preset (``protocol``, :data:`mirnet.sdk.camera.PRESETS`). ``tune`` (with
    the NLM baseline) picks its strength on this data first (:func:`tune_nlm`; tune on val only)
    and reports it as ``nlm_params``. ``gray`` (with ``sigma``): monochrome frames at that noise
    level (see :meth:`EvalSet.from_clean`). ``gray_model``: what restores gray frames (see
    :class:`~mirnet.sdk.Restorer`; ``auto``: a bundled model's gray specialist)."""
    data = Path(data)
    if sum((sigma is not None, bool(pairs), protocol is not None)) != 1:
        raise ConfigError("give exactly one of --sigma S (clean images + AWGN), --pairs or --protocol NAME "
                          "(clean images through a camera preset)")
    if (model is None) == (baseline is None):
        raise ConfigError("give exactly one of --model or --baseline")
    if baseline not in (None, "nlm"):
        raise ConfigError(f"--baseline {baseline!r}: the only baseline is 'nlm'")
    if gray and sigma is None:
        raise ConfigError("--gray makes monochrome AWGN frames; use it with --sigma (camera-mono is the gray "
                          "camera preset)")
    if tune and baseline is None:
        raise ConfigError("--tune tunes the NLM baseline's strength; use it with --baseline nlm")
    if pairs:
        low, high, low_prefix, high_prefix = find_pairs(data)
        evalset = EvalSet.from_pairs(low, high, limit=limit, crop=crop, low_prefix=low_prefix,
                                     high_prefix=high_prefix, holdout_every=holdout_every)
        described = "paired folders matched by name" + (
            f", every {holdout_every}th pair (held out of training)" if holdout_every else "")
    elif protocol is not None:
        evalset = EvalSet.from_protocol(data, protocol, limit=limit, crop=crop)
        described = f"camera preset {protocol} (seed 0, one camera draw per image)"
    else:
        evalset = EvalSet.from_clean(data, sigma, limit=limit, crop=crop, clip=clip, gray=gray)
        described = (f"AWGN sigma {sigma:g}/255, float noise, seed 0 per image, "
                     + ("gray frames, " if gray else "")
                     + ("input clipped and rounded to uint8" if clip else "no clipping"))
    described += "; metrics on " + ("Y (BT.601)" if y_channel else "RGB") + ", output clipped to [0, 1]"
    extra = {}
    if baseline:
        params = tune_nlm(evalset) if tune else NLM_TUNED.get(protocol, NLM_PARAMS)
        result = score(lambda degraded: nlm(degraded, params), evalset, y_channel=y_channel)
        extra["nlm_params"] = params
    else:
        from .restorer import Restorer

        with Restorer(model, backend=backend, threads=threads, tile=None, gray_model=gray_model) as restorer:
            result = score(_model_fn(restorer), evalset, y_channel=y_channel)
    return {"model": model or f"baseline:{baseline}", "data": str(data), "protocol": described,
            "sigma": sigma, **result, **extra}
