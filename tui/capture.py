"""The capture driver: the only UI-side code that touches the engine, run in a worker thread.

It owns the source and the pipeline, reads batches, and posts one `EngineUpdate` per tick to the
app. The app talks to it only through its command queue and the `follow` attribute; it never
reads the engine's objects, and the driver never touches a widget.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engine import sources
from engine.batch import Batch
from engine.bounds import Bounds
from engine.pipeline import Pipeline
from tui.messages import CaptureStatus, EngineUpdate, FilterApplied, StreamChunk

TICK = 0.075  # seconds between updates to the UI
RING_BYTES = 64 * 1024 * 1024  # recent raw packets kept for the Packets tab and for writing (w)


def connection_filter(client: str, server: str) -> str:
    """A BPF expression for the packets of one connection, from its "addr:port" endpoints."""
    (a, p), (b, q) = (_split(client), _split(server))
    return f"tcp and host {a} and host {b} and port {p} and port {q}"


def _split(endpoint: str) -> tuple[str, str]:
    address, _, port = endpoint.rpartition(":")
    return address.strip("[]"), port


class PacketRing:
    """The most recent batches, whole (no work per packet), up to a number of bytes.

    The worker appends; the UI thread takes a snapshot with `batches()` (a tuple made while
    holding the GIL, so it never sees a half-changed deque).
    """

    def __init__(self, limit: int = RING_BYTES) -> None:
        self.limit = limit
        self.ring: deque[Batch] = deque()
        self.bytes = 0
        self.dropped_batches = 0

    def add(self, batch: Batch) -> None:
        self.ring.append(batch)
        self.bytes += len(batch.data) + len(batch.meta)
        while self.bytes > self.limit and len(self.ring) > 1:
            old = self.ring.popleft()
            self.bytes -= len(old.data) + len(old.meta)
            self.dropped_batches += 1

    def clear(self) -> None:
        self.ring.clear()
        self.bytes = 0

    def batches(self) -> tuple[Batch, ...]:
        return tuple(self.ring)

    def packets_of(self, client: str, server: str) -> list[sources.Packet]:
        return sources.matching_packets(self.batches(), connection_filter(client, server))


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What to capture from, so the driver can (re)open it, e.g. with a new filter."""

    files: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    replay: bool = False  # play the files in real time, looping (the demo)
    # Opened before the app started (so errors and privileges are dealt with first): the driver
    # reads it first, and reopens from files/interfaces only when a file must be read again.
    opened: sources.Source | None = None


class RealTimeReplay:
    """Replays a capture's packets at the pace they were captured, again and again.

    Timestamps are moved to the wall clock, so each loop looks like new traffic to the engine.
    """

    def __init__(self, path: str, bpf: str, clock: Callable[[], float] = time.time) -> None:
        self.name = f"{path} (replay)"
        self.live = True
        self.filter = bpf
        source = sources.open_files([path], bpf)
        self.packets: list[tuple[int, float, bytes]] = []
        while (batch := source.next_batch()) is not None:
            self.packets += [(batch.linktype, ts, data) for ts, data in batch.packets()]
        source.close()
        self.clock = clock
        self.start = clock()
        self.first = self.packets[0][1] if self.packets else 0.0
        self.length = (self.packets[-1][1] - self.first + 1.0) if self.packets else 1.0
        self.position = 0
        self.loop = 0
        self.error: str | None = None

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        if not self.packets:
            time.sleep(timeout or 0.1)
            return Batch(1, b"", b"")
        deadline = self.clock() + (timeout or 0.0)
        while True:
            now = self.clock()
            due = []
            linktype = self.packets[self.position][0]
            while True:
                lt, ts, data = self.packets[self.position]
                at = self.start + self.loop * self.length + (ts - self.first)
                if at > now or lt != linktype:
                    break
                due.append((at, data))
                self.position += 1
                if self.position == len(self.packets):
                    self.position = 0
                    self.loop += 1
            if due:
                return Batch.from_packets(linktype, due)
            if now >= deadline:
                return Batch(linktype, b"", b"")
            time.sleep(min(0.02, max(0.0, deadline - now)))

    def stats(self) -> sources.CaptureStats | None:
        return None

    def close(self) -> None:
        pass


