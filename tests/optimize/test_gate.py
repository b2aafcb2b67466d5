"""Quality gate: `mirnet quantize` + `mirnet gate` end to end, a good artifact passes, a damaged one
fails with exit code 6 and the damaged layer is named among the worst; non-quantized artifacts get
an output-only report."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

from onnx import numpy_helper  # noqa: E402

from mirnet.optimize.gate import run_gate  # noqa: E402
from mirnet.optimize.onnx_tools import weight_dq_nodes  # noqa: E402
from mirnet.sdk import artifact  # noqa: E402
from mirnet.sdk.cli import build_parser, main  # noqa: E402
from mirnet.sdk.errors import ArtifactError, QualityGateError  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "clean"
DAMAGED = "/body/body.0/body/body.0/dau_top/body/body.0/Conv"
DAMAGED_MODULE = "body.0.body.0.dau_top.body.0"


@pytest.fixture(scope="module")
def int8(tiny_weights, tmp_path_factory):
    """`mirnet quantize --target onnxruntime` end to end (gate included)."""
    out = tmp_path_factory.mktemp("q") / "tiny-int8.onnx"
    code = main(["quantize", str(tiny_weights), "--target", "onnxruntime", "--calib", str(DATA), "--calib-images", "4",
                 "--calib-size", "48", "--gate-limit", "2", "-o", str(out)])
    assert code == 0
    return out


def damage(src: Path, dst: Path, node: str) -> Path:
    """Random int8 weights and a 300x weight scale for one conv, manifest rewritten to match."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    dq = next(d for d in weight_dq_nodes(model) if node in consumers[d.output[0]])
    w = numpy_helper.to_array(inits[dq.input[0]])
    rng = np.random.default_rng(0)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(rng.integers(-127, 128, w.shape).astype(w.dtype), dq.input[0]))
    scale = numpy_helper.to_array(inits[dq.input[1]]) * np.float32(300)
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), dq.input[1]))
    onnx.save(model, str(dst))
    manifest = artifact.read_manifest(src, verify=False)
    manifest.update(file=dst.name, sha256=artifact.sha256_file(dst))
    artifact.write_manifest(dst, manifest)
    return dst


def test_quantize_cli_writes_a_passing_artifact(int8, capsys):
    m = artifact.read_manifest(int8, kind="onnx")
    gate = m["gate"]
    assert gate["passed"] is True and gate["n"] == 1 and gate["loss_db"] <= gate["max_loss_db"] == 0.15
    assert gate["inputs"]["kind"] == "training" and "AWGN 0-50" in gate["inputs"]["description"]
    assert m["calibration"]["inputs"] == gate["inputs"]
    assert m["int8_check"]["integer_convs"] == 30 and m["int8_check"]["float_convs"] == 0


