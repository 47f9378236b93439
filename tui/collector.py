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
"""

from __future__ import annotations

import gc

QUIET = 2.0  # seconds without a key before a full collection may run
EVERY = 15.0  # seconds between full collections, at least
AT_MOST = 120.0  # seconds between full collections, at most, typing or not
NEVER = 1 << 30  # a generation-2 threshold that is never reached


class Collector:
    """Owns the collector's thresholds while the app runs; `tick` runs a full collection when
    one is due."""

    def __init__(self, quiet: float = QUIET, every: float = EVERY, at_most: float = AT_MOST) -> None:
        self.quiet, self.every, self.at_most = quiet, every, at_most
        self.last_key = 0.0
        self.last_full = 0.0
        self.full = 0  # full collections run
        self._saved: tuple[int, int, int] | None = None

    def start(self, now: float) -> None:
        self.last_full = now
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _old = self._saved
            gc.set_threshold(young, middle, NEVER)

    def stop(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def key(self, now: float) -> None:
        self.last_key = now

    def due(self, now: float) -> bool:
        since = now - self.last_full
        return since >= self.at_most or (since >= self.every and now - self.last_key >= self.quiet)

    def tick(self, now: float) -> bool:
        if not self.due(now):
            return False
        gc.collect()
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
