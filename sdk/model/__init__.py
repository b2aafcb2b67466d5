"""The MIRNet-v2 network. ``config`` is torch-free; everything else here imports torch lazily."""
from __future__ import annotations

from .config import VARIANTS, MIRNetV2Config, get_variant

__all__ = ["VARIANTS", "MIRNetV2Config", "get_variant", "create_model", "load_model", "save_weights"]


def create_model(name_or_config: "str | MIRNetV2Config"):
    """A freshly initialised network for a variant name or a config."""
    from .arch import MIRNetV2

    config = name_or_config if isinstance(name_or_config, MIRNetV2Config) else get_variant(name_or_config)
    return MIRNetV2(config)


def load_model(path_or_name, *, config: "MIRNetV2Config | None" = None):
    """Load weights: a bundled name, our ``.safetensors`` or an official ``.pth``."""
    from .weights import load_model as _load

    return _load(path_or_name, config=config)


def save_weights(model, path, **manifest_fields):
    """Write ``model`` as safetensors plus its manifest sidecar."""
    from .weights import save_weights as _save

    return _save(model, path, **manifest_fields)
