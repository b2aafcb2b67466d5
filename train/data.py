"""Training and validation data for MIRNet-v2: image folders, progressive patch schedule,
a deterministic map-style training set and a step-indexed batch sampler.

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

from mirnet.sdk.errors import ConfigError, InputError
from mirnet.train.degrade import DegradeConfig, awgn

__all__ = [
    "IMAGE_SUFFIXES", "list_images", "load_rgb", "pair_folders", "ProgressiveSchedule",
    "SourceConfig", "TrainSet", "StepBatchSampler", "EvalSet",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
Key = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (png, jpg, jpeg, bmp, tif, tiff; any case), sorted by
    name. ConfigError if the folder is missing or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"image folder {str(folder)!r} {what} (resolved: {folder.resolve()}); "
                          f"point the data config at a folder of {'/'.join(IMAGE_SUFFIXES)} files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"image folder {str(folder)!r} holds no image file; valid extensions: "
                          f"{', '.join(IMAGE_SUFFIXES)} (is the data in a sub-folder?)")
    return files


def _read_native(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode to an ``H x W x 3`` RGB array in the file's own dtype, plus the value of white."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        what = "does not exist" if not path.exists() else "cannot be decoded by OpenCV"
        raise InputError(f"image {str(path)!r} {what}; use a readable "
                         f"{'/'.join(IMAGE_SUFFIXES)} file")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise InputError(f"image {str(path)!r} has unsupported dtype {img.dtype}; "
                         f"use 8-bit, 16-bit or float images")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.shape[2] == 4:
        img = img[:, :, 2::-1]  # BGRA -> RGB, alpha dropped
    else:
        raise InputError(f"image {str(path)!r} has {img.shape[2]} channels; use gray, RGB or RGBA")
    return np.ascontiguousarray(img), scale


def _to_float(img: np.ndarray, scale: float) -> np.ndarray:
    out = img.astype(np.float32)
    if scale != 1.0:
        out /= np.float32(scale)
    return out


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as float32 ``H x W x 3`` RGB in [0, 1]: gray replicated to 3 channels,
    alpha dropped, 8-bit / 255, 16-bit / 65535. InputError if it cannot be read."""
    img, scale = _read_native(path)
    return _to_float(img, scale)


