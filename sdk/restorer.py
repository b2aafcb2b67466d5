"""Restorer: uint8/uint16 images in, restored images of the same kind out, on any backend."""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .backends import Backend, open_backend
from .errors import ConfigError, InputError
from .ops import ImageKind, from_rgb3, plan_tile, postprocess, preprocess, run_tiled, to_rgb3
from .zoo import DEFAULT_MODEL, gray_companion

#: a colour frame counts as gray when its channels differ by at most this (in [0, 1]): a monochrome
#: or IR camera's stream decoded to RGB, where chroma rounding can leave a level of tint
GRAY_TOLERANCE = 2.5 / 255

ORDERS = ("bgr", "rgb")


@dataclass(frozen=True, eq=False)
class Prepared:
    """One image made ready for the network by :meth:`Restorer.prepare`.

    ``tensor``: 1 x C x Hp x Wp float (padded); ``out_hw``: the output size before padding
    (input size times ``scale``); ``dtype``: the integer dtype the output is rounded to;
    ``kind``: what :meth:`Restorer.finish` restores (gray, alpha, float); ``order``: channel order.
    Prepared images of one ``tensor.shape`` can be concatenated into one batch.
    """

    tensor: np.ndarray
    out_hw: tuple[int, int]
    dtype: np.dtype
    kind: ImageKind
    order: str


