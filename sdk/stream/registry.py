"""Frame sources by URI, one dispatch table (pattern: jetson-utils ``videoSource``).

================================  =========================================================
``clip.mp4``, ``file://clip.mp4``  video file (OpenCV/FFmpeg); ``file://clip.mp4?loop=1`` loops
``frames/``, ``frames/*.png``      image folder or glob, sorted by name (``file://DIR?fps=25``)
``0``, ``/dev/video0``,            camera (V4L2 on Linux); ``?width=1280&height=720&fps=30&fourcc=MJPG``
``v4l2:///dev/video0``
``rtsp://host/path``               RTSP through OpenCV's FFmpeg backend (live, reconnects)
``http://host/video.mjpg``         MJPEG over HTTP(S) (``multipart/x-mixed-replace``), parsed here:
                                   works with or without a Content-Length per part (live, reconnects)
``gst://PIPELINE``                 a GStreamer pipeline ending in raw video (live, reconnects;
                                   a clean end of stream ends it)
``csi://0``                        Jetson CSI camera through ``nvarguscamerasrc``
                                   (``?width=1920&height=1080&fps=30&flip=0``)
================================  =========================================================

``open_source(uri)`` returns an opened :class:`~mirnet.sdk.stream.source.Source` (how to read one:
:mod:`mirnet.sdk.stream.source`).
"""
from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import ConfigError, SourceError
from .capture import CameraSource, RtspSource
from .files import ImageFolderSource, IterableSource, VideoFileSource
from .gstreamer import GstSource, csi_pipeline
from .mjpeg import HttpMjpegSource
from .source import Reconnect, Source

__all__ = ["SOURCES", "open_source", "parse_uri"]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)


def parse_uri(uri: str | os.PathLike | int) -> tuple[str, str]:
    """``(scheme, rest)``: ``("file", "clip.mp4")`` for plain paths, ``("v4l2", "0")`` for a
    camera index, ``("v4l2", "/dev/video0")`` for a device, else the URI's own scheme."""
    if isinstance(uri, int):
        return "v4l2", str(uri)
    text = os.fspath(uri)
    m = _SCHEME_RE.match(text)
    if m:
        return m.group(1).lower(), m.group(2)
    if text.isdigit() or text.startswith("/dev/video"):
        return "v4l2", text
    return "file", text


def _split_query(rest: str, valid: tuple[str, ...], uri: str) -> tuple[str, dict[str, str]]:
    path, _, query = rest.partition("?")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{uri}: unknown option(s) {unknown}; valid options are {list(valid)}")
    return urllib.parse.unquote(path), options


def _num(options: dict, key: str, uri: str, cast=int):
    if key not in options:
        return None
    try:
        return cast(options[key])
    except ValueError:
        raise ConfigError(f"{uri}: option {key}={options[key]!r} is not a number") from None


def _flag(options: dict, key: str) -> bool:
    return options.get(key, "0").lower() in ("1", "true", "yes", "on", "")


def _open_file(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    from ..media import kind_of

    path, options = _split_query(rest, ("loop", "fps"), uri) if uri.startswith("file://") else (rest, {})
    fps = _num(options, "fps", uri, float) or common.get("fps")
    loop = _flag(options, "loop") if "loop" in options else common.get("loop", False)
    if os.path.isdir(path) or any(ch in path for ch in "*?["):
        return ImageFolderSource(path, fps=fps, loop=loop)
    if kind_of(path) == "image":
        return ImageFolderSource(path, fps=fps, loop=loop)
    if not os.path.exists(path):
        raise SourceError(f"{uri}: no such file or folder (sources: a video file, an image folder, a "
                          f"camera index, or a URI with one of the schemes {sorted(SOURCES)})")
    return VideoFileSource(path, loop=loop, fps=fps)


def _open_v4l2(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    path, options = _split_query(rest, ("width", "height", "fps", "fourcc"), uri)
    device: int | str = int(path) if path.isdigit() else path
    if isinstance(device, str) and not os.path.exists(device):
        raise SourceError(f"{uri}: no such camera device {device} (list them with `v4l2-ctl --list-devices`)")
    return CameraSource(device, width=_num(options, "width", uri), height=_num(options, "height", uri),
                        fps=_num(options, "fps", uri, float), fourcc=options.get("fourcc"), **live_kw)


def _open_rtsp(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    return RtspSource(uri, **live_kw)


def _open_http(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    return HttpMjpegSource(uri, **live_kw)


def _open_gst(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    return GstSource(rest, uri=uri, **live_kw)


def _open_csi(uri: str, rest: str, live_kw: dict, common: dict) -> Source:
    sensor, options = _split_query(rest, ("width", "height", "fps", "flip"), uri)
    sensor = sensor.strip("/") or "0"
    if not sensor.isdigit():
        raise ConfigError(f"{uri}: the CSI sensor id must be a number, e.g. csi://0")
    kw = {k: _num(options, k, uri) for k in ("width", "height", "fps", "flip") if k in options}
    return GstSource(csi_pipeline(int(sensor), **kw), uri=uri, end_is_eof=False, **live_kw)


#: scheme -> opener; plain paths are ``file``, camera indices and /dev/video* are ``v4l2``.
SOURCES: dict[str, Callable[[str, str, dict, dict], Source]] = {
    "file": _open_file,
    "v4l2": _open_v4l2,
    "rtsp": _open_rtsp,
    "rtsps": _open_rtsp,
    "http": _open_http,
    "https": _open_http,
    "gst": _open_gst,
    "csi": _open_csi,
}


def open_source(uri: str | os.PathLike | int | Source | Iterable[np.ndarray], *,
                reconnect: Reconnect | None = None, drop: bool = True, buffer: int = 1,
                timeout: float = 5.0, loop: bool = False, fps: float | None = None) -> Source:
    """Open a source by URI (see the module docstring) and return it; a :class:`Source` is opened
    and returned as it is, any other iterable of images is wrapped in :class:`IterableSource`.
    ``reconnect``, ``drop``, ``buffer`` and ``timeout`` (seconds to connect and between frames
    before a live source counts as dropped) apply to live sources; ``loop`` and ``fps`` to files."""
    if isinstance(uri, Source):
        return uri.open()
    if not isinstance(uri, (str, os.PathLike, int)):
        if isinstance(uri, Iterable) and not isinstance(uri, (bytes, np.ndarray)):
            return IterableSource(uri, fps=fps).open()
        raise ConfigError(f"source {uri!r}: expected a URI, a path, a camera index, a Source or an "
                          f"iterable of images")
    scheme, rest = parse_uri(uri)
    opener = SOURCES.get(scheme)
    if opener is None:
        raise ConfigError(f"source {os.fspath(uri) if not isinstance(uri, int) else uri}: unknown scheme "
                          f"{scheme!r}; valid schemes are {sorted(SOURCES)} (or a path or camera index)")
    text = str(uri) if isinstance(uri, int) else os.fspath(uri)
    live_kw = dict(reconnect=reconnect, drop=drop, buffer=buffer, timeout=timeout)
    return opener(text, rest, live_kw, {"loop": loop, "fps": fps}).open()
