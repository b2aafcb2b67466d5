"""ONNX graph hygiene: TensorRT operator coverage, ceil-mode pooling, onnxslim simplification,
ONNX Runtime optimized-graph inspection, Q/DQ bookkeeping and node -> module-path mapping.

Everything here works on ``onnx.ModelProto`` objects or file paths and imports ``onnx``,
``onnxslim`` and ``onnxruntime`` lazily (``MissingDependencyError`` names the extra).
"""
from __future__ import annotations

import collections
import fnmatch
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mirnet.sdk.errors import ArtifactError, ConfigError, require

__all__ = [
    "TENSORRT_SUPPORTED_OPS", "TensorrtIssue", "check_tensorrt_ops", "find_ceil_mode_pooling",
    "simplify", "op_counts", "ort_run", "ort_optimized_model", "int8_check", "INTEGER_OPS", "FLOAT_CONV_OPS",
    "QdqPair", "qdq_pairs", "qdq_summary", "weight_dq_nodes", "add_outputs", "module_path", "known_modules",
    "resolve_nodes", "load", "drop_noop_casts",
]

# ONNX operators (default domain) the TensorRT ONNX parser supports: onnx-tensorrt's
# docs/operators.md ("Supported: Y" rows, TensorRT 8.4) plus the operators TensorRT 10 added.
# Restrictions that matter here are checked separately: Q/DQ zero points must be 0 (int8,
# symmetric), Conv/ConvTranspose weights must be initializers (or DequantizeLinear of one),
# pooling/conv 2D or 3D only, Resize modes nearest/linear. Ops of other domains (com.microsoft
# QLinear*, ...) are never supported.
TENSORRT_SUPPORTED_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GRU",
    "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsNaN",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM",
    "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Neg",
    "NonMaxSuppression", "Not", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear",
    "RandomUniform", "RandomUniformLike", "Range", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "Round", "ScaledTanh",
    "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Sigmoid", "Sign", "Sin",
    "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt",
    "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose",
    "Unsqueeze", "Upsample", "Where", "Xor",
    # TensorRT 10 additions
    "GroupNormalization", "LayerNormalization", "GridSample", "Gelu", "Mish", "Reciprocal",
    "NonZero", "OneHot", "Mod", "Hardmax", "IsInf", "Trilu", "RoiAlign",
})

_DEFAULT_DOMAINS = ("", "ai.onnx")
_POOLS = ("AveragePool", "MaxPool", "LpPool")

# Ops that run integer kernels in ONNX Runtime's CPU provider (the optimized graph).
INTEGER_CONV_OPS = frozenset({"QLinearConv", "ConvInteger", "NhwcQLinearConv"})
INTEGER_OPS = INTEGER_CONV_OPS | frozenset({
    "MatMulInteger", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax", "QLinearReduceMean",
    "QLinearWhere", "QLinearConvTranspose", "DynamicQuantizeLSTM", "QAttention", "QEmbedLayerNormalization",
})
FLOAT_CONV_OPS = frozenset({"Conv", "FusedConv", "ConvTranspose", "NhwcFusedConv"})
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def load(model) -> "onnx.ModelProto":  # noqa: F821
    """``model`` as a ModelProto (paths are loaded, ModelProtos returned as they are)."""
    onnx = require("onnx", "ort")
    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load(str(model))
        except Exception as exc:  # onnx raises DecodeError and friends
            raise ArtifactError(f"{model}: not a readable ONNX file ({exc})") from exc
    return model


# ---------------------------------------------------------------------------------------------
# TensorRT hygiene
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorrtIssue:
    """A node TensorRT's ONNX parser would reject (``op``, ``node`` name, why)."""

    op: str
    node: str
    reason: str = "operator not supported by the TensorRT ONNX parser"

    def __iter__(self):  # unpacks as (op, node)
        return iter((self.op, self.node))


