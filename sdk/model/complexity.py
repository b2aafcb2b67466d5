"""Parameter and multiply-accumulate counts, measured by running the model once on a zero input."""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int = 256, width: int = 256) -> int:
    """MACs of one forward pass on a ``1 x C x height x width`` input: every convolution plus the
    context blocks' matrix products (pooling, activations and softmax are not counted)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def bmm_hook(_module, inp, out) -> None:
        nonlocal total
        x = inp[0]
        total += x.shape[1] * x.shape[2] * x.shape[3] * x.shape[0]

    from .arch import ContextBlock

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, ContextBlock):
            handles.append(module.register_forward_hook(bmm_hook))
    try:
        in_ch = model.config.in_channels
        with torch.no_grad():
            model(torch.zeros(1, in_ch, height, width))
    finally:
        for h in handles:
            h.remove()
    return total
