"""Quality gate: `mirnet quantize` + `mirnet gate` end to end, a good artifact passes, a damaged one
fails with exit code 6 and the damaged layer is named among the worst; non-quantized artifacts get
an output-only report."""
from __future__ import annotations

import json
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
from mirnet.sdk.cli import main  # noqa: E402
from mirnet.sdk.errors import ArtifactError, QualityGateError  # noqa: E402
from mirnet.sdk.model import MIRNetV2Config, create_model, save_weights  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
TINY = dict(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)
DAMAGED = "/body/body.0/body/body.0/dau_top/body/body.0/Conv"
DAMAGED_MODULE = "body.0.body.0.dau_top.body.0"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(MIRNetV2Config(**TINY))
    with torch.no_grad():
        model.conv_out.weight.mul_(6.0)  # a body that matters, as after training
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny.safetensors", variant="tiny")


@pytest.fixture(scope="module")
def int8(weights, tmp_path_factory):
    """`mirnet quantize --target cpu` end to end (gate included)."""
    out = tmp_path_factory.mktemp("q") / "tiny-int8.onnx"
    code = main(["quantize", str(weights), "--target", "cpu", "--calib", str(DATA), "--calib-images", "4",
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
    assert m["gate"]["passed"] is True and m["gate"]["psnr_db"] >= 35 and m["gate"]["n"] == 2
    assert m["int8_check"]["integer_convs"] == 30 and m["int8_check"]["float_convs"] == 0


def test_gate_cli_passes_good_artifact(int8, weights, capsys):
    capsys.readouterr()
    assert main(["gate", str(int8), "--reference", str(weights), "--data", str(DATA), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["psnr_db"] >= 35 and report["n"] == 2
    assert report["layer_analysis"]["status"] == "done" and report["layer_analysis"]["measured"] == 33
    assert report["layer_analysis"]["unmatched"] == 0 and report["fix"] is None


def test_gate_cli_fails_damaged_artifact_and_names_the_layer(int8, weights, tmp_path, capsys):
    bad = damage(int8, tmp_path / "damaged.onnx", DAMAGED)
    capsys.readouterr()
    code = main(["gate", str(bad), "--reference", str(weights), "--data", str(DATA), "--sigma", "15", "--json"])
    captured = capsys.readouterr()
    assert code == 6 and "quality gate failed" in captured.err
    report = json.loads(captured.out)
    assert not report["passed"] and report["psnr_db"] < 35
    worst = [row["module"] for row in report["layers"][:3]]
    assert DAMAGED_MODULE in worst, worst
    assert report["layers"][0]["node"] == DAMAGED and report["layers"][0]["added_noise_db"] < 0
    assert DAMAGED_MODULE in report["suggested_exclude"]
    assert "--exclude" in report["fix"] and "--target cpu" in report["fix"]
    vs = report["vs_clean"]  # --sigma: both outputs also scored against the clean frames
    assert vs["reference"]["psnr_db"] > vs["artifact"]["psnr_db"]
    capsys.readouterr()
    assert main(["gate", str(bad), "--reference", str(weights), "--data", str(DATA), "--top", "3"]) == 6
    text = capsys.readouterr().out
    assert "FAILED" in text and DAMAGED_MODULE in text and "fix: keep the worst layers in float" in text


def test_run_gate_api_and_non_quantized_artifact(int8, weights, tiny_onnx, tiny_weights, tmp_path):
    bad = damage(int8, tmp_path / "bad.onnx", DAMAGED)
    with pytest.raises(QualityGateError) as info:
        run_gate(bad, weights, DATA, min_psnr_db=35, layers="never", limit=1)
    assert info.value.exit_code == 6 and info.value.result["layers"] == []
    # an FP32 (or pruned) ONNX: output error only
    result = run_gate(tiny_onnx, tiny_weights, DATA, limit=1, crop=64)
    assert result.passed and result.psnr_db > 60
    assert result.layer_analysis["status"] == "skipped" and "no QuantizeLinear" in result.layer_analysis["reason"]
    copy = tmp_path / "same.onnx"
    shutil.copy(tiny_onnx, copy)
    with pytest.raises(ArtifactError, match="manifest"):
        run_gate(copy, tiny_weights, DATA)
