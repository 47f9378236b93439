"""Write the README's screenshots (screenshots/*.svg) from the bundled demo capture.

    make screenshots        # or: .venv/bin/python scripts/make_screenshots.py [--out DIR]

The demo capture (tui/data/demo.pcap, described in tui/data/README.md) is read as a file, not
replayed in real time, and the app is driven with Pilot at a fixed size, so the pictures are the
same on every run: nothing in them comes from the wall clock. Each picture is one Pilot session:
read the capture to its end, select a connection, press keys, save the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# The Stream tab shows packet times as the local time of day: the pictures are made in UTC.
os.environ["TZ"] = "UTC"
time.tzset()

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.pilot import Pilot  # noqa: E402
from textual.widgets import DataTable, Input  # noqa: E402

from engine.bounds import Bounds  # noqa: E402
from tui.app import WirepeekApp  # noqa: E402
from tui.capture import SourceSpec  # noqa: E402
from tui.widgets.connections import ConnectionsTable  # noqa: E402
from tui.widgets.stream import StreamView  # noqa: E402
from tui.widgets.status import StatusBar  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = "tui/data/demo.pcap"  # relative: the status bar shows the name as given
SIZE = (120, 36)
REST = 0  # the python-requests keep-alive connection: GET 200, POST 201, GET 200
POST_CREATED = 1  # its exchange number of the POST answered 201 Created

Scene = Callable[[WirepeekApp, Pilot[None]], Awaitable[None]]


async def settle(app: WirepeekApp, pilot: Pilot[None]) -> None:
    """Wait until the file has been read and the screen shows it."""
    await asyncio.wait_for(app.file_done.wait(), timeout=30)
    await pilot.pause()


async def select(app: WirepeekApp, pilot: Pilot[None], conn_id: int) -> None:
    app.query_one(ConnectionsTable).select(conn_id)
    await pilot.pause()


async def stream_loaded(app: WirepeekApp, pilot: Pilot[None]) -> None:
    """The stream of the selected connection arrives with the worker's next tick."""
    stream = app.query_one(StreamView)
    info = app.store.connections[app.selected] if app.selected is not None else None
    total = sum(info.bytes) if info else 0
    for _ in range(200):
        if stream.index.kept >= total:
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def http(app: WirepeekApp, pilot: Pilot[None]) -> None:
    await select(app, pilot, REST)
    await pilot.press("enter")  # into the exchanges
    table = app.query_one("#exchanges")
    table.move_to(POST_CREATED)
    await pilot.pause()
    tx = app.store.http[REST][POST_CREATED]
    request, response = tx.request, tx.response
    if not (request and request.method == "POST" and response and response.status == 201):
        raise SystemExit(f"connection {REST} exchange {POST_CREATED} is not the POST 201 any more")


async def stream(app: WirepeekApp, pilot: Pilot[None]) -> None:
    await select(app, pilot, REST)
    await pilot.press("2")
    await stream_loaded(app, pilot)
    app.query_one(StreamView).action_first()
    await pilot.pause()


async def hexdump(app: WirepeekApp, pilot: Pilot[None]) -> None:
    await stream(app, pilot)
    await pilot.press("x")
    app.query_one(StreamView).action_first()
    await pilot.pause()


async def capture_filter(app: WirepeekApp, pilot: Pilot[None]) -> None:
    await select(app, pilot, REST)
    await pilot.press("f")
    app.query_one("#capture-filter", Input).value = "tcp port 80"
    await pilot.pause()


async def help_screen(app: WirepeekApp, pilot: Pilot[None]) -> None:
    await pilot.press("question_mark")
    await pilot.pause()


SCENES: dict[str, Scene] = {
    "http": http,
    "stream": stream,
    "hex": hexdump,
    "filter": capture_filter,
    "help": help_screen,
}


async def shoot(scene: Scene, path: Path) -> None:
    app = WirepeekApp(SourceSpec(files=(DEMO,)), "", Bounds(keep_after_close=True),
                      jobs=0)
    # jobs=0: HTTP parsed in the capture thread, so that exchanges come with their connection's
    # first rows, always in the same updates (from helper processes they may come before or
    # after the HTTP view first shows the connection, and its columns are sized by what it
    # drew: a pixel-exact picture would depend on that race).
    app.read_resident = lambda: 100 << 20  # the process's size, the same on every run
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await scene(app, pilot)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        status = str(app.query_one(StatusBar).render())
        # A rate is the one figure that comes from the clock: read to its end, none is shown.
        if "done" not in status or "pkt/s" in status:
            raise SystemExit(f"{path.name}: the status bar shows a rate: {status}")
        path.write_text(app.export_screenshot(title="wirepeek"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="output directory")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    for name, scene in SCENES.items():
        path = out / f"{name}.svg"
        asyncio.run(shoot(scene, path))
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
