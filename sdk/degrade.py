"""Synthetic degradations for training MIRNet-v2 (denoising, low-light enhancement).

Every function takes and returns a float32 ``H x W x 3`` RGB image in [0, 1] (outputs may leave
[0, 1]: noise is never clipped here; :class:`DegradeConfig` clips at the end when ``clip=True``).
Randomness only comes from the ``np.random.Generator`` passed in, never from a global RNG, so a
training sample is a pure function of its seed.

Noise levels are given in 0-255 units, as in the literature: ``sigma255=25`` means a noise
standard deviation of ``25/255`` on a [0, 1] image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import cv2
import numpy as np

from mirnet.sdk.errors import ConfigError, InputError

__all__ = [
    "awgn", "poisson_gaussian", "low_light", "gaussian_blur", "motion_blur", "jpeg",
    "DegradeConfig",
]


def _check_image(img: Any, name: str = "img") -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", type(img).__name__)
        raise InputError(
            f"{name} must be a float H x W x 3 RGB numpy array in [0, 1], got {shape}; "
            f"load images with mirnet.sdk.media.load_rgb")
    if not np.issubdtype(img.dtype, np.floating):
        raise InputError(
            f"{name} has dtype {img.dtype}; degradations work on float images in [0, 1] "
            f"(convert with img.astype(np.float32) / 255 or use mirnet.sdk.media.load_rgb)")
    return img


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------

def awgn(img: np.ndarray, sigma255: float, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """Additive white Gaussian noise ``N(0, sigma255/255)``, i.i.d. per pixel and channel.

    Not clipped (the Gaussian-denoising benchmark convention). Returns float32.
    """
    img = _check_image(img)
    if sigma255 < 0:
        raise ConfigError(f"awgn: sigma255={sigma255} is negative; use a value >= 0 (0-255 units)")
    noisy = img + rng.normal(0.0, sigma255 / 255.0, img.shape)
    return noisy.astype(np.float32)


def poisson_gaussian(img: np.ndarray, peak: float, read_sigma255: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Camera noise: shot noise ``Poisson(img * peak) / peak`` plus Gaussian read noise.

    ``peak`` is the photon count at white (smaller = darker scene = noisier); the variance at
    level ``x`` is ``x / peak + (read_sigma255/255)**2``. Negative inputs are treated as 0 for
    the shot noise. Not clipped. Returns float32.
    """
    img = _check_image(img)
    if not peak > 0:
        raise ConfigError(f"poisson_gaussian: peak={peak} must be > 0 (photons at white, e.g. 5 to 500)")
    if read_sigma255 < 0:
        raise ConfigError(f"poisson_gaussian: read_sigma255={read_sigma255} is negative; use >= 0")
    lam = np.clip(img.astype(np.float64), 0.0, None) * peak
    noisy = rng.poisson(lam) / peak
    if read_sigma255 > 0:
        noisy = noisy + rng.normal(0.0, read_sigma255 / 255.0, img.shape)
    return noisy.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Photometric
# ---------------------------------------------------------------------------------------------

