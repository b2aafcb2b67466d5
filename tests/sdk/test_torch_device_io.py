"""The PyTorch backend's frame path (pre/post-processing as torch tensor ops, on the model's device),
checked on CPU: the same numbers as the numpy reference and as Restorer's CPU path."""
import numpy as np
import pytest

from mirnet.sdk import Restorer
from mirnet.sdk.errors import ConfigError
from mirnet.sdk.ops import reference as ref

torch = pytest.importorskip("torch")

from mirnet.sdk.backends.torch import TorchBackend, postprocess_frames, preprocess_frames  # noqa: E402

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 7), (17, 31), (8, 8)])
def test_preprocess_frames_equals_reference(hw, order):
    frames = RNG.integers(0, 256, size=(2, *hw, 3), dtype=np.uint8)
    frames[0, 0, 0] = [0, 255, 128]
    for multiple in (1, 4, 8):
        got = preprocess_frames(torch.from_numpy(frames), order, multiple).numpy()
        want = ref.preprocess_batch(list(frames), order=order, multiple=multiple)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_postprocess_frames_equals_reference(dtype, order):
    t = RNG.uniform(-0.25, 1.25, size=(2, 3, 12, 20)).astype(np.float32)
    flat = t.reshape(-1)
    k = RNG.integers(0, 255, size=flat.size // 2)
    flat[:k.size] = ((k + 0.5) / 255).astype(np.float32)  # exact halves round up
    flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 1.0]
    t = t.astype(dtype)
    got = postprocess_frames(torch.from_numpy(t), (10, 17), order).numpy()
    want = np.stack(ref.postprocess_batch(t, (10, 17), order=order))
    assert got.dtype == np.uint8 and got.shape == (2, 10, 17, 3)
    np.testing.assert_array_equal(got, want)


def test_torch_backend_frames_equal_the_cpu_path(tiny_weights):
    backend = TorchBackend(tiny_weights, device="cpu")
    assert not backend.supports_device_io  # the Stream prepares frames on the CPU for a CPU model
    frames = [RNG.integers(0, 256, size=(10, 14, 3), dtype=np.uint8) for _ in range(2)]
    for order in ("bgr", "rgb"):
        got = backend.restore_frames_async(frames, order).result()
        want = Restorer(backend, tile=0).restore_batch(frames, order=order)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.uint8 and g.shape == (10, 14, 3)
            np.testing.assert_array_equal(g, w)
    with pytest.raises(ConfigError, match="camera='nv12': the PyTorch backend takes H x W x 3 frames"):
        backend.restore_frames_async(frames, camera="nv12")
    backend.close()
