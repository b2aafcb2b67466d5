"""The Stream pipeline from Python: policies and drops, batching, size changes, side by side,
live HTTP MJPEG with reconnection, statistics (JSON, status line, Prometheus), errors, a soak."""
from __future__ import annotations

import io
import json
import os
import logging
import threading
import time
import urllib.request

import numpy as np
import pytest
from streamkit import IdentityBackend, count_frames, frame_image, write_video

from mirnet.sdk import ConfigError, InputError, Restorer, SourceError, Stream
from mirnet.sdk.stream import Reconnect
from mirnet.sdk.stream.stats import STAGES

cv2 = pytest.importorskip("cv2")


def collect():
    got = []

    def sink(image, frame):
        got.append((frame.index, image))
    return got, sink


def test_block_keeps_every_frame_in_order_and_exact():
    images = [frame_image(i) for i in range(12)]
    got, sink = collect()
    stats = Stream(iter(images), sink, model=IdentityBackend(), policy="block").run()
    assert [i for i, _ in got] == list(range(12))
    for (_, out), img in zip(got, images):
        np.testing.assert_array_equal(out, img)  # identity model: restore is exact
    assert stats["frames"] == stats["frames_in"] == 12 and stats["dropped"] == 0
    assert stats["state"] == "finished" and stats["policy"] == "block" and stats["backend"] == "identity"
    for stage in STAGES:
        assert stats["stages"][stage]["count"] == 12
        assert 0 <= stats["stages"][stage]["p50_ms"] <= stats["stages"][stage]["p99_ms"]
    g = stats["glass_to_glass"]
    assert g["count"] == 12 and 0 < g["p50_ms"] <= g["p95_ms"] <= g["p99_ms"] <= g["max_ms"]


def test_latest_drops_with_a_slow_model_and_block_does_not():
    n = 40
    slow = IdentityBackend(delay=0.02)
    got, sink = collect()
    latest = Stream((frame_image(i) for i in range(n)), sink, model=slow, policy="latest").run()
    assert latest["dropped"] > 0 and latest["dropped_by"]["pipeline"] == latest["dropped"]
    assert latest["frames"] + latest["dropped"] == latest["frames_in"] == n
    assert latest["frames"] == len(got) < n
    indices = [i for i, _ in got]
    assert indices == sorted(indices) and indices[-1] == n - 1  # the newest frame is never the one dropped

    got, sink = collect()
    block = Stream((frame_image(i) for i in range(n)), sink, model=IdentityBackend(delay=0.02), policy="block").run()
    assert block["dropped"] == 0 and block["frames"] == n == len(got)


def test_batching_groups_frames_and_splits_at_size_changes(caplog):
    backend = IdentityBackend()
    images = [frame_image(i) for i in range(6)] + [frame_image(i, 20, 24) for i in range(6, 9)]
    got, sink = collect()
    with caplog.at_level(logging.WARNING, logger="mirnet.stream"):
        stats = Stream(iter(images), sink, model=backend, policy="block", batch=4).run()
    assert backend.batches == [4, 2, 3]  # a batch never mixes sizes
    assert stats["frames"] == 9 and stats["batches"] == 3 and stats["size_changes"] == 1
    assert [img.shape for _, img in got] == [(32, 48, 3)] * 6 + [(20, 24, 3)] * 3
    msg = "frame 6: input changed from 48x32 BGR uint8 to 24x20 BGR uint8; re-initialising the pipeline"
    assert msg in caplog.text and any(msg in e for e in stats["events"])


def test_size_and_format_change_from_a_folder_into_a_video(tmp_path, caplog):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames_dir / f"a{i}.png"), frame_image(i))
    for i in range(3, 5):
        cv2.imwrite(str(frames_dir / f"b{i}.png"), cv2.cvtColor(frame_image(i, 40, 24), cv2.COLOR_BGR2GRAY))
    out = tmp_path / "out.avi"
    with caplog.at_level(logging.WARNING, logger="mirnet.stream"):
        stats = Stream(frames_dir, out, model=IdentityBackend()).run()
    assert stats["policy"] == "block" and stats["frames"] == 5 and stats["size_changes"] == 1
    assert "input changed from 48x32 BGR uint8 to 24x40 gray uint8" in caplog.text
    assert "frame 3 is 24x40 but this output keeps one size, 48x32" in caplog.text
    assert count_frames(out) == 5


