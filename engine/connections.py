"""The connection table: TCP segments in, connections, reassembled streams and events out.

The table does lookup, observer state, lifecycle and eviction: which connection a segment belongs
to (a new SYN on a finished connection's ports opens a new one), the state machine of
`engine.tcpstate`, expiry and the bounds of `engine.bounds`. Reassembly is each direction's
`engine.reassembly.Reassembler`; the table is their sink, and hands what they deliver to the
follow view (kept bytes), the protocol sniffer and the stream consumers. It does no decoding
(see `engine.pipeline`) and no I/O; time is the packets' time.

Connection keys are integers made from the addresses and ports of the packet's sender (see
`engine.pipeline`); each connection is entered twice, once per direction, and the entry points
at the HalfStream of the data that direction carries.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple, cast

from engine import protocols
from engine.bounds import ARCHIVED_COST, CONNECTION_COST, CONSUMER_COST, Bounds
from engine.detect import TLS, Sniffer, TlsHelloReader
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    Event,
    Gap,
)
from engine.reassembly import NO_ACK, SEQ_HALF, SEQ_MASK, Reassembler
from engine.spool import (
    DATA,
    GAP,
    RESENT,
    RESENT_DIFFERS,
    RESENT_SAME,
    Record,
    Spool,
    SpooledEntries,
)
from engine.tcp import (
    ACK,
    FIN,
    HOST_SHIFT,
    MIDSTREAM,
    RESENT_COST,
    RST,
    SYN,
    Connection,
    HalfStream,
    Kept,
    Resent,
    StreamConsumer,
    key_host,
    range_of,
    reverse_key,
)
from engine.tcpstate import FINISHED, Signal, State, next_state

# States in which a plain ACK can move the observer (see engine.tcpstate.TRANSITIONS).
ACK_MOVES: Final = frozenset({None, State.SYN_SENT, State.SYN_RECEIVED, State.CLOSING})
HANDSHAKE: Final = frozenset({None, State.SYN_SENT, State.SYN_RECEIVED})

CONTROL: Final = SYN | FIN | RST

# Why a connection left the table -> why its unfilled holes became gaps.
GAP_REASONS: Final = {"closed": "close", "reused": "close"}

ConsumerFactory = Callable[[Connection, Callable[[Event], None]], "StreamConsumer | None"]


class KeptSlice(NamedTuple):
    """Follow-view entries of one connection added since a cursor (see `kept_since`)."""

    entries: tuple[Kept, ...]
    cursor: int  # pass it back to get what comes after these
    dropped: bool  # entries between the cursor asked for and the first of these are gone


class ConnectionTable:
    def __init__(
        self,
        bounds: Bounds,
        consumers: dict[str | None, list[ConsumerFactory]] | None = None,
        live_updates: bool = False,
        spool: Spool | None = None,
    ) -> None:
        """spool: where the follow view's entries go (engine.spool), instead of memory."""
        self.bounds = bounds
        self.keep = bounds.keep_stream_bytes
        self.spool = spool
        # Trimming waits for an eighth over the cap so that it runs in bursts, not per segment.
        self.keep_slack = self.keep + self.keep // 8
        self.max_ooo = bounds.max_ooo_bytes  # read by the reassemblers (their Sink)
        self.reorder_window = bounds.reorder_window
        self.factories: dict[str | None, list[ConsumerFactory]] = {TLS: [_tls_hello_reader]}
        for protocol, factories in (consumers or {}).items():
            self.factories[protocol] = [*self.factories.get(protocol, []), *factories]
        self.live_updates = live_updates
        # Protocols whose consumers new connections do not get while the reader is behind (see
        # Pipeline.shed), except the connection `always` (the one the user is looking at).
        self.shedding: frozenset[str] = frozenset()
        self.always: int | None = None
        self.unparsed = 0  # connections that were not given their protocol's consumers
        # The names of the capture hosts by number (engine.tcp.HOST_SHIFT), when there are several.
        self.host_names: dict[int, str] = {}
        self.by_key: dict[int, HalfStream] = {}
        # Active connections, least recently touched first (reordered once per batch). Ordered
        # dicts, because a plain dict emptied from the front makes finding its first entry slow.
        self.lru: OrderedDict[int, Connection] = OrderedDict()
        # Closed or reset connections, in the order they finished, lingering for late packets.
        self.finished: OrderedDict[int, Connection] = OrderedDict()
        # Kept entries of connections that left the table (Bounds.keep_after_close), oldest
        # first: (entries, their cost, the connection's kept_count).
        self.archive: OrderedDict[int, tuple[deque[Kept] | SpooledEntries, int, int]] = (
            OrderedDict()
        )
        self.next_id = 0
        self.packet_number = (
            0  # of the packet being processed, counted from 0 (set by the pipeline)
        )
        self.events: list[Event] = []
        self.touched: list[Connection] = []
        self.opened: set[int] = set()
        self.batch_mark = 0
        self.memory = 0  # connection overhead + kept + out-of-order bytes
        self.evicted = 0
        self.dropped_kept = 0
        self.ignored = 0  # segments too far ahead of their stream to be believed
        self.cut = 0  # segments whose payload the snapshot length cut short
        # Directions holding out-of-order bytes: a hole acknowledged once is due to become a gap
        # when the reorder window has passed, even if no packet comes to say so (see expire).
        self.buffering: set[Reassembler] = set()

    # ------------------------------------------------------------------ segments

    def segment(
        self,
        ts: float,
        key: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        data: bytes,
        wire_len: int,
    ) -> None:
        """One TCP segment: its sender's key, header fields, captured payload and real length."""
        hs = self.by_key.get(key)
        if hs is None:
            hs = self._open(ts, key, flags)
        elif flags & SYN and not flags & ACK and hs.from_client and _new_attempt(hs.conn, seq):
            self._finish(hs.conn, ts, "reused")
            hs = self._open(ts, key, flags)
        conn = hs.conn
        hs.packets += 1
        conn.last_ts = ts
        conn.last_packet = self.packet_number
        if conn.mark != self.batch_mark:
            conn.mark = self.batch_mark
            self.touched.append(conn)
        if flags & ACK:
            # The furthest acknowledgment (modulo 2**32), inline: this runs for every packet.
            if hs.ack == NO_ACK or 0 < (ack - hs.ack) & SEQ_MASK < SEQ_HALF:
                hs.ack = ack
        else:
            ack = NO_ACK
        if flags & CONTROL or conn.watch_acks:
            seq = self._control(hs, ts, seq, ack, flags, wire_len)
        elif not wire_len and "A" not in hs.letters:
            hs.mark("A")
        if window == 0 and not flags & RST and "W" not in hs.letters:
            hs.mark("W")
        # What this segment acknowledges comes first: a hole in the peer's stream it covers
        # may be due to become a gap before this segment's own bytes are read.
        peer = hs.peer
        if peer.ooo and ack != NO_ACK:
            peer.peer_acked(ts, ack)
        if wire_len and not flags & RST:
            # Data carried by a RST is a diagnostic text (RFC 1122 4.2.2.12), not stream bytes.
            if "D" not in hs.letters:
                hs.mark("D")
            if len(data) < wire_len:
                self.cut += 1
            hs.segment(ts, seq, data, wire_len, ack)
        if flags & RST:
            self._flush_half(conn.client, ts, "close")
            self._flush_half(conn.server, ts, "close")

    def _open(self, ts: float, key: int, flags: int) -> HalfStream:
        if flags & SYN:
            sender_is_client, guessed = not flags & ACK, False
        else:
            sport, dport = (key >> 16) & 0xFFFF, key & 0xFFFF
            # Without a handshake the side with the higher (ephemeral) port is the client.
            sender_is_client, guessed = sport >= dport, True
        rkey = reverse_key(key)
        ckey, skey = (key, rkey) if sender_is_client else (rkey, key)
        conn = Connection(self, self.next_id, ts, ckey, guessed)
        conn.first_packet = self.packet_number
        if key >> HOST_SHIFT:
            conn.host = self.host_names.get(key_host(key))
        self.next_id += 1
        old = self.by_key.get(rkey)
        if old is not None:  # only possible after a reuse where the two keys disagree
            self._finish(old.conn, ts, "reused")
        self.by_key[ckey] = conn.client
        self.by_key[skey] = conn.server
        self.lru[conn.id] = conn
        self.memory += CONNECTION_COST
        if self.live_updates:
            self.opened.add(conn.id)
        emit = self.events.append
        for factory in self.factories.get(None, ()):
            consumer = factory(conn, emit)
            if consumer is not None:
                conn.consumers += (consumer,)
                self.memory += CONSUMER_COST
        return conn.client if sender_is_client else conn.server

    def _control(
        self, hs: HalfStream, ts: float, seq: int, ack: int, flags: int, wire_len: int
    ) -> int:
        """Apply SYN, FIN and RST to the half stream and the observer state; return the seq of
        the segment's data."""
        conn = hs.conn
        if flags & RST:
            signal = Signal.RST
            if conn.first_rst is None:
                conn.first_rst = "orig" if hs.from_client else "resp"
            hs.mark("R")
        elif flags & SYN:
            signal = Signal.SYN_ACK if flags & ACK else Signal.SYN
            hs.mark("H" if flags & ACK else "S")
            if hs.from_client == (signal is Signal.SYN):
                hs.syn = True
            hs.start_after(seq)
            if ack != NO_ACK and hs.peer.base is None:
                # The SYN-ACK acknowledges the client's SYN: so the client's stream starts
                # there, even if the capture shows that SYN later (or never).
                hs.peer.start_after((ack - 1) & SEQ_MASK)
            seq = (seq + 1) & SEQ_MASK  # data on a SYN starts after it
        elif flags & FIN:
            signal = Signal.FIN if not hs.peer.fin else Signal.FIN_OTHER
            if hs.fin:
                signal = Signal.ACK  # a retransmitted FIN
        else:
            signal = Signal.ACK
            if not wire_len:
                hs.mark("A")
            peer = hs.peer
            if (
                conn.state is State.CLOSING
                and hs.fin
                and ack != NO_ACK
                and peer.fin_offset is not None
                and peer.base is not None
                and peer.offset_of(ack) > peer.fin_offset
            ):
                signal = Signal.FINAL_ACK
        if flags & FIN and not hs.fin:
            hs.fin = True
            hs.mark("F")
            hs.end_at(ts, seq, wire_len)
        state = next_state(conn.state, signal)
        if state is not conn.state:
            conn.state = state
            conn.watch_acks = state in ACK_MOVES
            if state in FINISHED and conn.finished_ts is None:
                conn.finished_ts = ts
                self.finished[conn.id] = conn
        return seq

    # ------------------------------------------------------------------ the reassemblers' sink

    def delivered(self, r: Reassembler, ts: float, offset: int, data: bytes, ack: int) -> None:
        hs = cast(HalfStream, r)
        conn = hs.conn
        if self.keep:
            if self.spool is None:
                self._keep(conn, (hs.from_client, ts, offset, data), len(data))
            else:
                self._spool(conn, DATA, hs.from_client, ts, offset, ack, len(data), data)
        for consumer in conn.consumers:
            consumer.on_data(conn, hs.from_client, ts, offset, data, ack)
        if conn.sniffing:
            self._sniffed(conn, Sniffer.of(conn).add(hs.from_client, ts, offset, data, ack))

    def missed(self, r: Reassembler, ts: float, offset: int, size: int, reason: str) -> None:
        hs = cast(HalfStream, r)
        conn = hs.conn
        self.events.append(Gap(conn.id, hs.from_client, offset, size, ts, reason))
        if self.keep:
            if self.spool is None:
                self._keep(conn, (hs.from_client, ts, offset, size), 0)
            else:
                self._spool(conn, GAP, hs.from_client, ts, offset, NO_ACK, size, reason.encode())
        hs.mark("G")
        for consumer in conn.consumers:
            consumer.on_gap(conn, hs.from_client, ts, offset, size, reason)
        if conn.sniffing:
            # A stream that starts with a hole cannot be recognised from its first bytes.
            sniffer = Sniffer.of(conn)
            self._sniffed(conn, sniffer.missed(hs.from_client, ts, offset, size, reason))

    def resent(self, r: Reassembler, ts: float, offset: int, size: int, data: bytes) -> None:
        hs = cast(HalfStream, r)
        conn = hs.conn
        hs.mark("T")
        if self.spool is None:
            seen = conn.kept_range(hs.from_client, offset, offset + len(data))
        else:
            seen = self._spooled_range(conn, hs.from_client, offset, offset + len(data))
        differs = None if seen is None else seen != data[: len(seen)]
        if differs:
            self.inconsistent(hs)
        if self.keep:
            if self.spool is None:
                self._keep(conn, (hs.from_client, ts, offset, Resent(size, differs)), RESENT_COST)
            else:
                kind = RESENT if differs is None else (RESENT_DIFFERS if differs else RESENT_SAME)
                self._spool(conn, kind, hs.from_client, ts, offset, NO_ACK, size)

    def inconsistent(self, r: Reassembler) -> None:
        hs = cast(HalfStream, r)
        hs.conn.inconsistent += 1
        hs.mark("I")

    def ignored_segment(self, r: Reassembler) -> None:
        self.ignored += 1

    def buffered(self, r: Reassembler, change: int) -> None:
        self.memory += change
        if r.ooo:
            self.buffering.add(r)
        else:
            self.buffering.discard(r)

    def complete(self, r: Reassembler, ts: float) -> None:
        self._end(cast(HalfStream, r), ts)

    def _keep(self, conn: Connection, entry: Kept, cost: int) -> None:
        """Add to the follow view's entries, within the per-connection bound."""
        kept = conn.kept
        if kept is None:
            kept = conn.kept = deque()
        cast(deque, kept).append(entry)
        conn.kept_count += 1
        if cost:
            conn.kept_bytes += cost
            self.memory += cost
            if conn.kept_bytes > self.keep_slack:
                self._trim_kept(conn, self.keep)

    def _spool(
        self,
        conn: Connection,
        kind: int,
        from_client: bool,
        ts: float,
        offset: int,
        ack: int,
        value: int,
        extra: bytes = b"",
    ) -> None:
        """Add to the follow view's entries in the spool, within the per-connection bound."""
        spool = cast(Spool, self.spool)
        kept = cast(SpooledEntries | None, conn.kept)
        if kept is None:
            kept = conn.kept = SpooledEntries()
        elif kept and kept.oldest_position() < spool.oldest:
            self._drop_overwritten(conn, kept)
        # What the entry counts against the per-connection bound, as in memory: a resend its
        # fixed cost (negative: those are not stream bytes when dropped), a gap nothing.
        size = len(extra) if kind == DATA else (0 if kind == GAP else -RESENT_COST)
        kept.append(spool.append(kind, from_client, ts, offset, ack, value, extra), size)
        conn.kept_count += 1
        self.memory += SpooledEntries.COST
        if size:
            conn.kept_bytes += abs(size)
            if conn.kept_bytes > self.keep_slack:
                self._trim_kept(conn, self.keep)

    def _drop_overwritten(self, conn: Connection | None, kept: SpooledEntries) -> None:
        """Forget entries whose records the spool's ring has overwritten."""
        oldest = cast(Spool, self.spool).oldest
        while kept and kept.oldest_position() < oldest:
            size = kept.popleft()
            self.memory -= SpooledEntries.COST
            dropped = max(size, 0)
            self.dropped_kept += dropped
            if conn is not None:
                conn.kept_bytes -= abs(size)
                conn.dropped_kept += dropped

    def _spooled_range(
        self, conn: Connection, from_client: bool, start: int, end: int
    ) -> bytes | None:
        """As Connection.kept_range, from the spool."""
        kept = conn.kept
        if not isinstance(kept, SpooledEntries):
            return None
        return range_of(self._spooled_data(kept, from_client), start, end)

    def _spooled_data(self, kept: SpooledEntries, from_client: bool) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of one direction's data entries, newest first; stops at one that
        the ring overwrote (so range_of sees the bytes as not kept)."""
        spool = cast(Spool, self.spool)
        for i in kept.newest_first():
            pos, size = kept.at(i)
            if size <= 0:  # not bytes delivered
                continue
            record = spool.read(pos)
            if record is None:
                yield (0, b"")  # an entry that ends at 0: nothing older is kept
                return
            if record.from_client == from_client:
                yield record.offset, record.extra

    def _end(self, hs: HalfStream, ts: float) -> None:
        """Tell consumers, once, that this direction has no more bytes to come."""
        if hs.ended:
            return
        hs.ended = True
        conn = hs.conn
        for consumer in conn.consumers:
            consumer.on_end(conn, hs.from_client, ts)

    def _flush_half(self, hs: HalfStream, ts: float, reason: str) -> None:
        """No more data will come: every hole becomes a gap, up to the FIN or the last ACK."""
        hs.flush(ts, reason, hs.peer.ack)
        self._end(hs, ts)

    # ------------------------------------------------------------------ protocol detection

    def _sniffed(self, conn: Connection, decided: str | None) -> None:
        """Once the sniffer has decided, attach that protocol's consumers and give them what
        the streams delivered so far, gaps included, in order."""
        if decided is None:
            return
        sniffer = Sniffer.of(conn)
        conn.sniffing = False
        # The content first; then the server's port (engine.protocols).
        conn.protocol = decided or protocols.BY_PORT.get(conn.client_key & 0xFFFF)
        if conn.protocol in self.shedding and conn.id != self.always:
            self.unparsed += 1
            sniffer.release(conn)
            return
        emit = self.events.append
        # A connection joined in its middle (see engine.tcp.StreamConsumer).
        midstream = (
            conn.protocol in protocols.NAMES
            and not (conn.client.syn or conn.server.syn)
            and bool(sniffer.chunks)
        )
        for factory in self.factories.get(conn.protocol, ()) if conn.protocol else ():
            consumer = factory(conn, emit)
            if consumer is None:
                continue
            conn.consumers += (consumer,)
            self.memory += CONSUMER_COST
            if midstream:
                first_ts = sniffer.chunks[0][1]
                consumer.on_gap(conn, True, first_ts, 0, 0, MIDSTREAM)
                consumer.on_gap(conn, False, first_ts, 0, 0, MIDSTREAM)
            for fc, chunk_ts, chunk_offset, chunk, number, reason in sniffer.chunks:
                if chunk is None:
                    consumer.on_gap(conn, fc, chunk_ts, chunk_offset, number, reason)
                else:
                    consumer.on_data(conn, fc, chunk_ts, chunk_offset, chunk, number)
        sniffer.release(conn)

    # ------------------------------------------------------------------ bounds and expiry

    def _trim_kept(self, conn: Connection, limit: int) -> None:
        kept = conn.kept
        if isinstance(kept, SpooledEntries):
            while kept and conn.kept_bytes > limit:
                size = kept.popleft()
                self.memory -= SpooledEntries.COST
                conn.kept_bytes -= abs(size)
                if size > 0:
                    conn.dropped_kept += size
                    self.dropped_kept += size
            return
        while kept and conn.kept_bytes > limit:
            data = kept.popleft()[3]
            if isinstance(data, Resent):
                conn.kept_bytes -= RESENT_COST
                self.memory -= RESENT_COST
            elif not isinstance(data, int):
                n = len(data)
                conn.kept_bytes -= n
                conn.dropped_kept += n
                self.dropped_kept += n
                self.memory -= n

    def end_batch(self, now: float) -> None:
        """Once per batch: LRU order, expiry, bounds, and the live snapshots of what changed."""
        lru = self.lru
        for conn in self.touched:
            if conn.id in lru:
                lru.move_to_end(conn.id)
        touched, self.touched = self.touched, []
        self.batch_mark += 1
        self.expire(now)
        self._enforce_bounds(now)
        if self.live_updates:
            for conn in touched:
                if conn.id not in lru and conn.id not in self.finished:
                    continue  # already reported closed
                info = snapshot(conn)
                if conn.id in self.opened:
                    self.events.append(ConnectionOpened(info))
                else:
                    self.events.append(ConnectionUpdated(info))
            self.opened.clear()

    def expire(self, now: float) -> None:
        if self.buffering:
            for r in [r for r in self.buffering if r.hole_acked_at is not None]:
                r.check_hole(now)
        linger, idle = self.bounds.closed_linger, self.bounds.idle_timeout
        while self.finished:
            conn = next(iter(self.finished.values()))
            if now - conn.last_ts < linger:
                break
            self._finish(conn, now, "closed")
        while self.lru:
            conn = next(iter(self.lru.values()))
            if now - conn.last_ts < idle:
                break
            self._finish(conn, now, "idle")

    def _enforce_bounds(self, now: float) -> None:
        budget = self.bounds.memory_budget
        if self.spool is not None:
            # Closed connections whose records the ring has overwritten keep nothing.
            oldest = self.spool.oldest
            while self.archive:
                conn_id, (kept, _size, _count) = next(iter(self.archive.items()))
                if not isinstance(kept, SpooledEntries) or not kept:
                    break
                if kept.at(len(kept) - 1)[0] >= oldest:
                    break
                self._drop_overwritten(None, kept)  # which uncounts their memory
                del self.archive[conn_id]
                self.memory -= ARCHIVED_COST
        while self.memory > budget and self.archive:
            # Closed connections' bytes go first, oldest first.
            _id, (kept, size, _count) = self.archive.popitem(last=False)
            self.memory -= ARCHIVED_COST
            if isinstance(kept, SpooledEntries):
                # What it costs now: entries the ring overwrote were uncounted as they went.
                self.memory -= len(kept) * SpooledEntries.COST
                self.dropped_kept += sum(max(kept.at(i)[1], 0) for i in range(len(kept)))
            else:
                self.memory -= size
                self.dropped_kept += sum(
                    len(d) for _fc, _ts, _off, d in kept if not isinstance(d, (int, Resent))
                )
        if self.memory > budget:
            # Kept payload goes first, oldest connections first, down to 3/4 of the budget.
            target = budget * 3 // 4
            for conn in list(self.lru.values()):
                if self.memory <= target:
                    break
                if conn.kept_bytes:
                    self._trim_kept(conn, 0)
        while self.lru and (len(self.lru) > self.bounds.max_connections or self.memory > budget):
            self.evicted += 1
            self._finish(next(iter(self.lru.values())), now, "evicted")

    def _finish(self, conn: Connection, ts: float, reason: str) -> None:
        """Take the connection out of the table and report its final state."""
        gap_reason = GAP_REASONS.get(reason, reason)
        self._flush_half(conn.client, ts, gap_reason)
        self._flush_half(conn.server, ts, gap_reason)
        if conn.sniffing:
            if conn.sniffed is None:
                conn.sniffing = False  # no data at all: nothing to recognise
            else:
                sniffer = Sniffer.of(conn)
                sniffer.ended(True)
                self._sniffed(conn, sniffer.ended(False))
        # After the verdict: a parser attached only now (the end decided it) is closed too.
        for consumer in conn.consumers:
            consumer.on_close(conn, ts)
        by_key, ckey = self.by_key, conn.client_key
        if by_key.get(ckey) is conn.client:
            del by_key[ckey]
        skey = reverse_key(ckey)
        if by_key.get(skey) is conn.server:
            del by_key[skey]
        self.lru.pop(conn.id, None)
        self.finished.pop(conn.id, None)
        self.opened.discard(conn.id)
        self.memory -= CONNECTION_COST
        # What is still buffered out of order was turned into gaps above.
        self.events.append(ConnectionClosed(snapshot(conn), reason))
        kept = conn.kept
        cost = (
            len(kept) * SpooledEntries.COST if isinstance(kept, SpooledEntries) else conn.kept_bytes
        )
        if self.bounds.keep_after_close and kept and reason != "evicted":
            # still counted in memory, and so is what archiving it costs
            self.archive[conn.id] = (kept, cost, conn.kept_count)
            self.memory += ARCHIVED_COST
        else:
            self.memory -= cost
        conn.kept = None
        conn.kept_bytes = 0
        self.memory -= CONSUMER_COST * len(conn.consumers)
        conn.release()

    def finish_all(self, ts: float) -> None:
        """End of the capture: every connection is final, in the order they were first seen."""
        # Finished connections are in both dicts until they leave the table.
        for conn in sorted({**self.lru, **self.finished}.values(), key=lambda c: c.id):
            self._finish(conn, ts, "end")

    def take_events(self) -> list[Event]:
        # The list keeps its identity: consumers hold its append method.
        events = self.events.copy()
        self.events.clear()
        return events

    def connection(self, conn_id: int) -> Connection | None:
        return self.lru.get(conn_id) or self.finished.get(conn_id)

    def kept_since(self, conn_id: int, cursor: int) -> KeptSlice | None:
        """The follow view's entries of a connection from `cursor` on (0: from the start), in
        the table or archived after it left; None if it keeps none. Entries are only ever added
        at the end and dropped from the front, so a cursor stays valid across calls."""
        conn = self.connection(conn_id)
        if conn is not None:
            kept, count = conn.kept, conn.kept_count
        else:
            archived = self.archive.get(conn_id)
            if archived is None:
                return None
            kept, _cost, count = archived
        if kept is None:
            return KeptSlice((), count, cursor < count)
        if isinstance(kept, SpooledEntries):
            return self._spooled_since(conn, kept, count, cursor)
        first = count - len(kept)  # the cursor of the oldest entry still kept
        start = max(cursor, first)
        if start >= count:
            return KeptSlice((), count, False)
        entries = tuple(kept[i] for i in range(start - first, len(kept)))
        return KeptSlice(entries, count, cursor < first)

    def _spooled_since(
        self, conn: Connection | None, kept: SpooledEntries, count: int, cursor: int
    ) -> KeptSlice:
        spool = cast(Spool, self.spool)
        self._drop_overwritten(conn, kept)
        first = count - len(kept)
        start = max(cursor, first)
        entries: list[Kept] = []
        for i in range(start - first, len(kept)):
            record = spool.read(kept.at(i)[0])
            if record is None:  # overwritten meanwhile (another thread writes): from here on
                entries.clear()
                first = count
                continue
            entries.append(kept_entry(record))
        return KeptSlice(tuple(entries), count, cursor < first)


def kept_entry(record: Record) -> Kept:
    """The follow-view entry a spool record holds."""
    kind = record.kind
    if kind == DATA:
        return (record.from_client, record.ts, record.offset, record.extra)
    if kind == GAP:
        return (record.from_client, record.ts, record.offset, record.value)
    differs = None if kind == RESENT else kind == RESENT_DIFFERS
    return (record.from_client, record.ts, record.offset, Resent(record.value, differs))


def _new_attempt(conn: Connection, seq: int) -> bool:
    """Is a client SYN on a known connection's ports the start of a new connection?

    Always after a close or reset. Never during the handshake (a retransmitted SYN, or a SYN
    captured after its SYN-ACK). Otherwise, unless it is the SYN of the stream already seen (a late
    duplicate), the ports were reused.
    """
    if conn.state in FINISHED:
        return True
    if conn.state in HANDSHAKE:
        return False
    base = conn.client.base
    return base is None or seq != (base - 1) & SEQ_MASK


def _tls_hello_reader(conn: Connection, emit: Callable[[Event], None]) -> StreamConsumer:
    return TlsHelloReader()


_STATE_TEXT = {state: state.value for state in State}
_new_tuple = tuple.__new__


def snapshot(conn: Connection) -> ConnectionInfo:
    # Made as a tuple in C: a named tuple's own constructor is an interpreted function, and a
    # snapshot is made for every connection that changed, every batch.
    c, s = conn.client, conn.server
    client, server = conn.endpoints()
    return _new_tuple(
        ConnectionInfo,
        (
            conn.id,
            client,
            server,
            _STATE_TEXT[conn.state] if conn.state else "MIDSTREAM",
            conn.conn_state(),
            conn.history,
            conn.direction_guessed,
            conn.first_ts,
            conn.last_ts,
            (c.packets, s.packets),
            (c.delivered, s.delivered),
            (c.missing, s.missing),
            (c.retransmitted, s.retransmitted),
            conn.inconsistent,
            conn.protocol,
            conn.sni,
            conn.alpn,
            conn.kept_bytes,
            conn.dropped_kept,
            conn.first_packet,
            conn.server_hello,
            conn.last_packet,
            conn.tls_status,
            conn.certificate,
            conn.tls_random,
            conn.host,
            "tcp",
        ),
    )
