"""HTTP plumbing: a threaded http.server on 127.0.0.1 that keeps the raw request target.

Raw paths matter because message keys arrive percent-encoded as one path segment and must be
decoded exactly once; a framework that decodes first would hide a client's encoding mistakes.
"""

import json
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    method: str
    raw_path: str
    query: str
    headers: dict
    body: bytes
    at: float


@dataclass
class Response:
    status: int
    body: object = None
    headers: dict | None = None

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


class Server(ThreadingHTTPServer):
    """Joins its handler threads on close and cuts idle keep-alive connections so stop() is prompt."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, port: int, app) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)

    def track(self, connection: socket.socket) -> None:
        with self.connections_lock:
            self.connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self.connections_lock:
            self.connections.discard(connection)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeSFMC/1.0"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.app.knobs.keepalive_timeout
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args) -> None:
        """Quiet: every request is recorded on the fake instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        target = self.path
        if target.startswith(("http://", "https://")):
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        raw_path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body = self._read_body(headers)
        except ValueError:
            self._write(Response(400, {"message": "Bad request body", "errorcode": 10000, "documentation": ""}))
            self.close_connection = True
            return
        try:
            response = self.server.app.handle(self.command, raw_path, query, headers, body)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = Response(500, {"message": "MCMS_UTM_Runtime: internal error", "errorcode": 30000,
                                      "documentation": ""})
        self._write(response)

    def _read_body(self, headers: dict) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(headers.get("content-length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def _write(self, response: Response) -> None:
        payload = response.payload()
        self.send_response(response.status)
        extra = {k.lower(): (k, v) for k, v in (response.headers or {}).items()}
        if "content-type" not in extra and response.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in extra.values():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
