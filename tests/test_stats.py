"""Latency statistics (engine.stats): percentiles against exact values on generated data, in
fixed memory; grouping by endpoint (ids collapsed), host and status; --stats on the command line."""

from __future__ import annotations

import json
import math
import random

import pytest

from engine.stats import ACCURACY, Sketch, Stats, endpoint
from tests.test_filter import conn, exchange
from tests.test_cli import capture, wirepeek


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal", "constant"])
def test_percentiles_are_within_the_stated_error(kind):
    rng = random.Random(kind)
    make = {
        "lognormal": lambda: rng.lognormvariate(-4, 1.5),
        "uniform": lambda: rng.uniform(0.0001, 3.0),
        "bimodal": lambda: rng.choice((rng.gauss(0.01, 0.001), rng.gauss(2.0, 0.2))),
        "constant": lambda: 0.125,
    }[kind]
    values = [abs(make()) for _ in range(20_000)]
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    for q in (0.01, 0.5, 0.9, 0.99, 0.999, 1.0):
        got, want = sketch.quantile(q), exact(values, q)
        assert got is not None and abs(got - want) <= ACCURACY * want + 1e-12, (q, got, want)
    assert sketch.max == max(values) and sketch.count == len(values)


def test_memory_is_bounded_by_the_range_not_the_count():
    sketch = Sketch()
    rng = random.Random(1)
    for _ in range(200_000):
        sketch.add(10 ** rng.uniform(-6, math.log10(86_400)))  # a microsecond to a day
    assert len(sketch.buckets) <= 1_300
    assert Sketch().quantile(0.5) is None


def test_sketches_merge_as_if_one():
    rng = random.Random(2)
    values = [rng.expovariate(10) for _ in range(5_000)]
    one, a, b = Sketch(), Sketch(), Sketch()
    for i, v in enumerate(values):
        one.add(v)
        (a if i % 2 else b).add(v)
    a.merge(b)
    assert a.buckets == one.buckets and a.count == one.count and a.max == one.max
    assert a.quantile(0.9) == one.quantile(0.9)


