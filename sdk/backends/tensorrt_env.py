"""TensorRT environment: everything about an engine that does not execute it.

Importing TensorRT (:func:`import_tensorrt`) and its logger, this machine as engine manifests describe
it (:func:`runtime_environment`), the manifest-vs-environment check that refuses an engine built for
another TensorRT or GPU (:func:`check_engine_environment`, naming both sides and the rebuild
command), version parsing, optimization profiles and their selection, buffer sizes and data types.
Used by the runtime (:mod:`mirnet.sdk.backends.tensorrt`) and by ``mirnet build-engine``; all of it but
:func:`import_tensorrt`, :func:`make_logger` and :func:`runtime_environment` runs without TensorRT or
a GPU and is tested on CPU-only machines.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ArtifactError, EngineMismatchError, InputError, MissingDependencyError
from .base import InputSpec

__all__ = ["Profile", "select_profile", "max_shape", "shape_str", "output_shape", "dtype_itemsize",
           "tensor_nbytes", "numpy_dtype", "parse_version", "check_engine_environment", "rebuild_command",
           "import_tensorrt", "make_logger", "runtime_environment", "TRT_INSTALL_HINT",
           "SUPPORTED_TRT_MAJORS"]

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


#: distributions that install the ``tensorrt`` module (PyPI, NVIDIA's index, JetPack's python3-libnvinfer)
TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def installed_major() -> int | None:
    """The major version of the TensorRT this process would import, without importing it (an
    already imported module's ``__version__``, else the package metadata); None when unknown."""
    import importlib.metadata

    module = sys.modules.get("tensorrt")
    if module is not None:
        return (parse_version(getattr(module, "__version__", None)) or (None,))[0]
    for dist in TRT_DISTRIBUTIONS:
        try:
            return (parse_version(importlib.metadata.version(dist)) or (None,))[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


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
    from . import cuda_mem

    env = {"tensorrt": trt.__version__, **cuda_mem.device_info(device)}
    if runtime is not None:
        env["dla_cores"] = int(getattr(runtime, "num_DLA_cores", 0))
    return env
