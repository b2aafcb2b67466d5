"""The inputs a model was trained on, re-synthesised from clean images. Torch-free.

A training source with clean images turns each crop into an ``(input, target)`` pair with the
camera model (:class:`~mirnet.sdk.camera.CameraConfig`), a :class:`~mirnet.sdk.degrade.DegradeConfig`
and a monochrome share (``gray_prob``); :func:`synthesize` is that one step, used by the training
set and by everything that must see the model's own input distribution later: calibration crops for
INT8, the quality gate, pruning checks. A weights manifest records its sources under
``training.data``; :meth:`Mixture.from_manifest` rebuilds the clean sources' mixture from it (paired
sources need their own folders and are left out).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .camera import CameraConfig, luma
from .degrade import DegradeConfig
from .errors import ConfigError

__all__ = ["synthesize", "MixSource", "Mixture"]


def synthesize(clean: np.ndarray, rng: np.random.Generator, *, camera: CameraConfig | None = None,
               degrade: DegradeConfig | None = None, gray_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(input, target)`` for a clean float32 ``H x W x 3`` crop: filmed by ``camera`` (even H and
    W), else degraded by ``degrade``; with probability ``gray_prob`` (``degrade`` only) a monochrome
    sample: the target is the crop's luma in three equal channels and the input carries one channel
    of noise, as a gray frame reaches the SDK. Draws from ``rng`` only for enabled steps."""
    if camera is not None:
        return camera.apply(clean, rng)
    degrade = degrade or DegradeConfig()
    if gray_prob > 0 and rng.random() < gray_prob:
        gray = np.repeat(luma(clean)[..., None], 3, axis=2)
        return np.repeat(degrade.apply(gray, rng)[..., :1], 3, axis=2), gray
    return degrade.apply(clean, rng), clean


