"""INT8 quantization: --target onnxruntime really runs integer kernels in ONNX Runtime and stays
close to FP32; --target cpu writes the Q/DQ layout OpenVINO runs in INT8 kernels, and the gate
measures it there; --target tensorrt writes explicit Q/DQ (per-channel tiny_weights on axis 0, per-tensor
activations, int8 zero points) through ModelOpt or the PyTorch fake-quant fallback; exclusions,
QAT, calibration data and the gate's failure path."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

from onnx import numpy_helper  # noqa: E402

from mirnet.optimize.onnx_tools import check_tensorrt_ops, int8_check, qdq_pairs, weight_dq_nodes  # noqa: E402
from mirnet.optimize.quantize import load_calibration, quantize  # noqa: E402
from mirnet.sdk import artifact  # noqa: E402
from mirnet.sdk.errors import ArtifactError, ConfigError, InputError, QualityGateError  # noqa: E402
from mirnet.sdk.mixture import model_inputs  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "clean"  # the clean 320x240 sample
FAST = dict(calib=DATA, calib_images=4, calib_size=48)


def smooth_image(h=40, w=56, c=3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.35 * np.sin(xx / 9 + k) * np.cos(yy / 7 - k) for k in range(c)]
    return np.stack(planes)[None].astype(np.float32)


def run(path, x) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def conv_nodes(path) -> int:
    """Conv nodes of an exported graph: what the quantizers should cover (weight-shared modules run
    twice and export twice), derived from the model rather than copied from one ONNX Runtime run."""
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def psnr(a, b) -> float:
    return 10 * math.log10(1 / float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)))


@pytest.fixture(scope="module")
def fp32_onnx(tiny_weights, tmp_path_factory):
    from mirnet.optimize.export_onnx import export_onnx
    from mirnet.sdk.model import load_model

    return export_onnx(load_model(tiny_weights), tmp_path_factory.mktemp("fp32") / "fp32.onnx")


def test_calibration_crops_are_the_models_inputs(tiny_weights, tmp_path):
    clean_inputs = model_inputs(None, sigma=0)
    a = load_calibration(DATA, inputs=clean_inputs, n=5, size=50, multiple=8, seed=1)
    assert a.shape == (5, 3, 56, 56) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, load_calibration(DATA, inputs=clean_inputs, n=5, size=50, multiple=8, seed=1))
    noisy = load_calibration(DATA, inputs=model_inputs(None, sigma=25), n=5, size=50, multiple=8, seed=1)
    assert 0 <= noisy.min() and noisy.max() <= 1 and 0.05 < np.std(noisy - a) < 0.12
    # default: the training record's degradations (tiny: AWGN 0-50), same crops
    trained = model_inputs(artifact.read_manifest(tiny_weights, kind="weights"))
    mixed = load_calibration(DATA, inputs=trained, n=5, size=50, multiple=8, seed=1)
    spread = [np.std(mixed[i] - a[i]) for i in range(5)]
    assert max(spread) < 0.2 and max(spread) - min(spread) > 0.02  # a sigma per crop
    camera = load_calibration(DATA, inputs=model_inputs(None, protocol="camera-jpeg"), n=2, size=45, multiple=3)
    assert camera.shape == (2, 3, 48, 48)  # even (4:2:0) and a multiple of 3
    with pytest.raises(ConfigError, match="calib-images"):
        load_calibration(DATA, inputs=clean_inputs, n=0)
    with pytest.raises(ConfigError, match="holds no image"):
        load_calibration(tmp_path, inputs=clean_inputs)


def test_onnxruntime_target_runs_integer_kernels(tiny_weights, fp32_onnx, tmp_path):
    out = tmp_path / "int8.onnx"
    result = quantize(tiny_weights, out, target="onnxruntime", exclude=["conv_out"], gate=False, **FAST)
    m = artifact.read_manifest(out, kind="onnx")
    assert m["precision"] == "int8-ort" and m["sha256"] == result.manifest["sha256"]
    assert m["gate"]["status"] == "skipped"
    check = m["int8_check"]
    # counted in the graph ONNX Runtime optimized, not the file: every conv but the excluded one
    convs = conv_nodes(fp32_onnx)
    assert check["integer_convs"] == convs - 1 and check["float_convs"] == 1 and check["integer_ops"] >= convs - 1
    assert int8_check(out)["integer_convs"] == convs - 1
    assert m["quantization"]["excluded_nodes"] == ["/conv_out/Conv"]
    assert m["quantization"]["excluded_output_qdq_removed"] == 1  # else ORT fuses conv_out back into int8
    assert m["quantization"]["pre_process"] == "symbolic-auto-merge"
    assert [r["shape"] for r in m["dynamic_shapes"]] == [[24, 40], [36, 20]]
    x = smooth_image()
    assert psnr(run(out, x), run(fp32_onnx, x)) > 30
    big = smooth_image(64, 96)  # dynamic H/W still work
    assert run(out, big).shape == (1, 3, 64, 96)
    assert m["calibration"] == {"folder": str(DATA), "images": 4, "size": 48, "method": "max", "seed": 0,
                                "inputs": {"kind": "training", "value": "100% AWGN 0-50",
                                           "description": "its training degradations (100% AWGN 0-50)"}}


def _check_tensorrt_qdq(path: Path, convs: int) -> None:
    model = onnx.load(str(path))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producers = {o: n for n in model.graph.node for o in n.output}
    wdq = weight_dq_nodes(model)
    pairs = qdq_pairs(model)
    assert len(wdq) == convs == conv_nodes(path)  # every conv's tiny_weights quantized
    pair_outputs = {p.output for p in pairs}  # ... and every conv's activation input
    assert all(n.input[0] in pair_outputs for n in model.graph.node if n.op_type == "Conv")
    for dq in wdq:  # per-channel weight scales on axis 0
        src = dq.input[0]
        while src not in consts:
            src = producers[src].input[0]
        c_out = consts[src].shape[0]
        scale = consts[dq.input[1]]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert (scale.shape == (c_out,) and axis == 0) or (c_out == 1 and scale.size == 1), dq.name
    dqs = {n.name: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for p in pairs:  # per-tensor activation scales, symmetric int8
        dq = dqs[p.dequantize]
        assert consts[dq.input[1]].size == 1
        assert consts[dq.input[2]].dtype == np.int8 and not consts[dq.input[2]].any()
    assert check_tensorrt_ops(model) == []


def test_tensorrt_target_qdq(tiny_weights, fp32_onnx, tmp_path):
    out = tmp_path / "trt.onnx"
    result = quantize(tiny_weights, out, target="tensorrt", gate=False, **FAST)
    q = result.manifest["quantization"]
    try:
        import modelopt.torch.quantization  # noqa: F401
        assert q["path"] == "modelopt", q.get("fallback_reason")
    except ImportError:
        assert q["path"] == "torch-fakequant" and "import" in q["fallback_reason"]
    assert result.manifest["precision"] == "int8-qdq" and result.manifest["tensorrt_issues"] == []
    assert result.manifest["parity"]["psnr_db"] > 40
    _check_tensorrt_qdq(out, conv_nodes(fp32_onnx))
    x = smooth_image()
    assert psnr(run(out, x), run(fp32_onnx, x)) > 30  # ONNX Runtime still runs it (in float)


def test_cpu_target_is_qdq_run_and_gated_on_openvinos_int8_kernels(tiny_weights, fp32_onnx, tmp_path):
    """--target cpu: the Q/DQ layout (QAT possible) that `backend="auto"` opens on OpenVINO, where
    every convolution runs in an INT8 kernel; the gate ran it there and says so."""
    ov = pytest.importorskip("openvino")
    from mirnet.sdk.backends import choose_backend

    out = tmp_path / "cpu.onnx"
    result = quantize(tiny_weights, out, target="cpu", qat_steps=2, data=DATA, qat_batch=1, gate_limit=1,
                      max_loss_db=1.0, **FAST)
    m = artifact.read_manifest(out, kind="onnx")
    assert m["precision"] == "int8-qdq-cpu" and "tensorrt_issues" not in m
    assert m["quantization"]["target"] == "cpu" and m["quantization"]["qat"]["steps"] == 2
    assert (m["calibration"]["method"], m["calibration"]["percentile"]) == ("percentile", 99.999)  # the Q/DQ default
    _check_tensorrt_qdq(out, conv_nodes(fp32_onnx))
    assert choose_backend(out)[0] == "openvino"
    assert m["gate"]["passed"] and m["gate"]["runtime"].startswith("openvino ")
    assert result.gate["runtime"] == m["gate"]["runtime"]
    model = ov.Core().read_model(str(out))
    model.reshape([1, 3, 48, 48])
    compiled = ov.Core().compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": 1})
    request = compiled.create_infer_request()
    request.infer({0: smooth_image(48, 48)})
    kernels = {p.node_name: p.exec_type for p in request.get_profiling_info() if "Convolution" in p.node_type}
    assert len(kernels) == conv_nodes(fp32_onnx), kernels
    assert all(kind.endswith("I8") for kind in kernels.values()), kernels


def test_tensorrt_fallback_qat_exclude_and_failing_gate(tiny_weights, fp32_onnx, tmp_path):
    out = tmp_path / "fq.onnx"
    with pytest.raises(ConfigError, match="max, percentile"):
        quantize(tiny_weights, out, target="tensorrt", quantizer="torch", method="entropy", gate=False, **FAST)
    with pytest.raises(ConfigError, match="selects no conv"):
        quantize(tiny_weights, out, target="tensorrt", quantizer="torch", exclude="nope", gate=False, **FAST)
    with pytest.raises(QualityGateError) as info:
        quantize(tiny_weights, out, target="tensorrt", quantizer="torch", method="percentile", qat_steps=2, data=DATA,
                 qat_batch=1, exclude=["/conv_in/Conv"], min_psnr_db=99.0, gate_limit=1, **FAST)
    assert info.value.exit_code == 6 and info.value.result["passed"] is False
    m = artifact.read_manifest(out, kind="onnx")  # kept for inspection, marked as failed
    assert m["gate"]["passed"] is False and m["gate"]["psnr_db"] < 99 and m["gate"]["layers"]
    q = m["quantization"]
    assert q["path"] == "torch-fakequant" and q["fallback_reason"] is None
    assert q["excluded_modules"] == ["conv_in"] and q["qat"]["steps"] == 2
    assert m["calibration"]["percentile"] == 99.999
    model = onnx.load(str(out))
    conv_in = next(n for n in model.graph.node if n.name == "/conv_in/Conv")
    assert conv_in.input[0] == "input" and conv_in.input[1] in {i.name for i in model.graph.initializer}
    assert len(weight_dq_nodes(model)) == conv_nodes(fp32_onnx) - 1
    x = smooth_image()
    assert psnr(run(out, x), run(fp32_onnx, x)) > 30
    with pytest.raises(InputError, match="--force"):
        quantize(tiny_weights, out, target="onnxruntime", gate=False, **FAST)


def test_argument_errors(tiny_weights, tmp_path):
    for kwargs, match in ((dict(target="gpu"), "valid targets"), (dict(target="onnxruntime", method="mse"), "valid methods"),
                          (dict(target="onnxruntime", qat_steps=3, data=DATA), "qat-steps"),
                          (dict(target="tensorrt", qat_steps=3), "--data")):
        with pytest.raises(ConfigError, match=match):
            quantize(tiny_weights, tmp_path / "x.onnx", **FAST, **kwargs)
    with pytest.raises(ConfigError, match=".onnx"):
        quantize(tiny_weights, tmp_path / "x.engine", target="onnxruntime", **FAST)
    # no conv in an integer kernel (only MatMuls quantized): refused, nothing written
    with pytest.raises(ArtifactError, match="no conv"):
        quantize(tiny_weights, tmp_path / "x.onnx", target="onnxruntime", op_types=["MatMul"], gate=False, **FAST)
    assert not list(tmp_path.iterdir())


def test_cpu_calibration_methods_differ(fp32_onnx, tmp_path):
    """ORT's entropy calibrator with its default bins equals MinMax; ours gets real entropy ranges."""
    from mirnet.optimize.quantize import quantize_onnxruntime

    calib = load_calibration(DATA, inputs=model_inputs(None, sigma=10), n=2, size=32)
    scales = {}
    for method in ("max", "entropy", "percentile"):
        record = quantize_onnxruntime(fp32_onnx, calib, tmp_path / f"{method}.onnx", method=method)
        assert record["calibrate_method"].lower() == {"max": "minmax"}.get(method, method)
        model = onnx.load(str(tmp_path / f"{method}.onnx"))
        scales[method] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_scale")}
    for method in ("entropy", "percentile"):
        changed = sum(not np.allclose(scales["max"][k], v) for k, v in scales[method].items())
        assert changed > 0, method  # ORT's default entropy bins would change none


