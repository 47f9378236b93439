"""When the app runs CPython's full garbage collections: while the user is not typing.

A full collection visits every tracked object and every reference it holds; with 100,000
connections listed (the engine's connections, the rows behind the list) that is about five
million references, and the whole process stops for 300-600 ms, holding the GIL. CPython starts
one on its own whenever enough objects have piled up, typing or not. Here the young generations
are still collected automatically, but full collections wait for a moment when no key has come
for a while, or, so that cyclic garbage stays bounded, for a longest interval.

Little waits for them: the engine breaks the reference cycles of every connection that leaves
its table (`engine.tcp.Connection.release`), so closed connections are freed by reference
counting; what is left for full collections is the UI's own cyclic garbage.

Even so, a full collection with 110,000 rows listed from a file took 170 ms (the rows, their
connections' lists of exchanges: about 530,000 objects), and with a live capture's engine in
the process 0.9-1.7 s: a key pressed after a pause waited that long. So what survives a full
collection is frozen (`gc.freeze`): the next ones walk only what was made since, and take a few
milliseconds. What was frozen and later becomes cyclic garbage (a widget removed, say) waits for
a complete collection, which thaws everything first: one in COMPLETE_EVERY seconds at least,
and only after COMPLETE_QUIET seconds without a key (or, typing or not, COMPLETE_AT_MOST).
"""

from __future__ import annotations

import gc

QUIET = 2.0  # seconds without a key before a full collection may run
EVERY = 15.0  # seconds between full collections, at least
AT_MOST = 120.0  # seconds between full collections, at most, typing or not
NEVER = 1 << 30  # a generation-2 threshold that is never reached
COMPLETE_EVERY = 600.0  # seconds between complete collections (the frozen objects too), at least
COMPLETE_QUIET = 10.0  # seconds without a key before a complete one may run
COMPLETE_AT_MOST = 3600.0  # seconds between complete collections, at most, typing or not


class Collector:
    """Owns the collector's thresholds, and what it freezes, while the app runs; `tick` runs a
    full collection when one is due (a complete one when that is due too)."""

    def __init__(self, quiet: float = QUIET, every: float = EVERY, at_most: float = AT_MOST,
                 complete_every: float = COMPLETE_EVERY, complete_quiet: float = COMPLETE_QUIET,
                 complete_at_most: float = COMPLETE_AT_MOST) -> None:
        self.quiet, self.every, self.at_most = quiet, every, at_most
        self.complete_every, self.complete_quiet = complete_every, complete_quiet
        self.complete_at_most = complete_at_most
        self.last_key = 0.0
        self.last_full = 0.0
        self.last_complete = 0.0
        self.full = 0  # full collections run
        self.complete = 0  # of those, complete ones
        self._saved: tuple[int, int, int] | None = None

    def start(self, now: float) -> None:
        """As the app loads: what exists then (the modules, their classes and functions, the
        app) lives as long as the process, so it is frozen at once, and no full collection
        walks it until a complete one; CPython started one on its own as Textual built the
        screen (15-50 ms, while a file's first rows came), which now waits as any other."""
        self.last_full = self.last_complete = now
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _old = self._saved
            gc.set_threshold(young, middle, NEVER)
            gc.freeze()

    def stop(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
            gc.unfreeze()  # (what this froze goes back to the collector's generations)

    def key(self, now: float) -> None:
        self.last_key = now

    def due(self, now: float) -> bool:
        since = now - self.last_full
        return since >= self.at_most or (since >= self.every and now - self.last_key >= self.quiet)

    def complete_due(self, now: float) -> bool:
        since = now - self.last_complete
        return since >= self.complete_at_most or (
            since >= self.complete_every and now - self.last_key >= self.complete_quiet
        )

    def tick(self, now: float) -> bool:
        if not self.due(now):
            return False
        if self.complete_due(now):
            gc.unfreeze()
            self.complete += 1
            self.last_complete = now
        gc.collect()
        gc.freeze()  # what is left is walked again only by the next complete collection
        self.full += 1
        self.last_full = now
        return True


COLLECT_EVERY = 8
"""Batches between collections in a process that runs only the engine (see `headless`)."""
FULL_EVERY = 32
"""Of those collections, one in FULL_EVERY is a full one; the others, of the young generations."""

_batches = 0


def headless() -> None:
    """For a process that runs only the engine, with no UI (--json, --follow, the summary, the
    workers of a parallel --json, the app's HTTP helpers): no automatic collections; one every
    COLLECT_EVERY batches instead (`after_batch`).

    Such a process allocates a few objects per packet and frees them all by reference counting:
    the engine makes no reference cycles (it breaks each closed connection's, and a collection
    after every 64 batches of the keep-alive workload found nothing to free), so automatic
    collections only walked live objects to find nothing: a third of a `--json` worker's time on
    that workload (4.5 -> 2.85 s; the thresholds ten times higher tried before saved a tenth).
    The collections every few batches bound what a cycle somewhere might leave; what was set up
    before the first batch is frozen out of them.

    Those collections are of the young generations (what was made since the last one), but one
    in FULL_EVERY: a full collection walks every live object, and with the tens of thousands
    of connections a file of one connection per request keeps (lingering after they close)
    a full one every COLLECT_EVERY batches was half of an HTTP helper's time (2.5 of 5 s).
    """
    gc.collect()
    gc.freeze()
    gc.disable()


def after_batch() -> None:
    """A batch was fed: collect when COLLECT_EVERY have been since the last collection (all
    generations every FULL_EVERY collections, else the young ones)."""
    global _batches
    _batches += 1
    if _batches % COLLECT_EVERY == 0 and not gc.isenabled():
        if _batches >= COLLECT_EVERY * FULL_EVERY:
            _batches = 0
            gc.collect()
        else:
            gc.collect(1)
