"""`make bench-memory`: what the interactive app's process holds after reading a capture, per
--memory, against the budget.

Each run is a fresh subprocess (so its resident size is its own): the app runs headless (Textual's
test driver, 120x40) with the bounds `wirepeek --memory MIB` gives it, reads the capture to its
end, and prints its resident size (RSS) at start, once mounted, after loading and at peak, with
what each part of the budget says it holds and what was evicted. Prints figures, asserts nothing.

    python -m tests.bench.memory [--memory MIB ...] [--capture FILE ...]
    python -m tests.bench.memory --overheads      the per-object costs tui.store counts

Without --capture, the workloads of tests.bench.run (generated once into bench-data/): keep-alive
HTTP (50 connections, 115,000 exchanges) and one connection per request (27,600 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import psutil

from engine.bounds import MiB

SIZE = (120, 40)
BUDGETS = (64, 256, 512)


def one(path: str, memory: int) -> dict[str, Any]:
    """In this process: the app on `path` with `--memory memory`; its figures."""
    from tui import http_helpers
    from tui.cli import build_parser, interactive_bounds
    from tui.spec import SourceSpec

    # As the command line does: the helpers' fork server starts before Textual is imported.
    http_helpers.prepare()
    from tui.app import WirepeekApp
    from tui.memory import resident_bytes

    imported = resident_bytes() or 0
    args = build_parser().parse_args(["-r", path, "--memory", str(memory)])
    app = WirepeekApp(SourceSpec(files=(path,)), "", *interactive_bounds(args))
    figures: dict[str, Any] = {"memory": memory, "imported": imported}

    async def run() -> None:
        t0 = time.perf_counter()
        c0 = time.process_time()
        async with app.run_test(size=SIZE) as pilot:
            figures["mounted"] = app.resident_at_start
            await asyncio.wait_for(app.file_done.wait(), timeout=1800)
            await pilot.pause()
            figures["seconds"] = time.perf_counter() - t0
            figures["since_start"] = time.time() - psutil.Process().create_time()
            figures["cpu"] = time.process_time() - c0
            figures["threads"] = thread_cpu()
            figures["loaded"] = resident_bytes()
            stats = app.stats
            assert stats is not None
            store = app.store
            figures.update(
                engine=stats.memory_used, ring=app.driver.packets.bytes, store=store.cost,
                log=store.log.written,
                connections=len(store.connections), seen=stats.connections_total,
                exchanges=sum(len(txs) for txs in store.http.values()),
                evicted_exchanges=store.evicted_exchanges, evicted_rows=store.evicted,
                engine_evicted=stats.evicted_connections,
                ring_dropped=app.driver.packets.dropped_batches,
            )

    asyncio.run(run())
    figures["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return figures


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process so far, by name (Linux)."""
    import os
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            name = names.get(int(tid), "other")
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def report(f: dict[str, Any]) -> None:
    from tui.memory import WORKING_SET

    def m(n: int) -> str:
        return f"{n / MiB:6.0f}"

    grown = f["loaded"] - f["mounted"]
    bound = f["memory"] * MiB + WORKING_SET
    print(f"  --memory {f['memory']:4}: RSS imported {m(f['imported'])}, mounted {m(f['mounted'])}, "
          f"loaded {m(f['loaded'])}, peak {m(f['peak'])} MiB; grown {m(grown)} MiB, "
          f"{'OVER' if grown > bound else 'within'} budget + working set ({m(bound)} MiB); "
          f"{f['seconds']:.2f} s ({f['since_start']:.2f} s after the process started: Python, "
          f"imports), the app's process {f['cpu']:.1f} s of CPU")
    threads = ", ".join(f"{name} {cpu:.1f}" for name, cpu in sorted(f["threads"].items()))
    print(f"      CPU seconds by thread (those still running): {threads}")
    print(f"      holds: engine {m(f['engine'])}, ring {m(f['ring'])}, store {m(f['store'])} MiB; "
          f"{f['connections']:,} of {f['seen']:,} connections, {f['exchanges']:,} exchanges kept; "
          f"evicted {f['evicted_exchanges']:,} exchanges, {f['evicted_rows']:,} rows "
          f"(engine: {f['engine_evicted']:,} connections; ring: {f['ring_dropped']:,} batches); "
          f"exchanges on disk {m(f['log'])} MiB")


def overheads() -> None:
    """What tracemalloc counts for the store's objects, against the estimate tui.store makes."""
    from engine import sources
    from engine.bounds import Bounds
    from engine.pipeline import Pipeline
    from tests.bench.run import workload_file
    from tui import store as store_module
    from tui.store import TrafficStore

    for name, params in (("keepalive_http", {"connections": 50, "transactions": 20_000}),
                         ("conn_per_request_http", {"connections": 5_000})):
        path, _facts = workload_file(name, params)
        source = sources.open_files([str(path)])
        batches = []
        while (batch := source.next_batch()) is not None:
            batches.append(batch)
        source.close()
        gc.collect()
        tracemalloc.start()
        store = TrafficStore(budget=1 << 40)
        pipeline = Pipeline(Bounds(keep_after_close=True), live_updates=True)
        for batch in batches:
            store.apply(tuple(pipeline.feed(batch)))
        store.apply(tuple(pipeline.finish()))
        del pipeline, batch
        store.log.spool.flush()  # its write buffer is working set
        store.take_changes()  # the app takes them at every refresh of the screen
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        exchanges = sum(len(txs) for txs in store.http.values())
        print(f"{name}: {len(store.connections):,} connections, {exchanges:,} exchanges: "
              f"tracemalloc {held / MiB:.1f} MiB, the store's estimate {store.cost / MiB:.1f} MiB "
              f"(EXCHANGE_COST {store_module.EXCHANGE_COST}, CONNECTION_COST "
              f"{store_module.CONNECTION_COST}); on disk {store.log.written / MiB:.1f} MiB, "
              f"{store.log.written / max(1, exchanges):,.0f} bytes an exchange")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, action="append", metavar="MIB")
    parser.add_argument("--capture", action="append", metavar="FILE")
    parser.add_argument("--overheads", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("FILE", "MIB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return 0
    if args.overheads:
        overheads()
        return 0
    captures = args.capture
    if not captures:
        from tests.bench.run import SIZES, workload_file

        captures = [str(workload_file(name, params)[0]) for label, name, params in SIZES
                    if label in ("keep-alive, unique heads", "conn/request, unique")]
    for path in captures:
        print(path)
        for memory in args.memory or BUDGETS:
            out = subprocess.run([sys.executable, "-m", "tests.bench.memory", "--one", path,
                                  str(memory)], capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"  --memory {memory}: failed\n{out.stderr}")
                continue
            report(json.loads(out.stdout.splitlines()[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
