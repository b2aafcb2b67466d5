"""The bundled models: addressable by name, manifests record training and metrics, they work."""
import cv2
import numpy as np
import pytest

from mirnet.sdk import Restorer, artifact, zoo

REPO_DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name", ["denoise-lite", "lowlight-lite"])
def test_bundled_manifest(name):
    path = zoo.bundled()[name]
    manifest = artifact.read_manifest(path, kind="weights")
    assert manifest["variant"] == "lite"
    assert manifest["training"]["steps"] > 0 and manifest["training"]["data"]
    assert manifest["metrics"]["val_psnr"] > 20


def test_default_model_is_bundled():
    assert zoo.DEFAULT_MODEL in zoo.bundled()


def test_lowlight_lite_brightens_a_dark_frame(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path))
    clean = cv2.imread(str(REPO_DATA / "sample_clean.png"))
    dark = (clean.astype(np.float32) * 0.08).round().astype(np.uint8)
    with Restorer("lowlight-lite") as restorer:
        out = restorer.restore(dark)
    assert out.mean() > 4 * dark.mean()
