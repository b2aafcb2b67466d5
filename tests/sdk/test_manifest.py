"""The one manifest validator: wrong types and shapes are refused at load with an ArtifactError
(exit 4) naming the field, never a TypeError/KeyError/ZeroDivisionError/RecursionError or a raw
ONNX Runtime error later. Torch-free except the ONNX Runtime case."""
import copy
import json
import shutil

import pytest

from mirnet.sdk import artifact
from mirnet.sdk.cli import main
from mirnet.sdk.errors import ArtifactError
from mirnet.sdk.model import MIRNetV2Config

CONFIG = MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1, unshuffle=2).to_dict()


def _set(path: str, value):
    def edit(m: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            m = m[key]
        m[last] = value
    return edit


BAD = {
    "schema_version-string": (_set("schema_version", "1"), "schema_version"),
    "schema_version-null": (_set("schema_version", None), "schema_version"),
    "schema_version-zero": (_set("schema_version", 0), "schema_version"),
    "sha256-integer": (_set("sha256", 12345), "sha256"),
    "kind-unknown": (_set("kind", "model"), "kind"),
    "precision-null": (_set("precision", None), "precision"),
    "io-empty": (_set("io", {}), "io"),
    "io-input-not-a-mapping": (_set("io.input", "NCHW"), "io"),
    "io-dtype": (_set("io.input.dtype", "float64"), "io.input.dtype"),
    "io-channels-string": (_set("io.input.channels", "3"), "io.input.channels"),
    "io-pad-multiple-zero": (_set("io.input.pad_multiple", 0), "io.input.pad_multiple"),
    "io-pad-multiple-disagrees": (_set("io.input.pad_multiple", 4), "io.input.pad_multiple"),
    "io-scale-disagrees": (_set("io.output.scale", 2), "io.output.scale"),
    "config-empty": (_set("config", {}), "config"),
    "config-null": (_set("config", None), "config"),
    "n_feat-string": (_set("config.n_feat", "sixteen"), "n_feat"),
    "n_feat-negative": (_set("config.n_feat", -16), "n_feat"),
    "n_feat-huge": (_set("config.n_feat", 10 ** 12), "n_feat"),
    "unshuffle-zero": (_set("config.unshuffle", 0), "unshuffle"),
    "chan_factor-string": (_set("config.chan_factor", "1.5"), "chan_factor"),
    "chan_factor-huge": (_set("config.chan_factor", 1e300), "chan_factor"),
    "bias-string": (_set("config.bias", "no"), "bias"),
    "residual-list": (_set("config.residual", ["image"]), "residual"),
    "config-unknown-field": (_set("config.depth", 3), "depth"),
    "pruned-list": (_set("pruned", ["body.0"]), "pruned"),
    "pruned-layer-shape": (_set("pruned", {"layers": {"conv_in": [16, "a", 1]}}), "pruned.layers.conv_in"),
    "source-sha256": (_set("source", {"file": "w.safetensors", "sha256": None}), "source"),
    "companions-list": (_set("companions", [".bin"]), "companions"),
    "companions-path": (_set("companions", {"/../w.bin": "0" * 64}), "companions"),
    "companions-on-onnx": (_set("companions", {".bin": "0" * 64}), "companions"),
    "openvino-without-bin": (_set("kind", "openvino"), "companions"),
}


@pytest.fixture
def make(tmp_path):
    """``make(edit)``: an artifact with a valid manifest, then ``edit(manifest)`` applied to its JSON."""
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not really onnx: the validator never opens it")
    base = artifact.make_manifest(path, kind="onnx", config=dict(CONFIG), precision="fp32")

    def build(edit=None, text: str | None = None):
        manifest = copy.deepcopy(base)
        if edit is not None:
            edit(manifest)
        artifact.sidecar_path(path).write_text(text if text is not None else json.dumps(manifest))
        return path
    return build


def test_valid_manifest_reads(make):
    assert artifact.read_manifest(make(), kind="onnx")["config"] == CONFIG


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_is_refused_naming_the_field(make, case, capsys):
    edit, field = BAD[case]
    path = make(edit)
    with pytest.raises(ArtifactError, match=field.replace(".", r"\.")):
        artifact.read_manifest(path)
    assert main(["info", str(path)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("mirnet: error: ") and field in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "[" * 50_000 + "]" * 50_000 + "}",
                                  " " * (artifact.MAX_MANIFEST_BYTES + 1)],
                         ids=["nested-list", "nested-field", "oversized"])
def test_unparseable_manifest_is_refused(make, text, capsys):
    path = make(text=text)
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        artifact.read_manifest(path)
    assert main(["info", str(path)]) == 4


def test_config_from_dict_rejects_wrong_types_and_values():
    from mirnet.sdk.errors import ConfigError

    for data, field in [({"n_feat": "16"}, "n_feat"), ({"unshuffle": 0}, "unshuffle"), ({"height": -1}, "height"),
                        ({"chan_factor": None}, "chan_factor"), ({"chan_factor": float("nan")}, "chan_factor"),
                        ({"bias": 1}, "bias"), ({"residual": None}, "residual"), ({"scale": 2.0}, "scale")]:
        with pytest.raises(ConfigError, match=f"MIRNetV2Config.{field}="):
            MIRNetV2Config.from_dict(data)
    with pytest.raises(ConfigError, match="expected a mapping"):
        MIRNetV2Config.from_dict(["n_feat", 16])


@pytest.mark.parametrize("field, value", [("io.input.dtype", "float16"), ("io.input.name", "image"),
                                          ("io.output.name", "restored")])
def test_onnx_graph_disagreeing_with_its_manifest_is_refused(tiny_onnx, tmp_path, field, value):
    """A manifest that passes the schema but does not describe the graph (an fp32 ONNX said to take
    float16, other tensor names) is refused when the backend opens it, not by ONNX Runtime at run time."""
    pytest.importorskip("onnxruntime")
    from mirnet.sdk.backends.onnxruntime import OrtBackend

    path = tmp_path / "tiny.onnx"
    shutil.copy(tiny_onnx, path)
    manifest = json.loads(artifact.sidecar_path(tiny_onnx).read_text())
    _set(field, value)(manifest)
    artifact.sidecar_path(path).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"{field.rsplit('.', 1)[0].replace('.', '[.]')}.*{value}"):
        OrtBackend(path)


