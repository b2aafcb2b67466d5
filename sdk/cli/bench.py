"""``mirnet bench``: latency, throughput, memory and quality side by side."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..camera import PRESETS
from ..zoo import DEFAULT_MODEL
from .common import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="latency, throughput, memory and quality side by side")
    p.add_argument("models", nargs="*", metavar="MODEL", help="bundled names, .safetensors, .onnx or .engine")
    p.add_argument("--sizes", default="256,640x360,1280x720,1920x1080", help="N or WxH, comma-separated")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=positive_int, default=1, help="inference threads (default 1)")
    p.add_argument("--baselines", default="nlm,mirnet-v2-full",
                   help="comma-separated: nlm (OpenCV fastNlMeansDenoisingColored), mirnet-v2-full "
                        "(official-size MIRNet-v2 in eager PyTorch); '' for none")
    p.add_argument("--quality-data", default=None, help="clean images for PSNR/SSIM (AWGN --sigma)")
    p.add_argument("--sigma", type=float, default=25)
    p.add_argument("--quality-limit", type=int, default=8)
    p.add_argument("--quality-protocols", default="", metavar="P1,P2",
                   help=f"also score each model on the quality data through these camera presets "
                        f"({', '.join(PRESETS)}); comma-separated")
    p.add_argument("--min-seconds", type=float, default=2.0, help="minimum timed seconds per row")
    p.add_argument("--json", default=None, help="output JSON (default benchmarks/results/<machine>/bench.json); "
                   "the table <stem>.md, the plots <stem>_*.png and the camera crops go beside it")
    p.add_argument("--readme", default=None, help="also refresh the table between the bench markers in this file")
    p.add_argument("--render", default=None, metavar="JSON", help="only re-render tables and plots from JSON")
    p.add_argument("--micro", action="store_true", help="pre/post kernels (numpy vs C++ vs CUDA) at 1080p and "
                   "stream pipeline efficiency (end-to-end vs infer-only fps) on the first MODEL")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from mirnet.benchmarks import report, suite
    from mirnet.benchmarks.harness import results_dir

    if args.render:
        for path in report.render(args.render, readme=args.readme):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if args.micro:
        micro = suite.run_micro(args.models[0] if args.models else DEFAULT_MODEL, threads=args.threads)
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

    out = Path(args.json) if args.json else results_dir() / "bench.json"
    result = suite.run(args.models, sizes=suite.parse_sizes(args.sizes), batch=args.batch,
                       threads=args.threads, baselines=baselines, quality_data=args.quality_data,
                       sigma=args.sigma, quality_limit=args.quality_limit, min_seconds=args.min_seconds,
                       quality_protocols=[p for p in args.quality_protocols.split(",") if p],
                       crops=out.with_suffix(""), progress=None if args.quiet else show)
    suite.save(result, out)
    for path in [out, *report.render(out, readme=args.readme), *result["crops"]]:
        print(f"wrote {path}", file=sys.stderr)
    return 0
