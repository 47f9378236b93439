"""The connections pane: one row per TCP connection, updated in place as the engine reports."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from engine.events import ConnectionInfo
from tui.escape import escape_text
from tui.store import TrafficStore

COLUMNS = [
    ("id", "#"),
    ("client", "client"),
    ("server", "server"),
    ("state", "state"),
    ("packets", "pkts"),
    ("up", "c→s"),
    ("down", "s→c"),
    ("missing", "missing"),
    ("duration", "dur"),
    ("protocol", "proto"),
    ("summary", "summary"),
]
SORT_ORDER = ["id", "packets", "up", "down", "missing", "duration", "state", "protocol"]


def size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def sort_value(info: ConnectionInfo, column: str) -> object:
    return {
        "id": info.id,
        "packets": sum(info.packets),
        "up": info.bytes[0],
        "down": info.bytes[1],
        "missing": sum(info.missing_bytes),
        "duration": info.last_ts - info.first_ts,
        "state": info.state,
        "protocol": info.protocol or "",
    }[column]


def matches(haystack: str, query: str) -> bool:
    """Every word of the query appears in the row (case-insensitive); see the help screen."""
    return all(word in haystack for word in query.lower().split())


class ConnectionsTable(DataTable[Text]):
    """Connections; new ones are appended so the cursor never jumps, closed ones are dimmed."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("s", "sort", "Sort", tooltip="Sort by the next column (again: the next one)"),
    ]

    class Selected(Message):
        def __init__(self, conn_id: int | None) -> None:
            super().__init__()
            self.conn_id = conn_id

    def __init__(self, store: TrafficStore, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.store = store
        self.query_text = ""
        self.sort_column: str | None = None

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def cells(self, info: ConnectionInfo) -> list[Text]:
        style = "dim" if info.id in self.store.closed else ""
        missing = sum(info.missing_bytes)
        values = [
            str(info.id),
            info.client,
            info.server,
            info.state,
            str(sum(info.packets)),
            size(info.bytes[0]),
            size(info.bytes[1]),
            size(missing) if missing else "",
            f"{info.last_ts - info.first_ts:.2f}s",
            info.protocol or "",
            escape_text(self.store.summary(info.id))[:80],
        ]
        cells = [Text(v, style=style, no_wrap=True) for v in values]
        if missing:
            cells[7].stylize("bold red")
        return cells

    def haystack(self, info: ConnectionInfo) -> str:
        return " ".join((info.client, info.server, info.state, info.conn_state, info.protocol or "",
                         info.sni or "", self.store.summary(info.id))).lower()

    def update_rows(self, changed: set[int], removed: set[int]) -> None:
        """Redraw only the rows that changed; add new ones at the end."""
        for conn_id in removed:
            if str(conn_id) in self.rows:
                self.remove_row(str(conn_id))
        for conn_id in sorted(changed):
            info = self.store.connections.get(conn_id)
            if info is None:
                continue
            key = str(conn_id)
            shown = key in self.rows
            if self.query_text and not matches(self.haystack(info), self.query_text):
                if shown:
                    self.remove_row(key)
                continue
            cells = self.cells(info)
            if shown:
                for (column, _), cell in zip(COLUMNS, cells):
                    self.update_cell(key, column, cell, update_width=True)
            else:
                self.add_row(*cells, key=key)

    def rebuild(self) -> None:
        """Show the store again from scratch (after a display filter change), keeping the cursor."""
        selected = self.selected_id()
        self.clear()
        self.update_rows(set(self.store.connections), set())
        if self.sort_column:
            self._sort()
        self.select(selected)

    def selected_id(self) -> int | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # no row under the cursor
            return None
        return int(key.value) if key.value is not None else None

    def select(self, conn_id: int | None) -> None:
        if conn_id is not None and str(conn_id) in self.rows:
            self.move_cursor(row=self.get_row_index(str(conn_id)))

    def action_sort(self) -> None:
        current = SORT_ORDER.index(self.sort_column) if self.sort_column in SORT_ORDER else -1
        self.sort_column = SORT_ORDER[(current + 1) % len(SORT_ORDER)]
        selected = self.selected_id()
        self._sort()
        self.select(selected)
        self.notify(f"sorted by {self.sort_column}", timeout=1.5)

    def _sort(self) -> None:
        column = self.sort_column or "id"
        store = self.store

        def key(id_cell: Text) -> object:
            info = store.connections.get(int(id_cell.plain))
            return sort_value(info, column) if info else 0

        self.sort("id", key=key, reverse=column not in ("id", "state", "protocol"))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        value = event.row_key.value
        self.post_message(self.Selected(int(value) if value is not None else None))
