"""The connections pane on its own, with more rows than a screen: cursor, scrolling, budget, removal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from textual.app import App, ComposeResult

from engine.events import ConnectionClosed, ConnectionInfo, ConnectionOpened, ConnectionUpdated
from tui.store import TrafficStore
from tui.widgets.connections import ConnectionsTable
from tui.widgets.table import VirtualTable

ROWS = 1000


def info(conn_id: int) -> ConnectionInfo:
    defaults = {f: ConnectionInfo._field_defaults.get(f) for f in ConnectionInfo._fields}
    return ConnectionInfo(**defaults)._replace(  # type: ignore[arg-type]
        id=conn_id, client=f"10.0.{conn_id // 250}.{conn_id % 250}:40000", server="10.9.9.9:80",
        state="ESTABLISHED", conn_state="S1", packets=(conn_id, 1), bytes=(conn_id * 10, 5),
        missing_bytes=(0, 0), first_ts=0.0, last_ts=1.0, protocol="http")


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.store = TrafficStore()
        self.seen: list[int | None] = []
        self.opened: list[int] = []

    def compose(self) -> ComposeResult:
        yield ConnectionsTable(self.store)

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        self.seen.append(event.row)

    def on_virtual_table_opened(self, event: VirtualTable.Opened) -> None:
        self.opened.append(event.row)

    def fill(self, ids: range) -> set[int]:
        self.store.apply(tuple(ConnectionOpened(info(i)) for i in ids))
        changed, removed = self.store.take_changes()
        return self.query_one(ConnectionsTable).update_rows(changed, removed)


@pytest.mark.asyncio
async def test_cursor_moves_and_the_view_follows_it():
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        table.focus()
        assert app.fill(range(ROWS)) == set()
        await pilot.pause()
        assert table.row_count == ROWS and table.order == list(range(ROWS))
        assert app.seen == [0]  # the first row is selected as soon as it exists
        await pilot.press("j", "j", "down", "k")
        assert table.selected_id() == 2 and app.seen[-1] == 2
        await pilot.press("end")
        await pilot.pause()
        assert table.selected_id() == ROWS - 1
        # The last row is on screen: header, then rows scroll_y .. scroll_y + height - 2, less
        # the line of the horizontal scroll bar (the columns are wider than 100): not behind it.
        assert table.show_horizontal_scrollbar
        visible = table.size.height - 1 - table.scrollbar_size_horizontal
        assert table.visible_rows == visible
        assert table.scroll_offset.y == ROWS - visible
        await pilot.press("home", "pagedown")
        assert table.cursor_row == visible - 1
        await pilot.press("enter")
        await pilot.pause()
        assert app.opened == [table.cursor_row]


@pytest.mark.asyncio
async def test_rows_on_screen_show_their_connection():
    app = TableApp()
    async with app.run_test(size=(120, 12)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.fill(range(50))
        table.move_to(40)
        await pilot.pause()
        lines = [table.render_line(y).text for y in range(table.size.height)]
        assert lines[0].split()[:3] == ["#▲", "client", "server"]  # sorted by id, ascending
        assert any(line.split()[:2] == ["40", "10.0.0.40:40000"] for line in lines[1:])
        assert not any(line.split()[:1] == ["5"] for line in lines[1:])  # scrolled past


@pytest.mark.asyncio
async def test_a_spent_budget_leaves_rows_for_the_next_update_in_order():
    app = TableApp()
    async with app.run_test(size=(100, 20)):
        table = app.query_one(ConnectionsTable)
        app.store.apply(tuple(ConnectionOpened(info(i)) for i in range(ROWS)))
        changed, removed = app.store.take_changes()
        left = table.update_rows(changed, removed, budget=0.0)
        assert left and len(left) < ROWS
        assert table.order == sorted(set(range(ROWS)) - left)
        assert table.update_rows(left, set(), budget=None) == set()
        assert table.order == list(range(ROWS))


@pytest.mark.asyncio
async def test_removed_rows_go_and_the_cursor_stays_on_its_connection():
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.fill(range(100))
        table.select(60)
        table.update_rows(set(), set(range(0, 50)))
        await pilot.pause()
        assert table.order == list(range(50, 100))
        assert table.selected_id() == 60 and table.rows.index(60) == 10
        table.update_rows(set(), {60})
        assert table.selected_id() is not None and 60 not in table.rows


@pytest.mark.asyncio
async def test_sort_by_packets_puts_the_busiest_first_and_keeps_the_selection():
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        table.focus()
        app.fill(range(30))
        table.select(7)
        await pilot.press(*"s" * table.sortable.index("packets"))  # from id to packets
        assert table.sort_column == "packets"
        assert table.order[0] == 29 and table.selected_id() == 7
        header = table.render_line(0).text
        assert " pkts▼ " in header and "#▲" not in header  # the header says how it is sorted
        await pilot.press("S")  # reversed: the quietest first
        assert table.order[0] == 0 and table.order[-1] == 29 and table.selected_id() == 7
        assert " pkts▲ " in table.render_line(0).text


@pytest.mark.asyncio
async def test_the_sort_holds_as_rows_come_and_change():
    def with_packets(ids: range, packets: range) -> None:
        # New connections come with ids above every earlier one, as the engine numbers them.
        app.store.apply(tuple(ConnectionOpened(info(i)._replace(packets=(p, 1)))
                              for i, p in zip(ids, packets)))
        table.update_rows(*app.store.take_changes())

    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        table.focus()
        with_packets(range(0, 15), range(0, 30, 2))  # even packet counts
        table.sort_by("packets")
        table.select(5)  # 10 packets
        await pilot.pause()
        with_packets(range(15, 30), range(1, 30, 2))  # odd ones arrive: each to its sorted place
        by_packets = {p: i for i, p in zip(range(30), [*range(0, 30, 2), *range(1, 30, 2)])}
        assert table.order == [by_packets[p] for p in range(29, -1, -1)]
        assert table.selected_id() == 5
        # One connection gets busy: it moves to the top, and the cursor stays on its row.
        app.store.apply((ConnectionUpdated(info(16)._replace(packets=(500, 1))),))
        table.update_rows(*app.store.take_changes())
        assert table.order[0] == 16 and table.selected_id() == 5
        assert table.cursor_row == table.order.index(5)


@pytest.mark.asyncio
async def test_a_click_on_a_header_sorts_by_it_and_a_second_click_reverses():
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.fill(range(30))
        await pilot.pause()
        x = table.render_line(0).text.index("pkts")
        await pilot.click(ConnectionsTable, offset=(x, 0))
        assert table.sort_column == "packets" and table.order[0] == 29
        await pilot.click(ConnectionsTable, offset=(x, 0))
        assert table.sort_column == "packets" and table.order[0] == 0


def row_line(table: ConnectionsTable, conn_id: int):  # type: ignore[no-untyped-def]
    return table.render_line(table.rows.index(conn_id) - table.scroll_offset.y + 1)


@pytest.mark.asyncio
async def test_closed_rows_are_dimmed_and_stay_until_the_store_evicts_them():
    app = TableApp()
    app.store = TrafficStore(max_connections=10)
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.fill(range(5))
        app.store.apply((ConnectionClosed(info(2)._replace(state="CLOSED"), "closed"),))
        table.update_rows(*app.store.take_changes())
        await pilot.pause()
        assert all(seg.style.dim for seg in row_line(table, 2) if seg.text.strip())
        assert not any(seg.style and seg.style.dim for seg in row_line(table, 3) if seg.text.strip())
        assert "CLOSED" in row_line(table, 2).text
        app.fill(range(5, 10))  # up to the store's bound: all stay
        assert table.order == list(range(10))
        app.fill(range(10, 13))  # past it: the oldest go, closed or not
        assert table.order == list(range(3, 13)) and app.store.evicted == 3


@pytest.mark.asyncio
async def test_a_click_selects_a_row_and_a_second_click_opens_it():
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.fill(range(30))
        await pilot.pause()
        await pilot.click(ConnectionsTable, offset=(5, 4))  # the header is line 0
        assert table.selected_id() == 3 and app.seen[-1] == 3
        assert app.opened == []
        await pilot.click(ConnectionsTable, offset=(5, 4))
        assert app.opened == [3]
        await pilot.click(ConnectionsTable, offset=(5, 0))  # the header selects nothing
        assert table.selected_id() == 3


@pytest.mark.asyncio
async def test_an_update_repaints_only_the_lines_of_the_rows_that_changed():
    app = TableApp()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.fill(range(30))
        await pilot.pause()
        lines: list[int] = []
        whole: list[int] = []
        refresh_lines, refresh = table.refresh_lines, table.refresh

        def spy_lines(y: int, count: int = 1) -> object:
            lines.append(y)
            return refresh_lines(y, count)

        def spy(*regions: object, **kwargs: object) -> object:
            if not regions:
                whole.append(1)
            return refresh(*regions, **kwargs)

        table.refresh_lines = spy_lines  # type: ignore[method-assign]
        table.refresh = spy  # type: ignore[method-assign]
        # Same widths, new values: rows 5 and 7 on screen, row 25 below it.
        app.store.apply(tuple(ConnectionUpdated(info(i)._replace(packets=(i + 1, 1)))
                              for i in (5, 7, 25)))
        table.update_rows(*app.store.take_changes())
        assert sorted(lines) == [6, 8] and whole == []  # the header is line 0
        # A value wider than its column moves the others: everything is repainted.
        app.store.apply((ConnectionUpdated(info(3)._replace(packets=(10**12, 1))),))
        table.update_rows(*app.store.take_changes())
        assert whole


@pytest.mark.asyncio
async def test_rows_that_come_off_screen_are_formatted_only_when_drawn():
    """A flood of new connections below the screen costs no formatting; a row wider than its
    columns widens them when it is scrolled to."""
    app = TableApp()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        table.focus()
        app.fill(range(30))
        await pilot.pause()
        formatted: list[int] = []
        cells = table.cells

        def spy(row: int) -> list[str]:
            formatted.append(row)
            return cells(row)

        table.cells = spy  # type: ignore[method-assign]
        app.fill(range(30, 5030))
        packets = [column.key for column in table.COLUMNS].index("packets")
        width = table.widths[packets]
        app.store.apply((ConnectionUpdated(info(5000)._replace(packets=(10**12, 1))),))
        table.update_rows(*app.store.take_changes())
        assert formatted == [] and table.row_count == 5030
        assert table.widths[packets] == width  # not measured yet
        table.move_to(5000)
        await pilot.pause()
        assert 5000 in formatted and len(formatted) < 200  # the rows drawn, not the 5,000
        assert table.widths[packets] == len(str(10**12 + 1)) > width
        assert str(10**12 + 1) in table.render_line(table.cursor_row - table.scroll_offset.y + 1).text


@pytest.mark.asyncio
async def test_new_connections_arrive_without_moving_the_cursor_or_the_view():
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ConnectionsTable)
        table.focus()
        app.fill(range(40))
        await pilot.pause()
        table.move_to(25)
        await pilot.pause()
        top, seen = table.scroll_offset.y, len(app.seen)
        assert top > 0 and app.seen[-1] == 25
        for start in range(40, 400, 40):  # ten updates' worth of new connections
            app.fill(range(start, start + 40))
            await pilot.pause()
            assert table.selected_id() == 25 and table.cursor_row == 25
            assert table.scroll_offset.y == top
        assert len(app.seen) == seen  # nothing told the app the selection changed
        assert table.order[-1] == 399


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 50)), max_size=400),
       st.lists(st.integers(0, 300), max_size=200), st.booleans())
@settings(max_examples=150, deadline=None)
def test_sorted_rows_stay_in_order_whether_rows_go_few_or_many_at_once(puts, gone, descending):
    from tui.widgets.table import SortedRows

    rows = SortedRows()
    rows.descending = descending
    expected: dict[int, int] = {}
    for row, value in puts:
        rows.put(row, value)
        expected[row] = value
    for chunk in (gone[:3], gone[3:]):  # a few rows one by one, then the rest in one pass
        rows.remove(chunk)
        for row in chunk:
            expected.pop(row, None)
    order = sorted(expected, key=lambda row: (expected[row], row), reverse=descending)
    assert rows.ids() == order and len(rows) == len(order)
    assert [rows.at(i) for i in range(len(order))] == order
    assert all(rows.index(row) == i for i, row in enumerate(order))


@pytest.mark.asyncio
async def test_a_number_cut_by_the_edge_of_the_view_is_not_drawn():
    """`120` of `12070` reads as a number: a number the view's edge would cut is left out,
    whatever the horizontal scroll (the scroll brings it back whole)."""
    app = TableApp()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(ConnectionsTable)
        app.store.apply((ConnectionOpened(info(0)._replace(packets=(12069, 1), bytes=(51_200, 5))),))
        changed, removed = app.store.take_changes()
        table.update_rows(changed, removed)
        await pilot.pause()
        assert table.show_horizontal_scrollbar
        # Where each number is in the whole line: [start, end) of its text.
        spans, x = {}, 0
        for column, width, value in zip(table.COLUMNS, table.widths, table.cells(0)):
            if column.right and value:
                spans[value] = (x + 1 + width - len(value), x + 1 + width)
            x += width + 2
        assert {"12070", "50.0K"} <= set(spans)
        view = table.scrollable_content_region.width
        cut_seen = whole_seen = 0
        for scroll in range(table.max_scroll_x + 1):
            table.scroll_to(x=scroll, animate=False, immediate=True)
            line = table.render_line(1).text[:view]  # what the screen shows of the row
            for number, (start, end) in spans.items():
                shown = line[max(start - scroll, 0) : max(end - scroll, 0)]
                if scroll <= start and end <= scroll + view:
                    assert shown == number, (scroll, line)
                    whole_seen += 1
                elif start < scroll + view and end > scroll:  # partly in view: not drawn
                    assert shown.strip() == "", (scroll, number, line)
                    cut_seen += 1
        assert cut_seen and whole_seen


def test_a_summary_cut_to_its_column_keeps_its_count():
    from tui.widgets.connections import fit_summary

    long = "SET user:42 " + "v" * 100 + " (+12070)"
    assert fit_summary(long, 80).endswith("v… (+12070)") and len(fit_summary(long, 80)) == 80
    assert fit_summary("GET / (+3)", 80) == "GET / (+3)"
    assert fit_summary("x" * 100, 80) == "x" * 79 + "…"


@pytest.mark.asyncio
async def test_rows_that_widen_the_columns_at_the_end_do_not_hide_the_last_behind_the_scroll_bar():
    """The first rows fit in 80 columns, the last are wider: End draws them, the columns grow,
    a horizontal scroll bar comes, and the last row stays on screen above it."""
    from tests.test_app import screen_lines
    from tui.widgets.table import Column

    class Widening(VirtualTable):
        COLUMNS = [Column("n", "#", right=True), Column("text", "text")]
        DEFAULT_SORT = "n"

        def cells(self, row: int) -> list[str]:
            return [str(row), "x" * (10 if row < 90 else 90)]

        def sort_value(self, row: int, column: str) -> int:
            return row

    class WideningApp(App[None]):
        def compose(self) -> ComposeResult:
            yield Widening()

    app = WideningApp()
    async with app.run_test(size=(80, 12)) as pilot:
        table = app.query_one(Widening)
        table.focus()
        table.set_rows(range(100))
        await pilot.pause()
        assert not table.show_horizontal_scrollbar
        await pilot.press("end")
        await pilot.pause()
        await pilot.pause()
        assert table.show_horizontal_scrollbar
        assert any(line.split()[:1] == ["99"] for line in screen_lines(app))
