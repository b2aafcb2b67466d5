"""The training loop: exact resume, DDP equivalence (2 gloo processes), CLI train/eval, eval protocol."""
import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mirnet.sdk.cli import main
from mirnet.sdk.errors import ConfigError, InputError
from mirnet.sdk.evalsets import EvalSet
from mirnet.sdk.model import MIRNetV2Config
from mirnet.sdk.model.arch import deepen
from mirnet.train.config import TrainConfig
from mirnet.train.loop import TrainStep, Trainer, run_steps

REPO = Path(__file__).resolve().parents[2]


def _images(folder: Path, n: int = 3, size=(40, 48)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(folder / f"{i}.png"), img)
    return folder


def _config(tmp_path: Path, **overrides) -> dict:
    data = {
        "name": "t", "variant": "nano", "model": {"n_rrg": 1},
        "sources": [{"clean": str(_images(tmp_path / "clean")), "degrade": {"awgn_sigma": [0, 50]}}],
        "iters": [4, 4], "patch": [16, 24], "batch": [2, 2], "lr": 1e-3, "warmup_steps": 2,
        "checkpoint_every": 2, "log_every": 1, "workers": 0, "out": str(tmp_path / "run"), "ema_decay": 0.9,
    }
    data.update(overrides)
    return data


def _write(tmp_path: Path, data: dict, name="cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _state(out: Path) -> dict:
    return torch.load(out / "last.pt", weights_only=True)


def test_train_step_ema_warmup_clipping_and_target_function():
    """One step: the loss is taken against what ``target`` makes of the batch, gradients are
    clipped, the EMA decay warms up as min(decay, (1 + step) / (10 + step))."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 1)
    x, clean = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    teacher = torch.nn.Conv2d(3, 3, 1)
    step = TrainStep(model, torch.nn.functional.l1_loss, lr=0.1, periods=[4], eta_mins=[0.1], grad_clip=1e-3,
                     ema_decay=0.999, target=lambda inputs, _clean: teacher(inputs))
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        want = torch.nn.functional.l1_loss(model(x), teacher(x))
    losses = run_steps(step, [(x, clean)], total=1, desc="t", quiet=True)
    assert step.step == 1 and losses == [pytest.approx(float(want))]
    w0, w1 = before["weight"], model.weight.detach().clone()
    # AdamW's first step moves every weight by about lr, whatever the clipped gradient's size
    assert torch.allclose((w1 - w0).abs(), torch.full_like(w0, 0.1), rtol=1e-3)
    torch.testing.assert_close(step.averaged.weight, 0.1 * w0 + 0.9 * w1)  # decay 1/10 at step 0
    run_steps(step, [(x, clean)], total=2, desc="t", quiet=True)
    w2 = model.weight.detach()
    torch.testing.assert_close(step.averaged.weight, 2 / 11 * (0.1 * w0 + 0.9 * w1) + 9 / 11 * w2)
    clipped = TrainStep(torch.nn.Conv2d(3, 3, 1), torch.nn.functional.l1_loss, lr=0.1, periods=[1], grad_clip=1e-3)
    clipped(x, clean)
    assert float(torch.cat([p.grad.flatten() for p in clipped.params]).norm()) <= 1e-3 * 1.0001
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainStep(model, torch.nn.functional.l1_loss, lr=0.1, periods=[1], ema_decay=1.0)


def test_resume_is_exact(tmp_path):
    straight = TrainConfig.from_dict(_config(tmp_path, out=str(tmp_path / "a")))
    Trainer(straight, quiet=True).fit()
    split = dataclasses.replace(straight, out=str(tmp_path / "b"))
    Trainer(split, quiet=True, max_steps=3).fit()
    assert _state(tmp_path / "b")["step"] == 3
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(split, quiet=True)
    Trainer(split, quiet=True, resume=True).fit()
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a["step"] == b["step"] == 8
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert a["scheduler"] == b["scheduler"]
    losses_a = [r["loss"] for r in map(json.loads, open(tmp_path / "a" / "metrics.jsonl")) if "loss" in r]
    losses_b = [r["loss"] for r in map(json.loads, open(tmp_path / "b" / "metrics.jsonl")) if "loss" in r]
    assert losses_a == losses_b


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = TrainConfig.from_dict(_config(tmp_path))
    Trainer(cfg, quiet=True, max_steps=2).fit()
    with pytest.raises(ConfigError, match="lr"):
        Trainer(dataclasses.replace(cfg, lr=5e-4), quiet=True, resume=True)


def test_training_reduces_the_loss_and_validates(tmp_path):
    data = _config(tmp_path, iters=[60], patch=[24], batch=[4], checkpoint_every=60, log_every=5,
                   lr=3e-3, val={"clean": str(tmp_path / "clean"), "sigma": 25, "limit": 2, "crop": 32, "every": 30})
    data["sources"][0]["degrade"] = {"awgn_sigma": [25, 25]}
    final = Trainer(TrainConfig.from_dict(data), quiet=True).fit()
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    vals = [r for r in records if "val_psnr" in r]
    assert [r["step"] for r in vals] == [30, 60] and all(np.isfinite(r["val_psnr"]) for r in vals)
    manifest = json.loads(Path(str(final) + ".json").read_text())
    assert manifest["training"]["steps"] == 60 and manifest["metrics"]["val_n"] == 2
    assert manifest["variant"] == "nano"  # `model: {n_rrg: 1}` is nano's own value
    assert manifest["training"]["data"][0]["degrade"]["awgn_sigma"] == [25.0, 25.0]  # the model's own inputs
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown keys \\['epochs'\\]"):
        TrainConfig.from_dict(_config(tmp_path, epochs=3))
    with pytest.raises(ConfigError, match="not multiples of 8"):
        TrainConfig.from_dict(_config(tmp_path, patch=[12, 24]))
    with pytest.raises(ConfigError, match="lr_periods"):
        TrainConfig.from_dict(_config(tmp_path, lr_periods=[3, 3]))
    with pytest.raises(ConfigError, match="valid variants"):
        TrainConfig.from_dict(_config(tmp_path, variant="giant"))


def _mirnet() -> str:
    return shutil.which("mirnet") or str(Path(sys.executable).parent / "mirnet")


def test_ddp_two_processes_match_one_process_with_the_global_batch(tmp_path):
    single = _write(tmp_path, _config(tmp_path, out=str(tmp_path / "single"), batch=[2, 2]), "single.yaml")
    ddp = _write(tmp_path, _config(tmp_path, out=str(tmp_path / "ddp"), batch=[1, 1]), "ddp.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([_mirnet(), "train", "--config", str(single), "-q"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          _mirnet(), "train", "--config", str(ddp), "-q", "--device", "cpu"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _state(tmp_path / "single"), _state(tmp_path / "ddp")
    assert b["step"] == 8
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)


def test_cli_train_and_eval(tmp_path, capsys):
    cfg = _write(tmp_path, _config(tmp_path))
    assert main(["train", "--config", str(cfg), "-q"]) == 0
    weights = tmp_path / "run" / "t.safetensors"
    assert weights.is_file()
    assert main(["eval", "--model", str(weights), "--data", str(tmp_path / "clean"), "--sigma", "25",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 3 and 0 < result["psnr"] < 60 and 0 < result["ssim"] <= 1
    assert "seed 0 per image" in result["protocol"] and "no clipping" in result["protocol"]
    assert main(["eval", "--baseline", "nlm", "--data", str(tmp_path / "clean"), "--sigma", "25", "--clip",
                 "--y"]) == 0
    text = capsys.readouterr().out
    assert "baseline:nlm" in text and "Y (BT.601)" in text and "clipped" in text


def test_eval_protocol_known_answer(tmp_path, capsys):
    """An identity network (zero output conv + image residual) scores exactly PSNR(clip(noisy), clean)."""
    from mirnet.sdk.model import create_model, save_weights

    clean_dir = _images(tmp_path / "clean", n=2, size=(32, 40))
    model = create_model("nano")
    with torch.no_grad():
        model.conv_out.weight.zero_()
    weights = save_weights(model, tmp_path / "identity.safetensors")
    assert main(["eval", "--model", str(weights), "--data", str(clean_dir), "--sigma", "25", "--json",
                 "--backend", "torch"]) == 0
    result = json.loads(capsys.readouterr().out)
    want = []
    for i in range(2):
        clean = cv2.imread(str(clean_dir / f"{i}.png"))[..., ::-1].astype(np.float32) / 255
        noisy = clean + np.random.RandomState(0).normal(0, 25 / 255, clean.shape)
        mse = np.mean((np.clip(noisy, 0, 1) - clean) ** 2)
        want.append(10 * np.log10(1 / mse))
    assert result["psnr"] == pytest.approx(np.mean(want), abs=1e-3)


def test_a_model_override_is_not_the_named_variant(tmp_path):
    data = _config(tmp_path, iters=[2], patch=[16], batch=[2], checkpoint_every=2, model={"n_feat": 32})
    final = Trainer(TrainConfig.from_dict(data), quiet=True).fit()
    manifest = json.loads(Path(str(final) + ".json").read_text())
    assert manifest["variant"] is None and manifest["config"]["n_feat"] == 32


def test_init_grows_a_shallower_model_from_its_function(tmp_path):
    """``init`` weights with fewer RRGs than the run's model start the deeper model: the trained
    groups keep their weights and the added ones pass features through (zeroed closing conv), so
    before any step it restores exactly as the init did. Other config changes are refused."""
    from mirnet.sdk.model import create_model, load_model, save_weights

    torch.manual_seed(0)
    small = create_model(TrainConfig.from_dict(_config(tmp_path)).model_config()).eval()
    save_weights(small, tmp_path / "small.safetensors")
    data = _config(tmp_path, init=str(tmp_path / "small.safetensors"), model={"n_rrg": 3}, iters=[2], patch=[16],
                   batch=[2], checkpoint_every=2)
    trainer = Trainer(TrainConfig.from_dict(data), quiet=True)
    grown = copy.deepcopy(trainer.model).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert grown.config.n_rrg == 3 and len(grown.body) == 3
        torch.testing.assert_close(grown(x), small(x), rtol=0, atol=0)
    final_path = trainer.fit()
    final = load_model(final_path)
    assert "prune" not in json.loads(Path(str(final_path) + ".json").read_text())
    assert final.config.n_rrg == 3 and final.body[2].body[-1].weight.abs().sum() > 0
    with pytest.raises(ConfigError, match="only `n_rrg`"):
        Trainer(TrainConfig.from_dict(dict(data, model={"n_rrg": 3, "n_feat": 32})), quiet=True)
    with pytest.raises(ConfigError, match="only `n_rrg`"):
        Trainer(TrainConfig.from_dict(_config(tmp_path, init=str(final_path))), quiet=True)
    lite = deepen(create_model("lite"), 3)
    assert {m.groups for m in lite.body[2].modules() if isinstance(m, torch.nn.Conv2d)} >= {4}
    with pytest.raises(InputError, match="at least the model's 3"):
        deepen(lite, 2)


def test_a_run_from_pruned_weights_keeps_their_recipe(tmp_path):
    """Training on from `mirnet prune`'s output keeps what the weights were made from (`source`,
    `prune`) in the new manifest, next to the run's own training record."""
    from mirnet.optimize.prune import prune_depth
    from mirnet.sdk.artifact import read_manifest, sha256_file
    from mirnet.sdk.model import create_model, save_weights

    base = create_model(TrainConfig.from_dict(_config(tmp_path, model={"n_rrg": 2})).model_config())
    source = {"file": "teacher.safetensors", "sha256": "0" * 64}
    recipe = {"target": {"rrgs": 1, "width": None}, "finetune": {"steps": 3}}
    save_weights(prune_depth(base, rrgs=1), tmp_path / "pruned.safetensors", source=source, prune=recipe)
    data = _config(tmp_path, init=str(tmp_path / "pruned.safetensors"), iters=[2], patch=[16], batch=[2],
                   checkpoint_every=2)
    manifest = read_manifest(Trainer(TrainConfig.from_dict(data), quiet=True).fit(), kind="weights")
    assert manifest["source"] == source and manifest["prune"] == recipe
    assert manifest["training"]["steps"] == 2 and manifest["training"]["config"]["init"].endswith("pruned.safetensors")
    assert manifest["training"]["init"] == {"file": "pruned.safetensors",
                                            "sha256": sha256_file(tmp_path / "pruned.safetensors")}


