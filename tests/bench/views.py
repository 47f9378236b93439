"""`make bench-ui`, part two: how long the detail views take to answer on big connections.

A capture of two keep-alive connections of 3,000 exchanges each is read to its end; then keys
are sent to the app the way a terminal sends them, and each is timed from the moment it is sent
to the first frame the app writes after the view took the key: moving onto the other connection
(its 3,000 exchanges listed), PgDn through them, End and Home, sorting and reversing, and a find
over every exchange (answered by a worker thread). Keys come 100 ms apart, as a fast typist's.
Prints figures, asserts nothing.

    python -m tests.bench.views
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

from textual import events

from engine.bounds import Bounds
from tests.bench.run import workload_file
from tests.bench.frames import record_frames
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.widgets.http import ExchangesTable

SIZE = (120, 40)
TIMEOUT = 10.0
KEY_GAP = 0.1  # seconds between one key's answer and the next key, as a fast typist


class Timer:
    """Key-to-frame times: a key is answered by the first frame after `done()` holds."""

    def __init__(self, app: WirepeekApp) -> None:
        self.app = app
        self.frames = record_frames(app)

    async def key(self, key: str, done: Callable[[], bool]) -> float | None:
        await asyncio.sleep(KEY_GAP)
        t0 = time.perf_counter()
        character = key if len(key) == 1 else None
        self.app._driver.send_message(events.Key(key, character))  # type: ignore[union-attr]
        held: float | None = None
        while time.perf_counter() - t0 < TIMEOUT:
            await asyncio.sleep(0.001)
            if held is None and done():
                held = time.perf_counter()
            if held is not None and self.frames and self.frames[-1] >= held:
                return self.frames[-1] - t0
        return None


def ms(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "not answered"
    missed = len(values) - len(got)
    text = f"median {statistics.median(got) * 1000:.0f} ms, max {max(got) * 1000:.0f} ms"
    return text + (f" ({missed} not answered within {TIMEOUT:.0f} s)" if missed else "")


async def measure(path: str) -> None:
    app = WirepeekApp(SourceSpec(files=(path,)), "", Bounds(keep_after_close=True))
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(app.file_done.wait(), timeout=300)
        await pilot.pause()
        timer = Timer(app)
        table = app.query_one(ExchangesTable)
        opened = []
        for key, want in [("j", 1), ("k", 0), ("j", 1), ("k", 0)]:
            opened.append(await timer.key(key, lambda w=want: app.selected == w  # type: ignore[misc]
                                          and table.row_count >= 3000))
        print(f"  move onto a connection of {table.row_count:,} exchanges: {ms(opened)}")
        await timer.key("enter", lambda: table.has_focus)
        pages = []
        for _ in range(10):
            row = table.cursor_row
            pages.append(await timer.key("pagedown", lambda r=row: table.cursor_row > r))  # type: ignore[misc]
        print(f"  PgDn through the exchanges (message pane redrawn each time): {ms(pages)}")
        print("    each (ms): " + " ".join(f"{p * 1000:.0f}" if p is not None else "-" for p in pages))
        end = await timer.key("end", lambda: table.cursor_row == table.row_count - 1)
        home = await timer.key("home", lambda: table.cursor_row == 0)
        print(f"  End: {ms([end])}; Home: {ms([home])}")
        sorts = []
        for _ in range(4):
            column = table.sort_column
            sorts.append(await timer.key("s", lambda c=column: table.sort_column != c))  # type: ignore[misc]
        before = table.rows.descending
        reverse = await timer.key("S", lambda: table.rows.descending != before)
        print(f"  sort by the next column (s): {ms(sorts)}; reverse (S): {ms([reverse])}")
        await timer.key("slash", lambda: app.query_one("#display-filter").has_focus)
        app.query_one("#display-filter").value = "/items/123"  # type: ignore[attr-defined]
        found = await timer.key("enter", lambda: app.search is not None)
        matched = app.search.matched if app.search else 0
        print(f"  find '/items/123' over every exchange ({matched} match): {ms([found])}")


def main() -> int:
    path, facts = workload_file("keepalive_http", {"connections": 2, "transactions": 6000})
    print(f"views: {facts['packets']:,} packets, 2 keep-alive connections of 3,000 exchanges")
    asyncio.run(measure(str(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
