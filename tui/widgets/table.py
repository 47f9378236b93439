"""A table drawn line by line: the base of the connections pane and the HTTP exchanges list.

Textual's DataTable builds and measures every row when it is added, so a list of 100,000
connections or a connection of 10,000 exchanges costs the event loop in proportion to its size.
Here a table keeps only its rows' ids in display order (`SortedRows`), formats the cells of the
rows on screen when they are drawn, and measures a row when it is drawn or changes on screen.
Columns grow to fit what they have shown and never shrink (up to a column's own limit), so the
layout does not jump.

The order is kept sorted as rows come and change: a new or changed row goes to its place with a
binary search, whatever the number of rows. `s` sorts by the next column, `S` reverses the order;
a click on a header sorts by that column and a second click reverses it. The header marks the
sort column with ▲ (ascending: the smallest first) or ▼ (descending: the biggest first), in every
table alike.

Rows are listed in the lines under the header that the horizontal scroll bar, when there is one,
leaves (`visible_rows`): End, PgDn and a cursor that follows its row bring it fully into view.
A number (a right-aligned cell) that the edge of the view would cut is not drawn at all: `120`
of `12070` would read as a number.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Collection, Hashable, Iterable
from typing import Any, ClassVar, NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip


class Column(NamedTuple):
    key: str
    label: str
    right: bool = False  # right-aligned (numbers)
    limit: int | None = None  # the widest the column grows; longer values are cut
    sortable: bool = True


class SortedRows:
    """Row ids in the order of their sort values (ties by id), ascending; `descending` reads the
    same list from its end. Adding, moving and finding a row are binary searches."""

    FEW = 32  # rows removed one by one; more go in one pass

    def __init__(self) -> None:
        self.keys: list[tuple[Any, Any]] = []  # (value, id), ascending
        self.value: dict[Hashable, Any] = {}
        self.descending = False

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, row: Hashable) -> bool:
        return row in self.value

    def put(self, row: Hashable, value: Any) -> bool:
        """Add a row or give it a new value; whether it is new or moved."""
        old = self.value.get(row, _ABSENT)
        if old is not _ABSENT:
            if old == value:
                return False
            del self.keys[bisect_left(self.keys, (old, row))]
        self.value[row] = value
        insort(self.keys, (value, row))
        return True

    def remove(self, rows: Iterable[Hashable]) -> None:
        rows = list(rows)
        if len(rows) <= self.FEW:
            for row in rows:
                old = self.value.pop(row, _ABSENT)
                if old is not _ABSENT:
                    del self.keys[bisect_left(self.keys, (old, row))]
            return
        # Many at once (the store forgets thousands of rows past its budget): one pass over
        # the list, not a deletion, and so a shift of the list, for each.
        value = self.value
        gone = {row for row in rows if value.pop(row, _ABSENT) is not _ABSENT}
        if gone:
            self.keys = [key for key in self.keys if key[1] not in gone]

    def clear(self) -> None:
        self.keys.clear()
        self.value.clear()

    def shift(self, n: int) -> None:
        """Rows are places in a list whose first n went: rows 0..n-1 go, the others (>= n) are
        numbered n less, with the same values; negative rows stay as they are."""
        self.keys = [(v, r - n if r >= 0 else r) for v, r in self.keys if r < 0 or r >= n]
        self.value = {(r - n if r >= 0 else r): v for r, v in self.value.items()
                      if r < 0 or r >= n}

    def rebuild(self, values: Iterable[tuple[Hashable, Any]]) -> None:
        self.value = dict(values)
        self.keys = sorted((value, row) for row, value in self.value.items())

    def at(self, index: int) -> Any:
        if self.descending:
            index = len(self.keys) - 1 - index
        return self.keys[index][1]

    def index(self, row: Hashable) -> int | None:
        value = self.value.get(row, _ABSENT)
        if value is _ABSENT:
            return None
        index = bisect_left(self.keys, (value, row))
        return len(self.keys) - 1 - index if self.descending else index

    def ids(self) -> list[Any]:
        ids = [row for _value, row in self.keys]
        return ids[::-1] if self.descending else ids


_ABSENT = object()


class RowMessage(Message):
    """A table's message about one of its rows (`@on(..., "#id")` matches the table's id)."""

    def __init__(self, table: VirtualTable, row: Any) -> None:
        super().__init__()
        self.table = table
        self.row = row

    @property
    def control(self) -> VirtualTable:
        return self.table


class VirtualTable(ScrollView, can_focus=True):
    """Subclasses name their `COLUMNS`, give `cells(row)` and `sort_value(row, column)`, and may
    style rows (`row_style`) and cells (`cell_style`)."""

    COLUMNS: ClassVar[list[Column]] = []
    DEFAULT_SORT: ClassVar[str] = ""  # the column rows are in until the user sorts
    # Columns whose sort values are negated (the biggest first when sorted ascending), so that
    # ties stay in the order of their ids: the header and messages say the order as it is seen.
    NEGATED: ClassVar[frozenset[str]] = frozenset()

    BINDINGS = [
        Binding("up,k", "cursor_up", "Previous row", show=False, key_display="↑ k"),
        Binding("down,j", "cursor_down", "Next row", show=False, key_display="↓ j"),
        Binding("pageup", "page_up", "A page up", show=False, key_display="PgUp"),
        Binding("pagedown", "page_down", "A page down", show=False, key_display="PgDn"),
        Binding("home", "first", "First row", show=False, key_display="Home"),
        Binding("end", "last", "Last row", show=False, key_display="End"),
        Binding("enter", "open", "Open the row", show=False, key_display="Enter"),
        Binding("s", "sort", "Sort by the next column", show=False),
        Binding("S", "reverse", "Reverse the sort", show=False),
    ]

    COMPONENT_CLASSES = {
        "table--header",
        "table--sorted",
        "table--cursor",
        "table--even-row",
        "table--dim",
        "table--error",
        "table--warning",
    }

    DEFAULT_CSS = """
    VirtualTable {
        background: $surface;
        color: $foreground;
        & > .table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .table--sorted {
            text-style: bold underline;
        }
        &:ansi > .table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .table--even-row {
            background: $surface-lighten-1 50%;
        }
        /* The selected row must stay visible when the focus is in another pane. */
        & > .table--cursor {
            background: $secondary 45%;
            color: $foreground;
        }
        &:focus > .table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .table--dim {
            text-style: dim;
        }
        & > .table--error {
            color: $error;
            text-style: bold;
        }
        & > .table--warning {
            color: $warning;
        }
    }
    """

    class Selected(RowMessage):
        """The cursor is on another row (or on none)."""

    class Opened(RowMessage):
        """Enter (or a click on the selected row)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows = SortedRows()
        # room for the sort mark beside a sortable column's label
        self.widths = [cell_len(c.label) + c.sortable for c in self.COLUMNS]
        self.sort_column = self.DEFAULT_SORT or self.COLUMNS[0].key
        self.rows.descending = self.starts_descending(self.sort_column) != (
            self.sort_column in self.NEGATED)
        self.cursor_row = 0
        self._cursor_id: Any = None  # the row the cursor is on, kept there as rows move

    # ------------------------------------------------------------------ for subclasses

    def cells(self, row: Any) -> list[str]:
        raise NotImplementedError

    def sort_value(self, row: Any, column: str) -> Any:
        raise NotImplementedError

    def row_style(self, row: Any, index: int) -> Style | None:
        return None

    def cell_style(self, row: Any, column: int, value: str) -> Style | None:
        return None

    # ------------------------------------------------------------------ rows

    @property
    def row_count(self) -> int:
        return len(self.rows)

    @property
    def order(self) -> list[Any]:
        """The row ids in display order (a copy: for tests and writing what is shown)."""
        return self.rows.ids()

    def measure(self, values: list[str]) -> bool:
        """Widen columns to fit these cells; whether any grew."""
        grown = False
        widths = self.widths
        for i, value in enumerate(values):
            width = len(value) if value.isascii() else cell_len(value)
            limit = self.COLUMNS[i].limit
            if limit is not None and width > limit:
                width = limit
            if width > widths[i]:
                widths[i] = width
                grown = True
        return grown

    def put_rows(self, rows: Collection[Any]) -> None:
        """Add rows or take their changes: each goes to its sorted place; the cursor stays on
        its row. Repaints what is on screen.

        Only those of the rows that are on screen are measured here, the others when they are
        drawn (`render_line`), as `set_rows` does: formatting every new row to measure it was
        most of the screen's time while a file of 110,000 connections loaded (1.5 of 3 s)."""
        moved = False
        repaint = []
        column = self.sort_column
        for row in rows:
            if self.rows.put(row, self.sort_value(row, column)):
                moved = True
            else:
                repaint.append(row)
        self._after_change(self._measure_shown(rows) or moved, repaint)

    def _measure_shown(self, rows: Collection[Any]) -> bool:
        """Measure those of `rows` that are on screen; whether a column grew."""
        top = self.scroll_offset.y
        wanted = set(rows)
        grown = False
        for i in range(top, min(top + self.visible_rows, len(self.rows))):
            row = self.rows.at(i)
            if row in wanted:
                grown |= self.measure(self.cells(row))
        return grown

    def remove_rows(self, rows: Iterable[Any]) -> None:
        self.rows.remove(rows)
        self._after_change(True, [])

    def set_rows(self, rows: Iterable[Any]) -> None:
        """Replace every row (a new connection, a new search). Only sort values are taken here:
        rows are measured when they are drawn (`render_line`), so this costs no formatting."""
        column = self.sort_column
        self.rows.rebuild((row, self.sort_value(row, column)) for row in rows)
        self._after_change(True, [])

    def shift_rows(self, n: int) -> None:
        """Rows are places in a list whose first n went (see SortedRows.shift): the cursor stays
        on its row, or goes to the first when its row went."""
        cursor = self._cursor_id
        self.rows.shift(n)
        if isinstance(cursor, int) and cursor >= 0:
            self._cursor_id = cursor - n if cursor >= n else None
            if self._cursor_id is None:
                self.cursor_row = 0
                self.call_after_refresh(self._announce)
        self._after_change(True, [])

    def clear(self) -> None:
        self.rows.clear()
        self.cursor_row = 0
        self._after_change(True, [])  # (says the cursor is on no row any more)

    def _after_change(self, everything: bool, repaint: list[Any]) -> None:
        self._resize()
        index = self.rows.index(self._cursor_id) if self._cursor_id is not None else None
        if index is not None and index != self.cursor_row:
            self.cursor_row = index  # the cursor's row moved: follow it
            everything = True
            self.call_after_refresh(self._show_cursor)
        self.cursor_row = max(0, min(self.cursor_row, len(self.rows) - 1))
        if everything:
            self.refresh()
        else:
            top = self.scroll_offset.y
            bottom = top + self.visible_rows
            for row in repaint:
                i = self.rows.index(row)
                if i is not None and top <= i < bottom:
                    self.refresh_lines(i + 1)
        self._announce()

    def _resize(self) -> None:
        width = sum(self.widths) + 2 * len(self.widths)
        self.virtual_size = Size(width, len(self.rows) + 1)

    # ------------------------------------------------------------------ cursor

    def selected_id(self) -> Any:
        if 0 <= self.cursor_row < len(self.rows):
            return self.rows.at(self.cursor_row)
        return None

    def select(self, row: Any) -> None:
        index = self.rows.index(row) if row is not None else None
        if index is not None:
            self.move_to(index)

    def move_to(self, index: int) -> None:
        index = max(0, min(index, len(self.rows) - 1))
        self.cursor_row = index
        if not self._show_cursor():
            # Rows just added are not scrollable to until the next layout.
            self.call_after_refresh(self._show_cursor)
        self.refresh()
        self._announce()

    @property
    def visible_rows(self) -> int:
        """The rows on screen: the lines under the header, less the horizontal scroll bar's."""
        return max(1, self.scrollable_content_region.height - 1)

    def _cursor_shown(self) -> bool:
        top = self.scroll_offset.y
        return top <= self.cursor_row < top + self.visible_rows

    def _show_cursor(self) -> bool:
        """Scroll so that the cursor's row is on screen; whether it is now."""
        row = self.cursor_row
        visible = self.visible_rows
        top = self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + visible:
            self.scroll_to(y=row - visible + 1, animate=False, immediate=True)
        top = self.scroll_offset.y
        return top <= row < top + visible

    def _announce(self) -> None:
        """Say when the row under the cursor changed."""
        row = self.selected_id()
        if row != self._cursor_id:
            self._cursor_id = row
            self.post_message(self.Selected(self, row))

    def action_cursor_up(self) -> None:
        self.move_to(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_to(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self.move_to(self.cursor_row - max(1, self.visible_rows - 1))

    def action_page_down(self) -> None:
        self.move_to(self.cursor_row + max(1, self.visible_rows - 1))

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(len(self.rows) - 1)

    def action_open(self) -> None:
        row = self.selected_id()
        if row is not None:
            self.post_message(self.Opened(self, row))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y < 1:
            column = self._column_at(offset.x + self.scroll_offset.x)
            if column is not None:
                self.sort_by(column.key, toggle=True)
            return
        index = self.scroll_offset.y + offset.y - 1
        if index >= len(self.rows):
            return
        if index == self.cursor_row:
            self.action_open()
        else:
            self.move_to(index)

    def _column_at(self, x: int) -> Column | None:
        for column, width in zip(self.COLUMNS, self.widths):
            x -= width + 2
            if x < 0:
                return column
        return None

    # ------------------------------------------------------------------ sorting

    @property
    def sortable(self) -> list[str]:
        return [column.key for column in self.COLUMNS if column.sortable]

    def action_sort(self) -> None:
        keys = self.sortable
        current = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.sort_by(keys[(current + 1) % len(keys)])

    def action_reverse(self) -> None:
        self.rows.descending = not self.rows.descending
        self._resorted()

    def starts_descending(self, column: str) -> bool:
        """Whether sorting by this column starts with the biggest first: numbers and sizes do,
        but the default order (a list's numbers, in the order they came) does not."""
        right = next(c.right for c in self.COLUMNS if c.key == column)
        return right and column != self.DEFAULT_SORT

    @property
    def descending(self) -> bool:
        """Whether the rows are seen in descending order (▼), whatever their sort values."""
        return self.rows.descending != (self.sort_column in self.NEGATED)

    def sort_by(self, column: str, toggle: bool = False) -> None:
        """Sort by a column, ascending (numbers and sizes descending: the biggest first); with
        toggle, choosing the current column again reverses it."""
        if toggle and column == self.sort_column:
            self.action_reverse()
            return
        self.sort_column = column
        self.rows.descending = self.starts_descending(column) != (column in self.NEGATED)
        self.rows.rebuild((row, self.sort_value(row, column)) for row in self.rows.ids())
        self._resorted()

    def _resorted(self) -> None:
        selected = self._cursor_id
        self._resize()
        self.refresh()
        if selected is not None:
            self.select(selected)
        label = next(c.label for c in self.COLUMNS if c.key == self.sort_column)
        self.notify(f"sorted by {label} {'▼' if self.descending else '▲'}", timeout=1.5)

    def sort_label(self, column: Column) -> str:
        if column.key != self.sort_column:
            return column.label
        return column.label + ("▼" if self.descending else "▲")

    # ------------------------------------------------------------------ drawing

    def _line(self, values: list[str], style: Style, row: Any = None,
              window: tuple[int, int] | None = None) -> Strip:
        """A row's cells; with the window of columns on screen [start, end), a number that its
        edge would cut is left out (the scroll brings it back whole)."""
        segments = []
        x = 0  # where the cell starts in the line
        for i, (value, width) in enumerate(zip(values, self.widths)):
            if self.COLUMNS[i].right and cell_len(value) <= width:
                if window is not None and value:
                    end = x + 1 + width  # (a space either side of the cell's text)
                    start = end - cell_len(value)
                    if start < window[0] < end or start < window[1] < end:
                        value = ""
                text = " " * (width - cell_len(value)) + value
            else:
                text = set_cell_size(value, width)
            cell_style = style
            if row is not None and value:
                extra = self.cell_style(row, i, value)
                if extra is not None:
                    # Its colour and weight only: the row's background (cursor, stripes) stays.
                    cell_style = style + Style(color=extra.color, bold=extra.bold)
            segments.append(Segment(f" {text} ", cell_style))
            x += width + 2
        return Strip(segments)

    def _header(self, base: Style) -> Strip:
        header = base + self.get_component_rich_style("table--header")
        sorted_style = header + self.get_component_rich_style("table--sorted")
        segments = []
        for column, width in zip(self.COLUMNS, self.widths):
            label = self.sort_label(column)
            text = set_cell_size(label, width) if not column.right or cell_len(label) > width else (
                " " * (width - cell_len(label)) + label)
            segments.append(Segment(f" {text} ", sorted_style if column.key == self.sort_column else header))
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            header = base + self.get_component_rich_style("table--header")
            return self._header(base).crop_extend(scroll_x, scroll_x + width, header)
        index = scroll_y + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        row = self.rows.at(index)
        style = base
        if index % 2:
            style += self.get_component_rich_style("table--even-row")
        extra = self.row_style(row, index)
        if extra is not None:
            style += extra
        if index == self.cursor_row:
            style += self.get_component_rich_style("table--cursor")
        cells = self.cells(row)
        if self.measure(cells):
            # A row drawn for the first time was wider than its columns: draw again, wider.
            # The lines may now be wider than the view: a horizontal scroll bar comes, and the
            # cursor's row, if it was on screen, stays there (not behind the bar).
            shown = self._cursor_shown()
            self._resize()
            self.call_after_refresh(self.refresh)
            if shown:
                self.call_after_refresh(self._show_cursor)
        strip = self._line(cells, style, row,
                           (scroll_x, scroll_x + self.scrollable_content_region.width))
        return strip.crop_extend(scroll_x, scroll_x + width, style)
