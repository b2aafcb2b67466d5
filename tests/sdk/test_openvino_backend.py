"""The OpenVINO backend (ONNX files and IR, f32 against ONNX Runtime, bf16, dynamic shapes, manifest
checks, the .bin's sha256), the CPU rule of ``backend="auto"`` (per installed runtime, per ONNX
precision, ``MIRNET_CPU_BACKEND``) and where the choice is shown (``Restorer``, ``mirnet info``,
stream statistics). Without openvino installed only the rule and the import-blocked checks run."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mirnet.sdk import ArtifactError, ConfigError, MissingDependencyError, Restorer, Stream, artifact, backends, zoo
from mirnet.sdk.backends import choose_backend, open_backend
from mirnet.sdk.cli import main

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install "
                                    "'mirnet-edge[openvino]')")


def batch(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)


def copy_artifact(src, dst, edit=None):
    """Copy an artifact (and an IR's .bin) with its manifest, applying ``edit(manifest)``."""
    shutil.copy(src, dst)
    if src.suffix == ".xml":
        shutil.copy(src.with_suffix(".bin"), dst.with_suffix(".bin"))
    manifest = json.loads(artifact.sidecar_path(src).read_text())
    if edit is not None:
        edit(manifest)
    artifact.sidecar_path(dst).write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def tiny_ir(tiny_onnx, tmp_path_factory):
    pytest.importorskip("openvino")
    from mirnet.optimize.export_openvino import export_openvino

    return export_openvino(tiny_onnx, tmp_path_factory.mktemp("ir") / "tiny.xml")


@pytest.fixture
def installed(monkeypatch):
    """``installed("openvino", ...)``: the runtimes the auto rule sees as importable."""
    def only(*modules: str) -> None:
        monkeypatch.setattr(backends, "_has", lambda module: module in modules)
    monkeypatch.delenv(backends.CPU_BACKEND_ENV, raising=False)
    return only


# ---------------------------------------------------------------------------- numbers


@needs_openvino
@pytest.mark.parametrize("model", ["tiny_onnx", "tiny_ir"])
def test_f32_matches_onnx_runtime_at_every_size(model, request, tiny_onnx):
    """Every call may change the size; each shape runs on a model compiled for it, with the numbers
    of ONNX Runtime; f32 really is f32."""
    pytest.importorskip("onnxruntime")
    from mirnet.sdk.backends.onnxruntime import OrtBackend
    from mirnet.sdk.backends.openvino import OpenVinoBackend

    path = request.getfixturevalue(model)
    with OpenVinoBackend(path, precision="f32") as ov, OrtBackend(tiny_onnx) as ort:
        assert ov.name == "openvino" and ov.precision == "f32"
        assert ov._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
        for shape in [(1, 32, 48), (2, 40, 56), (1, 16, 16), (3, 8, 12), (1, 32, 48)]:
            x = batch(*shape, seed=sum(shape))
            got = ov.infer(x)
            assert got.shape == x.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, ort.infer(x), atol=1e-4, rtol=0)
        assert ov.static_shapes == [(2, 3, 40, 56), (1, 3, 16, 16), (3, 3, 8, 12), (1, 3, 32, 48)]


@needs_openvino
def test_static_compiles_for_repeated_shapes_keep_the_settings_and_the_last_shapes(tiny_onnx):
    from mirnet.sdk.backends.openvino import STATIC_SHAPES, OpenVinoBackend

    with OpenVinoBackend(tiny_onnx, threads=2, precision="f32") as ov:
        shapes = [(1, 8 * (i + 1), 16) for i in range(STATIC_SHAPES + 2)]
        first = ov.infer(batch(*shapes[0]))
        for shape in shapes:
            ov.infer(batch(*shape))
        assert ov.static_shapes == [(n, 3, h, w) for n, h, w in shapes[-STATIC_SHAPES:]]
        np.testing.assert_array_equal(ov.infer(batch(*shapes[0])), first)  # compiled again: the same numbers
        compiled = ov._static[(1, 3, 8 * len(shapes), 16)].get_compiled_model()
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
        assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
        assert [tuple(d.get_length() for d in compiled.input(0).partial_shape)] == [(1, 3, 8 * len(shapes), 16)]


