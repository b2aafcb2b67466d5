"""Parameter and multiply-accumulate counts, from the config alone (no torch, no forward pass).

Every convolution of the network is listed with its shape, the resolution it runs at and how often
one forward pass calls it (:func:`conv_layers`); a pruned network is its config plus the conv
shapes its manifest records (``pruned.layers``) or that a loaded model holds. MACs count every
convolution plus the context blocks' matrix products (pooling, activations, softmax, pixel
(un)shuffle and the bilinear resampling are not counted)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .config import MIRNetV2Config, stream_names


@dataclass(frozen=True)
class ConvLayer:
    """One ``nn.Conv2d`` of the network: its module name and shape; ``downscale``: how many times
    smaller than the body (the network at 1/unshuffle resolution) its output is on each side (1,
    2, 4...; 0: a 1 x 1 pooled input); ``calls`` per forward pass (weight-shared blocks run
    ``config.width`` times); ``context``: a context block's conv_mask, whose input also enters
    the block's C x HW product."""

    name: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: int
    bias: bool
    downscale: int
    calls: int = 1
    context: bool = False


def conv_layers(config: MIRNetV2Config, pruned_layers: dict | None = None) -> list[ConvLayer]:
    """Every convolution of ``MIRNetV2(config)``, named as its ``named_modules()`` name it, with
    ``pruned_layers`` (``{name: [in_channels, out_channels, groups]}``) applied."""
    c, layers = config, []
    widths, names, rounds = c.widths, stream_names(c.height), c.width

    def conv(name, c_in, c_out, kernel, downscale, *, groups=1, bias=c.bias, calls=1, context=False):
        layers.append(ConvLayer(name, c_in, c_out, groups, kernel, bias, downscale, calls, context))

    shuffle = c.scale * c.unshuffle
    conv("conv_in", c.in_channels * c.unshuffle ** 2, c.n_feat, 3, 1)
    for i, groups in enumerate(c.groups):
        for m in range(c.n_mrb):
            mrb = f"body.{i}.body.{m}"
            for s, (name, w) in enumerate(zip(names, widths)):
                rcb = f"{mrb}.dau_{name}"
                conv(f"{rcb}.body.0", w, w, 3, 2 ** s, groups=groups, calls=rounds)
                conv(f"{rcb}.body.2", w, w, 3, 2 ** s, groups=groups, calls=rounds)
                conv(f"{rcb}.gcnet.conv_mask", w, 1, 1, 2 ** s, calls=rounds, context=True)
                conv(f"{rcb}.gcnet.channel_add_conv.0", w, w, 1, 0, calls=rounds)
                conv(f"{rcb}.gcnet.channel_add_conv.2", w, w, 1, 0, calls=rounds)
            for k in range(1, c.height):
                for j in range(k):
                    stage = f"{mrb}.down{2 ** k}" + ("" if k == 1 else f".{j}")
                    conv(f"{stage}.body.0.bot.1", widths[j], widths[j + 1], 1, 2 ** (j + 1), bias=False)
            for r in range(rounds):
                for j in range(c.height - 1):
                    conv(f"{mrb}.up{j + 2}{j + 1}_{r + 1}.body.0.bot.0", widths[j + 1], widths[j], 1,
                         2 ** (j + 1), bias=False)
            conv(f"{mrb}.conv_out", c.n_feat, c.n_feat, 1, 1)
            for name, w in zip(names[:-1], widths):
                squeezed = max(int(w / c.skff_reduction), 4)
                conv(f"{mrb}.skff_{name}.conv_du.0", w, squeezed, 1, 0, bias=False, calls=rounds)
                for k in range(2):
                    conv(f"{mrb}.skff_{name}.fcs.{k}", squeezed, w, 1, 0, bias=False, calls=rounds)
        conv(f"body.{i}.body.{c.n_mrb}", c.n_feat, c.n_feat, 3, 1)
    conv("conv_out", c.n_feat, c.out_channels * shuffle ** 2, 3, 1)

    pruned_layers = pruned_layers or {}
    unknown = sorted(set(pruned_layers) - {layer.name for layer in layers})
    if unknown:
        raise InputError(f"pruned layers {unknown} are not convolutions of this network config")
    return [layer if layer.name not in pruned_layers else
            ConvLayer(layer.name, *pruned_layers[layer.name], layer.kernel, layer.bias, layer.downscale,
                      layer.calls, layer.context)
            for layer in layers]


def _layers(model_or_config, pruned_layers: dict | None) -> list[ConvLayer]:
    """The conv layers of a config (plus ``pruned_layers``) or of a loaded network (its actual conv
    shapes, so a pruned model counts as pruned)."""
    if isinstance(model_or_config, MIRNetV2Config):
        return conv_layers(model_or_config, pruned_layers)
    shapes = {name: [m.in_channels, m.out_channels, m.groups] for name, m in model_or_config.named_modules()
              if hasattr(m, "in_channels") and hasattr(m, "kernel_size")}
    layers = conv_layers(model_or_config.config)
    missing = sorted(set(shapes) - {layer.name for layer in layers})
    if missing:
        raise InputError(f"the model has convolutions {missing} that MIRNetV2({model_or_config.config}) "
                         f"does not; count_macs counts MIRNet-v2 networks only")
    return conv_layers(model_or_config.config, shapes)


def count_params(model_or_config, *, pruned_layers: dict | None = None) -> int:
    """Parameters of a loaded network, or of a config (plus a pruned layout) without building it."""
    if not isinstance(model_or_config, MIRNetV2Config):
        return sum(p.numel() for p in model_or_config.parameters())
    return sum(layer.out_channels * (layer.in_channels // layer.groups) * layer.kernel ** 2
               + (layer.out_channels if layer.bias else 0)
               for layer in conv_layers(model_or_config, pruned_layers))


def count_macs(model_or_config, height: int = 256, width: int = 256, *,
               pruned_layers: dict | None = None) -> int:
    """MACs of one forward pass on a ``1 x C x height x width`` input (H and W multiples of the
    config's ``pad_multiple``) of a loaded network, or of a config plus ``pruned_layers``."""
    config = model_or_config if isinstance(model_or_config, MIRNetV2Config) else model_or_config.config
    m = config.pad_multiple
    if height % m or width % m:
        raise InputError(f"input size {(height, width)} is not a multiple of {m}; pad it first "
                         f"(mirnet.sdk.ops.preprocess does)")
    body_h, body_w = height // config.unshuffle, width // config.unshuffle
    total = 0
    for layer in _layers(model_or_config, pruned_layers):
        pixels = 1 if layer.downscale == 0 else (body_h // layer.downscale) * (body_w // layer.downscale)
        total += layer.calls * pixels * layer.out_channels * (layer.in_channels // layer.groups) * layer.kernel ** 2
        if layer.context:  # the context vector: x (C x HW) times the attention (HW x 1)
            total += layer.calls * pixels * layer.in_channels
    return total
