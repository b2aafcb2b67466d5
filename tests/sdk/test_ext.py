"""The C++ extension mirnet.sdk._ext reproduces mirnet.sdk.ops.reference bit-exactly, validates its
arguments with errors that name the bad value, and releases the GIL while a kernel runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mirnet.sdk import ops
from mirnet.sdk.errors import InputError, MissingDependencyError
from mirnet.sdk.ops import native, reference as ref

try:
    from mirnet.sdk import _ext
except ImportError as exc:  # the extension is part of the product: a missing build is a failure
    pytest.fail(f"mirnet.sdk._ext is not built ({exc}); reinstall with: pip install -e .", pytrace=False)

RNG = np.random.default_rng(2024)
MAXV = {np.uint8: 255, np.uint16: 65535}
SIZES = [(1, 1), (3, 5), (17, 31), (241, 321)]


def rand_img(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return RNG.integers(0, MAXV[dtype] + 1, size=shape, dtype=dtype)


def assert_bits_equal(a: np.ndarray, b: np.ndarray) -> None:
    """Same shape, dtype and bytes (float comparisons by bit pattern, so -0.0 != 0.0)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.flags.c_contiguous
    ints = {1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize]
    np.testing.assert_array_equal(a.view(ints), b.view(ints))


def test_backend() -> None:
    if os.environ.get("MIRNET_OPS", "").lower() == "numpy":
        assert ops.BACKEND == "numpy" and native.EXT is None
    else:
        assert ops.BACKEND == "cpp" and native.EXT is _ext


# ---------------------------------------------------------------- preprocess


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("hw", SIZES)
def test_preprocess_exact(hw: tuple[int, int], order: str, dtype: type) -> None:
    img = rand_img(hw + (3,), dtype)
    for multiple in (4, 8) if hw != (241, 321) else (8,):
        for out in ("float32", "float16"):
            got = _ext.preprocess(img, order, multiple, out)
            assert_bits_equal(got, ref.preprocess(img, order=order, multiple=multiple, dtype=out))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_preprocess_every_value(dtype: type) -> None:
    n = MAXV[dtype] + 1
    side = int(np.sqrt(n))
    img = np.stack([np.arange(n, dtype=dtype).reshape(side, side)] * 3, axis=-1)
    img[..., 0] = img[..., 0][::-1]
    for out in ("float32", "float16"):
        assert_bits_equal(_ext.preprocess(img, "rgb", 1, out), ref.preprocess(img, order="rgb", multiple=1, dtype=out))


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_preprocess_batch_exact(order: str) -> None:
    imgs = [rand_img((17, 31, 3), np.uint16) for _ in range(3)]
    expected = ref.preprocess_batch(imgs, order=order, multiple=16)
    assert_bits_equal(_ext.preprocess(np.stack(imgs), order, 16, "float32"), expected)
    assert_bits_equal(ops.preprocess_batch(imgs, order=order, multiple=16), expected)
    assert_bits_equal(ops.preprocess_batch(imgs[:1], order=order, multiple=16), expected[:1])


def test_public_api_matches_reference_on_views() -> None:
    img = rand_img((20, 30, 3), np.uint8)
    view = img[2:19, ::-1]  # not contiguous: the wrapper copies, the numbers stay the same
    assert_bits_equal(ops.preprocess(view, order="rgb", multiple=8),
                      ref.preprocess(view, order="rgb", multiple=8))
    t = ref.preprocess(img, dtype=np.float16)
    assert_bits_equal(ops.postprocess(t[0, :, 1:, 2:], (17, 26), order="rgb"),
                      ref.postprocess(t[0, :, 1:, 2:], (17, 26), order="rgb"))


def test_thread_count_does_not_change_numbers() -> None:
    img = rand_img((241, 321, 3), np.uint8)
    before = _ext.get_num_threads()
    try:
        _ext.set_num_threads(1)
        one = _ext.preprocess(img, "bgr", 4, "float32")
        _ext.set_num_threads(3)
        assert _ext.get_num_threads() == 3
        three = _ext.preprocess(img, "bgr", 4, "float32")
    finally:
        _ext.set_num_threads(0)
    assert _ext.get_num_threads() == before
    assert_bits_equal(one, three)


