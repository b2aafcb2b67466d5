"""The backend contract: float32 NCHW RGB [0, 1] batches in, the same layout out."""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class InputSpec:
    """What a backend accepts and returns (from the artifact's manifest)."""

    channels: int
    out_channels: int
    pad_multiple: int
    scale: int
    dtype: str = "float32"
    input_name: str = "input"
    output_name: str = "output"
    activation_channels: int = 80

    @classmethod
    def from_manifest(cls, manifest: dict) -> "InputSpec":
        inp, out = manifest["io"]["input"], manifest["io"]["output"]
        return cls(channels=inp["channels"], out_channels=out["channels"],
                   pad_multiple=inp["pad_multiple"], scale=out["scale"], dtype=inp["dtype"],
                   input_name=inp["name"], output_name=out["name"],
                   activation_channels=_activation_channels(manifest["config"]))

    @classmethod
    def from_config(cls, config: dict, dtype: str = "float32") -> "InputSpec":
        from ..artifact import io_spec

        return cls.from_manifest({"io": io_spec(config, dtype=dtype), "config": config})

    def check(self, batch: np.ndarray) -> None:
        """Raise InputError unless ``batch`` is N x channels x H x W with H, W multiples of pad_multiple."""
        if batch.ndim != 4 or batch.shape[1] != self.channels:
            raise InputError(f"batch shape {batch.shape}: expected N x {self.channels} x H x W")
        h, w = batch.shape[2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise InputError(f"batch H x W {h}x{w} must be multiples of {self.pad_multiple}; "
                             f"pad with mirnet.sdk.ops.preprocess")


def _activation_channels(config: dict) -> int:
    """Feature channels per input pixel at full resolution (for the tiling memory model)."""
    return max(1, -(-config["n_feat"] // config.get("unshuffle", 1) ** 2))


class Backend(abc.ABC):
    """An inference engine for one artifact. Use as a context manager or call ``close()``."""

    name: str = "backend"
    input_spec: InputSpec

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on an N x C x H x W float batch; returns N x C_out x H*s x W*s float32."""

    def close(self) -> None:
        """Release the engine's resources; the backend is unusable afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
