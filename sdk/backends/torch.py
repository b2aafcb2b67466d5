"""PyTorch backend: eager execution of safetensors or official .pth weights (CPU or CUDA)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import require
from .base import Backend, InputSpec


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path_or_name: str | os.PathLike, *, device: str = "cpu", threads: int | None = None,
                 half: bool = False):
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.input_spec.check(batch)
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.model(x.half() if self.half else x)
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
