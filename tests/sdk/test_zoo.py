"""The bundled models: addressable by name, manifests record training and metrics, they work."""
import cv2
import numpy as np
import pytest

from mirnet.sdk import Restorer, artifact, zoo

REPO_DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / "data"


#: bundled name -> its variant (denoise-lite: lite grown to 4 RRGs; denoise-fast: denoise-lite with 2 RRGs and one
#: exchange round; NAME-gray: NAME with one channel in and out)
VARIANTS = {"denoise-lite": None, "lowlight-lite": "lite", "denoise-fast": None, "denoise-lite-gray": None,
            "denoise-fast-gray": None}


def test_the_bundled_models():
    assert set(zoo.bundled()) == set(VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_bundled_manifest(name):
    path = zoo.bundled()[name]
    manifest = artifact.read_manifest(path, kind="weights")
    assert manifest["variant"] == VARIANTS[name]
    assert manifest["training"]["steps"] > 0 and manifest["training"]["data"]
    assert manifest["metrics"]["val_psnr"] > 20


def test_denoise_fast_records_its_recipe():
    """denoise-fast is made from the default model by `mirnet prune` (an RRG and an exchange round
    removed, distilled), then trained on, still distilled from it: its last stage from the shipped
    default (by name), its pruning from the default of then (whose weights the manifest names)."""
    manifest = artifact.read_manifest(zoo.bundled()["denoise-fast"], kind="weights")
    prune = manifest["prune"]
    default = zoo.bundled()["denoise-lite"]
    assert manifest["source"]["file"] == default.name and len(manifest["source"]["sha256"]) == 64
    assert prune["target"]["rrgs"] == 2 and prune["target"]["width"] == 1
    assert prune["finetune"]["distillation"]["teacher"] == "denoise-lite.safetensors"
    assert manifest["training"]["config"]["teacher"] == "denoise-lite"
    config = artifact.read_manifest(default, kind="weights")["config"]
    assert manifest["config"] == dict(config, n_rrg=2, width=1)


@pytest.mark.parametrize("name", ["denoise-lite", "denoise-fast"])
def test_the_gray_path_of_a_denoiser_is_its_one_channel_specialist(name):
    """NAME-gray is NAME's network with one channel in and out, trained from it on gray samples
    only; the Restorer runs NAME's gray frames on it. It may have fewer recursive residual groups:
    denoise-lite-gray was made from the three-group default before that grew a fourth."""
    colour = artifact.read_manifest(zoo.bundled()[name], kind="weights")["config"]
    manifest = artifact.read_manifest(zoo.bundled()[f"{name}-gray"], kind="weights")
    gray = manifest["config"]
    assert dict(gray, n_rrg=colour["n_rrg"]) == dict(colour, in_channels=1, out_channels=1)
    assert 2 <= gray["n_rrg"] <= colour["n_rrg"]
    assert manifest["training"]["config"]["init"] == name
    assert all(d["gray_prob"] == 1 or (d["camera"] or {}).get("mono_prob") == 1 for d in manifest["training"]["data"])
    assert zoo.gray_companion(name) == f"{name}-gray"


def test_default_model_is_bundled():
    assert zoo.DEFAULT_MODEL in zoo.bundled()


def test_lowlight_lite_brightens_a_dark_frame(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path))
    clean = cv2.imread(str(REPO_DATA / "clean" / "sample_clean.png"))
    dark = (clean.astype(np.float32) * 0.08).round().astype(np.uint8)
    with Restorer("lowlight-lite") as restorer:
        out = restorer.restore(dark)
    assert out.mean() > 4 * dark.mean()


@pytest.mark.parametrize("name", VARIANTS)
def test_shipped_onnx_is_the_export_of_the_shipped_weights(name, tmp_path):
    """The ONNX that edge installs run must be today's export of today's weights: same source hash,
    same config, and a fresh export computes the same numbers."""
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from mirnet.optimize.export_onnx import export_onnx
    from mirnet.sdk.model import load_model

    weights, shipped = zoo.bundled()[name], zoo.bundled_onnx(name)
    manifest = artifact.read_manifest(shipped, kind="onnx")
    assert manifest["source"]["sha256"] == artifact.sha256_file(weights), (
        f"{shipped.name} was exported from other weights: re-export with "
        f"`mirnet export onnx {name} -o sdk/zoo/{name}.onnx --force`")
    assert manifest["config"] == artifact.read_manifest(weights, kind="weights")["config"]
    assert manifest["variant"] == VARIANTS[name] and manifest["precision"] == "fp32"
    fresh = export_onnx(load_model(weights), tmp_path / "fresh.onnx", source=weights)
    x = np.random.default_rng(0).random((1, manifest["config"]["in_channels"], 48, 64), dtype=np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (shipped, fresh)]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_export_bundled_is_the_packaging_step(capsys):
    """`mirnet export bundled` (run by the set-up commands) leaves exports of today's weights."""
    pytest.importorskip("torch")
    from mirnet.sdk.cli import main

    assert main(["export", "bundled"]) == 0
    out = capsys.readouterr().out
    assert all(f"up to date: {zoo.ZOO_DIR / name}.onnx" in out for name in zoo.bundled())


def test_bundled_name_without_its_export_runs_on_torch(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(zoo, "has_onnx", lambda name: False)
    with Restorer(zoo.DEFAULT_MODEL) as restorer:
        assert restorer.backend.name == "torch"
