"""The connections pane: one row per TCP connection, updated in place as the engine reports.

A list of 100,000 connections must not cost the event loop anything per row when a few change,
so this is not a DataTable (whose column sizing re-measures a whole column when a cell narrows and
whose row removal renumbers every row). It is a ScrollView drawn line by line: it keeps only the
ids in display order and a position for each, formats the cells of the rows on screen when they
are drawn, and measures a row only when it changes. Columns grow to fit what they have shown and
never shrink, so the layout does not jump as connections come and go.
"""

from __future__ import annotations

import time

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.events import ConnectionInfo
from tui.escape import escape_text
from tui.store import TrafficStore

# (key, label, right-aligned); a column starts as wide as its label and grows with what it shows
COLUMNS = [
    ("id", "#", True),
    ("client", "client", False),
    ("server", "server", False),
    ("state", "state", False),
    ("packets", "pkts", True),
    ("up", "c→s", True),
    ("down", "s→c", True),
    ("missing", "missing", True),
    ("duration", "dur", True),
    ("protocol", "proto", False),
    ("summary", "summary", False),
]
MISSING = 7  # the column shown in the error colour when it is not empty
SUMMARY_MAX = 80
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


class ConnectionsTable(ScrollView, can_focus=True):
    """Connections; new ones are appended so the cursor never jumps, closed ones are dimmed."""

    BINDINGS = [
        Binding("up,k", "cursor_up", "Previous connection", show=False, key_display="↑ k"),
        Binding("down,j", "cursor_down", "Next connection", show=False, key_display="↓ j"),
        Binding("pageup", "page_up", "A page up", show=False, key_display="PgUp"),
        Binding("pagedown", "page_down", "A page down", show=False, key_display="PgDn"),
        Binding("home", "first", "First connection", show=False, key_display="Home"),
        Binding("end", "last", "Last connection", show=False, key_display="End"),
        Binding("enter", "open", "Open the connection's HTTP exchanges", show=False,
                key_display="Enter"),
        Binding("s", "sort", "Sort by the next column", show=False),
    ]

    COMPONENT_CLASSES = {
        "connections--header",
        "connections--cursor",
        "connections--even-row",
        "connections--closed",
        "connections--missing",
    }

    DEFAULT_CSS = """
    ConnectionsTable {
        background: $surface;
        color: $foreground;
        & > .connections--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .connections--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .connections--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .connections--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .connections--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .connections--closed {
            text-style: dim;
        }
        & > .connections--missing {
            color: $error;
            text-style: bold;
        }
    }
    """

    class Selected(Message):
        """The cursor is on another connection (or on none)."""

        def __init__(self, conn_id: int | None) -> None:
            super().__init__()
            self.conn_id = conn_id

    class Opened(Message):
        """Enter (or a click on the selected row): show the connection's details."""

        def __init__(self, conn_id: int) -> None:
            super().__init__()
            self.conn_id = conn_id

    def __init__(self, store: TrafficStore, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.query_text = ""
        self.sort_column: str | None = None
        self.order: list[int] = []  # connection ids, in display order
        self.position: dict[int, int] = {}  # id -> index in order
        self.widths = [cell_len(label) for _, label, _ in COLUMNS]
        self.cursor_row = 0
        self._announced: int | None = None

    # ------------------------------------------------------------------ contents

    @property
    def row_count(self) -> int:
        return len(self.order)

    def cells(self, info: ConnectionInfo) -> list[str]:
        missing = sum(info.missing_bytes)
        return [
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
            escape_text(self.store.summary(info.id))[:SUMMARY_MAX],
        ]

    def row_text(self, conn_id: int) -> str:
        """A row's cells as shown, joined by spaces (for tests and debugging)."""
        info = self.store.connections.get(conn_id)
        return " ".join(self.cells(info)) if info else ""

    def haystack(self, info: ConnectionInfo) -> str:
        return " ".join((info.client, info.server, info.state, info.conn_state, info.protocol or "",
                         info.sni or "", self.store.summary(info.id))).lower()

    def update_rows(self, changed: set[int], removed: set[int],
                    budget: float | None = None) -> set[int]:
        """Take the store's changes: repaint the changed rows on screen, append new ones.

        With a budget (seconds), stop when it is spent and return the ids left for next time, so
        that a flood of new connections never holds up the keys; they are taken in id order, so
        rows still appear in the order the connections were seen.
        """
        hidden = set(removed)
        grown = False
        repaint: list[int] = []
        connections = self.store.connections
        widths = self.widths
        todo = sorted(changed)
        deadline = time.perf_counter() + budget if budget is not None else None
        left: set[int] = set()
        for n, conn_id in enumerate(todo):
            if deadline is not None and n % 64 == 63 and time.perf_counter() > deadline:
                left = set(todo[n:])
                break
            info = connections.get(conn_id)
            if info is None:
                continue
            if self.query_text and not matches(self.haystack(info), self.query_text):
                hidden.add(conn_id)
                continue
            for i, value in enumerate(self.cells(info)):
                width = len(value) if value.isascii() else cell_len(value)
                if width > widths[i]:
                    widths[i] = width
                    grown = True
            index = self.position.get(conn_id)
            if index is None:
                self.position[conn_id] = len(self.order)
                self.order.append(conn_id)
                index = len(self.order) - 1
            repaint.append(index)
        if hidden.intersection(self.position):
            self._drop(hidden)
            grown = True  # rows moved: repaint everything
        self._resize()
        if grown:
            self.refresh()
        else:
            top = self.scroll_offset.y
            bottom = top + self.size.height
            for index in repaint:
                if top <= index < bottom:
                    self.refresh_lines(index + 1)
        self._announce()
        return left

    def _drop(self, ids: set[int]) -> None:
        selected = self.selected_id()
        self.order = [conn_id for conn_id in self.order if conn_id not in ids]
        self._reindex()
        if selected is not None and selected in self.position:
            self.cursor_row = self.position[selected]
        self.cursor_row = max(0, min(self.cursor_row, len(self.order) - 1))

    def _reindex(self) -> None:
        self.position = {conn_id: index for index, conn_id in enumerate(self.order)}

    def _resize(self) -> None:
        width = sum(self.widths) + 2 * len(self.widths)
        self.virtual_size = Size(width, len(self.order) + 1)

    def clear(self) -> None:
        self.order = []
        self.position = {}
        self.cursor_row = 0
        self._resize()
        self.refresh()
        self._announce()

    def rebuild(self) -> None:
        """Show the store again from scratch (after a display filter change), keeping the cursor."""
        selected = self.selected_id()
        self.order, self.position = [], {}
        self.update_rows(set(self.store.connections), set())
        if self.sort_column:
            self._sort()
        self.select(selected)
        self.refresh()

    # ------------------------------------------------------------------ cursor

    def selected_id(self) -> int | None:
        if 0 <= self.cursor_row < len(self.order):
            return self.order[self.cursor_row]
        return None

    def select(self, conn_id: int | None) -> None:
        if conn_id is not None and conn_id in self.position:
            self.move_to(self.position[conn_id])

    def move_to(self, row: int) -> None:
        row = max(0, min(row, len(self.order) - 1))
        old, self.cursor_row = self.cursor_row, row
        if not self._show_cursor():
            # Rows just added are not scrollable to until the next layout.
            self.call_after_refresh(self._show_cursor)
        self.refresh_lines(old + 1)
        self.refresh_lines(row + 1)
        self._announce()

    def _show_cursor(self) -> bool:
        """Scroll so that the cursor's row is on screen; whether it is now."""
        row = self.cursor_row
        visible = max(1, self.size.height - 1)  # lines under the header
        top = self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + visible:
            self.scroll_to(y=row - visible + 1, animate=False, immediate=True)
        top = self.scroll_offset.y
        return top <= row < top + visible

    def _announce(self) -> None:
        """Tell the app when the connection under the cursor changed."""
        conn_id = self.selected_id()
        if conn_id != self._announced:
            self._announced = conn_id
            self.post_message(self.Selected(conn_id))

    def action_cursor_up(self) -> None:
        self.move_to(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_to(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self.move_to(self.cursor_row - max(1, self.size.height - 2))

    def action_page_down(self) -> None:
        self.move_to(self.cursor_row + max(1, self.size.height - 2))

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(len(self.order) - 1)

    def action_open(self) -> None:
        conn_id = self.selected_id()
        if conn_id is not None:
            self.post_message(self.Opened(conn_id))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        row = self.scroll_offset.y + offset.y - 1
        if row >= len(self.order):
            return
        if row == self.cursor_row:
            self.action_open()
        else:
            self.move_to(row)

    # ------------------------------------------------------------------ sorting

    def action_sort(self) -> None:
        current = SORT_ORDER.index(self.sort_column) if self.sort_column in SORT_ORDER else -1
        self.sort_column = SORT_ORDER[(current + 1) % len(SORT_ORDER)]
        selected = self.selected_id()
        self._sort()
        self.select(selected)
        self.refresh()
        self.notify(f"sorted by {self.sort_column}", timeout=1.5)

    def _sort(self) -> None:
        column = self.sort_column or "id"
        connections = self.store.connections

        def key(conn_id: int) -> object:
            info = connections.get(conn_id)
            return sort_value(info, column) if info else 0

        self.order.sort(key=key, reverse=column not in ("id", "state", "protocol"))
        self._reindex()

    # ------------------------------------------------------------------ drawing

    def _line(self, values: list[str], style: Style, missing: Style | None = None) -> Strip:
        segments = []
        for i, (value, width) in enumerate(zip(values, self.widths)):
            if COLUMNS[i][2] and cell_len(value) <= width:
                text = " " * (width - cell_len(value)) + value
            else:
                text = set_cell_size(value, width)
            cell_style = style + missing if missing is not None and i == MISSING and value else style
            segments.append(Segment(f" {text} ", cell_style))
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            header = base + self.get_component_rich_style("connections--header")
            strip = self._line([label for _, label, _ in COLUMNS], header)
            return strip.crop_extend(scroll_x, scroll_x + width, header)
        index = scroll_y + y - 1
        if index >= len(self.order):
            return Strip.blank(width, base)
        conn_id = self.order[index]
        info = self.store.connections.get(conn_id)
        if info is None:
            return Strip.blank(width, base)
        style = base
        if index % 2:
            style += self.get_component_rich_style("connections--even-row")
        if conn_id in self.store.closed:
            style += self.get_component_rich_style("connections--closed")
        if index == self.cursor_row:
            style += self.get_component_rich_style("connections--cursor")
        missing = self.get_component_rich_style("connections--missing")
        strip = self._line(self.cells(info), style, missing)
        return strip.crop_extend(scroll_x, scroll_x + width, style)
