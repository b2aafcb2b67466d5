"""Stream sources: URI dispatch, files and folders, the MJPEG parser and HTTP source with
reconnection, GStreamer (real when gst-launch-1.0 is installed, else a stand-in script)."""
from __future__ import annotations

import os
import shutil
import stat
import sys
import textwrap
import time

import numpy as np
import pytest
from streamkit import frame_image, write_video

from mirnet.sdk import ConfigError, MissingDependencyError, SourceError
from mirnet.sdk.stream import gstreamer
from mirnet.sdk.stream.files import ImageFolderSource, VideoFileSource
from mirnet.sdk.stream.gstreamer import GstSource, csi_pipeline
from mirnet.sdk.stream.mjpeg import HttpMjpegSource, MultipartParser, jpeg_end
from mirnet.sdk.stream.registry import open_source, parse_uri
from mirnet.sdk.stream.source import Reconnect

cv2 = pytest.importorskip("cv2")


def jpeg(i: int = 0, h: int = 32, w: int = 48) -> bytes:
    return cv2.imencode(".jpg", frame_image(i, h, w))[1].tobytes()


# ---------------------------------------------------------------------------- URIs
def test_parse_uri():
    assert parse_uri("clip.mp4") == ("file", "clip.mp4")
    assert parse_uri("file:///data/clip.mp4?loop=1") == ("file", "/data/clip.mp4?loop=1")
    assert parse_uri(0) == ("v4l2", "0")
    assert parse_uri("2") == ("v4l2", "2")
    assert parse_uri("/dev/video1") == ("v4l2", "/dev/video1")
    assert parse_uri("v4l2:///dev/video0") == ("v4l2", "/dev/video0")
    assert parse_uri("RTSP://cam/live") == ("rtsp", "cam/live")
    assert parse_uri("gst://videotestsrc ! fakesink") == ("gst", "videotestsrc ! fakesink")


def test_unknown_and_missing_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown scheme 'ftp'.*'gst'.*'http'.*'rtsp'"):
        open_source("ftp://host/clip.mp4")
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(tmp_path / "empty")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="not a readable video"):
        open_source(bad)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['speed'\]; valid options are \['loop', 'fps'\]"):
        open_source(f"file://{tmp_path / 'x.mp4'}?speed=2")
    with pytest.raises(SourceError, match="no such camera device /dev/video99"):
        open_source("v4l2:///dev/video99")
    with pytest.raises(ConfigError, match="Reconnect factor"):
        Reconnect(factor=0.5)
    # live sources fail at once on the first connection (no retries for a wrong address)
    with pytest.raises(SourceError, match=r"rtsp://127\.0\.0\.1:1/live: cannot open it"):
        open_source("rtsp://127.0.0.1:1/live", timeout=2)
    with pytest.raises(SourceError, match="no such camera"):
        open_source(97)


def test_video_file_source_frames_timestamps_eof(tmp_path):
    video = write_video(tmp_path / "in.avi", 6)
    src = open_source(video)
    assert isinstance(src, VideoFileSource) and not src.live and src.fps == pytest.approx(25)
    frames = []
    while (frame := src.read(timeout=1.0)) is not None:
        frames.append(frame)
    assert src.eof and src.read(0.1) is None
    assert [f.index for f in frames] == list(range(6))
    assert all(a.capture_time < b.capture_time for a, b in zip(frames, frames[1:]))
    assert frames[0].image.shape == (32, 48, 3) and frames[0].grab_s >= 0
    src.close()


def test_video_file_loop(tmp_path):
    video = write_video(tmp_path / "in.avi", 4)
    with open_source(f"file://{video}?loop=1") as src:
        frames = [src.read() for _ in range(10)]
    assert [f.index for f in frames] == list(range(10))
    # frame 4 is frame 0 again (MJPG is lossy, but the same file decodes the same way)
    np.testing.assert_array_equal(frames[4].image, frames[0].image)


def test_image_folder_source_sorted_and_kinds(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), frame_image(i))
    cv2.imwrite(str(tmp_path / "g.png"), np.full((10, 12), 40000, np.uint16))  # 16-bit gray kept
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(tmp_path)
    assert isinstance(src, ImageFolderSource) and [p.name for p in src.files] == ["f0.png", "f1.png", "f2.png", "g.png"]
    images = [f.image for f in src]
    np.testing.assert_array_equal(images[1], frame_image(1))
    assert images[3].dtype == np.uint16 and images[3].shape == (10, 12)
    assert [p.name for p in open_source(str(tmp_path / "f*.png")).files] == ["f0.png", "f1.png", "f2.png"]


