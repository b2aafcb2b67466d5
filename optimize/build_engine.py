"""Build a TensorRT engine from an ONNX export: profiles, FP16 or strongly typed Q/DQ INT8, timing
cache, workspace limit, DLA, version compatibility, every parser error reported, manifest sidecar.

Everything that can be decided without TensorRT is a plain function here (profile parsing and
defaults, builder-flag decisions, the equivalent ``trtexec`` command, parser-error formatting, the
manifest fields), tested on machines without a GPU. :func:`run_build` is the thin TensorRT part.

    build_engine("model.onnx", "model.engine", fp16=True, profiles=["256x256:720x1280:1088x1920"])
"""
from __future__ import annotations

import importlib
import inspect
import os
import shlex
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from mirnet.sdk import artifact
from mirnet.sdk.backends import ENGINE_SUFFIXES
from mirnet.sdk.backends.tensorrt_env import (Profile, import_tensorrt, installed_major, make_logger, parse_version,
                                              runtime_environment, shape_str)
from mirnet.sdk.errors import ArtifactError, ConfigError, MirnetError, MissingDependencyError

__all__ = ["build_engine", "prepare_build", "run_build", "BuildRequest", "BuildPlan", "parse_profile",
           "default_profiles", "resolve_profiles", "plan_build", "trtexec_command", "format_parser_errors",
           "onnx_has_qdq", "engine_manifest_fields", "engine_manifest", "run_quality_gate"]

# Default profile (H, W before rounding up to the model's pad multiple): small tiles to 1080p.
DEFAULT_MIN_HW = (64, 64)
DEFAULT_OPT_HW = (720, 1280)
DEFAULT_MAX_HW = (1080, 1920)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


# ---------------------------------------------------------------------------- profiles
_SHAPE_FORMS = "NxCxHxW (e.g. 1x3x720x1280) or HxW (e.g. 720x1280; batch 1, the model's channels)"


def _parse_shape(part: str, *, text: str, which: str, channels: int) -> tuple[int, int, int, int]:
    dims = part.strip().lower().split("x")
    try:
        values = [int(d) for d in dims]
    except ValueError:
        raise ConfigError(f"--profile {text!r}: the {which} shape {part!r} is not {_SHAPE_FORMS}") from None
    if len(values) == 2:
        values = [1, channels, *values]
    elif len(values) != 4:
        raise ConfigError(f"--profile {text!r}: the {which} shape {part!r} has {len(values)} dimensions; "
                          f"use {_SHAPE_FORMS}")
    if any(v < 1 for v in values):
        raise ConfigError(f"--profile {text!r}: the {which} shape {part!r} has a dimension < 1")
    if values[1] != channels:
        raise ConfigError(f"--profile {text!r}: the {which} shape {part!r} has {values[1]} channels; "
                          f"this model takes {channels}")
    return tuple(values)


