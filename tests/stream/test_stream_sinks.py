"""Stream sinks: URI dispatch, video files (finalised, size changes), folders, display on headless
OpenCV, network outputs (command lines, a stand-in ffmpeg, real GStreamer RTP when installed)."""
from __future__ import annotations

import errno
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

from mirnet.sdk import ConfigError, InputError, MissingDependencyError, OutputError
from mirnet.sdk.stream import sinks
from mirnet.sdk.stream.sinks import (CallbackSink, FolderSink, NetworkSink, NullSink, VideoFileSink, ffmpeg_command,
                                     gst_command, open_sink, rtp_sdp, to_bgr8)
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


def _marks(path) -> list[int]:
    """The top-left block of every frame of a video (frame_image(i) puts i there)."""
    cap = cv2.VideoCapture(str(path))
    marks = []
    while True:
        ok, image = cap.read()
        if not ok:
            return marks
        marks.append(round(float(image[:8, :8].mean())))


@pytest.mark.parametrize("real_time", [True, False], ids=["real-time", "every-frame"])
def test_video_sink_keeps_real_time(tmp_path, real_time):
    """Live frames at their capture times: the previous frame fills the slots of dropped frames, a
    frame whose slot is taken is skipped, so the file lasts as long as the scene (0.6 s + one
    frame at 10 fps). Without real_time (files) every frame is written once."""
    out = tmp_path / "out.avi"
    sink = open_sink(out, fps=10)
    sink.real_time = real_time
    times = [0.0, 0.1, 0.5, 0.52, 0.6]
    for k, t in enumerate(times):
        sink.write(frame_image(40 * k), Frame(k, 100.0 + t, frame_image(40 * k)))
    sink.close()
    marks = [round(m / 40) * 40 for m in _marks(out)]
    if real_time:
        assert marks == [0, 40, 40, 40, 40, 80, 160] and count_frames(out) / 10 == pytest.approx(0.7)
        assert (sink.frames, sink.repeated, sink.skipped) == (4, 3, 1)
    else:
        assert marks == [0, 40, 80, 120, 160] and (sink.frames, sink.repeated, sink.skipped) == (5, 0, 0)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_full_disk_stops_the_stream_with_the_cause(tmp_path, monkeypatch, kind):
    """A write that fails (here: no space left) raises OutputError naming the output, the frame and
    the cause; the stream stops there; a video's partial file is removed."""
    from streamkit import IdentityBackend

    from mirnet.sdk import Stream, media

    if kind == "folder":
        monkeypatch.setattr(media, "write_image", _no_space)
        out = tmp_path / "frames"
    else:
        monkeypatch.setattr(media.VideoWriter, "write", _no_space)
        out = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match=rf"{out.name}: frame 0.* could not be written \(No space left on device\); "
                                          r"free space on that disk or write elsewhere"):
        Stream((frame_image(i) for i in range(5)), out, model=IdentityBackend()).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["frames"] if kind == "folder" else [])


def test_full_disk_under_the_cli_is_a_message_and_an_exit_code(tmp_path, monkeypatch, tiny_onnx, capsys):
    from streamkit import write_video

    from mirnet.sdk import media
    from mirnet.sdk.cli import main

    src = write_video(tmp_path / "in.avi", 4)
    monkeypatch.setattr(media, "write_image", _no_space)
    assert main(["stream", str(src), str(tmp_path / "frames"), "--model", str(tiny_onnx), "-q"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "frames" in err and "Traceback" not in err


def test_stats_json_on_a_full_disk_stops_the_stream(tmp_path, monkeypatch):
    """A failing statistics write stops the stream with its cause (it used to retry forever)."""
    import threading

    from streamkit import IdentityBackend

    from mirnet.sdk import Stream, artifact

    real = artifact.atomic_write_bytes
    monkeypatch.setattr(artifact, "atomic_write_bytes",
                        lambda path, data: _no_space() if str(path).endswith("stats.json") else real(path, data))
    stream = Stream((frame_image(i) for i in range(5)), None, model=IdentityBackend(),
                    stats_json=tmp_path / "stats.json")
    errors = []
    runner = threading.Thread(target=lambda: errors.append(pytest.raises(OutputError, stream.run)), daemon=True)
    runner.start()
    runner.join(10)
    assert not runner.is_alive(), "the stream did not stop"
    assert "stats.json: cannot write the stream statistics (No space left on device)" in str(errors[0].value)


def test_folder_sink_that_cannot_create_its_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create the folder"):
        open_sink(tmp_path / "file" / "frames")


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
    assert ffmpeg_command("rtp://10.0.0.2:5004", 64, 48, 25)[-5:] == ["-f", "rtp", "-payload_type", "96",
                                                                       "rtp://10.0.0.2:5004"]
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
    with pytest.raises(ConfigError, match="needs a host and a port"):
        ffmpeg_command("rtp://10.0.0.2", 64, 48, 25)
    with pytest.raises(ConfigError, match=r"rtp://10\.0\.0\.2: an RTP output needs a host and a port"):
        open_sink("rtp://10.0.0.2")  # before looking for a tool: the same error with or without ffmpeg


def test_rtp_sdp():
    sdp = rtp_sdp("rtp://10.0.0.2:5004")
    assert sdp.splitlines() == ["v=0", "o=- 0 0 IN IP4 10.0.0.2", "s=mirnet-edge", "c=IN IP4 10.0.0.2", "t=0 0",
                                "m=video 5004 RTP/AVP 96", "a=rtpmap:96 H264/90000", "a=fmtp:96 packetization-mode=1"]
    assert "m=video 5004 RTP/AVP 26" in rtp_sdp("rtp://10.0.0.2:5004", "JPEG")


FAKE_FFMPEG = textwrap.dedent('''\
    #!{python}
    """Stands in for ffmpeg: records its arguments and the bytes it got on stdin."""
    import sys
    data = sys.stdin.buffer.read()
    with open({log!r}, "w") as fh:
        fh.write(" ".join(sys.argv[1:]) + "\\n" + str(len(data)))
''')


def test_network_sink_pipes_raw_frames_to_ffmpeg(tmp_path, monkeypatch, caplog):
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
    assert "-s 48x32" in args and "-r 30/1" in args and args.endswith("-f rtp -payload_type 96 rtp://127.0.0.1:5004")
    assert int(size) == 6 * 48 * 32 * 3
    assert sink.sdp == rtp_sdp("rtp://127.0.0.1:5004") and sink.sdp.rstrip() in caplog.text
    assert "ffplay -protocol_whitelist file,udp,rtp -i stream.sdp" in caplog.text


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
    assert f"m=video {port} RTP/AVP {packet[1] & 0x7F}" in sink.sdp  # the SDP names the payload type sent
