"""safetensors + manifest round trip, load errors, ONNX export with parity and dynamic axes."""
import json
import os

import numpy as np
import pytest
import torch

from mirnet.sdk import artifact
from mirnet.sdk.errors import ArtifactError
from mirnet.sdk.model import MIRNetV2Config, create_model, load_model, save_weights


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(3)
    model = create_model("nano").eval()
    path = save_weights(model, tmp_path / "m.safetensors", variant="nano", training={"steps": 0})
    manifest = json.loads((tmp_path / "m.safetensors.json").read_text())
    assert manifest["kind"] == "weights" and manifest["variant"] == "nano"
    assert manifest["sha256"] == artifact.sha256_file(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    assert manifest["io"]["input"]["pad_multiple"] == 8
    assert manifest["training"] == {"steps": 0}
    loaded = load_model(path)
    assert loaded.config == model.config
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_mismatched_weights_list_missing_unexpected_and_misshaped(tmp_path):
    path = save_weights(create_model(MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1)), tmp_path / "a.safetensors")
    other = MIRNetV2Config(n_feat=32, n_rrg=2, n_mrb=1)
    with pytest.raises(ArtifactError) as err:
        load_model(path, config=other)
    text = str(err.value)
    assert "Missing keys: body.1." in text
    assert "Mis-shaped: conv_in.weight: file (16, 3, 3, 3) vs model (32, 3, 3, 3)" in text
    with pytest.raises(ArtifactError, match="Unexpected keys: body.0.body.0.dau_mid"):
        load_model(path, config=MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, height=2))


def test_tampered_or_unknown_files_are_refused(tmp_path):
    path = save_weights(create_model("nano"), tmp_path / "n.safetensors")
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        load_model(path)
    with pytest.raises(ArtifactError, match="bundled"):
        load_model(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="weights-only"):
        load_model(bad)
    with pytest.raises(ArtifactError, match=".safetensors"):
        save_weights(create_model("nano"), tmp_path / "x.pt")


def test_onnx_export_dynamic_axes_and_manifest(tiny_weights, tiny_onnx):
    import onnxruntime as ort

    manifest = artifact.read_manifest(tiny_onnx, kind="onnx")
    assert manifest["opset"] == 17
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    assert manifest["source"]["sha256"] == artifact.sha256_file(tiny_weights)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    model = load_model(tiny_weights)
    for shape in [(1, 3, 8, 12), (3, 3, 20, 36)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        got = session.run(None, {"input": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert np.abs(got - want).max() < 1e-4


def test_onnx_export_of_super_resolution_and_unshuffle(tmp_path):
    from mirnet.optimize.export_onnx import export_onnx

    cfg = MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1, scale=3, unshuffle=2)
    out = export_onnx(create_model(cfg), tmp_path / "sr.onnx")
    manifest = artifact.read_manifest(out)
    assert manifest["io"]["output"]["scale"] == 3 and manifest["io"]["input"]["pad_multiple"] == 8
