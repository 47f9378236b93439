"""HTTP parsed in helper processes (tui.http_helpers) gives the app exactly the exchanges (and
other protocols' transactions) that parsing in the capture thread gives, under the same
connection ids, for every bundled capture."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import fields

import pytest

from engine import COMPILED
from engine.bounds import Bounds
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    HttpTransaction,
    Stats,
    Transaction,
)
from tests.captures import all_captures, capture
from tui import capture as capture_module
from tui import http_helpers
from tui.capture import CaptureDriver, SourceSpec
from tui.exchange_log import EncodedExchanges, decode, row_of
from tui.http_helpers import HttpHelpers
from tui.messages import EngineUpdate

Exchange = tuple[int, bytes, str, int, int]  # connection, record, request line, status, offset


def drive(path: str, jobs: int, bpf: str = "", refilter: str | None = None
          ) -> tuple[list[EngineUpdate], list[Exchange], set[int]]:
    """Read a file with the capture driver as the app does (taking every update at once); its
    updates, the exchanges they carried (of the last reading of the file) and the connections."""
    posted: list[EngineUpdate] = []
    driver: CaptureDriver

    def post(message: object) -> None:
        if isinstance(message, EngineUpdate):
            posted.append(message)
            driver.taken.set()

    driver = CaptureDriver(SourceSpec(files=(path,)), bpf, Bounds(keep_after_close=True), post,
                           jobs=jobs)
    stop = threading.Event()
    worker = threading.Thread(target=driver.run, args=(stop.is_set,))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        generation = 0
        if refilter is not None:
            while not posted and time.monotonic() < deadline:
                time.sleep(0.005)
            driver.set_filter(refilter)
            generation = 1
        while time.monotonic() < deadline and not (
                posted and posted[-1].generation == generation and posted[-1].status.finished):
            time.sleep(0.005)
        assert posted and posted[-1].status.finished, "the file was not read to its end in time"
        assert posted[-1].generation == generation, "the new reading was not posted"
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    exchanges: list[Exchange] = []
    connections: set[int] = set()
    for update in posted:
        if update.generation != generation:
            continue
        for event in update.events:
            if isinstance(event, (HttpTransaction, Transaction)):
                one = EncodedExchanges()
                one.add(event.connection, event)
                exchanges += one
            elif isinstance(event, (ConnectionOpened, ConnectionClosed)):
                connections.add(event.info.id)
        for batch in update.exchanges:
            exchanges += batch
    assert all(conn_id in connections for conn_id, *_ in exchanges)
    return posted, exchanges, connections


def rows(posted: list[EngineUpdate]) -> dict[int, tuple[ConnectionInfo, str]]:
    """Each connection as the updates last showed it, and why it closed ("" while open)."""
    out: dict[int, tuple[ConnectionInfo, str]] = {}
    for update in posted:
        for event in update.events:
            if isinstance(event, (ConnectionOpened, ConnectionUpdated)):
                out[event.info.id] = (event.info, "")
            elif isinstance(event, ConnectionClosed):
                out[event.info.id] = (event.info, event.reason)
    return out


def counters(stats: Stats) -> dict[str, object]:
    """The pipeline's counters, but what its memory holds (each helper holds its share)."""
    return {field.name: getattr(stats, field.name) for field in fields(stats)
            if field.name not in ("memory_used", "connections_active")}


def by_connection(exchanges: list[Exchange]) -> dict[int, list[tuple[HttpTransaction, str, int]]]:
    """Each connection's exchanges, decoded (marshal's bytes for equal values may differ)."""
    out: dict[int, list[tuple[HttpTransaction, str, int]]] = {}
    for conn_id, blob, line, status, _ in exchanges:
        out.setdefault(conn_id, []).append((decode(blob, conn_id), line, status))
    return out


# Both sides run the same engine build, so what this compares (the helpers' plumbing and id
# mapping, tui code) is the same on either: on the plain Python engine, every fourth capture.
CAPTURES = all_captures() if COMPILED else all_captures()[::4]


