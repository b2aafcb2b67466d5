"""Small owning wrappers over the CUDA runtime (cuda-python's ``cuda.bindings.runtime``).

Every call's status is checked and turned into :class:`CudaError`; every resource (device buffer,
pinned host buffer, stream, CUDA graph) is owned by one object that frees it in ``free()``/
``close()``, in its context manager exit, and as a last resort in ``__del__``. Nothing here imports
cuda-python until a resource is created, so the module imports on machines without it.
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable

import numpy as np

from ..errors import MirnetError, MissingDependencyError

__all__ = ["CudaError", "cudart", "check", "format_version", "device_info", "set_device",
           "DeviceBuffer", "PinnedBuffer", "Stream", "CudaGraph", "memcpy_htod_async",
           "memcpy_dtoh_async"]

_RT = None

# Status codes worth a hint (values of cudaError_t, stable across CUDA 11-13).
_HINTS = {
    2: "out of GPU memory: lower the engine profile's max shape or batch, or free other GPU users",
    35: "no usable NVIDIA driver here (the installed driver is missing or older than the CUDA runtime); "
        "`nvidia-smi` must work first",
    100: "no CUDA-capable GPU is visible (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)",
    101: "invalid device ordinal: that GPU index does not exist here (check CUDA_VISIBLE_DEVICES)",
}


class CudaError(MirnetError):
    """A CUDA runtime call failed; the message names the call, the CUDA error and a hint."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def cudart():
    """The CUDA runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` in cuda-python < 12.6)."""
    global _RT
    if _RT is None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            try:
                from cuda import cudart as rt  # cuda-python 12.0-12.5 layout
            except ImportError as exc:
                raise MissingDependencyError(
                    f"cuda-python is required for GPU memory and streams but could not be imported ({exc}); "
                    f"install it with: pip install 'mirnet-edge[cuda]'") from exc
        _RT = rt
    return _RT


