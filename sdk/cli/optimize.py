"""``mirnet prune``, ``quantize``, ``gate`` and ``build-engine``: make a model smaller or faster
and check it against its FP32 reference."""
from __future__ import annotations

import argparse
import json
import sys

from mirnet.optimize.gate import DEFAULT_MAX_LOSS_DB, DEFAULT_MIN_PSNR_DB

from ..artifact import check_overwrite
from ..errors import require
from ..camera import PRESETS
from .common import non_negative_float, positive_float, positive_int


def _add_inputs(p, *, pairs: bool = True) -> None:
    """The options that say what a model restores (default: what its weights were trained on)."""
    g = p.add_argument_group("inputs (default: the degradations the weights manifest records for training, "
                             "applied to the clean images)")
    if pairs:
        g.add_argument("--pairs", metavar="DIR", default=None, help="real degraded/clean pairs: a folder with "
                       "sub-folders low/high, NOISY/GT, input/target or lq/gt")
    g.add_argument("--sigma", type=non_negative_float, default=None, metavar="S", help="AWGN sigma S (0-255), clipped")
    g.add_argument("--protocol", default=None, choices=tuple(PRESETS), help="a camera evaluation preset")


def add_parsers(sub) -> None:
    _add_prune(sub)
    _add_build_engine(sub)
    _add_quantize(sub)
    _add_gate(sub)


