"""``mirnet bench``: latency, throughput, memory and image quality of every artifact and baseline in
one row schema, written as JSON under ``benchmarks/results/<machine>/``."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
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
    restore_for: Callable[[str], Callable[[np.ndarray], np.ndarray]] | None = None  # per camera protocol


def _sdk_infer(backend, gray_backend=None):
    """The network call the SDK makes: ``backend.infer``, or with a gray model, the Restorer's, which
    runs gray frames on ``gray_backend`` (a bundled model's gray specialist)."""
    if gray_backend is None:
        return backend.infer
    from mirnet.sdk.restorer import Restorer

    return Restorer(backend, gray_model=gray_backend).infer_tensor


def _openvino_runners(path: Path, label: str, precision: str, threads: int, gray_path: Path | None = None,
                      **fields) -> list[Runner]:
    """``path`` (.onnx or .xml) on OpenVINO in f32 and, where the CPU has BF16, in bf16 (the float
    parts of an INT8 IR too), gray frames on ``gray_path`` with the same settings when given; none
    when openvino is not installed."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return []
    from mirnet.sdk.backends.openvino import OpenVinoBackend, cpu_capabilities

    hints = ["f32"] + (["bf16"] if "BF16" in cpu_capabilities() else [])
    runners = []
    for hint in hints:
        b = OpenVinoBackend(path, threads=threads, precision=hint)
        gray = OpenVinoBackend(gray_path, threads=threads, precision=hint) if gray_path else None
        shown = {"fp32": "fp32" if hint == "f32" else "bf16"}.get(precision, f"{precision}/{hint}")
        runners.append(Runner(label, "openvino", shown, _sdk_infer(b, gray), b.input_spec.pad_multiple,
                              threads=threads, **fields))
    return runners


def _model_runners(model: str, threads: int) -> list[Runner]:
    """ONNX Runtime, and OpenVINO (f32, bf16 where the CPU has it) unless made for ONNX Runtime or
    TensorRT only (:data:`~mirnet.sdk.backends.ORT_ONLY_PRECISIONS`), for .onnx; OpenVINO for IR (.xml),
    TensorRT for engines; weights (and bundled names) on eager PyTorch and on both CPU runtimes
    through their ONNX export (the shipped one for bundled models). A bundled model with a gray
    specialist runs gray frames on it, as the Restorer does."""
    from mirnet.sdk import artifact, zoo
    from mirnet.sdk.backends import ORT_ONLY_PRECISIONS, open_backend
    from mirnet.sdk.model import VARIANTS

    trained = True
    if model in VARIANTS and not Path(model).exists() and model not in zoo.bundled():
        path, trained = _random_weights(model), False  # a variant name: speed only
    else:
        path = zoo.resolve_weights(model)
    label = path.stem if path.stem != "best" else f"{path.parent.name}/{path.stem}"
    if path.suffix in (".onnx", ".xml", ".engine", ".plan"):
        label = path.name if path.stem != "best" else f"{path.parent.name}/{path.name}"
    if path.suffix == ".onnx":
        manifest = artifact.read_manifest(path, kind="onnx")
        b = open_backend(path, "ort", threads=threads)
        runners = [Runner(label, "onnxruntime", manifest["precision"], b.infer, b.input_spec.pad_multiple,
                          threads=threads)]
        if manifest["precision"] not in ORT_ONLY_PRECISIONS:  # FP32, and the CPU's Q/DQ made for OpenVINO
            runners += _openvino_runners(path, label, manifest["precision"], threads)
        return runners
    if path.suffix == ".xml":
        return _openvino_runners(path, label, artifact.read_manifest(path, kind="openvino")["precision"], threads)
    if path.suffix in (".engine", ".plan"):
        b = open_backend(path)
        return [Runner(label, "tensorrt", b.manifest["precision"], b.infer, b.input_spec.pad_multiple)]
    from mirnet.optimize.export_onnx import cached_export
    from mirnet.sdk.model import load_model
    from mirnet.sdk.model.complexity import count_macs, count_params

    net = load_model(path)
    params, gmac = count_params(net), count_macs(net, 256, 256) / 1e9
    onnx = zoo.bundled_onnx(model) if zoo.is_bundled_name(model) else cached_export(path)
    companion = zoo.gray_companion(model)
    gray = {"torch": zoo.bundled()[companion], "ort": zoo.bundled_onnx(companion)} if companion else {}
    runners = []
    for name, artifact_path in (("torch", path), ("ort", onnx)):
        b = open_backend(artifact_path, name, threads=threads)
        g = open_backend(gray[name], name, threads=threads) if gray else None
        runners.append(Runner(label, "pytorch-eager" if name == "torch" else "onnxruntime", "fp32", _sdk_infer(b, g),
                              b.input_spec.pad_multiple, params, gmac, trained=trained, threads=threads))
    return runners + _openvino_runners(onnx, label, "fp32", threads, gray_path=gray.get("ort"), params=params,
                                       gmac_256=gmac, trained=trained)


def _one_per_label(runners: list[Runner]) -> list[Runner]:
    """The first trained runner of each artifact (the crops show each artifact once)."""
    seen: dict[str, Runner] = {}
    for r in runners:
        if r.trained:
            seen.setdefault(r.label, r)
    return list(seen.values())


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
            from mirnet.sdk.evaluate import NLM_PARAMS, NLM_TUNED, nlm

            def nlm_batch(x: np.ndarray) -> np.ndarray:
                return np.stack([nlm(img.transpose(1, 2, 0)).transpose(2, 0, 1) for img in x])

            def nlm_tuned(protocol: str) -> Callable[[np.ndarray], np.ndarray]:
                params = NLM_TUNED.get(protocol, NLM_PARAMS)
                return lambda degraded: nlm(degraded, params)

            runners.append(Runner("opencv-nlm", "opencv", "uint8", nlm_batch, 1, restore_for=nlm_tuned))
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


def _restore_fn(runner: Runner, protocol: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """Float RGB H x W x 3 in, restored out: the runner's own setting for a camera ``protocol``
    (the NLM strength tuned per preset), else its network through the one pad/run/crop."""
    from mirnet.sdk.ops import run_padded

    if protocol is not None and runner.restore_for is not None:
        return runner.restore_for(protocol)
    return lambda degraded: run_padded(runner.infer, degraded, multiple=runner.pad_multiple)


def quality(runner: Runner, evalset, protocol: str | None = None) -> dict:
    """Mean PSNR/SSIM of ``runner`` on (degraded, clean) float HWC pairs, output clipped to [0, 1]."""
    from mirnet.sdk.evaluate import score

    result = score(_restore_fn(runner, protocol), evalset)
    return {"psnr_db": result["psnr"], "ssim": result["ssim"], "input_psnr_db": result["input_psnr"]}


def run(models: list[str], *, sizes=DEFAULT_SIZES, batch: int = 1, threads: int = 1,
        baselines: tuple[str, ...] | list[str] = BASELINES, quality_data: str | None = None, sigma: float = 25,
        quality_limit: int = 8, quality_crop: int | None = 256, quality_protocols: Sequence[str] = (),
        crops: str | Path | None = None, min_seconds: float = 2.0, max_seconds_per_run: float = 15.0,
        progress=None) -> dict:
    """Measure every (artifact, backend) x size. A runner whose single run exceeds
    ``max_seconds_per_run`` is not measured at larger sizes (recorded as skipped). With
    ``quality_data`` every trained runner is also scored on AWGN ``sigma`` and on each camera
    preset in ``quality_protocols`` (row field ``camera``: protocol -> PSNR/SSIM); with ``crops``
    (a path prefix) the first image of each preset is saved as ``<crops>_<preset>.png``: input,
    each trained runner's output and the clean image side by side, labelled."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    runners = [r for m in models for r in _model_runners(m, threads)] + _baseline_runners(baselines, threads)
    evalset, camera_sets = None, {}
    if quality_data:
        from mirnet.sdk.evalsets import EvalSet

        evalset = EvalSet.from_clean(quality_data, sigma, limit=quality_limit, crop=quality_crop)
        camera_sets = {p: EvalSet.from_protocol(quality_data, p, limit=quality_limit, crop=quality_crop)
                       for p in quality_protocols}
    elif quality_protocols:
        raise ConfigError("--quality-protocols needs --quality-data (clean images to film with each camera preset)")
    crop_files = []
    if crops is not None:
        for protocol, pairs in camera_sets.items():
            crop_files.append(str(save_crop(
                Path(f"{crops}_{protocol}.png"), pairs[0],
                [(r.label, _restore_fn(r, protocol)) for r in _one_per_label(runners)])))
    rows = []
    rng = np.random.default_rng(0)
    for runner in runners:
        scores = quality(runner, evalset) if evalset is not None and runner.trained else {}
        camera = {p: quality(runner, s, p) for p, s in camera_sets.items()} if runner.trained else {}
        too_slow = False
        for h, w in sorted(sizes, key=lambda s: s[0] * s[1]):
            row = {"artifact": runner.label, "backend": runner.backend, "precision": runner.precision,
                   "size": f"{w}x{h}", "pixels": w * h, "batch": batch, "threads": runner.threads,
                   "params": runner.params,
                   "gmac_per_frame": None if runner.gmac_256 is None else runner.gmac_256 * h * w / 65536,
                   "psnr_db": scores.get("psnr_db"), "ssim": scores.get("ssim"), "camera": camera,
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
                                                 "crop": quality_crop, "protocol": evalset.description,
                                                 "camera_protocols": list(quality_protocols)},
        "min_seconds": min_seconds}, "rows": rows, "crops": crop_files}


def save_crop(path: Path, pair: tuple[np.ndarray, np.ndarray], restorers: list[tuple[str, Callable]],
              size: int = 128) -> Path:
    """``input | restorer outputs... | clean`` of the centre ``size`` x ``size`` of ``pair``, each
    panel labelled, as an 8-bit PNG."""
    import cv2

    from mirnet.sdk.media import write_image

    degraded, clean = pair
    panels = [("input", degraded)] + [(label, fn(degraded)) for label, fn in restorers] + [("clean", clean)]
    h, w = clean.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    tiles = []
    for label, image in panels:
        tile = np.ascontiguousarray((np.clip(image[y:y + size, x:x + size], 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
        cv2.putText(tile, label[:18], (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.concatenate(tiles, axis=1))
    return path


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
