"""INT8 post-training quantization (optionally QAT) of MIRNet-v2 for two targets, then the quality gate.

``target="tensorrt"``: explicit Q/DQ ONNX for TensorRT (strongly typed INT8 networks).
    NVIDIA ModelOpt ``mtq.quantize(model, config, forward_loop)``: INT8 symmetric, per-channel
    (axis 0) weights, per-tensor activations at the inputs of Conv/AvgPool layers; calibration
    ``max`` (ModelOpt's max algorithm), ``entropy`` or ``percentile`` (ModelOpt's histogram
    calibrator). Optional QAT fine-tuning, export with ``torch.onnx.export(dynamo=False)`` (opset
    17: ModelOpt's quantizers become QuantizeLinear/DequantizeLinear pairs), onnxslim
    simplification. When ModelOpt is missing or fails on the network (``quantizer="auto"``), the
    same recipe runs with PyTorch's own ``torch.ao.quantization.FakeQuantize`` (methods max and
    percentile); the manifest records which path made the file.
    ONNX Runtime does *not* run this layout with integer kernels on CPU (it is slower than FP32
    there): it is for TensorRT.

``target="cpu"``: a model ONNX Runtime really runs with integer kernels. FP32 export (onnxslim
    simplified, parity-checked), ``quant_pre_process`` (symbolic shape inference with
    ``auto_merge`` so the dynamic batch/H/W axes survive), ``quantize_static`` in QDQ format with
    uint8 activations and int8 per-channel weights (the x86 MLAS kernels' fast path; int8
    activations fall off it), calibration MinMax/Entropy/Percentile. The *optimized* graph ONNX
    Runtime builds is then inspected (``SessionOptions.optimized_model_filepath``) and the counts
    of integer ops and remaining float convs go into the manifest (``int8_check``); no conv in an
    integer kernel is an ArtifactError.

Exclusions (``exclude``, from the gate's report): module paths (``conv_out``,
``body.0.body.0.dau_top``: everything under it), globs, or ONNX node names. TensorRT: the
ModelOpt (or fallback) quantizers of those modules are disabled. CPU: the nodes are passed to
``nodes_to_exclude``, and the Q/DQ pair on an excluded compute node's output is removed as well:
ONNX Runtime would otherwise fuse DequantizeLinear -> Conv -> QuantizeLinear back into a
QLinearConv (quantizing the float weights itself).

Quality gate: after writing the artifact, :func:`mirnet.optimize.gate.run_gate` compares it with the
FP32 model on the calibration folder (or ``gate_data``). Below ``min_psnr_db`` the artifact is
*kept* for inspection with ``gate.passed: false`` in its manifest, and QualityGateError (exit
code 6) is raised with the worst layers and the ``--exclude`` fix.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mirnet.sdk import artifact
from mirnet.sdk.errors import (ArtifactError, ConfigError, InputError, MissingDependencyError,
                               QualityGateError, require)

__all__ = ["quantize", "QuantizeResult", "load_calibration", "TARGETS", "METHODS", "QUANTIZERS",
           "quantize_tensorrt_model", "quantize_cpu_onnx", "export_qdq_onnx"]

TARGETS = ("tensorrt", "cpu")
METHODS = ("max", "entropy", "percentile")
QUANTIZERS = ("auto", "modelopt", "torch")
FALLBACK_METHODS = ("max", "percentile")
DEFAULT_CALIB_IMAGES = 32
DEFAULT_CALIB_SIZE = 128
DEFAULT_PERCENTILE = 99.99
DEFAULT_OPSET = 17
ENTROPY_STRIDE = 16  # ModelOpt entropy search step over its 2048 histogram bins
ORT_ENTROPY_BINS = 512  # ORT's quantize_static default (128 bins = 128 quantized bins) degenerates to MinMax
PARITY_MIN_PSNR_DB = 40.0  # ORT run of the Q/DQ ONNX vs the PyTorch fake-quant model
_QUANTIZABLE = (nn.Conv2d,)


# ---------------------------------------------------------------------------------------------
# Calibration data
# ---------------------------------------------------------------------------------------------

def load_calibration(folder: str | os.PathLike, *, n: int = DEFAULT_CALIB_IMAGES, size: int = DEFAULT_CALIB_SIZE,
                     multiple: int = 4, sigma: float | None = None, seed: int = 0) -> np.ndarray:
    """``n`` calibration crops ``N x 3 x S x S`` (float32 RGB [0, 1]) from the images in ``folder``:
    each a random rescale (0.5-1x, never below ``S``) and random ``S x S`` crop of an image
    (images cycled in a seeded random order), randomly flipped; ``S`` is ``size`` rounded up to
    ``multiple``. With ``sigma`` (0-255 units) AWGN is added and the result clipped to [0, 1], like
    the noisy camera frames a denoiser sees in use."""
    import cv2

    from mirnet.train.data import list_images, load_rgb

    for name, value, lo in (("--calib-images", n, 1), ("calibration size", size, 8)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ConfigError(f"{name} {value!r}: give an integer >= {lo}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"--calib-sigma {sigma!r}: AWGN sigma in 0-255 units, >= 0 (e.g. 25)")
    size = -(-int(size) // multiple) * multiple
    files = list_images(folder)
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng([seed, 1])  # separate: the crops do not depend on sigma
    order = rng.permutation(len(files))
    cache: dict[int, np.ndarray] = {}
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        k = int(order[i % len(files)])
        if k not in cache:
            cache[k] = load_rgb(files[k])
        img = cache[k]
        h, w = img.shape[:2]
        lo = size / min(h, w)
        scale = float(rng.uniform(max(0.5, lo), max(1.0, lo)))
        if abs(scale - 1.0) > 1e-6:
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = img[y:y + size, x:x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if sigma:
            crop = np.clip(crop + noise_rng.normal(0.0, sigma / 255.0, crop.shape), 0.0, 1.0)
        out[i] = crop.transpose(2, 0, 1)
        if len(cache) > 64:
            cache.clear()
    return out


def _batches(calib: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(calib[i:i + batch_size])) for i in range(0, len(calib), batch_size)]


def _forward_loop(calib: np.ndarray, batch_size: int = 4) -> Callable[[nn.Module], None]:
    batches = _batches(calib, batch_size)

    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for x in batches:
                model(x)

    return loop


# ---------------------------------------------------------------------------------------------
# Exclusions (module paths, globs, ONNX node names)
# ---------------------------------------------------------------------------------------------

def _split_patterns(exclude: Iterable[str] | str | None) -> list[str]:
    if exclude is None:
        return []
    if isinstance(exclude, str):
        exclude = [exclude]
    out = []
    for item in exclude:
        out += [p.strip() for p in str(item).split(",") if p.strip()]
    return list(dict.fromkeys(out))


def resolve_modules(model: nn.Module, patterns: Sequence[str]) -> dict[str, list[str]]:
    """Pattern -> quantizable module paths it selects (a module selects everything under it)."""
    from .onnx_tools import module_path

    all_modules = {n for n, _ in model.named_modules() if n}
    quantizable = [n for n, m in model.named_modules() if isinstance(m, _QUANTIZABLE)]
    out = {}
    for pattern in patterns:
        p = module_path(pattern, all_modules) if pattern.startswith("/") else pattern
        hits = [n for n in quantizable if p and (n == p or n.startswith(p + ".") or fnmatch.fnmatchcase(n, p))]
        if not hits:
            raise ConfigError(f"--exclude {pattern!r} selects no conv layer; give module paths such as "
                              f"{', '.join(quantizable[:3] + quantizable[-1:])}, globs (body.0.*) or ONNX node "
                              f"names, as `mirnet gate` prints them")
        out[pattern] = hits
    return out


# ---------------------------------------------------------------------------------------------
# TensorRT target: ModelOpt, or torch.ao FakeQuantize as the fallback
# ---------------------------------------------------------------------------------------------

def _modelopt_config(mtq, method: str, excluded: Sequence[str]) -> dict:
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    quant_cfg = cfg["quant_cfg"]
    histogram = method in ("entropy", "percentile")
    if isinstance(quant_cfg, list):  # modelopt >= 0.4x: ordered list of entries
        for entry in quant_cfg:
            if entry.get("quantizer_name") == "*weight_quantizer":
                entry["cfg"] = {"num_bits": 8, "axis": 0}
            elif entry.get("quantizer_name") == "*input_quantizer":
                entry["cfg"] = {"num_bits": 8, "axis": None, **({"calibrator": "histogram"} if histogram else {})}
        quant_cfg += [{"quantizer_name": f"{m}.*", "enable": False} for m in excluded]
    else:  # older dict form
        quant_cfg["*weight_quantizer"] = {"num_bits": 8, "axis": 0}
        quant_cfg["*input_quantizer"] = {"num_bits": 8, "axis": None, **({"calibrator": "histogram"} if histogram else {})}
        for m in excluded:
            quant_cfg[f"{m}.*"] = {"enable": False}
    cfg["algorithm"] = None if histogram else "max"
    return cfg


def _modelopt_quantize(model: nn.Module, calib: np.ndarray, *, method: str, excluded: Sequence[str],
                       percentile: float) -> nn.Module:
    import modelopt.torch.quantization as mtq

    cfg = _modelopt_config(mtq, method, excluded)
    loop = _forward_loop(calib)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "max":
            mtq.quantize(model, cfg, loop)
        else:
            from modelopt.torch.quantization.calib import HistogramCalibrator
            from modelopt.torch.quantization.model_calib import enable_stats_collection
            from modelopt.torch.quantization.nn import TensorQuantizer

            mtq.quantize(model, cfg, None)  # insert the quantizers only
            enable_stats_collection(model)
            loop(model)
            for _, q in model.named_modules():
                if not isinstance(q, TensorQuantizer) or q._disabled or getattr(q, "_calibrator", None) is None:
                    continue
                if isinstance(q._calibrator, HistogramCalibrator):
                    # entropy: stride 16 over the 2048 histogram bins (stride 1 took 460 s for lite)
                    q.load_calib_amax(method, **({"percentile": percentile} if method == "percentile"
                                                 else {"stride": ENTROPY_STRIDE}))
                else:
                    q.load_calib_amax()
                q.enable_quant()
                q.disable_calib()
    enabled = [n for n, q in model.named_modules() if n.endswith("_quantizer") and getattr(q, "is_enabled", False)]
    if not enabled:
        raise ArtifactError("ModelOpt inserted no enabled quantizer")
    return model


class _FakeQuantConv2d(nn.Conv2d):
    """A Conv2d whose input (per-tensor) and weight (per-channel, axis 0) pass through
    ``torch.ao.quantization.FakeQuantize`` (symmetric int8). Keeps the module path, so ONNX node
    names match the FP32 export."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        weight = self.weight_quantizer(self.weight) if self.weight_quantizer is not None else self.weight
        return self._conv_forward(x, weight, self.bias)


