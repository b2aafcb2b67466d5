"""Fixtures for the serving tests: a short temporary folder (Triton's Unix sockets live in the
server's workspace, and socket paths are limited to 107 bytes) and a shared server on tiny_onnx."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from servekit import ServerProcess, needs_serving


@pytest.fixture
def short_tmp():
    path = Path(tempfile.mkdtemp(prefix="ms-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tiny_onnx, gray_onnx):
    """One `mirnet serve` for a module: tiny_onnx with gray_onnx for gray frames, batches of up to 8
    frames held 50 ms (so that concurrent clients' frames meet in one batch)."""
    needs_serving()
    tmp = Path(tempfile.mkdtemp(prefix="ms-"))
    proc = ServerProcess(["--model", str(tiny_onnx), "--gray-model", str(gray_onnx), "--max-batch", "8", "--max-queue-delay-us", "50000"], tmp)
    try:
        yield proc.start()
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
