"""The connection table: TCP segments in, reassembled streams and connection events out.

This is where the rules of `engine.tcp` are applied to each segment: which connection it belongs
to (a new SYN on a finished connection's ports opens a new one), the observer state, delivery in
order, gaps, and the bounds of `engine.bounds`. It does no decoding (see `engine.pipeline`) and no
I/O; time is the packets' time.

Connection keys are integers made from the addresses and ports of the packet's sender (see
`engine.pipeline`); each connection is entered twice, once per direction, and the entry points
at the HalfStream of the data that direction carries.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from engine.bounds import CONNECTION_COST, Bounds
from engine.detect import TLS, Sniffer, TlsHelloReader
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    Event,
    Gap,
)
from engine.tcp import (
    ACK,
    FIN,
    MAX_AHEAD,
    RESENT_COST,
    RST,
    SEQ_MASK,
    SYN,
    Connection,
    HalfStream,
    Kept,
    Resent,
    StreamConsumer,
    reverse_key,
    seq_delta,
)
from engine.tcpstate import FINISHED, Signal, State, next_state

# States in which a plain ACK can move the observer (see engine.tcpstate.TRANSITIONS).
ACK_MOVES = frozenset({None, State.SYN_SENT, State.SYN_RECEIVED, State.CLOSING})
HANDSHAKE = frozenset({None, State.SYN_SENT, State.SYN_RECEIVED})

CONTROL = SYN | FIN | RST

# Why a connection left the table -> why its unfilled holes became gaps.
GAP_REASONS = {"closed": "close", "reused": "close"}

ConsumerFactory = Callable[[Connection, Callable[[Event], None]], "StreamConsumer | None"]


class ConnectionTable:
    def __init__(
        self,
        bounds: Bounds,
        consumers: dict[str | None, list[ConsumerFactory]] | None = None,
        live_updates: bool = False,
    ) -> None:
        self.bounds = bounds
        self.keep = bounds.keep_stream_bytes
        # Trimming waits for an eighth over the cap so that it runs in bursts, not per segment.
        self.keep_slack = self.keep + self.keep // 8
        self.max_ooo = bounds.max_ooo_bytes
        self.factories: dict[str | None, list[ConsumerFactory]] = {TLS: [_tls_hello_reader]}
        for protocol, factories in (consumers or {}).items():
            self.factories[protocol] = [*self.factories.get(protocol, []), *factories]
        self.live_updates = live_updates
        # Protocols whose consumers new connections do not get while the reader is behind (see
        # Pipeline.shed), except the connection `always` (the one the user is looking at).
        self.shedding: frozenset[str] = frozenset()
        self.always: int | None = None
        self.unparsed = 0  # connections that were not given their protocol's consumers
        self.by_key: dict[int, HalfStream] = {}
        # Active connections, least recently touched first (reordered once per batch). Ordered
        # dicts, because a plain dict emptied from the front makes finding its first entry slow.
        self.lru: OrderedDict[int, Connection] = OrderedDict()
        # Closed or reset connections, in the order they finished, lingering for late packets.
        self.finished: OrderedDict[int, Connection] = OrderedDict()
        # Kept bytes of connections that left the table (Bounds.keep_after_close), oldest first.
        self.archive: OrderedDict[int, tuple[deque[Kept], int]] = OrderedDict()
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
        self.ignored = 0

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
        if conn.mark != self.batch_mark:
            conn.mark = self.batch_mark
            self.touched.append(conn)
        if flags & ACK:
            hs.ack = ack
        if flags & CONTROL or conn.watch_acks:
            seq = self._control(hs, ts, seq, ack, flags, wire_len)
        elif not wire_len and "A" not in hs.letters:
            hs.mark("A")
        if window == 0 and not flags & RST and "W" not in hs.letters:
            hs.mark("W")
        if wire_len and not flags & RST:
            # Data carried by a RST is a diagnostic text (RFC 1122 4.2.2.12), not stream bytes.
            if "D" not in hs.letters:
                hs.mark("D")
            base = hs.base
            if base is None:
                hs.base = base = seq  # picked up mid-stream: the first byte seen is offset 0
            if seq == (base + hs.offset) & SEQ_MASK and not hs.ooo and len(data) == wire_len:
                self._deliver(hs, ts, data)
            else:
                self._data(hs, ts, seq, data, wire_len)
        peer = hs.peer
        if peer.ooo and flags & ACK:
            self._gaps_acked(peer, ts)
        if flags & RST:
            self._flush_half(conn.client, ts, "close")
            self._flush_half(conn.server, ts, "close")
        elif flags & FIN and hs.fin_offset is not None and hs.offset >= hs.fin_offset:
            self._end(hs, ts)

    def _open(self, ts: float, key: int, flags: int) -> HalfStream:
        if flags & SYN:
            sender_is_client, guessed = not flags & ACK, False
        else:
            sport, dport = (key >> 16) & 0xFFFF, key & 0xFFFF
            # Without a handshake the side with the higher (ephemeral) port is the client.
            sender_is_client, guessed = sport >= dport, True
        rkey = reverse_key(key)
        ckey, skey = (key, rkey) if sender_is_client else (rkey, key)
        conn = Connection(self.next_id, ts, ckey, guessed)
        conn.first_packet = self.packet_number
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
        return conn.client if sender_is_client else conn.server

    def _control(
        self, hs: HalfStream, ts: float, seq: int, ack: int, flags: int, wire_len: int
    ) -> int:
        """Apply SYN, FIN and RST to the half stream and the observer state; return the data's seq."""
        conn = hs.conn
        if flags & RST:
            signal = Signal.RST
            hs.rst = True
            if conn.first_rst is None:
                conn.first_rst = "orig" if hs.from_client else "resp"
            hs.mark("R")
        elif flags & SYN:
            signal = Signal.SYN_ACK if flags & ACK else Signal.SYN
            hs.mark("H" if flags & ACK else "S")
            if hs.from_client == (signal is Signal.SYN):
                hs.syn = True
            if hs.base is None or (hs.offset == 0 and not hs.ooo):
                hs.base = (seq + 1) & SEQ_MASK
            seq = (seq + 1) & SEQ_MASK  # data on a SYN starts after it
        elif flags & FIN:
            signal = Signal.FIN if not hs.peer.fin else Signal.FIN_OTHER
            if hs.fin:
                signal = Signal.ACK  # a retransmitted FIN
        else:
            signal = Signal.ACK
            if not wire_len:
                hs.mark("A")
            if (
                conn.state is State.CLOSING
                and hs.fin
                and hs.peer.fin_offset is not None
                and hs.peer.base is not None
                and hs.peer.offset_of(ack) > hs.peer.fin_offset
            ):
                signal = Signal.FINAL_ACK
        if flags & FIN and not hs.fin:
            hs.fin = True
            hs.mark("F")
            if hs.base is None:
                hs.base = seq
            hs.fin_offset = hs.offset_of((seq + wire_len) & SEQ_MASK)
        state = next_state(conn.state, signal)
        if state is not conn.state:
            conn.state = state
            conn.watch_acks = state in ACK_MOVES
            if state in FINISHED and conn.finished_ts is None:
                conn.finished_ts = ts
                self.finished[conn.id] = conn
        return seq

    def _data(self, hs: HalfStream, ts: float, seq: int, data: bytes, wire_len: int) -> None:
        """Everything but the in-order fast path: overlaps, retransmissions, holes, short captures."""
        assert hs.base is not None
        delta = seq_delta(seq, (hs.base + hs.offset) & SEQ_MASK)
        captured = len(data)
        if delta > 0:
            if delta > MAX_AHEAD:
                hs.ignored += 1
                self.ignored += 1
                return
            added, differing = hs.buffer(hs.offset + delta, data)
            self.memory += added
            if differing:
                self._inconsistent(hs)
            if hs.ooo_bytes > self.max_ooo:
                while hs.ooo and hs.ooo_bytes > self.max_ooo // 2:
                    self._skip_hole(hs, ts, "buffer")
            return
        old = min(-delta, wire_len)
        if old and not (delta == -1 and wire_len == 1):  # a keep-alive probe resends one old byte
            hs.retransmitted += old
            hs.mark("T")
            start = hs.offset + delta
            seen = hs.conn.kept_range(hs.from_client, start, start + min(old, captured))
            differs = None if seen is None else seen != data[: len(seen)]
            if differs:
                self._inconsistent(hs)
            if self.keep:
                self._keep(hs.conn, (hs.from_client, ts, start, Resent(old, differs)), RESENT_COST)
        new = wire_len - old
        if new <= 0:
            return
        fresh = data[old:]
        if fresh:
            self._deliver(hs, ts, fresh)
        if len(fresh) < new:
            self._gap(hs, ts, new - len(fresh), "snaplen")
        if hs.ooo:
            self._drain(hs, ts)

    def _inconsistent(self, hs: HalfStream) -> None:
        hs.conn.inconsistent += 1
        hs.mark("I")

    def _deliver(self, hs: HalfStream, ts: float, data: bytes) -> None:
        conn = hs.conn
        off = hs.offset
        n = len(data)
        hs.offset = off + n
        hs.delivered += n
        if self.keep:
            self._keep(conn, (hs.from_client, ts, off, data), n)
        for consumer in conn.consumers:
            consumer.on_data(conn, hs.from_client, ts, data)
        if conn.sniffing:
            self._sniff(conn, hs.from_client, ts, data)
        if hs.ooo and hs.ooo[0][0] <= hs.offset:
            self._drain(hs, ts)
        if hs.fin_offset is not None and hs.offset >= hs.fin_offset:
            self._end(hs, ts)

    def _keep(self, conn: Connection, entry: Kept, cost: int) -> None:
        """Add to the follow view's entries, within the per-connection bound."""
        if conn.kept is None:
            conn.kept = deque()
        conn.kept.append(entry)
        conn.kept_bytes += cost
        self.memory += cost
        if conn.kept_bytes > self.keep_slack:
            self._trim_kept(conn, self.keep)

    def _end(self, hs: HalfStream, ts: float) -> None:
        """Tell consumers, once, that this direction has no more bytes to come."""
        if hs.ended:
            return
        hs.ended = True
        conn = hs.conn
        for consumer in conn.consumers:
            consumer.on_end(conn, hs.from_client, ts)

    def _drain(self, hs: HalfStream, ts: float) -> None:
        """Deliver buffered data that has become contiguous."""
        ooo = hs.ooo
        while ooo and ooo[0][0] <= hs.offset:
            start, end, data = ooo.pop(0)
            hs.ooo_bytes -= len(data)
            self.memory -= len(data)
            if end <= hs.offset:
                continue
            self._deliver(hs, ts, data[hs.offset - start :])

    def _gap(self, hs: HalfStream, ts: float, size: int, reason: str) -> None:
        conn = hs.conn
        self.events.append(Gap(conn.id, hs.from_client, hs.offset, size, ts, reason))
        if self.keep:
            if conn.kept is None:
                conn.kept = deque()
            conn.kept.append((hs.from_client, ts, hs.offset, size))
        hs.offset += size
        hs.missing += size
        hs.mark("G")
        for consumer in conn.consumers:
            consumer.on_gap(conn, hs.from_client, ts, size)
        if conn.sniffing:
            # A stream that starts with a hole cannot be recognised from its first bytes.
            self._sniff(conn, hs.from_client, ts, None)

    def _skip_hole(self, hs: HalfStream, ts: float, reason: str) -> None:
        assert hs.ooo
        start = hs.ooo[0][0]
        if start > hs.offset:
            self._gap(hs, ts, start - hs.offset, reason)
        self._drain(hs, ts)

    def _gaps_acked(self, hs: HalfStream, ts: float) -> None:
        """The peer acknowledged bytes of hs beyond a hole: the endpoint got them, we did not."""
        acked = hs.acked_offset()
        while acked is not None and hs.ooo and hs.ooo[0][0] <= acked and acked > hs.offset:
            self._skip_hole(hs, ts, "acked")

    def _flush_half(self, hs: HalfStream, ts: float, reason: str) -> None:
        """No more data will come: every hole becomes a gap, up to the FIN or the last ACK."""
        while hs.ooo:
            self._skip_hole(hs, ts, reason)
        end = hs.fin_offset if hs.fin_offset is not None else hs.acked_offset()
        if end is not None and hs.offset < end <= hs.offset + MAX_AHEAD:
            self._gap(hs, ts, end - hs.offset, reason)
        self._end(hs, ts)

    # ------------------------------------------------------------------ protocol detection

    def _sniff(self, conn: Connection, from_client: bool, ts: float, data: bytes | None) -> None:
        sniffer = Sniffer.of(conn)
        decided = sniffer.add(from_client, ts, data)
        if decided is None:
            return
        conn.sniffing = False
        conn.protocol = decided or None
        if conn.protocol in self.shedding and conn.id != self.always:
            self.unparsed += 1
            sniffer.release(conn)
            return
        emit = self.events.append
        for factory in self.factories.get(conn.protocol, ()) if conn.protocol else ():
            consumer = factory(conn, emit)
            if consumer is None:
                continue
            conn.consumers += (consumer,)
            for fc, chunk_ts, chunk in sniffer.chunks:
                consumer.on_data(conn, fc, chunk_ts, chunk)
        sniffer.release(conn)

    # ------------------------------------------------------------------ bounds and expiry

    def _trim_kept(self, conn: Connection, limit: int) -> None:
        kept = conn.kept
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
        while self.memory > budget and self.archive:
            # Closed connections' bytes go first, oldest first.
            _id, (kept, size) = self.archive.popitem(last=False)
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
        for consumer in conn.consumers:
            consumer.on_close(conn, ts)
        if conn.sniffing:
            if conn.sniffed is None:
                conn.sniffing = False  # no data at all: nothing to recognise
            else:
                self._sniff(conn, True, ts, None)
                self._sniff(conn, False, ts, None)
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
        self.events.append(ConnectionClosed(snapshot(conn), reason))
        if self.bounds.keep_after_close and conn.kept and reason != "evicted":
            self.archive[conn.id] = (conn.kept, conn.kept_bytes)  # still counted in memory
        else:
            self.memory -= conn.kept_bytes
        conn.kept = None
        conn.kept_bytes = 0
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

    def kept_of(self, conn_id: int) -> deque[Kept] | None:
        """The follow view's bytes of a connection, in the table or archived after it left."""
        conn = self.connection(conn_id)
        if conn is not None:
            return conn.kept
        archived = self.archive.get(conn_id)
        return archived[0] if archived is not None else None


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


def snapshot(conn: Connection) -> ConnectionInfo:
    c, s = conn.client, conn.server
    client, server = conn.endpoints()
    return ConnectionInfo(
        conn.id,
        client,
        server,
        conn.state.value if conn.state else "MIDSTREAM",
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
    )