def test_openvino_target_writes_a_gated_int8_ir(tiny_weights, fp32_onnx, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mirnet.sdk.backends import open_backend

    out = tmp_path / "int8.xml"
    result = quantize(tiny_weights, out, target="openvino", exclude=["conv_out"], gate_limit=1, max_loss_db=1.0,
                      **FAST)
    m = artifact.read_manifest(out, kind="openvino")
    assert m["precision"] == "int8-openvino" and out.with_suffix(".bin").is_file()
    q = m["quantization"]
    assert q["excluded_nodes"] == ["/conv_out/Conv"] and q["fake_quantize_nodes"] > 10 and q["target"] == "openvino"
    assert m["gate"]["passed"] and m["gate"]["inputs"]["kind"] == "training" and result.gate["n"] == 1
    with open_backend(out) as backend:
        assert backend.name == "openvino"
        x = smooth_image()
        assert psnr(backend.infer(x), run(fp32_onnx, x)) > 30
    with pytest.raises(ConfigError, match=r"--target openvino is a \.xml file"):
        quantize(tiny_weights, tmp_path / "x.onnx", target="openvino", **FAST)


def test_cli_qat_fits_the_clean_images_on_request(tiny_weights, tmp_path):
    """`--qat-target clean` reaches QAT: its loss is taken against the ground truth, not the FP32
    model's output, so its first loss is the FP32 model's own error on the batch (larger)."""
    from mirnet.sdk.cli import main

    runs = {}
    for target in ("teacher", "clean"):
        out = tmp_path / f"{target}.onnx"
        assert main(["quantize", str(tiny_weights), "--target", "tensorrt", "--quantizer", "torch", "--calib", str(DATA),
                     "--calib-images", "4", "--calib-size", "48", "--qat-steps", "2", "--qat-batch", "1",
                     "--data", str(DATA), "--qat-target", target, "--no-gate", "-o", str(out)]) == 0
        manifest = artifact.read_manifest(out, kind="onnx")
        runs[target] = manifest["quantization"]["qat"]
        assert manifest["calibration"]["method"] == "percentile"  # no --method: the Q/DQ targets' default
    assert runs["teacher"]["target"] == "teacher" and runs["clean"]["target"] == "clean"
    assert runs["clean"]["loss_first"] > runs["teacher"]["loss_first"]
