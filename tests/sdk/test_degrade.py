"""Synthetic degradations: the requested noise level is the delivered one, blur/JPEG behave,
and DegradeConfig is deterministic and validated."""
import numpy as np
import pytest

from mirnet.sdk.errors import ConfigError, InputError
from mirnet.sdk.degrade import (DegradeConfig, awgn, gaussian_blur, jpeg, low_light,
                                  motion_blur, motion_kernel, poisson_gaussian)


def flat(level=0.5, size=256):
    return np.full((size, size, 3), level, np.float32)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


@pytest.mark.parametrize("sigma", [5, 25, 50])
def test_awgn_sigma_you_ask_is_sigma_you_get(sigma):
    img = flat()
    out = awgn(img, sigma, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == img.shape
    noise = out.astype(np.float64) - 0.5
    assert abs(noise.std() / (sigma / 255) - 1) < 0.02
    assert abs(noise.mean()) < 0.05 * sigma / 255
    if sigma == 50:  # not clipped
        assert out.min() < 0 and out.max() > 1


@pytest.mark.parametrize("level", [0.2, 0.7])
def test_poisson_gaussian_variance(level):
    peak, read = 50.0, 5.0
    out = poisson_gaussian(flat(level), peak, read, np.random.default_rng(1))
    expected = level / peak + (read / 255) ** 2
    assert out.dtype == np.float32
    assert abs(out.var() / expected - 1) < 0.03
    assert abs(out.mean() - level) < 0.01


def test_low_light_scales_with_exposure():
    img = np.random.default_rng(0).uniform(0.2, 0.9, (64, 64, 3)).astype(np.float32)
    m = [low_light(img, np.random.default_rng(0), e, 1.0, 0.0).mean() for e in (0.1, 0.2, 0.4)]
    assert m[1] / m[0] == pytest.approx(2, rel=1e-5) and m[2] / m[0] == pytest.approx(4, rel=1e-5)
    assert m[0] == pytest.approx(0.1 * img.mean(), rel=1e-5)
    darker = low_light(img, np.random.default_rng(0), 0.1, 2.0, 0.0)
    assert darker.mean() < m[0]
    cast = low_light(img, np.random.default_rng(0), 0.1, 1.0, 0.2)
    ratios = cast.mean(axis=(0, 1)) / (0.1 * img.mean(axis=(0, 1)))
    assert np.all((ratios >= 0.8) & (ratios <= 1.2)) and np.ptp(ratios) > 0


def test_blurs_keep_mean_and_reduce_variance():
    img = np.random.default_rng(0).uniform(0, 1, (128, 128, 3)).astype(np.float32)
    for out in (gaussian_blur(img, 1.5), motion_blur(img, 9, 30.0)):
        assert out.dtype == np.float32 and out.shape == img.shape
        assert out.mean() == pytest.approx(img.mean(), abs=2e-3)
        assert out.var() < 0.5 * img.var()
    k = motion_kernel(8, 45.0)
    assert k.shape == (9, 9) and k.sum() == pytest.approx(1, abs=1e-6)
    assert np.array_equal(gaussian_blur(img, 0), img) and np.array_equal(motion_blur(img, 1, 0), img)


def test_jpeg_changes_image_but_keeps_quality():
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    img = np.stack([yy, xx, 0.5 + 0.3 * np.sin(8 * xx)], -1).astype(np.float32)
    out = jpeg(img, 90)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert not np.allclose(out, img, atol=1e-3)
    assert psnr(out, img) > 25
    # channel order survives the RGB <-> BGR round trip
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 1.0
    assert jpeg(red, 95).mean(axis=(0, 1))[0] > 0.9


FULL = dict(awgn_sigma=[5, 50], poisson_prob=0.5, low_light_prob=0.5, cast=0.1, blur_prob=0.5,
            motion_prob=0.5, jpeg_prob=0.5, clip=True)


def test_apply_deterministic_and_seed_sensitive():
    cfg = DegradeConfig.from_dict(FULL)
    img = np.random.default_rng(0).uniform(0, 1, (48, 48, 3)).astype(np.float32)
    a = cfg.apply(img, np.random.default_rng(7))
    b = cfg.apply(img, np.random.default_rng(7))
    c = cfg.apply(img, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert np.array_equal(DegradeConfig().apply(img, np.random.default_rng(0)), img)
    assert DegradeConfig().is_identity and not cfg.is_identity


def test_apply_awgn_only_matches_awgn():
    img = flat(0.5, 32)
    cfg = DegradeConfig(awgn_sigma=(25, 25))
    assert np.array_equal(cfg.apply(img, np.random.default_rng(3)), awgn(img, 25, np.random.default_rng(3)))


def test_from_dict_lists_become_tuples_and_round_trip():
    cfg = DegradeConfig.from_dict(FULL)
    assert cfg.awgn_sigma == (5.0, 50.0) and isinstance(cfg.jpeg_quality, tuple)
    assert DegradeConfig.from_dict(cfg.to_dict()) == cfg
    assert DegradeConfig.from_dict(None) == DegradeConfig() == DegradeConfig.from_dict({})


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"awgn_sigmaa.*valid keys:.*awgn_sigma.*jpeg_quality"):
        DegradeConfig.from_dict({"awgn_sigmaa": [0, 50]})


@pytest.mark.parametrize("bad, match", [
    ({"awgn_sigma": [50, 5]}, r"awgn_sigma=\[50, 5\].*lo <= hi.*lo > hi"),
    ({"awgn_sigma": 25}, r"awgn_sigma=25 is not a valid range"),
    ({"blur_prob": 1.5}, r"blur_prob=1.5 is not a probability.*\[0, 1\]"),
    ({"poisson_prob": -0.1}, r"poisson_prob"),
    ({"jpeg_quality": [10, 101]}, r"jpeg_quality.*100"),
    ({"motion_length": [3.5, 9]}, r"motion_length.*integers"),
    ({"exposure": [0, 0.5]}, r"exposure"),
    ({"cast": 1.0}, r"cast=1.0"),
    ({"clip": "yes"}, r"clip='yes' must be true or false"),
])
def test_from_dict_rejects_bad_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        DegradeConfig.from_dict(bad)


def test_bad_image_is_input_error():
    with pytest.raises(InputError, match="H x W x 3"):
        awgn(np.zeros((4, 4), np.float32), 10, np.random.default_rng(0))
    with pytest.raises(InputError, match="uint8"):
        DegradeConfig().apply(np.zeros((4, 4, 3), np.uint8), np.random.default_rng(0))
