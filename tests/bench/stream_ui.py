"""The Stream tab on a big stream: how long opening it, x (text/hex), Home, End and PgDn take.

The app runs headless (120x40) on the 2 MB download of tests/data/pcaps (download-2m.pcap.gz), or
on any capture given, its largest connection selected. Figures:
- open: the view reset and given all of the connection's kept entries at once (what the app does
  when the capture worker sends them on a change of connection), until the screen is drawn;
- each key: from the moment the terminal would send it until the first frame drawn after the view
  handled it (as tests/bench/ui.py times keys), median and worst of several presses.
Prints figures, asserts nothing. `make bench-ui` runs it after the connection-list figures.

    python -m tests.bench.stream_ui [--capture PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from textual import events

from engine.bounds import Bounds
from tests.captures import capture
from tests.bench.frames import record_frames
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.widgets.connections import ConnectionsTable
from tui.widgets.stream import StreamView

SIZE = (120, 40)
KEY_TIMEOUT = 10.0


async def measure(path: str, repeat: int) -> dict[str, Any]:
    app = WirepeekApp(SourceSpec(files=(path,)), "", Bounds(keep_after_close=True))
    frames = record_frames(app)
    results: dict[str, Any] = {}
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(app.file_done.wait(), timeout=120)
        table = app.query_one(ConnectionsTable)
        biggest = max(app.store.connections.values(), key=lambda i: sum(i.bytes))
        table.select(biggest.id)
        stream = app.query_one(StreamView)
        received: list[Any] = []
        add = stream.add

        def recording_add(chunks: Any) -> None:
            received.extend(chunks)
            add(chunks)

        stream.add = recording_add  # type: ignore[method-assign]
        await pilot.press("2")
        for _ in range(500):
            if stream.index.kept >= sum(biggest.bytes):
                break
            await pilot.pause(0.02)
        stream.add = add  # type: ignore[method-assign]
        stream.focus()
        await pilot.pause()
        results["bytes"] = stream.index.kept
        opens = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            stream.reset((biggest.client, biggest.server), (0, 0), False)
            stream.add(tuple(received))
            handled = time.perf_counter()
            while not any(f > handled for f in frames[-5:]):
                await asyncio.sleep(0.0005)
                if time.perf_counter() - t0 > KEY_TIMEOUT:
                    break
            opens.append(next((f for f in frames[-5:] if f > handled), time.perf_counter()) - t0)
        results["open"] = opens
        results["lines"] = len(stream.index)
        for key in ("x", "x", "end", "x", "home", "x", "end", "pagedown", "pageup", "home"):
            results.setdefault(key, []).append(await press(app, stream, key, frames))
        for _ in range(repeat - 1):
            for key in ("x", "end", "home", "pagedown"):
                results[key].append(await press(app, stream, key, frames))
    return results


async def press(app: WirepeekApp, stream: StreamView, key: str, frames: list[float]) -> float:
    """Seconds from sending the key until the first frame after the view changed."""
    before = (stream.scroll_offset.y, stream.hex)
    t0 = time.perf_counter()
    app._driver.send_message(events.Key(key, key))  # type: ignore[union-attr]
    changed: float | None = None
    while time.perf_counter() - t0 < KEY_TIMEOUT:
        await asyncio.sleep(0.0005)
        now = (stream.scroll_offset.y, stream.hex)
        if changed is None and now != before:
            changed = time.perf_counter()
        if changed is not None and any(f > changed for f in frames[-5:]):
            return next(f for f in frames[-5:] if f > changed) - t0
        if changed is None and time.perf_counter() - t0 > 0.5:
            # The key changed nothing on screen (e.g. End at the end): its next frame then.
            return next((f for f in frames if f > t0), time.perf_counter()) - t0
    return KEY_TIMEOUT


def report(path: str, result: dict[str, Any]) -> None:
    print(f"stream tab, {path}: {result['bytes']:,} bytes kept, {result['lines']:,} lines as text")
    for name, label in (("open", "open (index all, first frame)"), ("x", "x (text/hex)"),
                        ("home", "Home"), ("end", "End"), ("pagedown", "PgDn"),
                        ("pageup", "PgUp")):
        values = sorted(result.get(name, []))
        if values:
            print(f"  {label} ({len(values)}): median {statistics.median(values) * 1000:.1f} ms, "
                  f"max {values[-1] * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", default=capture("download-2m.pcap.gz"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    report(args.capture, asyncio.run(measure(args.capture, args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