def _error_text(rt, err) -> str:
    try:
        name = rt.cudaGetErrorName(err)[1]
        text = rt.cudaGetErrorString(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        return f"{name}: {text}"
    except Exception:  # never let error formatting hide the error itself
        return f"CUDA error {int(err)}"


def check(result: Any, call: str, rt=None):
    """Unpack a cuda-python result ``(status, *values)``; raise CudaError unless status is success.

    Returns None, the single value, or a tuple of values.
    """
    if isinstance(result, tuple):
        status, values = result[0], result[1:]
    else:
        status, values = result, ()
    code = int(status)
    if code != 0:
        rt = rt or _RT
        text = _error_text(rt, status) if rt is not None else f"CUDA error {code}"
        hint = _HINTS.get(code)
        raise CudaError(f"{call} failed ({text})" + (f"; {hint}" if hint else ""), code=code)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _call(name: str, *args):
    rt = cudart()
    return check(getattr(rt, name)(*args), name, rt)


def format_version(version: int) -> str:
    """CUDA's integer version (``12060``) as ``"12.6"``; ``0`` (no driver) as ``"none"``."""
    if not version:
        return "none"
    return f"{version // 1000}.{(version % 1000) // 10}"


def set_device(device: int) -> None:
    count = _call("cudaGetDeviceCount")
    if not 0 <= device < count:
        raise CudaError(f"GPU index {device} does not exist; this machine has {count} visible GPU(s) "
                        f"(0..{count - 1})", code=101)
    _call("cudaSetDevice", device)


def device_info(device: int = 0) -> dict:
    """Name, compute capability and CUDA versions of ``device`` (what engines are tied to)."""
    set_device(device)
    props = _call("cudaGetDeviceProperties", device)
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    runtime = _call("cudaRuntimeGetVersion")
    driver = cudart().cudaDriverGetVersion()  # returns (success, 0) when no driver is installed
    driver = driver[1] if int(driver[0]) == 0 else 0
    return {"device": device, "gpu_name": str(name).strip(),
            "compute_capability": f"{props.major}.{props.minor}",
            "cuda_runtime": format_version(runtime), "cuda_driver": format_version(driver)}


class _Owned:
    """Base of the owning wrappers: ``free()`` once, context manager, ``__del__`` safety net."""

    _freed = True

    def _release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def free(self) -> None:
        if not self._freed:
            self._freed = True
            self._release()

    close = free

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.free()

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown or a dead context: nothing sensible left to do
            pass


class DeviceBuffer(_Owned):
    """``nbytes`` of GPU memory (cudaMalloc); ``ptr`` is the device address as an int."""

    def __init__(self, nbytes: int):
        if nbytes <= 0:
            raise CudaError(f"DeviceBuffer size {nbytes}: must be > 0 bytes")
        self.nbytes = int(nbytes)
        self.ptr = int(_call("cudaMalloc", self.nbytes))
        self._freed = False

    def _release(self) -> None:
        _call("cudaFree", self.ptr)
        self.ptr = 0


class PinnedBuffer(_Owned):
    """``nbytes`` of page-locked host memory (cudaMallocHost) for asynchronous copies."""

    def __init__(self, nbytes: int):
        if nbytes <= 0:
            raise CudaError(f"PinnedBuffer size {nbytes}: must be > 0 bytes")
        self.nbytes = int(nbytes)
        self.ptr = int(_call("cudaMallocHost", self.nbytes))
        self._freed = False

    def array(self, dtype, shape) -> np.ndarray:
        """A numpy view of the first ``prod(shape)`` elements (valid until ``free()``)."""
        if self._freed:
            raise CudaError("PinnedBuffer used after free()")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > self.nbytes:
            raise CudaError(f"PinnedBuffer of {self.nbytes} bytes cannot hold {tuple(shape)} {dtype}")
        raw = (ctypes.c_ubyte * (count * dtype.itemsize)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def _release(self) -> None:
        _call("cudaFreeHost", self.ptr)
        self.ptr = 0


class Stream(_Owned):
    """A non-blocking CUDA stream; ``handle`` is the int TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        rt = cudart()
        self._stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                             "cudaStreamCreateWithFlags", rt)
        self._freed = False

    @property
    def raw(self):
        return self._stream

    @property
    def handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        _call("cudaStreamSynchronize", self._stream)

    def _release(self) -> None:
        _call("cudaStreamDestroy", self._stream)


class CudaGraph(_Owned):
    """An instantiated CUDA graph captured from the work ``fn`` enqueues on ``stream``."""

    def __init__(self, graph, graph_exec):
        self._graph, self._exec = graph, graph_exec
        self._freed = False

    @classmethod
    def capture(cls, stream: Stream, fn: Callable[[], bool]) -> "CudaGraph | None":
        """Capture ``fn()`` (which enqueues work on ``stream`` and returns True on success).

        Returns None when capture is not possible (the work is not capturable, ``fn`` failed, or
        instantiation failed); the stream is left usable for ordinary execution either way.
        """
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        if int(rt.cudaStreamBeginCapture(stream.raw, mode)[0]) != 0:
            rt.cudaGetLastError()
            return None
        ok = False
        try:
            ok = bool(fn())
        except Exception:
            ok = False
        finally:
            end = rt.cudaStreamEndCapture(stream.raw)  # always end, or the stream stays in capture mode
        status, graph = end[0], end[1]
        if int(status) != 0 or not ok or graph is None:
            if graph is not None and int(status) == 0:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the (non-sticky) capture error
            return None
        inst = rt.cudaGraphInstantiate(graph, 0)
        if int(inst[0]) != 0:
            rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()
            return None
        return cls(graph, inst[1])

    def launch(self, stream: Stream) -> None:
        _call("cudaGraphLaunch", self._exec, stream.raw)

    def _release(self) -> None:
        rt = cudart()
        check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy", rt)
        check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy", rt)


def memcpy_htod_async(dst: DeviceBuffer, src: PinnedBuffer, nbytes: int, stream: Stream) -> None:
    if nbytes > min(dst.nbytes, src.nbytes):
        raise CudaError(f"host-to-device copy of {nbytes} bytes exceeds the buffers "
                        f"({src.nbytes} host, {dst.nbytes} device)")
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw),
          "cudaMemcpyAsync(host to device)", rt)


def memcpy_dtoh_async(dst: PinnedBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    if nbytes > min(dst.nbytes, src.nbytes):
        raise CudaError(f"device-to-host copy of {nbytes} bytes exceeds the buffers "
                        f"({src.nbytes} device, {dst.nbytes} host)")
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw),
          "cudaMemcpyAsync(device to host)", rt)
