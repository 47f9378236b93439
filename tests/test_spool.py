"""The follow view's bytes on disk (engine.spool): the ring file, and that what the table reads
back from it is exactly what it would have kept in memory, what the consumers were given and
what `wirepeek --follow` prints, within the ring's bound.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import sources
from engine.bounds import MiB, Bounds
from engine.events import ConnectionClosed
from engine.pipeline import Pipeline
from engine.spool import (
    DATA,
    FLUSH_AT,
    GAP,
    HEADER,
    WRITE_AT,
    Spool,
    SpooledEntries,
    add_record,
    add_same,
    header_start,
)
from engine.tcp import Resent
from tests.captures import BIG, HTTP_GET, all_captures, capture
from tests.test_cli import ROOT, WIREPEEK

KEEP_ALL = Bounds(keep_stream_bytes=64 * MiB, keep_after_close=True)


# --- the ring file ----------------------------------------------------------------------------


def record(*fields: object) -> bytes:
    """One record as Spool.append writes it, made elsewhere, as a helper process makes them."""
    out = bytearray()
    add_record(out, *fields)  # type: ignore[arg-type]
    return bytes(out)


def test_records_read_back_as_written_from_the_buffer_and_from_the_file():
    spool = Spool(1 << 20)
    pos = spool.append(DATA, True, 1.5, 10, 777, 3, b"abc")
    gap = spool.append(GAP, False, 2.25, 0, -1, 4096, b"acked")
    assert spool.file_size == 0  # still in the buffer
    for _ in range(2):
        got = spool.read(pos)
        assert got is not None
        assert (got.kind, got.from_client, got.ts, got.offset, got.ack, got.value, got.extra) == (
            DATA, True, 1.5, 10, 777, 3, b"abc")
        g = spool.read(gap)
        assert g is not None and (g.kind, g.value, g.extra, g.from_client) == (GAP, 4096, b"acked", False)
        spool.flush()
    assert spool.file_size == spool.written
    spool.close()
    assert spool.read(pos) is None


def test_records_made_elsewhere_and_written_at_once_read_back_as_if_appended():
    one, together = Spool(1 << 20), Spool(1 << 20)
    fields = [(DATA, True, 1.5, 10, 777, 3, b"abc"), (GAP, False, 2.25, 0, -1, 4096, b"acked"),
              (DATA, False, 3.0, 5, 6, 0, b"")]
    one.append(DATA, True, 0.0, 0, 0, 1, b"x")
    together.append(DATA, True, 0.0, 0, 0, 1, b"x")
    singly = [one.append(*f) for f in fields]
    made = [record(*f) for f in fields]
    base = together.append_records(b"".join(made))
    starts = [base + sum(map(len, made[:i])) for i in range(len(made))]
    assert starts == singly and together.written == one.written
    for pos, f in zip(starts, fields, strict=True):
        got = together.read(pos)
        assert got is not None
        assert (got.kind, got.from_client, got.ts, got.offset, got.ack, got.value, got.extra) == f


@pytest.mark.parametrize("fields", [(DATA, False, 0.0, 0, -1, 0), (GAP, True, 1.5, 7, 9, 4096)])
def test_a_record_from_its_headers_start_is_the_record(fields):
    """add_same with header_start's bytes adds what add_record adds, whatever follows."""
    start = header_start(*fields)
    for extra in (b"", b"x", bytes(range(256)) * 300):
        one, other = bytearray(b"before"), bytearray(b"before")
        add_record(one, *fields, extra)
        add_same(other, start, extra)
        assert one == other


