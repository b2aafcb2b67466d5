"""MJPEG over HTTP(S): an incremental ``multipart/x-mixed-replace`` parser and the live source."""
from __future__ import annotations

import base64
import logging
import re
import urllib.parse
from collections import deque

import numpy as np

from ..errors import SourceError
from .source import LiveSource

log = logging.getLogger("mirnet.stream")

__all__ = ["jpeg_end", "MultipartParser", "HttpMjpegSource"]

_BOUNDARY_LINE = re.compile(rb"\s*--\S[^\r\n]*\r?\n")


def jpeg_end(data: bytes | bytearray, start: int = 0) -> int | None:
    """Index just past the end-of-image marker of the JPEG that starts at ``data[start]``, or None
    when ``data`` holds only part of it (or no JPEG starts there). Walks the marker segments, so an
    EXIF thumbnail's own end marker is not taken for the frame's end."""
    n = len(data)
    if n - start < 4 or data[start] != 0xFF or data[start + 1] != 0xD8:
        return None
    i = start + 2
    while i + 1 < n:
        if data[i] != 0xFF:
            return None  # not a marker where one must be: corrupt
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0xD9:
            return i + 2
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return None
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
        if m != 0xDA:
            continue
        # entropy-coded data after start-of-scan: the next FF not followed by 00, RSTn or FF
        while True:
            k = data.find(b"\xff", i)
            if k < 0 or k + 1 >= n:
                return None
            nxt = data[k + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                i = k + 2
            elif nxt == 0xFF:
                i = k + 1
            else:
                i = k
                break
    return None


class MultipartParser:
    """Incremental parser of a ``multipart/x-mixed-replace`` body (MJPEG over HTTP).

    ``feed(bytes)`` returns the complete part bodies found so far. A part ends after its
    ``Content-Length`` when the server sends one; otherwise a JPEG part ends at its end-of-image
    marker (found by walking the JPEG segments, so the frame is not held back until the next part
    arrives) and any other part at the next boundary. ``boundary`` may be given with or without
    its leading dashes, or None to take it from the first ``--`` line. ``closed`` becomes True at
    the closing boundary.
    """

    def __init__(self, boundary: str | bytes | None = None, *, max_part: int = 64 << 20):
        if isinstance(boundary, str):
            boundary = boundary.encode("latin-1")
        boundary = boundary.strip().strip(b'"').lstrip(b"-") if boundary else None
        self.delim = b"--" + boundary if boundary else None
        self.max_part = max_part
        self.closed = False
        self._buf = bytearray()
        self._state = "seek"
        self._length: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        parts: list[bytes] = []
        while not self.closed and self._step(parts):
            pass
        if len(self._buf) > self.max_part:
            raise SourceError(f"no complete part in {len(self._buf)} bytes: not an MJPEG stream, or parts "
                              f"larger than {self.max_part} bytes")
        return parts

    def _step(self, parts: list[bytes]) -> bool:
        buf = self._buf
        if self._state == "seek":
            if self.delim is None:
                m = re.search(rb"(?:^|\n)--([^\r\n]+)\r?\n", buf)
                if m is None:
                    return False
                self.delim = b"--" + m.group(1).strip().lstrip(b"-")
            p = buf.find(self.delim)
            if p < 0:
                keep = len(self.delim)
                if len(buf) > keep:
                    del buf[:len(buf) - keep]
                return False
            del buf[:p + len(self.delim)]
            self._state = "headers"
            return True
        if self._state == "headers":
            if buf[:2] == b"--":
                self.closed = True
                return False
            ends = [(i, n) for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
            if not ends:
                return False
            i, n = min(ends)
            header_lines = bytes(buf[:i]).decode("latin-1").splitlines()[1:]
            del buf[:i + n]
            self._length = None
            for line in header_lines:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length" and value.strip().isdigit():
                    self._length = int(value.strip())
            self._state = "body"
            return True
        # body
        if self._length is not None:
            if len(buf) < self._length:
                return False
            parts.append(bytes(buf[:self._length]))
            del buf[:self._length]
        else:
            end = jpeg_end(buf)
            if end is None:
                p = buf.find(self.delim)
                if p < 0:
                    return False
                end = p
                while end > 0 and buf[end - 1] in b"\r\n":
                    end -= 1
            parts.append(bytes(buf[:end]))
            del buf[:end]
        self._state = "seek"
        return True


class HttpMjpegSource(LiveSource):
    """MJPEG over HTTP(S): one long response of ``multipart/x-mixed-replace`` JPEG parts (the
    format of mjpg-streamer, motion, most IP cameras). A response with another Content-Type whose
    body starts with a ``--boundary`` line is read as multipart too (FFmpeg's ``mpjpeg`` muxer
    served by its HTTP server says ``application/octet-stream``). Credentials in the URL
    (``http://user:pass@host/...``) are sent as Basic authentication."""

    def __init__(self, url: str, **kwargs):
        super().__init__(url, **kwargs)
        parts = urllib.parse.urlsplit(url)
        self._headers = {"User-Agent": "mirnet-edge", "Accept": "multipart/x-mixed-replace, */*"}
        if parts.username is not None:
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            self.uri = urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))
        self.url = url
        self._resp = None
        self._parser: MultipartParser | None = None
        self._parts: deque[bytes] = deque()
        self.corrupt = 0

    def _connect(self) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url, headers=self._headers)
        try:
            resp = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{self.uri}: HTTP {exc.code} {exc.reason}") from exc
        ctype = resp.headers.get_content_type()
        self._parts.clear()
        if ctype.startswith("multipart/"):
            self._parser = MultipartParser(resp.headers.get_param("boundary"))
        else:  # sniff the body: a multipart stream whatever its Content-Type says
            head = b""
            while b"\n" not in head and len(head) < 1024:
                chunk = resp.read1(1024 - len(head))
                if not chunk:
                    break
                head += chunk
            if not _BOUNDARY_LINE.match(head):
                resp.close()
                raise SourceError(f"{self.uri}: the server sends Content-Type {ctype!r} and its body does not "
                                  f"start with a multipart boundary line (--BOUNDARY); an MJPEG stream is "
                                  f"multipart/x-mixed-replace (for other video over HTTP, try a gst:// pipeline)")
            self._parser = MultipartParser()
            self._parts.extend(self._parser.feed(head))
        self._resp = resp

    def _grab(self) -> np.ndarray:
        import cv2

        while True:
            while not self._parts:
                resp = self._resp
                if resp is None:
                    raise ConnectionError("closed")
                data = resp.read1(1 << 16)
                if not data:
                    raise ConnectionError("the server closed the stream")
                self._parts.extend(self._parser.feed(data))
                if self._parser.closed and not self._parts:
                    raise ConnectionError("the server ended the multipart stream")
            body = self._parts.popleft()
            image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) if body else None
            if image is not None:
                return image
            self.corrupt += 1
            log.warning("%s: skipped a part of %d bytes that is not a decodable image", self.uri, len(body))

    def _interrupt(self) -> None:
        resp = self._resp
        try:
            sock = resp.fp.raw._sock if resp is not None else None
            if sock is not None:
                import socket

                sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass

    def _disconnect(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            try:
                resp.close()
            except OSError:
                pass
