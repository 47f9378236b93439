"""`--json` on capture files with several processes: each tracks a share of the connections.

Every worker reads the whole file (reading is cheap: pcapy-ng delivers millions of packets a
second) and keeps the connections whose address/port hash falls in its share
(`Pipeline(shard=...)`); HTTP parsing, the expensive part, is then spread over the cores.

Connection ids must be exactly those of a single-process run (ids follow the order in which
connections are first seen, and `--follow ID` relies on that). Every worker reads the same
batches, and sends one message per batch: the capture-wide packet number at which each of its
new connections opened, and its records. Once every worker has sent batch b, all connections
opened so far are known: the parent numbers them in first-packet order and prints batch b's
records, worker by worker. The output is the same on every run.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any

from engine import sources
from engine.bounds import Bounds
from engine.events import ConnectionClosed, Event, HttpTransaction, Transaction
from engine.filter import BODY_SEARCHED, OpenConnections, RecordFilter, uses_bodies
from engine.filter import parse as parse_filter
from engine.keylog import KeyLog
from engine.pipeline import Pipeline
from engine.records import (
    connection_record,
    http_record,
    join_line,
    split_line,
    transaction_record,
)
from engine.tcp import Connection
from tui import collector

Record = tuple[str, int, str]


def _worker(paths: list[str], bpf: str, count: int | None, bounds: Bounds, shard: tuple[int, int],
            out: Pipe, keylog: KeyLog | None = None, where: str | None = None) -> None:
    opened: list[int] = []
    conns = OpenConnections()

    def note_open(conn: Connection, emit: Callable[[Event], None]) -> None:
        opened.append(conn.first_packet)
        conns.note(conn, emit)

    condition = parse_filter(where) if where else None
    bodies = BODY_SEARCHED if condition is not None and uses_bodies(condition) else 0
    pipeline = Pipeline(bounds, consumers={None: [note_open]}, http_body_limit=bodies, shard=shard,
                        keylog=keylog)
    keep = RecordFilter(condition, conns.info) if condition is not None else None
    source = sources.open_files(paths, bpf)
    remaining = count
    try:
        while True:
            batch = source.next_batch()
            final = batch is None
            if batch is not None and remaining is not None:
                if len(batch) >= remaining:
                    batch = batch.__class__(batch.linktype, batch.data, batch.meta[: remaining * 16])
                    final = True
                remaining -= len(batch)
            events = pipeline.feed(batch) if batch is not None else []
            collector.after_batch()
            if final:
                events += pipeline.finish()
            records: list[Record] = []
            conns.batch(events)
            for event in events:
                if isinstance(event, ConnectionClosed):
                    if keep is None or keep.connection(event.info):
                        records.append(split_line(connection_record(event.info)))
                elif isinstance(event, HttpTransaction):
                    if keep is None or keep.exchange(event):
                        flow = conns.flow(event.connection)
                        records.append(split_line(http_record(event, flow)))
                elif isinstance(event, Transaction):
                    if keep is not None and not keep.exchange(event):
                        continue
                    flow = conns.flow(event.connection)
                    records.append(split_line(transaction_record(event, flow)))
            out.send((opened[:], records, final, source.error if final else None))
            opened.clear()
            if final:
                break
    finally:
        source.close()
        out.close()


AHEAD = 64
"""Batches a worker may run ahead of the slowest one before the parent stops reading it."""


def json_records_sharded(paths: list[str], bpf: str, count: int | None, bounds: Bounds,
                         jobs: int, out: Any = None, keylog: KeyLog | None = None,
                         where: str | None = None,
                         transform: Callable[[bytes], bytes] | None = None) -> str | None:
    """Print the NDJSON records of capture files using `jobs` processes; return the file error."""
    out = out or sys.stdout.buffer
    context = multiprocessing.get_context("fork")
    per_worker = share_of(bounds, jobs)
    receivers: list[Pipe] = []
    procs = []
    for i in range(jobs):
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_worker, daemon=True,
                               args=(paths, bpf, count, per_worker, (i, jobs), sender, keylog,
                                     where))
        proc.start()
        sender.close()
        receivers.append(receiver)
        procs.append(proc)
    queues: list[deque[Any]] = [deque() for _ in range(jobs)]
    ids: list[list[int]] = [[] for _ in range(jobs)]  # global id of each worker's local ids
    done = [False] * jobs  # its last batch was printed
    sent_all = [False] * jobs  # its last batch was received
    next_id = 0
    error = None
    try:
        while not all(done):
            # Every worker reads the same batches: batch b is complete once each has sent it.
            while all(queues):
                batch = [q.popleft() for q in queues]
                opened = [(first, i) for i, (firsts, *_rest) in enumerate(batch) for first in firsts]
                next_id = number_in_order(opened, ids, next_id)
                lines = []
                for i, (_firsts, records, final, err) in enumerate(batch):
                    joined = (join_line(kind, ids[i][local], rest) for kind, local, rest in records)
                    lines.extend(joined if transform is None else map(transform, joined))
                    if final:
                        done[i] = True
                        error = error or err
                if lines:
                    lines.append(b"")
                    out.write(b"\n".join(lines))
            if all(done):
                break
            slowest = min(len(q) for i, q in enumerate(queues) if not done[i])
            readable = [r for i, r in enumerate(receivers)
                        if not sent_all[i] and len(queues[i]) < slowest + AHEAD]
            for ready in wait(readable):
                i = receivers.index(ready)  # type: ignore[arg-type]
                try:
                    message = ready.recv()  # type: ignore[union-attr]
                except EOFError:
                    raise sources.CaptureError(f"worker process {i} stopped unexpectedly") from None
                queues[i].append(message)
                sent_all[i] = message[2]
    finally:
        # Past an error (the reader went away: | head) the workers are stopped at once; else
        # they are given time to end on their own.
        ended = all(done)
        for proc in procs:
            if ended:
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    out.flush()
    return error


def number_in_order(opened: list[tuple[int, int]], ids: list[list[int]], next_id: int) -> int:
    """Give connections opened by several processes the ids one process reading the capture
    would: `opened` holds (first packet, process) of each, in any order (a packet opens one
    connection, in one process); each is given the next id in first-packet order, appended to
    its process's list in `ids` (each process numbers its own in that order too). Returns the
    id after the last given."""
    for _first, i in sorted(opened):
        ids[i].append(next_id)
        next_id += 1
    return next_id


def share_of(bounds: Bounds, jobs: int) -> Bounds:
    """One of `jobs` processes' bounds: its share of the connections and of the memory."""
    return replace(
        bounds,
        max_connections=max(1, bounds.max_connections // jobs),
        memory_budget=bounds.memory_budget // jobs,
    )


def default_jobs() -> int:
    return min(2, os.cpu_count() or 1)