def test_shipped_configs_parse():
    for path in sorted((REPO / "train" / "configs").glob("*.yaml")):
        cfg = TrainConfig.from_dict(yaml.safe_load(path.read_text()))
        assert cfg.total_steps > 0 and cfg.sources


def test_camera_sources_cpu_bf16_channels_last_and_camera_validation(tmp_path):
    """A run on the camera model with the CPU speed options validates on AWGN and camera presets
    and writes contiguous weights that load back with the same numbers."""
    pytest.importorskip("av")
    from mirnet.sdk.model import load_model

    data = _config(tmp_path, iters=[6], patch=[16], batch=[2], checkpoint_every=6, amp_cpu=True,
                   channels_last=True, val={"clean": str(tmp_path / "clean"), "sigma": 25, "limit": 1,
                                            "crop": 32, "every": 6, "protocols": ["camera-jpeg", "camera-mono"]})
    data["sources"] = [{"clean": str(tmp_path / "clean"), "camera": {"codecs": {"h264": 1, "jpeg": 1}},
                        "downscale": 0.5}]
    trainer = Trainer(TrainConfig.from_dict(data), quiet=True)
    assert trainer.train_step.use_amp_cpu and len(trainer.evalset) == 3
    assert next(trainer.model.parameters()).is_contiguous(memory_format=torch.channels_last)
    final = trainer.fit()
    model = load_model(final)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(model(x), trainer.train_step.averaged.float()(x), atol=1e-6)
    with pytest.raises(ConfigError, match="camera-h264"):
        TrainConfig.from_dict(_config(tmp_path, val={"clean": str(tmp_path / "clean"), "protocols": ["h264"]}))


