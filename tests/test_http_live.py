"""HTTP seen live on loopback: a real HTTP/1.1 server, real requests, and `wirepeek -i lo --json`
reports every exchange with the body sizes the server really wrote.

Needs root for the capture (CI runs as root); skipped otherwise.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.live import end_process, wait_for_line
from tests.test_cli import ROOT, WIREPEEK, records

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")

SMALL = b"a small body with a Content-Length\n" * 7
MISSING = b"<html><body>no such page here</body></html>\n"
# (chunk data, chunk extension): sizes on both sides of a line, and an extension the client
# must skip (RFC 9112 7.1.1).
CHUNKS = [(b"x" * 1, b""), (b"y" * 100, b";name=value"), (b"z" * 4096, b""),
          (b"w" * 10000, b';q="quoted"')]
POSTED = b"field=" + b"p" * 3000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests on one connection
    written: list[tuple[str, str, int, int]]  # (method, path, status, body bytes written)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def _reply(self, status: int, body: bytes, send_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        self.written.append((self.command, self.path, status, len(body) if send_body else 0))

    def do_GET(self) -> None:
        if self.path == "/small":
            self._reply(200, SMALL)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data, extension in CHUNKS:
                self.wfile.write(b"%x%s\r\n%s\r\n" % (len(data), extension, data))
            self.wfile.write(b"0\r\n\r\n")
            self.written.append(("GET", "/chunked", 200, sum(len(d) for d, _ in CHUNKS)))
        else:
            self._reply(404, MISSING)

    def do_HEAD(self) -> None:
        self._reply(200, SMALL, send_body=False)  # the head announces a length; no body follows

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(200, body)




def _exchange(conn: http.client.HTTPConnection, method: str, path: str,
              body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body)
    response = conn.getresponse()
    return response.status, response.read()


CONNECTION_FIELDS = {"type", "id", "client", "server", "state", "conn_state", "history",
                     "first_ts", "last_ts", "packets", "bytes", "missing_bytes", "protocol"}
HTTP_FIELDS = {"type", "connection", "index", "request", "response", "error"}
REQUEST_FIELDS = {"ts", "method", "target", "version", "headers", "body_bytes"}
RESPONSE_FIELDS = {"ts", "end_ts", "status", "reason", "version", "headers", "body_bytes"}


def test_live_http_exchanges_are_reported_with_the_bytes_the_server_wrote():
    Handler.written = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    proc = subprocess.Popen([*WIREPEEK, "-i", "lo", "--json", "--duration", "5",
                             "tcp", "port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for_line(proc, b"capturing on lo", timeout=30)
        keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        got = [
            _exchange(keep_alive, "GET", "/small"),
            _exchange(keep_alive, "GET", "/chunked"),
            _exchange(keep_alive, "GET", "/missing"),
            _exchange(keep_alive, "POST", "/echo", POSTED),
        ]
        keep_alive.close()
        second = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        got.append(_exchange(second, "HEAD", "/small"))
        second.close()
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert got == [(200, SMALL), (200, b"".join(d for d, _ in CHUNKS)), (404, MISSING),
                   (200, POSTED), (200, b"")]
    assert proc.returncode == 0, err
    assert b"Traceback" not in err

    connections = records(out, "connection")
    exchanges = records(out, "http")
    assert len(connections) == 2
    for rec in connections:
        assert CONNECTION_FIELDS <= rec.keys()
        assert rec["server"] == f"127.0.0.1:{port}"
        assert rec["protocol"] == "http"
        assert rec["missing_bytes"] == {"client": 0, "server": 0}
    first, second_id = sorted(rec["id"] for rec in connections)

    for rec in exchanges:
        assert HTTP_FIELDS <= rec.keys()
        assert rec["error"] is None
        assert REQUEST_FIELDS <= rec["request"].keys()
        assert RESPONSE_FIELDS <= rec["response"].keys()
        assert rec["request"]["version"] == rec["response"]["version"] == "1.1"
        assert rec["request"]["ts"] <= rec["response"]["ts"] <= rec["response"]["end_ts"]
        assert all(isinstance(h, list) and len(h) == 2 for h in rec["request"]["headers"])
        assert ["Host", f"127.0.0.1:{port}"] in rec["request"]["headers"]

    seen = sorted(
        (rec["connection"], rec["index"], rec["request"]["method"], rec["request"]["target"],
         rec["request"]["body_bytes"], rec["response"]["status"], rec["response"]["body_bytes"])
        for rec in exchanges
    )
    written = {(method, path): (status, size) for method, path, status, size in Handler.written}
    assert len(written) == len(Handler.written) == 5
    assert seen == [
        (first, 0, "GET", "/small", 0, *written["GET", "/small"]),
        (first, 1, "GET", "/chunked", 0, *written["GET", "/chunked"]),
        (first, 2, "GET", "/missing", 0, *written["GET", "/missing"]),
        (first, 3, "POST", "/echo", len(POSTED), *written["POST", "/echo"]),
        (second_id, 0, "HEAD", "/small", 0, *written["HEAD", "/small"]),
    ]
    # The figures the server wrote, spelled out: the chunked body counts payload, not framing,
    # and the answer to HEAD announces a length but has no body.
    assert [size for _, _, _, size in Handler.written] == [
        len(SMALL), 14197, len(MISSING), len(POSTED), 0]
    head = next(rec for rec in exchanges if rec["request"]["method"] == "HEAD")
    assert ["Content-Length", str(len(SMALL))] in head["response"]["headers"]
    chunked = next(rec for rec in exchanges if rec["request"]["target"] == "/chunked")
    assert ["Transfer-Encoding", "chunked"] in chunked["response"]["headers"]
