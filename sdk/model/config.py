"""Network configuration: a frozen dataclass and the named variants. No torch here.

Every field changes the network (``tests/model/test_config_fields.py`` proves it), unlike the
official ``MIRNet_v2`` class, which ignores ``n_RRG``, ``height``, ``width`` and ``scale``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import ConfigError

RESIDUALS = ("image", "feature")
#: integer fields and their largest accepted value (bounds on configs read from untrusted manifests)
_INT_LIMITS = {"in_channels": 64, "out_channels": 64, "n_feat": 4096, "n_rrg": 64, "n_mrb": 64, "height": 16,
               "width": 16, "scale": 16, "max_groups": 4096, "skff_reduction": 4096, "unshuffle": 64}


@dataclass(frozen=True)
class MIRNetV2Config:
    """Hyper-parameters of a MIRNet-v2 network.

    in_channels / out_channels: image channels (6 in for dual-pixel defocus deblurring).
    n_feat: width of the full-resolution stream; stream ``i`` has ``int(n_feat * chan_factor**i)``.
    chan_factor: width growth per scale (official 1.5).
    n_rrg: number of recursive residual groups; RRG ``i`` uses ``min(2**i, max_groups)`` conv groups
        in its residual contextual blocks (official: 1, 2, 4, 4).
    n_mrb: multi-scale residual blocks per RRG.
    height: number of parallel streams (scales) in each MRB; inputs are padded to ``2**(height-1)``.
    width: how many times each MRB runs its (weight-shared) RCB + SKFF exchange (official 2).
    scale: output upscaling; > 1 adds a conv + pixel-shuffle upsampler and a bilinear image residual.
    bias: conv biases where the official network puts them (convs of RCB, context block, MRB and
        RRG outputs, conv_in, conv_out); down/up-samplers and SKFF never have bias.
    residual: "image" adds the input image to the output (needs in == out channels);
        "feature" adds the shallow features before ``conv_out`` (official defocus task).
    max_groups: cap on the grouped-conv group count (see n_rrg).
    skff_reduction: channel reduction of the SKFF squeeze (``d = max(C // reduction, 4)``).
    unshuffle: run the body at 1/unshuffle resolution: pixel-unshuffle the input into
        ``in_channels * unshuffle**2`` channels and pixel-shuffle the output back (edge variants;
        official 1). Costs ``unshuffle**2`` times fewer MACs at the same width.
    """

    in_channels: int = 3
    out_channels: int = 3
    n_feat: int = 80
    chan_factor: float = 1.5
    n_rrg: int = 4
    n_mrb: int = 2
    height: int = 3
    width: int = 2
    scale: int = 1
    bias: bool = False
    residual: str = "image"
    max_groups: int = 4
    skff_reduction: int = 8
    unshuffle: int = 1

    def __post_init__(self) -> None:
        for name, high in _INT_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(f"MIRNetV2Config.{name}={value!r}: must be an integer from 1 to {high}")
        factor = self.chan_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < math.inf:
            raise ConfigError(f"MIRNetV2Config.chan_factor={factor!r}: must be a finite number > 0")
        if not isinstance(self.bias, bool):
            raise ConfigError(f"MIRNetV2Config.bias={self.bias!r}: must be true or false")
        if not isinstance(self.residual, str) or self.residual not in RESIDUALS:
            raise ConfigError(f"MIRNetV2Config.residual={self.residual!r}: valid values are {RESIDUALS}")
        if self.residual == "image" and self.in_channels != self.out_channels:
            raise ConfigError(
                f"MIRNetV2Config: residual='image' needs in_channels == out_channels, got "
                f"{self.in_channels} != {self.out_channels}; use residual='feature'")
        try:
            widths = self.widths
        except OverflowError:
            raise ConfigError(f"MIRNetV2Config: chan_factor={factor!r} and height={self.height} give stream "
                              f"widths too large to compute; lower them") from None
        for i in range(1, len(widths)):
            if widths[i] < 1:
                raise ConfigError(f"MIRNetV2Config: stream {i} width {widths[i]} < 1; raise n_feat")
        for g in sorted(set(self.groups)):
            bad = [w for w in widths if w % g]
            if bad:
                raise ConfigError(
                    f"MIRNetV2Config: stream widths {widths} must be divisible by the conv groups "
                    f"{self.groups}; {bad} is not divisible by {g}. Use n_feat a multiple of 16 "
                    f"(at chan_factor 1.5) or lower max_groups")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel width of each stream, full resolution first."""
        return tuple(int(self.n_feat * self.chan_factor ** i) for i in range(self.height))

    @property
    def groups(self) -> tuple[int, ...]:
        """Conv groups of each RRG."""
        return tuple(min(2 ** i, self.max_groups) for i in range(self.n_rrg))

    @property
    def pad_multiple(self) -> int:
        """Input H and W must be multiples of this (padding handles it in the SDK)."""
        return self.unshuffle * 2 ** (self.height - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MIRNetV2Config":
        """Build from a mapping of field values; ConfigError names a wrong type, a value out of range
        or an unknown field."""
        if not isinstance(data, dict):
            raise ConfigError(f"MIRNetV2Config: expected a mapping of field values, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown MIRNetV2Config fields {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes) -> "MIRNetV2Config":
        return dataclasses.replace(self, **changes)


_OFFICIAL = MIRNetV2Config()

VARIANTS: dict[str, MIRNetV2Config] = {
    # The official task configurations (swz30/MIRNetv2 Options/*.yml): all n_feat 80.
    "real-denoising": _OFFICIAL,
    "enhancement-lol": _OFFICIAL,
    "enhancement-fivek": _OFFICIAL,
    "defocus-dual-pixel": _OFFICIAL.replace(in_channels=6, residual="feature"),
    # Super-resolution with a real upsampler (the official class never upsamples).
    "sr-x2": _OFFICIAL.replace(scale=2),
    "sr-x3": _OFFICIAL.replace(scale=3),
    "sr-x4": _OFFICIAL.replace(scale=4),
    # Edge variants: the body runs at half resolution (pixel-unshuffle 2).
    "lite": MIRNetV2Config(n_feat=16, n_rrg=2, n_mrb=1, unshuffle=2),
    "nano": MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1, unshuffle=2),
}


def get_variant(name: str) -> MIRNetV2Config:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown variant {name!r}; valid variants: {sorted(VARIANTS)}") from None


def stream_names(height: int) -> list[str]:
    """The names of an MRB's ``height`` streams, full resolution first, as the official modules
    call them (``dau_top``, ``dau_mid``, ``dau_bot``; ``mid1``, ``mid2``... beyond three)."""
    if height == 1:
        return ["top"]
    middle = ["mid"] if height == 3 else [f"mid{i}" for i in range(1, height - 1)]
    return ["top", *middle, "bot"]
