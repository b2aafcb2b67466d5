"""The device streaming path on a real GPU: uint8 frames up, CUDA pre-processing, the TensorRT
engine (one execution context per buffer set and stream), CUDA post-processing, uint8 down, alone and
under Stream, against the CPU path; and the PyTorch backend's frame path on CUDA. Each test skips
with the reason where TensorRT, the CUDA kernels, a GPU or torch is missing."""
from __future__ import annotations

import numpy as np
import pytest

from mirnet.sdk import Restorer, Stream
from mirnet.sdk.ops import cuda as cuda_ops
from mirnet.sdk.ops import reference as ref

pytestmark = pytest.mark.gpu
PROFILE = "1x3x16x16:2x3x40x56:2x3x64x64"
RNG = np.random.default_rng(5)


def _close(got, want):
    """uint8 images equal up to TensorRT's run-to-run rounding (at most 1, almost never)."""
    assert got.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


@pytest.fixture(scope="module")
def engine(tiny_onnx, tmp_path_factory):
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or the PyPI stub failing to fetch the real wheel
        pytest.skip(f"TensorRT is not importable here ({type(exc).__name__}: {exc}); needs TensorRT 10.x/11.x "
                    f"and an NVIDIA GPU (JetPack, or pip install 'mirnet-edge[trt]')")
    if not cuda_ops.available():
        pytest.skip(f"the CUDA pre/post-processing kernels are not usable: {cuda_ops.info().get('error')}")
    from mirnet.optimize.build_engine import build_engine

    return build_engine(tiny_onnx, tmp_path_factory.mktemp("engine") / "tiny.engine", profiles=[PROFILE],
                        workspace_mb=512)


@pytest.fixture
def backend(engine):
    from mirnet.sdk.backends.tensorrt import TrtBackend

    with TrtBackend(engine, buffers=2) as opened:
        yield opened


def _frames(n, shape):
    return [RNG.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


@pytest.mark.trt
def test_device_path_equals_cpu_path(backend):
    assert backend.supports_device_io
    slots = backend._slots
    assert len({id(s.context) for s in slots}) == len({s.stream.handle for s in slots}) == len(slots) == 2
    restorer = Restorer(backend, tile=0)
    batches = [_frames(2, (37, 50, 3)), _frames(1, (37, 50, 3)), _frames(2, (20, 30, 3))]
    for order in ("bgr", "rgb"):
        futures = [backend.restore_frames_async(b, order) for b in batches]  # two in flight at once
        for future, frames in zip(futures, batches, strict=True):
            for got, frame in zip(future.result(), frames, strict=True):
                _close(got, restorer.restore(frame, order=order))


@pytest.mark.trt
@pytest.mark.parametrize("camera", ["nv12", "yuyv"])
def test_device_path_camera_frames(backend, camera):
    shape, convert = {"nv12": ((48, 64), ref.preprocess_nv12), "yuyv": ((32, 64, 2), ref.preprocess_yuyv)}[camera]
    frames = _frames(2, shape)
    got = backend.restore_frames_async(frames, "bgr", camera=camera).result()
    want = ref.postprocess_batch(backend.infer(np.concatenate([convert(f) for f in frames])), (32, 64))
    for g, w in zip(got, want, strict=True):
        _close(g, w)


@pytest.mark.trt
def test_stream_runs_on_the_device(backend, monkeypatch):
    calls = []
    kernel = cuda_ops.preprocess_device

    def counted(*args, **kwargs):
        calls.append(args[2])  # frames in the batch
        return kernel(*args, **kwargs)

    monkeypatch.setattr(cuda_ops, "preprocess_device", counted)
    restorer = Restorer(backend, tile=0)
    frames = _frames(9, (36, 52, 3))
    got = []
    stats = Stream(iter(frames), lambda image, frame: got.append(image), model=restorer, policy="block",
                   batch=2).run()
    assert stats["frames"] == 9 and sum(calls) == 9  # every frame pre-processed on the GPU
    for g, frame in zip(got, frames, strict=True):
        _close(g, restorer.restore(frame))


def test_torch_frames_on_cuda(tiny_weights):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    from mirnet.sdk.backends.torch import TorchBackend, postprocess_frames, preprocess_frames

    frames = np.stack(_frames(2, (17, 31, 3)))
    for order in ("bgr", "rgb"):  # the device ops give the reference's numbers, bit for bit
        pre = preprocess_frames(torch.from_numpy(frames).cuda(), order, 8).cpu().numpy()
        np.testing.assert_array_equal(pre, ref.preprocess_batch(list(frames), order=order, multiple=8))
        t = RNG.uniform(-0.25, 1.25, size=(2, 3, 24, 32)).astype(np.float32)
        post = postprocess_frames(torch.from_numpy(t).cuda(), (17, 31), order).cpu().numpy()
        np.testing.assert_array_equal(post, np.stack(ref.postprocess_batch(t, (17, 31), order=order)))
    with TorchBackend(tiny_weights, device="cuda") as backend:
        assert backend.supports_device_io
        got = backend.restore_frames_async(list(frames)).result()
        want = Restorer(backend, tile=0).restore_batch(list(frames))
    for g, w in zip(got, want, strict=True):
        _close(g, w)
