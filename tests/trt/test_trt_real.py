"""Real TensorRT on a real NVIDIA GPU: build tiny engines from a tiny ONNX export, run them through
TrtBackend and compare with ONNX Runtime. Skipped (with the reason) where TensorRT or a GPU is missing."""
import json
import shutil

import numpy as np
import pytest

try:
    import tensorrt  # noqa: F401
except Exception as exc:  # ImportError, or the PyPI stub failing to fetch the real wheel
    pytest.skip(f"TensorRT is not importable here ({type(exc).__name__}: {exc}); these tests need TensorRT "
                f"10.x/11.x and an NVIDIA GPU (JetPack, or pip install 'mirnet-edge[trt]')", allow_module_level=True)

from mirnet.sdk import Restorer, artifact
from mirnet.sdk.backends.tensorrt import TrtBackend
from mirnet.sdk.backends.tensorrt_env import parse_version
from mirnet.sdk.errors import ArtifactError, EngineMismatchError

pytestmark = [pytest.mark.trt, pytest.mark.gpu]
PROFILES = ["16x16:40x56:64x64", "64x64:96x96:128x128"]


@pytest.fixture(scope="module")
def gpu():
    try:
        from mirnet.sdk.backends import cuda_mem

        return cuda_mem.device_info(0)
    except Exception as exc:
        pytest.skip(f"no usable NVIDIA GPU here ({exc})")


@pytest.fixture(scope="module")
def built(gpu, tiny_onnx, tmp_path_factory):
    from mirnet.optimize.build_engine import build_engine

    root = tmp_path_factory.mktemp("engines")
    cache = root / "timing.cache"
    fp32 = build_engine(tiny_onnx, root / "tiny_fp32.engine", profiles=PROFILES, timing_cache=cache,
                        workspace_mb=512)
    fp16 = None
    if parse_version(tensorrt.__version__)[0] < 11:  # TensorRT 11 removed the FP16 builder flag
        fp16 = build_engine(tiny_onnx, root / "tiny_fp16.plan", fp16=True, profiles=PROFILES[:1],
                            timing_cache=cache)
    return {"fp32": fp32, "fp16": fp16, "cache": cache, "root": root}


@pytest.fixture(scope="module")
def ort(tiny_onnx):
    from mirnet.sdk.backends.onnxruntime import OrtBackend

    with OrtBackend(tiny_onnx) as backend:
        yield backend


def _x(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_fp32_engine_matches_onnxruntime(built, ort, gpu):
    manifest = artifact.read_manifest(built["fp32"], kind="engine")
    assert manifest["build"]["gpu_name"] == gpu["gpu_name"] and manifest["precision"] == "fp32"
    assert built["cache"].stat().st_size > 0
    with TrtBackend(built["fp32"]) as backend:
        for shape in [(1, 3, 40, 56), (2, 3, 16, 16), (1, 3, 96, 128), (1, 3, 40, 56)]:  # profile 0, 1, back
            x = _x(shape)
            np.testing.assert_allclose(backend.infer(x), ort.infer(x), atol=1e-3, rtol=0)


def test_graph_replay_and_pipeline_are_exact(built):
    xs = [_x((1, 3, 40, 56), seed) for seed in range(4)]
    with TrtBackend(built["fp32"], cuda_graphs=False) as plain:
        want = [plain.infer(x) for x in xs]
    with TrtBackend(built["fp32"]) as backend:
        got = [backend.infer(x) for x in xs]  # first run plain + capture, then graph replays
        piped = list(backend.pipeline(xs))
    for a, b, c in zip(want, got, piped):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_fp16_engine_psnr(built, ort):
    if built["fp16"] is None:
        pytest.skip(f"TensorRT {tensorrt.__version__} has no FP16 builder flag (strongly typed only)")
    x = _x((1, 3, 64, 64))
    with TrtBackend(built["fp16"]) as backend:
        out = backend.infer(x)
    mse = float(np.mean((out - ort.infer(x)) ** 2))
    assert 10 * np.log10(1.0 / max(mse, 1e-20)) > 35


def test_restorer_on_engine_matches_onnx(built, tiny_onnx):
    image = (np.random.default_rng(1).random((37, 50, 3)) * 255).astype(np.uint8)
    with Restorer(built["fp32"], tile=0) as trt_r, Restorer(tiny_onnx, tile=0) as ort_r:
        diff = np.abs(trt_r.restore(image).astype(int) - ort_r.restore(image).astype(int))
    assert diff.max() <= 1


def test_mismatched_manifest_is_refused(built, tmp_path):
    engine = tmp_path / "moved.engine"
    shutil.copy(built["fp32"], engine)
    manifest = json.loads(artifact.sidecar_path(built["fp32"]).read_text())
    manifest["file"] = engine.name
    manifest["build"]["compute_capability"] = "1.0"
    artifact.sidecar_path(engine).write_text(json.dumps(manifest))
    with pytest.raises(EngineMismatchError, match="compute capability: engine built for 1.0.*mirnet build-engine"):
        TrtBackend(engine)


def test_parser_errors_are_reported(gpu, tiny_onnx, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from mirnet.optimize.build_engine import build_engine

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    node = helper.make_node("MirnetNoSuchOp", ["input"], ["output"], name="odd_node", domain="com.mirnet.test")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.mirnet.test", 1)])
    broken = tmp_path / "unsupported.onnx"
    onnx.save(model, str(broken))
    config = artifact.read_manifest(tiny_onnx)["config"]
    artifact.write_manifest(broken, artifact.make_manifest(broken, kind="onnx", config=config, precision="fp32"))
    with pytest.raises(ArtifactError, match=r"(?s)ONNX parser reported \d+ error\(s\):.*MirnetNoSuchOp"):
        build_engine(broken, tmp_path / "broken.engine", profiles=["16x16"])
