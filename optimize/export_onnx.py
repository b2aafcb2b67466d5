"""PyTorch -> ONNX export with dynamic batch/height/width, checker, ORT parity check and manifest;
and the export cache of weights files (:func:`cached_export`)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from mirnet.sdk import artifact
from mirnet.sdk.errors import ArtifactError, require
from mirnet.sdk.model.arch import MIRNetV2

DEFAULT_OPSET = 17
PARITY_ATOL = 1e-4


def _parity(model: MIRNetV2, onnx_path: Path, shape: tuple[int, int], seed: int = 0) -> float:
    """Max |ORT - torch| on a random input of ``shape`` (not the traced shape: checks dynamic axes)."""
    from .onnx_tools import ort_run

    rng = np.random.default_rng(seed)
    x = rng.random((2, model.config.in_channels, *shape), dtype=np.float32)
    got = ort_run(onnx_path, x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ArtifactError(f"{onnx_path}: ONNX output shape {got.shape} != PyTorch {want.shape}")
    return float(np.abs(got - want).max())


def check_onnx(path: Path) -> None:
    """``onnx.checker`` with full shape inference; ArtifactError when it fails."""
    onnx = require("onnx", "ort")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError and friends
        raise ArtifactError(f"the exported ONNX fails onnx.checker: {exc}") from exc


def export_onnx(model: MIRNetV2, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                variant: str | None = None, source: str | os.PathLike | None = None,
                parity_shape: tuple[int, int] = (40, 56), atol: float = PARITY_ATOL,
                extra_manifest: dict | None = None, simplify: bool = False) -> Path:
    """Export ``model`` to ``out`` (written atomically, replacing an existing file) and its
    manifest; raises ArtifactError when the checker fails or ONNX Runtime's output differs from
    PyTorch's by more than ``atol``.

    ``simplify``: run onnxslim on the exported graph (constant folding, duplicate-node and
    dead-code elimination; dynamic axes stay dynamic) before the checker and the parity check,
    so the parity check covers the simplified graph. Recorded in the manifest (``simplified``)."""
    onnx = require("onnx", "ort")
    onnxruntime = require("onnxruntime", "ort")
    model = model.eval().cpu()
    m = model.config.pad_multiple
    dummy = torch.rand(1, model.config.in_channels, 8 * m, 8 * m)
    parity_shape = tuple(-(-s // m) * m for s in parity_shape)
    with artifact.writer(out, force=True) as w:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(w.tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                              "output": {0: "batch", 2: "out_height", 3: "out_width"}})
        simplified = {}
        if simplify:
            import onnxslim

            from .onnx_tools import simplify as slim

            onnx.save(slim(str(w.tmp)), str(w.tmp))
            simplified = {"simplified": {"tool": "onnxslim", "version": onnxslim.__version__}}
        check_onnx(w.tmp)
        diff = _parity(model, w.tmp, parity_shape)
        if not diff <= atol:
            raise ArtifactError(
                f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {atol:g}) at "
                f"{parity_shape}; the export is wrong, not written")
        w.describe(kind="onnx", config=model.config.to_dict(), precision="fp32", variant=variant,
                   source=source, opset=opset,
                   parity={"reference": "pytorch-fp32", "max_abs_diff": diff, "shape": list(parity_shape)},
                   **simplified,
                   build=artifact.build_environment(torch=torch.__version__, onnx=onnx.__version__,
                                                    onnxruntime=onnxruntime.__version__),
                   **(extra_manifest or {}))
    return w.path


def _export_key(weights: Path, manifest: dict) -> str:
    """What defines the network ``weights`` export to: the file's sha256 and, for our
    ``.safetensors``, the manifest's config and pruned layout (``load_model`` builds the network
    from them, so an edited manifest is another network), plus the export opset. Hex digest."""
    network = {"sha256": artifact.sha256_file(weights), "opset": DEFAULT_OPSET,
               "config": manifest.get("config"), "pruned": (manifest.get("pruned") or {}).get("layers")}
    return hashlib.sha256(json.dumps(network, sort_keys=True).encode()).hexdigest()


def export_bundled(*, force: bool = False) -> list[tuple[Path, bool]]:
    """The packaging step: the ONNX export of every bundled model, written beside its weights in the
    package. An export whose manifest names the current weights as its source is kept unless
    ``force``. Returns ``(path, written)`` per model."""
    from mirnet.sdk import zoo
    from mirnet.sdk.model import load_model

    out = []
    for name, weights in zoo.bundled().items():
        target = zoo.ZOO_DIR / f"{name}.onnx"
        if target.is_file() and not force:
            try:
                manifest = artifact.read_manifest(target, kind="onnx")
            except ArtifactError:
                manifest = {}
            if (manifest.get("source") or {}).get("sha256") == artifact.sha256_file(weights):
                out.append((target, False))
                continue
        variant = artifact.read_manifest(weights, kind="weights").get("variant")
        out.append((export_onnx(load_model(weights), target, variant=variant, source=weights), True))
    return out


def cached_export(weights: str | os.PathLike) -> Path:
    """An FP32 ONNX export of the weights file ``weights`` under ``artifact.cache_dir() / "onnx"``,
    made once and reused while everything that defines the network matches (the weights' sha256,
    their manifest's config and pruned layout, the opset: the manifest's ``export_key``). A damaged
    or half-written entry (manifest missing, sha256 or key mismatch) is exported again."""
    from mirnet.sdk.model import load_model

    weights = Path(weights)
    manifest = artifact.read_manifest(weights, kind="weights") if weights.suffix == ".safetensors" else {}
    key = _export_key(weights, manifest)
    target = artifact.cache_dir() / "onnx" / f"{weights.stem}-{key[:16]}.onnx"
    if target.is_file():
        try:
            if artifact.read_manifest(target, kind="onnx").get("export_key") == key:
                return target
        except ArtifactError:
            pass  # damaged entry: export again
    return export_onnx(load_model(weights), target, variant=manifest.get("variant"), source=weights,
                       extra_manifest={"export_key": key})
