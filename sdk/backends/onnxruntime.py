"""ONNX Runtime backend (CPU by default, one intra-op thread unless told: fastest on 2 cores)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import artifact
from ..errors import ArtifactError, require
from .base import Backend, InputSpec, check_threads, io_mismatch


class OrtBackend(Backend):
    name = "ort"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: list[str] | None = None):
        check_threads(threads)
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
        self._check_graph()
        self._dtype = np.float16 if self.input_spec.dtype == "float16" else np.float32

    def _check_graph(self) -> None:
        """The graph's one input and one output must be the manifest's (names, input element type,
        channels), or ONNX Runtime would fail later, at the first frame, with its own error."""
        spec = self.input_spec
        want_type = {"float32": "tensor(float)", "float16": "tensor(float16)"}[spec.dtype]
        for side, args, name, channels in (("input", self._session.get_inputs(), spec.input_name, spec.channels),
                                           ("output", self._session.get_outputs(), spec.output_name,
                                            spec.out_channels)):
            arg = args[0] if len(args) == 1 else None
            dims = arg.shape if arg is not None else []
            ok = (arg is not None and arg.name == name and (side == "output" or arg.type == want_type)
                  and (len(dims) != 4 or not isinstance(dims[1], int) or dims[1] == channels))
            if not ok:
                raise io_mismatch(self.path, side, spec, ", ".join(f"{a.name!r} {a.type} {a.shape}" for a in args))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.input_spec.check(batch)
        feed = {self.input_spec.input_name: np.ascontiguousarray(batch, dtype=self._dtype)}
        out = self._session.run([self.input_spec.output_name], feed)[0]
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        self._session = None