def test_iterable_source():
    src = open_source(frame_image(i) for i in range(3))
    assert [f.index for f in src] == [0, 1, 2] and src.eof
    with pytest.raises(SourceError, match="item 0 is a str"):
        open_source(iter(["x"])).read()


# ---------------------------------------------------------------------------- MJPEG parsing
def multipart(bodies, *, length: bool, boundary=b"--myboundary", extra_headers=b"") -> bytes:
    out = b""
    for body in bodies:
        out += boundary + b"\r\nContent-Type: image/jpeg\r\n" + extra_headers
        if length:
            out += b"Content-Length: %d\r\n" % len(body)
        out += b"\r\n" + body + b"\r\n"
    return out


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-content-length"])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_multipart_parser_any_chunking(length, chunk):
    bodies = [jpeg(i) for i in range(4)]
    data = b"preamble junk\r\n" + multipart(bodies, length=length) + b"--myboundary--\r\n"
    parser = MultipartParser("myboundary")
    got = []
    for k in range(0, len(data), chunk):
        got += parser.feed(data[k:k + chunk])
    assert got == bodies and parser.closed


def test_multipart_parser_emits_jpeg_without_waiting_for_next_part():
    """Without Content-Length a JPEG part ends at its end marker: no frame of extra latency."""
    parser = MultipartParser(None)  # boundary learnt from the stream
    first = multipart([jpeg(0)], length=False)
    assert parser.feed(first) == [jpeg(0)]
    assert parser.feed(multipart([jpeg(1)], length=False)) == [jpeg(1)]


def test_multipart_parser_boundary_variants_and_non_jpeg_parts():
    png = cv2.imencode(".png", frame_image(3))[1].tobytes()
    # boundary declared with its dashes, parts without length: a PNG ends at the next boundary
    data = multipart([png, jpeg(1)], length=False, boundary=b"--xyz") + b"--xyz\r\n"
    assert MultipartParser("--xyz").feed(data) == [png, jpeg(1)]
    # LF-only line ends
    data = b"--b\nContent-Type: image/jpeg\nContent-Length: %d\n\n" % len(jpeg(2)) + jpeg(2) + b"\n"
    assert MultipartParser("b").feed(data) == [jpeg(2)]


