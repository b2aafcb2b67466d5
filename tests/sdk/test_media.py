"""mirnet.sdk.media: the pixel limit read from image headers before decoding, and writes that fail
(a full disk) raising OutputError with nothing partial left behind."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from mirnet.sdk import media
from mirnet.sdk.errors import ConfigError, InputError, OutputError

cv2 = pytest.importorskip("cv2")


def png_header_only(path, w: int, h: int):
    """A tiny PNG whose header claims ``w`` x ``h`` (the data would decode to far less, or fail)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def noise(h: int, w: int, c: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    maxv = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, maxv + 1, (h, w, c) if c else (h, w)).astype(dtype)


ENCODED = [(".png", 3, np.uint8), (".png", 4, np.uint16), (".jpg", 3, np.uint8), (".jpeg", 0, np.uint8),
           (".bmp", 3, np.uint8), (".tif", 3, np.uint16), (".tiff", 0, np.uint8), (".webp", 3, np.uint8),
           (".ppm", 3, np.uint8), (".pgm", 0, np.uint16), (".pnm", 0, np.uint8), (".pfm", 3, np.float32)]


@pytest.mark.parametrize("suffix,channels,dtype", ENCODED, ids=lambda v: str(v))
def test_header_size_of_every_format(tmp_path, suffix, channels, dtype):
    image = noise(23, 37, channels, np.uint16 if dtype == np.float32 else dtype)
    if dtype == np.float32:
        image = image.astype(np.float32) / 65535
    ok, buf = cv2.imencode(suffix, image)
    assert ok
    path = tmp_path / f"x{suffix}"
    path.write_bytes(buf.tobytes())
    assert media.image_size(path) == (37, 23)
    assert media.read_image(path).shape[:2] == (23, 37)


def test_header_size_of_lossless_webp_jpeg_with_exif_and_big_endian_tiff(tmp_path):
    ok, buf = cv2.imencode(".webp", noise(23, 37), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok and buf.tobytes()[12:16] == b"VP8L"  # lossless
    (tmp_path / "l.webp").write_bytes(buf.tobytes())
    ok, buf = cv2.imencode(".jpg", noise(23, 37))
    assert ok
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 70000 // 2) + b"E" * (70000 // 2)  # pushes SOF far out
    (tmp_path / "exif.jpg").write_bytes(buf.tobytes()[:2] + app1 + buf.tobytes()[2:])
    ifd = struct.pack(">H", 2) + struct.pack(">HHII", 256, 4, 1, 37) + struct.pack(">HHIHH", 257, 3, 1, 23, 0)
    (tmp_path / "mm.tif").write_bytes(b"MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0")
    (tmp_path / "c.pgm").write_bytes(b"P5\n# a comment\n37 # width\n23\n255\n" + bytes(37 * 23))
    for name in ("l.webp", "exif.jpg", "mm.tif", "c.pgm"):
        assert media.image_size(tmp_path / name) == (37, 23), name
    assert media.read_image(tmp_path / "exif.jpg").shape == (23, 37, 3)


MAGICS = [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"\xff\xd8", b"\xff\xd8\xff\xe0\0\0", b"BM", b"II*\0",
          b"MM\0*", b"II+\0", b"MM\0+", b"RIFF\0\0\0\0WEBPVP8 ", b"RIFF\0\0\0\0WEBPVP8L", b"GIF89a",
          b"P5", b"P7\nWIDTH", b"PF"]


def test_header_parsers_survive_garbage(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "junk"
    for magic in MAGICS:
        for n in (0, 1, 7, 30, 64, 300, 5000):
            path.write_bytes(magic + rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            size = media.image_size(path)
            assert size is None or (len(size) == 2 and all(isinstance(v, int) for v in size))


def test_pixel_limit_refuses_from_the_header_before_decoding(tmp_path, monkeypatch):
    bomb = png_header_only(tmp_path / "bomb.png", 60000, 60000)
    assert bomb.stat().st_size < 200
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(a))
    with pytest.raises(InputError) as err:
        media.read_image(bomb)
    text = str(err.value)
    assert str(bomb) in text and "60000x60000" in text and "3600.0 MP" in text
    assert "--max-pixels" in text and "MIRNET_MAX_PIXELS" in text
    assert decoded == []  # refused from the header: nothing was decoded


def test_pixel_limit_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), noise(30, 40))
    monkeypatch.delenv("MIRNET_MAX_PIXELS", raising=False)
    assert media.pixel_limit() == media.DEFAULT_MAX_PIXELS == 2 ** 26
    assert media.read_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(InputError, match=r"40x30 .*limit of 1199 pixels"):
        media.read_image(path, max_pixels=1199)
    monkeypatch.setenv("MIRNET_MAX_PIXELS", "1000")
    with pytest.raises(InputError, match="40x30"):
        media.read_rgb(path)
    assert media.read_image(path, max_pixels=5000).shape == (30, 40, 3)  # the argument wins
    for bad in ("lots", "0", "-5", "1.5"):
        monkeypatch.setenv("MIRNET_MAX_PIXELS", bad)
        with pytest.raises(ConfigError, match=rf"MIRNET_MAX_PIXELS={bad!r}.*integer >= 1"):
            media.read_image(path)
    with pytest.raises(ConfigError, match="max_pixels=0"):
        media.read_image(path, max_pixels=0)


