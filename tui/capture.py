"""The capture driver: the only UI-side code that touches the engine, run in a worker thread.

It owns the source and the pipeline, reads batches, and posts one `EngineUpdate` per tick to the
app (and a `FilterApplied` for each filter change). It never touches a widget, and the app never
reads the engine's objects. The app uses only this much of it:

- `run(cancelled)`: the worker thread's loop (the app starts it in a thread worker);
- `set_filter(expression)`: a new capture filter, answered by a `FilterApplied` message;
- `follow`: the connection whose kept stream the updates carry (the app's selection);
- `resend()`: send that stream again from its start;
- `taken`: set by the app once it has taken an update, so the driver may post the next;
- `hold_until`: set by the app when a key comes, so the driver reads nothing meanwhile;
- `packets`: the recent-packet ring, read by the app's own worker threads (`pick`) and for
  the memory reading (`bytes`, `dropped_batches`);
- `bpf`: the filter it was started with, for the prompt before the first update says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from engine import sources
from engine.batch import Batch
from engine.bounds import Bounds
from engine.decrypted import DecryptedStreams
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    Event,
    HttpRequestSeen,
    HttpTransaction,
    Transaction,
)
from engine.http import DEFAULT_MAX_BODY
from engine.keylog import KeyLog, KeyLogFile, open_keys
from engine.pipeline import Pipeline
from engine.procs import Attribution, owners_text
from engine.protocols import PROTOCOLS
from engine.remote import RemoteCaptures
from engine.spool import Spool
from tui import http_helpers
from tui.exchange_log import EncodedExchanges
from tui.follow import FileFollow, table_key
from tui.http_helpers import HttpHelpers
from tui.live_feed import FLUSH, NO_PACKETS, SKIP, FeedCapture, feed_bytes
from tui.messages import CaptureStatus, EngineUpdate, FilterApplied, KeylogLoaded, StreamChunk
from tui.spec import SourceSpec

TICK = 0.075  # seconds between updates to the UI
# For a file, which comes as fast as it is read: fewer updates, so that the screen spends less
# of the load redrawing (each update redraws the rows that changed).
FILE_TICK = 0.25
# While a file is still being read, the time a tick gives to reading the followed connection's
# packets again (tui.follow), after the reading itself.
FOLLOW_SLICE = 0.02
# Exchanges from the helper processes (tui.http_helpers) one update carries at most: past it the
# driver takes no more from them (they wait) and posts as soon as the UI has taken the last.
# A live capture's exchanges per second are at most this times the screen's updates per second.
UPDATE_EXCHANGES = 2048
# The same for a file, which waits for the screen anyway: what is in flight between the helpers
# and the store is what the app's peak holds above what it keeps (~1.1 KB an exchange's record,
# realistic keep-alive heads); 2048 made the keep-alive file's peak 98-100 MiB, 512 made it 91-93
# with the same load time.
FILE_UPDATE_EXCHANGES = 512
# Recent raw packets kept for the Packets tab and for writing (w): the ring's share of the default
# --memory (tui.memory).
RING_BYTES = 64 * 1024 * 1024
# The protocols whose parsing a live capture that outruns the engine stops on new connections.
PARSED = frozenset({"http", "http2", *(protocol.name for protocol in PROTOCOLS)})


class Governor:
    """When a live capture outruns the engine, stop parsing HTTP on new connections, and resume.

    Fed each tick with the share of it the engine spent working on packets. Near all of it, tick
    after tick, means the capture is queuing up in the kernel and would soon be dropped there:
    then new connections are tracked and reassembled but not parsed (the one on screen still is).
    When the load has fallen well below that for a while, parsing resumes. Under a load that the
    engine can carry only without parsing, this alternates, so a share of connections is parsed.
    The load cannot always tell that parsing would fit again (the UI thread shares the GIL, so
    the engine looks busy), so after a while of shedding it tries parsing again anyway: a probe
    that costs a few ticks of backlog when the engine is still short of time.
    """

    SHED_AT = 0.9
    RESUME_AT = 0.6
    SHED_AFTER = 3  # ticks
    RESUME_AFTER = 10
    PROBE_AFTER = 27  # ticks (about 2 s)

    def __init__(self) -> None:
        self.shedding = False
        self.high = 0
        self.low = 0
        self.shed_for = 0

    def tick(self, load: float) -> bool:
        """The load of the tick that ended (0 idle .. 1 busy throughout); whether to shed now."""
        if load >= self.SHED_AT:
            self.high, self.low = self.high + 1, 0
        elif load <= self.RESUME_AT:
            self.high, self.low = 0, self.low + 1
        else:
            self.high = self.low = 0
        if not self.shedding and self.high >= self.SHED_AFTER:
            self.shedding, self.shed_for = True, 0
        elif self.shedding:
            self.shed_for += 1
            if self.low >= self.RESUME_AFTER or self.shed_for >= self.PROBE_AFTER:
                self.shedding, self.high = False, 0
        return self.shedding


class Pending:
    """The events of the ticks the UI has not taken yet, folded so their size stays bounded.

    A connection that changed a hundred times while the UI was busy is one update with its latest
    state (closed if it closed meanwhile); HTTP transactions and the transactions of other
    protocols (`Transaction`: Redis...) are kept in order, and so are the requests announced as
    waiting for their answer (`HttpRequestSeen`): one per request, its latest state in the place
    it first came, and none for a request whose transaction came in the same fold. The engine's
    other events (gaps) are not shown by the app and are dropped here.
    """

    def __init__(self) -> None:
        self.latest: dict[int, ConnectionInfo] = {}
        self.opened: set[int] = set()
        self.closed: dict[int, str] = {}  # id -> the reason it closed
        # In order; None where a waiting request was answered before the UI took it.
        self.transactions: list[HttpTransaction | Transaction | HttpRequestSeen | None] = []
        self.waiting: dict[tuple[int, int], int] = {}  # (connection, request offset) -> its place
        self.exchanges: list[EncodedExchanges] = []  # from the helper processes, in order
        self.exchange_count = 0  # in those

    def __len__(self) -> int:
        return len(self.latest) + len(self.transactions) + self.exchange_count

    def add(self, events: list[Event]) -> None:
        latest = self.latest
        for event in events:
            if isinstance(event, ConnectionUpdated):
                latest[event.info.id] = event.info
            elif isinstance(event, HttpTransaction):
                if self.waiting and event.request is not None:
                    at = self.waiting.pop((event.connection, event.request.offset), None)
                    if at is not None:
                        self.transactions[at] = None
                self.transactions.append(event)
            elif isinstance(event, Transaction):
                self.transactions.append(event)
            elif isinstance(event, HttpRequestSeen):
                key = (event.connection, event.request.offset)
                at = self.waiting.get(key)
                if at is None:
                    self.waiting[key] = len(self.transactions)
                    self.transactions.append(event)
                else:
                    self.transactions[at] = event
            elif isinstance(event, ConnectionOpened):
                latest[event.info.id] = event.info
                self.opened.add(event.info.id)
            elif isinstance(event, ConnectionClosed):
                latest[event.info.id] = event.info
                self.closed[event.info.id] = event.reason

    def take(self) -> tuple[Event, ...]:
        """The folded events, connections before the transactions that refer to them."""
        events: list[Event] = []
        for conn_id, info in self.latest.items():
            if conn_id in self.closed:
                events.append(ConnectionClosed(info, self.closed[conn_id]))
            elif conn_id in self.opened:
                events.append(ConnectionOpened(info))
            else:
                events.append(ConnectionUpdated(info))
        events += [event for event in self.transactions if event is not None]
        self.latest, self.opened, self.closed, self.transactions = {}, set(), {}, []
        self.waiting = {}
        return tuple(events)

    def add_exchanges(self, exchanges: list[EncodedExchanges]) -> None:
        self.exchanges += exchanges
        self.exchange_count += sum(len(batch) for batch in exchanges)

    def take_exchanges(self) -> tuple[EncodedExchanges, ...]:
        exchanges, self.exchanges = tuple(self.exchanges), []
        self.exchange_count = 0
        return exchanges


@dataclass(frozen=True, slots=True)
class Picked:
    """Packets taken from the ring for some connections."""

    packets: list[sources.Packet]
    numbers: list[int]  # each packet's number in the capture, from 0 (as ConnectionInfo counts)
    complete: bool  # the ring still held every packet of these connections
    reread: bool = False  # the file was read again since: these connections are gone
    error: str | None = None  # the capture files could not be read again (FileRing)


def spans_wanted(connections: list[ConnectionInfo], hosts: tuple[str, ...] = ()
                 ) -> dict[int, list[sources.Span]]:
    """For `sources.packets_in_spans`: each connection's packet numbers, by its table key (with
    its capture host's number when there are several: engine.tcp.HOST_SHIFT)."""
    wanted: dict[int, list[sources.Span]] = {}
    for info in connections:
        wanted.setdefault(table_key(info, hosts), []).append((info.first_packet, info.last_packet))
    return wanted


