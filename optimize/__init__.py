"""Model optimisation: ONNX export, pruning, INT8 quantisation, TensorRT engines, quality gate."""
