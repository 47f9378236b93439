"""tui.follow: a connection of a capture file, read again from the file for the Stream tab,
gives the follow view the entries that a pipeline keeping every stream gave (engine.pipeline
`only`), whether the file was read to its end first or is still being read."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from engine import sources
from engine.bounds import Bounds
from engine.events import ConnectionClosed, ConnectionInfo, ConnectionOpened, ConnectionUpdated
from engine.pipeline import Pipeline
from engine.tcp import endpoints_key
from tests.captures import BIG, all_captures, capture, replay_file
from tests.synth import TcpConversation, write_pcap
from tests.test_app import SIZE, open_stream, read_all, until
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.follow import FileFollow
from tui.widgets.connections import ConnectionsTable
from tui.widgets.stream import StreamView

BOUNDS = Bounds(keep_after_close=True)
FOREVER = float("inf")


def whole(path: str, bounds: Bounds = BOUNDS) -> tuple[Pipeline, dict[int, ConnectionInfo]]:
    """A pipeline that kept every stream of the file (as the capture thread did before), and
    its TCP connections as they closed."""
    done = replay_file(path, bounds=bounds)
    return done.pipeline, {info.id: info for info in done.infos()}


def read_again(path: str, info: ConnectionInfo, bounds: Bounds = BOUNDS) -> FileFollow:
    reader = FileFollow((path,), "", bounds, None, info)
    reader.update(info, closed=True)
    assert reader.read(1 << 62, FOREVER)
    assert reader.done and reader.error is None
    return reader


def entries(kept: object) -> object:
    return None if kept is None else (kept.entries, kept.dropped)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", all_captures())
def test_each_connection_read_again_is_what_a_whole_reading_kept(name):
    path = capture(name)
    pipeline, infos = whole(path)
    for conn_id, info in infos.items():
        reader = read_again(path, info)
        try:
            assert entries(reader.since(0, False)) == entries(pipeline.kept_since(conn_id, 0)), (
                f"connection {conn_id} ({info.client} > {info.server})")
        finally:
            reader.close()


@pytest.mark.parametrize("name", ["wirepeek/lo-port-reuse.pcap",
                                  "wirepeek/any-sll-port-reuse.pcap"])
def test_a_connection_whose_ports_are_used_again_gets_its_own_bytes_only(name):
    path = capture(name)
    pipeline, infos = whole(path)
    reused = {}
    for info in infos.values():
        reused.setdefault((info.client, info.server), []).append(info)
    pairs = [same for same in reused.values() if len(same) > 1]
    assert pairs  # (the capture holds a 4-tuple used twice)
    for same in pairs:
        got = [entries(read_again(path, info).since(0, False)) for info in same]
        assert got == [entries(pipeline.kept_since(info.id, 0)) for info in same]
        assert got[0] != got[1]


def test_a_small_spool_and_cap_bound_what_is_read_again_as_they_bound_the_capture_thread():
    bounds = Bounds(keep_after_close=True, keep_stream_bytes=20_000, spool_bytes=1 << 20)
    path = str(BIG)
    pipeline, infos = whole(path, bounds)
    for conn_id, info in infos.items():
        got = read_again(path, info, bounds).since(0, False)
        assert got is not None and got.dropped  # (its 1000 exchanges are past the cap)
        assert entries(got) == entries(pipeline.kept_since(conn_id, 0))


@pytest.mark.parametrize("name", ["wirepeek/lo-port-reuse.pcap", "zeek/http__pipelined-requests.pcap",
                                  "arkime/wireshark-retrans.pcap", str(BIG)])
def test_reading_along_with_the_capture_gives_the_same_entries(name):
    """Followed while the file is still being read: the reader goes as far as the capture has
    read (here 7 packets at a time, splitting its batches), with the connection as the
    capture's updates showed it, closed only once the capture said so."""
    path = capture(name)
    pipeline, infos = whole(path)
    live = Pipeline(BOUNDS, live_updates=True, http_body_limit=None)
    source = sources.open_files([path])
    batches = list(iter(source.next_batch, None))
    source.close()
    readers: dict[int, FileFollow] = {}
    for batch in batches:
        for start in range(0, len(batch), 7):
            part = type(batch)(batch.linktype, batch.data, batch.meta[start * 16 : (start + 7) * 16])
            for event in live.feed(part):
                if not isinstance(event, (ConnectionOpened, ConnectionUpdated, ConnectionClosed)):
                    continue
                info = event.info
                if info.id not in readers and info.transport == "tcp":
                    readers[info.id] = FileFollow((path,), "", BOUNDS, None, info)
                if info.id in readers:
                    readers[info.id].update(info, isinstance(event, ConnectionClosed))
            for reader in readers.values():
                assert reader.read(live.packets - 1, FOREVER)
    for event in live.finish():
        if isinstance(event, ConnectionClosed) and event.info.id in readers:
            readers[event.info.id].update(event.info, True)
    assert set(readers) == set(infos)
    for conn_id, reader in readers.items():
        assert reader.read(live.packets - 1, FOREVER) and reader.done
        assert entries(reader.since(0, False)) == entries(pipeline.kept_since(conn_id, 0))
        reader.close()


