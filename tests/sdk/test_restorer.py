"""Tests for mirnet.sdk.Restorer: numbers against a manual pipeline (ONNX Runtime), backends, image
kinds, tiling, errors, the torch-free import path and which runtime ``auto`` picks (the OpenVINO
side of that rule: tests/sdk/test_openvino_backend.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mirnet.sdk import ArtifactError, ConfigError, InputError, Restorer
from mirnet.sdk import restorer as restorer_mod
from mirnet.sdk.backends import cpu_backend
from mirnet.sdk.ops import postprocess, preprocess



def noisy(h: int, w: int, c: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise: a plausible image whose numbers are reproducible."""
    rng = np.random.default_rng(seed)
    maxv = 255 if dtype == np.uint8 else 65535
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.5 + 0.35 * np.sin(yy / 5.0)[..., None] * np.cos(xx[..., None] / 7.0 + np.arange(c))
    img = np.clip(base + rng.normal(0, 0.08, (h, w, c)), 0, 1) * maxv
    return np.rint(img).astype(dtype)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


@pytest.fixture(scope="module")
def ort_restorer(tiny_onnx):
    with Restorer(tiny_onnx, backend="ort") as r:
        yield r


# ---------------------------------------------------------------------------- numbers


def test_restore_matches_manual_pipeline(ort_restorer, tiny_onnx):
    ort = pytest.importorskip("onnxruntime")
    img = noisy(21, 30)
    out = ort_restorer.restore(img)
    assert out.shape == (21, 30, 3) and out.dtype == np.uint8
    assert ort_restorer.backend.name == "ort"

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(tiny_onnx), options, providers=["CPUExecutionProvider"])
    x = preprocess(img, order="bgr", multiple=4)
    assert x.shape == (1, 3, 24, 32)
    y = session.run(["output"], {"input": x})[0]
    want = postprocess(y, (21, 30), order="bgr", out_dtype=np.uint8)
    np.testing.assert_array_equal(out, want)
    # the network really changes the image (a random tiny net is not the identity)
    assert np.abs(out.astype(int) - img.astype(int)).max() > 0


def test_order_rgb_is_bgr_mirrored(ort_restorer):
    img = noisy(20, 28)
    bgr = ort_restorer.restore(img)
    rgb = ort_restorer.restore(np.ascontiguousarray(img[..., ::-1]), order="rgb")
    np.testing.assert_array_equal(rgb[..., ::-1], bgr)
    with pytest.raises(InputError, match="order"):
        ort_restorer.restore(img, order="xyz")


def test_ort_and_torch_agree(ort_restorer, tiny_weights):
    pytest.importorskip("torch")
    img = noisy(21, 30, seed=3)
    with Restorer(tiny_weights, backend="torch") as tr:
        assert tr.backend.name == "torch"
        b = tr.restore(img)
    a = ort_restorer.restore(img)
    assert a.shape == b.shape == img.shape and b.dtype == np.uint8
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


def test_restore_batch_equals_single(ort_restorer):
    imgs = [noisy(20, 28, seed=s) for s in range(3)] + [noisy(17, 23, seed=9)]
    outs = ort_restorer.restore_batch(imgs)
    assert len(outs) == 4
    for img, out in zip(imgs, outs):
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, ort_restorer.restore(img))
    # different inputs give different outputs (results are not mixed up between images)
    assert not np.array_equal(outs[0], outs[1])


# ---------------------------------------------------------------------------- image kinds


def test_gray_2d_and_hw1(ort_restorer):
    gray = noisy(21, 30, c=1, seed=4)[..., 0]
    as3 = ort_restorer.restore(np.repeat(gray[..., None], 3, axis=2))
    want = np.floor(as3.astype(np.float32).sum(axis=2) / np.float32(3) + np.float32(0.5)).astype(np.uint8)

    out2 = ort_restorer.restore(gray)
    assert out2.shape == (21, 30) and out2.dtype == np.uint8
    np.testing.assert_array_equal(out2, want)

    out1 = ort_restorer.restore(gray[..., None])
    assert out1.shape == (21, 30, 1) and out1.dtype == np.uint8
    np.testing.assert_array_equal(out1[..., 0], want)


def test_rgba_alpha_passthrough(ort_restorer):
    bgr = noisy(20, 28, seed=5)
    alpha = np.random.default_rng(5).integers(0, 256, (20, 28), dtype=np.uint8)
    bgra = np.concatenate([bgr, alpha[..., None]], axis=2)
    out = ort_restorer.restore(bgra)
    assert out.shape == (20, 28, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 3], alpha)
    np.testing.assert_array_equal(out[..., :3], ort_restorer.restore(bgr))


