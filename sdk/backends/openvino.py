"""OpenVINO backend on the CPU: an ``.onnx`` file read directly, or an OpenVINO IR (``.xml`` with its
``.bin`` beside it, manifest kind ``openvino``).

Shapes: every input shape runs on a model compiled for its exact size (compiled at the shape's first
call, kept for the last :data:`STATIC_SHAPES` shapes), so one shape always gets the same numbers.
Measured on the 2-core AMD EPYC (AVX-512 BF16), denoise-lite at 640x360, one thread: static 71.9 ms
vs dynamic 84.2 ms in bf16, 116.0 vs 133.4 ms in f32; one compile takes about 0.3 s. The model is
also compiled once with dynamic batch/H/W when opened, which checks it and runs any shape a static
compile refuses. Latency settings: ``threads`` (default 1, as ONNX Runtime: fastest on 2
cores), one stream, ``PERFORMANCE_HINT`` LATENCY. ``precision`` is the inference precision of the
float parts of the network: ``auto`` runs bf16 where the CPU has BF16 kernels (AVX-512 BF16, AMX),
f32 elsewhere; ``f32`` forces f32. ``openvino`` is imported only when a backend is opened.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .. import artifact
from ..errors import ArtifactError, ConfigError, require
from .base import Backend, InputSpec, check_threads, io_mismatch

#: values of ``precision``: ``auto`` is bf16 on a CPU with BF16, else f32
PRECISIONS = ("auto", "f32", "bf16")
#: manifest kind of each file suffix this backend opens
KIND_OF_SUFFIX = {".onnx": "onnx", ".xml": "openvino"}
#: how many input shapes keep a model compiled for their exact size (least recently used dropped)
STATIC_SHAPES = 8


@functools.lru_cache(maxsize=1)
def core():
    """The process's shared ``openvino.Core``."""
    return require("openvino", "openvino").Core()


def cpu_capabilities() -> list[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (``FP32``, ``BF16``, ``INT8``, ...)."""
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def choose_precision(precision: str = "auto") -> tuple[str, str]:
    """The inference precision ``precision`` means on this CPU (f32 or bf16) and why, in words.
    ConfigError for an unknown value, or for bf16 on a CPU without BF16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: valid precisions are {', '.join(PRECISIONS)}")
    capabilities = cpu_capabilities()
    has_bf16 = "BF16" in capabilities
    if precision == "bf16" and not has_bf16:
        raise ConfigError(f"precision='bf16': this CPU has no BF16 kernels (OpenVINO CPU capabilities: "
                          f"{', '.join(capabilities)}); use precision 'f32' or 'auto'")
    if precision == "auto":
        return ("bf16", "CPU has BF16") if has_bf16 else ("f32", "CPU lacks BF16")
    return precision, "requested"


def compile_cpu(model, *, threads: int | None = None, precision: str = "f32", shape: tuple | None = None):
    """Compile ``model`` (an ``openvino.Model``, reshaped in place to dynamic batch/H/W, or to the
    static ``shape`` N x C x H x W) for the CPU with this backend's settings: ``threads`` (None: 1)
    inference threads, one stream, latency hint, ``precision`` (f32 or bf16) as the inference precision."""
    ov = require("openvino", "openvino")
    dynamic = ov.Dimension()
    channels = model.input(0).partial_shape[1]
    model.reshape({model.input(0): ov.PartialShape(list(shape) if shape else [dynamic, channels, dynamic, dynamic])})
    return core().compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": 1 if threads is None else threads, "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision})


class OpenVinoBackend(Backend):
    """``path`` (``.onnx`` or ``.xml``) on the CPU; ``precision`` auto, f32 or bf16 (see the module
    docstring). ``self.precision`` is the one in use, ``self.precision_reason`` says why."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, precision: str = "auto"):
        check_threads(threads)
        self.path = Path(path)
        kind = KIND_OF_SUFFIX.get(self.path.suffix.lower())
        if kind is None:
            raise ArtifactError(f"{self.path}: OpenVINO runs .onnx files and OpenVINO IR (.xml + .bin), "
                                f"not {self.path.suffix or 'a file without suffix'}")
        require("openvino", "openvino")
        self.manifest = artifact.read_manifest(self.path, kind=kind)
        self.input_spec = InputSpec.from_manifest(self.manifest)
        self.precision, self.precision_reason = choose_precision(precision)
        try:
            model = core().read_model(str(self.path))
        except RuntimeError as exc:
            raise ArtifactError(f"{self.path}: OpenVINO cannot read it ({exc})") from exc
        self._check_graph(model)
        self._model, self._threads = model.clone(), threads
        try:
            self._compiled = compile_cpu(model, threads=threads, precision=self.precision)
        except RuntimeError as exc:
            raise ArtifactError(f"{self.path}: OpenVINO cannot compile it for the CPU with dynamic batch, "
                                f"height and width ({exc})") from exc
        self._request = self._compiled.create_infer_request()
        self._static: OrderedDict[tuple, object] = OrderedDict()  # shape -> request of a static compile
        self._lock = threading.Lock()  # one request per model: one call at a time
        self._dtype = np.float16 if self.input_spec.dtype == "float16" else np.float32

    def _check_graph(self, model) -> None:
        """The model's one input and one output must be the manifest's (names, input element type,
        channels), or OpenVINO would fail later, at the first frame, with its own error."""
        spec = self.input_spec
        want_type = {"float32": "f32", "float16": "f16"}[spec.dtype]
        for side, ports, name, channels in (("input", model.inputs, spec.input_name, spec.channels),
                                            ("output", model.outputs, spec.output_name, spec.out_channels)):
            port = ports[0] if len(ports) == 1 else None
            shape = port.partial_shape if port is not None else None
            ok = (port is not None and name in port.get_names()
                  and (side == "output" or port.get_element_type().get_type_name() == want_type)
                  and (shape.rank.is_dynamic or shape.rank.get_length() != 4 or shape[1].is_dynamic
                       or shape[1].get_length() == channels))
            if not ok:
                raise io_mismatch(self.path, side, spec, ", ".join(
                    f"{sorted(p.get_names())} {p.get_element_type().get_type_name()} {p.partial_shape}" for p in ports))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.input_spec.check(batch)
        x = np.ascontiguousarray(batch, dtype=self._dtype)
        with self._lock:
            request = self._request_for(x.shape)
            request.infer({0: x}, share_inputs=True)
            return request.get_output_tensor(0).data.astype(np.float32)  # a copy: the request reuses it

    @property
    def static_shapes(self) -> list[tuple]:
        """The input shapes that run on a model compiled for their size, most recent last."""
        return list(self._static)

    def _request_for(self, shape: tuple):
        """The request of the model compiled for ``shape`` (compiled now if it is not kept), else of
        the dynamic one."""
        if shape in self._static:
            self._static.move_to_end(shape)
            return self._static[shape]
        try:
            compiled = compile_cpu(self._model.clone(), threads=self._threads, precision=self.precision, shape=shape)
        except RuntimeError:  # the dynamic model runs what a static compile refuses
            return self._request
        self._static[shape] = compiled.create_infer_request()
        if len(self._static) > STATIC_SHAPES:
            self._static.popitem(last=False)
        return self._static[shape]

    def close(self) -> None:
        self._request = self._compiled = self._model = None
        self._static.clear()
