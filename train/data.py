"""Training data for MIRNet-v2: progressive patch schedule, a deterministic map-style training set
and a step-indexed batch sampler (image reading, paired folders and validation sets are the
torch-free foundation's: :mod:`mirnet.sdk.media`, :mod:`mirnet.sdk.evalsets`).

Determinism and resumption: a training sample is addressed by ``key = (step, j, patch)``
(``j`` = index in the *global* batch). Everything random about it (source, image, crop, flip,
rotation, degradation) comes from ``np.random.default_rng([seed, step, j])``, so a sample does
not depend on worker count, worker order, rank count or on what ran before. Resuming at step
``s`` is ``StepBatchSampler(..., start_step=s)``; no sampler or RNG state needs saving.

Typical loop::

    ds = TrainSet([SourceConfig.from_dict(s) for s in cfg["sources"]], seed=cfg["seed"])
    sched = ProgressiveSchedule(**cfg["schedule"])
    sampler = StepBatchSampler(sched, rank=rank, world_size=world, start_step=resume_step)
    for step, (inp, tgt) in zip(range(resume_step, sched.total),
                                DataLoader(ds, batch_sampler=sampler, num_workers=4)):
        ...
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mirnet.sdk.camera import CameraConfig
from mirnet.sdk.degrade import DegradeConfig
from mirnet.sdk.errors import ConfigError, InputError
from mirnet.sdk.evalsets import pair_folders, split_holdout
from mirnet.sdk.media import list_images, read_rgb
from mirnet.sdk.metrics import to_float
from mirnet.sdk.mixture import ModelInputs, synthesize

__all__ = ["ProgressiveSchedule", "SourceConfig", "TrainSet", "StepBatchSampler"]

Key = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# Progressive schedule
# ---------------------------------------------------------------------------------------------

def _int_list(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"ProgressiveSchedule.{name}={values!r} must be a non-empty list of "
                          f"positive integers, one per stage")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"ProgressiveSchedule.{name}={list(values)!r}: {v!r} is not a positive "
                              f"integer; every stage needs {name} >= 1")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class ProgressiveSchedule:
    """MIRNet-v2 progressive training: stage ``i`` runs ``iters[i]`` steps with
    ``patch[i] x patch[i]`` crops and a per-rank batch of ``batch[i]``. The official recipe
    grows the patch while shrinking the batch, e.g. ``iters=[92000, 64000, 48000, 36000,
    36000, 24000], patch=[128, 160, 192, 256, 320, 384], batch=[8, 5, 4, 2, 1, 1]``.
    Steps past :attr:`total` keep the last stage."""

    iters: Sequence[int]
    patch: Sequence[int]
    batch: Sequence[int]

    def __post_init__(self) -> None:
        for name in ("iters", "patch", "batch"):
            object.__setattr__(self, name, _int_list(name, getattr(self, name)))
        lengths = {n: len(getattr(self, n)) for n in ("iters", "patch", "batch")}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"ProgressiveSchedule lists must have one entry per stage, got lengths "
                              f"{lengths}; give iters, patch and batch the same length")
        ends, acc = [], 0
        for n in self.iters:
            acc += n
            ends.append(acc)
        object.__setattr__(self, "_ends", tuple(ends))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProgressiveSchedule":
        valid = ["iters", "patch", "batch"]
        if not isinstance(d, Mapping):
            raise ConfigError(f"schedule must be a mapping with keys {valid}, got {d!r}")
        unknown, missing = sorted(set(d) - set(valid)), [k for k in valid if k not in d]
        if unknown or missing:
            raise ConfigError(f"schedule keys: unknown {unknown}, missing {missing}; valid keys: {valid}")
        return cls(**dict(d))

    @property
    def total(self) -> int:
        """Total number of steps, ``sum(iters)``."""
        return self._ends[-1]

    def stage(self, step: int) -> int:
        """Index of the stage that ``step`` (0-based) falls in; the last one past the end."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ConfigError(f"step={step!r} must be an integer >= 0")
        return min(bisect_right(self._ends, int(step)), len(self._ends) - 1)

    def at(self, step: int) -> tuple[int, int]:
        """``(patch, per-rank batch)`` for 0-based ``step``."""
        i = self.stage(step)
        return self.patch[i], self.batch[i]


