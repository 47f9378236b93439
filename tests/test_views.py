"""The parts of the screen on their own: status bar, stream view following, demo replay, panes."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App, ComposeResult

from engine.bounds import Bounds
from engine.events import Stats
from engine.sources import CaptureStats
from tui.app import WirepeekApp
from tui.capture import RealTimeReplay, SourceSpec
from tui.cli import DEMO_CAPTURE
from tui.memory import SCAPY, WORKING_SET, MemoryReading, MemorySplit
from tui.messages import CaptureStatus
from tui.widgets.connections import ConnectionsTable
from tui.widgets.stream import StreamView
from tui.widgets.status import StatusBar
from tui.widgets.table import VirtualTable

DEMO = str(DEMO_CAPTURE)


def stats(packets: int, **changes: int) -> Stats:
    base = dict(ts=None, packets=packets, bytes=0, tcp_packets=packets, udp_packets=0,
                other_packets=0, malformed=0, truncated=0, fragments=0, connections_total=7,
                connections_active=3, evicted_connections=0, dropped_kept_bytes=0,
                memory_used=128 << 20, memory_budget=512 << 20)
    base.update(changes)
    return Stats(**base)  # type: ignore[arg-type]


def reading(**changes: object) -> MemoryReading:
    base: dict[str, object] = dict(resident=100 << 20, at_start=50 << 20, scapy=False,
                                   budget=MemorySplit.of(512 << 20), engine=0, ring=0, store=0,
                                   evicted_exchanges=0, evicted_rows=0)
    base.update(changes)
    return MemoryReading(**base)  # type: ignore[arg-type]


class One(App[None]):
    def __init__(self, widget: object) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget  # type: ignore[misc]


def style_of(bar: StatusBar, starting: str) -> str:
    text = str(bar.render())
    return next((str(span.style) for span in bar.render().spans  # type: ignore[attr-defined]
                 if text[span.start:span.end].startswith(starting)), "")


@pytest.mark.asyncio
async def test_status_bar_shows_the_process_memory_against_the_budget_and_evictions():
    bar = StatusBar()
    done = CaptureStatus(source="f.pcap", filter="", live=False, finished=True, capture=None)
    budget = MemorySplit.of(256 << 20)
    async with One(bar).run_test(size=(200, 3)):
        # Within: 50 MiB at start, the working set, then growth up to the budget.
        within = reading(budget=budget, resident=(50 << 20) + WORKING_SET + (256 << 20))
        bar.show(done, stats(10), paused=False, now=1.0, shown=1, memory=within)
        text = str(bar.render())
        assert f"│ mem {306 + (WORKING_SET >> 20)}M/256M budget " in text
        assert "evicted" not in text
        assert "│ mem" in text and "red" not in style_of(bar, "│ mem")
        over = reading(budget=budget, resident=(50 << 20) + WORKING_SET + (257 << 20),
                       evicted_exchanges=12_345, evicted_rows=2)
        bar.show(done, stats(10, evicted_connections=3), paused=False, now=2.0, shown=1,
                 memory=over)
        text = str(bar.render())
        assert f"│ mem {307 + (WORKING_SET >> 20)}M/256M budget " in text
        assert "red" in style_of(bar, "│ mem")
        assert "│ evicted 3 conns, 12,345 exchanges, 2 rows " in text
        # scapy, once loaded, is part of the base.
        assert not reading(budget=budget, resident=within.resident + SCAPY, scapy=True,
                           at_start=50 << 20).over
        # A platform that cannot say how big the process is: the budget alone.
        bar.show(done, stats(10), paused=False, now=3.0, shown=1,
                 memory=reading(budget=budget, resident=None))
        assert "│ mem 256M budget " in str(bar.render())
    tooltip = over.describe()
    assert f"process: {307 + (WORKING_SET >> 20)}M resident; 50M at start" in tooltip
    assert "engine 64M" in tooltip and "packet ring 32M" in tooltip
    assert "12,345 exchanges, 2 connections" in tooltip


@pytest.mark.asyncio
async def test_status_bar_says_source_filter_rate_totals_drops_memory_and_mode():
    bar = StatusBar()
    async with One(bar).run_test(size=(200, 3)):
        live = CaptureStatus(source="lo\x1b[31m", filter="tcp port 80", live=True, finished=False,
                             capture=CaptureStats(received=10, dropped=3, if_dropped=2))
        memory = reading(resident=820 << 20, at_start=50 << 20)
        bar.show(live, stats(1000), paused=False, now=100.0, shown=3, memory=memory)
        bar.show(live, stats(6000), paused=False, now=102.0, shown=3, memory=memory)  # 5,000 in 2 s
        text = str(bar.render())
        assert text.startswith(" LIVE  lo\\x1b[31m filter: tcp port 80 ")  # the name escaped
        assert ("│ 2,500 pkt/s │ 6,000 pkts │ 7 conns (3 shown) │ drops 5 │ mem 820M/512M budget "
                in text)
        drops = next(span for span in bar.render().spans  # type: ignore[attr-defined]
                     if text[span.start:span.end].startswith("│ drops"))
        assert "red" in str(drops.style)
        bar.show(live, stats(6000, evicted_connections=4, unparsed_connections=9), paused=True,
                 now=103.0, shown=3)
        text = str(bar.render())
        assert text.startswith(" PAUSED ") and "│ evicted 4 conns " in text
        assert "│ 9 unparsed " in text and "mem" not in text  # no reading given: nothing said
        assert "malformed" not in text and "ignored" not in text
        bar.show(live, stats(6000, malformed=2, truncated=1_500, ignored_segments=3,
                             fragments_dropped=4), paused=False, now=103.5, shown=3)
        text = str(bar.render())
        assert "│ 2 malformed, 1,500 cut short, 3 ignored, 4 fragments lost " in text
        done = CaptureStatus(source="f.pcap", filter="", live=False, finished=True, capture=None,
                             shedding=True)
        bar.show(done, stats(6000), paused=False, now=104.0, shown=3)
        text = str(bar.render())
        assert text.startswith(" done  f.pcap │ 6,000 pkts ") and "drops" not in text and "filter" not in text
        assert "busy: new connections not parsed" in text


@pytest.mark.asyncio
async def test_status_bar_counts_what_the_capture_process_skipped_and_exchanges_come_too_late():
    bar = StatusBar()
    async with One(bar).run_test(size=(200, 3)):
        live = CaptureStatus(source="lo", filter="", live=True, finished=False,
                             capture=CaptureStats(received=10, dropped=0, if_dropped=0),
                             skipped=123_456, unmapped=7, unparsed=89)
        bar.show(live, stats(1000), paused=False, now=1.0, shown=7,
                 memory=reading(evicted_exchanges=5))
        text = str(bar.render())
        assert "│ drops 0 " in text and "│ 123,456 skipped: backlog full " in text
        assert "red" in style_of(bar, "│ 123,456 skipped")
        assert "│ parsing behind: 89 pkts not parsed " in text
        assert "│ evicted 12 exchanges " in text  # with those whose connection had gone
        bar.show(live, stats(1000), paused=False, now=2.0, shown=7)
        assert "│ evicted 7 exchanges " in str(bar.render())
        calm = CaptureStatus(source="lo", filter="", live=True, finished=False, capture=None)
        bar.show(calm, stats(1000), paused=False, now=3.0, shown=7)
        assert "skipped" not in str(bar.render()) and "evicted" not in str(bar.render())
        assert "behind" not in str(bar.render())


@pytest.mark.asyncio
async def test_stream_view_follows_new_data_unless_scrolled_up():
    view = StreamView()
    async with One(view).run_test(size=(80, 10)) as pilot:
        view.reset(("10.0.0.1:1", "10.0.0.2:80"), live=True)

        def add(n: int, start: int) -> None:
            view.add(tuple((True, 1.0, (start + i) * 6, b"line\r\n") for i in range(n)))

        add(50, 0)
        await pilot.pause()
        assert view.is_vertical_scroll_end and view.scroll_y > 0
        add(10, 50)  # at the end: follows like tail -f
        await pilot.pause()
        assert view.is_vertical_scroll_end
        view.scroll_to(y=5, animate=False)
        await pilot.pause()
        add(10, 60)  # scrolled up: stays where the reader is
        await pilot.pause()
        assert view.scroll_y == 5 and not view.is_vertical_scroll_end
        view.scroll_end(animate=False)
        await pilot.pause()
        add(10, 70)  # back at the end: follows again
        await pilot.pause()
        assert view.is_vertical_scroll_end and len(view.index) == 81  # a header and 80 lines


@pytest.mark.asyncio
async def test_tab_moves_to_the_detail_and_escape_comes_back():
    app = WirepeekApp(SourceSpec(files=(DEMO,)), "", Bounds())
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.wait_for(app.file_done.wait(), timeout=20)
        table = app.query_one(ConnectionsTable)
        assert app.focused is table
        for _ in range(4):
            await pilot.press("tab")
            if app.focused is not table and app.focused is not None:
                break
        assert app.focused is not table
        assert any(a is app.query_one("#detail") for a in app.focused.ancestors)  # type: ignore[union-attr]
        await pilot.press("escape")
        assert app.focused is table


def test_demo_replay_keeps_the_capture_pace_and_loops():
    now = [1000.0]
    replay = RealTimeReplay(DEMO, "", clock=lambda: now[0])
    span = replay.packets[-1][1] - replay.first
    assert 20 < span < 60 and replay.length == span + 1.0
    got = replay.next_batch(0)
    assert got is not None and len(got) >= 1  # what the capture has at its first instant
    assert len(replay.next_batch(0)) == 0  # nothing more is due yet
    now[0] += span / 2
    half = replay.next_batch(0)
    assert 0 < len(half) < len(replay.packets)
    # Stamped with the wall clock, not the capture's time.
    assert all(999.0 < ts <= now[0] for ts, _ in half.packets())
    now[0] += span / 2 + 1.0 + 0.001  # the second loop's first packets are due
    rest = replay.next_batch(0)
    assert replay.loop == 1
    assert len(got) + len(half) + len(rest) > len(replay.packets)
    assert max(ts for ts, _ in rest.packets()) > 1000.0 + replay.length


@pytest.mark.asyncio
async def test_demo_mode_lists_connections_live():
    app = WirepeekApp(SourceSpec(files=(DEMO,), replay=True), "", Bounds())
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if app.query_one(ConnectionsTable).row_count:
                break
        assert app.query_one(ConnectionsTable).row_count >= 1
        assert str(app.query_one(StatusBar).render()).startswith(" LIVE ")
        assert "(replay)" in str(app.query_one(StatusBar).render())


@pytest.mark.asyncio
async def test_a_selection_that_arrives_as_the_widgets_go_is_ignored():
    """At exit the widgets are removed while messages may still be queued (CI once saw the first
    row of a live capture arrive then): handling one must not raise."""
    app = WirepeekApp(SourceSpec(files=(DEMO,)), "", Bounds())
    async with app.run_test(size=(120, 40)):
        await asyncio.wait_for(app.file_done.wait(), timeout=20)
        await app.query_one("#main").remove()
        app.select_connection(VirtualTable.Selected(ConnectionsTable(app.store), 3))


@pytest.mark.asyncio
async def test_status_bar_for_a_file_fits_80_columns():
    bar = StatusBar()
    async with One(bar).run_test(size=(80, 3)):
        done = CaptureStatus(source="/var/tmp/captures/incident-2026-12-02.pcap", filter="",
                             live=False, finished=True, capture=None)
        memory = reading(resident=95 << 20, at_start=50 << 20)
        bar.show(done, stats(138), paused=False, now=100.0, shown=7, memory=memory)
        text = str(bar.render())
        # The file's name, no empty filter, no rate once read, every connection shown.
        assert text == " done  incident-2026-12-02.pcap │ 138 pkts │ 7 conns │ mem 95M/512M budget "
        assert len(text) <= 80


def test_the_status_bar_wraps_between_items_never_inside_one():
    from rich.text import Text

    from tui.widgets.status import fold

    text = Text(" LIVE  lo │ 1,200 pkt/s │ 6,000 pkts │ 7 conns │ mem 54M/512M budget ")
    lines = fold(text, 40).plain.split("\n")
    assert lines == [" LIVE  lo │ 1,200 pkt/s │ 6,000 pkts ", "│ 7 conns │ mem 54M/512M budget "]
    assert fold(text, 200).plain == text.plain


@pytest.mark.asyncio
async def test_a_file_read_while_its_http_is_parsed_shows_how_far_not_a_rate_of_nought():
    bar = StatusBar()
    async with One(bar).run_test(size=(200, 3)):
        reading_file = CaptureStatus(source="/tmp/f.pcap", filter="", live=False, finished=False,
                                     capture=None, progress=(30, 100))
        bar.show(reading_file, stats(1000), paused=False, now=100.0, shown=7)
        bar.show(reading_file, stats(3000), paused=False, now=101.0, shown=7)
        assert str(bar.render()).startswith(" reading 30%  f.pcap │ 2,000 pkt/s │ 3,000 pkts ")
        # Every packet read; the helpers are at 63% of the file: no packets come any more.
        helpers = CaptureStatus(source="/tmp/f.pcap", filter="", live=False, finished=False,
                                capture=None, progress=(63, 100))
        bar.show(helpers, stats(3000), paused=False, now=102.5, shown=7)
        assert str(bar.render()).startswith(" reading 63%  f.pcap │ 3,000 pkts ")
