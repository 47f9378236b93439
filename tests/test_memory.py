"""--memory in the interactive app: how it is shared, what the status bar says, what is evicted."""

from __future__ import annotations

import re

import pytest

from engine.bounds import MiB
from tests.captures import capture
from tests.test_app import read_all, status_text, until
from tui.app import WirepeekApp
from tui.widgets.connections import ConnectionsTable
from tui.capture import SourceSpec
from tui.cli import build_parser, interactive_bounds
from tui.memory import WORKING_SET, MemorySplit, resident_bytes
from tui.store import CONNECTION_COST, EXCHANGE_COST
from tui.widgets.status import StatusBar

THOUSAND = "zeek/http__1000-requests-one-dropped-response.pcap"  # 1,000 exchanges, one connection


def test_memory_is_shared_between_engine_ring_and_store_with_half_left():
    split = MemorySplit.of(512 * MiB)
    assert (split.engine, split.ring, split.store) == (128 * MiB, 64 * MiB, 64 * MiB)
    assert split.total - (split.engine + split.ring + split.store) == split.total // 2
    bounds, split = interactive_bounds(build_parser().parse_args(["--memory", "256"]))
    assert bounds.memory_budget == split.engine == 64 * MiB and split.total == 256 * MiB
    assert bounds.keep_after_close


def test_resident_size_is_the_process_s():
    size = resident_bytes()
    assert size is not None
    with open("/proc/self/status") as f:
        vm_rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert abs(size - vm_rss) < 16 * MiB


@pytest.mark.asyncio
async def test_a_tiny_budget_evicts_exchanges_and_the_status_bar_shows_memory_and_eviction():
    path = capture(THOUSAND)
    bounds, split = interactive_bounds(build_parser().parse_args(["-r", path, "--memory", "1"]))
    app = WirepeekApp(SourceSpec(files=(path,)), "", bounds, split)
    # The store keeps 8 bytes or so an exchange (the rest is on disk): even --memory 1 holds
    # these 1,000, so its budget is made smaller still.
    app.store.budget = CONNECTION_COST + 300 * EXCHANGE_COST
    async with app.run_test(size=(220, 30)) as pilot:  # wide enough for the whole status bar
        await read_all(app, pilot)
        assert app.driver.packets.limit == 0  # a file's packets are read again, not held
        # A replay (or a pipe, or a live capture) holds its packets in a ring of the ring's share.
        replay = WirepeekApp(SourceSpec(files=(path,), replay=True), "", bounds, split)
        assert replay.driver.packets.limit == split.ring == 128 * 1024
        store = app.store
        kept = sum(len(txs) for txs in store.http.values())
        assert store.evicted_exchanges > 0 and kept + store.evicted_exchanges == 1000
        assert store.cost <= store.budget <= split.store
        # The connection itself says how many of its exchanges went (it did not: "No HTTP").
        [conn_id] = [c for c in store.dropped]
        app.query_one(ConnectionsTable).select(conn_id)
        await pilot.pause()
        said = str(app.query_one("#http-summary").render())
        assert f"{store.dropped[conn_id]:,} earlier exchanges evicted" in said
        assert "No HTTP" not in said
        text = status_text(app)
        assert f"│ evicted {store.evicted_exchanges:,} exchanges " in text
        # The process's real size, not the engine's share of its budget.
        shown = re.search(r"│ mem ([\d,]+)M/1M budget ", text)
        assert shown is not None
        assert abs(int(shown.group(1).replace(",", "")) - (resident_bytes() or 0) / MiB) < 32
        # Past the budget and the base, it says so in red, within a second or so. (The base
        # holds scapy when an earlier test loaded it.)
        assert app.stats is not None
        base = app._memory_reading(app.stats).base
        assert base >= (app.resident_at_start or 0) + WORKING_SET
        app.read_resident = lambda: base + split.total + MiB
        bar = app.query_one(StatusBar)

        def mem_style() -> str:
            rendered = bar.render()
            plain = str(rendered)
            return next((str(span.style) for span in rendered.spans  # type: ignore[attr-defined]
                         if plain[span.start:span.end].startswith("│ mem")), "")

        await until(pilot, lambda: "red" in mem_style())
        assert "red" in mem_style()
        assert "evicted to stay within it: " in str(bar.tooltip)
