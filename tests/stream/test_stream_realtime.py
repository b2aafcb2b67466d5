"""Live timing: a recording of a live source lasts as long as the scene did even when the real-time
policy drops most frames; under policy ``block`` the backlog a live source builds in its decoder
is measured (frame age against the capture clock) and warned about."""
from __future__ import annotations

import collections
import json
import logging
import threading
import time

import pytest
from streamkit import IdentityBackend, count_frames, frame_image

from mirnet.sdk import Stream
from mirnet.sdk.stream.sinks import VideoFileSink
from mirnet.sdk.stream.source import EndOfStream, LiveSource

cv2 = pytest.importorskip("cv2")


class CameraSource(LiveSource):
    """A live camera: ``n`` frames at ``fps`` in real time, timestamped by the camera's clock
    (``stream_time``). Frames wait in an unbounded ``backlog`` (a decoder's or socket's buffer)
    until grabbed: a reader slower than ``fps`` falls ever further behind, as with RTSP."""

    def __init__(self, n: int, fps: float, **kwargs):
        super().__init__("camera://test", **kwargs)
        self.n, self.fps = n, fps
        self.backlog: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._stamp: float | None = None

    def _connect(self) -> None:
        threading.Thread(target=self._produce, daemon=True).start()

    def _produce(self) -> None:
        start = time.monotonic()
        for i in range(self.n):
            time.sleep(max(0.0, start + i / self.fps - time.monotonic()))
            with self._ready:
                self.backlog.append((i, time.monotonic()))
                self._ready.notify()
        with self._ready:
            self.backlog.append(None)
            self._ready.notify()

    def _grab(self):
        with self._ready:
            self._ready.wait_for(lambda: self.backlog)
            item = self.backlog.popleft()
        if item is None:
            raise EndOfStream
        i, self._stamp = item
        return frame_image(i)

    def _stream_time(self) -> float | None:
        return self._stamp


def test_live_recording_lasts_as_long_as_the_scene(tmp_path):
    """2 s of a 25 fps camera through a model that manages about 8 fps (policy latest drops about 2
    frames in 3): the file plays for the scene's duration, not a third of it."""
    out = tmp_path / "out.avi"
    seen = []

    class Recording(VideoFileSink):
        def write(self, image, frame):
            seen.append(frame.capture_time)
            super().write(image, frame)

    sink = Recording(out)
    stats = Stream(CameraSource(50, 25.0), sink, model=IdentityBackend(delay=0.12), policy="latest").run()
    assert stats["dropped"] >= 20 and stats["frames_repeated"] >= 20
    scene = seen[-1] - seen[0] + 1 / 25
    assert count_frames(out) / 25 == pytest.approx(scene, rel=0.1)
    assert count_frames(out) == stats["frames"] - stats["frames_skipped"] + stats["frames_repeated"]


def test_block_on_a_live_source_shows_the_backlog_in_the_frame_age(tmp_path, caplog):
    """A 48 fps camera read by a model that manages about 10 fps under policy block: nothing is
    dropped and glass-to-glass stays flat, but the frames' age against the camera clock grows (the
    backlog in the decoder); the stream warns once at the start. Under latest the age stays small."""
    stats_json = tmp_path / "stats.json"
    status = []

    class Terminal:
        def write(self, text):
            status.append(text)

        def flush(self):
            pass

        def isatty(self):
            return True

    with caplog.at_level(logging.WARNING, logger="mirnet.stream"):
        block = Stream(CameraSource(48, 48.0), None, model=IdentityBackend(delay=0.1), policy="block",
                       stats_json=stats_json, status=Terminal()).run()
    warnings = [r for r in caplog.records if "policy block on a live source" in r.getMessage()]
    assert len(warnings) == 1 and "frame age" in warnings[0].getMessage()
    age = block["frame_age"]
    assert block["dropped"] == 0 and block["frames"] == 48 and age["clock"] == "stream" and age["count"] == 48
    assert age["last_ms"] > 2000 and age["max_ms"] >= age["last_ms"]  # ~3 s of backlog after 1 s of camera
    assert block["glass_to_glass"]["max_ms"] < age["last_ms"] / 2  # what the stats showed before: flat, small
    assert json.loads(stats_json.read_text())["frame_age"]["last_ms"] == age["last_ms"]
    assert any("frame age" in line for line in status)

    caplog.clear()
    latest = Stream(CameraSource(40, 40.0), None, model=IdentityBackend(delay=0.08), policy="latest").run()
    assert latest["dropped"] > 0 and latest["frame_age"]["max_ms"] < 400
    assert not [r for r in caplog.records if "policy block" in r.getMessage()]