# ---------------------------------------------------------------------------------------------
# Training set
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceConfig:
    """One training source: either ``clean`` (a folder of clean images, degraded on the fly with
    ``degrade``, or filmed by the camera model ``camera`` (:class:`~mirnet.sdk.camera.CameraConfig`:
    sensor noise, Bayer, monochrome sensors, JPEG/H.264/H.265 delivery)) or ``low`` + ``high``
    (paired folders matched by file name). ``weight`` is the relative probability of drawing a
    sample from this source. ``downscale`` (<= 1) shrinks every image with area averaging when it
    is read: JPEG sources (CBSD432) lose their compression artefacts and most of their own noise
    that way, so they become clean targets. ``gray_prob`` (``degrade`` sources) is the probability
    that a sample comes from a monochrome sensor: the target is the image's luma in three equal
    channels and the input carries one channel of ``degrade`` noise, as a gray frame reaches the SDK
    (the camera model has its own ``mono_prob``)."""

    clean: str | None = None
    low: str | None = None
    high: str | None = None
    weight: float = 1.0
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    low_prefix: str = ""   # paired only: stripped from low names before matching (SIDD: "NOISY_")
    high_prefix: str = ""  # paired only: stripped from high names before matching (SIDD: "GT_")
    holdout_every: int = 0  # every k-th image by name is left out of training (see split_holdout)
    camera: CameraConfig | None = None  # clean only: the camera model instead of degrade
    downscale: float = 1.0  # area down-scaling of every image as it is read (0 < downscale <= 1)
    gray_prob: float = 0.0  # clean + degrade only: P(a monochrome sample)

    def __post_init__(self) -> None:
        for name in ("clean", "low", "high"):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, (str, Path)) or not str(v):
                    raise ConfigError(f"SourceConfig.{name}={v!r} must be a folder path")
                object.__setattr__(self, name, str(v))
        if self.clean is not None and (self.low is not None or self.high is not None):
            raise ConfigError(f"SourceConfig has clean={self.clean!r} and low/high "
                              f"({self.low!r}, {self.high!r}); give either clean (synthetic "
                              f"degradation) or low + high (paired folders), not both")
        if self.clean is None and (self.low is None or self.high is None):
            raise ConfigError(f"SourceConfig needs clean: <folder>, or both low: and high: "
                              f"<folders>; got low={self.low!r}, high={self.high!r}")
        for name in ("low_prefix", "high_prefix"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise ConfigError(f"SourceConfig.{name}={v!r} must be a string ('' = none)")
            if v and self.clean is not None:
                raise ConfigError(f"SourceConfig.{name}={v!r} applies only to paired low/high "
                                  f"sources, not clean={self.clean!r}; remove it")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"SourceConfig.weight={w!r} must be a finite number > 0 "
                              f"(relative sampling weight, default 1)")
        object.__setattr__(self, "weight", float(w))
        split_holdout([], self.holdout_every)  # validates
        if isinstance(self.degrade, Mapping):
            object.__setattr__(self, "degrade", DegradeConfig.from_dict(self.degrade))
        if not isinstance(self.degrade, DegradeConfig):
            raise ConfigError(f"SourceConfig.degrade must be a DegradeConfig or a mapping, got "
                              f"{type(self.degrade).__name__}")
        if isinstance(self.camera, Mapping):
            object.__setattr__(self, "camera", CameraConfig.from_dict(self.camera))
        if self.camera is not None and not isinstance(self.camera, CameraConfig):
            raise ConfigError(f"SourceConfig.camera must be a CameraConfig or a mapping, got "
                              f"{type(self.camera).__name__}")
        if self.camera is not None and (self.paired or self.degrade != DegradeConfig()):
            raise ConfigError("SourceConfig.camera applies to clean: sources without degrade (the camera model "
                              "makes the noise and the compression); remove degrade, or use two sources")
        d = self.downscale
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise ConfigError(f"SourceConfig.downscale={d!r} must be a number in (0, 1] (1 keeps the size, "
                              f"0.5 halves it with area averaging)")
        object.__setattr__(self, "downscale", float(d))
        g = self.gray_prob
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 1:
            raise ConfigError(f"SourceConfig.gray_prob={g!r} must be a probability in [0, 1] (0 = colour only)")
        object.__setattr__(self, "gray_prob", float(g))
        if g > 0 and (self.paired or self.camera is not None):
            raise ConfigError(f"SourceConfig.gray_prob={g!r} applies to clean: sources with degrade; the camera "
                              f"model's monochrome share is camera: {{mono_prob: ...}}, and paired sources "
                              f"keep their images")
        if self.clean is None and self.degrade != DegradeConfig():
            raise ConfigError(f"SourceConfig low={self.low!r}/high={self.high!r} is a paired source "
                              f"but sets degrade; degradations apply only to clean: sources. "
                              f"Remove degrade, or use clean: for synthetic pairs")

    @property
    def paired(self) -> bool:
        return self.clean is None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: str | Path | None = None) -> "SourceConfig":
        """Build from a YAML mapping. Relative folder paths are resolved against ``root`` when
        given (e.g. the config file's folder). Unknown keys raise ConfigError."""
        valid = [f.name for f in fields(cls)]
        if not isinstance(d, Mapping):
            raise ConfigError(f"a source must be a mapping with keys {valid}, got {d!r}")
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown source key(s) {unknown}; valid keys: {', '.join(valid)}")
        kw = dict(d)
        if root is not None:
            for name in ("clean", "low", "high"):
                if isinstance(kw.get(name), (str, Path)):
                    kw[name] = str(Path(root) / Path(kw[name]).expanduser())
        if "degrade" in kw:
            kw["degrade"] = DegradeConfig.from_dict(kw["degrade"])
        if kw.get("camera") is not None:
            kw["camera"] = CameraConfig.from_dict(kw["camera"])
        return cls(**kw)


