"""The backend contract: float32 NCHW RGB [0, 1] batches in, the same layout out; optionally a
device-side path that takes uint8 frames and returns uint8 images (``supports_device_io``)."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError
from ..ops import reference

#: channel orders of H x W x 3 frames, and the camera formats of :meth:`Backend.restore_frames_async`
FRAME_ORDERS = ("bgr", "rgb")
CAMERA_FORMATS = ("nv12", "yuyv")


def check_threads(threads) -> int | None:
    """``threads`` for a backend's CPU thread pool: None (the backend's default) or an integer >= 1;
    ConfigError otherwise (torch fails on 0 and ONNX Runtime takes 0 or -3 silently)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads!r}: must be an integer >= 1, or None for the backend's default")
    return threads


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


def check_frames(frames: Sequence[np.ndarray], order: str, camera: str | None = None) -> tuple[int, int, int]:
    """``(N, H, W)`` of a batch for :meth:`Backend.restore_frames_async`: N uint8 frames of one shape,
    H x W x 3 in ``order``, or ``camera`` frames (``"nv12"``: H*3/2 x W, ``"yuyv"``: H x W x 2).
    InputError names the bad value otherwise."""
    if order not in FRAME_ORDERS:
        raise InputError(f"order={order!r}: valid orders are {FRAME_ORDERS}")
    if camera is not None and camera not in CAMERA_FORMATS:
        raise InputError(f"camera={camera!r}: valid camera formats are {CAMERA_FORMATS} (None: H x W x 3 "
                         f"frames in `order`)")
    if len(frames) == 0:
        raise InputError("no frames: pass a non-empty list of uint8 frames of one shape")
    first = frames[0]
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != first.shape:
            raise InputError(
                f"frame {i}: {getattr(frame, 'shape', type(frame).__name__)} {getattr(frame, 'dtype', '')}; "
                f"the device path takes uint8 frames of one shape (frame 0 is {getattr(first, 'shape', '?')} "
                f"{getattr(first, 'dtype', '?')}): restore other kinds with Restorer.restore_batch")
    if camera is None:
        if first.ndim != 3 or first.shape[2] != 3 or first.size == 0:
            raise InputError(f"frame shape {first.shape}: expected H x W x 3 ({order.upper()}); restore gray "
                             f"or alpha images with Restorer.restore_batch, or pass camera='nv12'/'yuyv'")
        h, w = first.shape[:2]
    else:
        try:
            h, w = (reference.nv12_hw if camera == "nv12" else reference.yuyv_hw)(first)
        except ValueError as exc:
            raise InputError(f"camera={camera!r}: {exc}") from exc
    return len(frames), h, w


def io_mismatch(path, side: str, spec: InputSpec, found: str) -> ArtifactError:
    """The error for a model file whose ``side`` (input or output) is not the one its manifest
    describes; ``found`` lists what the file has."""
    name, channels = (spec.input_name, spec.channels) if side == "input" else (spec.output_name, spec.out_channels)
    return ArtifactError(f"{path}: manifest io.{side} says {name!r} {spec.dtype} with {channels} channels, but the "
                         f"file's {side}s are {found}: the manifest does not describe this file; recreate it with "
                         f"the command that produced the artifact")


def _activation_channels(config: dict) -> int:
    """Feature channels per input pixel at full resolution (for the tiling memory model)."""
    return max(1, -(-config["n_feat"] // config.get("unshuffle", 1) ** 2))


class Backend(abc.ABC):
    """An inference engine for one artifact. Use as a context manager or call ``close()``."""

    name: str = "backend"
    input_spec: InputSpec
    #: the inference precision the backend chose, where it chooses one (OpenVINO: f32 or bf16); else None
    precision: str | None = None
    #: True when :meth:`restore_frames_async` runs pre/post-processing next to the network (GPU)
    supports_device_io: bool = False

    @property
    def description(self) -> str:
        """The backend and, where it chose one, its precision, in words: ``openvino bf16``, ``ort``."""
        return " ".join(filter(None, (self.name, self.precision)))

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on an N x C x H x W float batch; returns N x C_out x H*s x W*s float32."""

    def restore_frames_async(self, frames: Sequence[np.ndarray], order: str = "bgr", *,
                             camera: str | None = None):
        """Restore uint8 frames of one shape where the network runs; returns a future whose
        ``result()`` is the list of uint8 H*s x W*s x 3 images in ``order`` (see :func:`check_frames`).
        Only backends with ``supports_device_io`` implement it."""
        raise ConfigError(f"the {self.name} backend has no device-side frame path (supports_device_io is "
                          f"False); restore frames with Restorer.restore_batch")

    def close(self) -> None:
        """Release the engine's resources; the backend is unusable afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