def test_records_written_at_once_past_the_buffer_go_round_the_ring_like_the_rest():
    """Records given at once from WRITE_AT up are written straight to the file (after what is
    buffered); with smaller ones and single ones between them, in a ring they wrap round, every
    record reads back whole until it is overwritten."""
    spool = Spool(3 * FLUSH_AT + 1000)
    written = []
    for i in range(12):
        sizes = (FLUSH_AT // 3, WRITE_AT - 60 + i, FLUSH_AT // 2 + i, 7) if i % 3 else (5, 9)
        if i % 3 == 2:
            sizes = (WRITE_AT - HEADER.size - 60 + i,)  # all of them buffered
        payloads = [bytes([i]) * n for n in sizes]
        records = b"".join(record(DATA, True, float(i), i, i, len(p), p) for p in payloads)
        base = spool.append_records(records)
        for p in payloads:
            written.append((base, p))
            base += HEADER.size + len(p)
        if i % 4 == 0:
            spool.append(DATA, False, 0.0, 0, 0, 3, b"abc")
            written.append((spool.written - HEADER.size - 3, b"abc"))
        for pos, p in written:
            got = spool.read(pos)
            if pos < spool.written - spool.capacity:
                assert got is None
            else:
                assert got is not None and got.extra == p
        assert os.fstat(spool._fd).st_size <= spool.capacity


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(HEADER.size + 1, 600),
       sizes=st.lists(st.integers(0, 300), min_size=1, max_size=60),
       flush_every=st.integers(1, 7))
def test_the_ring_keeps_the_newest_records_whole_and_says_which_are_gone(capacity, sizes,
                                                                          flush_every):
    spool = Spool(capacity)
    written = []
    for i, n in enumerate(sizes):
        payload = bytes((i + j) % 256 for j in range(n))
        written.append((spool.append(DATA, i % 2 == 0, float(i), i, i, n, payload), payload))
        if i % flush_every == 0:
            spool.flush()
        assert spool.file_size <= capacity
        assert os.fstat(spool._fd).st_size <= capacity
    for pos, payload in written:
        got = spool.read(pos)
        if pos < spool.written - capacity:
            assert got is None
        elif pos + HEADER.size + len(payload) <= spool.written:
            assert got is not None and got.extra == payload
    spool.close()


def test_the_file_is_unlinked_at_once(tmp_path):
    spool = Spool(4096, directory=str(tmp_path))
    spool.append(DATA, True, 0.0, 0, 0, 1, b"x")
    spool.flush()
    assert list(tmp_path.iterdir()) == []
    spool.close()


def test_entries_leave_from_the_front_and_stay_compact():
    entries = SpooledEntries()
    for i in range(10_000):
        entries.append(i * 40, i)
    assert sum(entries.popleft() for _ in range(9_000)) == sum(range(9_000))
    assert len(entries) == 1_000 and entries.first == 9_000
    assert len(entries.positions) < 10_000  # the front was cut away
    assert entries.at(0) == (9_000 * 40, 9_000)


# --- the table reads back what it would have kept in memory -----------------------------------


def _run(name: str, bounds: Bounds, spool: Spool | None):
    pipeline = Pipeline(bounds, spool=spool)
    source = sources.open_files([capture(name)])
    events = []
    try:
        while (batch := source.next_batch()) is not None:
            events += pipeline.feed(batch)
    finally:
        source.close()
    events += pipeline.finish()
    return pipeline, events


def _kept(pipeline: Pipeline, events) -> dict[int, tuple]:
    ids = [e.info.id for e in events if isinstance(e, ConnectionClosed)]
    out = {}
    for conn_id in ids:
        got = pipeline.kept_since(conn_id, 0)
        out[conn_id] = None if got is None else (got.entries, got.cursor, got.dropped)
    return out


@pytest.mark.parametrize("name", all_captures())
def test_every_capture_keeps_the_same_entries_on_disk_as_in_memory(name):
    memory, memory_events = _run(name, KEEP_ALL, None)
    spool = Spool(256 * MiB)
    disk, disk_events = _run(name, KEEP_ALL, spool)
    try:
        # The same events (connection snapshots count kept and dropped bytes), the same entries:
        # bytes, gaps and resends (with whether they differ), in the same order.
        assert disk_events == memory_events
        assert _kept(disk, disk_events) == _kept(memory, memory_events)
    finally:
        spool.close()


