"""MACs and parameters counted analytically from the config (and a pruned layout) equal the counts
measured by running the network with forward hooks; ``mirnet variants --macs`` needs no torch."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from mirnet.sdk.model import VARIANTS, MIRNetV2Config
from mirnet.sdk.model.complexity import conv_layers, count_macs, count_params

TINY = MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)
CONFIGS = {
    "nano": VARIANTS["nano"], "lite": VARIANTS["lite"], "tiny": TINY,
    "sr-x3": VARIANTS["sr-x3"].replace(n_feat=16, n_rrg=2, n_mrb=1),
    "defocus": VARIANTS["defocus-dual-pixel"].replace(n_feat=16, n_rrg=2, n_mrb=1, bias=True),
    "height-1": TINY.replace(height=1, width=3),
    "height-2": TINY.replace(height=2, n_mrb=2),
    "height-4": TINY.replace(height=4, n_rrg=3, max_groups=2, unshuffle=2, skff_reduction=4),
}


def hook_macs(model, height: int, width: int) -> int:
    """The reference: run the model once and add up every convolution and context-block product."""
    import torch
    from torch import nn

    from mirnet.sdk.model.arch import ContextBlock

    total = 0

    def conv_hook(module, _inp, out):
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def bmm_hook(_module, inp, _out):
        nonlocal total
        total += inp[0].numel()

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else bmm_hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, ContextBlock))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.config.in_channels, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("name", list(CONFIGS))
def test_analytic_counts_equal_the_measured_ones(name):
    torch = pytest.importorskip("torch")
    from mirnet.sdk.model import create_model

    config = CONFIGS[name]
    torch.manual_seed(0)
    model = create_model(config).eval()
    m = config.pad_multiple
    for h, w in [(8 * m, 8 * m), (4 * m, 12 * m)]:
        assert count_macs(config, h, w) == count_macs(model, h, w) == hook_macs(model, h, w)
    assert count_params(config) == count_params(model) == sum(p.numel() for p in model.parameters())
    convs = {n: (c.in_channels, c.out_channels, c.groups, c.kernel_size[0], c.bias is not None)
             for n, c in model.named_modules() if isinstance(c, torch.nn.Conv2d)}
    assert {c.name: (c.in_channels, c.out_channels, c.groups, c.kernel, c.bias) for c in conv_layers(config)} == convs


def test_full_size_variants_keep_their_published_cost():
    assert count_params(VARIANTS["real-denoising"]) == 5_858_560
    assert count_macs(VARIANTS["real-denoising"], 256, 256) / 1e9 == pytest.approx(139.63, abs=0.01)


def test_pruned_model_and_its_recorded_layout():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_pruning")
    from mirnet.optimize.prune import prune
    from mirnet.sdk.model import create_model
    from mirnet.sdk.model.weights import conv_layout_changes

    config = MIRNetV2Config(n_feat=16, n_rrg=3, n_mrb=1, width=2, max_groups=4, unshuffle=2)
    torch.manual_seed(0)
    pruned = prune(create_model(config).eval(), macs_ratio=0.5)
    layers = conv_layout_changes(pruned)
    assert layers
    for h, w in [(64, 64), (32, 96)]:
        want = hook_macs(pruned, h, w)
        assert count_macs(pruned, h, w) == want
        assert count_macs(config, h, w, pruned_layers=layers) == want
        assert want < count_macs(config, h, w)
    assert count_params(config, pruned_layers=layers) == count_params(pruned)


def test_sizes_that_are_not_a_pad_multiple_are_refused():
    from mirnet.sdk.errors import InputError

    with pytest.raises(InputError, match=r"input size \(30, 32\) is not a multiple of 8"):
        count_macs(VARIANTS["nano"], 30, 32)


def test_variants_macs_is_fast_and_torch_free():
    code = ("import sys\nsys.modules['torch'] = None\n"
            "from mirnet.sdk.cli import main\n"
            "raise SystemExit(main(['variants', '--macs', '--json']))\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t0 < 30
    rows = {row["variant"]: row for row in json.loads(proc.stdout)}
    assert rows["real-denoising"]["params"] == 5_858_560
    assert rows["real-denoising"]["gmac_256"] == pytest.approx(139.63, abs=0.01)
    assert rows["nano"]["gmac_256"] == round(count_macs(VARIANTS["nano"], 256, 256) / 1e9, 3)