def _amax_to_scale(amax: torch.Tensor) -> torch.Tensor:
    return torch.clamp(amax.float(), min=1e-8) / 127.0


def _fakequant_quantize(model: nn.Module, calib: np.ndarray, *, method: str, excluded: Sequence[str],
                        percentile: float) -> nn.Module:
    from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver

    if method not in FALLBACK_METHODS:
        raise ConfigError(f"--method {method}: the PyTorch fake-quant path supports {', '.join(FALLBACK_METHODS)} "
                          f"(entropy calibration needs ModelOpt: pip install nvidia-modelopt requests huggingface_hub)")
    convs = {n: m for n, m in model.named_modules() if isinstance(m, _QUANTIZABLE) and n not in set(excluded)}
    stats: dict[str, list[float]] = {n: [] for n in convs}

    def hook(name):
        def pre(_module, args):
            x = args[0].detach().abs().flatten().float()
            if method == "max":
                stats[name].append(float(x.max()))
            else:
                k = max(1, int(round(x.numel() * percentile / 100.0)))
                stats[name].append(float(x.kthvalue(min(k, x.numel())).values))
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in convs.items()]
    try:
        _forward_loop(calib)(model)
    finally:
        for h in handles:
            h.remove()
    for name, conv in convs.items():
        values = stats[name]
        amax = max(values) if method == "max" else float(np.mean(values))
        act = FakeQuantize(observer=MinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                           qscheme=torch.per_tensor_symmetric)
        act.scale = _amax_to_scale(torch.tensor([amax]))
        act.zero_point = torch.zeros(1, dtype=torch.int32)
        wt = FakeQuantize(observer=PerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                          qscheme=torch.per_channel_symmetric, ch_axis=0)
        conv.__class__ = _FakeQuantConv2d
        conv.add_module("input_quantizer", act)
        conv.add_module("weight_quantizer", wt)
        _refresh_weight_scales(conv)
        act.disable_observer()
        act.enable_fake_quant()
    return model


