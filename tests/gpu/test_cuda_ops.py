"""CUDA kernels == CPU kernels == NumPy reference, bit for bit (needs a CUDA GPU; skipped otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from mirnet.sdk import ops
from mirnet.sdk.ops import reference as ref

pytestmark = pytest.mark.gpu

try:
    from mirnet.sdk import _ext
except ImportError as exc:
    pytest.skip(f"mirnet.sdk._ext is not built ({exc})", allow_module_level=True)
if not _ext.has_cuda_kernels:
    pytest.skip("mirnet.sdk._ext was built without CUDA kernels (no CUDA toolkit at build time)",
                allow_module_level=True)
if not _ext.cuda_available():
    pytest.skip(f"no usable CUDA device: {_ext.cuda_info()['error']}", allow_module_level=True)

RNG = np.random.default_rng(7)
MAXV = {np.uint8: 255, np.uint16: 65535}
SIZES = [(1, 1), (3, 5), (17, 31), (241, 321), (1080, 1920)]


def rand(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return RNG.integers(0, MAXV[dtype] + 1, size=shape, dtype=dtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    ints = {1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize]
    np.testing.assert_array_equal(a.view(ints), b.view(ints))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("hw", SIZES)
def test_preprocess(hw: tuple[int, int], order: str, dtype: type) -> None:
    img = rand((2,) + hw + (3,), dtype)
    for out in ("float32", "float16"):
        for multiple in (1, 8):
            same_bits(_ext.cuda_preprocess(img, order, multiple, out), _ext.preprocess(img, order, multiple, out))
    same_bits(ops.cuda.preprocess(img[0], order=order), ref.preprocess(img[0], order=order))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_preprocess_every_value(dtype: type) -> None:
    n = MAXV[dtype] + 1
    img = np.repeat(np.arange(n, dtype=dtype).reshape(1, n, 1), 3, axis=2)
    for out in ("float32", "float16"):
        same_bits(_ext.cuda_preprocess(img, "rgb", 1, out), ref.preprocess(img, order="rgb", multiple=1, dtype=out))


@pytest.mark.parametrize("out_dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("hw", SIZES)
def test_postprocess(hw: tuple[int, int], order: str, out_dtype: type) -> None:
    t = RNG.uniform(-0.25, 1.25, size=(2, 3, hw[0] + 3, hw[1] + 1)).astype(np.float32)
    flat = t.reshape(-1)
    k = RNG.integers(0, MAXV[out_dtype], size=flat.size // 2)
    flat[: k.size] = ((k + 0.5) / MAXV[out_dtype]).astype(np.float32)  # exact halves
    flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    name = np.dtype(out_dtype).name
    for tt in (t, t.astype(np.float16)):
        same_bits(_ext.cuda_postprocess(tt, hw, order, name), _ext.postprocess(tt, hw, order, name))


def test_postprocess_every_float16() -> None:
    t = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(1, 256, 256)
    t = np.concatenate([t, t[:, ::-1], t[:, :, ::-1]])
    for name in ("uint8", "uint16"):
        same_bits(_ext.cuda_postprocess(t, (256, 256), "rgb", name), _ext.postprocess(t, (256, 256), "rgb", name))


@pytest.mark.parametrize("hw", [(2, 2), (16, 30), (240, 320), (1080, 1920)])
def test_nv12_yuyv(hw: tuple[int, int]) -> None:
    nv12 = rand((hw[0] * 3 // 2, hw[1]), np.uint8)
    yuyv = rand(hw + (2,), np.uint8)
    for out in ("float32", "float16"):
        for multiple in (1, 16):
            same_bits(_ext.cuda_preprocess_nv12(nv12, multiple, out), _ext.preprocess_nv12(nv12, multiple, out))
            same_bits(_ext.cuda_preprocess_yuyv(yuyv, multiple, out), _ext.preprocess_yuyv(yuyv, multiple, out))
    same_bits(ops.cuda.preprocess_nv12(nv12), ref.preprocess_nv12(nv12))


def test_tile_accumulate_and_normalize() -> None:
    acc = RNG.random((2, 3, 40, 56), dtype=np.float32)
    wsum = RNG.random((40, 56), dtype=np.float32) + 0.5
    out = RNG.normal(size=(2, 3, 24, 32)).astype(np.float32)
    wt = RNG.random((24, 32), dtype=np.float32)
    a_gpu, w_gpu, a_cpu, w_cpu = acc.copy(), wsum.copy(), acc.copy(), wsum.copy()
    _ext.cuda_tile_accumulate(a_gpu, w_gpu, out, wt, 7, 11)
    _ext.tile_accumulate(a_cpu, w_cpu, out, wt, 7, 11)
    same_bits(a_gpu, a_cpu)
    same_bits(w_gpu, w_cpu)
    _ext.cuda_tile_normalize(a_gpu, w_gpu)
    _ext.tile_normalize(a_cpu, w_cpu)
    same_bits(a_gpu, a_cpu)


def test_tall_image_exceeds_one_grid() -> None:
    img = rand((600_000, 2, 3), np.uint8)  # > 65535 * 8 rows: the grid-stride loop must cover them
    same_bits(_ext.cuda_preprocess(img, "bgr", 4, "float32"), _ext.preprocess(img, "bgr", 4, "float32"))


def test_device_pointer_forms() -> None:
    img = rand((2, 37, 53, 3), np.uint8)
    expected = _ext.preprocess(img, "bgr", 8, "float16")
    with ops.cuda.buffer(img.nbytes) as src, ops.cuda.buffer(expected.nbytes) as dst:
        src.upload(img)
        shape = ops.cuda.preprocess_device(src.ptr, dst.ptr, 2, 37, 53, src_dtype=np.uint8, order="bgr",
                                           multiple=8, dst_dtype=np.float16, stream=0)
        assert shape == expected.shape
        ops.cuda.synchronize()
        got = np.empty_like(expected)
        dst.download(got)
        same_bits(got, expected)

        back = np.empty((2, 37, 53, 3), np.uint8)
        with ops.cuda.buffer(back.nbytes) as out:
            ops.cuda.postprocess_device(dst.ptr, out.ptr, 2, 40, 56, (37, 53), src_dtype=np.float16, order="bgr",
                                        dst_dtype=np.uint8)
            ops.cuda.synchronize()
            out.download(back)
        np.testing.assert_array_equal(back, img)

    nv12 = rand((48, 64), np.uint8)
    expected = _ext.preprocess_nv12(nv12, 4, "float32")
    with ops.cuda.buffer(nv12.nbytes) as src, ops.cuda.buffer(expected.nbytes) as dst:
        src.upload(nv12)
        assert ops.cuda.preprocess_nv12_device(src.ptr, dst.ptr, 32, 64) == expected.shape
        got = np.empty_like(expected)
        ops.cuda.synchronize()
        dst.download(got)
        same_bits(got, expected)


def test_device_pointer_with_cuda_python_stream() -> None:
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (pip install 'mirnet-edge[cuda]')")
    err, stream = cudart.cudaStreamCreate()
    assert err == cudart.cudaError_t.cudaSuccess
    try:
        img = rand((1, 64, 96, 3), np.uint16)
        expected = _ext.preprocess(img, "rgb", 4, "float32")
        with ops.cuda.buffer(img.nbytes) as src, ops.cuda.buffer(expected.nbytes) as dst:
            src.upload(img)
            ops.cuda.preprocess_device(src.ptr, dst.ptr, 1, 64, 96, src_dtype="uint16", order="rgb",
                                       stream=int(stream))
            ops.cuda.synchronize(int(stream))
            got = np.empty_like(expected)
            dst.download(got)
        same_bits(got, expected)
    finally:
        cudart.cudaStreamDestroy(stream)


def test_bad_arguments_raise_input_error() -> None:
    from mirnet.sdk.errors import InputError

    with pytest.raises(InputError, match="dst must be a device pointer"):
        ops.cuda.preprocess_device(1, 0, 1, 4, 4)
    with pytest.raises(InputError, match="h must be >= 1"):
        ops.cuda.preprocess_device(1, 1, 1, 0, 4)
    with pytest.raises(InputError, match=r"\(4, 4, 4\)"):
        ops.cuda.preprocess(np.zeros((4, 4, 4), np.uint8))
