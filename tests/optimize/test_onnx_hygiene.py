"""ONNX hygiene: every variant family exports (onnxslim-simplified, parity-checked) to a graph that
uses only TensorRT-parser operators and no ceil-mode pooling; the checkers catch what they should."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

from onnx import TensorProto, helper  # noqa: E402

from mirnet.optimize.export_onnx import export_onnx  # noqa: E402
from mirnet.optimize.onnx_tools import (TENSORRT_SUPPORTED_OPS, check_tensorrt_ops,  # noqa: E402
                                        find_ceil_mode_pooling, known_modules, module_path, op_counts,
                                        resolve_nodes)
from mirnet.sdk import artifact  # noqa: E402
from mirnet.sdk.errors import ConfigError  # noqa: E402
from mirnet.sdk.model import MIRNetV2Config, create_model  # noqa: E402

TINY = dict(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)
FAMILIES = {
    "image-residual": MIRNetV2Config(**TINY),
    "scale2": MIRNetV2Config(**TINY, scale=2),
    "unshuffle2": MIRNetV2Config(**TINY, unshuffle=2),
    "height4": MIRNetV2Config(**TINY, height=4),
    "feature-residual": MIRNetV2Config(**TINY, in_channels=6, residual="feature"),
    "shared-grouped": MIRNetV2Config(n_feat=16, n_rrg=2, n_mrb=1, width=2, max_groups=2),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_variant_family_exports_clean_for_tensorrt(family, tmp_path):
    cfg = FAMILIES[family]
    torch.manual_seed(0)
    path = export_onnx(create_model(cfg), tmp_path / f"{family}.onnx", simplify=True, parity_shape=(24, 40))
    manifest = artifact.read_manifest(path, kind="onnx")
    assert manifest["simplified"]["tool"] == "onnxslim"
    assert manifest["parity"]["max_abs_diff"] <= 1e-4  # parity checked on the simplified graph
    ops = set(op_counts(path))
    assert ops <= TENSORRT_SUPPORTED_OPS, f"{family}: ops outside the TensorRT list: {ops - TENSORRT_SUPPORTED_OPS}"
    assert check_tensorrt_ops(path) == []
    assert find_ceil_mode_pooling(path) == []
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", cfg.in_channels, "height", "width"]  # dynamic axes survive onnxslim


def test_unsimplified_export_is_clean_too(tiny_onnx):
    assert check_tensorrt_ops(tiny_onnx) == []
    assert find_ceil_mode_pooling(tiny_onnx) == []


def _graph(nodes, inits=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=list(inits)),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_checkers_flag_unsupported_ops_ceil_mode_and_asymmetric_qdq():
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp_u8 = helper.make_tensor("zp", TensorProto.UINT8, [], [128])
    model = _graph([
        helper.make_node("AveragePool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("QuantizeLinear", ["p", "s", "zp"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], name="dequant"),
        helper.make_node("Det", ["d"], ["e"], name="det"),
        helper.make_node("QLinearSigmoid", ["e"], ["y"], name="qsig", domain="com.microsoft"),
    ], [scale, zp_u8])
    issues = check_tensorrt_ops(model)
    assert [(op, node) for op, node in issues] == [
        ("AveragePool", "pool"), ("QuantizeLinear", "quant"), ("DequantizeLinear", "dequant"),
        ("Det", "det"), ("QLinearSigmoid", "qsig")]
    assert "ceil_mode" in issues[0].reason and "zero point" in issues[1].reason
    assert find_ceil_mode_pooling(model) == ["pool"]
    for op in ("Conv", "LeakyRelu", "Add", "Mul", "Sum", "Resize", "AveragePool", "GlobalAveragePool",
               "ReduceMean", "Softmax", "MatMul", "Reshape", "Transpose", "Concat", "Unsqueeze", "Squeeze",
               "Flatten", "DepthToSpace", "SpaceToDepth", "Gather", "Shape", "Constant", "Slice", "Cast",
               "QuantizeLinear", "DequantizeLinear", "Pad", "Split"):
        assert op in TENSORRT_SUPPORTED_OPS


def test_node_names_map_to_module_paths(tiny_onnx):
    mods = known_modules(MIRNetV2Config(**TINY).to_dict())
    model = onnx.load(str(tiny_onnx))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    paths = {module_path(n, mods) for n in convs}
    assert paths <= mods  # every conv maps to a real module, hidden Sequentials included
    assert module_path("/conv_in/Conv", mods) == "conv_in"
    assert module_path("/body/body.0/body/body.0/down2/bot/bot.1/Conv", mods) == "body.0.body.0.down2.body.0.bot.1"
    # second call of a weight-shared module; "up21_1" is a real module name and keeps its suffix
    assert module_path("/body/body.0/body/body.0/dau_top/body/body.0_1/Conv") == "body.0.body.0.dau_top.body.0"
    assert module_path("/body/body.0/body/body.0/up21_1/bot/bot.0/Conv") == "body.0.body.0.up21_1.bot.0"
    hits = resolve_nodes(model, ["conv_out", "body.0.body.0.dau_top"], mods, ["Conv"])
    assert hits["conv_out"] == ["/conv_out/Conv"]
    assert len(hits["body.0.body.0.dau_top"]) == 5 and all("dau_top" in n for n in hits["body.0.body.0.dau_top"])
    with pytest.raises(ConfigError, match="matches no"):
        resolve_nodes(model, ["no.such.layer"], mods)


def test_simplified_graph_is_not_larger(tiny_weights, tmp_path):
    from mirnet.sdk.model import load_model

    plain = export_onnx(load_model(tiny_weights), tmp_path / "plain.onnx")
    slim = export_onnx(load_model(tiny_weights), tmp_path / "slim.onnx", simplify=True)
    assert sum(op_counts(slim).values()) < sum(op_counts(plain).values())
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    import onnxruntime as ort

    a = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(slim), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(a - b).max() < 1e-5