def _attr(node, name: str, default=None):
    onnx = require("onnx", "ort")
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _const_values(graph) -> dict:
    """Initializers and Constant-node outputs as numpy arrays (for zero-point checks)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            a = node.attribute[0]
            if a.name == "value":
                values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def check_tensorrt_ops(onnx_model) -> list[TensorrtIssue]:
    """Nodes of ``onnx_model`` (path or ModelProto) the TensorRT ONNX parser does not support:
    operators outside :data:`TENSORRT_SUPPORTED_OPS` or another domain, Q/DQ with a non-zero or
    uint8 zero point (TensorRT quantization is symmetric int8), ceil-mode pooling, Resize modes
    other than nearest/linear. Returns ``[]`` for a clean graph; each issue unpacks as ``(op, node)``."""
    import numpy as np

    model = load(onnx_model)
    graph = model.graph
    consts = _const_values(graph)
    issues: list[TensorrtIssue] = []
    for node in _all_nodes(graph):
        name = node.name or f"<{node.op_type} -> {node.output[0] if node.output else '?'}>"
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in TENSORRT_SUPPORTED_OPS:
            where = f" (domain {node.domain})" if node.domain not in _DEFAULT_DOMAINS else ""
            issues.append(TensorrtIssue(node.op_type, name, "operator not supported by the TensorRT "
                                                            "ONNX parser" + where))
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = consts.get(node.input[2])
            if zp is not None and (zp.dtype != np.int8 or np.any(zp != 0)):
                issues.append(TensorrtIssue(node.op_type, name, f"zero point must be int8 0 for TensorRT "
                                                                f"(got {zp.dtype} {np.unique(zp)[:4].tolist()})"))
        elif node.op_type in _POOLS and _attr(node, "ceil_mode", 0):
            issues.append(TensorrtIssue(node.op_type, name, "ceil_mode=1 pooling (export with H, W padded "
                                                            "to the pad multiple and plain pooling)"))
        elif node.op_type == "Resize":
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("nearest", "linear"):
                issues.append(TensorrtIssue("Resize", name, f"Resize mode {mode!r} (TensorRT: nearest, linear)"))
    return issues


def find_ceil_mode_pooling(onnx_model) -> list[str]:
    """Names of pooling nodes with ``ceil_mode=1`` (must be none: see ARCHITECTURE.md §3)."""
    model = load(onnx_model)
    return [n.name or n.output[0] for n in _all_nodes(model.graph)
            if n.op_type in _POOLS and _attr(n, "ceil_mode", 0)]


def _all_nodes(graph):
    """Nodes of ``graph`` and of its sub-graphs (If/Loop/Scan bodies)."""
    onnx = require("onnx", "ort")
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _all_nodes(g)


# ---------------------------------------------------------------------------------------------
# Simplification
# ---------------------------------------------------------------------------------------------

def simplify(onnx_model) -> "onnx.ModelProto":  # noqa: F821
    """onnxslim simplification (constant folding, dead-code and duplicate-node elimination,
    shape-op folding that keeps dynamic axes dynamic). Returns a new ModelProto. Callers check
    numerical parity afterwards (``export_onnx`` does)."""
    onnxslim = require("onnxslim", "optimize")
    model = load(onnx_model)
    try:
        return onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        raise ArtifactError(f"onnxslim could not simplify the graph ({type(exc).__name__}: {exc}); "
                            f"export without simplification (simplify=False)") from exc


def drop_noop_casts(onnx_model) -> tuple["onnx.ModelProto", int]:  # noqa: F821
    """Remove Casts to the type their input already has (ModelOpt's quantizers emit float->float
    Casts), rewiring consumers to the Cast input. Done before onnxslim, which would otherwise
    remove them by renaming the *producer's* output to the Cast's output name, breaking the
    tensor-name match with the FP32 graph that the quality gate relies on."""
    onnx = require("onnx", "ort")
    model = onnx.ModelProto()
    model.CopyFrom(load(onnx_model))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort here
        return model, 0
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    graph_outputs = {o.name for o in model.graph.output}
    removed = []
    for node in model.graph.node:
        if node.op_type != "Cast" or node.output[0] in graph_outputs:
            continue
        src_type = types.get(node.input[0])
        if src_type and src_type == _attr(node, "to"):
            removed.append(node)
    for node in removed:
        src, dst = node.input[0], node.output[0]
        for other in model.graph.node:
            if other is not node:
                other.input[:] = [src if i == dst else i for i in other.input]
        model.graph.node.remove(node)
    return model, len(removed)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime: what really runs
# ---------------------------------------------------------------------------------------------

def op_counts(onnx_model) -> dict[str, int]:
    """``{op_type: count}`` over the graph (sorted by count)."""
    model = load(onnx_model)
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def ort_run(onnx_path: str | os.PathLike, x, *, input_name: str = "input", threads: int = 1):
    """The first output of ``onnx_path`` run by ONNX Runtime's CPU provider on ``x``."""
    ort = require("onnxruntime", "ort")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x})[0]


