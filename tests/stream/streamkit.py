"""Helpers for the stream tests (imported by them and by conftest.py): synthetic videos, trivial
backends, a loopback MJPEG server. All data is made in tmp_path; nothing is read from elsewhere."""
from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from mirnet.sdk.backends import Backend, InputSpec  # noqa: E402


def frame_image(i: int, h: int = 32, w: int = 48) -> np.ndarray:
    """A frame that encodes its number: a gradient shifted by i, top-left block = i % 256."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 5 + i * 7) % 256, (yy * 7) % 256, np.full_like(xx, (i * 37) % 256)], axis=2)
    img = img.astype(np.uint8)
    img[:8, :8] = i % 256
    return img


def write_video(path: Path, frames: int, h: int = 32, w: int = 48, fps: float = 25.0) -> Path:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(frame_image(i, h, w))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    """Frames a decoder really gets out of the file (not the header's claim)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open as a video"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


class IdentityBackend(Backend):
    """Returns its input: a 'model' whose restore is exact, costing nothing. ``delay`` seconds per
    call make it a slow model; ``batches`` records the batch sizes it saw."""

    name = "identity"

    def __init__(self, delay: float = 0.0):
        self.input_spec = InputSpec(channels=3, out_channels=3, pad_multiple=4, scale=1)
        self.delay = delay
        self.batches: list[int] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.input_spec.check(batch)
        self.batches.append(batch.shape[0])
        if self.delay:
            time.sleep(self.delay)
        return batch


class MjpegServer:
    """A multipart/x-mixed-replace MJPEG server on 127.0.0.1 (http.server in a thread).
    ``content_length=False`` leaves out the per-part Content-Length; ``content_type`` replaces the
    response's Content-Type (FFmpeg's mpjpeg server says application/octet-stream); ``stop()``
    drops every connection and the listening socket, ``start()`` comes back on the same port."""

    def __init__(self, fps: float = 200.0, content_length: bool = True, size=(32, 48),
                 content_type: str = "multipart/x-mixed-replace; boundary=frameboundary",
                 boundary: bytes = b"frameboundary"):
        self.fps, self.content_length, self.size = fps, content_length, size
        self.content_type, self.boundary = content_type, boundary
        self.served = 0
        self.connections = 0
        self.port = 0
        self._server = None
        self._alive = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> "MjpegServer":
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", outer.content_type)
                self.end_headers()
                try:
                    while outer._alive.is_set():
                        ok, jpg = cv2.imencode(".jpg", frame_image(outer.served, *outer.size))
                        data = jpg.tobytes()
                        head = b"--" + outer.boundary + b"\r\nContent-Type: image/jpeg\r\n"
                        if outer.content_length:
                            head += b"Content-Length: %d\r\n" % len(data)
                        self.wfile.write(head + b"\r\n" + data + b"\r\n")
                        self.wfile.flush()
                        outer.served += 1
                        time.sleep(1.0 / outer.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._alive.set()
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
