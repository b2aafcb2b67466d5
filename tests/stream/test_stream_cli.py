"""``mirnet stream``: a real video through a real (tiny) model, stats JSON, output checks, SIGINT
finalising a playable file, GStreamer end to end; and the pipeline micro-benchmark runs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from streamkit import IdentityBackend, count_frames, write_video

from mirnet.sdk.cli import main
from mirnet.sdk.stream import gstreamer
from mirnet.sdk.stream.stats import STAGES

cv2 = pytest.importorskip("cv2")


def test_cli_video_to_video_block_with_stats(tmp_path, tiny_onnx, capsys):
    video = write_video(tmp_path / "in.mp4", 24)
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    rc = main(["stream", str(video), str(out), "--policy", "block", "--model", str(tiny_onnx),
               "--stats-json", str(stats_path)])
    assert rc == 0
    assert count_frames(out) == 24
    stats = json.loads(stats_path.read_text())
    assert stats["state"] == "finished" and stats["frames"] == stats["frames_in"] == 24
    assert stats["dropped"] == 0 and stats["fps"] > 0 and stats["policy"] == "block"
    for stage in STAGES:
        s = stats["stages"][stage]
        assert s["count"] == 24 and s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]
    g = stats["glass_to_glass"]
    assert g["count"] == 24 and 0 < g["p50_ms"] <= g["p95_ms"] <= g["p99_ms"]
    err = capsys.readouterr().err
    assert "finished: wrote 24 frames to" in err
    # the output exists now: refused without --force; and never over the source
    assert main(["stream", str(video), str(out), "--model", str(tiny_onnx)]) == 5
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["stream", str(video), str(video), "--model", str(tiny_onnx), "--force"]) == 5
    assert "would overwrite the source" in capsys.readouterr().err


def test_cli_side_by_side_max_frames_quiet(tmp_path, tiny_onnx, capsys):
    video = write_video(tmp_path / "in.avi", 10)
    out = tmp_path / "sbs"
    assert main(["stream", str(video), str(out), "--model", str(tiny_onnx), "--side-by-side",
                 "--max-frames", "3", "-q"]) == 0
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["000000.png", "000001.png", "000002.png"]
    assert cv2.imread(str(files[0])).shape == (32, 96, 3)
    assert capsys.readouterr().err == ""


def test_cli_errors(tmp_path, capsys):
    assert main(["stream", "ftp://x/y", "null://", "--model", "nope"]) != 0
    assert "mirnet: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stream", "in.mp4", "out.mp4", "--policy", "fast"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_a_playable_file_with_every_reported_frame(tmp_path, tiny_onnx, sig):
    """SIGINT/SIGTERM mid-stream: the frames in flight are finished, the file is closed and plays,
    and it holds exactly the frames the stats report as written."""
    video = write_video(tmp_path / "loop.avi", 20)
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    cmd = [sys.executable, "-c", "from mirnet.sdk.cli import run; run()", "stream", f"file://{video}?loop=1",
           str(out), "--policy", "block", "--model", str(tiny_onnx), "--stats-json", str(stats_path),
           "--stats-interval", "0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(stats_path.read_text())["frames"] >= 30:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    stats = json.loads(stats_path.read_text())
    assert stats["state"] == "interrupted" and stats["frames"] >= 30
    assert count_frames(out) == stats["frames"]
    assert f"interrupted: wrote {stats['frames']} frames" in err
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None,
                    reason="gst-launch-1.0 not installed (Debian: apt-get install gstreamer1.0-tools "
                           "gstreamer1.0-plugins-base gstreamer1.0-plugins-good)")
def test_gst_videotestsrc_through_the_pipeline(tmp_path, monkeypatch):
    from mirnet.sdk import Stream

    monkeypatch.setattr(gstreamer, "cv2_has_gstreamer", lambda: False)
    out = tmp_path / "out.avi"
    stats = Stream("gst://videotestsrc num-buffers=15 ! video/x-raw,width=64,height=48,framerate=30/1", out,
                   model=IdentityBackend(), policy="block").run()
    assert stats["frames"] == 15 and stats["state"] == "finished"
    assert count_frames(out) == 15


def test_benchmark_runs(tiny_onnx):
    from mirnet.benchmarks.stream import run

    result = run(tiny_onnx, frames=6, size=(24, 32), repeats=2)
    assert result["frames"] == 6 and result["infer_fps"] > 0 and result["pipeline_fps"] > 0
    assert len(result["infer_fps_runs"]) == len(result["pipeline_fps_runs"]) == 2
    assert result["efficiency"] == pytest.approx(result["pipeline_fps"] / result["infer_fps"], rel=1e-2)
    assert set(result["stages_p50_ms"]) == set(STAGES) and result["machine"]["cores"] == os.cpu_count()
