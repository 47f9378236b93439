"""A request waiting for its answer, seen live on loopback: a real HTTP/1.1 server that holds
its answers until the test lets it answer, captured on `lo` through the engine's live source
into a live pipeline (as the TUI's driver builds it). The request is announced while the
server still holds it, again when its body has come, and then reported by its transaction,
under the same (connection, offset).

Needs root for the capture (CI runs as root); skipped otherwise.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine import sources
from engine.events import Event, HttpRequestSeen, HttpTransaction
from engine.pipeline import Pipeline

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")

BODY = b"field=" + b"p" * 2000
ANSWER = b"held, then answered\n"
TIMEOUT = 20.0  # seconds any one step may take before the test fails


class HoldingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: both requests on one connection
    answers: threading.Semaphore  # one release per answer the test allows

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        if not self.answers.acquire(timeout=TIMEOUT):
            return  # the test gave up: do not answer at all
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer()

    def do_GET(self) -> None:
        self._answer()


class Watch:
    """The live pipeline's events, read from the capture until one of them is wanted."""

    def __init__(self, source: sources.Source) -> None:
        self.source = source
        self.pipeline = Pipeline(live_updates=True)
        self.events: list[Event] = []

    def until(self, wanted: Callable[[Event], bool]) -> Event:
        deadline = time.monotonic() + TIMEOUT
        checked = 0
        while True:
            for event in self.events[checked:]:
                if wanted(event):
                    return event
            checked = len(self.events)
            assert time.monotonic() < deadline, f"not seen within {TIMEOUT} s: {self.events}"
            batch = self.source.next_batch(0.05)
            assert batch is not None
            if len(batch):
                self.events += self.pipeline.feed(batch)
            else:
                self.events += self.pipeline.flush(time.time())


def read_answer(sock: socket.socket) -> bytes:
    got = b""
    while not got.endswith(ANSWER):
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {got!r}"
        got += chunk
    return got


@pytest.fixture
def server() -> Iterator[tuple[int, threading.Semaphore]]:
    HoldingHandler.answers = threading.Semaphore(0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HoldingHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], HoldingHandler.answers
    finally:
        for _ in range(4):
            HoldingHandler.answers.release()  # whatever still waits may finish
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_request_the_server_holds_is_announced_before_its_answer(server):
    port, answers = server
    source = sources.open_live(["lo"], f"tcp port {port}")
    watch = Watch(source)
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        head = (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                + str(len(BODY)).encode() + b"\r\n\r\n")
        client.sendall(head + BODY[:500])

        def seen(target: str, complete: bool) -> Callable[[Event], bool]:
            return lambda e: (isinstance(e, HttpRequestSeen) and e.request.target == target
                              and e.request.complete == complete)

        # The head is in, the body is still coming: announced as it is so far.
        first = watch.until(seen("/upload", False))
        assert isinstance(first, HttpRequestSeen)
        assert first.request.method == "POST" and first.request.body_bytes <= 500
        assert first.request.offset == 0  # the client stream's first byte: it opens it
        client.sendall(BODY[500:])
        # The whole body is in; the server still holds its answer.
        whole = watch.until(seen("/upload", True))
        assert isinstance(whole, HttpRequestSeen)
        assert whole.request.body_bytes == len(BODY) and whole.request.end_ts is not None
        assert not any(isinstance(e, HttpTransaction) for e in watch.events)

        answers.release()
        assert read_answer(client).startswith(b"HTTP/1.1 200 ")
        key = (whole.connection, whole.request.offset)

        def answered(e: Event) -> bool:
            return (isinstance(e, HttpTransaction) and e.request is not None
                    and (e.connection, e.request.offset) == key)

        tx = watch.until(answered)
        assert isinstance(tx, HttpTransaction) and tx.response is not None
        assert tx.response.status == 200 and tx.request == whole.request
        assert tx.request.end_ts is not None and tx.response.ts > tx.request.end_ts

        # A second request on the same connection: its own offset, announced while held too.
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        slow = watch.until(seen("/slow", True))
        assert isinstance(slow, HttpRequestSeen)
        assert slow.connection == whole.connection
        assert slow.request.offset == len(head) + len(BODY)
        answers.release()
        read_answer(client)
        later = watch.until(lambda e: isinstance(e, HttpTransaction) and e.request is not None
                            and e.request.offset == slow.request.offset)
        assert isinstance(later, HttpTransaction) and later.index == 1
    finally:
        client.close()
        source.close()
    # In order: each announcement before its transaction, and nothing announced twice whole.
    kinds = [(type(e).__name__, e.request.target) for e in watch.events
             if isinstance(e, (HttpRequestSeen, HttpTransaction)) and e.request is not None]
    assert kinds == [("HttpRequestSeen", "/upload"), ("HttpRequestSeen", "/upload"),
                     ("HttpTransaction", "/upload"), ("HttpRequestSeen", "/slow"),
                     ("HttpTransaction", "/slow")]
