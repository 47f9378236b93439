"""The inspector at incident scale: a connection of thousands of exchanges, search over every
exchange, the keys and the focus (issue 10). Pilot drives the app on real capture files."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from textual.widgets import Input, TabbedContent

from engine.bounds import Bounds
from engine.events import HttpRequest, HttpResponse, HttpTransaction
from tests.bench.workloads import keepalive_http
from tests.test_app import SIZE, app_for, read_all, until
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.cli import DEMO_CAPTURE
from tui.search import Query, Search
from tui.widgets.connections import ConnectionsTable
from tui.widgets.http import ExchangesTable, HttpView

EXCHANGES = 3000


@pytest.fixture(scope="module")
def long_connection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One keep-alive connection carrying 3,000 exchanges (GET /items/0 .. /items/2999)."""
    path = tmp_path_factory.mktemp("long") / "keepalive-3000.pcap"
    facts = keepalive_http(path, connections=1, transactions=EXCHANGES)
    assert facts["transactions"] == EXCHANGES
    return path


def file_app(path: Path | str) -> WirepeekApp:
    return WirepeekApp(SourceSpec(files=(str(path),)), "", Bounds(keep_after_close=True))


def message(app: WirepeekApp) -> str:
    return app.query_one("#http-message").plain  # type: ignore[attr-defined,no-any-return]


def summary(app: WirepeekApp) -> str:
    return str(app.query_one("#http-summary").render())


@pytest.mark.asyncio
async def test_a_connection_of_3000_exchanges_opens_pages_and_sorts(long_connection):
    app = file_app(long_connection)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ExchangesTable)
        assert app.selected == 0 and table.row_count == EXCHANGES
        assert summary(app).startswith("3,000 exchanges")
        await pilot.press("enter")
        assert table.has_focus and "GET /items/" in message(app)
        first = table.order[:3]
        await pilot.press("pagedown", "pagedown")
        page = max(1, table.size.height - 2)
        assert table.cursor_row == 2 * page
        # Every row on screen is drawn, with its own exchange.
        assert f"GET /items/{table.transaction(table.selected_id()).request.target[7:]}" in message(app)
        await pilot.press("end")
        assert table.cursor_row == EXCHANGES - 1 and table.selected_id() == EXCHANGES - 1
        await pilot.press("home")
        assert table.order[:3] == first and table.cursor_row == 0
        # Sort by the response size descending, then the time, and reverse it.
        table.sort_by("time")
        await pilot.press("S")
        assert table.order[0] == EXCHANGES - 1 and table.rows.descending
        assert "time▼" in table.render_line(0).text
        await pilot.pause()
        assert table.cursor_row == table.order.index(table.selected_id())


@pytest.mark.asyncio
async def test_find_matches_every_exchange_not_only_the_last(long_connection):
    app = file_app(long_connection)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("slash")
        app.query_one("#display-filter", Input).value = "/items/123"
        await pilot.press("enter")
        await until(pilot, lambda: app.search is not None)
        # /items/123 and /items/1230 .. /items/1239, in the middle of the connection.
        assert app.search is not None and app.search.matched == 11
        table = app.query_one(ExchangesTable)
        assert table.row_count == 11
        targets = sorted(table.transaction(row).request.target for row in table.order)
        assert targets == sorted(["/items/123", *(f"/items/{n}" for n in range(1230, 1240))])
        assert "3,000 exchanges · 11 match '/items/123'" in summary(app)
        assert "11 matches" in str(app.query_one("#status").render())
        # Nothing matches: the list is empty; an empty query shows everything again.
        await pilot.press("slash")
        app.query_one("#display-filter", Input).value = "/items/99999"
        await pilot.press("enter")
        await until(pilot, lambda: app.search is not None and app.search.query.text == "/items/99999")
        assert app.query_one(ConnectionsTable).row_count == 0
        await pilot.press("slash")
        app.query_one("#display-filter", Input).value = ""
        await pilot.press("enter")
        await until(pilot, lambda: app.query_one(ConnectionsTable).row_count == 1)
        assert app.search is None


@pytest.mark.asyncio
async def test_find_shows_the_connection_whose_middle_exchange_matches():
    app = WirepeekApp(SourceSpec(files=(str(DEMO_CAPTURE),)), "", Bounds())
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        txs = app.store.http[0]
        assert [tx.request.target for tx in txs][0] == "/api/v1/orders?limit=3" and len(txs) == 3
        await pilot.press("slash", *"limit=3", "enter")
        await until(pilot, lambda: app.search is not None)
        assert app.query_one(ConnectionsTable).order == [0]
        assert app.selected == 0
        table = app.query_one(ExchangesTable)
        assert table.order == [0]  # only the matching exchange of the three
        assert "limit=3" in message(app)


