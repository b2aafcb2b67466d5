"""Stream statistics: per-stage and glass-to-glass latency percentiles, fps, drops, reconnects.

Memory is fixed: counts, sums and maxima cover the whole run; percentiles cover the last
``window`` samples of each series (a ring buffer). Exposed as a JSON-able dict
(:meth:`StreamStats.snapshot`), a one-line status (:meth:`StreamStats.status_line`), Prometheus
text (:meth:`StreamStats.prometheus`, served by :func:`serve_prometheus`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import deque

from ..timing import QUANTILES, LatencySeries

__all__ = ["STAGES", "StreamStats", "serve_prometheus", "SCHEMA"]

SCHEMA = "mirnet.stream.stats/1"
#: pipeline stages in order; ``capture`` is the source's grab/decode time of a frame
STAGES = ("capture", "preprocess", "infer", "postprocess", "sink")


class StreamStats:
    """Thread-safe counters of one stream run. ``info`` (source, sink, model, policy, ...) is
    copied into every snapshot; ``counters()`` of the source are read at snapshot time."""

    def __init__(self, *, window: int = 8192, info: dict | None = None):
        self.lock = threading.Lock()
        self.info = dict(info or {})
        self.window = window
        self.stages = {s: LatencySeries(window) for s in STAGES}
        self.glass = LatencySeries(window)
        self.frames_in = 0
        self.frames = 0
        self.dropped_queue = 0
        self.size_changes = 0
        self.batches = 0
        self.events: deque[str] = deque(maxlen=20)
        self.state = "starting"
        self.error: str | None = None
        self.source = None  # object with counters() -> dict
        self.t_start = time.monotonic()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self._recent: deque[float] = deque(maxlen=64)

    # ------------------------------------------------------------ recording (pipeline threads)
    def frame_in(self, capture_time: float) -> None:
        with self.lock:
            self.frames_in += 1
            if self.t_first is None:
                self.t_first = capture_time

    def drop(self, n: int = 1) -> None:
        with self.lock:
            self.dropped_queue += n

    def event(self, message: str) -> None:
        with self.lock:
            self.events.append(message)

    def record(self, timings: dict[str, float], capture_time: float, written: float) -> None:
        with self.lock:
            for stage, seconds in timings.items():
                self.stages[stage].add(seconds)
            self.glass.add(written - capture_time)
            self.frames += 1
            self.t_last = written
            self._recent.append(written)

    # ------------------------------------------------------------ reading
    def _source_counters(self) -> dict:
        src = self.source
        if src is None:
            return {"dropped": 0, "reconnects": 0, "reconnect_attempts": 0}
        return src.counters()

    def fps(self) -> float:
        if self.t_first is None or self.t_last is None or self.frames == 0:
            return 0.0
        span = self.t_last - self.t_first
        return self.frames / span if span > 0 else 0.0

    def fps_recent(self) -> float:
        r = self._recent
        if len(r) < 2 or r[-1] <= r[0]:
            return 0.0
        if time.monotonic() - r[-1] > 2.0:  # stalled: nothing written lately
            return 0.0
        return (len(r) - 1) / (r[-1] - r[0])

    def snapshot(self) -> dict:
        src = self._source_counters()
        with self.lock:
            return {
                "schema": SCHEMA,
                "state": self.state,
                **self.info,
                "elapsed_s": round(time.monotonic() - self.t_start, 3),
                "frames": self.frames,
                "frames_in": self.frames_in,
                "fps": round(self.fps(), 3),
                "fps_recent": round(self.fps_recent(), 3),
                "dropped": src["dropped"] + self.dropped_queue,
                "dropped_by": {"source": src["dropped"], "pipeline": self.dropped_queue},
                "reconnects": src["reconnects"],
                "reconnect_attempts": src["reconnect_attempts"],
                "size_changes": self.size_changes,
                "batches": self.batches,
                "stages": {s: series.summary() for s, series in self.stages.items()},
                "glass_to_glass": self.glass.summary(),
                "percentile_window": self.window,
                "events": list(self.events),
                "error": self.error,
            }

    def write_json(self, path: str | os.PathLike) -> None:
        from ..artifact import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(self.snapshot(), indent=2) + "\n").encode())

    def status_line(self) -> str:
        s = self.snapshot()
        g = s["glass_to_glass"]
        inf = s["stages"]["infer"]

        def ms(v):
            return "-" if v is None else f"{v:.0f}"
        line = (f"{s['frames']} frames  {s['fps_recent'] or s['fps']:.1f} fps  "
                f"glass-to-glass p50 {ms(g['p50_ms'])} p95 {ms(g['p95_ms'])} ms  "
                f"infer p50 {ms(inf['p50_ms'])} ms  dropped {s['dropped']}")
        if s["reconnects"] or s["reconnect_attempts"]:
            line += f"  reconnects {s['reconnects']}"
        return line

    def prometheus(self) -> str:
        """Prometheus text exposition (format 0.0.4) of the same counters."""
        s = self.snapshot()
        lines: list[str] = []

        def metric(name, kind, help_, samples):
            lines.append(f"# HELP mirnet_stream_{name} {help_}")
            lines.append(f"# TYPE mirnet_stream_{name} {kind}")
            for labels, value in samples:
                lines.append(f"mirnet_stream_{name}{labels} {value:.9g}" if isinstance(value, float)
                             else f"mirnet_stream_{name}{labels} {value}")

        metric("frames_total", "counter", "Frames written to the sink.", [("", s["frames"])])
        metric("frames_in_total", "counter", "Frames read from the source.", [("", s["frames_in"])])
        metric("dropped_frames_total", "counter", "Stale frames dropped (policy latest).",
               [(f'{{where="{k}"}}', v) for k, v in s["dropped_by"].items()])
        metric("reconnects_total", "counter", "Successful reconnections of the source.", [("", s["reconnects"])])
        metric("reconnect_attempts_total", "counter", "Reconnection attempts of the source.",
               [("", s["reconnect_attempts"])])
        metric("size_changes_total", "counter", "Input frame size or format changes.", [("", s["size_changes"])])
        metric("fps", "gauge", "Frames written per second (recent).", [("", float(s["fps_recent"]))])
        metric("up", "gauge", "1 while the stream runs.", [("", int(s["state"] == "running"))])
        with self.lock:
            series = [(st, self.stages[st]) for st in STAGES]
            stage_samples, g_samples = [], []
            for st, ser in series:
                for q, v in zip(QUANTILES, ser.quantiles_s()):
                    stage_samples.append((f'{{stage="{st}",quantile="{q / 100:g}"}}', v))
            sums = [(st, ser.total, ser.count) for st, ser in series]
            for q, v in zip(QUANTILES, self.glass.quantiles_s()):
                g_samples.append((f'{{quantile="{q / 100:g}"}}', v))
            g_sum, g_count = self.glass.total, self.glass.count
        lines.append("# HELP mirnet_stream_stage_latency_seconds Time a stage spent on a frame.")
        lines.append("# TYPE mirnet_stream_stage_latency_seconds summary")
        for labels, v in stage_samples:
            lines.append(f"mirnet_stream_stage_latency_seconds{labels} {v:.9g}")
        for st, total, count in sums:
            lines.append(f'mirnet_stream_stage_latency_seconds_sum{{stage="{st}"}} {total:.9g}')
            lines.append(f'mirnet_stream_stage_latency_seconds_count{{stage="{st}"}} {count}')
        lines.append("# HELP mirnet_stream_glass_to_glass_seconds Capture to written, per frame.")
        lines.append("# TYPE mirnet_stream_glass_to_glass_seconds summary")
        for labels, v in g_samples:
            lines.append(f"mirnet_stream_glass_to_glass_seconds{labels} {v:.9g}")
        lines.append(f"mirnet_stream_glass_to_glass_seconds_sum {g_sum:.9g}")
        lines.append(f"mirnet_stream_glass_to_glass_seconds_count {g_count}")
        return "\n".join(lines) + "\n"


def serve_prometheus(stats: StreamStats, port: int, host: str = "127.0.0.1"):
    """Serve ``stats.prometheus()`` at ``http://host:port/metrics`` from a daemon thread; port 0
    picks a free port (``server.server_address[1]``). Stop it with ``server.shutdown()``."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "try /metrics")
                return
            body = stats.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep stderr for the status line
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                     name="prometheus").start()
    return server