def test_uint16_keeps_dtype_and_matches_uint8(ort_restorer):
    img8 = noisy(21, 30, seed=6)
    img16 = img8.astype(np.uint16) * 257
    out16 = ort_restorer.restore(img16)
    assert out16.shape == img16.shape and out16.dtype == np.uint16
    out8 = ort_restorer.restore(img8)
    diff = np.abs(out16.astype(np.float64) / 257 - out8.astype(np.float64))
    assert diff.max() <= 2
    assert diff.mean() < 0.6
    # 16-bit precision is kept: results are not just 8-bit values scaled by 257
    assert np.any(out16 % 257 != 0)


def test_float_image(ort_restorer):
    f = noisy(21, 30, dtype=np.uint16, seed=8).astype(np.float32) / np.float32(65535)
    f[0, 0, 0] = 1.5   # clipped to 1
    f[0, 1, 0] = -0.2  # clipped to 0
    out = ort_restorer.restore(f)
    assert out.shape == f.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    u16 = np.floor(np.clip(f, 0, 1) * np.float32(65535) + np.float32(0.5)).astype(np.uint16)
    ref = ort_restorer.restore(u16).astype(np.float32) * np.float32(1 / 65535)
    np.testing.assert_array_equal(out, ref)
    # float64 input also comes back as float32
    assert ort_restorer.restore(f.astype(np.float64)).dtype == np.float32


# ---------------------------------------------------------------------------- tiling


def test_tiling(tiny_onnx, ort_restorer, monkeypatch):
    img = noisy(40, 56, seed=10)
    untiled = ort_restorer.restore(img)
    calls = []
    real = restorer_mod.run_tiled
    monkeypatch.setattr(restorer_mod, "run_tiled", lambda *a, **k: calls.append(k) or real(*a, **k))

    with Restorer(tiny_onnx, backend="ort", tile=16, tile_overlap=4) as r:
        tiled = r.restore(img)
    assert calls and calls[0]["tile"] == 16 and calls[0]["overlap"] == 4
    assert tiled.shape == img.shape and tiled.dtype == np.uint8
    assert psnr(tiled, untiled) > 25
    assert not np.array_equal(tiled, untiled)  # tiles really ran (global context differs)

    # an image no larger than the tile runs whole, exactly like untiled
    calls.clear()
    with Restorer(tiny_onnx, backend="ort", tile=64, tile_overlap=4) as r:
        np.testing.assert_array_equal(r.restore(img), untiled)
    assert not calls

    # automatic tiling kicks in under a tiny memory budget; tile=0 never tiles
    with Restorer(tiny_onnx, backend="ort", memory_budget_mb=0.01) as r:
        r.restore(img)
    assert len(calls) == 1
    calls.clear()
    with Restorer(tiny_onnx, backend="ort", tile=0, memory_budget_mb=0.01) as r:
        np.testing.assert_array_equal(r.restore(img), untiled)
    assert not calls


def test_negative_tile_raises(tiny_onnx):
    with pytest.raises(InputError, match="tile=-1"):
        Restorer(tiny_onnx, tile=-1)
    with pytest.raises(InputError, match="tile_overlap=-1"):
        Restorer(tiny_onnx, tile=16, tile_overlap=-1)


@pytest.mark.parametrize("tile, overlap", [(16, 32), (32, 32), (18, 16)])
def test_tile_not_larger_than_overlap_raises(tiny_onnx, tile, overlap):
    # used to pass the constructor and fail in restore() with a bare ValueError from run_tiled
    # (18 is rounded down to 16, the pad multiple being 4)
    with pytest.raises(InputError, match=f"tile={tile}.*tile_overlap={overlap}"):
        Restorer(tiny_onnx, tile=tile, tile_overlap=overlap)
    with Restorer(tiny_onnx, tile=tile, tile_overlap=tile // 4 * 4 - 1) as r:  # just below: fine
        assert r.restore(noisy(40, 56)).shape == (40, 56, 3)


# ---------------------------------------------------------------------------- errors


def test_bad_inputs(ort_restorer):
    with pytest.raises(InputError, match=r"shape \(20, 28, 2\)"):
        ort_restorer.restore(np.zeros((20, 28, 2), np.uint8))
    with pytest.raises(InputError, match="numpy array.*list"):
        ort_restorer.restore([[1, 2], [3, 4]])
    with pytest.raises(InputError, match="image 1: .*dtype int32"):
        ort_restorer.restore_batch([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.int32)])
    with pytest.raises(InputError, match="empty"):
        ort_restorer.restore(np.zeros((0, 5, 3), np.uint8))


