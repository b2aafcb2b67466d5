"""Manifest sidecars: every artifact ``X`` (weights, ONNX, OpenVINO IR, engine) has ``X.json`` next to it.

The manifest records the model config, I/O spec, precision, the artifact's sha256 (and that of its
companion files: an OpenVINO IR's ``.bin``), its source artifact and the build environment, so
backends can refuse a mismatch before loading anything. Artifacts are written through
:func:`writer` (temporary file, validation, atomic rename, manifest).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ArtifactError, InputError

FORMAT = "mirnet-edge/manifest"
SCHEMA_VERSION = 1
KINDS = ("weights", "onnx", "engine", "openvino")
#: the suffixes of the files an artifact of a kind has beside it (an OpenVINO IR's ``.bin`` weights:
#: ``model.xml`` -> ``model.bin``), recorded in its manifest as ``companions: {suffix: sha256}``
COMPANIONS = {"openvino": (".bin",)}
_REQUIRED = ("format", "schema_version", "kind", "file", "sha256", "config", "io", "precision")
#: tensor dtypes a manifest's I/O spec may name
IO_DTYPES = ("float32", "float16")
#: the safetensors ``__metadata__`` key that records what defines the network (see :func:`network_record`)
NETWORK_KEY = "mirnet.network"
#: bounds on what :func:`read_manifest` and :func:`safetensors_metadata` parse (untrusted files)
MAX_MANIFEST_BYTES = 16 << 20
_MAX_SAFETENSORS_HEADER = 100 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9]{1,16}")


def cache_dir() -> Path:
    """Where derived artifacts are cached (``MIRNET_CACHE``, else ``$XDG_CACHE_HOME/mirnet-edge``)."""
    root = os.environ.get("MIRNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mirnet-edge")
    return Path(root)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict:
    """``{"file": NAME, "sha256": ...}``: how manifests name a file they were made from."""
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path)}


def _publish(tmp: str | os.PathLike, path: Path) -> None:
    """Give ``tmp`` normal permissions (mkstemp creates 0600) and rename it to ``path`` atomically."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def io_spec(config: dict, *, dtype: str = "float32", input_name: str = "input",
            output_name: str = "output") -> dict:
    """The tensor contract of a model: NCHW RGB in [0, 1], H and W padded to ``pad_multiple``."""
    from .model.config import MIRNetV2Config

    pad_multiple = MIRNetV2Config.from_dict(config).pad_multiple
    return {
        "input": {"name": input_name, "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0],
                  "channels": config["in_channels"], "dtype": dtype, "pad_multiple": pad_multiple},
        "output": {"name": output_name, "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0],
                   "channels": config["out_channels"], "dtype": dtype, "scale": config["scale"]},
    }


def build_environment(**extra) -> dict:
    from . import __version__

    env = {"mirnet_edge": __version__, "python": platform.python_version(), "machine": platform.machine()}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def make_manifest(artifact: str | os.PathLike, *, kind: str, config: dict, precision: str,
                  variant: str | None = None, io: dict | None = None,
                  source: str | os.PathLike | dict | None = None, **fields) -> dict:
    """A manifest for an artifact already written to disk (its sha256 is computed here, and that of
    the companion files its kind has beside it: ``artifact.with_suffix(suffix)``, see :data:`COMPANIONS`).
    ``source``: the file it was made from (hashed here), or the ``{"file", "sha256"}`` record of one
    that another manifest already holds (training on from pruned weights keeps their source)."""
    if kind not in KINDS:
        raise ArtifactError(f"manifest kind {kind!r} is not one of {KINDS}")
    artifact = Path(artifact)
    for suffix in COMPANIONS.get(kind, ()):
        if not artifact.with_suffix(suffix).is_file():
            raise ArtifactError(f"{artifact}: a {kind!r} artifact has a {suffix} file beside it, but "
                                f"{artifact.with_suffix(suffix).name} is missing")
    manifest = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": kind,
        "file": artifact.name, "sha256": sha256_file(artifact),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "variant": variant, "config": config, "io": io or io_spec(config), "precision": precision,
        "source": None,
    }
    if isinstance(source, dict):
        manifest["source"] = {"file": source.get("file"), "sha256": source.get("sha256")}
    elif source is not None:
        manifest["source"] = file_record(source)
    if kind in COMPANIONS:
        manifest["companions"] = {suffix: sha256_file(artifact.with_suffix(suffix)) for suffix in COMPANIONS[kind]}
    manifest.update(fields)
    return manifest


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    path = sidecar_path(artifact)
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    return path


