"""Stream statistics: per-stage and glass-to-glass latency percentiles, fps, drops, reconnects,
and the age of the frames the pipeline reads.

``frame_age``: how old each frame is when the pipeline reads it from the source, against the
capture clock. When the source timestamps its frames (``Frame.stream_time``: RTSP, V4L2 and
OpenCV-GStreamer captures), a frame's capture instant is placed on our clock through the stream's
own clock (anchored at the least-delayed frame seen), so frames that waited in a decoder's or a
socket's buffer show their whole wait (``clock: "stream"``); otherwise the age counts from when the
frame arrived (``clock: "arrival"``). Under policy ``block`` a live source that is faster than the
pipeline builds such a backlog: the age grows while nothing is dropped.

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

from ..errors import OutputError
from ..timing import QUANTILES, LatencySeries

__all__ = ["STAGES", "NETWORK", "StreamStats", "serve_prometheus", "SCHEMA"]

SCHEMA = "mirnet.stream.stats/1"
#: pipeline stages in order; ``capture`` is the source's grab/decode time of a frame
STAGES = ("capture", "preprocess", "infer", "postprocess", "sink")
#: with a remote backend (a server) ``infer`` is the server's time and this stage, reported once
#: it has samples, the rest of the round trip: transfer, (de)serialisation, the server's queue
NETWORK = "network"


class StreamStats:
    """Thread-safe counters of one stream run. ``info`` (source, sink, model, policy, ...) is
    copied into every snapshot; ``counters()`` of the source are read at snapshot time."""

    def __init__(self, *, window: int = 8192, info: dict | None = None):
        self.lock = threading.Lock()
        self.info = dict(info or {})
        self.window = window
        self.stages = {s: LatencySeries(window) for s in (*STAGES, NETWORK)}
        self.glass = LatencySeries(window)
        self.age = LatencySeries(window)
        self.age_last: float | None = None
        self.age_clock = "arrival"
        self._stream_offset: float | None = None
        self._last_stream_time: float | None = None
        self.frames_in = 0
        self.frames = 0
        self.dropped_queue = 0
        self.size_changes = 0
        self.batches = 0
        self.events: deque[str] = deque(maxlen=20)
        self.state = "starting"
        self.error: str | None = None
        self.source = None  # object with counters() -> dict
        self.sink = None  # object with counters() -> dict
        self.t_start = time.monotonic()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self._recent: deque[float] = deque(maxlen=64)

    # ------------------------------------------------------------ recording (pipeline threads)
    def frame_in(self, capture_time: float, read_time: float | None = None,
                 stream_time: float | None = None) -> None:
        """A frame read from the source; with ``read_time`` (``time.monotonic()``) its age is recorded
        (see the module docstring; ``stream_time`` is the frame's own timestamp, if any)."""
        with self.lock:
            self.frames_in += 1
            if self.t_first is None:
                self.t_first = capture_time
            if read_time is None:
                return
            origin = capture_time
            if stream_time is not None:
                if self._last_stream_time is None or stream_time < self._last_stream_time:
                    self._stream_offset = None  # the first frame, or the stream restarted (reconnection)
                offset = capture_time - stream_time
                self._stream_offset = offset if self._stream_offset is None else min(self._stream_offset, offset)
                self._last_stream_time = stream_time
                origin = self._stream_offset + stream_time
                self.age_clock = "stream"
            self.age_last = max(0.0, read_time - origin)
            self.age.add(self.age_last)

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

    def _frame_age(self) -> dict:
        last = None if self.age_last is None else round(self.age_last * 1e3, 3)
        return {**self.age.summary(), "last_ms": last, "clock": self.age_clock}

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
        sink = self.sink.counters() if self.sink is not None else {"repeated": 0, "skipped": 0}
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
                "frames_repeated": sink["repeated"],
                "frames_skipped": sink["skipped"],
                "size_changes": self.size_changes,
                "batches": self.batches,
                "stages": {s: series.summary() for s, series in self.stages.items() if s in STAGES or series.count},
                "glass_to_glass": self.glass.summary(),
                "frame_age": self._frame_age(),
                "percentile_window": self.window,
                "events": list(self.events),
                "error": self.error,
            }

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`snapshot` to ``path`` atomically; OutputError names the file and the cause."""
        from ..artifact import atomic_write_bytes

        try:
            atomic_write_bytes(path, (json.dumps(self.snapshot(), indent=2) + "\n").encode())
        except OSError as exc:
            raise OutputError(f"{os.fspath(path)}: cannot write the stream statistics ({exc.strerror or exc})") from exc

    def status_line(self) -> str:
        s = self.snapshot()
        g = s["glass_to_glass"]
        inf, net = s["stages"]["infer"], s["stages"].get(NETWORK)

        def ms(v):
            return "-" if v is None else f"{v:.0f}"
        line = (f"{s['frames']} frames  {s['fps_recent'] or s['fps']:.1f} fps  "
                f"glass-to-glass p50 {ms(g['p50_ms'])} p95 {ms(g['p95_ms'])} ms  "
                f"infer p50 {ms(inf['p50_ms'])} ms  "
                + (f"network p50 {ms(net['p50_ms'])} ms  " if net else "")
                + f"dropped {s['dropped']}")
        if s["frame_age"]["last_ms"] is not None:
            line += f"  frame age {ms(s['frame_age']['last_ms'])} ms"
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
        if s["frame_age"]["last_ms"] is not None:
            metric("frame_age_seconds", "gauge", "Age of the newest frame read from the source, against the "
                   "capture clock.", [("", s["frame_age"]["last_ms"] / 1e3)])
        with self.lock:
            series = [(st, ser) for st, ser in self.stages.items() if st in STAGES or ser.count]
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
