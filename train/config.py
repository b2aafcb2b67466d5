"""Training-run configuration: dataclasses loaded from YAML (data, schedule, variant name).

No registries: every field is explicit, and unknown keys are refused with the valid ones listed.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mirnet.sdk.errors import ConfigError, require
from mirnet.sdk.model import MIRNetV2Config, get_variant

from .data import ProgressiveSchedule, SourceConfig, check_gray_sources
from .losses import LossConfig


def _check_keys(cls, data: dict, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {sorted(known)}")


_KINDS = {"bool": ((bool,), "true or false", "booleans"), "int": ((int,), "an integer", "integers"),
          "float": ((int, float), "a number", "numbers"), "str": ((str,), "a string", "strings"),
          "dict": ((dict,), "a mapping", "mappings")}
_Rule = tuple[Callable[[object], bool], str]
_AT_LEAST_0: _Rule = (lambda v: v >= 0, ">= 0")
_AT_LEAST_1: _Rule = (lambda v: v >= 1, ">= 1")


def _fits(value, kind: str) -> bool:
    if kind in ("int", "float") and isinstance(value, bool):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _KINDS[kind][0])


def _check_fields(obj, where: str, rules: dict[str, _Rule]) -> None:
    """Every field whose annotation is a plain type (``bool``, ``int``, ``float``, ``str``, ``dict``,
    a tuple of one of them, optionally ``| None``) must hold that type, and satisfy its rule in
    ``rules`` (each element, for tuples); ConfigError names the key. Fields of other types (nested
    configs) are checked by their own classes."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kind, _, rest = f.type.partition(" | ")
        optional = rest == "None"
        if rest and not optional or optional and value is None:
            continue
        if kind.startswith("tuple[") and kind.endswith("]"):
            parts = kind[len("tuple["):-1].split(", ")
            elem = parts[0]
            if elem not in _KINDS:
                continue
            count = None if parts[-1] == "..." else len(parts)
            ok = (isinstance(value, tuple) and (count is None or len(value) == count)
                  and all(_fits(v, elem) for v in value))
            expected = f"a list of {f'{count} ' if count else ''}{_KINDS[elem][2]}"
            values = value if ok else ()
        elif kind in _KINDS:
            ok, expected, values = _fits(value, kind), _KINDS[kind][1], (value,)
        else:
            continue
        rule = rules.get(f.name)
        if rule is not None:
            ok = ok and all(rule[0](v) for v in values)
            expected += f" {rule[1]}"
        if not ok:
            raise ConfigError(f"{where}: `{f.name}`={value!r} must be {expected}{' (or null)' if optional else ''}")


