"""``quantize()``: FP32 weights -> INT8 ONNX for a target, manifest, then the quality gate.

Quality gate: after writing the artifact, :func:`mirnet.optimize.gate.run_gate` compares it with the
FP32 model on the calibration folder (or ``gate_data``). Below ``min_psnr_db`` the artifact is
*kept* for inspection with ``gate.passed: false`` in its manifest, and QualityGateError (exit
code 6) is raised with the worst layers and the ``--exclude`` fix.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirnet.sdk import artifact
from mirnet.sdk.errors import ConfigError, QualityGateError, require

from ..export_onnx import DEFAULT_OPSET
from .calibration import DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_SIZE, DEFAULT_PERCENTILE, METHODS, load_calibration

__all__ = ["quantize", "QuantizeResult", "TARGETS"]

TARGETS = ("tensorrt", "cpu")


@dataclass
class QuantizeResult:
    path: Path
    manifest: dict
    gate: dict | None = None
    notes: list = field(default_factory=list)


def quantize(model: str | os.PathLike, out: str | os.PathLike, *, target: str, calib: str | os.PathLike,
             method: str = "max", calib_images: int = DEFAULT_CALIB_IMAGES, calib_size: int = DEFAULT_CALIB_SIZE,
             calib_sigma: float | None = None, qat_steps: int = 0, data: str | os.PathLike | None = None,
             qat_lr: float = 1e-5, qat_batch: int = 4, qat_target: str = "teacher",
             exclude: Sequence[str] | str | None = (), min_psnr_db: float | None = 35.0,
             gate_data: str | os.PathLike | None = None, gate_limit: int | None = 8,
             quantizer: str = "auto", percentile: float = DEFAULT_PERCENTILE, op_types: Sequence[str] | None = None,
             force: bool = False, seed: int = 0, opset: int = DEFAULT_OPSET) -> QuantizeResult:
    """Quantize the FP32 ``model`` (weights file or bundled name) to the INT8 ONNX ``out`` for
    ``target``, check it with onnx.checker, write it and its manifest (atomically; an existing
    ``out`` only with ``force``), then run the quality gate (skipped when ``min_psnr_db`` is None);
    raises QualityGateError (artifact kept, manifest ``gate.passed: false``) below the threshold.

    ``target="tensorrt"``: explicit Q/DQ ONNX for TensorRT (:mod:`.tensorrt`: ModelOpt or the
    PyTorch fake-quant fallback, optional QAT). ``target="cpu"``: ONNX Runtime ``quantize_static``
    checked to really run integer kernels (:mod:`.onnxruntime`). ``exclude`` (from the gate's
    report): module paths (``conv_out``, ``body.0.body.0.dau_top``: everything under it), globs,
    or ONNX node names, kept in float."""
    import torch

    from mirnet.sdk import zoo
    from mirnet.sdk.model import load_model

    from ..export_onnx import check_onnx, export_onnx
    from ..gate import run_gate
    from ..onnx_tools import check_tensorrt_ops, qdq_summary
    from .onnxruntime import check_dynamic_shapes, quantize_cpu_onnx, require_integer_kernels
    from .tensorrt import quantize_tensorrt_model

    if target not in TARGETS:
        raise ConfigError(f"--target {target!r}: valid targets are {', '.join(TARGETS)}")
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: valid methods are {', '.join(METHODS)}")
    if not (0 < percentile <= 100):
        raise ConfigError(f"percentile {percentile!r}: give a value in (0, 100], e.g. 99.99")
    if isinstance(qat_steps, bool) or not isinstance(qat_steps, int) or qat_steps < 0:
        raise ConfigError(f"--qat-steps {qat_steps!r}: give an integer >= 0")
    if qat_steps and target != "tensorrt":
        raise ConfigError("--qat-steps: QAT fine-tunes the fake-quantized PyTorch model of --target tensorrt; "
                          "for --target cpu quantize the QAT'd TensorRT recipe's weights or drop --qat-steps")
    if qat_steps and data is None:
        raise ConfigError("--qat-steps needs --data DIR (a folder of clean training images)")
    if min_psnr_db is not None and not math.isfinite(min_psnr_db):
        raise ConfigError(f"--min-psnr-db {min_psnr_db!r}: give a PSNR in dB, e.g. 35")
    out = artifact.check_overwrite(out, force)  # before the model and calibration load; the writer checks again
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {out}: the INT8 artifact is an ONNX file; use a .onnx name")
    source = zoo.resolve_weights(model)
    if source.suffix.lower() == ".onnx":
        raise ConfigError(f"{source}: quantize takes the FP32 weights (.safetensors/.pth or a bundled name), "
                          f"not an ONNX file")
    onnx = require("onnx", "optimize")
    onnxruntime = require("onnxruntime", "optimize")
    fp32 = load_model(source).eval()
    variant = artifact.read_manifest(source, kind="weights").get("variant") if source.suffix == ".safetensors" else None
    cfg = fp32.config
    calib_arr = load_calibration(calib, n=calib_images, size=calib_size, multiple=cfg.pad_multiple,
                                 sigma=calib_sigma, seed=seed)
    calibration = {"folder": str(calib), "images": int(calib_images), "size": int(calib_arr.shape[-1]),
                   "sigma": calib_sigma, "method": method, "seed": seed,
                   **({"percentile": percentile} if method == "percentile" else {})}
    build = artifact.build_environment(torch=torch.__version__, onnx=onnx.__version__,
                                       onnxruntime=onnxruntime.__version__)
    with artifact.writer(out, force=force, validate=check_onnx) as w:
        if target == "tensorrt":
            qat = None
            if qat_steps:
                qat = {"steps": qat_steps, "data": data, "size": int(calib_arr.shape[-1]), "sigma": calib_sigma,
                       "lr": qat_lr, "batch": qat_batch, "seed": seed, "target": qat_target}
            record = quantize_tensorrt_model(fp32, calib_arr, w.tmp, method=method, exclude=exclude,
                                             quantizer=quantizer, percentile=percentile, qat=qat, opset=opset)
            parity = record.pop("parity")
            issues = [{"op": i.op, "node": i.node, "reason": i.reason} for i in check_tensorrt_ops(w.tmp)]
            fields = {"opset": opset, "parity": parity, "qdq": qdq_summary(w.tmp), "tensorrt_issues": issues,
                      "simplified": {"tool": "onnxslim", "version": require("onnxslim", "optimize").__version__}}
            precision = "int8-qdq"
            quantization = {"target": "tensorrt", "method": method,
                            "weights": "int8 symmetric per-channel (axis 0)",
                            "activations": "int8 symmetric per-tensor", **record}
            if record.get("modelopt"):
                build["modelopt"] = record["modelopt"]
        else:
            with tempfile.TemporaryDirectory(prefix="mirnet-fp32-", dir=out.parent) as work:
                fp32_onnx = export_onnx(fp32, Path(work) / "fp32.onnx", opset=opset, simplify=True)
                record = quantize_cpu_onnx(fp32_onnx, calib_arr, w.tmp, method=method, exclude=exclude,
                                           percentile=percentile, op_types=op_types, config=cfg.to_dict(),
                                           work_dir=work)
                check = require_integer_kernels(w.tmp)
                dynamic = check_dynamic_shapes(w.tmp, fp32_onnx, cfg.in_channels, cfg.pad_multiple, cfg.scale)
            precision = "int8-ort"
            quantization = {"target": "cpu", "method": method, **record}
            fields = {"opset": opset, "int8_check": check, "dynamic_shapes": dynamic, "qdq": qdq_summary(w.tmp)}
        w.describe(kind="onnx", config=cfg.to_dict(), precision=precision, variant=variant, source=source,
                   quantization=quantization, calibration=calibration, build=build, **fields)
    manifest = w.manifest
    result = QuantizeResult(out, manifest)
    if min_psnr_db is None:
        manifest["gate"] = {"status": "skipped", "reason": "no threshold (--no-gate)"}
        artifact.write_manifest(out, manifest)
        return result
    gate = run_gate(out, source, gate_data or calib, min_psnr_db=min_psnr_db, sigma=calib_sigma, limit=gate_limit,
                    layers="on-failure", seed=seed, check=False)
    record = gate.to_dict()
    manifest["gate"] = {k: record[k] for k in ("passed", "min_psnr_db", "psnr_db", "psnr_min_db", "ssim", "n", "data",
                                               "sigma", "vs_clean", "suggested_exclude", "fix")}
    manifest["gate"]["layers"] = record["layers"][:10]
    artifact.write_manifest(out, manifest)
    result.gate = record
    if not gate.passed:
        raise QualityGateError(
            f"quality gate failed: {out.name} output PSNR {gate.psnr_db:.2f} dB vs the FP32 model is below "
            f"--min-psnr-db {min_psnr_db:g}. The artifact is kept for inspection (manifest gate.passed: false); "
            f"do not deploy it. Fix: {gate.fix}", result=record)
    return result