def test_reading_stops_at_the_time_given_and_goes_on_from_there():
    path = str(BIG)
    pipeline, infos = whole(path)
    (conn_id, info), = infos.items()
    reader = FileFollow((path,), "", BOUNDS, None, info)
    reader.update(info, True)
    assert not reader.read(1 << 62, time.monotonic() - 1)  # no time: nothing read
    assert reader.number == 0
    while not reader.read(1 << 62, time.monotonic() + 0.0005):
        pass
    assert entries(reader.since(0, False)) == entries(pipeline.kept_since(conn_id, 0))


def test_only_one_connections_packets_reach_a_pipeline_given_its_key():
    path = capture("wirepeek/lo-port-reuse.pcap")
    pipeline, infos = whole(path)
    info = next(iter(infos.values()))
    only = Pipeline(BOUNDS, http_body_limit=None, only=endpoints_key(info.server, info.client))
    source = sources.open_files([path])
    while (batch := source.next_batch()) is not None:
        only.feed(batch)
    source.close()
    assert only.stats().packets == pipeline.stats().packets  # every packet counted
    opened = only.table.next_id
    same = sum(1 for i in infos.values() if {i.client, i.server} == {info.client, info.server})
    assert opened == same  # its 4-tuple's connections (used again: two), none of the others'
    only.ignore_all()
    only.finish()
    assert only.table.next_id == opened


def test_a_file_that_cannot_be_opened_raises_a_capture_error(tmp_path):
    path = tmp_path / "gone.pcap"
    shutil.copy(BIG, path)
    _pipeline, infos = whole(str(path))
    os.unlink(path)
    with pytest.raises(sources.CaptureError):
        FileFollow((str(path),), "", BOUNDS, None, next(iter(infos.values())))


@pytest.mark.asyncio
async def test_the_stream_tab_reads_the_stream_again_when_it_is_shown():
    path = capture("zeek/http__pipelined-requests.pcap")
    app = WirepeekApp(SourceSpec(files=(path,)), "", BOUNDS)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        assert app.selected is not None and app.driver._reader is None  # the HTTP tab: none
        stream = await open_stream(app, pilot)
        kept = whole(path)[0].kept_since(app.selected, 0)
        assert kept is not None
        assert stream.index.kept == sum(len(e[3]) for e in kept.entries if isinstance(e[3], bytes))


@pytest.mark.asyncio
async def test_the_stream_tab_says_when_the_file_is_gone(tmp_path):
    path = tmp_path / "copy.pcap"
    shutil.copy(capture("zeek/http__methods.pcap"), path)  # (several connections)
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", BOUNDS)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        os.unlink(path)
        await pilot.press("2")
        view = app.query_one(StreamView)
        await until(pilot, lambda: bool(view.note))
        assert view.note == [f"No stream to show: {path} is gone: its streams cannot be read "
                             "again."]
        assert not view.index.blocks
        # Another connection: said of it too (not an empty tab).
        first = app.selected
        other = next(i for i in app.store.connections if i != first)
        app.query_one(ConnectionsTable).select(other)
        await until(pilot, lambda: app.selected == other and view.note == [])
        await until(pilot, lambda: bool(view.note))
        assert view.note and "is gone" in view.note[0]


def test_the_packets_after_the_last_one_never_reach_the_connection(tmp_path):
    """Its table full (max_connections 1), the capture dropped connection X, open, when Z
    came; then X's ports were used again by Y. Read again, X shows its own bytes and none of
    Y's, though its reader's pipeline, which tracks X alone, never dropped it."""
    x = TcpConversation(client=("10.0.0.1", 40000))
    z = TcpConversation(client=("10.0.0.3", 40001), start=1_700_000_001.0)
    y = TcpConversation(client=("10.0.0.1", 40000), client_isn=77_777, server_isn=888_888,
                        start=1_700_000_002.0)
    packets = x.handshake() + x.client_send(b"GET /x HTTP/1.1\r\n\r\n") + x.server_send(b"XX")
    packets += z.handshake() + z.client_send(b"zz")
    packets += y.handshake() + y.client_send(b"GET /y HTTP/1.1\r\n\r\n") + y.close()
    path = str(tmp_path / "evicted.pcap")
    write_pcap(path, packets)
    bounds = Bounds(keep_after_close=True, max_connections=1)
    _pipeline, infos = whole(path, bounds)
    evicted = [i for i in infos.values() if i.client == "10.0.0.1:40000"]
    assert len(evicted) == 2 and evicted[0].last_packet < evicted[1].first_packet
    got = read_again(path, evicted[0], bounds).since(0, False)
    assert got is not None
    assert [(e[0], e[3]) for e in got.entries] == [(True, b"GET /x HTTP/1.1\r\n\r\n"),
                                                   (False, b"XX")]