def parse_profile(text: str, *, channels: int, pad_multiple: int) -> Profile:
    """``"MIN:OPT:MAX"`` (or one shape for a fixed-size profile) -> Profile, validated.

    Each shape is NxCxHxW or HxW (batch 1, the model's channels). H and W must be multiples of
    ``pad_multiple`` and min <= opt <= max in every dimension; ConfigError names the bad value.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--profile {text!r}: expected MIN:OPT:MAX, each {_SHAPE_FORMS}")
    parts = text.strip().split(":")
    if len(parts) == 1:
        parts = parts * 3
    elif len(parts) != 3:
        raise ConfigError(f"--profile {text!r}: expected MIN:OPT:MAX (three shapes separated by ':') "
                          f"or one shape for a fixed size; got {len(parts)} parts")
    shapes = [_parse_shape(p, text=text, which=w, channels=channels) for p, w in zip(parts, ("min", "opt", "max"))]
    for shape, which in zip(shapes, ("min", "opt", "max")):
        for axis, value in (("height", shape[2]), ("width", shape[3])):
            if value % pad_multiple:
                lo, hi = value // pad_multiple * pad_multiple, _round_up(value, pad_multiple)
                suggestion = f"{hi}" if lo == 0 else f"{lo} or {hi}"
                raise ConfigError(
                    f"--profile {text!r}: {axis} {value} of the {which} shape is not a multiple of "
                    f"{pad_multiple} (this model's pad multiple: the SDK pads frames to it); use {suggestion}")
    lo, opt, hi = shapes
    for name, a, b, an, bn in (("min", lo, opt, "min", "opt"), ("opt", opt, hi, "opt", "max")):
        bad = [k for k in range(4) if a[k] > b[k]]
        if bad:
            axis = ("batch", "channels", "height", "width")[bad[0]]
            raise ConfigError(f"--profile {text!r}: {an} {axis} {a[bad[0]]} > {bn} {axis} {b[bad[0]]}; "
                              f"a profile needs min <= opt <= max in every dimension")
    return Profile(lo, opt, hi)


def default_profiles(channels: int, pad_multiple: int) -> list[Profile]:
    """One profile from 64x64 tiles to 1080p frames (padded), tuned for 720p, batch 1."""
    def shape(hw):
        return (1, channels, _round_up(hw[0], pad_multiple), _round_up(hw[1], pad_multiple))

    return [Profile(shape(DEFAULT_MIN_HW), shape(DEFAULT_OPT_HW), shape(DEFAULT_MAX_HW))]


def resolve_profiles(profiles: Sequence[str | Profile] | None, *, channels: int,
                     pad_multiple: int) -> list[Profile]:
    """The profiles to build: parsed and validated ``profiles``, or the default when none given."""
    if not profiles:
        return default_profiles(channels, pad_multiple)
    out = []
    for item in profiles:
        if isinstance(item, Profile):
            item = item.spec  # validate it like a string
        out.append(parse_profile(item, channels=channels, pad_multiple=pad_multiple))
    return out


# ---------------------------------------------------------------------------- builder flags
@dataclass(frozen=True)
class BuildPlan:
    """What the builder is asked for. ``flags`` are ``trt.BuilderFlag`` member names."""

    fp16: bool
    strongly_typed: bool
    qdq: bool
    precision: str
    flags: tuple[str, ...]
    dla_core: int | None = None
    version_compatible: bool = False
    workspace_mb: int | None = None
    notes: tuple[str, ...] = ()


def plan_build(*, fp16: bool = False, strongly_typed: bool | None = None, has_qdq: bool = False,
               dla_core: int | None = None, version_compatible: bool = False, workspace_mb: int | None = None,
               onnx_precision: str = "fp32", trt_major: int | None = None) -> BuildPlan:
    """Decide the network mode and builder flags; ConfigError for combinations TensorRT rejects.

    ``strongly_typed=None`` means: strongly typed when the ONNX has Q/DQ nodes (explicit INT8),
    always on TensorRT 11 (which removed weak typing and the FP16/INT8 builder flags).
    """
    notes = []
    if workspace_mb is not None and (isinstance(workspace_mb, bool) or int(workspace_mb) < 1):
        raise ConfigError(f"--workspace {workspace_mb!r}: the workspace limit is a number of MiB >= 1")
    if dla_core is not None and (isinstance(dla_core, bool) or int(dla_core) < 0):
        raise ConfigError(f"--dla {dla_core!r}: DLA cores are numbered from 0 (Jetson AGX Orin has 0 and 1)")
    explicit = strongly_typed is not None
    if trt_major is not None and trt_major >= 11:
        if fp16:
            raise ConfigError(
                f"--fp16: TensorRT {trt_major} removed the FP16 builder flag (every network is strongly typed). "
                f"Convert the ONNX to mixed precision first (python -m modelopt.onnx.autocast --onnx_path "
                f"MODEL.onnx --output_path MODEL_fp16.onnx) and build that without --fp16")
        if explicit and not strongly_typed:
            raise ConfigError(f"--no-strongly-typed: TensorRT {trt_major} builds every network strongly typed; "
                              f"drop the option")
        strongly_typed = True
    if strongly_typed is None:
        strongly_typed = has_qdq
    if strongly_typed and fp16:
        why = ("the ONNX has QuantizeLinear/DequantizeLinear nodes, so it is built strongly typed (explicit INT8)"
               if has_qdq and not explicit else "--strongly-typed was requested")
        raise ConfigError(
            f"--fp16 cannot be combined with a strongly typed network ({why}): in a strongly typed network "
            f"each tensor's type comes from the ONNX and TensorRT rejects the FP16 flag. Drop --fp16 (the "
            f"Q/DQ layers already run INT8), or export an FP16 ONNX"
            + ("" if has_qdq else ", or drop --strongly-typed"))
    flags = []
    if fp16:
        flags.append("FP16")
    if has_qdq and not strongly_typed:
        flags.append("INT8")  # explicit quantization in a weakly typed network (TensorRT 10 only)
        notes.append("Q/DQ ONNX built weakly typed with the INT8 flag: deprecated since TensorRT 10.12 and "
                     "removed in 11; prefer the default strongly typed build")
    if dla_core is not None:
        if not (fp16 or has_qdq or onnx_precision in ("fp16", "int8")):
            raise ConfigError(f"--dla {dla_core}: the DLA runs FP16 and INT8 layers only; add --fp16 "
                              f"(or build from a Q/DQ INT8 ONNX)")
        flags.append("GPU_FALLBACK")
        notes.append(f"layers the DLA cannot run fall back to the GPU (DLA core {dla_core})")
    if version_compatible:
        flags.append("VERSION_COMPATIBLE")
    if strongly_typed:
        precision = "int8" if has_qdq else onnx_precision
    else:
        precision = "int8" if has_qdq else ("fp16" if fp16 else onnx_precision)
    return BuildPlan(fp16=bool(fp16), strongly_typed=bool(strongly_typed), qdq=bool(has_qdq), precision=precision,
                     flags=tuple(flags), dla_core=None if dla_core is None else int(dla_core),
                     version_compatible=bool(version_compatible),
                     workspace_mb=None if workspace_mb is None else int(workspace_mb), notes=tuple(notes))


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, input_name: str,
                    profiles: Sequence[Profile], plan: BuildPlan,
                    timing_cache: str | os.PathLike | None = None) -> str:
    """The ``trtexec`` command line that builds the same engine where TensorRT is installed."""
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    for i, p in enumerate(profiles):
        if len(profiles) > 1:
            args.append(f"--profile={i}")
        args += [f"--minShapes={input_name}:{shape_str(p.min)}", f"--optShapes={input_name}:{shape_str(p.opt)}",
                 f"--maxShapes={input_name}:{shape_str(p.max)}"]
    if plan.fp16:
        args.append("--fp16")
    if plan.strongly_typed:
        args.append("--stronglyTyped")
    elif plan.qdq:
        args.append("--int8")
    if plan.workspace_mb is not None:
        args.append(f"--memPoolSize=workspace:{plan.workspace_mb}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if plan.dla_core is not None:
        args += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if plan.version_compatible:
        args.append("--versionCompatible")
    args.append("--skipInference")
    return shlex.join(args)


# ---------------------------------------------------------------------------- parser errors / ONNX
def _attr(obj, name):
    value = getattr(obj, name, None)
    try:
        return value() if callable(value) else value
    except Exception:  # an accessor this TensorRT version does not implement
        return None


def format_parser_errors(onnx_path: str | os.PathLike, errors: Sequence) -> str:
    """One message for all of TensorRT's ONNX parser errors: node index, name and operator, the
    description and code of each, and what to try."""
    lines = [f"{onnx_path}: TensorRT's ONNX parser reported {len(errors)} error(s):"]
    codes = set()
    for k, err in enumerate(errors, 1):
        node, name, op = _attr(err, "node"), _attr(err, "node_name"), _attr(err, "node_operator")
        desc, code = _attr(err, "desc") or str(err), _attr(err, "code")
        code_text = getattr(code, "name", None) or (str(code) if code is not None else None)
        if code_text:
            code_text = code_text.rsplit(".", 1)[-1]
            codes.add(code_text)
        where = "graph" if node is None or int(node) < 0 else f"node {int(node)}"
        if name:
            where += f" {name!r}"
        if op:
            where += f" ({op})"
        lines.append(f"  [{k}] {where}: {desc}" + (f" [{code_text}]" if code_text else ""))
    if not errors:
        lines.append("  (the parser failed without recording an error; run with --verbose for TensorRT's log)")
    if codes & {"UNSUPPORTED_NODE", "UNSUPPORTED_GRAPH"}:
        lines.append("An operator is not supported by this TensorRT: re-export with another opset "
                     "(mirnet export onnx --opset 17), simplify the graph (onnxslim), or upgrade TensorRT.")
    elif codes & {"MODEL_DESERIALIZE_FAILED", "INVALID_GRAPH"}:
        lines.append("The file is not a valid ONNX model: re-export it (mirnet export onnx WEIGHTS -o MODEL.onnx).")
    lines.append(f"For TensorRT's full log: mirnet build-engine {onnx_path} -o ENGINE --verbose")
    return "\n".join(lines)


def onnx_has_qdq(path: str | os.PathLike) -> bool:
    """True when the ONNX graph has QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    path = Path(path)
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ArtifactError(f"{path}: not a readable ONNX model ({exc})") from exc
        nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
        return any(n.op_type in QDQ_OPS for n in nodes)
    # Without the onnx package: op types are stored as plain strings in the protobuf.
    needle, tail = b"QuantizeLinear", b""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            if needle in tail + block:
                return True
            tail = block[-len(needle):]
    return False


