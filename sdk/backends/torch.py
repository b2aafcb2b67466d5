"""PyTorch backend: eager execution of safetensors or official .pth weights (CPU or CUDA).

On a CUDA device, :meth:`TorchBackend.restore_frames_async` keeps a frame on the GPU from uint8
upload to uint8 download: pre-processing (:func:`preprocess_frames`) and post-processing
(:func:`postprocess_frames`) are torch tensor ops with the numbers of
:mod:`mirnet.sdk.ops.reference`. torch is imported only when this backend is opened.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, require
from ..ops.reference import pad_amount, reflect_indices
from .base import Backend, InputSpec, check_frames, check_threads


def preprocess_frames(frames, order: str, multiple: int):
    """(N,H,W,3) uint8 torch tensor (on any device) -> (N,3,Hp,Wp) float32 RGB in [0,1], padded
    bottom/right to ``multiple`` (reflect), with the numbers of ``reference.preprocess_batch``:
    ``float32(x) * float32(1/255)``, padding by the reference's source indices."""
    import torch

    _, h, w, _ = frames.shape
    pad_b, pad_r = pad_amount(h, w, multiple)
    x = frames
    if pad_b:
        x = x.index_select(1, torch.from_numpy(reflect_indices(h, pad_b)).to(x.device))
    if pad_r:
        x = x.index_select(2, torch.from_numpy(reflect_indices(w, pad_r)).to(x.device))
    if order == "bgr":
        x = x.flip(3)
    x = x.permute(0, 3, 1, 2).to(torch.float32)
    return (x * torch.tensor(np.float32(1.0 / 255.0), device=x.device)).contiguous()


def postprocess_frames(t, out_hw: tuple[int, int], order: str):
    """(N,3,H,W) float torch tensor -> (N,h,w,3) uint8 in ``order``, cropped to ``out_hw``, with the
    numbers of ``reference.postprocess_batch``: ``floor(fmin(fmax(t, 0), 1) * 255 + 0.5)`` in float32,
    each operation rounded separately, NaN -> 0."""
    import torch

    h, w = out_hw
    x = t[:, :, :h, :w].to(torch.float32)
    x = torch.fmin(torch.fmax(x, x.new_zeros(())), x.new_ones(()))
    x = torch.floor(x * 255.0 + 0.5)
    if order == "bgr":
        x = x.flip(1)
    return x.permute(0, 2, 3, 1).to(torch.uint8).contiguous()


class _TorchFrames:
    """The result of :meth:`TorchBackend.restore_frames_async`: ``result()`` waits for the device
    and returns the list of uint8 images."""

    def __init__(self, images):
        self._images, self._value = images, None

    def result(self) -> list[np.ndarray]:
        if self._value is None:
            self._value = list(self._images.cpu().numpy())
            self._images = None
        return self._value


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path_or_name: str | os.PathLike, *, device: str = "cpu", threads: int | None = None,
                 half: bool = False):
        check_threads(threads)
        torch = require("torch", "torch")
        from ..model import load_model

        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        self.model = load_model(path_or_name).to(self.device)
        self.half = half
        if half:
            self.model = self.model.half()
        self.input_spec = InputSpec.from_config(self.model.config.to_dict(),
                                                dtype="float16" if half else "float32")
        self.supports_device_io = (self.device.type == "cuda" and self.input_spec.channels == 3
                                   and self.input_spec.out_channels == 3)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.input_spec.check(batch)
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.model(x.half() if self.half else x)
        return out.float().cpu().numpy()

    def restore_frames_async(self, frames: Sequence[np.ndarray], order: str = "bgr", *,
                             camera: str | None = None) -> _TorchFrames:
        """Restore uint8 H x W x 3 ``frames`` of one shape on this backend's device: upload, pre-
        processing, the model and post-processing are queued there; ``result()`` downloads the
        uint8 images (the same numbers as ``Restorer.restore_batch``, the model's aside)."""
        if camera is not None:
            raise ConfigError(f"camera={camera!r}: the PyTorch backend takes H x W x 3 frames; convert camera "
                              f"frames first (mirnet.sdk.ops.nv12_to_rgb / yuyv_to_rgb), or use a TensorRT engine")
        spec = self.input_spec
        if (spec.channels, spec.out_channels) != (3, 3):
            raise ConfigError(f"this model takes {spec.channels} and returns {spec.out_channels} channels; the "
                              f"frame path handles 3-channel images (use infer())")
        _, h, w = check_frames(frames, order)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(frames)).to(self.device)
            x = preprocess_frames(x, order, spec.pad_multiple)
            y = self.model(x.half() if self.half else x)
            images = postprocess_frames(y, (h * spec.scale, w * spec.scale), order)
        return _TorchFrames(images)

    def close(self) -> None:
        self.model = None