@dataclass(frozen=True)
class MixSource:
    """One clean training source's synthesis: camera model or degradations, gray share, weight."""

    weight: float
    camera: CameraConfig | None = None
    degrade: DegradeConfig = DegradeConfig()
    gray_prob: float = 0.0

    def apply(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return synthesize(clean, rng, camera=self.camera, degrade=self.degrade, gray_prob=self.gray_prob)

    def describe(self) -> str:
        if self.camera is not None:
            return "camera model"
        d = self.degrade
        parts = []
        if d.awgn_sigma is not None:
            parts.append(f"AWGN {d.awgn_sigma[0]:g}-{d.awgn_sigma[1]:g}")
        for prob, name in ((d.poisson_prob, "Poisson-Gaussian"), (d.low_light_prob, "low light"),
                           (d.blur_prob, "blur"), (d.motion_prob, "motion blur"), (d.jpeg_prob, "JPEG"),
                           (self.gray_prob, "gray")):
            if prob:
                parts.append(f"{name} {prob:.0%}")
        return ", ".join(parts) or "clean"


class Mixture:
    """A weighted choice of :class:`MixSource`; :meth:`apply` draws a source, then synthesises."""

    def __init__(self, sources: Sequence[MixSource]) -> None:
        if not sources:
            raise ConfigError("a Mixture needs at least one clean source")
        self.sources = list(sources)
        w = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probs = w / w.sum()

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> "Mixture | None":
        """From the source records of a manifest's ``training.data`` (``SourceConfig`` fields);
        None when no source has clean images. ConfigError names a malformed record."""
        if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
            raise ConfigError(f"training.data must be a list of source records, got {type(records).__name__}")
        sources = []
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise ConfigError(f"training.data[{i}] must be a mapping, got {type(rec).__name__}")
            if rec.get("clean") is None:
                continue
            try:
                camera = CameraConfig.from_dict(rec["camera"]) if rec.get("camera") is not None else None
                degrade = DegradeConfig.from_dict(rec.get("degrade") or {})
                gray_prob = float(rec.get("gray_prob", 0.0))
                if not 0 <= gray_prob <= 1:
                    raise ConfigError(f"gray_prob={gray_prob!r} is not a probability in [0, 1]")
                sources.append(MixSource(weight=float(rec.get("weight", 1.0)), camera=camera, degrade=degrade,
                                         gray_prob=gray_prob))
            except (ConfigError, TypeError, ValueError) as exc:
                raise ConfigError(f"training.data[{i}]: {exc}") from None
        return cls(sources) if sources else None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "Mixture | None":
        """The mixture of a weights manifest's ``training.data``; None when it has no training
        record or only paired sources."""
        training = manifest.get("training") if isinstance(manifest, Mapping) else None
        data = training.get("data") if isinstance(training, Mapping) else None
        return cls.from_records(data) if data else None

    def apply(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(input, target)`` from one source drawn by weight (even H and W for camera sources)."""
        k = int(rng.choice(len(self.sources), p=self.probs)) if len(self.sources) > 1 else 0
        return self.sources[k].apply(clean, rng)

    def describe(self) -> str:
        shares: dict[str, float] = {}
        for source, p in zip(self.sources, self.probs):
            shares[source.describe()] = shares.get(source.describe(), 0.0) + float(p)
        return " + ".join(f"{p:.0%} {what}" for what, p in shares.items())


@dataclass(frozen=True)
class ModelInputs:
    """What a model restores, for calibration, gates and checks: real pairs (``pairs``: a folder
    with paired sub-folders, :func:`mirnet.sdk.evalsets.detect_pairs`), clean images plus AWGN
    ``sigma`` clipped to [0, 1] like camera frames, a camera evaluation preset ``protocol``, or the
    model's own training ``mixture``. Build with :func:`model_inputs`."""

    kind: str  # "pairs" | "awgn" | "protocol" | "training"
    description: str
    pairs: str | None = None
    sigma: float | None = None
    protocol: str | None = None
    mixture: Mixture | None = None

    def synthesizer(self):
        """``(clean, rng) -> (input, target)`` for the synthetic kinds; None for ``pairs``."""
        if self.kind == "awgn":
            degrade = self.awgn_config()
            return lambda clean, rng: synthesize(clean, rng, degrade=degrade)
        if self.kind == "protocol":
            from .camera import preset

            return preset(self.protocol).apply
        if self.kind == "training":
            return self.mixture.apply
        return None

    def awgn_config(self) -> DegradeConfig:
        """The ``awgn`` kind's degradation: AWGN at the one sigma, clipped to [0, 1]."""
        return DegradeConfig(awgn_sigma=(self.sigma, self.sigma), clip=True)

    def evalset(self, folder: str | None, *, limit: int | None = None, crop: int | None = None, seed: int = 0):
        """``(input, target)`` pairs: the pairs of ``self.pairs``, else the clean images of
        ``folder`` synthesised (image ``i`` with ``default_rng([seed, i])``)."""
        from .evalsets import EvalSet, find_pairs

        if self.kind == "pairs":
            low, high, low_prefix, high_prefix = find_pairs(self.pairs)
            return EvalSet.from_pairs(low, high, limit=limit, crop=crop, low_prefix=low_prefix,
                                      high_prefix=high_prefix)
        if folder is None:
            raise ConfigError(f"{self.description}: give a folder of clean images to synthesise the inputs from")
        return EvalSet.synthesized(folder, self.synthesizer(), seed=seed, limit=limit, crop=crop,
                                   how=self.description)

    def record(self) -> dict[str, Any]:
        """For manifests: the kind and its parameter."""
        value = {"pairs": self.pairs, "awgn": self.sigma, "protocol": self.protocol,
                 "training": self.mixture.describe() if self.mixture else None}[self.kind]
        return {"kind": self.kind, "value": value, "description": self.description}


def model_inputs(manifest: Mapping[str, Any] | None, *, folder: str | None = None, pairs: str | None = None,
                 sigma: float | None = None, protocol: str | None = None, model: str = "the model") -> ModelInputs:
    """The inputs to check ``model`` on, in this order: ``pairs`` (or a ``folder`` that holds paired
    sub-folders), AWGN ``sigma``, camera preset ``protocol``, the training mixture its weights
    ``manifest`` records. ConfigError when two are given, or none applies (a model without a
    training record needs one of them: calibrating or gating a restorer on clean frames measures
    nothing it will see)."""
    from .evalsets import detect_pairs

    given = [name for name, v in (("--pairs", pairs), ("--sigma", sigma), ("--protocol", protocol)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one way to make the inputs, not {len(given)}")
    if pairs is None and folder is not None and sigma is None and protocol is None and detect_pairs(folder):
        pairs = str(folder)
    if pairs is not None:
        if detect_pairs(pairs) is None:
            from .evalsets import find_pairs

            find_pairs(pairs)  # raises, naming the layouts
        return ModelInputs("pairs", f"pairs in {pairs}", pairs=str(pairs))
    if sigma is not None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < float("inf"):
            raise ConfigError(f"--sigma {sigma!r}: AWGN sigma in 0-255 units, >= 0 (e.g. 25)")
        return ModelInputs("awgn", f"AWGN sigma {sigma:g} (clipped)", sigma=float(sigma))
    if protocol is not None:
        from .camera import preset

        preset(protocol)  # validates the name
        return ModelInputs("protocol", f"camera preset {protocol}", protocol=protocol)
    mixture = Mixture.from_manifest(manifest or {})
    if mixture is None:
        raise ConfigError(
            f"{model} has no training record with clean-image sources, so its inputs cannot be re-synthesised; "
            f"say what it restores: --sigma S (AWGN), --protocol NAME (camera-h264, camera-jpeg, camera-mono, "
            f"lowlight) or --pairs DIR (real degraded/clean pairs)")
    return ModelInputs("training", f"its training degradations ({mixture.describe()})", mixture=mixture)
