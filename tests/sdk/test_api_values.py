"""Bad values given to the Python API are refused where they enter (Restorer, backends, Stream,
EvalSet) with an error naming the value and what is valid, never a TypeError, AttributeError or
an error from deep inside a dependency."""
from __future__ import annotations

import re

import numpy as np
import pytest

from mirnet.sdk import ConfigError, Restorer, Stream
from mirnet.sdk.backends import open_backend


@pytest.mark.parametrize("model", [None, 3, ["a.onnx"]])
def test_restorer_model_of_the_wrong_type(model):
    with pytest.raises(ConfigError, match=re.escape(f"model={model!r}: give a bundled model name")):
        Restorer(model)


@pytest.mark.parametrize("budget", [0, -1, float("nan"), float("inf"), "1024"])
def test_restorer_memory_budget(tiny_onnx, budget):
    with pytest.raises(ConfigError, match=rf"memory_budget_mb={budget!r}: must be a finite number > 0"):
        Restorer(tiny_onnx, memory_budget_mb=budget)


@pytest.mark.parametrize("threads", [0, -3, 1.5, True, "2"])
def test_backend_threads(tiny_onnx, threads):
    with pytest.raises(ConfigError, match=rf"threads={threads!r}: must be an integer >= 1"):
        Restorer(tiny_onnx, threads=threads)
    with pytest.raises(ConfigError, match=rf"threads={threads!r}"):
        open_backend(tiny_onnx, "ort", threads=threads)


def test_torch_backend_threads(tiny_weights):
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match=r"threads=0: must be an integer >= 1"):
        Restorer(tiny_weights, backend="torch", threads=0)


def test_restorer_used_after_close(tiny_onnx):
    restorer = Restorer(tiny_onnx)
    image = np.zeros((8, 8, 3), np.uint8)
    assert restorer.restore(image).shape == (8, 8, 3)
    restorer.close()
    restorer.close()  # closing twice is harmless
    for call in (lambda: restorer.restore(image), lambda: restorer.prepare(image),
                 lambda: restorer.infer_tensor(np.zeros((1, 3, 8, 8), np.float32))):
        with pytest.raises(ConfigError, match="this Restorer was closed"):
            call()


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf")])
def test_stream_fps(fps):
    with pytest.raises(ConfigError, match=rf"fps={fps!r}: must be a finite number > 0"):
        Stream([], None, fps=fps)


def test_evalset_sigma_nan(tmp_path):
    import cv2

    from mirnet.sdk.evalsets import EvalSet

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    for sigma in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=rf"sigma={sigma!r}"):
            EvalSet.from_clean(tmp_path, sigma)
