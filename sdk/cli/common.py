"""What every command module shares: the progress bar, option types that refuse bad values as
usage errors (exit 2), the ``--max-pixels`` option and the SIGINT/SIGTERM handling."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator

from ..media import MAX_PIXELS_ENV


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr that adapts to the terminal width."""
    from tqdm import tqdm

    return tqdm(iterable, dynamic_ncols=True, **kwargs)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= 1")
    return value


def _finite(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number {'>=' if allow_zero else '>'} 0")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite(text, allow_zero=False)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite(text, allow_zero=True)


def add_gray_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gray-model", default="auto", type=lambda v: None if v == "none" else v, metavar="MODEL",
                        help="what restores gray frames (1 channel, or 3 equal ones): auto (a bundled model's gray "
                             "specialist, e.g. denoise-lite-gray), none (the model itself, as colour) or a "
                             "1-channel model file (default auto)")


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                        help=f"refuse images of more than N pixels, from their header, before decoding "
                             f"(default: ${MAX_PIXELS_ENV}, else 67108864 = 8192 x 8192)")


@contextlib.contextmanager
def max_pixels(value: int | None) -> Iterator[None]:
    """The pixel limit of every image read inside the block (``--max-pixels``, through the
    environment so that reader threads see it too); the environment is restored afterwards."""
    if value is None:
        yield
        return
    previous = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(value)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous


@contextlib.contextmanager
def on_signals(handler: Callable[[int, int], None]) -> Iterator[list[int]]:
    """Inside the block, SIGINT and SIGTERM (what systemd, docker stop and Kubernetes send) call
    ``handler(signum, count)`` (``count``: signals caught so far, 1 for the first). Yields the list
    of signals caught, for the exit status ``128 + signum``. Handlers can only be installed in the
    main thread; elsewhere the block runs under the current ones."""
    caught: list[int] = []

    def on_signal(signum, _frame):
        caught.append(signum)
        handler(signum, len(caught))

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