def tx(request: HttpRequest | None, response: HttpResponse | None, index: int = 0) -> HttpTransaction:
    return HttpTransaction(connection=1, index=index, request=request, response=response)


def request(target: str, headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> HttpRequest:
    return HttpRequest(ts=1.0, end_ts=1.0, method="POST", target=target, version="1.1",
                       headers=headers, body_bytes=len(body), body_missing=0, body=body,
                       complete=True, offset=0)


def response(status: int, headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> HttpResponse:
    return HttpResponse(ts=2.0, end_ts=2.0, status=status, reason="Whatever", version="1.1",
                        headers=headers, body_bytes=len(body), body_missing=0, body=body,
                        complete=True)


def test_the_matcher_looks_in_statuses_headers_and_decoded_bodies():
    from tests.test_connections_table import info

    conn = info(1)
    gzipped = gzip.compress(b'{"error": "Quota-Exceeded for tenant 42"}')
    txs = [
        tx(request("/a"), response(200), 0),
        tx(request("/b", (("X-Request-Id", "abc-123"),)), response(503), 1),
        tx(request("/c"), response(200, (("Content-Encoding", "gzip"),), gzipped), 2),
        tx(None, response(500), 3),
    ]
    search = Search(Query("503"))
    assert search.connection(conn, txs) and search.exchanges[1] == [1]
    search = Search(Query("x-request-id ABC-123"))  # a header's name and value, any case
    assert search.connection(conn, txs) and search.exchanges[1] == [1]
    search = Search(Query("quota-exceeded"))  # inside a gzip body, decoded
    assert search.connection(conn, txs) and search.exchanges[1] == [2]
    search = Search(Query("ESTABLISHED 500"))  # the connection's state and an exchange's status
    assert search.connection(conn, txs) and search.exchanges[1] == [3] and search.matched == 1
    search = Search(Query("/a 503"))  # every word in one exchange, not spread over two
    assert not search.connection(conn, txs) and search.matched == 0
    # Exchanges that come later are matched as they come, once each.
    search = Search(Query("500"))
    search.connection(conn, txs[:2])
    assert search.matched == 0
    search.connection(conn, txs)
    search.connection(conn, txs)
    assert search.exchanges[1] == [3] and search.matched == 1


@pytest.mark.asyncio
async def test_tab_keys_work_wherever_the_focus_is_but_not_in_a_prompt():
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        tabs = app.query_one(TabbedContent)
        await pilot.press("enter")  # into the exchanges
        assert app.focused is app.query_one(ExchangesTable)
        await pilot.press("2")
        assert tabs.active == "tab-stream" and app.focused is app.query_one("#stream")
        await pilot.press("3")
        assert tabs.active == "tab-packets"
        await pilot.press("1")
        assert tabs.active == "tab-http" and app.focused is app.query_one(ExchangesTable)
        await pilot.press("j", "j")
        assert app.query_one(ExchangesTable).cursor_row == 2
        # Typing a digit in the find prompt is text, not a tab change.
        await pilot.press("slash", "2")
        assert app.query_one("#display-filter", Input).value == "2" and tabs.active == "tab-http"
        await pilot.press("escape")
        assert app.focused is app.query_one(ConnectionsTable)


@pytest.mark.asyncio
async def test_tab_goes_to_the_content_and_zoom_gives_the_detail_the_screen():
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("tab")
        assert app.focused is app.query_one(ExchangesTable)  # not the tab strip
        await pilot.press("escape", "3")
        await pilot.pause(0.3)
        await pilot.press("tab")
        assert app.focused is app.query_one("#packets-list")  # the Packets tab's list too
        await pilot.press("escape", "1")
        detail = app.query_one("#detail")
        before = detail.size.height
        await pilot.press("z")
        await pilot.pause()
        assert not app.query_one(ConnectionsTable).display and detail.size.height > before
        await pilot.press("escape")
        await pilot.pause()
        assert app.query_one(ConnectionsTable).display and app.focused is app.query_one(ConnectionsTable)
        assert detail.size.height == before


@pytest.mark.asyncio
async def test_the_selected_row_stays_visible_when_the_focus_is_elsewhere():
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ConnectionsTable)
        await pilot.press("j", "enter")  # the focus goes to the exchanges below

        def background(y: int) -> object:
            return list(table.render_line(y))[0].style.bgcolor  # type: ignore[union-attr]

        def distance(a: object, b: object) -> int:
            ta, tb = a.get_truecolor(), b.get_truecolor()  # type: ignore[attr-defined]
            return sum(abs(x - y) for x, y in zip(ta, tb))

        cursor = table.cursor_row - table.scroll_offset.y + 1
        assert not table.has_focus
        # Not a shade apart (it was grey 235 on 234): clearly another colour than every row.
        for y in range(1, 6):
            if y != cursor:
                assert distance(background(cursor), background(y)) >= 60


@pytest.mark.asyncio
async def test_http2_connections_say_so_in_the_http_tab():
    app = app_for("escapes.pcap")  # no HTTP/2 here: the plain message first
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        view = app.query_one(HttpView)
        view.show(99, [], None, "http2")
        assert "No HTTP/2 stream read on this connection (yet)" in summary(app)


def test_the_matcher_looks_again_when_the_store_replaced_a_list():
    """Evicting old exchanges puts a new, shorter list in the store: positions start again."""
    from tests.test_connections_table import info

    conn = info(1)
    old = [tx(request(f"/x{i}"), response(500 if i % 2 else 200), i) for i in range(6)]
    search = Search(Query("500"))
    search.connection(conn, old)
    assert search.exchanges[1] == [1, 3, 5] and search.matched == 3
    new = old[3:]  # the first three evicted
    search.connection(conn, new)
    assert search.exchanges[1] == [0, 2] and search.matched == 2


@pytest.mark.asyncio
async def test_selecting_an_http_message_and_copying_it():
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        view = app.query_one("#http-message")
        assert view.lines[0].plain.startswith("GET /style/enhanced.css HTTP/1.1")
        await pilot.mouse_down(view, offset=(0, 0))
        await pilot.hover(view, offset=(9, 1))
        await pilot.mouse_up(view, offset=(9, 1))
        await pilot.pause()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.clipboard.startswith("GET /style/enhanced.css HTTP/1.1\nHost: www")


@pytest.mark.asyncio
async def test_error_and_client_error_statuses_are_coloured():
    app = WirepeekApp(SourceSpec(files=(str(DEMO_CAPTURE),)), "", Bounds())
    async with app.run_test(size=(160, 40)) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ConnectionsTable)
        not_found = next(c for c in table.order if app.store.last_status(c) == 404)
        ok = next(c for c in table.order if app.store.last_status(c) == 200)

        def status_colour(conn_id: int) -> object:
            line = table.render_line(table.rows.index(conn_id) + 1 - table.scroll_offset.y)
            [cell] = [seg for seg in line if seg.text.strip() in ("404", "200")]
            return cell.style.color  # type: ignore[union-attr]

        assert status_colour(not_found) != status_colour(ok)
        assert status_colour(not_found) == table.get_component_rich_style("table--warning").color