@pytest.mark.parametrize("target,expected", [
    ("/users/42/orders?page=2", "GET /users/{id}/orders"),
    ("/users/7/orders", "GET /users/{id}/orders"),
    ("/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "GET /items/{id}"),
    ("/blob/deadbeef0123456789", "GET /blob/{id}"),
    ("/session/AbCdEfGh1234567890_-xyZ", "GET /session/{id}"),
    ("/checkout", "GET /checkout"),
    ("/static/img/100015.png", "GET /static/img/{id}.png"),
    ("/static/app.min.js", "GET /static/app.min.js"),
    ("/api/v2/health", "GET /api/v2/health"),  # v2 is a version, not an id
    ("http://proxy.example/a/12", "GET /a/{id}"),
    ("/", "GET /"),
])
def test_endpoints_collapse_ids(target, expected):
    assert endpoint(exchange(target=target)) == expected


def test_groups_count_errors_and_bytes():
    stats = Stats("status")
    for tx in (exchange(status=200, resp_body=b"x" * 10), exchange(status=503),
               exchange(status=200, dur=1.0), exchange(status=404)):
        stats.add(tx, conn())
    by = {g.name: g for g in stats.groups.values()}
    assert (by["200"].count, by["200"].errors, by["200"].response_bytes) == (2, 0, 10)
    assert by["503"].errors == 1 and by["404"].errors == 0
    assert stats.total.count == 4 and stats.total.errors == 1
    assert [g.name for g in stats.sorted()] == ["200", "404", "503"]
    hosts = Stats("host")
    hosts.add(exchange(req_headers=()), conn(sni="api.example.com"))
    assert list(hosts.groups) == ["api.example.com"]
    with pytest.raises(ValueError):
        Stats("colour")


def test_stats_on_the_command_line():
    path = capture("zeek/http__methods.pcap")
    records = [json.loads(x) for x in wirepeek("-r", path, "--stats", "--json", "--group-by", "status").stdout.splitlines()]
    everything = [json.loads(x) for x in wirepeek("-r", path, "--json").stdout.splitlines()]
    http = [r for r in everything if r["type"] == "http"]
    total = records[-1]
    assert total["group"] == "(all)" and total["count"] == len(http)
    counts = {r["group"]: r["count"] for r in records[:-1]}
    for status in ("400", "405", "200"):
        assert counts[status] == sum(1 for r in http if r["response"] and str(r["response"]["status"]) == status)
    filtered = wirepeek("-r", path, "--stats", "--json", "--where", "status = 4xx").stdout.splitlines()
    assert json.loads(filtered[-1])["count"] == sum(1 for r in http if r["response"] and 400 <= r["response"]["status"] < 500)
    table = wirepeek("-r", path, "--stats").stdout.decode()
    assert table.splitlines()[0].split()[:3] == ["endpoint", "count", "errors"]
    assert "(all)" in table and "percentiles within 1%" in table
    wrong = wirepeek("-r", path, "--group-by", "host")
    assert wrong.returncode == 2 and b"--group-by goes with --stats" in wrong.stderr


@pytest.mark.asyncio
async def test_the_stats_tab_groups_and_enter_shows_a_group():
    from tests.test_app import SIZE, read_all, until
    from tests.test_inspector import file_app
    from tui.widgets.connections import ConnectionsTable
    from tui.widgets.stats import StatsView

    app = file_app(capture("zeek/http__methods.pcap"))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        everything = [tx for txs in app.store.http.values() for tx in txs]
        await pilot.press("4")
        view = app.query_one(StatsView)
        await until(pilot, lambda: view.stats is not None)
        assert view.stats.total.count == len(everything)
        assert "exchanges in" in str(app.query_one("#stats-summary").render())
        await pilot.press("g", "g")  # endpoint -> host -> status
        await until(pilot, lambda: view.stats is not None and view.stats.grouping == "status")
        table = view.table
        by_status = {name: g.count for name, g in view.stats.groups.items()}
        assert by_status["400"] == sum(1 for tx in everything if tx.response and tx.response.status == 400)
        assert table.order[0] == max(by_status, key=lambda k: (by_status[k], k))  # busiest first
        table.focus()
        table.select("405")
        await pilot.press("enter")
        await until(pilot, lambda: app.search is not None)
        assert app.search.matched == by_status["405"]
        assert app.query_one(ConnectionsTable).row_count == len({tx.connection for tx in everything
                                                                if tx.response and tx.response.status == 405})


def test_group_filters_select_their_groups():
    from engine.filter import parse
    from tui.widgets.stats import group_filter

    stats = Stats("endpoint")
    txs = [exchange(target=t) for t in ("/users/1/orders?x=1", "/users/22/orders", "/users/x.y/orders",
                                        "/users/1/orders/9", "/users/1/ordersX")]
    for tx in txs:
        stats.add(tx, conn())
    where = parse(group_filter("endpoint", "GET /users/{id}/orders"))
    assert [where.exchange(conn(), tx) for tx in txs] == [True, True, False, False, False]
    assert [endpoint(tx) == "GET /users/{id}/orders" for tx in txs] == [True, True, False, False, False]
    images = parse(group_filter("endpoint", "GET /static/img/{id}.png"))
    assert images.exchange(conn(), exchange(target="/static/img/100015.png"))
    assert not images.exchange(conn(), exchange(target="/static/img/logo.png"))
    assert parse(group_filter("status", "404")).exchange(conn(), exchange(status=404))
    assert parse(group_filter("host", "api.example.com")).exchange(conn(), exchange())


# ---------------------------------------------------------------------------- the Stats tab


def short_transaction(command: str, index: int, seconds: float, status: str = "ok"):
    from engine.events import Message, Transaction

    sent, answered = Message(1.0, 1.0, 10), Message(1.0 + seconds, 1.0 + seconds, 5)
    return Transaction("redis", 0, index, sent, command, answered, "OK", status,
                       "ERR" if status == "error" else None)


def stats_app(width: int):
    from textual.app import App, ComposeResult

    from tui.widgets.stats import StatsView

    class StatsApp(App[None]):
        def compose(self) -> ComposeResult:
            yield StatsView()

    return StatsApp(), (width, 20)


def test_durations_are_written_as_the_transactions_list_writes_them():
    from tui.times import short

    assert [short(s) for s in (0, 83e-6, 0.000999, 0.00124, 0.0124, 0.25, 2.1, 12.34, None)] == [
        "0µs", "83µs", "999µs", "1.24ms", "12.4ms", "250ms", "2.1s", "12.3s", ""]


@pytest.mark.asyncio
async def test_the_stats_tab_shows_sub_millisecond_durations_in_microseconds():
    from tui.widgets.stats import StatsTable, StatsView
    from tui.widgets.transactions import TransactionsTable

    stats = Stats()
    for i, seconds in enumerate((83e-6, 83e-6, 83e-6)):
        stats.add(short_transaction("GET k", i, seconds))
    stats.add(short_transaction("KEYS *", 3, 0.00124))
    stats.add(short_transaction("SAVE", 4, 2.1))
    app, size = stats_app(120)
    async with app.run_test(size=size) as pilot:
        app.query_one(StatsView).show(stats)
        await pilot.pause()
        table = app.query_one(StatsTable)
        p50 = [c.key for c in table.COLUMNS].index("p50")
        assert {row: table.cells(row)[p50] for row in table.order} == {
            "redis GET": "83µs", "redis KEYS": "1.24ms", "redis SAVE": "2.1s"}
        assert "0.0ms" not in " ".join(" ".join(table.cells(row)) for row in table.order)
        # The same words as the transactions list's duration column.
        tx = short_transaction("GET k", 9, 83e-6)
        listed = TransactionsTable()
        listed.transactions = [tx]
        assert listed.cells(0)[3] == "83µs"


def shown_values(table, column: str) -> list[float | str]:
    """The values of a column in the order the rows are listed (numbers as numbers)."""
    g = table.groups
    value = {"group": lambda r: g[r].name, "count": lambda r: g[r].count,
             "p50": lambda r: g[r].duration.quantile(0.5) or 0.0}[column]
    return [value(row) for row in table.order]


@pytest.mark.asyncio
async def test_the_stats_tabs_arrows_say_the_order_as_every_list_does():
    """▲ is ascending (the smallest first), ▼ descending, as in the connections and exchanges
    lists; the tab opens with the busiest first, so count▼."""
    from tui.widgets.stats import StatsTable, StatsView

    stats = Stats()
    for i, (command, seconds) in enumerate([("GET", 0.001)] * 5 + [("SET", 0.5)] * 2 + [("DEL", 0.01)] * 3):
        stats.add(short_transaction(command, i, seconds))
    app, size = stats_app(120)
    async with app.run_test(size=size) as pilot:
        app.query_one(StatsView).show(stats)
        await pilot.pause()
        table = app.query_one(StatsTable)
        table.focus()

        def mark(column: str) -> str:
            return table.sort_label(next(c for c in table.COLUMNS if c.key == column))[-1]

        assert mark("count") == "▼" and shown_values(table, "count") == [5, 3, 2]
        await pilot.press("S")
        assert mark("count") == "▲" and shown_values(table, "count") == [2, 3, 5]
        assert [n.message for n in app._notifications][-1] == "sorted by count ▲"
        table.sort_by("group")
        assert mark("group") == "▲" and shown_values(table, "group") == ["redis DEL", "redis GET", "redis SET"]
        table.sort_by("p50")  # a number: the biggest first, as ▼ says
        assert mark("p50") == "▼" and shown_values(table, "p50") == sorted(shown_values(table, "p50"), reverse=True)
        await pilot.press("S")
        assert mark("p50") == "▲" and shown_values(table, "p50") == sorted(shown_values(table, "p50"))
        table.sort_by("count")
        assert mark("count") == "▼" and shown_values(table, "count") == [5, 3, 2]
        # Ties of a number column in the order of the groups' names, whichever way.
        stats.add(short_transaction("DEL", 10, 0.01))
        stats.add(short_transaction("DEL", 11, 0.01))
        app.query_one(StatsView).show(stats)
        assert table.order == ["redis DEL", "redis GET", "redis SET"]


@pytest.mark.asyncio
@pytest.mark.parametrize("width", [80, 120])
async def test_the_stats_tabs_header_line_is_all_on_screen(width):
    from tests.test_app import screen_lines
    from tui.widgets.stats import StatsView

    stats = Stats()
    for i in range(74_560 // 1000):
        stats.add(short_transaction(f"CMD{i % 22}", i, 0.001, "error" if i % 9 == 0 else "ok"))
    app, size = stats_app(width)
    async with app.run_test(size=size) as pilot:
        view = app.query_one(StatsView)
        view.show(stats, "exchanges no longer kept (evicted) are not counted")
        await pilot.pause()
        said = " ".join(str(view.query_one("#stats-summary").render()).split())
        assert said.endswith("Enter: show a group's exchanges · exchanges no longer kept (evicted) are not counted")
        screen = " ".join(" ".join(screen_lines(app)).split())
        assert said in screen


def test_the_copy_the_stats_tab_shows_is_left_as_it_was_by_more_counting():
    from tui.widgets.stats import shown_copy

    counts = Stats()
    for i in range(6):
        counts.add(short_transaction("GET" if i % 3 else "SET", i, 0.001 * (i + 1)))
    shown = shown_copy(counts, None, set())
    assert {n: g.count for n, g in shown.groups.items()} == {"redis SET": 2, "redis GET": 4}
    assert shown.groups["redis GET"].duration.quantile(0.99) == counts.groups["redis GET"].duration.quantile(0.99)
    counted = {counts.add(short_transaction("GET", 9, 5.0))}
    assert shown.groups["redis GET"].count == 4 and shown.groups["redis GET"].duration.max < 1
    assert shown.total.count == 6
    again = shown_copy(counts, shown, counted)
    assert again.groups["redis GET"].count == 5 and again.groups["redis GET"].duration.max == 5.0
    assert again.groups["redis SET"] is shown.groups["redis SET"]  # not counted in: shared
    assert again.total.count == 7
