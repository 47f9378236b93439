"""The status bar: source, capture filter in force, rates, totals, drops, memory, paused or live."""

from __future__ import annotations

import os

from rich.text import Text
from textual.widgets import Static

from engine.events import Stats
from engine.remote import CAPTURING, LOST, HostStatus
from tui.escape import escape_text
from tui.memory import MemoryReading, mib
from tui.messages import CaptureStatus


def fold(text: Text, width: int) -> Text:
    """Lines of whole items (between the │ marks): the bar wraps between items, never inside
    one (Rich would break "mem 54M/512M budget" after "mem")."""
    plain = text.plain
    cuts = [i for i, ch in enumerate(plain) if ch == "│"]
    pieces = text.divide(cuts)
    out = Text()
    used = 0
    for piece in pieces:
        length = piece.cell_len
        if used and used + length > width:
            out.append("\n")
            used = 0
        out.append_text(piece)
        used += length
    return out


def host_item(host: HostStatus) -> tuple[str, str]:
    """A capture host's state (wirepeek --ssh): capturing, with its kernel's drops when it has
    some; connecting; or lost, why, and when it is tried again."""
    name = escape_text(host.name)
    if host.state == CAPTURING:
        if host.dropped:
            return f"│ {name} ✓ {host.dropped:,} drops ", "bold red"
        return f"│ {name} ✓ ", ""
    if host.state == LOST:
        again = f", again in {host.retry_in:.0f}s" if host.retry_in is not None else ""
        return f"│ {name} lost: {escape_text(host.detail)[:60]}{again} ", "bold red"
    return f"│ {name} {host.state}… ", "yellow"


class StatusBar(Static):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.last: tuple[float, int] | None = None  # (monotonic time, packets) for the rate
        self.rate = 0.0
        self.shown: Text | None = None
        self.lines = 0

    def show(self, status: CaptureStatus, stats: Stats, paused: bool, now: float, shown: int,
             memory: MemoryReading | None = None,
             found: str | None = None) -> None:
        if self.last is not None and now - self.last[0] >= 1.0:
            self.rate = (stats.packets - self.last[1]) / (now - self.last[0])
            self.last = (now, stats.packets)
        elif self.last is None or stats.packets < self.last[1]:
            self.last = (now, stats.packets)
        out = Text()
        mode = "PAUSED" if paused else ("LIVE" if status.live else ("done" if status.finished else "reading"))
        if mode == "reading" and status.progress is not None and status.progress[1]:
            mode += f" {100 * status.progress[0] // status.progress[1]}%"
        out.append(f" {mode} ", "reverse bold" if paused else "reverse")
        # Short enough for 80 columns: a file by its name, the filter only when there is one,
        # the rate only while packets come. The bar wraps to a second line rather than cut.
        source = status.source if status.live else os.path.basename(status.source)
        out.append(f" {escape_text(source)} ")
        if status.filter:
            out.append(f"filter: {escape_text(status.filter)} ", "bold")
        # (A file whose packets are all read while its HTTP is still being parsed, by helper
        # processes, says how far they are, not a rate of 0.)
        if status.live or (not status.finished and self.rate > 0):
            out.append(f"│ {self.rate:,.0f} pkt/s ")
        out.append(f"│ {stats.packets:,} pkts │ {stats.connections_total:,} conns ")
        if shown != stats.connections_total:
            out.append(f"({shown:,} shown) ")
        if found:
            out.append(f"│ {found} ", "bold")
        if status.capture is not None:
            drops = status.capture.dropped + status.capture.if_dropped
            out.append(f"│ drops {drops:,} ", "bold red" if drops else "")
        for host in status.hosts:
            out.append(*host_item(host))
        if memory is not None:
            budget = f"{mib(memory.budget.total)} budget"
            if memory.resident is None:
                out.append(f"│ mem {budget} ")
            else:
                out.append(f"│ mem {mib(memory.resident)}/{budget} ",
                           "bold red" if memory.over else "")
        evicted = [(stats.evicted_connections, "conns")]
        if memory is not None:
            # (With those of connections evicted before their exchanges came from the helpers.)
            evicted += [(memory.evicted_exchanges + status.unmapped, "exchanges"),
                        (memory.evicted_rows, "rows")]
        elif status.unmapped:
            evicted.append((status.unmapped, "exchanges"))
        said = ", ".join(f"{n:,} {what}" for n, what in evicted if n)
        if said:
            out.append(f"│ evicted {said} ", "yellow")
        skipped = [
            (stats.malformed, "malformed"),
            (stats.truncated + stats.cut_payloads, "cut short"),
            (stats.ignored_segments, "ignored"),
            (stats.fragments_dropped, "fragments lost"),
        ]
        said = ", ".join(f"{n:,} {what}" for n, what in skipped if n)
        if said:
            out.append(f"│ {said} ", "yellow")
        if status.unparsed:
            out.append(f"│ parsing behind: {status.unparsed:,} pkts not parsed ", "bold yellow")
        if status.skipped:
            out.append(f"│ {status.skipped:,} skipped: backlog full ", "bold red")
        if status.shedding:
            out.append("│ busy: new connections not parsed ", "bold yellow")
        elif stats.unparsed_connections:
            out.append(f"│ {stats.unparsed_connections:,} unparsed ", "yellow")
        if status.error:
            out.append(f"│ {escape_text(status.error)}", "bold red")
        text = fold(out, self.size.width or 80)
        if text == self.shown:
            return
        lines = text.plain.count("\n") + 1
        # A layout of the whole screen only when the bar's height changes (one line or two):
        # redone for every update, it was most of what the screen cost under heavy traffic.
        self.update(text, layout=lines != self.lines)
        self.shown, self.lines = text, lines