def sources_for(inputs: ModelInputs, data: str | Path | None) -> list[SourceConfig]:
    """Training sources that make ``inputs`` (:func:`mirnet.sdk.mixture.model_inputs`) from the clean
    images in ``data``: the recorded mixture's sources, a camera preset, clipped AWGN at the one
    sigma, or the real pairs (``data`` unused)."""
    from mirnet.sdk.camera import preset
    from mirnet.sdk.evalsets import find_pairs

    if inputs.kind == "pairs":
        low, high, low_prefix, high_prefix = find_pairs(inputs.pairs)
        return [SourceConfig(low=str(low), high=str(high), low_prefix=low_prefix, high_prefix=high_prefix)]
    if data is None or not Path(data).is_dir():
        raise ConfigError(f"--data {str(data)!r} is not a folder of clean images (degraded with {inputs.description})")
    if inputs.kind == "awgn":
        return [SourceConfig(clean=str(data), degrade=inputs.awgn_config())]
    if inputs.kind == "protocol":
        return [SourceConfig(clean=str(data), camera=preset(inputs.protocol))]
    return [SourceConfig(clean=str(data), weight=m.weight, camera=m.camera,
                         degrade=DegradeConfig() if m.camera is not None else m.degrade, gray_prob=m.gray_prob)
            for m in inputs.mixture.sources]


