"""ONNX Runtime backend (CPU by default, one intra-op thread unless told: fastest on 2 cores)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import artifact
from ..errors import ArtifactError, require
from .base import Backend, InputSpec


class OrtBackend(Backend):
    name = "ort"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: list[str] | None = None):
        ort = require("onnxruntime", "ort")
        self.path = Path(path)
        self.manifest = artifact.read_manifest(self.path, kind="onnx")
        self.input_spec = InputSpec.from_manifest(self.manifest)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1 if threads is None else threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = providers or ["CPUExecutionProvider"]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ArtifactError(f"ONNX Runtime providers {unknown} are not available here; available: {available}")
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it ({exc})") from exc
        self._dtype = np.float16 if self.input_spec.dtype == "float16" else np.float32

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.input_spec.check(batch)
        feed = {self.input_spec.input_name: np.ascontiguousarray(batch, dtype=self._dtype)}
        out = self._session.run([self.input_spec.output_name], feed)[0]
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        self._session = None
