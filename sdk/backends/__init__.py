"""Backends by file suffix: ``.engine``/``.plan`` TensorRT, ``.onnx`` ONNX Runtime,
``.safetensors``/``.pth`` PyTorch (or ONNX Runtime through a cached export). Heavy imports happen
only when a backend is opened."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ArtifactError, ConfigError, MissingDependencyError
from .base import Backend, InputSpec

__all__ = ["Backend", "InputSpec", "open_backend", "BACKENDS"]

BACKENDS = ("auto", "ort", "torch", "trt")
ENGINE_SUFFIXES = (".engine", ".plan")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def cache_dir() -> Path:
    """Where exports of weights for ONNX Runtime are cached (``MIRNET_CACHE`` overrides)."""
    root = os.environ.get("MIRNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mirnet-edge")
    return Path(root)


def cached_onnx(weights: Path) -> Path:
    """An ONNX export of ``weights``, made once (needs torch) and reused while the weights match."""
    from .. import artifact

    digest = artifact.sha256_file(weights)[:16]
    target = cache_dir() / f"{weights.stem}-{digest}.onnx"
    if target.is_file():
        try:
            artifact.read_manifest(target, kind="onnx")
            return target
        except ArtifactError:
            pass  # damaged or half-written cache entry: export again
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError(
            f"{weights.name} is PyTorch weights; running it with ONNX Runtime needs a one-time export "
            f"with torch (pip install 'mirnet-edge[torch]'), or pass an .onnx made by `mirnet export onnx`")
    from mirnet.optimize.export_onnx import export_onnx

    from ..model import load_model

    manifest = artifact.read_manifest(weights, kind="weights") if weights.suffix == ".safetensors" else {}
    export_onnx(load_model(weights), target, variant=manifest.get("variant"), source=weights)
    return target


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


def open_backend(model: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
                 device: str = "cpu") -> Backend:
    """Open ``model`` (a path or a bundled name) with ``backend`` (auto, ort, torch or trt).

    TensorRT engines always run on a GPU: ``device`` ``cpu``/``cuda`` means GPU 0, ``cuda:N`` GPU N."""
    from .. import zoo

    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: valid backends are {BACKENDS}")
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
    want_ort = backend == "ort" or (
        backend == "auto" and device == "cpu" and importlib.util.find_spec("onnxruntime") is not None)
    if want_ort:
        from .onnxruntime import OrtBackend

        return OrtBackend(cached_onnx(path), threads=threads)
    from .torch import TorchBackend

    return TorchBackend(path, device=device, threads=threads)
