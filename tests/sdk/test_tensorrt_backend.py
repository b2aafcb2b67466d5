"""TensorRT backend without TensorRT or a GPU: profile selection, buffer sizing, the environment check
and rebuild command, backend routing, CUDA error handling, and the backend's buffer/stream/context/
graph logic and device path (uint8 up, CUDA pre-processing, engine, CUDA post-processing, uint8 down,
also under Stream) run against small CPU stand-ins for ``tensorrt``, ``cuda_mem`` and the CUDA
kernels of ``mirnet.sdk.ops.cuda`` (test-only, below)."""
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from mirnet.sdk import Restorer, Stream, artifact
from mirnet.sdk.backends import open_backend
from mirnet.sdk.backends import tensorrt as trtb
from mirnet.sdk.backends import tensorrt_env as trt_env
from mirnet.sdk.backends.base import Backend, InputSpec
from mirnet.sdk.backends.cuda_mem import CudaError, check, format_version
from mirnet.sdk.errors import (ArtifactError, ConfigError, EngineMismatchError, InputError,
                               MissingDependencyError)
from mirnet.sdk.model.config import MIRNetV2Config
from mirnet.sdk.ops import reference as ref

Profile = trt_env.Profile
TINY = MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)
P_SMALL = Profile((1, 3, 8, 8), (1, 3, 16, 16), (2, 3, 32, 32))
P_LARGE = Profile((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 128, 128))
BUILD = {"tensorrt": "10.3.0.26", "gpu_name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7",
         "cuda_runtime": "12.6", "cuda_driver": "12.6"}
HERE = dict(BUILD, dla_cores=2)


def _manifest(**engine):
    settings = {"input_name": "input", "profiles": [P_SMALL.to_dict()], "fp16": True, "strongly_typed": False,
                "qdq": False, "builder_flags": ["FP16"], "workspace_mb": None, "dla_core": None,
                "version_compatible": False, "timing_cache": None}
    settings.update(engine)
    return {"file": "m.engine", "source": {"file": "m.onnx", "sha256": "0" * 64}, "build": dict(BUILD),
            "engine": settings}


# ---------------------------------------------------------------------------- pure helpers
def test_profile_basics():
    assert P_SMALL.contains((2, 3, 8, 32)) and not P_SMALL.contains((3, 3, 8, 8))
    assert not P_SMALL.contains((1, 3, 8)) and not P_SMALL.contains((1, 3, 4, 8))
    assert P_SMALL.spec == "1x3x8x8:1x3x16x16:2x3x32x32"
    assert Profile.from_dict(P_SMALL.to_dict()) == P_SMALL
    assert str(P_SMALL) == "min 1x3x8x8, opt 1x3x16x16, max 2x3x32x32"


def test_select_profile():
    profiles = [P_LARGE, P_SMALL]
    assert trt_env.select_profile((1, 3, 16, 16), profiles) == 1
    assert trt_env.select_profile((1, 3, 32, 32), profiles) == 1  # in both: the smaller max wins
    assert trt_env.select_profile((1, 3, 64, 32), profiles) == 0
    with pytest.raises(InputError, match=r"input shape 1x3x256x256 is outside every optimization profile .*"
                                         r"\[0\] min 1x3x32x32, opt 1x3x64x64, max 1x3x128x128; \[1\] min 1x3x8x8"):
        trt_env.select_profile((1, 3, 256, 256), profiles)
    with pytest.raises(InputError, match="--profile MIN:OPT:MAX"):
        trt_env.select_profile((2, 3, 64, 64), profiles)


def test_buffer_sizing():
    assert trt_env.tensor_nbytes((1, 3, 720, 1280), np.float32) == 3 * 720 * 1280 * 4
    assert trt_env.tensor_nbytes((2, 3, 8, 8), "float16") == 2 * 3 * 64 * 2
    assert trt_env.tensor_nbytes((1, 3, 8, 8), "HALF") == 384
    assert trt_env.tensor_nbytes((1, 3, 8, 8), SimpleNamespace(name="FLOAT")) == 768  # a trt.DataType
    assert trt_env.tensor_nbytes((4,), SimpleNamespace(name="INT8")) == 4
    with pytest.raises(ArtifactError, match="unresolved"):
        trt_env.tensor_nbytes((1, 3, -1, 8), np.float32)
    assert trt_env.max_shape([P_SMALL, P_LARGE]) == (2, 3, 128, 128)
    spec = InputSpec(channels=3, out_channels=3, pad_multiple=4, scale=2)
    assert trt_env.output_shape((2, 3, 128, 64), spec) == (2, 3, 256, 128)
    assert trt_env.numpy_dtype(SimpleNamespace(name="HALF")) == np.float16
    with pytest.raises(ArtifactError, match="BF16 has no numpy equivalent"):
        trt_env.numpy_dtype(SimpleNamespace(name="BF16"))


