"""TensorRT backend without TensorRT or a GPU: profile selection, buffer sizing, the environment check
and rebuild command, backend routing, CUDA error handling, and the backend's buffer/stream/graph
logic run against small CPU stand-ins for ``tensorrt`` and ``cuda_mem`` (test-only, below)."""
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from mirnet.sdk import Restorer, artifact
from mirnet.sdk.backends import open_backend
from mirnet.sdk.backends import tensorrt as trtb
from mirnet.sdk.backends.base import InputSpec
from mirnet.sdk.backends.cuda_mem import CudaError, check, format_version
from mirnet.sdk.errors import (ArtifactError, ConfigError, EngineMismatchError, InputError,
                               MissingDependencyError)
from mirnet.sdk.model.config import MIRNetV2Config

Profile = trtb.Profile
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
    assert trtb.select_profile((1, 3, 16, 16), profiles) == 1
    assert trtb.select_profile((1, 3, 32, 32), profiles) == 1  # in both: the smaller max wins
    assert trtb.select_profile((1, 3, 64, 32), profiles) == 0
    with pytest.raises(InputError, match=r"input shape 1x3x256x256 is outside every optimization profile .*"
                                         r"\[0\] min 1x3x32x32, opt 1x3x64x64, max 1x3x128x128; \[1\] min 1x3x8x8"):
        trtb.select_profile((1, 3, 256, 256), profiles)
    with pytest.raises(InputError, match="--profile MIN:OPT:MAX"):
        trtb.select_profile((2, 3, 64, 64), profiles)


def test_buffer_sizing():
    assert trtb.tensor_nbytes((1, 3, 720, 1280), np.float32) == 3 * 720 * 1280 * 4
    assert trtb.tensor_nbytes((2, 3, 8, 8), "float16") == 2 * 3 * 64 * 2
    assert trtb.tensor_nbytes((1, 3, 8, 8), "HALF") == 384
    assert trtb.tensor_nbytes((1, 3, 8, 8), SimpleNamespace(name="FLOAT")) == 768  # a trt.DataType
    assert trtb.tensor_nbytes((4,), SimpleNamespace(name="INT8")) == 4
    with pytest.raises(ArtifactError, match="unresolved"):
        trtb.tensor_nbytes((1, 3, -1, 8), np.float32)
    assert trtb.max_shape([P_SMALL, P_LARGE]) == (2, 3, 128, 128)
    spec = InputSpec(channels=3, out_channels=3, pad_multiple=4, scale=2)
    assert trtb.output_shape((2, 3, 128, 64), spec) == (2, 3, 256, 128)
    assert trtb.numpy_dtype(SimpleNamespace(name="HALF")) == np.float16
    with pytest.raises(ArtifactError, match="BF16 has no numpy equivalent"):
        trtb.numpy_dtype(SimpleNamespace(name="BF16"))


def test_parse_version():
    assert trtb.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert trtb.parse_version("10.8.0.post1") == (10, 8, 0)
    assert trtb.parse_version(None) == () and trtb.parse_version("dev") == ()


# ---------------------------------------------------------------------------- environment check
def test_environment_match_passes():
    trtb.check_engine_environment(_manifest(), dict(HERE, tensorrt="10.3.1"))  # same major.minor


def test_tensorrt_version_mismatch_names_both_and_rebuild():
    with pytest.raises(EngineMismatchError) as info:
        trtb.check_engine_environment(_manifest(), dict(HERE, tensorrt="10.7.0"), "models/m.engine")
    msg = str(info.value)
    assert "TensorRT: engine built with 10.3.0.26, here 10.7.0" in msg
    assert msg.endswith("\n  mirnet build-engine m.onnx -o models/m.engine --force --fp16 "
                        "--profile 1x3x8x8:1x3x16x16:2x3x32x32")


def test_version_compatible_rules():
    vc = _manifest(version_compatible=True)
    trtb.check_engine_environment(vc, dict(HERE, tensorrt="10.9.0"))  # newer, same major: fine
    with pytest.raises(EngineMismatchError, match="same major version, same or newer"):
        trtb.check_engine_environment(vc, dict(HERE, tensorrt="10.1.0"))
    with pytest.raises(EngineMismatchError, match="--version-compatible"):
        trtb.check_engine_environment(vc, dict(HERE, tensorrt="11.0.0"))


def test_compute_capability_and_gpu_name():
    with pytest.raises(EngineMismatchError, match=r"compute capability: engine built for 8.7 \(NVIDIA Jetson AGX "
                                                  r"Orin\), here 9.0 \(NVIDIA H100 80GB HBM3\)"):
        trtb.check_engine_environment(_manifest(), dict(HERE, compute_capability="9.0",
                                                        gpu_name="NVIDIA H100 80GB HBM3"))
    other = dict(HERE, gpu_name="NVIDIA Jetson Orin NX")
    with pytest.raises(EngineMismatchError, match="built on NVIDIA Jetson AGX Orin, here NVIDIA Jetson Orin NX"):
        trtb.check_engine_environment(_manifest(), other)
    trtb.check_engine_environment(_manifest(), other, check_gpu_name=False)


