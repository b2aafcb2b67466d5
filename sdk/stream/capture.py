"""Live sources read with OpenCV's ``cv2.VideoCapture``: local cameras (V4L2) and RTSP."""
from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import urllib.parse

import numpy as np

from ..errors import SourceError
from .source import LiveSource

__all__ = ["CameraSource", "RtspSource", "rtsp_describe"]


class _CaptureSource(LiveSource):
    """Live sources read with ``cv2.VideoCapture`` (``_grab`` returns within the read timeout)."""

    _cap = None

    def _open_capture(self):
        raise NotImplementedError

    def _connect(self) -> None:
        import cv2

        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.uri}: cannot open it ({self._hint()})")
        self._cap = cap
        self.fps = self.fps or cap.get(cv2.CAP_PROP_FPS) or None

    def _hint(self) -> str:
        return "check the address and that the device or server is up"

    def _grab(self) -> np.ndarray:
        ok, image = self._cap.read()
        if not ok or image is None:
            raise ConnectionError("no frame from the capture")
        return image

    def _stream_time(self) -> float | None:
        """The frame's position in the stream (RTSP: from its RTP timestamps; V4L2: the buffer time)."""
        import cv2

        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) if self._cap is not None else 0.0
        return ms / 1000.0 if ms > 0 else None

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraSource(_CaptureSource):
    """A local camera by index (``0``) or device (``/dev/video0``), V4L2 on Linux."""

    def __init__(self, device: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, fourcc: str | None = None, **kwargs):
        super().__init__(str(device), **kwargs)
        self.device, self.width, self.height, self.want_fps, self.fourcc = device, width, height, fps, fourcc

    def _open_capture(self):
        import cv2

        api = cv2.CAP_V4L2 if os.name == "posix" and os.uname().sysname == "Linux" else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.device, api)
        if cap.isOpened():
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                                (cv2.CAP_PROP_FPS, self.want_fps)):
                if value:
                    cap.set(prop, float(value))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _hint(self) -> str:
        return ("no such camera, or it is busy or not permitted: list devices with "
                "`v4l2-ctl --list-devices` and check membership of the 'video' group")


class RtspSource(_CaptureSource):
    """RTSP through OpenCV's FFmpeg backend (open and read time out after ``timeout`` seconds;
    for RTSP over TCP set ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp``). When it cannot
    open the stream, the error says what the server answers (:func:`rtsp_describe`): OpenCV
    itself only says that it failed. Credentials in the URL are masked in messages."""

    def __init__(self, url: str, **kwargs):
        parts = urllib.parse.urlsplit(url)
        masked = parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}") if parts.username else parts
        super().__init__(urllib.parse.urlunsplit(masked), **kwargs)
        self.url = url

    def _open_capture(self):
        import cv2

        ms = int(self.timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _hint(self) -> str:
        return rtsp_describe(self.url, self.timeout)


def _digest(method: str, uri: str, user: str, password: str, challenge: str) -> str:
    """An RFC 2617 Digest ``Authorization`` value answering ``challenge`` (MD5, qop auth or none)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5(f"{user}:{params.get('realm', '')}:{password}"), md5(f"{method}:{uri}")
    fields = {"username": user, "realm": params.get("realm", ""), "nonce": params.get("nonce", ""), "uri": uri}
    if "auth" in params.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        fields.update(qop="auth", nc="00000001", cnonce=cnonce,
                      response=md5(f"{ha1}:{params.get('nonce', '')}:00000001:{cnonce}:auth:{ha2}"))
    else:
        fields["response"] = md5(f"{ha1}:{params.get('nonce', '')}:{ha2}")
    return "Digest " + ", ".join(f'{k}="{v}"' if k not in ("qop", "nc") else f"{k}={v}" for k, v in fields.items())


def _rtsp_request(sock: socket.socket, url: str, cseq: int, auth: str | None) -> tuple[int, str, dict[str, str]]:
    request = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\nUser-Agent: mirnet-edge\r\n"
    sock.sendall((request + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    m = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", head[0])
    if m is None:
        raise ConnectionError(f"not an RTSP answer: {head[0][:60]!r}")
    headers = {}
    for line in head[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), value.strip())
    length = int(headers.get("content-length", "0") or 0)
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    while len(body) < min(length, 65536):  # read the SDP off the connection before the next request
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(m.group(1)), m.group(2), headers


def rtsp_describe(url: str, timeout: float = 5.0) -> str:
    """Why an RTSP stream may not open, from what the server answers to ``DESCRIBE url`` (the request
    FFmpeg makes first; with the URL's credentials, Basic or Digest): a status such as
    ``404 Not Found`` or ``401 Unauthorized`` with what to do, or why no answer came."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return "check the address, credentials and that the server is up"
    try:
        port = parts.port or 554
    except ValueError:
        return f"{parts.netloc.rpartition('@')[2]!r} is not a valid host:port"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    where = f"{host}:{port}"
    plain = urllib.parse.urlunsplit(parts._replace(netloc=where if parts.port else host))  # no credentials
    user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            code, reason, headers = _rtsp_request(sock, plain, 1, None)
            challenge = headers.get("www-authenticate", "")
            if code == 401 and parts.username is not None:
                if challenge.lower().startswith("digest"):
                    auth = _digest("DESCRIBE", plain, user, password, challenge)
                else:
                    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                code, reason, headers = _rtsp_request(sock, plain, 2, auth)
    except socket.gaierror as exc:
        return f"cannot resolve the host {parts.hostname!r} ({exc.strerror or exc})"
    except ConnectionRefusedError:
        return f"connection refused: no RTSP server listens on {where}; check the address and that the server is up"
    except TimeoutError:
        return f"no answer from {where} within {timeout:g} s; check the address, a firewall, and that the server is up"
    except (OSError, ValueError) as exc:
        return f"the RTSP exchange with {where} failed ({exc})"
    status = f"the server answers DESCRIBE with {code} {reason}".rstrip()
    if code == 401:
        fix = ("the user name or password in the URL is wrong" if parts.username is not None
               else "give the user name and password in the URL: rtsp://USER:PASSWORD@host/path")
        return f"{status}: {fix}"
    if code == 404:
        return f"{status}: the server has no stream at {parts.path or '/'!r}; check the path"
    if 200 <= code < 300:
        return (f"{status}, so the stream exists, but OpenCV's FFmpeg backend could not open it (a codec it "
                f"lacks, or RTP over UDP blocked: try OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp)")
    return status