class PacketRing:
    """The most recent batches, whole (no work per packet), up to a number of bytes.

    Each batch is kept with the number of its first packet as the pipeline counted it (the
    driver passes `Pipeline.packets` before feeding it), so a connection's packets are those of
    its ports numbered first_packet..last_packet: never those of a connection that reused them.
    The worker appends; other threads take a snapshot (a tuple made while holding the GIL, so it
    never sees a half-changed deque).
    """

    def __init__(self, limit: int = RING_BYTES, hosts: tuple[str, ...] = ()) -> None:
        self.limit = limit
        self.hosts = hosts  # the capture hosts, whose batches are numbered (engine.remote)
        self.ring: deque[tuple[int, Batch]] = deque()
        self.bytes = 0
        self.dropped_batches = 0
        self.generation = 0  # of the capture driver: which reading of a file these batches are

    def add(self, batch: Batch, first: int) -> None:
        self.ring.append((first, batch))
        self.bytes += len(batch.data) + len(batch.meta)
        while self.bytes > self.limit and len(self.ring) > 1:
            _, old = self.ring.popleft()
            self.bytes -= len(old.data) + len(old.meta)
            self.dropped_batches += 1

    def clear(self, generation: int, bpf: str = "") -> None:
        """The file is read again (packet numbers start again from 0)."""
        self.ring = deque()
        self.bytes = 0
        self.dropped_batches = 0
        self.generation = generation

    def batches(self) -> tuple[Batch, ...]:
        return tuple(batch for _, batch in tuple(self.ring))

    def pick(self, connections: Iterable[ConnectionInfo], generation: int | None = None) -> Picked:
        """The packets of these connections, in capture order, in one pass over the batches
        that can hold them. With `generation`, nothing if the ring now holds another reading of
        the file than the one the connections came from."""
        ring = tuple(self.ring)
        if generation is not None and generation != self.generation:
            return Picked([], [], False, reread=True)
        connections = list(connections)
        oldest = min((info.first_packet for info in connections), default=None)
        found = sources.packets_in_spans(ring, spans_wanted(connections, self.hosts))
        complete = oldest is None or (bool(ring) and ring[0][0] <= oldest)
        return Picked([p for _, p in found], [n for n, _ in found], complete)


