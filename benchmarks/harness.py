"""The measurement core shared by every benchmark besides timing (:mod:`mirnet.sdk.timing`): peak
memory and the machine record. Benchmarks are not tests: nothing here asserts a speed."""
from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
from pathlib import Path


class PeakRSS:
    """Peak resident memory of this process while the block runs (Linux: VmHWM, reset through
    /proc/self/clear_refs); None where that is unavailable."""

    def __enter__(self) -> "PeakRSS":
        self.mb = self.delta_mb = None
        self._ok = _reset_peak()
        self._before = _read_status("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self._ok:
            self.mb = _read_status("VmHWM")
            if self.mb is not None and self._before is not None:
                self.delta_mb = max(0.0, self.mb - self._before)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _read_status(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # absent or broken optional module: record None
        return None


def gpu_info() -> dict | None:
    """Name, compute capability and memory of GPU 0 through torch, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2 ** 30, 1), "cuda": torch.version.cuda}


def machine_info() -> dict:
    """What the numbers were measured on."""
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname_class": machine_slug(),
        "cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": mem_gb,
        "os": platform.platform(), "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("mirnet.sdk", "numpy", "cv2", "onnxruntime", "torch", "tensorrt")},
        "gpu": gpu_info(),
    }


def machine_slug() -> str:
    """A folder name for results: ``<cores>core-<cpu words>`` or the GPU name."""
    gpu = gpu_info()
    if gpu:
        return gpu["name"].lower().replace(" ", "-")
    words = "".join(c if c.isalnum() else "-" for c in _cpu_model().lower()).split("-")
    return f"{os.cpu_count()}core-" + "-".join(w for w in words if w and w not in ("r", "tm", "cpu"))[:40]


def results_dir(root: str | Path | None = None) -> Path:
    base = Path(root) if root else Path(__file__).resolve().parent / "results"
    return base / machine_slug()
