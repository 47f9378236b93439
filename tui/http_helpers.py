"""HTTP parsing of capture files in helper processes, for the interactive app (and that of the
other protocols engine.protocols registers, whose `Transaction`s travel as HTTP exchanges do).

Reading a capture file, the app's capture thread used to parse HTTP too, sharing one core (and
the GIL) with the screen: on a keep-alive file of 160,000 exchanges that was most of a 16 s load.
For a file that can be read again, `jobs` helper processes read it under the filter, each
tracking and parsing a share of the connections (`Pipeline(shard=...)`, as `--json --jobs`
does), and the capture thread reads nothing (`rows`): a helper sends one message per batch
with the packet number at which each of its new connections opened, the rows of the
connections the batch changed, its exchanges, already encoded for the store's ring file
(tui.exchange_log), each with what its connection's row shows, and its counters.

The app numbers the connections as one process reading the file would, in the order they
opened: once every helper has read past packet N, every connection opened before N is known
(`HttpHelpers.take` takes a helper's messages only that far). The follow view's bytes are read
again from the file for the connection on screen (tui.follow).

A live capture is read by a capture process into a feed on disk (tui.live_feed), which the
capture thread and the helpers each read as it grows, so they number its packets alike. There
the capture thread tracks every connection (for the rows and the follow view), and the helpers
parse: a connection opened at packet N in a helper is the one the capture thread opened at
packet N, and `take` maps the helpers' connections to the app's ids that way, taking a helper's
message only once the capture thread has read as far as it. An exchange of a connection the
capture thread does not have (evicted by a bound at another time than in the helper) is not
shown, and counted.

The helpers are started from a fork server (not forked from the app, which runs threads), and
are killed when the file is read again under another filter or the app ends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from multiprocessing import forkserver
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any, NamedTuple

from engine import sources
from engine.batch import Batch
from engine.bounds import Bounds
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    Event,
    HttpRequest,
    HttpRequestSeen,
    Stats,
)
from engine.http import DEFAULT_MAX_BODY
from engine.keylog import KeyLog, open_keys
from engine.pipeline import Pipeline
from engine.tcp import Connection
from tui import collector
from tui.exchange_log import EncodedExchanges
from tui.live_feed import BATCH, END, FLUSH, SKIP, FeedCapture, FeedReader, LiveFeed
from tui.sharded import number_in_order, share_of


class Message(NamedTuple):
    through: int  # packets the helper has read (the capture thread must have read as many)
    opened: list[int]  # the first packet of each connection it opened, in id order
    exchanges: EncodedExchanges  # under the helper's connection ids
    # Requests of a live capture waiting for their answer (HttpRequestSeen): connection, request.
    seen: list[tuple[int, HttpRequest]]
    progress: tuple[int, int] | None  # of its reading of the files
    final: bool
    passed_over: int = 0  # packets of a live feed it did not parse, being too far behind
    # A file's helper that gives the rows too (HttpHelpers(rows=True)): its connections' changes
    # in the batch, sent with the batch's first message, each (OPENED, UPDATED or CLOSED, why
    # it closed, then the connection's fields as it was: a plain tuple pickles in a third of
    # the time); its pipeline's counters (engine.events.Stats' fields); and with its last
    # message, what went wrong reading the files.
    rows: Sequence[tuple[Any, ...]] = ()
    stats: tuple[Any, ...] | None = None
    error: str | None = None


OPENED, UPDATED, CLOSED = 0, 1, 2
STATS_FIELDS = tuple(field.name for field in dataclass_fields(Stats))
# Stats' counters of packets: every helper reads every packet and counts it (the rest are its
# share's: its connections).
PACKET_COUNTS = frozenset({"ts", "packets", "bytes", "tcp_packets", "udp_packets", "other_packets",
                           "malformed", "truncated", "fragments", "fragments_dropped"})


def _rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """The connections' changes among a pipeline's events (`Message.rows`)."""
    rows: list[tuple[Any, ...]] = []
    for event in events:
        kind = type(event)
        if kind is ConnectionUpdated:
            rows.append((UPDATED, "", *event.info))  # type: ignore[attr-defined]
        elif kind is ConnectionOpened:
            rows.append((OPENED, "", *event.info))  # type: ignore[attr-defined]
        elif kind is ConnectionClosed:
            rows.append((CLOSED, event.reason, *event.info))  # type: ignore[attr-defined]
    return rows


def _stats_fields(pipeline: Pipeline) -> tuple[Any, ...]:
    stats = pipeline.stats()
    return tuple(getattr(stats, name) for name in STATS_FIELDS)


PIPE_BYTES = 1 << 20
"""What a helper's pipe holds (Linux's default is 64 KiB, and fs.pipe-max-size 1 MiB): the app's
receiving thread needs the GIL again after every read, which the screen and the capture thread
hold, so a message of a megabyte through a small pipe took tens of such waits."""


def _widen(pipe: Pipe) -> None:
    """Let `pipe` hold PIPE_BYTES, or as much as the system allows (Linux; elsewhere as it is)."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