class Restorer:
    """Restore images with a MIRNet-v2 artifact.

    ``model``: a bundled model name, ``.onnx`` (OpenVINO or ONNX Runtime), ``.xml`` (OpenVINO IR),
    ``.safetensors`` or ``.pth`` (PyTorch), ``.engine`` (TensorRT), or an opened
    :class:`~mirnet.sdk.backends.Backend` instance (used as it is; ``close()`` closes it).
    ``backend``: auto, ort, openvino, torch or trt (:func:`~mirnet.sdk.backends.open_backend` says
    what auto picks); :attr:`backend_description` says what runs (e.g. ``openvino bf16``).
    ``gray_model``: the model that restores gray frames (1-channel images, and colour frames whose
    channels differ by at most :data:`GRAY_TOLERANCE`: a monochrome or IR camera's stream), a
    one-channel artifact or opened Backend; ``"auto"`` (default): the bundled gray specialist of a
    bundled model (``denoise-lite-gray`` for ``denoise-lite``), else none; ``None``: gray frames run
    on ``model`` as three equal channels. It opens with the same ``backend``, ``threads`` and
    ``device``; :attr:`gray_description` says what runs it.
    ``tile``: ``None`` tiles only when an image would exceed ``memory_budget_mb`` of activations,
    ``0`` never tiles, ``N`` always uses N x N tiles; tiles overlap by ``tile_overlap`` pixels and
    are blended with linear feathering.

    Inputs (see :func:`restore`): H x W x 3 colour (BGR by default, as OpenCV reads), H x W or
    H x W x 1 gray (restored by ``gray_model``, or as colour and returned as the rounded channel
    mean), H x W x 4 with alpha
    (alpha passed through unchanged), uint8 or uint16 (16-bit precision kept end to end), or
    float images in [0, 1]. The output has the input's shape (times ``scale`` for super-resolution)
    and dtype.
    """

    def __init__(self, model: str | os.PathLike | Backend = DEFAULT_MODEL, *, backend: str = "auto",
                 threads: int | None = None, device: str = "cpu", tile: int | None = None,
                 tile_overlap: int = 32, memory_budget_mb: float = 1024,
                 gray_model: str | os.PathLike | Backend | None = "auto"):
        if not isinstance(model, (str, os.PathLike, Backend)):
            raise ConfigError(f"model={model!r}: give a bundled model name (e.g. {DEFAULT_MODEL!r}), a model "
                              f"file (.onnx, .safetensors, .pth, .engine) or an opened Backend")
        budget = memory_budget_mb
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0 < budget < math.inf:
            raise ConfigError(f"memory_budget_mb={budget!r}: must be a finite number > 0 (megabytes of "
                              f"activations above which images are tiled; default 1024)")
        if tile is not None and tile < 0:
            raise InputError(f"tile={tile}: use None (automatic), 0 (never) or a size > tile_overlap")
        if tile_overlap < 0:
            raise InputError(f"tile_overlap={tile_overlap}: must be >= 0")
        if gray_model is not None and not isinstance(gray_model, (str, os.PathLike, Backend)):
            raise ConfigError(f"gray_model={gray_model!r}: give 'auto', None, a one-channel model file or an "
                              f"opened Backend")
        if isinstance(gray_model, str) and gray_model == "auto":
            gray_model = gray_companion(model) if isinstance(model, (str, os.PathLike)) else None
        # an already opened Backend (e.g. a custom one) is used as it is; close() closes it
        self.backend: Backend = model if isinstance(model, Backend) else open_backend(
            model, backend, threads=threads, device=device)
        self.spec = self.backend.input_spec
        self.gray_backend: Backend | None = self.backend if self.spec.channels == 1 else None
        try:
            if gray_model is not None and self.gray_backend is not None:
                raise ConfigError(f"gray_model={gray_model!r}: the model is a gray model itself (1 channel); "
                                  f"pass gray_model=None")
            if gray_model is not None:
                self.gray_backend = gray_model if isinstance(gray_model, Backend) else open_backend(
                    gray_model, backend, threads=threads, device=device)
                self._check_gray(gray_model)
            if tile:  # run_tiled rounds the tile down to a multiple of pad_multiple
                m = self.spec.pad_multiple
                if max(m, tile // m * m) <= tile_overlap:
                    raise InputError(f"tile={tile} (rounded down to a multiple of {m}: {max(m, tile // m * m)}) "
                                     f"must be larger than tile_overlap={tile_overlap}")
        except BaseException:
            self._close_backends()
            raise
        self.tile, self.tile_overlap = tile, tile_overlap
        self.memory_budget = int(memory_budget_mb * 2 ** 20)
        self._closed = False

    def _check_gray(self, gray_model) -> None:
        g, spec = self.gray_backend.input_spec, self.spec
        if (g.channels, g.out_channels) != (1, 1):
            raise ConfigError(f"gray_model={gray_model!r} takes {g.channels} and returns {g.out_channels} "
                              f"channels; a gray model takes and returns one (train one with in_channels: 1, "
                              f"out_channels: 1), or pass gray_model=None")
        if (g.pad_multiple, g.scale) != (spec.pad_multiple, spec.scale):
            raise ConfigError(f"gray_model={gray_model!r} pads to multiples of {g.pad_multiple} at scale "
                              f"{g.scale}, the model to {spec.pad_multiple} at scale {spec.scale}; they must "
                              f"agree (a gray model made from this model by `to_gray` does)")

    @property
    def backend_description(self) -> str:
        """The backend that runs the network and, where it chose one, its precision: ``openvino bf16``."""
        return self.backend.description

    @property
    def gray_description(self) -> str | None:
        """What restores gray frames: ``denoise-lite-gray.onnx on openvino bf16``; None when gray frames
        run on the colour model."""
        if self.gray_backend is None:
            return None
        where = getattr(self.gray_backend, "path", None)
        return " on ".join(filter(None, (where and os.path.basename(where), self.gray_backend.description)))

    def tile_for(self, h: int, w: int) -> int | None:
        """The tile size an H x W (padded) input runs with, or None when it runs whole."""
        if self.tile == 0:
            return None
        if self.tile is not None:
            return self.tile if max(h, w) > self.tile else None
        if not self.spec.activation_channels:  # the activations live on a server (remote backend)
            return None
        return plan_tile(h, w, channels_mid=self.spec.activation_channels,
                         budget_bytes=self.memory_budget, multiple=self.spec.pad_multiple)

    def infer_tensor(self, x: np.ndarray) -> np.ndarray:
        """Run the network on a padded N x C x H x W float32 batch, tiling when needed. With a gray
        model, gray samples of a 3-channel batch (see ``gray_model``) run on it as their channel mean
        and come back in three equal channels; a 1-channel batch runs on it as it is."""
        self._check_open()
        if self.gray_backend is None or x.ndim != 4:
            return self._run(self.backend, x)
        if x.shape[1] == 1:
            return self._run(self.gray_backend, x)
        gray = gray_samples(x)
        if self.spec.channels == 1 and not gray.all():
            raise InputError(f"this model restores gray frames only (1 channel), but batch sample "
                             f"{int(np.argmin(gray))} is a colour frame (its channels differ by more than "
                             f"{GRAY_TOLERANCE * 255:g}/255); restore colour frames with a colour model")
        if not gray.any():
            return self._run(self.backend, x)
        y_gray = self._run(self.gray_backend, x[gray].mean(axis=1, keepdims=True, dtype=np.float32))
        if gray.all():
            return np.repeat(y_gray, 3, axis=1)
        y_colour = self._run(self.backend, x[~gray])
        y = np.empty((x.shape[0],) + y_colour.shape[1:], dtype=y_colour.dtype)
        y[gray], y[~gray] = y_gray, y_colour
        return y

    def _run(self, backend: Backend, x: np.ndarray) -> np.ndarray:
        tile = self.tile_for(*x.shape[2:])
        if tile is None:
            return backend.infer(x)
        return run_tiled(x, backend.infer, tile=tile, overlap=self.tile_overlap,
                         multiple=self.spec.pad_multiple, scale=self.spec.scale)

    def restore(self, image: np.ndarray, *, order: str = "bgr") -> np.ndarray:
        """Restore one image; ``order`` is the channel order of colour input and output."""
        return self.restore_batch([image], order=order)[0]

    def restore_batch(self, images: Sequence[np.ndarray], *, order: str = "bgr") -> list[np.ndarray]:
        """Restore several images; images of one shape and kind run as one batch. uint8 colour
        images of one shape take the backend's frame path when it has one (``supports_device_io``:
        TensorRT, PyTorch on a GPU, a server), with pre/post-processing next to the network."""
        self._check_call(order)
        if self.frames_path(images):
            return self.backend.restore_frames_async(list(images), order=order).result()
        prepared = [self._prepare(image, order, f"image {i}: ") for i, image in enumerate(images)]
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault((p.tensor.shape, p.out_hw, p.dtype.str), []).append(i)
        for idx in groups.values():
            y = self.infer_tensor(np.concatenate([prepared[i].tensor for i in idx]))
            for j, i in enumerate(idx):
                results[i] = self.finish(prepared[i], y[j])
        return results

    # The three steps of restore, public so that a pipeline can run them in separate threads:
    # prepare (CPU, per image) -> infer_tensor (the backend, batches) -> finish (CPU, per image).
    def prepare(self, image: np.ndarray, *, order: str = "bgr") -> Prepared:
        """Normalise and pad one image into a 1 x C x Hp x Wp tensor (see :class:`Prepared`)."""
        self._check_call(order)
        return self._prepare(image, order, "")

    def finish(self, prepared: Prepared, output: np.ndarray) -> np.ndarray:
        """Turn the network output for ``prepared`` (C x H x W or 1 x C x H x W) back into an
        image of the input's kind: cropped, clamped, rounded, gray/alpha/float restored."""
        out3 = postprocess(output, prepared.out_hw, order=prepared.order, out_dtype=prepared.dtype)
        return from_rgb3(out3, prepared.kind)

    def frames_path(self, images: Sequence[np.ndarray]) -> bool:
        """Whether ``images`` take the backend's frame path (pre/post-processing next to the network):
        uint8 colour images of one shape that would not be tiled, on a backend with
        ``supports_device_io``, none of them gray when a gray model is open."""
        if not self.backend.supports_device_io or len(images) == 0 or self.spec.channels != 3:
            return False
        first = images[0]
        if not all(isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                   and image.shape[2] == 3 and image.shape == first.shape for image in images):
            return False
        m = self.spec.pad_multiple
        if self.tile_for(-(-first.shape[0] // m) * m, -(-first.shape[1] // m) * m) is not None:
            return False
        return self.gray_backend is None or not any(is_gray_frame(image) for image in images)

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this Restorer was closed; create a new one (or use it inside its `with` block)")

    def _check_call(self, order: str) -> None:
        self._check_open()
        if order not in ORDERS:
            raise InputError(f"order={order!r}: valid orders are {ORDERS}")
        if (self.spec.channels, self.spec.out_channels) not in ((3, 3), (1, 1)):
            raise InputError(
                f"this model takes {self.spec.channels} and returns {self.spec.out_channels} channels; "
                f"Restorer.restore handles 3-channel and gray models, use infer_tensor for other layouts")

    def _prepare(self, image: np.ndarray, order: str, where: str) -> Prepared:
        if not isinstance(image, np.ndarray):
            raise InputError(f"{where}expected a numpy array, got {type(image).__name__}")
        try:
            img3, kind = to_rgb3(image)
        except ValueError as exc:
            raise InputError(f"{where}{exc}") from exc
        h, w = img3.shape[:2]
        s = self.spec.scale
        tensor = preprocess(img3, order=order, multiple=self.spec.pad_multiple)
        return Prepared(tensor, (h * s, w * s), img3.dtype, kind, order)

    def close(self) -> None:
        """Close the backend; the Restorer cannot be used afterwards (closing again does nothing)."""
        if not self._closed:
            self._closed = True
            self._close_backends()

    def _close_backends(self) -> None:
        if self.gray_backend is not None and self.gray_backend is not self.backend:
            self.gray_backend.close()
        self.backend.close()

    def __enter__(self) -> "Restorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _within(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, tol) -> bool:
    """Whether three channel planes differ pairwise by at most ``tol`` (stops at the first pair that does not)."""
    return bool(np.abs(c0 - c1).max() <= tol and np.abs(c1 - c2).max() <= tol)


def gray_samples(x: np.ndarray) -> np.ndarray:
    """Per sample of an N x 3 x H x W batch: whether its channels differ by at most
    :data:`GRAY_TOLERANCE` everywhere (a gray frame)."""
    return np.array([_within(*s, np.float32(GRAY_TOLERANCE)) for s in x])


def is_gray_frame(image: np.ndarray) -> bool:
    """Whether a uint8 H x W x 3 frame is gray in the sense of :func:`gray_samples`."""
    c = image.astype(np.int16)
    return _within(c[..., 0], c[..., 1], c[..., 2], int(GRAY_TOLERANCE * 255))
