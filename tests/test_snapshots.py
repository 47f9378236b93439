"""How the app looks: SVG snapshots (pytest-textual-snapshot) of its main views at fixed sizes.

Each test reads a small bundled capture as a file (never a replay, never the network), waits for
the worker to reach its end, drives the app with Pilot, and compares the screen with the accepted
picture in tests/__snapshots__/test_snapshots/. After a deliberate change of appearance, look at
the failing pictures (pytest writes snapshot_report.html), then accept them with

    .venv/bin/python -m pytest tests/test_snapshots.py --snapshot-update

Captures are named relative to the repository root, which the tests make the working directory,
because the status bar shows the name as given: an absolute path would tie the pictures to the
place of the checkout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TabbedContent

from engine.bounds import Bounds
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.screens.help import HelpScreen
from tui.widgets.connections import ConnectionsTable
from tui.widgets.status import StatusBar
from tui.widgets.stream import StreamView

ROOT = Path(__file__).resolve().parent.parent
PIPELINED = "tests/data/pcaps/zeek/http__pipelined-requests.pcap"  # one connection, 5 exchanges
DEMO = "tui/data/demo.pcap"  # 12 connections, listed in tui/data/README.md
REST = 0  # the demo's keep-alive REST connection: GET 200, POST 201, GET 200
SMALL = (80, 24)
LARGE = (120, 36)

Steps = Callable[[WirepeekApp, Pilot[None]], Awaitable[None]]
RunBefore = Callable[[Pilot[None]], Awaitable[None]]


@pytest.fixture(autouse=True)
def in_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The Stream tab shows the local time of day: the pictures are taken in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def at_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def app_for(path: str) -> WirepeekApp:
    app = WirepeekApp(SourceSpec(files=(path,)), "", Bounds(keep_after_close=True),
                      jobs=0)
    # jobs=0: HTTP parsed in the capture thread, so that exchanges come with their connection's
    # first rows, always in the same updates (from helper processes they may come before or
    # after the HTTP view first shows the connection, and its columns are sized by what it
    # drew: a pixel-exact picture would depend on that race).
    app.read_resident = lambda: 100 << 20  # the process's size, the same on every run
    return app


def after_reading(app: WirepeekApp, steps: Steps | None = None) -> RunBefore:
    """A run_before for snap_compare: read the whole file, run `steps`, check the status bar."""

    async def run_before(pilot: Pilot[None]) -> None:
        await asyncio.wait_for(app.file_done.wait(), timeout=20)
        await pilot.pause()
        if steps is not None:
            await steps(app, pilot)
        await pilot.pause()
        status = str(app.query_one(StatusBar).render())
        # Read to its end: no rate (the one number from the clock) is shown.
        assert "done" in status and "pkt/s" not in status

    return run_before


async def select(app: WirepeekApp, pilot: Pilot[None], conn_id: int) -> None:
    app.query_one(ConnectionsTable).select(conn_id)
    await pilot.pause()
    assert app.selected == conn_id


async def stream_of(app: WirepeekApp, pilot: Pilot[None], conn_id: int) -> StreamView:
    """Select a connection, open its stream, and wait for all its bytes (next worker tick)."""
    await select(app, pilot, conn_id)
    await pilot.press("2")
    assert app.query_one(TabbedContent).active == "tab-stream"
    stream = app.query_one(StreamView)
    want = sum(app.store.connections[conn_id].bytes)
    for _ in range(250):
        if stream.index.kept >= want:
            break
        await pilot.pause(0.02)
    assert stream.index.kept == want
    stream.action_first()
    await pilot.pause()
    return stream


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x36"])
def test_connections_and_http_pipelined(snap_compare, size):
    app = app_for(PIPELINED)

    async def open_exchanges(app: WirepeekApp, pilot: Pilot[None]) -> None:
        await pilot.press("enter", "down")
        assert app.query_one("#exchanges").cursor_row == 1

    assert snap_compare(app, terminal_size=size, run_before=after_reading(app, open_exchanges))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x36"])
def test_connections_and_http_demo_post_created(snap_compare, size):
    app = app_for(DEMO)

    async def post_exchange(app: WirepeekApp, pilot: Pilot[None]) -> None:
        await select(app, pilot, REST)
        await pilot.press("enter")
        table = app.query_one("#exchanges")
        table.move_to(1)
        await pilot.pause()
        assert "POST /api/v1/orders" in app.query_one("#http-message").plain

    assert snap_compare(app, terminal_size=size, run_before=after_reading(app, post_exchange))


def test_stream_text(snap_compare):
    app = app_for(DEMO)

    async def text(app: WirepeekApp, pilot: Pilot[None]) -> None:
        stream = await stream_of(app, pilot, REST)
        assert not stream.hex

    assert snap_compare(app, terminal_size=SMALL, run_before=after_reading(app, text))


def test_stream_hex(snap_compare):
    app = app_for(DEMO)

    async def hexdump(app: WirepeekApp, pilot: Pilot[None]) -> None:
        stream = await stream_of(app, pilot, REST)
        await pilot.press("x")
        assert stream.hex
        stream.action_first()

    assert snap_compare(app, terminal_size=SMALL, run_before=after_reading(app, hexdump))


def test_capture_filter_prompt(snap_compare):
    app = app_for(PIPELINED)

    async def prompt(app: WirepeekApp, pilot: Pilot[None]) -> None:
        await pilot.press("f", *"tcp port 80")
        assert app.query_one("#capture-filter", Input).value == "tcp port 80"

    assert snap_compare(app, terminal_size=SMALL, run_before=after_reading(app, prompt))


def test_help(snap_compare):
    app = app_for(PIPELINED)

    async def help_screen(app: WirepeekApp, pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)

    assert snap_compare(app, terminal_size=SMALL, run_before=after_reading(app, help_screen))


def test_no_color_still_renders(snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = app_for(DEMO)
    assert app.no_color

    async def http_of_rest(app: WirepeekApp, pilot: Pilot[None]) -> None:
        await select(app, pilot, REST)
        assert "GET /api/v1/orders?limit=3" in app.query_one("#http-message").plain

    assert snap_compare(app, terminal_size=SMALL, run_before=after_reading(app, http_of_rest))