# ---------------------------------------------------------------------------- manifest
_RESERVED = {"format", "schema_version", "kind", "file", "sha256", "created", "variant", "config", "io",
             "precision", "source", "build", "parity", "opset", "engine", "trtexec", "gate"}


def engine_manifest_fields(*, plan: BuildPlan, profiles: Sequence[Profile], env: dict, input_name: str,
                           trtexec: str, timing_cache: str | os.PathLike | None = None) -> dict:
    """The engine-specific manifest fields: build environment (TensorRT, GPU, compute capability,
    CUDA runtime and driver) and the build settings (what the rebuild command is made from)."""
    build = artifact.build_environment(
        tensorrt=env.get("tensorrt"), gpu_name=env.get("gpu_name"),
        compute_capability=env.get("compute_capability"), cuda_runtime=env.get("cuda_runtime"),
        cuda_driver=env.get("cuda_driver"))
    return {
        "build": build,
        "engine": {
            "input_name": input_name,
            "profiles": [p.to_dict() for p in profiles],
            "fp16": plan.fp16, "strongly_typed": plan.strongly_typed, "qdq": plan.qdq,
            "builder_flags": list(plan.flags), "workspace_mb": plan.workspace_mb,
            "dla_core": plan.dla_core, "version_compatible": plan.version_compatible,
            "timing_cache": None if timing_cache is None else str(timing_cache),
        },
        "trtexec": trtexec,
    }


