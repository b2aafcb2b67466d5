"""Stream sinks: URI dispatch, video files (finalised, size changes), folders, display on headless
OpenCV, network outputs (command lines, a stand-in ffmpeg, real GStreamer RTP when installed)."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import sys
import textwrap

import numpy as np
import pytest
from streamkit import count_frames, frame_image

from mirnet.sdk import ConfigError, InputError, MissingDependencyError
from mirnet.sdk.stream import sinks
from mirnet.sdk.stream.sinks import (CallbackSink, FolderSink, NetworkSink, NullSink, VideoFileSink, ffmpeg_command,
                                     gst_command, open_sink, to_bgr8)
from mirnet.sdk.stream.source import Frame

cv2 = pytest.importorskip("cv2")


def frames(n, h=32, w=48):
    return [Frame(i, float(i), frame_image(i, h, w)) for i in range(n)]


def test_open_sink_dispatch(tmp_path):
    assert isinstance(open_sink(tmp_path / "out.mp4"), VideoFileSink)
    assert isinstance(open_sink(f"file://{tmp_path / 'out.mkv'}"), VideoFileSink)
    assert isinstance(open_sink(tmp_path / "frames"), FolderSink)
    assert isinstance(open_sink(str(tmp_path / "pat" / "f_%04d.jpg")), FolderSink)
    assert isinstance(open_sink("null://"), NullSink) and isinstance(open_sink(None), NullSink)
    assert isinstance(open_sink(lambda image, frame: None), CallbackSink)
    with pytest.raises(ConfigError, match=r"unknown scheme 'ftp'; valid schemes are \['display', 'file', 'null', "
                                          r"'rtp', 'rtsp', 'rtsps'\]"):
        open_sink("ftp://host/x")
    with pytest.raises(InputError, match=r"cannot tell what to write from '\.txt'"):
        open_sink(tmp_path / "out.txt")
    with pytest.raises(InputError, match="does not exist"):
        open_sink(tmp_path / "no" / "such" / "out.mp4")


def test_video_sink_is_finalised_and_playable(tmp_path):
    out = tmp_path / "out.mp4"
    sink = open_sink(out, fps=10)
    for f in frames(7):
        sink.write(f.image, f)
        assert not out.exists()  # written under a hidden name until closed
    sink.close()
    assert out.is_file() and count_frames(out) == 7 == sink.frames
    assert not list(tmp_path.glob(".*partial*"))


def test_video_sink_scales_frames_of_another_size(tmp_path, caplog):
    out = tmp_path / "out.avi"
    sink = open_sink(out)
    fs = frames(3) + [Frame(3, 3.0, frame_image(3, 20, 24))]
    with caplog.at_level(logging.WARNING, logger="mirnet.stream"):
        for f in fs:
            sink.write(f.image, f)
    sink.close()
    assert "frame 3 is 24x20 but this output keeps one size, 48x32" in caplog.text
    cap = cv2.VideoCapture(str(out))
    sizes = []
    while (r := cap.read())[0]:
        sizes.append(r[1].shape)
    assert sizes == [(32, 48, 3)] * 4


def test_video_sink_abort_leaves_nothing(tmp_path):
    sink = open_sink(tmp_path / "out.mp4")
    f = frames(1)[0]
    sink.write(f.image, f)
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_folder_sink_names_and_kinds(tmp_path):
    sink = open_sink(tmp_path / "out")
    for f in frames(2):
        sink.write(f.image, f)
    g16 = np.full((5, 6), 50000, np.uint16)
    sink.write(g16, Frame(9, 0.0, g16))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png", "000009.png"]
    back = cv2.imread(str(tmp_path / "out" / "000009.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (5, 6) and back.max() == 50000
    sink = open_sink(str(tmp_path / "pat" / "f_%03d.jpg"))
    f = frames(1)[0]
    sink.write(f.image, f)
    assert (tmp_path / "pat" / "f_000.jpg").is_file()


def test_to_bgr8_kinds():
    assert to_bgr8(np.full((2, 3), 7, np.uint8)).shape == (2, 3, 3)
    assert to_bgr8(np.zeros((2, 3, 4), np.uint8)).shape == (2, 3, 3)
    np.testing.assert_array_equal(to_bgr8(np.full((2, 3, 3), 65535, np.uint16)), 255)
    np.testing.assert_array_equal(to_bgr8(np.full((2, 3, 3), 0.5, np.float32)), 128)


@pytest.mark.skipif(sinks.has_gui(), reason="this OpenCV has a GUI; the headless error cannot happen")
def test_display_needs_gui_extra():
    with pytest.raises(MissingDependencyError, match=r"display:// needs OpenCV with GUI support.*"
                                                     r"pip install 'mirnet-edge\[gui\]'"):
        open_sink("display://")


def test_network_sink_without_tools(monkeypatch):
    monkeypatch.setattr(sinks.shutil, "which", lambda name, *a, **k: None)
    for url in ("rtsp://127.0.0.1:8554/live", "rtp://127.0.0.1:5004"):
        with pytest.raises(MissingDependencyError, match=r"ffmpeg or gst-launch-1\.0.*apt-get install ffmpeg.*"
                                                         r"gstreamer1\.0-tools"):
            open_sink(url)


def test_network_command_lines():
    cmd = ffmpeg_command("rtsp://127.0.0.1:8554/live", 640, 360, 29.97)
    assert cmd[:1] == ["ffmpeg"] and "-s" in cmd and cmd[cmd.index("-s") + 1] == "640x360"
    assert cmd[cmd.index("-r") + 1] == "2997/100" and cmd[-5:] == ["-f", "rtsp", "-rtsp_transport", "tcp",
                                                                     "rtsp://127.0.0.1:8554/live"]
    assert ffmpeg_command("rtp://10.0.0.2:5004", 64, 48, 25)[-3:] == ["-f", "rtp", "rtp://10.0.0.2:5004"]
    have = {"x264enc", "rtspclientsink"}
    rtp = " ".join(gst_command("rtp://10.0.0.2:5004", 64, 48, 25, has=have.__contains__))
    assert "rawvideoparse width=64 height=48 format=bgr framerate=25/1" in rtp
    assert "x264enc" in rtp and "rtph264pay" in rtp and rtp.endswith("udpsink host=10.0.0.2 port=5004 sync=false")
    assert "rtspclientsink location=rtsp://h/x" in " ".join(gst_command("rtsp://h/x", 64, 48, 25, has=have.__contains__))
    jpeg = " ".join(gst_command("rtp://10.0.0.2:5004", 64, 48, 25, has=lambda e: False))
    assert "jpegenc" in jpeg and "rtpjpegpay" in jpeg
    with pytest.raises(MissingDependencyError, match="gstreamer1.0-rtsp"):
        gst_command("rtsp://h/x", 64, 48, 25, has=lambda e: False)
    with pytest.raises(ConfigError, match="needs a host and a port"):
        gst_command("rtp://10.0.0.2", 64, 48, 25, has=have.__contains__)


FAKE_FFMPEG = textwrap.dedent('''\
    #!{python}
    """Stands in for ffmpeg: records its arguments and the bytes it got on stdin."""
    import sys
    data = sys.stdin.buffer.read()
    with open({log!r}, "w") as fh:
        fh.write(" ".join(sys.argv[1:]) + "\\n" + str(len(data)))
''')


def test_network_sink_pipes_raw_frames_to_ffmpeg(tmp_path, monkeypatch):
    log = tmp_path / "ffmpeg.log"
    exe = tmp_path / "bin" / "ffmpeg"
    exe.parent.mkdir()
    exe.write_text(FAKE_FFMPEG.format(python=sys.executable, log=str(log)))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    sink = open_sink("rtp://127.0.0.1:5004", fps=30)
    assert isinstance(sink, NetworkSink) and sink.tool == "ffmpeg"
    fs = frames(5) + [Frame(5, 5.0, frame_image(5, 16, 16))]  # scaled to 48x32
    for f in fs:
        sink.write(f.image, f)
    sink.close()
    args, size = log.read_text().splitlines()
    assert "-s 48x32" in args and "-r 30/1" in args and args.endswith("-f rtp rtp://127.0.0.1:5004")
    assert int(size) == 6 * 48 * 32 * 3


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None,
                    reason="gst-launch-1.0 not installed (Debian: apt-get install gstreamer1.0-tools "
                           "gstreamer1.0-plugins-base gstreamer1.0-plugins-good)")
def test_network_sink_gstreamer_rtp_sends_packets():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    port = rx.getsockname()[1]
    sink = NetworkSink(f"rtp://127.0.0.1:{port}", tool="gst-launch-1.0")
    sink.open(fps=25)
    for f in frames(8, h=30, w=50):  # odd row size: rows padded to 4 bytes for rawvideoparse
        sink.write(f.image, f)
    packet = rx.recv(65536)
    sink.close()
    rx.close()
    assert len(packet) > 12 and packet[0] >> 6 == 2  # an RTP version-2 header