RECORDS_LENGTH = struct.Struct("<Q")
"""What comes before a message's records in its helper's pipe: their length."""


def _send(out: Pipe, message: Message) -> None:
    """A message, its exchanges' records first as bytes of their own (their length, then
    themselves, written straight to the pipe): pickled with the rest they would be copied once
    more on either side (a megabyte a message, which the app's allocator kept), and
    multiprocessing's own bytes messages are copied once more on the way in."""
    records, message.exchanges.records = message.exchanges.records, bytearray()
    fd = out.fileno()
    _write_all(fd, RECORDS_LENGTH.pack(len(records)))
    _write_all(fd, records)
    out.send(message)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int) -> bytearray:
    """`size` bytes from `fd`, read straight into the bytearray returned (EOFError if it ends
    before)."""
    out = bytearray(size)
    view = memoryview(out)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if not n:
            raise EOFError
        got += n
    return out


def _received(receiver: Pipe) -> Message:
    """What `_send` sent."""
    fd = receiver.fileno()
    (size,) = RECORDS_LENGTH.unpack(_read_exactly(fd, RECORDS_LENGTH.size))
    records = _read_exactly(fd, size)
    message: Message = receiver.recv()
    message.exchanges.records = records
    return message


def bounds_as_fields(bounds: Bounds) -> dict[str, Any]:
    """`bounds` as its fields, for a helper's arguments: Python 3.11 cannot unpickle a frozen
    dataclass with slots."""
    return {field.name: getattr(bounds, field.name) for field in dataclass_fields(bounds)}


def _pipeline(bound_fields: dict[str, Any], body_limit: int, shard: tuple[int, int],
              announce: bool, keylogs: tuple[str, ...] = (), files: list[str] | tuple[str, ...] = (),
              listing: str | None = None, rows: bool = False) -> tuple[Pipeline, list[int]]:
    """A helper's pipeline, and the list to which it adds the first packet of each connection it
    opens (the helper sends and clears it with each message). keylogs: the key logs' paths,
    to decrypt TLS with (each process reads them, and again as they grow), with the secrets in
    the capture files; listing: a file naming key logs loaded later (a live capture's); rows:
    its connections' changes are among its events, as the app's rows show them. Its HTTP/1.x
    exchanges come as records already (Pipeline(records=True)): a helper only sends records."""
    # The bounds come as their fields (see `bounds_as_fields`).
    opened: list[int] = []

    def note_open(conn: Connection, emit: Callable[[Event], None]) -> None:
        opened.append(conn.first_packet)

    keys = open_keys(None, files)
    for path in keylogs:
        if keys is None:
            keys = KeyLog()
        with contextlib.suppress(OSError):  # (gone since the app read it)
            keys.add_file(path)
    if listing is not None:
        if keys is None:
            keys = KeyLog()
        keys.watch(listing)
    pipeline = Pipeline(Bounds(**bound_fields), consumers={None: [note_open]},
                        http_body_limit=body_limit, shard=shard, announce=announce, keylog=keys,
                        live_updates=rows, records=True)
    collector.headless()
    return pipeline, opened