def test_jpeg_end_skips_exif_thumbnail():
    body = jpeg(5)
    thumb = jpeg(6, 8, 8)  # an embedded JPEG with its own end marker inside APP1
    app1 = b"Exif\x00\x00" + thumb
    exif = body[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + body[2:]
    assert jpeg_end(exif) == len(exif)
    assert jpeg_end(exif[:-1]) is None and jpeg_end(exif[:len(thumb)]) is None
    assert cv2.imdecode(np.frombuffer(exif, np.uint8), cv2.IMREAD_COLOR) is not None
    parser = MultipartParser("b")
    assert parser.feed(multipart([exif], length=False, boundary=b"--b")) == [exif]


def test_multipart_parser_rejects_runaway_data():
    with pytest.raises(SourceError, match="not an MJPEG stream"):
        MultipartParser("b", max_part=1000).feed(b"--b\r\n\r\n" + b"x" * 2000)


# ---------------------------------------------------------------------------- HTTP MJPEG source
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-content-length"])
def test_http_mjpeg_source_reads_live_frames(mjpeg_server, length):
    server = mjpeg_server(content_length=length)
    src = open_source(server.url)
    try:
        assert isinstance(src, HttpMjpegSource) and src.live
        frames = [src.read(timeout=5) for _ in range(5)]
        assert all(f is not None and f.image.shape == (32, 48, 3) for f in frames)
        assert [f.index for f in frames] == sorted({f.index for f in frames})
        # the block that encodes the frame number survives JPEG: frames are in order, new ones
        marks = [int(f.image[:8, :8].mean()) for f in frames]
        assert marks == sorted(marks)
    finally:
        src.close()


def test_http_mjpeg_octet_stream_with_a_multipart_body(mjpeg_server):
    """FFmpeg's mpjpeg muxer behind its HTTP server: Content-Type application/octet-stream, boundary
    ``ffmpeg``, lower-case part headers. The body is recognised by its first ``--boundary`` line."""
    server = mjpeg_server(content_type="application/octet-stream", boundary=b"ffmpeg")
    src = open_source(server.url)
    try:
        frames = [src.read(timeout=5) for _ in range(3)]
        assert all(f is not None and f.image.shape == (32, 48, 3) for f in frames)
    finally:
        src.close()


def test_http_source_errors(mjpeg_server):
    server = mjpeg_server()
    port = server.port
    server.stop()
    with pytest.raises(SourceError, match="cannot connect"):
        open_source(f"http://127.0.0.1:{port}/video.mjpg", timeout=2)


def test_http_source_reconnects_with_backoff(mjpeg_server):
    server = mjpeg_server(fps=100)
    src = open_source(server.url, reconnect=Reconnect(initial_s=0.05, factor=2, max_delay_s=0.2, max_attempts=50))
    try:
        assert src.read(timeout=5) is not None
        server.stop()
        time.sleep(0.4)  # down: the reader sees the drop and fails some attempts
        server.start()   # back on the same port
        deadline = time.monotonic() + 10
        while src.reconnects == 0 and time.monotonic() < deadline:
            src.read(timeout=0.2)
        assert src.reconnects == 1 and src.reconnect_attempts >= 1
        after = [src.read(timeout=5) for _ in range(3)]
        assert all(f is not None for f in after)
    finally:
        src.close()


def test_http_source_gives_up_after_max_attempts(mjpeg_server):
    server = mjpeg_server(fps=100)
    src = open_source(server.url, reconnect=Reconnect(initial_s=0.01, max_delay_s=0.02, max_attempts=2))
    try:
        assert src.read(timeout=5) is not None
        server.stop()
        with pytest.raises(SourceError, match=r"gave up after 2 reconnection attempt.*--reconnect-attempts 2 on the "
                                              r"command line, Reconnect\(max_attempts=2\) in Python"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                src.read(timeout=0.2)
        assert src.reconnect_attempts == 2 and src.reconnects == 0
    finally:
        src.close()


def test_http_source_rejects_non_multipart(tmp_path):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html></html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SourceError, match="Content-Type 'text/html'.*multipart/x-mixed-replace"):
            open_source(f"http://user:secret@127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- RTSP
class FakeRtspServer:
    """Answers every RTSP request on 127.0.0.1: ``404`` for any path but ``/live``; ``/live`` wants
    Digest credentials ``user``/``secret`` when ``auth`` and then answers 200 with an empty SDP
    (which no client can play). ``requests`` records (method, authorization header) pairs."""

    def __init__(self, auth: bool):
        import socketserver
        import threading

        outer = self
        self.requests: list[tuple[str, str | None]] = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    lines = []
                    while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        lines.append(line.decode("latin-1").strip())
                    if not lines:
                        return
                    method, url = lines[0].split()[:2]
                    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                    outer.requests.append((method, headers.get("authorization")))
                    reply = outer.answer(method, url, headers)
                    self.wfile.write(f"RTSP/1.0 {reply}\r\nCSeq: {headers.get('cseq', '0')}\r\n"
                                     f"Content-Length: 0\r\n\r\n".encode())

        self.auth = auth
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.port = self.server.server_address[1]

    def answer(self, method: str, url: str, headers: dict) -> str:
        if not url.rstrip("/").endswith("/live"):
            return "404 Not Found"
        if self.auth and method != "OPTIONS":
            got = headers.get("authorization", "")
            if 'username="user"' not in got or not self._digest_ok(method, got):
                return '401 Unauthorized\r\nWWW-Authenticate: Digest realm="cam", nonce="abc123"'
        return "200 OK"

    @staticmethod
    def _digest_ok(method: str, header: str) -> bool:
        import hashlib
        import re

        p = dict(re.findall(r'(\w+)="?([^",]*)"?', header))

        def md5(t: str) -> str:
            return hashlib.md5(t.encode()).hexdigest()
        ha1, ha2 = md5("user:cam:secret"), md5(f"{method}:{p.get('uri')}")
        return p.get("response") == md5(f"{ha1}:abc123:{ha2}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("auth, path, userinfo, reason", [
    (False, "/nothing", "", r"404 Not Found: the server has no stream at '/nothing'"),
    (True, "/live", "", r"401 Unauthorized: give the user name and password in the URL"),
    (True, "/live", "user:wrong@", r"401 Unauthorized: the user name or password in the URL is wrong"),
    (True, "/live", "user:secret@", r"200 OK, so the stream exists"),
], ids=["404", "401-no-credentials", "401-wrong-password", "200-unplayable"])
def test_rtsp_error_says_what_the_server_answered(auth, path, userinfo, reason):
    server = FakeRtspServer(auth)
    try:
        with pytest.raises(SourceError, match=reason) as err:
            open_source(f"rtsp://{userinfo}127.0.0.1:{server.port}{path}", timeout=3)
        masked = f"rtsp://{'***@' if userinfo else ''}127.0.0.1:{server.port}{path}: cannot open it"
        assert str(err.value).startswith(masked) and "secret" not in str(err.value)
    finally:
        server.close()


def test_rtsp_describe_without_a_server():
    import socket

    from mirnet.sdk.stream.capture import rtsp_describe

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert "connection refused" in rtsp_describe(f"rtsp://127.0.0.1:{port}/x", 2)


# ---------------------------------------------------------------------------- GStreamer
def test_gst_without_gstreamer_raises_missing_dependency(monkeypatch):
    monkeypatch.setattr(gstreamer, "cv2_has_gstreamer", lambda: False)
    monkeypatch.setattr(gstreamer.shutil, "which", lambda name, *a, **k: None)
    for uri in ("gst://videotestsrc ! video/x-raw,width=64,height=48", "csi://0"):
        with pytest.raises(MissingDependencyError, match=r"gst-launch-1\.0 is not on PATH.*apt-get install "
                                                         r"gstreamer1\.0-tools"):
            open_source(uri)


def test_csi_pipeline_string():
    text = csi_pipeline(1, width=1280, height=720, fps=60, flip=2)
    assert text.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "width=(int)1280, height=(int)720" in text and "framerate=(fraction)60/1" in text
    assert "nvvidconv flip-method=2" in text and text.endswith("video/x-raw, format=(string)BGR")
    with pytest.raises(ConfigError, match="sensor id must be a number"):
        open_source("csi://left")


FAKE_GST = textwrap.dedent('''\
    #!{python}
    """Stands in for gst-launch-1.0: prints fdsink caps like -v does and writes raw BGR frames
    (rows padded to 4 bytes) to the fd named in the pipeline, then exits like EOS."""
    import os, re, sys
    pipeline = " ".join(sys.argv[1:])
    if "fail" in pipeline:
        print("ERROR: pipeline could not be constructed: no element \\"fail\\"", flush=True)
        sys.exit(1)
    fd = int(re.search(r"fd=(\\d+)", pipeline).group(1))
    w, h, n = 6, 4, 5
    print("/GstPipeline:pipeline0/GstFdSink:mirnet_sink.GstPad:sink: caps = video/x-raw, "
          f"format=(string)BGR, width=(int){{w}}, height=(int){{h}}, framerate=(fraction)30/1", flush=True)
    stride = (w * 3 + 3) // 4 * 4
    for i in range(n):
        row = bytes([i] * (w * 3)) + b"\\xee" * (stride - w * 3)
        os.write(fd, row * h)
    print("Got EOS from element \\"pipeline0\\".", flush=True)
''')


@pytest.fixture
def fake_gst(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "gst-launch-1.0"
    exe.parent.mkdir()
    exe.write_text(FAKE_GST.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gstreamer, "cv2_has_gstreamer", lambda: False)
    return exe


def test_gst_launch_subprocess_protocol(fake_gst):
    """The gst-launch-1.0 path: caps read from -v output, padded rows cut, EOS ends the source."""
    src = open_source("gst://fakesrc", drop=False)
    assert isinstance(src, GstSource) and src.backend == "launch" and src.fps == 30
    frames = list(src)
    assert src.eof and len(frames) == 5 and [f.index for f in frames] == list(range(5))
    assert all(f.image.shape == (4, 6, 3) for f in frames)
    assert [int(f.image.max()) for f in frames] == [0, 1, 2, 3, 4]  # padding bytes (0xee) cut off
    # drop=True (policy latest) with a reader that is late: only the newest frame is kept
    src = open_source("gst://fakesrc", drop=True)
    time.sleep(1.0)
    frames = list(src)
    assert [f.index for f in frames] == [4] and src.dropped == 4 and src.frames == 5
    with pytest.raises(SourceError, match=r"negotiated no raw video.*no element \\?\"fail"):
        open_source("gst://fail", timeout=5)


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None,
                    reason="gst-launch-1.0 not installed (Debian: apt-get install gstreamer1.0-tools "
                           "gstreamer1.0-plugins-base gstreamer1.0-plugins-good)")
def test_gst_videotestsrc(monkeypatch):
    monkeypatch.setattr(gstreamer, "cv2_has_gstreamer", lambda: False)  # the subprocess path, as on CI
    # width 50: BGR rows of 150 bytes, padded to 152 by GStreamer
    src = open_source("gst://videotestsrc num-buffers=12 pattern=smpte ! video/x-raw,width=50,height=30,"
                      "framerate=30/1", timeout=10, drop=False)  # drop=False: lose nothing (policy block)
    frames = list(src)
    assert src.eof and len(frames) == 12 and src.dropped == 0 and src.fps == 30
    assert frames[0].image.shape == (30, 50, 3)
    # SMPTE bars: the left bar is light grey/white-ish, the image is not constant
    assert frames[0].image.std() > 30
