"""The find prompt (`/`): which connections and which of their HTTP exchanges match some words.

A query is words separated by spaces, matched without regard to case. An exchange matches when
every word appears in it (method, target, status and reason, header names and values, and its
bodies as decoded for display, within the display's body bound) or in its connection (addresses
and ports, state, Zeek conn_state, protocol, TLS names). A connection is shown when its own
fields match every word, or when one of its exchanges matches. So `limit=3` finds the exchange
in the middle of a keep-alive connection, and `10.0.0.5 500` the 500s of that host.

This module only decides; it holds no widget. `Search` is the state of one query over the UI's
store: the exchanges that matched, per connection, as positions in the store's list. A whole
store is searched in a worker thread (`scan`, on a snapshot); exchanges that arrive later are
matched as they come (`take`), on the UI thread, a few at a time.

The filter language with comparisons (a later issue) replaces `Query`; `Search` stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.content import decode_message_body
from engine.events import ConnectionInfo, HttpRequest, HttpResponse, HttpTransaction
from tui.store import tls_summary

YIELD_EVERY = 256  # exchanges searched between two offers of the GIL to the UI thread
BODY_SEARCHED = 64 * 1024  # decoded body bytes searched per message: what the HTTP tab shows
NO_EXCHANGES: Sequence[HttpTransaction] = ()  # for a connection without any (never appended to)


class Query:
    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.words = self.text.lower().split()

    def __bool__(self) -> bool:
        return bool(self.words)

    def missing(self, haystack: str) -> list[str]:
        """The words not found in this text."""
        return [word for word in self.words if word not in haystack]


def connection_text(info: ConnectionInfo) -> str:
    """What a connection matches on, lower case (its exchanges are matched on their own)."""
    return " ".join((info.client, info.server, info.state, info.conn_state, info.protocol or "",
                     tls_summary(info))).lower()


def head_text(message: HttpRequest | HttpResponse) -> str:
    if isinstance(message, HttpRequest):
        start = f"{message.method} {message.target} http/{message.version}"
    else:
        start = f"{message.status} {message.reason} http/{message.version}"
    return (start + "\n" + "\n".join(f"{name}: {value}" for name, value in message.headers)).lower()


def body_text(message: HttpRequest | HttpResponse) -> str:
    if not message.body:
        return ""
    return decode_message_body(message, BODY_SEARCHED).data.decode("latin-1").lower()


def exchange_matches(query: Query, connection: str, tx: HttpTransaction) -> bool:
    """Whether every word is in the exchange or its connection's text. Bodies are decoded only
    for the words that the connection and the heads do not have."""
    words = query.missing(connection)
    if not words:
        return True
    messages = [m for m in (tx.request, tx.response) if m is not None]
    heads = " ".join(head_text(m) for m in messages)
    words = [w for w in words if w not in heads]
    if tx.error:
        words = [w for w in words if w not in tx.error.lower()]
    for message in messages:
        if not words:
            break
        body = body_text(message)
        words = [w for w in words if w not in body]
    return not words


@dataclass
class Search:
    """One query's results over the store: exchange positions per connection, and which
    connections match by their own fields."""

    query: Query
    exchanges: dict[int, list[int]] = field(default_factory=dict)  # conn id -> positions
    # conn id -> (the store's list, how many of its exchanges were looked at); the store puts a
    # new list in place when it evicts old exchanges, and then it is looked at from the start.
    examined: dict[int, tuple[Sequence[HttpTransaction], int]] = field(default_factory=dict)
    own: set[int] = field(default_factory=set)  # connections whose own fields match
    matched = 0  # exchanges that matched, in all

    def shows(self, conn_id: int) -> bool:
        return conn_id in self.own or bool(self.exchanges.get(conn_id))

    def connection(self, info: ConnectionInfo, transactions: Sequence[HttpTransaction],
                   upto: int | None = None) -> bool:
        """Bring one connection up to date (its fields may have changed; new exchanges may
        have come), looking at its exchanges up to `upto` (all of them by default: a worker
        thread passes the length the list had when the UI thread made the snapshot); whether
        it is shown."""
        text = connection_text(info)
        if not self.query.missing(text):
            self.own.add(info.id)
        else:
            self.own.discard(info.id)
        seen, start = self.examined.get(info.id, (transactions, 0))
        if seen is not transactions:  # the store dropped exchanges: look again from the start
            self.matched -= len(self.exchanges.pop(info.id, ()))
            start = 0
        end = len(transactions) if upto is None else upto
        if start < end:
            found = [i for i in range(start, end)
                     if exchange_matches(self.query, text, transactions[i])]
            if found:
                self.exchanges.setdefault(info.id, []).extend(found)
                self.matched += len(found)
        self.examined[info.id] = (transactions, max(start, end))
        return self.shows(info.id)

    def forget(self, conn_id: int) -> None:
        self.matched -= len(self.exchanges.pop(conn_id, ()))
        self.examined.pop(conn_id, None)
        self.own.discard(conn_id)


Snapshot = Iterable[tuple[ConnectionInfo, Sequence[HttpTransaction], int]]


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
