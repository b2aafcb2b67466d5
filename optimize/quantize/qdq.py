"""Explicit Q/DQ ONNX: INT8 for TensorRT (strongly typed INT8 networks) and for OpenVINO on CPU.

NVIDIA ModelOpt ``mtq.quantize(model, config, forward_loop)``: INT8 symmetric, per-channel (axis 0)
weights, per-tensor activations at the inputs of Conv/AvgPool layers; calibration ``max``
(ModelOpt's max algorithm), ``entropy`` or ``percentile`` (ModelOpt's histogram calibrator).
Optional QAT fine-tuning (``mirnet train``'s step and loop, distilled from the FP32 model), export
with ``torch.onnx.export(dynamo=False)`` (opset 17: ModelOpt's quantizers become
QuantizeLinear/DequantizeLinear pairs), onnxslim simplification. When ModelOpt is missing or fails
on the network (``quantizer="auto"``), the same recipe runs with PyTorch's own
``torch.ao.quantization.FakeQuantize`` (methods max and percentile); the record says which path
made the file. Excluded modules keep their quantizers disabled.

ONNX Runtime does *not* run this layout with integer kernels on CPU (it is slower than FP32 there).
OpenVINO does: it runs every convolution of it in INT8 kernels (``brgconv_avx512_I8`` on AVX-512
VNNI), which is what ``mirnet quantize --target cpu`` ships.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mirnet.sdk.errors import ArtifactError, ConfigError, InputError, MissingDependencyError, require

from ..export_onnx import DEFAULT_OPSET, check_onnx
from .calibration import DEFAULT_PERCENTILE, split_patterns

__all__ = ["quantize_qdq_model", "export_qdq_onnx", "resolve_modules", "QUANTIZERS", "FALLBACK_METHODS"]

QUANTIZERS = ("auto", "modelopt", "torch")
FALLBACK_METHODS = ("max", "percentile")
ENTROPY_STRIDE = 16  # ModelOpt entropy search step over its 2048 histogram bins
PARITY_MIN_PSNR_DB = 40.0  # ORT run of the Q/DQ ONNX vs the PyTorch fake-quant model
_QUANTIZABLE = (nn.Conv2d,)


def _batches(calib: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(calib[i:i + batch_size])) for i in range(0, len(calib), batch_size)]


def _forward_loop(calib: np.ndarray, batch_size: int = 4) -> Callable[[nn.Module], None]:
    batches = _batches(calib, batch_size)

    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for x in batches:
                model(x)

    return loop


def resolve_modules(model: nn.Module, patterns: Sequence[str]) -> dict[str, list[str]]:
    """Pattern -> quantizable module paths it selects (a module selects everything under it)."""
    from ..onnx_tools import module_path

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
         inputs, lr: float, batch: int, seed: int, target: str) -> dict:
    """Fine-tune the fake-quantized model for ``steps`` steps of :class:`mirnet.train.loop.TrainStep`
    (AdamW at a constant ``lr``, gradient clipping at 1) on crops of the model's own ``inputs``
    (:class:`mirnet.sdk.mixture.ModelInputs`) made from ``data`` (a folder of clean images),
    Charbonnier loss against the FP32 teacher's output (``target="teacher"``, distillation) or the
    ground truth (``target="clean"``)."""
    from torch.utils.data import DataLoader

    from mirnet.train.data import ProgressiveSchedule, StepBatchSampler, TrainSet, sources_for
    from mirnet.train.loop import TrainStep, run_steps
    from mirnet.train.losses import CharbonnierLoss

    if target not in ("teacher", "clean"):
        raise ConfigError(f"--qat-target {target!r}: valid values are teacher, clean")
    dataset = TrainSet(sources_for(inputs, data), seed=seed)
    sampler = StepBatchSampler(ProgressiveSchedule([steps], [size], [batch]))
    teacher = teacher.eval()
    step = TrainStep(qmodel, CharbonnierLoss(), lr=lr, periods=[steps], eta_mins=[lr], grad_clip=1.0,
                     target=(lambda inputs, _clean: teacher(inputs)) if target == "teacher" else None)
    losses = run_steps(step, DataLoader(dataset, batch_sampler=sampler, num_workers=0), total=steps,
                       desc="QAT")
    qmodel.eval()
    for m in qmodel.modules():
        if isinstance(m, _FakeQuantConv2d) and m.weight_quantizer is not None:
            _refresh_weight_scales(m)
    return {"steps": steps, "lr": lr, "batch": batch, "patch": size, "target": target, "data": str(data),
            "inputs": inputs.description, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None}


def export_qdq_onnx(qmodel: nn.Module, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                    simplify: bool = True) -> dict:
    """Export a fake-quantized model (ModelOpt or fallback) to explicit Q/DQ ONNX with dynamic
    batch/H/W (``dynamo=False``: ModelOpt's quantizers only export there), simplify it with
    onnxslim and check it (onnx.checker; ONNX Runtime vs PyTorch at another shape). Returns the
    parity record."""
    onnx = require("onnx", "optimize")
    from mirnet.sdk.metrics import psnr

    from ..gate import PSNR_CAP
    from ..onnx_tools import drop_noop_casts, ort_run
    from ..onnx_tools import simplify as slim

    cfg = qmodel.config
    m = cfg.pad_multiple
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
    check_onnx(out)
    shape = (m * max(1, -(-40 // m)), m * max(1, -(-56 // m)))
    x = np.random.default_rng(1).random((1, cfg.in_channels, *shape), dtype=np.float32)
    got = ort_run(out, x)
    with torch.no_grad():
        want = qmodel(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ArtifactError(f"Q/DQ ONNX output shape {got.shape} != PyTorch {want.shape} at {shape}")
    parity_db = min(PSNR_CAP, psnr(got, want))
    if parity_db < PARITY_MIN_PSNR_DB:
        raise ArtifactError(f"the Q/DQ ONNX run by ONNX Runtime differs from the PyTorch fake-quant model "
                            f"(PSNR {parity_db:.1f} dB < {PARITY_MIN_PSNR_DB} dB at {shape}): the export is wrong")
    return {"reference": "pytorch-fakequant", "psnr_db": round(parity_db, 2),
            "max_abs_diff": float(np.abs(got - want).max()), "shape": list(shape)}


def quantize_qdq_model(model: nn.Module, calib: np.ndarray, out: str | os.PathLike, *, method: str = "max",
                       exclude: Sequence[str] = (), quantizer: str = "auto",
                       percentile: float = DEFAULT_PERCENTILE, qat: dict | None = None,
                       opset: int = DEFAULT_OPSET) -> dict:
    """Quantize a copy of ``model`` and write the Q/DQ ONNX ``out`` (no manifest).
    Returns the record (path used, fallback reason, excluded modules, parity, QAT)."""
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"--quantizer {quantizer!r}: valid values are {', '.join(QUANTIZERS)}")
    patterns = split_patterns(exclude)
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