def _flip_rot(img: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 dihedral transforms: bit 0 = horizontal flip, bits 1-2 = rot90 count."""
    if mode & 1:
        img = img[:, ::-1]
    return np.rot90(img, mode >> 1)


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect")


def _check_key(key: Any) -> tuple[int, int, int]:
    ok = isinstance(key, (tuple, list)) and len(key) == 3 and all(
        isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in key)
    if not ok or key[0] < 0 or key[1] < 0 or key[2] < 1:
        raise InputError(f"TrainSet key {key!r} must be (step >= 0, j >= 0, patch >= 1) integers; "
                         f"use StepBatchSampler as the DataLoader batch_sampler")
    return int(key[0]), int(key[1]), int(key[2])


class TrainSet(Dataset):
    """Map-style dataset indexed by ``(step, j, patch)`` keys (see the module docstring).

    File lists are read at construction; images are decoded lazily and kept per process in
    their file dtype (uint8 takes a quarter of float32's memory), so each DataLoader worker
    builds its own cache. Returns ``(input, target)`` float32 tensors ``3 x patch x patch``, or
    ``1 x patch x patch`` for a gray model (``channels=1``; every source must make gray samples).
    """

    def __init__(self, sources: Sequence[SourceConfig], seed: int = 0, cache: bool = True,
                 channels: int = 3) -> None:
        if isinstance(sources, SourceConfig):
            sources = [sources]
        if not sources:
            raise ConfigError("TrainSet needs at least one source (clean: or low:/high: folders)")
        if channels not in (1, 3):
            raise ConfigError(f"TrainSet channels={channels!r}: 3 (colour) or 1 (a gray model)")
        if channels == 1:
            check_gray_sources(sources)
        self.channels = channels
        for s in sources:
            if not isinstance(s, SourceConfig):
                raise ConfigError(f"TrainSet sources must be SourceConfig objects (use "
                                  f"SourceConfig.from_dict), got {type(s).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"TrainSet seed={seed!r} must be an integer >= 0")
        self.sources = list(sources)
        self.seed = int(seed)
        self.cache = bool(cache)
        self.items: list[list[tuple[Path, Path]]] = []
        for s in self.sources:
            if s.paired:
                items = pair_folders(s.low, s.high, low_prefix=s.low_prefix, high_prefix=s.high_prefix)
            else:
                items = [(p, p) for p in list_images(s.clean)]
            self.items.append(split_holdout(items, s.holdout_every)[0])
        w = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probs = w / w.sum()
        self._cache: dict[tuple[Path, float], np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Workers start with an empty cache (no pickling of decoded images under spawn).
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    @property
    def num_images(self) -> list[int]:
        """Number of images (or pairs) per source."""
        return [len(it) for it in self.items]

    def _get(self, path: Path, downscale: float) -> np.ndarray:
        hit = self._cache.get((path, downscale))
        if hit is None:
            hit = read_rgb(path)
            if downscale < 1:
                h, w = hit.shape[:2]
                size = (max(1, round(w * downscale)), max(1, round(h * downscale)))
                hit = cv2.resize(hit, size, interpolation=cv2.INTER_AREA)
            if self.cache:
                self._cache[(path, downscale)] = hit
        return hit

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        step, j, patch = _check_key(key)
        rng = np.random.default_rng([self.seed, step, j])
        si = int(rng.choice(len(self.sources), p=self.probs)) if len(self.sources) > 1 else 0
        src = self.sources[si]
        in_path, tgt_path = self.items[si][int(rng.integers(len(self.items[si])))]

        tgt = self._get(tgt_path, src.downscale)
        if src.paired:
            inp = self._get(in_path, src.downscale)
            if inp.shape != tgt.shape:
                raise InputError(f"paired images differ in size: {str(in_path)!r} is "
                                 f"{inp.shape[:2]}, {str(tgt_path)!r} is {tgt.shape[:2]}; "
                                 f"paired low/high images must have the same H x W")
        else:
            inp = tgt

        h, w = tgt.shape[:2]
        y = int(rng.integers(max(h - patch, 0) + 1))
        x = int(rng.integers(max(w - patch, 0) + 1))
        mode = int(rng.integers(8))

        def crop(img: np.ndarray) -> np.ndarray:
            img = _pad_to(img[y:y + patch, x:x + patch], patch)
            return to_float(_flip_rot(img, mode))

        target = crop(tgt)
        if src.paired:
            inp_f = crop(inp)
        else:
            inp_f, target = synthesize(target, rng, camera=src.camera, degrade=src.degrade, gray_prob=src.gray_prob)
        c = self.channels  # gray samples hold three equal channels
        return _chw(inp_f[..., :c]), _chw(target[..., :c])


def check_gray_sources(sources: Sequence[SourceConfig]) -> None:
    """Raise ConfigError unless every source makes only gray samples, as a one-channel model
    needs: camera sources with ``mono_prob: 1``, degrade sources with ``gray_prob: 1``."""
    for i, s in enumerate(sources):
        if s.paired:
            raise ConfigError(f"sources[{i}] (low={s.low!r}) is a paired colour source; a gray model "
                              f"(in_channels 1) trains on gray samples only: remove it")
        if (s.camera.mono_prob if s.camera is not None else s.gray_prob) != 1.0:
            fix = "camera: {mono_prob: 1}" if s.camera is not None else "gray_prob: 1"
            raise ConfigError(f"sources[{i}] (clean={s.clean!r}) makes colour samples; a gray model "
                              f"(in_channels 1) trains on gray samples only: set {fix}")


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


class StepBatchSampler(Sampler):
    """Yields, for each step in ``start_step .. total_steps - 1``, this rank's keys
    ``[(step, j, patch) for j in range(rank * b, (rank + 1) * b)]`` with
    ``(patch, b) = schedule.at(step)`` (``b`` is per rank; the global batch is ``world_size * b``).
    ``total_steps`` defaults to ``schedule.total``. Use as ``DataLoader(ds, batch_sampler=...)``.
    """

    def __init__(self, schedule: ProgressiveSchedule, *, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, total_steps: int | None = None) -> None:
        super().__init__()
        if not isinstance(schedule, ProgressiveSchedule):
            raise ConfigError(f"StepBatchSampler needs a ProgressiveSchedule, got {type(schedule).__name__}")
        for name, v, lo in (("world_size", world_size, 1), ("rank", rank, 0), ("start_step", start_step, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"StepBatchSampler {name}={v!r} must be an integer >= {lo}")
        if rank >= world_size:
            raise ConfigError(f"StepBatchSampler rank={rank} must be < world_size={world_size} "
                              f"(valid ranks: 0..{world_size - 1})")
        if total_steps is None:
            total_steps = schedule.total
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 0:
            raise ConfigError(f"StepBatchSampler total_steps={total_steps!r} must be an integer >= 0 "
                              f"(default: schedule.total = {schedule.total})")
        self.schedule = schedule
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_step, self.total_steps = int(start_step), int(total_steps)

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start_step, self.total_steps):
            patch, b = self.schedule.at(step)
            yield [(step, j, patch) for j in range(self.rank * b, (self.rank + 1) * b)]

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0)
