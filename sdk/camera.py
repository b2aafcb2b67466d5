"""A camera model: what a surveillance or vehicle camera delivers when it films a clean scene.

Every step works on float32 ``H x W x 3`` RGB in [0, 1] and draws its randomness only from the
``np.random.Generator`` passed in, so a sample is a pure function of ``(seed, step, index)``::

    clean sRGB --inverse sRGB--> linear light (times ``exposure``: below 1 a dim frame, no auto-gain)
      --> sensor: shot noise Poisson(x * peak) / peak (``peak`` photons at white: about 1000 in
          daylight, a handful in a dark scene, the auto-gain scaling the signal back up), Gaussian
          read noise, optional row (banding) noise; on a Bayer RGGB mosaic that is then demosaiced
          (noise correlated across neighbours and channels) or, for a monochrome sensor, on one
          channel (the scene's luma)
      --> sRGB tone curve --> 8 bit
      --> delivery: uncompressed, JPEG (4:2:0 chroma, a quality range) or H.264 / H.265 (4:2:0,
          a CRF range; optionally the last frame of a short static-camera clip, a P-frame)
      --> decoded RGB (a monochrome frame is delivered as gray: three equal channels)

The training target of a monochrome sample is the gray scene (:meth:`CameraConfig.apply` returns
the pair). H.264/H.265 go through PyAV (FFmpeg's libx264/libx265, bundled in its wheels), imported
only when a video codec is drawn; JPEG through OpenCV. :data:`PRESETS` are the named, seeded camera
evaluation protocols of ``mirnet eval --protocol``.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from .errors import ConfigError, require

__all__ = ["CameraConfig", "PRESETS", "preset", "srgb_to_linear", "linear_to_srgb", "luma",
           "mosaic_rggb", "demosaic_rggb", "encode_video", "CODECS"]

CODECS = ("none", "jpeg", "h264", "h265")
_AV_CODEC = {"h264": ("libx264", "h264"), "h265": ("libx265", "hevc")}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, what a camera's Y channel holds


# ---------------------------------------------------------------------------------------------
# Colour, sensor and delivery steps
# ---------------------------------------------------------------------------------------------

def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB EOTF (IEC 61966-2-1): display values in [0, 1] to linear light."""
    x = np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)
    return np.where(x <= 0.04045, x / np.float32(12.92), ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The inverse of :func:`srgb_to_linear` (the camera's tone curve), clipping to [0, 1]."""
    x = np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)
    return np.where(x <= 0.0031308, x * np.float32(12.92), 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image, ``H x W``."""
    return (rgb.astype(np.float32, copy=False) @ _LUMA).astype(np.float32)


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    """The ``H x W`` raw image an RGGB Bayer sensor records (R at even rows and columns)."""
    raw = np.empty(rgb.shape[:2], np.float32)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


def demosaic_rggb(raw: np.ndarray) -> np.ndarray:
    """OpenCV's edge-aware demosaicing of an RGGB raw image in [0, 1] (16-bit inside), RGB out."""
    u16 = np.round(np.clip(raw, 0.0, 1.0) * 65535.0).astype(np.uint16)
    # OpenCV names Bayer patterns by the second row's first two pixels: RGGB is its "BG" pattern
    rgb = cv2.cvtColor(u16, cv2.COLOR_BayerBG2RGB_EA)
    return rgb.astype(np.float32) / np.float32(65535.0)


def encode_video(frames: list[np.ndarray], codec: str, crf: int) -> np.ndarray:
    """Encode uint8 RGB frames (even H and W) as one 4:2:0 ``codec`` stream ("h264" or "h265") at
    ``crf`` (no B-frames: frame 0 is an I-frame, the others P-frames) and return the last decoded
    frame, uint8 RGB."""
    av = require("av", "camera")
    encoder, fmt = _AV_CODEC[codec]
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "h264":
            stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        else:
            stream.options = {"crf": str(crf), "preset": "ultrafast", "x265-params": "log-level=none:bframes=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    last = None
    with av.open(buf, mode="r", format=fmt) as inp:
        for decoded in inp.decode(video=0):
            last = decoded
    if last is None:  # pragma: no cover - FFmpeg always returns the frames it was given
        raise ConfigError(f"{codec} encoder returned no frame for a {w}x{h} clip")
    return last.to_ndarray(format="rgb24")


def _encode_jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (OpenCV: 4:2:0 chroma for colour; a gray image is coded as one channel)."""
    image = u8[..., 0] if u8.ndim == 3 and u8.shape[2] == 1 else np.ascontiguousarray(u8[..., ::-1])
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV without a JPEG codec
        raise ConfigError("OpenCV cannot encode JPEG here")
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return decoded[..., None] if decoded.ndim == 2 else decoded[..., ::-1]


# ---------------------------------------------------------------------------------------------
# The configurable model
# ---------------------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, r: tuple) -> float:
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def _log_uniform(rng: np.random.Generator, r: tuple) -> float:
    return float(r[0]) if r[0] == r[1] else float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


def _int_uniform(rng: np.random.Generator, r: tuple) -> int:
    return int(r[0]) if r[0] == r[1] else int(rng.integers(r[0], r[1] + 1))


# name -> (minimum, maximum, integer, note)
_RANGES = {
    "exposure": (1e-4, 1.0, False, "scene light reaching the sensor without auto-gain, log-uniform, e.g. [0.05, 0.3]"),
    "peak": (1e-3, 1e6, False, "photons at white, log-uniform, e.g. [3, 1000]"),
    "read_sigma": (0.0, 255.0, False, "read noise in 0-255 units of linear light, e.g. [0.5, 6]"),
    "row_sigma": (0.0, 255.0, False, "row (banding) noise in 0-255 units of linear light, e.g. [0.2, 2]"),
    "jpeg_quality": (1, 100, True, "JPEG quality, integers in [1, 100], e.g. [40, 95]"),
    "crf": (0, 51, True, "H.264/H.265 constant rate factor, integers in [0, 51], e.g. [18, 35]"),
}
_PROBS = ("row_prob", "bayer_prob", "mono_prob", "pframe_prob")


@dataclass(frozen=True)
class CameraConfig:
    """The random camera of a training source (YAML ``camera:``) or an evaluation preset.

    Ranges are ``[lo, hi]`` (``lo == hi`` fixes the value); probabilities are in [0, 1];
    ``codecs`` maps ``none``/``jpeg``/``h264``/``h265`` to relative weights; ``clip_frames`` is
    the length of the static-camera clip whose last frame (a P-frame) is delivered with
    probability ``pframe_prob`` (else a single I-frame)."""

    exposure: tuple[float, float] = (1.0, 1.0)
    peak: tuple[float, float] = (3.0, 1000.0)
    read_sigma: tuple[float, float] = (0.5, 6.0)
    row_prob: float = 0.2
    row_sigma: tuple[float, float] = (0.2, 2.0)
    bayer_prob: float = 0.5
    mono_prob: float = 0.25
    codecs: Mapping[str, float] = field(default_factory=lambda: {"none": 1.0, "jpeg": 3.0, "h264": 4.0, "h265": 1.0})
    jpeg_quality: tuple[int, int] = (40, 95)
    crf: tuple[int, int] = (18, 35)
    pframe_prob: float = 0.5
    clip_frames: int = 3

    def __post_init__(self) -> None:
        for name, (lo_ok, hi_ok, integer, note) in _RANGES.items():
            object.__setattr__(self, name, _check_range(name, getattr(self, name), lo_ok, hi_ok, integer, note))
        for name in _PROBS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"camera.{name}={value!r} is not a probability; use a number in [0, 1]")
            object.__setattr__(self, name, float(value))
        codecs = self.codecs
        if not isinstance(codecs, Mapping) or not codecs or set(codecs) - set(CODECS) or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0
                for w in codecs.values()) or sum(codecs.values()) <= 0:
            raise ConfigError(f"camera.codecs={codecs!r}: give relative weights >= 0 (not all 0) for some of "
                              f"{', '.join(CODECS)}, e.g. {{jpeg: 3, h264: 4, none: 1}}")
        object.__setattr__(self, "codecs", {k: float(codecs[k]) for k in CODECS if codecs.get(k)})
        if isinstance(self.clip_frames, bool) or not isinstance(self.clip_frames, int) or not 2 <= self.clip_frames <= 16:
            raise ConfigError(f"camera.clip_frames={self.clip_frames!r}: the static-camera clip has 2 to 16 frames")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "CameraConfig":
        """From a YAML mapping; unknown keys raise ConfigError naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"camera must be a mapping with keys {valid}, got {d!r}")
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown camera key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for ranges) for manifests and YAML."""
        return {k: list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping) else v)
                for k, v in asdict(self).items()}

    def apply(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(delivered, target)``: the frame the camera delivers of the clean float RGB scene
        (even H and W) and the clean image to restore it to (the gray scene for a monochrome
        sensor, else ``clean``). Both float32 ``H x W x 3`` in [0, 1]."""
        if clean.ndim != 3 or clean.shape[2] != 3 or clean.shape[0] % 2 or clean.shape[1] % 2:
            raise ConfigError(f"the camera model takes an H x W x 3 image with even H and W, got {clean.shape}")
        mono = rng.random() < self.mono_prob
        scene = luma(clean)[..., None] if mono else clean.astype(np.float32, copy=False)
        bayer = not mono and rng.random() < self.bayer_prob
        exposure = _log_uniform(rng, self.exposure)
        peak = _log_uniform(rng, self.peak)
        read = _uniform(rng, self.read_sigma) / 255.0
        row = _uniform(rng, self.row_sigma) / 255.0 if rng.random() < self.row_prob else 0.0
        weights = np.array(list(self.codecs.values()))
        codec = list(self.codecs)[int(rng.choice(len(weights), p=weights / weights.sum()))]
        quality = _int_uniform(rng, self.jpeg_quality) if codec == "jpeg" else None
        crf = _int_uniform(rng, self.crf) if codec in _AV_CODEC else None
        n = self.clip_frames if codec in _AV_CODEC and rng.random() < self.pframe_prob else 1
        linear = srgb_to_linear(scene) * np.float32(exposure)
        frames = [self._expose(linear, bayer, peak, read, row, rng) for _ in range(n)]
        if codec == "jpeg":
            delivered = _encode_jpeg(frames[-1], quality)
        elif codec in _AV_CODEC:
            rgb = [np.repeat(f, 3, axis=2) if mono else f for f in frames]
            delivered = encode_video(rgb, codec, crf)
            if mono:  # a gray sensor's stream: the decoder's rounding may tint it; keep its luma
                delivered = np.round(luma(delivered.astype(np.float32)))[..., None].astype(np.uint8)
        else:
            delivered = frames[-1]
        out = delivered.astype(np.float32) / np.float32(255.0)
        if mono:
            return np.repeat(out, 3, axis=2), np.repeat(scene, 3, axis=2)
        return out, clean.astype(np.float32, copy=False)

    @staticmethod
    def _expose(linear: np.ndarray, bayer: bool, peak: float, read: float, row: float,
                rng: np.random.Generator) -> np.ndarray:
        """One exposure of the sensor: noisy linear light, then the tone curve, as uint8."""
        signal = mosaic_rggb(linear)[..., None] if bayer else linear
        noisy = rng.poisson(np.clip(signal, 0.0, None).astype(np.float64) * peak) / peak
        noisy = noisy + rng.normal(0.0, read, signal.shape) if read > 0 else noisy
        if row > 0:
            noisy = noisy + rng.normal(0.0, row, (signal.shape[0], 1, 1))
        noisy = noisy.astype(np.float32)
        if bayer:
            noisy = demosaic_rggb(noisy[..., 0])
        return np.round(linear_to_srgb(noisy) * 255.0).astype(np.uint8)


def _check_range(name: str, value: Any, lo_ok: float, hi_ok: float, integer: bool, note: str) -> tuple:
    bad = f"camera.{name}={value!r} is not a valid range; use [lo, hi] with {lo_ok:g} <= lo <= hi <= {hi_ok:g} ({note})"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(bad)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) \
                or (integer and float(v) != int(v)):
            raise ConfigError(bad)
    lo, hi = value
    if not lo_ok <= lo <= hi <= hi_ok:
        raise ConfigError(bad)
    return (int(lo), int(hi)) if integer else (float(lo), float(hi))


