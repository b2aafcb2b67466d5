"""`mirnet serve` and the remote backend, on a real Triton server (PyTriton) on loopback ports:
outputs equal to the local Restorer's, dynamic batching across clients, the frame and float paths,
timeouts and errors, network time in stream statistics, SIGTERM, and a restart mid-stream."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from servekit import ServerProcess, free_ports, needs_serving

from mirnet.sdk import Restorer, Stream
from mirnet.sdk.backends.remote import RemoteBackend, parse_url
from mirnet.sdk.cli import main
from mirnet.sdk.errors import ConfigError, InputError, MissingDependencyError, ServerError
from mirnet.sdk.serve import Server, python_backend_library_path
from mirnet.sdk.triton_repo import tritonserver_command

REPO = Path(__file__).resolve().parents[2]


def frames(n: int, h: int = 40, w: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


# ---------------------------------------------------------------- without a server

def test_urls_parse_and_bad_ones_name_the_fix():
    t = parse_url("grpc://10.0.0.5/cams?timeout=2.5&reconnect=0")
    assert (t.scheme, t.host, t.port, t.model, t.timeout, t.reconnect) == ("grpc", "10.0.0.5", 8001, "cams", 2.5, 0)
    assert parse_url("http://host").port == 8000 and parse_url("http://host:9").model == "mirnet"
    for bad, words in [("grpc://", "no host"), ("grpc://h:99999", "port"), ("grpc://h?retries=3", "'retries'"),
                       ("grpc://h?timeout=0", "timeout=0.0"), ("grpc://h?reconnect=soon", "'soon'"),
                       ("grpc://h/a/b", "one model")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_url(bad)
    with pytest.raises(ConfigError, match="backend 'auto'"):
        Restorer("grpc://127.0.0.1:1", backend="ort")


def test_missing_packages_name_the_serve_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tritonclient.grpc", None)
    monkeypatch.setitem(__import__("sys").modules, "pytriton.triton", None)
    with pytest.raises(MissingDependencyError, match=re.escape("mirnet-edge[serve]")):
        RemoteBackend("grpc://127.0.0.1:1")
    with pytest.raises(MissingDependencyError, match=re.escape("mirnet-edge[serve]")):
        Server().start()


def test_server_settings_are_checked():
    for kwargs, words in [({"grpc_port": 0}, "grpc_port=0"), ({"http_port": 8001}, "must differ"),
                          ({"max_batch": 0}, "max_batch=0"), ({"instances": 0}, "instances=0"),
                          ({"max_queue_delay_us": -1}, "max_queue_delay_us=-1")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            Server(**kwargs)


def test_a_busy_port_is_refused_before_triton_starts():
    needs_serving()
    import socket

    http, grpc, metrics = free_ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", grpc))
        busy.listen()
        with pytest.raises(ServerError, match=f"port {grpc} on 127.0.0.1 is not free.*--grpc-port"):
            Server(host="127.0.0.1", http_port=http, grpc_port=grpc, metrics_port=metrics).start()


def test_the_stub_gets_this_interpreters_libpython_first(monkeypatch):
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR")
    if not Path(libdir, sysconfig.get_config_var("LDLIBRARY") or "-").is_file():
        pytest.skip("this interpreter has no shared libpython")
    assert python_backend_library_path(None) == libdir
    assert python_backend_library_path(f"/opt/x:{libdir}:/opt/y").split(":") == [libdir, "/opt/x", "/opt/y"]


# ---------------------------------------------------------------- on a shared server

def test_eight_concurrent_clients_get_the_local_restorers_numbers(server, tiny_onnx):
    local = Restorer(tiny_onnx)
    inputs = [frames(3, seed=k) for k in range(8)]
    expected = [[local.restore(f) for f in batch] for batch in inputs]
    count0, exec0 = server.metric("nv_inference_count"), server.metric("nv_inference_exec_count")
    barrier = threading.Barrier(8)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            url = server.grpc_url if k % 2 else server.http_url  # both protocols
            with Restorer(url) as remote:
                barrier.wait(timeout=60)
                results[k] = [remote.restore(f) for f in inputs[k]]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(max_diff(got, want) <= 1 for k in range(8) for got, want in zip(results[k], expected[k]))
    # 24 frames and each client's 1-frame probe when it connects, batched across the clients by
    # Triton's dynamic batcher: fewer executions than requests
    requests = server.metric("nv_inference_count") - count0
    executions = server.metric("nv_inference_exec_count") - exec0
    assert requests == 24 + 8 and executions < requests, (requests, executions)


def test_gray_frames_run_on_the_servers_gray_model(server, tiny_onnx, gray_onnx):
    """A monochrome camera's frames (1 channel, or 3 equal ones) take the server's --gray-model,
    colour frames the colour model, in one server-side batch too; the ready line names it."""
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    colour = frames(1, seed=6)[0]
    with Restorer(tiny_onnx, gray_model=gray_onnx) as local, Restorer(tiny_onnx, gray_model=None) as plain, \
            Restorer(server.grpc_url) as remote:
        want = local.restore(gray)
        assert max_diff(want, plain.restore(gray)) > 8  # the two models differ on this frame
        assert max_diff(remote.restore(gray), want) <= 1
        batch = remote.restore_batch([colour, np.repeat(gray[..., None], 3, axis=2)])
        assert max_diff(batch[0], local.restore(colour)) <= 1
        assert max_diff(batch[1][..., 0], want) <= 1 and np.array_equal(batch[1][..., 0], batch[1][..., 2])
    assert re.search(r"ready as model 'mirnet' .*gray frames: tiny-gray\.onnx on \w+", server.output())


def test_health_endpoints(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mirnet/ready"):
        with urllib.request.urlopen(server.http_url + path, timeout=5) as r:
            assert r.status == 200, path
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=5) as r:
        assert b"nv_inference_request_success" in r.read()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_remote_paths_match_local(server, tiny_onnx, gray_onnx, scheme):
    local = Restorer(tiny_onnx, gray_model=gray_onnx)  # as the server runs it
    url = server.grpc_url if scheme == "grpc" else server.http_url
    colour = frames(1, 37, 61)[0]  # not a multiple of the pad: the server pads and crops
    gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    alpha = np.dstack([colour, np.full(colour.shape[:2], 200, np.uint8)])
    with Restorer(url) as remote:
        assert remote.backend.input_spec.scale == 1 and remote.backend.supports_device_io
        assert max_diff(remote.restore(colour), local.restore(colour)) <= 1
        assert max_diff(remote.restore(colour, order="rgb"), local.restore(colour, order="rgb")) <= 1
        assert max_diff(remote.restore(gray), local.restore(gray)) <= 1  # the float path, 8-bit content
        out = remote.restore(alpha)
        assert max_diff(out, local.restore(alpha)) <= 1 and (out[..., 3] == 200).all()
        mixed = remote.restore_batch([colour, colour[:20, :24], colour])
        assert [m.shape for m in mixed] == [colour.shape, (20, 24, 3), colour.shape]
        future = remote.backend.restore_frames_async(frames(2), order="bgr")
        assert len(future.result()) == 2 and set(future.timings) == {"infer", "network"}
        assert future.timings["infer"] > 0 and future.timings["network"] >= 0
        deep = (colour.astype(np.uint16) * 257 + 3)  # real 16-bit levels: refused, not quantised silently
        with pytest.raises(InputError, match="8-bit"):
            remote.restore(deep)
        with pytest.raises(InputError, match="camera='nv12'"):
            remote.backend.restore_frames_async([np.zeros((60, 64), np.uint8)], camera="nv12")


def test_bigger_batches_than_the_server_takes_are_split(server, tiny_onnx):
    batch = frames(11, 24, 32, seed=5)  # the server batches at most 8
    local = Restorer(tiny_onnx).restore_batch(batch)
    with Restorer(server.grpc_url) as remote:
        got = remote.restore_batch(batch)
    assert len(got) == 11 and all(max_diff(a, b) <= 1 for a, b in zip(got, local))


def test_unreachable_server_and_unknown_model_fail_with_the_fix(server):
    (port,) = free_ports(1)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"mirnet serve.*reconnect=SECONDS"):
        RemoteBackend(f"grpc://127.0.0.1:{port}?reconnect=0.5")
    assert time.monotonic() - t0 < 10
    with pytest.raises(ServerError, match=r"models on the server: \['mirnet'\]"):
        RemoteBackend(f"{server.http_url}/nosuchmodel?reconnect=0")


def test_stream_with_server_reports_network_time(server, tiny_onnx, tmp_path, capsys):
    out, stats_path, frames = tmp_path / "out", tmp_path / "stats.json", tmp_path / "frames"
    frames.mkdir()
    for i, name in enumerate(("clean/sample_clean.png", "sample_noisy.png")):
        shutil.copy(REPO / "tests/data" / name, frames / f"{i}.png")
    rc = main(["stream", str(frames), str(out), "--server", server.grpc_url, "--policy", "block",
               "--stats-json", str(stats_path)])
    assert rc == 0, capsys.readouterr().err
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == 2 and stats["backend"] == "remote" and stats["model"] == server.grpc_url
    assert stats["stages"]["network"]["count"] == 2 and stats["stages"]["infer"]["count"] == 2
    local = Restorer(tiny_onnx)
    for name in ("000000.png", "000001.png"):
        got = cv2.imread(str(out / name))
        src = frames / f"{int(name[:6])}.png"
        assert max_diff(got, local.restore(cv2.imread(str(src)))) <= 1
    with pytest.raises(SystemExit):  # --server replaces --model
        main(["stream", "a", "b", "--server", server.grpc_url, "--model", "x"])


# ---------------------------------------------------------------- own servers

def test_sigterm_finishes_the_request_in_flight_and_exits_0(tiny_onnx, short_tmp):
    needs_serving()
    proc = ServerProcess(["--model", str(tiny_onnx)], short_tmp).start()
    try:
        big = frames(1, 360, 640, seed=9)[0]  # about a second of work for the tiny model on one thread
        with Restorer(f"{proc.grpc_url}?reconnect=0&timeout=60") as remote:
            future = remote.backend.restore_frames_async([big])
            time.sleep(0.3)
            code, seconds = proc.terminate(timeout=15)
            restored = future.result(timeout=30)[0]
        assert code == 0 and seconds < 10, (code, seconds, proc.output())
        assert max_diff(restored, Restorer(tiny_onnx).restore(big)) <= 1
        assert "finishing the requests in flight" in proc.output()
    finally:
        proc.kill()


@pytest.mark.slow
def test_server_killed_mid_stream_and_restarted_loses_no_frame(tiny_onnx, short_tmp):
    needs_serving()
    proc = ServerProcess(["--model", str(tiny_onnx)], short_tmp).start()
    n = 30
    inputs = frames(n, seed=3)
    written: list[tuple[int, np.ndarray]] = []
    eight = threading.Event()

    def sink(image, frame):
        written.append((frame.index, image))
        if len(written) == 8:
            eight.set()

    def source():
        for image in inputs:
            time.sleep(0.02)
            yield image

    try:
        with Restorer(f"{proc.grpc_url}?reconnect=90&timeout=20") as remote:
            stream = Stream(source(), sink, model=remote, policy="block")
            result: dict = {}
            runner = threading.Thread(target=lambda: result.update(stream.run()))
            runner.start()
            assert eight.wait(60), proc.output()
            proc.kill()  # the server and its tritonserver die mid-stream
            time.sleep(1.0)
            restarted = ServerProcess(["--model", str(tiny_onnx)], short_tmp,
                                      ports=[proc.http, proc.grpc, proc.metrics])
            proc = restarted.start()
            runner.join(timeout=120)
            assert not runner.is_alive()
            assert remote.backend.reconnects >= 1
        assert result["state"] == "finished" and result["dropped"] == 0
        assert [i for i, _ in written] == list(range(n))
        local = Restorer(tiny_onnx)
        assert all(max_diff(image, local.restore(inputs[i])) <= 1 for i, image in written)
    finally:
        proc.stop()


@pytest.mark.slow
def test_load_test_benchmark_runs(tiny_onnx, tmp_path, capsys):
    needs_serving()
    from mirnet.benchmarks import serve as load

    assert load.main(["--model", str(tiny_onnx), "--clients", "2", "--size", "64x48", "--seconds", "0.5",
                      "--warmup", "0.2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "serve.json").read_text())
    assert [(r["clients"], r["mode"]) for r in result["rows"]] == [(2, "local"), (2, "server")]
    assert all(r["fps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] and len(r["per_client_fps"]) == 2
               for r in result["rows"])
    assert result["rows"][1]["mean_batch"] >= 1 and result["machine"]["cores"] >= 1
    assert "| 2 |" in (tmp_path / "serve.md").read_text() and (tmp_path / "serve.png").stat().st_size > 1000
    assert "server fps" in capsys.readouterr().out


# ---------------------------------------------------------------- the README's serving lines

def test_readme_serving_lines_run(short_tmp, tmp_path, monkeypatch):
    """The README's `mirnet serve` line (on free ports), then its other lines (the remote stream
    against that server, the Triton repository export)."""
    needs_serving()
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if b.startswith("mirnet serve"))
    lines = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    serve_args = shlex.split(lines[0])[2:]
    proc = ServerProcess(serve_args, short_tmp).start()
    try:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "tests").symlink_to(REPO / "tests")
        for line in lines[1:]:
            args = shlex.split(line.replace("127.0.0.1:8001", f"127.0.0.1:{proc.grpc}"))[1:]
            assert main(args) == 0, line
        # tests/data holds one frame (its clean original is in clean/, not streamed)
        assert sorted(p.name for p in (tmp_path / "restored-remote").iterdir()) == ["000000.png"]
        assert (tmp_path / "triton-repo" / "denoise-lite" / "1" / "model.onnx").is_file()
        assert tritonserver_command("$PWD/triton-repo") in readme  # what `export triton` prints, documented
    finally:
        proc.stop()
