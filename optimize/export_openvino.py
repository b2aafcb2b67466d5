"""FP32 ONNX -> OpenVINO IR (``.xml`` + ``.bin``) with ``openvino.convert_model``, FP32 weights kept
(``compress_to_fp16=False``), a parity check against ONNX Runtime in f32 and a manifest (kind
``openvino``, which records the ``.bin``'s sha256 too). ``.onnx`` files run on OpenVINO directly as
well: the IR saves the conversion at every load and is what NNCF's INT8 IR is compared with."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mirnet.sdk import artifact
from mirnet.sdk.errors import ArtifactError, ConfigError, require

PARITY_ATOL = 1e-4
PARITY_SHAPE = (40, 56)
#: fields of the ONNX manifest the IR's manifest carries over (the pruned layout, the training record)
CARRIED = ("pruned", "training")


def _parity(onnx_path: Path, xml: Path, manifest: dict, shape: tuple[int, int], seed: int = 0) -> float:
    """Max |OpenVINO(IR) - ONNX Runtime(ONNX)| in f32 on a random batch of 2 at ``shape`` (not a
    size the model was traced at: checks that batch, height and width stayed dynamic)."""
    from mirnet.sdk.backends.openvino import compile_cpu, core

    from .onnx_tools import ort_run

    inp = manifest["io"]["input"]
    x = np.random.default_rng(seed).random((2, inp["channels"], *shape), dtype=np.float32)
    want = ort_run(onnx_path, x, input_name=inp["name"])
    got = compile_cpu(core().read_model(str(xml)), precision="f32")(x)[0]
    if got.shape != want.shape:
        raise ArtifactError(f"{xml}: OpenVINO output shape {got.shape} != ONNX Runtime's {want.shape}")
    return float(np.abs(got - want).max())


def export_openvino(onnx_path: str | os.PathLike, out_xml: str | os.PathLike, *,
                    source: str | os.PathLike | None = None, parity_shape: tuple[int, int] = PARITY_SHAPE,
                    atol: float = PARITY_ATOL) -> Path:
    """Convert the FP32 ONNX ``onnx_path`` (with its manifest) to the OpenVINO IR ``out_xml`` and
    ``out_xml.with_suffix('.bin')``, written atomically (replacing existing files) with their
    manifest; ArtifactError when OpenVINO's output in f32 differs from ONNX Runtime's by more than
    ``atol``. ``source``: the artifact to name as the IR's source (default ``onnx_path``; the
    weights when the ONNX is an intermediate export)."""
    ov = require("openvino", "openvino")
    onnx_path, out_xml = Path(onnx_path), Path(out_xml)
    if out_xml.suffix.lower() != ".xml":
        raise ConfigError(f"{out_xml}: an OpenVINO IR is MODEL.xml (with MODEL.bin beside it); name the "
                          f"output .xml")
    manifest = artifact.read_manifest(onnx_path, kind="onnx")
    if manifest["precision"] != "fp32":
        raise ConfigError(f"{onnx_path}: precision {manifest['precision']!r}; the OpenVINO export converts FP32 "
                          f"ONNX files: pass the FP32 export (`mirnet export onnx WEIGHTS -o MODEL.onnx`)")
    m = manifest["io"]["input"]["pad_multiple"]
    parity_shape = tuple(-(-s // m) * m for s in parity_shape)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # openvino raises OpConversionFailure, RuntimeError and friends
        raise ArtifactError(f"{onnx_path}: OpenVINO cannot convert it ({exc})") from exc
    with artifact.writer(out_xml, force=True) as w:
        ov.save_model(model, str(w.tmp), compress_to_fp16=False)
        diff = _parity(onnx_path, w.tmp, manifest, parity_shape)
        if not diff <= atol:
            raise ArtifactError(f"OpenVINO output of the IR differs from ONNX Runtime's by {diff:.3g} (> {atol:g}) "
                                f"at {parity_shape} in f32; the conversion is wrong, not written")
        w.describe(kind="openvino", config=manifest["config"], precision="fp32", variant=manifest.get("variant"),
                   io=manifest["io"], source=onnx_path if source is None else source,
                   **{key: manifest[key] for key in CARRIED if manifest.get(key)},
                   parity={"reference": "onnxruntime-fp32", "max_abs_diff": diff, "shape": list(parity_shape)},
                   build=artifact.build_environment(openvino=ov.__version__))
    return w.path
