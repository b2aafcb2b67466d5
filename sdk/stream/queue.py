"""The bounded queue between threads: the pipeline's stages and a live source's capture buffer.

``leaky`` (policy ``latest``): a put into a full queue drops the oldest item, counted in
``dropped`` and reported to ``on_drop``, so the producer never waits. Otherwise (policy ``block``)
a put waits for room and gives up, discarding its item, once ``abort`` is set. :data:`END` marks
the end of the items: it is never dropped, putting it never waits, and once it reaches the head it
stays there, so every later get returns it. ``get(timeout)`` returns :data:`EMPTY` when nothing
came within ``timeout`` seconds (0: do not wait; None: wait for an item).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["BoundedQueue", "END", "EMPTY"]


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


END = _Marker("end")
EMPTY = _Marker("empty")


class BoundedQueue:
    """At most ``maxsize`` items (plus :data:`END`), first in first out; thread-safe."""

    def __init__(self, maxsize: int, *, leaky: bool, abort: threading.Event | None = None,
                 on_drop: Callable[[], None] | None = None):
        if maxsize < 1:
            raise ConfigError(f"maxsize={maxsize}: a queue must hold at least 1 item")
        self.maxsize, self.leaky, self.on_drop = maxsize, leaky, on_drop
        self.abort = abort if abort is not None else threading.Event()
        self.dropped = 0
        self._items: deque = deque()
        self._cond = threading.Condition()

    def put(self, item) -> None:
        with self._cond:
            if item is not END:
                while len(self._items) >= self.maxsize:
                    if self.leaky and self._items[0] is not END:
                        self._items.popleft()
                        self.dropped += 1
                        if self.on_drop is not None:
                            self.on_drop()
                    elif self.abort.is_set():
                        return
                    else:
                        self._cond.wait(0.1)  # wakes for room, or to see ``abort``
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return EMPTY
            item = self._items[0]
            if item is not END:
                self._items.popleft()
                self._cond.notify_all()
            return item