def test_parse_version():
    assert trt_env.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert trt_env.parse_version("10.8.0.post1") == (10, 8, 0)
    assert trt_env.parse_version(None) == () and trt_env.parse_version("dev") == ()


# ---------------------------------------------------------------------------- environment check
def test_environment_match_passes():
    trt_env.check_engine_environment(_manifest(), dict(HERE, tensorrt="10.3.1"))  # same major.minor


def test_tensorrt_version_mismatch_names_both_and_rebuild():
    with pytest.raises(EngineMismatchError) as info:
        trt_env.check_engine_environment(_manifest(), dict(HERE, tensorrt="10.7.0"), "models/m.engine")
    msg = str(info.value)
    assert "TensorRT: engine built with 10.3.0.26, here 10.7.0" in msg
    assert msg.endswith("\n  mirnet build-engine m.onnx -o models/m.engine --force --fp16 "
                        "--profile 1x3x8x8:1x3x16x16:2x3x32x32")


def test_version_compatible_rules():
    vc = _manifest(version_compatible=True)
    trt_env.check_engine_environment(vc, dict(HERE, tensorrt="10.9.0"))  # newer, same major: fine
    with pytest.raises(EngineMismatchError, match="same major version, same or newer"):
        trt_env.check_engine_environment(vc, dict(HERE, tensorrt="10.1.0"))
    with pytest.raises(EngineMismatchError, match="--version-compatible"):
        trt_env.check_engine_environment(vc, dict(HERE, tensorrt="11.0.0"))


def test_compute_capability_and_gpu_name():
    with pytest.raises(EngineMismatchError, match=r"compute capability: engine built for 8.7 \(NVIDIA Jetson AGX "
                                                  r"Orin\), here 9.0 \(NVIDIA H100 80GB HBM3\)"):
        trt_env.check_engine_environment(_manifest(), dict(HERE, compute_capability="9.0",
                                                        gpu_name="NVIDIA H100 80GB HBM3"))
    other = dict(HERE, gpu_name="NVIDIA Jetson Orin NX")
    with pytest.raises(EngineMismatchError, match="built on NVIDIA Jetson AGX Orin, here NVIDIA Jetson Orin NX"):
        trt_env.check_engine_environment(_manifest(), other)
    trt_env.check_engine_environment(_manifest(), other, check_gpu_name=False)


def test_dla_and_missing_build_record():
    with pytest.raises(EngineMismatchError, match=r"(?s)DLA core 1, this machine has 0 DLA core\(s\).*--dla 1"):
        trt_env.check_engine_environment(_manifest(dla_core=1), dict(HERE, dla_cores=0))
    bare = _manifest()
    bare["build"] = {}
    with pytest.raises(EngineMismatchError, match="records no usable TensorRT version"):
        trt_env.check_engine_environment(bare, HERE)


def test_rebuild_command_full():
    m = _manifest(profiles=[P_SMALL.to_dict(), P_LARGE.to_dict()], fp16=False, strongly_typed=True, qdq=False,
                  workspace_mb=512, timing_cache="cache dir/tc.bin", dla_core=0, version_compatible=True)
    assert trt_env.rebuild_command(m) == (
        "mirnet build-engine m.onnx -o m.engine --force --strongly-typed --profile 1x3x8x8:1x3x16x16:2x3x32x32 "
        "--profile 1x3x32x32:1x3x64x64:1x3x128x128 --workspace 512 --timing-cache 'cache dir/tc.bin' --dla 0 "
        "--version-compatible")


# ---------------------------------------------------------------------------- cuda_mem error handling
class _Status(int):
    pass


