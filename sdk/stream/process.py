"""Stopping the helper processes (gst-launch-1.0, ffmpeg) that GStreamer sources and network sinks run."""
from __future__ import annotations

import subprocess

__all__ = ["stop_process"]


def stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    """Wait ``grace_s`` for ``proc`` to exit, then terminate it, then kill it."""
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
