"""TensorRT backend: runs a serialized engine (``.engine``/``.plan``) built by ``mirnet build-engine``.

Before anything is deserialized, the engine's manifest is checked against this machine (TensorRT
version, GPU compute capability and name); a mismatch raises EngineMismatchError naming both sides
and the exact rebuild command. Device memory, pinned host memory, streams, events and CUDA graphs
come from :mod:`mirnet.sdk.backends.cuda_mem` (cuda-python), each owned by one object.

The logic that needs neither TensorRT nor a GPU (profiles, profile selection, buffer sizes, the
environment check, the rebuild command) is in plain functions at the top of this module, tested
on CPU-only machines. ``tensorrt`` and ``cuda-python`` are imported only when an engine is opened.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .. import artifact
from ..errors import ArtifactError, EngineMismatchError, InputError, MissingDependencyError
from .base import Backend, InputSpec

__all__ = ["TrtBackend", "TrtFuture", "Profile", "select_profile", "tensor_nbytes", "max_shape",
           "output_shape", "parse_version", "check_engine_environment", "rebuild_command",
           "import_tensorrt", "runtime_environment", "make_logger", "TRT_INSTALL_HINT"]

TRT_INSTALL_HINT = (
    "TensorRT comes with JetPack on Jetson (apt install python3-libnvinfer) and from NVIDIA's package "
    "index on x86-64 Linux/Windows with an NVIDIA GPU and driver (pip install 'mirnet-edge[trt]'; the "
    "`tensorrt` package fetches its wheels from https://pypi.nvidia.com, so that index must be reachable); "
    "engines cannot be built or run without an NVIDIA GPU")

SUPPORTED_TRT_MAJORS = (10, 11)


# ---------------------------------------------------------------------------- pure helpers
def shape_str(shape: Sequence[int]) -> str:
    """``(1, 3, 64, 64)`` -> ``"1x3x64x64"`` (the trtexec and ``--profile`` notation)."""
    return "x".join(str(int(d)) for d in shape)


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile for the image input: NCHW min <= opt <= max."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))

    def contains(self, shape: Sequence[int]) -> bool:
        shape = tuple(int(d) for d in shape)
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    @property
    def spec(self) -> str:
        """``"1x3x64x64:1x3x720x1280:1x3x1088x1920"``: what ``mirnet build-engine --profile`` takes."""
        return ":".join(shape_str(s) for s in (self.min, self.opt, self.max))

    def __str__(self) -> str:
        return f"min {shape_str(self.min)}, opt {shape_str(self.opt)}, max {shape_str(self.max)}"

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


def _volume(shape: Sequence[int]) -> int:
    return int(np.prod([int(d) for d in shape], dtype=np.int64))


def select_profile(shape: Sequence[int], profiles: Sequence[Profile]) -> int:
    """Index of the profile whose range contains ``shape``; among several, the one with the
    smallest max volume (tuned for sizes closest to this one). InputError lists the profiles."""
    shape = tuple(int(d) for d in shape)
    fits = [i for i, p in enumerate(profiles) if p.contains(shape)]
    if not fits:
        listing = "; ".join(f"[{i}] {p}" for i, p in enumerate(profiles)) or "none"
        raise InputError(
            f"input shape {shape_str(shape)} is outside every optimization profile of this engine "
            f"({listing}). Resize or tile the input (Restorer(tile=...)), or rebuild the engine with a "
            f"profile that covers it: mirnet build-engine MODEL.onnx -o ENGINE --profile MIN:OPT:MAX")
    return min(fits, key=lambda i: (_volume(profiles[i].max), i))


def max_shape(profiles: Sequence[Profile]) -> tuple[int, ...]:
    """Element-wise maximum of the profiles' max shapes: what the I/O buffers must hold."""
    if not profiles:
        raise ArtifactError("engine has no optimization profile for its input")
    return tuple(int(max(p.max[k] for p in profiles)) for k in range(len(profiles[0].max)))


