"""Triton model repositories for production servers (the ``tritonserver`` containers).

:func:`export_repository` writes one model folder per artifact: the ONNX export on the
``onnxruntime_onnx`` platform and, when given, a TensorRT engine on ``tensorrt_plan``::

    REPO/NAME/config.pbtxt    REPO/NAME/1/model.onnx        REPO/NAME/mirnet.json (the manifest)
    REPO/NAME-trt/config.pbtxt  REPO/NAME-trt/1/model.plan  REPO/NAME-trt/mirnet.json

Each ``config.pbtxt`` is built as Triton's ``ModelConfig`` protobuf message (the schema shipped in
``tritonclient``): dynamic batching, instance groups, the tensor names, types and dims from the
manifest (N x C x H x W float, RGB in [0, 1], H and W multiples of ``mirnet_pad_multiple``, the
output ``mirnet_scale`` times larger; both recorded as model parameters). Clients send the network
tensors: pre/post-processing (:mod:`mirnet.sdk.ops`) is theirs. :func:`validate_repository`
parses every ``config.pbtxt`` against that schema and checks it against its model file (the ONNX
graph's inputs and outputs through ONNX Runtime; an engine's manifest and profiles).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from . import artifact, zoo
from .errors import ArtifactError, ConfigError, InputError, require

__all__ = ["export_repository", "validate_repository", "model_config", "KINDS", "tritonserver_command"]

KINDS = ("gpu", "cpu")
_PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "engine": ("tensorrt_plan", "model.plan")}
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
_ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MANIFEST = "mirnet.json"


def _schema():
    pb = require("tritonclient.grpc.model_config_pb2", "serve")
    text_format = require("google.protobuf.text_format", "serve")
    return pb, text_format


def _artifact(model: str | os.PathLike) -> tuple[Path, str]:
    """(path, kind) of an ONNX file, a bundled name (its shipped ONNX) or an engine."""
    if zoo.is_bundled_name(model):
        return zoo.bundled_onnx(str(model)), "onnx"
    path = Path(model)
    if not path.is_file():
        raise ArtifactError(f"{model!r} is neither an existing file nor a bundled model; bundled models: "
                            f"{sorted(zoo.bundled())}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return path, "onnx"
    if suffix in (".engine", ".plan"):
        return path, "engine"
    raise ArtifactError(f"{path}: a Triton repository takes an .onnx file, a bundled model name or a TensorRT "
                        f"engine (.engine/.plan), not {suffix!r}; export weights first with `mirnet export onnx "
                        f"{path} -o {path.with_suffix('.onnx').name}`")


def _engine_max_batch(manifest: dict) -> int:
    profiles = manifest.get("engine", {}).get("profiles") or []
    return min([p["max"][0] for p in profiles] or [1])


def model_config(manifest: dict, *, name: str, kind: str, max_batch: int = 8, max_queue_delay_us: int = 100,
                 instances: int = 1, instance_kind: str = "gpu"):
    """Triton's ``ModelConfig`` message for an artifact's ``manifest`` (``kind``: onnx or engine)."""
    pb, _ = _schema()
    io = manifest["io"]
    platform, filename = _PLATFORMS[kind]
    config = pb.ModelConfig(name=name, platform=platform, default_model_filename=filename,
                            max_batch_size=max_batch)
    for key, tensors in (("input", config.input), ("output", config.output)):
        dtype = io[key].get("dtype", io["input"]["dtype"])
        if dtype not in _DTYPES:
            raise ArtifactError(f"{name}: {key} type {dtype!r} has no Triton type here; valid: {sorted(_DTYPES)}")
        tensors.add(name=io[key]["name"], data_type=pb.DataType.Value(_DTYPES[dtype]),
                    dims=[io[key]["channels"], -1, -1])
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    group = pb.ModelInstanceGroup.KIND_GPU if instance_kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=instances, kind=group)
    config.parameters["mirnet_pad_multiple"].string_value = str(io["input"]["pad_multiple"])
    config.parameters["mirnet_scale"].string_value = str(io["output"]["scale"])
    return config


def check_batching(max_batch: int, max_queue_delay_us: int, instances: int) -> None:
    """The dynamic-batching settings a Triton model takes (``mirnet serve`` and ``export triton``)."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch={max_batch!r}: frames per batch, must be an integer >= 1")
    if not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise ConfigError(f"max_queue_delay_us={max_queue_delay_us!r}: microseconds, must be an integer >= 0")
    if not isinstance(instances, int) or instances < 1:
        raise ConfigError(f"instances={instances!r}: model instances, must be an integer >= 1")


