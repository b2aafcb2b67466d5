"""With torch unimportable (an ``[ort]``-only install), every command that only runs artifacts works:
restore with the bundled default and an empty cache, info, eval, bench and stream on an .onnx; a
command that needs torch says so with exit code 3 and no traceback."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

DATA = Path(__file__).resolve().parent / "data"
# Any `import torch` (direct or through a dependency) raises ImportError in the child.
RUNNER = ("import sys; sys.modules['torch'] = None; from mirnet.sdk.cli import main; "
          "code = main(sys.argv[1:]); assert sys.modules['torch'] is None; sys.exit(code)")


def mirnet(*args, cache: Path):
    env = dict(os.environ, MIRNET_CACHE=str(cache))
    return subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def workspace(tmp_path):
    from mirnet.sdk import zoo

    clean = tmp_path / "clean"
    clean.mkdir()
    image = cv2.imread(str(DATA / "clean" / "sample_clean.png"))
    cv2.imwrite(str(clean / "a.png"), image[:64, :96])
    onnx = tmp_path / "model.onnx"
    shipped = zoo.bundled_onnx(zoo.DEFAULT_MODEL)
    shutil.copy(shipped, onnx)
    manifest = json.loads(Path(f"{shipped}.json").read_text())
    manifest["file"] = onnx.name
    Path(f"{onnx}.json").write_text(json.dumps(manifest))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(3):
        writer.write(np.full((32, 48, 3), 60 + 40 * i, np.uint8))
    writer.release()
    return {"clean": clean, "onnx": onnx, "video": video, "cache": tmp_path / "cache", "tmp": tmp_path}


def test_artifact_commands_run_without_torch(workspace):
    w = workspace
    cache = w["cache"]
    proc = mirnet("restore", DATA / "sample_noisy.png", "-o", w["tmp"] / "restored", "-q", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert (w["tmp"] / "restored" / "sample_noisy.png").is_file()
    assert not cache.exists(), "the bundled default must run its shipped ONNX, not a cached export"

    proc = mirnet("info", "denoise-lite", cache=cache)
    assert proc.returncode == 0 and "variant" in proc.stdout, proc.stderr

    proc = mirnet("eval", "--model", w["onnx"], "--data", w["clean"], "--sigma", "25", "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["psnr"] > 20

    out = w["tmp"] / "bench.json"
    proc = mirnet("bench", w["onnx"], "--sizes", "64", "--baselines", "nlm", "--quality-data", w["clean"],
                  "--quality-limit", "1", "--min-seconds", "0.01", "--json", out, "-q", cache=cache)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {r["backend"] for r in rows} - {"openvino"} == {"onnxruntime", "opencv"} and rows[0]["psnr_db"] > 20

    proc = mirnet("stream", w["video"], "null://", "--model", w["onnx"], "--policy", "block", "-q", cache=cache)
    assert proc.returncode == 0, proc.stderr


def test_torch_commands_say_what_to_install(workspace):
    proc = mirnet("restore", DATA / "sample_noisy.png", "-o", workspace["tmp"] / "r", "--backend", "torch",
                  cache=workspace["cache"])
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
