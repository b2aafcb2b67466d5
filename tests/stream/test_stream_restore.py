"""``restore_video``: a video file restored through the Stream pipeline (policy block), all or
nothing: the output appears under its name only when every frame was restored."""
from __future__ import annotations

import time

import numpy as np
import pytest
from streamkit import IdentityBackend, write_video

from mirnet.sdk import InputError, Restorer, SourceError, Stream
from mirnet.sdk.stream.restore import restore_video

cv2 = pytest.importorskip("cv2")


def decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class ClosableIdentity(IdentityBackend):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_same_frames_as_stream_block(tmp_path, tiny_onnx):
    src = write_video(tmp_path / "in.avi", 7)
    (tmp_path / "out").mkdir()
    calls = []
    with Restorer(tiny_onnx) as restorer:
        stats = restore_video(restorer, src, tmp_path / "out" / "a.avi", progress=lambda *a: calls.append(a))
        Stream(src, tmp_path / "out" / "b.avi", model=restorer, policy="block").run()
        first = restorer.restore(decode(src)[0])  # the restorer is still open
    a, b = decode(tmp_path / "out" / "a.avi"), decode(tmp_path / "out" / "b.avi")
    assert len(a) == len(b) == 7 and stats["frames"] == 7 and stats["dropped"] == 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.abs(a[0].astype(int) - decode(src)[0].astype(int)).mean() > 2  # restored, not copied
    assert np.abs(a[0].astype(int) - first.astype(int)).mean() < 3  # restore's numbers (MJPG is lossy)
    assert calls == [(i, 7) for i in range(1, 8)]  # (done, total from the header) per frame
    assert cv2.VideoCapture(str(tmp_path / "out" / "a.avi")).get(cv2.CAP_PROP_FPS) == pytest.approx(25)
    assert files(tmp_path / "out") == ["a.avi", "b.avi"]


def test_restorer_left_open_for_the_next_file(tmp_path):
    backend = ClosableIdentity()
    restorer = Restorer(backend)
    for name in ("a", "b"):
        src = write_video(tmp_path / f"{name}.avi", 3)
        restore_video(restorer, src, tmp_path / f"{name}.out.avi")
    assert not backend.closed and len(backend.batches) == 6
    assert len(decode(tmp_path / "b.out.avi")) == 3


def test_partial_file_until_done_and_removed_on_failure(tmp_path):
    src = write_video(tmp_path / "in.avi", 8)
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "clip.avi"
    written = []
    seen = {}

    def progress(done, total):
        written.append(done)
        seen[done] = files(out)

    class FailsOnFourth(IdentityBackend):
        def infer(self, batch):
            if len(self.batches) == 3:  # once frames 0-2 are written: a failure after output began
                deadline = time.monotonic() + 10
                while len(written) < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                raise RuntimeError("accelerator fell over")
            return super().infer(batch)

    with pytest.raises(RuntimeError, match="accelerator fell over"):
        restore_video(Restorer(FailsOnFourth()), src, dst, progress=progress)
    assert written == [1, 2, 3]
    assert seen[1] == [".clip.partial.avi"]  # written under a hidden name while running
    assert files(out) == []  # neither the output nor the partial file is left


def test_interrupt_removes_the_partial_file(tmp_path):
    src = write_video(tmp_path / "in.avi", 8)
    dst = tmp_path / "out" / "clip.avi"
    dst.parent.mkdir()

    def progress(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(Restorer(IdentityBackend()), src, dst, progress=progress)
    assert files(dst.parent) == []


def test_unreadable_and_empty_videos(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    writer.release()  # a valid container holding no frame
    with pytest.raises(InputError, match=rf"{empty}: video holds no decodable frames"):
        restore_video(Restorer(IdentityBackend()), empty, out / "empty.avi")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="not a readable video"):
        restore_video(Restorer(IdentityBackend()), bad, out / "bad.mp4")
    assert issubclass(SourceError, InputError) and files(out) == []


def test_existing_output_is_replaced_only_on_success(tmp_path):
    src = write_video(tmp_path / "in.avi", 4)
    dst = tmp_path / "out.avi"
    dst.write_bytes(b"old")

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(Restorer(IdentityBackend()), src, dst, progress=interrupt)
    assert dst.read_bytes() == b"old"
    restore_video(Restorer(IdentityBackend()), src, dst)
    assert len(decode(dst)) == 4
