"""The UI's own model of the traffic, built only from engine events (never from the engine's
objects, which belong to the worker thread).

It keeps the latest snapshot of every connection it was told about, each connection's HTTP
transactions, and which connections changed since the screen last looked, so the table updates
only those rows. Closed connections stay until the store's own bounds evict the oldest: a number
of connections, and a byte budget (its share of --memory, see tui.memory) over an estimate of what
its objects hold. Past the budget the oldest connections' exchanges go first, then, if the rows
alone are past it, the oldest connections; both are counted.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterator
from itertools import chain
from typing import Any

from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    HttpRequest,
    HttpRequestSeen,
    HttpResponse,
    HttpTransaction,
)

MAX_CONNECTIONS = 200_000
MAX_TRANSACTIONS_PER_CONNECTION = 10_000
NO_ANSWER = -2  # last_status: the last request got no answer (it will get none)
BUDGET = 128 * 1024 * 1024  # the store's share of the default --memory (tui.memory)
MAX_PACKS = 512  # recent header packs, by the engine's tuple (TrafficStore.packs)

# What the store's objects cost beyond the characters of their strings and the bytes of their
# bodies, measured with tracemalloc (`python -m tests.bench.memory --overheads` prints them):
# an HttpTransaction with its request and response, their small fields (times, method, version,
# reason, the body's bytes object) and its slot in the list;
TRANSACTION_COST = 840
# one header as the engine gives it: its (name, value) tuple and the two str objects, made
# afresh for each message (a head that repeats byte for byte shares the header tuple of the one
# before: the engine's HeadCache gives the same tuple, and it is counted once);
HEADER_COST = 170
# what the store keeps instead (PackedHeaders): the object and its string, plus the characters
# (a repeated head shares the packed object too);
PACKED_COST = 100
# one connection: its ConnectionInfo (the latest replaces the one before) with its strings and
# tuples, the store's dict and set entries, and the connections table's row index.
CONNECTION_COST = 1200


_new = tuple.__new__
_REQUEST_HEADERS = HttpRequest._fields.index("headers")
_RESPONSE_HEADERS = HttpResponse._fields.index("headers")


class PackedHeaders:
    """A message's header fields as the store keeps them: names and values in one string, each
    ended by a line feed (which no field from the engine holds: it reads heads line by line),
    rather than a tuple of pairs of strings (170 bytes a field). It reads as the tuple of
    (name, value) pairs it was made from, and equals it. See `pack`."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __len__(self) -> int:
        return self.text.count("\n") // 2

    def __iter__(self) -> Iterator[tuple[str, str]]:
        parts = iter(self.text.split("\n"))
        return zip(parts, parts)  # the last, empty part has no partner

    def __getitem__(self, index: Any) -> Any:
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedHeaders):
            return self.text == other.text
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


def pack(headers: tuple[tuple[str, str], ...]) -> PackedHeaders | tuple[tuple[str, str], ...]:
    """The headers packed, or as they are when there are none or one holds a line feed."""
    if not headers:
        return headers
    text = "\n".join(chain.from_iterable(headers)) + "\n"
    if text.count("\n") != 2 * len(headers):
        return headers
    return PackedHeaders(text)


