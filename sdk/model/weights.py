"""Weights I/O: safetensors + manifest (ours), and official ``.pth`` checkpoints (``{'params': ...}``).

Never unpickles: ``.pth`` files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from .. import artifact
from ..errors import ArtifactError
from .arch import MIRNetV2, official_config
from .config import MIRNetV2Config

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def conv_layout_changes(model: MIRNetV2) -> dict[str, list[int]]:
    """``{module_name: [in_channels, out_channels, groups]}`` of every ``nn.Conv2d`` whose shape
    differs from what ``MIRNetV2(model.config)`` builds (empty for an unpruned model)."""
    with torch.device("meta"):
        reference = MIRNetV2(model.config)
    ref = {n: m for n, m in reference.named_modules() if isinstance(m, nn.Conv2d)}
    changed = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            r = ref.get(name)
            shape = [module.in_channels, module.out_channels, module.groups]
            if r is None or shape != [r.in_channels, r.out_channels, r.groups]:
                changed[name] = shape
    return changed


def apply_conv_layout(model: MIRNetV2, layers: dict, state: dict[str, torch.Tensor] | None = None,
                      source: str | os.PathLike = "weights") -> MIRNetV2:
    """Replace each named ``nn.Conv2d`` by one with the recorded ``[in_channels, out_channels,
    groups]`` (kernel, stride, padding kept; bias as in ``state`` when given), in place. This is how
    a pruned network is rebuilt from its config plus the manifest's ``pruned.layers``."""
    if not isinstance(layers, dict):
        raise ArtifactError(f"{source}: manifest pruned.layers must be a mapping of module name to "
                            f"[in_channels, out_channels, groups], got {type(layers).__name__}")
    for name, shape in layers.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            old = None
        if not isinstance(old, nn.Conv2d):
            raise ArtifactError(f"{source}: manifest pruned.layers names {name!r}, which is not a "
                                f"Conv2d of this network config")
        ok = (isinstance(shape, (list, tuple)) and len(shape) == 3
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape))
        if not ok or shape[0] % shape[2] or shape[1] % shape[2]:
            raise ArtifactError(f"{source}: manifest pruned.layers[{name!r}]={shape!r}; expected "
                                f"[in_channels, out_channels, groups], positive integers with both "
                                f"channel counts divisible by groups")
        c_in, c_out, groups = shape
        bias = old.bias is not None if state is None else f"{name}.bias" in state
        if state is not None and f"{name}.weight" in state:
            want = (c_out, c_in // groups, *old.kernel_size)
            if tuple(state[f"{name}.weight"].shape) != want:
                raise ArtifactError(
                    f"{source}: {name}.weight has shape {tuple(state[f'{name}.weight'].shape)} but the "
                    f"manifest records in/out/groups {shape}, i.e. {want}; the file and its manifest "
                    f"disagree, re-save the model with save_weights")
        new = nn.Conv2d(c_in, c_out, old.kernel_size, stride=old.stride, padding=old.padding,
                        dilation=old.dilation, groups=groups, bias=bias, padding_mode=old.padding_mode)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return model


def save_weights(model: MIRNetV2, path: str | os.PathLike, *, variant: str | None = None,
                 pruned: dict | None = None, **manifest_fields) -> Path:
    """Write ``model``'s state dict as safetensors and its manifest sidecar (replacing an existing
    file atomically); returns the path.

    A pruned model (convs narrower than its config builds) always gets a manifest ``pruned``
    record whose ``layers`` map each changed conv to ``[in_channels, out_channels, groups]``
    (computed here); ``pruned`` adds fields to it (e.g. the MACs/params ratios)."""
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ArtifactError(f"{path}: weights are saved as .safetensors; got suffix {path.suffix!r}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    layers = conv_layout_changes(model)
    if layers or pruned is not None:
        manifest_fields["pruned"] = {**(pruned or {}), "layers": layers}
    config = model.config.to_dict()
    with artifact.writer(path, force=True) as w:
        w.tmp.write_bytes(st_save(state, metadata={artifact.NETWORK_KEY: artifact.network_record(config, layers)}))
        w.describe(kind="weights", config=config, precision="fp32", variant=variant,
                   build=artifact.build_environment(torch=torch.__version__), **manifest_fields)
    return path


def adopt_manifest(path: str | os.PathLike) -> Path:
    """Re-save a ``.safetensors`` file that does not record its network (saved before the config and
    pruned layout went into its safetensors metadata) with its manifest's config and pruned layout
    recorded: the same tensors, the same manifest but for the new sha256. Only for files whose
    manifest you trust (it cannot be verified); files that record their network are left as they are."""
    from safetensors.torch import save as st_save

    path = Path(path)
    manifest = artifact.read_manifest(path, verify=False, kind="weights")
    if artifact.sha256_file(path) != manifest["sha256"]:
        raise ArtifactError(f"{path}: sha256 does not match its manifest; the file was modified or replaced "
                            f"after it was written, restore the original file")
    if artifact.NETWORK_KEY in (artifact.safetensors_metadata(path) or {}):
        return path
    record = artifact.network_record(manifest["config"], (manifest.get("pruned") or {}).get("layers"))
    artifact.atomic_write_bytes(path, st_save(_read_state_dict(path), metadata={artifact.NETWORK_KEY: record}))
    artifact.write_manifest(path, {**manifest, "sha256": artifact.sha256_file(path)})
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(
            f"{path}: cannot be read as a weights-only PyTorch checkpoint ({exc}). Files that need "
            f"full unpickling are refused; re-save the state dict with torch.save(model.state_dict())") from exc
    for key in ("params", "params_ema", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path}: expected a state dict of tensors (optionally under 'params')")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def infer_official_config(state: dict[str, torch.Tensor]) -> MIRNetV2Config:
    """Recover the official constructor arguments from an official state dict's shapes."""
    try:
        n_feat, inp_channels = state["conv_in.weight"].shape[:2]
        out_channels = state["conv_out.weight"].shape[0]
        mid = state["body.0.body.0.dau_mid.body.0.weight"].shape[0]
    except KeyError as exc:
        raise ArtifactError(f"not an official MIRNet_v2 state dict: key {exc} is missing") from None
    mrbs = {int(m.group(1)) for k in state if (m := re.match(r"body\.0\.body\.(\d+)\.dau_top\.", k))}
    return official_config(
        inp_channels=int(inp_channels), out_channels=int(out_channels), n_feat=int(n_feat),
        chan_factor=mid / n_feat, n_MRB=len(mrbs), bias="conv_in.bias" in state,
        task="defocus_deblurring" if inp_channels != out_channels else None)


def load_state(model: MIRNetV2, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """``load_state_dict(strict=True)`` with an error listing missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "") or "none"

        raise ArtifactError(
            f"{source}: weights do not fit the network config. Missing keys: {show(missing)}. "
            f"Unexpected keys: {show(unexpected)}. Mis-shaped: {show(misshaped)}")
    model.load_state_dict(state, strict=True)


def load_model(path_or_name: str | os.PathLike, *, config: MIRNetV2Config | None = None) -> MIRNetV2:
    """Load a bundled model by name, our ``.safetensors`` (config from its manifest) or an official
    ``.pth`` (config inferred from the weights unless given). Returns the model in eval mode."""
    from .. import zoo

    path = zoo.resolve_weights(path_or_name)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ArtifactError(f"{path}: weights must be one of {WEIGHT_SUFFIXES}")
    manifest = artifact.read_manifest(path, kind="weights") if path.suffix == ".safetensors" else None
    state = _read_state_dict(path)
    if config is None:
        config = MIRNetV2Config.from_dict(manifest["config"]) if manifest else infer_official_config(state)
    model = MIRNetV2(config)
    pruned = manifest.get("pruned") if manifest else None
    if pruned:
        apply_conv_layout(model, pruned.get("layers", {}), state, path)
    load_state(model, state, path)
    return model.eval()