def network_record(config: dict, pruned_layers: dict | None) -> str:
    """What defines a weights file's network besides its tensors (the config and the pruned conv
    layout), as the canonical JSON that :func:`~mirnet.sdk.model.save_weights` stores in the
    safetensors ``__metadata__`` under :data:`NETWORK_KEY`: covered by the file's sha256, so an edited
    manifest is detected (:func:`read_manifest`)."""
    return json.dumps({"config": config, "pruned_layers": pruned_layers or {}}, sort_keys=True)


def safetensors_metadata(path: str | os.PathLike) -> dict | None:
    """The ``__metadata__`` of a safetensors file (None when it has none), read from its header
    without loading any tensor; ArtifactError when the header is not valid safetensors."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= size <= _MAX_SAFETENSORS_HEADER:
                raise ValueError(f"header size {size} is out of range")
            header = json.loads(fh.read(size))
    except (OSError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(path: Path, field: str, value, expected: str) -> ArtifactError:
    return ArtifactError(
        f"{path}: manifest field {field}={_short(value)} is invalid: expected {expected}. Manifests are "
        f"written by mirnet, not by hand: recreate it with the command that produced the artifact")


def _is_int(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_io(path: Path, io, config) -> None:
    """The I/O spec's shape and values, and its agreement with the (validated) ``config``."""
    if not isinstance(io, dict) or not isinstance(io.get("input"), dict) or not isinstance(io.get("output"), dict):
        raise _bad(path, "io", io, "a mapping with 'input' and 'output' mappings")
    want = {"input": {"channels": config.in_channels, "pad_multiple": config.pad_multiple},
            "output": {"channels": config.out_channels, "scale": config.scale}}
    for side in ("input", "output"):
        spec = io[side]
        for key, ok, expected in (
                ("name", isinstance(spec.get("name"), str) and spec.get("name") != "", "a tensor name"),
                ("layout", spec.get("layout") == "NCHW", "'NCHW'"),
                ("color", spec.get("color") == "RGB", "'RGB'"),
                ("dtype", spec.get("dtype") in IO_DTYPES, f"one of {IO_DTYPES}"),
                *((k, _is_int(spec.get(k)), "an integer >= 1") for k in want[side])):
            if not ok:
                raise _bad(path, f"io.{side}.{key}", spec.get(key), expected)
        for key, value in want[side].items():
            if spec[key] != value:
                raise _bad(path, f"io.{side}.{key}", spec[key], f"{value}, what its config defines")


def _validate(path: Path, manifest: dict) -> None:
    """The schema check of :func:`read_manifest`: every required field's type and value, the config
    through MIRNetV2Config's own checks, the I/O spec, the source and the pruned layout."""
    from .errors import ConfigError
    from .model.config import MIRNetV2Config

    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{path}: manifest lacks required fields {missing}")
    version = manifest["schema_version"]
    if not _is_int(version):
        raise _bad(path, "schema_version", version, f"an integer from 1 to {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: manifest schema {version} is newer than this mirnet-edge understands "
            f"({SCHEMA_VERSION}); upgrade with: pip install -U mirnet-edge")
    if manifest["kind"] not in KINDS:
        raise _bad(path, "kind", manifest["kind"], f"one of {KINDS}")
    for key in ("file", "precision"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise _bad(path, key, manifest[key], "a non-empty string")
    if not isinstance(manifest["sha256"], str) or not _SHA256_RE.fullmatch(manifest["sha256"]):
        raise _bad(path, "sha256", manifest["sha256"], "64 lowercase hex digits")
    if not isinstance(manifest.get("variant"), (str, type(None))):
        raise _bad(path, "variant", manifest["variant"], "a variant name or null")
    config = manifest["config"]
    if not isinstance(config, dict):
        raise _bad(path, "config", config, "a mapping of MIRNetV2Config fields")
    absent = sorted({f.name for f in dataclasses.fields(MIRNetV2Config)} - set(config))
    if absent:
        raise _bad(path, "config", config, f"every MIRNetV2Config field; missing {absent}")
    try:
        parsed = MIRNetV2Config.from_dict(config)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: manifest field config is invalid: {exc}. Manifests are written by "
                            f"mirnet, not by hand: recreate it with the command that produced the "
                            f"artifact") from None
    _check_io(path, manifest["io"], parsed)
    source = manifest.get("source")
    if source is not None and not (isinstance(source, dict) and isinstance(source.get("file"), str)
                                   and isinstance(source.get("sha256"), str)
                                   and _SHA256_RE.fullmatch(source["sha256"])):
        raise _bad(path, "source", source, "null or {'file': NAME, 'sha256': 64 hex digits}")
    companions = manifest.get("companions")
    if companions is not None and not (isinstance(companions, dict) and all(
            isinstance(k, str) and _SUFFIX_RE.fullmatch(k) and isinstance(v, str) and _SHA256_RE.fullmatch(v)
            for k, v in companions.items())):
        raise _bad(path, "companions", companions, "null or a mapping of file suffixes ('.bin') to 64 hex digits")
    want = sorted(COMPANIONS.get(manifest["kind"], ()))
    if sorted(companions or {}) != want:
        expected = ("{" + ", ".join(f"{s!r}: its sha256" for s in want) + "}" if want
                    else f"null (a {manifest['kind']!r} artifact has no companion files)")
        raise _bad(path, "companions", companions, expected)
    pruned = manifest.get("pruned")
    if pruned is not None:
        layers = pruned.get("layers", {}) if isinstance(pruned, dict) else None
        if not isinstance(layers, dict):
            raise _bad(path, "pruned", pruned, "null or a mapping whose 'layers' maps conv names to "
                       "[in_channels, out_channels, groups]")
        for name, shape in layers.items():
            if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)):
                raise _bad(path, f"pruned.layers.{name}", shape, "[in_channels, out_channels, groups], "
                           "positive integers")


