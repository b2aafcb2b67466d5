"""Manifest sidecars: every artifact ``X`` (weights, ONNX, engine) has ``X.json`` next to it.

The manifest records the model config, I/O spec, precision, the artifact's sha256, its source
artifact and the build environment, so backends can refuse a mismatch before loading anything.
Artifacts are written through :func:`writer` (temporary file, validation, atomic rename, manifest).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ArtifactError, InputError

FORMAT = "mirnet-edge/manifest"
SCHEMA_VERSION = 1
KINDS = ("weights", "onnx", "engine")
_REQUIRED = ("format", "schema_version", "kind", "file", "sha256", "config", "io", "precision")


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
                  variant: str | None = None, io: dict | None = None, source: str | os.PathLike | None = None,
                  **fields) -> dict:
    """A manifest for an artifact already written to disk (its sha256 is computed here)."""
    if kind not in KINDS:
        raise ArtifactError(f"manifest kind {kind!r} is not one of {KINDS}")
    artifact = Path(artifact)
    manifest = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": kind,
        "file": artifact.name, "sha256": sha256_file(artifact),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "variant": variant, "config": config, "io": io or io_spec(config), "precision": precision,
        "source": None,
    }
    if source is not None:
        source = Path(source)
        manifest["source"] = {"file": source.name, "sha256": sha256_file(source)}
    manifest.update(fields)
    return manifest


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    path = sidecar_path(artifact)
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    return path


def read_manifest(artifact: str | os.PathLike, *, verify: bool = True, kind: str | None = None) -> dict:
    """Read and validate ``artifact``'s sidecar. With ``verify`` the file's sha256 must match."""
    artifact = Path(artifact)
    path = sidecar_path(artifact)
    if not path.is_file():
        raise ArtifactError(
            f"{artifact}: manifest {path} not found. Artifacts made by mirnet have one; recreate it "
            f"with the command that produced the artifact (e.g. `mirnet export onnx WEIGHTS -o {artifact.name}`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a mirnet-edge manifest (format != {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{path}: manifest lacks required fields {missing}")
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: manifest schema {manifest['schema_version']} is newer than this mirnet-edge "
            f"understands ({SCHEMA_VERSION}); upgrade with: pip install -U mirnet-edge")
    if kind is not None and manifest["kind"] != kind:
        raise ArtifactError(f"{path}: manifest is for a {manifest['kind']!r} artifact, expected {kind!r}")
    if verify:
        actual = sha256_file(artifact)
        if actual != manifest["sha256"]:
            raise ArtifactError(
                f"{artifact}: sha256 {actual[:16]}... does not match its manifest "
                f"({manifest['sha256'][:16]}...): the file was modified or replaced after it was written. "
                f"Recreate it, or restore the original file")
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

    ``w.tmp`` is a temporary file in the destination folder with the destination's suffix. On a
    normal exit ``validate(w.tmp)`` runs (it raises to refuse the file), the file is renamed onto
    ``path`` atomically and its manifest (:func:`make_manifest` of the described fields, hashed
    before the rename) is written beside it. On any exception, in the block or in ``validate``,
    the temporary file is removed and a previous ``path`` stays untouched. Without ``force`` an
    existing ``path`` is refused (InputError) before anything is written."""
    path = check_overwrite(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    handle = ArtifactWriter(path, Path(name))
    try:
        yield handle
        if handle.tmp.stat().st_size == 0:
            raise ArtifactError(f"{path}: nothing was written to the artifact; not saved")
        if handle._fields is None:
            raise ArtifactError(f"{path}: the artifact was written without describing its manifest "
                                f"(call describe() inside the writer block); not saved")
        if validate is not None:
            validate(handle.tmp)
        manifest = make_manifest(handle.tmp, **handle._fields)
        manifest["file"] = path.name  # hashed before the rename, so nothing can fail after it
        _publish(handle.tmp, path)
    except BaseException:
        handle.tmp.unlink(missing_ok=True)
        raise
    write_manifest(path, manifest)
    handle.manifest = manifest