def export_repository(model: str | os.PathLike, repo: str | os.PathLike, *, engine: str | os.PathLike | None = None,
                      name: str | None = None, max_batch: int = 8, max_queue_delay_us: int = 100, instances: int = 1,
                      instance_kind: str = "gpu", force: bool = False) -> list[Path]:
    """Write ``model`` (ONNX, a bundled name, or an engine) and ``engine`` (optional) into the Triton
    repository ``repo``; returns the model folders written, validated (:func:`validate_repository`).
    An existing model folder is replaced only with ``force``; each folder appears whole or not at all."""
    check_batching(max_batch, max_queue_delay_us, instances)
    if instance_kind not in KINDS:
        raise ConfigError(f"instance_kind={instance_kind!r}: valid kinds are {KINDS}")
    items = [_artifact(model)] + ([_artifact(engine)] if engine is not None else [])
    if engine is not None and [kind for _, kind in items] != ["onnx", "engine"]:
        raise ConfigError(f"model={model}, engine={engine}: with an engine, the model is its ONNX export "
                          f"(.onnx or a bundled name) and the engine a TensorRT .engine/.plan")
    base = name or items[0][0].name.rsplit(".", 1)[0]
    if not _NAME.match(base):
        raise ConfigError(f"model name {base!r}: use letters, digits, '_', '.', '-' (pass --name)")
    repo = Path(repo)
    plans = []
    for i, (path, kind) in enumerate(items):
        folder = repo / (base if i == 0 else f"{base}-trt")
        if folder.exists() and not force:
            raise InputError(f"{folder} exists; pass --force to replace it")
        manifest = artifact.read_manifest(path, kind="engine" if kind == "engine" else "onnx")
        batch = min(max_batch, _engine_max_batch(manifest)) if kind == "engine" else max_batch
        group = "gpu" if kind == "engine" else instance_kind
        config = model_config(manifest, name=folder.name, kind=kind, max_batch=batch,
                              max_queue_delay_us=max_queue_delay_us, instances=instances, instance_kind=group)
        plans.append((folder, path, kind, manifest, config))
    _, text_format = _schema()
    repo.mkdir(parents=True, exist_ok=True)
    for folder, path, kind, manifest, config in plans:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=repo))
        try:
            (tmp / "1").mkdir()
            shutil.copyfile(path, tmp / "1" / _PLATFORMS[kind][1])
            (tmp / "config.pbtxt").write_text(text_format.MessageToString(config))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _validate_model(tmp, name=folder.name)
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return [p[0] for p in plans]


def validate_repository(repo: str | os.PathLike) -> list[dict]:
    """Parse every ``REPO/*/config.pbtxt`` with Triton's model-config schema and check it against its
    model file; ArtifactError names the file and the problem. Returns one summary dict per model."""
    repo = Path(repo)
    folders = sorted(p.parent for p in repo.glob("*/config.pbtxt"))
    if not folders:
        raise ArtifactError(f"{repo}: no model folder with a config.pbtxt (expected REPO/NAME/config.pbtxt)")
    return [_validate_model(folder, name=folder.name) for folder in folders]


