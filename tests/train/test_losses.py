"""Tests for mirnet.train.losses: Charbonnier, SSIM, VGG-19 features, perceptual, build_loss."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mirnet.sdk.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from mirnet.sdk import metrics  # noqa: E402
from mirnet.train.losses import (  # noqa: E402
    VGG19_LAYER_NAMES, CharbonnierLoss, CombinedLoss, LossConfig, PerceptualLoss, SSIMLoss,
    VGG19Features, build_loss, load_vgg19_state_dict)


# ------------------------------------------------------------------------------ Charbonnier
def test_charbonnier_known_values():
    x = torch.zeros(1, 1, 2, 2)
    assert CharbonnierLoss()(x, x).item() == pytest.approx(1e-3, rel=1e-6)     # sqrt(eps^2)
    assert CharbonnierLoss(eps=4.0)(x + 3.0, x).item() == pytest.approx(5.0)   # sqrt(9 + 16)
    # mean over elements: diffs 0 and 3 with eps 4 -> (4 + 5) / 2
    y = torch.tensor([[[[0.0, 3.0]]]])
    assert CharbonnierLoss(eps=4.0)(y, torch.zeros_like(y)).item() == pytest.approx(4.5)


def test_charbonnier_rejects_bad_eps():
    with pytest.raises(ConfigError, match="eps=0"):
        CharbonnierLoss(eps=0)


# ------------------------------------------------------------------------------------- SSIM
def test_ssim_loss_matches_metrics_ssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 24, 20, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    loss = SSIMLoss()(a, b).item()
    per_image = [metrics.ssim(a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy())
                 for i in range(2)]
    assert 1.0 - loss == pytest.approx(float(np.mean(per_image)), abs=1e-4)
    assert SSIMLoss()(a, a).item() == pytest.approx(0.0, abs=1e-5)
    # float64 path agrees tightly
    loss64 = SSIMLoss()(a[:1].double(), b[:1].double()).item()
    assert 1.0 - loss64 == pytest.approx(per_image[0], abs=1e-10)


def test_ssim_loss_gradient_flows():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 3, 16, 16, generator=g)
    pred = (target + 0.2 * torch.randn(target.shape, generator=g)).requires_grad_(True)
    loss = SSIMLoss()(pred, target)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


def test_ssim_loss_rejects_small_or_mismatched():
    with pytest.raises(InputError, match="11x11.*8x16"):
        SSIMLoss()(torch.rand(1, 3, 8, 16), torch.rand(1, 3, 8, 16))
    with pytest.raises(InputError, match="same shape"):
        SSIMLoss()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))


# ----------------------------------------------------------------------------------- VGG-19
@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    """A randomly initialised VGG19Features saved in torchvision's key layouts."""
    torch.manual_seed(0)
    net = VGG19Features()
    features_sd = net.features.state_dict()          # plain keys: 0.weight ... 34.bias
    prefixed_sd = net.state_dict()                   # features.0.weight ...
    d = tmp_path_factory.mktemp("vgg")
    plain, prefixed = d / "vgg19_plain.pth", d / "vgg19_prefixed.pth"
    torch.save(features_sd, plain)
    torch.save(prefixed_sd, prefixed)
    st = d / "vgg19.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in features_sd.items()}, str(st))
    return dict(net=net, plain=plain, prefixed=prefixed, safetensors=st, sd=features_sd)


def test_vgg_layout_matches_torchvision_keys():
    net = VGG19Features()
    keys = list(net.features.state_dict())
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert keys == [f"{i}.{p}" for i in conv_idx for p in ("weight", "bias")]
    assert len(net.features) == 37 and len(VGG19_LAYER_NAMES) == 37
    for name, idx in {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26,
                      "relu5_4": 35}.items():
        assert VGG19_LAYER_NAMES[idx] == name
        assert isinstance(net.features[idx], torch.nn.ReLU)
    assert list(net.state_dict()) == [f"features.{k}" for k in keys]   # mean/std not persistent


@pytest.mark.parametrize("which", ["plain", "prefixed", "safetensors"])
def test_vgg_loads_torchvision_style_weights(vgg_files, which):
    loaded = VGG19Features.from_file(vgg_files[which], layers=("relu1_2", "relu2_2"))
    for k, v in vgg_files["sd"].items():
        assert torch.equal(loaded.features.state_dict()[k], v)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 16, 16)
    out = loaded(x)
    assert set(out) == {"relu1_2", "relu2_2"}
    assert out["relu1_2"].shape == (1, 64, 16, 16) and out["relu2_2"].shape == (1, 128, 8, 8)
    ref = vgg_files["net"](x)
    assert torch.allclose(out["relu2_2"], ref["relu2_2"])


