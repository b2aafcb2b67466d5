"""``mirnet restore``: images, image folders and video files."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError, OutputError
from ..zoo import DEFAULT_MODEL
from .common import add_gray_model, add_max_pixels, max_pixels, positive_int, progress


def add_parser(sub) -> None:
    p = sub.add_parser("restore", help="restore images, image folders and video files")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled name or .onnx/.xml/.safetensors/.pth "
                   f"(default {DEFAULT_MODEL})")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "openvino", "torch"))
    add_gray_model(p)
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="tile size in pixels (default: automatic, 0: never tile)")
    p.add_argument("--tile-overlap", type=int, default=32, metavar="N",
                   help="overlap between tiles in pixels, blended with feathering (default 32)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="inference threads (default 1 for ORT and OpenVINO)")
    add_max_pixels(p)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    """Restore every job it can. A file that cannot be used (unreadable, over the pixel limit, an
    existing output) is named and skipped, a video shorter than its container declares is written
    and named; a failed write (a full disk) stops the run. Exit status: 1 after a failed write,
    else that of the first problem (5: a refused input, 1: an incomplete video), else 0."""
    from ..batch import output_folder, plan_restore, restore_file
    from ..restorer import Restorer

    jobs, problems = plan_restore(args.inputs, Path(args.output), force=args.force)
    for problem in problems:
        print(f"mirnet restore: {problem}", file=sys.stderr)
    if not jobs:
        print("mirnet restore: nothing to do", file=sys.stderr)
        return InputError.exit_code
    outdir = output_folder(args.output)
    codes = [InputError.exit_code] * len(problems)
    restored = incomplete = 0
    stopped: OutputError | None = None
    with max_pixels(args.max_pixels), Restorer(args.model, backend=args.backend, threads=args.threads,
                                               tile=args.tile, tile_overlap=args.tile_overlap,
                                               gray_model=args.gray_model) as restorer:
        try:
            for job in progress(jobs, desc="restore", unit="file", disable=args.quiet):
                try:
                    with progress(desc=job.src.name, unit="frame", leave=False,
                                  disable=args.quiet or job.kind != "video") as bar:
                        def advance(done: int, total: int | None, bar=bar) -> None:
                            bar.total = total
                            bar.update(done - bar.n)

                        warning = restore_file(restorer, job, progress=advance)
                except InputError as exc:
                    codes.append(exc.exit_code)
                    print(f"mirnet restore: {exc}", file=sys.stderr)
                    continue
                except OutputError as exc:
                    stopped = exc
                    print(f"mirnet restore: {exc}", file=sys.stderr)
                    break
                restored += 1
                if warning:
                    incomplete += 1
                    codes.append(1)  # an incomplete output
                    print(f"mirnet restore: warning: {warning}", file=sys.stderr)
        finally:  # also when interrupted: what was restored is there
            failed = len(codes) - incomplete + (stopped is not None)
            print(f"restored {restored} file(s) into {outdir}" + (f"; {failed} failed" if failed else "")
                  + (f"; {incomplete} incomplete" if incomplete else "")
                  + ("; stopped at the first failed write" if stopped else ""), file=sys.stderr)
    if stopped is not None:
        return stopped.exit_code
    return codes[0] if codes else 0
