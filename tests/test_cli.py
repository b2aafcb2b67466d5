"""Tests for the ``mirnet`` command: restore (images, folders, video), info, export, variants."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from mirnet.sdk import Restorer, __version__  # noqa: E402
from mirnet.sdk.artifact import sha256_file  # noqa: E402
from mirnet.sdk.cli import main  # noqa: E402


def image(h: int = 20, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_video(path: Path, frames: int = 5, h: int = 32, w: int = 48) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    yy, xx = np.mgrid[0:h, 0:w]
    shown = []
    for i in range(frames):
        frame = np.stack([(xx * 5 + i * 20) % 256, (yy * 7) % 256, np.full_like(xx, 40 * i)], axis=2)
        frame = frame.astype(np.uint8)
        writer.write(frame)
        shown.append(frame)
    writer.release()
    return shown


def read_video(path: Path) -> tuple[list[np.ndarray], int]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, reported


def restore(*args: str | Path) -> int:
    return main(["restore", *map(str, args), "-q"])


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if "partial" in p.name or p.name.startswith(".")]


# ---------------------------------------------------------------------------- restore


def test_restore_folder_with_subfolder(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    a, b = image(20, 28, 1), image(21, 30, 2)
    cv2.imwrite(str(src / "a.png"), a)
    cv2.imwrite(str(src / "sub" / "b.png"), b)
    (src / "notes.txt").write_text("not an image")  # ignored
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx) == 0
    assert "restored 2 file(s)" in capsys.readouterr().err
    got_a, got_b = cv2.imread(str(out / "a.png")), cv2.imread(str(out / "sub" / "b.png"))
    assert got_a.shape == a.shape and got_b.shape == b.shape
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a.png", "sub/b.png"]
    # PNG is lossless: the files hold exactly what the library returns
    with Restorer(tiny_onnx) as r:
        np.testing.assert_array_equal(got_a, r.restore(a))
        np.testing.assert_array_equal(got_b, r.restore(b))
    assert not leftovers(out)


def test_restore_single_image_keeps_16_bit(tmp_path, tiny_onnx):
    src = tmp_path / "x16.png"
    img = image(20, 28, 3).astype(np.uint16) * 257
    cv2.imwrite(str(src), img)
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx) == 0
    got = cv2.imread(str(out / "x16.png"), cv2.IMREAD_UNCHANGED)
    assert got.shape == img.shape and got.dtype == np.uint16
    with Restorer(tiny_onnx) as r:
        np.testing.assert_array_equal(got, r.restore(img))


def test_restore_video(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "clip.mp4"
    write_video(src, frames=5, h=32, w=48)
    in_frames, _ = read_video(src)
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx) == 0
    assert "restored 1 file(s)" in capsys.readouterr().err
    frames, reported = read_video(out / "clip.mp4")
    assert len(frames) == len(in_frames) == 5
    assert reported == 5
    assert all(f.shape == (32, 48, 3) for f in frames)
    # the frames were restored (changed by the network), not copied
    assert np.abs(frames[0].astype(int) - in_frames[0].astype(int)).mean() > 2
    assert not leftovers(out)
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]


def test_restore_mixed_inputs(tmp_path, tiny_onnx):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "p.png"), image(20, 28, 4))
    single = tmp_path / "single.jpg"
    cv2.imwrite(str(single), image(21, 30, 5))
    write_video(tmp_path / "v.mp4", frames=3)
    out = tmp_path / "out"
    assert restore(folder, single, tmp_path / "v.mp4", "-o", out, "--model", tiny_onnx) == 0
    assert cv2.imread(str(out / "p.png")).shape == (20, 28, 3)
    assert cv2.imread(str(out / "single.jpg")).shape == (21, 30, 3)
    assert len(read_video(out / "v.mp4")[0]) == 3
    assert not leftovers(out)


def test_restore_video_progress_bar_unless_quiet(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "clip.mp4"
    write_video(src, frames=3)
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--model", str(tiny_onnx)]) == 0
    assert "clip.mp4: " in capsys.readouterr().err  # the per-video bar
    assert restore(src, "-o", out, "--model", tiny_onnx, "--force") == 0
    assert "clip.mp4: " not in capsys.readouterr().err
    assert len(read_video(out / "clip.mp4")[0]) == 3


def test_restore_bad_videos_among_good_files_one_model(tmp_path, tiny_onnx, capsys, monkeypatch):
    import mirnet.sdk.restorer

    opened = []

    class Counting(Restorer):
        def __init__(self, *args, **kwargs):
            opened.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mirnet.sdk.restorer, "Restorer", Counting)
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "a.mp4", frames=3)
    write_video(src / "b.mp4", frames=2)
    cv2.imwrite(str(src / "c.png"), image(seed=9))
    cv2.VideoWriter(str(src / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 32)).release()
    (src / "junk.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx) == 5  # refused inputs: exit 5
    err = capsys.readouterr().err
    assert f"{src / 'empty.avi'}: video holds no decodable frames" in err
    assert f"{src / 'junk.mp4'}: not a readable video" in err
    assert "restored 3 file(s)" in err and "2 failed" in err
    assert [len(read_video(out / n)[0]) for n in ("a.mp4", "b.mp4")] == [3, 2]
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "c.png"]
    assert len(opened) == 1  # the model is opened once for every file


def test_restore_video_interrupted_leaves_nothing(tmp_path, tiny_onnx, capsys, monkeypatch):
    from mirnet.sdk.cli import restore as cli_restore

    real = cli_restore.progress

    def interrupting(iterable=None, **kwargs):
        bar = real(iterable, **kwargs)
        if iterable is None:  # a video's frame bar: Ctrl-C at the third frame
            frames = []

            def update(n=1):
                frames.append(n)
                if len(frames) == 3:
                    raise KeyboardInterrupt
            bar.update = update
        return bar

    monkeypatch.setattr(cli_restore, "progress", interrupting)
    src = tmp_path / "clip.mp4"
    write_video(src, frames=6)
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx) == 130
    assert "mirnet: interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no output, no partial file


def test_restore_corrupt_image(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), image(seed=6))
    cv2.imwrite(str(src / "c.png"), image(seed=7))
    (src / "x.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx) == 5
    err = capsys.readouterr().err
    assert f"{src / 'x.png'}: not a readable image" in err
    assert "restored 2 file(s)" in err and "1 failed" in err
    assert (out / "a.png").is_file() and (out / "c.png").is_file()
    assert not (out / "x.png").exists()
    assert not leftovers(out)


def test_restore_existing_output_needs_force(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), image(seed=8))
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "a.png"
    existing.write_bytes(b"old bytes")
    assert restore(src, "-o", out, "--model", tiny_onnx) == 5
    err = capsys.readouterr().err
    assert str(existing) in err and "--force" in err
    assert existing.read_bytes() == b"old bytes"

    assert restore(src, "-o", out, "--model", tiny_onnx, "--force") == 0
    got = cv2.imread(str(existing))
    assert got is not None and got.shape == (20, 28, 3)


def test_restore_existing_output_among_others(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), image(seed=9))
    cv2.imwrite(str(src / "b.png"), image(seed=10))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    assert restore(src, "-o", out, "--model", tiny_onnx) == 5
    assert "a.png" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == b"keep me"
    assert cv2.imread(str(out / "b.png")).shape == (20, 28, 3)


def test_restore_refuses_output_equal_to_input(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), image(seed=11))
    before = (src / "a.png").read_bytes()
    for force in ([], ["--force"]):
        assert restore(src, "-o", src, "--model", tiny_onnx, *force) == 5
        err = capsys.readouterr().err
        assert "overwrite an input" in err
        assert (src / "a.png").read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_restore_missing_input_and_empty_folder(tmp_path, tiny_onnx, capsys):
    missing = tmp_path / "nope.png"
    assert restore(missing, "-o", tmp_path / "out", "--model", tiny_onnx) == 5
    err = capsys.readouterr().err
    assert str(missing) in err and "no such file" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore(empty, "-o", tmp_path / "out", "--model", tiny_onnx) == 5
    err = capsys.readouterr().err
    assert str(empty) in err and "no image or video" in err

    # a missing input among good ones: the good one is restored, exit code still 5
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), image(seed=12))
    assert restore(good, missing, "-o", tmp_path / "out", "--model", tiny_onnx) == 5
    assert str(missing) in capsys.readouterr().err
    assert (tmp_path / "out" / "good.png").is_file()


def test_restore_tile(tmp_path, tiny_onnx, capsys):
    src = tmp_path / "big.png"
    img = image(40, 56, 16)
    cv2.imwrite(str(src), img)
    out = tmp_path / "out"
    assert restore(src, "-o", out, "--model", tiny_onnx, "--tile", "48", "--tile-overlap", "32") == 0
    with Restorer(tiny_onnx, tile=48) as tiled, Restorer(tiny_onnx, tile=0) as whole:
        want = tiled.restore(img)
        assert not np.array_equal(want, whole.restore(img))  # 48 < 56: it really tiled
    np.testing.assert_array_equal(cv2.imread(str(out / "big.png")), want)
    # a tile not larger than the (default 32 px) overlap is an input error, not a traceback
    assert restore(src, "-o", out, "--model", tiny_onnx, "--tile", "16", "--force") == 5
    assert "tile=16" in capsys.readouterr().err


def test_restore_missing_model(tmp_path, capsys):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), image(seed=13))
    model = tmp_path / "missing.onnx"
    assert restore(src, "-o", tmp_path / "out", "--model", model) == 4
    err = capsys.readouterr().err
    assert "mirnet: error:" in err and str(model) in err and "neither an existing file" in err
    assert not (tmp_path / "out" / "a.png").exists()


# ---------------------------------------------------------------------------- info


@pytest.mark.parametrize("which", ["tiny_weights", "tiny_onnx"])
def test_info(which, request, capsys):
    path = request.getfixturevalue(which)
    kind = {"tiny_weights": "weights", "tiny_onnx": "onnx"}[which]
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert str(path) in text and f"({kind}, fp32)" in text
    assert sha256_file(path) in text
    assert "n_feat=16" in text and "multiples of 4" in text

    assert main(["info", str(path), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["kind"] == kind
    assert len(manifest["sha256"]) == 64 and manifest["sha256"] == sha256_file(path)
    assert manifest["config"]["n_feat"] == 16
    assert manifest["io"]["input"]["pad_multiple"] == 4
    if kind == "onnx":
        assert manifest["source"]["sha256"] == sha256_file(request.getfixturevalue("tiny_weights"))


def test_info_summarises_the_training_record(capsys):
    """The bundled model's training record is thousands of characters: info prints one short line,
    --json the full record."""
    assert main(["info", "denoise-lite"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.lstrip().startswith("training"))
    assert len(line) < 300 and "steps" in line and "camera model" in line and "--json" in line
    assert main(["info", "denoise-lite", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["training"]["data"]) >= 3


@pytest.mark.parametrize("gate, want", [
    ({"passed": True, "loss_db": 0.1238, "max_loss_db": 0.15, "n": 16, "data": "val", "runtime": "openvino bf16"},
     "gate      passed: loses 0.124 dB against ground truth (limit 0.15); 16 frame(s) of val, run on openvino bf16"),
    ({"passed": False, "loss_db": 0.7, "max_loss_db": 0.15, "n": 2, "data": "", "runtime": "ort"},
     "gate      FAILED (do not deploy): loses 0.700 dB against ground truth (limit 0.15); 2 frame(s), run on ort"),
    ({"status": "skipped", "reason": "--no-gate"}, "gate      skipped (--no-gate)")])
def test_info_shows_the_quality_gate(tiny_onnx, tmp_path, capsys, gate, want):
    """An artifact's manifest gate (quantize, build-engine --data) in one line: verdict, loss, frames, runtime."""
    from mirnet.sdk import artifact

    path = tmp_path / "q.onnx"
    shutil.copy(tiny_onnx, path)
    artifact.write_manifest(path, {**artifact.read_manifest(tiny_onnx), "file": path.name, "gate": gate})
    assert main(["info", str(path)]) == 0
    assert "  " + want in capsys.readouterr().out.splitlines()