def file_identity(path: str) -> tuple[int, int, int, int] | None:
    """What tells a file from the same file changed: device, inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class FileRing:
    """The packets of capture files, read again from the files when asked, by packet number.

    Nothing is held per packet or per batch (Wireshark and toolong re-read files too): a
    connection's packets are those numbered first_packet..last_packet in a new reading of the
    same files under the same filter, which numbers them exactly as the pipeline did. Before
    reading, the files must still be the ones that were read (same device, inode, size and
    modification time); if one changed or is gone, `pick` says so instead.
    """

    limit = 0  # bytes held: none
    bytes = 0
    dropped_batches = 0

    def __init__(self, files: tuple[str, ...], bpf: str) -> None:
        self.files = files
        self.bpf = bpf
        self.generation = 0
        self.identities = [file_identity(path) for path in files]

    def add(self, batch: Batch, first: int) -> None:
        pass

    def clear(self, generation: int, bpf: str = "") -> None:
        """The files are read again under another filter (packet numbers start again)."""
        self.generation = generation
        self.bpf = bpf

    def changed(self, what: str = "its packets") -> str | None:
        """Why the files cannot be read again as they were (for `what`), or None."""
        for path, identity in zip(self.files, self.identities, strict=True):
            now = file_identity(path)
            if now is None:
                return f"{path} is gone: {what} cannot be read again"
            if now != identity:
                return f"{path} changed since it was read: {what} cannot be read again"
        return None

    def pick(self, connections: Iterable[ConnectionInfo], generation: int | None = None) -> Picked:
        if generation is not None and generation != self.generation:
            return Picked([], [], False, reread=True)
        connections = list(connections)
        if not connections:
            return Picked([], [], True)
        error = self.changed()
        if error is not None:
            return Picked([], [], False, error=error)
        wanted = spans_wanted(connections)
        high = max(info.last_packet for info in connections)
        try:
            source = sources.open_files(list(self.files), self.bpf)
        except sources.CaptureError as e:
            return Picked([], [], False, error=str(e))

        def numbered() -> Iterator[tuple[int, Batch]]:
            number = 0
            while number <= high and (batch := source.next_batch()) is not None:
                yield number, batch
                number += len(batch)

        try:
            found = sources.packets_in_spans(numbered(), wanted)
        except sources.CaptureError as e:
            return Picked([], [], False, error=str(e))
        finally:
            source.close()
        if source.error is not None:
            return Picked([], [], False, error=source.error)
        return Picked([p for _, p in found], [n for n, _ in found], True)


class RealTimeReplay:
    """Replays a capture's packets at the pace they were captured, again and again.

    Timestamps are moved to the wall clock, so each loop looks like new traffic to the engine.
    """

    def __init__(self, path: str, bpf: str, clock: Callable[[], float] = time.time) -> None:
        self.name = f"{path} (replay)"
        self.live = True
        self.filter = bpf
        source = sources.open_files([path], bpf)
        self.packets: list[tuple[int, float, bytes]] = []
        while (batch := source.next_batch()) is not None:
            self.packets += [(batch.linktype, ts, data) for ts, data in batch.packets()]
        source.close()
        self.clock = clock
        self.start = clock()
        self.first = self.packets[0][1] if self.packets else 0.0
        self.length = (self.packets[-1][1] - self.first + 1.0) if self.packets else 1.0
        self.position = 0
        self.loop = 0
        self.error: str | None = None

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        if not self.packets:
            time.sleep(timeout or 0.1)
            return Batch(1, b"", b"")
        deadline = self.clock() + (timeout or 0.0)
        while True:
            now = self.clock()
            due = []
            linktype = self.packets[self.position][0]
            while True:
                lt, ts, data = self.packets[self.position]
                at = self.start + self.loop * self.length + (ts - self.first)
                if at > now or lt != linktype:
                    break
                due.append((at, data))
                self.position += 1
                if self.position == len(self.packets):
                    self.position = 0
                    self.loop += 1
            if due:
                return Batch.from_packets(linktype, due)
            if now >= deadline:
                return Batch(linktype, b"", b"")
            time.sleep(min(0.02, max(0.0, deadline - now)))

    def progress(self) -> tuple[int, int] | None:
        return None  # it loops: there is no end to come

    def stats(self) -> sources.CaptureStats | None:
        return None

    def close(self) -> None:
        pass


class CaptureDriver:
    def __init__(self, spec: SourceSpec, bpf: str, bounds: Bounds,
                 post: Callable[[object], object], ring_bytes: int = RING_BYTES,
                 jobs: int | None = None) -> None:
        """jobs: helper processes that read a capture file that can be read again, each
        tracking and parsing a share of its connections, while this thread reads nothing
        (tui.http_helpers); None: one per core (two at most); 0: read and parse it here."""
        self.spec = spec
        self.bpf = bpf
        self.bounds = bounds
        # The key logs TLS is decrypted with: the one given, and those loaded since (K).
        self.keylogs: list[str] = [spec.keylog] if spec.keylog else []
        self.keys: KeyLog | None = None
        self.post = post
        self.commands: queue.Queue[tuple[str, str]] = queue.Queue()
        self.follow: int | None = None  # set by the UI: whose stream to send
        # Set by the UI too: the followed connection as its last update showed it, whether it
        # is closed, and that update's generation (for tui.follow); and whether the Stream tab
        # is on screen (a file's stream is read again only then).
        self.follow_info: tuple[ConnectionInfo, bool, int] | None = None
        self.stream_shown = False
        self.generation = 0
        self._followed: int | None = None
        self._followed_plain = False  # what it was sent: the decrypted plaintext, or the records
        # Whether the followed connection's stream is its decrypted plaintext (when it has one)
        # or its TLS records: set by the UI (r).
        self.plaintext = True
        self.decrypted: DecryptedStreams | None = None
        self._cursor = 0  # of the followed connection's kept entries: what was sent so far
        self._initial = spec.opened
        # The capture hosts (engine.remote): the connections carry their names.
        self.hosts: tuple[str, ...] = getattr(spec.opened, "hosts", ())
        # Read by the UI thread through its snapshot method. A file is read again instead
        # (FileRing), unless it is a pipe or a replay, whose packets only the ring can hold.
        # Such a file's streams are not kept while it is read: the followed connection's is
        # read again from it (tui.follow).
        self.rereads = spec.rereadable
        self._reader: FileFollow | None = None
        self._fresh = False  # the reader read entries not sent yet
        self._unreadable: tuple[int, str] | None = None  # (connection, why its stream is not)
        self._told_unreadable = False
        self.packets: PacketRing | FileRing = (
            FileRing(spec.files, bpf) if self.rereads else PacketRing(ring_bytes, self.hosts)
        )
        # Set by the UI when it has taken the last update. Until then the driver posts nothing
        # more: a file waits, a live capture goes on reading and folds what it sees (Pending),
        # so updates never queue up in front of the user's keys.
        self.taken = threading.Event()
        # Set by the UI when a key comes, cleared once the screen has answered it: until then
        # the driver reads nothing, so that the two threads do not share the GIL (KEY_HOLD at most).
        self.hold_until = 0.0
        self.taken.set()
        self.shedding = False  # HTTP parsing of new connections is off (Governor)
        self.spool: Spool | None = None  # the follow view's bytes on disk (Bounds.spool_bytes)
        # A live capture on this host: the processes at each end of its connections.
        self.attribution = Attribution() if spec.live else None
        self._closing: list[int] = []  # connections closed since the last update
        self.jobs = spec.helper_jobs(jobs)
        self.feed: FeedCapture | None = None
        # A live capture opened before the app (as the command line opens it) is read by a
        # capture process into a feed that the helpers read too (tui.live_feed).
        if spec.live and self.jobs:
            self.feed = self._initial = FeedCapture(spec.opened, feed_bytes(bounds))
        self.helpers: HttpHelpers | None = None
        self._early: HttpHelpers | None = None  # the first reading's, started by start_early
        if self.jobs:
            http_helpers.prepare()

    def start_early(self) -> None:
        """Start the helpers of the first reading of a file now, from the UI thread before it
        builds the screen (on_load): they then have the other core to themselves for the 50 ms
        that Textual takes to build it, where the capture thread started them after. The
        capture thread takes them for its first pipeline."""
        if self.jobs and self.rereads and self._early is None:
            self._early = self._new_helpers()

    def drop_early(self) -> None:
        """Stop the helpers started early if the capture thread did not take them (it could
        not open the file, or never ran)."""
        early, self._early = self._early, None
        if early is not None:
            early.close()

    # ------------------------------------------------------------------ from the UI thread

    def set_filter(self, expression: str) -> None:
        self.commands.put(("filter", expression))

    def load_keylog(self, path: str) -> None:
        """Decrypt TLS with this key log too: a file is read again; a live capture's connections
        that wait for keys, and those to come, get them. Answered by a KeylogLoaded message."""
        self.commands.put(("keylog", path))

    def resend(self) -> None:
        """Send the followed connection's kept stream again from its start (the next update
        carries all of it, as on a change of connection)."""
        self._followed = None

    # ------------------------------------------------------------------ in the worker thread

    def run(self, cancelled: Callable[[], bool]) -> None:
        try:
            source = self._open(self.bpf)
        except sources.CaptureError as e:
            self.drop_early()
            self._post_error(str(e))
            return
        pipeline = self._pipeline()
        finished = False
        done = False  # finished, and the helpers have sent all (the file is read to its end)
        told = False  # the app was told the file was read to its end
        pending = Pending()
        governor = Governor()
        try:
            while not cancelled():
                generation = self.generation
                source, pipeline, finished = self._commands(source, pipeline, finished)
                if self.generation != generation:
                    pending = Pending()  # the file is read again: what was pending is gone
                    told = False  # and the app is told of this reading, even if it finds nothing
                started = time.monotonic()
                tick = TICK if source.live else FILE_TICK
                most = UPDATE_EXCHANGES if source.live else FILE_UPDATE_EXCHANGES
                deadline = started + tick
                read = False
                busy = 0.0
                while not finished and not cancelled():
                    now = time.monotonic()
                    remaining = deadline - now
                    if remaining <= 0:
                        break
                    if self.hold_until > now:
                        # A key is being answered: let the UI thread have the GIL.
                        time.sleep(min(self.hold_until - now, remaining))
                        continue
                    readers = self._file_readers()
                    if readers is not None:
                        # What the helpers have sent of the file, and what comes until the tick
                        # ends.
                        self._gather(readers, pending, 0, True, deadline, most)
                        read = True
                        finished = readers.finished
                        if pending.exchange_count >= most:
                            break
                        continue
                    if isinstance(source, FeedCapture):
                        batch = self._read_feed(source, pipeline, pending, remaining)
                    else:
                        batch = source.next_batch(remaining if source.live else 0)
                    read = True
                    if batch is None:
                        pending.add(self._opened(pipeline.finish()))
                        finished = True
                    elif len(batch):
                        t0 = time.monotonic()
                        first = pipeline.packets
                        pending.add(self._opened(pipeline.feed(batch)))
                        self.packets.add(batch, first)
                        busy += time.monotonic() - t0
                    elif source.live and not isinstance(source, FeedCapture):
                        pending.add(self._opened(pipeline.flush(time.time())))
                    if self.helpers is not None:
                        self._gather(self.helpers, pending, pipeline.packets, False, 0.0, most)
                        if pending.exchange_count >= most:
                            break
                if self.rereads and self._read_followed(pipeline, finished, deadline):
                    read = True
                helpers = self.helpers
                if helpers is not None and not helpers.finished:
                    # Once the file is read, what is left is the helpers': wait for it.
                    self._gather(helpers, pending, pipeline.packets, finished, deadline, most)
                    read = True
                done = finished and (helpers is None or helpers.finished)
                if source.live and read and self.helpers is None:
                    shed = governor.tick(busy / max(time.monotonic() - started, 1e-6))
                    pipeline.shed(PARSED if shed else frozenset(), self.follow)
                    self.shedding = shed
                if not read:
                    time.sleep(TICK)  # a file read to its end: only commands can change things
                if not self.taken.is_set() and not source.live:
                    self.taken.wait(TICK)  # a file does not run ahead of the screen
                # A file read to its end, told so once, with nothing new for the screen (no
                # events, the same followed connection): nothing to post, so the app rests.
                told = told and done and not source.live
                resting = told and not len(pending) and not self._stream_news()
                if self.taken.is_set() and not resting:
                    self.taken.clear()
                    self._post(source, pipeline, pending, done)
                    told = done and not source.live
        finally:
            source.close()
            if self.helpers is not None:
                self.helpers.close()
            if self.spool is not None:
                self.spool.close()
            self._drop_reader()

    def _file_readers(self) -> HttpHelpers | None:
        """The helpers, when they read the file themselves (HttpHelpers.rows): then this thread
        reads nothing, and how far the file is read and its counters are theirs."""
        helpers = self.helpers
        return helpers if helpers is not None and helpers.rows else None

    def _stream_news(self) -> bool:
        """Whether the followed connection has something for the screen: entries read again
        (tui.follow), or why they cannot be; else a connection newly followed."""
        if not self.rereads:
            return self.follow != self._followed
        if not self._told_unreadable and self._why_unreadable(self.follow) is not None:
            return True
        reader = self._reader
        if reader is None or reader.conn_id != self.follow:
            return False
        plain = self.plaintext and reader.has_plaintext()
        return self._fresh or self.follow != self._followed or plain != self._followed_plain

    def _why_unreadable(self, wanted: int | None) -> str | None:
        """Why the followed connection's stream cannot be read again from the file, if so."""
        unreadable, reader = self._unreadable, self._reader
        if unreadable is not None and unreadable[0] == wanted:
            return unreadable[1]
        return reader.error if reader is not None and reader.conn_id == wanted else None

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._unreadable = None

    def _read_followed(self, pipeline: Pipeline, finished: bool, deadline: float) -> bool:
        """Read the followed connection's packets again from the file, as far as the capture
        has read (a slice of the tick while it reads on); whether there is more to read now.
        The reader is made when the Stream tab shows the connection, and kept while it is the
        one followed."""
        wanted, given, reader = self.follow, self.follow_info, self._reader
        if reader is not None and reader.conn_id != wanted:
            self._drop_reader()
            reader = None
        if self._unreadable is not None and self._unreadable[0] != wanted:
            self._unreadable = None  # (another connection's: this one is tried anew)
        if wanted is None or given is None:
            return False
        info, closed, generation = given
        if info.id != wanted or generation != self.generation:
            return False  # (the UI's word on an earlier connection, or reading)
        if reader is None:
            if not self.stream_shown or self._unreadable is not None:
                return False
            assert isinstance(self.packets, FileRing)
            why = self.packets.changed("its streams")
            if why is None:
                try:
                    reader = FileFollow(self.spec.files, self.bpf, self.bounds, self.keys, info,
                                        self.hosts)
                except sources.CaptureError as e:
                    why = str(e)
            if reader is None:
                self._unreadable, self._told_unreadable = (wanted, why or ""), False
                return False
            self._reader, self._told_unreadable = reader, False
        reader.update(info, closed)
        if reader.done or reader.error is not None:
            return False
        number = reader.number
        until = deadline if finished else time.monotonic() + FOLLOW_SLICE
        readers = self._file_readers()
        read = readers.through() if readers is not None else pipeline.packets
        try:
            caught_up = reader.read(read - 1, until)
        except sources.CaptureError as e:
            reader.error, caught_up = str(e), True
        self._fresh = self._fresh or reader.number != number or reader.done
        return not caught_up

    def _read_feed(self, source: FeedCapture, pipeline: Pipeline, pending: Pending,
                   timeout: float) -> Batch | None:
        """The next batch from the capture process; its flushes and skips, which come in order
        with its batches, are done here (then the batch is empty). None once it has ended."""
        record = source.next_record(timeout)
        if record is None:
            return None
        if record.kind == FLUSH:
            pending.add(self._opened(pipeline.flush(record.value)))
        elif record.kind == SKIP:
            pipeline.skip(int(record.value))
        return record.batch if record.batch is not None else NO_PACKETS

    @staticmethod
    def _gather(helpers: HttpHelpers, pending: Pending, packets: int, finished: bool,
                until: float, most: int) -> None:
        """The helpers' exchanges for the packets read, until `most` are pending; once the
        file is read (finished), waiting for more until `until`."""
        while pending.exchange_count < most and not helpers.finished:
            exchanges, waiting = helpers.take(packets, finished)
            if waiting:
                pending.add(waiting)  # (shown until their exchange comes, see TrafficStore)
            pending.add_exchanges(exchanges)
            remaining = until - time.monotonic()
            if not finished or remaining <= 0 or helpers.finished:
                return
            helpers.arrived.wait(remaining)

    def _opened(self, events: list[Event]) -> list[Event]:
        """Tell the helpers which connection opened at which packet (they name theirs so)."""
        helpers = self.helpers
        if helpers is not None:
            for event in events:
                if type(event) is ConnectionOpened or type(event) is ConnectionClosed:
                    helpers.note(event.info.first_packet, event.info.id)
        attribution = self.attribution
        if attribution is not None:
            for event in events:
                if type(event) is ConnectionOpened:
                    attribution.opened(event.info.id, event.info.client, event.info.server)
                elif type(event) is ConnectionClosed:
                    self._closing.append(event.info.id)
        return events

    def _processes(self) -> dict[int, str]:
        """The processes found since the last update; those of connections now closed are
        forgotten here once sent."""
        attribution = self.attribution
        if attribution is None:
            return {}
        attribution.poll()
        found = {i: owners_text(owners) for i, owners in attribution.take_changed().items()}
        for conn_id in self._closing:
            attribution.take(conn_id)
        self._closing.clear()
        return found

    def _open(self, bpf: str) -> sources.Source | RealTimeReplay:
        spec = self.spec
        if self._initial is not None:
            source, self._initial = self._initial, None
            return source
        if spec.replay:
            return RealTimeReplay(spec.files[0], bpf)
        if spec.interfaces:
            return sources.open_live(list(spec.interfaces), bpf)
        return sources.open_files(list(spec.files), bpf)

    def _pipeline(self) -> Pipeline:
        """A new pipeline (and spool: what the old one wrote belongs to a reading gone by), and
        new helper processes for its HTTP when there are to be some."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self._drop_reader()
        bounds = self.bounds
        if self.rereads:
            bounds = replace(bounds, keep_stream_bytes=0, spool_bytes=0)
        if bounds.spool_bytes:
            self.spool = Spool(bounds.spool_bytes)
        if self.helpers is not None:
            self.helpers.close()
            self.helpers = None
        if self.jobs:
            # A file is read by the helpers alone, which give its connections' rows too.
            early, self._early = self._early, None
            self.helpers = early if early is not None else self._new_helpers()
        self.keys = self._keys()
        # The plaintext of what is decrypted, for the Stream tab (in the spool, as the records).
        self.decrypted = None
        if self.keys is not None and self.spool is not None:
            self.decrypted = DecryptedStreams(self.spool, self.bounds.keep_stream_bytes)
        return Pipeline(bounds, live_updates=True, spool=self.spool, hosts=self.hosts,
                        http_body_limit=None if self.jobs else DEFAULT_MAX_BODY, keylog=self.keys,
                        plaintext=[self.decrypted.listener] if self.decrypted else None)

    def _keys(self) -> KeyLog | None:
        """The key logs (and a capture file's own secrets), read anew. A live capture always has
        one, empty or not, so that a key log loaded later decrypts its connections."""
        keys = open_keys(None, self.spec.files)
        for path in self.keylogs:
            if keys is None:
                keys = KeyLog()
            with contextlib.suppress(OSError):  # (read before the app started: gone since)
                keys.add_file(path)
        if keys is None and self.feed is not None:
            keys = KeyLog()
        return keys

    def _new_helpers(self) -> HttpHelpers:
        return HttpHelpers(self.spec.files, self.bpf, self.bounds, self.jobs, feed=self.feed,
                           keylogs=tuple(self.keylogs), listing=self._listing(),
                           rows=self.rereads)

    def _listing(self) -> str | None:
        """A live capture's list of the key logs loaded, which its HTTP helpers watch."""
        return os.path.join(self.feed.dir, "keylogs") if self.feed is not None else None

    def _commands(self, source: sources.Source | RealTimeReplay, pipeline: Pipeline,
                  finished: bool) -> tuple[sources.Source | RealTimeReplay, Pipeline, bool]:
        while True:
            try:
                command, argument = self.commands.get_nowait()
            except queue.Empty:
                return source, pipeline, finished
            if command == "keylog":
                source, pipeline, finished = self._load_keylog(source, pipeline, finished, argument)
                continue
            if command != "filter":
                continue
            try:
                sources.validate_filter(argument)
                if isinstance(source, RealTimeReplay) or not source.live:
                    # A file is read again under the new filter; a live capture keeps its state.
                    source, pipeline, finished = self._read_again(source, argument)
                else:
                    source.set_filter(argument)
            except sources.CaptureError as e:
                self.post(FilterApplied(argument, str(e)))
                continue
            self.bpf = argument
            self.post(FilterApplied(argument, None))

    def _read_again(self, source: sources.Source | RealTimeReplay, bpf: str
                    ) -> tuple[sources.Source | RealTimeReplay, Pipeline, bool]:
        """A file read again from its start (under `bpf`), with a new pipeline and helpers."""
        if "-" in self.spec.files:
            raise sources.CaptureError("a capture read from stdin cannot be read again")
        new = self._open(bpf)
        source.close()
        self.bpf = bpf  # the helpers read the file under it
        pipeline = self._pipeline()
        self.generation += 1
        self.packets.clear(self.generation, bpf)
        self._followed = None
        return new, pipeline, False

    def _load_keylog(self, source: sources.Source | RealTimeReplay, pipeline: Pipeline,
                     finished: bool, path: str
                     ) -> tuple[sources.Source | RealTimeReplay, Pipeline, bool]:
        try:
            found = KeyLogFile(path)
        except OSError as e:
            self.post(KeylogLoaded(path, f"cannot read {path}: {e.strerror or e}", 0))
            return source, pipeline, finished
        if path not in self.keylogs:
            self.keylogs.append(path)
        if isinstance(source, RealTimeReplay) or not source.live:
            try:
                source, pipeline, finished = self._read_again(source, self.bpf)
            except sources.CaptureError as e:
                self.post(KeylogLoaded(path, str(e), len(found)))
                return source, pipeline, finished
            live = False
        else:
            if self.keys is not None:
                self.keys.add_file(path)
            listing = self._listing()
            if listing is not None:
                with open(listing, "a") as f:
                    f.write(path + "\n")
            live = True
        self.post(KeylogLoaded(path, None, len(found), live))
        return source, pipeline, finished

    def _post(self, source: sources.Source | RealTimeReplay, pipeline: Pipeline,
              pending: Pending, finished: bool) -> None:
        stream_id, chunks, reset, note = self._stream(pipeline)
        helpers, readers = self.helpers, self._file_readers()
        progress = None if source.live or finished or readers is not None else source.progress()
        if helpers is not None and not finished:
            behind = helpers.progress()  # the file is read as far as the slowest reader
            if progress is None or (behind is not None and
                                    behind[0] * progress[1] < progress[0] * behind[1]):
                progress = behind
        status = CaptureStatus(
            source=source.name,
            filter=self.bpf,
            live=source.live,
            finished=finished,
            capture=source.stats(),
            error=source.error or (helpers.error if helpers is not None else None),
            shedding=self.shedding,
            progress=progress,
            skipped=source.skipped if isinstance(source, FeedCapture) else 0,
            unmapped=helpers.unmapped if helpers is not None else 0,
            # (Each helper reads every packet, parsing its share: one passing over a packet
            # leaves its share's HTTP in it unparsed, so the most any passed over.)
            unparsed=max(helpers.passed_over) if helpers is not None else 0,
            behind=isinstance(source, FeedCapture) and source.reader.behind(1),
            hosts=tuple(source.host_status()) if isinstance(source, RemoteCaptures) else (),
        )
        stats = readers.stats() if readers is not None else pipeline.stats()
        self.post(EngineUpdate(pending.take(), stats, status, stream_id, chunks, reset,
                               self.generation, pending.take_exchanges(), self._followed_plain,
                               self._processes(), note))

    def _stream(self, pipeline: Pipeline
                ) -> tuple[int | None, tuple[StreamChunk, ...], bool, str]:
        """Entries of the followed connection's kept stream added since the last tick (all that
        are kept on a change of connection), and what to say instead when there are none."""
        wanted = self.follow
        if wanted is None:
            return None, (), False, ""
        if self.rereads:
            return self._file_stream(wanted)
        decrypted = self.decrypted
        plain = self.plaintext and decrypted is not None and wanted in decrypted
        reset = wanted != self._followed or plain != self._followed_plain
        cursor = 0 if reset else self._cursor
        got = (decrypted.since(wanted, cursor) if plain and decrypted is not None
               else pipeline.kept_since(wanted, cursor))  # fmt: skip
        if got is None:
            return wanted, (), False, ""
        self._followed, self._cursor, self._followed_plain = wanted, got.cursor, plain
        return wanted, got.entries, reset, ""

    def _file_stream(self, wanted: int) -> tuple[int | None, tuple[StreamChunk, ...], bool, str]:
        """The same, from the reader of the followed connection's packets (tui.follow)."""
        reader, why = self._reader, self._why_unreadable(wanted)
        if why is not None and not self._told_unreadable:
            self._told_unreadable = True
            self._followed = wanted
            return wanted, (), True, f"No stream to show: {why}."
        if reader is None or reader.conn_id != wanted:
            return wanted, (), False, ""
        self._fresh = False
        plain = self.plaintext and reader.has_plaintext()
        reset = wanted != self._followed or plain != self._followed_plain
        cursor = 0 if reset else self._cursor
        got = reader.since(cursor, plain)
        self._followed, self._cursor, self._followed_plain = wanted, cursor, plain
        if got is None:  # none kept yet (or none ever: a connection without a byte)
            return wanted, (), reset, ""
        self._cursor = got.cursor
        return wanted, got.entries, reset, ""

    def _post_error(self, message: str) -> None:
        status = CaptureStatus(source="", filter=self.bpf, live=False, finished=True, capture=None,
                               error=message)
        self.post(EngineUpdate((), Pipeline().stats(), status, None, (), False, self.generation))
