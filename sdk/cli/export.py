"""``mirnet export onnx``: weights to a deployable format."""
from __future__ import annotations

from ..artifact import check_overwrite


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export weights to a deployable format")
    export_sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = export_sub.add_parser("onnx", help="ONNX with dynamic batch/H/W, checked against PyTorch")
    e.add_argument("model", help="a .safetensors/.pth file or a bundled model name")
    e.add_argument("-o", "--output", required=True, help="output .onnx path")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--force", action="store_true", help="overwrite an existing output")
    e.set_defaults(func=run_onnx)


def run_onnx(args) -> int:
    from mirnet.optimize.export_onnx import export_onnx

    from .. import artifact, zoo
    from ..model import load_model

    source = zoo.resolve_weights(args.model)
    variant = None
    if source.suffix == ".safetensors":
        variant = artifact.read_manifest(source, kind="weights").get("variant")
    out = check_overwrite(args.output, args.force)
    path = export_onnx(load_model(source), out, opset=args.opset, variant=variant, source=source)
    parity = artifact.read_manifest(path, verify=False)["parity"]
    print(f"wrote {path} (+ {artifact.sidecar_path(path).name}); ONNX Runtime vs PyTorch max abs diff "
          f"{parity['max_abs_diff']:.2e} at {parity['shape'][0]}x{parity['shape'][1]}")
    return 0
