"""Image and video files: the one image reader (and its suffix list), folder listing, the one
normalisation to float RGB, atomic writing, and the suffixes ``mirnet restore`` accepts.

Everything that reads images (restore, stream folders, eval sets, calibration, the quality gate,
training) goes through :func:`read_image`, which refuses an image larger than the pixel limit
(:func:`pixel_limit`) from its header, before decoding it; everything that wants float RGB in
[0, 1] through :func:`load_rgb` (or :func:`read_rgb` + :func:`mirnet.sdk.metrics.to_float`).
Every write is checked: a failed one raises :class:`~mirnet.sdk.errors.OutputError` naming the
cause and leaves nothing partial behind."""
from __future__ import annotations

import errno
import numbers
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .artifact import atomic_write_bytes
from .errors import ConfigError, InputError, OutputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v")
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}

#: Images larger than this many pixels are refused unless the limit is raised (2**26: 8192 x 8192,
#: about 67 MP, so a 64-megapixel camera's photos pass; decoded as 16-bit RGBA it is 512 MB).
DEFAULT_MAX_PIXELS = 2 ** 26
MAX_PIXELS_ENV = "MIRNET_MAX_PIXELS"


def _cv2():
    import cv2

    return cv2


def kind_of(path: str | os.PathLike) -> str | None:
    """``"image"``, ``"video"`` or None, by suffix."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (any of :data:`IMAGE_SUFFIXES`, any case; hidden files
    skipped), sorted by name. ConfigError if the folder is missing or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"image folder {str(folder)!r} {what} (resolved: {folder.resolve()}); "
                          f"give a folder of {'/'.join(IMAGE_SUFFIXES)} files")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"image folder {str(folder)!r} holds no image file; valid extensions: "
                          f"{', '.join(IMAGE_SUFFIXES)} (is the data in a sub-folder?)")
    return files


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit of :func:`read_image`: ``max_pixels`` when given, else the environment's
    ``MIRNET_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`. ConfigError unless an integer >= 1."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{MAX_PIXELS_ENV}={text!r}: must be an integer >= 1 (pixels per image, "
                              f"default {DEFAULT_MAX_PIXELS}); fix or unset the environment variable")
        return value
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise ConfigError(f"max_pixels={max_pixels!r}: must be an integer >= 1 (pixels per image), "
                          f"or None for {MAX_PIXELS_ENV} / the default {DEFAULT_MAX_PIXELS}")
    return int(max_pixels)


def _amount(pixels: int) -> str:
    return f"{pixels} pixels" if pixels < 10 ** 6 else f"{pixels / 1e6:.1f} MP"


def _check_pixels(path: str | os.PathLike, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise InputError(
            f"{path}: {width}x{height} image ({_amount(width * height)}) exceeds the pixel limit of "
            f"{_amount(limit)}; not decoded. If the image is trusted, raise the limit: --max-pixels N "
            f"(mirnet restore, stream, eval), {MAX_PIXELS_ENV}=N or read_image(path, max_pixels=N)")


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read keeping bit depth and alpha (OpenCV's IMREAD_UNCHANGED: BGR, BGRA, gray; 8 or 16 bit).

    An image of more than :func:`pixel_limit` (``max_pixels``) pixels is refused with an
    InputError: from its header, before anything is decoded, for the formats :func:`image_size`
    parses; other formats OpenCV recognises are decoded under OpenCV's own limit (the environment's
    ``OPENCV_IO_MAX_IMAGE_PIXELS`` when cv2 was imported, default 2**30) and then checked."""
    cv2 = _cv2()
    limit = pixel_limit(max_pixels)
    try:
        size = image_size(path)
        if size is not None:
            _check_pixels(path, *size, limit)
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    why = "corrupt, truncated or unsupported format"
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # e.g. beyond OPENCV_IO_MAX_IMAGE_PIXELS
        image, why = None, f"OpenCV: {getattr(exc, 'err', exc)}"
    if image is None:
        raise InputError(f"{path}: not a readable image ({why})")
    _check_pixels(path, image.shape[1], image.shape[0], limit)
    return image