@pytest.mark.parametrize("name", CAPTURES)
def test_helpers_give_the_exchanges_the_capture_thread_gives(name):
    path = capture(name)
    posted_alone, alone, conns_alone = drive(path, jobs=0)
    posted, helped, conns_helped = drive(path, jobs=2)
    assert conns_helped == conns_alone
    # The rows, given by the helpers (the capture thread reads nothing), are the capture
    # thread's: each connection as it was last shown, and why it closed.
    assert rows(posted) == rows(posted_alone)
    assert counters(posted[-1].stats) == counters(posted_alone[-1].stats)
    # Connections may interleave otherwise; each one's exchanges are the same, in order.
    assert by_connection(helped) == by_connection(alone)
    assert not [u.events for u in posted
                if any(isinstance(e, (HttpTransaction, Transaction)) for e in u.events)]
    assert posted[-1].status.error is None
    for conn_id, blob, line, status, _ in helped:
        tx = decode(blob, conn_id)
        assert tx.connection == conn_id and row_of(tx) == (line, status)


def test_a_files_update_carries_the_exchanges_of_few_helper_messages(monkeypatch):
    """A file's exchanges in flight between the helpers and the store (the app's peak above what
    it keeps) are bounded by FILE_UPDATE_EXCHANGES: with it at 1, an update carries what one take
    found, at most AHEAD messages (of at most MESSAGE_EVENTS events) per helper."""
    monkeypatch.setattr(capture_module, "FILE_UPDATE_EXCHANGES", 1)
    path = capture("zeek/http__1000-requests-one-dropped-response.pcap")
    posted, exchanges, _ = drive(path, jobs=1)
    sizes = [sum(len(batch) for batch in update.exchanges) for update in posted]
    assert sum(sizes) == len(exchanges) == 1000
    assert max(sizes) <= http_helpers.AHEAD * http_helpers.MESSAGE_EVENTS
    assert len([size for size in sizes if size]) >= 2


def test_a_new_filter_reads_the_file_again_with_new_helpers():
    path = capture("zeek/http__get.pcap")
    _, everything, _ = drive(path, jobs=2)
    assert len(everything) == 1
    _, none, _ = drive(path, jobs=2, refilter="tcp port 1")
    assert none == []
    _, again, _ = drive(path, jobs=2, bpf="tcp port 1", refilter="tcp port 80")
    assert list(by_connection(again).values()) == list(by_connection(everything).values())


def test_a_helper_that_dies_is_reported(tmp_path):
    # A named pipe with no writer: the helpers wait in its open, where they are killed.
    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)
    helpers = HttpHelpers((str(fifo),), "", Bounds(), jobs=2)
    try:
        time.sleep(0.2)
        for proc in helpers.procs:
            proc.kill()
            proc.join(5)
        deadline = time.monotonic() + 10
        while not helpers.finished and time.monotonic() < deadline:
            helpers.arrived.wait(0.1)
            assert helpers.take(packets=0, finished=True) == ([], [])
        assert helpers.finished
        assert helpers.error == "HTTP parsing stopped: helper process 0 ended unexpectedly"
    finally:
        helpers.close()


def test_the_helpers_pipes_hold_a_message_at_once():
    """The app's receiving thread waits for the GIL after every read of a pipe: a pipe of
    Linux's default 64 KiB made a helper wait dozens of times a message."""
    fcntl = pytest.importorskip("fcntl")
    helpers = HttpHelpers((capture("zeek/http__get.pcap"),), "", Bounds(), jobs=2)
    try:
        sizes = [fcntl.fcntl(r.fileno(), getattr(fcntl, "F_GETPIPE_SZ", 1032)) for r in helpers.receivers]
        assert sizes == [http_helpers.PIPE_BYTES] * 2
    finally:
        helpers.close()


def test_a_messages_records_come_whole_through_the_pipe_and_an_ending_among_them_is_eof():
    """The records go through the pipe as their length and themselves (read straight into
    the app's buffer): several times what the pipe holds come whole and in order, an empty
    message too; a helper that ends among them is an ending (EOFError), not records cut short."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    records = [bytes(range(256)) * (5 * http_helpers.PIPE_BYTES // 256 + 7), b"", b"x" * 1000]

    def send() -> None:
        for blob in records:
            exchanges = EncodedExchanges()
            exchanges.records = bytearray(blob)
            http_helpers._send(sender, http_helpers.Message(1, [], exchanges, [], None, False))
        os.write(sender.fileno(), http_helpers.RECORDS_LENGTH.pack(100) + b"cut")
        sender.close()

    writer = threading.Thread(target=send)
    writer.start()
    try:
        got = [bytes(http_helpers._received(receiver).exchanges.records) for _ in records]
        assert got == records
        with pytest.raises(EOFError):
            http_helpers._received(receiver)
    finally:
        writer.join(10)
        receiver.close()


def helper_messages(target, *args) -> list[http_helpers.Message]:
    """What a helper (`_helper` or `_live_helper`, given its arguments but the pipe) sends, run
    in a thread of this process, to its last message."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    helper = threading.Thread(target=target, args=(*args, sender))
    helper.start()
    messages = []
    while not (messages and messages[-1].final):
        assert receiver.poll(30), "the helper sent nothing for 30 s"
        messages.append(http_helpers._received(receiver))
    helper.join(10)
    receiver.close()
    return messages


