"""The processes that share a file's connections (tui.sharded): when the reader of the records
goes away (`wirepeek -r big.pcap --json | head`), they are stopped at once, not waited for."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.bounds import Bounds
from tui import sharded


def endless_worker(paths: list[str], bpf: str, count: int | None, bounds: Bounds,
                   shard: tuple[int, int], out: Any, *rest: Any) -> None:
    """A worker with a long file ahead of it: one record, then it is busy for a minute."""
    out.send(([0], [("connection", 0, b"}")], False, None))
    time.sleep(60)


class GoneReader:
    def write(self, data: bytes) -> int:
        raise BrokenPipeError("the reader went away")

    def flush(self) -> None:
        pass


def test_the_workers_are_stopped_when_the_reader_goes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharded, "_worker", endless_worker)
    procs: list[Any] = []
    real_process = sharded.multiprocessing.get_context("fork").Process

    class Recorded(real_process):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            procs.append(self)
            super().start()

    monkeypatch.setattr(sharded.multiprocessing.get_context("fork"), "Process", Recorded)
    started = time.monotonic()
    with pytest.raises(BrokenPipeError):
        sharded.json_records_sharded(["unused.pcap"], "", None, Bounds(), 2, out=GoneReader())
    # Stopped, not joined: a join would have waited up to 5 s for each (the old behaviour kept
    # `| head` waiting 10 s on a large file).
    assert time.monotonic() - started < 4
    assert len(procs) == 2
    for proc in procs:
        proc.join(timeout=5)
        assert not proc.is_alive()