# ------------------------------------------------------------------------------------ image headers
# Width and height from the first bytes of a file, so that a decompression bomb (a small file that
# decodes to gigabytes) is refused before it is decoded. Each parser gets the open file and its
# first 64 bytes and returns (width, height), or None when the header is not what it expects.

def _png(fh: BinaryIO, head: bytes) -> tuple[int, int] | None:
    return struct.unpack(">II", head[16:24]) if head[12:16] == b"IHDR" else None


def _gif(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", head[6:10])


def _bmp(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # negative height: stored top-down


def _webp(fh: BinaryIO, head: bytes) -> tuple[int, int] | None:
    if head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", head[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _tiff(fh: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """The first image (IFD) of a TIFF or BigTIFF file: tags 256 (width) and 257 (height)."""
    e = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(e + "H", head[2:4])[0] == 43
    offset = struct.unpack(e + "Q", head[8:16])[0] if big else struct.unpack(e + "I", head[4:8])[0]
    if offset >= os.fstat(fh.fileno()).st_size:
        return None
    fh.seek(offset)
    count_fmt, entry_size = ("Q", 20) if big else ("H", 12)
    count = struct.unpack(e + count_fmt, fh.read(struct.calcsize(count_fmt)))[0]
    values = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    found: dict[int, int] = {}
    for _ in range(count):
        entry = fh.read(entry_size)
        tag, kind = struct.unpack(e + "HH", entry[:4])
        if tag > 257:  # tags are sorted: both would have come
            break
        if tag in (256, 257) and kind in values:
            start = 12 if big else 8
            found[tag] = struct.unpack(e + values[kind], entry[start:start + struct.calcsize(values[kind])])[0]
    return (found[256], found[257]) if len(found) == 2 else None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(fh: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the frame header (SOFn), skipping EXIF and other segments."""
    fh.seek(2)
    for _ in range(2 ** 16):  # real files have tens of segments before the frame header
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        m = marker[1]
        for _ in range(64):  # fill bytes: 0xFF repeated before the marker code
            if m != 0xFF:
                break
            m = fh.read(1)[0]
        if m in (0x01, 0xD8) or 0xD0 <= m <= 0xD7:  # segments without a length
            continue
        if m in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length = struct.unpack(">H", fh.read(2))[0]
        if length < 2:
            return None
        if m in _SOF:
            height, width = struct.unpack(">HH", fh.read(5)[1:5])
            return (width, height) if height else None  # height 0: defined later (DNL)
        fh.seek(length - 2, os.SEEK_CUR)
    return None


def _pnm(fh: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """PBM/PGM/PPM (P1-P6), PFM (PF, Pf): width and height are the first two numbers after the
    magic, comments (#) aside; PAM (P7): the WIDTH and HEIGHT header lines."""
    text = (head + fh.read(4096)).decode("latin-1")
    if text[:2] == "P7":
        fields = dict(line.split(None, 1) for line in text.split("\n")[1:] if len(line.split(None, 1)) == 2)
        return int(fields["WIDTH"]), int(fields["HEIGHT"])
    tokens = " ".join(line.split("#", 1)[0] for line in text[2:].splitlines()).split()
    return int(tokens[0]), int(tokens[1])


_HEADERS = [((b"\x89PNG\r\n\x1a\n",), _png), ((b"\xff\xd8",), _jpeg), ((b"BM",), _bmp),
            ((b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff), ((b"RIFF",), _webp),
            ((b"GIF87a", b"GIF89a"), _gif),
            (tuple(f"P{c}".encode() for c in "1234567Ff"), _pnm)]


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of an image file read from its header alone, nothing decoded: PNG,
    JPEG, BMP, TIFF and BigTIFF, WebP, GIF, and PBM/PGM/PPM/PAM/PFM, recognised by their content
    (not the suffix). None for other formats and for headers too broken to parse. OSError when the
    file cannot be read."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        for magics, parse in _HEADERS:
            if head.startswith(magics):
                try:
                    return parse(fh, head)
                except (struct.error, ValueError, KeyError, IndexError, OverflowError):
                    return None
    return None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``H x W x 3`` RGB in its integer dtype (uint8 or uint16): gray replicated to
    three channels, alpha dropped, float files stored at 16 bits (see :func:`mirnet.sdk.ops.to_rgb3`)."""
    from .ops.formats import to_rgb3

    try:
        rgb3, _ = to_rgb3(read_image(path))
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return np.ascontiguousarray(rgb3[:, :, ::-1])


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as float32 ``H x W x 3`` RGB in [0, 1] (:func:`read_rgb`, then 8-bit / 255,
    16-bit / 65535)."""
    from .metrics import to_float

    return to_float(read_rgb(path))


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by suffix and write atomically (JPEG quality 95; 16-bit kept where the format can)."""
    cv2 = _cv2()
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode a {image.dtype} {image.shape} image as {path.suffix}")
    try:
        atomic_write_bytes(path, buf.tobytes())
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({exc.strerror or exc}); nothing partial was left "
                          f"behind") from exc


def _write_failure(folder: Path) -> str:
    """Why a write into ``folder`` failed, as far as its file system tells (OpenCV's video writer
    reports that a write failed, never why)."""
    try:
        fs = os.statvfs(folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    if fs.f_bavail * fs.f_frsize < 2 ** 20:
        return os.strerror(errno.ENOSPC)
    return "OpenCV's video writer gives no cause; check the disk, its quota and the codec"


class VideoWriter:
    """Writes to a hidden temporary file and renames it on ``close()``: an interrupted run never
    leaves a truncated file under the final name (``abort()`` deletes the partial file).

    Every write is checked: a frame the encoder or the disk refused raises OutputError at once
    (OpenCV >= 5 reports it; older versions do not), and ``close()`` publishes the file only when
    its container holds every frame written (so a trailer lost on a full disk is caught too)."""

    def __init__(self, path: str | os.PathLike, fps: float, size_wh: tuple[int, int]):
        cv2 = _cv2()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise InputError(f"{path}: cannot write video as {suffix!r}; use one of {sorted(_FOURCC)}")
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*_FOURCC[suffix]), fps, size_wh)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise OutputError(f"{path}: OpenCV cannot open a {suffix} video writer here "
                              f"({_write_failure(self._tmp.parent)})")
        self.size_wh = size_wh
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size_wh:
            raise InputError(f"{self.path}: frame {frame.shape[1]}x{frame.shape[0]} differs from the "
                             f"video size {self.size_wh[0]}x{self.size_wh[1]}")
        if self._writer.write(frame) is False:  # OpenCV < 5 returns None whatever happened
            raise OutputError(f"{self.path}: frame {self.frames + 1} could not be written "
                              f"({_write_failure(self._tmp.parent)})")
        self.frames += 1

    def _frames_on_disk(self) -> int:
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(self._tmp))
        try:
            return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()

    def close(self) -> None:
        """Finalise the file and rename it into place; OutputError (and the partial file deleted)
        when the finished container does not hold every frame written."""
        self._writer.release()
        if self.frames and self._frames_on_disk() < self.frames:
            cause = _write_failure(self._tmp.parent)
            self._tmp.unlink(missing_ok=True)
            raise OutputError(f"{self.path}: the video file is incomplete after {self.frames} frames "
                              f"({cause}); it was not saved")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)


def quiet_opencv() -> None:
    """Silence OpenCV's own log lines (``[ WARN:0@...]``, ``[ERROR:0@...]``) and FFmpeg's
    (``[mov,mp4,... @ 0x...]``), which would come before, and say less than, our errors. For
    processes that own their output (the ``mirnet`` command). ``OPENCV_LOG_LEVEL`` and
    ``OPENCV_FFMPEG_LOGLEVEL`` set in the environment win."""
    cv2 = _cv2()
    if "OPENCV_LOG_LEVEL" not in os.environ:
        logging = getattr(cv2.utils, "logging", None)  # OpenCV 5; 4.x has cv2.setLogLevel
        if logging is not None:
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        else:
            cv2.setLogLevel(0)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used