def test_gate_cli_passes_good_artifact(int8, tiny_weights, capsys):
    capsys.readouterr()
    assert main(["gate", str(int8), "--reference", str(tiny_weights), "--data", str(DATA), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["n"] == 1 and report["inputs"]["kind"] == "training"
    assert abs(report["loss_db"]) <= 0.15 and report["worst_frame"]["name"] in {f["name"] for f in report["frames"]}
    assert report["layer_analysis"]["status"] == "done" and report["layer_analysis"]["measured"] == 33
    assert report["layer_analysis"]["unmatched"] == 0 and report["fix"] is None


def test_gate_cli_fails_damaged_artifact_and_names_the_layer(int8, tiny_weights, tmp_path, capsys):
    bad = damage(int8, tmp_path / "damaged.onnx", DAMAGED)
    capsys.readouterr()
    code = main(["gate", str(bad), "--reference", str(tiny_weights), "--data", str(DATA), "--sigma", "15", "--json"])
    captured = capsys.readouterr()
    assert code == 6 and "quality gate failed" in captured.err
    report = json.loads(captured.out)
    assert not report["passed"] and report["loss_db"] > 0.15 and report["inputs"]["kind"] == "awgn"
    assert "loses" in captured.err and "--max-loss-db 0.15" in captured.err
    worst = [row["module"] for row in report["layers"][:3]]
    assert DAMAGED_MODULE in worst, worst
    assert report["layers"][0]["node"] == DAMAGED and report["layers"][0]["added_noise_db"] < 0
    assert DAMAGED_MODULE in report["suggested_exclude"]
    assert "--exclude" in report["fix"] and "--target onnxruntime" in report["fix"]
    fix = shlex.split(report["fix"].split(": ", 1)[1])  # a command a shell runs as printed
    fixed = build_parser().parse_args(fix[1:])
    assert fixed.command == "quantize" and DAMAGED_MODULE in ",".join(fixed.exclude)
    vs = report["vs_clean"]
    assert report["loss_db"] == pytest.approx(vs["reference"]["psnr_db"] - vs["artifact"]["psnr_db"], abs=1e-3)
    capsys.readouterr()
    assert main(["gate", str(bad), "--reference", str(tiny_weights), "--data", str(DATA), "--top", "3"]) == 6
    text = capsys.readouterr().out
    assert "FAILED" in text and DAMAGED_MODULE in text and "fix: keep the worst layers in float" in text


def test_run_gate_api_and_non_quantized_artifact(int8, tiny_weights, tiny_onnx, tmp_path):
    bad = damage(int8, tmp_path / "bad.onnx", DAMAGED)
    with pytest.raises(QualityGateError) as info:
        run_gate(bad, tiny_weights, DATA, layers="never", limit=1)
    assert info.value.exit_code == 6 and info.value.result["layers"] == []
    # an FP32 (or pruned) ONNX: output error only
    result = run_gate(tiny_onnx, tiny_weights, DATA, limit=1, crop=64)
    assert result.passed and result.psnr_db > 60
    assert result.layer_analysis["status"] == "skipped" and "no QuantizeLinear" in result.layer_analysis["reason"]
    copy = tmp_path / "same.onnx"
    shutil.copy(tiny_onnx, copy)
    with pytest.raises(ArtifactError, match="manifest"):
        run_gate(copy, tiny_weights, DATA)


def test_gate_on_real_pairs_and_its_limits(int8, tiny_weights, tmp_path):
    """--pairs scores against the pairs' clean side; a loss limit below what the artifact loses fails
    with the reason; --min-psnr-db adds the output-similarity check."""
    from mirnet.sdk.media import list_images, load_rgb

    cv2 = pytest.importorskip("cv2")
    for side in ("low", "high"):
        (tmp_path / side).mkdir()
    rng = np.random.default_rng(0)
    clean = load_rgb(list_images(DATA)[0])
    for name, sigma in (("a.png", 20), ("b.png", 40)):
        noisy = np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1)
        for side, img in (("low", noisy), ("high", clean)):
            cv2.imwrite(str(tmp_path / side / name), (img[..., ::-1] * 255).round().astype(np.uint8))
    result = run_gate(int8, tiny_weights, pairs=str(tmp_path), layers="never", crop=64)
    assert result.passed and result.inputs["kind"] == "pairs" and result.n == 2
    losses = {f["name"]: f["reference_vs_clean_db"] - f["artifact_vs_clean_db"] for f in result.frames}
    assert result.worst_frame["name"] == max(losses, key=losses.get) and len(set(losses.values())) == 2
    assert result.vs_clean["reference"]["psnr_db"] > 10 and result.loss_db == pytest.approx(
        result.vs_clean["reference"]["psnr_db"] - result.vs_clean["artifact"]["psnr_db"], abs=1e-3)
    strict = run_gate(int8, tiny_weights, pairs=str(tmp_path), layers="never", crop=64, check=False,
                      max_loss_db=result.loss_db - 0.01)
    assert not strict.passed and "loses" in strict.reason and "--max-loss-db" in strict.reason
    similar = run_gate(int8, tiny_weights, pairs=str(tmp_path), layers="never", crop=64, check=False,
                       min_psnr_db=result.psnr_db + 1)
    assert not similar.passed and "--min-psnr-db" in similar.reason and "loses" not in similar.reason


def test_gate_needs_to_know_the_inputs_of_a_model_without_training_record(tmp_path):
    from mirnet.sdk.errors import ConfigError
    from mirnet.sdk.model import MIRNetV2Config, create_model, save_weights

    torch.manual_seed(0)
    bare = save_weights(create_model(MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)),
                        tmp_path / "bare.safetensors")
    other = save_weights(create_model(MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)),
                         tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="no training record.*--sigma S.*--protocol NAME.*--pairs DIR"):
        run_gate(other, bare, DATA)
    with pytest.raises(ConfigError, match="--sigma and --protocol"):
        run_gate(other, bare, DATA, sigma=5, protocol="camera-jpeg")
    result = run_gate(other, bare, DATA, protocol="camera-jpeg", crop=64, layers="never", check=False)
    assert result.inputs == {"kind": "protocol", "value": "camera-jpeg", "description": "camera preset camera-jpeg"}


def test_the_fix_command_survives_a_shell(tmp_path):
    """Glob patterns (*gcnet*) and paths with spaces come back quoted, so pasting the printed
    command runs the same quantization with the named layers added to --exclude."""
    from mirnet.optimize.gate import _fix_command

    manifest = {"quantization": {"target": "onnxruntime", "exclude": ["*gcnet*"]}, "source": {"file": "my model.safetensors"},
                "calibration": {"folder": "calib dir", "method": "max", "images": 8, "size": 64, "inputs": {}}}
    fix = _fix_command(manifest, tmp_path / "out.onnx", ["body.0.conv_out"])
    args = build_parser().parse_args(shlex.split(fix.split(": ", 1)[1])[1:])
    assert args.model == "my model.safetensors" and args.calib == "calib dir"
    assert args.exclude == ["*gcnet*,body.0.conv_out"] and args.output == "out.onnx"
    manifest["calibration"].update(method="percentile", percentile=99.999)
    args = build_parser().parse_args(shlex.split(_fix_command(manifest, tmp_path / "out.onnx", []).split(": ", 1)[1])[1:])
    assert (args.method, args.percentile) == ("percentile", 99.999)