MESSAGE_EVENTS = 512
"""A file helper's events one message carries at most: its exchanges' records are the bulk of
what the app holds in flight (~0.7 MB for 512 keep-alive exchanges with realistic heads; a
4096-packet batch gave ~1.4 MB): AHEAD of them a helper, and those of about
tui.capture.FILE_UPDATE_EXCHANGES between the capture thread and the screen, freed and allocated
again as the file is read."""


def _helper(files: list[str], bpf: str, bound_fields: dict[str, Any], body_limit: int,
            shard: tuple[int, int], out: Pipe, keylogs: tuple[str, ...] = (),
            rows: bool = False) -> None:
    """A file's helper; with `rows`, it sends its connections' rows and counters too
    (`Message.rows`), for an app that does not read the file itself."""
    try:
        source = sources.open_files(files, bpf)
    except sources.CaptureError as e:
        # (Without rows the capture thread says why, having failed to open them too.)
        _send(out, Message(0, [], EncodedExchanges(), [], None, True,
                           error=str(e) if rows else None))
        out.close()
        return
    pipeline, opened = _pipeline(bound_fields, body_limit, shard, announce=False,
                                 keylogs=keylogs, files=files, rows=rows)
    try:
        while True:
            batch = source.next_batch()
            events = pipeline.feed(batch) if batch is not None else pipeline.finish()
            collector.after_batch()
            final = batch is None
            progress = None if final else source.progress()
            changed = _rows(events) if rows else []
            stats = _stats_fields(pipeline) if rows else None
            # A batch's events in parts, each part's exchanges a message; the connections the
            # batch changed go with the first (before any exchange of theirs).
            parts = range(0, len(events), MESSAGE_EVENTS) if events else range(1)
            for start in parts:
                exchanges = EncodedExchanges()
                exchanges.collect(events[start:start + MESSAGE_EVENTS])
                last = start + MESSAGE_EVENTS >= len(events)
                _send(out, Message(pipeline.packets, opened[:], exchanges, [], progress,
                                   final and last, rows=changed, stats=stats,
                                   error=source.error if final and last else None))
                opened.clear()
                changed = []
            if final:
                break
    except (BrokenPipeError, EOFError):
        pass  # the app went, or read the file again
    finally:
        source.close()
        out.close()


NICE = 5  # a live helper's lower priority
IDLE = 0.01  # seconds a live helper waits for the feed to grow
SEND_EVERY = 0.1  # seconds between a busy live helper's messages at most
HEARTBEAT = 0.5  # seconds between a live helper's messages at most (a gone app ends it)


