"""Every MIRNetV2Config field changes the network: its parameters or, with equal weights, its output."""
import dataclasses

import pytest
import torch

from mirnet.sdk.errors import ConfigError
from mirnet.sdk.model import VARIANTS, MIRNetV2Config, create_model, get_variant

BASE = MIRNetV2Config(n_feat=16, n_rrg=2, n_mrb=1, height=2, width=1, max_groups=2)
CHANGES = {
    "in_channels": dict(in_channels=6, residual="feature"),
    "out_channels": dict(out_channels=1, residual="feature"),
    "n_feat": dict(n_feat=32),
    "chan_factor": dict(chan_factor=2.0),
    "n_rrg": dict(n_rrg=3),
    "n_mrb": dict(n_mrb=2),
    "height": dict(height=3),
    "width": dict(width=2),
    "scale": dict(scale=2),
    "bias": dict(bias=True),
    "residual": dict(residual="feature"),
    "max_groups": dict(max_groups=1),
    "skff_reduction": dict(skff_reduction=2),
    "unshuffle": dict(unshuffle=2),
}


def test_every_field_is_covered():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(MIRNetV2Config)}


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_field_takes_effect(field):
    torch.manual_seed(0)
    base = create_model(BASE).eval()
    other = create_model(BASE.replace(**CHANGES[field])).eval()
    if _shapes(base) != _shapes(other):
        return  # different parameters: the field shaped the network
    other.load_state_dict(base.state_dict())
    x = torch.rand(1, BASE.in_channels, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(base(x), other(x), atol=1e-6), f"{field} changed nothing"


def test_scale_really_upsamples():
    for s in (2, 3, 4):
        model = create_model(BASE.replace(scale=s)).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 3, 8, 12)).shape == (2, 3, 8 * s, 12 * s)


def test_height_sets_pad_multiple_and_streams():
    cfg = BASE.replace(height=4, unshuffle=2)
    assert cfg.pad_multiple == 16
    assert cfg.widths == (16, 24, 36, 54)
    model = create_model(cfg.replace(n_feat=32, chan_factor=1.5, max_groups=1)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 48)).shape == (1, 3, 32, 48)


def test_unpadded_input_is_refused_with_the_multiple():
    from mirnet.sdk.errors import InputError

    with pytest.raises(InputError, match="multiple of 2"):
        create_model(BASE)(torch.rand(1, 3, 15, 16))


@pytest.mark.parametrize("bad, message", [
    (dict(n_feat=0), "n_feat=0"),
    (dict(residual="both"), "valid values"),
    (dict(in_channels=6), "residual='feature'"),
    (dict(n_feat=20, max_groups=4, n_rrg=3), "divisible"),
    (dict(scale=1.5), "scale"),
])
def test_bad_configs_name_the_problem(bad, message):
    with pytest.raises(ConfigError, match=message):
        BASE.replace(**bad)


def test_config_dict_round_trip_and_unknown_fields():
    cfg = VARIANTS["lite"]
    assert MIRNetV2Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown MIRNetV2Config fields"):
        MIRNetV2Config.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ConfigError, match="valid variants"):
        get_variant("huge")


def test_variants_cover_every_official_task_and_edge():
    for name in ("real-denoising", "enhancement-lol", "enhancement-fivek", "defocus-dual-pixel",
                 "sr-x2", "sr-x3", "sr-x4", "lite", "nano"):
        assert name in VARIANTS
    assert VARIANTS["defocus-dual-pixel"].in_channels == 6
    assert [VARIANTS[f"sr-x{s}"].scale for s in (2, 3, 4)] == [2, 3, 4]


def test_default_model_cost_matches_the_paper_configuration():
    from mirnet.sdk.model.complexity import count_macs, count_params

    model = create_model("real-denoising").eval()
    assert count_params(model) == 5_858_560
    assert count_macs(model, 64, 64) * 16 == pytest.approx(139.63e9, rel=1e-3)
