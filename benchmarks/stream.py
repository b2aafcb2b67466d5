"""Pipeline efficiency: end-to-end fps of ``mirnet.sdk.Stream`` (video file -> null sink, policy
``block``) against infer-only fps (``backend.infer`` on a pre-made tensor in a loop) on the same
model and frame size. ``efficiency = pipeline_fps / infer_fps``: 1.0 means decoding, pre/post-
processing and the sink hide entirely behind inference (they overlap in their own threads).

A benchmark, not a test: nothing here asserts a speed. No CLI wiring here (``mirnet bench``).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_frames(n: int, size: tuple[int, int], seed: int = 0):
    """``n`` noisy moving-gradient BGR uint8 frames of ``size`` = (H, W)."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        base = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, ((xx + yy) / 2 + i) % 256], axis=2)
        yield np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: int, size: tuple[int, int], fps: float = 25.0) -> Path:
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for frame in synthetic_frames(frames, size):
        writer.write(frame)
    writer.release()
    return Path(path)


def run(model, frames: int = 60, size: tuple[int, int] = (360, 640), *, backend: str = "auto",
        threads: int | None = None, batch: int = 1, warmup: int = 3, repeats: int = 3) -> dict:
    """Measure ``frames`` frames of ``size`` = (H, W) both ways on ``model`` (a name, a model
    file, or an opened Backend), ``repeats`` times alternating the two (so that background load
    hits both alike), and return a JSON-able dict: medians of ``infer_fps`` and ``pipeline_fps``
    (frames / seconds from the first frame read to the last written) and their ratio
    ``efficiency``, every repeat's numbers, ``pipeline_wall_fps`` (frames / wall time of
    ``Stream.run`` with the model loaded), the last pipeline run's per-stage p50 ms and
    glass-to-glass percentiles, the load average, and the machine record."""
    import statistics

    from mirnet.sdk import Restorer, Stream

    from .harness import machine_info

    if frames < 1 or repeats < 1:
        raise ValueError(f"frames={frames}, repeats={repeats}: both must be >= 1")
    h, w = size
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    infer_runs, pipe_runs, wall_runs = [], [], []
    with tempfile.TemporaryDirectory(prefix="mirnet-stream-bench-") as tmp:
        video = write_video(Path(tmp) / "in.mp4", frames, size)
        restorer = Restorer(model, backend=backend, threads=threads, tile=0)
        try:
            image = next(synthetic_frames(1, size, seed=1))
            x = np.concatenate([restorer.prepare(image).tensor] * batch)
            for _ in range(warmup):
                restorer.backend.infer(x)
            calls = -(-frames // batch)
            for _ in range(repeats):
                # infer-only: the backend on a ready tensor, no decode / pre / post / sink
                t0 = time.perf_counter()
                for _ in range(calls):
                    restorer.backend.infer(x)
                infer_runs.append(calls * batch / (time.perf_counter() - t0))
                # the pipeline: decode -> preprocess -> infer -> postprocess -> null sink, overlapped
                t0 = time.perf_counter()
                stats = Stream(video, None, model=restorer, policy="block", batch=batch).run()
                wall = time.perf_counter() - t0
                pipe_runs.append(stats["fps"])
                wall_runs.append(stats["frames"] / wall if wall > 0 else 0.0)
        finally:
            restorer.close()
    infer_fps, pipeline_fps = statistics.median(infer_runs), statistics.median(pipe_runs)
    return {
        "benchmark": "stream-pipeline",
        "model": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__,
        "backend": stats["backend"],
        "threads": threads if threads is not None else (1 if stats["backend"] == "ort" else None),
        "size": [h, w],
        "batch": batch,
        "frames": stats["frames"],
        "repeats": repeats,
        "infer_fps": round(infer_fps, 3),
        "infer_ms_per_frame": round(1e3 / infer_fps, 3),
        "pipeline_fps": round(pipeline_fps, 3),
        "pipeline_wall_fps": round(statistics.median(wall_runs), 3),
        "efficiency": round(pipeline_fps / infer_fps, 3) if infer_fps else None,
        "infer_fps_runs": [round(v, 3) for v in infer_runs],
        "pipeline_fps_runs": [round(v, 3) for v in pipe_runs],
        "stages_p50_ms": {k: v["p50_ms"] for k, v in stats["stages"].items()},
        "glass_to_glass": stats["glass_to_glass"],
        "dropped": stats["dropped"],
        "loadavg_before": [round(v, 2) for v in load] if load else None,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()] if load else None,
        "machine": machine_info(),
    }
