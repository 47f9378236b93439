"""The Packets tab and `w`/`W` (write pcap), driven with Pilot: one connection, one set of packets
(port reuse), tcpdump's lines, times, and a list that stays virtual for a big connection."""

from __future__ import annotations

import re
from pathlib import Path

import pcapy
import pytest
from textual.widgets import Input

from engine import sources
from engine.batch import Batch
from engine.bounds import Bounds
from engine.tcpdump import SequenceBases, packet_line, tcp_header
from tests.bench.workloads import keepalive_http
from tests.captures import capture, replay
from tests.test_app import SIZE, app_for, read_all, until, workers_done
from tui.app import WirepeekApp
from tui.capture import PacketRing, SourceSpec
from tui.widgets.connections import ConnectionsTable
from tui.widgets.packets import PacketList, PacketsView

REUSE = "wirepeek/lo-port-reuse.pcap"
# Its connections: 0 and 1 on the same four ports (packets 0-11 and 12-24), 2 on another
# client port (25-36), 3 over IPv6 (37-49).
SPANS = {0: (0, 11), 1: (12, 24), 2: (25, 36), 3: (37, 49)}


def file_packets(path: str) -> list[bytes]:
    handle = pcapy.open_offline(path)
    out = []
    while True:
        header, data = handle.next()
        if header is None:
            return out
        out.append(bytes(data))


def tcpdump_part(line: str) -> str:
    """A list line without its number and time."""
    return re.sub(r"^\s*\d+ \S+\s+", "", line)


async def select(app: WirepeekApp, pilot: object, conn_id: int) -> None:
    app.query_one(ConnectionsTable).select(conn_id)
    await until(pilot, lambda: app.selected == conn_id)
    assert app.selected == conn_id


async def write(app: WirepeekApp, pilot: object, key: str, out: Path) -> str:
    await pilot.press(key)  # type: ignore[attr-defined]
    field = app.query_one("#write-path" if key == "w" else "#write-all-path", Input)
    field.value = str(out)
    await pilot.press("enter")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    await workers_done(app, "write")
    await pilot.pause()  # type: ignore[attr-defined]
    return [n.message for n in app._notifications][-1]


async def open_packets(app: WirepeekApp, pilot: object) -> PacketList:
    await pilot.press("3")  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    await workers_done(app, "packets")
    await pilot.pause()  # type: ignore[attr-defined]
    return app.query_one(PacketList)


@pytest.mark.asyncio
@pytest.mark.parametrize("conn_id", [0, 1, 2])
async def test_w_writes_exactly_the_connections_packets_when_ports_were_reused(tmp_path, conn_id):
    app = app_for(REUSE)
    out = tmp_path / "one.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await select(app, pilot, conn_id)
        info = app.store.connections[conn_id]
        assert (info.first_packet, info.last_packet) == SPANS[conn_id]
        message = await write(app, pilot, "w", out)
        first, last = SPANS[conn_id]
        assert message == f"wrote {last - first + 1} packets to {out}"
    assert file_packets(str(out)) == file_packets(capture(REUSE))[first : last + 1]


@pytest.mark.asyncio
async def test_shift_w_writes_each_shown_connection_once(tmp_path):
    app = app_for(REUSE)
    out = tmp_path / "shown.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("slash", *"41234", "enter")  # both connections of the reused ports
        assert list(app.query_one(ConnectionsTable).order) == [0, 1]
        message = await write(app, pilot, "W", out)
        assert message == f"wrote 25 packets of 2 connections to {out}"
    assert file_packets(str(out)) == file_packets(capture(REUSE))[:25]


@pytest.mark.asyncio
async def test_packets_tab_lists_only_the_connection_as_tcpdump_does_and_dissects():
    app = app_for(REUSE)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await select(app, pilot, 1)
        listed = await open_packets(app, pilot)
        assert listed.row_count == 13
        lines = [listed.line(i) for i in range(listed.row_count)]
        # Numbered as in the capture (from 1, as tcpdump -# and Wireshark count), wall clock
        # with milliseconds, then tcpdump's line, relative numbers counted in this connection.
        assert [int(line.split()[0]) for line in lines] == list(range(13, 26))
        assert all(re.match(r"^\d+ \d\d:\d\d:\d\d\.\d{3} IP 127\.0\.0\.1\.", line) for line in lines)
        assert [tcpdump_part(line) for line in lines if "Flags [S]" in line] == [
            "IP 127.0.0.1.41234 > 127.0.0.1.18765: Flags [S], seq 155255740, win 65495, "
            "options [mss 65495,sackOK,TS val 727797366 ecr 0,nop,wscale 10], length 0"]
        assert tcpdump_part(lines[3]) == (
            "IP 127.0.0.1.41234 > 127.0.0.1.18765: Flags [P.], seq 1:80, ack 1, win 64, "
            "options [nop,nop,TS val 727797367 ecr 4151637], length 79")
        # The lines drawn are the list's own.
        screen = [listed.render_line(y).text for y in range(listed.size.height)]
        assert lines[0].startswith(screen[0].rstrip()) and len(screen[0].rstrip()) > 100
        await workers_done(app, "dissect")
        await pilot.pause()
        text = str(app.query_one("#packet-text").render())
        assert "###[ Ethernet ]###" in text and "###[ TCP ]###" in text and "flags     = S" in text
        assert "dport     = 18765" in text  # a number, not a service's name
        # Down: the next packet is dissected.
        listed.focus()
        await pilot.press("down")
        await pilot.pause()
        await workers_done(app, "dissect")
        await pilot.pause()
        text = str(app.query_one("#packet-text").render())
        assert "flags     = SA" in text
        note = str(app.query_one("#packets-note").render())
        assert "13 packets of connection 1" in note