def output_shape(input_shape: Sequence[int], spec: InputSpec) -> tuple[int, ...]:
    """N x C_out x H*scale x W*scale for an N x C x H x W input (the MIRNet I/O contract)."""
    n, _, h, w = (int(d) for d in input_shape)
    return (n, spec.out_channels, h * spec.scale, w * spec.scale)


# TensorRT DataType names -> (numpy dtype name or None, bytes per element).
_TRT_DTYPES = {"FLOAT": ("float32", 4), "HALF": ("float16", 2), "BF16": (None, 2), "INT8": ("int8", 1),
               "UINT8": ("uint8", 1), "INT32": ("int32", 4), "INT64": ("int64", 8), "BOOL": ("bool", 1),
               "FP8": (None, 1)}


def dtype_itemsize(dtype) -> int:
    """Bytes per element of a numpy dtype-like, a TensorRT DataType, or a DataType name (``"HALF"``)."""
    if isinstance(dtype, str):
        if dtype in _TRT_DTYPES:
            return _TRT_DTYPES[dtype][1]
    elif not isinstance(dtype, (np.dtype, type)) and getattr(dtype, "name", None) in _TRT_DTYPES:
        return _TRT_DTYPES[dtype.name][1]
    try:
        return np.dtype(dtype).itemsize
    except TypeError as exc:
        raise ArtifactError(f"unsupported tensor data type {dtype!r}; supported: "
                            f"{sorted(_TRT_DTYPES)} or numpy dtypes") from exc


def tensor_nbytes(shape: Sequence[int], dtype) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype`` (numpy dtype-like or TensorRT DataType)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ArtifactError(f"tensor shape {tuple(dims)} has unresolved (-1) dimensions; cannot size a buffer")
    return _volume(dims) * dtype_itemsize(dtype)