def _check_network(artifact: Path, manifest: dict) -> None:
    """A weights file records its network (:func:`network_record`) in its safetensors metadata,
    under the sha256: the manifest's config and pruned layout must be the recorded ones."""
    recorded = (safetensors_metadata(artifact) or {}).get(NETWORK_KEY)
    if recorded is None:
        raise ArtifactError(
            f"{artifact}: the file does not record its network config (no {NETWORK_KEY!r} in its "
            f"safetensors metadata: it was saved by an older mirnet-edge or another tool), so an edited "
            f"manifest could not be detected. If you trust its manifest, re-save it with the config "
            f"recorded: python -c \"from mirnet.sdk.model.weights import adopt_manifest; "
            f"adopt_manifest('{artifact}')\"")
    try:
        recorded = json.loads(recorded)
    except (ValueError, RecursionError):
        recorded = None
    if not (isinstance(recorded, dict) and all(isinstance(recorded.get(k), dict) for k in ("config", "pruned_layers"))):
        raise ArtifactError(f"{artifact}: its {NETWORK_KEY!r} safetensors metadata is not the record "
                            f"save_weights writes; re-save the model with save_weights")
    current = json.loads(network_record(manifest["config"], (manifest.get("pruned") or {}).get("layers")))
    diffs = [f"{part}.{key}: manifest {_short(current[part].get(key))}, file {_short(recorded[part].get(key))}"
             for part in ("config", "pruned_layers")
             for key in sorted(set(current[part]) | set(recorded[part]))
             if current[part].get(key) != recorded[part].get(key)]
    if diffs:
        raise ArtifactError(
            f"{artifact}: its manifest {sidecar_path(artifact).name} does not describe the network saved in "
            f"the file ({'; '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''}): the manifest was edited "
            f"after the weights were saved. Restore the original manifest; to change the network, build "
            f"the model with the new config and save it with save_weights")


