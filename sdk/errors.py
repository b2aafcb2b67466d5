"""Typed errors. Library code raises these; only ``cli.py`` turns them into exit codes."""


class MirnetError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(MirnetError, ValueError):
    """A configuration value is invalid."""

    exit_code = 2


class MissingDependencyError(MirnetError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""

    exit_code = 3


class ArtifactError(MirnetError):
    """A weights, ONNX or engine file or its manifest is missing, corrupt or inconsistent."""

    exit_code = 4


class EngineMismatchError(ArtifactError):
    """An artifact was built for another environment (TensorRT version, GPU) than this one."""


class InputError(MirnetError, ValueError):
    """An input image, video or frame cannot be used."""

    exit_code = 5


class SourceError(InputError):
    """A stream source cannot be opened or read."""


class OutputError(MirnetError, OSError):
    """An output could not be written (a full disk, a vanished folder, an I/O error): the message
    names the file and the cause; nothing partial was left under the output's name."""


class ServerError(MirnetError):
    """An inference server (``grpc://``, ``http://``) cannot be reached, fails a request, or cannot
    start (``mirnet serve``)."""

    exit_code = 7


class QualityGateError(MirnetError):
    """An optimised artifact (INT8, pruned, engine) differs from its FP32 reference by more than the
    quality gate allows. ``result`` holds the gate's report (a dict: metrics, worst layers, fix)."""

    exit_code = 6

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result


def require(module: str, extra: str):
    """Import an optional dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is required for this feature but could not be imported ({exc}); "
            f"install it with: pip install 'mirnet-edge[{extra}]'") from exc
