"""Structured channel pruning: couplings kept, reload without torch-pruning, ONNX, `mirnet prune`."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from mirnet.optimize.prune import prune  # noqa: E402
from mirnet.sdk.errors import ConfigError  # noqa: E402
from mirnet.sdk.model import MIRNetV2Config, create_model, load_model, save_weights  # noqa: E402
from mirnet.sdk.model.arch import MRB, SKFF  # noqa: E402
from mirnet.sdk.model.complexity import count_macs, count_params  # noqa: E402

# Small but covers every coupling: 3 streams, two weight-shared rounds, conv groups 1/2/4,
# pixel-unshuffle/shuffle at the ends.
CFG = MIRNetV2Config(n_feat=16, n_rrg=3, n_mrb=1, width=2, max_groups=4, unshuffle=2)


@pytest.fixture(scope="module")
def models(one_thread_private_cache):
    torch.manual_seed(0)
    model = create_model(CFG).eval()
    return model, prune(model, macs_ratio=0.5)


def _run(model, h, w, seed=0):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def test_half_the_macs_removed_and_shapes_intact(models):
    model, pruned = models
    assert 1 - count_macs(pruned, 64, 64) / count_macs(model, 64, 64) >= 0.45
    assert count_params(pruned) < count_params(model)
    assert pruned.config == model.config
    # every conv consistent: runs on two input sizes, output shape unchanged
    for h, w in [(32, 48), (64, 40)]:
        assert _run(pruned, h, w).shape == (1, 3, h, w)
    # the ends are not pruned: conv_in still reads the unshuffled image, conv_out feeds PixelShuffle
    assert pruned.conv_in.in_channels == 3 * 4 and pruned.conv_out.out_channels == 3 * 4
    # context attention keeps its single mask channel
    masks = [m for n, m in pruned.named_modules() if n.endswith("gcnet.conv_mask")]
    assert masks and all(m.out_channels == 1 for m in masks)
    assert any(m.in_channels < 16 for m in masks)


def test_grouped_convs_stay_divisible(models):
    model, pruned = models
    groups_seen = set()
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d):
            assert m.groups == model.get_submodule(name).groups, name
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0, name
            assert m.weight.shape == (m.out_channels, m.in_channels // m.groups, *m.kernel_size), name
            groups_seen.add(m.groups)
    assert groups_seen == {1, 2, 4}
    # the grouped RCB convs were pruned, not skipped
    assert pruned.get_submodule("body.2.body.0.dau_top.body.0").out_channels < 16


def test_shared_weights_stay_shared_and_skff_branches_equal(models):
    _, pruned = models
    calls: dict[int, int] = {}
    hooks = []

    def count(mod, _inp, _out):
        calls[id(mod)] = calls.get(id(mod), 0) + 1

    for mrb in (m for m in pruned.modules() if isinstance(m, MRB)):
        for name in mrb.names:
            hooks.append(getattr(mrb, f"dau_{name}").register_forward_hook(count))
        for skff in (m for m in mrb.modules() if isinstance(m, SKFF)):
            hooks.append(skff.register_forward_hook(count))
            assert len({fc.out_channels for fc in skff.fcs}) == 1  # both branches' attention agree
            assert skff.conv_du[0].out_channels == skff.fcs[0].in_channels
    try:
        _run(pruned, 32, 32)
    finally:
        for h in hooks:
            h.remove()
    # every RCB and SKFF object ran once per round (width=2): the same module served both rounds
    assert len(calls) == len(hooks) and set(calls.values()) == {CFG.width}
    # each stream's width agrees across RCB output, SKFF fusion and the next MRB input
    mrb = pruned.body[0].body[0]
    top = {mrb.dau_top.body[2].out_channels, mrb.skff_top.fcs[0].out_channels, mrb.up21_1.body[0].bot[0].out_channels,
           mrb.conv_out.in_channels}
    mid = {mrb.dau_mid.body[2].out_channels, mrb.skff_mid.fcs[0].out_channels, mrb.down2.body[0].bot[1].out_channels}
    assert len(top) == 1 and len(mid) == 1


def test_ratio_zero_changes_nothing_and_input_is_untouched(models):
    model, _ = models
    before = {k: v.clone() for k, v in model.state_dict().items()}
    same = prune(model, macs_ratio=0.0)
    assert same is not model
    torch.testing.assert_close(_run(same, 32, 32), _run(model, 32, 32), rtol=0, atol=0)
    for k, v in model.state_dict().items():  # prune() works on a copy
        assert torch.equal(v, before[k]), k


def test_params_ratio_and_taylor_importance():
    torch.manual_seed(1)
    model = create_model("nano").eval()
    batches = [(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))]
    pruned = prune(model, params_ratio=0.3, importance="taylor", calib_batches=batches, steps=30)
    assert 1 - count_params(pruned) / count_params(model) >= 0.3
    assert _run(pruned, 32, 40).shape == (1, 3, 32, 40)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of macs_ratio or params_ratio"),
    ({"macs_ratio": 0.5, "params_ratio": 0.5}, "exactly one"),
    ({"macs_ratio": 1.0}, r"macs_ratio=1.0: must be a number in \[0, 1\)"),
    ({"params_ratio": -0.1}, r"params_ratio=-0.1"),
    ({"macs_ratio": 0.5, "importance": "l3"}, "importance='l3'"),
    ({"macs_ratio": 0.5, "importance": "taylor"}, "calib_batches"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prune(create_model("nano"), **kwargs)


def test_reload_without_torch_pruning_and_onnx_parity(models, tmp_path):
    from mirnet.optimize.export_onnx import export_onnx
    from mirnet.sdk import artifact

    _, pruned = models
    path = save_weights(pruned, tmp_path / "p.safetensors", variant="test", pruned={"macs_ratio": 0.5})
    manifest = artifact.read_manifest(path)
    layers = manifest["pruned"]["layers"]
    assert manifest["pruned"]["macs_ratio"] == 0.5
    assert layers["conv_in"] == [12, pruned.conv_in.out_channels, 1]
    assert layers["body.2.body.0.dau_top.body.0"][2] == 4
    x = np.random.default_rng(0).random((1, 3, 24, 40), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        np.save(tmp_path / "want.npy", pruned(torch.from_numpy(x)).numpy())
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch_pruning"] = None  # blocked: import torch_pruning raises ImportError
        import numpy as np, torch
        torch.set_num_threads(1)
        from mirnet.sdk.model import load_model
        model = load_model({str(path)!r})
        x = torch.from_numpy(np.load({str(tmp_path / "x.npy")!r}))
        with torch.no_grad():
            got = model(x).numpy()
        want = np.load({str(tmp_path / "want.npy")!r})
        assert got.shape == want.shape and np.array_equal(got, want), np.abs(got - want).max()
        assert "torch_pruning" not in sys.modules or sys.modules["torch_pruning"] is None
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr

    onnx_path = export_onnx(load_model(path), tmp_path / "p.onnx", source=path)
    assert artifact.read_manifest(onnx_path)["parity"]["max_abs_diff"] < 1e-4


def test_unpruned_weights_have_no_pruned_record_and_bad_layout_is_refused(tmp_path):
    from mirnet.sdk.errors import ArtifactError

    model = create_model("nano")
    path = save_weights(model, tmp_path / "n.safetensors")
    assert "pruned" not in json.loads((tmp_path / "n.safetensors.json").read_text())
    pruned = prune(model, macs_ratio=0.3)
    path = save_weights(pruned, tmp_path / "p.safetensors")
    sidecar = tmp_path / "p.safetensors.json"
    manifest = json.loads(sidecar.read_text())
    assert manifest["pruned"]["layers"]  # recorded even without pruned=...
    name = next(iter(manifest["pruned"]["layers"]))
    manifest["pruned"]["layers"][name][1] += 1
    sidecar.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"pruned_layers.{name}: manifest .* file .*manifest was edited"):
        load_model(path)


# ---------------------------------------------------------------------------- CLI
@pytest.fixture()
def tiny_data(tmp_path):
    import cv2

    folder = tmp_path / "data"
    folder.mkdir()
    yy, xx = np.mgrid[0:48, 0:64]
    for i in range(3):
        img = np.stack([(xx * 4 + 30 * i) % 256, (yy * 5) % 256, (xx + yy + 50 * i) % 256], axis=2)
        cv2.imwrite(str(folder / f"im{i}.png"), img.astype(np.uint8))
    return folder


def test_cli_prune_end_to_end(tiny_weights, tiny_data, tmp_path, capsys):
    from mirnet.sdk import artifact
    from mirnet.sdk.cli import main

    out = tmp_path / "pruned.safetensors"
    code = main(["prune", str(tiny_weights), "--macs-ratio", "0.5", "--data", str(tiny_data),
                 "--finetune-steps", "5", "--batch", "2", "--patch", "32", "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "params" in captured.out and "GMAC/256x256" in captured.out and "fine-tuned" in captured.out
    manifest = artifact.read_manifest(out, kind="weights")
    record = manifest["prune"]
    assert record["target"] == {"macs_ratio": 0.5, "params_ratio": None, "rrgs": None, "width": None}
    assert record["macs_ratio"] >= 0.45 and record["macs_after"] < record["macs_before"]
    assert record["params_after"] < record["params_before"]
    ev = record["eval"]
    assert ev["n"] == 3 and "training degradations (100% AWGN 0-50)" in ev["description"]
    assert record["inputs"]["kind"] == "training"
    assert all(isinstance(ev[k], float) for k in ("psnr_before", "psnr_pruned", "psnr_finetuned"))
    assert record["finetune"]["steps"] == 5
    assert record["finetune"]["distillation"] == {"teacher": "tiny.safetensors", "teacher_weight": 0.5}
    assert manifest["pruned"]["layers"] and manifest["source"]["sha256"] == artifact.sha256_file(tiny_weights)
    assert load_model(out)(torch.rand(1, 3, 16, 24)).shape == (1, 3, 16, 24)
    # refuses to overwrite without --force
    assert main(["prune", str(tiny_weights), "--macs-ratio", "0.5", "--data", str(tiny_data),
                 "-o", str(out), "-q"]) == 5
    assert "--force" in capsys.readouterr().err


def test_cli_prune_finetunes_with_ema(tiny_weights, tiny_data, tmp_path, capsys):
    """`--ema` goes through the shared training step (EMA.update needs the step: this died with a
    TypeError when prune had its own copy of the loop)."""
    from mirnet.sdk import artifact
    from mirnet.sdk.cli import main

    out = tmp_path / "out.safetensors"
    code = main(["prune", str(tiny_weights), "--macs-ratio", "0.3", "--data", str(tiny_data),
                 "--finetune-steps", "2", "--ema", "0.999", "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    record = artifact.read_manifest(out, kind="weights")["prune"]
    assert record["finetune"]["ema_decay"] == 0.999 and record["finetune"]["steps"] == 2
    assert isinstance(record["eval"]["psnr_finetuned"], float)


def test_cli_prune_finetunes_in_bf16_and_channels_last(tiny_weights, tiny_data, tmp_path, capsys):
    """`--amp-cpu --channels-last` reach the training step: the same seed gives other weights than in
    float32 (bfloat16 rounding), recorded in the manifest, saved contiguous and reloadable."""
    from mirnet.sdk import artifact
    from mirnet.sdk.cli import main

    outs = {}
    for name, flags in (("f32", []), ("bf16", ["--amp-cpu", "--channels-last"])):
        outs[name] = tmp_path / f"{name}.safetensors"
        code = main(["prune", str(tiny_weights), "--macs-ratio", "0.3", "--data", str(tiny_data),
                     "--finetune-steps", "2", "--batch", "2", "--patch", "32", "-o", str(outs[name]), "-q", *flags])
        assert code == 0, capsys.readouterr().err
    record = artifact.read_manifest(outs["bf16"], kind="weights")["prune"]["finetune"]
    assert record["amp_cpu"] is True and record["channels_last"] is True
    assert artifact.read_manifest(outs["f32"], kind="weights")["prune"]["finetune"]["amp_cpu"] is False
    f32, bf16 = (load_model(outs[k]).state_dict() for k in ("f32", "bf16"))
    assert f32.keys() == bf16.keys()
    assert all(v.is_contiguous() for v in bf16.values())
    assert max(float((f32[k] - bf16[k]).abs().max()) for k in f32) > 1e-6


def test_finetune_distils_from_the_teacher(tiny_weights, tiny_data):
    """Against a teacher that is the model itself (teacher weight 1) there is nothing to learn: the
    weights stay put; against the ground truth (weight 0) they move."""
    import copy

    from mirnet.optimize.prune import finetune
    from mirnet.sdk.mixture import model_inputs

    inputs = model_inputs(None, sigma=25)
    kw = dict(inputs=inputs, lr=1e-2, batch=2, patch=32, weight_decay=0.0, grad_clip=0.0, quiet=True)
    start = load_model(tiny_weights)
    same = finetune(copy.deepcopy(start), tiny_data, 3, teacher=copy.deepcopy(start), teacher_weight=1.0, **kw)
    moved = finetune(copy.deepcopy(start), tiny_data, 3, teacher=copy.deepcopy(start), teacher_weight=0.0, **kw)

    def change(model) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), start.state_dict().values()))
    assert change(same) < 1e-3 < change(moved)


@pytest.mark.parametrize("args, match", [
    (["--macs-ratio", "0.5", "--params-ratio", "0.5"], "not allowed with argument"),
    (["--macs-ratio", "1.5"], "--macs-ratio=1.5: must be a number in (0, 1)"),
    (["--params-ratio", "0"], "--params-ratio=0.0: must be a number in (0, 1)"),
    ([], "say what to remove: --macs-ratio R or --params-ratio R (channels), and/or --rrgs N"),
    (["--rrgs", "2"], "--rrgs 2: keep from 1 to 1"),
])
def test_cli_prune_bad_arguments_exit_2(tiny_weights, tiny_data, tmp_path, capsys, args, match):
    from mirnet.sdk.cli import main

    argv = ["prune", str(tiny_weights), *args, "--data", str(tiny_data), "-o", str(tmp_path / "o.safetensors")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_depth_pruning_keeps_the_trained_layers(tmp_path, tiny_data):
    """lite minus its second RRG and second exchange round is nano-shaped, keeps the kept layers'
    weights, saves and loads without a pruned layout, and the CLI records it."""
    from mirnet.optimize.prune import prune_depth
    from mirnet.sdk import artifact
    from mirnet.sdk.cli import main

    torch.manual_seed(0)
    lite = create_model("lite").eval()
    small = prune_depth(lite, rrgs=1, width=1)
    assert small.config == lite.config.replace(n_rrg=1, width=1) and lite.config.n_rrg == 2  # lite untouched
    fresh = create_model(small.config)
    assert set(small.state_dict()) == set(fresh.state_dict())
    for key, value in small.state_dict().items():
        assert torch.equal(value, lite.state_dict()[key]), key
    x = torch.rand(1, 3, 32, 48)
    fresh.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert torch.allclose(small(x), fresh.eval()(x))
    assert count_macs(small, 64, 64) < 0.5 * count_macs(lite, 64, 64)
    with pytest.raises(ConfigError, match="--width 3: keep from 1 to 2"):
        prune_depth(lite, width=3)
    src = save_weights(lite, tmp_path / "lite.safetensors", variant="lite",
                       training={"data": [{"clean": "x", "degrade": {"awgn_sigma": [0, 50]}}]})
    out = tmp_path / "fast.safetensors"
    assert main(["prune", str(src), "--rrgs", "1", "--width", "1", "--data", str(tiny_data), "--finetune-steps", "2",
                 "--batch", "2", "--patch", "32", "--workers", "0", "-o", str(out), "-q"]) == 0
    manifest = artifact.read_manifest(out, kind="weights")
    assert manifest["config"]["n_rrg"] == 1 and manifest["config"]["width"] == 1 and manifest["variant"] is None
    assert manifest["prune"]["target"]["rrgs"] == 1 and manifest["training"]["data"][0]["clean"] == "x"
    assert load_model(out)(x).shape == x.shape


def test_ratio_with_block_removal_counts_against_the_original(tmp_path, tiny_data):
    """--rrgs 1 --macs-ratio R removes R of the *original* MACs: channels give what the dropped
    group did not; a ratio the blocks already reached prunes no channel."""
    from mirnet.optimize.prune import prune_depth, prune_file

    torch.manual_seed(0)
    lite = create_model("lite").eval()
    src = save_weights(lite, tmp_path / "lite.safetensors", variant="lite",
                       training={"data": [{"clean": "x", "degrade": {"awgn_sigma": [0, 50]}}]})
    depth_only = 1 - count_macs(prune_depth(lite, rrgs=1), 256, 256) / count_macs(lite, 256, 256)
    assert 0.3 < depth_only < 0.6
    both = prune_file(src, tmp_path / "a.safetensors", data=tiny_data, rrgs=1, macs_ratio=depth_only + 0.15,
                      quiet=True)
    assert depth_only + 0.15 <= both["macs_ratio"] < depth_only + 0.35
    blocks = prune_file(src, tmp_path / "b.safetensors", data=tiny_data, rrgs=1, macs_ratio=depth_only - 0.1,
                        quiet=True)
    assert blocks["macs_ratio"] == pytest.approx(depth_only)
    assert load_model(tmp_path / "b.safetensors").config == lite.config.replace(n_rrg=1)


def test_global_ranking_stops_a_grouped_conv_at_one_channel_per_group():
    """Ranked globally, a grouped conv can shrink to one input channel per conv group (the four-RRG
    default at 48% of its MACs); torch_pruning then read it as depthwise and raised IndexError on the
    next step. Such groups now stop shrinking, and pruning goes on elsewhere to the target."""
    from mirnet.sdk.model import get_variant
    from mirnet.sdk.model.arch import MIRNetV2

    torch.manual_seed(1)  # with 100 steps this initialisation reaches one channel per group before 50%
    model = MIRNetV2(get_variant("lite").replace(n_rrg=3)).eval()
    grouped = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels}
    pruned = prune(model, macs_ratio=0.5, global_pruning=True, steps=100)
    convs = dict(pruned.named_modules())
    assert any(convs[name].in_channels == convs[name].groups for name in grouped)
    assert 1 - count_macs(pruned, 64, 64) / count_macs(model, 64, 64) >= 0.5
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert pruned(x).shape == x.shape


def test_default_schedule_search_lands_closer_to_the_target(models):
    """A step can take a whole unit of a grouped stream at once: at 100 steps (the one schedule
    prune() used to run) this model lands at 30.9% for a 30% target. By default prune() tries each
    of SCHEDULES until one lands within CLOSE_ENOUGH; here none does, so it keeps the closest."""
    from mirnet.optimize.prune import CLOSE_ENOUGH, SCHEDULES

    model, _ = models
    base = count_macs(model, 64, 64)

    def removed(**kw):
        return 1 - count_macs(prune(model, macs_ratio=0.3, global_pruning=True, **kw), 64, 64) / base

    each = {n: removed(steps=n) for n in SCHEDULES}
    assert all(v - 0.3 > CLOSE_ENOUGH for v in each.values())
    searched = removed()
    assert searched == min(each.values()) < each[100] - 0.002
    assert searched >= 0.3


def test_unreachable_target_names_what_was_reached(models):
    model, _ = models
    with pytest.raises(ConfigError, match=r"macs_ratio=0.97: pruning stopped at 0\.\d+ at most.*max_layer_ratio"):
        prune(model, macs_ratio=0.97)


def test_round_to_keeps_channel_multiples():
    torch.manual_seed(2)
    model = create_model("nano").eval()
    pruned = prune(model, macs_ratio=0.4, round_to=4)
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d) and name not in ("conv_out",) and not name.endswith("conv_mask"):
            assert m.out_channels % 4 == 0, (name, m.out_channels)
    assert 1 - count_macs(pruned, 64, 64) / count_macs(model, 64, 64) >= 0.4
