"""Micro-benchmark of the pre/post-processing kernels: NumPy reference vs C++ (OpenMP) vs CUDA.

``run()`` returns one dict per (op, size): medians in milliseconds after warm-up (wall time
``*_ms`` and process CPU time over all threads ``*_cpu_ms``, which shows the work when other
processes share the cores), the speed-up of C++ over NumPy (wall time) and, when a CUDA device is usable, the CUDA time on host arrays (including the
copies) and on device buffers (kernel only, synchronised) with the bytes it reads and writes per
second. No CLI here: ``mirnet bench`` wires it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mirnet.sdk.ops import reference as ref
from mirnet.sdk.timing import time_fn

try:
    from mirnet.sdk import _ext
except ImportError:  # benchmark the reference alone
    _ext = None


def _medians(fn: Callable[[], Any], repeats: int, sync: Callable[[], Any] | None = None) -> tuple[float, float]:
    """Median wall time and median process CPU time (all threads) of ``repeats`` runs, in ms."""
    t = time_fn(fn, warmup=2, min_runs=max(1, repeats), max_runs=max(1, repeats), min_seconds=0.0, sync=sync,
                cpu=True)
    return t["p50_ms"], t["cpu_p50_ms"]


def _cases(h: int, w: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """(name, numpy fn, cpp fn, cuda host fn, cuda device launcher factory, bytes in/out)."""
    img = rng.integers(0, 256, (h, w, 3), np.uint8)
    t = ref.preprocess(img)
    hp, wp = t.shape[2:]
    cases = [
        dict(op="preprocess", detail="uint8 BGR HWC -> float32 RGB NCHW", src=img, dst_shape=t.shape,
             dst_dtype=np.float32,
             numpy=lambda: ref.preprocess(img),
             cpp=lambda: _ext.preprocess(img, "bgr", 4, "float32"),
             cuda=lambda: _ext.cuda_preprocess(img, "bgr", 4, "float32"),
             ptr=lambda s, d: _ext.cuda_preprocess_ptr(s, d, 1, h, w, "uint8", "bgr", 4, "float32", 0)),
        dict(op="preprocess_fp16", detail="uint8 BGR HWC -> float16 RGB NCHW", src=img, dst_shape=t.shape,
             dst_dtype=np.float16,
             numpy=lambda: ref.preprocess(img, dtype=np.float16),
             cpp=lambda: _ext.preprocess(img, "bgr", 4, "float16"),
             cuda=lambda: _ext.cuda_preprocess(img, "bgr", 4, "float16"),
             ptr=lambda s, d: _ext.cuda_preprocess_ptr(s, d, 1, h, w, "uint8", "bgr", 4, "float16", 0)),
        dict(op="postprocess", detail="float32 RGB NCHW -> uint8 BGR HWC", src=t, dst_shape=(h, w, 3),
             dst_dtype=np.uint8,
             numpy=lambda: ref.postprocess(t, (h, w)),
             cpp=lambda: _ext.postprocess(t, (h, w), "bgr", "uint8"),
             cuda=lambda: _ext.cuda_postprocess(t, (h, w), "bgr", "uint8"),
             ptr=lambda s, d: _ext.cuda_postprocess_ptr(s, d, 1, hp, wp, (h, w), "float32", "bgr", "uint8", 0)),
    ]
    if h % 2 == 0 and w % 2 == 0:
        nv12 = rng.integers(0, 256, (h * 3 // 2, w), np.uint8)
        cases.append(
            dict(op="preprocess_nv12", detail="NV12 -> float32 RGB NCHW", src=nv12, dst_shape=t.shape,
                 dst_dtype=np.float32,
                 numpy=lambda: ref.preprocess_nv12(nv12),
                 cpp=lambda: _ext.preprocess_nv12(nv12, 4, "float32"),
                 cuda=lambda: _ext.cuda_preprocess_nv12(nv12, 4, "float32"),
                 ptr=lambda s, d: _ext.cuda_preprocess_nv12_ptr(s, d, h, w, 4, "float32", 0)))
    return cases


def run(sizes: Sequence[tuple[int, int]] = ((1080, 1920),), repeats: int = 20, *,
        threads: int | None = None) -> list[dict[str, Any]]:
    """Benchmark every op at each ``(h, w)``; ``threads`` sets the C++ OpenMP threads (None: default)."""
    has_cpp = _ext is not None
    has_cuda = has_cpp and _ext.has_cuda_kernels and _ext.cuda_available()
    if has_cpp and threads is not None:
        _ext.set_num_threads(threads)
    env = {
        "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "numpy": np.__version__,
        "cpp_threads": _ext.get_num_threads() if has_cpp else None,
        "cuda_device": (_ext.cuda_info().get("devices") or [None])[0] if has_cuda else None,
    }
    rows = []
    rng = np.random.default_rng(0)
    try:
        for h, w in sizes:
            for case in _cases(h, w, rng):
                out_bytes = int(np.prod(case["dst_shape"])) * np.dtype(case["dst_dtype"]).itemsize
                row: dict[str, Any] = {
                    "op": case["op"], "detail": case["detail"], "size": f"{h}x{w}", "repeats": repeats,
                    "bytes_in": int(case["src"].nbytes), "bytes_out": out_bytes, **env,
                }
                row["numpy_ms"], row["numpy_cpu_ms"] = _medians(case["numpy"], repeats)
                if has_cpp:
                    row["cpp_ms"], row["cpp_cpu_ms"] = _medians(case["cpp"], repeats)
                    row["cpp_speedup"] = row["numpy_ms"] / row["cpp_ms"]
                if has_cuda:
                    row.update(_cuda_timings(case, out_bytes, repeats))
                rows.append(row)
    finally:
        if has_cpp and threads is not None:
            _ext.set_num_threads(0)
    return rows


def _cuda_timings(case: dict[str, Any], out_bytes: int, repeats: int) -> dict[str, float]:
    src = np.ascontiguousarray(case["src"])
    d_src, d_dst = _ext.CudaBuffer(src.nbytes), _ext.CudaBuffer(out_bytes)
    try:
        d_src.upload(src)
        kernel = _medians(lambda: case["ptr"](d_src.ptr, d_dst.ptr), repeats, sync=_ext.cuda_synchronize)[0]
        host = _medians(case["cuda"], repeats)[0]
    finally:
        d_src.free()
        d_dst.free()
    return {
        "cuda_host_ms": host,
        "cuda_kernel_ms": kernel,
        "cuda_kernel_gbps": (src.nbytes + out_bytes) / (kernel * 1e-3) / 1e9,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`run` rows."""
    cols = ["op", "size", "numpy_ms", "cpp_ms", "cpp_speedup", "numpy_cpu_ms", "cpp_cpu_ms", "cuda_host_ms",
            "cuda_kernel_ms", "cuda_kernel_gbps"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