@needs_openvino
def test_threads_streams_and_latency_hint(tiny_onnx):
    from mirnet.sdk.backends.openvino import OpenVinoBackend

    for threads, want in ((None, 1), (2, 2)):
        with OpenVinoBackend(tiny_onnx, threads=threads, precision="f32") as b:
            compiled = b._compiled
            assert compiled.get_property("INFERENCE_NUM_THREADS") == want
            assert compiled.get_property("NUM_STREAMS") == 1
            assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    with pytest.raises(ConfigError, match="threads=0"):
        OpenVinoBackend(tiny_onnx, threads=0)


@needs_openvino
def test_bf16_where_the_cpu_has_it(tiny_onnx):
    from mirnet.sdk.backends.openvino import OpenVinoBackend, cpu_capabilities

    if "BF16" not in cpu_capabilities():
        pytest.skip(f"this CPU has no BF16 kernels (OpenVINO capabilities {cpu_capabilities()})")
    with OpenVinoBackend(tiny_onnx) as auto, OpenVinoBackend(tiny_onnx, precision="f32") as f32:
        assert (auto.precision, auto.precision_reason) == ("bf16", "CPU has BF16")
        x = batch(2, 40, 56, seed=1)
        diff = np.abs(auto.infer(x) - f32.infer(x))
        assert 0 < diff.max() < 0.05  # bf16 really runs, close to f32


@needs_openvino
def test_precision_choice_follows_the_cpu(tiny_onnx, monkeypatch):
    from mirnet.sdk.backends import openvino as ovb

    monkeypatch.setattr(ovb, "cpu_capabilities", lambda: ["FP32", "INT8", "BIN"])
    with pytest.raises(ConfigError, match=r"precision='bf16': this CPU has no BF16 kernels .*FP32, INT8, BIN"):
        ovb.OpenVinoBackend(tiny_onnx, precision="bf16")
    with ovb.OpenVinoBackend(tiny_onnx) as b:
        assert (b.precision, b.precision_reason) == ("f32", "CPU lacks BF16")
    with pytest.raises(ConfigError, match=r"precision='fp16': valid precisions are auto, f32, bf16"):
        ovb.OpenVinoBackend(tiny_onnx, precision="fp16")


# ---------------------------------------------------------------------------- artifacts


@needs_openvino
@pytest.mark.parametrize("field, value", [("io.input.name", "image"), ("io.output.name", "restored"),
                                          ("io.input.dtype", "float16")])
def test_manifest_that_does_not_describe_the_model_is_refused(tiny_onnx, tiny_ir, tmp_path, field, value):
    from mirnet.sdk.backends.openvino import OpenVinoBackend

    def edit(manifest):
        *parents, last = field.split(".")
        for key in parents:
            manifest = manifest[key]
        manifest[last] = value

    side = field.split(".")[1]
    for src in (tiny_onnx, tiny_ir):
        path = copy_artifact(src, tmp_path / src.name, edit)
        with pytest.raises(ArtifactError, match=rf"manifest io\.{side} says .*{value}"):
            OpenVinoBackend(path)


