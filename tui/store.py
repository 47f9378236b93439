"""The UI's own model of the traffic, built only from engine events (never from the engine's
objects, which belong to the worker thread).

It keeps the latest snapshot of every connection it was told about, each connection's HTTP
transactions, and which connections changed since the screen last looked, so the table updates
only those rows. Closed connections stay until the store's own bound evicts the oldest.
"""

from __future__ import annotations

from collections import OrderedDict

from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    HttpRequest,
    HttpRequestSeen,
    HttpTransaction,
)

MAX_CONNECTIONS = 200_000
MAX_TRANSACTIONS_PER_CONNECTION = 10_000


class TrafficStore:
    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self.max_connections = max_connections
        self.connections: OrderedDict[int, ConnectionInfo] = OrderedDict()
        self.closed: set[int] = set()
        self.http: dict[int, list[HttpTransaction]] = {}
        # Requests that wait for their answer, per connection, by stream offset.
        self.pending: dict[int, dict[int, HttpRequest]] = {}
        self.changed: set[int] = set()  # ids whose row must be redrawn
        self.removed: set[int] = set()  # ids whose row must go
        self.evicted = 0

    def reset(self) -> None:
        """Forget everything: the capture starts again (ids start again from 0)."""
        self.connections.clear()
        self.closed.clear()
        self.http.clear()
        self.pending.clear()
        self.changed.clear()
        self.removed.clear()

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
                    txs.append(event)
                waiting = self.pending.get(event.connection)
                if waiting and event.request is not None:
                    waiting.pop(event.request.offset, None)
                    if not waiting:
                        del self.pending[event.connection]
                self.changed.add(event.connection)
            elif isinstance(event, HttpRequestSeen):
                self.pending.setdefault(event.connection, {})[event.request.offset] = event.request
                self.changed.add(event.connection)
        while len(self.connections) > self.max_connections:
            old, _ = self.connections.popitem(last=False)
            self.closed.discard(old)
            self.http.pop(old, None)
            self.pending.pop(old, None)
            self.changed.discard(old)
            self.removed.add(old)
            self.evicted += 1

    def _put(self, info: ConnectionInfo) -> None:
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
        else:
            return tls_summary(info)
        line = f"{request.method} {request.target}" if request else "(no request)"
        return line + (f" (+{count - 1})" if count > 1 else "")

    def last_status(self, conn_id: int) -> int:
        """The status of the connection's last HTTP answer; 0 when a request waits for its
        answer, or the last had none; -1 without HTTP."""
        if self.pending.get(conn_id):
            return 0
        txs = self.http.get(conn_id)
        if not txs:
            return -1
        response = txs[-1].response
        return response.status if response is not None else 0


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
