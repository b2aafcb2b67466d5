"""The ``mirnet`` command under bad inputs, bad option values, full disks, signals and closed pipes:
a message naming the cause and the fix, the exit status of the table in the README, nothing lost,
nothing partial left behind, no traceback."""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from mirnet.sdk.cli import main  # noqa: E402


def mirnet_exe() -> str:
    exe = shutil.which("mirnet") or str(Path(sys.executable).parent / "mirnet")
    if not os.access(exe, os.X_OK):
        pytest.skip("the mirnet console script is not installed")
    return exe


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_video(path: Path, frames: int, h: int = 32, w: int = 48, random: bool = False) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(noise(h, w, i) if random else np.full((h, w, 3), (i * 9) % 256, np.uint8))
    writer.release()
    return path


def png_header_only(path: Path, w: int, h: int) -> Path:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _atoms(data, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, pos, size
        pos += size


def faststart(src: Path, dst: Path) -> int:
    """Rewrite an mp4 with its index (moov) in front of the frames, as ``ffmpeg -movflags
    +faststart`` does, patching the chunk offsets; returns where the frames (mdat) begin."""
    data = src.read_bytes()
    top = {kind: (pos, size) for kind, pos, size in _atoms(data, 0, len(data))}
    moov = bytearray(data[top[b"moov"][0]:sum(top[b"moov"])])
    shift = len(moov)

    def patch(start: int, end: int) -> None:
        for kind, pos, size in _atoms(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                patch(pos + 8, pos + size)
            elif kind == b"stco":
                for i in range(struct.unpack(">I", moov[pos + 12:pos + 16])[0]):
                    at = pos + 16 + 4 * i
                    moov[at:at + 4] = struct.pack(">I", struct.unpack(">I", moov[at:at + 4])[0] + shift)

    patch(8, len(moov))
    ftyp = data[top[b"ftyp"][0]:sum(top[b"ftyp"])]
    rest = b"".join(data[pos:pos + size] for kind, pos, size in _atoms(data, 0, len(data))
                    if kind not in (b"ftyp", b"moov"))
    dst.write_bytes(ftyp + bytes(moov) + rest)
    return len(ftyp) + shift


# ---------------------------------------------------------------------------- 1. pixel limit


def test_restore_skips_an_image_over_the_pixel_limit(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), noise(20, 28))
    png_header_only(src / "bomb.png", 60000, 60000)
    cv2.imwrite(str(src / "c.png"), noise(20, 28, 1))
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--model", str(tiny_onnx), "-q"]) == 5
    err = capsys.readouterr().err
    assert f"{src / 'bomb.png'}: 60000x60000 image" in err and "--max-pixels" in err
    assert "restored 2 file(s)" in err and "1 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]

    assert main(["restore", str(src / "a.png"), "-o", str(out), "--model", str(tiny_onnx), "-q",
                 "--force", "--max-pixels", "500"]) == 5
    assert "28x20 image (560 pixels) exceeds the pixel limit of 500 pixels" in capsys.readouterr().err
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exc:
            main(["restore", str(src), "-o", str(out), "--max-pixels", bad])
        assert exc.value.code == 2
        assert f"--max-pixels: {bad!r}: must be an integer >= 1" in capsys.readouterr().err


def test_stream_and_eval_take_the_pixel_limit(tmp_path, tiny_onnx, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), noise(20, 28))
    assert main(["stream", str(folder), "null://", "--model", str(tiny_onnx), "-q", "--max-pixels", "500"]) == 5
    assert "28x20 image (560 pixels) exceeds the pixel limit of 500" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_onnx), "--data", str(folder), "--sigma", "25",
                 "--max-pixels", "500"]) == 5
    assert "28x20 image (560 pixels) exceeds the pixel limit of 500" in capsys.readouterr().err
    assert "MIRNET_MAX_PIXELS" not in os.environ  # the option does not leak out of the command


# ---------------------------------------------------------------------------- 2. -o


def test_restore_output_folder_problems(tmp_path, tiny_onnx, capsys, monkeypatch):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), noise(20, 28))
    a_file = tmp_path / "taken"
    a_file.write_text("a file")
    cases = [(a_file, "is a file, not a folder"),
             (a_file / "sub", f"cannot create the output folder {a_file / 'sub'}: {a_file} is a file")]
    for outdir, message in cases:
        assert main(["restore", str(src), "-o", str(outdir), "--model", str(tiny_onnx), "-q"]) == 5
        err = capsys.readouterr().err
        assert message in err and "Errno" not in err and "restored" not in err
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["restore", str(src), "-o", str(tmp_path / "locked"), "--model", str(tiny_onnx), "-q"]) == 5
    err = capsys.readouterr().err
    assert f"cannot create the output folder {tmp_path / 'locked'} (Permission denied)" in err
    assert "choose a folder you can write to" in err
    assert a_file.read_text() == "a file"


# ---------------------------------------------------------------------------- 3. truncated video


def test_restore_truncated_video_is_reported(tmp_path, tiny_onnx, capsys):
    whole = write_video(tmp_path / "whole.mp4", 30, random=True)
    fast = tmp_path / "fast.mp4"
    frames_at = faststart(whole, fast)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:frames_at + (len(data) - frames_at) // 3])
    cap = cv2.VideoCapture(str(cut))
    claimed, decoded = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert claimed == 30 and 0 < decoded < 30

    out = tmp_path / "out"
    assert main(["restore", str(fast), str(cut), "-o", str(out), "--model", str(tiny_onnx), "-q"]) == 1
    err = capsys.readouterr().err
    assert (f"mirnet restore: warning: {cut}: decoded {decoded} of the 30 frames its container declares "
            f"(truncated or corrupt?); wrote those {decoded}") in err
    assert "fast.mp4" not in err
    assert "restored 2 file(s)" in err and "1 incomplete" in err
    got = cv2.VideoCapture(str(out / "cut.mp4"))
    assert got.get(cv2.CAP_PROP_FRAME_COUNT) == decoded


