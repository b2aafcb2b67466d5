"""MIRNet Edge runtime: restore images and video with MIRNet-v2, no torch needed."""
__version__ = "0.1.0"

from .errors import (ArtifactError, ConfigError, EngineMismatchError, InputError,  # noqa: E402
                     MirnetError, MissingDependencyError, OutputError, ServerError, SourceError)
from .restorer import Restorer  # noqa: E402
from .stream import Stream  # noqa: E402

__all__ = ["Restorer", "Stream", "MirnetError", "ConfigError", "MissingDependencyError", "ArtifactError",
           "EngineMismatchError", "InputError", "SourceError", "OutputError", "ServerError",
           "__version__"]
