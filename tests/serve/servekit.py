"""Helpers for the serving tests: free loopback ports and a ``mirnet serve`` child process."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mirnet.benchmarks.serve import RUNNER, free_ports


def needs_serving() -> None:
    """Skip unless the `serve` extra (PyTriton and tritonclient) is installed."""
    pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed: pip install 'mirnet-edge[serve]'")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: pip install 'mirnet-edge[serve]'")


class ServerProcess:
    """``mirnet serve`` on 127.0.0.1 in its own session (so that a test can kill it and its
    tritonserver at once, as a crash would), its output in ``log``; ``tmp`` holds its workspace
    (short: Triton's Unix sockets live there)."""

    def __init__(self, args: list[str], tmp: Path, ports: list[int] | None = None):
        self.http, self.grpc, self.metrics = ports or free_ports()
        self.args, self.tmp = list(args), tmp
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def start(self, timeout: float = 90) -> "ServerProcess":
        env = dict(os.environ, TMPDIR=str(self.tmp), MIRNET_CACHE=str(self.tmp / "cache"))
        cmd = [sys.executable, "-c", RUNNER, "serve", *self.args, "--host", "127.0.0.1",
               "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mirnet serve exited with {self.proc.returncode}:\n{self.output()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"mirnet serve was not ready after {timeout} s:\n{self.output()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/models/mirnet/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metric(self, name: str) -> float:
        """The sum of a Triton metric's samples for model mirnet."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and 'model="mirnet"' in line)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM, or SIGKILL when that does not stop it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its tritonserver (a crash), then remove what they would have removed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        shm, folders = leftovers_of_group(self.proc.pid)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        for path in shm:
            path.unlink(missing_ok=True)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def leftovers_of_group(pgid: int) -> tuple[set[Path], set[Path]]:
    """What the processes of group ``pgid`` hold and clean up on a normal exit: the /dev/shm files
    they map (PyTriton's tensor store, Triton's Python backend) and the folders Triton copied the
    Python model into (``/tmp/folderXXXX``, the stub's first argument)."""
    shm: set[Path] = set()
    folders: set[Path] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:  # fields after ')': state ppid pgrp
                continue
            maps = (stat.parent / "maps").read_text().splitlines()
            args = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        shm.update(Path(line.split(None, 5)[5].removesuffix(" (deleted)")) for line in maps if " /dev/shm/" in line)
        folders.update(Path(arg).parents[1] for arg in args[1:2] if arg.endswith("/1/model.py")
                       and Path(arg).parents[1].name.startswith("folder"))
    return shm, folders
