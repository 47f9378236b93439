"""The app on a live loopback capture, as root: real servers, real requests, keys for the filter."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from textual.widgets import Input

from engine import sources
from engine.bounds import Bounds
from tests.live import LoopbackServer
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.widgets.connections import ConnectionsTable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")


class Server(LoopbackServer):
    """A tiny HTTP/1.0 server on loopback answering every request with a fixed body."""

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def request(self, path: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as c:
            c.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            while c.recv(65536):
                pass


def servers_listed(app: WirepeekApp) -> list[str]:
    table = app.query_one(ConnectionsTable)
    return [app.store.connections[conn_id].server for conn_id in table.order]


async def until(pilot: object, condition: object, timeout: float = 10.0) -> None:
    """Let the app run until the condition holds (live traffic can only be waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    raise AssertionError("the app never showed what was expected")


@pytest.mark.asyncio
async def test_live_rows_appear_and_a_new_filter_keeps_the_old_ones():
    first, second = Server(), Server()
    bpf = f"tcp port {first.port}"
    source = sources.open_live(["lo"], bpf)
    app = WirepeekApp(SourceSpec(interfaces=("lo",), opened=source), bpf, Bounds(keep_after_close=True))
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            first.request("/one")
            second.request("/ignored")  # not in the filter
            await until(pilot, lambda: len(servers_listed(app)) == 1)
            assert servers_listed(app) == [f"127.0.0.1:{first.port}"]
            await until(pilot, lambda: any(app.store.http.values()))
            [[tx]] = list(app.store.http.values())
            assert tx.request is not None and tx.request.target == "/one"

            await pilot.press("f")
            field = app.query_one("#capture-filter", Input)
            field.value = f"tcp port {second.port}"
            await pilot.press("enter")
            await until(pilot, lambda: not app.query_one("#prompt").display)
            first.request("/after")  # no longer captured
            second.request("/two")
            await until(pilot, lambda: len(servers_listed(app)) == 2)
            await pilot.pause(0.3)
            listed = servers_listed(app)
            assert listed == [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
            targets = [t.request.target for txs in app.store.http.values() for t in txs if t.request]
            assert "/after" not in targets
    finally:
        first.close()
        second.close()


class HoldingServer:
    """An HTTP/1.1 server on loopback that answers each request only when the test lets it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(65536)
                if self.release.wait(20):
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
                conn.recv(65536)  # until the client closes
            except OSError:
                pass  # the client went first

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.mark.asyncio
async def test_a_request_waiting_for_its_answer_is_listed_at_once_and_its_wait_grows():
    server = HoldingServer()
    bpf = f"tcp port {server.port}"
    source = sources.open_live(["lo"], bpf)
    app = WirepeekApp(SourceSpec(interfaces=("lo",), opened=source), bpf, Bounds(keep_after_close=True))
    client = socket.create_connection(("127.0.0.1", server.port))
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            client.sendall(b"GET /slow?report=1 HTTP/1.1\r\nHost: test\r\n\r\n")
            table = app.query_one(ConnectionsTable)
            await until(pilot, lambda: table.row_count == 1 and app.selected is not None
                        and app.store.pending.get(app.selected))
            # The connection says a request waits; the HTTP tab lists it, its wait running.
            row = table.row_text(app.selected)
            assert " … " in row and "GET /slow?report=1" in row
            exchanges = app.query_one("#exchanges")
            assert exchanges.row_count == 1
            [pending] = exchanges.order
            assert pending < 0 and exchanges.cells(pending)[-1] == "waiting"
            first = float(exchanges.cells(pending)[-2].rstrip("s…"))
            await pilot.pause(1.2)
            later = float(exchanges.cells(pending)[-2].rstrip("s…"))
            assert later >= first + 1.0
            assert "1 waiting for an answer" in str(app.query_one("#http-summary").render())
            # The answer comes: the waiting row becomes the exchange, with its status.
            server.release.set()
            await until(pilot, lambda: app.store.http.get(app.selected))
            await until(pilot, lambda: exchanges.order == [0])
            assert exchanges.cells(0)[4] == "503" and not app.store.pending.get(app.selected)
            assert " 503 " in table.row_text(app.selected)
    finally:
        client.close()
        server.close()