def test_unknown_backend(tiny_onnx):
    with pytest.raises(ConfigError, match="tensorflow"):
        Restorer(tiny_onnx, backend="tensorflow")
    with pytest.raises(ConfigError, match="ort"):
        Restorer(tiny_onnx, backend="torch")  # ONNX only runs with ONNX Runtime


def test_engine_path_raises(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    # .engine routes to the TensorRT backend, which refuses an engine without its manifest
    with pytest.raises(ArtifactError, match="TensorRT engine without its manifest model.engine.json"):
        Restorer(engine)
    with pytest.raises(ArtifactError, match="neither an existing file nor a bundled model"):
        Restorer(tmp_path / "missing.onnx")


def test_onnx_without_manifest(tiny_onnx, tmp_path):
    lone = tmp_path / "lone.onnx"
    shutil.copy(tiny_onnx, lone)
    with pytest.raises(ArtifactError, match="manifest .*not found"):
        Restorer(lone)


def test_modified_onnx(tiny_onnx, tmp_path):
    bad = tmp_path / "tiny.onnx"
    shutil.copy(tiny_onnx, bad)
    shutil.copy(str(tiny_onnx) + ".json", str(bad) + ".json")
    Restorer(bad).close()  # an intact copy with its manifest loads
    with open(bad, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        Restorer(bad)


# ---------------------------------------------------------------------------- torch-free


def test_torch_free_subprocess(tiny_onnx):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import mirnet.sdk
        from mirnet.sdk import Restorer
        r = Restorer({str(tiny_onnx)!r})
        out = r.restore(np.full((21, 30, 3), 128, np.uint8))
        assert sys.modules["torch"] is None, "torch was replaced by a real module"
        print("shape", out.shape, out.dtype, r.backend.name)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    auto = "openvino" if importlib.util.find_spec("openvino") else "ort"
    assert f"shape (21, 30, 3) uint8 {auto}" in proc.stdout


def test_torch_free_weights_name_the_export(tiny_weights, tmp_path):
    """Without torch, PyTorch weights are refused with the export command and the install hint."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from mirnet.sdk import MissingDependencyError, Restorer
        try:
            Restorer({str(tiny_weights)!r})
        except MissingDependencyError as exc:
            print("missing:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MIRNET_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr
    assert "missing:" in proc.stdout and "mirnet export onnx" in proc.stdout
    assert "mirnet-edge[torch]" in proc.stdout
    assert not (tmp_path / "cache").exists()  # nothing exported behind the user's back


def test_import_does_not_import_torch():
    code = ("import sys, mirnet.sdk, mirnet.sdk.cli, mirnet.sdk.media, mirnet.sdk.model; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# ---------------------------------------------------------------------------- backend choice


def test_auto_runs_weights_on_torch(tiny_weights, tiny_onnx, tmp_path, monkeypatch, ort_restorer):
    pytest.importorskip("torch")
    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    img = noisy(20, 28, seed=11)
    with Restorer(tiny_weights) as r:
        assert r.backend.name == "torch"
        out = r.restore(img)
    assert not (tmp_path / "cache").exists()
    assert np.abs(out.astype(int) - ort_restorer.restore(img)).max() <= 1  # same network, two runtimes
    with pytest.raises(ConfigError, match="mirnet export onnx"):
        Restorer(tiny_weights, backend="ort")
    with pytest.raises(ConfigError, match="not torch"):
        Restorer(tiny_onnx, backend="torch")


def test_bundled_name_runs_its_shipped_onnx(tmp_path, monkeypatch):
    from mirnet.sdk import zoo

    monkeypatch.setenv("MIRNET_CACHE", str(tmp_path / "cache"))
    with Restorer(zoo.DEFAULT_MODEL) as r:
        assert r.backend.name == cpu_backend() and r.backend.path == zoo.bundled_onnx(zoo.DEFAULT_MODEL)
    assert not (tmp_path / "cache").exists()
    if importlib.util.find_spec("torch"):
        with Restorer(zoo.DEFAULT_MODEL, backend="torch") as r:
            assert r.backend.name == "torch"


# ---------------------------------------------------------------------------- gray model


def test_gray_frames_run_on_the_gray_model(tiny_onnx, gray_onnx, monkeypatch):
    """Gray frames (1 channel, or 3 channels within GRAY_TOLERANCE) take the gray model, colour
    frames the colour one, in one batch too; the frame path is kept for colour frames only."""
    gray = noisy(24, 40, c=1, seed=7)[..., 0]
    colour = noisy(24, 40, seed=8)
    tinted = np.repeat(gray[..., None], 3, axis=2)
    tinted[5, 6] += np.array([0, 2, 0], dtype=np.uint8)  # a chroma rounding's tint: still gray
    off = np.repeat(gray[..., None], 3, axis=2)
    off[5, 6] += np.array([0, 3, 0], dtype=np.uint8)  # more than GRAY_TOLERANCE: colour
    with Restorer(tiny_onnx, backend="ort", gray_model=None) as plain, \
            Restorer(gray_onnx, backend="ort") as gray_only, \
            Restorer(tiny_onnx, backend="ort", gray_model=gray_onnx) as r:
        assert plain.gray_description is None and r.gray_description == "tiny-gray.onnx on ort"
        by_gray, by_colour = gray_only.restore(gray), plain.restore(gray)
        assert psnr(by_gray, by_colour) < 40  # the two models differ on this frame
        np.testing.assert_array_equal(r.restore(gray), by_gray)
        np.testing.assert_array_equal(r.restore(colour), plain.restore(colour))
        out = r.restore(tinted)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        assert psnr(out[..., 0], by_gray) > 45  # the channel mean of a near-gray frame
        np.testing.assert_array_equal(r.restore(off), plain.restore(off))
        batch = r.restore_batch([colour, np.repeat(gray[..., None], 3, axis=2), colour])
        np.testing.assert_array_equal(batch[0], plain.restore(colour))
        np.testing.assert_array_equal(batch[1][..., 0], by_gray)
        np.testing.assert_array_equal(batch[2], batch[0])
        with pytest.raises(InputError, match="gray frames only.*sample 0 is a colour frame"):
            gray_only.restore(colour)
        monkeypatch.setattr(r.backend, "supports_device_io", True)
        assert r.frames_path([colour]) and not r.frames_path([colour, tinted])


def test_gray_model_errors_and_bundled_companion(tiny_onnx, gray_onnx, capsys):
    from mirnet.sdk import zoo
    from mirnet.sdk.cli import main

    with pytest.raises(ConfigError, match="takes 3 and returns 3 channels; a gray model takes and returns one"):
        Restorer(tiny_onnx, backend="ort", gray_model=tiny_onnx)
    with pytest.raises(ConfigError, match="gray_model=42"):
        Restorer(tiny_onnx, gray_model=42)
    with pytest.raises(ConfigError, match="the model is a gray model itself"):
        Restorer(gray_onnx, backend="ort", gray_model=gray_onnx)
    assert zoo.gray_companion(tiny_onnx) is None and zoo.gray_companion("no-such-model") is None
    companion = f"{zoo.DEFAULT_MODEL}-gray"
    assert zoo.gray_companion(zoo.DEFAULT_MODEL) == companion and zoo.gray_companion(companion) is None
    with Restorer(zoo.DEFAULT_MODEL) as r:
        assert r.gray_description.startswith(f"{companion}.onnx on ")
        assert r.gray_backend.input_spec.channels == 1
    assert main(["info", zoo.DEFAULT_MODEL]) == 0
    assert f"gray      gray frames (1 channel, or 3 equal ones) run on the bundled {companion}" in capsys.readouterr().out


def test_eval_and_stream_take_the_gray_model(tiny_onnx, gray_onnx, tmp_path, capsys):
    """`mirnet eval --gray-model` and `Stream(gray_model=...)` restore gray frames with it; `none`
    keeps them on the colour model."""
    import cv2

    from mirnet.sdk.cli import main
    from mirnet.sdk.stream import Stream

    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), noisy(32, 48, seed=20 + i))
    scores = {}
    for gray_model in (str(gray_onnx), "none"):
        assert main(["eval", "--model", str(tiny_onnx), "--backend", "ort", "--gray-model", gray_model,
                     "--data", str(folder), "--sigma", "25", "--gray", "--json"]) == 0
        scores[gray_model] = json.loads(capsys.readouterr().out)["psnr"]
    with Restorer(gray_onnx, backend="ort") as gray_only:
        frames = [noisy(32, 48, c=1, seed=30 + i)[..., 0] for i in range(3)]
        want = [gray_only.restore(f) for f in frames]
    got = []
    stats = Stream(iter(frames), lambda image, frame: got.append(image), model=tiny_onnx, backend="ort",
                   gray_model=gray_onnx, policy="block").run()
    assert scores[str(gray_onnx)] != pytest.approx(scores["none"], abs=0.01)
    assert stats["gray_model"] == "tiny-gray.onnx on ort" and len(got) == 3
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