def test_vgg_forward_normalises_and_returns_chosen_layers(vgg_files):
    net = vgg_files["net"]
    x = torch.rand(1, 3, 32, 32)
    out = net(x)
    assert set(out) == {"relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"}
    assert out["relu5_4"].shape == (1, 512, 2, 2)
    # manual forward with ImageNet normalisation
    h = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for i in range(9):
        h = net.features[i](h)
    assert torch.allclose(out["relu2_2"], h, atol=1e-6)


def test_vgg_also_accepts_full_torchvision_model_state_dict(vgg_files):
    sd = {f"features.{k}": v for k, v in vgg_files["sd"].items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    VGG19Features(layers=("relu1_1",)).load_vgg_state_dict(sd)


def test_vgg_rejects_missing_and_unexpected_keys(vgg_files):
    sd = dict(vgg_files["sd"])
    del sd["34.weight"]
    with pytest.raises(ArtifactError, match=r"missing keys \['34.weight'\]"):
        VGG19Features().load_vgg_state_dict(sd)
    sd = dict(vgg_files["sd"], **{"36.weight": torch.zeros(1)})
    with pytest.raises(ArtifactError, match=r"unexpected keys \['36.weight'\]"):
        VGG19Features().load_vgg_state_dict(sd)
    sd = dict(vgg_files["sd"])
    sd["0.weight"] = torch.zeros(64, 1, 3, 3)
    with pytest.raises(ArtifactError, match=r"0.weight: \(64, 1, 3, 3\)"):
        VGG19Features().load_vgg_state_dict(sd)


def test_vgg_rejects_unknown_layer_name():
    with pytest.raises(ConfigError, match="relu6_1.*relu2_2"):
        VGG19Features(layers=("relu6_1",))


def test_missing_weights_file_is_artifact_error(tmp_path):
    missing = tmp_path / "nope" / "vgg19.pth"
    with pytest.raises(ArtifactError, match=r"(?s)does not exist.*torchvision.models.vgg19"):
        load_vgg19_state_dict(missing)
    with pytest.raises(ArtifactError, match=r"(?s)vgg19\.pth.*IMAGENET1K_V1"):
        PerceptualLoss(missing)


def test_corrupt_weights_file_is_artifact_error(tmp_path):
    bad = tmp_path / "vgg19.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="cannot read VGG-19 weights"):
        load_vgg19_state_dict(bad)


# ------------------------------------------------------------------------------ Perceptual
def test_perceptual_loss_zero_for_identical_positive_otherwise(vgg_files):
    crit = PerceptualLoss(vgg_files["plain"], layers={"relu1_2": 1.0, "relu2_2": 0.5})
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 16, 16, generator=g)
    b = torch.rand(2, 3, 16, 16, generator=g)
    assert crit(a, a).item() == 0.0
    pred = b.clone().requires_grad_(True)
    loss = crit(pred, a)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in crit.parameters())
    crit.train()
    assert not crit.vgg.training
    mse = PerceptualLoss(vgg_files["plain"], layers={"relu1_2": 1.0}, criterion="mse")
    assert mse(b, a).item() > 0


def test_perceptual_loss_rejects_bad_options(vgg_files):
    with pytest.raises(ConfigError, match="criterion='l3'.*l1, mse"):
        PerceptualLoss(vgg_files["plain"], criterion="l3")
    with pytest.raises(ConfigError, match="relu9_9"):
        PerceptualLoss(vgg_files["plain"], layers={"relu9_9": 1.0})


# ---------------------------------------------------------------------------- LossConfig
def test_loss_config_defaults_and_from_dict():
    assert LossConfig() == LossConfig.from_dict({}) == LossConfig.from_dict(None)
    cfg = LossConfig.from_dict({"charbonnier": 1, "ssim": 0.5})
    assert cfg.charbonnier == 1.0 and isinstance(cfg.charbonnier, float) and cfg.ssim == 0.5


def test_loss_config_mapping_names_exactly_its_terms():
    cfg = LossConfig.from_dict({"mse": 1.0})
    assert (cfg.charbonnier, cfg.mse) == (0.0, 1.0)
    pred, target = torch.full((1, 3, 8, 8), 0.5), torch.zeros(1, 3, 8, 8)
    total, terms = build_loss(cfg)(pred, target)
    assert list(terms) == ["mse"] and total.item() == pytest.approx(0.25)


