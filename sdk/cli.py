"""The ``mirnet`` command. The only place that parses argv and maps exceptions to exit codes."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import InputError, MirnetError
from .zoo import DEFAULT_MODEL


def _progress(iterable=None, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, dynamic_ncols=True, **kwargs)


# ---------------------------------------------------------------------------- restore
@dataclass(frozen=True)
class RestoreJob:
    src: Path
    dst: Path
    kind: str


def plan_restore(inputs: list[str], outdir: Path, *, force: bool) -> tuple[list[RestoreJob], list[str]]:
    """Map inputs (files and folders, searched recursively) to outputs under ``outdir`` keeping
    names (and sub-folders of folder inputs). Returns the jobs and the problems found."""
    from .media import kind_of

    jobs: list[RestoreJob] = []
    problems: list[str] = []
    for raw in inputs:
        src = Path(raw)
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.is_file() and kind_of(p) and not p.name.startswith("."))
            if not found:
                problems.append(f"{src}: folder holds no image or video files")
            jobs += [RestoreJob(p, outdir / p.relative_to(src), kind_of(p)) for p in found]
        elif src.is_file():
            if kind_of(src) is None:
                problems.append(f"{src}: unsupported file type {src.suffix!r}")
            else:
                jobs.append(RestoreJob(src, outdir / src.name, kind_of(src)))
        else:
            problems.append(f"{src}: no such file or folder")
    inputs_resolved = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    kept = []
    for job in jobs:
        dst = job.dst.resolve()
        if dst in inputs_resolved:
            problems.append(f"{job.src}: output {job.dst} would overwrite an input; choose another -o")
        elif dst in seen:
            problems.append(f"{job.src}: output {job.dst} is also the output of {seen[dst]}; restore them separately")
        elif job.dst.exists() and not force:
            problems.append(f"{job.src}: output {job.dst} exists; pass --force to overwrite it")
        else:
            seen[dst] = job.src
            kept.append(job)
    return kept, problems


def _restore_image(restorer, job: RestoreJob) -> None:
    from .media import read_image, write_image

    write_image(job.dst, restorer.restore(read_image(job.src)))


def _restore_video(restorer, job: RestoreJob, quiet: bool) -> None:
    from .media import VideoReader, VideoWriter

    reader = VideoReader(job.src)
    writer = None
    try:
        for frame in _progress(reader, total=reader.frame_count, desc=job.src.name, unit="frame",
                               leave=False, disable=quiet):
            out = restorer.restore(frame)
            if writer is None:
                writer = VideoWriter(job.dst, reader.fps, (out.shape[1], out.shape[0]))
            writer.write(out)
        if writer is None:
            raise InputError(f"{job.src}: video holds no decodable frames")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reader.close()


def cmd_restore(args) -> int:
    from .restorer import Restorer

    outdir = Path(args.output)
    jobs, problems = plan_restore(args.inputs, outdir, force=args.force)
    for problem in problems:
        print(f"mirnet restore: {problem}", file=sys.stderr)
    if not jobs:
        print("mirnet restore: nothing to do", file=sys.stderr)
        return 1
    restorer = Restorer(args.model, backend=args.backend, threads=args.threads, tile=args.tile,
                        tile_overlap=args.tile_overlap)
    failed = len(problems)
    with restorer:
        for job in _progress(jobs, desc="restore", unit="file", disable=args.quiet):
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                if job.kind == "image":
                    _restore_image(restorer, job)
                else:
                    _restore_video(restorer, job, args.quiet)
            except (InputError, OSError) as exc:
                failed += 1
                print(f"mirnet restore: {exc}", file=sys.stderr)
    done = len(jobs) - (failed - len(problems))
    print(f"restored {done} file(s) into {outdir}" + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------------- info / variants
def cmd_info(args) -> int:
    from . import artifact, zoo

    path = zoo.resolve_weights(args.artifact)
    manifest = artifact.read_manifest(path, verify=not args.no_verify)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    io = manifest["io"]
    print(f"{path}  ({manifest['kind']}, {manifest['precision']})")
    print(f"  variant   {manifest.get('variant') or '-'}")
    print(f"  sha256    {manifest['sha256']}")
    print(f"  created   {manifest.get('created', '-')}")
    print(f"  input     {io['input']['name']} N x {io['input']['channels']} x H x W {io['input']['dtype']} "
          f"{io['input']['color']} {io['input']['range']}, H and W multiples of {io['input']['pad_multiple']}")
    print(f"  output    {io['output']['name']} N x {io['output']['channels']} x H*{io['output']['scale']} "
          f"x W*{io['output']['scale']}")
    print("  config    " + ", ".join(f"{k}={v}" for k, v in manifest["config"].items()))
    if manifest.get("source"):
        print(f"  source    {manifest['source']['file']} ({manifest['source']['sha256'][:16]}...)")
    for key in ("opset", "parity", "build", "training", "metrics"):
        if manifest.get(key) is not None:
            print(f"  {key:<9} {json.dumps(manifest[key])}")
    return 0


def cmd_variants(args) -> int:
    from .model import VARIANTS

    rows = []
    for name, cfg in VARIANTS.items():
        row = {"variant": name, **cfg.to_dict()}
        if args.macs:
            from .model import create_model
            from .model.complexity import count_macs, count_params

            model = create_model(name).eval()
            row["params"] = count_params(model)
            row["gmac_256"] = round(count_macs(model, 256, 256) / 1e9, 3)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        extra = f"  params={row['params']:,}  GMAC/256x256={row['gmac_256']}" if args.macs else ""
        cfg = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("variant", "params", "gmac_256"))
        print(f"{row['variant']:<20}{extra}\n    {cfg}")
    return 0


# ---------------------------------------------------------------------------- export
def cmd_export_onnx(args) -> int:
    from mirnet.optimize.export_onnx import export_onnx

    from . import artifact, zoo
    from .model import load_model

    source = zoo.resolve_weights(args.model)
    variant = None
    if source.suffix == ".safetensors":
        variant = artifact.read_manifest(source, kind="weights").get("variant")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    path = export_onnx(load_model(source), out, opset=args.opset, variant=variant, source=source)
    parity = artifact.read_manifest(path, verify=False)["parity"]
    print(f"wrote {path} (+ {artifact.sidecar_path(path).name}); ONNX Runtime vs PyTorch max abs diff "
          f"{parity['max_abs_diff']:.2e} at {parity['shape'][0]}x{parity['shape'][1]}")
    return 0


# ---------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    from mirnet.benchmarks import report, suite
    from mirnet.benchmarks.harness import results_dir

    if args.render:
        for path in report.render(args.render, readme=args.readme):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if args.micro:
        from mirnet.benchmarks import ops, stream
        from mirnet.benchmarks.harness import machine_info

        micro = {"machine": machine_info(), "ops": ops.run(sizes=[(1080, 1920)]),
                 "stream": stream.run(args.models[0] if args.models else DEFAULT_MODEL, threads=args.threads)}
        out = Path(args.json) if args.json else results_dir() / "micro.json"
        suite.save(micro, out)
        for row in micro["ops"]:
            print(f"  {json.dumps(row)}", file=sys.stderr)
        s = micro["stream"]
        print(f"  stream: pipeline {s['pipeline_fps']:.2f} fps vs infer-only {s['infer_fps']:.2f} fps "
              f"(efficiency {s['efficiency']:.2f})", file=sys.stderr)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    baselines = [b for b in args.baselines.split(",") if b]

    def show(row):
        print(f"  {row['artifact']:<28} {row['backend']:<14} {row['precision']:<9} {row['size']:>9}  "
              f"p50 {row['p50_ms']:9.1f} ms  {row['fps']:7.2f} fps", file=sys.stderr)

    result = suite.run(args.models, sizes=suite.parse_sizes(args.sizes), batch=args.batch,
                       threads=args.threads, baselines=baselines, quality_data=args.quality_data,
                       sigma=args.sigma, quality_limit=args.quality_limit, min_seconds=args.min_seconds,
                       progress=None if args.quiet else show)
    out = Path(args.json) if args.json else results_dir() / "bench.json"
    suite.save(result, out)
    for path in [out, *report.render(out, readme=args.readme)]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- train / eval
def cmd_train(args) -> int:
    from mirnet.train.loop import train

    path = train(args.config, resume=args.resume, max_steps=args.max_steps, device=args.device,
                 quiet=args.quiet)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    from mirnet.train.evaluate import evaluate

    result = evaluate(args.data, model=args.model, baseline=args.baseline, sigma=args.sigma,
                      pairs=args.pairs, y_channel=args.y, clip=args.clip, limit=args.limit,
                      backend=args.backend, threads=args.threads, holdout_every=args.holdout_every)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {result['data']} ({result['n']} images)\n"
              f"  protocol: {result['protocol']}\n"
              f"  PSNR {result['psnr']:.2f} dB   SSIM {result['ssim']:.4f}   "
              f"{result['seconds_per_image'] * 1000:.0f} ms/image")
    return 0


# ---------------------------------------------------------------------------- prune
def cmd_prune(args) -> int:
    from mirnet.optimize.prune import prune_file

    from . import artifact

    out = Path(args.output)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise InputError(f"--threads {args.threads}: must be an integer >= 1")
        torch.set_num_threads(args.threads)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    record = prune_file(
        args.model, out, data=args.data, macs_ratio=args.macs_ratio, params_ratio=args.params_ratio,
        finetune_steps=args.finetune_steps, eval_data=args.eval_data, sigma=args.sigma,
        eval_limit=args.eval_limit or None, eval_crop=args.eval_crop or None, importance=args.importance,
        global_pruning=args.global_pruning, round_to=args.round_to, lr=args.lr, batch=args.batch,
        patch=args.patch, ema_decay=args.ema, seed=args.seed, quiet=args.quiet, log=say)
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


def add_prune_parser(sub) -> None:
    p = sub.add_parser("prune", help="structured channel pruning, fine-tuning and PSNR check")
    p.add_argument("model", help="a .safetensors/.pth file or a bundled model name")
    ratio = p.add_mutually_exclusive_group(required=True)
    ratio.add_argument("--macs-ratio", type=float, metavar="R", help="remove this share of the MACs (0 < R < 1)")
    ratio.add_argument("--params-ratio", type=float, metavar="R",
                       help="remove this share of the parameters (0 < R < 1)")
    p.add_argument("--data", required=True, help="fine-tuning data: clean images (AWGN sigma 0-50) or "
                   "paired sub-folders (low/high, NOISY/GT, input/target, lq/gt)")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="N", help="fine-tuning steps (default 0)")
    p.add_argument("--eval-data", default=None, help="PSNR data (default: --data, first --eval-limit images)")
    p.add_argument("--sigma", type=float, default=25.0, help="AWGN sigma for clean eval data (default 25)")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path (manifest written beside it)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_prune)


# ---------------------------------------------------------------------------- build-engine
def cmd_build_engine(args) -> int:
    from mirnet.optimize.build_engine import prepare_build, run_build

    from . import artifact

    out = Path(args.output)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    request = prepare_build(
        args.onnx, out, fp16=args.fp16, profiles=args.profile, timing_cache=args.timing_cache,
        workspace_mb=args.workspace, dla_core=args.dla, version_compatible=args.version_compatible,
        strongly_typed=args.strongly_typed, min_psnr_db=args.min_psnr_db, gate_data=args.data,
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


def add_build_engine_parser(sub) -> None:
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
    p.add_argument("--min-psnr-db", type=float, metavar="X",
                   help="quality gate: fail when the engine's PSNR against the ONNX is below X dB (needs --data)")
    p.add_argument("--data", metavar="DIR", help="frames for the quality gate")
    p.add_argument("--device", type=int, default=0, help="GPU index (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--verbose", action="store_true", help="print TensorRT's verbose log")
    p.set_defaults(func=cmd_build_engine)


# ---------------------------------------------------------------------------- stream
def _stream_output_file(sink: str) -> Path | None:
    """The local video file a stream SINK names, if it names one (for the overwrite check)."""
    from .media import kind_of

    path = sink[len("file://"):] if sink.startswith("file://") else None if "://" in sink else sink
    return Path(path) if path and kind_of(path) == "video" else None


def cmd_stream(args) -> int:
    import logging
    import signal
    import threading

    from .stream import Reconnect, Stream

    out = _stream_output_file(args.sink)
    if out is not None and out.exists() and not args.force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    if out is not None and Path(args.source).exists() and out.resolve() == Path(args.source).resolve():
        raise InputError(f"{out}: the output would overwrite the source; choose another SINK")
    logger = logging.getLogger("mirnet.stream")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        lead = "\n" if sys.stderr.isatty() and not args.quiet else ""  # off the live status line
        handler.setFormatter(logging.Formatter(lead + "mirnet stream: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    stream = Stream(args.source, args.sink, model=args.model, backend=args.backend, threads=args.threads,
                    tile=args.tile, policy=args.policy, batch=args.batch, side_by_side=args.side_by_side,
                    max_frames=args.max_frames, stats_json=args.stats_json, stats_interval=args.stats_interval,
                    prometheus=args.prometheus, status=not args.quiet, fps=args.fps,
                    reconnect=Reconnect(max_attempts=args.reconnect_attempts or None))
    caught: list[int] = []

    def on_signal(signum, _frame):  # first: finish the frames in flight; second: stop at once
        caught.append(signum)
        stream.mark_interrupted()
        stream.stop(drain=len(caught) == 1)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = stream.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.quiet:
        g = stats["glass_to_glass"]
        print(f"mirnet stream: {stats['state']}: wrote {stats['frames']} frames to {stats['sink']} "
              f"({stats['fps']:.1f} fps, glass-to-glass p50 {g['p50_ms'] or 0:.0f} ms, dropped {stats['dropped']}, "
              f"reconnects {stats['reconnects']})", file=sys.stderr)
    return 128 + caught[0] if caught else 0


def add_stream_parser(sub) -> None:
    p = sub.add_parser("stream", help="restore a live or recorded stream in real time",
                       description="Restore frames from SOURCE to SINK through an overlapped pipeline. "
                       "SOURCE: video file, image folder, camera index, v4l2:///dev/videoN, rtsp://, "
                       "http(s):// (MJPEG), gst://PIPELINE, csi://N. SINK: video file, folder, "
                       "display://, rtsp://, rtp://host:port, null://. Ctrl-C (SIGINT) or SIGTERM "
                       "finishes the frames in flight and closes the output (a playable file); a "
                       "second signal stops at once.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("sink", metavar="SINK")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled name or .onnx/.safetensors/.pth "
                   f"(default {DEFAULT_MODEL})")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "torch"))
    p.add_argument("--threads", type=int, default=None, help="inference threads (default 1 for ORT)")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="tile size (default: automatic, 0: never)")
    p.add_argument("--policy", choices=("latest", "block"), default=None,
                   help="latest: drop stale frames to stay real time; block: lose nothing "
                        "(default: latest for live sources, block for files and folders)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="frames per inference call (default 1)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after reading N frames")
    p.add_argument("--side-by-side", action="store_true", help="write input | output side by side")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the output (default: the source's)")
    p.add_argument("--stats-json", default=None, metavar="FILE",
                   help="write statistics as JSON, periodically and at the end")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often --stats-json is rewritten (default 1)")
    p.add_argument("--prometheus", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics while running")
    p.add_argument("--reconnect-attempts", type=int, default=10, metavar="N",
                   help="failed reconnections in a row before a live source gives up (default 10, 0: never)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line or summary")
    p.set_defaults(func=cmd_stream)


# ---------------------------------------------------------------------------- quantize / gate
_GATE_MIN_PSNR_DB = 35.0  # mirnet.optimize.gate.DEFAULT_MIN_PSNR_DB (not imported: keeps `mirnet` startup light)


def _print_gate(record: dict, *, top: int = 10) -> None:
    from mirnet.optimize.gate import GateResult

    print(GateResult(**record).summary(top=top))


def cmd_quantize(args) -> int:
    from mirnet.optimize.quantize import quantize

    from . import artifact
    from .errors import QualityGateError

    try:
        result = quantize(
            args.model, args.output, target=args.target, calib=args.calib, method=args.method,
            calib_images=args.calib_images, calib_size=args.calib_size, calib_sigma=args.calib_sigma,
            qat_steps=args.qat_steps, data=args.data, qat_lr=args.qat_lr, qat_batch=args.qat_batch,
            exclude=args.exclude, min_psnr_db=None if args.no_gate else args.min_psnr_db,
            gate_data=args.gate_data, gate_limit=args.gate_limit or None, quantizer=args.quantizer,
            percentile=args.percentile, force=args.force, seed=args.seed)
    except QualityGateError as exc:
        if exc.result:
            _print_gate(exc.result)
        raise
    m = result.manifest
    q = m["quantization"]
    how = q.get("path") or f"onnxruntime quantize_static ({q['format']}, pre-process {q['pre_process']})"
    print(f"wrote {result.path} (+ {artifact.sidecar_path(result.path).name}): {m['precision']} for --target "
          f"{q['target']}, {how}, calibration {m['calibration']['method']} on {m['calibration']['images']} crops "
          f"of {m['calibration']['size']} px")
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


def add_quantize_parser(sub) -> None:
    p = sub.add_parser("quantize", help="INT8 quantization (TensorRT Q/DQ or ONNX Runtime CPU) + quality gate")
    p.add_argument("model", help="FP32 weights: a .safetensors/.pth file or a bundled model name")
    p.add_argument("--target", required=True, choices=("tensorrt", "cpu"),
                   help="tensorrt: explicit Q/DQ ONNX (ModelOpt) for TensorRT; cpu: an ONNX ONNX Runtime runs "
                   "with integer kernels")
    p.add_argument("--calib", required=True, metavar="DIR", help="calibration images (a folder)")
    p.add_argument("--method", default="max", choices=("max", "entropy", "percentile"),
                   help="activation range calibration (default max)")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile for --method percentile")
    p.add_argument("--calib-images", type=int, default=32, metavar="N", help="calibration crops (default 32)")
    p.add_argument("--calib-size", type=int, default=128, metavar="S", help="crop size (default 128, rounded "
                   "up to the model's pad multiple)")
    p.add_argument("--calib-sigma", type=float, default=None, metavar="S",
                   help="add AWGN sigma S (0-255) to calibration crops and gate frames (denoisers)")
    p.add_argument("--qat-steps", type=int, default=0, metavar="N", help="QAT fine-tuning steps (tensorrt)")
    p.add_argument("--data", metavar="DIR", help="clean training images for QAT")
    p.add_argument("--qat-lr", type=float, default=1e-5, help="QAT AdamW learning rate (default 1e-5)")
    p.add_argument("--qat-batch", type=int, default=4, help="QAT batch (default 4)")
    p.add_argument("--exclude", action="append", default=None, metavar="LAYERS",
                   help="comma-separated module paths, globs or ONNX node names kept in float (as `mirnet gate` "
                   "suggests); repeatable")
    p.add_argument("--quantizer", default="auto", choices=("auto", "modelopt", "torch"),
                   help="tensorrt: ModelOpt, PyTorch fake-quant, or ModelOpt falling back to PyTorch (default)")
    p.add_argument("--min-psnr-db", type=float, default=_GATE_MIN_PSNR_DB, metavar="X",
                   help=f"quality gate: INT8 vs FP32 output PSNR threshold (default {_GATE_MIN_PSNR_DB:g})")
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate")
    p.add_argument("--gate-data", metavar="DIR", help="frames for the gate (default: --calib)")
    p.add_argument("--gate-limit", type=int, default=8, metavar="N", help="gate on N frames (0: all; default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="output .onnx (manifest beside it)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_quantize)


def cmd_gate(args) -> int:
    from mirnet.optimize.gate import run_gate

    from .errors import QualityGateError

    result = run_gate(args.artifact, args.reference, args.data, min_psnr_db=args.min_psnr_db, sigma=args.sigma,
                      limit=args.limit, crop=args.crop, layers="never" if args.top == 0 else "always",
                      threads=args.threads, check=False)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary(top=args.top))
    if not result.passed:
        raise QualityGateError(f"quality gate failed: output PSNR {result.psnr_db:.2f} dB < {args.min_psnr_db:g} dB",
                               result=result.to_dict())
    return 0


def add_gate_parser(sub) -> None:
    p = sub.add_parser("gate", help="quality gate: compare an optimised artifact with its FP32 model, "
                       "per-layer error report")
    p.add_argument("artifact", help="the optimised artifact (.onnx, .safetensors, .engine)")
    p.add_argument("--reference", required=True, help="the FP32 model: weights, bundled name or FP32 .onnx")
    p.add_argument("--data", required=True, metavar="DIR", help="frames (a folder of images)")
    p.add_argument("--min-psnr-db", type=float, default=_GATE_MIN_PSNR_DB, metavar="X",
                   help=f"fail below this output PSNR vs the reference (default {_GATE_MIN_PSNR_DB:g})")
    p.add_argument("--sigma", type=float, default=None, help="add AWGN sigma (0-255) to the frames; also "
                   "scores both outputs against the clean frames")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N frames")
    p.add_argument("--crop", type=int, default=None, metavar="N", help="centre crop frames to N x N")
    p.add_argument("--top", type=int, default=10, metavar="N", help="list the N worst layers (0: no layer report)")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_gate)


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirnet", description="MIRNet Edge: image restoration from "
                                     "training to real-time camera streams.")
    parser.add_argument("--version", action="version", version=f"mirnet-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("restore", help="restore images, image folders and video files")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled name or .onnx/.safetensors/.pth "
                   f"(default {DEFAULT_MODEL})")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "torch"))
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="tile size in pixels (default: automatic, 0: never tile)")
    p.add_argument("--tile-overlap", type=int, default=32, metavar="N",
                   help="overlap between tiles in pixels, blended with feathering (default 32)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default 1 for ORT)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("info", help="print an artifact's manifest")
    p.add_argument("artifact", help="a .safetensors, .onnx or .engine file, or a bundled model name")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("variants", help="list the named network configurations")
    p.add_argument("--macs", action="store_true", help="also count parameters and MACs (needs torch)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("bench", help="latency, throughput, memory and quality side by side")
    p.add_argument("models", nargs="*", metavar="MODEL", help="bundled names, .safetensors, .onnx or .engine")
    p.add_argument("--sizes", default="256,640x360,1280x720,1920x1080", help="N or WxH, comma-separated")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--baselines", default="nlm,mirnet-v2-full",
                   help="comma-separated: nlm (OpenCV fastNlMeansDenoisingColored), mirnet-v2-full "
                        "(official-size MIRNet-v2 in eager PyTorch); '' for none")
    p.add_argument("--quality-data", default=None, help="clean images for PSNR/SSIM (AWGN --sigma)")
    p.add_argument("--sigma", type=float, default=25)
    p.add_argument("--quality-limit", type=int, default=8)
    p.add_argument("--min-seconds", type=float, default=2.0, help="minimum timed seconds per row")
    p.add_argument("--json", default=None, help="output JSON (default benchmarks/results/<machine>/bench.json)")
    p.add_argument("--readme", default=None, help="also refresh the table between the bench markers in this file")
    p.add_argument("--render", default=None, metavar="JSON", help="only re-render tables and plots from JSON")
    p.add_argument("--micro", action="store_true", help="pre/post kernels (numpy vs C++ vs CUDA) at 1080p and "
                   "stream pipeline efficiency (end-to-end vs infer-only fps) on the first MODEL")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="train or fine-tune a model from a YAML config")
    p.add_argument("--config", required=True, help="training config (.yaml), e.g. train/configs/denoise-lite.yaml")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="PSNR/SSIM of a model or a classical baseline on a folder")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="bundled name or .onnx/.safetensors/.pth")
    who.add_argument("--baseline", choices=("nlm",), help="OpenCV fastNlMeansDenoisingColored")
    p.add_argument("--data", required=True, help="clean images (with --sigma) or a folder of pairs")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--sigma", type=float, help="AWGN sigma in 0-255 units (benchmark protocol)")
    how.add_argument("--pairs", action="store_true", help="DATA holds low/high, NOISY/GT, input/target "
                     "or lq/gt sub-folders")
    p.add_argument("--y", action="store_true", help="PSNR/SSIM on the Y channel (BT.601)")
    p.add_argument("--clip", action="store_true", help="clip and round the noisy input to uint8 levels")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--holdout-every", type=int, default=0, metavar="K",
                   help="with --pairs: only every K-th pair (the ones training with holdout_every K left out)")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "torch"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export weights to a deployable format")
    export_sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = export_sub.add_parser("onnx", help="ONNX with dynamic batch/H/W, checked against PyTorch")
    e.add_argument("model", help="a .safetensors/.pth file or a bundled model name")
    e.add_argument("-o", "--output", required=True, help="output .onnx path")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--force", action="store_true", help="overwrite an existing output")
    e.set_defaults(func=cmd_export_onnx)
    add_prune_parser(sub)
    add_build_engine_parser(sub)
    add_stream_parser(sub)
    add_quantize_parser(sub)
    add_gate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MirnetError as exc:
        print(f"mirnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mirnet: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    sys.exit(main())