def test_info_modified_artifact(tiny_onnx, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    shutil.copy(tiny_onnx, bad)
    shutil.copy(str(tiny_onnx) + ".json", str(bad) + ".json")
    with open(bad, "ab") as fh:
        fh.write(b"x")
    assert main(["info", str(bad)]) == 4
    assert "sha256" in capsys.readouterr().err
    assert main(["info", str(bad), "--no-verify"]) == 0


# ---------------------------------------------------------------------------- export


def test_export_onnx(tiny_weights, tiny_onnx, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out.onnx"
    assert main(["export", "onnx", str(tiny_weights), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert out.is_file() and (tmp_path / "out.onnx.json").is_file()
    manifest = json.loads((tmp_path / "out.onnx.json").read_text())
    assert manifest["kind"] == "onnx" and manifest["variant"] == "tiny"
    assert manifest["sha256"] == sha256_file(out)
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    assert manifest["source"]["sha256"] == sha256_file(tiny_weights)
    assert manifest["config"]["n_feat"] == 16
    # the export restores like the fixture's export
    img = image(20, 28, 14)
    with Restorer(out) as a, Restorer(tiny_onnx) as b:
        np.testing.assert_array_equal(a.restore(img), b.restore(img))

    before = out.read_bytes()
    assert main(["export", "onnx", str(tiny_weights), "-o", str(out)]) == 5
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", "onnx", str(tiny_weights), "-o", str(out), "--force"]) == 0
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


# ---------------------------------------------------------------------------- variants / version

EXPECTED_VARIANTS = {"lite", "nano", "real-denoising", "sr-x4", "defocus-dual-pixel"}


def test_variants(capsys):
    assert main(["variants"]) == 0
    text = capsys.readouterr().out
    for name in EXPECTED_VARIANTS:
        assert name in text
    assert "unshuffle=2" in text

    assert main(["variants", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["variant"]: row for row in rows}
    assert EXPECTED_VARIANTS <= set(by_name)
    assert by_name["sr-x4"]["scale"] == 4
    assert by_name["defocus-dual-pixel"]["in_channels"] == 6
    assert by_name["real-denoising"]["n_feat"] == 80
    assert by_name["nano"]["unshuffle"] == 2


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"mirnet-edge {__version__}"


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["restore", "x.png"])  # -o is required
    assert exc.value.code == 2
    assert "--output" in capsys.readouterr().err


# ---------------------------------------------------------------------------- console script


def test_console_script(tmp_path, tiny_onnx):
    exe = shutil.which("mirnet") or str(Path(sys.executable).parent / "mirnet")
    if not os.access(exe, os.X_OK):
        pytest.skip("the mirnet console script is not installed")
    src = tmp_path / "a.png"
    img = image(20, 28, 15)
    cv2.imwrite(str(src), img)
    out = tmp_path / "out"
    proc = subprocess.run([exe, "restore", str(src), "-o", str(out), "--model", str(tiny_onnx), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with Restorer(tiny_onnx) as r:
        np.testing.assert_array_equal(cv2.imread(str(out / "a.png")), r.restore(img))
    proc = subprocess.run([exe, "restore", str(src), "-o", str(out), "--model", str(tiny_onnx), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5 and "--force" in proc.stderr
    proc = subprocess.run([exe, "info", str(tmp_path / "missing.onnx")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 4 and "missing.onnx" in proc.stderr


def test_restore_and_stream_take_the_gray_model(tmp_path, capsys):
    """`--gray-model`: a gray image from a monochrome camera restores on the bundled model's gray
    specialist by default and on the colour model with `none`; `mirnet stream` names the specialist."""
    gray = np.random.default_rng(3).integers(0, 256, (24, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "ir.png"), gray)
    outs = {}
    for choice in ("auto", "none"):
        assert restore(tmp_path / "ir.png", "-o", tmp_path / choice, "--gray-model", choice) == 0
        outs[choice] = cv2.imread(str(tmp_path / choice / "ir.png"), cv2.IMREAD_UNCHANGED)
    with Restorer("denoise-lite") as r, Restorer("denoise-lite", gray_model=None) as plain:
        np.testing.assert_array_equal(outs["auto"], r.restore(gray))
        np.testing.assert_array_equal(outs["none"], plain.restore(gray))
    assert not np.array_equal(outs["auto"], outs["none"])
    capsys.readouterr()
    assert main(["stream", str(tmp_path / "ir.png"), "null://", "--model", "denoise-lite"]) == 0
    assert "gray frames: denoise-lite-gray.onnx on " in capsys.readouterr().err
