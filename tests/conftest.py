"""Shared fixtures: tiny models (fast on 2 CPU cores) saved as weights and ONNX once per session,
a temporary cache for the whole session (no test writes into the user's ~/.cache/mirnet-edge) and
a small full-able disk."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "model"))

TINY = dict(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)
#: the training record of the tiny test weights: clean images + AWGN sigma 0-50, so calibration,
#: gates and pruning re-synthesise their inputs (mirnet.sdk.mixture) as for a trained model
TINY_TRAINING = {"name": "tiny", "data": [{"clean": "train", "weight": 1.0, "degrade": {"awgn_sigma": [0, 50]}}]}


@pytest.fixture(scope="session", autouse=True)
def temporary_cache(tmp_path_factory):
    """``MIRNET_CACHE`` points into the session's temporary folder for every test (and every
    subprocess a test starts with the inherited environment)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIRNET_CACHE", str(tmp_path_factory.mktemp("mirnet-cache")))
        yield


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs mounted on a temporary folder, to fill up (needs root; skipped otherwise)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
        why = proc.stderr.strip() or f"exit status {proc.returncode}"
    except OSError as exc:
        proc, why = None, str(exc)
    if proc is None or proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (root only): {why}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from mirnet.sdk.model import MIRNetV2Config, create_model, save_weights

    torch.manual_seed(0)
    model = create_model(MIRNetV2Config(**TINY))
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_weights(model, path, variant="tiny", training=TINY_TRAINING)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_weights):
    from mirnet.optimize.export_onnx import export_onnx
    from mirnet.sdk.model import load_model

    return export_onnx(load_model(tiny_weights), tiny_weights.with_suffix(".onnx"), source=tiny_weights)


@pytest.fixture(scope="session")
def gray_onnx(tiny_weights, tmp_path_factory):
    """A one-channel model made from the tiny colour one (to_gray), then moved away from it, so that
    which model restored a frame shows in the numbers."""
    torch = pytest.importorskip("torch")
    from mirnet.optimize.export_onnx import export_onnx
    from mirnet.sdk.model import load_model, save_weights
    from mirnet.sdk.model.arch import to_gray

    gray = to_gray(load_model(tiny_weights))
    with torch.no_grad():
        gray.conv_out.weight.mul_(3.0)
    weights = save_weights(gray, tmp_path_factory.mktemp("gray") / "tiny-gray.safetensors")
    return export_onnx(load_model(weights), weights.with_suffix(".onnx"), source=weights)
