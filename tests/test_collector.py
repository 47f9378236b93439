"""Full garbage collections wait for a quiet moment; keys hold the capture thread back."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from engine.bounds import Bounds
from tests.captures import capture
from tui import collector
from tui.app import KEY_HOLD, WirepeekApp
from tui.capture import SourceSpec
from tui.collector import NEVER, Collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_a_full_collection_waits_for_quiet_and_for_its_interval():
    c = Collector(quiet=2, every=15, at_most=120)
    c.start(1000.0)
    try:
        assert not c.due(1010.0)  # too soon after the last
        assert c.due(1015.0)  # no key yet: quiet
        c.key(1014.0)
        assert not c.due(1015.0)  # a key a second ago
        assert c.due(1016.0)
        for t in range(1016, 1120):
            c.key(float(t))  # typing all the time...
            assert not c.due(t + 0.5)
        assert c.due(1120.0)  # ...until the longest interval
    finally:
        c.stop()


def test_the_collector_owns_the_old_generation_only_while_started():
    before = gc.get_threshold()
    c = Collector()
    c.start(0.0)
    c.start(0.0)  # twice changes nothing
    assert gc.get_threshold() == (before[0], before[1], NEVER)
    c.stop()
    c.stop()
    assert gc.get_threshold() == before


def test_tick_collects_cyclic_garbage_when_due():
    c = Collector(quiet=1, every=5, at_most=60)
    c.start(100.0)
    try:
        node = Node()
        ref = weakref.ref(node)
        del node
        assert not c.tick(101.0)
        assert ref() is not None  # cyclic garbage waits
        assert c.tick(106.0)
        assert ref() is None and c.full == 1 and c.last_full == 106.0
    finally:
        c.stop()


def test_what_survives_a_full_collection_is_walked_again_only_by_a_complete_one():
    c = Collector(quiet=1, every=5, at_most=60, complete_every=100, complete_quiet=10,
                  complete_at_most=1000)
    c.start(0.0)
    try:
        old = Node()
        old_ref = weakref.ref(old)
        assert c.tick(6.0)
        assert gc.get_freeze_count() > 0  # the survivors, `old` among them
        del old  # garbage now, but frozen
        assert c.tick(12.0)
        assert old_ref() is not None
        new = Node()  # made since: the next full collection frees it
        new_ref = weakref.ref(new)
        del new
        assert c.tick(18.0)
        assert new_ref() is None and old_ref() is not None and c.complete == 0
        c.key(100.0)
        assert c.tick(105.0)  # quiet enough for a full collection, not for a complete one
        assert old_ref() is not None and c.complete == 0
        assert c.tick(111.0)  # ten quiet seconds, and a hundred since the start
        assert old_ref() is None and c.complete == 1 and c.last_complete == 111.0
        assert gc.get_freeze_count() > 0  # frozen again after it
    finally:
        c.stop()
    assert gc.get_freeze_count() == 0  # stopped, it leaves nothing frozen


def test_what_exists_when_the_collector_starts_is_frozen_at_once():
    made_before = Node()
    ref = weakref.ref(made_before)
    c = Collector(quiet=1, every=5, at_most=60, complete_every=100, complete_quiet=10,
                  complete_at_most=1000)
    c.start(0.0)
    try:
        assert gc.get_freeze_count() > 0
        del made_before  # garbage now, but it was there at the start: frozen
        assert c.tick(6.0)
        assert ref() is not None and c.complete == 0
        assert c.tick(111.0)  # a complete collection frees it
        assert ref() is None and c.complete == 1
    finally:
        c.stop()
    assert gc.get_freeze_count() == 0


@pytest.mark.asyncio
async def test_the_app_starts_its_collector_before_it_builds_the_screen(monkeypatch):
    # CPython ran a full collection on its own while Textual built the screen (15-50 ms).
    at_mount: list[tuple[int, bool]] = []
    on_mount = WirepeekApp.on_mount

    def mount(self: WirepeekApp) -> None:
        at_mount.append((gc.get_threshold()[2], gc.get_freeze_count() > 0))
        on_mount(self)

    monkeypatch.setattr(WirepeekApp, "on_mount", mount)
    app = WirepeekApp(SourceSpec(files=(capture("zeek/wikipedia.pcap"),)), "", Bounds())
    async with app.run_test(size=(80, 24)):
        assert at_mount == [(NEVER, True)]
    assert gc.get_freeze_count() == 0


def test_a_complete_collection_comes_typing_or_not_at_its_longest_interval():
    c = Collector(quiet=1, every=5, at_most=60, complete_every=100, complete_quiet=10,
                  complete_at_most=1000)
    c.start(0.0)
    try:
        for t in range(0, 1000):
            c.key(float(t))
            assert not c.complete_due(t + 0.5)
        assert c.complete_due(1000.0)
    finally:
        c.stop()


@pytest.mark.asyncio
async def test_the_app_defers_full_collections_and_holds_the_capture_for_a_key():
    before = gc.get_threshold()
    app = WirepeekApp(SourceSpec(files=(capture("zeek/wikipedia.pcap"),)), "", Bounds())
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.wait_for(app.file_done.wait(), timeout=20)
        assert gc.get_threshold()[2] == NEVER
        held: list[float] = []
        release = app._release_hold

        def spy() -> None:
            held.append(app.driver.hold_until)
            release()

        app._release_hold = spy  # type: ignore[method-assign]
        pressed = time.monotonic()
        await pilot.press("j")
        await pilot.pause()
        # The key held the capture thread back for at most KEY_HOLD, and the refresh that
        # answered it let the capture go on.
        assert len(held) == 1 and pressed < held[0] <= time.monotonic() + KEY_HOLD
        assert app.driver.hold_until == 0.0
        assert app.collector.last_key >= pressed
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_headless_report_runs_no_automatic_collections():
    # --json turns automatic collections off before it reads anything (its workers inherit it).
    code = (
        "import gc, sys\n"
        "from tui import cli\n"
        "seen = []\n"
        "real = cli.json_records\n"
        "cli.json_records = lambda *a: (seen.append(gc.isenabled()), real(*a))[1]\n"
        "status = cli.main(['-r', sys.argv[1], '--json', '--jobs', '1'])\n"
        "print(seen, status, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, capture("zeek/http__methods.pcap")],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "[False] 0"


def test_with_automatic_collections_off_one_runs_every_few_batches(monkeypatch):
    """Of the young generations (a full one walks every live object), but one in FULL_EVERY."""
    monkeypatch.setattr(collector, "FULL_EVERY", 3)
    starts = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            starts.append(info["generation"])

    was = gc.isenabled()
    gc.disable()
    gc.callbacks.append(count)
    try:
        collector._batches = 0
        for _ in range(6 * collector.COLLECT_EVERY + 1):
            collector.after_batch()
    finally:
        gc.callbacks.remove(count)
        if was:
            gc.enable()
    assert starts == [1, 1, 2, 1, 1, 2]  # one every COLLECT_EVERY batches