def test_a_small_per_connection_bound_trims_the_same_on_disk():
    bounds = Bounds(keep_stream_bytes=4096, keep_after_close=True)
    memory, memory_events = _run(str(BIG.relative_to(BIG.parents[1])), bounds, None)
    spool = Spool(64 * MiB)
    disk, disk_events = _run(str(BIG.relative_to(BIG.parents[1])), bounds, spool)
    assert disk_events == memory_events
    assert _kept(disk, disk_events) == _kept(memory, memory_events)
    assert disk.stats().dropped_kept_bytes == memory.stats().dropped_kept_bytes > 0
    spool.close()


def _follow(path: str, conn_id: int, direction: str) -> tuple[bytes, list[tuple[int, int]]]:
    """What `--follow` prints: the bytes, and (offset, size) of each gap it reports."""
    proc = subprocess.run([*WIREPEEK, "-r", path, "--follow", str(conn_id), "--dir", direction],
                          cwd=ROOT, capture_output=True, check=True, timeout=60)
    gaps = re.findall(rb"connection %d: (\d+) \w+ bytes missing at offset (\d+)" % conn_id,
                      proc.stderr)
    return proc.stdout, [(int(offset), int(size)) for size, offset in gaps]


@pytest.mark.parametrize("path", [HTTP_GET, BIG], ids=["http-get", "1000-requests"])
def test_bytes_read_back_from_the_spool_are_what_follow_prints(path):
    name = str(path.relative_to(path.parents[1]))
    spool = Spool(256 * MiB)
    pipeline, events = _run(name, KEEP_ALL, spool)
    ids = sorted(e.info.id for e in events if isinstance(e, ConnectionClosed))
    checked = 0
    missed = 0
    for conn_id in ids[:3]:
        got = pipeline.kept_since(conn_id, 0)
        assert got is not None and not got.dropped
        for from_client, direction in ((True, "client"), (False, "server")):
            data = b"".join(d for fc, _ts, _off, d in got.entries
                            if fc == from_client and isinstance(d, bytes))
            gaps = [(off, d) for fc, _ts, off, d in got.entries
                    if fc == from_client and isinstance(d, int)]
            assert (data, gaps) == _follow(str(path), conn_id, direction)
            checked += len(data)
            missed += len(gaps)
    assert checked > 0
    spool.close()


def test_the_ring_bound_holds_and_what_it_overwrote_is_said_to_be_gone():
    capacity = 64 * 1024
    spool = Spool(capacity)
    pipeline = Pipeline(KEEP_ALL, spool=spool)
    source = sources.open_files([str(BIG)])
    events = []
    peak_memory = 0
    while (batch := source.next_batch()) is not None:
        events += pipeline.feed(batch)
        assert spool.file_size <= capacity
        peak_memory = max(peak_memory, pipeline.table.memory)
    source.close()
    events += pipeline.finish()
    assert spool.written > 10 * capacity  # the ring went round many times
    reference, reference_events = _run(str(BIG.relative_to(BIG.parents[1])), KEEP_ALL, None)
    ids = sorted(e.info.id for e in events if isinstance(e, ConnectionClosed))
    first = pipeline.kept_since(ids[0], 0)
    assert first is None or first.dropped or not first.entries
    last = pipeline.kept_since(ids[-1], 0)
    want = reference.kept_since(ids[-1], 0)
    assert last is not None and want is not None
    # What is still in the ring is the newest entries, exactly; anything older is said gone.
    assert last.entries == want.entries[len(want.entries) - len(last.entries):]
    if len(last.entries) < len(want.entries):
        assert last.dropped
    assert pipeline.stats().dropped_kept_bytes > 0
    # Memory stays that of the entries' index, far below the bytes that went through the ring.
    assert peak_memory < spool.written // 4
    spool.close()


