"""``mirnet serve``: a Triton Inference Server (through PyTriton) restoring frames for many cameras."""
from __future__ import annotations

import sys

from ..zoo import DEFAULT_MODEL
from .common import add_gray_model, on_signals


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model to many cameras: Triton (PyTriton), gRPC and HTTP, dynamic batching",
        description="Serve model 'mirnet' (input 'image': UINT8 N x H x W x 3 BGR; outputs 'restored', "
        "'server_ms') on Triton Inference Server. Clients: Restorer('grpc://HOST:8001'), `mirnet stream "
        "SRC SINK --server grpc://HOST:8001`, any Triton client. Health: /v2/health/ready; metrics: "
        "http://HOST:METRICS_PORT/metrics. SIGINT or SIGTERM finishes the requests in flight and exits 0.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled name or .onnx/.safetensors/.pth/.engine "
                   f"(default {DEFAULT_MODEL})")
    p.add_argument("--backend", default="auto", choices=("auto", "ort", "openvino", "torch", "trt"))
    p.add_argument("--threads", type=int, default=None, help="inference threads per instance (default 1 for ORT)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_gray_model(p)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)")
    p.add_argument("--http-port", type=int, default=8000, metavar="PORT", help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="PORT", help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="PORT",
                   help="Prometheus metrics port (default 8002)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="frames per server-side batch, across clients (default 8)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="N",
                   help="microseconds a request may wait to join a batch (default 2000)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="model instances running batches in parallel (default 1)")
    p.add_argument("--exit-timeout", type=int, default=10, metavar="SECONDS",
                   help="on SIGINT/SIGTERM, how long requests in flight may take to finish (default 10)")
    p.set_defaults(func=run)


def run(args) -> int:
    import threading

    from ..errors import ServerError
    from ..serve import Server

    server = Server(args.model, backend=args.backend, threads=args.threads, device=args.device,
                    gray_model=args.gray_model, host=args.host,
                    http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                    max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                    instances=args.instances, exit_timeout=args.exit_timeout)
    stop = threading.Event()
    with on_signals(lambda signum, count: stop.set()):  # a stop requested, not an error: exit 0
        try:
            server.start()
            urls, gray = server.urls, server.restorers[0].gray_description
            print(f"mirnet serve: {args.model} ready as model 'mirnet' at {urls['grpc']} and {urls['http']} "
                  f"(metrics {urls['metrics']}; gray frames: {gray or 'the model itself'}); SIGINT or SIGTERM "
                  f"stops", file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                if not server.is_alive():
                    raise ServerError("Triton stopped unexpectedly; its log above says why")
            print("mirnet serve: stopping: finishing the requests in flight", file=sys.stderr, flush=True)
        finally:
            server.stop()
    return 0
