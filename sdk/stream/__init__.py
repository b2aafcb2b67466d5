"""Real-time streams: sources and sinks by URI, an overlapped restore pipeline, statistics.

>>> from mirnet.sdk import Stream
>>> stats = Stream("rtsp://camera/stream", "out.mp4", model="denoise-lite").run()  # doctest: +SKIP
"""
from .capture import CameraSource, RtspSource
from .files import ImageFolderSource, IterableSource, VideoFileSource
from .gstreamer import GstSource, csi_pipeline
from .mjpeg import HttpMjpegSource, MultipartParser
from .pipeline import POLICIES, Stream, describe_image, run_stream, side_by_side
from .registry import SOURCES, open_source
from .sinks import SINKS, CallbackSink, DisplaySink, FolderSink, NetworkSink, NullSink, Sink, VideoFileSink, open_sink
from .source import Frame, Reconnect, Source
from .stats import STAGES, StreamStats, serve_prometheus

__all__ = ["Stream", "run_stream", "POLICIES", "STAGES", "Frame", "Reconnect", "Source", "Sink", "open_source",
           "open_sink", "SOURCES", "SINKS", "StreamStats", "serve_prometheus", "VideoFileSource",
           "ImageFolderSource", "IterableSource", "CameraSource", "RtspSource", "HttpMjpegSource", "GstSource",
           "MultipartParser", "csi_pipeline", "VideoFileSink", "FolderSink", "DisplaySink", "NetworkSink",
           "CallbackSink", "NullSink", "describe_image", "side_by_side"]
