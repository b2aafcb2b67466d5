"""INT8 for the CPU: a model ONNX Runtime really runs with integer kernels.

``quant_pre_process`` of the FP32 export (symbolic shape inference with ``auto_merge`` so the
dynamic batch/H/W axes survive), ``quantize_static`` in QDQ format with uint8 activations and
int8 per-channel weights (the x86 MLAS kernels' fast path; int8 activations fall off it),
calibration MinMax/Entropy/Percentile. The *optimized* graph ONNX Runtime builds is then inspected
(``SessionOptions.optimized_model_filepath``): no conv in an integer kernel is an ArtifactError.

Exclusions: the nodes are passed to ``nodes_to_exclude``, and the Q/DQ pair on an excluded compute
node's output is removed as well: ONNX Runtime would otherwise fuse DequantizeLinear -> Conv ->
QuantizeLinear back into a QLinearConv (quantizing the float weights itself).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mirnet.sdk.errors import ArtifactError, ConfigError, require

from .calibration import DEFAULT_PERCENTILE, split_patterns

__all__ = ["quantize_onnxruntime", "require_integer_kernels", "check_dynamic_shapes"]

ORT_ENTROPY_BINS = 512  # ORT's quantize_static default (128 bins = 128 quantized bins) degenerates to MinMax


def _pre_process(src: Path, dst: Path) -> str:
    """ORT's quantization pre-processing; symbolic shape inference fails on the dynamic H/W of this
    graph unless dims are merged (``auto_merge``). Falls back to ONNX shape inference only, then
    to none. Returns the mode used."""
    from onnxruntime.quantization import quant_pre_process

    attempts = (("symbolic-auto-merge", {"auto_merge": True}), ("onnx-shape-inference", {"skip_symbolic_shape": True}))
    for mode, kwargs in attempts:
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(dst), **kwargs)
            return mode
        except Exception:  # onnxruntime raises bare Exceptions here
            continue
    dst.write_bytes(src.read_bytes())
    return "none"


def _drop_output_qdq(path: Path, nodes: Iterable[str]) -> int:
    """Remove the Q -> DQ pairs on the outputs of ``nodes`` (consumers read the float tensor), so
    ONNX Runtime cannot fuse an excluded conv back into an integer kernel. Returns pairs removed.
    Graph surgery with onnx-graphsurgeon (the copy onnxslim ships): tensors know their consumers."""
    onnx = require("onnx", "optimize")
    gs = require("onnxslim.third_party.onnx_graphsurgeon", "optimize")
    graph = gs.import_onnx(onnx.load(str(path)))
    wanted, removed = set(nodes), 0
    for node in [n for n in graph.nodes if n.name in wanted]:
        for out in node.outputs:
            for q in [c for c in out.outputs if c.op == "QuantizeLinear"]:
                dqs = list(q.outputs[0].outputs)
                if not dqs or any(d.op != "DequantizeLinear" for d in dqs):
                    continue
                for dq in dqs:
                    quantized = dq.outputs[0]
                    if quantized in graph.outputs:
                        raise ArtifactError(f"cannot exclude {node.name}: its quantized output is a graph output")
                    for consumer in list(quantized.outputs):  # listed once per input it feeds
                        consumer.inputs[consumer.inputs.index(quantized)] = out
                removed += 1
    graph.cleanup()  # the Q and DQ nodes now feed nothing
    onnx.save(gs.export_onnx(graph), str(path))
    return removed


class _CalibReader:
    """onnxruntime.quantization.CalibrationDataReader over an N x C x H x W array (batch 1)."""

    def __init__(self, calib: np.ndarray, input_name: str = "input"):
        self.calib, self.input_name, self.i = calib, input_name, 0

    def get_next(self):
        if self.i >= len(self.calib):
            return None
        x = np.ascontiguousarray(self.calib[self.i:self.i + 1])
        self.i += 1
        return {self.input_name: x}

    def rewind(self):
        self.i = 0


def quantize_onnxruntime(fp32_onnx: str | os.PathLike, calib: np.ndarray, out: str | os.PathLike, *,
                         method: str = "max", exclude: Sequence[str] = (), percentile: float = DEFAULT_PERCENTILE,
                         op_types: Sequence[str] | None = None, config: dict | None = None,
                         work_dir: str | os.PathLike | None = None) -> dict:
    """ONNX Runtime static quantization of an FP32 ONNX (QDQ, U8 activations, S8 per-channel
    weights) to ``out`` (no manifest); checks the optimized graph. Returns the record."""
    require("onnxruntime", "optimize")
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from ..onnx_tools import COMPUTE_OPS, known_modules, load, resolve_nodes

    methods = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ConfigError(f"--method {method!r}: valid methods for --target onnxruntime are {', '.join(methods)}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="mirnet-quant-", dir=work_dir) as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_mode = _pre_process(Path(fp32_onnx), pre)
        patterns = split_patterns(exclude)
        selected = resolve_nodes(pre, patterns, known_modules(config)) if patterns else {}
        nodes = sorted({n for hits in selected.values() for n in hits})
        ops = {n.name: n.op_type for n in load(pre).graph.node}
        compute_nodes = [n for n in nodes if ops.get(n) in COMPUTE_OPS]
        reader_cls = type("Reader", (_CalibReader, CalibrationDataReader), {})
        extra = {"CalibPercentile": float(percentile)} if method == "percentile" else {}
        cache = {}
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "entropy":
                cache = _entropy_cache(pre, reader_cls(calib), op_types, Path(tmp))
            quantize_static(str(pre), str(out), reader_cls(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=nodes or None,
                            op_types_to_quantize=list(op_types) if op_types else None, extra_options=extra,
                            **cache)
    dropped = _drop_output_qdq(out, compute_nodes) if compute_nodes else 0
    return {"pre_process": pre_mode, "format": "QDQ", "activations": "uint8 asymmetric per-tensor",
            "weights": "int8 symmetric per-channel (axis 0)", "calibrate_method": methods[method].name,
            **({"percentile": float(percentile)} if method == "percentile" else {}),
            "op_types": list(op_types) if op_types else "all (onnxruntime default)",
            "exclude": patterns, "excluded_nodes": nodes, "excluded_output_qdq_removed": dropped}


def _entropy_cache(model: Path, reader, op_types, tmp: Path) -> dict:
    """Entropy ranges with ``ORT_ENTROPY_BINS`` histogram bins, handed to ``quantize_static`` as its
    calibration cache (it cannot pass a bin count to the calibrator itself, and with its default of
    128 bins for 128 quantized bins the KL search has a single candidate: the max). Returns the
    ``quantize_static`` keyword, or {} on ONNX Runtime versions without calibration caches."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    from onnxruntime.quantization.calibrate import save_tensors_data

    ops = list(op_types) if op_types else sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(model, ops, augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ORT_ENTROPY_BINS, "num_quantized_bins": 128})
    calibrator.collect_data(reader)
    path = tmp / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), path)
    return {"calibration_cache_path": str(path)}


