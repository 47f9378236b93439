"""`make bench-ui`: how fast the app answers keys while traffic flows and the list is long.

The app runs headless (Textual's test driver, 120x40) on a generated capture of HTTP with one
connection per request, fed to its capture worker in one of two ways:

- paced: packets are handed to the engine at a fixed rate (default 50,000/s), as a busy interface
  would deliver them, until the list holds more than 100,000 connections;
- flat out: the file is read as fast as the engine and the screen allow.

Meanwhile j and k are sent to the app every 100 ms the way a terminal sends them (a key event to
the driver), and each is timed from the moment it is sent until the screen has been redrawn with
the cursor moved: the first frame the app writes after the table handled the key. Pilot's own
press() is not used: it waits for the whole process to go idle, which it never does under load.
Prints figures, asserts nothing. It starts with the Stream tab's figures (tests.bench.stream_ui).

Then the Stream tab on a 2 MB download (tests.bench.stream_ui), the Packets tab on big
connections (tests.bench.ui_packets) and the HTTP views on connections of 3,000 exchanges
(tests.bench.views).

    python -m tests.bench.ui [--connections N] [--rate PPS] [--flat-out] [--packets-tab N ...]
                             [--stream-only] [--packets-tab-only] [--views-only] [--paced-only]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import time
from array import array
from typing import Any

from textual import events

from engine import sources
from engine.batch import META, Batch
from engine.bounds import Bounds, MiB
from tests.bench import stream_ui, ui_packets, views
from tests.bench.run import workload_file
from tests.bench.frames import record_frames
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.memory import MemorySplit
from tui.widgets.connections import ConnectionsTable

SIZE = (120, 40)
KEY_GAP = 0.1  # seconds between presses
KEY_TIMEOUT = 10.0  # a press not answered by then is reported as such


def slice_batch(batch: Batch, start: int, end: int, now: float | None = None) -> Batch:
    """Packets start..end of a batch as a batch of their own (bytes copied once, offsets rebased),
    stamped with the time `now` if given, as a live capture would stamp them."""
    meta = array("I", batch.meta[start * META.size : end * META.size])
    if not meta:
        return Batch(batch.linktype, b"", b"")
    base = meta[2]
    stop = meta[-2] + meta[-1]
    meta[2::4] = array("I", (offset - base for offset in meta[2::4]))
    if now is not None:
        count = len(meta) // 4
        meta[0::4] = array("I", [int(now)]) * count
        meta[1::4] = array("I", [int(now % 1 * 1e6)]) * count
    return Batch(batch.linktype, batch.data[base:stop], meta.tobytes())


ROWS_MEMORY = 1536 * MiB  # --memory under which the store keeps 110,000 connections' rows


class PacedFile:
    """A capture file handed out at `rate` packets per second of wall-clock time, as live traffic."""

    def __init__(self, path: str, rate: float) -> None:
        self.name = f"{path} at {rate:,.0f} packets/s"
        self.live = True
        self.filter = ""
        self.error: str | None = None
        self.rate = rate
        self.file = sources.open_files([path], "")
        self.held: Batch | None = None  # the file's current batch, handed out in slices
        self.position = 0
        self.linktype = 1
        self.start: float | None = None
        self.sent = 0

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = int((now - self.start) * self.rate) - self.sent
        if due <= 0:
            time.sleep(min(timeout or 0.0, 0.005))
            return Batch(self.linktype, b"", b"")
        if self.held is None or self.position >= len(self.held):
            self.held, self.position = self.file.next_batch(), 0
            if self.held is None:
                time.sleep(min(timeout or 0.0, 0.05))  # traffic stopped; the capture stays open
                return Batch(self.linktype, b"", b"")
            self.linktype = self.held.linktype
        out = slice_batch(self.held, self.position, min(len(self.held), self.position + due),
                          time.time())
        self.position += len(out)
        self.sent += len(out)
        return out

    def stats(self) -> sources.CaptureStats | None:
        return None

    def close(self) -> None:
        self.file.close()


async def measure(app: WirepeekApp, presses: int, until_rows: int) -> dict[str, Any]:
    frames = record_frames(app)
    moved: list[float] = []
    # Where the time goes: each engine update the app takes, and each full garbage collection.
    updates: list[tuple[float, float]] = []  # (end, seconds)
    collections: list[tuple[float, float]] = []
    take = app._take

    def timed_take(update: Any) -> None:
        t = time.perf_counter()
        take(update)
        end = time.perf_counter()
        updates.append((end, end - t))

    app._take = timed_take  # type: ignore[method-assign]
    gc_started = [0.0]

    def gc_callback(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            end = time.perf_counter()
            collections.append((end, end - gc_started[0]))

    gc.callbacks.append(gc_callback)
    samples: list[tuple[float, int]] = []  # (seconds, rows listed when the key was sent)
    timeline: list[tuple[float, int, int, float | None]] = []  # (at, rows, packets, latency)
    unanswered = 0
    start = time.perf_counter()
    async with app.run_test(size=SIZE):
        table = app.query_one(ConnectionsTable)
        original_move = table.move_to

        def timed_move(row: int) -> None:
            original_move(row)
            moved.append(time.perf_counter())

        table.move_to = timed_move  # type: ignore[method-assign]
        while table.row_count < 10 and time.perf_counter() - start < 60:
            await asyncio.sleep(0.05)
        n = 0
        reached: int | None = None  # the press at which the list first held until_rows rows
        while time.perf_counter() - start < 900:
            if reached is None and table.row_count >= until_rows:
                reached = n
            if reached is not None and n - reached >= presses and n >= presses:
                break
            key = "j" if n % 2 == 0 else "k"
            rows = table.row_count
            t0 = time.perf_counter()
            app._driver.send_message(events.Key(key, key))  # type: ignore[union-attr]
            answered = None
            while time.perf_counter() - t0 < KEY_TIMEOUT:
                await asyncio.sleep(0.001)
                after = [t for t in moved if t >= t0]
                if after and any(f > after[0] for f in frames[-50:]):
                    answered = next(f for f in frames[-50:] if f > after[0])
                    break
            if answered is None:
                unanswered += 1
            else:
                samples.append((answered - t0, rows))
            packets = app.stats.packets if app.stats else 0
            timeline.append((t0 - start, rows, packets, None if answered is None else answered - t0))
            n += 1
            await asyncio.sleep(KEY_GAP)
        elapsed = time.perf_counter() - start
        stats = app.stats
        rows_end = table.row_count
        # What a complete collection costs now (tui.collector: the app runs one rarely, when no
        # key has come for a while), and then the next full one, which does not walk what the
        # complete one froze.
        # Both run by the app's collector, told that their longest intervals have passed.
        gc.callbacks.remove(gc_callback)
        collector = app.collector
        app.driver.taken.clear()  # hold the engine still
        t = time.perf_counter()
        collector.tick(collector.last_complete + collector.complete_at_most)
        full_now = time.perf_counter() - t
        app.driver.taken.set()
        await asyncio.sleep(1.0)  # what the app makes meanwhile is walked by the next one
        t = time.perf_counter()
        collector.tick(collector.last_full + collector.at_most)
        full_next = time.perf_counter() - t
    return {"samples": samples, "timeline": timeline, "unanswered": unanswered, "elapsed": elapsed,
            "updates": [(t - start, d) for t, d in updates],
            "collections": [(t - start, d) for t, d in collections], "full_now": full_now,
            "full_next": full_next,
            "packets": stats.packets if stats else 0, "rows": rows_end,
            "unparsed": stats.unparsed_connections if stats else 0}


def report(label: str, result: dict[str, Any], since_rows: int = 0) -> None:
    samples = result["samples"]
    print(f"{label}: {result['packets']:,} packets through the engine in {result['elapsed']:.1f} s "
          f"({result['packets'] / result['elapsed']:,.0f} packets/s), {result['rows']:,} rows listed, "
          f"{result['unparsed']:,} connections not parsed for HTTP (engine busy)")
    groups = [("all presses", [s for s, _ in samples])]
    if since_rows:
        groups.append((f"with {since_rows:,}+ rows", [s for s, r in samples if r >= since_rows]))
    for name, values in groups:
        if not values:
            print(f"  {name}: none")
            continue
        values.sort()
        p95 = values[max(0, int(len(values) * 0.95) - 1)]
        print(f"  key to screen, {name} ({len(values)}): median {statistics.median(values) * 1000:.0f} ms,"
              f" p95 {p95 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms")
    collections = result["collections"]
    longest = max((d for _, d in collections), default=0.0)
    print(f"  full garbage collections while measuring: {len(collections)}, longest "
          f"{longest * 1000:.0f} ms; at the end, with {result['rows']:,} rows, a complete one: "
          f"{result['full_now'] * 1000:.0f} ms, the next full one (the survivors frozen): "
          f"{result['full_next'] * 1000:.0f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak resident memory of the process so far: {peak:,.0f} MiB")
    print("  every 2 s: seconds, rows, engine packets/s over the window, worst key (ms), longest "
          "engine update taken by the app (ms), full collections (ms)")
    window: list[tuple[float, int, int, float | None]] = []
    last_packets, last_at = 0, 0.0
    for sample in result["timeline"] + [(float("inf"), 0, 0, None)]:
        if window and sample[0] >= window[0][0] + 2:
            at, rows, packets = window[-1][0], window[-1][1], window[-1][2]
            worst = max((s[3] for s in window if s[3] is not None), default=None)
            rate = (packets - last_packets) / max(at - last_at, 1e-9)
            taken = max((d for t, d in result["updates"] if last_at < t <= at), default=0.0)
            pauses = [f"{d * 1000:.0f}" for t, d in collections if last_at < t <= at]
            print(f"    {at:6.1f} {rows:8,} {rate:10,.0f} "
                  + (f"{worst * 1000:6.0f}" if worst is not None else "   n/a")
                  + f" {taken * 1000:6.0f}  {' '.join(pauses)}")
            last_packets, last_at, window = packets, at, []
        window.append(sample)
    if result["unanswered"]:
        print(f"  {result['unanswered']} presses not answered within {KEY_TIMEOUT:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=110_000)
    parser.add_argument("--rate", type=float, default=50_000, help="packets/s when paced")
    parser.add_argument("--presses", type=int, default=50, help="at least this many")
    parser.add_argument("--flat-out", action="store_true", help="also read the file flat out")
    parser.add_argument("--packets-tab", type=int, nargs="*", default=[12_000, 100_000],
                        metavar="PACKETS", help="connection sizes for the Packets tab figures")
    parser.add_argument("--packets-tab-only", action="store_true")
    parser.add_argument("--stream-only", action="store_true",
                        help="only the Stream tab's figures (tests.bench.stream_ui)")
    parser.add_argument("--paced-only", action="store_true",
                        help="only the list of 100,000+ connections with traffic flowing")
    parser.add_argument("--views-only", action="store_true",
                        help="only the HTTP views' figures (tests.bench.views)")
    args = parser.parse_args()
    if args.packets_tab_only:
        return ui_packets.main(args.packets_tab)
    if args.views_only:
        return views.main()
    if not args.paced_only:
        stream_ui.main([])  # the Stream tab on a 2 MB download: open, x, Home, End
        if args.stream_only:
            return 0
        views.main()  # the HTTP tab on connections of 3,000 exchanges
    path, facts = workload_file("conn_per_request_http", {"connections": args.connections})
    target = min(100_000, args.connections)
    print(f"workload: {facts['packets']:,} packets, {args.connections:,} connections "
          f"(one HTTP request each)")
    paced = SourceSpec(opened=PacedFile(str(path), args.rate))  # type: ignore[arg-type]
    # Room for every row: under the default --memory the store keeps about 55,000 connections'
    # rows and forgets the oldest closed ones past that, and the list would never be this long.
    split = MemorySplit.of(ROWS_MEMORY)
    bounds = Bounds(max_connections=250_000, memory_budget=split.engine)
    app = WirepeekApp(paced, "", bounds, split)
    print(f"(the app as with --memory {ROWS_MEMORY // MiB}, so that its store keeps every row)")
    report(f"paced at {args.rate:,.0f} packets/s", asyncio.run(measure(app, args.presses, target)),
           since_rows=target)
    if args.flat_out:
        app = WirepeekApp(SourceSpec(files=(str(path),)), "", bounds, split)
        report("flat out", asyncio.run(measure(app, args.presses, 0)))
    if args.paced_only:
        return 0
    return ui_packets.main(args.packets_tab)


if __name__ == "__main__":
    raise SystemExit(main())
