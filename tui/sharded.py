"""`--json` on capture files with several processes: each tracks a share of the connections.

Every worker reads the whole file (reading is cheap: pcapy-ng delivers millions of packets a
second) and keeps the connections whose address/port hash falls in its share
(`Pipeline(shard=...)`); HTTP parsing, the expensive part, is then spread over the cores.

Connection ids must be exactly those of a single-process run (ids follow the order in which
connections are first seen, and `--follow ID` relies on that). Each worker reports, per batch,
the capture-wide packet number at which each of its connections opened and how far it has read;
the parent numbers a connection once every worker has read past its first packet, and holds back
records until their connection has its number. Records keep their order within a worker; across
workers they interleave.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any

from engine import sources
from engine.bounds import Bounds
from engine.events import ConnectionClosed, HttpTransaction
from engine.pipeline import Pipeline
from engine.records import connection_record, http_record, join_line, split_line
from engine.tcp import Connection

Record = tuple[str, int, str]


def _worker(paths: list[str], bpf: str, count: int | None, bounds: Bounds, shard: tuple[int, int],
            out: Pipe) -> None:
    opened: list[int] = []

    def note_open(conn: Connection, emit: Callable[[object], None]) -> None:
        opened.append(conn.first_packet)

    pipeline = Pipeline(bounds, consumers={None: [note_open]}, http_body_limit=0, shard=shard)
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
            if final:
                events += pipeline.finish()
            records: list[Record] = []
            for event in events:
                if isinstance(event, ConnectionClosed):
                    records.append(split_line(connection_record(event.info)))
                elif isinstance(event, HttpTransaction):
                    records.append(split_line(http_record(event)))
            out.send((opened[:], pipeline.packets, records, final, source.error if final else None))
            opened.clear()
            if final:
                break
    finally:
        source.close()
        out.close()


class _Share:
    """What the parent knows of one worker."""

    def __init__(self) -> None:
        self.firsts: list[int] = []  # first packet of each of its connections, by local id
        self.ids: list[int] = []  # global id of each local id numbered so far
        self.read = 0  # packets it has processed
        self.done = False
        self.waiting: deque[Record] = deque()


def json_records_sharded(paths: list[str], bpf: str, count: int | None, bounds: Bounds,
                         jobs: int, out: Any = None) -> str | None:
    """Print the NDJSON records of capture files using `jobs` processes; return the file error."""
    out = out or sys.stdout
    context = multiprocessing.get_context("fork")
    shares = [_Share() for _ in range(jobs)]
    pipes: dict[Pipe, int] = {}
    procs = []
    per_worker = Bounds(
        max_connections=max(1, bounds.max_connections // jobs),
        memory_budget=bounds.memory_budget // jobs,
        keep_stream_bytes=bounds.keep_stream_bytes,
    )
    for i in range(jobs):
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_worker, args=(paths, bpf, count, per_worker, (i, jobs), sender),
                               daemon=True)
        proc.start()
        sender.close()
        pipes[receiver] = i
        procs.append(proc)
    next_id = 0
    error = None
    try:
        while pipes:
            for ready in wait(list(pipes)):
                i = pipes[ready]  # type: ignore[index]
                try:
                    firsts, read, records, final, err = ready.recv()  # type: ignore[union-attr]
                except EOFError:
                    raise RuntimeError(f"worker {i} ended without finishing") from None
                share = shares[i]
                share.firsts += firsts
                share.read = read
                share.waiting.extend(records)
                if final:
                    share.done = True
                    error = error or err
                    del pipes[ready]  # type: ignore[arg-type]
            next_id = _number(shares, next_id)
            for share in shares:
                while share.waiting and share.waiting[0][1] < len(share.ids):
                    kind, local, rest = share.waiting.popleft()
                    out.write(join_line(kind, share.ids[local], rest) + "\n")
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    out.flush()
    return error


def _number(shares: list[_Share], next_id: int) -> int:
    """Give global ids, in first-packet order, to every connection whose place is certain."""
    while True:
        best = None
        for i, share in enumerate(shares):
            if len(share.ids) < len(share.firsts):
                first = share.firsts[len(share.ids)]
                if best is None or first < best[0]:
                    best = (first, i)
        if best is None:
            return next_id
        first, i = best
        # Another worker might still report a connection that opened earlier, until it has
        # read past this packet.
        if any(not s.done and s.read < first for j, s in enumerate(shares) if j != i):
            return next_id
        shares[i].ids.append(next_id)
        next_id += 1


def default_jobs() -> int:
    return min(2, os.cpu_count() or 1)