def test_side_by_side(tmp_path):
    got, sink = collect()
    images = [frame_image(i) for i in range(3)]
    Stream(iter(images), sink, model=IdentityBackend(), side_by_side=True).run()
    for (_, out), img in zip(got, images):
        assert out.shape == (32, 96, 3)
        np.testing.assert_array_equal(out[:, :48], img)


def test_max_frames_and_real_model(tiny_onnx, tmp_path):
    video = write_video(tmp_path / "in.avi", 10)
    got, sink = collect()
    with Restorer(tiny_onnx) as restorer:
        stats = Stream(video, sink, model=restorer, max_frames=4).run()
        want = restorer.restore(cv2.VideoCapture(str(video)).read()[1])
    assert stats["frames"] == 4 and stats["frames_in"] == 4
    assert (stats["backend"], stats["precision"]) == (restorer.backend.name, restorer.backend.precision)
    np.testing.assert_array_equal(got[0][1], want)  # same numbers as Restorer.restore


def test_http_mjpeg_live_latest_with_reconnect(mjpeg_server, watchdog):
    """A live source on loopback, policy latest by default; the server drops out and comes back:
    the reconnection is counted and frames continue."""
    server = mjpeg_server(fps=60, content_length=False)
    seen = []
    state = {"dropped_at": None}

    def outage():
        server.stop()
        time.sleep(0.3)
        server.start()

    def sink(image, frame):
        seen.append(frame.index)
        if len(seen) == 10:
            state["dropped_at"] = len(seen)
            threading.Thread(target=outage, daemon=True).start()
        if stream.stats()["reconnects"] >= 1 and len(seen) >= state["dropped_at"] + 10:
            stream.stop()

    stream = Stream(server.url, sink, model=IdentityBackend(delay=0.005),
                    reconnect=Reconnect(initial_s=0.05, factor=2, max_delay_s=0.2, max_attempts=50))
    watchdog(stream, 20)
    stats = stream.run()
    assert stats["policy"] == "latest" and stats["state"] == "finished"
    assert stats["reconnects"] == 1 and stats["reconnect_attempts"] >= 1
    assert len(seen) >= 20 and server.connections == 2
    assert seen == sorted(seen)
    assert stats["glass_to_glass"]["p50_ms"] is not None


def test_live_source_that_gives_up_raises_and_keeps_the_output(mjpeg_server, tmp_path, watchdog):
    server = mjpeg_server(fps=100)
    out = tmp_path / "out.avi"
    n = []

    def stop_server(image, frame):
        n.append(1)
        if len(n) == 5:
            threading.Thread(target=server.stop, daemon=True).start()

    from mirnet.sdk.stream.sinks import VideoFileSink

    class Both(VideoFileSink):
        def write(self, image, frame):
            super().write(image, frame)
            stop_server(image, frame)

    stream = Stream(server.url, Both(out), model=IdentityBackend(),
                    reconnect=Reconnect(initial_s=0.01, max_delay_s=0.02, max_attempts=2))
    watchdog(stream, 20)
    with pytest.raises(SourceError, match="gave up after 2 reconnection attempt"):
        stream.run()
    stats = stream.stats()
    assert stats["state"] == "failed" and "gave up" in stats["error"] and stats["frames"] >= 5
    # real time: a 100 fps source into a 25 fps file skips frames whose slot is taken, repeats over gaps
    assert out.is_file() and count_frames(out) == stats["frames"] - stats["frames_skipped"] + stats["frames_repeated"]


def test_source_error_mid_stream_finalises_output(tmp_path):
    def frames():
        for i in range(4):
            yield frame_image(i)
        raise SourceError("camera unplugged")

    out = tmp_path / "out.avi"
    with pytest.raises(SourceError, match="camera unplugged"):
        Stream(frames(), out, model=IdentityBackend()).run()
    assert count_frames(out) == 4