def test_loss_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match=r"\['charbonier'\].*charbonnier, l1"):
        LossConfig.from_dict({"charbonier": 1.0})
    with pytest.raises(ConfigError, match="l1=-1"):
        LossConfig.from_dict({"l1": -1})
    with pytest.raises(ConfigError, match="all loss weights are 0"):
        LossConfig.from_dict({"charbonnier": 0})
    with pytest.raises(ConfigError, match="perceptual_weights"):
        LossConfig.from_dict({"perceptual": 0.1})
    with pytest.raises(ConfigError, match="all loss weights are 0"):
        build_loss(LossConfig(charbonnier=0.0))
    with pytest.raises(ConfigError, match="perceptual=0.1 needs perceptual_weights"):
        build_loss(LossConfig(perceptual=0.1))


def test_build_loss_weighted_sum_and_terms():
    crit = build_loss(LossConfig(charbonnier=1.0, l1=0.5, mse=2.0, ssim=0.25))
    assert isinstance(crit, CombinedLoss) and set(crit.terms) == {"charbonnier", "l1", "mse",
                                                                  "ssim"}
    g = torch.Generator().manual_seed(3)
    target = torch.rand(1, 3, 16, 16, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).requires_grad_(True)
    loss, terms = crit(pred, target)
    assert set(terms) == {"charbonnier", "l1", "mse", "ssim"}
    assert all(isinstance(v, float) for v in terms.values())
    d = pred.detach() - target
    assert terms["l1"] == pytest.approx(d.abs().mean().item(), rel=1e-6)
    assert terms["mse"] == pytest.approx((d * d).mean().item(), rel=1e-6)
    assert terms["charbonnier"] == pytest.approx(torch.sqrt(d * d + 1e-6).mean().item(), rel=1e-6)
    expected = (terms["charbonnier"] + 0.5 * terms["l1"] + 2.0 * terms["mse"]
                + 0.25 * terms["ssim"])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_build_loss_default_is_charbonnier_and_accepts_mapping(vgg_files):
    crit = build_loss()
    x = torch.zeros(1, 3, 4, 4)
    loss, terms = crit(x, x)
    assert terms == {"charbonnier": pytest.approx(1e-3)} and loss.item() == pytest.approx(1e-3)
    crit = build_loss({"charbonnier": 0, "perceptual": 1.0,
                       "perceptual_weights": str(vgg_files["prefixed"])})
    assert set(crit.terms) == {"perceptual"}
    a = torch.rand(1, 3, 16, 16)
    loss, terms = crit(a, a)
    assert loss.item() == 0.0 and terms == {"perceptual": 0.0}
    assert math.isfinite(crit(torch.rand(1, 3, 16, 16), a)[1]["perceptual"])


# ------------------------------------------------------------------------------ distillation
def test_distillation_loss_weighs_ground_truth_and_teacher():
    from mirnet.train.losses import DistillationLoss, distillation_target

    torch.manual_seed(0)
    pred, clean, teacher_out = torch.rand(3, 2, 3, 8, 8).unbind(0)
    charb = CharbonnierLoss()
    for w in (0.0, 0.3, 1.0):
        loss, terms = DistillationLoss(w)(pred, torch.cat([clean, teacher_out], 1))
        want = (1 - w) * charb(pred, clean) + w * charb(pred, teacher_out)
        assert torch.allclose(loss, want) and terms["data"] == pytest.approx(float(charb(pred, clean)))
    teacher = torch.nn.Conv2d(3, 3, 1)
    target = distillation_target(teacher)(pred, clean)
    assert torch.equal(target[:, :3], clean) and torch.allclose(target[:, 3:], teacher(pred))
    with pytest.raises(ConfigError, match=r"teacher weight 1.5.*\[0, 1\]"):
        DistillationLoss(1.5)
    with pytest.raises(InputError, match="stacked along the channels"):
        DistillationLoss()(pred, clean)
    mse = build_loss({"mse": 1.0})  # a config's loss terms, taken against both targets
    loss, terms = DistillationLoss(0.25, mse)(pred, torch.cat([clean, teacher_out], 1))
    want = 0.75 * ((pred - clean) ** 2).mean() + 0.25 * ((pred - teacher_out) ** 2).mean()
    assert torch.allclose(loss, want) and terms["teacher"] == pytest.approx(float(((pred - teacher_out) ** 2).mean()))