@needs_openvino
def test_ir_bin_is_covered_by_the_manifest(tiny_ir, tmp_path):
    from mirnet.sdk.backends.openvino import OpenVinoBackend

    manifest = artifact.read_manifest(tiny_ir, kind="openvino")
    assert manifest["companions"] == {".bin": artifact.sha256_file(tiny_ir.with_suffix(".bin"))}
    path = copy_artifact(tiny_ir, tmp_path / "m.xml")
    OpenVinoBackend(path).close()
    data = bytearray(path.with_suffix(".bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.with_suffix(".bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"m\.bin: sha256 .* does not match the manifest of m\.xml"):
        OpenVinoBackend(path)
    path.with_suffix(".bin").unlink()
    with pytest.raises(ArtifactError, match=r"its \.bin file .*m\.bin is missing"):
        open_backend(path)
    with open(path, "ab") as fh:  # the .xml itself
        fh.write(b" ")
    with pytest.raises(ArtifactError, match="sha256"):
        OpenVinoBackend(path)


@needs_openvino
def test_only_onnx_and_ir_open(tiny_onnx, tiny_weights, tmp_path):
    from mirnet.sdk.backends.openvino import OpenVinoBackend

    with pytest.raises(ArtifactError, match=r"OpenVINO runs \.onnx files and OpenVINO IR"):
        OpenVinoBackend(tiny_weights)
    lone = tmp_path / "lone.xml"
    lone.write_text("<net/>")
    with pytest.raises(ArtifactError, match="mirnet export openvino MODEL -o lone.xml"):
        OpenVinoBackend(lone)


# ---------------------------------------------------------------------------- open_backend and the auto rule


@pytest.fixture
def tiny_engine_path(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    return engine


@needs_openvino
def test_backend_openvino_opens_onnx_ir_and_bundled_names(tiny_onnx, tiny_ir, tiny_weights, tiny_engine_path):
    for model in (tiny_onnx, tiny_ir, zoo.DEFAULT_MODEL):
        with open_backend(model, "openvino") as b:
            assert b.name == "openvino" and b.precision in ("f32", "bf16")
    with pytest.raises(ConfigError, match=r"OpenVINO runs \.onnx and \.xml files, not PyTorch weights.*"
                                          r"mirnet export openvino .*tiny\.safetensors -o tiny\.xml"):
        open_backend(tiny_weights, "openvino")
    with pytest.raises(ConfigError, match="a TensorRT engine runs with --backend trt"):
        open_backend(tiny_engine_path, "openvino")
    with pytest.raises(ConfigError, match="an OpenVINO IR runs with --backend openvino"):
        open_backend(tiny_ir, "ort")


def test_auto_rule_per_installed_runtime(tiny_onnx, tiny_weights, installed):
    name = zoo.DEFAULT_MODEL
    installed("openvino", "onnxruntime", "torch")
    assert choose_backend(tiny_onnx) == ("openvino", tiny_onnx)
    assert choose_backend(name) == ("openvino", zoo.bundled_onnx(name))
    assert choose_backend(tiny_weights) == ("torch", tiny_weights)
    assert choose_backend(name, device="cuda") == ("torch", zoo.bundled()[name])
    installed("onnxruntime", "torch")
    assert choose_backend(tiny_onnx)[0] == choose_backend(name)[0] == "ort"
    installed("torch")
    assert choose_backend(name) == ("torch", zoo.bundled()[name])
    with pytest.raises(MissingDependencyError, match=r"needs OpenVINO or ONNX Runtime.*mirnet-edge\[openvino\]"):
        choose_backend(tiny_onnx)
    installed()
    with pytest.raises(MissingDependencyError, match="torch is not installed"):
        choose_backend(name)


@pytest.mark.parametrize("precision, want", [("fp32", "openvino"), ("int8-ort", "ort"), ("int8-qdq", "ort"),
                                             ("int8-qdq-cpu", "openvino"), ("fp16", "openvino")])
def test_auto_runs_int8_onnx_where_its_gate_measured_it(tiny_onnx, tmp_path, installed, precision, want):
    installed("openvino", "onnxruntime")
    path = copy_artifact(tiny_onnx, tmp_path / "m.onnx", lambda m: m.update(precision=precision))
    assert choose_backend(path) == (want, path)
    installed("onnxruntime")
    assert choose_backend(path) == ("ort", path)


def test_ir_runs_on_openvino_under_auto(tiny_onnx, tmp_path, installed):
    installed("onnxruntime")  # the rule does not look: an IR has one runtime
    xml = tmp_path / "m.xml"
    xml.touch()
    assert choose_backend(xml) == ("openvino", xml)


def test_mirnet_cpu_backend_overrides_auto(tiny_onnx, tmp_path, installed, monkeypatch):
    name = zoo.DEFAULT_MODEL
    installed("openvino", "onnxruntime", "torch")
    int8 = copy_artifact(tiny_onnx, tmp_path / "m.onnx", lambda m: m.update(precision="int8-ort"))
    for value, onnx_backend in (("ort", "ort"), ("openvino", "openvino"), (" OpenVINO ", "openvino")):
        monkeypatch.setenv(backends.CPU_BACKEND_ENV, value)
        assert choose_backend(tiny_onnx)[0] == choose_backend(int8)[0] == choose_backend(name)[0] == onnx_backend
    assert choose_backend(tiny_onnx, "ort")[0] == "ort"  # an explicit backend wins
    monkeypatch.setenv(backends.CPU_BACKEND_ENV, "torch")
    assert choose_backend(name) == ("torch", zoo.bundled()[name])
    with pytest.raises(ConfigError, match=r"MIRNET_CPU_BACKEND=torch: PyTorch runs weights, not the ONNX file"):
        choose_backend(tiny_onnx)
    monkeypatch.setenv(backends.CPU_BACKEND_ENV, "tensorrt")
    with pytest.raises(ConfigError, match=r"MIRNET_CPU_BACKEND='tensorrt': valid values are ort, openvino, torch"):
        open_backend(tiny_onnx)
    monkeypatch.setenv(backends.CPU_BACKEND_ENV, "")
    assert choose_backend(tiny_onnx)[0] == "openvino"


# ---------------------------------------------------------------------------- saying what runs


@needs_openvino
def test_restorer_and_info_say_which_backend_and_precision(tiny_onnx, monkeypatch, capsys):
    from mirnet.sdk.backends.openvino import choose_precision

    precision, why = choose_precision()
    monkeypatch.delenv(backends.CPU_BACKEND_ENV, raising=False)
    with Restorer(tiny_onnx) as r:
        assert r.backend.name == "openvino" and r.backend.precision == precision
        assert r.backend_description == f"openvino {precision}"
    with Restorer(tiny_onnx, backend="ort") as r:
        assert r.backend_description == "ort" and r.backend.precision is None
    assert main(["info", str(tiny_onnx)]) == 0
    assert f"  backend   auto here: openvino {precision} ({why})\n" in capsys.readouterr().out
    assert main(["info", zoo.DEFAULT_MODEL]) == 0
    assert f"auto here: openvino {precision} ({why}) on {zoo.DEFAULT_MODEL}.onnx" in capsys.readouterr().out
    monkeypatch.setenv(backends.CPU_BACKEND_ENV, "ort")
    assert main(["info", str(tiny_onnx)]) == 0
    assert "  backend   auto here: ort\n" in capsys.readouterr().out
    monkeypatch.setenv(backends.CPU_BACKEND_ENV, "nope")
    assert main(["info", str(tiny_onnx)]) == 0  # the manifest still prints
    assert "auto here: none (MIRNET_CPU_BACKEND='nope': valid values" in capsys.readouterr().out


@needs_openvino
def test_stream_statistics_name_backend_and_precision(tiny_onnx, monkeypatch):
    monkeypatch.delenv(backends.CPU_BACKEND_ENV, raising=False)
    frames = [np.full((12, 16, 3), 40 * i, np.uint8) for i in range(2)]
    written = []
    with Restorer(tiny_onnx) as r:
        stats = Stream(frames, lambda image, frame: written.append(image), model=r).run()
        assert (stats["backend"], stats["precision"]) == ("openvino", r.backend.precision)
    assert stats["frames"] == len(written) == 2


# ---------------------------------------------------------------------------- without openvino


def test_sdk_imports_and_runs_without_openvino(tiny_onnx):
    """openvino unimportable: every SDK module imports, auto falls back to ONNX Runtime, and asking
    for OpenVINO names the extra to install."""
    pytest.importorskip("onnxruntime")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["openvino"] = sys.modules["nncf"] = None  # any import of them now raises ImportError
        import mirnet, mirnet.sdk.backends.openvino
        from mirnet.sdk import MissingDependencyError, Restorer
        from mirnet.sdk.backends import choose_backend
        from mirnet.sdk.backends.openvino import OpenVinoBackend
        print("auto", choose_backend({str(tiny_onnx)!r})[0], choose_backend("denoise-lite")[0])
        with Restorer({str(tiny_onnx)!r}) as r:
            print("restorer", r.backend_description)
        try:
            OpenVinoBackend({str(tiny_onnx)!r})
        except MissingDependencyError as exc:
            print("missing:", exc)
        assert sys.modules["openvino"] is None
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "auto ort ort" in proc.stdout and "restorer ort" in proc.stdout
    assert "missing:" in proc.stdout and "pip install 'mirnet-edge[openvino]'" in proc.stdout
