"""``mirnet bench``: latency, throughput, memory and image quality of every artifact and baseline in
one row schema, written as JSON under ``benchmarks/results/<machine>/``."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirnet.sdk.errors import ConfigError

from mirnet.sdk.timing import time_fn

from .harness import PeakRSS, machine_info

DEFAULT_SIZES = ((256, 256), (360, 640), (720, 1280), (1080, 1920))
BASELINES = ("nlm", "mirnet-v2-full")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"256,640x360"`` -> ``[(256, 256), (360, 640)]`` (W x H, as video sizes are written)."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            w, h = (part.split("x") + [part])[:2] if "x" in part else (part, part)
            sizes.append((int(h), int(w)))
        except ValueError:
            raise ConfigError(f"--sizes: {part!r} is not N or WxH (e.g. 256,640x360,1920x1080)") from None
    if not sizes or any(min(s) < 8 for s in sizes):
        raise ConfigError(f"--sizes {text!r}: give sizes of at least 8 pixels")
    return sizes


@dataclass
class Runner:
    """One way of running one artifact: ``infer`` maps float32 NCHW [0,1] to the same."""

    label: str
    backend: str
    precision: str
    infer: object
    pad_multiple: int
    params: int | None = None
    gmac_256: float | None = None
    trained: bool = True
    threads: int | None = None


def _model_runners(model: str, threads: int) -> list[Runner]:
    """ONNX Runtime for .onnx, TensorRT for engines; weights (and bundled names) on eager PyTorch
    and on ONNX Runtime through their ONNX export (the shipped one for bundled models)."""
    from mirnet.sdk import artifact, zoo
    from mirnet.sdk.backends import open_backend
    from mirnet.sdk.model import VARIANTS

    trained = True
    if model in VARIANTS and not Path(model).exists() and model not in zoo.bundled():
        path, trained = _random_weights(model), False  # a variant name: speed only
    else:
        path = zoo.resolve_weights(model)
    label = path.stem if path.stem != "best" else f"{path.parent.name}/{path.stem}"
    if path.suffix in (".onnx", ".engine", ".plan"):
        label = path.name if path.stem != "best" else f"{path.parent.name}/{path.name}"
    if path.suffix == ".onnx":
        manifest = artifact.read_manifest(path, kind="onnx")
        b = open_backend(path, "ort", threads=threads)
        return [Runner(label, "onnxruntime", manifest["precision"], b.infer, b.input_spec.pad_multiple,
                       threads=threads)]
    if path.suffix in (".engine", ".plan"):
        b = open_backend(path)
        return [Runner(label, "tensorrt", b.manifest["precision"], b.infer, b.input_spec.pad_multiple)]
    from mirnet.optimize.export_onnx import cached_export
    from mirnet.sdk.model import load_model
    from mirnet.sdk.model.complexity import count_macs, count_params

    net = load_model(path)
    params, gmac = count_params(net), count_macs(net, 256, 256) / 1e9
    onnx = zoo.bundled_onnx(model) if zoo.is_bundled_name(model) else cached_export(path)
    runners = []
    for name, artifact_path in (("torch", path), ("ort", onnx)):
        b = open_backend(artifact_path, name, threads=threads)
        runners.append(Runner(label, "pytorch-eager" if name == "torch" else "onnxruntime", "fp32", b.infer,
                              b.input_spec.pad_multiple, params, gmac, trained=trained, threads=threads))
    return runners


def _random_weights(variant: str) -> Path:
    """Randomly initialised weights of a variant, saved once in the cache (for speed rows)."""
    import torch

    from mirnet.sdk.artifact import cache_dir
    from mirnet.sdk.model import create_model, save_weights

    path = cache_dir() / "bench" / f"{variant}-random.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        save_weights(create_model(variant), path, variant=variant)
    return path


def _baseline_runners(names: list[str], threads: int) -> list[Runner]:
    runners = []
    for name in names:
        if name == "nlm":
            from mirnet.sdk.evaluate import nlm

            def nlm_batch(x: np.ndarray) -> np.ndarray:
                return np.stack([nlm(img.transpose(1, 2, 0)).transpose(2, 0, 1) for img in x])

            runners.append(Runner("opencv-nlm", "opencv", "uint8", nlm_batch, 1))
        elif name == "mirnet-v2-full":
            import torch

            from mirnet.sdk.model import create_model
            from mirnet.sdk.model.complexity import count_macs, count_params

            torch.set_num_threads(threads)
            net = create_model("real-denoising").eval()

            def full(x: np.ndarray, net=net) -> np.ndarray:
                with torch.inference_mode():
                    return net(torch.from_numpy(x)).numpy()

            runners.append(Runner("mirnet-v2 (official size)", "pytorch-eager", "fp32", full, 4,
                                  count_params(net), count_macs(net, 256, 256) / 1e9, trained=False,
                                  threads=threads))
        else:
            raise ConfigError(f"--baselines: unknown {name!r}; valid: {BASELINES}")
    return runners


def quality(runner: Runner, evalset) -> dict:
    """Mean PSNR/SSIM of ``runner`` on (degraded, clean) float HWC pairs, output clipped to [0, 1]."""
    from mirnet.sdk.evaluate import score
    from mirnet.sdk.ops import run_padded

    result = score(lambda degraded: run_padded(runner.infer, degraded, multiple=runner.pad_multiple), evalset)
    return {"psnr_db": result["psnr"], "ssim": result["ssim"]}


def run(models: list[str], *, sizes=DEFAULT_SIZES, batch: int = 1, threads: int = 1,
        baselines: tuple[str, ...] | list[str] = BASELINES, quality_data: str | None = None, sigma: float = 25,
        quality_limit: int = 8, quality_crop: int | None = 256, min_seconds: float = 2.0,
        max_seconds_per_run: float = 15.0, progress=None) -> dict:
    """Measure every (artifact, backend) x size. A runner whose single run exceeds
    ``max_seconds_per_run`` is not measured at larger sizes (recorded as skipped)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    runners = [r for m in models for r in _model_runners(m, threads)] + _baseline_runners(baselines, threads)
    evalset = None
    if quality_data:
        from mirnet.sdk.evalsets import EvalSet

        evalset = EvalSet.from_clean(quality_data, sigma, limit=quality_limit, crop=quality_crop)
    rows = []
    rng = np.random.default_rng(0)
    for runner in runners:
        scores = quality(runner, evalset) if evalset is not None and runner.trained else {}
        too_slow = False
        for h, w in sorted(sizes, key=lambda s: s[0] * s[1]):
            row = {"artifact": runner.label, "backend": runner.backend, "precision": runner.precision,
                   "size": f"{w}x{h}", "pixels": w * h, "batch": batch, "threads": runner.threads,
                   "params": runner.params,
                   "gmac_per_frame": None if runner.gmac_256 is None else runner.gmac_256 * h * w / 65536,
                   "psnr_db": scores.get("psnr_db"), "ssim": scores.get("ssim"),
                   "trained": runner.trained}
            if too_slow:
                rows.append({**row, "skipped": f"slower than {max_seconds_per_run:g} s per run at a smaller size"})
                continue
            m = runner.pad_multiple
            x = rng.random((batch, 3, -(-h // m) * m, -(-w // m) * m), dtype=np.float32)
            with PeakRSS() as mem:
                timing = time_fn(lambda: runner.infer(x), warmup=1, min_runs=3, min_seconds=min_seconds)
            row.update(timing, fps=1000 * batch / timing["p50_ms"], peak_rss_mb=mem.mb,
                       peak_rss_delta_mb=mem.delta_mb)
            rows.append(row)
            too_slow = timing["p50_ms"] > max_seconds_per_run * 1000
            if progress:
                progress(row)
    return {"machine": machine_info(), "settings": {
        "sizes": [f"{w}x{h}" for h, w in sizes], "batch": batch, "threads": threads,
        "quality": None if evalset is None else {"data": str(quality_data), "sigma": sigma, "limit": quality_limit,
                                                 "crop": quality_crop, "protocol": evalset.description},
        "min_seconds": min_seconds}, "rows": rows}


def run_micro(model: str, *, threads: int = 1) -> dict:
    """The pre/post kernels (numpy vs C++ vs CUDA) at 1080p and the stream pipeline's efficiency
    (end-to-end vs infer-only fps) on ``model``, with the machine record."""
    from . import ops, stream

    return {"machine": machine_info(), "ops": ops.run(sizes=[(1080, 1920)]),
            "stream": stream.run(model, threads=threads)}


def save(result: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return out
