"""Shared fixtures: tiny models (fast on 2 CPU cores) saved as weights and ONNX once per session."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "model"))

TINY = dict(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from mirnet.sdk.model import MIRNetV2Config, create_model, save_weights

    torch.manual_seed(0)
    model = create_model(MIRNetV2Config(**TINY))
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return save_weights(model, path, variant="tiny")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_weights):
    from mirnet.optimize.export_onnx import export_onnx
    from mirnet.sdk.model import load_model

    return export_onnx(load_model(tiny_weights), tiny_weights.with_suffix(".onnx"), source=tiny_weights)