def test_cuda_check_unpacks_and_raises():
    assert check((_Status(0),), "cudaFree") is None
    assert check((_Status(0), 1234), "cudaMalloc") == 1234
    assert check((_Status(0), 1, 2), "x") == (1, 2)
    with pytest.raises(CudaError, match=r"cudaMalloc failed \(CUDA error 2\); out of GPU memory") as info:
        check((_Status(2), None), "cudaMalloc", rt=None)
    assert info.value.code == 2
    assert format_version(12060) == "12.6" and format_version(13040) == "13.4" and format_version(0) == "none"


def test_cuda_without_gpu_raises_typed_error():
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    from mirnet.sdk.backends import cuda_mem

    if int(runtime.cudaGetDeviceCount()[0]) == 0:
        pytest.skip("a GPU is visible here; this test checks the error path on machines without one")
    with pytest.raises(CudaError, match=r"cudaGetDeviceCount failed \(cudaError\w+: .*\)"):
        cuda_mem.device_info(0)
    with pytest.raises(CudaError, match="cudaMalloc failed"):
        cuda_mem.DeviceBuffer(1024)


# ---------------------------------------------------------------------------- routing
def _engine_file(tmp_path, name="m.engine", data=b"serialized", **engine):
    path = tmp_path / name
    path.write_bytes(data)
    fields = _manifest(**engine)
    manifest = artifact.make_manifest(path, kind="engine", config=TINY.to_dict(), precision="fp16",
                                      build=fields["build"], engine=fields["engine"])
    manifest["source"] = fields["source"]
    artifact.write_manifest(path, manifest)
    return path


def test_open_backend_routes_engines(tmp_path, monkeypatch):
    engine = _engine_file(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="TensorRT .*JetPack.*mirnet-edge\\[trt\\]"):
        open_backend(engine)
    with pytest.raises(ConfigError, match="--backend trt"):
        open_backend(engine, backend="ort")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--backend trt runs TensorRT engines"):
        open_backend(tmp_path / "m.onnx", backend="trt")
    with pytest.raises(ConfigError, match="cuda or cuda:N"):
        open_backend(engine, device="tpu")
    lone = tmp_path / "lone.plan"
    lone.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="TensorRT engine without its manifest lone.plan.json"):
        open_backend(lone)


# ---------------------------------------------------------------------------- backend on CPU stand-ins
def _fake_cuda():
    """Test-only CPU stand-in for ``cuda_mem``: memory is numpy bytes behind fake pointers, copies and
    kernels run immediately, and a captured graph replays the work recorded during capture.
    ``state.calls`` logs the copies (and the fake kernels and engine) with their stream."""
    mem, state = {}, SimpleNamespace(next=0x1000, capture=None, capture_ok=True, captures=0, launches=0,
                                     live=set(), calls=[])

    class Buffer:
        def __init__(self, nbytes):
            self.ptr, self.nbytes = state.next, nbytes
            state.next += nbytes + 256
            mem[self.ptr] = np.zeros(nbytes, np.uint8)
            state.live.add(self)

        def array(self, dtype, shape):
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            return mem[self.ptr][:n].view(dtype).reshape(shape)

        def free(self):
            mem.pop(self.ptr, None)
            state.live.discard(self)

    class Stream(Buffer):
        def __init__(self):
            super().__init__(1)
            self.handle = self.ptr

        def synchronize(self):
            pass

    class CudaGraph:
        def __init__(self, work):
            self.work = work

        @classmethod
        def capture(cls, stream, fn):
            state.captures += 1
            state.capture = []
            ok = fn() and state.capture_ok
            work, state.capture = state.capture, None
            return cls(work) if ok else None

        def launch(self, stream):
            state.launches += 1
            for op in self.work:
                op()

        def free(self):
            pass

    def at(ptr, dtype, shape):
        """numpy view of ``shape`` ``dtype`` elements at a device address (inside one allocation)."""
        for base, data in mem.items():
            if base <= ptr < base + data.size:
                n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                assert ptr - base + n <= data.size, f"{n} bytes at {ptr:#x} run past its allocation"
                return data[ptr - base:ptr - base + n].view(dtype).reshape(shape)
        raise AssertionError(f"no fake allocation at {ptr:#x}")

    def copier(kind):
        def copy(dst, src, nbytes, stream):
            state.calls.append((kind, stream.handle, nbytes))
            mem[dst.ptr][:nbytes] = mem[src.ptr][:nbytes]
        return copy

    return SimpleNamespace(CudaError=CudaError, DeviceBuffer=Buffer, PinnedBuffer=Buffer, Stream=Stream,
                           CudaGraph=CudaGraph, memcpy_htod_async=copier("htod"),
                           memcpy_dtoh_async=copier("dtoh"), mem=mem, at=at, state=state)


