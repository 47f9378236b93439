"""`make bench-ui`, the Packets tab: how long a big connection's packets take to open and to move in.

The app runs headless (120x40) on a generated capture of one keep-alive HTTP connection (two
packets per exchange), read to its end. Then, with the connection selected:

- `3` opens the Packets tab: timed from the key to the first frame that shows the list, and split
  into the loading worker's time (picking the packets from the ring, then one pass for tcpdump's
  relative numbers) and the UI thread's (taking them: PacketsView.show, and the frame after it);
- End, PgUp, Home and Down in the list: each timed from the key to the frame that shows it.

Prints figures, asserts nothing.

    python -m tests.bench.ui_packets [--packets N ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from textual import events

from engine.bounds import Bounds
from tests.bench.run import workload_file
from tests.bench.frames import record_frames
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.widgets.connections import ConnectionsTable
from tui.widgets.packets import PacketList, PacketsView, prepare

SIZE = (120, 40)
TIMEOUT = 30.0


async def _frame_after(frames: list[float], t: float) -> float:
    """The time of the first frame written after t."""
    deadline = time.perf_counter() + TIMEOUT
    while time.perf_counter() < deadline:
        later = [f for f in frames if f > t]
        if later:
            return later[0]
        await asyncio.sleep(0.0005)
    raise TimeoutError("no frame")


async def measure(packets: int) -> dict[str, Any]:
    path, facts = workload_file("keepalive_http", {"connections": 1, "transactions": packets // 2})
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", Bounds(keep_after_close=True))
    frames = record_frames(app)
    out: dict[str, Any] = {"packets": facts["packets"]}
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(app.file_done.wait(), timeout=300)
        await pilot.pause()
        app.query_one(ConnectionsTable).select(0)
        await pilot.pause()
        info = app.store.connections[0]
        out["listed"] = sum(info.packets)
        # The worker's two steps, timed on their own (the app is idle meanwhile).
        t = time.perf_counter()
        picked = app.driver.packets.pick([info], app.generation)
        out["pick"] = time.perf_counter() - t
        t = time.perf_counter()
        prepare(info, picked)
        out["prepare"] = time.perf_counter() - t
        view = app.query_one(PacketsView)
        shows: list[tuple[float, float]] = []
        show = view.show

        def timed_show(data: Any) -> None:
            t = time.perf_counter()
            show(data)
            shows.append((t, time.perf_counter()))

        view.show = timed_show  # type: ignore[method-assign]
        t0 = time.perf_counter()
        app._driver.send_message(events.Key("3", "3"))  # type: ignore[union-attr]
        while not shows and time.perf_counter() - t0 < TIMEOUT:
            await asyncio.sleep(0.0005)
        started, ended = shows[0]
        drawn = await _frame_after(frames, ended)
        out["open_total"] = drawn - t0
        out["open_ui"] = (ended - started) + (drawn - ended)
        out["show"] = ended - started
        listed = app.query_one(PacketList)
        out["rows"] = listed.row_count
        out["made"] = len(listed._lines)
        listed.focus()
        await pilot.pause()
        keys: dict[str, list[float]] = {}
        for key in ["end", "pageup", "home", *["down"] * 20, "end", "pageup", "pageup"]:
            moved = listed.cursor_row
            t0 = time.perf_counter()
            app._driver.send_message(events.Key(key, None))  # type: ignore[union-attr]
            while listed.cursor_row == moved and time.perf_counter() - t0 < TIMEOUT:
                await asyncio.sleep(0.0005)
            drawn = await _frame_after(frames, time.perf_counter() - 0.0005)
            keys.setdefault(key, []).append(drawn - t0)
            await asyncio.sleep(0.05)
        out["keys"] = keys
        out["made_after"] = len(listed._lines)
    return out


def report(result: dict[str, Any]) -> None:
    ms = 1000
    print(f"Packets tab on one connection of {result['listed']:,} packets "
          f"({result['rows']:,} listed; capture {result['packets']:,} packets)")
    print(f"  3 to the list on screen: {result['open_total'] * ms:.0f} ms; of it on the UI thread "
          f"{result['open_ui'] * ms:.1f} ms (show {result['show'] * ms:.1f} ms, then the frame)")
    print(f"  loading worker: pick from the ring {result['pick'] * ms:.0f} ms, relative-number pass "
          f"{result['prepare'] * ms:.0f} ms")
    print(f"  lines made: {result['made']} when opened, {result['made_after']} after the keys")
    for key, values in result["keys"].items():
        print(f"  {key:<8} key to screen: median {statistics.median(values) * ms:.1f} ms, "
              f"max {max(values) * ms:.1f} ms ({len(values)})")


def main(sizes: list[int] | None = None) -> int:
    if sizes is None:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--packets", type=int, nargs="+", default=[12_000, 100_000])
        sizes = parser.parse_args().packets
    for packets in sizes:
        report(asyncio.run(measure(packets)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
