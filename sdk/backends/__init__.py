"""Backends by file suffix: ``.engine``/``.plan`` TensorRT, ``.onnx`` OpenVINO or ONNX Runtime,
``.xml`` (OpenVINO IR) OpenVINO, ``.safetensors``/``.pth`` PyTorch; ``grpc://``/``http://`` URLs a
``mirnet serve`` Triton server. A bundled model name runs its shipped ONNX export on the CPU, or its
weights on PyTorch. Heavy imports happen only when a backend is opened.

The CPU rule of ``backend="auto"`` for ONNX files and bundled names (:func:`cpu_backend`): OpenVINO
when ``openvino`` is installed, else ONNX Runtime, else PyTorch (a bundled model's weights). Measured
on the 2-core AMD EPYC with AVX-512 BF16 of our CI, denoise-lite at 640x360, one thread: ONNX Runtime
FP32 133.0 ms, OpenVINO FP32 118.3 ms, OpenVINO bf16 65.4 ms (the OpenVINO backend runs bf16 where the
CPU has BF16; see :mod:`.openvino`). INT8 ONNX runs where its quality gate measured it: precision
``int8-qdq-cpu`` (``mirnet quantize --target cpu``: Q/DQ convolutions, OpenVINO's INT8 kernels) on
OpenVINO when it is installed; ``int8-ort`` (ONNX Runtime's ``quantize_static``) and ``int8-qdq``
(Q/DQ for TensorRT) on ONNX Runtime: OpenVINO would run them with other kernels and other numbers.
The environment variable ``MIRNET_CPU_BACKEND`` (ort, openvino or torch) overrides the choice."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ArtifactError, ConfigError, MissingDependencyError
from .base import Backend, InputSpec

__all__ = ["Backend", "InputSpec", "open_backend", "choose_backend", "cpu_backend", "BACKENDS", "CPU_BACKENDS",
           "CPU_BACKEND_ENV"]

BACKENDS = ("auto", "ort", "openvino", "torch", "trt")
ENGINE_SUFFIXES = (".engine", ".plan")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
IR_SUFFIX = ".xml"
#: the environment variable that overrides the CPU choice of ``auto``, and its values
CPU_BACKEND_ENV = "MIRNET_CPU_BACKEND"
CPU_BACKENDS = ("ort", "openvino", "torch")
#: manifest precisions of ONNX files made for one runtime: ``auto`` runs them on ONNX Runtime
ORT_ONLY_PRECISIONS = ("int8-ort", "int8-qdq")


def _gpu_index(device: str | int) -> int:
    """GPU index for TensorRT from ``cpu``/``cuda`` (GPU 0) or ``cuda:N``."""
    if isinstance(device, int):
        return device
    text = str(device).strip().lower()
    if text in ("cpu", "cuda", "gpu", ""):
        return 0
    for prefix in ("cuda:", "gpu:"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return int(text[len(prefix):])
    raise ConfigError(f"device {device!r}: TensorRT engines run on a GPU; use cuda or cuda:N")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _env_cpu_backend() -> str | None:
    """``MIRNET_CPU_BACKEND`` (None when unset or empty); ConfigError for an unknown value."""
    value = os.environ.get(CPU_BACKEND_ENV, "").strip().lower()
    if value and value not in CPU_BACKENDS:
        raise ConfigError(f"{CPU_BACKEND_ENV}={os.environ[CPU_BACKEND_ENV]!r}: valid values are "
                          f"{', '.join(CPU_BACKENDS)}; unset it for the automatic choice")
    return value or None


def cpu_backend(precision: str = "fp32") -> str:
    """The backend ``auto`` runs an ONNX model of manifest ``precision`` with on the CPU (see the
    module docstring): ``MIRNET_CPU_BACKEND`` when set; ``ort`` for INT8 ONNX made for ONNX Runtime or
    TensorRT (:data:`ORT_ONLY_PRECISIONS`); else ``openvino`` when it is installed, ``ort`` when
    onnxruntime is, ``torch`` otherwise."""
    forced = _env_cpu_backend()
    if forced is not None:
        return forced
    if precision in ORT_ONLY_PRECISIONS:
        return "ort"
    if _has("openvino"):
        return "openvino"
    return "ort" if _has("onnxruntime") else "torch"


def choose_backend(model: str | os.PathLike, backend: str = "auto", *, device: str = "cpu") -> tuple[str, Path]:
    """The backend (``ort``, ``openvino``, ``torch`` or ``trt``) :func:`open_backend` runs ``model``
    with, and the file it opens; the same errors, and nothing is loaded."""
    from .. import artifact, zoo

    _check_backend(backend)
    if zoo.is_bundled_name(model):
        name = str(model)
        if backend == "trt":
            raise ConfigError(f"--backend trt runs TensorRT engines; build one for {name!r} with "
                              f"`mirnet build-engine {name}.onnx -o {name}.engine` on the target GPU")
        if backend == "auto":
            backend = "torch" if device != "cpu" or (
                _env_cpu_backend() is None and not zoo.has_onnx(name) and _has("torch")) else cpu_backend()
        path = zoo.bundled()[name] if backend == "torch" else zoo.bundled_onnx(name)
    else:
        path = zoo.resolve_weights(model)
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        if backend not in ("auto", "trt"):
            raise ConfigError(f"{path}: a TensorRT engine runs with --backend trt (or auto), not {backend}")
        return "trt", path
    if backend == "trt":
        raise ConfigError(f"{path}: --backend trt runs TensorRT engines ({', '.join(ENGINE_SUFFIXES)}); "
                          f"build one with `mirnet build-engine MODEL.onnx -o MODEL.engine`")
    if suffix == IR_SUFFIX:
        if backend not in ("auto", "openvino"):
            raise ConfigError(f"{path}: an OpenVINO IR runs with --backend openvino (or auto), not {backend}")
        return "openvino", path
    if suffix == ".onnx":
        if backend == "torch":
            raise ConfigError(f"{path}: an ONNX file runs with --backend ort or openvino (or auto), not torch")
        if backend == "auto":
            backend = cpu_backend(artifact.read_manifest(path, verify=False, kind="onnx")["precision"])
        if backend == "torch":  # what auto says without an ONNX runtime, or MIRNET_CPU_BACKEND=torch
            if _env_cpu_backend() is not None:
                raise ConfigError(f"{CPU_BACKEND_ENV}=torch: PyTorch runs weights, not the ONNX file {path}; "
                                  f"unset {CPU_BACKEND_ENV} or set it to ort or openvino")
            raise MissingDependencyError(f"{path}: running an ONNX file needs OpenVINO or ONNX Runtime: "
                                         f"pip install 'mirnet-edge[openvino]' (or 'mirnet-edge[ort]')")
        return backend, path
    if suffix not in WEIGHT_SUFFIXES:
        raise ArtifactError(f"{path}: unknown model suffix {suffix!r}; expected .onnx, {IR_SUFFIX}, "
                            f"{', '.join(WEIGHT_SUFFIXES)} or {', '.join(ENGINE_SUFFIXES)}")
    export = f"mirnet export onnx {path} -o {path.with_suffix('.onnx').name}"
    if backend == "ort":
        raise ConfigError(f"{path}: ONNX Runtime runs .onnx files, not PyTorch weights; export them once "
                          f"(`{export}`, needs torch) and pass the .onnx, or use --backend torch")
    if backend == "openvino":
        raise ConfigError(f"{path}: OpenVINO runs .onnx and .xml files, not PyTorch weights; export them once "
                          f"(`mirnet export openvino {path} -o {path.with_suffix('.xml').name}`, needs torch) and "
                          f"pass the .xml, or use --backend torch")
    if not _has("torch"):
        raise MissingDependencyError(
            f"{path.name} is PyTorch weights and torch is not installed: pip install 'mirnet-edge[torch]', "
            f"or export them once to ONNX on a machine with torch (`{export}`) and run the .onnx")
    return "torch", path


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: valid backends are {BACKENDS}")


def open_backend(model: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
                 device: str = "cpu") -> Backend:
    """Open ``model`` (a path or a bundled name) with ``backend`` (auto, ort, openvino, torch or trt);
    :func:`choose_backend` says which without opening it.

    ``auto``: ``.onnx`` files and bundled names (their installed ONNX export) run on the CPU backend
    of :func:`cpu_backend` (OpenVINO, else ONNX Runtime; INT8 ONNX made for ONNX Runtime or TensorRT on
    ONNX Runtime; ``MIRNET_CPU_BACKEND`` overrides it). A bundled name runs its weights on PyTorch for a
    CUDA ``device``, without OpenVINO and onnxruntime, or before `mirnet export bundled` made the
    export in a git checkout that has torch. ``.xml`` runs on OpenVINO, weights on PyTorch, engines on
    TensorRT. The backend object says what it chose: ``name`` and, for OpenVINO, ``precision``.
    TensorRT engines always run on a GPU: ``device`` ``cpu``/``cuda`` means GPU 0, ``cuda:N`` GPU N.
    A ``grpc://`` or ``http://`` URL sends frames to a server (:mod:`mirnet.sdk.backends.remote`;
    ``backend`` auto)."""
    from .remote import is_remote

    _check_backend(backend)
    if is_remote(model):
        if backend != "auto":
            raise ConfigError(f"{model}: a server URL runs on the server's own backend; pass backend 'auto', "
                              f"not {backend!r} (choose the server's backend with `mirnet serve --backend`)")
        from .remote import RemoteBackend

        return RemoteBackend(model)
    name, path = choose_backend(model, backend, device=device)
    if name == "trt":
        from .tensorrt import TrtBackend

        return TrtBackend(path, device=_gpu_index(device))
    if name == "ort":
        from .onnxruntime import OrtBackend

        return OrtBackend(path, threads=threads)
    if name == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(path, threads=threads)
    from .torch import TorchBackend

    return TorchBackend(path, device=device, threads=threads)
