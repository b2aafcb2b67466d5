"""The GPU suite, one command, under 10 minutes on an H100:

    python3 -m mirnet.benchmarks.gpu_suite --out DIR      (from the repository root)

Builds the package with its CUDA extension, runs the gpu-marked tests, benchmarks PyTorch CUDA
FP32 vs FP16 vs FP16 + channels_last vs FP16 + CUDA graphs for the official-size and lite models
at 720p and 1080p with achieved TFLOP/s against the GPU's peak, benchmarks the CUDA pre/post
kernels, and writes everything to DIR/gpu_suite.json (plus the build and test logs).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}
# Dense peaks (TFLOP/s) from NVIDIA's H100 SXM datasheet; the H200 has the same compute.
PEAK_TFLOPS = {"H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4},
               "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4}}


def _run(cmd: list[str], log: Path, timeout: int) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    tail = log.read_text().strip().splitlines()[-1:] or [""]
    return {"cmd": " ".join(cmd), "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "last_line": tail[0], "log": log.name}


def _peak(name: str) -> dict | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def bench_torch(variant: str, size: tuple[int, int], *, seconds: float = 3.0) -> list[dict]:
    import torch

    from mirnet.sdk.model import create_model
    from mirnet.sdk.model.complexity import count_macs

    from mirnet.sdk.timing import time_fn

    h, w = size
    macs = count_macs(create_model(variant).eval(), 256, 256) * h * w / 65536
    rows = []
    for mode in ("fp32", "fp16", "fp16+channels_last", "fp16+channels_last+cuda_graph"):
        torch.manual_seed(0)
        model = create_model(variant).eval().cuda()
        x = torch.rand(1, 3, h, w, device="cuda")
        if mode != "fp32":
            model, x = model.half(), x.half()
        if "channels_last" in mode:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if "cuda_graph" in mode:
                static_x = x.clone()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        model(static_x)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(static_x)
                fn = graph.replay
            else:
                def fn(model=model, x=x):
                    model(x)
            timing = time_fn(fn, warmup=3, min_runs=10, min_seconds=seconds, sync=torch.cuda.synchronize)
        tflops = 2 * macs / (timing["p50_ms"] / 1000) / 1e12
        peak = _peak(torch.cuda.get_device_name(0)) or {}
        peak_key = "fp32" if mode == "fp32" else "fp16"
        rows.append({"variant": variant, "size": f"{w}x{h}", "mode": mode, **timing,
                     "fps": 1000 / timing["p50_ms"], "gmac_per_frame": macs / 1e9, "tflops": tflops,
                     "peak_tflops": peak.get(peak_key), "fraction_of_peak": tflops / peak[peak_key] if peak else None,
                     "peak_memory_mb": torch.cuda.max_memory_allocated() / 2 ** 20})
        del model, x
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_suite.json and logs")
    parser.add_argument("--skip-build", action="store_true", help="the package is already installed")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"steps": {}}
    if not args.skip_build:
        result["steps"]["build"] = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                                         "-e", "."], out / "build.log", 300)
    result["steps"]["gpu_tests"] = _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
                                        out / "gpu_tests.log", 180)
    import torch

    from .harness import machine_info

    result["machine"] = machine_info()
    if not torch.cuda.is_available():
        result["error"] = "no CUDA device visible to torch"
    else:
        result["torch"] = [row for variant in ("real-denoising", "lite") for size in SIZES.values()
                           for row in bench_torch(variant, size)]
        try:
            from .ops import run as ops_run

            result["kernels"] = ops_run(sizes=list(SIZES.values()))
        except Exception as exc:  # the suite reports what failed and carries on
            result["kernels"] = {"error": f"{type(exc).__name__}: {exc}"}
    (out / "gpu_suite.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "torch"}, indent=1)[:4000])
    for row in result.get("torch", []):
        print(f"{row['variant']:<15} {row['size']:>9} {row['mode']:<32} {row['p50_ms']:8.2f} ms "
              f"{row['tflops']:7.1f} TFLOP/s" + (f" ({100 * row['fraction_of_peak']:.0f}% of peak)"
                                                 if row["fraction_of_peak"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