@pytest.mark.asyncio
async def test_t_switches_the_stream_times_to_relative_and_back():
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("2")
        stream = app.query_one("#stream")
        await until(pilot, lambda: len(stream.index) > 0)

        def header() -> str:
            return next(stream.render_line(y).text for y in range(stream.size.height)
                        if stream.render_line(y).text.startswith("── client"))

        assert re.search(r"· \d\d:\d\d:\d\d\.\d{3}", header())
        await pilot.press("t")
        assert re.search(r"· \+0\.\d{6}s$", header().rstrip())  # since the first packet (the SYN)
        await pilot.press("t")
        assert re.search(r"· \d\d:\d\d:\d\d\.\d{3}", header())


@pytest.mark.asyncio
async def test_rows_left_over_are_drawn_when_no_more_updates_come(tmp_path, monkeypatch):
    """A file read to its end sends no more updates (the app rests): the rows that did not fit
    in an update's time budget are drawn anyway, before the file counts as done."""
    import tui.app
    from tests.bench.workloads import conn_per_request_http

    monkeypatch.setattr(tui.app, "ROWS_BUDGET", 0.0)  # 64 rows per update at most
    path = tmp_path / "many.pcap"
    conn_per_request_http(path, connections=300)
    app = file_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        assert app.query_one(ConnectionsTable).row_count == 300


