"""A capture file's packets are read again from the file (tui.capture.FileRing), not held.

What it picks for a connection must be exactly what a ring that held every batch picks (its own
packets by number, also when ports were reused), under a filter too; a file that changed or is
gone since it was read gets a clear message, in the Packets tab and for `w`.
"""

from __future__ import annotations

import os
import shutil

import pytest
from textual.widgets import Input, Static

from engine import sources
from engine.events import ConnectionClosed
from engine.pipeline import Pipeline
from tests.captures import capture
from tests.test_app import SIZE, read_all, until, workers_done
from tui.app import WirepeekApp
from tui.capture import FileRing, PacketRing, SourceSpec
from tui.widgets.connections import ConnectionsTable
from tui.widgets.packets import PacketsView

CAPTURES = ["wirepeek/lo-port-reuse.pcap", "zeek/wikipedia.pcap", "zeek/http__methods.pcap",
            "arkime/tcp-reassembly-synthetic.pcap"]


def held_and_infos(path: str | list[str], bpf: str = "") -> tuple[PacketRing, list]:
    """A ring holding every batch of the files, numbered as the pipeline numbers them, and the
    connections the pipeline saw."""
    ring = PacketRing(1 << 40)
    pipeline = Pipeline()
    source = sources.open_files([path] if isinstance(path, str) else path, bpf)
    infos = []
    while (batch := source.next_batch()) is not None:
        ring.add(batch, pipeline.packets)
        infos += [e.info for e in pipeline.feed(batch) if isinstance(e, ConnectionClosed)]
    source.close()
    infos += [e.info for e in pipeline.finish() if isinstance(e, ConnectionClosed)]
    return ring, infos


@pytest.mark.parametrize(("name", "bpf"), [(c, "") for c in CAPTURES] + [("zeek/wikipedia.pcap", "port 80")])
def test_packets_read_again_are_those_a_full_ring_holds(name, bpf):
    path = capture(name)
    ring, infos = held_and_infos(path, bpf)
    files = FileRing((path,), bpf)
    assert infos
    for info in infos:
        held, again = ring.pick([info]), files.pick([info])
        assert again.error is None and again.complete
        assert again.numbers == held.numbers
        assert again.packets == held.packets  # times, lengths, link types and bytes
    everything = files.pick(infos)
    assert everything.numbers == ring.pick(infos).numbers
    assert files.bytes == 0


def test_several_files_are_read_again_merged_as_they_were():
    paths = [capture("zeek/http__methods.pcap"), capture("wirepeek/lo-port-reuse.pcap")]
    ring, infos = held_and_infos(paths)
    files = FileRing(tuple(paths), "")
    for info in infos:
        assert files.pick([info]).packets == ring.pick([info]).packets
    assert files.pick(infos).numbers == ring.pick(infos).numbers


def test_a_changed_or_vanished_file_is_said_so(tmp_path):
    path = tmp_path / "copy.pcap"
    shutil.copy(capture("zeek/http__methods.pcap"), path)
    _ring, infos = held_and_infos(str(path))
    files = FileRing((str(path),), "")
    assert files.pick(infos[:1]).packets
    with open(path, "ab") as f:
        f.write(b"\0" * 16)
    changed = files.pick(infos[:1])
    assert changed.packets == [] and changed.error == f"{path} changed since it was read: its packets cannot be read again"
    os.unlink(path)
    gone = files.pick(infos[:1])
    assert gone.error == f"{path} is gone: its packets cannot be read again"


@pytest.mark.asyncio
async def test_the_app_says_when_the_file_is_gone(tmp_path):
    path = tmp_path / "gone.pcap"
    shutil.copy(capture("zeek/http__methods.pcap"), path)
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", None)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        conn_id = next(iter(app.store.connections))
        app.query_one(ConnectionsTable).select(conn_id)
        await until(pilot, lambda: app.selected == conn_id)
        os.unlink(path)
        await pilot.press("3")  # the Packets tab
        note = app.query_one("#packets-note", Static)
        await until(pilot, lambda: "is gone" in str(note.render()))
        assert str(note.render()) == (f"the packets of connection {conn_id}: {path} is gone: "
                                      "its packets cannot be read again")
        assert app.query_one(PacketsView).conn_id is None  # nothing of it is listed
        await pilot.press("w")
        field = app.query_one("#write-path", Input)
        field.value = str(tmp_path / "out.pcap")
        await pilot.press("enter")
        await workers_done(app, "write")
        await pilot.pause()
        assert [n.message for n in app._notifications][-1] == (
            f"nothing written: {path} is gone: its packets cannot be read again")
        assert not (tmp_path / "out.pcap").exists()


def test_a_files_progress_is_what_was_read_of_it(tmp_path):
    from tests.bench.workloads import keepalive_http
    from tests.captures import compressed_copy

    path = tmp_path / "ka.pcap"
    keepalive_http(str(path), connections=4, transactions=4000)
    size = path.stat().st_size
    packed = compressed_copy(path, "gzip", tmp_path)
    for paths, total in [([str(path)], size), ([str(packed)], packed.stat().st_size),
                         ([str(path), str(packed)], size + packed.stat().st_size)]:
        source = sources.open_files(paths)
        seen = [source.progress()]
        while source.next_batch() is not None:
            seen.append(source.progress())
        assert all(p is not None and p[1] == total for p in seen)
        done = [p[0] for p in seen if p]
        assert done == sorted(done) and done[-1] == total
        if len(paths) == 1 and paths[0].endswith(".pcap"):
            assert 0 < done[0] < total  # libpcap reads a few KB at a time (the gzip is small)
        source.close()
    # A pipe has no size to say it against.
    read, write = os.pipe()
    os.close(write)
    assert sources.CaptureStream("pipe", os.fdopen(read, "rb", buffering=0)).progress() is None


@pytest.mark.asyncio
async def test_the_status_bar_says_how_much_of_the_file_is_read(tmp_path):
    import re

    from tests.bench.workloads import keepalive_http
    from tests.test_app import status_text

    path = tmp_path / "ka.pcap"
    keepalive_http(str(path), connections=4, transactions=30_000)
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", None)
    shown = []
    async with app.run_test(size=SIZE) as pilot:
        async def reading() -> bool:
            found = re.search(r" reading (\d+)% ", status_text(app))
            if found:
                shown.append(int(found.group(1)))
            return bool(found) and 0 < int(found.group(1)) < 100
        for _ in range(200):
            if await reading():
                break
            await pilot.pause(0.02)
        await read_all(app, pilot)
        assert " done " in status_text(app) and "%" not in status_text(app).split("│")[0]
    assert any(0 < n < 100 for n in shown), shown