def numpy_dtype(trt_dtype) -> np.dtype:
    """numpy dtype of a TensorRT DataType (by name, so it works for any TensorRT version)."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).upper()
    np_name = _TRT_DTYPES.get(name, (None, 0))[0]
    if np_name is None:
        raise ArtifactError(f"engine I/O tensor type {name} has no numpy equivalent; rebuild the engine "
                            f"from an ONNX with float32 or float16 input and output")
    return np.dtype(np_name)


def parse_version(text: str | None) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; ``"10.8.0.post1"`` -> ``(10, 8, 0)``; junk -> ``()``."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", str(text or ""))
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def rebuild_command(manifest: dict, engine_path: str | os.PathLike | None = None) -> str:
    """The ``mirnet build-engine`` command that rebuilds this engine from its source ONNX."""
    engine = manifest.get("engine") or {}
    source = (manifest.get("source") or {}).get("file") or "MODEL.onnx"
    target = str(engine_path) if engine_path is not None else manifest.get("file", "MODEL.engine")
    args = ["mirnet", "build-engine", source, "-o", target, "--force"]
    if engine.get("fp16"):
        args.append("--fp16")
    if "strongly_typed" in engine and bool(engine["strongly_typed"]) != bool(engine.get("qdq", False)):
        args.append("--strongly-typed" if engine["strongly_typed"] else "--no-strongly-typed")
    for profile in engine.get("profiles") or []:
        args += ["--profile", Profile.from_dict(profile).spec]
    if engine.get("workspace_mb") is not None:
        args += ["--workspace", str(engine["workspace_mb"])]
    if engine.get("timing_cache"):
        args += ["--timing-cache", str(engine["timing_cache"])]
    if engine.get("dla_core") is not None:
        args += ["--dla", str(engine["dla_core"])]
    if engine.get("version_compatible"):
        args.append("--version-compatible")
    return shlex.join(args)


def check_engine_environment(manifest: dict, env: dict, engine_path: str | os.PathLike | None = None, *,
                             check_gpu_name: bool = True) -> None:
    """Refuse an engine built for another environment, before TensorRT deserializes it.

    ``env``: ``{"tensorrt": "10.3.0", "gpu_name": ..., "compute_capability": "8.7", ...}`` of this
    machine (see :func:`runtime_environment`). Rules: the TensorRT major.minor must match, unless the
    engine is version compatible (then this TensorRT must be the same major and not older); the
    compute capability must match; the GPU name must match unless ``check_gpu_name=False``; a DLA
    engine needs that DLA core here.
    """
    build = manifest.get("build") or {}
    engine = manifest.get("engine") or {}
    name = engine_path or manifest.get("file", "engine")
    problems = []

    built_v, here_v = parse_version(build.get("tensorrt")), parse_version(env.get("tensorrt"))
    if len(built_v) < 2:
        problems.append(f"TensorRT: the manifest records no usable TensorRT version ({build.get('tensorrt')!r}), "
                        f"here {env.get('tensorrt')}")
    elif len(here_v) >= 2:
        if engine.get("version_compatible"):
            if here_v[0] != built_v[0] or here_v[:2] < built_v[:2]:
                problems.append(
                    f"TensorRT: engine built with {build['tensorrt']} (version compatible), here "
                    f"{env['tensorrt']}; a version-compatible engine runs on the same major version, "
                    f"same or newer")
        elif here_v[:2] != built_v[:2]:
            problems.append(
                f"TensorRT: engine built with {build['tensorrt']}, here {env['tensorrt']}; engines run only "
                f"on the TensorRT major.minor that built them (unless built with --version-compatible)")

    built_cc, here_cc = build.get("compute_capability"), env.get("compute_capability")
    if built_cc is None:
        problems.append(f"GPU: the manifest records no compute capability, here {here_cc}")
    elif here_cc is not None and str(built_cc) != str(here_cc):
        problems.append(
            f"GPU compute capability: engine built for {built_cc} ({build.get('gpu_name', '?')}), here "
            f"{here_cc} ({env.get('gpu_name', '?')}); engines hold kernels for one GPU architecture")
    elif check_gpu_name and build.get("gpu_name") and env.get("gpu_name") \
            and build["gpu_name"] != env["gpu_name"]:
        problems.append(
            f"GPU: engine built on {build['gpu_name']}, here {env['gpu_name']} (same compute capability "
            f"{here_cc}); TensorRT tunes kernels for one GPU model, so rebuild for full speed and "
            f"correctness, or open it with check_gpu_name=False to accept the risk")

    dla = engine.get("dla_core")
    if dla is not None and env.get("dla_cores") is not None and not int(dla) < int(env["dla_cores"]):
        problems.append(f"DLA: engine built for DLA core {dla}, this machine has {env['dla_cores']} DLA core(s)")

    if problems:
        raise EngineMismatchError(
            f"{name}: built for another environment than this one:\n  " + "\n  ".join(problems)
            + f"\nRebuild it on this machine from its ONNX:\n  {rebuild_command(manifest, engine_path)}")


# ---------------------------------------------------------------------------- TensorRT glue
def import_tensorrt(purpose: str = "use TensorRT engines", extra: str = ""):
    """``import tensorrt`` or MissingDependencyError saying where TensorRT comes from."""
    try:
        import tensorrt as trt
    except ImportError as exc:  # also catches the PyPI stub's failure to import
        raise MissingDependencyError(
            f"TensorRT (Python package `tensorrt`) is needed to {purpose} but could not be imported "
            f"({exc}). {TRT_INSTALL_HINT}." + (f"\n{extra}" if extra else "")) from exc
    major = parse_version(getattr(trt, "__version__", ""))[:1]
    if not major or major[0] not in SUPPORTED_TRT_MAJORS:
        raise MissingDependencyError(
            f"TensorRT {getattr(trt, '__version__', '?')} is installed; mirnet-edge supports TensorRT "
            f"{' and '.join(f'{m}.x' for m in SUPPORTED_TRT_MAJORS)} (JetPack 6 ships 10.x). {TRT_INSTALL_HINT}.")
    return trt


_SEVERITY = {0: "INTERNAL_ERROR", 1: "ERROR", 2: "WARNING", 3: "INFO", 4: "VERBOSE"}


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings (everything with ``verbose``) to stderr and keeps the
    error messages, so failures can quote them."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.threshold = 4 if verbose else 2  # Severity: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose

        def log(self, severity, msg):
            level = int(severity)
            if level <= 1:
                self.errors.append(str(msg))
            if level <= self.threshold:
                label = _SEVERITY.get(level, str(level))
                print(f"[TensorRT] {label}: {msg}", file=sys.stderr)

    return _Logger()


def runtime_environment(trt, device: int = 0, runtime=None) -> dict:
    """This machine as engine manifests describe it: TensorRT version, GPU name, compute capability,
    CUDA runtime and driver versions (and DLA core count when a TensorRT runtime is given)."""
    env = {"tensorrt": trt.__version__, **_cuda_mem().device_info(device)}
    if runtime is not None:
        env["dla_cores"] = int(getattr(runtime, "num_DLA_cores", 0))
    return env


# ---------------------------------------------------------------------------- backend
def _cuda_mem():
    """The CUDA memory/stream module (a function so tests can substitute a CPU stand-in)."""
    from . import cuda_mem

    return cuda_mem


class _Slot:
    """One set of buffers for one in-flight batch: pinned + device input/output, a stream, an event
    marking the end of its compute, and the CUDA graph captured for the current shape."""

    def __init__(self, cm, in_bytes: int, out_bytes: int):
        self._owned = []
        try:
            self.stream = self._own(cm.Stream())
            self.h_in = self._own(cm.PinnedBuffer(in_bytes))
            self.d_in = self._own(cm.DeviceBuffer(in_bytes))
            self.d_out = self._own(cm.DeviceBuffer(out_bytes))
            self.h_out = self._own(cm.PinnedBuffer(out_bytes))
            self.compute_done = self._own(cm.Event())
        except BaseException:
            for obj in reversed(self._owned):
                obj.free()
            raise
        self.graph = None
        self.graph_key = None        # (profile, shape) the graph was captured for
        self.capture_failed = set()  # keys for which capture failed: not retried
        self.pending: "TrtFuture | None" = None

    def _own(self, obj):
        self._owned.append(obj)
        return obj

    def drop_graph(self) -> None:
        if self.graph is not None:
            self.graph.free()
        self.graph, self.graph_key = None, None

    def free(self) -> None:
        try:
            self.stream.synchronize()
        finally:
            self.drop_graph()
            for obj in reversed(self._owned):
                obj.free()
            self._owned = []


class TrtFuture:
    """The result of :meth:`TrtBackend.infer_async`; ``result()`` waits for it and returns float32."""

    def __init__(self, slot: _Slot, shape: tuple[int, ...], dtype: np.dtype):
        self._slot, self._shape, self._dtype = slot, shape, dtype
        self._value: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def result(self) -> np.ndarray:
        if self._value is None:
            slot = self._slot
            slot.stream.synchronize()
            self._value = slot.h_out.array(self._dtype, self._shape).astype(np.float32, copy=True)
            if slot.pending is self:
                slot.pending = None
            self._slot = None
        return self._value


class TrtBackend(Backend):
    """A TensorRT engine on one GPU.

    ``device``: GPU index. ``cuda_graphs``: after the first run of a given input shape, capture the
    engine's work in a CUDA graph and replay it for later runs of that shape (falls back to plain
    execution when capture fails). ``buffers``: sets of I/O buffers and streams used in turn by
    :meth:`infer_async`/:meth:`pipeline` (2 = double buffering: one batch's copies overlap the
    other's compute). ``check_gpu_name``: refuse an engine built on another GPU model with the same
    compute capability. Not thread-safe: use one backend per thread.
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, device: int = 0, cuda_graphs: bool = True,
                 buffers: int = 2, check_gpu_name: bool = True, verbose: bool = False):
        self._closed = True
        self._slots: list[_Slot] = []
        self._context = self._engine = self._runtime = None
        if buffers < 1:
            raise InputError(f"buffers={buffers}: need at least 1 set of I/O buffers")
        self.path = Path(path)
        sidecar = artifact.sidecar_path(self.path)
        if self.path.is_file() and not sidecar.is_file():
            raise ArtifactError(
                f"{self.path}: TensorRT engine without its manifest {sidecar.name}. mirnet checks an engine's "
                f"TensorRT version and GPU against this machine before loading it, from that manifest; build "
                f"engines with `mirnet build-engine MODEL.onnx -o {self.path.name}` (an engine made directly "
                f"by trtexec has no manifest)")
        self.manifest = artifact.read_manifest(self.path, kind="engine")
        self.input_spec = InputSpec.from_manifest(self.manifest)
        trt = import_tensorrt("run TensorRT engines")
        self._cm = _cuda_mem()
        self.device, self.cuda_graphs = device, cuda_graphs
        self._closed = False
        try:
            self._open(trt, buffers, check_gpu_name, verbose)
        except BaseException:
            self.close()
            raise

    def _open(self, trt, buffers: int, check_gpu_name: bool, verbose: bool) -> None:
        engine_info = self.manifest.get("engine") or {}
        self._logger = make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        self.environment = runtime_environment(trt, self.device, self._runtime)
        check_engine_environment(self.manifest, self.environment, self.path, check_gpu_name=check_gpu_name)
        if engine_info.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        if engine_info.get("dla_core") is not None:
            self._runtime.DLA_core = int(engine_info["dla_core"])
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no message from TensorRT"
            raise EngineMismatchError(
                f"{self.path}: TensorRT {trt.__version__} could not deserialize this engine ({detail}). "
                f"Rebuild it on this machine:\n  {rebuild_command(self.manifest, self.path)}")

        spec, engine = self.input_spec, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [spec.input_name] or outputs != [spec.output_name]:
            raise ArtifactError(
                f"{self.path}: engine I/O tensors (inputs {inputs}, outputs {outputs}) do not match its "
                f"manifest (input {spec.input_name!r}, output {spec.output_name!r}); rebuild it with "
                f"`{rebuild_command(self.manifest, self.path)}`")
        self.profiles = [Profile(*(tuple(s) for s in engine.get_tensor_profile_shape(spec.input_name, i)))
                         for i in range(engine.num_optimization_profiles)]
        self._in_dtype = numpy_dtype(engine.get_tensor_dtype(spec.input_name))
        self._out_dtype = numpy_dtype(engine.get_tensor_dtype(spec.output_name))
        self.max_input_shape = max_shape(self.profiles)
        in_bytes = tensor_nbytes(self.max_input_shape, self._in_dtype)
        out_bytes = tensor_nbytes(output_shape(self.max_input_shape, spec), self._out_dtype)

        self._context = engine.create_execution_context()
        if self._context is None:
            raise self._cm.CudaError(
                f"{self.path}: TensorRT could not create an execution context (usually out of GPU "
                f"memory); free GPU memory or rebuild with a smaller max profile")
        for _ in range(buffers):
            self._slots.append(_Slot(self._cm, in_bytes, out_bytes))
        self._next = 0
        self._profile = 0        # the context starts on profile 0
        self._shape = None       # input shape currently set on the context
        self._last_compute = None  # event of the most recent compute: the context is shared

    # ------------------------------------------------------------------ inference
    def _check_open(self) -> None:
        if self._closed or self._context is None:
            raise InputError("this TensorRT backend is closed")

    def _set_shape(self, profile: int, shape: tuple[int, ...], slot: _Slot) -> None:
        """Point the (shared) context at ``profile`` and ``shape``; waits for all in-flight work first."""
        for other in self._slots:
            other.stream.synchronize()
            other.drop_graph()
        name = self.input_spec.input_name
        self._shape = None  # unknown until TensorRT accepts the new one
        if profile != self._profile:
            if not self._context.set_optimization_profile_async(profile, slot.stream.handle):
                raise InputError(f"TensorRT refused optimization profile {profile} ({self.profiles[profile]})")
            slot.stream.synchronize()
            self._profile = profile
        if not self._context.set_input_shape(name, shape):
            raise InputError(f"TensorRT refused input shape {shape_str(shape)} for profile {profile} "
                             f"({self.profiles[profile]})")
        self._shape = shape

    def _execute(self, slot: _Slot) -> None:
        ctx, spec = self._context, self.input_spec
        ctx.set_tensor_address(spec.input_name, slot.d_in.ptr)
        ctx.set_tensor_address(spec.output_name, slot.d_out.ptr)
        if not ctx.execute_async_v3(slot.stream.handle):
            detail = "; ".join(self._logger.errors[-3:]) or "no message from TensorRT"
            raise ArtifactError(f"{self.path}: TensorRT execution failed ({detail})")

    def _compute(self, slot: _Slot, key: tuple) -> None:
        if slot.graph is not None and slot.graph_key == key:
            slot.graph.launch(slot.stream)
            return
        self._execute(slot)
        if self.cuda_graphs and key not in slot.capture_failed:
            # The first run of this shape on this slot has been enqueued (TensorRT did its deferred
            # per-shape work), so capture the same execution as a graph to replay from the next run
            # on. Capture records work, it does not run it: this run's output comes from _execute.
            ctx, handle = self._context, slot.stream.handle
            graph = self._cm.CudaGraph.capture(slot.stream, lambda: ctx.execute_async_v3(handle))
            if graph is None:
                slot.capture_failed.add(key)
            else:
                slot.graph, slot.graph_key = graph, key

    def infer_async(self, batch: np.ndarray) -> TrtFuture:
        """Enqueue ``batch`` (N x C x H x W) on the next buffer set and return at once; the
        returned future's ``result()`` waits for the output."""
        self._check_open()
        self.input_spec.check(batch)
        shape = tuple(int(d) for d in batch.shape)
        profile = select_profile(shape, self.profiles)
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.pending is not None:
            slot.pending.result()  # frees this slot's pinned output for reuse
        slot.stream.synchronize()

        if (profile, shape) != (self._profile, self._shape):
            self._set_shape(profile, shape, slot)
        out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self.input_spec.output_name))
        if tensor_nbytes(out_shape, self._out_dtype) > slot.d_out.nbytes or any(d < 0 for d in out_shape):
            raise ArtifactError(f"{self.path}: engine output shape {out_shape} for input {shape_str(shape)} does "
                                f"not fit the buffers sized from its profiles; rebuild the engine")

        cm = self._cm
        in_bytes = tensor_nbytes(shape, self._in_dtype)
        np.copyto(slot.h_in.array(self._in_dtype, shape), batch, casting="unsafe")
        cm.memcpy_htod_async(slot.d_in, slot.h_in, in_bytes, slot.stream)
        if self._last_compute is not None and self._last_compute is not slot.compute_done:
            slot.stream.wait(self._last_compute)  # one context: computes must not overlap
        self._compute(slot, (profile, shape))
        slot.compute_done.record(slot.stream)
        self._last_compute = slot.compute_done
        cm.memcpy_dtoh_async(slot.h_out, slot.d_out, tensor_nbytes(out_shape, self._out_dtype), slot.stream)
        slot.pending = TrtFuture(slot, out_shape, self._out_dtype)
        return slot.pending

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_async(batch).result()

    def pipeline(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of ``batches`` in order, keeping one batch in flight while the previous one's
        result is handed out (double buffering)."""
        previous = None
        for batch in batches:
            current = self.infer_async(batch)
            if previous is not None:
                yield previous.result()
            previous = current
        if previous is not None:
            yield previous.result()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for slot in self._slots:
            try:
                if slot.pending is not None:
                    slot.pending.result()  # futures stay readable after close
            except Exception as exc:  # keep freeing the rest
                errors.append(exc)
        for slot in self._slots:
            try:
                slot.free()
            except Exception as exc:
                errors.append(exc)
        self._slots = []
        self._context = None  # context before engine before runtime
        self._engine = None
        self._runtime = None
        if errors:
            raise errors[0]

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
