"""The benchmark harness measures and records correctly (speeds themselves are never asserted)."""
import importlib.util
import json
import time

import cv2
import numpy as np
import pytest

from mirnet.benchmarks import report, suite
from mirnet.benchmarks.harness import PeakRSS, machine_info
from mirnet.sdk.cli import main
from mirnet.sdk.errors import ConfigError


def test_parse_sizes():
    assert suite.parse_sizes("256,640x360, 1920x1080") == [(256, 256), (360, 640), (1080, 1920)]
    with pytest.raises(ConfigError, match="'12y4'"):
        suite.parse_sizes("12y4")
    with pytest.raises(ConfigError, match="at least 8"):
        suite.parse_sizes("4")


def test_peak_rss_sees_an_allocation():
    with PeakRSS() as mem:
        block = np.ones(64 * 2 ** 20 // 8)
        del block
    if mem.mb is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert mem.delta_mb > 40


def test_machine_info_records_versions():
    info = machine_info()
    assert info["cores"] >= 1 and info["versions"]["numpy"] and info["date"]


def test_bench_cli_end_to_end(tmp_path, tiny_weights, tiny_onnx):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold table\n{report.README_END}\nrest\n")
    out = tmp_path / "res" / "bench.json"
    assert main(["bench", str(tiny_weights), str(tiny_onnx), "nano", "--sizes", "32,48x40", "--baselines", "nlm",
                 "--min-seconds", "0.01", "--quality-data", "tests/data/clean", "--quality-limit", "1",
                 "--quality-protocols", "camera-jpeg", "--json", str(out), "--readme", str(readme), "-q"]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    labels = {(r["artifact"], r["backend"], r["precision"]) for r in rows}
    assert {("tiny", "pytorch-eager", "fp32"), ("tiny", "onnxruntime", "fp32"), ("tiny.onnx", "onnxruntime", "fp32")} \
        <= labels
    assert ("opencv-nlm", "opencv", "uint8") in labels and ("nano-random", "onnxruntime", "fp32") in labels
    if importlib.util.find_spec("openvino"):  # the same ONNX on OpenVINO, f32 (and bf16 where the CPU has it)
        assert {("tiny", "openvino", "fp32"), ("tiny.onnx", "openvino", "fp32")} <= labels
    assert len(rows) == len(labels) * 2
    for r in rows:
        assert r["p50_ms"] > 0 and r["p90_ms"] <= r["p99_ms"] + 1e-9 and r["runs"] >= 3
        assert r["fps"] == pytest.approx(1000 / r["p50_ms"])
    tiny = [r for r in rows if r["artifact"] == "tiny"]
    assert all(r["psnr_db"] is not None and 0 < r["ssim"] <= 1 for r in tiny)
    assert [r["gmac_per_frame"] for r in tiny if r["size"] == "32x32"][0] > 0
    assert all(r["psnr_db"] is None and not r["camera"] for r in rows if r["artifact"] == "nano-random")
    jpeg = [r["camera"]["camera-jpeg"] for r in rows if r["artifact"] in ("tiny", "opencv-nlm")]
    assert all(10 < c["input_psnr_db"] < 40 and np.isfinite(c["psnr_db"]) for c in jpeg)
    md = (tmp_path / "res" / "bench.md").read_text()
    assert "**48x40**" in md and "| tiny | onnxruntime | fp32 |" in md
    assert "**Camera protocols**" in md and "| opencv-nlm | opencv |" in md
    crop = cv2.imread(str(tmp_path / "res" / "bench_camera-jpeg.png"))
    assert result["crops"] == [str(tmp_path / "res" / "bench_camera-jpeg.png")]
    assert crop.shape[0] <= 128 and crop.shape[1] == crop.shape[0] * 5  # input, tiny, tiny.onnx, nlm, clean
    assert (tmp_path / "res" / "bench_latency.png").stat().st_size > 1000
    assert (tmp_path / "res" / "bench_pareto.png").is_file()
    text = readme.read_text()
    assert "old table" not in text and "| tiny | onnxruntime | fp32 |" in text and text.endswith("rest\n")
    assert "](res/bench_latency.png)" in text
    assert main(["bench", "--render", str(out)]) == 0


def test_slow_runner_is_skipped_at_larger_sizes(monkeypatch):
    def slow_runners(names, threads):
        return [suite.Runner("slow", "test", "fp32", lambda x: (time.sleep(0.03), x)[1], 1, trained=False)]

    monkeypatch.setattr(suite, "_baseline_runners", slow_runners)
    result = suite.run([], sizes=[(16, 16), (32, 32)], baselines=["x"], min_seconds=0.0,
                       max_seconds_per_run=0.01)
    assert "skipped" not in result["rows"][0] and "slower than" in result["rows"][1]["skipped"]


def test_bundled_rows_run_gray_frames_as_the_sdk_does():
    """A bundled model with a gray specialist: the bench's rows restore gray frames on it (as the
    Restorer does), colour frames on the model."""
    from mirnet.sdk import Restorer, zoo

    runners = {(r.backend, r.precision): r for r in suite._model_runners(zoo.DEFAULT_MODEL, threads=1)}
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.random((1, 1, 32, 48), dtype=np.float32), 3, axis=1)
    colour = rng.random((1, 3, 32, 48), dtype=np.float32)
    with Restorer(zoo.DEFAULT_MODEL, backend="ort") as sdk, \
            Restorer(zoo.DEFAULT_MODEL, backend="ort", gray_model=None) as plain:
        ort = runners[("onnxruntime", "fp32")].infer
        np.testing.assert_array_equal(ort(gray), sdk.infer_tensor(gray))
        np.testing.assert_array_equal(ort(colour), plain.infer_tensor(colour))
        assert np.abs(ort(gray) - plain.infer_tensor(gray)).max() > 1e-3
    if importlib.util.find_spec("openvino"):
        ov = runners[("openvino", "fp32")].infer
        assert np.abs(ov(gray) - ort(gray)).max() < 1e-3


def test_cpu_int8_qdq_rows_run_on_openvino_too(tiny_onnx, tmp_path):
    """An ONNX made for ONNX Runtime or TensorRT gets the ONNX Runtime row only; FP32 and
    `quantize --target cpu`'s Q/DQ (int8-qdq-cpu) get OpenVINO's rows too, labelled with their precision."""
    pytest.importorskip("openvino")
    from mirnet.sdk import artifact

    def rows(precision):
        path = tmp_path / f"{precision}.onnx"
        path.write_bytes(tiny_onnx.read_bytes())
        manifest = artifact.read_manifest(tiny_onnx, kind="onnx")
        artifact.write_manifest(path, {**manifest, "file": path.name, "precision": precision})
        return [(r.backend, r.precision.split("/")[0]) for r in suite._model_runners(str(path), threads=1)]

    assert [b for b, _ in rows("int8-ort")] == ["onnxruntime"]
    assert [b for b, _ in rows("int8-qdq")] == ["onnxruntime"]
    cpu = rows("int8-qdq-cpu")
    assert cpu[0] == ("onnxruntime", "int8-qdq-cpu") and ("openvino", "int8-qdq-cpu") in cpu[1:]
    assert ("openvino", "fp32") in rows("fp32")

