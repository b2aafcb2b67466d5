"""Engine building without TensorRT: profiles, flag decisions, trtexec command, parser errors,
manifest, the quality-gate hook and the CLI. The TensorRT-calling part runs against a small fake
``tensorrt`` module (test-only, below) that records what the builder was asked to do."""
import json
import sys
import types
from types import SimpleNamespace

import pytest

from mirnet.optimize import build_engine as be
from mirnet.sdk import artifact
from mirnet.sdk.backends.tensorrt_env import Profile, check_engine_environment, rebuild_command
from mirnet.sdk.cli import main
from mirnet.sdk.errors import ArtifactError, ConfigError, MirnetError, MissingDependencyError
from mirnet.sdk.model.config import MIRNetV2Config

TINY = MIRNetV2Config(n_feat=16, n_rrg=1, n_mrb=1, width=1, max_groups=1)  # pad multiple 4
ENV = {"tensorrt": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "cuda_runtime": "12.6",
       "cuda_driver": "12.6", "device": 0}


# ---------------------------------------------------------------------------- fixtures
def _write_onnx(path, qdq=False, config=TINY, precision="fp32", **extra):
    """A tiny real ONNX graph (Identity, or Quantize/Dequantize) plus its manifest."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
                 helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["output"])]
    else:
        inits, nodes = [], [helper.make_node("Identity", ["input"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    artifact.write_manifest(path, artifact.make_manifest(path, kind="onnx", config=config.to_dict(),
                                                         precision=precision, variant="tiny", opset=17, **extra))
    return path


@pytest.fixture
def onnx_file(tmp_path):
    return _write_onnx(tmp_path / "tiny.onnx", pruning={"macs_ratio": 0.3})


@pytest.fixture
def qdq_file(tmp_path):
    return _write_onnx(tmp_path / "tiny_int8.onnx", qdq=True, precision="int8")


def _fake_tensorrt(version="10.3.0", parse_ok=True, build_ok=True, cache_ok=True, errors=()):
    """Test-only stand-in for the ``tensorrt`` module: records the builder calls, builds b"ENGINE"."""
    calls = {"profiles": [], "flags": [], "pools": {}}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    trt.BuilderFlag = SimpleNamespace(**{n: n for n in ("FP16", "INT8", "GPU_FALLBACK", "VERSION_COMPATIBLE")})
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = SimpleNamespace(DLA="DLA", GPU="GPU")

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return b"cache+" + self.data

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["pools"][pool] = size

        def set_flag(self, flag):
            calls["flags"].append(flag)

        def add_optimization_profile(self, profile):
            return len(calls["profiles"]) - 1

        def create_timing_cache(self, data):
            calls["cache_in"] = bytes(data)
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return cache_ok

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            calls["network_flags"] = flags
            return SimpleNamespace(num_inputs=1, get_input=lambda i: SimpleNamespace(name="input"))

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return SimpleNamespace(set_shape=lambda *a: calls["profiles"].append(a))

        def build_serialized_network(self, network, config):
            if not build_ok:
                self.logger.log(1, "Out of memory while building tactic 7")
                return None
            return b"ENGINE"

    class OnnxParser:
        num_errors = len(errors)

        def __init__(self, network, logger):
            pass

        def parse(self, data, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return errors[i]

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt, calls


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kwargs):
        trt, calls = _fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(be, "runtime_environment", lambda trt, device=0: dict(ENV, tensorrt=trt.__version__))
        return calls
    return install


# ---------------------------------------------------------------------------- profiles
def test_parse_profile_forms():
    full = be.parse_profile("1x3x256x256:1x3x720x1280:2x3x1080x1920", channels=3, pad_multiple=4)
    assert full == Profile((1, 3, 256, 256), (1, 3, 720, 1280), (2, 3, 1080, 1920))
    short = be.parse_profile("64x64:720x1280:1088x1920", channels=3, pad_multiple=16)
    assert short.min == (1, 3, 64, 64) and short.max == (1, 3, 1088, 1920)
    fixed = be.parse_profile("720x1280", channels=6, pad_multiple=4)
    assert fixed.min == fixed.opt == fixed.max == (1, 6, 720, 1280)
    mixed = be.parse_profile("64x64:1x3x128x128:256X256", channels=3, pad_multiple=4)
    assert mixed.spec == "1x3x64x64:1x3x128x128:1x3x256x256"


@pytest.mark.parametrize("text, pattern", [
    ("62x64:128x128:256x256", r"height 62 of the min shape is not a multiple of 4.*use 60 or 64"),
    ("64x64:128x130:256x256", r"width 130 of the opt shape .* multiple of 4"),
    ("2x64:128x128:256x256", r"height 2 .*use 4"),
    ("128x128:64x64:256x256", r"min height 128 > opt height 64"),
    ("1x3x64x64:1x3x128x128:1x3x96x256", r"opt height 128 > max height 96"),
    ("2x3x64x64:1x3x128x128:2x3x256x256", r"min batch 2 > opt batch 1"),
    ("1x1x64x64:1x1x64x64:1x1x64x64", r"1 channels; this model takes 3"),
    ("64x64:128x128", r"MIN:OPT:MAX .*got 2 parts"),
    ("64x64:128:256x256", r"opt shape '128' has 1 dimensions"),
    ("64x64:axb:256x256", r"opt shape 'axb' is not NxCxHxW"),
    ("0x64:64x64:64x64", r"dimension < 1"),
    ("", r"expected MIN:OPT:MAX"),
])
def test_parse_profile_errors_name_the_bad_value(text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        be.parse_profile(text, channels=3, pad_multiple=4)


def test_default_profiles_follow_pad_multiple():
    (p4,) = be.default_profiles(3, 4)
    assert p4 == Profile((1, 3, 64, 64), (1, 3, 720, 1280), (1, 3, 1080, 1920))
    (p16,) = be.default_profiles(3, 16)
    assert p16.max == (1, 3, 1088, 1920) and p16.min == (1, 3, 64, 64)
    (p12,) = be.default_profiles(6, 12)
    assert p12.min == (1, 6, 72, 72) and all(d % 12 == 0 for d in p12.opt[2:] + p12.max[2:])


def test_resolve_profiles_several_and_default():
    got = be.resolve_profiles(["64x64:128x128:256x256", "256x256:720x1280:1080x1920"], channels=3, pad_multiple=4)
    assert [p.opt for p in got] == [(1, 3, 128, 128), (1, 3, 720, 1280)]
    assert be.resolve_profiles(None, channels=3, pad_multiple=4) == be.default_profiles(3, 4)
    with pytest.raises(ConfigError, match="multiple of 8"):  # Profile objects are validated too
        be.resolve_profiles([Profile((1, 3, 4, 4), (1, 3, 4, 4), (1, 3, 4, 4))], channels=3, pad_multiple=8)


# ---------------------------------------------------------------------------- flags
def test_plan_fp32_and_fp16():
    plan = be.plan_build()
    assert (plan.flags, plan.precision, plan.strongly_typed) == ((), "fp32", False)
    plan = be.plan_build(fp16=True, workspace_mb=512, version_compatible=True)
    assert plan.flags == ("FP16", "VERSION_COMPATIBLE") and plan.precision == "fp16" and plan.workspace_mb == 512


def test_plan_qdq_is_strongly_typed_int8():
    plan = be.plan_build(has_qdq=True)
    assert plan.strongly_typed and plan.flags == () and plan.precision == "int8"
    weak = be.plan_build(has_qdq=True, strongly_typed=False)
    assert not weak.strongly_typed and weak.flags == ("INT8",) and "deprecated" in weak.notes[0]


def test_plan_refuses_fp16_with_strongly_typed():
    with pytest.raises(ConfigError, match=r"--fp16 cannot be combined with a strongly typed network \(the ONNX "
                                          r"has QuantizeLinear/DequantizeLinear"):
        be.plan_build(fp16=True, has_qdq=True)
    with pytest.raises(ConfigError, match=r"--strongly-typed was requested.*drop --strongly-typed"):
        be.plan_build(fp16=True, strongly_typed=True)


def test_plan_dla():
    with pytest.raises(ConfigError, match="DLA runs FP16 and INT8 layers only; add --fp16"):
        be.plan_build(dla_core=0)
    plan = be.plan_build(fp16=True, dla_core=1)
    assert plan.flags == ("FP16", "GPU_FALLBACK") and plan.dla_core == 1
    assert be.plan_build(has_qdq=True, dla_core=0).flags == ("GPU_FALLBACK",)
    with pytest.raises(ConfigError, match="numbered from 0"):
        be.plan_build(fp16=True, dla_core=-1)
    with pytest.raises(ConfigError, match="MiB >= 1"):
        be.plan_build(workspace_mb=0)


def test_plan_tensorrt_11_is_always_strongly_typed():
    with pytest.raises(ConfigError, match="TensorRT 11 removed the FP16 builder flag.*modelopt.onnx.autocast"):
        be.plan_build(fp16=True, trt_major=11)
    assert be.plan_build(trt_major=11).strongly_typed
    with pytest.raises(ConfigError, match="strongly typed"):
        be.plan_build(strongly_typed=False, trt_major=11)


# ---------------------------------------------------------------------------- trtexec
def test_trtexec_command_single_profile_all_options():
    plan = be.plan_build(fp16=True, dla_core=0, version_compatible=True, workspace_mb=2048)
    cmd = be.trtexec_command("m.onnx", "m.engine", input_name="input", plan=plan, timing_cache="tc.cache",
                             profiles=[Profile((1, 3, 64, 64), (1, 3, 720, 1280), (1, 3, 1080, 1920))])
    assert cmd == ("trtexec --onnx=m.onnx --saveEngine=m.engine --minShapes=input:1x3x64x64 "
                   "--optShapes=input:1x3x720x1280 --maxShapes=input:1x3x1080x1920 --fp16 "
                   "--memPoolSize=workspace:2048M --timingCacheFile=tc.cache --useDLACore=0 --allowGPUFallback "
                   "--versionCompatible --skipInference")


def test_trtexec_command_profiles_strongly_typed_and_quoting():
    profiles = be.resolve_profiles(["64x64:64x64:128x128", "128x128:256x256:512x512"], channels=3, pad_multiple=4)
    cmd = be.trtexec_command("my models/m.onnx", "out.plan", input_name="input", profiles=profiles,
                             plan=be.plan_build(has_qdq=True))
    assert "'--onnx=my models/m.onnx'" in cmd
    assert ("--profile=0 --minShapes=input:1x3x64x64 --optShapes=input:1x3x64x64 --maxShapes=input:1x3x128x128 "
            "--profile=1 --minShapes=input:1x3x128x128") in cmd
    assert "--stronglyTyped" in cmd and "--fp16" not in cmd and "--int8" not in cmd
    assert "--int8" in be.trtexec_command("m.onnx", "m.engine", input_name="input", profiles=profiles,
                                          plan=be.plan_build(has_qdq=True, strongly_typed=False))


# ---------------------------------------------------------------------------- parser errors
class _Code:
    def __init__(self, name):
        self.name = name


def _error(node, desc, code, name=None, op=None):
    err = SimpleNamespace(node=lambda: node, desc=lambda: desc, code=lambda: _Code(code))
    if name is not None:  # TensorRT 10 adds node_name()/node_operator(); 8.x has neither
        err.node_name, err.node_operator = (lambda: name), (lambda: op)
    return err


def test_format_parser_errors():
    msg = be.format_parser_errors("m.onnx", [
        _error(12, "No importer registered for op: FancyOp", "UNSUPPORTED_NODE", "/body/fancy", "FancyOp"),
        _error(-1, "Graph input has no shape", "INVALID_GRAPH"),
        _error(3, "bad attribute", "INVALID_NODE"),
    ])
    lines = msg.splitlines()
    assert lines[0] == "m.onnx: TensorRT's ONNX parser reported 3 error(s):"
    assert lines[1] == ("  [1] node 12 '/body/fancy' (FancyOp): No importer registered for op: FancyOp "
                        "[UNSUPPORTED_NODE]")
    assert lines[2] == "  [2] graph: Graph input has no shape [INVALID_GRAPH]"
    assert lines[3] == "  [3] node 3: bad attribute [INVALID_NODE]"
    assert "re-export with another opset" in msg and "--verbose" in msg


def test_format_parser_errors_without_details():
    broken = SimpleNamespace(node=lambda: (_ for _ in ()).throw(RuntimeError()), desc=lambda: "boom", code=None)
    msg = be.format_parser_errors("m.onnx", [broken])
    assert "[1] graph: boom" in msg
    assert "without recording an error" in be.format_parser_errors("m.onnx", [])


# ---------------------------------------------------------------------------- ONNX / manifest
def test_onnx_has_qdq(onnx_file, qdq_file, monkeypatch):
    assert be.onnx_has_qdq(qdq_file) and not be.onnx_has_qdq(onnx_file)
    monkeypatch.setitem(sys.modules, "onnx", None)  # the byte-scan fallback without the onnx package
    assert be.onnx_has_qdq(qdq_file) and not be.onnx_has_qdq(onnx_file)


def test_prepare_build(onnx_file, qdq_file, tmp_path):
    req = be.prepare_build(onnx_file, tmp_path / "t.engine", fp16=True, profiles=["64x64:128x128:256x256"])
    assert req.plan.flags == ("FP16",) and req.input_name == "input" and len(req.profiles) == 1
    assert req.trtexec.startswith(f"trtexec --onnx={onnx_file} --saveEngine={tmp_path / 't.engine'} --minShapes")
    assert be.prepare_build(qdq_file, tmp_path / "q.plan").plan.strongly_typed
    with pytest.raises(ConfigError, match=r"must end in \.engine or \.plan"):
        be.prepare_build(onnx_file, tmp_path / "t.trt")
    with pytest.raises(ArtifactError, match="no such ONNX file"):
        be.prepare_build(tmp_path / "missing.onnx", tmp_path / "t.engine")
    with pytest.raises(ConfigError, match="needs --data DIR"):
        be.prepare_build(onnx_file, tmp_path / "t.engine", min_psnr_db=35)
    (tmp_path / "lone.onnx").write_bytes(onnx_file.read_bytes())
    with pytest.raises(ArtifactError, match="manifest .* not found"):
        be.prepare_build(tmp_path / "lone.onnx", tmp_path / "t.engine")


def test_engine_manifest_content(onnx_file, tmp_path):
    engine = tmp_path / "tiny.engine"
    onnx_manifest = artifact.read_manifest(onnx_file, kind="onnx")
    plan = be.plan_build(fp16=True, dla_core=0, version_compatible=True, workspace_mb=256)
    profiles = be.default_profiles(3, 4)
    fields = be.engine_manifest_fields(plan=plan, profiles=profiles, env=ENV, input_name="input",
                                       trtexec="trtexec ...", timing_cache=tmp_path / "tc.cache")
    with artifact.writer(engine, force=False) as w:
        w.tmp.write_bytes(b"serialized engine")
        w.describe(**be.engine_manifest(onnx_file, onnx_manifest, plan, fields))
    m = artifact.read_manifest(engine, kind="engine")
    assert m["precision"] == "fp16" and m["config"] == TINY.to_dict() and m["variant"] == "tiny"
    assert m["io"] == onnx_manifest["io"] and m["opset"] == 17 and m["pruning"] == {"macs_ratio": 0.3}
    assert m["source"] == {"file": "tiny.onnx", "sha256": artifact.sha256_file(onnx_file)}
    for key in ("tensorrt", "gpu_name", "compute_capability", "cuda_runtime", "cuda_driver"):
        assert m["build"][key] == ENV[key]
    assert m["engine"] == {
        "input_name": "input", "profiles": [profiles[0].to_dict()], "fp16": True, "strongly_typed": False,
        "qdq": False, "builder_flags": ["FP16", "GPU_FALLBACK", "VERSION_COMPATIBLE"], "workspace_mb": 256,
        "dla_core": 0, "version_compatible": True, "timing_cache": str(tmp_path / "tc.cache")}
    assert m["trtexec"] == "trtexec ..."
    # the manifest is enough to rebuild, and passes the environment check it was built in
    assert rebuild_command(m, engine) == (
        f"mirnet build-engine tiny.onnx -o {engine} --force --fp16 --profile 1x3x64x64:1x3x720x1280:1x3x1080x1920 "
        f"--workspace 256 --timing-cache {tmp_path / 'tc.cache'} --dla 0 --version-compatible")
    check_engine_environment(m, dict(ENV, dla_cores=2), engine)


# ---------------------------------------------------------------------------- the build (fake TensorRT)
def test_run_build_calls_builder(fake_trt, onnx_file, tmp_path):
    calls = fake_trt()
    cache = tmp_path / "tc.cache"
    cache.write_bytes(b"old")
    out = be.build_engine(onnx_file, tmp_path / "e" / "tiny.engine", fp16=True, workspace_mb=64,
                          profiles=["64x64:128x128:256x256", "256x256:512x512:1024x1024"], timing_cache=cache)
    assert out.read_bytes() == b"ENGINE" and calls["parsed"] == str(onnx_file)
    assert calls["network_flags"] == 0 and calls["flags"] == ["FP16"] and calls["pools"] == {"WORKSPACE": 64 << 20}
    assert calls["profiles"] == [("input", (1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)),
                                 ("input", (1, 3, 256, 256), (1, 3, 512, 512), (1, 3, 1024, 1024))]
    assert calls["cache_in"] == b"old" and cache.read_bytes() == b"cache+old"
    m = artifact.read_manifest(out, kind="engine")
    assert m["build"]["gpu_name"] == "Orin" and len(m["engine"]["profiles"]) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.engine", "tiny.engine.json"]


def test_run_build_strongly_typed_dla_vc(fake_trt, qdq_file, tmp_path):
    calls = fake_trt()
    be.build_engine(qdq_file, tmp_path / "q.engine", dla_core=1, version_compatible=True)
    assert calls["network_flags"] == 1 << 5
    assert calls["flags"] == ["GPU_FALLBACK", "VERSION_COMPATIBLE"]
    assert calls["config"].default_device_type == "DLA" and calls["config"].DLA_core == 1
    assert artifact.read_manifest(tmp_path / "q.engine")["precision"] == "int8"


def test_run_build_parser_errors(fake_trt, onnx_file, tmp_path):
    fake_trt(parse_ok=False, errors=[_error(4, "unsupported", "UNSUPPORTED_NODE", "n4", "Foo")])
    with pytest.raises(ArtifactError, match=r"reported 1 error\(s\):\n  \[1\] node 4 'n4' \(Foo\): unsupported"):
        be.build_engine(onnx_file, tmp_path / "t.engine")
    assert not (tmp_path / "t.engine").exists()


def test_run_build_failure_quotes_tensorrt(fake_trt, onnx_file, tmp_path, capsys):
    fake_trt(build_ok=False)
    pattern = r"(?s)could not build .*\n  Out of memory while building tactic 7\n.*trtexec --onnx="
    with pytest.raises(ArtifactError, match=pattern):
        be.build_engine(onnx_file, tmp_path / "t.engine")
    assert "[TensorRT] ERROR: Out of memory" in capsys.readouterr().err  # the logger also printed it


def test_run_build_tensorrt_11_and_cache_mismatch(fake_trt, onnx_file, tmp_path):
    fake_trt(version="11.1.0")
    with pytest.raises(ConfigError, match="TensorRT 11 removed the FP16 builder flag"):
        be.build_engine(onnx_file, tmp_path / "t.engine", fp16=True)
    fake_trt(cache_ok=False)
    with pytest.raises(ArtifactError, match="timing cache .* another GPU"):
        be.build_engine(onnx_file, tmp_path / "t.engine", timing_cache=tmp_path / "other.cache")


def test_trtexec_line_and_engine_follow_one_plan(fake_trt, onnx_file, tmp_path, monkeypatch):
    """TensorRT 11 builds every network strongly typed: the plan made for it drives the builder, the
    manifest's build settings and its trtexec line alike, and the line printed before the build
    already knows the installed version (from the package metadata, without importing TensorRT)."""
    import importlib.metadata

    def metadata_version(dist):
        if dist != "tensorrt":
            raise importlib.metadata.PackageNotFoundError(dist)
        return "11.1.0"

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)  # not imported yet: the metadata says 11
    monkeypatch.setattr(importlib.metadata, "version", metadata_version)
    request = be.prepare_build(onnx_file, tmp_path / "t.engine", workspace_mb=64)
    assert request.plan.strongly_typed and "--stronglyTyped" in request.trtexec
    monkeypatch.undo()
    monkeypatch.setattr(be, "installed_major", lambda: None)
    preview = be.prepare_build(onnx_file, tmp_path / "t.engine", workspace_mb=64)  # TensorRT unknown
    assert not preview.plan.strongly_typed and "--stronglyTyped" not in preview.trtexec
    calls = fake_trt(version="11.1.0")
    out = be.run_build(preview)  # re-planned for the TensorRT that builds
    m = artifact.read_manifest(out, kind="engine")
    assert calls["network_flags"] == 1 << 5 and m["engine"]["strongly_typed"] is True
    plan = be.plan_build(workspace_mb=64, onnx_precision="fp32", trt_major=11)
    assert m["trtexec"] == be.trtexec_command(onnx_file, out, input_name="input", profiles=request.profiles,
                                              plan=plan)
    assert "--stronglyTyped" in m["trtexec"] and m["engine"]["builder_flags"] == list(plan.flags)
    assert m["precision"] == plan.precision


def test_run_build_refuses_old_tensorrt(fake_trt, onnx_file, tmp_path):
    fake_trt(version="8.6.1")
    with pytest.raises(MissingDependencyError, match="TensorRT 8.6.1 is installed; mirnet-edge supports TensorRT 10"):
        be.build_engine(onnx_file, tmp_path / "t.engine")


# ---------------------------------------------------------------------------- quality gate hook
def test_gate_skipped_without_gate_module(fake_trt, onnx_file, tmp_path, monkeypatch):
    fake_trt()
    monkeypatch.setitem(sys.modules, "mirnet.optimize.gate", None)  # as if gate.py were not installed
    with pytest.warns(UserWarning, match="quality gate skipped"):
        out = be.build_engine(onnx_file, tmp_path / "t.engine", min_psnr_db=35, gate_data=tmp_path)
    assert artifact.read_manifest(out)["gate"]["status"] == "skipped"


def _fake_gate(monkeypatch, fn):
    module = types.ModuleType("mirnet.optimize.gate")
    module.run_gate = fn
    monkeypatch.setitem(sys.modules, "mirnet.optimize.gate", module)


def test_gate_pass_and_fail(fake_trt, onnx_file, tmp_path, monkeypatch):
    fake_trt()
    seen = {}

    def passing(*, artifact, reference, data, max_loss_db, min_psnr_db):
        seen.update(artifact=artifact, reference=reference, data=data, max_loss_db=max_loss_db, min_psnr_db=min_psnr_db)
        return {"loss_db": 0.02}

    _fake_gate(monkeypatch, passing)
    out = be.build_engine(onnx_file, tmp_path / "t.engine", gate_data=tmp_path)  # --data alone gates, 0.15 dB
    assert seen == {"artifact": out, "reference": onnx_file, "data": tmp_path, "max_loss_db": 0.15, "min_psnr_db": None}
    assert artifact.read_manifest(out)["gate"] == {"status": "passed", "max_loss_db": 0.15, "min_psnr_db": None,
                                                   "result": {"loss_db": 0.02}}
    out = be.build_engine(onnx_file, tmp_path / "t.engine", max_loss_db=0.3, min_psnr_db=35, gate_data=tmp_path)
    assert seen["max_loss_db"] == 0.3 and seen["min_psnr_db"] == 35

    def failing(**kwargs):
        raise MirnetError("PSNR 30.1 dB < 35 dB; keep conv_out in FP32")

    _fake_gate(monkeypatch, failing)
    with pytest.raises(MirnetError, match="PSNR 30.1 dB"):
        be.build_engine(onnx_file, tmp_path / "t.engine", min_psnr_db=35, gate_data=tmp_path)
    assert not out.exists() and not artifact.sidecar_path(out).exists()


def test_gate_reference_is_the_fp32_model(onnx_file, qdq_file, tmp_path):
    """An FP32 ONNX is its own reference; a Q/DQ INT8 ONNX is gated against the FP32 weights its
    manifest names as source, which must sit beside it."""
    assert be.gate_reference(onnx_file, artifact.read_manifest(onnx_file)) == onnx_file
    manifest = artifact.read_manifest(qdq_file)
    with pytest.raises(ConfigError, match="not recorded"):
        be.gate_reference(qdq_file, manifest)
    manifest["source"] = {"file": "/elsewhere/tiny.safetensors", "sha256": "0" * 64}
    with pytest.raises(ConfigError, match="FP32 weights it was quantized from"):
        be.gate_reference(qdq_file, manifest)
    (tmp_path / "tiny.safetensors").write_bytes(b"weights")
    assert be.gate_reference(qdq_file, manifest) == tmp_path / "tiny.safetensors"


def test_gate_with_other_signature_is_skipped(fake_trt, onnx_file, tmp_path, monkeypatch):
    fake_trt()
    _fake_gate(monkeypatch, lambda candidate, baseline: None)
    with pytest.warns(UserWarning, match="does not take"):
        out = be.build_engine(onnx_file, tmp_path / "t.engine", min_psnr_db=35, gate_data=tmp_path)
    assert artifact.read_manifest(out)["gate"]["status"] == "skipped"


# ---------------------------------------------------------------------------- CLI
def test_cli_without_tensorrt_exits_3_with_trtexec(onnx_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on this machine
    out = tmp_path / "tiny.engine"
    code = main(["build-engine", str(onnx_file), "-o", str(out), "--fp16", "--profile", "64x64:128x128:256x256",
                 "--workspace", "512", "--timing-cache", str(tmp_path / "tc")])
    captured = capsys.readouterr()
    assert code == 3 and not out.exists()
    expected = (f"trtexec --onnx={onnx_file} --saveEngine={out} --minShapes=input:1x3x64x64 "
                f"--optShapes=input:1x3x128x128 --maxShapes=input:1x3x256x256 --fp16 "
                f"--memPoolSize=workspace:512M --timingCacheFile={tmp_path / 'tc'} --skipInference")
    assert captured.out.splitlines()[:2] == ["equivalent trtexec command (where TensorRT is installed):",
                                            f"  {expected}"]
    assert "JetPack" in captured.err and "pypi.nvidia.com" in captured.err and expected in captured.err


def test_cli_errors(onnx_file, tmp_path, capsys):
    assert main(["build-engine", str(onnx_file), "-o", str(tmp_path / "t.engine"),
                 "--profile", "64x64:130x128:256x256"]) == 2
    assert "height 130 of the opt shape is not a multiple of 4" in capsys.readouterr().err
    existing = tmp_path / "there.engine"
    existing.write_bytes(b"x")
    assert main(["build-engine", str(onnx_file), "-o", str(existing)]) == 5
    assert "--force" in capsys.readouterr().err


def test_cli_builds_with_fake_tensorrt(fake_trt, onnx_file, tmp_path, capsys):
    calls = fake_trt()
    out = tmp_path / "t.plan"
    assert main(["build-engine", str(onnx_file), "-o", str(out), "--profile", "256x256",
                 "--version-compatible"]) == 0
    text = capsys.readouterr().out
    assert "--versionCompatible" in text and "profile 0: min 1x3x256x256, opt 1x3x256x256, max 1x3x256x256" in text
    assert f"wrote {out}" in text and "TensorRT 10.3.0, Orin (compute capability 8.7)" in text
    assert calls["flags"] == ["VERSION_COMPATIBLE"]
    assert json.loads(artifact.sidecar_path(out).read_text())["engine"]["version_compatible"] is True