def test_a_gray_model_grows_from_a_colour_one_and_trains_on_gray_samples(tmp_path):
    """`in_channels: 1, out_channels: 1` with colour init weights starts from to_gray (the colour
    model's channel mean on gray frames, exactly), trains on gray samples only (colour sources are
    refused, naming the setting to change), validates on gray AWGN frames and exports a 1-channel
    model."""
    from mirnet.sdk.model import create_model, load_model, save_weights
    from mirnet.sdk.model.arch import to_gray
    from mirnet.train.data import TrainSet

    lite = create_model(MIRNetV2Config(n_feat=8, n_rrg=1, n_mrb=1, unshuffle=2, bias=True)).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        for p in lite.parameters():  # the zero-initialised biases too
            p.add_(0.01 * torch.randn_like(p))
        torch.testing.assert_close(to_gray(lite).eval()(x), lite(x.expand(-1, 3, -1, -1)).mean(1, keepdim=True),
                                   rtol=0, atol=2e-6)
    with pytest.raises(InputError, match="scale=2"):
        to_gray(create_model(MIRNetV2Config(n_feat=8, n_rrg=1, n_mrb=1, scale=2)))

    base = create_model(TrainConfig.from_dict(_config(tmp_path)).model_config()).eval()
    save_weights(base, tmp_path / "colour.safetensors")
    gray_sources = [{"clean": str(tmp_path / "clean"), "gray_prob": 1.0, "degrade": {"awgn_sigma": [0, 50]}}]
    data = _config(tmp_path, init=str(tmp_path / "colour.safetensors"), sources=gray_sources,
                   model={"n_rrg": 1, "in_channels": 1, "out_channels": 1}, iters=[4], patch=[16], batch=[2],
                   val={"clean": str(tmp_path / "clean"), "sigma": 25, "gray": True, "limit": 1, "crop": 32,
                        "every": 4})
    trainer = Trainer(TrainConfig.from_dict(data), quiet=True)
    with torch.no_grad():
        start = copy.deepcopy(trainer.model).eval()
        torch.testing.assert_close(start(x), base(x.expand(-1, 3, -1, -1)).mean(1, keepdim=True),
                                   rtol=0, atol=2e-6)
    sample_in, sample_target = TrainSet(TrainConfig.from_dict(data).sources, channels=1)[(0, 0, 16)]
    assert sample_in.shape == sample_target.shape == (1, 16, 16)
    final = trainer.fit()
    model = load_model(final)
    assert (model.config.in_channels, model.config.out_channels) == (1, 1)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [m["val_psnr"] for m in metrics if "val_psnr" in m]
    (degraded, clean), = EvalSet.from_clean(tmp_path / "clean", 25, limit=1, crop=32, gray=True)
    assert np.array_equal(degraded[..., 0], degraded[..., 2]) and np.array_equal(clean[..., 0], clean[..., 1])
    with torch.no_grad():  # the gray model restores the frame's one channel; scored as RGB
        out = model(torch.from_numpy(degraded[None, ..., :1].transpose(0, 3, 1, 2).copy()))[0, 0].numpy()
    expected = 10 * np.log10(1 / np.mean((np.clip(out, 0, 1) - clean[..., 0]) ** 2, dtype=np.float64))
    assert logged == [pytest.approx(expected, abs=1e-3)]

    with pytest.raises(ConfigError, match=r"sources\[0\].*set gray_prob: 1"):
        TrainConfig.from_dict(dict(data, sources=[dict(gray_sources[0], gray_prob=0.5)]))
    with pytest.raises(ConfigError, match=r"set camera: \{mono_prob: 1\}"):
        TrainConfig.from_dict(dict(data, sources=[{"clean": str(tmp_path / "clean"), "camera": {}}]))
    with pytest.raises(ConfigError, match="val.gray.*set `sigma`"):
        TrainConfig.from_dict(dict(data, val={"clean": str(tmp_path / "clean"), "gray": True,
                                              "protocols": ["camera-mono"]}))


