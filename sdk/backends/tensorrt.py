"""TensorRT backend: runs a serialized engine (``.engine``/``.plan``) built by ``mirnet build-engine``.

Before anything is deserialized, the engine's manifest is checked against this machine
(:mod:`mirnet.sdk.backends.tensorrt_env`: TensorRT version, GPU compute capability and name); a
mismatch raises EngineMismatchError naming both sides and the exact rebuild command. Device memory,
pinned host memory, streams and CUDA graphs come from :mod:`mirnet.sdk.backends.cuda_mem`
(cuda-python), each owned by one object.

Work runs on buffer sets used in turn (``buffers``, 2 = double buffering). Each set has its own CUDA
stream and its own execution context (TensorRT runs one context on one stream at a time), so two
batches in flight never share a context. Two ways in:

* :meth:`TrtBackend.infer` / :meth:`~TrtBackend.infer_async` / :meth:`~TrtBackend.pipeline`: float
  NCHW batches prepared on the CPU, copied up, executed, copied down as float32.
* :meth:`TrtBackend.restore_frames_async` (the streaming path): uint8 frames (BGR/RGB, or NV12/YUYV
  camera frames) copied up, the CUDA pre-processing kernel of :mod:`mirnet.sdk.ops.cuda`,
  ``execute_async_v3``, the CUDA post-processing kernel, uint8 images copied down, all enqueued on
  the buffer set's stream. Same numbers as the CPU path (the kernels match the numpy reference).

``tensorrt`` and ``cuda-python`` are imported only when an engine is opened.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import artifact
from ..errors import ArtifactError, ConfigError, EngineMismatchError, InputError
from .base import Backend, InputSpec, check_frames
from .tensorrt_env import (Profile, check_engine_environment, import_tensorrt, make_logger, max_shape,
                           numpy_dtype, output_shape, rebuild_command, runtime_environment, select_profile,
                           shape_str, tensor_nbytes)

__all__ = ["TrtBackend", "TrtFuture"]

# what the CUDA pre/post-processing kernels write and read
_DEVICE_IO_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def _cuda_mem():
    """The CUDA memory/stream module (a function so tests can substitute a CPU stand-in)."""
    from . import cuda_mem

    return cuda_mem


def _cuda_ops():
    """The CUDA pre/post-processing kernels (a function so tests can substitute a CPU stand-in)."""
    from ..ops import cuda

    return cuda


class _Slot:
    """One buffer set for one batch in flight: its own CUDA stream and execution context, pinned +
    device float input/output, the uint8 frame and image buffers of the device path (allocated on
    its first use), and the CUDA graph captured for the context's current shape."""

    def __init__(self, cm, context, in_bytes: int, out_bytes: int):
        self._cm = cm
        self._owned = []
        self.context = context
        try:
            self.stream = self._own(cm.Stream())
            self.h_in = self._own(cm.PinnedBuffer(in_bytes))
            self.d_in = self._own(cm.DeviceBuffer(in_bytes))
            self.d_out = self._own(cm.DeviceBuffer(out_bytes))
            self.h_out = self._own(cm.PinnedBuffer(out_bytes))
        except BaseException:
            self._free_owned()
            raise
        self.frames = None           # (pinned, device) uint8 frames in, device path
        self.images = None           # (device, pinned) uint8 images out, device path
        self.profile = 0             # a new context starts on profile 0
        self.shape = None            # input shape currently set on the context
        self.graph = None
        self.graph_key = None        # (profile, shape) the graph was captured for
        self.capture_failed = set()  # keys for which capture failed: not retried
        self.pending: TrtFuture | None = None

    def _own(self, obj):
        self._owned.append(obj)
        return obj

    def _free_owned(self) -> None:
        for obj in reversed(self._owned):
            obj.free()
        self._owned = []

    def device_io_buffers(self, frame_bytes: int, image_bytes: int) -> None:
        """Allocate the uint8 buffers of the device path (once)."""
        if self.frames is None:
            cm = self._cm
            self.frames = (self._own(cm.PinnedBuffer(frame_bytes)), self._own(cm.DeviceBuffer(frame_bytes)))
            self.images = (self._own(cm.DeviceBuffer(image_bytes)), self._own(cm.PinnedBuffer(image_bytes)))

    def drop_graph(self) -> None:
        if self.graph is not None:
            self.graph.free()
        self.graph, self.graph_key = None, None

    def free(self) -> None:
        try:
            self.stream.synchronize()
        finally:
            self.drop_graph()
            self.context = None  # before the engine goes
            self._free_owned()