def check_dynamic_shapes(q_onnx: str | os.PathLike, fp32_onnx: str | os.PathLike, in_channels: int, multiple: int,
                         scale: int) -> list:
    """Run the INT8 model at two shapes (not the calibration shape's aspect) against FP32: output
    shapes right and finite (else ArtifactError); ``[{"shape", "psnr_vs_fp32_db"}]``."""
    from mirnet.sdk.metrics import psnr

    from ..gate import PSNR_CAP
    from ..onnx_tools import ort_run

    rows = []
    rng = np.random.default_rng(2)
    for hw in ((multiple * max(2, -(-24 // multiple)), multiple * max(3, -(-40 // multiple))),
               (multiple * max(3, -(-36 // multiple)), multiple * max(2, -(-20 // multiple)))):
        yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
        smooth = 0.5 + 0.3 * np.sin(xx / 7.0)[None] * np.cos(yy / 5.0)[None]
        x = np.repeat(smooth[None], in_channels, axis=1).astype(np.float32)
        x += rng.normal(0, 0.02, x.shape).astype(np.float32)
        got, want = ort_run(q_onnx, x), ort_run(fp32_onnx, x)
        expected = (1, want.shape[1], hw[0] * scale, hw[1] * scale)
        if got.shape != expected:
            raise ArtifactError(f"INT8 model output shape {got.shape} at input {hw} (expected {expected}): "
                                f"the dynamic H/W axes did not survive quantization")
        if not np.all(np.isfinite(got)):
            raise ArtifactError(f"INT8 model output is not finite at input {hw}")
        db = min(PSNR_CAP, psnr(np.clip(got, 0, 1), np.clip(want, 0, 1)))
        rows.append({"shape": list(hw), "psnr_vs_fp32_db": round(db, 2)})
    return rows


def require_integer_kernels(q_onnx: str | os.PathLike) -> dict:
    """:func:`~mirnet.optimize.onnx_tools.int8_check` of the graph ONNX Runtime really runs;
    ArtifactError when no conv runs in an integer kernel (INT8 on disk only)."""
    import onnxruntime

    from ..onnx_tools import int8_check

    check = int8_check(q_onnx)
    if check["integer_convs"] == 0:
        raise ArtifactError(
            f"ONNX Runtime {onnxruntime.__version__} runs no conv of the quantized model in an integer "
            f"kernel (optimized graph: {check['float_convs']} float convs, ops {check['ops']}); the "
            f"artifact would be INT8 on disk only. Not written")
    return check
