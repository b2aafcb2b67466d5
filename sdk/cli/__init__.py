"""The ``mirnet`` command: one module per command group. The only place that parses argv and maps
exceptions to exit codes (each :class:`~mirnet.sdk.errors.MirnetError` carries its code; SIGINT
130, SIGTERM 143, a closed stdout 141). Library logic lives in the packages the commands call."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from .. import __version__
from ..errors import MirnetError
from ..media import quiet_opencv
from . import bench, export, info, optimize, restore, serve, stream, train
from .common import on_signals

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
    serve.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is the README's table: 0, the code of the MirnetError
    that ended it, 128 + the signal for SIGINT (130) and SIGTERM (143), which both stop the
    command as Ctrl-C does (outputs finished or removed), 141 when the reader of stdout went away
    (``mirnet info X | head -2``). OpenCV's and FFmpeg's own log lines are silenced: ours say
    what went wrong."""
    args = build_parser().parse_args(argv)

    def interrupt(signum: int, count: int) -> None:
        raise KeyboardInterrupt

    quiet_opencv()
    with on_signals(interrupt) as caught:
        try:
            code = args.func(args)
            sys.stdout.flush()
            return code
        except MirnetError as exc:
            print(f"mirnet: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("mirnet: interrupted", file=sys.stderr)
            return 128 + (caught[0] if caught else signal.SIGINT)
        except BrokenPipeError:
            # nobody reads stdout any more: drop what is still buffered so that the interpreter's
            # last flush does not fail again, and exit as a process killed by SIGPIPE would
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 128 + signal.SIGPIPE


def run() -> None:
    sys.exit(main())