# ---------------------------------------------------------------- postprocess


def tricky_tensor(shape: tuple[int, ...], scale: int) -> np.ndarray:
    """Random values over [-0.25, 1.25] plus exact halves k+0.5, their float neighbours, NaN, +-inf."""
    t = RNG.uniform(-0.25, 1.25, size=shape).astype(np.float32)
    flat = t.reshape(-1)
    k = RNG.integers(0, scale, size=flat.size // 3)
    halves = ((k + 0.5) / scale).astype(np.float32)
    flat[: k.size] = halves
    flat[k.size: 2 * k.size] = np.nextafter(halves, np.float32(2))
    flat[2 * k.size: 2 * k.size + 4] = [np.nan, np.inf, -np.inf, -0.0]
    RNG.shuffle(flat)
    return t


@pytest.mark.parametrize("out_dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("hw", SIZES)
def test_postprocess_exact(hw: tuple[int, int], order: str, out_dtype: type) -> None:
    hp, wp = hw[0] + 3, hw[1] + 2
    t = tricky_tensor((1, 3, hp, wp), MAXV[out_dtype])
    with np.errstate(invalid="ignore"):
        for tt in (t, t.astype(np.float16)):
            expected = ref.postprocess(tt, hw, order=order, out_dtype=out_dtype)
            assert_bits_equal(_ext.postprocess(tt, hw, order, np.dtype(out_dtype).name)[0], expected)
            assert_bits_equal(ops.postprocess(tt[0], hw, order=order, out_dtype=out_dtype), expected)


@pytest.mark.parametrize("out_dtype", [np.uint8, np.uint16])
def test_postprocess_every_float16(out_dtype: type) -> None:
    t = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(1, 1, 256, 256)
    t = np.concatenate([t, t[:, :, ::-1], t[:, :, :, ::-1]], axis=1)
    with np.errstate(invalid="ignore"):
        expected = ref.postprocess(t, (256, 256), order="rgb", out_dtype=out_dtype)
    assert_bits_equal(ops.postprocess(t, (256, 256), order="rgb", out_dtype=out_dtype), expected)


def test_postprocess_batch_exact() -> None:
    t = tricky_tensor((4, 3, 20, 36), 255)
    with np.errstate(invalid="ignore"):
        expected = ref.postprocess_batch(t, (17, 31), order="bgr", out_dtype=np.uint8)
    got = ops.postprocess_batch(t, (17, 31), order="bgr", out_dtype=np.uint8)
    assert isinstance(got, list) and len(got) == 4
    for g, e in zip(got, expected):
        assert_bits_equal(g, e)


def test_round_trip_through_ext() -> None:
    for dtype in (np.uint8, np.uint16):
        img = rand_img((33, 47, 3), dtype)
        for f in ("float32", "float16"):
            if dtype == np.uint16 and f == "float16":
                continue  # float16 cannot hold 16-bit precision
            t = _ext.preprocess(img, "bgr", 8, f)
            np.testing.assert_array_equal(_ext.postprocess(t, (33, 47), "bgr", np.dtype(dtype).name)[0], img)


# ---------------------------------------------------------------- camera formats


def nv12_frame(h: int, w: int) -> np.ndarray:
    return rand_img((h * 3 // 2, w), np.uint8)


@pytest.mark.parametrize("hw", [(2, 2), (4, 6), (16, 30), (18, 34), (240, 320)])
@pytest.mark.parametrize("multiple", [1, 4, 16])
def test_nv12_yuyv_exact(hw: tuple[int, int], multiple: int) -> None:
    nv12, yuyv = nv12_frame(*hw), rand_img(hw + (2,), np.uint8)
    for dtype in ("float32", "float16"):
        expected = ref.preprocess_nv12(nv12, multiple=multiple, dtype=dtype)
        assert_bits_equal(_ext.preprocess_nv12(nv12, multiple, dtype), expected)
        assert_bits_equal(ops.preprocess_nv12(nv12, multiple=multiple, dtype=dtype), expected)
        expected = ref.preprocess_yuyv(yuyv, multiple=multiple, dtype=dtype)
        assert_bits_equal(_ext.preprocess_yuyv(yuyv, multiple, dtype), expected)
        assert_bits_equal(ops.preprocess_yuyv(yuyv, multiple=multiple, dtype=dtype), expected)


def test_yuv_every_chroma_pair() -> None:
    # YUYV rows = U, pixel pairs = V: all 65536 (U, V) pairs, each with two random Y values
    frame = np.empty((256, 512, 2), np.uint8)
    frame[:, :, 0] = rand_img((256, 512), np.uint8)
    frame[:, 0::2, 1] = np.arange(256, dtype=np.uint8)[:, None]
    frame[:, 1::2, 1] = np.arange(256, dtype=np.uint8)[None, :]
    assert_bits_equal(_ext.preprocess_yuyv(frame, 1, "float32"), ref.preprocess_yuyv(frame, multiple=1))
    rgb = ref.yuyv_to_rgb(frame)
    assert rgb.dtype == np.float32 and rgb.min() >= 0 and rgb.max() <= 1


def test_yuv_reference_layout_and_colours() -> None:
    # BT.601 limited range: Y=16 black, Y=235 white (exactly), neutral chroma 128
    nv12 = np.array([[16, 235, 16, 16], [16, 16, 16, 16], [128, 128, 128, 128]], np.uint8)
    rgb = ops.nv12_to_rgb(nv12)
    assert rgb.shape == (2, 4, 3) and rgb[0, 1].tolist() == [1.0, 1.0, 1.0] and (rgb[1] == 0).all()
    # pure red in BT.601 8-bit is about (Y, Cb, Cr) = (81, 90, 240)
    yuyv = np.array([[[81, 90], [81, 240]]], np.uint8)
    r, g, b = ops.yuyv_to_rgb(yuyv)[0, 1]
    assert r > 0.99 and g == 0 and b < 0.01
    # NV12 chroma is shared by 2x2 blocks, YUYV chroma by 2x1 pairs
    frame = nv12_frame(4, 4)
    frame[:4] = 128
    out = ops.preprocess_nv12(frame, multiple=1)[0]
    for c in range(3):
        blocks = out[c].reshape(2, 2, 2, 2)
        assert (blocks == blocks[:, :1, :, :1]).all()
    t = ops.preprocess_yuyv(rand_img((3, 8, 2), np.uint8), multiple=8)
    assert t.shape == (1, 3, 8, 8)


# ---------------------------------------------------------------- tiling


def test_tile_accumulate_and_normalize_exact() -> None:
    acc = RNG.random((2, 3, 20, 28), dtype=np.float32)
    wsum = RNG.random((20, 28), dtype=np.float32) + 0.5
    out = RNG.normal(size=(2, 3, 12, 16)).astype(np.float32)
    wt = RNG.random((12, 16), dtype=np.float32)
    a_ref, w_ref = acc.copy(), wsum.copy()
    a_ref[:, :, 5:17, 9:25] += out * wt
    w_ref[5:17, 9:25] += wt
    _ext.tile_accumulate(acc, wsum, out, wt, 5, 9)
    assert_bits_equal(acc, a_ref)
    assert_bits_equal(wsum, w_ref)
    a_ref /= w_ref
    _ext.tile_normalize(acc, wsum)
    assert_bits_equal(acc, a_ref)


@pytest.mark.parametrize("tile,overlap,scale", [(16, 4, 1), (20, 6, 1), (16, 4, 2), (24, 8, 3)])
def test_run_tiled_same_numbers_as_numpy(monkeypatch: pytest.MonkeyPatch, tile: int, overlap: int,
                                         scale: int) -> None:
    x = RNG.random((2, 3, 44, 60), dtype=np.float32)

    def fn(t: np.ndarray) -> np.ndarray:
        up = np.repeat(np.repeat(t, scale, axis=2), scale, axis=3)
        return np.concatenate([np.sqrt(up), up * up - 0.25], axis=1)[:, :, :, ::-1]  # non-contiguous

    fast = ops.run_tiled(x, fn, tile=tile, overlap=overlap, scale=scale)
    monkeypatch.setattr(native, "EXT", None)
    slow = ops.run_tiled(x, fn, tile=tile, overlap=overlap, scale=scale)
    assert_bits_equal(fast, slow)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call,exc,needle",
    [
        (lambda: _ext.preprocess([[1, 2, 3]], "bgr", 4, "float32"), TypeError, "numpy.ndarray, got list"),
        (lambda: _ext.preprocess(np.zeros((4, 4, 4), np.uint8), "bgr", 4, "float32"), ValueError, r"\(4, 4, 4\)"),
        (lambda: _ext.preprocess(np.zeros((0, 4, 3), np.uint8), "bgr", 4, "float32"), ValueError, r"\(0, 4, 3\)"),
        (lambda: _ext.preprocess(np.zeros((4, 4, 3), np.int32), "bgr", 4, "float32"), ValueError, "int32"),
        (lambda: _ext.preprocess(np.zeros((4, 4, 3), ">u2"), "bgr", 4, "float32"), ValueError, ">u2"),
        (lambda: _ext.preprocess(np.zeros((4, 8, 3), np.uint8)[:, ::2], "bgr", 4, "float32"), ValueError,
         "C-contiguous"),
        (lambda: _ext.preprocess(np.zeros((4, 4, 3), np.uint8), "BGR", 4, "float32"), ValueError, "'BGR'"),
        (lambda: _ext.preprocess(np.zeros((4, 4, 3), np.uint8), "bgr", 0, "float32"), ValueError, "multiple"),
        (lambda: _ext.preprocess(np.zeros((4, 4, 3), np.uint8), "bgr", 4, "float64"), ValueError, "float64"),
        (lambda: _ext.postprocess(np.zeros((3, 4, 4), np.float64), (4, 4), "bgr", "uint8"), ValueError, "float64"),
        (lambda: _ext.postprocess(np.zeros((4, 4, 4), np.float32), (4, 4), "bgr", "uint8"), ValueError,
         r"\(4, 4, 4\)"),
        (lambda: _ext.postprocess(np.zeros((3, 4, 4), np.float32), (5, 4), "bgr", "uint8"), ValueError, r"\(5, 4\)"),
        (lambda: _ext.postprocess(np.zeros((3, 4, 4), np.float32), (4,), "bgr", "uint8"), TypeError, "out_hw"),
        (lambda: _ext.postprocess(np.zeros((3, 4, 4), np.float32), (4, 4), "bgr", "int8"), ValueError, "int8"),
        (lambda: _ext.preprocess_nv12(np.zeros((5, 4), np.uint8), 4, "float32"), ValueError, r"\(5, 4\)"),
        (lambda: _ext.preprocess_nv12(np.zeros((6, 5), np.uint8), 4, "float32"), ValueError, r"\(6, 5\)"),
        (lambda: _ext.preprocess_yuyv(np.zeros((4, 4, 3), np.uint8), 4, "float32"), ValueError, r"\(4, 4, 3\)"),
        (lambda: _ext.preprocess_yuyv(np.zeros((4, 4, 2), np.uint16), 4, "float32"), ValueError, "uint16"),
        (lambda: _ext.tile_accumulate(np.zeros((1, 1, 4, 4), np.float32), np.zeros((4, 4), np.float32),
                                      np.zeros((1, 1, 2, 2), np.float32), np.zeros((2, 2), np.float32), 3, 0),
         ValueError, r"\(y0, x0\) = \(3, 0\)"),
        (lambda: _ext.tile_accumulate(np.zeros((1, 1, 4, 4), np.float32), np.zeros((4, 5), np.float32),
                                      np.zeros((1, 1, 2, 2), np.float32), np.zeros((2, 2), np.float32), 0, 0),
         ValueError, r"wsum.*\(4, 5\)"),
        (lambda: _ext.tile_normalize(np.zeros((1, 1, 4, 4), np.float32)[:, :, ::-1], np.ones((4, 4), np.float32)),
         ValueError, "acc must be C-contiguous"),
    ],
)
def test_ext_errors_name_the_problem(call, exc: type, needle: str) -> None:
    with pytest.raises(exc, match=needle):
        call()


def test_ext_rejects_read_only_accumulator() -> None:
    acc = np.zeros((1, 1, 4, 4), np.float32)
    acc.flags.writeable = False
    with pytest.raises(ValueError, match="acc must be writeable"):
        _ext.tile_normalize(acc, np.ones((4, 4), np.float32))


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: ops.preprocess(np.zeros((4, 4, 3), np.int32)), "int32"),
        (lambda: ops.preprocess(np.zeros((4, 4, 3), np.uint8), order="BGR"), r"'bgr', 'rgb'.*'BGR'"),
        (lambda: ops.preprocess(np.zeros((4, 4, 3), np.uint8), multiple=0), "multiple"),
        (lambda: ops.preprocess_batch([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)]),
         r"imgs\[1\]"),
        (lambda: ops.postprocess(np.zeros((3, 4, 4), np.float32), (9, 4)), "out_hw"),
        (lambda: ops.postprocess(np.zeros((2, 3, 4, 4), np.float32), (4, 4)), "postprocess_batch"),
        (lambda: ops.preprocess_nv12(np.zeros((6, 3), np.uint8)), r"nv12.*\(6, 3\)"),
        (lambda: ops.preprocess_yuyv(np.zeros((4, 4), np.uint8)), r"yuyv.*\(4, 4\)"),
    ],
)
def test_public_api_raises_input_error(call, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        call()


def test_mirnet_ops_env_selects_backend() -> None:
    code = "import mirnet.sdk.ops as o; print(o.BACKEND)"
    env = dict(os.environ, MIRNET_OPS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "numpy", out.stderr
    env["MIRNET_OPS"] = "fortran"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "MIRNET_OPS='fortran'" in out.stderr and "'numpy'" in out.stderr


def test_cuda_helpers_without_device() -> None:
    if _ext.cuda_available():
        pytest.skip("a CUDA device is present: tests/gpu covers the CUDA kernels")
    assert ops.cuda.available() is False
    assert ops.cuda.kernels_built() is _ext.has_cuda_kernels
    assert ops.cuda.info()["error"]
    with pytest.raises(MissingDependencyError, match="CUDA"):
        ops.cuda.preprocess(np.zeros((4, 4, 3), np.uint8))


# ---------------------------------------------------------------- GIL


def test_gil_released_during_kernel() -> None:
    """While one thread runs a long kernel, another Python thread keeps running.

    A held GIL would stall the main thread's loop for a whole kernel call, so the longest gap
    between its iterations would be about one call; released, gaps stay at scheduler/GIL-switch
    scale. One OpenMP thread keeps the two cores from being oversubscribed.
    """
    _ext.set_num_threads(1)
    try:
        img = rand_img((1, 1080, 1920, 3), np.uint16)
        call = 0.0
        while True:  # a kernel call long enough to tell the cases apart even on a loaded machine
            t0 = time.perf_counter()
            _ext.preprocess(img, "bgr", 4, "float32")
            call = time.perf_counter() - t0
            if call >= 0.15 or img.shape[0] >= 8:
                break
            img = np.concatenate([img, img])
        done = threading.Event()

        def work() -> None:
            for _ in range(3):
                _ext.preprocess(img, "bgr", 4, "float32")
            done.set()

        worker = threading.Thread(target=work)
        last = time.perf_counter()
        worker.start()
        gap = 0.0
        while not done.is_set():
            now = time.perf_counter()
            gap, last = max(gap, now - last), now
        worker.join()
    finally:
        _ext.set_num_threads(0)
    assert gap < 0.5 * call, f"main thread stalled {gap * 1e3:.0f} ms during a {call * 1e3:.0f} ms kernel call"