@pytest.mark.asyncio
async def test_times_relative_to_the_connections_first_packet():
    app = app_for(REUSE)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await select(app, pilot, 1)
        listed = await open_packets(app, pilot)
        view = app.query_one(PacketsView)
        await pilot.press("t")  # relative times
        assert listed.line(0).split()[1] == "+0.000000s"
        assert listed.line(1).split()[1] == "+0.000026s"
        # Another connection: still relative, to its own first packet.
        await select(app, pilot, 2)
        await workers_done(app, "packets")
        await until(pilot, lambda: view.conn_id == 2)
        assert listed.line(0).split()[1] == "+0.000000s"
        await pilot.press("t")  # the wall clock again
        assert re.match(r"^\d\d:\d\d:\d\d\.\d{3}$", listed.line(0).split()[1])


@pytest.mark.asyncio
async def test_a_file_read_again_under_a_filter_numbers_its_packets_again(tmp_path):
    app = app_for(REUSE)
    out = tmp_path / "after.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        app.file_done.clear()
        await pilot.press("f")
        app.query_one("#capture-filter", Input).value = "not port 41234"
        await pilot.press("enter")
        await read_all(app, pilot)
        await until(pilot, lambda: len(app.store.connections) == 2)
        info = app.store.connections[0]
        assert info.client == "127.0.0.1:41235" and (info.first_packet, info.last_packet) == (0, 11)
        await select(app, pilot, 0)
        message = await write(app, pilot, "w", out)
        assert message == f"wrote 12 packets to {out}"
        listed = await open_packets(app, pilot)
        assert [int(listed.line(i).split()[0]) for i in range(listed.row_count)] == list(range(1, 13))
    assert file_packets(str(out)) == file_packets(capture(REUSE))[25:37]


