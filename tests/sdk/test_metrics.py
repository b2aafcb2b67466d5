"""Tests for mirnet.sdk.metrics (torch-free): PSNR, SSIM, BT.601 luma, to_float."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from mirnet.sdk.errors import InputError
from mirnet.sdk.metrics import psnr, rgb_to_y, ssim, to_float

RNG = np.random.default_rng(20240611)


def reference_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Direct Wang et al. SSIM: explicit loops over every valid 11x11 window position.

    Independent of the implementation: builds the 2-D Gaussian directly (not separably), and
    computes the weighted variance/covariance as sum w (x - mu)^2 rather than E[x^2] - mu^2.
    """
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    yy, xx = np.mgrid[-5:6, -5:6]
    w = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.5 ** 2))
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    per_channel = []
    for c in range(a.shape[2]):
        x, y = a[:, :, c].astype(np.float64), b[:, :, c].astype(np.float64)
        vals = []
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx = (w * (px - mx) ** 2).sum()
                vy = (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + c1) * (2 * cxy + c2)
                            / ((mx * mx + my * my + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


# ----------------------------------------------------------------------------------- PSNR
def test_psnr_constant_offset_is_20db():
    a = RNG.random((16, 16, 3)) * 0.8
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(a.astype(np.float32), (a + 0.1).astype(np.float32)) == pytest.approx(20.0, abs=1e-4)


def test_psnr_known_values_and_data_range():
    a = np.zeros((4, 4))
    assert psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-9)
    assert psnr(a, a + 25.5, data_range=255.0) == pytest.approx(20.0, abs=1e-9)
    b = a.copy()
    b[0, 0] = 1.0                       # MSE = 1/16 -> 10 log10(16)
    assert psnr(a, b) == pytest.approx(10 * math.log10(16), abs=1e-12)


def test_psnr_identical_is_inf():
    a = RNG.random((8, 9))
    assert psnr(a, a.copy()) == math.inf


def test_psnr_rejects_bad_input():
    a = RNG.random((8, 8, 3))
    with pytest.raises(InputError, match=r"\(8, 8, 3\).*\(8, 7, 3\)"):
        psnr(a, a[:, :7])
    with pytest.raises(InputError, match="uint8.*to_float"):
        psnr((a * 255).astype(np.uint8), (a * 255).astype(np.uint8))
    with pytest.raises(InputError, match="data_range=0"):
        psnr(a, a, data_range=0)


# ----------------------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one():
    a = RNG.random((20, 24, 3)).astype(np.float32)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a[:, :, 0], a[:, :, 0]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 3), (13, 17, 2)])
def test_ssim_matches_direct_windowed_reference(shape):
    a = RNG.random(shape)
    b = np.clip(a + RNG.normal(0.0, 0.1, shape), 0.0, 1.0)
    expected = reference_ssim(a, b)
    assert 0.0 < expected < 1.0
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_ssim_data_range_scales_constants():
    a = RNG.random((16, 16))
    b = np.clip(a + RNG.normal(0.0, 0.05, a.shape), 0.0, 1.0)
    assert ssim(a * 255, b * 255, data_range=255.0) == pytest.approx(ssim(a, b), abs=1e-9)
    assert ssim(a, b, data_range=2.0) == pytest.approx(reference_ssim(a, b, 2.0), abs=1e-6)


def test_ssim_averages_channels():
    a = RNG.random((16, 16, 3))
    b = np.clip(a + RNG.normal(0.0, 0.1, a.shape), 0.0, 1.0)
    per_channel = [ssim(a[:, :, c], b[:, :, c]) for c in range(3)]
    assert ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_ssim_rejects_bad_input():
    with pytest.raises(InputError, match="at least 11x11.*10x16"):
        ssim(np.zeros((10, 16)), np.zeros((10, 16)))
    with pytest.raises(InputError, match="HxW or HxWxC"):
        ssim(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16, 3)))


# ------------------------------------------------------------------------- Y and to_float
def test_rgb_to_y_white_black_and_primaries():
    white = np.ones((2, 3, 3), np.float32)
    black = np.zeros((2, 3, 3), np.float32)
    y_white, y_black = rgb_to_y(white), rgb_to_y(black)
    assert y_white.shape == (2, 3) and y_white.dtype == np.float32
    np.testing.assert_allclose(y_white, 235 / 255, atol=1e-6)
    np.testing.assert_allclose(y_black, 16 / 255, atol=1e-7)
    red = np.zeros((1, 1, 3))
    red[..., 0] = 1.0
    assert rgb_to_y(red)[0, 0] == pytest.approx((16 + 65.481) / 255, abs=1e-12)
    blue = np.zeros((1, 1, 3))
    blue[..., 2] = 1.0
    assert rgb_to_y(blue)[0, 0] == pytest.approx((16 + 24.966) / 255, abs=1e-12)
    # uint8 input is converted with to_float first.
    np.testing.assert_allclose(rgb_to_y(np.full((1, 1, 3), 255, np.uint8)), 235 / 255, atol=1e-6)


def test_rgb_to_y_rejects_non_rgb():
    with pytest.raises(InputError, match=r"HxWx3.*\(4, 4\)"):
        rgb_to_y(np.zeros((4, 4)))


def test_to_float():
    u8 = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_allclose(to_float(u8), [[0, 128 / 255, 1]], atol=1e-7)
    assert to_float(u8).dtype == np.float32
    u16 = np.array([0, 65535], np.uint16)
    np.testing.assert_allclose(to_float(u16), [0, 1])
    assert to_float(np.array([0.5], np.float64)).dtype == np.float32
    with pytest.raises(InputError, match="int32.*uint8, uint16"):
        to_float(np.zeros(3, np.int32))


def test_metrics_module_does_not_import_torch():
    code = ("import sys, mirnet.sdk.metrics as m, numpy as np; "
            "m.ssim(np.ones((11, 11)), np.ones((11, 11))); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'scipy' not in sys.modules, 'scipy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