def test_formats_without_a_parsed_header_are_checked_after_decoding(tmp_path):
    ok, buf = cv2.imencode(".hdr", noise(30, 40).astype(np.float32) / 255)  # Radiance HDR
    assert ok
    path = tmp_path / "really-hdr.png"
    path.write_bytes(buf.tobytes())
    assert media.image_size(path) is None
    assert media.read_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(InputError, match="40x30"):
        media.read_image(path, max_pixels=1000)


def test_decoder_errors_are_input_errors(tmp_path):
    lying = png_header_only(tmp_path / "lying.png", 3000, 2000)  # allowed size, data far too short
    with pytest.raises(InputError, match="lying.png: not a readable image"):
        media.read_image(lying)
    truncated = tmp_path / "t.png"
    truncated.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match="t.png: not a readable image"):
        media.read_image(truncated)


# ---------------------------------------------------------------------------- full disk


def test_write_image_on_a_full_disk(small_disk):
    ok_path = small_disk / "small.png"
    media.write_image(ok_path, noise(8, 8))
    with pytest.raises(OutputError, match=r"big.png: cannot write it \(No space left on device\)"):
        media.write_image(small_disk / "big.png", noise(400, 400))  # ~480 kB of noise
    assert sorted(p.name for p in small_disk.iterdir()) == ["small.png"]
    assert issubclass(OutputError, OSError)


def test_video_writer_stops_at_the_first_failed_write(small_disk):
    writer = media.VideoWriter(small_disk / "v.mp4", 25, (160, 120))
    with pytest.raises(OutputError, match=r"v.mp4: frame \d+ could not be written \(No space left on device\)"):
        for i in range(200):
            writer.write(noise(120, 160, seed=i))
    assert 1 < writer.frames < 200
    writer.abort()
    assert list(small_disk.iterdir()) == []


class _SilentWriter:
    """OpenCV < 5: ``VideoWriter.write`` returns None whatever happened."""

    def __init__(self, writer):
        self._writer = writer

    def write(self, frame):
        self._writer.write(frame)

    def release(self):
        self._writer.release()


def test_video_writer_checks_the_file_before_publishing_it(small_disk):
    writer = media.VideoWriter(small_disk / "v.mp4", 25, (160, 120))
    writer._writer = _SilentWriter(writer._writer)
    for i in range(60):
        writer.write(noise(120, 160, seed=i))
    with pytest.raises(OutputError, match=r"v.mp4: the video file is incomplete .*No space left on device"):
        writer.close()
    assert list(small_disk.iterdir()) == []  # neither the output nor the partial file


def test_video_writer_publishes_complete_files(tmp_path):
    writer = media.VideoWriter(tmp_path / "v.mp4", 25, (48, 32))
    writer._writer = _SilentWriter(writer._writer)
    for i in range(5):
        writer.write(noise(32, 48, seed=i))
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    assert cv2.VideoCapture(str(tmp_path / "v.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 5
