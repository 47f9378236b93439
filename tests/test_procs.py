"""Process attribution (engine.procs): the processes holding a live connection's sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine.procs import PATIENCE, Attribution, SocketOwners

ME = psutil.Process()


def _pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    return listener, client, server


def _ends(client: socket.socket) -> tuple[str, str]:
    (ca, cp), (sa, sp) = client.getsockname(), client.getpeername()
    return f"{ca}:{cp}", f"{sa}:{sp}"


def test_both_ends_of_a_connection_here_are_this_process() -> None:
    listener, client, server = _pair()
    try:
        owners = SocketOwners()
        found = owners.lookup(*_ends(client))
        assert [o.pid for o in found] == [os.getpid(), os.getpid()]
        assert found[0].name == ME.name() and found[0].user == ME.username()
    finally:
        for s in (client, server, listener):
            s.close()


def test_an_accepted_connection_gone_is_still_the_listeners() -> None:
    listener, client, server = _pair()
    ends = _ends(client)
    client.close()
    server.close()
    try:
        owners = SocketOwners()
        owners.refresh()
        client_owner, server_owner = owners.lookup(*ends)
        assert client_owner is None  # a closed client socket is not guessed
        assert server_owner is not None and server_owner.pid == os.getpid()
    finally:
        listener.close()


def test_the_tables_are_read_at_most_once_a_second_and_only_on_a_miss() -> None:
    now = [100.0]
    owners = SocketOwners(clock=lambda: now[0])
    assert owners.refresh() and not owners.refresh()
    listener, client, server = _pair()  # opened after the reading: a miss
    try:
        assert owners.lookup(*_ends(client)) == (None, owners.listeners.get(("127.0.0.1", listener.getsockname()[1])))
        assert owners.readings == 1  # within the second: not read again
        now[0] += 1.0
        assert owners.lookup(*_ends(client))[0].pid == os.getpid()
        assert owners.readings == 2
        owners.lookup(*_ends(client))  # all known: no reading
        now[0] += 5
        owners.lookup(*_ends(client))
        assert owners.readings == 2
    finally:
        for s in (client, server, listener):
            s.close()


def test_attribution_looks_again_for_a_while_then_gives_up() -> None:
    now = [100.0]
    attribution = Attribution(SocketOwners(clock=lambda: now[0]))
    attribution.opened(7, "10.255.0.1:5555", "10.255.0.2:80")  # no such sockets here
    assert 7 in attribution.pending
    readings = attribution.owners.readings
    assert attribution.poll() == [] and attribution.owners.readings == readings  # not yet due
    now[0] += 1.0
    attribution.poll()
    assert attribution.owners.readings == readings + 1 and 7 in attribution.pending
    now[0] += PATIENCE
    attribution.poll()
    assert 7 not in attribution.pending
    assert attribution.take(7) == (None, None)


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
def test_live_records_name_the_processes_of_both_ends(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    err = tmp_path / "err"
    capture = subprocess.Popen([sys.executable, "-m", "tui.cli", "-i", "lo", "--json", "--duration", "4",
                                f"tcp port {port}"], stdout=subprocess.PIPE, stderr=err.open("wb"),
                               cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 20
        while b"capturing on lo" not in err.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        # A client in another process holds its connection open for 1.5 s, past one reading.
        client = subprocess.Popen([sys.executable, "-c",
                                   f"import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\n"
                                   "s.sendall(b'hi')\ntime.sleep(1.5)\ns.close()"])
        server, _ = listener.accept()
        client.wait(timeout=20)
        server.close()
        out, _ = capture.communicate(timeout=30)
    finally:
        capture.kill()
        listener.close()
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["process"]["client"]["pid"] == client.pid
    assert record["process"]["server"]["pid"] == os.getpid()
    assert record["process"]["server"]["user"] == ME.username()


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.asyncio
async def test_the_inspector_shows_the_processes_of_live_connections() -> None:
    from engine import sources
    from engine.bounds import Bounds
    from tests.test_app_live import until
    from tui.app import WirepeekApp
    from tui.capture import SourceSpec
    from tui.widgets.connections import ConnectionsTable

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    bpf = f"tcp port {listener.getsockname()[1]}"
    source = sources.open_live(["lo"], bpf)
    app = WirepeekApp(SourceSpec(interfaces=("lo",), opened=source), bpf, Bounds(keep_after_close=True))
    held: list[socket.socket] = []
    try:
        async with app.run_test(size=(160, 30)) as pilot:
            table = app.query_one(ConnectionsTable)
            assert [c.key for c in table.COLUMNS[:4]] == ["id", "client", "server", "process"]
            await pilot.pause(0.3)
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            held += [client, server]
            client.sendall(b"hello")
            name = f"{ME.name()}({os.getpid()})"
            await until(pilot, lambda: len(table.order) == 1 and app.store.processes, 10)
            [conn_id] = table.order
            assert app.store.processes[conn_id] == f"{name}→{name}"
            assert f"{name}→{name}" in table.row_text(conn_id)
    finally:
        for s in (*held, listener):
            s.close()