def test_writer_publishes_companions_with_the_artifact(tmp_path):
    """An OpenVINO IR's .bin is written beside the temporary .xml, renamed with it and hashed in the
    manifest; a failure removes both, and an existing .bin is refused without force."""
    from mirnet.sdk.errors import InputError

    out = tmp_path / "m.xml"

    def write(w, bin_data=b"weights"):
        w.tmp.write_bytes(b"<net/>")
        w.tmp.with_suffix(".bin").write_bytes(bin_data)
        w.describe(kind="openvino", config=dict(CONFIG), precision="fp32")

    with pytest.raises(ArtifactError, match="refused"), artifact.writer(out, force=False) as w:
        write(w)
        raise ArtifactError("refused")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with artifact.writer(out, force=False) as w:
        write(w)
    assert w.manifest["companions"] == {".bin": artifact.sha256_file(tmp_path / "m.bin")}
    assert (tmp_path / "m.bin").read_bytes() == b"weights"
    assert artifact.read_manifest(out, kind="openvino")["file"] == "m.xml"
    (tmp_path / "n.bin").write_bytes(b"another model's")
    with pytest.raises(InputError, match=r"n\.bin exists; pass --force"), \
            artifact.writer(tmp_path / "n.xml", force=False) as w:
        write(w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "m.xml.json", "n.bin"]
    with artifact.writer(out, force=True) as w:
        write(w, b"new weights")
    assert artifact.read_manifest(out)["companions"][".bin"] == artifact.sha256_file(tmp_path / "m.bin")
