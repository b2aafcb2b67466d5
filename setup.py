"""mirnet-edge: the product card's top-level folders mapped into one ``mirnet`` namespace.

Also builds the required C++ extension ``mirnet.sdk._ext`` from ``cpp_ext/src``: the ``*.cpp``
sources (CPU, OpenMP, pybind11) always, plus the ``*.cu`` CUDA kernels when a CUDA toolkit is
found (``bin/nvcc`` and ``include/cuda_runtime.h`` under ``CUDA_HOME``, ``CUDA_PATH``,
``/usr/local/cuda`` or the toolkit of the ``nvcc`` on PATH). The CUDA runtime is linked statically,
so the module imports on machines without a GPU or libcudart.so. Environment:

* ``MIRNET_NO_CUDA=1``: build the CPU kernels only.
* ``MIRNET_CUDA_ARCHS="80;90"``: GPU architectures (default ``75;80;86;87;89;90``; on a Jetson,
  recognised by ``/etc/nv_tegra_release`` or a ``nvidia,tegra`` device tree, ``87;110``: Orin and
  Thor); the highest also ships as PTX for newer GPUs.
* ``MIRNET_BUILD_JOBS``: parallel compiler processes (default 2).
* ``CUDAHOSTCXX``: host compiler for nvcc.

A failing build fails the install: the extension is part of the product.
"""
import os
import re
import shutil
import subprocess
import sys
from glob import glob
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, ExecError, LinkError

EXT_SRC = "cpp_ext/src"
DEFAULT_CUDA_ARCHS = "75;80;86;87;89;90"
JETSON_CUDA_ARCHS = "87;110"  # Orin (JetPack 6, CUDA 12) and Thor (JetPack 7, CUDA 13 names it sm_110)
CXX_FLAGS = ["-std=c++17", "-O3", "-g0", "-fopenmp", "-ffp-contract=off", "-fvisibility=hidden", "-Wall"]
NVCC_FLAGS = ["-std=c++17", "-O3", "--fmad=false", "-Xcompiler", "-fPIC,-ffp-contract=off,-fvisibility=hidden"]


def log(msg: str) -> None:
    print(f"mirnet-edge build: {msg}", file=sys.stderr, flush=True)


