"""Weights bundled with the package, addressable by name (``mirnet restore --model NAME``)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArtifactError

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "denoise-lite"


def bundled() -> dict[str, Path]:
    """Name -> weights path of every bundled model."""
    return {p.stem: p for p in sorted(ZOO_DIR.glob("*.safetensors"))}


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