# ---------------------------------------------------------------------------------------------
# Evaluation presets
# ---------------------------------------------------------------------------------------------

#: Named camera evaluation protocols (``mirnet eval --protocol NAME``): one fixed camera each,
#: drawn per image from ``np.random.default_rng([seed, image index])``.
PRESETS: dict[str, CameraConfig] = {
    "camera-h264": CameraConfig(peak=(20.0, 200.0), read_sigma=(2.0, 2.0), row_prob=0.0, bayer_prob=1.0,
                                mono_prob=0.0, codecs={"h264": 1.0}, crf=(23, 23), pframe_prob=1.0),
    "camera-jpeg": CameraConfig(peak=(20.0, 200.0), read_sigma=(2.0, 2.0), row_prob=0.0, bayer_prob=1.0,
                                mono_prob=0.0, codecs={"jpeg": 1.0}, jpeg_quality=(80, 80)),
    "camera-mono": CameraConfig(peak=(10.0, 100.0), read_sigma=(2.0, 2.0), row_prob=0.0, bayer_prob=0.0,
                                mono_prob=1.0, codecs={"h264": 1.0}, crf=(23, 23), pframe_prob=1.0),
    # camera-h264's sensor noise and encoder on a monochrome sensor: gray vs colour at one noise level
    "camera-h264-mono": CameraConfig(peak=(20.0, 200.0), read_sigma=(2.0, 2.0), row_prob=0.0, bayer_prob=0.0,
                                     mono_prob=1.0, codecs={"h264": 1.0}, crf=(23, 23), pframe_prob=1.0),
    "lowlight": CameraConfig(exposure=(0.05, 0.2), peak=(300.0, 1000.0), read_sigma=(2.0, 2.0), row_prob=0.0,
                             bayer_prob=1.0, mono_prob=0.0, codecs={"jpeg": 1.0}, jpeg_quality=(90, 90)),
}


def preset(name: str) -> CameraConfig:
    """The camera of evaluation preset ``name``; ConfigError naming the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"protocol {name!r}: valid camera protocols are {', '.join(PRESETS)}")
    return PRESETS[name]
