"""INT8 post-training quantization (optionally QAT) of MIRNet-v2 for two targets, then the quality gate.

- :mod:`.calibration`: calibration crops of the user's images (noised like the model's inputs)
  and the ``--exclude`` patterns;
- :mod:`.tensorrt`: explicit Q/DQ ONNX for TensorRT (ModelOpt, or PyTorch fake-quant as the
  fallback; QAT through ``mirnet.train.loop``);
- :mod:`.onnxruntime`: ONNX Runtime ``quantize_static``, checked to run integer kernels on CPU;
- :mod:`.openvino`: NNCF post-training quantization to an INT8 OpenVINO IR (CPU);
- :mod:`.orchestrator`: :func:`quantize` (what ``mirnet quantize`` runs): load, calibrate,
  quantize for the target, write the artifact and its manifest, run the quality gate.
"""
from .calibration import (DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_SIZE, DEFAULT_METHODS, DEFAULT_PERCENTILE, METHODS,
                          load_calibration)
from .onnxruntime import quantize_onnxruntime
from .orchestrator import TARGETS, QuantizeResult, quantize
from .qdq import QUANTIZERS, export_qdq_onnx, quantize_qdq_model

__all__ = ["quantize", "QuantizeResult", "load_calibration", "TARGETS", "METHODS", "QUANTIZERS",
           "quantize_qdq_model", "quantize_onnxruntime", "export_qdq_onnx", "DEFAULT_CALIB_IMAGES",
           "DEFAULT_CALIB_SIZE", "DEFAULT_METHODS", "DEFAULT_PERCENTILE"]