def engine_manifest(onnx_path: str | os.PathLike, onnx_manifest: dict, plan: BuildPlan, fields: dict) -> dict:
    """The engine manifest's description (``ArtifactWriter.describe`` arguments): the ONNX's config,
    variant and I/O (plus its other provenance such as pruning or quantization records), the engine
    precision, the source ONNX (its sha256 is recorded) and ``fields``."""
    carried = {k: v for k, v in onnx_manifest.items() if k not in _RESERVED}
    return dict(kind="engine", config=onnx_manifest["config"], precision=plan.precision,
                variant=onnx_manifest.get("variant"), io=onnx_manifest["io"], source=onnx_path,
                **{**carried, "opset": onnx_manifest.get("opset"), **fields})


# ---------------------------------------------------------------------------- the build
@dataclass
class BuildRequest:
    """Everything decided before TensorRT is imported (see :func:`prepare_build`). ``plan`` and
    ``trtexec`` are made together by :meth:`planned` from ``options`` (the :func:`plan_build`
    arguments) for TensorRT major version ``trt_major`` (None: not known yet), so the command line
    always describes the engine the plan builds."""

    onnx_path: Path
    out_path: Path
    onnx_manifest: dict
    profiles: list[Profile]
    input_name: str
    options: dict
    plan: BuildPlan | None = None
    trtexec: str | None = None
    trt_major: int | None = None
    timing_cache: Path | None = None
    min_psnr_db: float | None = None
    max_loss_db: float = 0.15
    gate_data: Path | None = None
    verbose: bool = False
    device: int = 0

    def planned(self, trt_major: int | None) -> "BuildRequest":
        """This request with the plan and its ``trtexec`` line for TensorRT ``trt_major``."""
        plan = plan_build(**self.options, trt_major=trt_major)
        command = trtexec_command(self.onnx_path, self.out_path, input_name=self.input_name, profiles=self.profiles,
                                  plan=plan, timing_cache=self.timing_cache)
        return replace(self, plan=plan, trtexec=command, trt_major=trt_major)