def test_a_connection_closed_but_still_lingering_opens_its_stream_at_the_top():
    """Live, a closed connection stays in the engine's table for a while (late resends): its
    stream is finished all the same, so it opens at the top, not following a tail."""
    from tests.test_connections_table import info

    app = file_app(DEMO_CAPTURE)
    for state, live in [("ESTABLISHED", True), ("FIN_WAIT", True), ("CLOSED", False), ("RESET", False)]:
        app.store.connections[1] = info(1)._replace(state=state)
        assert app._stream_facts(1)[2] is live, state


@pytest.mark.asyncio
async def test_the_open_list_follows_a_connection_past_its_cap_without_starting_again(monkeypatch):
    """Past a connection's cap the store forgets its oldest exchanges and gives a new, shorter
    list: the open HTTP tab moves its rows up by as many (no reading of the whole list again),
    and the cursor stays on the exchange it was on."""
    from textual.app import App, ComposeResult

    from engine.events import ConnectionOpened
    from tests.test_connections_table import info
    from tests.test_store import exchange
    from tui import store as store_module
    from tui.store import TrafficStore

    monkeypatch.setattr(store_module, "MAX_TRANSACTIONS_PER_CONNECTION", 40)
    monkeypatch.setattr(store_module, "MAX_KEPT", 45)
    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)),))

    class ViewApp(App[None]):
        def compose(self) -> ComposeResult:
            yield HttpView()

    app = ViewApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(HttpView)
        table = view.table
        sent = 0

        def more(n: int) -> None:
            nonlocal sent
            store.apply(tuple(exchange(0, sent + i, body=5) for i in range(n)))
            sent += n
            view.show(0, store.exchanges(0))

        more(44)
        assert table.row_count == 44
        table.select(30)  # exchange 30
        await pilot.pause()
        read = []
        original = store.log.read
        monkeypatch.setattr(store.log, "read", lambda *a: read.append(a) or original(*a))
        more(3)  # the 46th sends the first 6 away, the 47th comes after: 41 are left
        kept = store.http[0]
        assert (len(kept), kept.start) == (41, 6) and table.row_count == 41
        assert table.transaction(table.selected_id()).index == 30
        assert [table.transaction(table.rows.at(i)).index for i in (0, 40)] == [6, 46]
        assert len(read) < 20  # the new rows and what is drawn, not the 41 again
        more(60)  # the cursor's exchange goes too: the cursor goes to the first row
        assert table.transaction(table.rows.at(0)).index == sent - table.row_count
        assert table.cursor_row == 0


@pytest.mark.asyncio
async def test_opening_a_connection_reads_only_the_exchanges_drawn(monkeypatch):
    """Sorted by index (the default), a connection of 3,000 exchanges opens without reading the
    3,000 records: the indexes are in memory; only the rows drawn are read."""
    from textual.app import App, ComposeResult

    from engine.events import ConnectionOpened
    from tests.test_connections_table import info
    from tests.test_store import exchange, records_read
    from tui.store import TrafficStore

    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)), *(exchange(0, i, body=5) for i in range(3000))))

    class ViewApp(App[None]):
        def compose(self) -> ComposeResult:
            yield HttpView()

    app = ViewApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(HttpView)
        read = records_read(monkeypatch, store)
        view.show(0, store.exchanges(0))
        await pilot.pause()
        assert view.table.row_count == 3000 and 0 < len(read) < 200
        assert view.table.transaction(view.table.rows.at(2999)).index == 2999


@pytest.mark.asyncio
async def test_find_takes_comparisons_and_says_where_an_expression_is_wrong():
    app = app_for("zeek/http__methods.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        everything = [tx for txs in app.store.http.values() for tx in txs]
        wanted = {(tx.connection, tx.index) for tx in everything
                  if tx.response is not None and tx.response.status >= 400
                  and not (tx.request is not None and tx.request.method == "GET")}  # fmt: skip
        assert 0 < len(wanted) < len(everything)
        await pilot.press("slash", *"status >= 400 and not mehtod = get", "enter")
        error = str(app.query_one("#prompt-error").render())
        assert "no field named 'mehtod' (did you mean method?);" in error and "(column 23)" in error
        assert app.query_one("#prompt").display and app.search is None  # still open, to fix
        field = app.query_one("#display-filter", Input)
        field.value = "status >= 400 and not method = get"
        await pilot.press("enter")
        await until(pilot, lambda: app.search is not None)
        assert not app.query_one("#prompt").display
        found = {(conn, app.store.http[conn][i].index)
                 for conn, positions in app.search.exchanges.items() for i in positions}  # fmt: skip
        assert found == wanted
        assert app.search.matched == len(wanted)