class TrafficStore:
    def __init__(self, max_connections: int = MAX_CONNECTIONS, budget: int = BUDGET) -> None:
        self.max_connections = max_connections
        self.budget = budget
        self.cost = 0  # estimated bytes held (see transaction_cost, CONNECTION_COST)
        self.connections: OrderedDict[int, ConnectionInfo] = OrderedDict()
        self.closed: set[int] = set()
        self.http: dict[int, list[HttpTransaction]] = {}
        # What each kept exchange was counted for in `cost` (transaction_cost), in step with
        # `http`: computed once, when the exchange comes.
        self.costs: dict[int, array[int]] = {}
        # Recent packs by the engine's header tuple they were made from (its id, and the tuple
        # to be sure of it): the engine gives a repeated head the same tuple (its HeadCache), on
        # any connection, and the store then keeps one pack. Bounded: started again when full.
        self.packs: dict[int, tuple[tuple[tuple[str, str], ...], Any]] = {}
        # Exchanges evicted from each connection (the byte budget), for its views to say so.
        self.dropped: dict[int, int] = {}
        # Requests that wait for their answer, per connection, by stream offset.
        self.pending: dict[int, dict[int, HttpRequest]] = {}
        self.changed: set[int] = set()  # ids whose row must be redrawn
        self.removed: set[int] = set()  # ids whose row must go
        self.evicted = 0
        # Exchanges forgotten past the budget (the oldest), or not kept past a connection's
        # MAX_TRANSACTIONS_PER_CONNECTION (the newest).
        self.evicted_exchanges = 0

    def reset(self) -> None:
        """Forget everything: the capture starts again (ids start again from 0)."""
        self.connections.clear()
        self.closed.clear()
        self.http.clear()
        self.costs.clear()
        self.packs.clear()
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
                txs = self.http.setdefault(event.connection, [])
                if len(txs) < MAX_TRANSACTIONS_PER_CONNECTION:
                    event = self._packed(event)
                    cost = transaction_cost(event, txs[-1] if txs else None)
                    self.cost += cost
                    costs = self.costs.get(event.connection)
                    if costs is None:
                        costs = self.costs[event.connection] = array("l")
                    costs.append(cost)
                    txs.append(event)
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
        if self.cost > self.budget:
            self._evict_exchanges(self.budget * 7 // 8)
        while len(self.connections) > self.max_connections or (
            self.cost > self.budget and len(self.connections) > 1
        ):
            old, _ = self.connections.popitem(last=False)
            self.closed.discard(old)
            self.evicted_exchanges += len(self.http.get(old, ()))
            self._drop_exchanges(old, len(self.http.get(old, ())))
            self.cost -= CONNECTION_COST
            self.pending.pop(old, None)
            self.dropped.pop(old, None)
            self.changed.discard(old)
            self.removed.add(old)
            self.evicted += 1

    def _pack(self, headers: tuple[tuple[str, str], ...]) -> Any:
        packs = self.packs
        found = packs.get(id(headers))
        if found is not None and found[0] is headers:
            return found[1]
        if len(packs) >= MAX_PACKS:
            packs.clear()
        packed = pack(headers)
        packs[id(headers)] = (headers, packed)
        return packed

    def _packed(self, tx: HttpTransaction) -> HttpTransaction:
        """The exchange with its headers packed (PackedHeaders)."""
        request, response = tx.request, tx.response
        if request is not None:  # the named tuple made at C speed (_replace is Python)
            at = _REQUEST_HEADERS
            request = _new(HttpRequest, (*request[:at], self._pack(request.headers), *request[at + 1 :]))
        if response is not None:
            at = _RESPONSE_HEADERS
            response = _new(
                HttpResponse, (*response[:at], self._pack(response.headers), *response[at + 1 :])
            )
        return HttpTransaction(
            tx.connection, tx.index, request, response, tx.error, tx.tunnel, tx.notes
        )

    def _evict_exchanges(self, target: int) -> None:
        """The oldest connections' exchanges, oldest first, until the cost is down to target
        (below the budget, so that this runs once in a while rather than on every update)."""
        for conn_id, txs in list(self.http.items()):
            if self.cost <= target:
                return
            costs = self.costs.get(conn_id, ())
            n, freed = 0, 0
            while n < len(txs) and self.cost - freed > target:
                freed += costs[n]
                n += 1
            self.evicted_exchanges += n
            self._drop_exchanges(conn_id, n)
            self.changed.add(conn_id)

    def _drop_exchanges(self, conn_id: int, n: int) -> None:
        """Forget a connection's first n exchanges, keeping `cost` the sum over what is kept."""
        txs = self.http.get(conn_id)
        if not txs or not n:
            return
        self.dropped[conn_id] = self.dropped.get(conn_id, 0) + n
        costs = self.costs[conn_id]
        self.cost -= sum(costs[:n])
        if n < len(txs):
            # The new first one no longer shares header tuples with the one before it.
            first = transaction_cost(txs[n], None)
            self.cost += first - costs[n]
            # A new list rather than one cut in place: a view holding the old one sees no shift.
            self.http[conn_id] = txs[n:]
            self.costs[conn_id] = costs = costs[n:]
            costs[0] = first
        else:
            del self.http[conn_id]
            del self.costs[conn_id]

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
        if waiting:
            request: HttpRequest | None = waiting[max(waiting)]
        elif txs:
            request = txs[-1].request
        elif self.dropped.get(conn_id):
            return f"({self.dropped[conn_id]:,} exchanges evicted: the memory bound)"
        else:
            return tls_summary(info)
        line = f"{request.method} {request.target}" if request else "(no request)"
        return line + (f" (+{count - 1})" if count > 1 else "")

    def last_status(self, conn_id: int) -> int:
        """The status of the connection's last HTTP answer; 0 while a request waits for its
        answer; NO_ANSWER when the last request got none; -1 without HTTP."""
        if self.pending.get(conn_id):
            return 0
        txs = self.http.get(conn_id)
        if not txs:
            return -1
        response = txs[-1].response
        return response.status if response is not None else NO_ANSWER


def transaction_cost(tx: HttpTransaction, before: HttpTransaction | None) -> int:
    """What the store's copy of an exchange holds, estimated (see TRANSACTION_COST); `before` is
    the exchange kept just before it on its connection, whose header tuples it may share."""
    cost = TRANSACTION_COST
    request, response = tx.request, tx.response
    if request is not None:
        cost += len(request.body) + len(request.method) + len(request.target)
        if before is None or before.request is None or before.request.headers is not request.headers:
            cost += headers_cost(request.headers)
    if response is not None:
        cost += len(response.body) + len(response.reason) + 48 * len(response.interim)
        if before is None or before.response is None or before.response.headers is not response.headers:
            cost += headers_cost(response.headers)
    return cost


def headers_cost(headers: Any) -> int:
    if type(headers) is PackedHeaders:
        return PACKED_COST + len(headers.text)
    return HEADER_COST * len(headers) + sum(len(name) + len(value) for name, value in headers)


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