def test_stats_json_status_line_and_prometheus(tmp_path):
    stats_path = tmp_path / "stats.json"
    status = io.StringIO()
    status.isatty = lambda: True  # the live \r line
    scraped = {}

    def sink(image, frame):
        if frame.index == 5:
            url = f"http://127.0.0.1:{stream.prometheus_port}/metrics"
            scraped["text"] = urllib.request.urlopen(url, timeout=5).read().decode()
            assert json.loads(stats_path.read_text())["state"] == "running"  # written periodically

    stream = Stream((frame_image(i) for i in range(10)), sink, model=IdentityBackend(), stats_json=stats_path,
                    stats_interval=0.001, prometheus=0, status=status)
    stats = stream.run()
    saved = json.loads(stats_path.read_text())
    assert saved["state"] == "finished" and saved["frames"] == 10 == stats["frames"]
    assert saved["schema"] == "mirnet.stream.stats/1"
    assert set(saved["stages"]) == set(STAGES) and {"p50_ms", "p95_ms", "p99_ms"} <= set(saved["glass_to_glass"])
    text = scraped["text"]
    assert "# TYPE mirnet_stream_frames_total counter" in text
    assert 'mirnet_stream_stage_latency_seconds{stage="infer",quantile="0.99"}' in text
    assert "mirnet_stream_glass_to_glass_seconds_count 5\n" in text  # frames 0-4 written when 5 is
    assert "mirnet_stream_dropped_frames_total" in text and "mirnet_stream_reconnects_total 0" in text
    line = status.getvalue()
    assert line.startswith("\r") and "10 frames" in line and line.endswith("\n")
    with pytest.raises(OSError):  # the endpoint is gone after run()
        urllib.request.urlopen(f"http://127.0.0.1:{stream.prometheus_port}/metrics", timeout=2)


def test_argument_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"policy='fast': valid policies are \('latest', 'block'\)"):
        Stream("in.mp4", None, policy="fast")
    with pytest.raises(ConfigError, match="batch=0"):
        Stream("in.mp4", None, batch=0)
    stream = Stream(iter([frame_image(0)]), None, model=IdentityBackend())
    stream.run()
    with pytest.raises(ConfigError, match="runs once"):
        stream.run()
    with pytest.raises(SourceError, match="no such file"):
        Stream(tmp_path / "missing.mp4", None, model=IdentityBackend()).run()


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_soak_5000_frames_memory_flat():
    """5,000 frames of 32x32 through every stage: resident memory grows < 5% from frame 1000 to 5000."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc/self/statm (Linux)")
    rss = {}
    base = frame_image(0, 32, 32)

    def frames():
        for i in range(5000):
            img = base.copy()
            img[0, 0] = i % 256
            yield img

    def sink(image, frame):
        if frame.index in (999, 4999):
            rss[frame.index] = rss_bytes()

    t0 = time.monotonic()
    stats = Stream(frames(), sink, model=IdentityBackend(), policy="block", batch=1).run()
    elapsed = time.monotonic() - t0
    assert stats["frames"] == 5000 and stats["dropped"] == 0
    growth = (rss[4999] - rss[999]) / rss[999]
    assert growth < 0.05, f"RSS grew {growth:.1%} between frame 1000 and 5000 ({rss})"
    # and in absolute terms: keeping every frame's tensors would be ~80 MB here
    assert rss[4999] - rss[999] < 16 << 20, f"RSS grew {(rss[4999] - rss[999]) >> 20} MB"
    print(f"soak: 5000 frames in {elapsed:.1f} s ({5000 / elapsed:.0f} fps), RSS growth {growth:+.2%}")


def test_restorer_prepare_finish_equal_restore():
    """The public split the pipeline runs in separate threads gives restore's numbers."""
    r = Restorer(IdentityBackend())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (21, 30, 3), dtype=np.uint8),
              rng.integers(0, 65536, (9, 10), dtype=np.uint16),
              rng.integers(0, 256, (8, 11, 4), dtype=np.uint8)]
    for img in images:
        p = r.prepare(img)
        assert p.tensor.shape[0] == 1 and p.tensor.shape[2] % 4 == 0 and p.out_hw == img.shape[:2]
        out = r.finish(p, r.infer_tensor(p.tensor)[0])
        np.testing.assert_array_equal(out, r.restore(img))
    with pytest.raises(InputError, match="expected a numpy array, got list"):
        r.prepare([[1, 2]])
