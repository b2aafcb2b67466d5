"""Fixtures for the stream tests; the helpers themselves live in streamkit.py."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("cv2")

from streamkit import MjpegServer  # noqa: E402


@pytest.fixture
def mjpeg_server():
    servers = []

    def make(**kwargs) -> MjpegServer:
        server = MjpegServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def watchdog():
    """``watchdog(stream, seconds)``: stop a stream that runs too long (a hung test fails, not hangs)."""
    timers = []

    def arm(stream, seconds: float = 20.0):
        timer = threading.Timer(seconds, lambda: stream.stop(drain=False))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    yield arm
    for timer in timers:
        timer.cancel()
