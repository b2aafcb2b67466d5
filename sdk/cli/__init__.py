"""The ``mirnet`` command: one module per command group. The only place that parses argv and maps
exceptions to exit codes (each :class:`~mirnet.sdk.errors.MirnetError` carries its code; Ctrl-C is
130). Library logic lives in the packages the commands call."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import MirnetError
from . import bench, export, info, optimize, restore, stream, train

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirnet", description="MIRNet Edge: image restoration from "
                                     "training to real-time camera streams.")
    parser.add_argument("--version", action="version", version=f"mirnet-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    restore.add_parser(sub)
    info.add_parsers(sub)
    bench.add_parser(sub)
    train.add_parsers(sub)
    export.add_parser(sub)
    optimize.add_parsers(sub)
    stream.add_parser(sub)
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