def ort_optimized_model(onnx_path: str | os.PathLike, *, level: str = "all") -> "onnx.ModelProto":  # noqa: F821
    """The graph ONNX Runtime (CPU provider) actually executes after its graph optimizations at
    ``level`` ("basic", "extended", "all": what :class:`~mirnet.sdk.backends.onnxruntime.OrtBackend`
    uses), read back from ``SessionOptions.optimized_model_filepath``."""
    ort = require("onnxruntime", "ort")
    onnx = require("onnx", "ort")
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if level not in levels:
        raise ConfigError(f"optimization level {level!r}: valid levels are {sorted(levels)}")
    with tempfile.TemporaryDirectory(prefix="mirnet-ortopt-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(out)
        options.intra_op_num_threads = 1
        options.log_severity_level = 3  # the "NchwcTransformer: hardware specific" notice
        try:
            ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises private exception types
            raise ArtifactError(f"{onnx_path}: ONNX Runtime cannot load it ({exc})") from exc
        return onnx.load(str(out))


def int8_check(onnx_path: str | os.PathLike) -> dict:
    """Count the integer kernels ONNX Runtime really runs for ``onnx_path`` (its optimized graph,
    not the file): ``{"integer_ops", "integer_convs", "float_convs", "ops"}``."""
    counts = op_counts(ort_optimized_model(onnx_path, level="all"))
    return {
        "integer_ops": sum(v for k, v in counts.items() if k in INTEGER_OPS),
        "integer_convs": sum(v for k, v in counts.items() if k in INTEGER_CONV_OPS),
        "float_convs": sum(v for k, v in counts.items() if k in FLOAT_CONV_OPS),
        "ops": counts,
    }


# ---------------------------------------------------------------------------------------------
# Q/DQ bookkeeping
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QdqPair:
    """An activation QuantizeLinear -> DequantizeLinear pair: ``source`` is the FP32 tensor that
    is quantized (the Q input, traced back through Cast/Identity), ``output`` the DQ output the
    consumers read, ``consumers`` their node names."""

    source: str
    output: str
    quantize: str
    dequantize: str
    consumers: tuple[str, ...]


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict:
    out = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            out[i].append(n)
    return out


def _trace_back(name: str, producers: dict) -> str:
    """Follow Cast/Identity producers back to the tensor they pass through."""
    seen = set()
    while name in producers and producers[name].op_type in ("Cast", "Identity") and name not in seen:
        seen.add(name)
        name = producers[name].input[0]
    return name


def _is_constant(name: str, graph, producers: dict) -> bool:
    inits = {i.name for i in graph.initializer}
    while True:
        if name in inits:
            return True
        node = producers.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity", "Transpose",
                                "Reshape", "Unsqueeze"):
            return False
        name = node.input[0]


def qdq_pairs(onnx_model) -> list[QdqPair]:
    """Activation Q/DQ pairs (weights, i.e. Q/DQ of initializers or constants, excluded)."""
    model = load(onnx_model)
    graph = model.graph
    producers, consumers = _producers(graph), _consumers(graph)
    pairs = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear" or _is_constant(q.input[0], graph, producers):
            continue
        pairs.append(QdqPair(source=_trace_back(q.input[0], producers), output=node.output[0],
                             quantize=q.name, dequantize=node.name,
                             consumers=tuple(c.name for c in consumers.get(node.output[0], []))))
    return pairs


def weight_dq_nodes(onnx_model) -> list:
    """DequantizeLinear nodes that dequantize weights (initializers/constants)."""
    model = load(onnx_model)
    graph = model.graph
    producers = _producers(graph)
    return [n for n in graph.node if n.op_type == "DequantizeLinear" and _is_constant(n.input[0], graph, producers)]


