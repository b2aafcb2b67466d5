"""OpenVINO: the IR export (parity with ONNX Runtime in f32, the manifest and its .bin, atomic
writes, `mirnet export openvino`) and NNCF INT8 quantization of a tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

from mirnet.optimize.export_openvino import export_openvino  # noqa: E402
from mirnet.optimize.onnx_tools import ort_run  # noqa: E402
from mirnet.sdk import artifact  # noqa: E402
from mirnet.sdk.backends.openvino import OpenVinoBackend, compile_cpu, core  # noqa: E402
from mirnet.sdk.cli import main  # noqa: E402
from mirnet.sdk.errors import ArtifactError, ConfigError  # noqa: E402


def smooth(n: int, size: int, seed: int = 0) -> np.ndarray:
    """N x 3 x size x size float32 in [0, 1]: random values on a coarse grid, upsampled (smooth)."""
    import cv2

    coarse = np.random.default_rng(seed).random((n, 3, size // 8, size // 8), dtype=np.float32)
    planes = [cv2.resize(img.transpose(1, 2, 0), (size, size), interpolation=cv2.INTER_CUBIC) for img in coarse]
    return np.clip(np.stack(planes).transpose(0, 3, 1, 2), 0, 1).astype(np.float32)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


# ---------------------------------------------------------------------------- export


def test_export_matches_onnx_runtime_and_records_both_files(tiny_onnx, tiny_weights, tmp_path):
    out = export_openvino(tiny_onnx, tmp_path / "m.xml")
    assert out == tmp_path / "m.xml" and out.with_suffix(".bin").is_file()
    manifest = artifact.read_manifest(out, kind="openvino")
    onnx_manifest = artifact.read_manifest(tiny_onnx, kind="onnx")
    assert manifest["precision"] == "fp32" and manifest["file"] == "m.xml"
    assert manifest["config"] == onnx_manifest["config"] and manifest["io"] == onnx_manifest["io"]
    assert manifest["sha256"] == artifact.sha256_file(out)
    assert manifest["companions"] == {".bin": artifact.sha256_file(out.with_suffix(".bin"))}
    assert manifest["source"] == {"file": tiny_onnx.name, "sha256": artifact.sha256_file(tiny_onnx)}
    assert manifest["parity"]["max_abs_diff"] < 1e-4 and manifest["build"]["openvino"] == ov.__version__
    assert leftovers(tmp_path) == []
    # FP32 weights kept (no FP16 compression), dynamic batch/H/W, the ONNX's numbers at another size
    model = core().read_model(str(out))
    assert not [op for op in model.get_ops() if op.get_type_name() == "Constant"
                and op.get_output_element_type(0).get_type_name() == "f16"]
    assert str(model.input(0).partial_shape) == "[?,3,?,?]"
    x = smooth(3, 32, seed=1)
    np.testing.assert_allclose(compile_cpu(model, precision="f32")(x)[0], ort_run(tiny_onnx, x), atol=1e-4, rtol=0)
    # the source can name the weights an intermediate ONNX came from
    again = export_openvino(tiny_onnx, tmp_path / "w.xml", source=tiny_weights)
    assert artifact.read_manifest(again)["source"]["sha256"] == artifact.sha256_file(tiny_weights)


def test_export_refuses_what_it_cannot_write(tiny_onnx, tmp_path):
    with pytest.raises(ConfigError, match=r"m\.onnx: an OpenVINO IR is MODEL\.xml"):
        export_openvino(tiny_onnx, tmp_path / "m.onnx")
    int8 = tmp_path / "int8.onnx"
    int8.write_bytes(tiny_onnx.read_bytes())
    manifest = json.loads(artifact.sidecar_path(tiny_onnx).read_text())
    artifact.sidecar_path(int8).write_text(json.dumps({**manifest, "precision": "int8-ort"}))
    with pytest.raises(ConfigError, match="precision 'int8-ort'; the OpenVINO export converts FP32"):
        export_openvino(int8, tmp_path / "int8.xml")
    # a failed parity check leaves nothing, and a previous IR untouched
    good = export_openvino(tiny_onnx, tmp_path / "m.xml")
    before = {p.name: p.read_bytes() for p in (good, good.with_suffix(".bin"), artifact.sidecar_path(good))}
    with pytest.raises(ArtifactError, match="differs from ONNX Runtime's"):
        export_openvino(tiny_onnx, good, atol=-1.0)
    assert {p.name: p.read_bytes() for p in (good, good.with_suffix(".bin"), artifact.sidecar_path(good))} == before
    assert leftovers(tmp_path) == []


def test_cli_export_openvino(tiny_weights, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "out.xml"
    assert main(["export", "openvino", str(tiny_weights), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (+ out.bin, out.xml.json)" in printed and "in f32" in printed
    manifest = artifact.read_manifest(out, kind="openvino")
    assert manifest["source"]["sha256"] == artifact.sha256_file(tiny_weights) and manifest["variant"] == "tiny"
    before = out.read_bytes()
    assert main(["export", "openvino", str(tiny_weights), "-o", str(out)]) == 5
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", "openvino", str(tiny_onnx), "-o", str(out), "--force"]) == 0
    assert artifact.read_manifest(out)["source"]["file"] == tiny_onnx.name
    lone_bin = tmp_path / "other.bin"
    lone_bin.write_bytes(b"someone else's weights")
    assert main(["export", "openvino", str(tiny_onnx), "-o", str(tmp_path / "other.xml")]) == 5
    assert lone_bin.read_bytes() == b"someone else's weights"
    assert main(["export", "openvino", str(tiny_onnx), "-o", str(tmp_path / "x.onnx")]) == 2
    assert leftovers(tmp_path) == []
    # the IR restores like the ONNX it came from, in f32
    x = smooth(1, 32, seed=2)
    with OpenVinoBackend(out, precision="f32") as ir, OpenVinoBackend(tiny_onnx, precision="f32") as onnx:
        np.testing.assert_allclose(ir.infer(x), onnx.infer(x), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- NNCF INT8


def test_quantize_openvino_tiny_model(tiny_onnx, tmp_path):
    pytest.importorskip("nncf")
    from mirnet.optimize.quantize.openvino import quantize_openvino
    from mirnet.sdk.metrics import psnr

    calib = smooth(8, 32)
    out = tmp_path / "int8.xml"
    record = quantize_openvino(tiny_onnx, calib, out)
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert record["fake_quantize_nodes"] > 0 and record["preset"] == "performance"
    assert record["subset_size"] == record["calibration_samples"] == 8 and record["ignored_scopes"] == []
    model = core().read_model(str(out))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) == record["fake_quantize_nodes"]
    x = smooth(1, 64, seed=3)
    int8 = compile_cpu(model, precision="f32")(x)[0]
    fp32 = ort_run(tiny_onnx, x)
    assert psnr(np.clip(int8, 0, 1), np.clip(fp32, 0, 1)) > 25

    conv = "/conv_in/Conv"
    record = quantize_openvino(tiny_onnx, calib, tmp_path / "mixed.xml", preset="mixed", ignored_scopes=[conv],
                               subset_size=4)
    assert record["preset"] == "mixed" and record["ignored_scopes"] == [conv] and record["subset_size"] == 4
    with pytest.raises(ConfigError, match=r"ignored_scopes \['/nope/Conv'\]: no such node"):
        quantize_openvino(tiny_onnx, calib, tmp_path / "x.xml", ignored_scopes=["/nope/Conv"])
    with pytest.raises(ConfigError, match="preset='fast': valid presets are performance, mixed"):
        quantize_openvino(tiny_onnx, calib, tmp_path / "x.xml", preset="fast")
    with pytest.raises(ConfigError, match="subset_size=9"):
        quantize_openvino(tiny_onnx, calib, tmp_path / "x.xml", subset_size=9)