def _validate_model(folder: Path, *, name: str) -> dict:
    pb, text_format = _schema()
    path = folder / "config.pbtxt"
    try:
        config = text_format.Parse(path.read_text(), pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ArtifactError(f"{path}: not a Triton model configuration ({exc})") from exc
    if config.name != name:
        raise ArtifactError(f"{path}: name {config.name!r} differs from its folder {name!r}; Triton refuses that")
    kind = {platform: k for k, (platform, _) in _PLATFORMS.items()}.get(config.platform)
    if kind is None:
        raise ArtifactError(f"{path}: platform {config.platform!r}; expected one of "
                            f"{[p for p, _ in _PLATFORMS.values()]}")
    model_file = folder / "1" / (config.default_model_filename or _PLATFORMS[kind][1])
    if not model_file.is_file():
        raise ArtifactError(f"{path}: version 1 has no {model_file.name} ({model_file} is missing)")
    if config.max_batch_size < 1 or not config.HasField("dynamic_batching"):
        raise ArtifactError(f"{path}: max_batch_size {config.max_batch_size} and dynamic batching are required")
    if len(config.input) != 1 or len(config.output) != 1:
        raise ArtifactError(f"{path}: expected one input and one output, found {len(config.input)} and "
                            f"{len(config.output)}")
    declared = [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in (config.input[0], config.output[0])]
    for tensor_name, _, dims in declared:
        if len(dims) != 3 or dims[0] < 1 or dims[1:] != [-1, -1]:
            raise ArtifactError(f"{path}: {tensor_name} dims {dims}; expected [C, -1, -1] (CHW, any H and W)")
    if kind == "onnx":
        actual = _onnx_io(model_file)
        for (tensor_name, dtype, dims), found in zip(declared, actual):
            f_name, f_dtype, f_shape = found
            if (tensor_name, dtype) != (f_name, f_dtype) or len(f_shape) != 4 or f_shape[1] != dims[0]:
                raise ArtifactError(f"{path}: declares {tensor_name} {dtype} [-1, {', '.join(map(str, dims))}] but "
                                    f"{model_file.name} has {f_name} {f_dtype} {f_shape}")
            if isinstance(f_shape[0], int):
                raise ArtifactError(f"{path}: max_batch_size {config.max_batch_size} needs a dynamic batch "
                                    f"dimension, but {model_file.name}'s {f_name} has batch {f_shape[0]}")
    else:
        manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else None
        if manifest is not None:
            io = manifest["io"]
            expected = [(io[k]["name"], _DTYPES.get(io[k].get("dtype", "float32")), io[k]["channels"])
                        for k in ("input", "output")]
            if [(n, t, d[0]) for n, t, d in declared] != expected:
                raise ArtifactError(f"{path}: declares {declared} but the engine's manifest has {expected}")
            if config.max_batch_size > _engine_max_batch(manifest):
                raise ArtifactError(f"{path}: max_batch_size {config.max_batch_size} exceeds the engine's "
                                    f"profiles (batch <= {_engine_max_batch(manifest)}); rebuild the engine with "
                                    f"a larger batch in --profile or lower max_batch_size")
    return {"name": name, "platform": config.platform, "file": str(model_file), "max_batch_size": config.max_batch_size,
            "input": declared[0], "output": declared[1],
            "instances": [(pb.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in config.instance_group]}


def _onnx_io(path: Path) -> list[tuple[str, str, list]]:
    """[(name, Triton type, shape)] of an ONNX file's first input and output, through ONNX Runtime."""
    ort = require("onnxruntime", "ort")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
    return [(t.name, _ORT_TYPES.get(t.type, t.type), list(t.shape))
            for t in (session.get_inputs()[0], session.get_outputs()[0])]


def tritonserver_command(repo: str | os.PathLike, image: str = "nvcr.io/nvidia/tritonserver:24.10-py3") -> str:
    """The ``docker run ... tritonserver --model-repository`` line that serves ``repo`` (an absolute
    path, or e.g. ``$PWD/REPO``)."""
    return (f"docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo}:/models {image} "
            f"tritonserver --model-repository=/models")
