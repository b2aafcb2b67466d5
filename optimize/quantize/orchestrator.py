"""``quantize()``: FP32 weights -> INT8 ONNX for a target, manifest, then the quality gate.

Calibration and gate run on the model's own inputs (:func:`mirnet.sdk.mixture.model_inputs`: the
degradations its weights were trained with, applied to the clean ``calib`` images, unless ``pairs``,
``sigma`` or ``protocol`` says otherwise). After writing the artifact,
:func:`mirnet.optimize.gate.run_gate` scores it and the FP32 model against ground truth on the
``gate_data`` images (default: ``calib``); when it loses more than ``max_loss_db`` the artifact is
*kept* for inspection with ``gate.passed: false`` in its manifest, and QualityGateError (exit
code 6) is raised with the worst layers and the fix (``--exclude``, or QAT).
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

from mirnet.sdk.mixture import model_inputs

from ..export_onnx import DEFAULT_OPSET
from ..gate import DEFAULT_MAX_LOSS_DB
from .calibration import (DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_SIZE, DEFAULT_METHODS, DEFAULT_PERCENTILE, METHODS,
                          load_calibration, split_patterns)

__all__ = ["quantize", "QuantizeResult", "TARGETS"]

TARGETS = ("tensorrt", "cpu", "onnxruntime", "openvino")
#: the artifact each target writes
SUFFIXES = {"tensorrt": ".onnx", "cpu": ".onnx", "onnxruntime": ".onnx", "openvino": ".xml"}
#: targets written as explicit Q/DQ ONNX by :mod:`.qdq` (ModelOpt, QAT possible), and their precisions
QDQ_PRECISIONS = {"tensorrt": "int8-qdq", "cpu": "int8-qdq-cpu"}


@dataclass
class QuantizeResult:
    path: Path
    manifest: dict
    gate: dict | None = None
    notes: list = field(default_factory=list)


def quantize(model: str | os.PathLike, out: str | os.PathLike, *, target: str, calib: str | os.PathLike | None = None,
             method: str | None = None, calib_images: int = DEFAULT_CALIB_IMAGES, calib_size: int = DEFAULT_CALIB_SIZE,
             pairs: str | os.PathLike | None = None, sigma: float | None = None, protocol: str | None = None,
             qat_steps: int = 0, data: str | os.PathLike | None = None,
             qat_lr: float = 1e-5, qat_batch: int = 4, qat_target: str = "teacher",
             exclude: Sequence[str] | str | None = (), gate: bool = True, max_loss_db: float = DEFAULT_MAX_LOSS_DB,
             min_psnr_db: float | None = None, gate_data: str | os.PathLike | None = None, gate_limit: int | None = 8,
             quantizer: str = "auto", percentile: float | None = None, op_types: Sequence[str] | None = None,
             force: bool = False, seed: int = 0, opset: int = DEFAULT_OPSET) -> QuantizeResult:
    """Quantize the FP32 ``model`` (weights file or bundled name) to the INT8 ONNX ``out`` for
    ``target``, check it with onnx.checker, write it and its manifest (atomically; an existing
    ``out`` only with ``force``), then run the quality gate (unless ``gate`` is False); raises
    QualityGateError (artifact kept, manifest ``gate.passed: false``) when it fails.

    ``target="tensorrt"``: explicit Q/DQ ONNX for TensorRT (:mod:`.qdq`: ModelOpt or the
    PyTorch fake-quant fallback, optional QAT). ``target="cpu"``: the same Q/DQ ONNX (convolutions
    only, QAT possible) for the CPU's fastest INT8 runtime: OpenVINO runs every convolution of it
    in integer kernels (``backend="auto"`` picks it for precision ``int8-qdq-cpu``, and the gate
    measures it there). ``target="onnxruntime"``: ONNX Runtime ``quantize_static`` checked to
    really run integer kernels (:mod:`.onnxruntime`). ``target="openvino"``: an INT8 OpenVINO IR
    (``.xml`` + ``.bin``) by NNCF post-training quantization (:mod:`.openvino`).
    ``method``/``percentile``: the activation range calibration; None is the target's default
    (``DEFAULT_METHODS``: percentile at ``DEFAULT_PERCENTILE`` for the Q/DQ targets, max for
    ONNX Runtime).
    ``exclude`` (from the gate's report): module paths (``conv_out``, ``body.0.body.0.dau_top``:
    everything under it), globs, or ONNX node names, kept in float."""
    import torch

    from mirnet.sdk import zoo
    from mirnet.sdk.model import load_model

    from ..export_onnx import check_onnx, export_onnx
    from ..gate import run_gate
    from ..onnx_tools import COMPUTE_OPS, check_tensorrt_ops, known_modules, qdq_summary, resolve_nodes
    from .onnxruntime import check_dynamic_shapes, quantize_onnxruntime, require_integer_kernels
    from .openvino import quantize_openvino
    from .qdq import quantize_qdq_model

    if target not in TARGETS:
        raise ConfigError(f"--target {target!r}: valid targets are {', '.join(TARGETS)}")
    method = DEFAULT_METHODS.get(target) if method is None else method
    percentile = DEFAULT_PERCENTILE if percentile is None else percentile
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: valid methods are {', '.join(METHODS)}")
    if not (0 < percentile <= 100):
        raise ConfigError(f"percentile {percentile!r}: give a value in (0, 100], e.g. 99.999")
    if isinstance(qat_steps, bool) or not isinstance(qat_steps, int) or qat_steps < 0:
        raise ConfigError(f"--qat-steps {qat_steps!r}: give an integer >= 0")
    if qat_steps and target not in QDQ_PRECISIONS:
        raise ConfigError(f"--qat-steps: QAT fine-tunes the fake-quantized PyTorch model of --target cpu or "
                          f"tensorrt; --target {target} quantizes after training only: drop --qat-steps or use "
                          f"--target cpu")
    if qat_steps and data is None:
        raise ConfigError("--qat-steps needs --data DIR (a folder of clean training images)")
    for name, value in (("--max-loss-db", max_loss_db), ("--min-psnr-db", min_psnr_db)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{name} {value!r}: give a value in dB")
    out = artifact.check_overwrite(out, force)  # before the model and calibration load; the writer checks again
    if out.suffix.lower() != SUFFIXES[target]:
        raise ConfigError(f"-o {out}: the INT8 artifact of --target {target} is a {SUFFIXES[target]} file; "
                          f"use a {SUFFIXES[target]} name")
    source = zoo.resolve_weights(model)
    if source.suffix.lower() == ".onnx":
        raise ConfigError(f"{source}: quantize takes the FP32 weights (.safetensors/.pth or a bundled name), "
                          f"not an ONNX file")
    onnx = require("onnx", "optimize")
    onnxruntime = require("onnxruntime", "optimize")
    fp32 = load_model(source).eval()
    cfg = fp32.config
    manifest_in = artifact.read_manifest(source, kind="weights") if source.suffix == ".safetensors" else None
    inputs = model_inputs(manifest_in, folder=calib, pairs=pairs, sigma=sigma, protocol=protocol, model=source.name)
    calib_arr = load_calibration(calib, inputs=inputs, n=calib_images, size=calib_size, multiple=cfg.pad_multiple,
                                 seed=seed)
    calibration = {"folder": None if calib is None else str(calib), "inputs": inputs.record(),
                   "images": int(calib_images), "size": int(calib_arr.shape[-1]), "method": method, "seed": seed,
                   **({"percentile": percentile} if method == "percentile" else {})}
    build = artifact.build_environment(torch=torch.__version__, onnx=onnx.__version__,
                                       onnxruntime=onnxruntime.__version__)
    with artifact.writer(out, force=force, validate=check_onnx if target != "openvino" else None) as w:
        if target in QDQ_PRECISIONS:
            qat = None
            if qat_steps:
                qat = {"steps": qat_steps, "data": data, "size": int(calib_arr.shape[-1]), "inputs": inputs,
                       "lr": qat_lr, "batch": qat_batch, "seed": seed, "target": qat_target}
            record = quantize_qdq_model(fp32, calib_arr, w.tmp, method=method, exclude=exclude,
                                        quantizer=quantizer, percentile=percentile, qat=qat, opset=opset)
            parity = record.pop("parity")
            fields = {"opset": opset, "parity": parity, "qdq": qdq_summary(w.tmp),
                      "simplified": {"tool": "onnxslim", "version": require("onnxslim", "optimize").__version__}}
            if target == "tensorrt":
                fields["tensorrt_issues"] = [{"op": i.op, "node": i.node, "reason": i.reason}
                                             for i in check_tensorrt_ops(w.tmp)]
            precision = QDQ_PRECISIONS[target]
            quantization = {"target": target, "method": method,
                            "weights": "int8 symmetric per-channel (axis 0)",
                            "activations": "int8 symmetric per-tensor", **record}
            if record.get("modelopt"):
                build["modelopt"] = record["modelopt"]
        elif target == "openvino":
            with tempfile.TemporaryDirectory(prefix="mirnet-fp32-", dir=out.parent) as work:
                fp32_onnx = export_onnx(fp32, Path(work) / "fp32.onnx", opset=opset, simplify=True)
                patterns = split_patterns(exclude)
                selected = resolve_nodes(fp32_onnx, patterns, known_modules(cfg.to_dict()), COMPUTE_OPS) \
                    if patterns else {}
                ignored = sorted({n for hits in selected.values() for n in hits})
                record = quantize_openvino(fp32_onnx, calib_arr, w.tmp, ignored_scopes=ignored)
            precision = "int8-openvino"
            quantization = {"target": "openvino", "exclude": patterns, "excluded_nodes": ignored, **record}
            fields = {"io": artifact.io_spec(cfg.to_dict())}
            build["openvino"] = record["openvino"]
        else:
            with tempfile.TemporaryDirectory(prefix="mirnet-fp32-", dir=out.parent) as work:
                fp32_onnx = export_onnx(fp32, Path(work) / "fp32.onnx", opset=opset, simplify=True)
                record = quantize_onnxruntime(fp32_onnx, calib_arr, w.tmp, method=method, exclude=exclude,
                                              percentile=percentile, op_types=op_types, config=cfg.to_dict(),
                                              work_dir=work)
                check = require_integer_kernels(w.tmp)
                dynamic = check_dynamic_shapes(w.tmp, fp32_onnx, cfg.in_channels, cfg.pad_multiple, cfg.scale)
            precision = "int8-ort"
            quantization = {"target": "onnxruntime", "method": method, **record}
            fields = {"opset": opset, "int8_check": check, "dynamic_shapes": dynamic, "qdq": qdq_summary(w.tmp)}
        w.describe(kind="openvino" if target == "openvino" else "onnx", config=cfg.to_dict(), precision=precision,
                   variant=(manifest_in or {}).get("variant"), source=source,
                   quantization=quantization, calibration=calibration, build=build, **fields)
    manifest = w.manifest
    result = QuantizeResult(out, manifest)
    if not gate:
        manifest["gate"] = {"status": "skipped", "reason": "--no-gate"}
        artifact.write_manifest(out, manifest)
        return result
    report = run_gate(out, source, gate_data or calib, inputs=inputs, max_loss_db=max_loss_db, min_psnr_db=min_psnr_db,
                      limit=gate_limit, layers="on-failure", seed=seed, check=False)
    record = report.to_dict()
    manifest["gate"] = {k: record[k] for k in ("passed", "runtime", "inputs", "max_loss_db", "loss_db", "loss_ssim",
                                               "worst_frame", "min_psnr_db", "psnr_db", "psnr_min_db", "ssim", "n",
                                               "data", "vs_clean", "suggested_exclude", "fix")}
    manifest["gate"]["layers"] = record["layers"][:10]
    artifact.write_manifest(out, manifest)
    result.gate = record
    if not report.passed:
        raise QualityGateError(
            f"quality gate failed: {out.name}: {report.reason}. The artifact is kept for inspection (manifest "
            f"gate.passed: false); do not deploy it. Fix: {report.fix}", result=record)
    return result
