"""A small threaded HTTP file server with byte ranges, for loopback tests and benchmarks.

Python's ``http.server`` ignores ``Range``; GDAL's ``/vsicurl/`` needs it. This server
answers ``GET``/``HEAD`` with single and multiple byte ranges, counts the bytes it sends and
the requests it serves, and can be told to answer chosen paths with an error status (404,
500, ...), so tests can exercise what a flaky object store does.

It can also play the access rules of providers (:meth:`RangeServer.configure`):

- ``require_token``: like Azure blob storage behind Planetary Computer, every file read needs
  a valid, unexpired SAS token (``?se=...&sig=...``) issued for its container (the first path
  segment) by the server's token endpoint (``GET /_token/<account>/<container>`` answers
  ``{"token": ..., "msft:expiry": ...}``; :attr:`RangeServer.token_endpoint`); else HTTP 403.
  Tokens live ``token_ttl_s`` seconds while the answer claims ``claimed_ttl_s`` (a clock skew
  or an early revocation, as a long run meets them); :meth:`RangeServer.expire_tokens` ends
  every token issued so far.
- ``require_payer``: like a requester-pays S3 bucket, reads without the header
  ``x-amz-request-payer: requester`` get HTTP 403 with S3's ``AccessDenied`` XML.
- requests that carry an ``Authorization`` header are counted (:attr:`RangeServer.signed`).
- ``latency_s``: every file request waits this long before answering, like the first-byte
  latency of object storage (requests are answered concurrently).

A GeoTIFF can be served moved: ``/_shift/<dx>/<dy>/<path>`` (:meth:`RangeServer.shifted_url`)
answers the file's bytes with its ModelTiepoint moved by (dx, dy) CRS units, so a catalog of
many items at many places can point at a few real COGs (the scale benchmark does).

It runs in a child process (``python -m terracorpus.pipelines.testing.httpserve ROOT``): GDAL calls made through rasterio hold the GIL while they wait
for the network, so a server thread in the reading process would never get to answer.
The parent reads the counters and sets failures through a small control path
(``/_rangeserver/...``) that is not counted.

    with RangeServer(directory) as server:
        href = server.url("scene/B04.tif")
        ...
        print(server.bytes_sent)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import struct
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from urllib.request import urlopen

_RANGE = re.compile(r"(\d*)-(\d*)")
_CONTROL = "_rangeserver/"
_SHIFT = "_shift/"
_TIEPOINT = 33922  # GeoTIFF ModelTiepointTag: (I, J, K, X, Y, Z) doubles
_TOKEN = "_token/"
_S3_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm and delayed ACKs
    # every keep-alive response would then wait ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        url = urlsplit(self.path)
        rel = unquote(url.path).lstrip("/")
        if rel.startswith(_CONTROL):
            self._control(rel[len(_CONTROL) :], parse_qs(url.query))
            return
        if rel.startswith(_TOKEN):
            self._send_json(self.server.issue_token(rel[len(_TOKEN) :]))
            return
        self.server.count_request(rel, signed="Authorization" in self.headers)
        status = self.server.forced_status(rel)
        if status is None:
            status = self.server.access_status(rel, url.query, self.headers)
        if status == 403 and self.server.require_payer:
            self._send_error(status, body, _S3_DENIED)
            return
        shift, rel = _shift_of(rel)
        target = (self.server.root / rel).resolve()
        if status is None and (self.server.root not in target.parents or not target.is_file()):
            status = 404
        if status is None and shift is not None and _tiepoint_offset(target) is None:
            status = 404  # only a GeoTIFF with a tiepoint can be moved
        if status is not None:
            self._send_error(status, body)
            return
        if self.server.latency_s > 0:
            time.sleep(self.server.latency_s)
        size = target.stat().st_size
        ranges = _parse_ranges(self.headers.get("Range"), size)
        if ranges == []:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with target.open("rb") as raw:
            f = raw if shift is None else _Shifted(raw, target, shift)
            if ranges is None:
                self._send_whole(f, size, body)
            elif len(ranges) == 1:
                self._send_single(f, size, ranges[0], body)
            else:
                self._send_multipart(f, size, ranges, body)

    def _control(self, command: str, query: dict[str, list[str]]) -> None:
        srv = self.server
        with srv._lock:
            if command == "fail":
                srv.errors[query["path"][0]] = int(query["status"][0])
            elif command == "reset":
                srv.bytes_sent = 0
                srv.requests.clear()
            elif command == "configure":
                srv.configure({k: v[0] for k, v in query.items()})
            elif command == "expire_tokens":
                srv.tokens = {sig: (c, 0.0) for sig, (c, _) in srv.tokens.items()}
            payload = {
                "bytes_sent": srv.bytes_sent,
                "requests": srv.requests,
                "token_requests": srv.token_requests,
                "signed": srv.signed,
                "expired": srv.expired,
            }
        self._send_json(payload)

    def _send_json(self, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_error(self, status: int, body: bool, payload: bytes | None = None) -> None:
        payload = payload or f"status {status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self._write(payload)

    def _send_whole(self, f: Any, size: int, body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if body:
            self._write(f.read())

    def _send_single(self, f: Any, size: int, rng: tuple[int, int], body: bool) -> None:
        start, end = rng
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            f.seek(start)
            self._write(f.read(end - start + 1))

    def _send_multipart(self, f: Any, size: int, ranges: list[tuple[int, int]], body: bool) -> None:
        boundary = uuid.uuid4().hex
        parts = []
        for start, end in ranges:
            f.seek(start)
            head = (
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n"
            ).encode()
            parts.append(head + f.read(end - start + 1) + b"\r\n")
        payload = b"".join(parts) + f"--{boundary}--\r\n".encode()
        self.send_response(206)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self._write(payload)

    def _write(self, payload: bytes) -> None:
        self.wfile.write(payload)
        self.server.count_bytes(len(payload))


def _shift_of(rel: str) -> tuple[tuple[float, float] | None, str]:
    """``_shift/<dx>/<dy>/<path>`` -> ((dx, dy), path); other paths -> (None, path)."""
    if not rel.startswith(_SHIFT):
        return None, rel
    try:
        dx, dy, path = rel[len(_SHIFT) :].split("/", 2)
        return (float(dx), float(dy)), path
    except ValueError:
        return None, rel  # not a shift: served (or refused) as the path it is


_TIEPOINTS: dict[Path, int | None] = {}


def _tiepoint_offset(path: Path) -> int | None:
    """Byte offset of the X of the first tiepoint in a classic little-endian GeoTIFF."""
    if path not in _TIEPOINTS:
        _TIEPOINTS[path] = _find_tiepoint(path)
    return _TIEPOINTS[path]


def _find_tiepoint(path: Path) -> int | None:
    with path.open("rb") as f:
        head = f.read(8)
        if head[:4] != b"II*\0":
            return None
        (ifd,) = struct.unpack("<I", head[4:8])
        f.seek(ifd)
        (n,) = struct.unpack("<H", f.read(2))
        entries = f.read(12 * n)
    for i in range(n):
        tag, typ, count, value = struct.unpack("<HHII", entries[12 * i : 12 * i + 12])
        if tag == _TIEPOINT and typ == 12 and count >= 6:
            return int(value) + 24
    return None


class _Shifted:
    """A file whose tiepoint X, Y read moved by (dx, dy)."""

    def __init__(self, f: Any, path: Path, shift: tuple[float, float]) -> None:
        self._f = f
        self._at = _tiepoint_offset(path) or 0
        f.seek(self._at)
        x, y = struct.unpack("<dd", f.read(16))
        self._patch = struct.pack("<dd", x + shift[0], y + shift[1])
        self.seek(0)

    def seek(self, pos: int) -> None:
        self._pos = pos
        self._f.seek(pos)

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        data = bytearray(self._f.read(n))
        self._pos = start + len(data)
        lo, hi = max(start, self._at), min(self._pos, self._at + 16)
        if lo < hi:
            data[lo - start : hi - start] = self._patch[lo - self._at : hi - self._at]
        return bytes(data)


def _parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Inclusive (start, end) pairs; None for no/invalid header (whole file), [] if unsatisfiable."""
    if not header or not header.startswith("bytes="):
        return None
    out = []
    for spec in header[len("bytes=") :].split(","):
        m = _RANGE.fullmatch(spec.strip())
        if not m or (not m.group(1) and not m.group(2)):
            return None
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(m.group(2))), size - 1
        if start <= end and start < size:
            out.append((start, end))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (GDAL cancels range reads it no longer needs) is not an error
        worth a traceback on the server's stderr; anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def __init__(self, root: Path, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.root = root
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.require_token = False
        self.require_payer = False
        self.token_ttl_s = 3600.0
        self.claimed_ttl_s = 3600.0
        self.latency_s = 0.0
        self.tokens: dict[str, tuple[str, float]] = {}  # sig -> (container, expires at)
        self.token_requests = 0
        self.signed = 0
        self.expired = 0  # reads refused because their token had ended

    def configure(self, options: dict[str, str]) -> None:
        """Access rules (called with the lock held)."""
        for flag in ("require_token", "require_payer"):
            if flag in options:
                setattr(self, flag, options[flag] == "1")
        for ttl in ("token_ttl_s", "claimed_ttl_s", "latency_s"):
            if ttl in options:
                setattr(self, ttl, float(options[ttl]))

    def issue_token(self, path: str) -> dict[str, Any]:
        """A SAS-like token for ``<account>/<container>``, as Planetary Computer's endpoint."""
        container = path.rstrip("/").rsplit("/", 1)[-1]
        sig = secrets.token_hex(16)
        now = time.time()
        with self._lock:
            self.token_requests += 1
            self.tokens[sig] = (container, now + self.token_ttl_s)
            claimed = datetime.fromtimestamp(now + self.claimed_ttl_s, UTC)
        expiry = claimed.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"msft:expiry": expiry, "token": f"se={expiry}&sp=rl&sv=2021-06-08&sig={sig}"}

    def access_status(self, rel: str, query: str, headers: Any) -> int | None:
        """403 if the request breaks an access rule, else None."""
        with self._lock:
            if self.require_payer and headers.get("x-amz-request-payer") != "requester":
                return 403
            if not self.require_token:
                return None
            sig = parse_qs(query).get("sig", [""])[0]
            container, expires = self.tokens.get(sig, ("", 0.0))
        if container != rel.split("/", 1)[0]:
            return 403
        if expires < time.time():
            with self._lock:
                self.expired += 1
            return 403
        return None

    def count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def count_request(self, rel: str, signed: bool = False) -> None:
        with self._lock:
            self.requests[rel] = self.requests.get(rel, 0) + 1
            self.signed += signed

    def forced_status(self, rel: str) -> int | None:
        with self._lock:
            return self.errors.get(rel)


