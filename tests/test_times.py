"""The inspector's time formats."""

from __future__ import annotations

import time

from tui.times import relative, shown, wall, wall_date


def test_wall_clock_is_local_time_with_milliseconds():
    ts = time.mktime((2026, 12, 2, 14, 3, 22, 0, 0, -1)) + 0.1239
    assert wall(ts) == "14:03:22.123"
    assert wall_date(ts) == "2026-12-02 14:03:22.123"
    assert shown(ts, None) == "14:03:22.123"


def test_relative_times_are_signed_seconds():
    assert relative(10.5, 10.0) == "+0.500000s"
    assert relative(9.75, 10.0) == "-0.250000s"
    assert shown(12.0, 10.0) == "+2.000000s"
