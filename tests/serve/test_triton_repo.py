"""`mirnet export triton`: model repositories whose config.pbtxt parses with Triton's model-config
schema, matches its model file, and is accepted by the bundled tritonserver up to loading the
onnxruntime backend (which PyTriton does not ship)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from servekit import free_ports

from mirnet.sdk.cli import main
from mirnet.sdk.errors import ArtifactError, ConfigError
from mirnet.sdk.triton_repo import export_repository, model_config, tritonserver_command, validate_repository

pytest.importorskip("tritonclient.grpc.model_config_pb2",
                    reason="tritonclient is not installed: pip install 'mirnet-edge[serve]'")
REPO = Path(__file__).resolve().parents[2]


def test_export_cli_writes_a_valid_repository(tiny_onnx, tmp_path, capsys):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    out = tmp_path / "repo"
    assert main(["export", "triton", str(tiny_onnx), "-o", str(out), "--name", "tiny", "--max-batch", "4",
                 "--instances", "2", "--kind", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert tritonserver_command(out.resolve()) in printed
    config = text_format.Parse((out / "tiny" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("tiny", "onnxruntime_onnx", 4)
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output", [3, -1, -1])]
    assert config.input[0].data_type == pb.TYPE_FP32 and config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in config.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 2)]
    assert config.parameters["mirnet_pad_multiple"].string_value == "4"
    assert (out / "tiny" / "1" / "model.onnx").read_bytes() == Path(tiny_onnx).read_bytes()
    assert json.loads((out / "tiny" / "mirnet.json").read_text())["io"]["input"]["name"] == "input"
    assert [m["name"] for m in validate_repository(out)] == ["tiny"]
    # an existing model folder is replaced only with --force
    assert main(["export", "triton", str(tiny_onnx), "-o", str(out), "--name", "tiny"]) == 5
    assert "--force" in capsys.readouterr().err
    assert main(["export", "triton", str(tiny_onnx), "-o", str(out), "--name", "tiny", "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tiny"]  # no temporary folder left behind


def test_validation_catches_what_triton_would_refuse(tiny_onnx, tmp_path):
    out = tmp_path / "repo"
    (folder,) = export_repository(tiny_onnx, out, name="tiny")
    config = folder / "config.pbtxt"
    good = config.read_text()
    for broken, words in [(good.replace('name: "input"', 'name: "image"'), "declares image"),
                          (good.replace("max_batch_size: 8", "max_batch: 8"), "not a Triton model configuration"),
                          (good.replace('name: "tiny"', 'name: "other"'), "differs from its folder"),
                          (good.replace("dims: 3\n", "dims: 4\n", 1), "TYPE_FP32 [-1, 4, -1, -1]")]:
        config.write_text(broken)
        with pytest.raises(ArtifactError, match=re.escape(words)):
            validate_repository(out)
    config.write_text(good)
    (folder / "1" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx is missing"):
        validate_repository(out)


def test_bad_requests_name_the_fix(tiny_weights, tiny_onnx, tmp_path):
    with pytest.raises(ArtifactError, match="mirnet export onnx"):
        export_repository(tiny_weights, tmp_path / "r")
    with pytest.raises(ConfigError, match="--name"):
        export_repository(tiny_onnx, tmp_path / "r", name="bad name")
    with pytest.raises(ConfigError, match="max_batch=0"):
        export_repository(tiny_onnx, tmp_path / "r", max_batch=0)
    with pytest.raises(ConfigError, match="engine a TensorRT"):
        export_repository(tiny_onnx, tmp_path / "r", engine=tiny_onnx)
    assert not (tmp_path / "r").exists()


def test_engine_config_follows_the_engine_manifest(tmp_path):
    from google.protobuf import text_format

    manifest = json.loads((REPO / "sdk/zoo/denoise-lite.onnx.json").read_text())
    manifest["engine"] = {"profiles": [{"min": [1, 3, 64, 64], "opt": [2, 3, 720, 1280], "max": [2, 3, 1088, 1920]}]}
    folder = tmp_path / "repo" / "lite-trt"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.plan").write_bytes(b"plan")
    (folder / "mirnet.json").write_text(json.dumps(manifest))
    config = model_config(manifest, name="lite-trt", kind="engine", max_batch=2)
    assert (config.platform, config.default_model_filename) == ("tensorrt_plan", "model.plan")
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    assert validate_repository(tmp_path / "repo")[0]["instances"] == [("KIND_GPU", 1)]
    config.max_batch_size = 4  # more than the engine's profiles allow
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    with pytest.raises(ArtifactError, match="batch <= 2"):
        validate_repository(tmp_path / "repo")


def test_bundled_tritonserver_accepts_the_configuration(tiny_onnx, tmp_path):
    """PyTriton's tritonserver parses and normalises the exported config; only the onnxruntime
    backend library, which it does not ship, is missing (a production container has it)."""
    pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed: pip install 'mirnet-edge[serve]'")
    from pytriton.triton import TRITONSERVER_DIST_DIR
    from pytriton.utils.distribution import get_libs_path

    export_repository(tiny_onnx, tmp_path / "repo", name="tiny", instance_kind="cpu")
    http, grpc, metrics = free_ports()
    env = dict(os.environ, LD_LIBRARY_PATH=str(get_libs_path()))
    server = TRITONSERVER_DIST_DIR / "bin" / "tritonserver"
    proc = subprocess.run([str(server), f"--model-repository={tmp_path / 'repo'}",
                           f"--backend-directory={TRITONSERVER_DIST_DIR / 'backends'}", "--exit-timeout-secs=1",
                           f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
                           "--http-address=127.0.0.1", "--grpc-address=127.0.0.1"],
                          capture_output=True, text=True, timeout=60, env=env)
    log = proc.stdout + proc.stderr
    assert "loading: tiny:1" in log, log[-3000:]
    assert "unable to find backend library for backend 'onnxruntime'" in log, log[-3000:]
