"""The find prompt (`/`): which connections and which of their HTTP exchanges (or other
protocols' transactions: engine.filter takes both) match a filter.

The language is engine.filter's (the same as `--where`): comparisons such as `status >= 500`,
`dur > 1s` or `header.x-request-id = abc`, combined with and, or, not; and bare words, which keep
the meaning they always had: every word appears in the exchange (method, target, status and
reason, header names and values, error and notes, its bodies as decoded for display, within the
display's body bound) or in its connection (addresses and ports, state, Zeek conn_state,
protocol, TLS names), case ignored. A connection is shown when its own fields match, or when
one of its exchanges matches. So `limit=3` finds the exchange in the middle of a keep-alive
connection, and `10.0.0.5 500` the 500s of that host.

This module only decides; it holds no widget. `Search` is the state of one query over the UI's
store: the exchanges that matched, per connection, as positions in the store's list. A whole
store is searched in a worker thread (`scan`, on a snapshot); exchanges that arrive later are
matched as they come (`take`), on the UI thread, a few at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.events import ConnectionInfo
from engine.filter import Filter
from engine.filter import parse as parse_filter
from tui.exchange_log import Exchange

YIELD_EVERY = 256  # exchanges searched between two offers of the GIL to the UI thread
NO_EXCHANGES: Sequence[Exchange] = ()  # for a connection without any (never appended to)

class Query:
    """A parsed filter (raises FilterError when it cannot be read)."""

    def __init__(self, text: str) -> None:
        self.filter: Filter = parse_filter(text)

    @property
    def text(self) -> str:
        return self.filter.text

    def __bool__(self) -> bool:
        return bool(self.filter)


@dataclass
class Search:
    """One query's results over the store: exchange positions per connection, and which
    connections match by their own fields."""

    query: Query
    exchanges: dict[int, list[int]] = field(default_factory=dict)  # conn id -> positions
    # conn id -> (the store's list, how many of its exchanges were looked at); the store puts a
    # new list in place when it evicts old exchanges, and then it is looked at from the start.
    examined: dict[int, tuple[Sequence[Exchange], int]] = field(default_factory=dict)
    own: set[int] = field(default_factory=set)  # connections whose own fields match
    matched = 0  # exchanges that matched, in all

    def shows(self, conn_id: int) -> bool:
        return conn_id in self.own or bool(self.exchanges.get(conn_id))

    def connection(self, info: ConnectionInfo, transactions: Sequence[Exchange],
                   upto: int | None = None) -> bool:
        """Bring one connection up to date (its fields may have changed; new exchanges may
        have come), looking at its exchanges up to `upto` (all of them by default: a worker
        thread passes the length the list had when the UI thread made the snapshot); whether
        it is shown."""
        where = self.query.filter
        if where.connection(info):
            self.own.add(info.id)
        else:
            self.own.discard(info.id)
        seen, start = self.examined.get(info.id, (transactions, 0))
        if seen is not transactions:  # the store dropped exchanges: look again from the start
            self.matched -= len(self.exchanges.pop(info.id, ()))
            start = 0
        end = len(transactions) if upto is None else upto
        if start < end:
            found = [i for i in range(start, end) if where.exchange(info, transactions[i])]
            if found:
                self.exchanges.setdefault(info.id, []).extend(found)
                self.matched += len(found)
        self.examined[info.id] = (transactions, max(start, end))
        return self.shows(info.id)

    def forget(self, conn_id: int) -> None:
        self.matched -= len(self.exchanges.pop(conn_id, ()))
        self.examined.pop(conn_id, None)
        self.own.discard(conn_id)


Snapshot = Iterable[tuple[ConnectionInfo, Sequence[Exchange], int]]


def scan(query: Query, snapshot: Snapshot) -> Search:
    """Search a snapshot of the store, made on the UI thread: each connection's info, the
    store's own list of its exchanges and that list's length then (the list only grows while it
    is the store's, and appending while another thread reads by index is safe). Run this in a
    worker thread; the exchanges that come later are matched on the UI thread."""
    search = Search(query)
    looked = 0
    for info, transactions, length in snapshot:
        search.connection(info, transactions, length)
        looked += length
        if looked >= YIELD_EVERY:
            looked = 0
            time.sleep(0)  # hand the GIL to the UI thread now, should it want it
    return search
