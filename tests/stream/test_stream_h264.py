"""What cameras send: an H.264 (4:2:0) recording goes through `mirnet stream` and `mirnet restore`
without losing a frame."""
import cv2
import numpy as np
import pytest

from mirnet.sdk.cli import main

av = pytest.importorskip("av")


def write_h264(path, frames=6, size=(48, 64)):
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(frames):
            img = np.full((*size, 3), 40 + 25 * i, np.uint8) + rng.integers(0, 20, (*size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_h264_camera_recording_streams_and_restores(tmp_path, tiny_onnx):
    clip = write_h264(tmp_path / "cam.mp4")
    assert main(["stream", str(clip), str(tmp_path / "out.mp4"), "--model", str(tiny_onnx), "--policy", "block",
                 "-q"]) == 0
    assert count_frames(tmp_path / "out.mp4") == 6
    assert main(["restore", str(clip), "-o", str(tmp_path / "restored"), "--model", str(tiny_onnx), "-q"]) == 0
    assert count_frames(tmp_path / "restored" / "cam.mp4") == 6
