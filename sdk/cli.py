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