class LiveFile:
    """A capture file handed out as a live source would (a few packets per batch, live=True),
    so that the driver's live path numbers the packets."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.live = True
        self.filter = ""
        self.error: str | None = None
        self.batches: list[Batch] = []
        source = sources.open_files([path])
        while (batch := source.next_batch()) is not None:
            packets = batch.packets()
            self.batches += [Batch.from_packets(batch.linktype, packets[i : i + 3])
                             for i in range(0, len(packets), 3)]
        source.close()

    def next_batch(self, timeout: float | None = None) -> Batch:
        return self.batches.pop(0) if self.batches else Batch(1, b"", b"")

    def set_filter(self, expression: str) -> None:
        self.filter = expression

    def stats(self) -> None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.asyncio
async def test_live_capture_numbers_packets_as_the_ring_does(tmp_path):
    app = WirepeekApp(SourceSpec(opened=LiveFile(capture(REUSE))), "",  # type: ignore[arg-type]
                      Bounds(keep_after_close=True))
    out = tmp_path / "live.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.stats is not None and app.stats.packets == 50
                    and app.store.connections.get(3) is not None
                    and app.store.connections[3].last_packet == 49)
        await select(app, pilot, 1)
        assert (app.store.connections[1].first_packet, app.store.connections[1].last_packet) == (12, 24)
        message = await write(app, pilot, "w", out)
        assert message == f"wrote 13 packets to {out}"
    assert file_packets(str(out)) == file_packets(capture(REUSE))[12:25]


@pytest.mark.asyncio
async def test_a_connection_of_12000_packets_is_listed_virtually(tmp_path):
    path = tmp_path / "big.pcap"
    keepalive_http(path, connections=1, transactions=6000)
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", Bounds(keep_after_close=True))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await select(app, pilot, 0)
        listed = await open_packets(app, pilot)
        assert listed.row_count == sum(app.store.connections[0].packets) > 12_000
        assert len(listed._lines) <= 100  # only what was drawn (and a first width) was made
        listed.focus()
        await pilot.press("end")
        await pilot.pause()
        assert listed.cursor_row == listed.row_count - 1
        assert listed.scroll_offset.y > 11_000
        screen = [listed.render_line(y).text for y in range(listed.size.height)]
        assert "Flags [F.]" in "".join(screen) or "Flags [.]" in screen[-1]
        assert len(listed._lines) <= 200
        # The last lines are tcpdump's, with the numbers relative to the connection's start.
        packets = listed.data.packets
        bases = SequenceBases()
        expected = ""
        for packet in packets:
            header = tcp_header(packet.linktype, packet.data)
            assert header is not None
            expected = packet_line(packet.linktype, packet.data, bases.offsets(header))
        assert tcpdump_part(listed.line(listed.row_count - 1)) == expected


@pytest.mark.asyncio
async def test_another_connections_packets_are_announced_while_they_are_read():
    app = app_for(REUSE)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await select(app, pilot, 1)
        listed = await open_packets(app, pilot)
        view = app.query_one(PacketsView)
        view.show_loading(1)  # the same connection again: what is shown stays
        assert listed.row_count == 13
        view.show_loading(2)  # another: nothing of connection 1 stays meanwhile
        await pilot.pause()
        assert listed.row_count == 0 and view.conn_id is None
        assert "reading the packets of connection 2" in str(app.query_one("#packets-note").render())
        assert str(app.query_one("#packet-text").render()).strip() == ""


def test_a_ring_read_again_gives_nothing_for_the_connections_of_the_reading_before():
    infos = replay(REUSE).infos()
    ring_source = sources.open_files([capture(REUSE)])
    ring = PacketRing()
    number = 0
    while (batch := ring_source.next_batch()) is not None:
        ring.add(batch, number)
        number += len(batch)
    ring_source.close()
    assert len(ring.pick([infos[1]], 0).packets) == 13
    ring.clear(1)  # read again: the numbers start again
    picked = ring.pick([infos[1]], 0)
    assert picked.reread and picked.packets == []


def test_the_dissection_shows_ports_as_numbers():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from engine.sources import Packet
    from tui.widgets.packets import dissect

    frame = bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=41000, dport=8088))
    text = dissect(Packet(0, 0, 1, len(frame), frame))
    assert "dport     = 8088" in text and "omniorb" not in text


def test_a_udp_datagram_is_listed_as_tcpdump_lists_it():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    from engine.tcpdump import ABSOLUTE
    from tui.widgets.packets import any_line, datagram_line

    v4 = bytes(Ether() / IP(src="10.1.0.1", dst="10.1.0.53") / UDP(sport=40000, dport=53) / Raw(b"q" * 29))
    assert any_line(1, v4, ABSOLUTE) == "IP 10.1.0.1.40000 > 10.1.0.53.53: UDP, length 29"
    v6 = bytes(Ether() / IPv6(src="fe80::1", dst="ff02::fb") / UDP(sport=5353, dport=5353) / Raw(b"m" * 12))
    assert any_line(1, v6, ABSOLUTE) == "IP6 fe80::1.5353 > ff02::fb.5353: UDP, length 12"
    # Cut by the snap length: the length on the wire, and how much of it was captured.
    assert any_line(1, v4[:50], ABSOLUTE) == "IP 10.1.0.1.40000 > 10.1.0.53.53: UDP, length 29 (8 captured)"
    # Not UDP: a TCP segment is tcpdump's TCP line, anything else says what it is.
    segment = next(data for data in file_packets(capture(REUSE)))
    assert datagram_line(1, segment) is None
    assert any_line(1, segment, ABSOLUTE) == packet_line(1, segment)
    assert any_line(1, v4[:30], ABSOLUTE).startswith("not a TCP segment")


@pytest.mark.asyncio
async def test_end_shows_the_last_packet_above_the_horizontal_scroll_bar():
    """At 80x24 tcpdump's lines are wider than the list: End and PgDn must show the last
    packet above the horizontal scroll bar, not behind it."""
    from tests.test_app import screen_lines

    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=(80, 24)) as pilot:
        await read_all(app, pilot)
        conn_id = max(app.store.connections, key=lambda c: sum(app.store.connections[c].packets))
        await select(app, pilot, conn_id)
        listed = await open_packets(app, pilot)
        await until(pilot, lambda: listed.row_count == sum(app.store.connections[conn_id].packets))
        listed.focus()
        await pilot.pause()
        assert listed.show_horizontal_scrollbar and listed.row_count > listed.size.height
        last = listed.line(listed.row_count - 1)[:40]
        for keys in (["end"], ["home", *["pagedown"] * (listed.row_count // 2)]):
            await pilot.press(*keys)
            await pilot.pause()
            assert listed.cursor_row == listed.row_count - 1
            assert any(line.startswith(last) for line in screen_lines(app)), keys