def main(argv: list[str] | None = None) -> None:
    """``python -m terracorpus.pipelines.testing.httpserve ROOT [HOST] [PORT]``: serve ROOT.

    Prints ``host port`` on the first line of stdout once listening.
    """
    args = sys.argv[1:] if argv is None else argv
    host = args[1] if len(args) > 1 else "127.0.0.1"
    port = int(args[2]) if len(args) > 2 else 0
    server = _Server(Path(args[0]), (host, port))
    print(*server.server_address[:2], flush=True)
    server.serve_forever()


class RangeServer:
    """Serve ``root`` on ``host:port`` (port 0: any free port) from a child process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.root = Path(root).resolve()
        self._host, self._port = host, port
        self._process: subprocess.Popen[str] | None = None
        self._address: tuple[str, int] | None = None

    @property
    def base_url(self) -> str:
        if self._address is None:
            raise RuntimeError("the range server is not started; call start() first")
        return f"http://{self._address[0]}:{self._address[1]}"

    def url(self, path: str | os.PathLike[str]) -> str:
        """The URL of a file given relative to ``root`` (or as an absolute path under it)."""
        p = Path(path)
        rel = p.resolve().relative_to(self.root) if p.is_absolute() else p
        return f"{self.base_url}/{quote(rel.as_posix())}"

    def shifted_url(self, path: str | os.PathLike[str], dx: float, dy: float) -> str:
        """The URL of a GeoTIFF under ``root`` served moved by (dx, dy) in its CRS."""
        rel = self.url(path)[len(self.base_url) + 1 :]
        return f"{self.base_url}/{_SHIFT}{dx:g}/{dy:g}/{rel}"

    def _control(self, command: str, **query: Any) -> dict[str, Any]:
        qs = "&".join(f"{k}={quote(str(v))}" for k, v in query.items())
        with urlopen(f"{self.base_url}/{_CONTROL}{command}?{qs}", timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
        return data

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent so far (file content and multipart framing)."""
        return int(self._control("stats")["bytes_sent"])

    @property
    def requests(self) -> dict[str, int]:
        """Requests served so far, per path relative to ``root``."""
        return dict(self._control("stats")["requests"])

    @property
    def token_requests(self) -> int:
        """Tokens issued by the token endpoint so far."""
        return int(self._control("stats")["token_requests"])

    @property
    def signed(self) -> int:
        """File requests that carried an ``Authorization`` header (a signed S3 request)."""
        return int(self._control("stats")["signed"])

    @property
    def expired(self) -> int:
        """File requests refused because their token had ended."""
        return int(self._control("stats")["expired"])

    @property
    def token_endpoint(self) -> str:
        """The SAS token endpoint (``<endpoint>/<account>/<container>``)."""
        return f"{self.base_url}/{_TOKEN.rstrip('/')}"

    def configure(
        self,
        *,
        require_token: bool | None = None,
        require_payer: bool | None = None,
        token_ttl_s: float | None = None,
        claimed_ttl_s: float | None = None,
        latency_s: float | None = None,
    ) -> None:
        """Set the access rules and the latency (see the module docstring); None leaves a
        setting as it is."""
        options = {
            "require_token": require_token,
            "require_payer": require_payer,
            "token_ttl_s": token_ttl_s,
            "claimed_ttl_s": claimed_ttl_s,
            "latency_s": latency_s,
        }
        query = {k: (int(v) if isinstance(v, bool) else v) for k, v in options.items()}
        self._control("configure", **{k: v for k, v in query.items() if v is not None})

    def expire_tokens(self) -> None:
        """End the life of every token issued so far (later reads with them get 403)."""
        self._control("expire_tokens")

    def reset_counters(self) -> None:
        self._control("reset")

    def fail(self, path: str, status: int) -> None:
        """Answer every request for ``path`` (relative to ``root``) with ``status``."""
        self._control("fail", path=Path(path).as_posix(), status=status)

    def start(self) -> RangeServer:
        cmd = [sys.executable, "-m", __name__, str(self.root), self._host, str(self._port)]
        self._process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2:
            self.stop()
            raise RuntimeError(f"the range server did not start (command: {' '.join(cmd)})")
        self._address = (line[0], int(line[1]))
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
