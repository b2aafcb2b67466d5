"""Tests for mirnet.sdk.ops: reference pre/post-processing, formats and tiling."""

from __future__ import annotations

import numpy as np
import pytest

from mirnet.sdk.ops import (
    ImageKind,
    feather_weights,
    from_rgb3,
    pad_amount,
    plan_tile,
    postprocess,
    postprocess_batch,
    preprocess,
    preprocess_batch,
    run_tiled,
    tile_starts,
    to_rgb3,
)

RNG = np.random.default_rng(1234)
SIZES = [(1, 1), (3, 5), (17, 31), (240, 321)]
MAXV = {np.uint8: 255, np.uint16: 65535}


def rand_img(h: int, w: int, dtype: type, c: int = 3) -> np.ndarray:
    shape = (h, w) if c == 0 else (h, w, c)
    return RNG.integers(0, MAXV[dtype] + 1, size=shape, dtype=dtype)


# ---------------------------------------------------------------- reference


def test_pad_amount() -> None:
    assert pad_amount(4, 8, 4) == (0, 0)
    assert pad_amount(1, 1, 4) == (3, 3)
    assert pad_amount(17, 31, 8) == (7, 1)
    assert pad_amount(5, 5, 1) == (0, 0)
    with pytest.raises(ValueError, match="multiple"):
        pad_amount(4, 4, 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("hw", SIZES)
def test_round_trip_exact(hw: tuple[int, int], order: str, dtype: type) -> None:
    img = rand_img(*hw, dtype)
    t = preprocess(img, order=order)
    out = postprocess(t, hw, order=order, out_dtype=dtype)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_every_value(dtype: type) -> None:
    n = MAXV[dtype] + 1
    side = int(np.sqrt(n))
    img = np.repeat(np.arange(n, dtype=dtype).reshape(side, side, 1), 3, axis=2)
    out = postprocess(preprocess(img, multiple=1), (side, side), out_dtype=dtype)
    np.testing.assert_array_equal(out, img)


def test_preprocess_layout_and_values() -> None:
    img = rand_img(6, 7, np.uint8)
    t = preprocess(img, order="bgr", multiple=4)
    assert t.shape == (1, 3, 8, 8) and t.dtype == np.float32 and t.flags.c_contiguous
    expected = img.astype(np.float32) * np.float32(1 / 255)
    # bgr input -> channel 0 of the tensor is R, i.e. input channel 2
    for c in range(3):
        np.testing.assert_array_equal(t[0, c, :6, :7], expected[:, :, 2 - c])
    t_rgb = preprocess(img, order="rgb", multiple=4)
    np.testing.assert_array_equal(t_rgb[0, 0], t[0, 2])
    assert t.min() >= 0 and t.max() <= 1


def test_preprocess_multiplies_by_float32_reciprocal() -> None:
    img = np.full((1, 1, 3), 3, np.uint8)
    v = preprocess(img, multiple=1)[0, 0, 0, 0]
    assert v == np.float32(3) * np.float32(1 / 255)
    assert v != np.float32(3) / np.float32(255)  # 3 is a value where the two differ
    img16 = np.full((1, 1, 3), 65535, np.uint16)
    assert preprocess(img16, multiple=1)[0, 0, 0, 0] == np.float32(65535) * np.float32(1 / 65535)


@pytest.mark.parametrize("hw,multiple", [((17, 31), 4), ((6, 7), 8), ((33, 20), 16), ((8, 8), 4)])
def test_padding_matches_np_pad_reflect(hw: tuple[int, int], multiple: int) -> None:
    img = rand_img(*hw, np.uint8)
    pb, pr = pad_amount(*hw, multiple)
    ref = np.pad(img, ((0, pb), (0, pr), (0, 0)), mode="reflect")
    ref = ref[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(preprocess(img, multiple=multiple)[0], ref)


@pytest.mark.parametrize(
    "hw,multiple,rows,cols",
    [
        ((1, 1), 4, [0, 0, 0, 0], [0, 0, 0, 0]),
        ((1, 5), 4, [0, 0, 0, 0], [0, 1, 2, 3, 4, 3, 2, 1]),
        ((3, 2), 4, [0, 1, 2, 1], [0, 1, 0, 1]),
        ((3, 2), 8, [0, 1, 2, 1, 0, 1, 2, 1], [0, 1, 0, 1, 0, 1, 0, 1]),
        ((2, 3), 8, [0, 1, 0, 1, 0, 1, 0, 1], [0, 1, 2, 1, 0, 1, 2, 1]),
    ],
)
def test_padding_tiny_images(hw: tuple[int, int], multiple: int, rows: list[int], cols: list[int]) -> None:
    img = rand_img(*hw, np.uint8)
    t = preprocess(img, order="rgb", multiple=multiple)
    expected = img[np.ix_(rows, cols)].transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(t[0], expected)
    # the periodic rule is what np.pad(mode="reflect") does for these sizes too
    pb, pr = pad_amount(*hw, multiple)
    padded = np.pad(img, ((0, pb), (0, pr), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(padded, img[np.ix_(rows, cols)])


def test_float16_path() -> None:
    img = rand_img(17, 31, np.uint8)
    t16 = preprocess(img, dtype=np.float16)
    assert t16.dtype == np.float16 and t16.shape == (1, 3, 20, 32)
    np.testing.assert_array_equal(t16, preprocess(img).astype(np.float16))
    np.testing.assert_array_equal(postprocess(t16, (17, 31)), img)
    every = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    np.testing.assert_array_equal(postprocess(preprocess(every, dtype="float16"), (16, 16)), every)


@pytest.mark.filterwarnings("error")
def test_postprocess_clamps_and_nan() -> None:
    vals = np.array([-0.5, -np.inf, 1.5, np.inf, np.nan, 0.0, 1.0], np.float32)
    t = np.repeat(vals.reshape(1, 1, 7), 3, axis=0)
    assert postprocess(t, (1, 7))[0, :, 0].tolist() == [0, 0, 255, 255, 0, 0, 255]
    assert postprocess(t, (1, 7), out_dtype=np.uint16)[0, :, 0].tolist() == [0, 0, 65535, 65535, 0, 0, 65535]


def test_postprocess_rounding() -> None:
    # exact halves round up: 0.5*255 = 127.5 -> 128, 0.5*65535 = 32767.5 -> 32768
    half = np.full((3, 1, 1), 0.5, np.float32)
    assert postprocess(half, (1, 1))[0, 0, 0] == 128
    assert postprocess(half, (1, 1), out_dtype=np.uint16)[0, 0, 0] == 32768
    # float32((k+0.5)/S) * float32(S) is exactly k+0.5 here; half-up gives k+1 (rint would give k)
    for dtype, s in ((np.uint8, 255), (np.uint16, 65535)):
        t = np.repeat(np.float32([0.5 / s, 2.5 / s]).reshape(1, 1, 2), 3, axis=0)
        assert (t[0, 0] * np.float32(s)).tolist() == [0.5, 2.5]
        assert postprocess(t, (1, 2), out_dtype=dtype)[0, :, 0].tolist() == [1, 3]
    k = np.arange(255, dtype=np.float64)
    below = ((k + 0.49) / 255).astype(np.float32)
    above = ((k + 0.51) / 255).astype(np.float32)
    t = np.stack([below, above, below])[:, None, :]
    out = postprocess(t, (1, 255), order="rgb")
    np.testing.assert_array_equal(out[0, :, 0], k.astype(np.uint8))
    np.testing.assert_array_equal(out[0, :, 1], (k + 1).astype(np.uint8))


def test_postprocess_crop_order_and_shapes() -> None:
    t = RNG.random((1, 3, 8, 12), dtype=np.float32)
    rgb = postprocess(t, (5, 9), order="rgb")
    bgr = postprocess(t[0], (5, 9), order="bgr")
    assert rgb.shape == (5, 9, 3) and rgb.flags.c_contiguous and bgr.flags.c_contiguous
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    np.testing.assert_array_equal(rgb[:, :, 0], np.floor(t[0, 0, :5, :9] * np.float32(255) + np.float32(0.5)))
    with pytest.raises(ValueError, match="out_hw"):
        postprocess(t, (9, 9))
    with pytest.raises(ValueError, match="postprocess_batch"):
        postprocess(np.zeros((2, 3, 4, 4), np.float32), (4, 4))


def test_batch_forms() -> None:
    imgs = [rand_img(9, 11, np.uint16) for _ in range(3)]
    t = preprocess_batch(imgs, order="rgb")
    assert t.shape == (3, 3, 12, 12)
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(t[i], preprocess(img, order="rgb")[0])
    outs = postprocess_batch(t, (9, 11), order="rgb", out_dtype=np.uint16)
    assert isinstance(outs, list) and len(outs) == 3
    for out, img in zip(outs, imgs):
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, img)
    with pytest.raises(ValueError, match=r"imgs\[1\]"):
        preprocess_batch([imgs[0], rand_img(9, 10, np.uint16)])
    with pytest.raises(ValueError, match="empty"):
        preprocess_batch([])


def test_reference_errors() -> None:
    img = rand_img(4, 4, np.uint8)
    with pytest.raises(ValueError, match=r"order.*'bgr', 'rgb'.*'BGR'"):
        preprocess(img, order="BGR")
    with pytest.raises(ValueError, match="float64"):
        preprocess(img, dtype=np.float64)
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        preprocess(rand_img(4, 4, np.uint8, c=4))
    with pytest.raises(ValueError, match="int32"):
        preprocess(img.astype(np.int32))
    with pytest.raises(ValueError, match="int8"):
        postprocess(np.zeros((3, 4, 4), np.float32), (4, 4), out_dtype=np.int8)
    with pytest.raises(ValueError, match="float64"):
        postprocess(np.zeros((3, 4, 4)), (4, 4))


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_formats_gray_2d(dtype: type) -> None:
    img = rand_img(5, 7, dtype, c=0)
    img3, kind = to_rgb3(img)
    assert img3.shape == (5, 7, 3) and img3.dtype == dtype and img3.flags.c_contiguous
    assert kind.channels == 1 and kind.dtype == np.dtype(dtype).name
    assert not kind.is_float and kind.alpha is None and kind.gray_2d
    for c in range(3):
        np.testing.assert_array_equal(img3[:, :, c], img)
    back = from_rgb3(img3, kind)
    assert back.shape == (5, 7) and back.dtype == dtype
    np.testing.assert_array_equal(back, img)


def test_formats_gray_hw1() -> None:
    img = rand_img(5, 7, np.uint8, c=1)
    img3, kind = to_rgb3(img)
    assert img3.shape == (5, 7, 3) and kind.channels == 1
    back = from_rgb3(img3, kind)
    assert back.shape == (5, 7, 1)
    np.testing.assert_array_equal(back, img)


def test_formats_gray_mean_rounding() -> None:
    _, kind = to_rgb3(np.zeros((1, 4), np.uint8))
    out3 = np.array([[[1, 2, 2], [1, 1, 2], [0, 0, 1], [0, 1, 1]]], np.uint8)
    assert from_rgb3(out3, kind).tolist() == [[2, 1, 0, 1]]  # 5/3, 4/3, 1/3, 2/3
    _, kind16 = to_rgb3(np.zeros((1, 1), np.uint16))
    assert from_rgb3(np.array([[[65535, 65535, 65534]]], np.uint16), kind16).tolist() == [[65535]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_formats_rgba_alpha_exact(dtype: type) -> None:
    img = rand_img(6, 9, dtype, c=4)
    img3, kind = to_rgb3(img)
    assert img3.shape == (6, 9, 3) and kind.channels == 4
    np.testing.assert_array_equal(img3, img[:, :, :3])
    np.testing.assert_array_equal(kind.alpha, img[:, :, 3])
    back = from_rgb3(img3, kind)
    assert back.dtype == dtype and back.shape == img.shape and back.flags.c_contiguous
    np.testing.assert_array_equal(back, img)


def test_formats_colour_untouched_and_contiguous() -> None:
    img = rand_img(6, 9, np.uint16)
    img3, kind = to_rgb3(img[:, ::-1])  # non-contiguous view
    assert img3.flags.c_contiguous and kind.channels == 3
    np.testing.assert_array_equal(img3, img[:, ::-1])
    np.testing.assert_array_equal(from_rgb3(img3, kind), img[:, ::-1])


def test_formats_alpha_resized_for_super_resolution() -> None:
    img = rand_img(4, 5, np.uint8, c=4)
    img[:, :, 3] = 200
    img3, kind = to_rgb3(img)
    big = np.repeat(np.repeat(img3, 2, axis=0), 2, axis=1)
    back = from_rgb3(big, kind)
    assert back.shape == (8, 10, 4) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[:, :, :3], big)
    assert (back[:, :, 3] == 200).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [0, 1, 3, 4])
def test_formats_float(dtype: type, c: int) -> None:
    shape = (5, 6) if c == 0 else (5, 6, c)
    img = RNG.random(shape).astype(dtype)
    img3, kind = to_rgb3(img)
    assert img3.dtype == np.uint16 and kind.is_float and kind.dtype == np.dtype(dtype).name
    expected_u16 = np.floor(np.clip(img.astype(np.float32), 0, 1) * np.float32(65535) + np.float32(0.5))
    colour = expected_u16 if c == 0 else expected_u16[:, :, : min(c, 3)]
    np.testing.assert_array_equal(img3[:, :, 0], colour if c == 0 else colour[:, :, 0])
    back = from_rgb3(img3, kind)
    assert back.dtype == np.float32 and back.shape == img.shape
    np.testing.assert_allclose(back, img, atol=0.5 / 65535 + 1e-7, rtol=0)
    if c == 4:
        np.testing.assert_array_equal(back[:, :, 3], img[:, :, 3].astype(np.float32))


@pytest.mark.filterwarnings("error")
def test_formats_float_clipped() -> None:
    img = np.array([[-0.25, 1.5, np.nan, 0.5]], np.float32)
    img3, _ = to_rgb3(img)
    assert img3[0, :, 0].tolist() == [0, 65535, 0, 32768]


@pytest.mark.parametrize(
    "bad,needle",
    [
        (np.zeros((4, 4, 2), np.uint8), r"\(4, 4, 2\)"),
        (np.zeros((4, 4, 5), np.uint8), r"\(4, 4, 5\)"),
        (np.zeros((4, 4, 3), np.int32), "int32"),
        (np.zeros((4, 4), bool), "bool"),
        (np.zeros((0, 4, 3), np.uint8), r"\(0, 4, 3\)"),
        (np.zeros((1, 4, 4, 3), np.uint8), r"\(1, 4, 4, 3\)"),
        (np.zeros(7, np.uint8), r"\(7,\)"),
    ],
)
def test_formats_errors(bad: np.ndarray, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as exc:
        to_rgb3(bad)
    assert "HxWx4" in str(exc.value) and "uint16" in str(exc.value)


def test_from_rgb3_rejects_wrong_dtype() -> None:
    img3, kind = to_rgb3(rand_img(3, 3, np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        from_rgb3(img3.astype(np.uint16), kind)
    assert isinstance(kind, ImageKind)
    with pytest.raises(AttributeError):
        kind.channels = 4  # type: ignore[misc]


# ---------------------------------------------------------------- tiling


def test_tile_starts_examples() -> None:
    assert tile_starts(10, 4, 1) == [0, 3, 6]
    assert tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert tile_starts(100, 40, 8) == [0, 32, 60]
    assert tile_starts(40, 40, 8) == [0]
    assert tile_starts(3, 40, 8) == [0]


def test_tile_starts_properties() -> None:
    for length in range(1, 50):
        for tile in range(1, 20):
            for overlap in range(tile):
                s = tile_starts(length, tile, overlap)
                assert s[0] == 0
                if length <= tile:
                    assert s == [0]
                    continue
                assert s[-1] + tile == length
                assert all(b > a for a, b in zip(s, s[1:]))
                assert all(a + tile - b >= overlap for a, b in zip(s, s[1:]))
                covered = np.zeros(length, bool)
                for a in s:
                    covered[a : a + tile] = True
                assert covered.all()


@pytest.mark.parametrize("tile,overlap", [(4, 4), (4, 5), (4, -1), (0, 0)])
def test_tile_starts_validation(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=f"tile={tile}, overlap={overlap}"):
        tile_starts(10, tile, overlap)


def test_feather_weights() -> None:
    w = feather_weights(6, 8, 3, top=False, bottom=False, left=False, right=False)
    assert w.dtype == np.float32 and w.shape == (6, 8) and (w == 1).all()
    w = feather_weights(6, 8, 3, top=True, bottom=False, left=False, right=True)
    np.testing.assert_array_equal(w[:, 0], np.float32([0.25, 0.5, 0.75, 1, 1, 1]))
    np.testing.assert_array_equal(w[5], np.float32([1, 1, 1, 1, 1, 0.75, 0.5, 0.25]))
    assert w[0, 7] == np.float32(0.25) * np.float32(0.25)
    w = feather_weights(4, 4, 3, top=True, bottom=True, left=True, right=True)
    assert (w > 0).all() and w.max() <= 1
    np.testing.assert_array_equal(w[1], w[2])
    with pytest.raises(ValueError, match="tile=4, overlap=4"):
        feather_weights(4, 8, 4, top=True, bottom=False, left=False, right=False)


def box3(x: np.ndarray) -> np.ndarray:
    """3x3 mean with edge padding, per (N,C) plane."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[2:]
    return sum(p[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)) / np.float32(9)


def test_run_tiled_identity_and_pointwise() -> None:
    x = RNG.random((2, 3, 52, 76), dtype=np.float32)
    y = run_tiled(x, lambda t: t, tile=16, overlap=4)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1e-6
    fn = lambda t: np.concatenate([t * t + 1, np.sqrt(t)], axis=1)  # noqa: E731
    y = run_tiled(x, fn, tile=20, overlap=6)
    assert y.shape == (2, 6, 52, 76)
    assert np.abs(y - fn(x)).max() < 1e-6


def test_run_tiled_single_call_when_tile_covers_image() -> None:
    x = RNG.random((1, 3, 24, 40), dtype=np.float32)
    calls: list[tuple[int, ...]] = []

    def fn(t: np.ndarray) -> np.ndarray:
        calls.append(t.shape)
        return t * 2

    np.testing.assert_array_equal(run_tiled(x, fn, tile=64, overlap=100), x * 2)
    assert calls == [(1, 3, 24, 40)]


def test_run_tiled_non_square_tile_rounding() -> None:
    x = RNG.random((1, 3, 12, 72), dtype=np.float32)
    shapes: list[tuple[int, ...]] = []

    def fn(t: np.ndarray) -> np.ndarray:
        shapes.append(t.shape[2:])
        return t

    y = run_tiled(x, fn, tile=31, overlap=4)  # rounds down to 28, clamped to H=12
    assert set(shapes) == {(12, 28)}
    assert len(shapes) == len(tile_starts(72, 28, 4))
    assert np.abs(y - x).max() < 1e-6


def test_run_tiled_box_filter_matches_untiled() -> None:
    x = RNG.random((1, 2, 60, 84), dtype=np.float32)
    tile, overlap = 24, 4
    y = run_tiled(x, box3, tile=tile, overlap=overlap)
    ref = box3(x)
    bad = np.zeros(x.shape[2:], bool)
    for axis, length in ((0, 60), (1, 84)):
        for s in tile_starts(length, tile, overlap):
            for edge in ([s] if s > 0 else []) + ([s + tile - 1] if s + tile < length else []):
                if axis == 0:
                    bad[edge] = True
                else:
                    bad[:, edge] = True
    assert bad.any() and (~bad).sum() > 0.8 * bad.size
    assert np.abs(y - ref)[..., ~bad].max() < 1e-5
    assert np.abs(y - ref).max() < 0.25
    assert np.abs(y - ref)[..., bad].max() > 1e-5  # the seams really are approximate


@pytest.mark.parametrize("scale", [2, 3])
def test_run_tiled_scale(scale: int) -> None:
    x = RNG.random((1, 3, 36, 52), dtype=np.float32)

    def up(t: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(t, scale, axis=2), scale, axis=3)

    y = run_tiled(x, up, tile=16, overlap=4, scale=scale)
    assert y.shape == (1, 3, 36 * scale, 52 * scale)
    assert np.abs(y - up(x)).max() < 1e-6


@pytest.mark.parametrize("scale", [1, 2])
def test_run_tiled_blend_profile(scale: int) -> None:
    # two tiles along W sharing exactly 4 columns; fn outputs its call index as a constant,
    # so the result across the seam is the right tile's share wR / (wL + wR) = (i+1)/(4*scale+1)
    x = np.zeros((1, 1, 8, 28), np.float32)
    calls: list[int] = []

    def fn(t: np.ndarray) -> np.ndarray:
        calls.append(len(calls))
        return np.full((1, 1, t.shape[2] * scale, t.shape[3] * scale), calls[-1], np.float32)

    y = run_tiled(x, fn, tile=16, overlap=4, scale=scale)
    assert calls == [0, 1]
    ov = 4 * scale
    ramp = (np.arange(ov) + 1) / (ov + 1)
    expected = np.concatenate([np.zeros(12 * scale), ramp, np.ones(12 * scale)])
    for row in y[0, 0]:
        np.testing.assert_allclose(row, expected, atol=1e-6, rtol=0)


def test_run_tiled_validation() -> None:
    x = np.zeros((1, 3, 10, 12), np.float32)
    with pytest.raises(ValueError, match="multiples of 4"):
        run_tiled(x, lambda t: t, tile=8, overlap=2)
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="tile=8, overlap=8"):
        run_tiled(x, lambda t: t, tile=8, overlap=8)
    with pytest.raises(ValueError, match="fn returned shape"):
        run_tiled(x, lambda t: t[:, :, :4], tile=8, overlap=2)


def test_plan_tile() -> None:
    bpp = 64 * 4 * 12
    assert plan_tile(100, 100, channels_mid=64, budget_bytes=100 * 100 * bpp) is None
    budget = 300 * 300 * bpp
    t = plan_tile(1000, 2000, channels_mid=64, budget_bytes=budget, multiple=8)
    assert t == 296
    assert t * t * bpp <= budget < (t + 8) ** 2 * bpp
    assert plan_tile(1000, 1000, channels_mid=64, budget_bytes=10, multiple=4) == 64
    assert plan_tile(1000, 1000, channels_mid=64, budget_bytes=10, multiple=24) == 72
    with pytest.raises(ValueError, match="channels_mid=0"):
        plan_tile(10, 10, channels_mid=0, budget_bytes=10)
