"""Timing and percentiles, one implementation for speed measurements and stream statistics.

:func:`time_fn` measures a callable (warm-up, minimum runs and run time, a ``sync`` before every
clock read for device work); :class:`LatencySeries` keeps a bounded window of durations seen by a
running pipeline. Both report percentiles as numpy's linear interpolation (``np.percentile``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["time_fn", "percentiles_ms", "LatencySeries", "QUANTILES"]

#: the percentiles stream statistics report
QUANTILES = (50, 95, 99)


def percentiles_ms(values_ms: Sequence[float], quantiles: Sequence[float]) -> dict[str, float]:
    """``{"p50_ms": ..., ...}`` of a non-empty sequence of milliseconds."""
    values = np.percentile(np.asarray(values_ms, dtype=np.float64), list(quantiles))
    return {f"p{q:g}_ms": float(v) for q, v in zip(quantiles, values)}


def time_fn(fn: Callable[[], object], *, warmup: int = 2, min_runs: int = 5, min_seconds: float = 2.0,
            max_runs: int = 1000, sync: Callable[[], object] | None = None,
            quantiles: Sequence[float] = (50, 90, 99), cpu: bool = False) -> dict:
    """Run ``fn`` ``warmup`` times, then until both ``min_runs`` and ``min_seconds`` are reached (at
    most ``max_runs``); ``sync`` (e.g. ``torch.cuda.synchronize``) runs inside the timed region.

    Returns wall-time percentiles ``p50_ms`` ... , ``mean_ms`` and ``runs``; with ``cpu`` also
    ``cpu_p50_ms``, the median process CPU time over all threads (shows the work when other
    processes share the cores)."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    wall: list[float] = []
    cpu_ms: list[float] = []
    start = time.perf_counter()
    while len(wall) < max_runs and (len(wall) < min_runs or time.perf_counter() - start < min_seconds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if sync:
            sync()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu_ms.append((time.process_time() - c0) * 1e3)
    out = {**percentiles_ms(wall, quantiles), "mean_ms": float(np.mean(wall)), "runs": len(wall)}
    if cpu:
        out["cpu_p50_ms"] = float(np.median(cpu_ms))
    return out


class LatencySeries:
    """Durations in seconds: count/mean/max over all, p50/p95/p99 over the last ``window``."""

    def __init__(self, window: int = 8192):
        self._ring = np.zeros(max(1, window), np.float64)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self._ring[self.count % len(self._ring)] = seconds
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def summary(self) -> dict:
        n = min(self.count, len(self._ring))
        out = {"count": self.count, "mean_ms": None, "max_ms": None}
        out.update({f"p{q}_ms": None for q in QUANTILES})
        if n:
            ps = percentiles_ms(self._ring[:n] * 1e3, QUANTILES)
            out.update({k: round(v, 3) for k, v in ps.items()})
            out["mean_ms"] = round(self.total / self.count * 1e3, 3)
            out["max_ms"] = round(self.max * 1e3, 3)
        return out

    def quantiles_s(self) -> list[float]:
        n = min(self.count, len(self._ring))
        return [float(v) for v in np.percentile(self._ring[:n], QUANTILES)] if n else [float("nan")] * 3
