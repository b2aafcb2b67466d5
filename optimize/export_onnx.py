"""PyTorch -> ONNX export with dynamic batch/height/width, checker, ORT parity check and manifest."""
from __future__ import annotations

import os
import tempfile
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
    ort = require("onnxruntime", "ort")
    rng = np.random.default_rng(seed)
    x = rng.random((2, model.config.in_channels, *shape), dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ArtifactError(f"{onnx_path}: ONNX output shape {got.shape} != PyTorch {want.shape}")
    return float(np.abs(got - want).max())


def export_onnx(model: MIRNetV2, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                variant: str | None = None, source: str | os.PathLike | None = None,
                parity_shape: tuple[int, int] = (40, 56), atol: float = PARITY_ATOL,
                extra_manifest: dict | None = None, simplify: bool = False) -> Path:
    """Export ``model`` to ``out`` (written atomically) and its manifest; raises ArtifactError when
    the checker fails or ONNX Runtime's output differs from PyTorch's by more than ``atol``.

    ``simplify``: run onnxslim on the exported graph (constant folding, duplicate-node and
    dead-code elimination; dynamic axes stay dynamic) before the checker and the parity check,
    so the parity check covers the simplified graph. Recorded in the manifest (``simplified``)."""
    onnx = require("onnx", "ort")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    m = model.config.pad_multiple
    dummy = torch.rand(1, model.config.in_channels, 8 * m, 8 * m)
    parity_shape = tuple(-(-s // m) * m for s in parity_shape)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                              "output": {0: "batch", 2: "out_height", 3: "out_width"}})
        simplified = None
        if simplify:
            from .onnx_tools import simplify as _slim

            onnx.save(_slim(str(tmp)), str(tmp))
            import onnxslim

            simplified = {"tool": "onnxslim", "version": onnxslim.__version__}
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:
            raise ArtifactError(f"exported ONNX fails onnx.checker: {exc}") from exc
        diff = _parity(model, tmp, parity_shape)
        if not diff <= atol:
            raise ArtifactError(
                f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {atol:g}) at "
                f"{parity_shape}; the export is wrong, not written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    import onnxruntime

    manifest = artifact.make_manifest(
        out, kind="onnx", config=model.config.to_dict(), precision="fp32", variant=variant,
        source=source, opset=opset,
        parity={"reference": "pytorch-fp32", "max_abs_diff": diff, "shape": list(parity_shape)},
        **({"simplified": simplified} if simplified else {}),
        build=artifact.build_environment(torch=torch.__version__, onnx=onnx.__version__,
                                         onnxruntime=onnxruntime.__version__),
        **(extra_manifest or {}))
    artifact.write_manifest(out, manifest)
    return out