def test_a_run_distils_from_a_teacher(tmp_path):
    """`teacher`: the loss is Charbonnier against the ground truth and the frozen teacher's output,
    weighted by `teacher_weight` (logged as the `data` and `teacher` terms); at weight 1 the
    student learns the teacher, not the ground truth."""
    from mirnet.sdk.model import create_model, save_weights

    base = _config(tmp_path)
    teacher = create_model(TrainConfig.from_dict(base).model_config()).eval()
    torch.manual_seed(1)
    save_weights(teacher, tmp_path / "teacher.safetensors")
    data = _config(tmp_path, teacher=str(tmp_path / "teacher.safetensors"), teacher_weight=1.0, iters=[3], patch=[16],
                   batch=[2], model={"n_rrg": 1})
    trainer = Trainer(TrainConfig.from_dict(data), quiet=True)
    inputs, targets = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    student = copy.deepcopy(trainer.model)
    with torch.no_grad():
        want = torch.sqrt((student(inputs) - teacher(inputs)) ** 2 + 1e-6).mean()
    loss, terms = trainer.train_step(inputs, targets)
    assert float(loss) == pytest.approx(float(want), rel=1e-4) and set(terms) == {"data", "teacher"}
    with torch.no_grad():  # the teacher stays as it was loaded
        torch.testing.assert_close(trainer.train_step.target(inputs, targets),
                                   torch.cat([targets, teacher(inputs)], dim=1), rtol=0, atol=1e-6)
    from mirnet.sdk.artifact import read_manifest, sha256_file

    record = read_manifest(trainer.fit(), kind="weights")["training"]  # the teacher's file and hash
    assert record["teacher"] == {"file": "teacher.safetensors",
                                 "sha256": sha256_file(tmp_path / "teacher.safetensors")} and "init" not in record
    with pytest.raises(ConfigError, match="teacher_weight"):
        TrainConfig.from_dict(dict(data, teacher_weight=1.5))
    mse = Trainer(TrainConfig.from_dict(dict(data, loss={"mse": 1.0}, out=str(tmp_path / "mse"))), quiet=True)
    student = copy.deepcopy(mse.model)  # `loss:` terms are what the student fits to the teacher
    with torch.no_grad():
        want = ((student(inputs) - teacher(inputs)) ** 2).mean()
    assert float(mse.train_step(inputs, targets)[0]) == pytest.approx(float(want), rel=1e-4)
    gray = dict(data, model={"n_rrg": 1, "in_channels": 1, "out_channels": 1},
                sources=[{"clean": str(tmp_path / "clean"), "gray_prob": 1.0, "degrade": {"awgn_sigma": [0, 50]}}])
    with pytest.raises(ConfigError, match="maps 3 to 3 channels at scale 1, the model 1 to 1"):
        Trainer(TrainConfig.from_dict(gray), quiet=True)
