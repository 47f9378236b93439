"""How often the app redraws its rows and status bar (tui.app): at once for a live capture that
keeps up; while a live capture's thread is behind, every BUSY_REDRAW seconds; while a file is
read, every FILE_REDRAW seconds (the screen shares the cores with the capture thread and the
HTTP helpers that the load waits for); once a capture is read to its end, at once (its last rows
were held back for up to FILE_REDRAW: the keep-alive benchmark's file was listed in full 0.2-0.4 s
later)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tui import app


def due_in(live: bool, behind: bool, drawn_ago: float, finished: bool = False) -> float:
    shown = SimpleNamespace(status=SimpleNamespace(live=live, behind=behind, finished=finished),
                            _drawn_at=time.monotonic() - drawn_ago)
    return app.WirepeekApp._redraw_due_in(shown)  # type: ignore[arg-type]


def test_a_live_capture_that_keeps_up_redraws_at_once():
    assert due_in(live=True, behind=False, drawn_ago=0.0) == 0.0


@pytest.mark.parametrize(("live", "behind", "every"), [
    (True, True, app.BUSY_REDRAW), (False, False, app.FILE_REDRAW), (False, True, app.FILE_REDRAW),
])
def test_busy_readings_redraw_at_their_pace(live, behind, every):
    assert app.FILE_REDRAW > app.BUSY_REDRAW
    assert every - 0.05 < due_in(live, behind, drawn_ago=0.0) <= every
    assert due_in(live, behind, drawn_ago=every / 2) == pytest.approx(every / 2, abs=0.05)
    assert due_in(live, behind, drawn_ago=every) == 0.0


@pytest.mark.parametrize(("live", "behind"), [(False, False), (True, True)])
def test_the_end_of_a_reading_is_drawn_at_once(live, behind):
    assert due_in(live, behind, drawn_ago=0.0) > 0.0
    assert due_in(live, behind, drawn_ago=0.0, finished=True) == 0.0