def qdq_summary(onnx_model) -> dict:
    """Counts that describe a Q/DQ graph: activation pairs (per-tensor or not), weight DQs
    (per-channel on axis 0 or not), zero-point types."""
    model = load(onnx_model)
    consts = _const_values(model.graph)
    pairs = qdq_pairs(model)
    dq_by_name = {n.name: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    act_per_tensor = sum(1 for p in pairs if consts.get(dq_by_name[p.dequantize].input[1]) is not None
                         and consts[dq_by_name[p.dequantize].input[1]].size == 1)
    wdq = weight_dq_nodes(model)
    producers = _producers(model.graph)
    per_channel = 0
    for n in wdq:
        scale, src = consts.get(n.input[1]), n.input[0]
        while src not in consts and src in producers and producers[src].op_type in ("QuantizeLinear", "Cast"):
            src = producers[src].input[0]
        out_channels = consts[src].shape[0] if src in consts and consts[src].ndim else None
        if scale is not None and ((_attr(n, "axis", 1) == 0 and scale.ndim == 1 and scale.size == out_channels)
                                  or (scale.size == 1 and out_channels == 1)):  # 1 channel: scalar
            per_channel += 1
    zp_types = sorted({str(consts[n.input[2]].dtype) for n in model.graph.node
                       if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
                       and n.input[2] in consts})
    return {"activation_pairs": len(pairs), "activation_per_tensor": act_per_tensor,
            "weight_dq": len(wdq), "weight_per_channel_axis0": per_channel, "zero_point_types": zp_types}


def add_outputs(onnx_model, names: Iterable[str]) -> "onnx.ModelProto":  # noqa: F821
    """A copy of the model that also outputs the float tensors ``names`` (ORT runs modified graphs)."""
    onnx = require("onnx", "ort")
    model = onnx.ModelProto()
    model.CopyFrom(load(onnx_model))
    existing = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in dict.fromkeys(names):
        if name and name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            existing.add(name)
    return model


# ---------------------------------------------------------------------------------------------
# Node names <-> module paths
# ---------------------------------------------------------------------------------------------

_CALL_SUFFIX = re.compile(r"_\d+$")


def known_modules(config: dict | None) -> set[str] | None:
    """Module paths of the network built from a manifest ``config`` (needs torch; None without)."""
    if not config:
        return None
    try:
        from mirnet.sdk.model import MIRNetV2Config, create_model

        model = create_model(MIRNetV2Config.from_dict(config))
    except Exception:  # no torch, or a config this version cannot build
        return None
    return {name for name, _ in model.named_modules() if name}


def module_path(node_name: str, modules: set[str] | None = None) -> str | None:
    """The PyTorch module path of an ONNX node exported with ``torch.onnx.export(dynamo=False)``:
    ``/body/body.0/body/body.0/dau_top/body/body.0_1/Conv`` -> ``body.0.body.0.dau_top.body.0``
    (a ``_N`` suffix marks a later call of a weight-shared module). With ``modules`` (see
    :func:`known_modules`) a suffix is stripped only where the result is a real module (``up21_1``
    is a module name); without, only from names that do not end in ``<digit>_<digit>``. None for
    names not of that form (e.g. top-level ops)."""
    if not node_name or not node_name.startswith("/"):
        return None
    parts = [p for p in node_name.split("/")[1:-1] if p]
    if not parts:
        return None
    path: list[str] = []
    prev: str | None = None
    for comp in parts:
        child = comp
        if prev is not None:
            for parent in (prev, _CALL_SUFFIX.sub("", prev)):
                if comp.startswith(parent + "."):  # Sequential child "body.0" of "body"
                    child = comp[len(parent) + 1:]
                    break
        base = ".".join(path)
        stripped = _CALL_SUFFIX.sub("", child)
        if modules is not None:
            for name in dict.fromkeys((child, stripped)):
                joined = f"{base}.{name}" if base else name
                if joined in modules:
                    child = name
                    break
                # modules whose forward is bypassed (``self.body[0].bot(x)``) leave no scope:
                # take the shortest real module under ``base`` that ends in ``name``
                hidden = sorted((m for m in modules if m.startswith(base + ".") and m.endswith("." + name)),
                                key=len) if base else []
                if hidden:
                    child = hidden[0][len(base) + 1:]
                    break
        elif stripped != child and not re.fullmatch(r"[A-Za-z_]\w*\d_\d+", child):  # keep "up21_1"
            child = stripped
        path.append(child)
        prev = comp
    return ".".join(path)


def resolve_nodes(onnx_model, patterns: Iterable[str], modules: set[str] | None = None,
                  op_types: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Map each ``--exclude`` pattern to the ONNX node names it selects: an exact node name, or a
    module path / glob (``conv_out``, ``body.0.*``) matched against each node's module path (a
    module selects every node under it). ConfigError for a pattern that selects nothing."""
    model = load(onnx_model)
    op_types = set(op_types) if op_types else None
    nodes = [n for n in model.graph.node if op_types is None or n.op_type in op_types]
    paths = {n.name: module_path(n.name, modules) for n in nodes}
    out: dict[str, list[str]] = {}
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern:
            continue
        hits = []
        for n in nodes:
            p = paths[n.name]
            if n.name == pattern or (p is not None and (
                    p == pattern or p.startswith(pattern + ".") or fnmatch.fnmatchcase(p, pattern))):
                hits.append(n.name)
        if not hits:
            examples = sorted({p for p in paths.values() if p})[:6]
            raise ConfigError(
                f"--exclude {pattern!r} matches no {'/'.join(sorted(op_types)) if op_types else ''} node; "
                f"give module paths (e.g. {', '.join(examples) or 'conv_out'}), globs (body.0.*) or "
                f"ONNX node names (as `mirnet gate` prints them)")
        out[pattern] = hits
    return out
