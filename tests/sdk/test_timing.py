"""sdk.timing: the one timing loop and percentile definition (numpy's linear interpolation)."""
import time

import numpy as np
import pytest

from mirnet.sdk.timing import LatencySeries, percentiles_ms, time_fn


def test_time_fn_respects_minimum_runs_time_and_sync():
    calls, syncs = [], []
    result = time_fn(lambda: calls.append(time.sleep(0.002)), warmup=2, min_runs=4, min_seconds=0.03,
                     sync=lambda: syncs.append(1), cpu=True)
    assert result["runs"] >= 4 and len(calls) == result["runs"] + 2
    assert len(syncs) == len(calls)  # device work is waited for on every run, warm-up included
    assert result["mean_ms"] * result["runs"] >= 30 * 0.9  # timed for at least ~min_seconds
    assert 1.5 <= result["p50_ms"] <= result["p99_ms"]
    assert 0 <= result["cpu_p50_ms"] < result["p50_ms"]  # sleeping costs no CPU


def test_time_fn_max_runs_caps_a_fixed_count():
    result = time_fn(lambda: None, warmup=0, min_runs=7, max_runs=7, min_seconds=10.0)
    assert result["runs"] == 7


def test_percentiles_match_numpy():
    values = list(np.random.default_rng(0).random(37))
    got = percentiles_ms(values, (0, 50, 90, 99, 100))
    assert got == pytest.approx({f"p{q}_ms": np.percentile(values, q) for q in (0, 50, 90, 99, 100)})


def test_latency_series_keeps_totals_and_windowed_percentiles():
    series = LatencySeries(window=4)
    for s in (1.0, 0.001, 0.002, 0.003, 0.004):
        series.add(s)
    summary = series.summary()
    assert summary["count"] == 5 and summary["max_ms"] == 1000.0
    assert summary["mean_ms"] == pytest.approx(1010 / 5)
    assert summary["p50_ms"] == pytest.approx(2.5)  # the 1 s sample left the 4-sample window
    assert LatencySeries().summary()["p99_ms"] is None
