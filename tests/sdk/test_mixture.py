"""The model's own inputs: one synthesis step shared with training, the recorded training mixture
rebuilt from a manifest, and the choice between pairs, AWGN, camera presets and that mixture."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mirnet.sdk.camera import preset
from mirnet.sdk.degrade import DegradeConfig
from mirnet.sdk.errors import ConfigError
from mirnet.sdk.mixture import Mixture, model_inputs, synthesize

ZOO = Path(__file__).resolve().parents[2] / "sdk" / "zoo"


def scene(h: int = 32, w: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([0.2 + 0.6 * xx / w, 0.3 + 0.4 * yy / h, 0.5 + 0.3 * np.sin(xx / 5)], axis=2)


def test_synthesize_gray_share_is_one_channel_of_noise():
    awgn = DegradeConfig(awgn_sigma=(25, 25))
    gray_seen = colour_seen = 0
    for seed in range(40):
        inp, target = synthesize(scene(), np.random.default_rng(seed), degrade=awgn, gray_prob=0.5)
        if np.array_equal(target[..., 0], target[..., 1]):
            gray_seen += 1
            assert np.array_equal(inp[..., 0], inp[..., 2])  # the noise is gray too
            assert abs(np.std(inp - target) - 25 / 255) < 0.01
        else:
            colour_seen += 1
            assert np.array_equal(target, scene()) and not np.array_equal(inp[..., 0], inp[..., 1])
    assert gray_seen > 10 and colour_seen > 10
    # no gray share: no extra draw, the same noise as the degradation alone
    a, _ = synthesize(scene(), np.random.default_rng(3), degrade=awgn)
    assert np.array_equal(a, awgn.apply(scene(), np.random.default_rng(3)))
    cam, cam_target = synthesize(scene(), np.random.default_rng(3), camera=preset("camera-jpeg"))
    want, want_target = preset("camera-jpeg").apply(scene(), np.random.default_rng(3))
    assert np.array_equal(cam, want) and np.array_equal(cam_target, want_target)


def test_mixture_from_the_bundled_manifest():
    manifest = json.loads((ZOO / "denoise-lite.safetensors.json").read_text())
    mixture = Mixture.from_manifest(manifest)
    clean = [s for s in manifest["training"]["data"] if s.get("clean")]
    assert len(mixture.sources) == len(clean) and abs(mixture.probs.sum() - 1) < 1e-9
    assert "camera model" in mixture.describe() and "AWGN 0-50" in mixture.describe()
    a = mixture.apply(scene(), np.random.default_rng([0, 1]))
    b = mixture.apply(scene(), np.random.default_rng([0, 1]))
    assert np.array_equal(a[0], b[0]) and a[0].shape == (32, 48, 3)
    assert Mixture.from_manifest({}) is None and Mixture.from_manifest({"training": {"data": []}}) is None
    assert Mixture.from_records([{"low": "a", "high": "b"}]) is None  # paired sources need their folders
    with pytest.raises(ConfigError, match=r"training.data\[0\].*awgn_sigma"):
        Mixture.from_records([{"clean": "x", "degrade": {"awgn_sigma": 25}}])
    with pytest.raises(ConfigError, match=r"training.data\[0\]: gray_prob=1.5 is not a probability"):
        Mixture.from_records([{"clean": "x", "degrade": {"awgn_sigma": [0, 50]}, "gray_prob": 1.5}])
    with pytest.raises(ConfigError, match=r"training.data\[1\] must be a mapping"):
        Mixture.from_records([{"clean": "x"}, "oops"])


def _images(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.png"), (scene(40, 56)[..., ::-1] * 255).astype(np.uint8))
    return folder


def test_model_inputs_order_and_errors(tmp_path):
    manifest = {"training": {"data": [{"clean": "x", "degrade": {"awgn_sigma": [0, 50]}, "gray_prob": 0.3}]}}
    clean = _images(tmp_path / "clean")
    trained = model_inputs(manifest, folder=clean)
    assert trained.kind == "training" and "gray 30%" in trained.description
    assert model_inputs(manifest, sigma=15).record() == {"kind": "awgn", "value": 15.0,
                                                         "description": "AWGN sigma 15 (clipped)"}
    assert model_inputs(manifest, protocol="camera-mono").kind == "protocol"
    pairs = tmp_path / "pairs"
    _images(pairs / "NOISY"), _images(pairs / "GT")
    assert model_inputs(manifest, folder=pairs).kind == "pairs"  # a paired folder is used as pairs
    found = model_inputs(None, pairs=str(pairs)).evalset(None, crop=32)
    assert len(found) == 2 and found[0][0].shape == (32, 32, 3)
    with pytest.raises(ConfigError, match="no training record.*--sigma S"):
        model_inputs({}, folder=clean, model="bare.safetensors")
    with pytest.raises(ConfigError, match="--pairs and --sigma"):
        model_inputs(manifest, pairs=str(pairs), sigma=5)
    with pytest.raises(ConfigError, match="sub-folders named"):
        model_inputs(manifest, pairs=str(clean))
    with pytest.raises(ConfigError, match="valid camera protocols"):
        model_inputs(manifest, protocol="camera-vhs")
    with pytest.raises(ConfigError, match="folder of clean images"):
        trained.evalset(None)


def test_evalset_from_the_mixture_is_seeded(tmp_path):
    clean = _images(tmp_path / "clean", 3)
    inputs = model_inputs({"training": {"data": [{"clean": "x", "degrade": {"awgn_sigma": [10, 40]}}]}})
    a = inputs.evalset(str(clean), crop=32, seed=1)
    b = inputs.evalset(str(clean), crop=32, seed=1)
    c = inputs.evalset(str(clean), crop=32, seed=2)
    assert len(a) == 3 and a.names == ["im0.png", "im1.png", "im2.png"] and "AWGN 10-40" in a.description
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])
    noise = [np.std(inp - target) for inp, target in a]
    assert all(8 / 255 < n < 42 / 255 for n in noise) and len(set(np.round(noise, 4))) == 3  # a sigma each
