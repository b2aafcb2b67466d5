"""Backends by file suffix: ``.engine``/``.plan`` TensorRT, ``.onnx`` ONNX Runtime,
``.safetensors``/``.pth`` PyTorch; ``grpc://``/``http://`` URLs a ``mirnet serve`` Triton server. A
bundled model name runs its shipped ONNX export on ONNX Runtime, or its weights on PyTorch. Heavy
imports happen only when a backend is opened."""
from __future__ import annotations

import importlib.util
import os

from ..errors import ArtifactError, ConfigError, MissingDependencyError
from .base import Backend, InputSpec

__all__ = ["Backend", "InputSpec", "open_backend", "BACKENDS"]

BACKENDS = ("auto", "ort", "torch", "trt")
ENGINE_SUFFIXES = (".engine", ".plan")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


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


def open_backend(model: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
                 device: str = "cpu") -> Backend:
    """Open ``model`` (a path or a bundled name) with ``backend`` (auto, ort, torch or trt).

    ``auto``: a bundled name runs its installed ONNX export on ONNX Runtime on the CPU (its weights
    on PyTorch for a CUDA ``device``, without onnxruntime, or before `mirnet export bundled` made the
    export in a git checkout that has torch); ``.onnx`` runs on ONNX Runtime,
    weights on PyTorch, engines on TensorRT. TensorRT engines always run on a GPU: ``device``
    ``cpu``/``cuda`` means GPU 0, ``cuda:N`` GPU N. A ``grpc://`` or ``http://`` URL sends frames
    to a server (:mod:`mirnet.sdk.backends.remote`; ``backend`` auto)."""
    from .. import zoo
    from .remote import is_remote

    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: valid backends are {BACKENDS}")
    if is_remote(model):
        if backend != "auto":
            raise ConfigError(f"{model}: a server URL runs on the server's own backend; pass backend 'auto', "
                              f"not {backend!r} (choose the server's backend with `mirnet serve --backend`)")
        from .remote import RemoteBackend

        return RemoteBackend(model)
    if zoo.is_bundled_name(model):
        name = str(model)
        if backend == "trt":
            raise ConfigError(f"--backend trt runs TensorRT engines; build one for {name!r} with "
                              f"`mirnet build-engine {name}.onnx -o {name}.engine` on the target GPU")
        use_torch = backend == "torch" or (backend == "auto" and (
            device != "cpu" or not _has("onnxruntime") or (not zoo.has_onnx(name) and _has("torch"))))
        path = zoo.bundled()[name] if use_torch else zoo.bundled_onnx(name)
    else:
        path = zoo.resolve_weights(model)
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        if backend not in ("auto", "trt"):
            raise ConfigError(f"{path}: a TensorRT engine runs with --backend trt (or auto), not {backend}")
        from .tensorrt import TrtBackend

        return TrtBackend(path, device=_gpu_index(device))
    if backend == "trt":
        raise ConfigError(f"{path}: --backend trt runs TensorRT engines ({', '.join(ENGINE_SUFFIXES)}); "
                          f"build one with `mirnet build-engine MODEL.onnx -o MODEL.engine`")
    if suffix == ".onnx":
        if backend == "torch":
            raise ConfigError(f"{path}: an ONNX file runs with --backend ort (or auto), not torch")
        from .onnxruntime import OrtBackend

        return OrtBackend(path, threads=threads)
    if suffix not in WEIGHT_SUFFIXES:
        raise ArtifactError(f"{path}: unknown model suffix {suffix!r}; expected .onnx, "
                            f"{', '.join(WEIGHT_SUFFIXES)} or {', '.join(ENGINE_SUFFIXES)}")
    export = f"mirnet export onnx {path} -o {path.with_suffix('.onnx').name}"
    if backend == "ort":
        raise ConfigError(f"{path}: ONNX Runtime runs .onnx files, not PyTorch weights; export them once "
                          f"(`{export}`, needs torch) and pass the .onnx, or use --backend torch")
    if not _has("torch"):
        raise MissingDependencyError(
            f"{path.name} is PyTorch weights and torch is not installed: pip install 'mirnet-edge[torch]', "
            f"or export them once to ONNX on a machine with torch (`{export}`) and run the .onnx")
    from .torch import TorchBackend

    return TorchBackend(path, device=device, threads=threads)