def read_manifest(artifact: str | os.PathLike, *, verify: bool = True, kind: str | None = None) -> dict:
    """Read and validate ``artifact``'s sidecar (the one schema check: ArtifactError naming the
    field). With ``verify`` the file's sha256 must match, and so must its companion files' (an
    OpenVINO IR's ``.bin`` beside it), and a weights file's recorded network (config, pruned
    layout) must be the manifest's."""
    artifact = Path(artifact)
    path = sidecar_path(artifact)
    if not path.is_file():
        export = "openvino MODEL" if artifact.suffix.lower() == ".xml" else "onnx WEIGHTS"
        raise ArtifactError(
            f"{artifact}: manifest {path} not found. Artifacts made by mirnet have one; recreate it "
            f"with the command that produced the artifact (e.g. `mirnet export {export} -o {artifact.name}`)")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ArtifactError(f"{path}: unreadable manifest ({reason})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a mirnet-edge manifest (format != {FORMAT!r})")
    _validate(path, manifest)
    if kind is not None and manifest["kind"] != kind:
        raise ArtifactError(f"{path}: manifest is for a {manifest['kind']!r} artifact, expected {kind!r}")
    if verify:
        actual = sha256_file(artifact)
        if actual != manifest["sha256"]:
            raise ArtifactError(
                f"{artifact}: sha256 {actual[:16]}... does not match its manifest "
                f"({manifest['sha256'][:16]}...): the file was modified or replaced after it was written. "
                f"Recreate it, or restore the original file")
        for suffix, digest in (manifest.get("companions") or {}).items():
            companion = artifact.with_suffix(suffix)
            if not companion.is_file():
                raise ArtifactError(f"{artifact}: its {suffix} file {companion} is missing (it belongs beside "
                                    f"{artifact.name}); restore it, or recreate the artifact")
            actual = sha256_file(companion)
            if actual != digest:
                raise ArtifactError(
                    f"{companion}: sha256 {actual[:16]}... does not match the manifest of {artifact.name} "
                    f"({digest[:16]}...): the file was modified or replaced after it was written. Recreate "
                    f"the artifact, or restore the original file")
        if manifest["kind"] == "weights" and artifact.suffix == ".safetensors":
            _check_network(artifact, manifest)
    return manifest


def check_overwrite(path: str | os.PathLike, force: bool) -> Path:
    """``path`` as a Path; InputError when it exists and ``force`` is not set (the ``--force`` rule
    of every command that writes a file)."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")
    return path


class ArtifactWriter:
    """The handle :func:`writer` yields: write the artifact to ``tmp``, then call :meth:`describe`
    with the :func:`make_manifest` arguments. After the ``with`` block ``manifest`` holds the
    manifest that was written."""

    def __init__(self, path: Path, tmp: Path):
        self.path, self.tmp = path, tmp
        self.manifest: dict | None = None
        self._fields: dict | None = None

    def describe(self, *, kind: str, config: dict, precision: str, **fields) -> None:
        """The manifest of the artifact being written (``make_manifest``'s arguments)."""
        self._fields = dict(kind=kind, config=config, precision=precision, **fields)


@contextlib.contextmanager
def writer(path: str | os.PathLike, *, force: bool,
           validate: Callable[[Path], None] | None = None) -> Iterator[ArtifactWriter]:
    """Write an artifact and its manifest, all or nothing::

        with artifact.writer("model.onnx", force=True) as w:
            save_somehow(w.tmp)
            w.describe(kind="onnx", config=..., precision="fp32")

    ``w.tmp`` is a temporary file in the destination folder with the destination's suffix; the
    companion files of the described kind (:data:`COMPANIONS`: an OpenVINO IR's ``.bin``) are
    written beside it as ``w.tmp.with_suffix(suffix)``, as ``openvino.save_model(model, w.tmp)``
    does. On a normal exit ``validate(w.tmp)`` runs (it raises to refuse the file), the companions
    are renamed onto ``path.with_suffix(suffix)`` and then the file onto ``path``, atomically each,
    and its manifest (:func:`make_manifest` of the described fields, hashed before the renames) is
    written beside it. On any exception, in the block or in ``validate``, the temporary files are
    removed and a previous ``path`` stays untouched. Without ``force`` an existing ``path`` (or
    companion) is refused (InputError), ``path`` before anything is written."""
    path = check_overwrite(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    handle = ArtifactWriter(path, Path(name))
    temporary = [handle.tmp, *(handle.tmp.with_suffix(s) for s in sorted({s for c in COMPANIONS.values() for s in c}))]
    try:
        yield handle
        if handle.tmp.stat().st_size == 0:
            raise ArtifactError(f"{path}: nothing was written to the artifact; not saved")
        if handle._fields is None:
            raise ArtifactError(f"{path}: the artifact was written without describing its manifest "
                                f"(call describe() inside the writer block); not saved")
        suffixes = COMPANIONS.get(handle._fields["kind"], ())
        for suffix in suffixes:
            check_overwrite(path.with_suffix(suffix), force)
        if validate is not None:
            validate(handle.tmp)
        manifest = make_manifest(handle.tmp, **handle._fields)
        manifest["file"] = path.name  # hashed before the renames, so nothing can fail after them
        for suffix in suffixes:
            _publish(handle.tmp.with_suffix(suffix), path.with_suffix(suffix))
        _publish(handle.tmp, path)
    except BaseException:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
        raise
    write_manifest(path, manifest)
    handle.manifest = manifest
