"""Image quality metrics: PSNR, SSIM, BT.601 luma and integer-to-float conversion.

Torch-free on purpose (numpy + OpenCV only): the benchmark and quality-gate code import this
module on machines without torch.

Conventions
-----------
* Images are channel-last numpy arrays, ``HxW`` or ``HxWxC``, floats in ``[0, data_range]``
  (use :func:`to_float` to bring ``uint8``/``uint16`` images to ``[0, 1]`` first).
* :func:`ssim` is the Wang et al. (2004) SSIM as in the MATLAB reference and scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``:
  an 11x11 Gaussian window (sigma 1.5, normalised to sum 1), ``K1 = 0.01``, ``K2 = 0.03``,
  statistics taken only where the window fits inside the image ('valid' region), averaged over
  the map and then over the channels.
* For ``--y`` evaluation convert both images with :func:`rgb_to_y` (RGB order, ``[0, 1]``) and
  pass the ``HxW`` results to :func:`psnr` / :func:`ssim`.
"""
from __future__ import annotations

import math

import numpy as np

from mirnet.sdk.errors import InputError

__all__ = ["psnr", "ssim", "rgb_to_y", "to_float", "gaussian_window_1d",
           "SSIM_WIN_SIZE", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2"]

SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# ITU-R BT.601 (studio swing) RGB -> Y, as in MATLAB rgb2ycbcr / BasicSR: Y in [16, 235] / 255.
_Y_OFFSET = 16.0 / 255.0
_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def gaussian_window_1d(size: int = SSIM_WIN_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian; its outer product with itself is the 2-D SSIM window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_data_range(data_range) -> float:
    try:
        value = float(data_range)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise InputError(
            f"data_range={data_range!r} is invalid; it must be a finite number > 0 "
            "(1.0 for float images in [0, 1], 255.0 for [0, 255]). Pass data_range=1.0 after "
            "converting with to_float().")
    return value


def _as_float_pair(a, b, name: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    for label, arr in (("a", a), ("b", b)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(
                f"{name}() takes float arrays, but {label} has dtype {arr.dtype}; valid dtypes: "
                "float16/float32/float64. Convert integer images with "
                "mirnet.sdk.metrics.to_float(img) (then use data_range=1.0).")
    if a.shape != b.shape:
        raise InputError(
            f"{name}() needs two images of the same shape, got {a.shape} and {b.shape}; "
            "crop or resize one of them so that the shapes match.")
    return a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)


def psnr(a, b, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; ``inf`` if identical."""
    dr = _check_data_range(data_range)
    a, b = _as_float_pair(a, b, "psnr")
    if a.size == 0:
        raise InputError("psnr() got empty images (shape "
                         f"{a.shape}); pass images with at least one pixel.")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(dr * dr / mse)


def _filter_valid(x: np.ndarray, kernel: np.ndarray, pad: int) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 array with the 1-D ``kernel`` on both axes.

    OpenCV filters the full image; only the interior where the whole window fits is kept, so the
    border mode never influences the result.
    """
    import cv2

    h, w = x.shape
    full = cv2.sepFilter2D(x, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return full[pad:h - pad, pad:w - pad]


def _ssim_channel(x: np.ndarray, y: np.ndarray, c1: float, c2: float) -> float:
    kernel = gaussian_window_1d().reshape(-1, 1)
    pad = (SSIM_WIN_SIZE - 1) // 2
    mu_x = _filter_valid(x, kernel, pad)
    mu_y = _filter_valid(y, kernel, pad)
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    mu_xy = mu_x * mu_y
    var_x = _filter_valid(x * x, kernel, pad) - mu_xx
    var_y = _filter_valid(y * y, kernel, pad) - mu_yy
    cov = _filter_valid(x * y, kernel, pad) - mu_xy
    num = (2.0 * mu_xy + c1) * (2.0 * cov + c2)
    den = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))


def ssim(a, b, *, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004) over the 'valid' region, averaged over channels.

    ``a`` and ``b`` are float ``HxW`` or ``HxWxC`` arrays, each side at least 11 pixels.
    """
    dr = _check_data_range(data_range)
    a, b = _as_float_pair(a, b, "ssim")
    if a.ndim not in (2, 3):
        raise InputError(
            f"ssim() takes HxW or HxWxC images, got an array of shape {a.shape}; "
            "drop the batch dimension or move channels last.")
    if a.ndim == 2:
        a = a[:, :, None]
        b = b[:, :, None]
    if min(a.shape[:2]) < SSIM_WIN_SIZE:
        raise InputError(
            f"ssim() needs images of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels (the Gaussian "
            f"window), got {a.shape[0]}x{a.shape[1]}; evaluate on larger images or crops.")
    c1 = (SSIM_K1 * dr) ** 2
    c2 = (SSIM_K2 * dr) ** 2
    values = [_ssim_channel(np.ascontiguousarray(a[:, :, c]), np.ascontiguousarray(b[:, :, c]),
                            c1, c2) for c in range(a.shape[2])]
    return float(np.mean(values))


def to_float(img) -> np.ndarray:
    """``uint8`` (/255) or ``uint16`` (/65535) image -> ``float32`` in ``[0, 1]``.

    Float images are returned as ``float32`` unchanged in value (assumed already in ``[0, 1]``).
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float32, copy=False)
    raise InputError(
        f"to_float() got an image of dtype {img.dtype}; valid dtypes: uint8, uint16 or float. "
        "Read images with OpenCV (cv2.IMREAD_UNCHANGED) or convert them to uint8 first.")


def rgb_to_y(img) -> np.ndarray:
    """BT.601 luma of an RGB ``HxWx3`` image in ``[0, 1]`` -> ``HxW`` Y in ``[16/255, 235/255]``.

    ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` (MATLAB ``rgb2ycbcr``, the
    convention of the restoration literature). Integer images are converted with
    :func:`to_float` first. Note the channel order: RGB, not OpenCV's BGR.
    """
    img = np.asarray(img)
    if not np.issubdtype(img.dtype, np.floating):
        img = to_float(img)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(
            f"rgb_to_y() takes an HxWx3 RGB image, got shape {img.shape}; pass a 3-channel "
            "channel-last image (convert BGR from cv2.imread with img[..., ::-1]).")
    y = img.astype(np.float64, copy=False) @ _Y_COEFFS + _Y_OFFSET
    return y.astype(img.dtype if img.dtype in (np.float32, np.float64) else np.float32)
