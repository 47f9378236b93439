"""`w` on a live loopback capture, as root: two connections on the same four ports (a client
that binds its port, as curl --local-port does) are written apart."""

from __future__ import annotations

import os
import socket

import pcapy
import pytest
from textual.widgets import Input

from engine import sources
from engine.bounds import Bounds
from engine.tcpdump import ACK, SYN, tcp_header
from tests.test_app_live import Server, until
from tests.test_app_packets import workers_done
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.widgets.connections import ConnectionsTable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")


def request_from(port: int, server: Server) -> None:
    """One request from this client port. The server closes first, so the client's end of the
    connection never waits in TIME_WAIT and the port can be bound again at once."""
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind(("127.0.0.1", port))
        c.connect(("127.0.0.1", server.port))
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while c.recv(65536):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def written(path: str) -> list[bytes]:
    handle = pcapy.open_offline(path)
    out = []
    while (packet := handle.next())[0] is not None:
        out.append(bytes(packet[1]))
    return out


@pytest.mark.asyncio
async def test_w_writes_each_connection_of_reused_ports_apart(tmp_path):
    server = Server()
    port = free_port()
    bpf = f"tcp port {server.port}"
    source = sources.open_live(["lo"], bpf)
    app = WirepeekApp(SourceSpec(interfaces=("lo",), opened=source), bpf, Bounds(keep_after_close=True))
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            request_from(port, server)
            request_from(port, server)

            def both_closed() -> bool:
                infos = list(app.store.connections.values())
                return len(infos) == 2 and all(i.conn_state == "SF" for i in infos)

            await until(pilot, both_closed)
            infos = sorted(app.store.connections.values(), key=lambda i: i.id)
            assert infos[0].client == infos[1].client == f"127.0.0.1:{port}"
            assert infos[0].last_packet < infos[1].first_packet
            for info in infos:
                app.query_one(ConnectionsTable).select(info.id)
                await until(pilot, lambda info=info: app.selected == info.id)
                out = tmp_path / f"{info.id}.pcap"
                await pilot.press("w")
                app.query_one("#write-path", Input).value = str(out)
                await pilot.press("enter")
                await pilot.pause()
                await workers_done(app, "write")
                await pilot.pause()
                assert [n.message for n in app._notifications][-1] == (
                    f"wrote {sum(info.packets)} packets to {out}")
                packets = written(str(out))
                headers = [tcp_header(1, p) for p in packets]
                # One handshake each: the other connection's SYN is not in this file.
                assert sum(1 for h in headers if h and h.flags & (SYN | ACK) == SYN) == 1
                assert len(packets) == sum(info.packets)
    finally:
        server.close()
