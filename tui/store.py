"""The UI's own model of the traffic, built only from engine events (never from the engine's
objects, which belong to the worker thread).

It keeps the latest snapshot of every connection it was told about, each connection's HTTP
transactions (or, for Redis and the other protocols of engine.protocols, its `Transaction`s,
kept and bounded in the same way: below, "exchanges" are both), and which connections changed
since the screen last looked, so the table updates only those rows. The exchanges themselves
are on disk (tui.exchange_log): memory keeps where each is, and for each connection what its
row shows of its last one. Closed connections stay until the store's own bounds evict the
oldest: a number of connections, and a byte budget (its share of --memory, see tui.memory) over
an estimate of what its objects hold. Past the budget the oldest connections that ended go
first, with their exchanges (a row costs as much as some 130 exchanges whose records are on
disk, so forgetting exchanges alone would empty every row of its HTTP and free little); then the
oldest exchanges of the open ones; then the oldest open connections. Exchanges go too when the
ring file they are in is about to overwrite them. All is counted. A connection forgotten stays
so: what comes for it later is not kept (its exchanges are counted).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Sequence

from engine.bounds import Bounds, MiB
from engine.tcpstate import FINISHED
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    HttpRequest,
    HttpRequestSeen,
    HttpTransaction,
    Transaction,
)
from tui.exchange_log import NO_ANSWER, EncodedExchanges, ExchangeLog, Exchanges, row_of

MAX_CONNECTIONS = 200_000
# Exchanges kept per connection: past it, the oldest go, an eighth at a time (each time the
# list is copied once). Opening a connection reads every exchange's sort value from the ring
# file: 10,000 take about 100 ms.
MAX_TRANSACTIONS_PER_CONNECTION = 10_000
MAX_KEPT = MAX_TRANSACTIONS_PER_CONNECTION + MAX_TRANSACTIONS_PER_CONNECTION // 8
BUDGET = 128 * 1024 * 1024  # the store's share of the default --memory (tui.memory)
LOG_BYTES = 256 * MiB  # the ring file of exchanges with --spool 0 (see exchange_log_bytes)
MIN_LOG_BYTES = 16 * MiB

# What the store's objects cost, measured with tracemalloc (`python -m tests.bench.memory
# --overheads` prints them): an exchange, its position and its index in its connection's two
# arrays (8 bytes each, and the arrays' room to grow);
EXCHANGE_COST = 18
# one connection: its ConnectionInfo (the latest replaces the one before) with its strings and
# tuples (once closed, those that repeat shared with other rows: 1,650 bytes before), the
# store's dict and set entries, its array of exchange positions, what its row shows
# of its last exchange, and the connections table's row index.
CONNECTION_COST = 1200

# The fields of a closed connection's info whose values it shares with others (_shared), and
# how many distinct values are kept for sharing before starting again.
SHARED_FIELDS = tuple(ConnectionInfo._fields.index(name) for name in (
    "server", "state", "conn_state", "history", "packets", "missing_bytes",
    "retransmitted_bytes", "protocol", "alpn", "server_hello"))
MAX_SHARED = 10_000
FINISHED_STATES = frozenset(state.value for state in FINISHED)  # the states a connection ends in
# The protocols whose exchanges are engine.events.HttpTransactions (TLS: once decrypted). Every
# other protocol a connection is labelled with (engine.protocols: redis, ...) gives Transactions.
HTTP_PROTOCOLS = frozenset({"http", "http2", "tls"})


def lists_transactions(protocol: str | None) -> bool:
    """Whether a connection of this protocol has `Transaction`s (not HTTP exchanges) listed."""
    return bool(protocol) and protocol not in HTTP_PROTOCOLS


class TrafficStore:
    def __init__(self, max_connections: int = MAX_CONNECTIONS, budget: int = BUDGET,
                 log_bytes: int = LOG_BYTES) -> None:
        self.max_connections = max_connections
        self.budget = budget
        self.cost = 0  # estimated bytes held (see EXCHANGE_COST, CONNECTION_COST)
        self.connections: OrderedDict[int, ConnectionInfo] = OrderedDict()
        self.closed: set[int] = set()
        self.log = ExchangeLog(log_bytes)
        # Each connection's exchanges: HTTP ones, or the Transactions of another protocol.
        self.http: dict[int, Exchanges] = {}
        # What each connection's row shows of its last exchange: its request line and status
        # (tui.exchange_log.row_of).
        self.last: dict[int, tuple[str, int]] = {}
        # When the log is written up to here, the exchanges it is about to overwrite go (_sweep).
        self._sweep_at = self.log.capacity
        # Exchanges evicted from each connection (the bounds), for its views to say so.
        self.dropped: dict[int, int] = {}
        # Requests that wait for their answer, per connection, by stream offset.
        self.pending: dict[int, dict[int, HttpRequest]] = {}
        self.changed: set[int] = set()  # ids whose row must be redrawn
        self.removed: set[int] = set()  # ids whose row must go
        # The local processes at the ends of live connections, as their rows show them.
        self.processes: dict[int, str] = {}
        self.evicted = 0
        self._common: dict[object, object] = {}  # the values closed connections share
        self.highest = -1  # the highest connection id the store was told about
        # Exchanges forgotten past the budget, the log's ring or a connection's
        # MAX_TRANSACTIONS_PER_CONNECTION: the oldest (a live view shows the newest).
        self.evicted_exchanges = 0

    def reset(self) -> None:
        """Forget everything: the capture starts again (ids start again from 0)."""
        self.connections.clear()
        self.closed.clear()
        self.http.clear()
        self.last.clear()
        self.dropped.clear()
        self.pending.clear()
        self.processes.clear()
        self.changed.clear()
        self.removed.clear()
        self.cost = 0
        self.highest = -1
        self.evicted_exchanges = 0

    def apply(self, events: tuple[object, ...]) -> None:
        # A connection's events come at the end of the batch in which it changed, after its
        # exchanges: one the store has not heard of yet is new, unless an id as high was seen
        # before this batch (ids grow as connections open); then its row was forgotten.
        known = self.highest
        for event in events:
            if isinstance(event, (ConnectionOpened, ConnectionUpdated)):
                self._put(event.info, known)
            elif isinstance(event, ConnectionClosed):
                self._put(self._shared(event.info), known)
                if event.info.id in self.connections:
                    self.closed.add(event.info.id)
            elif isinstance(event, (HttpTransaction, Transaction)):
                if event.connection <= known and event.connection not in self.connections:
                    self.evicted_exchanges += 1  # its connection was forgotten (the bounds)
                    continue
                txs = self.http.get(event.connection)
                if txs is None:
                    txs = self.http[event.connection] = Exchanges(self.log, event.connection)
                txs.append(self.log.append(event), event.index)
                self.cost += EXCHANGE_COST
                self.last[event.connection] = row_of(event)
                if len(txs) > MAX_KEPT:
                    self._trim(event.connection, len(txs))
                if self.log.written >= self._sweep_at:
                    self._sweep()
                self.changed.add(event.connection)
                if isinstance(event, Transaction):
                    continue  # (no request of another protocol is listed as waiting)
                waiting = self.pending.get(event.connection)
                if waiting and event.request is not None:
                    waiting.pop(event.request.offset, None)
                    if not waiting:
                        del self.pending[event.connection]
            elif isinstance(event, HttpRequestSeen):
                if event.connection <= known and event.connection not in self.connections:
                    continue
                self.pending.setdefault(event.connection, {})[event.request.offset] = event.request
                self.changed.add(event.connection)
        self._bound()

    def apply_encoded(self, batches: Sequence[EncodedExchanges]) -> None:
        """Exchanges as the helper processes send them (tui.http_helpers), their records written
        to the log a slice at a time. After the events that opened their connections; those of
        a connection the store has forgotten are counted as evicted (those of a connection it
        never had, id -1, the helpers counted)."""
        log = self.log
        for batch in batches:
            starts, size = batch.starts, len(batch.records)
            first = 0
            while first < len(starts):
                # A slice is at most an eighth of the log (or one record, if bigger), swept
                # before it is written, so that no record the store keeps is overwritten
                # meanwhile (see _sweep). Its records start and end within that eighth: one
                # running past it overwrote kept records that no sweep had forgotten.
                limit = starts[first] + log.capacity // 8
                last = bisect_right(starts, limit, first + 1)
                if last < len(starts) or size > limit:
                    last = max(first + 1, last - 1)
                end = starts[last] if last < len(starts) else size
                if log.written + end - starts[first] >= self._sweep_at:
                    self._sweep(end - starts[first])
                whole = first == 0 and end == size
                records = batch.records if whole else batch.records[starts[first]:end]
                base = log.append_records(records) - starts[first]
                self._add_encoded(batch, first, last, base)
                first = last
        self._bound()

    def _add_encoded(self, batch: EncodedExchanges, first: int, last: int, base: int) -> None:
        """Keep exchanges first..last-1 of `batch`, whose records are at `base` + their starts.
        A batch interleaves its connections' exchanges: each connection's are added at once
        (0.1 s of the UI thread for the 161,500 exchanges of the keep-alive benchmark, one at a
        time: 0.66 us each)."""
        runs: dict[int, list[int]] = {}
        conns = batch.connections
        for i in range(first, last):
            conn_id = conns[i]
            run = runs.get(conn_id)
            if run is None:
                runs[conn_id] = [i]
            else:
                run.append(i)
        http, last_of, pending = self.http, self.last, self.pending
        connections, changed = self.connections, self.changed
        starts, lines, statuses, offsets = batch.starts, batch.lines, batch.statuses, batch.offsets
        indexes = batch.indexes
        for conn_id, run in runs.items():
            if conn_id not in connections:
                if conn_id >= 0:  # the helpers are behind the capture thread: its row went
                    self.evicted_exchanges += len(run)
                continue
            txs = http.get(conn_id)
            if txs is None:
                txs = http[conn_id] = Exchanges(self.log, conn_id)
            txs.extend([base + starts[i] for i in run], [indexes[i] for i in run])
            self.cost += EXCHANGE_COST * len(run)
            # As if added one by one: past MAX_KEPT, down to MAX_TRANSACTIONS_PER_CONNECTION.
            while len(txs) > MAX_KEPT:
                self._trim(conn_id, MAX_KEPT + 1)
                txs = http[conn_id]
            i = run[-1]
            last_of[conn_id] = (lines[i], statuses[i])
            waiting = pending.get(conn_id) if pending else None
            if waiting:
                for i in run:
                    if offsets[i] >= 0:  # its request, listed as waiting, is answered
                        waiting.pop(offsets[i], None)
                if not waiting:
                    del pending[conn_id]
            changed.add(conn_id)

    def _bound(self) -> None:
        """Forget what is past the store's bounds: connections that ended first (closed, or
        in a finished state while the engine lingers on them), the oldest first, each with its
        exchanges; then the oldest exchanges of those left; then, if the rows alone
        are past it, the oldest connections. Past the budget it goes down to 7/8 of it, so that
        this runs once in a while rather than on every update. One connection always stays."""
        connections = self.connections
        if self.cost <= self.budget and len(connections) <= self.max_connections:
            return
        target = self.budget * 7 // 8 if self.cost > self.budget else self.budget
        cost, count, http, closed = self.cost, len(connections), self.http, self.closed
        victims = []
        for conn_id in connections:
            if (cost <= target and count <= self.max_connections) or count <= 1:
                break
            if conn_id in closed or connections[conn_id].state in FINISHED_STATES:
                victims.append(conn_id)
                cost -= CONNECTION_COST + EXCHANGE_COST * len(http.get(conn_id, ()))
                count -= 1
        for conn_id in victims:
            self._forget(conn_id)
        if self.cost > target:
            self._evict_exchanges(target)
        while len(connections) > self.max_connections or (
            self.cost > self.budget and len(connections) > 1
        ):
            self._forget(next(iter(connections)))

    def _forget(self, conn_id: int) -> None:
        """Forget a connection and its exchanges, counted."""
        del self.connections[conn_id]
        self.closed.discard(conn_id)
        self.evicted_exchanges += len(self.http.get(conn_id, ()))
        self._drop_exchanges(conn_id, len(self.http.get(conn_id, ())))
        self.last.pop(conn_id, None)
        self.cost -= CONNECTION_COST
        self.pending.pop(conn_id, None)
        self.dropped.pop(conn_id, None)
        self.processes.pop(conn_id, None)
        self.changed.discard(conn_id)
        self.removed.add(conn_id)
        self.evicted += 1

    def set_processes(self, found: dict[int, str]) -> None:
        """The local processes of live connections (engine.procs), for their rows."""
        for conn_id, text in found.items():
            if conn_id in self.connections:
                self.processes[conn_id] = text
                self.changed.add(conn_id)

    def exchanges(self, conn_id: int) -> Exchanges:
        """The connection's exchanges (an empty list for one that has none yet)."""
        txs = self.http.get(conn_id)
        if txs is None:
            txs = self.http[conn_id] = Exchanges(self.log, conn_id)
        return txs

    def close(self) -> None:
        self.log.close()

    def _trim(self, conn_id: int, kept: int) -> None:
        """A connection past MAX_KEPT exchanges keeps its newest MAX_TRANSACTIONS_PER_CONNECTION."""
        n = kept - MAX_TRANSACTIONS_PER_CONNECTION
        self.evicted_exchanges += n
        self._drop_exchanges(conn_id, n)

    def _sweep(self, size: int = 0) -> None:
        """Forget the exchanges whose records the ring is about to overwrite: those within an
        eighth of its size of the oldest, or, about to write `size` bytes more than that, those
        that they overwrite. The next sweep comes when another eighth is written, before the
        ring reaches what this one kept."""
        log = self.log
        below = max(log.oldest + log.capacity // 8, log.written + size - log.capacity)
        self._sweep_at = log.written + log.capacity // 8
        for conn_id, txs in list(self.http.items()):
            n = bisect_left(txs.positions, below)
            if n:
                self.evicted_exchanges += n
                self._drop_exchanges(conn_id, n)
                self.changed.add(conn_id)

    def _evict_exchanges(self, target: int) -> None:
        """The oldest connections' exchanges, oldest first, until the cost is down to target
        (below the budget, so that this runs once in a while rather than on every update)."""
        for conn_id, txs in list(self.http.items()):
            if self.cost <= target:
                return
            n = min(len(txs), -(-(self.cost - target) // EXCHANGE_COST))
            self.evicted_exchanges += n
            self._drop_exchanges(conn_id, n)
            self.changed.add(conn_id)

    def _drop_exchanges(self, conn_id: int, n: int) -> None:
        """Forget a connection's first n exchanges, keeping `cost` the sum over what is kept."""
        txs = self.http.get(conn_id)
        if not txs or not n:
            return
        n = min(n, len(txs))
        self.dropped[conn_id] = self.dropped.get(conn_id, 0) + n
        self.cost -= n * EXCHANGE_COST
        if n < len(txs):
            # A new list rather than one cut in place: a view holding the old one sees no shift.
            self.http[conn_id] = txs.without_first(n)
        else:
            del self.http[conn_id]
            self.last.pop(conn_id, None)

    def _put(self, info: ConnectionInfo, known: int) -> None:
        """A connection's latest info; none for one the store has forgotten: an id no higher
        than `known` (the highest before this batch) that it does not hold."""
        if info.id not in self.connections:
            if info.id <= known:
                return
            self.cost += CONNECTION_COST
            self.highest = max(self.highest, info.id)
        self.connections[info.id] = info
        self.changed.add(info.id)

    def _shared(self, info: ConnectionInfo) -> ConnectionInfo:
        """A closed connection's final info, kept for as long as its row: the same, with the
        values that repeat from one connection to the next (the server, states, history,
        protocol, counts such as (0, 0)) shared with the rows before it rather than each its own."""
        common = self._common
        if len(common) > MAX_SHARED:
            common.clear()
        values = list(info)
        for i in SHARED_FIELDS:
            value = values[i]
            values[i] = common.setdefault(value, value)
        return ConnectionInfo._make(values)

    def take_changes(self) -> tuple[set[int], set[int]]:
        changed, removed = self.changed, self.removed
        self.changed, self.removed = set(), set()
        return changed - removed, removed

    def summary(self, conn_id: int) -> str:
        """What the connection carries, in a few words: its last HTTP request (or transaction's
        request, `GET user:42`) and how many came before, or what its TLS hellos said (from the
        wire: the caller escapes it). The status has a column of its own (`last_status`)."""
        info = self.connections.get(conn_id)
        if info is None:
            return ""
        txs = self.http.get(conn_id, ())
        waiting = self.pending.get(conn_id)
        count = len(txs) + (len(waiting) if waiting else 0)
        last = self.last.get(conn_id)
        if waiting:
            request: HttpRequest = waiting[max(waiting)]
            line = f"{request.method} {request.target}"
        elif last is not None:
            line = last[0]
        elif self.dropped.get(conn_id):
            what = "transactions" if lists_transactions(info.protocol) else "exchanges"
            return f"({self.dropped[conn_id]:,} {what} evicted: the memory or spool bound)"
        else:
            return tls_summary(info)
        return line + (f" (+{count - 1})" if count > 1 else "")

    def last_status(self, conn_id: int) -> int:
        """The status of the connection's last HTTP answer; 0 while a request waits for its
        answer; NO_ANSWER when the last request got none; ANSWERED_OK or ANSWERED_ERROR for a
        transaction of another protocol; -1 without any."""
        if self.pending.get(conn_id):
            return 0
        last = self.last.get(conn_id)
        return last[1] if last is not None else -1


def exchange_log_bytes(bounds: Bounds) -> int:
    """The size of the ring file of exchanges: a quarter of --spool (the streams' ring), at
    least MIN_LOG_BYTES; LOG_BYTES when the streams are kept in memory (--spool 0)."""
    if not bounds.spool_bytes:
        return LOG_BYTES
    return max(MIN_LOG_BYTES, bounds.spool_bytes // 4)


def tls_summary(info: ConnectionInfo) -> str:
    """What the TLS hellos said: version, server name, ALPN (from the wire: the caller escapes it),
    and with a key log whether it was decrypted (its suite), or why not.

    The version is the one the server chose; the ALPN the one it selected when the ServerHello
    shows it (TLS 1.2 and earlier), else the list the client offered.
    """
    hello = info.server_hello
    words = [hello.version] if hello else []
    if info.tls_decryption == "decrypted":
        words.append(f"{hello.cipher} decrypted" if hello else "decrypted")
    elif info.tls_decryption is not None:
        words.append(f"not decrypted: {info.tls_decryption}")
    if info.sni is not None:
        words.append(f"SNI {info.sni}")
    if hello and hello.alpn is not None:
        words.append(f"ALPN {hello.alpn} (selected)")
    elif info.alpn:
        words.append(f"ALPN {','.join(info.alpn)}")
    cert = info.certificate
    if cert is not None:
        words.append(f"cert {cert.subject} {cert.not_before[:10]} to {cert.not_after[:10]}")
    return " ".join(words)