def prepare_build(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *, fp16: bool = False,
                  profiles: Sequence[str | Profile] | None = None, timing_cache: str | os.PathLike | None = None,
                  workspace_mb: int | None = None, dla_core: int | None = None, version_compatible: bool = False,
                  strongly_typed: bool | None = None, min_psnr_db: float | None = None, max_loss_db: float = 0.15,
                  gate_data: str | os.PathLike | None = None, verbose: bool = False,
                  device: int = 0) -> BuildRequest:
    """Validate the inputs and decide the build without importing TensorRT (so errors and the
    ``trtexec`` command come first, on any machine), for the TensorRT major version installed
    (:func:`~mirnet.sdk.backends.tensorrt_env.installed_major`; unknown: :func:`run_build` plans
    again once TensorRT is imported)."""
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if out_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise ConfigError(f"output {out_path}: engines must end in {' or '.join(ENGINE_SUFFIXES)} "
                          f"(that is how mirnet recognises them)")
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: no such ONNX file; make one with "
                            f"`mirnet export onnx WEIGHTS -o {onnx_path.name}`")
    onnx_manifest = artifact.read_manifest(onnx_path, kind="onnx")
    io = onnx_manifest["io"]["input"]
    channels, pad_multiple, input_name = int(io["channels"]), int(io["pad_multiple"]), io["name"]
    if min_psnr_db is not None and gate_data is None:
        raise ConfigError(f"--min-psnr-db {min_psnr_db}: the quality gate needs --data DIR (clean frames to score "
                          f"the engine and its FP32 reference on)")
    options = dict(fp16=fp16, strongly_typed=strongly_typed, has_qdq=onnx_has_qdq(onnx_path), dla_core=dla_core,
                   version_compatible=version_compatible, workspace_mb=workspace_mb,
                   onnx_precision=onnx_manifest.get("precision", "fp32"))
    request = BuildRequest(
        onnx_path=onnx_path, out_path=out_path, onnx_manifest=onnx_manifest,
        profiles=resolve_profiles(profiles, channels=channels, pad_multiple=pad_multiple), input_name=input_name,
        options=options, timing_cache=None if timing_cache is None else Path(timing_cache), min_psnr_db=min_psnr_db,
        max_loss_db=max_loss_db, gate_data=None if gate_data is None else Path(gate_data), verbose=verbose,
        device=device)
    return request.planned(installed_major())


def _serialized_bytes(blob) -> bytes:
    return memoryview(blob).tobytes()


def run_build(request: BuildRequest) -> Path:
    """Build and write the engine (atomically), its manifest and the timing cache, then run the
    quality gate when asked. This is the only part that needs TensorRT and a GPU. When the installed
    TensorRT's major version changes the plan (TensorRT 11 builds every network strongly typed), the
    request is planned again for it, so the builder, the ``trtexec`` line in the manifest and the
    error messages all follow one plan."""
    trt = import_tensorrt("build TensorRT engines", extra=(
        f"Where TensorRT is installed, the same engine can be built with:\n  {request.trtexec}"))
    trt_major = parse_version(trt.__version__)[0]
    if request.trt_major != trt_major:
        request = request.planned(trt_major)
    plan = request.plan
    logger = make_logger(trt, request.verbose)
    env = runtime_environment(trt, request.device)

    builder = trt.Builder(logger)
    flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = request.onnx_path
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise ArtifactError(format_parser_errors(onnx_path, [parser.get_error(i) for i in range(parser.num_errors)]))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [request.input_name]:
        raise ArtifactError(f"{onnx_path}: the network's inputs {inputs} do not match its manifest "
                            f"({request.input_name!r}); re-export the ONNX")

    config = builder.create_builder_config()
    if plan.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    for name in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    for profile in request.profiles:
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(request.input_name, profile.min, profile.opt, profile.max)
        if config.add_optimization_profile(trt_profile) < 0:
            raise ConfigError(f"TensorRT rejected the optimization profile {profile.spec}")
    cache_path = request.timing_cache
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise ArtifactError(
                f"timing cache {cache_path} was made on another GPU or TensorRT version; delete it or pass "
                f"another --timing-cache (TensorRT refuses mismatched caches)")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "\n  ".join(logger.errors[-5:]) or "no error message from TensorRT; rerun with --verbose"
        raise ArtifactError(
            f"TensorRT could not build an engine from {onnx_path}:\n  {detail}\nIf it ran out of memory, "
            f"lower the max profile or raise --workspace; the trtexec equivalent is:\n  {request.trtexec}")
    fields = engine_manifest_fields(plan=plan, profiles=request.profiles, env=env, input_name=request.input_name,
                                    trtexec=request.trtexec, timing_cache=cache_path)
    with artifact.writer(request.out_path, force=True) as w:
        w.tmp.write_bytes(_serialized_bytes(serialized))
        w.describe(**engine_manifest(onnx_path, request.onnx_manifest, plan, fields))
    out = w.path
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        artifact.atomic_write_bytes(cache_path, _serialized_bytes(config.get_timing_cache().serialize()))
    if request.gate_data is not None:
        gate = run_quality_gate(out, gate_reference(onnx_path, request.onnx_manifest), data=request.gate_data,
                                max_loss_db=request.max_loss_db, min_psnr_db=request.min_psnr_db)
        manifest = artifact.read_manifest(out, kind="engine")
        manifest["gate"] = gate
        artifact.write_manifest(out, manifest)
    return out