# ---------------------------------------------------------------------------- 4. full disk


def test_restore_images_onto_a_full_disk(tmp_path, small_disk, tiny_onnx, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), noise(8, 8))
    cv2.imwrite(str(src / "b.png"), noise(400, 400))  # ~480 kB restored: more than the disk holds
    cv2.imwrite(str(src / "c.png"), noise(8, 8, 1))
    assert main(["restore", str(src), "-o", str(small_disk), "--model", str(tiny_onnx), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{small_disk / 'b.png'}: cannot write it (No space left on device)" in err
    assert "restored 1 file(s)" in err and "stopped at the first failed write" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in small_disk.iterdir()) == ["a.png"]  # stopped: c.png not tried


def test_restore_video_onto_a_full_disk(tmp_path, small_disk, tiny_onnx, capsys):
    video = write_video(tmp_path / "v.mp4", 60, 120, 160, random=True)
    assert main(["restore", str(video), "-o", str(small_disk), "--model", str(tiny_onnx), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{small_disk / 'v.mp4'}: frame" in err and "(No space left on device)" in err
    assert "restored 0 file(s)" in err and "restored 1" not in err
    assert list(small_disk.iterdir()) == []  # no truncated file published, no partial file left


def test_stream_onto_a_full_disk(tmp_path, small_disk, tiny_onnx, capsys):
    video = write_video(tmp_path / "v.mp4", 80, 120, 160, random=True)
    for sink in (small_disk / "frames", small_disk / "out.mp4"):
        assert main(["stream", str(video), str(sink), "--model", str(tiny_onnx), "-q"]) == 1
        err = capsys.readouterr().err
        assert "(No space left on device)" in err and "Traceback" not in err
        assert not [p for p in small_disk.rglob("*") if "partial" in p.name]
        assert not (small_disk / "out.mp4").exists()
        shutil.rmtree(small_disk / "frames", ignore_errors=True)


# ---------------------------------------------------------------------------- 5. SIGTERM


def test_restore_sigterm_leaves_a_finished_file_or_none(tmp_path, tiny_onnx):
    video = write_video(tmp_path / "clip.mp4", 400, 96, 128)
    out = tmp_path / "out"
    proc = subprocess.Popen([mirnet_exe(), "restore", str(video), "-o", str(out), "--model", str(tiny_onnx), "-q"],
                            stderr=subprocess.PIPE, text=True)
    partial = out / ".clip.partial.mp4"
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert partial.exists(), "the restore never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "mirnet: interrupted" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------- 10. option values


@pytest.mark.parametrize("argv,message", [
    (["restore", "x.png", "-o", "out", "--threads", "0"], "--threads: '0': must be an integer >= 1"),
    (["restore", "x.png", "-o", "out", "--threads", "-3"], "--threads: '-3': must be an integer >= 1"),
    (["stream", "in.mp4", "out.mp4", "--threads", "0"], "--threads: '0': must be an integer >= 1"),
    (["eval", "--model", "m.onnx", "--data", "d", "--sigma", "nan"],
     "--sigma: 'nan': must be a finite number >= 0"),
    (["eval", "--model", "m.onnx", "--data", "d", "--sigma", "-1"], "--sigma: '-1': must be a finite number >= 0"),
    (["eval", "--model", "m.onnx", "--data", "d", "--sigma", "5", "--threads", "0"],
     "--threads: '0': must be an integer >= 1"),
    (["stream", "in.mp4", "out.mp4", "--fps", "-5"], "--fps: '-5': must be a finite number > 0"),
    (["stream", "in.mp4", "out.mp4", "--fps", "inf"], "--fps: 'inf': must be a finite number > 0"),
    (["bench", "--threads", "0"], "--threads: '0': must be an integer >= 1"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_option_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------- 11. exit codes, pipes, logs


def test_existing_output_is_exit_5_in_restore_and_stream(tmp_path, tiny_onnx, capsys):
    src = write_video(tmp_path / "clip.mp4", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"old")
    assert main(["restore", str(src), "-o", str(out), "--model", str(tiny_onnx), "-q"]) == 5
    assert main(["stream", str(src), str(out / "clip.mp4"), "--model", str(tiny_onnx), "-q"]) == 5
    err = capsys.readouterr().err
    assert err.count("exists; pass --force") == 2
    assert (out / "clip.mp4").read_bytes() == b"old"


def test_output_into_a_closed_pipe(tiny_onnx):
    proc = subprocess.Popen([mirnet_exe(), "info", str(tiny_onnx)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -2` having exited before mirnet writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


def test_opencv_log_lines_do_not_leak(tmp_path, tiny_onnx):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    whole = write_video(tmp_path / "whole.mp4", 20, random=True)
    frames_at = faststart(whole, tmp_path / "fast.mp4")
    data = (tmp_path / "fast.mp4").read_bytes()
    (src / "cut.mp4").write_bytes(data[:frames_at + (len(data) - frames_at) // 2])
    proc = subprocess.run([mirnet_exe(), "restore", str(src), "-o", str(tmp_path / "out"), "--model",
                           str(tiny_onnx), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.splitlines()
    assert [line for line in lines if not line.startswith(("mirnet restore: ", "restored "))] == []
    assert any("broken.png: not a readable image" in line for line in lines)
    assert any("cut.mp4: decoded" in line for line in lines)