def _live_helper(directory: str, lag_files: int, bound_fields: dict[str, Any], body_limit: int,
                 shard: tuple[int, int], out: Pipe, keylogs: tuple[str, ...] = (),
                 listing: str | None = None) -> None:
    """A live capture's helper. When it is `lag_files` files of the feed behind the capture
    process, it passes over batches without parsing them (their connections' exchanges come
    with missing bytes, as after a gap) until it is within half of that: so the feed's bound is
    not filled by HTTP parsing that cannot keep up, and the capture thread loses nothing."""
    # Behind the capture process and the capture thread, which must keep up with the traffic,
    # when the cores are short (the traffic's own programs may be on the same machine).
    os.nice(NICE)
    reader = FeedReader(directory)
    pipeline, opened = _pipeline(bound_fields, body_limit, shard, announce=True, keylogs=keylogs,
                                 listing=listing)
    exchanges = EncodedExchanges()
    # Requests waiting for their answer, by (connection, offset): the latest word on each, in
    # the order first seen, and none whose exchange goes in the same message.
    seen: dict[tuple[int, int], HttpRequest] = {}
    sent = time.monotonic()
    checked = -1  # the feed's file whose lag was looked at
    try:
        while True:
            if reader.index != checked:
                checked = reader.index
                reader.passing = reader.behind(lag_files // 2 if reader.passing else lag_files)
            record = reader.next()
            now = time.monotonic()
            if record is None:  # all that was written is read: say what came of it, if anything
                due = bool(exchanges or opened or seen) or now - sent >= HEARTBEAT
            else:  # busy: enough for one message, or time to say how far it is (files can go)
                due = len(exchanges) >= 4096 or now - sent >= SEND_EVERY
            if due:
                _send(out, Message(pipeline.packets, opened[:], exchanges,
                                 [(conn, request) for (conn, _), request in seen.items()],
                                 None, False, reader.passed_over))
                opened.clear()
                seen.clear()
                exchanges = EncodedExchanges()
                sent = now
            if record is None:
                time.sleep(IDLE)
                continue
            kind, linktype, value, data, meta = record
            if kind == BATCH:
                events = pipeline.feed(Batch(linktype, data, meta))
                collector.after_batch()
            elif kind == FLUSH:
                events = pipeline.flush(value)
            elif kind == SKIP:
                pipeline.skip(int(value))
                continue
            elif kind == END:
                events = pipeline.finish()
            else:
                continue  # the kernel's counters, an error: the capture thread's to show
            exchanges.collect(events, seen)
            if kind == END:
                _send(out, Message(pipeline.packets, opened[:], exchanges, [], None, True,
                                 reader.passed_over))
                break
    except (BrokenPipeError, EOFError):
        pass  # the app went
    finally:
        reader.close()
        out.close()


READ_ALL = 1 << 62  # a helper's packets read, once it has sent its last message


def _renamed_rows(rows: Sequence[tuple[Any, ...]], ids: list[int]) -> list[Event]:
    """A helper's connection changes (`Message.rows`) as events, under the app's ids."""
    events: list[Event] = []
    for row in rows:
        kind = row[0]
        info = ConnectionInfo(ids[row[2]], *row[3:])
        if kind == UPDATED:
            events.append(ConnectionUpdated(info))
        elif kind == OPENED:
            events.append(ConnectionOpened(info))
        else:
            events.append(ConnectionClosed(info, row[1]))
    return events


AHEAD = 1
"""Messages a file's helper may have waiting in the app before it is left to wait on its pipe
(each of at most MESSAGE_EVENTS events: more ahead only held more records in memory; with its
pipe's PIPE_BYTES, a helper still has about a message more to write before it waits)."""
LIVE_AHEAD = 4
"""The same for a live capture's helper, whose messages come by time (SEND_EVERY): one left to
wait falls behind the feed, and past `lag_files` passes over batches unparsed."""

_context: Any = None


def _start_method() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        # Each helper imports the main module again (multiprocessing does, in every child): the
        # command line's, tui.cli, is imported once by the server instead (a helper started
        # 170-190 ms after it was asked, now 25-30 ms).
        _context.set_forkserver_preload(["tui.http_helpers", "tui.cli"])
    return _context


def prepare() -> None:
    """Start the fork server now, before the app takes over the terminal: it is started with
    the process's standard error, which Textual replaces with a stream that has no descriptor."""
    _start_method()
    forkserver.ensure_running()


class HttpHelpers:
    """`jobs` helper processes parsing the HTTP of capture files; the capture thread takes
    their exchanges with `take`."""

    def __init__(self, files: tuple[str, ...], bpf: str, bounds: Bounds, jobs: int,
                 body_limit: int = DEFAULT_MAX_BODY, feed: FeedCapture | None = None,
                 keylogs: tuple[str, ...] = (), listing: str | None = None,
                 rows: bool = False) -> None:
        """Helpers reading `files` under `bpf`, or, given a live capture's feed, what it holds
        (then `files` and `bpf` are not used); keylogs: key logs' paths, to decrypt TLS with;
        listing: a file naming key logs loaded later (a live capture's). rows (files only): the
        capture thread does not read the files; the helpers give the connections' rows too,
        which `take` numbers in the order they opened, as one process reading them would."""
        context = _start_method()
        self.feed = feed
        self.rows = rows and feed is None
        share = replace(
            share_of(bounds, jobs),
            keep_stream_bytes=0,  # the follow view's: the capture thread's, or read again
            keep_after_close=False,
            spool_bytes=0,
        )
        self.receivers: list[Pipe] = []
        self.procs: list[Any] = []
        fields = bounds_as_fields(share)
        for i in range(jobs):
            receiver, sender = context.Pipe(duplex=False)
            _widen(receiver)
            if feed is None:
                target, args = _helper, (list(files), bpf, fields, body_limit, (i, jobs), sender,
                                         keylogs, self.rows)
            else:
                # Behind by three eighths of the feed's bound, a helper passes over batches;
                # holding half of it, its files go anyway (it jumps over them): the rest is the
                # capture thread's, which must not be left behind for HTTP.
                lag = max(2, feed.limit * 3 // 8 // LiveFeed.SEGMENT)
                target, args = _live_helper, (feed.dir, lag, fields, body_limit, (i, jobs),
                                              sender, keylogs, listing)
            proc = context.Process(target=target, args=args, daemon=True)
            proc.start()
            sender.close()
            self.receivers.append(receiver)
            self.procs.append(proc)
        self.ahead = AHEAD if feed is None else LIVE_AHEAD
        # Filled by a thread of their own as messages come (a helper waits while its pipe is
        # full), at most `ahead` a helper; emptied by `take`.
        self.queues: list[deque[Message]] = [deque() for _ in range(jobs)]
        self.ids: list[list[int]] = [[] for _ in range(jobs)]  # the app's id of each helper's ids
        self.received_all = [False] * jobs
        self.done = [False] * jobs  # its last message was taken
        self.progress_of: list[tuple[int, int] | None] = [(0, 1)] * jobs
        self.taken_through = [0] * jobs  # packets of each helper's messages taken
        self.passed_over = [0] * jobs  # packets each did not parse, too far behind a live feed
        self.closing = False
        self.unmapped = 0  # exchanges of connections the capture thread does not have
        self.error: str | None = None
        # The app's id of each connection by the packet that opened it, from the capture
        # thread's events, in that order (first packets grow with ids), until every helper is past.
        self.opened_at: dict[int, int] = {}
        self._order: deque[int] = deque()
        # With rows: the first packet of each helper's connections not numbered yet (in its id
        # order, which is theirs), and the packets each has read in the messages received, set
        # after those (a helper's connections to come open at or past it).
        self.firsts: list[deque[int]] = [deque() for _ in range(jobs)]
        self.received_through = [0] * jobs
        self.next_id = 0  # the app's id of the next connection numbered
        self.stats_of: list[tuple[Any, ...] | None] = [None] * jobs  # each one's last counters
        self._taken = threading.Event()  # take made room in a queue
        self.arrived = threading.Event()  # a message came since the last take
        self._receiver = threading.Thread(target=self._receive, name="http-helpers", daemon=True)
        self._receiver.start()

    def note(self, first_packet: int, conn_id: int) -> None:
        """The capture thread opened connection `conn_id` at packet `first_packet`."""
        if first_packet not in self.opened_at:
            self.opened_at[first_packet] = conn_id
            self._order.append(first_packet)

    @property
    def finished(self) -> bool:
        return all(self.done)

    def progress(self) -> tuple[int, int] | None:
        """The slowest helper's reading of the files (bytes read, bytes in all)."""
        known = [p for p, done in zip(self.progress_of, self.done, strict=True)
                 if p is not None and not done]
        return min(known, key=lambda p: p[0] / max(1, p[1])) if known else None

    def _receive(self) -> None:
        """The receiving thread: each message as it comes, into its helper's queue."""
        receivers, queues = self.receivers, self.queues
        while not all(self.received_all):
            ready = [r for i, r in enumerate(receivers)
                     if not self.received_all[i] and len(queues[i]) < self.ahead]
            if not ready:
                self._taken.wait(0.1)  # every queue with room is full: wait for take
                self._taken.clear()
                continue
            try:
                ready = wait(ready, 0.1)
            except (OSError, ValueError):
                return  # closed
            for receiver in ready:
                i = receivers.index(receiver)  # type: ignore[arg-type]
                try:
                    message = _received(receiver)  # type: ignore[arg-type]
                except (EOFError, OSError, ValueError):
                    message = Message(0, [], EncodedExchanges(), [], None, True)
                    if not self.closing:
                        self.error = self.error or (
                            f"HTTP parsing stopped: helper process {i} ended unexpectedly")
                if self.rows:
                    self.firsts[i].extend(message.opened)
                    self.received_through[i] = READ_ALL if message.final else message.through
                queues[i].append(message)
                self.received_all[i] = message.final
                self.arrived.set()

    def take(self, packets: int, finished: bool) -> tuple[list[EncodedExchanges], list[Event]]:
        """The exchanges the helpers have sent for packets the capture thread has read, and the
        requests they saw waiting for their answer, with the app's connection ids (-1 for a
        connection the capture thread does not have: the store counts those as evicted).
        packets: how many the capture thread has read; finished: it has read them all.
        With rows, the capture thread reads nothing (`packets` and `finished` are not used):
        the exchanges and the connections' changes (before those) as far as every helper has
        read, once the connections opened that far are numbered."""
        self.arrived.clear()
        opened_at = self.opened_at
        out: list[EncodedExchanges] = []
        waiting: list[Event] = []
        if self.rows:
            packets = self._number()
            finished = False
        for i, queue in enumerate(self.queues):
            ids = self.ids[i]
            while queue and (finished or queue[0].through <= packets):
                message = queue.popleft()
                if self.rows:
                    waiting += _renamed_rows(message.rows, ids)
                    if message.stats is not None:
                        self.stats_of[i] = message.stats
                    if message.error is not None:
                        self.error = self.error or message.error
                else:
                    ids += [opened_at.get(first, -1) for first in message.opened]
                for local, request in message.seen:
                    if ids[local] >= 0:
                        waiting.append(HttpRequestSeen(ids[local], request))
                if len(message.exchanges):
                    renamed = message.exchanges.renamed(ids)
                    self.unmapped += renamed.connections.count(-1)
                    out.append(renamed)
                self.taken_through[i] = message.through
                self.passed_over[i] = message.passed_over
                self.progress_of[i] = message.progress
                if message.final:
                    self.done[i] = True
        # What every helper is past is not asked for again: the map stays the size of the
        # connections opened between the slowest helper and the capture thread.
        self._taken.set()
        past, order = min(self.taken_through), self._order
        while order and order[0] < past:
            opened_at.pop(order.popleft(), None)
        if self.feed is not None:
            # The feed's files every reader is past, and those past half of its bound.
            self.feed.reader.release(past, max(1, self.feed.limit // 2 // LiveFeed.SEGMENT))
        return out, waiting

    def _number(self) -> int:
        """With rows: the app's ids of the connections every helper has opened as far as the
        slowest has read; how far that is."""
        through = min(self.received_through)
        opened: list[tuple[int, int]] = []
        for i, firsts in enumerate(self.firsts):
            while firsts and firsts[0] < through:
                opened.append((firsts.popleft(), i))
        self.next_id = number_in_order(opened, self.ids, self.next_id)
        return through

    def through(self) -> int:
        """The packets the messages taken from every helper cover (with rows: the file is read
        as far for the app as that)."""
        return min(self.taken_through)

    def stats(self) -> Stats:
        """With rows: the pipeline's counters, as one process reading as far as every helper's
        messages taken would count them (its packets as the slowest's; its connections in all)."""
        known = [stats for stats in self.stats_of if stats is not None]
        values: dict[str, Any] = {}
        for n, name in enumerate(STATS_FIELDS):
            each = [stats[n] for stats in known if stats[n] is not None]
            if name in PACKET_COUNTS:
                values[name] = min(each) if each else (None if name == "ts" else 0)
            else:
                values[name] = sum(each)
        return Stats(**values)

    def close(self) -> None:
        self.closing = True
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.join(timeout=5)
        self._taken.set()
        self._receiver.join(timeout=5)  # the pipes end with the helpers
        for receiver in self.receivers:
            receiver.close()