def _toolkit_of_nvcc_on_path() -> str | None:
    """The toolkit behind the ``nvcc`` on PATH, which may be a wrapper script, not a symlink."""
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return None
    try:  # nvcc prints its real location as "#$ TOP=<toolkit>/bin/.." in a dry run
        out = subprocess.run([nvcc, "--dryrun", "-c", "probe.cu"], capture_output=True, text=True, timeout=60)
        top = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
        if top:
            return os.path.realpath(top.group(1).strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return str(Path(os.path.realpath(nvcc)).parent.parent)


def find_cuda() -> dict | None:
    """``{home, nvcc, libdir}`` of a usable CUDA toolkit, or None (the reason is logged)."""
    if os.environ.get("MIRNET_NO_CUDA", "0") not in ("", "0"):
        log("MIRNET_NO_CUDA is set: building the CPU kernels only")
        return None
    def candidates():
        yield from (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")
        yield _toolkit_of_nvcc_on_path()

    machine = os.uname().machine
    for home in filter(None, candidates()):
        root = Path(home)
        nvcc, header = root / "bin" / "nvcc", root / "include" / "cuda_runtime.h"
        if not (nvcc.is_file() and header.is_file()):
            continue
        libdirs = [root / "lib64", root / "lib", root / "targets" / f"{machine}-linux" / "lib"]
        libdir = next((d for d in libdirs if (d / "libcudart_static.a").is_file()), None)
        if libdir is None:
            log(f"CUDA toolkit {root} has no libcudart_static.a: building the CPU kernels only")
            return None
        return {"home": root, "nvcc": str(nvcc), "libdir": str(libdir)}
    log("no CUDA toolkit (bin/nvcc + include/cuda_runtime.h under CUDA_HOME, CUDA_PATH, /usr/local/cuda "
        "or the nvcc on PATH): building the CPU kernels only")
    return None


def is_jetson(root: str = "/") -> bool:
    """A Jetson module (L4T): JetPack's release file, or a Tegra SoC in the device tree."""
    base = Path(root)
    if (base / "etc" / "nv_tegra_release").is_file():
        return True
    try:
        return b"nvidia,tegra" in (base / "proc" / "device-tree" / "compatible").read_bytes()
    except OSError:
        return False


def default_cuda_archs(root: str = "/") -> str:
    """The architectures to build when MIRNET_CUDA_ARCHS is unset: a Jetson's own GPU generations,
    else the discrete GPUs from Turing on (aarch64 servers such as GH200 included)."""
    return JETSON_CUDA_ARCHS if is_jetson(root) else DEFAULT_CUDA_ARCHS


def cuda_archs(nvcc: str) -> list[str]:
    """MIRNET_CUDA_ARCHS (or the default), minus those this nvcc cannot build."""
    requested = os.environ.get("MIRNET_CUDA_ARCHS", default_cuda_archs())
    wanted = [a.strip().removeprefix("sm_") for a in requested.split(";")]
    wanted = [a for a in wanted if a]
    out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True)
    if out.returncode == 0:  # older nvcc lack the option: then try them all
        known = set(re.findall(r"sm_(\w+)", out.stdout))
        for arch in [a for a in wanted if a not in known]:
            log(f"nvcc cannot build sm_{arch}, skipping it")
        wanted = [a for a in wanted if a in known]
    if not wanted:
        raise CompileError(f"no buildable CUDA architecture in MIRNET_CUDA_ARCHS={requested!r}")
    return wanted


def jobs() -> int:
    return max(1, int(os.environ.get("MIRNET_BUILD_JOBS", "2")))


class BuildExt(build_ext):
    """Compiles cpp_ext/src/*.cpp with the C++ compiler and *.cu with nvcc, links one module."""

    def build_extensions(self) -> None:
        try:
            import pybind11
        except ImportError as exc:
            raise CompileError("building mirnet.sdk._ext needs pybind11>=2.12: pip install pybind11, "
                               "or let pip build in an isolated environment (no --no-build-isolation)") from exc
        for ext in self.extensions:
            ext.include_dirs += [pybind11.get_include(), EXT_SRC]
        try:
            self._build_with_cuda(self.extensions[0])
        except (CompileError, LinkError, ExecError, OSError) as exc:
            raise CompileError(
                f"building the C++ extension mirnet.sdk._ext failed ({exc}). It needs a C++17 compiler with "
                "OpenMP (g++ >= 9) and the Python headers (python3-dev); CUDA kernels need a CUDA toolkit "
                "matching the host compiler, or set MIRNET_NO_CUDA=1 to build without them.") from exc

    def _build_with_cuda(self, ext: Extension) -> None:
        cu_sources = sorted(glob(f"{EXT_SRC}/*.cu"))
        cuda = find_cuda() if cu_sources else None
        if cuda is None:
            super().build_extensions()
            return
        archs = cuda_archs(cuda["nvcc"])
        log(f"CUDA kernels from {cuda['home']} for sm_{', sm_'.join(archs)} (+ compute_{archs[-1]} PTX)")
        ext.define_macros += [("MIRNET_WITH_CUDA", "1"), ("MIRNET_CUDA_ARCHS", f'"{";".join(archs)}"')]
        ext.library_dirs.append(cuda["libdir"])
        ext.libraries += ["cudart_static", "rt", "pthread", "dl"]
        obj_dir = Path(self.build_temp) / "cuda"
        obj_dir.mkdir(parents=True, exist_ok=True)
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        host = ["-ccbin", os.environ["CUDAHOSTCXX"]] if os.environ.get("CUDAHOSTCXX") else []
        newest_input = max(os.path.getmtime(f) for f in cu_sources + glob(f"{EXT_SRC}/*.h"))
        for src in cu_sources:
            obj = obj_dir / (Path(src).stem + ".o")
            cmd = [cuda["nvcc"], "-c", src, "-o", str(obj), *NVCC_FLAGS, *host, f"-I{EXT_SRC}",
                   "-DMIRNET_WITH_CUDA=1", *gencode, "--threads", str(jobs())]
            ext.extra_objects.append(str(obj))
            stamp = obj.with_suffix(".cmd")  # skip nvcc when sources and command are unchanged
            if obj.is_file() and stamp.is_file() and stamp.read_text() == " ".join(cmd) \
                    and obj.stat().st_mtime >= newest_input and not self.force:
                log(f"{obj} is up to date")
                continue
            log(" ".join(cmd))
            if subprocess.run(cmd).returncode != 0:
                raise CompileError(f"nvcc failed on {src} (command above)")
            stamp.write_text(" ".join(cmd))
        super().build_extensions()


EXTENSION = Extension(
    "mirnet.sdk._ext",
    sources=sorted(glob(f"{EXT_SRC}/*.cpp")),
    depends=sorted(glob(f"{EXT_SRC}/*.h") + glob(f"{EXT_SRC}/*.cu")),
    extra_compile_args=CXX_FLAGS,
    extra_link_args=["-fopenmp"],
    language="c++",
)

FOLDERS = {"sdk": "mirnet.sdk", "train": "mirnet.train", "optimize": "mirnet.optimize",
           "benchmarks": "mirnet.benchmarks"}

packages, package_dir = [], {}
for folder, name in FOLDERS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

TORCH = ["torch>=2.4", "safetensors>=0.4"]
EXTRAS = {
    "ort": ["onnxruntime>=1.18", "onnx>=1.16"],
    # the CPU backend `auto` prefers (bf16 where the CPU has it) and NNCF for its INT8 IR
    "openvino": ["openvino>=2025.0", "nncf>=2.14"],
    "cuda": ["cuda-python>=12.3"],
    "torch": TORCH,
    # PyAV: FFmpeg with libx264/libx265 in its wheels, for the camera model's H.264/H.265 delivery
    "camera": ["av>=12"],
    "train": TORCH + ["pyyaml>=6", "av>=12"],
    "optimize": TORCH + ["onnx>=1.16", "onnxslim>=0.1.40", "onnxruntime>=1.18", "torch-pruning>=1.6,<2"],
    # Never nvidia-modelopt[onnx]: that extra replaces onnxruntime.
    "modelopt": TORCH + ["nvidia-modelopt>=0.47", "requests", "huggingface_hub"],
    "bench": ["matplotlib>=3.7"],
    "gui": ["opencv-python>=4.8"],
    "trt": ["tensorrt>=10", "cuda-python>=12.3"],
    # pybind11: the aarch64 cross-build test compiles the extension outside pip's isolated build
    "dev": ["pytest>=8", "pybind11>=2.12"],
    # `mirnet serve` and the grpc:// / http:// backend. PyTriton 0.6.0: 0.7.0 ships no Python-backend
    # stub for Python 3.11; every release pins numpy<2 (so no Python 3.13 wheels of numpy).
    "serve": ["nvidia-pytriton==0.6.0", "tritonclient[http,grpc]>=2.50,<3"],
}
# Every extra that installs from PyPI on a Linux machine without a GPU. Not here: `gui` (it
# replaces the headless OpenCV), `trt` (TensorRT comes from JetPack or NVIDIA's package index) and
# `serve` (PyTriton pins numpy<2, which would take numpy and OpenCV back a major version for the
# whole SDK: install it in the server's own environment, as .ci/run does).
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name not in ("gui", "trt", "serve") for req in reqs})

setup(
    name="mirnet-edge",
    version="0.1.0",
    description="MIRNet-v2 image restoration from training to real-time camera streams on NVIDIA GPUs and Jetson",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"mirnet.sdk.zoo": ["*.safetensors", "*.onnx", "*.json"], "mirnet.train": ["configs/*.yaml"]},
    install_requires=["numpy>=1.24", "opencv-python-headless>=4.8", "tqdm>=4.60"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mirnet = mirnet.sdk.cli:run"]},
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": BuildExt},
)
