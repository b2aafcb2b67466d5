"""``mirnet stream``: restore a live or recorded stream in real time."""
from __future__ import annotations

import sys
from pathlib import Path

from ..artifact import check_overwrite
from ..errors import InputError
from ..zoo import DEFAULT_MODEL
from .common import add_gray_model, add_max_pixels, max_pixels, on_signals, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("stream", help="restore a live or recorded stream in real time",
                       description="Restore frames from SOURCE to SINK through an overlapped pipeline. "
                       "SOURCE: video file, image folder, camera index, v4l2:///dev/videoN, rtsp://, "
                       "http(s):// (MJPEG), gst://PIPELINE, csi://N. SINK: video file, folder, "
                       "display://, rtsp://, rtp://host:port, null://. Ctrl-C (SIGINT) or SIGTERM "
                       "finishes the frames in flight and closes the output (a playable file); a "
                       "second signal stops at once.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("sink", metavar="SINK")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled name or .onnx/.xml/.safetensors/.pth "
                       f"(default {DEFAULT_MODEL})")
    where.add_argument("--server", default=None, metavar="URL",
                       help="restore on a `mirnet serve` server: grpc://HOST:8001 or http://HOST:8000, optionally "
                            "?timeout=S (per request, default 10) &reconnect=S (how long to retry a server that is "
                            "down or restarting, default 30)")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "openvino", "torch"))
    add_gray_model(p)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="inference threads (default 1 for ORT and OpenVINO)")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="tile size (default: automatic, 0: never)")
    p.add_argument("--policy", choices=("latest", "block"), default=None,
                   help="latest: drop stale frames to stay real time; block: lose nothing "
                        "(default: latest for live sources, block for files and folders)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="frames per inference call (default 1)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after reading N frames")
    p.add_argument("--side-by-side", action="store_true", help="write input | output side by side")
    p.add_argument("--fps", type=positive_float, default=None, help="frame rate of the output (default: the source's)")
    p.add_argument("--stats-json", default=None, metavar="FILE",
                   help="write statistics as JSON, periodically and at the end")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often --stats-json is rewritten (default 1)")
    p.add_argument("--prometheus", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics while running")
    p.add_argument("--reconnect-attempts", type=int, default=10, metavar="N",
                   help="failed reconnections in a row before a live source gives up (default 10, 0: never)")
    add_max_pixels(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line or summary")
    p.set_defaults(func=run)


def _stream_output_file(sink: str) -> Path | None:
    """The local video file a stream SINK names, if it names one (for the overwrite check)."""
    from ..media import kind_of

    path = sink[len("file://"):] if sink.startswith("file://") else None if "://" in sink else sink
    return Path(path) if path and kind_of(path) == "video" else None


def run(args) -> int:
    import logging

    from ..stream import Reconnect, Stream

    out = _stream_output_file(args.sink)
    if out is not None:
        check_overwrite(out, args.force)
    if out is not None and Path(args.source).exists() and out.resolve() == Path(args.source).resolve():
        raise InputError(f"{out}: the output would overwrite the source; choose another SINK")
    logger = logging.getLogger("mirnet.stream")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        lead = "\n" if sys.stderr.isatty() and not args.quiet else ""  # off the live status line
        handler.setFormatter(logging.Formatter(lead + "mirnet stream: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    stream = Stream(args.source, args.sink, model=args.server or args.model, backend=args.backend, threads=args.threads,
                    gray_model=args.gray_model, tile=args.tile, policy=args.policy, batch=args.batch, side_by_side=args.side_by_side,
                    max_frames=args.max_frames, stats_json=args.stats_json, stats_interval=args.stats_interval,
                    prometheus=args.prometheus, status=not args.quiet, fps=args.fps,
                    reconnect=Reconnect(max_attempts=args.reconnect_attempts or None))

    def stop(signum: int, count: int) -> None:  # first: finish the frames in flight; second: stop at once
        stream.mark_interrupted()
        stream.stop(drain=count == 1)

    with max_pixels(args.max_pixels), on_signals(stop) as caught:
        stats = stream.run()
    if not args.quiet:
        g = stats["glass_to_glass"]
        backend = " ".join(filter(None, (stats["backend"], stats["precision"])))
        if stats.get("gray_model"):
            backend += f"; gray frames: {stats['gray_model']}"
        print(f"mirnet stream: {stats['state']}: wrote {stats['frames']} frames to {stats['sink']} "
              f"({backend}, {stats['fps']:.1f} fps, glass-to-glass p50 {g['p50_ms'] or 0:.0f} ms, "
              f"dropped {stats['dropped']}, reconnects {stats['reconnects']})", file=sys.stderr)
    return 128 + caught[0] if caught else 0