def run_prune(args) -> int:
    from mirnet.optimize.prune import prune_file

    from .. import artifact

    out = check_overwrite(args.output, args.force)
    if args.threads is not None:
        require("torch", "optimize").set_num_threads(args.threads)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    record = prune_file(
        args.model, out, data=args.data, macs_ratio=args.macs_ratio, params_ratio=args.params_ratio,
        finetune_steps=args.finetune_steps, eval_data=args.eval_data, sigma=args.sigma, protocol=args.protocol,
        teacher_weight=args.teacher_weight, rrgs=args.rrgs, width=args.width, workers=args.workers,
        eval_limit=args.eval_limit or None, eval_crop=args.eval_crop or None, importance=args.importance,
        global_pruning=args.global_pruning, round_to=args.round_to, lr=args.lr, batch=args.batch,
        patch=args.patch, ema_decay=args.ema, seed=args.seed, amp_cpu=args.amp_cpu,
        channels_last=args.channels_last, quiet=args.quiet, log=say)
    ev = record["eval"]

    def db(value) -> str:
        return "-" if value is None else f"{value:.2f} dB"

    print(f"params        {record['params_before']:>12,} -> {record['params_after']:>12,}  "
          f"(-{record['params_ratio']:.1%})")
    print(f"GMAC/256x256  {record['macs_before'] / 1e9:>12.3f} -> {record['macs_after'] / 1e9:>12.3f}  "
          f"(-{record['macs_ratio']:.1%})")
    print(f"PSNR          before {db(ev['psnr_before'])}, pruned {db(ev['psnr_pruned'])}, "
          f"fine-tuned {db(ev['psnr_finetuned'])}  ({ev['n']} images: {ev['description']})")
    print(f"wrote {out} (+ {artifact.sidecar_path(out).name})")
    return 0


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="structured channel pruning, fine-tuning and PSNR check")
    p.add_argument("model", help="a .safetensors/.pth file or a bundled model name")
    ratio = p.add_mutually_exclusive_group()
    ratio.add_argument("--macs-ratio", type=float, metavar="R", help="remove this share of the model's MACs "
                       "(0 < R < 1): channels go after any --rrgs/--width blocks until it is reached")
    ratio.add_argument("--params-ratio", type=float, metavar="R",
                       help="remove this share of the model's parameters (0 < R < 1), as --macs-ratio")
    p.add_argument("--rrgs", type=positive_int, default=None, metavar="N",
                   help="keep the first N recursive residual groups (removes blocks; latency follows blocks more "
                   "than MACs on the edge variants)")
    p.add_argument("--width", type=positive_int, default=None, metavar="W",
                   help="run each multi-scale block's exchange W times (fewer than the model's)")
    p.add_argument("--data", required=True, help="fine-tuning data: clean images (degraded as the model's inputs) "
                   "or paired sub-folders (low/high, NOISY/GT, input/target, lq/gt)")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="N", help="fine-tuning steps (default 0)")
    p.add_argument("--teacher-weight", type=non_negative_float, default=0.5, metavar="W",
                   help="distillation: weight of the unpruned model's output in the fine-tuning loss, the rest "
                   "is the ground truth (default 0.5; 0: ground truth only)")
    p.add_argument("--eval-data", default=None, help="PSNR data (default: --data, first --eval-limit images)")
    _add_inputs(p, pairs=False)
    p.add_argument("--eval-limit", type=int, default=4, metavar="N", help="evaluate N images (0: all; default 4)")
    p.add_argument("--eval-crop", type=int, default=256, metavar="N",
                   help="centre crop eval images to N x N (0: full images; default 256)")
    p.add_argument("--importance", default="l1", choices=("l1", "l2", "taylor"), help="channel importance")
    p.add_argument("--global", dest="global_pruning", action="store_true",
                   help="rank channels across layers by importance per MAC (default: same share per layer)")
    p.add_argument("--round-to", type=int, default=None, metavar="K", help="keep channel counts multiples of K")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    p.add_argument("--batch", type=int, default=8, help="fine-tuning batch (default 8)")
    p.add_argument("--patch", type=int, default=64, help="fine-tuning patch size (default 64)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="EMA decay of the fine-tuned "
                   "weights (default 0: off)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="processes making fine-tuning crops "
                   "(default 1; 0: in the training process)")
    p.add_argument("--amp-cpu", action="store_true", help="fine-tune with bfloat16 autocast on the CPU (fast "
                   "where it has AVX-512 BF16 or AMX, slow where it has not; the train config's amp_cpu)")
    p.add_argument("--channels-last", action="store_true", help="fine-tune in NHWC memory layout (the train "
                   "config's channels_last)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path (manifest written beside it)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=run_prune)


def run_build_engine(args) -> int:
    from mirnet.optimize.build_engine import prepare_build, run_build

    from .. import artifact

    out = check_overwrite(args.output, args.force)
    request = prepare_build(
        args.onnx, out, fp16=args.fp16, profiles=args.profile, timing_cache=args.timing_cache,
        workspace_mb=args.workspace, dla_core=args.dla, version_compatible=args.version_compatible,
        strongly_typed=args.strongly_typed, min_psnr_db=args.min_psnr_db, max_loss_db=args.max_loss_db,
        gate_data=args.data,
        verbose=args.verbose, device=args.device)
    print("equivalent trtexec command (where TensorRT is installed):")
    print(f"  {request.trtexec}")
    for i, profile in enumerate(request.profiles):
        print(f"profile {i}: {profile}")
    for note in request.plan.notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.flush()
    path = run_build(request)
    manifest = artifact.read_manifest(path, verify=False)
    build = manifest["build"]
    print(f"wrote {path} (+ {artifact.sidecar_path(path).name}): {manifest['precision']}, TensorRT "
          f"{build['tensorrt']}, {build['gpu_name']} (compute capability {build['compute_capability']})")
    gate = manifest.get("gate")
    if gate:
        print(f"quality gate: {gate['status']}" + (f" ({gate['reason']})" if gate.get("reason") else ""))
    return 0


def _add_build_engine(sub) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine from an ONNX export (needs TensorRT and a GPU)")
    p.add_argument("onnx", metavar="MODEL.onnx", help="an ONNX file made by `mirnet export onnx` (with its manifest)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.engine",
                   help="output .engine or .plan path (manifest written beside it)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT 10; not with a Q/DQ INT8 ONNX)")
    p.add_argument("--profile", action="append", default=None, metavar="MIN:OPT:MAX",
                   help="optimization profile; each shape NxCxHxW or HxW (batch 1), H and W multiples of the "
                   "model's pad multiple; repeat for several (default: 64x64:720x1280:1080x1920, rounded up)")
    p.add_argument("--strongly-typed", action=argparse.BooleanOptionalAction, default=None,
                   help="strongly typed network (default: when the ONNX has QuantizeLinear nodes)")
    p.add_argument("--timing-cache", metavar="FILE", help="read and update this timing cache (faster rebuilds)")
    p.add_argument("--workspace", type=int, metavar="MB", help="builder workspace limit in MiB")
    p.add_argument("--dla", type=int, metavar="N", help="DLA core N with GPU fallback (Jetson; needs --fp16 or INT8)")
    p.add_argument("--version-compatible", action="store_true",
                   help="engine that also runs on newer TensorRT releases of the same major version")
    p.add_argument("--data", metavar="DIR", help="clean frames: gate the engine against its FP32 reference on the "
                   "model's own inputs made from them (its training degradations)")
    _add_gate_limits(p)
    p.add_argument("--device", type=int, default=0, help="GPU index (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--verbose", action="store_true", help="print TensorRT's verbose log")
    p.set_defaults(func=run_build_engine)


def _print_gate(record: dict, *, top: int = 10) -> None:
    from mirnet.optimize.gate import GateResult

    print(GateResult(**record).summary(top=top))


def run_quantize(args) -> int:
    from mirnet.optimize.quantize import quantize

    from .. import artifact
    from ..errors import QualityGateError

    try:
        result = quantize(
            args.model, args.output, target=args.target, calib=args.calib, method=args.method,
            calib_images=args.calib_images, calib_size=args.calib_size, pairs=args.pairs, sigma=args.sigma,
            protocol=args.protocol, qat_steps=args.qat_steps, data=args.data, qat_lr=args.qat_lr,
            qat_batch=args.qat_batch, qat_target=args.qat_target, exclude=args.exclude, gate=not args.no_gate,
            max_loss_db=args.max_loss_db, min_psnr_db=args.min_psnr_db,
            gate_data=args.gate_data, gate_limit=args.gate_limit or None, quantizer=args.quantizer,
            percentile=args.percentile, force=args.force, seed=args.seed)
    except QualityGateError as exc:
        if exc.result:
            _print_gate(exc.result)
        raise
    m = result.manifest
    q = m["quantization"]
    if q["target"] == "openvino":
        how = f"NNCF {q['nncf']} ({q['preset']} preset, {q['fake_quantize_nodes']} FakeQuantize nodes)"
    else:
        how = q.get("path") or f"onnxruntime quantize_static ({q['format']}, pre-process {q['pre_process']})"
    print(f"wrote {result.path} (+ {artifact.sidecar_path(result.path).name}): {m['precision']} for --target "
          f"{q['target']}, {how}, calibration {m['calibration']['method']} on {m['calibration']['images']} crops "
          f"of {m['calibration']['size']} px of {m['calibration']['inputs']['description']}")
    if q.get("fallback_reason"):
        print(f"note: ModelOpt was not used ({q['fallback_reason']}); PyTorch fake-quant made the file",
              file=sys.stderr)
    if m.get("int8_check"):
        c = m["int8_check"]
        print(f"ONNX Runtime optimized graph: {c['integer_convs']} convs in integer kernels "
              f"({c['integer_ops']} integer ops), {c['float_convs']} float convs")
    for issue in m.get("tensorrt_issues") or []:
        print(f"warning: TensorRT would reject {issue['op']} {issue['node']}: {issue['reason']}", file=sys.stderr)
    if m.get("gate", {}).get("passed") is not None:
        _print_gate(result.gate)
    return 0


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="INT8 quantization (Q/DQ for TensorRT or the CPU, ONNX Runtime, OpenVINO "
                       "IR) + quality gate")
    p.add_argument("model", help="FP32 weights: a .safetensors/.pth file or a bundled model name")
    p.add_argument("--target", required=True, choices=("tensorrt", "cpu", "onnxruntime", "openvino"),
                   help="tensorrt: explicit Q/DQ ONNX (ModelOpt) for TensorRT; cpu: the same Q/DQ ONNX for the "
                   "CPU, run (and gated) on OpenVINO's INT8 kernels, the fastest CPU INT8; onnxruntime: an ONNX "
                   "ONNX Runtime runs with integer kernels; openvino: an INT8 OpenVINO IR (NNCF), OUT.xml")
    p.add_argument("--calib", metavar="DIR", default=None, help="clean calibration images (a folder; "
                   "not needed with --pairs)")
    p.add_argument("--method", default=None, choices=("max", "entropy", "percentile"),
                   help="activation range calibration (default: percentile for cpu and tensorrt, max for "
                   "onnxruntime)")
    p.add_argument("--percentile", type=float, default=None,
                   help="percentile for --method percentile (default 99.999)")
    p.add_argument("--calib-images", type=int, default=32, metavar="N", help="calibration crops (default 32)")
    p.add_argument("--calib-size", type=int, default=128, metavar="S", help="crop size (default 128, rounded "
                   "up to the model's pad multiple)")
    p.add_argument("--qat-steps", type=int, default=0, metavar="N", help="QAT fine-tuning steps (cpu, tensorrt)")
    p.add_argument("--data", metavar="DIR", help="clean training images for QAT")
    p.add_argument("--qat-lr", type=float, default=1e-5, help="QAT AdamW learning rate (default 1e-5)")
    p.add_argument("--qat-batch", type=int, default=4, help="QAT batch (default 4)")
    p.add_argument("--qat-target", default="teacher", choices=("teacher", "clean"),
                   help="what QAT fits: the FP32 model's outputs (teacher, default) or the clean images "
                   "(clean: the loss against ground truth the gate measures)")
    p.add_argument("--exclude", action="append", default=None, metavar="LAYERS",
                   help="comma-separated module paths, globs or ONNX node names kept in float (as `mirnet gate` "
                   "suggests); repeatable")
    p.add_argument("--quantizer", default="auto", choices=("auto", "modelopt", "torch"),
                   help="cpu, tensorrt: ModelOpt, PyTorch fake-quant, or ModelOpt falling back to PyTorch "
                   "(default)")
    _add_inputs(p)
    _add_gate_limits(p)
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate")
    p.add_argument("--gate-data", metavar="DIR", help="clean frames for the gate (default: --calib)")
    p.add_argument("--gate-limit", type=int, default=8, metavar="N", help="gate on N frames (0: all; default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .onnx (.xml for --target openvino; "
                   "manifest beside it)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run_quantize)


def _add_gate_limits(p) -> None:
    p.add_argument("--max-loss-db", type=non_negative_float, default=DEFAULT_MAX_LOSS_DB, metavar="X",
                   help=f"quality gate: fail when the artifact's PSNR against ground truth is more than X dB below "
                   f"the FP32 model's (default {DEFAULT_MAX_LOSS_DB:g})")
    p.add_argument("--min-psnr-db", type=positive_float, default=None, metavar="X",
                   help="quality gate: also fail when the artifact's output is below X dB PSNR from the FP32 "
                   f"model's (default: off; {DEFAULT_MIN_PSNR_DB:g} for models that change the size)")


def run_gate(args) -> int:
    from mirnet.optimize.gate import run_gate

    from ..errors import QualityGateError

    result = run_gate(args.artifact, args.reference, args.data, pairs=args.pairs, sigma=args.sigma,
                      protocol=args.protocol, max_loss_db=args.max_loss_db, min_psnr_db=args.min_psnr_db,
                      limit=args.limit, crop=args.crop, layers="never" if args.top == 0 else "always",
                      threads=args.threads, check=False)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary(top=args.top))
    if not result.passed:
        raise QualityGateError(f"quality gate failed: {result.reason}", result=result.to_dict())
    return 0


def _add_gate(sub) -> None:
    p = sub.add_parser("gate", help="quality gate: score an optimised artifact and its FP32 model against ground "
                       "truth on the model's own inputs, per-layer error report")
    p.add_argument("artifact", help="the optimised artifact (.onnx, .xml, .safetensors, .engine)")
    p.add_argument("--reference", required=True, help="the FP32 model: weights, bundled name or FP32 .onnx")
    p.add_argument("--data", metavar="DIR", default=None, help="clean frames (a folder of images; not needed "
                   "with --pairs)")
    _add_inputs(p)
    _add_gate_limits(p)
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N frames")
    p.add_argument("--crop", type=int, default=None, metavar="N", help="centre crop frames to N x N")
    p.add_argument("--top", type=int, default=10, metavar="N", help="list the N worst layers (0: no layer report)")
    p.add_argument("--threads", type=positive_int, default=None, help="inference threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_gate)
