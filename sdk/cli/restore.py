"""``mirnet restore``: images, image folders and video files."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..zoo import DEFAULT_MODEL
from .common import progress


def add_parser(sub) -> None:
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
    p.set_defaults(func=run)


def run(args) -> int:
    from ..batch import plan_restore, restore_file
    from ..restorer import Restorer

    outdir = Path(args.output)
    jobs, problems = plan_restore(args.inputs, outdir, force=args.force)
    for problem in problems:
        print(f"mirnet restore: {problem}", file=sys.stderr)
    if not jobs:
        print("mirnet restore: nothing to do", file=sys.stderr)
        return 1
    failed = len(problems)
    with Restorer(args.model, backend=args.backend, threads=args.threads, tile=args.tile,
                  tile_overlap=args.tile_overlap) as restorer:
        for job in progress(jobs, desc="restore", unit="file", disable=args.quiet):
            try:
                with progress(desc=job.src.name, unit="frame", leave=False,
                              disable=args.quiet or job.kind != "video") as bar:
                    def advance(done: int, total: int | None, bar=bar) -> None:
                        bar.total = total
                        bar.update(done - bar.n)

                    restore_file(restorer, job, progress=advance)
            except (InputError, OSError) as exc:
                failed += 1
                print(f"mirnet restore: {exc}", file=sys.stderr)
    done = len(jobs) - (failed - len(problems))
    print(f"restored {done} file(s) into {outdir}" + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