@dataclass(frozen=True)
class ValConfig:
    """Validation set (model selection only): a clean folder with AWGN ``sigma`` and/or through the
    camera presets ``protocols`` (:data:`mirnet.sdk.camera.PRESETS`; the selection metric is the
    mean PSNR over all of them), or paired folders."""

    clean: str | None = None
    sigma: float | None = None
    protocols: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None
    low_prefix: str = ""
    high_prefix: str = ""
    holdout_every: int = 0
    limit: int | None = 8
    crop: int | None = 256
    every: int = 1000
    gray: bool = False  # with sigma: monochrome AWGN frames (a gray model's validation)

    def __post_init__(self) -> None:
        _check_fields(self, "val", {"sigma": _AT_LEAST_0, "holdout_every": _AT_LEAST_0, "limit": _AT_LEAST_1,
                                    "crop": _AT_LEAST_1, "every": _AT_LEAST_1})

    @classmethod
    def from_dict(cls, data: dict) -> "ValConfig":
        from mirnet.sdk.camera import preset

        _check_keys(cls, data, "val")
        data = dict(data)
        if isinstance(data.get("protocols"), (list, tuple)):
            data["protocols"] = tuple(data["protocols"])
        cfg = cls(**data)
        if (cfg.clean is None) == (cfg.low is None):
            raise ConfigError("val: give either `clean` (+ `sigma` and/or `protocols`) or `low` + `high`")
        if cfg.clean is not None and cfg.sigma is None and not cfg.protocols:
            raise ConfigError("val: a clean validation folder needs `sigma` (AWGN, 0-255 units) and/or "
                              "`protocols` (camera presets)")
        if cfg.gray and cfg.sigma is None:
            raise ConfigError("val.gray makes the `sigma` AWGN frames monochrome; set `sigma` too (camera-mono "
                              "is the gray camera preset)")
        if not isinstance(cfg.protocols, tuple):
            raise ConfigError(f"val.protocols={cfg.protocols!r}: give a list of camera presets")
        for name in cfg.protocols:
            preset(name)
        return cfg


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``iters``/``patch``/``batch`` are the progressive schedule (per-process
    batch); the LR follows the official cosine-with-restarts schedule over ``lr_periods``."""

    name: str
    sources: tuple[SourceConfig, ...]
    variant: str = "lite"
    model: dict = field(default_factory=dict)
    init: str | None = None
    teacher: str | None = None  # weights (or a bundled name) to distil from, as `mirnet prune` does
    teacher_weight: float = 0.5  # the teacher's share of the Charbonnier loss (the rest: ground truth)
    val: ValConfig | None = None
    iters: tuple[int, ...] = (1000,)
    patch: tuple[int, ...] = (128,)
    batch: tuple[int, ...] = (8,)
    lr: float = 2e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_periods: tuple[int, ...] | None = None
    lr_restart_weights: tuple[float, ...] | None = None
    lr_eta_mins: tuple[float, ...] = (1e-6,)
    warmup_steps: int = 0
    grad_clip: float = 0.01
    ema_decay: float = 0.999
    loss: LossConfig = field(default_factory=LossConfig)
    amp: bool = True  # float16 autocast on CUDA
    amp_cpu: bool = False  # bfloat16 autocast on the CPU (fast where it has AVX-512 BF16 or AMX)
    channels_last: bool = False  # NHWC memory layout (faster convolutions on CPUs)
    checkpoint_every: int = 500
    log_every: int = 20
    workers: int = 2
    seed: int = 0
    threads: int | None = None
    tensorboard: bool = False
    out: str | None = None

    def __post_init__(self) -> None:
        positive: _Rule = (lambda v: v > 0, "> 0")
        fraction: _Rule = (lambda v: 0 <= v < 1, "in [0, 1)")
        _check_fields(self, "training config", {
            "name": (lambda v: v != "", "(not empty)"), "iters": _AT_LEAST_1, "patch": _AT_LEAST_1,
            "batch": _AT_LEAST_1, "lr": positive, "weight_decay": _AT_LEAST_0, "betas": fraction,
            "lr_periods": _AT_LEAST_1, "lr_restart_weights": _AT_LEAST_0, "lr_eta_mins": _AT_LEAST_0,
            "warmup_steps": _AT_LEAST_0, "grad_clip": _AT_LEAST_0, "ema_decay": fraction,
            "checkpoint_every": _AT_LEAST_1, "log_every": _AT_LEAST_1, "workers": _AT_LEAST_0,
            "seed": (lambda v: 0 <= v < 2 ** 63, "from 0 to 2**63 - 1"), "threads": _AT_LEAST_1,
            "teacher_weight": (lambda v: 0 <= v <= 1, "in [0, 1] (0: ground truth only, 1: the teacher only)")})
        fields = {f.name for f in dataclasses.fields(MIRNetV2Config)}
        unknown = sorted(set(self.model) - fields)
        if unknown:
            raise ConfigError(f"training config: `model` overrides unknown fields {unknown}; valid fields: "
                              f"{sorted(fields)}")

    @property
    def schedule(self) -> ProgressiveSchedule:
        return ProgressiveSchedule(list(self.iters), list(self.patch), list(self.batch))

    @property
    def total_steps(self) -> int:
        return sum(self.iters)

    @property
    def periods(self) -> list[int]:
        return list(self.lr_periods) if self.lr_periods else [self.total_steps]

    @property
    def restart_weights(self) -> list[float]:
        return list(self.lr_restart_weights) if self.lr_restart_weights else [1.0] * len(self.periods)

    @property
    def eta_mins(self) -> list[float]:
        mins = list(self.lr_eta_mins)
        return mins * len(self.periods) if len(mins) == 1 else mins

    def model_config(self) -> MIRNetV2Config:
        return get_variant(self.variant).replace(**self.model)

    def out_dir(self) -> Path:
        """``out`` if set, else ``runs/<name>`` under the working directory."""
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a YAML mapping. Relative paths are relative to the working directory."""
        _check_keys(cls, data, "training config")
        data = dict(data)
        for key in ("name", "sources"):
            if key not in data:
                raise ConfigError(f"training config: `{key}` is required")
        if not data["sources"]:
            raise ConfigError("training config: `sources` is empty; add at least one data source")
        sources = []
        for i, src in enumerate(data["sources"]):
            try:
                sources.append(SourceConfig.from_dict(src))
            except ConfigError as exc:
                raise ConfigError(f"sources[{i}]: {exc}") from None
        data["sources"] = tuple(sources)
        if data.get("val") is not None:
            data["val"] = ValConfig.from_dict(data["val"])
        if "loss" in data:
            data["loss"] = LossConfig.from_dict(data["loss"] or {})
        for key in ("iters", "patch", "batch", "betas", "lr_periods", "lr_restart_weights", "lr_eta_mins"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
            elif isinstance(data.get(key), (int, float)) and key != "betas":
                data[key] = (data[key],)
        cfg = cls(**data)
        cfg.schedule  # validates the progressive schedule
        m = cfg.model_config().pad_multiple  # validates variant and overrides
        if cfg.model_config().in_channels == 1:
            check_gray_sources(cfg.sources)
        bad = [p for p in cfg.patch if p % m]
        if bad:
            raise ConfigError(f"patch sizes {bad} are not multiples of {m}, the pad multiple of "
                              f"variant {cfg.variant!r}")
        if cfg.lr_periods and sum(cfg.lr_periods) != cfg.total_steps:
            raise ConfigError(f"lr_periods {list(cfg.lr_periods)} sum to {sum(cfg.lr_periods)}, "
                              f"but the schedule has {cfg.total_steps} steps (sum of iters)")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        yaml = require("yaml", "train")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config {path} not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(data)
