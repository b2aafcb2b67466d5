"""Serving load test: N concurrent camera clients against one ``mirnet serve`` (Triton through
PyTriton, a child process on this machine), and the same N cameras on N separate local Restorers.

Each client is a thread that restores frames in a closed loop (the next frame as soon as the last
one is back) for ``seconds`` after a warm-up; the remote clients each hold their own
``Restorer("grpc://...")``. Reported per configuration: frames/s over all clients, per-request
p50/p99 latency, and for the server the mean batch size Triton formed and its mean queue time
(from its Prometheus metrics: ``nv_inference_count / nv_inference_exec_count``,
``nv_inference_queue_duration_us / nv_inference_request_success``). Results as JSON, a markdown
table and a plot under ``benchmarks/results/<machine>/``. A benchmark, not a test.

    python -m mirnet.benchmarks.serve [--model denoise-lite] [--clients 1,4,16] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from .harness import machine_info, results_dir
from .stream import synthetic_frames

RUNNER = "import sys; from mirnet.sdk.cli import main; sys.exit(main())"


def free_ports(n: int = 3) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _metrics(port: int) -> dict[str, float]:
    """Triton's counters for model ``mirnet``, summed over label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("nv_inference") and 'model="mirnet"' in line:
            name = line.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _closed_loop(make_restorer, clients: int, frame: np.ndarray, seconds: float, warmup: float) -> dict:
    """``clients`` threads, each with its own ``make_restorer()``, restoring ``frame`` back to back;
    frames/s over the timed window and per-request latency percentiles."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    window: dict[str, float] = {}

    def open_window() -> None:  # runs once, before the barrier lets every client go
        window["start"] = time.perf_counter() + warmup
        window["end"] = window["start"] + seconds

    barrier = threading.Barrier(clients + 1, action=open_window)

    def client(k: int) -> None:
        try:
            with make_restorer() as restorer:
                restorer.restore(frame)
                barrier.wait()
                while time.perf_counter() < window["end"]:
                    t0 = time.perf_counter()
                    restorer.restore(frame)
                    t1 = time.perf_counter()
                    if t0 >= window["start"]:
                        latencies[k].append(t1 - t0)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:  # a client failed before the start: its error is raised below
        pass
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    flat = np.array([v for lat in latencies for v in lat]) * 1e3
    return {"frames": int(flat.size), "fps": round(flat.size / seconds, 2),
            "p50_ms": round(float(np.percentile(flat, 50)), 1), "p99_ms": round(float(np.percentile(flat, 99)), 1),
            "per_client_fps": [round(len(lat) / seconds, 2) for lat in latencies]}


class _ServerProcess:
    def __init__(self, args: list[str]):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.tmp = Path(tempfile.mkdtemp(prefix="ms-"))
        cmd = [sys.executable, "-c", RUNNER, "serve", *args, "--host", "127.0.0.1", "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        self.log = open(self.tmp / "serve.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, TMPDIR=str(self.tmp)))

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/models/mirnet/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mirnet serve did not become ready:\n{(self.tmp / 'serve.log').read_text()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(model: str = "denoise-lite", clients=(1, 4, 16), size: tuple[int, int] = (360, 640), seconds: float = 10.0,
        warmup: float = 2.0, max_batch: int = 16, max_queue_delay_us: int = 2000, instances: int = 1,
        threads: int | None = None, progress=None) -> dict:
    """Measure every client count remotely and locally (see the module docstring); a JSON-able dict."""
    from mirnet.sdk import Restorer

    frame = next(synthetic_frames(1, size, seed=1))
    server_args = ["--model", str(model), "--max-batch", str(max_batch), "--max-queue-delay-us",
                   str(max_queue_delay_us), "--instances", str(instances)]
    if threads is not None:
        server_args += ["--threads", str(threads)]
    rows = []
    load = os.getloadavg()
    for n in clients:
        if progress:
            progress(f"local: {n} Restorer(s)")
        local = _closed_loop(lambda: Restorer(model, threads=threads), n, frame, seconds, warmup)
        rows.append({"clients": n, "mode": "local", **local})
        server = _ServerProcess(server_args)  # a fresh server for each count: no state carried over
        try:
            server.wait_ready()
            if progress:
                progress(f"server: {n} client(s)")
            before = _metrics(server.metrics)
            url = f"grpc://127.0.0.1:{server.grpc}?timeout=120"
            remote = _closed_loop(lambda: Restorer(url), n, frame, seconds, warmup)
            after = _metrics(server.metrics)
        finally:
            server.close()
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        execs, requests = delta.get("nv_inference_exec_count", 0), delta.get("nv_inference_request_success", 0)
        rows.append({"clients": n, "mode": "server", **remote,
                     "mean_batch": round(delta.get("nv_inference_count", 0) / execs, 2) if execs else None,
                     "mean_queue_ms": round(delta.get("nv_inference_queue_duration_us", 0) / requests / 1e3, 1)
                     if requests else None})
    return {"benchmark": "serve-load", "model": str(model), "size": list(size), "seconds": seconds,
            "server": {"max_batch": max_batch, "max_queue_delay_us": max_queue_delay_us, "instances": instances,
                       "threads": threads, "transport": "grpc, loopback"},
            "rows": rows, "loadavg_before": [round(v, 2) for v in load],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()], "machine": machine_info()}


def markdown(result: dict) -> str:
    m = result["machine"]
    h, w = result["size"]
    s = result["server"]
    lines = [f"Measured {m['date'][:10]} on {m['cpu']} ({m['cores']} cores): {result['model']} at {w}x{h}, "
             f"closed-loop clients for {result['seconds']:g} s each; server: max batch {s['max_batch']}, queue delay "
             f"{s['max_queue_delay_us']} us, {s['instances']} instance(s), {s['transport']}.", "",
             "| clients | local fps | local p50 ms | local p99 ms | server fps | server p50 ms | server p99 ms "
             "| mean batch | mean queue ms |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["clients"], r["mode"]): r for r in result["rows"]}
    for n in sorted({r["clients"] for r in result["rows"]}):
        lo, sv = by[(n, "local")], by[(n, "server")]
        lines.append(f"| {n} | {lo['fps']:.1f} | {lo['p50_ms']:.0f} | {lo['p99_ms']:.0f} | {sv['fps']:.1f} | "
                     f"{sv['p50_ms']:.0f} | {sv['p99_ms']:.0f} | {sv['mean_batch']} | {sv['mean_queue_ms']} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fps, ax_p99) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode, style in (("local", "o-"), ("server", "s-")):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        ax_fps.plot([r["clients"] for r in rows], [r["fps"] for r in rows], style, label=mode)
        ax_p99.plot([r["clients"] for r in rows], [r["p99_ms"] for r in rows], style, label=mode)
    counts = sorted({r["clients"] for r in result["rows"]})
    for ax, label in ((ax_fps, "frames/s (all clients)"), (ax_p99, "p99 latency per request (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel("concurrent cameras")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    h, w = result["size"]
    fig.suptitle(f"{result['model']} {w}x{h}: one server vs separate local Restorers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "serve.json", out_dir / "serve.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result))
    paths.append(plot(result, out_dir / "serve.png"))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mirnet.benchmarks.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="denoise-lite")
    p.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    p.add_argument("--size", default="640x360", help="WxH (default 640x360)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per configuration (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each (default 2)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="inference threads per Restorer and server instance")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/<machine>)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    result = run(args.model, clients=[int(c) for c in args.clients.split(",")], size=(h, w), seconds=args.seconds,
                 warmup=args.warmup, max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                 instances=args.instances, threads=args.threads,
                 progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    for path in save(result, Path(args.out) if args.out else results_dir()):
        print(f"wrote {path}", file=sys.stderr)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