def test_dla_and_missing_build_record():
    with pytest.raises(EngineMismatchError, match=r"(?s)DLA core 1, this machine has 0 DLA core\(s\).*--dla 1"):
        trtb.check_engine_environment(_manifest(dla_core=1), dict(HERE, dla_cores=0))
    bare = _manifest()
    bare["build"] = {}
    with pytest.raises(EngineMismatchError, match="records no usable TensorRT version"):
        trtb.check_engine_environment(bare, HERE)


def test_rebuild_command_full():
    m = _manifest(profiles=[P_SMALL.to_dict(), P_LARGE.to_dict()], fp16=False, strongly_typed=True, qdq=False,
                  workspace_mb=512, timing_cache="cache dir/tc.bin", dla_core=0, version_compatible=True)
    assert trtb.rebuild_command(m) == (
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
    kernels run immediately, and a captured graph replays the work recorded during capture."""
    mem, state = {}, SimpleNamespace(next=0x1000, capture=None, capture_ok=True, captures=0, launches=0,
                                     live=set(), waits=[])

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

        def wait(self, event):
            state.waits.append((self, event))

    class Event(Buffer):
        def __init__(self):
            super().__init__(1)

        def record(self, stream):
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

    def copy(dst, src, nbytes, stream):
        mem[dst.ptr][:nbytes] = mem[src.ptr][:nbytes]

    return SimpleNamespace(CudaError=CudaError, DeviceBuffer=Buffer, PinnedBuffer=Buffer, Stream=Stream,
                           Event=Event, CudaGraph=CudaGraph, memcpy_htod_async=copy, memcpy_dtoh_async=copy,
                           mem=mem, state=state)


def _fake_tensorrt(cuda, profiles, names=("input", "output"), deserializes=True):
    """Test-only stand-in for ``tensorrt``'s runtime: the "engine" computes 2 * x + 1."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.26"
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    stats = SimpleNamespace(deserialized=0, executes=0, context=None)

    class Context:
        def __init__(self):
            self.profile, self.shape, self.addr = 0, None, {}
            stats.context = self

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
            src, dst, n = self.addr[names[0]], self.addr[names[1]], int(np.prod(self.shape)) * 4

            def op():
                stats.executes += 1
                cuda.mem[dst][:n].view(np.float32)[:] = 2 * cuda.mem[src][:n].view(np.float32) + 1

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
            return SimpleNamespace(name="FLOAT")

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


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    def install(profiles=(P_SMALL, P_LARGE), env=HERE, **kwargs):
        cuda = _fake_cuda()
        trt, stats = _fake_tensorrt(cuda, list(profiles), **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trtb, "_cuda_mem", lambda: cuda)
        monkeypatch.setattr(trtb, "runtime_environment", lambda trt, device=0, runtime=None: dict(env))
        engine = _engine_file(tmp_path, profiles=[p.to_dict() for p in profiles])
        return engine, cuda, stats
    return install


def _batch(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


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
        assert stats.context.profile == 0
        y = _batch((1, 3, 64, 96), 1)
        np.testing.assert_allclose(backend.infer(y), 2 * y + 1)
        assert stats.context.profile == 1
        with pytest.raises(InputError, match="outside every optimization profile"):
            backend.infer(_batch((1, 3, 256, 256)))
        with pytest.raises(InputError, match="multiples of 4"):
            backend.infer(_batch((1, 3, 18, 16)))
    assert not cuda.state.live  # close() freed every buffer, stream and event
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


def test_double_buffering_and_pipeline(fake_env):
    engine, cuda, _ = fake_env()
    with trtb.TrtBackend(engine) as backend:
        batches = [_batch((1, 3, 16, 16), s) for s in range(5)]
        futures = [backend.infer_async(b) for b in batches[:3]]  # the third reuses the first's buffers
        for fut, b in zip(futures, batches):
            np.testing.assert_allclose(fut.result(), 2 * b + 1)
        outs = list(backend.pipeline(batches))
        assert len(outs) == 5
        for out, b in zip(outs, batches):
            np.testing.assert_allclose(out, 2 * b + 1)
        # each compute waited for the other buffer set's compute (one shared execution context)
        assert cuda.state.waits and all(stream is not event for stream, event in cuda.state.waits)
        pending = backend.infer_async(batches[0])
    np.testing.assert_allclose(pending.result(), 2 * batches[0] + 1)  # readable after close()
    assert not cuda.state.live


def test_restorer_runs_an_engine(fake_env):
    engine, _, _ = fake_env()
    with Restorer(engine, tile=0) as restorer:
        assert restorer.backend.name == "tensorrt"
        out = restorer.restore(np.zeros((10, 12, 3), np.uint8))  # padded to 12x12 inside the profile
    assert out.shape == (10, 12, 3) and (out == 255).all()  # 2 * 0 + 1 clipped to white
