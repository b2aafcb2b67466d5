"""safetensors + manifest round trip, load errors, ONNX export with parity and dynamic axes."""
import json
import os

import numpy as np
import pytest
import torch

from mirnet.sdk import artifact
from mirnet.sdk.errors import ArtifactError, InputError
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


def _describe(w):
    w.describe(kind="onnx", config=MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1).to_dict(), precision="fp32")


def test_writer_renames_after_validation_and_writes_the_manifest(tmp_path):
    out = tmp_path / "sub" / "m.onnx"
    seen = []
    with artifact.writer(out, force=False, validate=lambda p: seen.append((p.suffix, p.read_bytes()))) as w:
        assert w.tmp.parent == out.parent and w.tmp.name.endswith(".onnx") and not out.exists()
        w.tmp.write_bytes(b"new")
        _describe(w)
    assert seen == [(".onnx", b"new")] and out.read_bytes() == b"new"
    manifest = artifact.read_manifest(out, kind="onnx")  # sha256 verified against the renamed file
    assert manifest == w.manifest and manifest["file"] == "m.onnx"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.json"]
    with pytest.raises(InputError, match="--force"):
        with artifact.writer(out, force=False):
            pass


@pytest.mark.parametrize("failure", ["block", "validate", "no-manifest", "empty", "interrupt"])
def test_writer_failure_keeps_the_previous_artifact(tmp_path, failure):
    out = tmp_path / "m.onnx"
    with artifact.writer(out, force=False) as w:
        w.tmp.write_bytes(b"old")
        _describe(w)
    before = artifact.sidecar_path(out).read_text()

    def refuse(path):
        raise ArtifactError("refused")

    errors = {"block": ValueError, "validate": ArtifactError, "no-manifest": ArtifactError,
              "empty": ArtifactError, "interrupt": KeyboardInterrupt}
    with pytest.raises(errors[failure]):
        with artifact.writer(out, force=True, validate=refuse if failure == "validate" else None) as w:
            if failure != "empty":
                w.tmp.write_bytes(b"new")
            if failure not in ("no-manifest",):
                _describe(w)
            if failure == "block":
                raise ValueError("export failed")
            if failure == "interrupt":
                raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and artifact.sidecar_path(out).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


def _edit_sidecar(path, edit):
    sidecar = artifact.sidecar_path(path)
    manifest = json.loads(sidecar.read_text())
    edit(manifest)
    sidecar.write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, named", [
    (lambda m: m["config"].update(residual="feature"), "config.residual: manifest 'feature', file 'image'"),
    (lambda m: m["config"].update(chan_factor=1.25), "config.chan_factor: manifest 1.25, file 1.5"),
    (lambda m: m.update(pruned={"layers": {"conv_in": [3, 8, 1]}}),
     "pruned_layers.conv_in: manifest [3, 8, 1], file None"),
], ids=["residual", "chan_factor", "pruned"])
def test_edited_manifest_is_refused(tmp_path, edit, named):
    """The config and pruned layout are recorded in the safetensors metadata (under the sha256): a
    sidecar edited after saving is refused naming both values, never obeyed with other outputs."""
    path = save_weights(create_model(MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)),
                        tmp_path / "w.safetensors")
    _edit_sidecar(path, edit)
    with pytest.raises(ArtifactError, match="manifest was edited") as err:
        load_model(path)
    assert named in str(err.value) and "Restore the original manifest" in str(err.value)


def test_file_without_recorded_network_is_refused_until_adopted(tmp_path):
    from safetensors.torch import load_file, save_file

    from mirnet.sdk.model.weights import adopt_manifest

    torch.manual_seed(0)
    model = create_model("nano").eval()
    path = save_weights(model, tmp_path / "old.safetensors", variant="nano", training={"steps": 7})
    save_file(load_file(str(path)), str(path))  # as saved before the network went into the metadata
    _edit_sidecar(path, lambda m: m.update(sha256=artifact.sha256_file(path)))
    before = json.loads(artifact.sidecar_path(path).read_text())
    with pytest.raises(ArtifactError, match=r"does not record its network config.*adopt_manifest\('"):
        load_model(path)
    adopt_manifest(path)
    after = json.loads(artifact.sidecar_path(path).read_text())
    assert {k for k in before if before[k] != after[k]} == {"sha256"}
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), model(x), rtol=0, atol=0)


def test_cached_export_is_keyed_on_weights_and_manifest(tmp_path, monkeypatch):
    """The export cache serves an entry only for the same weights bytes *and* the same manifest
    config/pruned layout/opset; an edited manifest is refused (never a stale export); a damaged
    entry is exported again."""
    from mirnet.optimize import export_onnx as exporter
    from mirnet.optimize.export_onnx import _export_key, cached_export

    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    cfg = MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)
    weights = save_weights(create_model(cfg), tmp_path / "w.safetensors", variant="tiny")
    first = cached_export(weights)
    assert first.parent == tmp_path / "cache" / "onnx"
    stamp = first.stat().st_mtime_ns
    assert cached_export(weights) == first and first.stat().st_mtime_ns == stamp  # reused, not re-exported

    # the key covers everything that defines the network, not only the weights' bytes
    manifest = artifact.read_manifest(weights)
    key = _export_key(weights, manifest)
    for edit in ({"config": {**manifest["config"], "residual": "feature"}},
                 {"pruned": {"layers": {"conv_in": [3, 8, 1]}}}):
        assert _export_key(weights, {**manifest, **edit}) != key
    monkeypatch.setattr(exporter, "DEFAULT_OPSET", exporter.DEFAULT_OPSET + 1)
    assert _export_key(weights, manifest) != key
    monkeypatch.undo()
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))

    # same bytes, edited manifest (an image residual becomes a feature residual: another network)
    sidecar = artifact.sidecar_path(weights)
    original = sidecar.read_text()
    _edit_sidecar(weights, lambda m: m["config"].update(residual="feature"))
    with pytest.raises(ArtifactError, match="manifest was edited"):
        cached_export(weights)
    sidecar.write_text(original)
    assert cached_export(weights) == first

    # other weights bytes, same manifest fields
    torch.manual_seed(1)
    other = save_weights(create_model(cfg), tmp_path / "w.safetensors", variant="tiny")
    assert cached_export(other) != first

    # a damaged entry is exported again
    entry = cached_export(other)
    entry.write_bytes(entry.read_bytes()[:100])
    assert cached_export(other) == entry and artifact.read_manifest(entry, kind="onnx")
