"""Transactions of protocols other than HTTP (engine.events.Transaction: Redis here) in the
inspector: how they travel to the UI thread (the capture thread's fold, the helper processes'
encoding), how the store keeps and bounds them, and what the screen shows of them. Pilot drives
the app on Redis conversations written to capture files (tests.conversations)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from engine import sources
from engine.bounds import Bounds
from engine.events import (
    ConnectionOpened,
    HttpTransaction,
    Message,
    Transaction,
)
from tests.conversations import build, causal
from tests.synth import write_pcap
from tests.test_app import SIZE, read_all, until
from tests.test_connections_table import info
from tests.test_redis import SCRIPT, command
from tests.test_store import records_read
from tui.app import WirepeekApp
from tui.capture import Pending, SourceSpec
from tui.exchange_log import (
    ANSWERED_ERROR,
    ANSWERED_OK,
    NO_ANSWER,
    EncodedExchanges,
    decode,
    encode,
    row_of,
)
from tui.store import (
    CONNECTION_COST,
    EXCHANGE_COST,
    MAX_KEPT,
    MAX_TRANSACTIONS_PER_CONNECTION,
    TrafficStore,
)
from tui.widgets.connections import ConnectionsTable
from tui.widgets.http import HttpView
from tui.widgets.transactions import REQUEST, RESPONSE, STATUS, TransactionsTable

# SET, three pipelined commands (GET, GET, INCR), then a command the server refuses: five
# transactions, the last an error.
ENDS_IN_ERROR = [*SCRIPT[:6], ("c-fin",)]


def write_capture(path: Path, script: list[tuple]) -> Path:
    write_pcap(path, causal(*build(script)))
    return path


def file_app(path: Path, jobs: int | None = None) -> WirepeekApp:
    return WirepeekApp(SourceSpec(files=(str(path),)), "", Bounds(keep_after_close=True), jobs=jobs)


def message(app: WirepeekApp) -> str:
    return app.query_one("#http-message").plain  # type: ignore[attr-defined,no-any-return]


def summary(app: WirepeekApp) -> str:
    return str(app.query_one("#http-summary").render())


def notices(app: WirepeekApp) -> list[str]:
    return [n.message for n in app._notifications]


def transaction(index: int, request: str | None = "GET k", response: str | None = "(nil)",
                status: str | None = "ok", conn: int = 0) -> Transaction:
    sent = None if request is None else Message(10.0 + index, 10.0 + index, 20)
    answered = None if response is None else Message(10.5 + index, 10.6 + index, 9)
    return Transaction("redis", conn, index, sent, request, answered, response, status,
                       response if status == "error" else None)


# ---------------------------------------------------------------------------- on the way


def test_a_transaction_is_encoded_as_a_record_kind_of_its_own_and_read_back_equal():
    odd = Transaction("redis", 3, 7, Message(1.5, 1.75, 42), "SET k\x1b[2J\x9b \\ \xff",
                      None, None, None, None, ("its answer was in server bytes that were lost",))
    for tx in (odd, transaction(0), transaction(1, request=None, response="[message ch hi]"),
               transaction(2, response="ERR no", status="error")):
        assert decode(encode(tx), tx.connection) == tx
    http = HttpTransaction(3, 7, None, None, "oops")
    assert decode(encode(http), 3) == http  # the HTTP record is as it was
    assert row_of(transaction(0)) == ("GET k", ANSWERED_OK)
    assert row_of(transaction(0, response="ERR x", status="error")) == ("GET k", ANSWERED_ERROR)
    assert row_of(transaction(0, response=None, status=None)) == ("GET k", NO_ANSWER)
    assert row_of(transaction(0, request=None, response="[message ch hi]")) == (
        "(no request) [message ch hi]", ANSWERED_OK)


def test_transactions_travel_from_a_helper_process_encoded_as_exchanges_do():
    batch = EncodedExchanges()
    batch.add(5, transaction(0))
    batch.add(5, transaction(1, response="ERR x", status="error"))
    [(conn, blob, line, status, offset), second] = list(batch)
    assert (conn, line, status, offset) == (5, "GET k", ANSWERED_OK, -1)
    assert decode(blob, 5) == transaction(0, conn=5) and second[3] == ANSWERED_ERROR
    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)),))
    store.apply_encoded([batch.renamed([0] * 6)])
    assert [tx.index for tx in store.http[0]] == [0, 1]
    assert store.summary(0) == "GET k (+1)" and store.last_status(0) == ANSWERED_ERROR


def test_the_capture_threads_fold_keeps_transactions_in_order_with_exchanges():
    pending = Pending()
    http = HttpTransaction(0, 0, None, None, "x")
    pending.add([transaction(0), http, transaction(1)])
    assert len(pending) == 3
    assert pending.take() == (transaction(0), http, transaction(1))


# ---------------------------------------------------------------------------- the store


def test_the_store_keeps_a_connections_newest_transactions_within_the_bounds():
    """20,000 transactions on one connection: the store keeps its newest (as many as it keeps
    HTTP exchanges), counts the others, and costs what exchanges cost."""
    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)),))
    sent = 20_000
    for start in range(0, sent, 1000):
        store.apply(tuple(transaction(i, request=f"GET k:{i}") for i in range(start, start + 1000)))
        kept = store.http[0]
        assert len(kept) <= MAX_KEPT
        assert store.cost == CONNECTION_COST + EXCHANGE_COST * len(kept)
    kept = store.http[0]
    assert MAX_TRANSACTIONS_PER_CONNECTION <= len(kept) <= MAX_KEPT
    assert store.dropped[0] == store.evicted_exchanges == sent - len(kept)
    assert [tx.index for tx in (kept[0], kept[-1])] == [sent - len(kept), sent - 1]
    assert store.summary(0) == f"GET k:{sent - 1} (+{len(kept) - 1})"
    # Memory grows with the positions kept, not with the transactions' text.
    assert len(store.last) == 1 and len(kept.positions) == len(kept)


# ---------------------------------------------------------------------------- the screen


@pytest.mark.asyncio
@pytest.mark.parametrize("jobs", [0, 2], ids=["capture-thread", "helpers"])
async def test_the_row_shows_the_last_command_and_enter_lists_the_transactions(tmp_path, jobs):
    app = file_app(write_capture(tmp_path / "redis.pcap", ENDS_IN_ERROR), jobs)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ConnectionsTable)
        assert table.order == [0] and app.store.connections[0].protocol == "redis"
        row = table.cells(0)
        assert row[table.status_column] == "error"
        assert row[-1] == "NOSUCH a (+4)"
        # Its status is in the error colour, as a 5xx is.
        line = table.render_line(1)
        [cell] = [seg for seg in line if seg.text.strip() == "error"]
        assert cell.style.color == table.get_component_rich_style("table--error").color

        await pilot.press("enter")
        view = app.query_one(HttpView)
        listed = app.query_one(TransactionsTable)
        assert view.listing_transactions and listed.has_focus and listed.display
        assert not app.query_one("#exchanges").display
        assert str(app.query_one("TabbedContent").get_tab("tab-http").label) == "Redis (1)"
        assert summary(app).startswith("5 Redis transactions")
        assert [listed.cells(r)[REQUEST] for r in listed.order] == [
            "SET user:42 " + "v" * 64, "GET user:42", "GET nope", "INCR n", "NOSUCH a"]
        assert [listed.cells(r)[STATUS] for r in listed.order] == ["ok"] * 4 + ["error"]
        assert message(app).startswith("Redis transaction 0: ok")
        assert "response OK" in message(app)
        await pilot.press("j")
        assert message(app).startswith("Redis transaction 1: ok")
        assert "request  GET user:42\n" in message(app) and "26B on the wire" in message(app)
        assert "4.9K on the wire, over 3.00ms" in message(app)  # the 5,000-byte value's reply
        assert "wait 1.00ms · duration 4.00ms" in message(app)
        await pilot.press("end")
        text = message(app)
        assert text.startswith("Redis transaction 4: error")
        assert "error: ERR unknown command 'NOSUCH'" in text and "duration" in text
        # The error row's status and answer are red, the others not.
        strip = listed.render_line(listed.cursor_row + 1)
        red = listed.get_component_rich_style("table--error").color
        coloured = {seg.text.strip() for seg in strip if seg.style is not None and seg.style.color == red}
        assert coloured == {"error", "ERR unknown command 'NOSUCH'"}
        strip = listed.render_line(1)
        assert not any(seg.style is not None and seg.style.color == red for seg in strip)


@pytest.mark.asyncio
async def test_a_connection_whose_last_message_is_a_push_says_so(tmp_path):
    app = file_app(write_capture(tmp_path / "pubsub.pcap", SCRIPT))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        assert app.query_one(ConnectionsTable).cells(0)[-1] == "(no request) [message ch2 bye] (+8)"
        await pilot.press("enter", "end")
        assert "request  (not captured)" in message(app)
        assert "note: a push from the server" in message(app)


@pytest.mark.asyncio
async def test_find_narrows_the_transactions_listed(tmp_path):
    """`/ proto = redis and status = error` keeps the connection and lists only its error.
    (Needs engine.filter to take transactions: landed in 72e6527.)"""
    app = file_app(write_capture(tmp_path / "redis.pcap", ENDS_IN_ERROR))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("slash", *"proto = redis and status = error", "enter")
        await until(pilot, lambda: app.search is not None)
        listed = app.query_one(TransactionsTable)
        assert app.query_one(ConnectionsTable).order == [0]
        assert [listed.cells(r)[REQUEST] for r in listed.order] == ["NOSUCH a"]
        assert summary(app) == "5 Redis transactions · 1 match 'proto = redis and status = error'"
        await pilot.press("slash", "ctrl+u", *"GET", "enter")  # a word: in the summaries
        await until(pilot, lambda: app.search is not None and app.search.query.text == "GET")
        assert [listed.cells(r)[REQUEST] for r in listed.order] == ["GET user:42", "GET nope"]
        await pilot.press("slash", "ctrl+u", *"method = INCR", "enter")  # the command's name
        await until(pilot, lambda: app.search is not None and app.search.query.text == "method = INCR")
        assert [listed.cells(r)[REQUEST] for r in listed.order] == ["INCR n"]
        await pilot.press("slash", "ctrl+u", *"proto = http", "enter")
        await until(pilot, lambda: app.search is not None and app.search.query.text == "proto = http")
        assert app.query_one(ConnectionsTable).order == []


@pytest.mark.asyncio
async def test_the_stats_tab_counts_transactions_by_command(tmp_path):
    app = file_app(write_capture(tmp_path / "redis.pcap", ENDS_IN_ERROR))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("4")
        stats = app.query_one("StatsView")
        await until(pilot, lambda: stats.stats is not None)
        groups = {name: g.count for name, g in stats.stats.groups.items()}
        assert groups == {"redis SET": 1, "redis GET": 2, "redis INCR": 1, "redis NOSUCH": 1}
        assert stats.stats.total.errors == 1
        # Enter on a group shows its transactions (a display filter made for it).
        table = app.query_one("#stats-table")
        table.select("redis GET")
        table.focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.search is not None)
        assert app.search.query.text == 'proto = "redis" and method = "GET"'
        listed = app.query_one(TransactionsTable)
        assert [listed.cells(r)[REQUEST] for r in listed.order] == ["GET user:42", "GET nope"]


@pytest.mark.asyncio
async def test_the_stats_tab_sorts_again_as_it_counts_and_keeps_the_order_chosen(tmp_path):
    """Live, the tab counts what came every 2 s: rows go to their new places (a group that
    overtakes another goes above it), in the order the user chose, and the numbers shown are
    those the rows were sorted by (the next count does not change them under the screen)."""
    app = file_app(write_capture(tmp_path / "redis.pcap", ENDS_IN_ERROR))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("4")
        view = app.query_one("StatsView")
        await until(pilot, lambda: view.stats is not None)
        table = view.table

        def counts() -> list[tuple[str, int]]:
            return [(row, view.stats.groups[row].count) for row in table.order]

        assert counts()[:2] == [("redis GET", 2), ("redis INCR", 1)]  # busiest first: count▼
        shown = view.stats
        table.focus()
        table.select("redis SET")

        async def more(command: str, n: int) -> None:
            start = len(app.store.http[0])
            app.store.apply(tuple(transaction(start + i, request=f"{command} k") for i in range(n)))
            app._refresh_stats()
            await until(pilot, lambda: view.stats is not shown and not app._stats_running)

        await more("SET", 4)  # SET: 5, GET: 2
        assert counts()[:2] == [("redis SET", 5), ("redis GET", 2)]
        assert table.selected_id() == "redis SET"  # the cursor went with its group
        assert shown.groups["redis SET"].count == 1  # the copy shown before was left as it was
        await pilot.press("S")  # the smallest first, as the user chose: kept as counts grow
        assert table.sort_label(table.COLUMNS[1]) == "count▲"
        shown = view.stats
        await more("GET", 6)  # GET: 8
        assert [n for _, n in counts()] == sorted(n for _, n in counts())
        assert counts()[-2:] == [("redis SET", 5), ("redis GET", 8)]
        assert table.sort_label(table.COLUMNS[1]) == "count▲"
        # Every number on screen is that of the counts the rows are in.
        cells = [table.cells(row)[1] for row in table.order]
        assert cells == [f"{n:,}" for _, n in counts()]


@pytest.mark.asyncio
async def test_end_shows_the_last_transaction_above_the_horizontal_scroll_bar(tmp_path):
    """At 80x24 the transactions list is wider than the screen: End, PgDn and the cursor
    moving down must bring the last transaction into view above the scroll bar."""
    from tests.test_app import screen_lines

    script: list[tuple] = []
    for i in range(16):
        script += [("c", command(b"GET", b"key:%d" % i)), ("s", b"$3\r\n%03d\r\n" % i)]
    app = file_app(write_capture(tmp_path / "sixteen.pcap", [*script, ("c-fin",)]))
    async with app.run_test(size=(80, 24)) as pilot:
        await read_all(app, pilot)
        await pilot.press("enter")
        listed = app.query_one(TransactionsTable)
        await pilot.pause()
        assert listed.row_count == 16 and listed.show_horizontal_scrollbar

        def last_row_on_screen() -> bool:
            return any(line.split()[:1] == ["15"] and "GET key:15" in line for line in screen_lines(app))

        await pilot.press("end")
        await pilot.pause()
        assert message(app).startswith("Redis transaction 15: ok")
        assert last_row_on_screen()
        await pilot.press("home", *["pagedown"] * 16)
        await pilot.pause()
        assert message(app).startswith("Redis transaction 15: ok") and last_row_on_screen()
        await pilot.press("home", *["j"] * 15)
        await pilot.pause()
        assert message(app).startswith("Redis transaction 15: ok") and last_row_on_screen()


@pytest.mark.asyncio
async def test_http_only_exports_refuse_a_transaction(tmp_path):
    app = file_app(write_capture(tmp_path / "redis.pcap", ENDS_IN_ERROR))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("enter")
        for key in ("c", "C", "b", "e"):
            await pilot.press(key)
            assert notices(app)[-1].startswith("not an HTTP exchange: a Redis transaction"), key
            assert not app.query_one("#prompt").display
        # Every exchange shown as HAR: the Redis connection is left out, and with no HTTP
        # exchange left E says so at once, no prompt, no file (not an empty HAR).
        await pilot.press("E")
        assert notices(app)[-1].startswith("no HTTP exchange is shown: nothing to write as HAR")
        assert not app.query_one("#prompt").display
        # Nor does the writer make an empty file when what it was given has no HTTP exchange.
        out = tmp_path / "all.har"
        app.write_har([(0, [0, 1, 2, 3, 4])], str(out))
        await until(pilot, lambda: "nothing written" in notices(app)[-1])
        assert notices(app)[-1] == "nothing written: no HTTP exchange to write as HAR"
        assert not out.exists()


@pytest.mark.asyncio
async def test_wire_text_is_shown_escaped_once(tmp_path):
    key = b"k\x1b[2J\x9b31m\\x"  # ESC, a C1 CSI and a backslash sent on the wire
    script = [("c", command(b"GET", key)), ("s", b"-ERR \x1b]0;owned\x07\r\n"), ("c-fin",)]
    app = file_app(write_capture(tmp_path / "escape.pcap", script))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        shown = r"GET k\x1b[2J\x9b31m\\x"
        assert app.query_one(ConnectionsTable).cells(0)[-1] == shown
        await pilot.press("enter")
        listed = app.query_one(TransactionsTable)
        cells = listed.cells(listed.order[0])
        assert cells[REQUEST] == shown and cells[RESPONSE] == r"ERR \x1b]0;owned\x07"
        text = message(app)
        assert f"request  {shown}\n" in text and r"error: ERR \x1b]0;owned\x07" in text
        assert "\x1b" not in text and "\x9b" not in text and r"\\x1b" not in text
        # What the terminal is sent: no control character from the wire.
        for y in range(4):
            assert not any("\x1b" in seg.text or "\x9b" in seg.text for seg in listed.render_line(y))


def many_commands(n: int, chunk: int = 1000) -> list[tuple]:
    """n pipelined commands in chunks of `chunk`, each chunk answered before the next is sent;
    every seventh an unknown command that the server refuses."""
    script: list[tuple] = []
    for start in range(0, n, chunk):
        requests, replies = [], []
        for i in range(start, min(n, start + chunk)):
            if i % 7 == 6:
                requests.append(command(b"NOPE", b"%d" % i))
                replies.append(b"-ERR unknown command 'NOPE'\r\n")
            else:
                requests.append(command(b"GET", b"key:%d" % i))
                replies.append(b"$3\r\n%03d\r\n" % (i % 1000))
        script += [("c", b"".join(requests)), ("s", b"".join(replies))]
    return [*script, ("c-fin",)]


@pytest.fixture(scope="module")
def twenty_thousand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("redis") / "redis-20000.pcap"
    return write_capture(path, many_commands(20_000))


@pytest.mark.asyncio
async def test_20000_transactions_on_one_connection_stay_bounded_and_keys_stay_quick(twenty_thousand,
                                                                                   monkeypatch):
    app = file_app(twenty_thousand)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        store = app.store
        kept = store.http[0]
        assert len(kept) <= MAX_KEPT and store.dropped[0] == 20_000 - len(kept)
        assert store.cost == CONNECTION_COST + EXCHANGE_COST * len(kept)
        assert app.query_one(ConnectionsTable).cells(0)[-1].startswith("GET key:19999 (+")
        listed = app.query_one(TransactionsTable)
        await pilot.press("enter")
        assert listed.has_focus and listed.row_count == len(kept)
        assert summary(app).startswith(f"{len(kept):,} Redis transactions")
        assert f"{20_000 - len(kept):,} earlier Redis transactions evicted" in summary(app)
        await pilot.press("end")
        assert message(app).startswith("Redis transaction 19999: ok")
        await pilot.press("pageup", "home", "pagedown", "j")
        assert message(app).startswith(f"Redis transaction {20_000 - len(kept) + listed.cursor_row}:")
        # What a key costs the screen, whatever the list's length: the move, the transaction
        # under the cursor described, and the lines on screen drawn (their records read from
        # the ring file). Sorting by a column that is not in memory reads every record once.
        # (How long each takes is make bench-ui's to say: here, the records each one reads.)
        reads = records_read(monkeypatch, app.store)
        counts = {}
        for name, key in (("end", listed.action_last), ("home", listed.action_first),
                          ("pagedown", listed.action_page_down), ("j", listed.action_cursor_down),
                          ("sort by dur", lambda: listed.sort_by("duration"))):
            reads.clear()
            key()
            app.query_one(HttpView).describe_row(listed.selected_id())
            for y in range(listed.size.height):
                listed.render_line(y)
            counts[name] = len(reads)
        sort = counts.pop("sort by dur")
        assert max(counts.values()) <= 2 * listed.size.height, counts
        assert sort <= len(kept) + 2 * listed.size.height, sort


@pytest.mark.asyncio
async def test_a_view_of_a_connection_sent_100000_transactions_opens_and_moves_at_once(monkeypatch):
    """100,000 transactions on one connection: the store keeps its newest (MAX_KEPT at most);
    the view opens without reading them (the index is in memory) and draws only what is shown."""
    from textual.app import App, ComposeResult

    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)),))
    for start in range(0, 100_000, 5000):
        store.apply(tuple(transaction(i) for i in range(start, start + 5000)))
    kept = store.http[0]
    assert len(kept) <= MAX_KEPT and store.dropped[0] == 100_000 - len(kept)

    class ViewApp(App[None]):
        def compose(self) -> ComposeResult:
            yield HttpView()

    app = ViewApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(HttpView)
        read = records_read(monkeypatch, store)
        # (How fast is make bench-ui's to say; here, that the work does not grow with the list:
        # only what is drawn is read back from the ring.)
        view.show(0, kept, protocol="redis", evicted=store.dropped[0])
        await pilot.pause()
        table = view.table
        assert isinstance(table, TransactionsTable) and table.row_count == len(kept)
        assert len(read) < 100, len(read)
        read.clear()
        table.action_last()
        for y in range(table.size.height):
            table.render_line(y)
        assert len(read) < 100, len(read)
        assert table.transaction(table.selected_id()).index == 99_999


# ---------------------------------------------------------------------------- live


REDIS_SERVER = shutil.which("redis-server")


@pytest.mark.asyncio
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (Debian: redis-server)")
async def test_a_live_redis_connection_lists_its_transactions():
    """Live, through the capture process and the helper processes (tui.live_feed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:  # until it listens (a connection made before the capture is not this test's)
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        bpf = f"tcp port {port}"
        source = sources.open_live(["lo"], bpf)
        app = WirepeekApp(SourceSpec(interfaces=("lo",), opened=source), bpf,
                          Bounds(keep_after_close=True))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            with socket.create_connection(("127.0.0.1", port)) as client:  # seen from its SYN
                for request in (command(b"SET", b"user:42", b"ada"), command(b"GET", b"user:42"),
                                command(b"NOSUCH")):
                    client.sendall(request)
                    client.recv(65536)
                table = app.query_one(ConnectionsTable)
                for _ in range(200):
                    if table.order and table.cells(table.order[-1])[-1] == "NOSUCH (+2)":
                        break
                    await pilot.pause(0.05)
                conn_id = table.order[-1]
                assert [tx.request_summary for tx in app.store.http[conn_id]] == [
                    "SET user:42 ada", "GET user:42", "NOSUCH"]
                assert table.cells(conn_id)[table.status_column] == "error"
                table.select(conn_id)
                await pilot.press("enter")
                listed = app.query_one(TransactionsTable)
                answers = [listed.cells(r)[RESPONSE] for r in listed.order]
                assert answers[:2] == ["OK", "ada"] and answers[2].startswith("ERR unknown command")
    finally:
        server.terminate()
        server.wait(timeout=10)
