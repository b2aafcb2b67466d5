"""setup.py's build of the C++ extension beyond this machine: the CUDA architectures it picks on a
Jetson, and the CPU kernels compiled and linked for aarch64 (Jetson, Arm servers) with Debian's
cross compiler. The CUDA kernels are not cross-compiled: that needs an aarch64 CUDA toolkit."""
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

REPO = Path(__file__).resolve().parents[1]
CROSS_CXX = "aarch64-linux-gnu-g++"
EM_AARCH64 = 183


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's functions, with ``setup()`` itself a no-op."""
    old_cwd, old_setup = os.getcwd(), setuptools.setup
    setuptools.setup = lambda **kwargs: None
    os.chdir(REPO)
    try:
        yield runpy.run_path(str(REPO / "setup.py"))
    finally:
        setuptools.setup = old_setup
        os.chdir(old_cwd)


def test_jetson_builds_its_own_gpu_generations(setup_py, tmp_path):
    default, jetson = setup_py["DEFAULT_CUDA_ARCHS"], setup_py["JETSON_CUDA_ARCHS"]
    pick = setup_py["default_cuda_archs"]
    assert pick(str(tmp_path)) == default and "87" in jetson.split(";") and "110" in jetson.split(";")
    release = tmp_path / "jp6"
    (release / "etc").mkdir(parents=True)
    (release / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert pick(str(release)) == jetson
    tree = tmp_path / "tree" / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0")
    assert pick(str(tmp_path / "tree")) == jetson
    (tree / "compatible").write_bytes(b"arm,neoverse-v2\0")  # an Arm server (e.g. GH200): discrete GPU list
    assert pick(str(tmp_path / "tree")) == default


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(CROSS_CXX) is None,
                    reason=f"no {CROSS_CXX} (Debian: apt-get install g++-aarch64-linux-gnu)")
def test_extension_cross_compiles_and_links_for_aarch64(tmp_path):
    pytest.importorskip("pybind11", reason="pybind11 (the dev extra) builds the extension outside pip")
    env = dict(os.environ, MIRNET_NO_CUDA="1", CC="aarch64-linux-gnu-gcc", CXX=CROSS_CXX,
               LDSHARED=f"{CROSS_CXX} -shared", MIRNET_BUILD_JOBS="2")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
                           "--build-temp", str(tmp_path / "tmp")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [module] = (tmp_path / "lib").rglob("_ext*.so")
    data = module.read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == EM_AARCH64
    assert b"PyInit__ext" in data  # the module's entry point is exported
    readelf = shutil.which("aarch64-linux-gnu-readelf") or shutil.which("readelf")
    if readelf:
        needed = subprocess.run([readelf, "-d", str(module)], capture_output=True, text=True, check=True).stdout
        assert "libgomp" in needed and "libpython" not in needed and "libcudart" not in needed
