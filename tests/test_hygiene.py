"""The test suite writes only into temporary folders: the mirnet cache of every test (and of the
subprocesses tests start) lies in the session's temporary folder, never in ~/.cache/mirnet-edge."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirnet.sdk.artifact import cache_dir


def user_cache() -> Path:
    """Where mirnet caches without MIRNET_CACHE (the user's real cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "mirnet-edge"


def test_the_cache_is_temporary(tmp_path_factory):
    base = tmp_path_factory.getbasetemp().resolve()
    assert os.environ.get("MIRNET_CACHE"), "tests/conftest.py must set MIRNET_CACHE for the session"
    assert cache_dir().resolve().is_relative_to(base)
    assert cache_dir().resolve() != user_cache().resolve()
    proc = subprocess.run([sys.executable, "-c", "from mirnet.sdk.artifact import cache_dir; print(cache_dir())"],
                          capture_output=True, text=True, timeout=60)
    assert Path(proc.stdout.strip()).resolve().is_relative_to(base)


def test_a_cached_export_lands_in_the_temporary_cache(tiny_weights):
    pytest.importorskip("onnx")
    from mirnet.optimize.export_onnx import cached_export

    def state(file: Path):
        return file.stat().st_mtime_ns if file.exists() else None

    onnx_dir = user_cache() / "onnx"
    before = {p.name: state(p) for p in onnx_dir.glob("*")} if onnx_dir.is_dir() else {}
    path = cached_export(tiny_weights)
    assert path.resolve().is_relative_to(cache_dir().resolve())
    assert state(onnx_dir / path.name) == before.get(path.name)
