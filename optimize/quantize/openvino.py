"""INT8 for OpenVINO on the CPU: NNCF post-training quantization of the FP32 model.

``nncf.quantize`` on the model OpenVINO reads from the FP32 ONNX: it inserts FakeQuantize nodes
(8-bit activations and per-channel weights), which OpenVINO's CPU plugin runs as INT8 kernels.
``preset``: ``performance`` (symmetric activations and weights: the fast kernels) or ``mixed``
(asymmetric activations, symmetric weights: better for activations that are not centred on
zero, such as the post-LeakyReLU ones). Exclusions are OpenVINO node names, which are the ONNX
node names of the export (``/conv_in/Conv``).
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mirnet.sdk.errors import ConfigError, InputError, require

__all__ = ["quantize_openvino", "PRESETS"]

PRESETS = ("performance", "mixed")


def quantize_openvino(fp32_onnx: str | os.PathLike, calib: np.ndarray, out_xml: str | os.PathLike, *,
                      ignored_scopes: Sequence[str] | None = None, preset: str = "performance",
                      fast_bias_correction: bool = True, subset_size: int | None = None) -> dict:
    """Quantize the FP32 ONNX ``fp32_onnx`` with NNCF, calibrated on ``calib`` (N x C x S x S float32,
    one sample per crop), and save the INT8 IR to ``out_xml`` and ``out_xml.with_suffix('.bin')``
    (FP32 weights outside the quantized ops; no manifest: inside ``artifact.writer`` pass ``w.tmp``).
    ``ignored_scopes``: node names kept in float; ``subset_size``: calibration samples NNCF uses
    (None: all of ``calib``). Returns the record: versions, settings and the number of FakeQuantize
    nodes in the result."""
    ov = require("openvino", "openvino")
    nncf = require("nncf", "openvino")
    from mirnet.sdk.backends.openvino import core

    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r}: valid presets are {', '.join(PRESETS)}")
    if not (isinstance(calib, np.ndarray) and calib.ndim == 4 and calib.dtype == np.float32 and len(calib)):
        raise InputError(f"calibration data {getattr(calib, 'shape', type(calib).__name__)} "
                         f"{getattr(calib, 'dtype', '')}: expected a non-empty N x C x H x W float32 array")
    samples = len(calib) if subset_size is None else subset_size
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= len(calib):
        raise ConfigError(f"subset_size={subset_size!r}: must be None (all {len(calib)} samples) or an integer "
                          f"from 1 to {len(calib)}")
    model = core().read_model(str(fp32_onnx))
    ignored = list(ignored_scopes or [])
    names = {op.get_friendly_name() for op in model.get_ops()}
    unknown = [name for name in ignored if name not in names]
    if unknown:
        examples = sorted(n for n in names if n.endswith("/Conv"))[:3]
        raise ConfigError(f"ignored_scopes {unknown}: no such node in {Path(fp32_onnx).name}; give node names "
                          f"of the model, e.g. {examples}")
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(
            model, dataset, preset=nncf.QuantizationPreset(preset), target_device=nncf.TargetDevice.CPU,
            subset_size=samples, fast_bias_correction=fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    return {"tool": "nncf", "nncf": nncf.__version__, "openvino": ov.__version__, "preset": preset,
            "fast_bias_correction": fast_bias_correction, "subset_size": samples, "calibration_samples": len(calib),
            "fake_quantize_nodes": fake_quantize, "ignored_scopes": ignored}