class CaptureDriver:
    def __init__(self, spec: SourceSpec, bpf: str, bounds: Bounds,
                 post: Callable[[object], object]) -> None:
        self.spec = spec
        self.bpf = bpf
        self.bounds = bounds
        self.post = post
        self.commands: queue.Queue[tuple[str, str]] = queue.Queue()
        self.follow: int | None = None  # set by the UI: whose stream to send
        self.generation = 0
        self._followed: int | None = None
        self._sent: dict[bool, int] = {True: 0, False: 0}
        self._initial = spec.opened
        self.packets = PacketRing()  # read by the UI thread through its snapshot method

    # ------------------------------------------------------------------ from the UI thread

    def set_filter(self, expression: str) -> None:
        self.commands.put(("filter", expression))

    # ------------------------------------------------------------------ in the worker thread

    def run(self, cancelled: Callable[[], bool]) -> None:
        try:
            source = self._open(self.bpf)
        except sources.CaptureError as e:
            self._post_error(str(e))
            return
        pipeline = self._pipeline()
        finished = False
        try:
            while not cancelled():
                source, pipeline, finished = self._commands(source, pipeline, finished)
                events: list[object] = []
                deadline = time.monotonic() + TICK
                while not finished and not cancelled():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    batch = source.next_batch(remaining if source.live else 0)
                    if batch is None:
                        events += pipeline.finish()
                        finished = True
                    elif len(batch):
                        events += pipeline.feed(batch)
                        self.packets.add(batch)
                    elif source.live:
                        events += pipeline.flush(time.time())
                if finished and not events:
                    time.sleep(TICK)  # a file read to its end: only commands can change things
                self._post(source, pipeline, events, finished)
        finally:
            source.close()

    def _open(self, bpf: str) -> sources.Source | RealTimeReplay:
        spec = self.spec
        if self._initial is not None:
            source, self._initial = self._initial, None
            return source
        if spec.replay:
            return RealTimeReplay(spec.files[0], bpf)
        if spec.interfaces:
            return sources.open_live(list(spec.interfaces), bpf)
        return sources.open_files(list(spec.files), bpf)

    def _pipeline(self) -> Pipeline:
        return Pipeline(self.bounds, live_updates=True)

    def _commands(self, source: sources.Source | RealTimeReplay, pipeline: Pipeline,
                  finished: bool) -> tuple[sources.Source | RealTimeReplay, Pipeline, bool]:
        while True:
            try:
                command, argument = self.commands.get_nowait()
            except queue.Empty:
                return source, pipeline, finished
            if command != "filter":
                continue
            try:
                sources.validate_filter(argument)
                if isinstance(source, RealTimeReplay) or not source.live:
                    if "-" in self.spec.files:
                        raise sources.CaptureError("a capture read from stdin cannot be read again")
                    # A file is read again under the new filter; a live capture keeps its state.
                    new = self._open(argument)
                    source.close()
                    source, pipeline, finished = new, self._pipeline(), False
                    self.packets.clear()
                    self.generation += 1
                    self._followed = None
                else:
                    source.set_filter(argument)
            except sources.CaptureError as e:
                self.post(FilterApplied(argument, str(e)))
                continue
            self.bpf = argument
            self.post(FilterApplied(argument, None))

    def _post(self, source: sources.Source | RealTimeReplay, pipeline: Pipeline,
              events: list[object], finished: bool) -> None:
        stream_id, chunks, reset = self._stream(pipeline)
        status = CaptureStatus(
            source=source.name,
            filter=self.bpf,
            live=source.live,
            finished=finished,
            capture=source.stats(),
            error=source.error,
        )
        self.post(EngineUpdate(tuple(events), pipeline.stats(), status, stream_id, chunks, reset,
                               self.generation))

    def _stream(self, pipeline: Pipeline) -> tuple[int | None, tuple[StreamChunk, ...], bool]:
        """New kept bytes of the followed connection since the last tick (all, on a change)."""
        wanted = self.follow
        kept = pipeline.table.kept_of(wanted) if wanted is not None else None
        if kept is None:
            return wanted, (), False
        reset = wanted != self._followed
        if reset:
            self._followed = wanted
            self._sent = {True: 0, False: 0}
            new = list(kept)
        else:
            new = []
            for chunk in reversed(kept):
                from_client, _ts, offset, data = chunk
                end = offset + (data if isinstance(data, int) else len(data))
                if end <= self._sent[from_client]:
                    break
                new.append(chunk)
            new.reverse()
        for from_client, _ts, offset, data in new:
            end = offset + (data if isinstance(data, int) else len(data))
            self._sent[from_client] = max(self._sent[from_client], end)
        return wanted, tuple(new), reset

    def _post_error(self, message: str) -> None:
        status = CaptureStatus(source="", filter=self.bpf, live=False, finished=True, capture=None,
                               error=message)
        self.post(EngineUpdate((), Pipeline().stats(), status, None, (), False, self.generation))
