"""The one bounded queue (pipeline stages, live-source buffer): drop-oldest counting, blocking put,
get timeouts, abort, the end marker; and the live source's buffer built on it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mirnet.sdk import ConfigError, SourceError
from mirnet.sdk.stream.queue import EMPTY, END, BoundedQueue
from mirnet.sdk.stream.source import EndOfStream, LiveSource, Reconnect


def drain(q: BoundedQueue) -> list:
    items = []
    while (item := q.get(timeout=0)) is not EMPTY and item is not END:
        items.append(item)
    return items


def start(fn, *args) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------- the queue
def test_leaky_drops_the_oldest_and_counts():
    calls = []
    q = BoundedQueue(2, leaky=True, on_drop=lambda: calls.append(1))
    for i in range(5):
        q.put(i)  # never waits
    assert drain(q) == [3, 4]
    assert q.dropped == 3 and len(calls) == 3
    q.put(5)
    assert drain(q) == [5] and q.dropped == 3  # room: nothing dropped


def test_leaky_never_drops_the_end_marker():
    q = BoundedQueue(1, leaky=True)
    q.put(0)
    q.put(END)  # beyond maxsize: the end always goes in, without waiting
    assert q.get(timeout=0) == 0
    assert q.get(timeout=0) is END
    assert q.get(timeout=0) is END and q.get() is END  # it stays: every consumer sees the end
    q.abort.set()
    start(q.put, 1).join(2)  # full with END at the head: not dropped; aborted, so the item is discarded
    assert q.get(timeout=0) is END and q.dropped == 0


def test_block_put_waits_for_room_and_loses_nothing():
    q = BoundedQueue(1, leaky=False)
    q.put(0)
    t = start(q.put, 1)
    time.sleep(0.3)
    assert t.is_alive()  # full: the producer waits
    assert q.get(timeout=1) == 0
    t.join(2)
    assert not t.is_alive()
    assert q.get(timeout=1) == 1 and q.dropped == 0


def test_get_timeout_and_blocking_get():
    q = BoundedQueue(1, leaky=False)
    t0 = time.monotonic()
    assert q.get(timeout=0) is EMPTY
    assert time.monotonic() - t0 < 0.1
    t0 = time.monotonic()
    assert q.get(timeout=0.3) is EMPTY
    assert 0.25 <= time.monotonic() - t0 < 2
    threading.Timer(0.2, q.put, args=("late",)).start()
    assert q.get() == "late"  # no timeout: waits for the item


def test_abort_releases_a_blocked_put():
    abort = threading.Event()
    q = BoundedQueue(1, leaky=False, abort=abort)
    q.put(0)
    t = start(q.put, 1)
    time.sleep(0.2)
    assert t.is_alive()
    abort.set()
    t.join(2)
    assert not t.is_alive()  # gave up, discarding its item
    q.put(END)  # the end still goes in
    assert q.get(timeout=0) == 0 and q.get(timeout=0) is END


def test_maxsize_must_be_positive():
    with pytest.raises(ConfigError, match=r"maxsize=0: a queue must hold at least 1 item"):
        BoundedQueue(0, leaky=True)


# ---------------------------------------------------------------------------- a live source's buffer
class CountingSource(LiveSource):
    """A live source of ``n`` tiny frames as fast as the buffer takes them; ``fail`` raises a
    transport error after them instead of ending (with no reconnection allowed)."""

    def __init__(self, n: int, *, fail: bool = False, **kwargs):
        super().__init__("counting://", **kwargs)
        self.n, self.fail, self.made = n, fail, 0

    def _connect(self) -> None:
        if self.made:
            raise ConnectionError("gone")

    def _grab(self) -> np.ndarray:
        if self.made >= self.n:
            if self.fail:
                raise ConnectionError("unplugged")
            raise EndOfStream
        self.made += 1
        return np.full((2, 2, 3), self.made - 1, np.uint8)


def wait_ended(src: LiveSource) -> None:
    src._thread.join(5)
    assert not src._thread.is_alive()


def test_live_source_drop_keeps_the_newest_frame():
    src = CountingSource(6, drop=True, buffer=2).open()
    wait_ended(src)  # nobody read: the buffer dropped the oldest frames
    frames = list(src)
    assert [f.index for f in frames] == [4, 5] and src.dropped == 4 and src.frames == 6
    assert src.counters()["dropped"] == 4 and src.eof and src.read(0) is None
    src.close()


def test_live_source_without_drop_waits_for_the_reader():
    src = CountingSource(6, drop=True, buffer=2)
    src.drop = False  # what Stream does for policy block, after opening the source
    src.open()
    time.sleep(0.3)
    assert src.made == 3  # two buffered, the third waiting for room
    frames = list(src)
    assert [f.index for f in frames] == list(range(6)) and src.dropped == 0
    src.close()


def test_live_source_close_releases_a_waiting_reader_thread():
    src = CountingSource(100, drop=False, buffer=1).open()
    time.sleep(0.2)
    t0 = time.monotonic()
    src.close()
    assert src._thread is None and time.monotonic() - t0 < 2


def test_live_source_failure_comes_after_the_buffered_frames():
    src = CountingSource(2, fail=True, drop=False, buffer=2, reconnect=Reconnect(initial_s=0, max_attempts=0)).open()
    assert [src.read(5).index, src.read(5).index] == [0, 1]
    for _ in range(2):  # raised on every read, never taken for the end
        with pytest.raises(SourceError, match=r"counting://: connection lost \(unplugged\); gave up after 0"):
            src.read(5)
    assert not src.eof
    src.close()


def test_live_source_read_timeout():
    src = CountingSource(0, drop=True)  # not opened: no frame ever comes
    t0 = time.monotonic()
    assert src.read(timeout=0.2) is None and not src.eof
    assert 0.15 <= time.monotonic() - t0 < 2