class TrtFuture:
    """The result of :meth:`TrtBackend.infer_async` (float32 N x C x H x W) or of
    :meth:`TrtBackend.restore_frames_async` (a list of uint8 H x W x 3 images); ``result()`` waits
    for it. Results stay readable after the backend is closed."""

    def __init__(self, slot: _Slot, host, shape: tuple[int, ...], dtype: np.dtype,
                 finish: Callable[[np.ndarray], object]):
        self._slot, self._host, self._shape, self._dtype, self._finish = slot, host, shape, dtype, finish
        self._value = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def result(self):
        if self._slot is not None:
            slot = self._slot
            slot.stream.synchronize()
            self._value = self._finish(self._host.array(self._dtype, self._shape))  # copies out of pinned memory
            if slot.pending is self:
                slot.pending = None
            self._slot = self._host = None
        return self._value


def _as_float32(outputs: np.ndarray) -> np.ndarray:
    return outputs.astype(np.float32, copy=True)


def _as_images(images: np.ndarray) -> list[np.ndarray]:
    return list(images.copy())


class TrtBackend(Backend):
    """A TensorRT engine on one GPU.

    ``device``: GPU index. ``cuda_graphs``: after the first run of a given input shape on a buffer
    set, capture the engine's work in a CUDA graph and replay it for later runs of that shape (falls
    back to plain execution when capture fails). ``buffers``: sets of I/O buffers used in turn by
    :meth:`infer_async`, :meth:`pipeline` and :meth:`restore_frames_async`, each with its own CUDA
    stream and execution context (2 = double buffering: one batch's copies and pre/post-processing
    overlap the other's compute; each set holds its own activation memory). ``check_gpu_name``:
    refuse an engine built on another GPU model with the same compute capability. Not thread-safe:
    use one backend per thread.

    ``supports_device_io`` is True when :meth:`restore_frames_async` can run: the engine takes and
    returns 3-channel float32/float16 tensors and ``mirnet.sdk._ext`` has usable CUDA kernels.
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, device: int = 0, cuda_graphs: bool = True,
                 buffers: int = 2, check_gpu_name: bool = True, verbose: bool = False):
        self._closed = True
        self._slots: list[_Slot] = []
        self._engine = self._runtime = None
        if buffers < 1:
            raise InputError(f"buffers={buffers}: need at least 1 set of I/O buffers")
        self.path = Path(path)
        sidecar = artifact.sidecar_path(self.path)
        if self.path.is_file() and not sidecar.is_file():
            raise ArtifactError(
                f"{self.path}: TensorRT engine without its manifest {sidecar.name}. mirnet checks an engine's "
                f"TensorRT version and GPU against this machine before loading it, from that manifest; build "
                f"engines with `mirnet build-engine MODEL.onnx -o {self.path.name}` (an engine made directly "
                f"by trtexec has no manifest)")
        self.manifest = artifact.read_manifest(self.path, kind="engine")
        self.input_spec = InputSpec.from_manifest(self.manifest)
        trt = import_tensorrt("run TensorRT engines")
        self._cm = _cuda_mem()
        self.device, self.cuda_graphs = device, cuda_graphs
        self._closed = False
        try:
            self._open(trt, buffers, check_gpu_name, verbose)
        except BaseException:
            self.close()
            raise

    def _open(self, trt, buffers: int, check_gpu_name: bool, verbose: bool) -> None:
        engine_info = self.manifest.get("engine") or {}
        self._logger = make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        self.environment = runtime_environment(trt, self.device, self._runtime)
        check_engine_environment(self.manifest, self.environment, self.path, check_gpu_name=check_gpu_name)
        if engine_info.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        if engine_info.get("dla_core") is not None:
            self._runtime.DLA_core = int(engine_info["dla_core"])
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no message from TensorRT"
            raise EngineMismatchError(
                f"{self.path}: TensorRT {trt.__version__} could not deserialize this engine ({detail}). "
                f"Rebuild it on this machine:\n  {rebuild_command(self.manifest, self.path)}")

        spec, engine = self.input_spec, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [spec.input_name] or outputs != [spec.output_name]:
            raise ArtifactError(
                f"{self.path}: engine I/O tensors (inputs {inputs}, outputs {outputs}) do not match its "
                f"manifest (input {spec.input_name!r}, output {spec.output_name!r}); rebuild it with "
                f"`{rebuild_command(self.manifest, self.path)}`")
        self.profiles = [Profile(*(tuple(s) for s in engine.get_tensor_profile_shape(spec.input_name, i)))
                         for i in range(engine.num_optimization_profiles)]
        self._in_dtype = numpy_dtype(engine.get_tensor_dtype(spec.input_name))
        self._out_dtype = numpy_dtype(engine.get_tensor_dtype(spec.output_name))
        self.max_input_shape = max_shape(self.profiles)
        max_out = output_shape(self.max_input_shape, spec)
        in_bytes = tensor_nbytes(self.max_input_shape, self._in_dtype)
        out_bytes = tensor_nbytes(max_out, self._out_dtype)
        # device path: unpadded uint8 frames (3 bytes a pixel at most: BGR; NV12 1.5, YUYV 2) and images
        n, _, h, w = self.max_input_shape
        self._frame_bytes = n * h * w * 3
        self._image_bytes = max_out[0] * max_out[2] * max_out[3] * 3
        self._ops = _cuda_ops()
        self.supports_device_io, self._device_io_problem = self._device_io_check()

        for k in range(buffers):
            context = engine.create_execution_context()
            if context is None:
                raise self._cm.CudaError(
                    f"{self.path}: TensorRT could not create execution context {k + 1} of {buffers} (usually "
                    f"out of GPU memory: each buffer set has its own context and activation memory); free GPU "
                    f"memory, open the engine with fewer buffers, or rebuild with a smaller max profile")
            self._slots.append(_Slot(self._cm, context, in_bytes, out_bytes))
        self._next = 0

    def _device_io_check(self) -> tuple[bool, str]:
        """(usable, why not) for :meth:`restore_frames_async`."""
        spec = self.input_spec
        if (spec.channels, spec.out_channels) != (3, 3):
            return False, (f"this engine takes {spec.channels} and returns {spec.out_channels} channels; the "
                           f"device path handles 3-channel images (use infer() with your own pre/post-processing)")
        if self._in_dtype not in _DEVICE_IO_DTYPES or self._out_dtype not in _DEVICE_IO_DTYPES:
            return False, (f"this engine's input is {self._in_dtype} and output {self._out_dtype}; the CUDA "
                           f"pre/post-processing kernels read and write float32 or float16 (rebuild the engine "
                           f"from an ONNX with float32 I/O, or use infer())")
        if not self._ops.available():
            return False, (f"the CUDA pre/post-processing kernels are not usable here "
                           f"({self._ops.info().get('error', 'unknown reason')}); frames are prepared on the "
                           f"CPU instead (Restorer.restore_batch), or rebuild mirnet.sdk._ext with a CUDA "
                           f"toolkit: pip install -e .")
        return True, ""

    # ------------------------------------------------------------------ inference
    def _check_open(self) -> None:
        if self._closed or not self._slots:
            raise InputError("this TensorRT backend is closed")

    def _acquire(self, shape: tuple[int, ...]) -> tuple[_Slot, int, tuple[int, ...]]:
        """The next buffer set, idle, its context set to ``shape``: (slot, profile, output shape)."""
        profile = select_profile(shape, self.profiles)
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.pending is not None:
            slot.pending.result()  # frees this slot's pinned output for reuse
        slot.stream.synchronize()
        if (profile, shape) != (slot.profile, slot.shape):
            self._set_shape(slot, profile, shape)
        out_shape = tuple(int(d) for d in slot.context.get_tensor_shape(self.input_spec.output_name))
        if any(d < 0 for d in out_shape) or tensor_nbytes(out_shape, self._out_dtype) > slot.d_out.nbytes:
            raise ArtifactError(f"{self.path}: engine output shape {out_shape} for input {shape_str(shape)} does "
                                f"not fit the buffers sized from its profiles; rebuild the engine")
        return slot, profile, out_shape

    def _set_shape(self, slot: _Slot, profile: int, shape: tuple[int, ...]) -> None:
        """Point ``slot``'s own context at ``profile`` and ``shape`` (the slot is idle)."""
        slot.drop_graph()
        slot.shape = None  # unknown until TensorRT accepts the new one
        if profile != slot.profile:
            if not slot.context.set_optimization_profile_async(profile, slot.stream.handle):
                raise InputError(
                    f"TensorRT refused optimization profile {profile} ({self.profiles[profile]}) for this "
                    f"buffer set's execution context; if another context holds that profile, open the engine "
                    f"with buffers=1 or rebuild it with one profile per buffer set")
            slot.stream.synchronize()
            slot.profile = profile
        if not slot.context.set_input_shape(self.input_spec.input_name, shape):
            raise InputError(f"TensorRT refused input shape {shape_str(shape)} for profile {profile} "
                             f"({self.profiles[profile]})")
        slot.shape = shape

    def _execute(self, slot: _Slot) -> None:
        ctx, spec = slot.context, self.input_spec
        ctx.set_tensor_address(spec.input_name, slot.d_in.ptr)
        ctx.set_tensor_address(spec.output_name, slot.d_out.ptr)
        if not ctx.execute_async_v3(slot.stream.handle):
            detail = "; ".join(self._logger.errors[-3:]) or "no message from TensorRT"
            raise ArtifactError(f"{self.path}: TensorRT execution failed ({detail})")

    def _compute(self, slot: _Slot, key: tuple) -> None:
        if slot.graph is not None and slot.graph_key == key:
            slot.graph.launch(slot.stream)
            return
        self._execute(slot)
        if self.cuda_graphs and key not in slot.capture_failed:
            # The first run of this shape on this slot has been enqueued (TensorRT did its deferred
            # per-shape work), so capture the same execution as a graph to replay from the next run
            # on. Capture records work, it does not run it: this run's output comes from _execute.
            ctx, handle = slot.context, slot.stream.handle
            graph = self._cm.CudaGraph.capture(slot.stream, lambda: ctx.execute_async_v3(handle))
            if graph is None:
                slot.capture_failed.add(key)
            else:
                slot.graph, slot.graph_key = graph, key

    def infer_async(self, batch: np.ndarray) -> TrtFuture:
        """Enqueue ``batch`` (N x C x H x W) on the next buffer set and return at once; the
        returned future's ``result()`` waits for the output."""
        self._check_open()
        self.input_spec.check(batch)
        shape = tuple(int(d) for d in batch.shape)
        slot, profile, out_shape = self._acquire(shape)
        cm = self._cm
        np.copyto(slot.h_in.array(self._in_dtype, shape), batch, casting="unsafe")
        cm.memcpy_htod_async(slot.d_in, slot.h_in, tensor_nbytes(shape, self._in_dtype), slot.stream)
        self._compute(slot, (profile, shape))
        cm.memcpy_dtoh_async(slot.h_out, slot.d_out, tensor_nbytes(out_shape, self._out_dtype), slot.stream)
        slot.pending = TrtFuture(slot, slot.h_out, out_shape, self._out_dtype, _as_float32)
        return slot.pending

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_async(batch).result()

    def pipeline(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of ``batches`` in order, keeping one batch in flight while the previous one's
        result is handed out (double buffering)."""
        previous = None
        for batch in batches:
            current = self.infer_async(batch)
            if previous is not None:
                yield previous.result()
            previous = current
        if previous is not None:
            yield previous.result()

    def restore_frames_async(self, frames: Sequence[np.ndarray], order: str = "bgr", *,
                             camera: str | None = None) -> TrtFuture:
        """Restore uint8 ``frames`` of one shape on the GPU and return at once; the future's
        ``result()`` is the list of restored uint8 H*scale x W*scale x 3 images in ``order``.

        ``frames``: H x W x 3 images in ``order`` (``"bgr"`` or ``"rgb"``), or with ``camera``
        ``"nv12"`` (H*3/2 x W) or ``"yuyv"`` (H x W x 2) camera frames. On the next buffer set's
        stream: upload, CUDA pre-processing (to the engine's input type, reflect-padded), the engine,
        CUDA post-processing (crop, clamp, round), download; the same numbers as
        ``Restorer.restore_batch`` with this engine.
        """
        self._check_open()
        if not self.supports_device_io:
            raise ConfigError(f"{self.path}: restore_frames_async is not available: {self._device_io_problem}")
        n, h, w = check_frames(frames, order, camera)
        spec, ops = self.input_spec, self._ops
        m, s = spec.pad_multiple, spec.scale
        hp, wp = -(-h // m) * m, -(-w // m) * m
        shape = (n, 3, hp, wp)
        slot, profile, out_shape = self._acquire(shape)
        slot.device_io_buffers(self._frame_bytes, self._image_bytes)
        (h_frames, d_frames), (d_images, h_images) = slot.frames, slot.images
        cm, stream = self._cm, slot.stream.handle

        frame_shape = frames[0].shape
        stack = h_frames.array(np.uint8, (n, *frame_shape))
        for i, frame in enumerate(frames):
            stack[i] = frame
        cm.memcpy_htod_async(d_frames, h_frames, stack.nbytes, slot.stream)
        in_type = self._in_dtype.name
        if camera is None:
            ops.preprocess_device(d_frames.ptr, slot.d_in.ptr, n, h, w, src_dtype="uint8", order=order,
                                  multiple=m, dst_dtype=in_type, stream=stream)
        else:
            kernel = ops.preprocess_nv12_device if camera == "nv12" else ops.preprocess_yuyv_device
            frame_bytes, tensor_bytes = stack[0].nbytes, tensor_nbytes((3, hp, wp), self._in_dtype)
            for i in range(n):
                kernel(d_frames.ptr + i * frame_bytes, slot.d_in.ptr + i * tensor_bytes, h, w, multiple=m,
                       dst_dtype=in_type, stream=stream)
        self._compute(slot, (profile, shape))
        out_hw = (h * s, w * s)
        ops.postprocess_device(slot.d_out.ptr, d_images.ptr, n, out_shape[2], out_shape[3], out_hw,
                               src_dtype=self._out_dtype.name, order=order, dst_dtype="uint8", stream=stream)
        images = (n, *out_hw, 3)
        cm.memcpy_dtoh_async(h_images, d_images, tensor_nbytes(images, np.uint8), slot.stream)
        slot.pending = TrtFuture(slot, h_images, images, np.dtype(np.uint8), _as_images)
        return slot.pending

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for slot in self._slots:
            try:
                if slot.pending is not None:
                    slot.pending.result()  # futures stay readable after close
            except Exception as exc:  # keep freeing the rest
                errors.append(exc)
        for slot in self._slots:
            try:
                slot.free()
            except Exception as exc:
                errors.append(exc)
        self._slots = []  # contexts before engine before runtime
        self._engine = None
        self._runtime = None
        if errors:
            raise errors[0]

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
