"""Models bundled with the package, addressable by name (``mirnet restore --model NAME``).

Each bundled model is kept as PyTorch weights (``NAME.safetensors``, for training, pruning and the
torch backend) and installed with their ONNX export (``NAME.onnx``, for ONNX Runtime and OpenVINO),
so an edge box runs the bundled models without torch. The exports are made from the weights by
``mirnet export bundled`` (the packaging step: wheels carry them; a git checkout makes them once,
with torch) and are not kept in git. The export's manifest names the weights' sha256 as its source."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArtifactError

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "denoise-lite"


def bundled() -> dict[str, Path]:
    """Name -> weights path of every bundled model."""
    return {p.stem: p for p in sorted(ZOO_DIR.glob("*.safetensors"))}


def bundled_onnx(name: str) -> Path:
    """The installed ONNX export of bundled model ``name``."""
    models = bundled()
    if name not in models:
        raise ArtifactError(f"{name!r} is not a bundled model; bundled models: {sorted(models) or 'none'}")
    path = ZOO_DIR / f"{name}.onnx"
    if not path.is_file():
        raise ArtifactError(f"this install lacks {path.name}, the ONNX export of the bundled {name!r}; "
                            f"make it once with `mirnet export bundled` (needs torch), or install a release wheel")
    return path


def has_onnx(name: str) -> bool:
    """Whether the ONNX export of bundled model ``name`` is installed."""
    return (ZOO_DIR / f"{name}.onnx").is_file()


def gray_companion(model: str | os.PathLike) -> str | None:
    """The bundled gray specialist of bundled model ``model`` (``NAME-gray``), or None: the model
    :class:`~mirnet.sdk.Restorer` runs gray frames on by default."""
    if not is_bundled_name(model):
        return None
    name = f"{os.fspath(model)}-gray"
    return name if name in bundled() else None


def is_bundled_name(path_or_name: str | os.PathLike) -> bool:
    """True for the name of a bundled model that is not also an existing path."""
    return not Path(path_or_name).exists() and str(path_or_name) in bundled()


def resolve_weights(path_or_name: str | os.PathLike) -> Path:
    """A path that exists, or the bundled weights of that name."""
    path = Path(path_or_name)
    if path.exists():
        return path
    models = bundled()
    if str(path_or_name) in models:
        return models[str(path_or_name)]
    raise ArtifactError(
        f"{path_or_name!r} is neither an existing file nor a bundled model; bundled models: "
        f"{sorted(models) or 'none in this install'}")