def _fake_kernels(cuda, available=True):
    """Test-only CPU stand-in for the device-pointer kernels of ``mirnet.sdk.ops.cuda``: the numpy
    reference applied to the fake memory at those pointers, each call logged with its stream."""
    calls = cuda.state.calls

    def preprocess_device(src, dst, n, h, w, *, src_dtype, order, multiple, dst_dtype, stream):
        calls.append(("preprocess", stream, (n, h, w, order, np.dtype(dst_dtype).name)))
        y = ref.preprocess_batch(list(cuda.at(src, src_dtype, (n, h, w, 3))), order=order, multiple=multiple,
                                 dtype=dst_dtype)
        cuda.at(dst, dst_dtype, y.shape)[...] = y
        return y.shape

    def postprocess_device(src, dst, n, h, w, out_hw, *, src_dtype, order, dst_dtype, stream):
        calls.append(("postprocess", stream, (n, h, w, order, np.dtype(src_dtype).name)))
        images = np.stack(ref.postprocess_batch(cuda.at(src, src_dtype, (n, 3, h, w)), out_hw, order=order,
                                                out_dtype=dst_dtype))
        cuda.at(dst, dst_dtype, images.shape)[...] = images

    def camera(kind, convert, frame_shape):
        def kernel(src, dst, h, w, *, multiple, dst_dtype, stream):
            calls.append((kind, stream, (1, h, w)))
            y = convert(cuda.at(src, np.uint8, frame_shape(h, w)), multiple=multiple, dtype=dst_dtype)
            cuda.at(dst, dst_dtype, y.shape)[...] = y
            return y.shape
        return kernel

    return SimpleNamespace(
        available=lambda: available, info=lambda: {"error": "no CUDA-capable device is detected"},
        preprocess_device=preprocess_device, postprocess_device=postprocess_device,
        preprocess_nv12_device=camera("nv12", ref.preprocess_nv12, lambda h, w: (h * 3 // 2, w)),
        preprocess_yuyv_device=camera("yuyv", ref.preprocess_yuyv, lambda h, w: (h, w, 2)))


def _fake_tensorrt(cuda, profiles, names=("input", "output"), deserializes=True, fn=lambda x: 2 * x + 1,
                   dtype="FLOAT"):
    """Test-only stand-in for ``tensorrt``'s runtime: the "engine" computes ``fn`` (default 2 * x + 1)
    in float32 on ``dtype`` ("FLOAT" or "HALF") I/O tensors; executions are logged with the context
    and stream they ran on."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.26"
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    stats = SimpleNamespace(deserialized=0, executes=0, contexts=[])
    np_dtype = {"FLOAT": np.float32, "HALF": np.float16}[dtype]

    class Context:
        def __init__(self):
            self.profile, self.shape, self.addr = 0, None, {}
            self.index = len(stats.contexts)
            stats.contexts.append(self)

        def set_optimization_profile_async(self, index, stream):
            self.profile = index
            return True

        def set_input_shape(self, name, shape):
            ok = profiles[self.profile].contains(shape)
            self.shape = tuple(shape) if ok else self.shape
            return ok

        def get_tensor_shape(self, name):
            return self.shape

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            src, dst, shape = self.addr[names[0]], self.addr[names[1]], self.shape

            def op():
                stats.executes += 1
                cuda.state.calls.append(("execute", stream, self.index))
                x = cuda.at(src, np_dtype, shape).astype(np.float32)
                cuda.at(dst, np_dtype, shape)[...] = fn(x)

            if cuda.state.capture is not None:
                cuda.state.capture.append(op)
            else:
                op()
            return True

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = len(profiles)

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == names[0] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return SimpleNamespace(name=dtype)

        def get_tensor_profile_shape(self, name, i):
            return [profiles[i].min, profiles[i].opt, profiles[i].max]

        def create_execution_context(self):
            return Context()

    class Runtime:
        num_DLA_cores = 0

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            stats.deserialized += 1
            return Engine() if deserializes else None

    trt.Runtime = Runtime
    return trt, stats


def _mix(x):
    """A fake network that moves values across channels, rows and columns (and the last row and column
    in from the padding), so channel-order, padding and crop mistakes change the output."""
    return np.float32(0.9) * np.roll(x, (-1, -1, -1), axis=(1, 2, 3)) + np.float32(0.05)


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    def install(profiles=(P_SMALL, P_LARGE), env=HERE, kernels=True, **kwargs):
        cuda = _fake_cuda()
        trt, stats = _fake_tensorrt(cuda, list(profiles), **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trtb, "_cuda_mem", lambda: cuda)
        monkeypatch.setattr(trtb, "_cuda_ops", lambda: _fake_kernels(cuda, available=kernels))
        monkeypatch.setattr(trtb, "runtime_environment", lambda trt, device=0, runtime=None: dict(env))
        engine = _engine_file(tmp_path, profiles=[p.to_dict() for p in profiles])
        return engine, cuda, stats
    return install


def _batch(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _frames(n, shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype) for _ in range(n)]


def test_mismatch_refused_before_deserializing(fake_env):
    engine, _, stats = fake_env(env=dict(HERE, compute_capability="9.0"))
    with pytest.raises(EngineMismatchError, match="mirnet build-engine m.onnx -o .*m.engine --force"):
        trtb.TrtBackend(engine)
    assert stats.deserialized == 0


def test_deserialize_failure(fake_env):
    engine, cuda, _ = fake_env(deserializes=False)
    with pytest.raises(EngineMismatchError, match="could not deserialize this engine"):
        trtb.TrtBackend(engine)
    assert not cuda.state.live


def test_io_names_must_match_manifest(fake_env):
    engine, _, _ = fake_env(names=("images", "output"))
    with pytest.raises(ArtifactError, match=r"inputs \['images'\].*do not match its manifest"):
        trtb.TrtBackend(engine)


def test_infer_profiles_and_buffers(fake_env):
    engine, cuda, stats = fake_env()
    with trtb.TrtBackend(engine, buffers=1) as backend:
        assert backend.profiles == [P_SMALL, P_LARGE] and backend.max_input_shape == (2, 3, 128, 128)
        in_sizes = sorted(b.nbytes for b in cuda.state.live)
        assert in_sizes.count(2 * 3 * 128 * 128 * 4) == 4  # pinned + device, input + output, sized from max
        x = _batch((2, 3, 16, 24))
        np.testing.assert_allclose(backend.infer(x), 2 * x + 1)
        [context] = stats.contexts
        assert context.profile == 0
        y = _batch((1, 3, 64, 96), 1)
        np.testing.assert_allclose(backend.infer(y), 2 * y + 1)
        assert context.profile == 1
        with pytest.raises(InputError, match="outside every optimization profile"):
            backend.infer(_batch((1, 3, 256, 256)))
        with pytest.raises(InputError, match="multiples of 4"):
            backend.infer(_batch((1, 3, 18, 16)))
    assert not cuda.state.live  # close() freed every buffer and stream
    with pytest.raises(InputError, match="closed"):
        backend.infer(x)
    backend.close()  # idempotent


def test_cuda_graph_captured_after_first_run_then_replayed(fake_env):
    engine, cuda, stats = fake_env()
    with trtb.TrtBackend(engine, buffers=1) as backend:
        for seed in range(3):
            x = _batch((1, 3, 16, 16), seed)
            np.testing.assert_allclose(backend.infer(x), 2 * x + 1)  # replays see the new data
        assert (cuda.state.captures, cuda.state.launches, stats.executes) == (1, 2, 3)
        x = _batch((1, 3, 8, 8))  # new shape: graph dropped, plain run, new capture
        np.testing.assert_allclose(backend.infer(x), 2 * x + 1)
        np.testing.assert_allclose(backend.infer(x), 2 * x + 1)
        assert (cuda.state.captures, cuda.state.launches) == (2, 3)


def test_cuda_graph_capture_failure_falls_back(fake_env):
    engine, cuda, stats = fake_env()
    cuda.state.capture_ok = False
    with trtb.TrtBackend(engine, buffers=1) as backend:
        for seed in range(3):
            x = _batch((1, 3, 16, 16), seed)
            np.testing.assert_allclose(backend.infer(x), 2 * x + 1)
    assert (cuda.state.captures, cuda.state.launches, stats.executes) == (1, 0, 3)  # not retried


def test_cuda_graphs_off(fake_env):
    engine, cuda, _ = fake_env()
    with trtb.TrtBackend(engine, cuda_graphs=False) as backend:
        for seed in range(3):
            backend.infer(_batch((1, 3, 16, 16), seed))
    assert cuda.state.captures == 0


def _executions(cuda):
    """(stream, context index) of every engine execution logged so far."""
    return [(stream, ctx) for kind, stream, ctx in cuda.state.calls if kind == "execute"]


def test_double_buffering_and_pipeline(fake_env):
    engine, cuda, stats = fake_env()
    with trtb.TrtBackend(engine) as backend:
        batches = [_batch((1, 3, 16, 16), s) for s in range(5)]
        futures = [backend.infer_async(b) for b in batches[:3]]  # the third reuses the first's buffers
        for fut, b in zip(futures, batches):
            np.testing.assert_allclose(fut.result(), 2 * b + 1)
        outs = list(backend.pipeline(batches))
        assert len(outs) == 5
        for out, b in zip(outs, batches):
            np.testing.assert_allclose(out, 2 * b + 1)
        pending = backend.infer_async(batches[0])
    np.testing.assert_allclose(pending.result(), 2 * batches[0] + 1)  # readable after close()
    assert not cuda.state.live
    # two buffer sets, each with its own execution context bound to its own stream
    runs = _executions(cuda)
    assert len(stats.contexts) == 2 and len(runs) == 9
    streams = {ctx: {stream for stream, c in runs if c == ctx} for ctx in (0, 1)}
    assert all(len(s) == 1 for s in streams.values()) and streams[0] != streams[1]
    assert [ctx for _, ctx in runs] == [0, 1] * 4 + [0]  # used in turn


def test_each_buffer_set_keeps_its_own_profile_and_shape(fake_env):
    engine, _, stats = fake_env()
    with trtb.TrtBackend(engine) as backend:
        small, large = _batch((1, 3, 16, 16)), _batch((1, 3, 64, 64), 1)
        a, b = backend.infer_async(small), backend.infer_async(large)  # in flight together
        np.testing.assert_allclose(a.result(), 2 * small + 1)
        np.testing.assert_allclose(b.result(), 2 * large + 1)
        first, second = stats.contexts
        assert (first.profile, first.shape, second.profile, second.shape) == (0, small.shape, 1, large.shape)


def test_restorer_runs_an_engine(fake_env):
    engine, _, _ = fake_env()
    with Restorer(engine, tile=0) as restorer:
        assert restorer.backend.name == "tensorrt"
        out = restorer.restore(np.zeros((10, 12, 3), np.uint8))  # padded to 12x12 inside the profile
    assert out.shape == (10, 12, 3) and (out == 255).all()  # 2 * 0 + 1 clipped to white


# ---------------------------------------------------------------------------- device path (uint8 in and out)
def _device_calls(cuda):
    """The logged calls with the stream handles replaced by 0, 1, ... in order of appearance."""
    ids: dict[int, int] = {}
    return [(kind, ids.setdefault(stream, len(ids)), arg) for kind, stream, arg in cuda.state.calls]


@pytest.mark.parametrize("dtype", ["FLOAT", "HALF"])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_device_path_equals_the_cpu_path(fake_env, dtype, order):
    engine, cuda, _ = fake_env(fn=_mix, dtype=dtype)
    frames = _frames(2, (10, 14, 3))  # padded to 12 x 16 on the device
    with trtb.TrtBackend(engine) as backend:
        assert backend.supports_device_io
        cuda.state.calls.clear()
        future = backend.restore_frames_async(frames, order)
        got = future.result()
        in_type = {"FLOAT": "float32", "HALF": "float16"}[dtype]
        assert _device_calls(cuda) == [  # uint8 up, pre, engine, post, uint8 down: one stream, in order
            ("htod", 0, 2 * 10 * 14 * 3), ("preprocess", 0, (2, 10, 14, order, in_type)), ("execute", 0, 0),
            ("postprocess", 0, (2, 12, 16, order, in_type)), ("dtoh", 0, 2 * 10 * 14 * 3)]
        assert future.result() is got  # waited once
        want = Restorer(backend, tile=0).restore_batch(frames, order=order)
    assert len(got) == 2
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.uint8 and g.shape == (10, 14, 3)
        np.testing.assert_array_equal(g, w)
    assert not cuda.state.live  # the device path's buffers are freed with the rest


@pytest.mark.parametrize("camera", ["nv12", "yuyv"])
def test_device_path_camera_frames(fake_env, camera):
    engine, cuda, _ = fake_env(fn=_mix)
    shape, convert = {"nv12": ((15, 14), ref.preprocess_nv12), "yuyv": ((10, 14, 2), ref.preprocess_yuyv)}[camera]
    frames = _frames(2, shape, seed=3)
    with trtb.TrtBackend(engine) as backend:
        cuda.state.calls.clear()
        got = backend.restore_frames_async(frames, "bgr", camera=camera).result()
        assert [c[0] for c in _device_calls(cuda)] == ["htod", camera, camera, "execute", "postprocess", "dtoh"]
        tensor = np.concatenate([convert(f) for f in frames])
        want = ref.postprocess_batch(backend.infer(tensor), (10, 14), order="bgr")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_device_path_contexts_and_streams_per_buffer_set(fake_env):
    engine, cuda, stats = fake_env(fn=_mix)
    with trtb.TrtBackend(engine, buffers=2) as backend:
        batches = [_frames(1, (10, 14, 3), seed) for seed in range(5)]
        futures = [backend.restore_frames_async(b) for b in batches[:2]]  # both in flight
        futures += [backend.restore_frames_async(b) for b in batches[2:]]
        got = [f.result()[0] for f in futures]
        restorer = Restorer(backend, tile=0)
        want = [restorer.restore(b[0]) for b in batches]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    calls = _device_calls(cuda)[:5 * 5]  # the device batches, before the CPU-path check
    assert len(stats.contexts) == 2
    for k in range(5):  # batch k: its whole sequence on buffer set k % 2's stream and context
        kinds = [(kind, stream) for kind, stream, _ in calls[5 * k:5 * k + 5]]
        assert kinds == [(kind, k % 2) for kind in ("htod", "preprocess", "execute", "postprocess", "dtoh")]
        assert calls[5 * k + 2][2] == k % 2  # the execution context of that buffer set


def test_device_path_refuses_what_it_cannot_take(fake_env):
    engine, _, _ = fake_env()
    with trtb.TrtBackend(engine) as backend:
        with pytest.raises(InputError, match=r"frame 1: \(10, 14, 3\) uint16; the device path takes uint8"):
            backend.restore_frames_async(_frames(1, (10, 14, 3)) + _frames(1, (10, 14, 3), dtype=np.uint16))
        with pytest.raises(InputError, match=r"frame 1: \(10, 12, 3\) uint8.*frame 0 is \(10, 14, 3\)"):
            backend.restore_frames_async(_frames(1, (10, 14, 3)) + _frames(1, (10, 12, 3)))
        with pytest.raises(InputError, match=r"frame shape \(10, 14\): expected H x W x 3"):
            backend.restore_frames_async(_frames(1, (10, 14)))
        with pytest.raises(InputError, match=r"frame shape \(10, 14, 4\).*gray or alpha"):
            backend.restore_frames_async(_frames(1, (10, 14, 4)))
        with pytest.raises(InputError, match="order='yuv'"):
            backend.restore_frames_async(_frames(1, (10, 14, 3)), "yuv")
        with pytest.raises(InputError, match=r"camera='i420': valid camera formats are \('nv12', 'yuyv'\)"):
            backend.restore_frames_async(_frames(1, (15, 14)), camera="i420")
        with pytest.raises(InputError, match="camera='nv12': nv12 frame must be"):
            backend.restore_frames_async(_frames(1, (10, 14)), camera="nv12")
        with pytest.raises(InputError, match="no frames"):
            backend.restore_frames_async([])
        with pytest.raises(InputError, match="input shape 1x3x132x132 is outside every optimization profile"):
            backend.restore_frames_async(_frames(1, (130, 130, 3)))


def test_device_path_unavailable_without_cuda_kernels(fake_env):
    engine, cuda, _ = fake_env(kernels=False, fn=_mix)
    with trtb.TrtBackend(engine) as backend:
        assert not backend.supports_device_io
        with pytest.raises(ConfigError, match="CUDA pre/post-processing kernels are not usable here "
                                              r"\(no CUDA-capable device is detected\).*pip install -e"):
            backend.restore_frames_async(_frames(1, (10, 14, 3)))
        frames = _frames(3, (10, 14, 3))
        got, sink = _collect()
        Stream(iter(frames), sink, model=Restorer(backend, tile=0), policy="block").run()
        assert not [c for c in cuda.state.calls if c[0] not in ("htod", "execute", "dtoh")]  # no kernels
        restorer = Restorer(backend, tile=0)
        want = [restorer.restore(frame) for frame in frames]
    for (_, g), w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_backends_without_device_io():
    class Plain(Backend):
        input_spec = InputSpec(channels=3, out_channels=3, pad_multiple=4, scale=1)

        def infer(self, batch):
            return batch

    assert Backend.supports_device_io is False and Plain().supports_device_io is False
    with pytest.raises(ConfigError, match="the backend backend has no device-side frame path"):
        Plain().restore_frames_async(_frames(1, (8, 8, 3)))


# ---------------------------------------------------------------------------- Stream on an engine
def _collect():
    got = []

    def sink(image, frame):
        got.append((frame.index, image))
    return got, sink


def test_stream_on_an_engine_takes_the_device_path(fake_env):
    engine, cuda, _ = fake_env(fn=_mix)
    frames = _frames(7, (10, 14, 3), seed=5)
    with trtb.TrtBackend(engine) as backend:
        restorer = Restorer(backend, tile=0)
        got, sink = _collect()
        cuda.state.calls.clear()
        stats = Stream(iter(frames), sink, model=restorer, policy="block", batch=2).run()
        kinds = [c[0] for c in cuda.state.calls]
        want = [restorer.restore(frame) for frame in frames]
    assert stats["frames"] == 7 and stats["batches"] == 4  # 2 + 2 + 2 + 1
    assert kinds == ["htod", "preprocess", "execute", "postprocess", "dtoh"] * 4  # no float copies
    assert [i for i, _ in got] == list(range(7))
    for (_, g), w in zip(got, want, strict=True):
        assert g.dtype == np.uint8
        np.testing.assert_array_equal(g, w)


def test_stream_on_an_engine_falls_back_for_other_frame_kinds(fake_env):
    engine, cuda, _ = fake_env(fn=_mix)
    rng = np.random.default_rng(9)
    colour = _frames(1, (10, 14, 3))[0]
    images = [colour,
              _frames(1, (10, 14, 3), dtype=np.uint16)[0],  # 16-bit
              _frames(1, (10, 14))[0],                      # gray
              _frames(1, (10, 14, 4))[0],                   # alpha
              rng.random((10, 14, 3), dtype=np.float32),    # float
              colour]
    with trtb.TrtBackend(engine) as backend:
        restorer = Restorer(backend, tile=0)
        got, sink = _collect()
        cuda.state.calls.clear()
        Stream(iter(images), sink, model=restorer, policy="block").run()
        kernels = [c[0] for c in cuda.state.calls if c[0] in ("preprocess", "postprocess")]
        want = [restorer.restore(image) for image in images]
    assert kernels == ["preprocess", "postprocess"] * 2  # only the two uint8 colour frames
    assert len(got) == len(images)
    for (_, g), w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_stream_tiles_on_the_cpu(fake_env):
    engine, cuda, _ = fake_env(fn=_mix)
    frames = _frames(2, (20, 28, 3))  # larger than the tile: the Restorer tiles, on the CPU path
    with trtb.TrtBackend(engine) as backend:
        restorer = Restorer(backend, tile=16, tile_overlap=4)
        got, sink = _collect()
        cuda.state.calls.clear()
        Stream(iter(frames), sink, model=restorer, policy="block").run()
        assert not [c for c in cuda.state.calls if c[0] in ("preprocess", "postprocess")]
        want = restorer.restore_batch(frames)
    for (_, g), w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
