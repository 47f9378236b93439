"""How the inspector writes times: the wall clock with milliseconds, or seconds since a start;
and durations.

Packet times are seconds since the epoch; people read them as the local time of day, the way
tcpdump prints them. The `t` key switches the Stream and Packets tabs to times relative to the
connection's first packet, which is easier to reason about for a single connection.
"""

from __future__ import annotations

import time


def wall(ts: float) -> str:
    """14:03:22.123 (local time, milliseconds)."""
    seconds = int(ts)
    millis = int((ts - seconds) * 1000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def wall_date(ts: float) -> str:
    """2026-12-02 14:03:22.123, for where a day may matter (a capture file's first packet)."""
    seconds = int(ts)
    return time.strftime("%Y-%m-%d ", time.localtime(seconds)) + wall(ts)


def relative(ts: float, start: float) -> str:
    """+1.234567s since the start (microseconds: relative times are read for small differences)."""
    return f"{'+' if ts >= start else '-'}{abs(ts - start):.6f}s"


def shown(ts: float, start: float | None) -> str:
    """The wall clock, or the time since `start` when one is given."""
    return wall(ts) if start is None else relative(ts, start)


def ms(seconds: float | None) -> str:
    """A duration in milliseconds (seconds from 10 s), or nothing when it is not known."""
    if seconds is None:
        return ""
    return f"{seconds * 1000:.1f}ms" if seconds < 10 else f"{seconds:.1f}s"


def short(seconds: float | None) -> str:
    """A duration that may be a few microseconds (a Redis command on loopback) or seconds, in
    few characters with three significant digits: `83µs`, `1.24ms`, `12.4ms`, `250ms`,
    `2.1s`. The transactions list and the Stats tab write durations so."""
    if seconds is None:
        return ""
    if seconds < 0:
        return ms(seconds)
    micros = round(seconds * 1e6)
    if micros < 1000:
        return f"{micros}µs"
    millis = seconds * 1000
    if round(millis, 2) < 10:
        return f"{millis:.2f}ms"
    if round(millis, 1) < 100:
        return f"{millis:.1f}ms"
    if round(millis) < 1000:
        return f"{millis:.0f}ms"
    return f"{seconds:.1f}s"