def gate_reference(onnx_path: Path, onnx_manifest: dict) -> Path:
    """What an engine is gated against: its ONNX when that is FP32, else (a Q/DQ INT8 ONNX) the FP32
    weights the ONNX was quantized from, found beside it by the manifest's ``source`` name."""
    if onnx_manifest.get("precision", "fp32") == "fp32":
        return onnx_path
    source = (onnx_manifest.get("source") or {}).get("file")
    weights = onnx_path.parent / Path(source).name if source else None
    if weights is None or not weights.is_file():
        raise ConfigError(f"{onnx_path.name} is {onnx_manifest.get('precision')}: the gate compares the engine with "
                          f"the FP32 weights it was quantized from ({source or 'not recorded'}), which are not beside "
                          f"it; copy them next to the ONNX or build without --data")
    return weights


def run_quality_gate(engine_path: Path, reference: Path, *, data: Path, max_loss_db: float = 0.15,
                     min_psnr_db: float | None = None) -> dict:
    """Score the engine and its FP32 ``reference`` against ground truth on the model's own inputs
    (``mirnet.optimize.gate.run_gate``) when that module is installed; otherwise return a "skipped"
    record (and warn). A failing gate removes the engine and its manifest (the timing cache stays,
    so a rebuild is quick) and re-raises."""
    def skipped(reason: str) -> dict:
        warnings.warn(f"quality gate skipped: {reason}", stacklevel=3)
        return {"status": "skipped", "reason": reason, "max_loss_db": max_loss_db, "min_psnr_db": min_psnr_db}

    try:
        gate = importlib.import_module("mirnet.optimize.gate")
    except ModuleNotFoundError as exc:
        if exc.name not in ("mirnet.optimize.gate", "mirnet.optimize"):
            raise MissingDependencyError(
                f"the quality gate (mirnet.optimize.gate) needs {exc.name}, which is not installed ({exc}); "
                f"install it or build without --data") from exc
        return skipped("mirnet.optimize.gate is not available in this install")
    run_gate = getattr(gate, "run_gate", None)
    kwargs = dict(artifact=engine_path, reference=reference, data=data, max_loss_db=max_loss_db,
                  min_psnr_db=min_psnr_db)
    try:
        inspect.signature(run_gate).bind(**kwargs)
    except (TypeError, ValueError):  # also when run_gate is missing (None is not callable)
        return skipped("mirnet.optimize.gate.run_gate does not take (artifact, reference, data, max_loss_db, "
                       "min_psnr_db)")
    try:
        result = run_gate(**kwargs)
    except (MirnetError, AssertionError):
        for path in (engine_path, artifact.sidecar_path(engine_path)):
            Path(path).unlink(missing_ok=True)
        raise
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    return {"status": "passed", "max_loss_db": max_loss_db, "min_psnr_db": min_psnr_db,
            "result": result if isinstance(result, (dict, list, str, int, float, bool, type(None))) else repr(result)}


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *, fp16: bool = False,
                 profiles: Sequence[str | Profile] | None = None, timing_cache: str | os.PathLike | None = None,
                 workspace_mb: int | None = None, dla_core: int | None = None, version_compatible: bool = False,
                 strongly_typed: bool | None = None, min_psnr_db: float | None = None, max_loss_db: float = 0.15,
                 gate_data: str | os.PathLike | None = None, verbose: bool = False, device: int = 0) -> Path:
    """Build ``out_path`` (``.engine``/``.plan``) from ``onnx_path`` (made by ``mirnet export onnx``,
    with its manifest) and write its manifest. Without TensorRT this raises MissingDependencyError
    whose message holds the equivalent ``trtexec`` command."""
    request = prepare_build(onnx_path, out_path, fp16=fp16, profiles=profiles, timing_cache=timing_cache,
                            workspace_mb=workspace_mb, dla_core=dla_core, version_compatible=version_compatible,
                            strongly_typed=strongly_typed, min_psnr_db=min_psnr_db, max_loss_db=max_loss_db,
                            gate_data=gate_data, verbose=verbose, device=device)
    return run_build(request)
