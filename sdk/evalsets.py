"""Evaluation sets: (degraded, clean) pairs for ``mirnet eval``, training validation, pruning
checks, the quality gate and the benchmark's quality columns. Torch-free.

Pairs come from paired folders matched by file name (:func:`pair_folders`; a data folder with
``low/high``, ``NOISY/GT``, ``input/target`` or ``lq/gt`` sub-folders is found by
:func:`detect_pairs`) or from clean images plus synthetic noise (:meth:`EvalSet.from_clean`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .camera import luma
from .degrade import awgn
from .errors import ConfigError, InputError
from .media import list_images, load_rgb

__all__ = ["EvalSet", "PAIR_NAMES", "detect_pairs", "find_pairs", "pair_folders", "split_holdout",
           "centre_crop"]

#: sub-folder names of paired data, (degraded, clean)
PAIR_NAMES = (("low", "high"), ("NOISY", "GT"), ("input", "target"), ("lq", "gt"))


def split_holdout(pairs: list, every: int) -> tuple[list, list]:
    """``(kept, held_out)``: every ``every``-th item by name (indices every-1, 2*every-1, ...) is
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


def detect_pairs(folder: str | Path) -> tuple[Path, Path, str, str] | None:
    """``(low_dir, high_dir, low_prefix, high_prefix)`` if ``folder`` holds paired sub-folders
    (:data:`PAIR_NAMES`), else None. File-name prefixes equal to the sub-folder name plus ``_``
    (SIDD: ``NOISY/NOISY_0.png`` / ``GT/GT_0.png``) are detected."""
    folder = Path(folder)
    for low, high in PAIR_NAMES:
        lo, hi = folder / low, folder / high
        if lo.is_dir() and hi.is_dir():
            prefixes = []
            for sub in (lo, hi):
                p = f"{sub.name}_"
                names = [f.name for f in list_images(sub)]
                prefixes.append(p if names and all(n.startswith(p) for n in names) else "")
            return lo, hi, prefixes[0], prefixes[1]
    return None


def find_pairs(folder: str | Path) -> tuple[Path, Path, str, str]:
    """:func:`detect_pairs`, or ConfigError naming the sub-folder layouts it looks for."""
    found = detect_pairs(folder)
    if found is None:
        raise ConfigError(f"{folder}: paired data needs sub-folders named one of "
                          f"{[f'{a}/{b}' for a, b in PAIR_NAMES]}")
    return found


def centre_crop(img: np.ndarray, crop: int | None) -> np.ndarray:
    """The centre ``crop x crop`` of ``img`` (clamped to the image, rounded down to multiples of 8)."""
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
            pairs.append((centre_crop(low, crop), centre_crop(high, crop)))
            names.append(hp.name)
        return cls(pairs, names, f"pairs {low_dir} -> {high_dir}, crop={crop}")

    @classmethod
    def concat(cls, sets: Sequence["EvalSet"]) -> "EvalSet":
        """One set holding the pairs of ``sets`` in order (names keep their set's description)."""
        if not sets:
            raise ConfigError("EvalSet.concat needs at least one set")
        if len(sets) == 1:
            return sets[0]
        return cls([p for s in sets for p in s.pairs], [n for s in sets for n in s.names],
                   " + ".join(s.description for s in sets))

    @classmethod
    def from_protocol(cls, folder: str | Path, protocol: str, *, seed: int = 0, limit: int | None = None,
                      crop: int | None = None) -> "EvalSet":
        """Clean images filmed by the camera of evaluation preset ``protocol``
        (:data:`mirnet.sdk.camera.PRESETS`: ``camera-h264``, ``camera-jpeg``, ``camera-mono``,
        ``lowlight``), image ``i`` with ``np.random.default_rng([seed, i])``; the optional centre
        crop first, odd sizes cut to even ones (4:2:0). A monochrome preset's targets are gray."""
        from .camera import preset

        return cls.synthesized(folder, preset(protocol).apply, seed=seed, limit=limit, crop=crop,
                               how=f"camera preset {protocol}")

    @classmethod
    def synthesized(cls, folder, apply, *, seed: int, limit: int | None, crop: int | None, how: str) -> "EvalSet":
        """The clean images of ``folder`` (the optional centre crop first, odd sizes cut to even
        ones for 4:2:0) turned into pairs by ``apply(clean, rng) -> (degraded, target)``, image
        ``i`` with ``np.random.default_rng([seed, i])``; ``how`` names ``apply`` in the description."""
        cls._check_common(limit, crop)
        pairs, names = [], []
        for i, p in enumerate(list_images(folder)[:limit]):
            clean = centre_crop(load_rgb(p), crop)
            h, w = clean.shape[:2]
            clean = np.ascontiguousarray(clean[:h - h % 2, :w - w % 2])
            pairs.append(apply(clean, np.random.default_rng([seed, i])))
            names.append(p.name)
        return cls(pairs, names, f"{folder} through {how} seed={seed} crop={crop}")

    @classmethod
    def from_folder(cls, folder: str | Path, sigma: float, *, limit: int | None = None,
                    crop: int | None = None) -> "EvalSet":
        """The pairs of ``folder`` when it holds paired sub-folders (:func:`detect_pairs`),
        otherwise its images as clean targets with AWGN ``sigma`` (:meth:`from_clean`)."""
        pairs = detect_pairs(folder) if Path(folder).is_dir() else None
        if pairs:
            low, high, low_prefix, high_prefix = pairs
            return cls.from_pairs(low, high, limit=limit, crop=crop, low_prefix=low_prefix,
                                  high_prefix=high_prefix)
        return cls.from_clean(folder, sigma, limit=limit, crop=crop)

    @classmethod
    def from_clean(cls, folder: str | Path, sigma: float, *, seed: int = 0, clip: bool = False,
                   limit: int | None = None, crop: int | None = None, gray: bool = False) -> "EvalSet":
        """Clean images plus AWGN, benchmark protocol: the optional centre crop is taken first,
        then ``noisy = clean + N(0, sigma/255)`` with the RNG reset to
        ``np.random.RandomState(seed)`` (what ``np.random.seed(0)`` in the published evaluation
        code gives, so the noise values match theirs) for every image; no clipping or rounding.
        ``clip=True`` instead clips to [0, 1] and rounds to the 8-bit grid (the easier
        "clipped uint8 input" convention; say so next to any number measured with it).
        ``gray=True``: a monochrome camera at the same noise level: the target is the image's BT.601
        luma in three equal channels and the noise is one channel (the first of the draw) copied
        to all three."""
        cls._check_common(limit, crop)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < math.inf:
            raise ConfigError(f"EvalSet sigma={sigma!r} must be a finite number >= 0 in 0-255 units (e.g. 25)")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"EvalSet seed={seed!r} must be an integer >= 0 (benchmark protocol: 0)")
        pairs, names = [], []
        for p in list_images(folder)[:limit]:
            clean = centre_crop(load_rgb(p), crop)
            if gray:
                clean = np.repeat(luma(clean)[..., None], 3, axis=2)
            noisy = awgn(clean, float(sigma), np.random.RandomState(seed))
            if gray:
                noisy = np.repeat(noisy[..., :1], 3, axis=2)
            if clip:
                noisy = (np.round(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)
            pairs.append((noisy, clean))
            names.append(p.name)
        return cls(pairs, names, f"{folder} + AWGN sigma={sigma} seed={seed} clip={clip} crop={crop}"
                   + (" gray" if gray else ""))