def low_light(img: np.ndarray, rng: np.random.Generator, exposure: float, gamma: float,
              cast: float = 0.0) -> np.ndarray:
    """Darken: ``(img ** gamma) * exposure * gains`` with per-channel colour-cast gains drawn
    uniformly from ``[1 - cast, 1 + cast]`` (``rng`` is used only for the gains). Returns float32.
    """
    img = _check_image(img)
    if not exposure > 0:
        raise ConfigError(f"low_light: exposure={exposure} must be > 0 (e.g. 0.05 to 0.5)")
    if not gamma > 0:
        raise ConfigError(f"low_light: gamma={gamma} must be > 0 (1 = linear, >1 darkens shadows more)")
    if not 0 <= cast < 1:
        raise ConfigError(f"low_light: cast={cast} must be in [0, 1) (0 = no colour cast)")
    base = np.clip(img, 0.0, None)
    if gamma != 1:
        base = base ** np.float32(gamma)
    gains = 1.0 + rng.uniform(-cast, cast, 3) if cast > 0 else np.ones(3)
    return (base * (exposure * gains).astype(np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Blur and compression
# ---------------------------------------------------------------------------------------------

def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur, kernel size ``2 * ceil(3 * sigma) + 1``, reflect-101 borders.
    ``sigma <= 0`` returns a copy. Returns float32."""
    img = _check_image(img).astype(np.float32, copy=False)
    if sigma <= 0:
        return img.copy()
    k = 2 * int(math.ceil(3.0 * sigma)) + 1
    return cv2.GaussianBlur(img, (k, k), sigmaX=float(sigma), sigmaY=float(sigma),
                            borderType=cv2.BORDER_REFLECT_101)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalised line kernel of ``length`` pixels through the centre at ``angle_deg``
    (0 = horizontal, counter-clockwise), anti-aliased by bilinear splatting. Odd size."""
    length = int(length)
    if length < 1:
        raise ConfigError(f"motion_blur: length={length} must be >= 1 pixel")
    size = length if length % 2 == 1 else length + 1
    c = size // 2
    kernel = np.zeros((size, size), np.float64)
    theta = math.radians(angle_deg)
    ts = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, max(4 * length, 1))
    xs = c + ts * math.cos(theta)
    ys = c - ts * math.sin(theta)
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(kernel, (yi[ok], xi[ok]), w[ok])
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(img: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Linear motion blur with :func:`motion_kernel` (normalised, so the mean is kept);
    ``length <= 1`` returns a copy. Returns float32."""
    img = _check_image(img).astype(np.float32, copy=False)
    if int(length) <= 1:
        return img.copy()
    kernel = motion_kernel(length, angle_deg)
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at ``quality`` (1-100) through uint8 (the input is clipped to [0, 1] and
    rounded first; RGB is swapped to BGR for OpenCV and back). Returns float32 in [0, 1]."""
    img = _check_image(img)
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ConfigError(f"jpeg: quality={quality} must be an integer in [1, 100]")
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV built without a JPEG codec
        raise InputError(f"jpeg: OpenCV could not encode a {img.shape} image as JPEG")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return (dec[..., ::-1].astype(np.float32) / np.float32(255.0))


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, r: tuple) -> float:
    lo, hi = r
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _log_uniform(rng: np.random.Generator, r: tuple) -> float:
    lo, hi = r
    return float(lo) if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _int_uniform(rng: np.random.Generator, r: tuple) -> int:
    lo, hi = r
    return int(lo) if lo == hi else int(rng.integers(lo, hi + 1))


# name -> (kind, minimum, maximum, note); kind "float"/"int" ranges are (lo, hi) pairs.
_RANGES: dict[str, tuple[str, float, float, str]] = {
    "awgn_sigma": ("float", 0.0, math.inf, "0-255 units, e.g. [0, 50]"),
    "poisson_peak": ("float", 1e-6, math.inf, "photons at white, log-uniform, e.g. [5, 500]"),
    "read_sigma": ("float", 0.0, math.inf, "0-255 units, e.g. [0, 10]"),
    "exposure": ("float", 1e-6, math.inf, "log-uniform gain, e.g. [0.05, 0.5]"),
    "gamma": ("float", 1e-6, math.inf, "e.g. [1.0, 2.0]"),
    "blur_sigma": ("float", 0.0, math.inf, "pixels, e.g. [0.5, 2.0]"),
    "motion_length": ("int", 1, math.inf, "pixels, integers, e.g. [3, 15]"),
    "jpeg_quality": ("int", 1, 100, "integers in [1, 100], e.g. [30, 95]"),
}
_PROBS = ("poisson_prob", "low_light_prob", "blur_prob", "motion_prob", "jpeg_prob")


@dataclass(frozen=True)
class DegradeConfig:
    """Random degradation pipeline for a clean training image. The defaults do nothing.

    Order in :meth:`apply`: low-light -> Gaussian blur -> motion blur -> noise
    (Poisson-Gaussian with probability ``poisson_prob``, else AWGN when ``awgn_sigma`` is set)
    -> JPEG -> clip. Ranges are ``(lo, hi)``; sampled uniformly unless noted log-uniform;
    ``lo == hi`` fixes the value.
    """

    awgn_sigma: tuple[float, float] | None = None   # 0-255 units; None = no AWGN
    poisson_prob: float = 0.0                        # P(Poisson-Gaussian instead of AWGN)
    poisson_peak: tuple[float, float] = (5.0, 500.0)  # photons at white, log-uniform
    read_sigma: tuple[float, float] = (0.0, 10.0)     # Gaussian read noise, 0-255 units
    low_light_prob: float = 0.0
    exposure: tuple[float, float] = (0.05, 0.5)       # log-uniform
    gamma: tuple[float, float] = (1.0, 1.0)
    cast: float = 0.0                                 # per-channel gains in [1-cast, 1+cast]
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    motion_prob: float = 0.0
    motion_length: tuple[int, int] = (3, 15)          # angle uniform in [0, 180) degrees
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)
    clip: bool = False                                # clip the result to [0, 1]

    def __post_init__(self) -> None:
        for name, (kind, vmin, vmax, note) in _RANGES.items():
            value = getattr(self, name)
            if value is None and name == "awgn_sigma":
                continue
            object.__setattr__(self, name, _check_range(name, value, kind, vmin, vmax, note))
        for name in _PROBS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(
                    f"DegradeConfig.{name}={value!r} is not a probability; use a number in [0, 1] "
                    f"(0 disables the step)")
            object.__setattr__(self, name, float(value))
        if isinstance(self.cast, bool) or not isinstance(self.cast, (int, float)) or not 0 <= self.cast < 1:
            raise ConfigError(f"DegradeConfig.cast={self.cast!r} must be a number in [0, 1) "
                              f"(0 = no colour cast, 0.1 = gains in [0.9, 1.1])")
        object.__setattr__(self, "cast", float(self.cast))
        if not isinstance(self.clip, bool):
            raise ConfigError(f"DegradeConfig.clip={self.clip!r} must be true or false")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "DegradeConfig":
        """Build from a YAML mapping; unknown keys and bad ranges raise ConfigError, lists
        become tuples. ``None`` or ``{}`` gives the do-nothing default."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"degrade must be a mapping of DegradeConfig fields, got "
                              f"{type(d).__name__} {d!r}; valid keys: {', '.join(cls.field_names())}")
        valid = cls.field_names()
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown degrade key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**dict(d))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for YAML / manifests; ``from_dict(to_dict())`` round-trips."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def is_identity(self) -> bool:
        """True when :meth:`apply` returns the input unchanged (except clipping)."""
        return (self.awgn_sigma is None and self.poisson_prob == 0 and self.low_light_prob == 0
                and self.blur_prob == 0 and self.motion_prob == 0 and self.jpeg_prob == 0)

    def apply(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade a clean float H x W x 3 RGB image in [0, 1]; returns a new float32 array.

        Random draws happen only for enabled steps (a step with probability 0 consumes no
        randomness), in the fixed order of the pipeline, so the result is a pure function of
        ``(clean, config, rng state)``.
        """
        x = _check_image(clean, "clean").astype(np.float32, copy=True)
        if self.low_light_prob > 0 and rng.random() < self.low_light_prob:
            x = low_light(x, rng, _log_uniform(rng, self.exposure), _uniform(rng, self.gamma), self.cast)
        if self.blur_prob > 0 and rng.random() < self.blur_prob:
            x = gaussian_blur(x, _uniform(rng, self.blur_sigma))
        if self.motion_prob > 0 and rng.random() < self.motion_prob:
            length = _int_uniform(rng, self.motion_length)
            x = motion_blur(x, length, float(rng.uniform(0.0, 180.0)))
        if self.poisson_prob > 0 and rng.random() < self.poisson_prob:
            x = poisson_gaussian(x, _log_uniform(rng, self.poisson_peak),
                                 _uniform(rng, self.read_sigma), rng)
        elif self.awgn_sigma is not None:
            x = awgn(x, _uniform(rng, self.awgn_sigma), rng)
        if self.jpeg_prob > 0 and rng.random() < self.jpeg_prob:
            x = jpeg(x, _int_uniform(rng, self.jpeg_quality))
        if self.clip:
            np.clip(x, 0.0, 1.0, out=x)
        return x.astype(np.float32, copy=False)


def _check_range(name: str, value: Any, kind: str, vmin: float, vmax: float, note: str) -> tuple:
    bad = (f"DegradeConfig.{name}={value!r} is not a valid range; use [lo, hi] with "
           f"{vmin:g} <= lo <= hi <= {vmax:g} ({note})")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(bad)
    lo, hi = value
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v):
            raise ConfigError(bad)
        if kind == "int" and float(v) != int(v):
            raise ConfigError(bad)
    if not vmin <= lo <= hi <= vmax:
        raise ConfigError(bad + ("; lo > hi" if lo > hi else ""))
    return (int(lo), int(hi)) if kind == "int" else (float(lo), float(hi))
