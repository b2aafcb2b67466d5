"""``mirnet export onnx``/``openvino``: weights to a deployable format; ``mirnet export triton``: a
Triton model repository."""
from __future__ import annotations

from pathlib import Path

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
    v = export_sub.add_parser("openvino", help="OpenVINO IR (MODEL.xml + MODEL.bin, FP32), checked against "
                              "ONNX Runtime",
                              description="Convert an FP32 ONNX to OpenVINO IR with FP32 weights; weights and "
                              "bundled names are exported to ONNX first (weights need torch). OpenVINO also runs "
                              "the .onnx directly; the IR skips the conversion at every load.")
    v.add_argument("model", help="an FP32 .onnx, a .safetensors/.pth file or a bundled model name")
    v.add_argument("-o", "--output", required=True, help="output .xml path (the .bin is written beside it)")
    v.add_argument("--force", action="store_true", help="overwrite an existing output")
    v.set_defaults(func=run_openvino)
    b = export_sub.add_parser("bundled", help="the ONNX exports of the bundled models, into the package "
                              "(the packaging step; needs torch)")
    b.add_argument("--force", action="store_true", help="export again even when the exports are up to date")
    b.set_defaults(func=run_bundled)
    t = export_sub.add_parser("triton", help="a Triton model repository for tritonserver (ONNX, TensorRT)",
                              description="Write REPO/NAME (ONNX on the onnxruntime backend) and, with --engine, "
                              "REPO/NAME-trt (tensorrt_plan), each with a config.pbtxt validated against Triton's "
                              "model-config schema and its model file.")
    t.add_argument("model", help="an .onnx file or a bundled model name")
    t.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository folder")
    t.add_argument("--engine", default=None, help="also a TensorRT engine of the same model (.engine/.plan)")
    t.add_argument("--name", default=None, help="model name in the repository (default: the model's file name)")
    t.add_argument("--max-batch", type=int, default=8, metavar="N", help="max_batch_size (default 8)")
    t.add_argument("--max-queue-delay-us", type=int, default=100, metavar="N",
                   help="dynamic batching: microseconds a request may wait to join a batch (default 100)")
    t.add_argument("--instances", type=int, default=1, metavar="N", help="model instances (default 1)")
    t.add_argument("--kind", choices=("gpu", "cpu"), default="gpu",
                   help="where the ONNX model's instances run (default gpu; engines always run on the GPU)")
    t.add_argument("--force", action="store_true", help="replace existing model folders")
    t.set_defaults(func=run_triton)


def run_bundled(args) -> int:
    from mirnet.optimize.export_onnx import export_bundled

    for path, written in export_bundled(force=args.force):
        print(f"{'wrote' if written else 'up to date:'} {path}")
    return 0


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


def run_openvino(args) -> int:
    from mirnet.optimize.export_openvino import export_openvino

    from .. import artifact, zoo

    out = check_overwrite(args.output, args.force)
    check_overwrite(out.with_suffix(".bin"), args.force)
    if zoo.is_bundled_name(args.model) and zoo.has_onnx(str(args.model)):
        source = zoo.bundled_onnx(str(args.model))
    else:
        source = zoo.resolve_weights(args.model)
    onnx = source
    if source.suffix.lower() != ".onnx":
        from mirnet.optimize.export_onnx import cached_export

        onnx = cached_export(source)
    path = export_openvino(onnx, out, source=source)
    parity = artifact.read_manifest(path, verify=False)["parity"]
    print(f"wrote {path} (+ {path.with_suffix('.bin').name}, {artifact.sidecar_path(path).name}); OpenVINO vs ONNX "
          f"Runtime max abs diff {parity['max_abs_diff']:.2e} at {parity['shape'][0]}x{parity['shape'][1]} in f32")
    return 0


def run_triton(args) -> int:
    from ..triton_repo import export_repository, tritonserver_command

    folders = export_repository(args.model, args.output, engine=args.engine, name=args.name,
                                max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                                instances=args.instances, instance_kind=args.kind, force=args.force)
    for folder in folders:
        print(f"wrote {folder} (config.pbtxt validated)")
    print(f"serve it with: {tritonserver_command(Path(args.output).resolve())}")
    return 0