def split_holdout(pairs: list, every: int) -> tuple[list, list]:
    """``(train, held_out)``: every ``every``-th item by name (indices every-1, 2*every-1, ...) is
    held out for evaluation; ``every=0`` holds out nothing."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0 or every == 1:
        raise ConfigError(f"holdout_every={every!r}: use 0 (none) or an integer >= 2")
    if every == 0:
        return list(pairs), []
    held = [p for i, p in enumerate(pairs) if (i + 1) % every == 0]
    return [p for i, p in enumerate(pairs) if (i + 1) % every], held


def pair_folders(low_dir: str | Path, high_dir: str | Path, *, low_prefix: str = "",
                 high_prefix: str = "") -> list[tuple[Path, Path]]:
    """Pairs ``(low, high)`` matched by file name (stem and suffix), sorted by name.

    When the two sides name files with a fixed prefix each (SIDD: ``NOISY_0.png`` /
    ``GT_0.png``), ``low_prefix``/``high_prefix`` are stripped before matching; a file without
    its prefix is unmatched. ConfigError naming up to 5 unmatched files on each side if the
    folders do not match."""
    def index(folder: str | Path, prefix: str) -> tuple[dict[str, Path], list[str]]:
        keyed, bad = {}, []
        for p in list_images(folder):
            if p.name.startswith(prefix):
                keyed[p.name[len(prefix):]] = p
            else:
                bad.append(p.name)
        return keyed, bad

    low, low_bad = index(low_dir, low_prefix)
    high, high_bad = index(high_dir, high_prefix)
    only_low = sorted([low[k].name for k in set(low) - set(high)] + low_bad)
    only_high = sorted([high[k].name for k in set(high) - set(low)] + high_bad)
    if only_low or only_high:
        parts = []
        for side, names, folder in (("low", only_low, low_dir), ("high", only_high, high_dir)):
            if names:
                more = f" and {len(names) - 5} more" if len(names) > 5 else ""
                parts.append(f"{len(names)} file(s) only in {side} folder {str(folder)!r}: "
                             f"{names[:5]}{more}")
        prefixes = f" (after stripping low_prefix={low_prefix!r}, high_prefix={high_prefix!r})" \
            if low_prefix or high_prefix else ""
        raise ConfigError("paired folders do not match by file name (stem and suffix)" + prefixes
                          + ": " + "; ".join(parts) + ". Rename or remove the unmatched files so "
                          "every low image has a high image of the same name, or set "
                          "low_prefix/high_prefix when the names differ by a fixed prefix "
                          "(e.g. NOISY_0.png / GT_0.png: low_prefix='NOISY_', high_prefix='GT_').")
    return [(low[k], high[k]) for k in sorted(low)]


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
    ``degrade``) or ``low`` + ``high`` (paired folders matched by file name). ``weight`` is the
    relative probability of drawing a sample from this source."""

    clean: str | None = None
    low: str | None = None
    high: str | None = None
    weight: float = 1.0
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    low_prefix: str = ""   # paired only: stripped from low names before matching (SIDD: "NOISY_")
    high_prefix: str = ""  # paired only: stripped from high names before matching (SIDD: "GT_")
    holdout_every: int = 0  # every k-th image by name is left out of training (see split_holdout)

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
        return cls(**kw)


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
    builds its own cache. Returns ``(input, target)`` float32 tensors ``3 x patch x patch``.
    """

    def __init__(self, sources: Sequence[SourceConfig], seed: int = 0, cache: bool = True) -> None:
        if isinstance(sources, SourceConfig):
            sources = [sources]
        if not sources:
            raise ConfigError("TrainSet needs at least one source (clean: or low:/high: folders)")
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
        self._cache: dict[Path, tuple[np.ndarray, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Workers start with an empty cache (no pickling of decoded images under spawn).
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    @property
    def num_images(self) -> list[int]:
        """Number of images (or pairs) per source."""
        return [len(it) for it in self.items]

    def _get(self, path: Path) -> tuple[np.ndarray, float]:
        hit = self._cache.get(path)
        if hit is None:
            hit = _read_native(path)
            if self.cache:
                self._cache[path] = hit
        return hit

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        step, j, patch = _check_key(key)
        rng = np.random.default_rng([self.seed, step, j])
        si = int(rng.choice(len(self.sources), p=self.probs)) if len(self.sources) > 1 else 0
        src = self.sources[si]
        in_path, tgt_path = self.items[si][int(rng.integers(len(self.items[si])))]

        tgt, tgt_scale = self._get(tgt_path)
        if src.paired:
            inp, in_scale = self._get(in_path)
            if inp.shape != tgt.shape:
                raise InputError(f"paired images differ in size: {str(in_path)!r} is "
                                 f"{inp.shape[:2]}, {str(tgt_path)!r} is {tgt.shape[:2]}; "
                                 f"paired low/high images must have the same H x W")
        else:
            inp, in_scale = tgt, tgt_scale

        h, w = tgt.shape[:2]
        y = int(rng.integers(max(h - patch, 0) + 1))
        x = int(rng.integers(max(w - patch, 0) + 1))
        mode = int(rng.integers(8))

        def crop(img: np.ndarray, scale: float) -> np.ndarray:
            img = _pad_to(img[y:y + patch, x:x + patch], patch)
            return _to_float(_flip_rot(img, mode), scale)

        target = crop(tgt, tgt_scale)
        if src.paired:
            inp_f = crop(inp, in_scale)
        else:
            inp_f = src.degrade.apply(target, rng)
        return _chw(inp_f), _chw(target)


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


# ---------------------------------------------------------------------------------------------
# Validation set
# ---------------------------------------------------------------------------------------------

def _centre_crop(img: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return img
    h, w = img.shape[:2]
    ch = min(crop, h - h % 8) or h
    cw = min(crop, w - w % 8) or w
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y:y + ch, x:x + cw])


class EvalSet(Sequence):
    """Validation pairs ``(degraded, clean)``: float32 ``H x W x 3`` RGB numpy arrays.

    Build with :meth:`from_pairs` (paired folders) or :meth:`from_clean` (synthetic AWGN with
    the Gaussian-denoising benchmark protocol). ``names[i]`` is the file name of pair ``i``.
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], names: list[str],
                 description: str = "") -> None:
        self.pairs = pairs
        self.names = names
        self.description = description

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):  # type: ignore[override]
        return self.pairs[i]

    def __repr__(self) -> str:
        return f"EvalSet({len(self)} pairs, {self.description})"

    @staticmethod
    def _check_common(limit: int | None, crop: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"EvalSet limit={limit!r} must be a positive integer or None (all images)")
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int)
                                 or crop < 8 or crop % 8):
            raise ConfigError(f"EvalSet crop={crop!r} must be None (full images) or a positive "
                              f"multiple of 8, e.g. 256")

    @classmethod
    def from_pairs(cls, low_dir: str | Path, high_dir: str | Path, *, limit: int | None = None,
                   crop: int | None = None, low_prefix: str = "", high_prefix: str = "",
                   holdout_every: int = 0) -> "EvalSet":
        """Real pairs from folders matched by name (see :func:`pair_folders` for the prefixes);
        with ``holdout_every`` only the pairs a training source with the same value leaves out;
        the first ``limit`` by name; optional centre crop of ``crop x crop`` (clamped to the
        image, multiples of 8)."""
        cls._check_common(limit, crop)
        matched = pair_folders(low_dir, high_dir, low_prefix=low_prefix, high_prefix=high_prefix)
        if holdout_every:
            matched = split_holdout(matched, holdout_every)[1]
        matched = matched[:limit]
        pairs, names = [], []
        for lp, hp in matched:
            low, high = load_rgb(lp), load_rgb(hp)
            if low.shape != high.shape:
                raise InputError(f"paired images differ in size: {str(lp)!r} is {low.shape[:2]}, "
                                 f"{str(hp)!r} is {high.shape[:2]}")
            pairs.append((_centre_crop(low, crop), _centre_crop(high, crop)))
            names.append(hp.name)
        return cls(pairs, names, f"pairs {low_dir} -> {high_dir}, crop={crop}")

    @classmethod
    def from_clean(cls, folder: str | Path, sigma: float, *, seed: int = 0, clip: bool = False,
                   limit: int | None = None, crop: int | None = None) -> "EvalSet":
        """Clean images plus AWGN, benchmark protocol: the optional centre crop is taken first,
        then ``noisy = clean + N(0, sigma/255)`` with the RNG reset to
        ``np.random.RandomState(seed)`` (what ``np.random.seed(0)`` in the published evaluation
        code gives, so the noise values match theirs) for every image; no clipping or rounding.
        ``clip=True`` instead clips to [0, 1] and rounds to the 8-bit grid (the easier
        "clipped uint8 input" convention; say so next to any number measured with it)."""
        cls._check_common(limit, crop)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
            raise ConfigError(f"EvalSet sigma={sigma!r} must be a number >= 0 in 0-255 units (e.g. 25)")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"EvalSet seed={seed!r} must be an integer >= 0 (benchmark protocol: 0)")
        pairs, names = [], []
        for p in list_images(folder)[:limit]:
            clean = _centre_crop(load_rgb(p), crop)
            noisy = awgn(clean, float(sigma), np.random.RandomState(seed))
            if clip:
                noisy = (np.round(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)
            pairs.append((noisy, clean))
            names.append(p.name)
        return cls(pairs, names, f"{folder} + AWGN sigma={sigma} seed={seed} clip={clip} crop={crop}")