def file_helper_messages(monkeypatch, path: str, per_message: int) -> list[http_helpers.Message]:
    """What a file helper sends for `path` with MESSAGE_EVENTS at `per_message` (and this
    process's collector left as it is)."""
    monkeypatch.setattr(http_helpers, "MESSAGE_EVENTS", per_message)
    monkeypatch.setattr(http_helpers.collector, "headless", lambda: None)
    monkeypatch.setattr(http_helpers.collector, "after_batch", lambda: None)
    return helper_messages(http_helpers._helper, [path], "", http_helpers.bounds_as_fields(Bounds()),
                           http_helpers.DEFAULT_MAX_BODY, (0, 1))


@pytest.mark.parametrize("name", ["zeek/http__1000-requests-one-dropped-response.pcap",
                                  "zeek/http__methods.pcap"])
def test_a_helper_sends_a_batchs_exchanges_in_messages_of_bounded_size(monkeypatch, name):
    """The records of a helper's messages are most of what the app holds in flight while it
    reads a file: a message carries at most MESSAGE_EVENTS events' exchanges, and the parts
    together are what one message a batch gives, with the same connections opened, in order."""
    whole = file_helper_messages(monkeypatch, capture(name), 1 << 20)
    parts = file_helper_messages(monkeypatch, capture(name), 7)
    assert max(len(m.exchanges) for m in parts) <= 7
    assert len(parts) > len(whole)
    for messages in (whole, parts):
        assert [m.final for m in messages] == [False] * (len(messages) - 1) + [True]
        assert [m.through for m in messages] == sorted(m.through for m in messages)

    def joined(messages):
        exchanges = [x for m in messages for x in m.exchanges]
        return exchanges, [first for m in messages for first in m.opened]

    assert len(joined(whole)[0]) > 40
    assert joined(parts) == joined(whole)


def test_a_file_helper_has_at_most_ahead_messages_waiting_in_the_app():
    """What waits in the app for the capture thread is bounded: a file's helper with more
    messages to send than AHEAD is left waiting on its pipe until `take` makes room."""
    path = capture("zeek/http__1000-requests-one-dropped-response.pcap")  # 3 messages, one helper
    helpers = HttpHelpers((path,), "", Bounds(), jobs=1)
    try:
        assert helpers.ahead == http_helpers.AHEAD == 1
        deadline = time.monotonic() + 30
        while len(helpers.queues[0]) < helpers.ahead and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # time for a second to arrive, were it let in
        assert len(helpers.queues[0]) == helpers.ahead and not helpers.received_all[0]
        taken = 0
        while not helpers.finished and time.monotonic() < deadline:
            exchanges, _ = helpers.take(packets=1 << 30, finished=True)
            taken += sum(len(batch) for batch in exchanges)
            helpers.arrived.wait(0.1)
        assert helpers.finished and taken == 1000
    finally:
        helpers.close()


def test_a_truncated_file_is_reported_as_the_capture_thread_reports_it(tmp_path):
    """The helpers read the file alone: what went wrong reading it comes from them, the same."""
    whole = open(capture("zeek/http__1000-requests-one-dropped-response.pcap"), "rb").read()
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[:100_000])
    alone, alone_exchanges, _ = drive(str(path), jobs=0)
    helped, helped_exchanges, _ = drive(str(path), jobs=2)
    assert "truncated after 298 packets" in (alone[-1].status.error or "")
    assert helped[-1].status.error == alone[-1].status.error
    assert by_connection(helped_exchanges) == by_connection(alone_exchanges)
    assert counters(helped[-1].stats) == counters(alone[-1].stats)