def _refresh_weight_scales(conv: nn.Module) -> None:
    """Per-channel weight scales from the current weights (after calibration and after QAT)."""
    wq = conv.weight_quantizer
    amax = conv.weight.detach().abs().flatten(1).amax(dim=1)
    wq.scale = _amax_to_scale(amax)
    wq.zero_point = torch.zeros_like(amax, dtype=torch.int32)
    wq.disable_observer()
    wq.enable_fake_quant()


def _qat(qmodel: nn.Module, teacher: nn.Module, *, steps: int, data: str | os.PathLike, size: int,
         sigma: float | None, lr: float, batch: int, seed: int, target: str) -> dict:
    """Fine-tune the fake-quantized model for ``steps`` AdamW steps on crops of ``data`` (a folder
    of clean images, AWGN ``sigma`` added when given), Charbonnier loss against the FP32 teacher's
    output (``target="teacher"``, distillation) or the clean crop (``target="clean"``)."""
    from mirnet.train.data import SourceConfig, TrainSet
    from mirnet.train.degrade import DegradeConfig
    from mirnet.train.losses import CharbonnierLoss

    if target not in ("teacher", "clean"):
        raise ConfigError(f"--qat-target {target!r}: valid values are teacher, clean")
    degrade = DegradeConfig(awgn_sigma=(float(sigma), float(sigma)) if sigma else None, clip=bool(sigma))
    dataset = TrainSet([SourceConfig(clean=str(data), degrade=degrade)], seed=seed)
    loss_fn = CharbonnierLoss()
    params = [p for p in qmodel.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    teacher = teacher.eval()
    qmodel.train()
    losses = []
    for step in range(steps):
        pairs = [dataset[(step, j, size)] for j in range(batch)]
        inp = torch.stack([p[0] for p in pairs])
        with torch.no_grad():
            tgt = teacher(inp) if target == "teacher" else torch.stack([p[1] for p in pairs])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(qmodel(inp), tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    qmodel.eval()
    for m in qmodel.modules():
        if isinstance(m, _FakeQuantConv2d) and m.weight_quantizer is not None:
            _refresh_weight_scales(m)
    return {"steps": steps, "lr": lr, "batch": batch, "patch": size, "target": target, "data": str(data),
            "sigma": sigma, "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}


def export_qdq_onnx(qmodel: nn.Module, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                    simplify: bool = True) -> dict:
    """Export a fake-quantized model (ModelOpt or fallback) to explicit Q/DQ ONNX with dynamic
    batch/H/W (``dynamo=False``: ModelOpt's quantizers only export there), simplify it with
    onnxslim and check it (onnx.checker; ONNX Runtime vs PyTorch at another shape). Returns the
    parity record."""
    onnx = require("onnx", "optimize")
    from .onnx_tools import drop_noop_casts
    from .onnx_tools import simplify as slim

    cfg = qmodel.config
    m = cfg.pad_multiple
    out = Path(out)
    qmodel = qmodel.eval()
    dummy = torch.rand(1, cfg.in_channels, 8 * m, 8 * m)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(qmodel, (dummy,), str(out), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "output": {0: "batch", 2: "out_height", 3: "out_width"}})
    model, _ = drop_noop_casts(str(out))
    onnx.save(slim(model) if simplify else model, str(out))
    try:
        onnx.checker.check_model(str(out), full_check=True)
    except Exception as exc:
        raise ArtifactError(f"the Q/DQ ONNX fails onnx.checker: {exc}") from exc
    shape = (m * max(1, -(-40 // m)), m * max(1, -(-56 // m)))
    x = np.random.default_rng(1).random((1, cfg.in_channels, *shape), dtype=np.float32)
    got = _ort_run(out, x)
    with torch.no_grad():
        want = qmodel(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ArtifactError(f"Q/DQ ONNX output shape {got.shape} != PyTorch {want.shape} at {shape}")
    mse = float(np.mean((got - want) ** 2))
    parity_db = 99.0 if mse == 0 else min(99.0, 10 * math.log10(1.0 / mse))
    if parity_db < PARITY_MIN_PSNR_DB:
        raise ArtifactError(f"the Q/DQ ONNX run by ONNX Runtime differs from the PyTorch fake-quant model "
                            f"(PSNR {parity_db:.1f} dB < {PARITY_MIN_PSNR_DB} dB at {shape}): the export is wrong")
    return {"reference": "pytorch-fakequant", "psnr_db": round(parity_db, 2),
            "max_abs_diff": float(np.abs(got - want).max()), "shape": list(shape)}


def _ort_session(path, threads: int = 1):
    ort = require("onnxruntime", "optimize")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_run(path, x: np.ndarray) -> np.ndarray:
    return _ort_session(path).run(None, {"input": x})[0]


def qdq_summary(onnx_path: str | os.PathLike) -> dict:
    """Counts that describe a Q/DQ graph: activation pairs (per-tensor or not), weight DQs
    (per-channel on axis 0 or not), zero-point types."""
    from onnx import numpy_helper

    from .onnx_tools import _attr, _const_values, load, qdq_pairs, weight_dq_nodes

    model = load(onnx_path)
    consts = _const_values(model.graph)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts.update(inits)
    pairs = qdq_pairs(model)
    dq_by_name = {n.name: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    act_per_tensor = sum(1 for p in pairs if consts.get(dq_by_name[p.dequantize].input[1]) is not None
                         and consts[dq_by_name[p.dequantize].input[1]].size == 1)
    wdq = weight_dq_nodes(model)
    producers = {o: n for n in model.graph.node for o in n.output}
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


def quantize_tensorrt_model(model: nn.Module, calib: np.ndarray, out: str | os.PathLike, *, method: str = "max",
                            exclude: Sequence[str] = (), quantizer: str = "auto",
                            percentile: float = DEFAULT_PERCENTILE, qat: dict | None = None,
                            opset: int = DEFAULT_OPSET) -> dict:
    """Quantize a copy of ``model`` for TensorRT and write the Q/DQ ONNX ``out`` (no manifest).
    Returns the record (path used, fallback reason, excluded modules, parity, QAT)."""
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"--quantizer {quantizer!r}: valid values are {', '.join(QUANTIZERS)}")
    patterns = _split_patterns(exclude)
    excluded = sorted({m for hits in resolve_modules(model, patterns).values() for m in hits})
    record: dict = {"exclude": patterns, "excluded_modules": excluded}
    reason = None
    if quantizer in ("auto", "modelopt"):
        try:
            import modelopt
            import modelopt.torch.quantization  # noqa: F401
        except Exception as exc:  # ImportError or a broken install
            if quantizer == "modelopt":
                raise MissingDependencyError(
                    f"nvidia-modelopt cannot be imported ({exc}); pip install nvidia-modelopt requests "
                    f"huggingface_hub (never its [onnx] extra), or use --quantizer torch") from exc
            reason = f"modelopt import failed: {type(exc).__name__}: {exc}"
        else:
            try:
                qmodel = _modelopt_quantize(copy.deepcopy(model), calib, method=method, excluded=excluded,
                                            percentile=percentile)
                if qat:
                    record["qat"] = _qat(qmodel, model, **qat)
                record["parity"] = export_qdq_onnx(qmodel, out, opset=opset)
                record.update(path="modelopt", modelopt=modelopt.__version__)
                return record
            except (ConfigError, InputError):
                raise
            except Exception as exc:
                if quantizer == "modelopt":
                    raise ArtifactError(f"ModelOpt failed on this network ({type(exc).__name__}: {exc}); "
                                        f"retry with --quantizer torch") from exc
                reason = f"modelopt failed on this network: {type(exc).__name__}: {exc}"
                warnings.warn(f"{reason}; falling back to PyTorch fake-quant", stacklevel=2)
    qmodel = _fakequant_quantize(copy.deepcopy(model), calib, method=method, excluded=excluded, percentile=percentile)
    if qat:
        record["qat"] = _qat(qmodel, model, **qat)
    record["parity"] = export_qdq_onnx(qmodel, out, opset=opset)
    record.update(path="torch-fakequant", fallback_reason=reason)
    return record


# ---------------------------------------------------------------------------------------------
# CPU target: ONNX Runtime quantize_static
# ---------------------------------------------------------------------------------------------

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
    ONNX Runtime cannot fuse an excluded conv back into an integer kernel. Returns pairs removed."""
    onnx = require("onnx", "optimize")
    model = onnx.load(str(path))
    graph = model.graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    wanted = set(nodes)
    remove = []
    for node in graph.node:
        if node.name not in wanted:
            continue
        for out in node.output:
            for q in list(consumers.get(out, [])):
                if q.op_type != "QuantizeLinear":
                    continue
                dqs = consumers.get(q.output[0], [])
                if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
                    continue
                for dq in dqs:
                    for c in consumers.get(dq.output[0], []):
                        c.input[:] = [out if i == dq.output[0] else i for i in c.input]
                    for o in graph.output:
                        if o.name == dq.output[0]:
                            raise ArtifactError(f"cannot exclude {node.name}: its quantized output is a graph output")
                    remove.append(dq)
                remove.append(q)
    for n in remove:
        graph.node.remove(n)
    onnx.save(model, str(path))
    return sum(1 for n in remove if n.op_type == "QuantizeLinear")


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


def quantize_cpu_onnx(fp32_onnx: str | os.PathLike, calib: np.ndarray, out: str | os.PathLike, *,
                      method: str = "max", exclude: Sequence[str] = (), percentile: float = DEFAULT_PERCENTILE,
                      op_types: Sequence[str] | None = None, config: dict | None = None,
                      work_dir: str | os.PathLike | None = None) -> dict:
    """ONNX Runtime static quantization of an FP32 ONNX (QDQ, U8 activations, S8 per-channel
    weights) to ``out`` (no manifest); checks the optimized graph. Returns the record."""
    require("onnxruntime", "optimize")
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .onnx_tools import COMPUTE_OPS, known_modules, load, resolve_nodes

    methods = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ConfigError(f"--method {method!r}: valid methods for --target cpu are {', '.join(methods)}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="mirnet-quant-", dir=work_dir) as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_mode = _pre_process(Path(fp32_onnx), pre)
        patterns = _split_patterns(exclude)
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


def _check_dynamic(q_onnx: Path, fp32_onnx: Path, in_channels: int, multiple: int, scale: int) -> list:
    """Run the INT8 model at two shapes (not the calibration shape's aspect) against FP32."""
    rows = []
    rng = np.random.default_rng(2)
    for hw in ((multiple * max(2, -(-24 // multiple)), multiple * max(3, -(-40 // multiple))),
               (multiple * max(3, -(-36 // multiple)), multiple * max(2, -(-20 // multiple)))):
        yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
        smooth = 0.5 + 0.3 * np.sin(xx / 7.0)[None] * np.cos(yy / 5.0)[None]
        x = np.repeat(smooth[None], in_channels, axis=1).astype(np.float32)
        x += rng.normal(0, 0.02, x.shape).astype(np.float32)
        got, want = _ort_run(q_onnx, x), _ort_run(fp32_onnx, x)
        expected = (1, want.shape[1], hw[0] * scale, hw[1] * scale)
        if got.shape != expected:
            raise ArtifactError(f"INT8 model output shape {got.shape} at input {hw} (expected {expected}): "
                                f"the dynamic H/W axes did not survive quantization")
        if not np.all(np.isfinite(got)):
            raise ArtifactError(f"INT8 model output is not finite at input {hw}")
        mse = float(np.mean((np.clip(got, 0, 1) - np.clip(want, 0, 1)) ** 2))
        rows.append({"shape": list(hw), "psnr_vs_fp32_db": 99.0 if mse == 0 else round(min(99.0, 10 * math.log10(1 / mse)), 2)})
    return rows


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

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
    ``target`` ("tensorrt" or "cpu"), write its manifest, then run the quality gate (skipped when
    ``min_psnr_db`` is None). See the module docstring; raises QualityGateError (artifact kept,
    manifest ``gate.passed: false``) below the threshold."""
    from mirnet.sdk import zoo
    from mirnet.sdk.model import load_model

    from .gate import run_gate

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
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {out}: the INT8 artifact is an ONNX file; use a .onnx name")
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    source = zoo.resolve_weights(model)
    if source.suffix.lower() == ".onnx":
        raise ConfigError(f"{source}: quantize takes the FP32 weights (.safetensors/.pth or a bundled name), "
                          f"not an ONNX file")
    fp32 = load_model(source).eval()
    variant = artifact.read_manifest(source, kind="weights").get("variant") if source.suffix == ".safetensors" else None
    cfg = fp32.config
    calib_arr = load_calibration(calib, n=calib_images, size=calib_size, multiple=cfg.pad_multiple,
                                 sigma=calib_sigma, seed=seed)
    calibration = {"folder": str(calib), "images": int(calib_images), "size": int(calib_arr.shape[-1]),
                   "sigma": calib_sigma, "method": method, "seed": seed,
                   **({"percentile": percentile} if method == "percentile" else {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    onnx = require("onnx", "optimize")
    onnxruntime = require("onnxruntime", "optimize")

    from .onnx_tools import check_tensorrt_ops, int8_check

    build = artifact.build_environment(torch=torch.__version__, onnx=onnx.__version__,
                                       onnxruntime=onnxruntime.__version__)
    try:
        if target == "tensorrt":
            qat = None
            if qat_steps:
                qat = {"steps": qat_steps, "data": data, "size": int(calib_arr.shape[-1]), "sigma": calib_sigma,
                       "lr": qat_lr, "batch": qat_batch, "seed": seed, "target": qat_target}
            record = quantize_tensorrt_model(fp32, calib_arr, tmp, method=method, exclude=exclude,
                                             quantizer=quantizer, percentile=percentile, qat=qat, opset=opset)
            parity = record.pop("parity")
            issues = [{"op": i.op, "node": i.node, "reason": i.reason} for i in check_tensorrt_ops(tmp)]
            fields = {"opset": opset, "parity": parity, "qdq": qdq_summary(tmp), "tensorrt_issues": issues,
                      "simplified": {"tool": "onnxslim", "version": _onnxslim_version()}}
            precision = "int8-qdq"
            quantization = {"target": "tensorrt", "method": method,
                            "weights": "int8 symmetric per-channel (axis 0)",
                            "activations": "int8 symmetric per-tensor", **record}
            if record.get("modelopt"):
                build["modelopt"] = record["modelopt"]
        else:
            from .export_onnx import export_onnx

            with tempfile.TemporaryDirectory(prefix="mirnet-fp32-", dir=out.parent) as work:
                fp32_onnx = export_onnx(fp32, Path(work) / "fp32.onnx", opset=opset, simplify=True)
                record = quantize_cpu_onnx(fp32_onnx, calib_arr, tmp, method=method, exclude=exclude,
                                           percentile=percentile, op_types=op_types, config=cfg.to_dict(),
                                           work_dir=work)
                check = int8_check(tmp)
                dynamic = _check_dynamic(tmp, fp32_onnx, cfg.in_channels, cfg.pad_multiple, cfg.scale)
            if check["integer_convs"] == 0:
                raise ArtifactError(
                    f"ONNX Runtime {onnxruntime.__version__} runs no conv of the quantized model in an integer "
                    f"kernel (optimized graph: {check['float_convs']} float convs, ops {check['ops']}); the "
                    f"artifact would be INT8 on disk only. Not written")
            precision = "int8-ort"
            quantization = {"target": "cpu", "method": method, **record}
            fields = {"opset": opset, "int8_check": check, "dynamic_shapes": dynamic, "qdq": qdq_summary(tmp)}
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    manifest = artifact.make_manifest(out, kind="onnx", config=cfg.to_dict(), precision=precision, variant=variant,
                                      source=source, quantization=quantization, calibration=calibration,
                                      build=build, **fields)
    artifact.write_manifest(out, manifest)
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


def _onnxslim_version() -> str | None:
    try:
        import onnxslim

        return onnxslim.__version__
    except ImportError:
        return None
