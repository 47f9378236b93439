"""The UI's own model of the traffic, built only from engine events (never from the engine's
objects, which belong to the worker thread).

It keeps the latest snapshot of every connection it was told about, each connection's HTTP
transactions, and which connections changed since the screen last looked, so the table updates
only those rows. The exchanges themselves are on disk (tui.exchange_log): memory keeps where each
is, and for each connection what its row shows of its last one. Closed connections stay until the
store's own bounds evict the oldest: a number of connections, and a byte budget (its share of
--memory, see tui.memory) over an estimate of what its objects hold. Past the budget the oldest
connections' exchanges go first, then, if the rows alone are past it, the oldest connections;
exchanges go too when the ring file they are in is about to overwrite them. All is counted.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence

from engine.bounds import Bounds, MiB
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    HttpRequest,
    HttpRequestSeen,
    HttpTransaction,
)
from tui.exchange_log import NO_ANSWER, ExchangeLog, Exchanges, row_of
from tui.http_helpers import Encoded

MAX_CONNECTIONS = 200_000
MAX_TRANSACTIONS_PER_CONNECTION = 10_000
BUDGET = 128 * 1024 * 1024  # the store's share of the default --memory (tui.memory)
LOG_BYTES = 256 * MiB  # the ring file of exchanges with --spool 0 (see exchange_log_bytes)
MIN_LOG_BYTES = 16 * MiB

# What the store's objects cost, measured with tracemalloc (`python -m tests.bench.memory
# --overheads` prints them): an exchange, its position in its connection's array (8 bytes, and
# the array's room to grow);
EXCHANGE_COST = 9
# one connection: its ConnectionInfo (the latest replaces the one before) with its strings and
# tuples, the store's dict and set entries, its array of exchange positions, what its row shows
# of its last exchange, and the connections table's row index.
CONNECTION_COST = 1650


class TrafficStore:
    def __init__(self, max_connections: int = MAX_CONNECTIONS, budget: int = BUDGET,
                 log_bytes: int = LOG_BYTES) -> None:
        self.max_connections = max_connections
        self.budget = budget
        self.cost = 0  # estimated bytes held (see EXCHANGE_COST, CONNECTION_COST)
        self.connections: OrderedDict[int, ConnectionInfo] = OrderedDict()
        self.closed: set[int] = set()
        self.log = ExchangeLog(log_bytes)
        self.http: dict[int, Exchanges] = {}
        # What each connection's row shows of its last exchange: its request line and status.
        self.last: dict[int, tuple[str, int]] = {}
        # When the log is written up to here, the exchanges it is about to overwrite go (_sweep).
        self._sweep_at = self.log.capacity
        # Exchanges evicted from each connection (the bounds), for its views to say so.
        self.dropped: dict[int, int] = {}
        # Requests that wait for their answer, per connection, by stream offset.
        self.pending: dict[int, dict[int, HttpRequest]] = {}
        self.changed: set[int] = set()  # ids whose row must be redrawn
        self.removed: set[int] = set()  # ids whose row must go
        self.evicted = 0
        # Exchanges forgotten past the budget or the log's ring (the oldest), or not kept past a
        # connection's MAX_TRANSACTIONS_PER_CONNECTION (the newest).
        self.evicted_exchanges = 0

    def reset(self) -> None:
        """Forget everything: the capture starts again (ids start again from 0)."""
        self.connections.clear()
        self.closed.clear()
        self.http.clear()
        self.last.clear()
        self.dropped.clear()
        self.pending.clear()
        self.changed.clear()
        self.removed.clear()
        self.cost = 0
        self.evicted_exchanges = 0

    def apply(self, events: tuple[object, ...]) -> None:
        for event in events:
            if isinstance(event, (ConnectionOpened, ConnectionUpdated)):
                self._put(event.info)
            elif isinstance(event, ConnectionClosed):
                self._put(event.info)
                self.closed.add(event.info.id)
            elif isinstance(event, HttpTransaction):
                txs = self.http.get(event.connection)
                if txs is None:
                    txs = self.http[event.connection] = Exchanges(self.log, event.connection)
                if len(txs) < MAX_TRANSACTIONS_PER_CONNECTION:
                    txs.append(self.log.append(event))
                    self.cost += EXCHANGE_COST
                    self.last[event.connection] = row_of(event)
                    if self.log.written >= self._sweep_at:
                        self._sweep()
                else:
                    self.evicted_exchanges += 1
                waiting = self.pending.get(event.connection)
                if waiting and event.request is not None:
                    waiting.pop(event.request.offset, None)
                    if not waiting:
                        del self.pending[event.connection]
                self.changed.add(event.connection)
            elif isinstance(event, HttpRequestSeen):
                self.pending.setdefault(event.connection, {})[event.request.offset] = event.request
                self.changed.add(event.connection)
        self._bound()

    def apply_encoded(self, exchanges: Sequence[Encoded]) -> None:
        """Exchanges as the helper processes send them (tui.http_helpers): connection id, the
        record for the log, the request line and status its row shows. After the events that
        opened their connections."""
        log, http, last, pending = self.log, self.http, self.last, self.pending
        for conn_id, blob, line, status, offset in exchanges:
            txs = http.get(conn_id)
            if txs is None:
                txs = http[conn_id] = Exchanges(log, conn_id)
            if len(txs) < MAX_TRANSACTIONS_PER_CONNECTION:
                txs.append(log.append_encoded(blob))
                self.cost += EXCHANGE_COST
                last[conn_id] = (line, status)
                if log.written >= self._sweep_at:
                    self._sweep()
            else:
                self.evicted_exchanges += 1
            waiting = pending.get(conn_id)
            if waiting and offset >= 0:  # its request, listed as waiting, has its answer
                waiting.pop(offset, None)
                if not waiting:
                    del pending[conn_id]
            self.changed.add(conn_id)
        self._bound()

    def _bound(self) -> None:
        """Forget what is past the store's bounds, the oldest first."""
        if self.cost > self.budget:
            self._evict_exchanges(self.budget * 7 // 8)
        while len(self.connections) > self.max_connections or (
            self.cost > self.budget and len(self.connections) > 1
        ):
            old, _ = self.connections.popitem(last=False)
            self.closed.discard(old)
            self.evicted_exchanges += len(self.http.get(old, ()))
            self._drop_exchanges(old, len(self.http.get(old, ())))
            self.last.pop(old, None)
            self.cost -= CONNECTION_COST
            self.pending.pop(old, None)
            self.dropped.pop(old, None)
            self.changed.discard(old)
            self.removed.add(old)
            self.evicted += 1

    def exchanges(self, conn_id: int) -> Exchanges:
        """The connection's exchanges (an empty list for one that has none yet)."""
        txs = self.http.get(conn_id)
        if txs is None:
            txs = self.http[conn_id] = Exchanges(self.log, conn_id)
        return txs

    def close(self) -> None:
        self.log.close()

    def _sweep(self) -> None:
        """Forget the exchanges whose records the ring is about to overwrite: those within an
        eighth of its size of the oldest. The next sweep comes when another eighth is written,
        before the ring reaches what this one kept."""
        log = self.log
        below = log.oldest + log.capacity // 8
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

    def _put(self, info: ConnectionInfo) -> None:
        if info.id not in self.connections:
            self.cost += CONNECTION_COST
        self.connections[info.id] = info
        self.changed.add(info.id)

    def take_changes(self) -> tuple[set[int], set[int]]:
        changed, removed = self.changed, self.removed
        self.changed, self.removed = set(), set()
        return changed - removed, removed

    def summary(self, conn_id: int) -> str:
        """What the connection carries, in a few words: its last HTTP request and how many came
        before, or what its TLS hellos said (from the wire: the caller escapes it). The status
        has a column of its own (`last_status`)."""
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
            return f"({self.dropped[conn_id]:,} exchanges evicted: the memory or spool bound)"
        else:
            return tls_summary(info)
        return line + (f" (+{count - 1})" if count > 1 else "")

    def last_status(self, conn_id: int) -> int:
        """The status of the connection's last HTTP answer; 0 while a request waits for its
        answer; NO_ANSWER when the last request got none; -1 without HTTP."""
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
    """What the TLS hellos said: version, server name, ALPN (from the wire: the caller escapes it).

    The version is the one the server chose; the ALPN the one it selected when the ServerHello
    shows it (TLS 1.2 and earlier), else the list the client offered.
    """
    hello = info.server_hello
    words = [hello.version] if hello else []
    if info.sni is not None:
        words.append(f"SNI {info.sni}")
    if hello and hello.alpn is not None:
        words.append(f"ALPN {hello.alpn} (selected)")
    elif info.alpn:
        words.append(f"ALPN {','.join(info.alpn)}")
    return " ".join(words)
