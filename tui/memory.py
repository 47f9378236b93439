"""The interactive app's memory: how `--memory` is shared out, and what the process really holds.

`--memory MIB` bounds what the traffic makes the process hold, beyond a fixed base: the process
before the first packet (Python, Textual, the app's code: about 45 MiB), what reading takes
whatever the budget (WORKING_SET below), and scapy once the Packets tab has dissected a packet.
Three parts grow with traffic and each gets a share:

- the engine (engine.bounds.Bounds.memory_budget): tracked connections, out-of-order data and
  the kept streams of the Stream tab, 1/4;
- the ring of recent raw packets (tui.capture.PacketRing) for the Packets tab and `w`, 1/8
  (a capture file is read again instead: tui.capture.FileRing holds nothing);
- the UI's store (tui.store.TrafficStore): every connection's row, and where each HTTP exchange
  is in its ring file on disk (tui.exchange_log), 1/8;
- the other half is headroom for what the parts hold beyond what they count (see below).

The headless modes (--json, --follow, -w) have neither ring nor store: their engine gets it all.

The process's resident size (RSS) is read from /proc on Linux and through psutil elsewhere when it
is installed; without either, the status bar shows the budget alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from engine.bounds import MiB

DEFAULT_MEMORY = 512 * MiB
# Shares of --memory, in eighths. What is left (half) is for what the parts hold beyond what they
# count: Python's allocators keep freed memory for reuse, and the engine counts its kept streams'
# bytes, not their small objects. Once the oldest objects are being evicted, the engine and the
# store hold 1.3-1.8 times what they count (tests/bench/memory.py on 300,000 packets: 1.3-1.5;
# a 2.39M-packet wrk capture read whole: 1.76, which went past a quarter's headroom, 677 MiB
# resident under the default budget). The ring holds what it counts (whole batches).
ENGINE_EIGHTHS = 2
RING_EIGHTHS = 1
STORE_EIGHTHS = 1
# What reading traffic takes whatever the budget, beyond the process at start: a tick's batches
# and events on their way, the views of the selected connection (today the Stream tab's rendered
# text: about 20 MiB for a 1 MiB kept stream), the allocators' slack. Measured with
# `python -m tests.bench.memory --memory 8` and 64: 32-75 MiB.
WORKING_SET = 64 * MiB
SCAPY = 48 * MiB  # measured: the resident size grows by this much when scapy.all loads


@dataclass(frozen=True, slots=True)
class MemorySplit:
    """Bytes each part that grows with traffic may hold, out of `total` (--memory)."""

    total: int
    engine: int
    ring: int
    store: int

    @classmethod
    def of(cls, total: int) -> MemorySplit:
        def share(eighths: int) -> int:
            return total * eighths // 8

        return cls(total, share(ENGINE_EIGHTHS), share(RING_EIGHTHS), share(STORE_EIGHTHS))


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident set size now, or None when this platform cannot say.

    On Linux one read of /proc/self/statm (a few microseconds); elsewhere psutil, if installed.
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None  # not glibc
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def give_back() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim; elsewhere nothing).

    Evicted bodies and batches are freed to malloc, which keeps the pages for reuse: after a
    burst the process stays at its high-water mark (measured: 20-50 MB on a 300,000-packet
    capture, given back in 3-9 ms). ctypes lets go of the GIL meanwhile, so the capture goes on.
    """
    if _TRIM is not None:
        _TRIM(0)


def physical_bytes() -> int | None:
    """The machine's physical memory, when the platform says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * _PAGE
    except (AttributeError, ValueError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """What the status bar says about memory: the process's size and what each part holds."""

    resident: int | None  # the process now (read once a second), None when unknown
    at_start: int | None  # the process when the app started, before any traffic
    scapy: bool  # scapy is loaded (the Packets tab dissected a packet)
    budget: MemorySplit
    engine: int  # the engine's own count (Stats.memory_used)
    ring: int  # bytes in the packet ring
    store: int  # the store's estimate (TrafficStore.cost)
    evicted_exchanges: int  # by the store
    evicted_rows: int  # connections the store forgot

    @property
    def base(self) -> int:
        """What the process holds whatever the budget: at start, plus reading, plus scapy."""
        return (self.at_start or 0) + WORKING_SET + (SCAPY if self.scapy else 0)

    @property
    def over(self) -> bool:
        """The process holds more than its base and the budget together."""
        return self.resident is not None and self.resident > self.base + self.budget.total

    def describe(self) -> str:
        """The long form, for the status bar's tooltip."""
        b = self.budget
        lines = []
        if self.resident is not None:
            line = f"process: {mib(self.resident)} resident"
            if self.at_start is not None:
                line += (f"; {mib(self.at_start)} at start, + about {mib(WORKING_SET)} that "
                         "reading traffic takes whatever the budget")
                line += f", + {mib(SCAPY)} scapy" if self.scapy else ""
            lines.append(line)
        lines.append(f"budget {mib(b.total)} (--memory): engine {mib(b.engine)} "
                     f"(holds {mib(self.engine)}), packet ring {mib(b.ring)} (holds "
                     f"{mib(self.ring)}), connections and exchanges {mib(b.store)} "
                     f"(hold about {mib(self.store)})")
        if self.evicted_exchanges or self.evicted_rows:
            lines.append(f"evicted to stay within it: {self.evicted_exchanges:,} exchanges, "
                         f"{self.evicted_rows:,} connections")
        return "\n".join(lines)


def mib(n: int) -> str:
    return f"{n / MiB:,.0f}M"
