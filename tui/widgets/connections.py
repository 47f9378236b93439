"""The connections pane: one row per TCP connection, updated in place as the engine reports.

A list of 100,000 connections must not cost the event loop anything per row when a few change:
it is a `VirtualTable` (tui.widgets.table), which keeps the ids in sorted order, formats the rows
on screen when they are drawn and measures a row only when it is drawn or changes on screen. New
connections go to their sorted place (at the end, in the default order by id), so the cursor
never jumps.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.style import Style

from engine.events import ConnectionInfo
from tui.escape import escape_text
from tui.exchange_log import OUTCOME_WORDS
from tui.search import NO_EXCHANGES, Search
from tui.store import NO_ANSWER, TrafficStore
from tui.widgets.table import Column, VirtualTable

COLUMNS = [
    Column("id", "#", right=True),
    Column("client", "client"),
    Column("server", "server"),
    Column("state", "state"),
    Column("protocol", "proto"),
    Column("status", "status", right=True),
    Column("packets", "pkts", right=True),
    Column("up", "c→s", right=True),
    Column("down", "s→c", right=True),
    Column("missing", "missing", right=True),
    Column("duration", "dur", right=True),
    Column("summary", "summary", limit=80),
]
# First when the connections come from several hosts (wirepeek --ssh): which one.
HOST = Column("host", "host")
# After the server, for a live capture on this host: the processes at the two ends.
PROCESS = Column("process", "process", limit=40)


def size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


_COUNT_TAIL = re.compile(r" \(\+[0-9]+\)$")  # how many exchanges came before: "GET / (+41)"


def fit_summary(text: str, limit: int) -> str:
    """A summary cut to `limit` cells, its count of earlier exchanges (`(+41)`) kept whole: the
    request line is cut instead (marked …), never the number."""
    if cell_len(text) <= limit:
        return text
    found = _COUNT_TAIL.search(text)
    tail = found.group() if found else ""
    head = text[: len(text) - len(tail)]
    return set_cell_size(head, max(0, limit - cell_len(tail) - 1)) + "…" + tail


def sort_value(info: ConnectionInfo, column: str, store: TrafficStore | None = None) -> object:
    if column == "id":
        return info.id
    if column == "packets":
        return sum(info.packets)
    if column == "up":
        return info.bytes[0]
    if column == "down":
        return info.bytes[1]
    if column == "missing":
        return sum(info.missing_bytes)
    if column == "duration":
        return info.last_ts - info.first_ts
    if column == "status":
        return store.last_status(info.id) if store is not None else -1
    if column == "summary":
        return store.summary(info.id) if store is not None else ""
    if column == "process":
        return store.processes.get(info.id, "") if store is not None else ""
    return getattr(info, column) or ""


def status_cell(status: int) -> str:
    """A row's status (TrafficStore.last_status) as its column shows it: an HTTP status, `…`
    while a request waits, `—` when none came, `ok` or `error` for another protocol's answer."""
    if status > 0:
        return str(status)
    if status == 0:
        return "…"
    if status == NO_ANSWER:
        return "—"
    return OUTCOME_WORDS.get(status, "")


def status_style(status: str, error: Style, warning: Style) -> Style | None:
    if status[:1] == "5" or status == "error":
        return error
    if status[:1] == "4":
        return warning
    return None


def protocol_cell(info: ConnectionInfo) -> str:
    """The protocol, and for TLS with a key log whether it was decrypted (✓) or not (✗: its
    TLS summary says why)."""
    protocol = info.protocol or ""
    if info.tls_decryption is None:
        return protocol
    return f"{protocol} {'✓' if info.tls_decryption == 'decrypted' else '✗'}"


