"""The README's examples: the main set-up command and the Python API run; every concrete `mirnet`
example line parses with the real argument parser (synopsis lines with placeholders are skipped)."""
import re
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mirnet.sdk.cli import build_parser, main
from mirnet.sdk.metrics import psnr

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)


def _example_lines() -> list[str]:
    lines = []
    for _, body in BLOCKS:
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("mirnet ") and not re.search(r"\[|\.\.\.|\b[A-Z]{2,}\b|<", line):
                lines.append(line)
    return lines


def test_there_are_examples_for_every_command():
    commands = {shlex.split(line)[1] for line in _example_lines()}
    assert set(build_parser()._subparsers._group_actions[0].choices) <= commands


def test_walk_through_runs(tmp_path, monkeypatch, capsys):
    """Every line of the walk-through, in order, in a scratch folder that sees the repo's data."""
    walk = next(body for _, body in BLOCKS if body.startswith("mirnet restore tests/data/sample_noisy.png"))
    for name in ("tests", "train"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    printed = {}
    for line in walk.strip().splitlines():
        command, _, comment = line.partition("  # ")
        expected = {int(c) for c in re.findall(r"\bexit (\d+)", comment)} or {0}
        args = shlex.split(command)[1:]
        capsys.readouterr()
        code = main(args)
        printed[args[0]] = capsys.readouterr()
        assert code in expected, f"{line}: exit {code}\n{printed[args[0]].err[-2000:]}"
        if code == 3:  # build-engine without TensorRT prints the trtexec command instead
            assert args[0] == "build-engine" and "trtexec --onnx=lite.onnx" in printed[args[0]].err
    assert sorted(p.name for p in (tmp_path / "restored-frames").iterdir()) == ["000000.png"]
    _check_quoted_numbers({name: out.out + out.err for name, out in printed.items()})
    assert (tmp_path / "lite-int8.onnx").is_file() and (tmp_path / "bench-demo.json").is_file()


def _number(pattern: str, text: str, where: str) -> float:
    found = re.search(pattern, text)
    assert found, f"{where}: no match for {pattern!r}"
    return float(found.group(1))


def _check_quoted_numbers(printed: dict[str, str]) -> None:
    """The walk-through's "What the numbers mean" quotes what the commands print, within rounding
    across CPUs (bf16 or f32, thread timing never enters)."""
    text = README[README.index("What the numbers mean"):README.index("## Python API")]
    pair = r"PSNR ([\d.]+) dB \(input ([\d.]+) dB\)"
    quoted, got = re.search(pair, text), re.search(pair, printed["eval"])
    assert quoted and got, printed["eval"][-1000:]
    assert abs(float(got.group(1)) - float(quoted.group(1))) <= 0.05  # output
    assert abs(float(got.group(2)) - float(quoted.group(2))) <= 0.01  # input
    prune = re.search(r"before ([\d.]+) dB, pruned [\d.]+ dB, fine-tuned ([\d.]+) dB", printed["prune"])
    assert prune, printed["prune"][-1000:]
    loss = float(prune.group(1)) - float(prune.group(2))
    assert abs(loss - _number(r"MACs costs ([\d.]+) dB", text, "README")) <= 0.3
    quant = _number(r"loss \+?(-?[\d.]+) dB \(limit", printed["quantize"], "quantize")
    assert abs(quant - _number(r"passes \(([\d.]+) dB lost\)", text, "README")) <= 0.05
    gate = _number(r"it loses ([\d.]+) dB PSNR", printed["gate"], "gate")
    assert abs(gate - _number(r"it loses ([\d.]+) dB,\s+above", text, "README")) <= 0.05


@pytest.mark.parametrize("line", _example_lines())
def test_example_parses(line):
    build_parser().parse_args(shlex.split(line)[1:])


def test_main_command_restores_the_sample_with_the_bundled_model(tmp_path, monkeypatch):
    setup = next(body for _, body in BLOCKS if "mirnet restore tests/data/sample_noisy.png" in body)
    command = setup.strip().split("&&")[-1].strip()
    args = shlex.split(command)[1:]
    args[args.index("-o") + 1] = str(tmp_path / "restored")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    assert main(args) == 0
    clean = cv2.imread(str(REPO / "tests/data/clean/sample_clean.png")).astype(np.float32) / 255
    noisy = cv2.imread(str(REPO / "tests/data/sample_noisy.png")).astype(np.float32) / 255
    restored = cv2.imread(str(tmp_path / "restored" / "sample_noisy.png")).astype(np.float32) / 255
    assert restored.shape == noisy.shape
    assert psnr(restored, clean) > psnr(noisy, clean) + 6  # the bundled denoiser really denoises


def test_python_api_example_runs(monkeypatch, tmp_path):
    code = next(body for lang, body in BLOCKS if lang == "python" and "Restorer(" in body)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["out"].shape == scope["noisy"].shape and scope["out"].dtype == np.uint8
    assert [o.shape for o in scope["outs"]] == [(240, 320, 3), (64, 96, 3)]


def test_official_checkpoint_example_runs(monkeypatch, tmp_path):
    import torch

    from mirnet.sdk.model.arch import from_official

    code = next(body for lang, body in BLOCKS if lang == "python" and "from_official" in body)
    torch.save({"params": from_official(n_feat=16).state_dict()}, tmp_path / "Real_Denoising.pth")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["model"].config.n_feat == 80


def test_stream_example_runs(monkeypatch, tmp_path):
    code = next(body for lang, body in BLOCKS if lang == "python" and "Stream(" in body)
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (48, 32))
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.write(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    writer.release()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    scope = {"frames": [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(5)]}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["stats"]["frames"] == 3
    assert cv2.VideoCapture(str(tmp_path / "restored.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3


def _exit_table() -> dict[int, str]:
    """The README's exit-status table: status -> cause."""
    table = README.split("Exit status, the same for the same cause in every command:")[1].split("\n\n")[1]
    rows = {}
    for line in table.splitlines()[2:]:
        status, cause = [cell.strip() for cell in line.strip("|").split("|", 1)]
        for code in status.split("/"):
            rows[int(code)] = cause
    return rows


def test_exit_status_table_is_what_the_cli_returns(tmp_path, tiny_weights, tiny_onnx, capsys, monkeypatch):
    """Every status the README lists is one the CLI returns for that cause: the error classes' codes
    plus success and the signal statuses (SIGINT/SIGTERM and a closed stdout are exercised in
    tests/test_cli_errors.py, a truncated video's 1 there too, a server's 7 in tests/serve)."""
    from mirnet.sdk import errors

    table = _exit_table()
    classes = {c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.MirnetError)}
    assert set(table) == classes | {0, 130, 143, 141}
    bad_manifest = tmp_path / "m.safetensors"
    bad_manifest.write_bytes(tiny_weights.read_bytes())
    (tmp_path / "m.safetensors.json").write_text("{}")
    clean = tmp_path / "clean"
    clean.mkdir()
    cv2.imwrite(str(clean / "a.png"), cv2.imread(str(REPO / "tests" / "data" / "clean" / "sample_clean.png"))[:64, :64])
    cases = {
        0: ["info", "denoise-lite"],
        2: ["restore", str(REPO / "tests" / "data" / "sample_noisy.png"), "-o", str(tmp_path / "o"), "--threads", "0"],
        3: ["eval", "--model", str(tiny_onnx), "--data", str(clean), "--sigma", "5", "--backend", "ort"],
        4: ["info", str(bad_manifest)],
        5: ["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")],
        6: ["gate", str(tiny_onnx), "--reference", "denoise-lite", "--data", str(clean), "--sigma", "25",
            "--top", "0"],  # an untrained network loses dBs against the trained one
    }
    for status, argv in cases.items():
        with monkeypatch.context() as mp:
            if status == 3:
                mp.setitem(sys.modules, "onnxruntime", None)  # as if the [ort] extra were not installed
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code
        assert code == status, (status, table[status], argv, capsys.readouterr().err)
    capsys.readouterr()


def test_training_config_example_parses():
    """The README's training YAML is a valid config, and so is its commented distillation variant
    (teacher instead of the loss mix)."""
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("torch")
    from mirnet.train.config import TrainConfig

    body = next(body for lang, body in BLOCKS if lang == "yaml" and body.startswith("name: my-camera"))
    cfg = TrainConfig.from_dict(yaml.safe_load(body))
    assert cfg.init == "denoise-lite" and cfg.teacher is None and len(cfg.sources) == 3
    distil = yaml.safe_load(re.sub(r"^# (teacher\w*:)", r"\1", body, flags=re.M))
    del distil["loss"]
    cfg = TrainConfig.from_dict(distil)
    assert cfg.teacher == "denoise-lite" and cfg.teacher_weight == 0.5