def test_resends_compare_against_the_bytes_on_disk():
    """A resend of delivered bytes is marked same or different from what the spool holds."""
    from engine.connections import ConnectionTable
    from tests.feeding import Fed, flags, handshake, key
    from tests.test_reassembly import C0, REQ, S0, kept_entries

    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:20]),
        (True, "PA", C0, S0, REQ[:20]),
        (True, "PA", C0 + 10, S0, b"X" * 10 + REQ[20:]),
    ]
    spool = Spool(1 << 20)
    table = ConnectionTable(Bounds(), spool=spool)
    ts = 1000.0
    for from_client, fl, seq, ack, payload in segs:
        ts += 0.001
        table.segment(ts, key(from_client), seq, ack, flags(fl), 65535, payload, len(payload))
        table.end_batch(ts)
    fed = Fed(table, [], {})
    assert kept_entries(fed) == [
        (True, 0, REQ[:20]),
        (True, 0, Resent(20, False)),
        (True, 10, Resent(10, True)),
        (True, 20, REQ[20:]),
    ]
    assert table.connection(0).inconsistent == 1
    spool.close()


# --- live: a long capture on lo stays within the ring ------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_a_long_live_capture_stays_within_the_ring_and_the_newest_stream_is_exact():
    capacity = 64 * 1024
    conns = 30
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    source = sources.open_live(["lo"], f"tcp port {port}")
    spool = Spool(capacity)
    pipeline = Pipeline(KEEP_ALL, spool=spool, live_updates=True)
    sent: list[tuple[bytes, bytes]] = []

    def serve() -> None:
        for _ in range(conns):
            conn, _ = listener.accept()
            with conn:
                while chunk := conn.recv(65536):
                    conn.sendall(chunk.upper())

    def talk() -> None:
        for i in range(conns):
            with socket.create_connection(("127.0.0.1", port)) as s:
                out = back = b""
                for j in range(20):
                    message = (f"message {i}.{j} ".encode() * 40)[: 200 + 13 * j]
                    s.sendall(message)
                    out += message
                    want = len(out)
                    while len(back) < want:
                        back += s.recv(65536)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
                sent.append((out, back))

    server = threading.Thread(target=serve, daemon=True)
    client = threading.Thread(target=talk, daemon=True)
    server.start()
    client.start()
    deadline = time.monotonic() + 60
    events = []
    try:
        while time.monotonic() < deadline:
            batch = source.next_batch(0.1)
            if batch is not None and len(batch):
                events += pipeline.feed(batch)
            assert spool.file_size <= capacity
            closed = [e for e in events if isinstance(e, ConnectionClosed)]
            if not client.is_alive() and len(closed) >= conns:
                break
            events += pipeline.flush(time.time() + 40)  # closed connections leave the table
        client.join(timeout=10)
        server.join(timeout=10)
    finally:
        source.close()
        listener.close()
    assert len(sent) == conns
    total = sum(len(a) + len(b) for a, b in sent)
    assert total > 4 * capacity
    ids = sorted(e.info.id for e in events if isinstance(e, ConnectionClosed))
    assert len(ids) == conns
    newest = pipeline.kept_since(ids[-1], 0)
    assert newest is not None and not newest.dropped
    out, back = sent[-1]
    for from_client, want in ((True, out), (False, back)):
        assert b"".join(d for fc, _ts, _off, d in newest.entries
                        if fc == from_client and isinstance(d, bytes)) == want
    oldest = pipeline.kept_since(ids[0], 0)
    assert oldest is None or not oldest.entries
    assert pipeline.stats().dropped_kept_bytes > 0
    spool.close()


# --- the command line --------------------------------------------------------------------------


def test_the_interactive_view_spools_by_default_and_spool_0_keeps_streams_in_memory():
    from tui.cli import DEFAULT_SPOOL, build_parser, interactive_bounds

    parser = build_parser()
    assert interactive_bounds(parser.parse_args(["-r", "x"]))[0].spool_bytes == DEFAULT_SPOOL
    assert interactive_bounds(parser.parse_args(["--spool", "8", "-r", "x"]))[0].spool_bytes == 8 * MiB
    assert interactive_bounds(parser.parse_args(["--spool", "0", "-r", "x"]))[0].spool_bytes == 0


def test_a_negative_spool_is_a_usage_error():
    proc = subprocess.run([*WIREPEEK, "--spool", "-1", "-r", str(HTTP_GET)], cwd=ROOT,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert b"--spool is in MiB and cannot be negative (got -1)" in proc.stderr
    assert b"Traceback" not in proc.stderr