class ConnectionsTable(VirtualTable):
    """Connections; closed ones are dimmed, missing bytes, 4xx/5xx answers and other protocols'
    error answers coloured."""

    COLUMNS = COLUMNS
    DEFAULT_SORT = "id"

    def __init__(self, store: TrafficStore, hosts: bool = False, processes: bool = False,
                 **kwargs: Any) -> None:
        self.hosts = hosts  # a host column first
        self.processes = processes  # a process column after the server
        columns = [HOST] if hosts else []
        columns += COLUMNS[:3] + ([PROCESS] if processes else []) + COLUMNS[3:]
        self.COLUMNS = columns
        keys = [c.key for c in columns]
        self.status_column = keys.index("status")
        self.missing_column = keys.index("missing")  # in the error colour when not empty
        super().__init__(**kwargs)
        self.store = store
        self.search: Search | None = None  # what `/` found; None shows every connection

    # ------------------------------------------------------------------ contents

    def cells(self, row: int) -> list[str]:
        info = self.store.connections.get(row)
        if info is None:
            return [""] * len(self.COLUMNS)
        missing = sum(info.missing_bytes)
        status = self.store.last_status(row)
        host = [escape_text(info.host or "")] if self.hosts else []
        process = [escape_text(self.store.processes.get(row, ""))] if self.processes else []
        return [
            *host,
            str(info.id),
            info.client,
            info.server,
            *process,
            info.state,
            protocol_cell(info),
            status_cell(status),
            str(sum(info.packets)),
            size(info.bytes[0]),
            size(info.bytes[1]),
            size(missing) if missing else "",
            f"{info.last_ts - info.first_ts:.2f}s",
            fit_summary(escape_text(self.store.summary(info.id)), COLUMNS[-1].limit or 80),
        ]

    def sort_value(self, row: int, column: str) -> object:
        info = self.store.connections.get(row)
        return sort_value(info, column, self.store) if info is not None else 0

    def row_style(self, row: int, index: int) -> Style | None:
        if row in self.store.closed:
            return self.get_component_rich_style("table--dim")
        return None

    def cell_style(self, row: int, column: int, value: str) -> Style | None:
        if column == self.missing_column:
            return self.get_component_rich_style("table--error")
        if column == self.status_column:
            return status_style(value, self.get_component_rich_style("table--error"),
                                self.get_component_rich_style("table--warning"))
        return None

    def row_text(self, conn_id: int) -> str:
        """A row's cells as shown, joined by spaces (for tests and debugging)."""
        return " ".join(self.cells(conn_id)) if conn_id in self.store.connections else ""

    def shown(self, conn_id: int) -> bool:
        if self.search is None:
            return True
        info = self.store.connections.get(conn_id)
        if info is None:
            return False
        return self.search.connection(info, self.store.http.get(conn_id, NO_EXCHANGES))

    def update_rows(self, changed: set[int], removed: set[int],
                    budget: float | None = None) -> set[int]:
        """Take the store's changes: new rows to their place, changed rows repainted (or moved,
        when their sort value changed), removed and no longer matching rows taken out.

        With a budget (seconds), stop when it is spent and return the ids left for next time, so
        that a flood of new connections never holds up the keys; they are taken in id order, so
        rows still appear in the order the connections were seen.
        """
        hidden = set(removed)
        todo = sorted(changed)
        deadline = time.perf_counter() + budget if budget is not None else None
        left: set[int] = set()
        put: list[int] = []
        connections = self.store.connections
        for n, conn_id in enumerate(todo):
            if deadline is not None and n % 64 == 63 and time.perf_counter() > deadline:
                left = set(todo[n:])
                break
            if conn_id not in connections:
                continue
            if not self.shown(conn_id):
                hidden.add(conn_id)
                continue
            put.append(conn_id)
        if self.search is not None:
            for conn_id in removed:
                self.search.forget(conn_id)
        if hidden.intersection(self.rows.value):
            self.rows.remove(hidden)
        self.put_rows(put)
        return left

    def rebuild(self, search: Search | None) -> None:
        """Show the store again from scratch under a search (None: everything), keeping the
        cursor on its connection when it is still shown."""
        selected = self.selected_id()
        self.search = search
        connections = self.store.connections
        # A scanned search already knows every connection of its snapshot; what changed since
        # comes through update_rows (the app hands those ids over again).
        rows = list(connections) if search is None else [c for c in connections if search.shows(c)]
        self.set_rows(rows)
        self.select(selected)
