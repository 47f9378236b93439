"""The Stats tab: the HTTP exchanges grouped by endpoint, host or status (engine.stats), with
count, error rate, percentiles of duration and time to first byte, and bytes; Enter on a group
shows its exchanges (a display filter made for it). Other protocols' transactions are counted
in groups of their own, named after their protocol (`redis GET`, `redis error`).

Every group name may come from the wire: it is escaped before it becomes text.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from engine.protocols import PROTOCOLS
from engine.stats import ACCURACY, ID_PATTERN, Group, Sketch, Stats
from tui.escape import escape_text
from tui.times import short
from tui.widgets.connections import size
from tui.widgets.table import Column, VirtualTable

COLUMNS = [
    Column("group", "group", limit=60),
    Column("count", "count", right=True),
    Column("errors", "err%", right=True),
    Column("p50", "p50", right=True),
    Column("p90", "p90", right=True),
    Column("p99", "p99", right=True),
    Column("max", "max", right=True),
    Column("ttfb50", "ttfb p50", right=True),
    Column("ttfb99", "ttfb p99", right=True),
    Column("resp", "resp", right=True),
]


def _q(value: str) -> str:
    """A value for the filter language, quoted."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# What engine.stats.command_of puts for a literal of an SQL statement (`?`), as a pattern; a
# statement's group is cut at this many characters.
SQL_LITERAL = r"(?:'(?:[^']|'')*'|[0-9]+(?:\.[0-9]+)?|\$[0-9]+|\?)"
GROUP_CUT = 100
STATEMENTS = frozenset({"postgresql", "mysql"})


def transaction_group_filter(grouping: str, protocol: str, rest: str) -> str | None:
    """The display filter of a group of another protocol's transactions (engine.stats: the
    protocol, then its command, statement, question or outcome)."""
    if grouping == "status":
        return f"proto = {_q(protocol)} and status = {_q(rest)}"
    if rest == "(request not captured)":
        return None
    if protocol in STATEMENTS:
        pattern = "^" + SQL_LITERAL.join(re.escape(part) for part in rest.split("?"))
    elif protocol == "dns":
        pattern = "^" + re.escape(rest)
    else:
        return f"proto = {_q(protocol)} and method = {_q(rest)}"
    return f"proto = {_q(protocol)} and path ~ {_q(pattern + ('$' if len(rest) < GROUP_CUT else ''))}"


def group_filter(grouping: str, name: str) -> str | None:
    """The display filter that shows a group's exchanges (None: none can say it)."""
    protocol, _, rest = name.partition(" ")
    if grouping != "host" and rest and protocol in {p.name for p in PROTOCOLS}:
        return transaction_group_filter(grouping, protocol, rest)
    if grouping == "status":
        return "not status >= 0" if name == "(no response)" else f"status = {name}"
    if grouping == "host":
        return None if name == "(unknown)" else f"host = {_q(name)}"
    method, _, path = name.partition(" ")
    if not path:
        return None
    parts = [re.escape(part) for part in path.split("{id}")]
    pattern = "^" + f"(?:{ID_PATTERN})".join(parts) + "([?#]|$)"
    return f"method = {_q(method)} and path ~ {_q(pattern)}"


def _copy_sketch(sketch: Sketch) -> Sketch:
    out = Sketch.__new__(Sketch)
    for name in Sketch.__slots__:
        setattr(out, name, getattr(sketch, name))
    out.buckets = dict(sketch.buckets)
    return out


def _copy_group(group: Group) -> Group:
    """A group's copy (ten times quicker than copy.deepcopy: 10,000 groups in 50 ms)."""
    return dataclasses.replace(group, duration=_copy_sketch(group.duration), ttfb=_copy_sketch(group.ttfb))


def shown_copy(counts: Stats, before: Stats | None, counted: set[str]) -> Stats:
    """A copy of the counts for the Stats tab, which counting in more leaves as it is (so the
    numbers shown are those the rows were sorted by): the groups counted in since `before` (the
    copy shown last, of the same counts) are copied again, the others shared with it."""
    out = Stats(counts.grouping)
    out.total = _copy_group(counts.total)
    if before is None:
        out.groups = {name: _copy_group(group) for name, group in counts.groups.items()}
    else:
        out.groups = dict(before.groups)
        for name in counted:
            out.groups[name] = _copy_group(counts.groups[name])
    return out


class StatsTable(VirtualTable):
    """Rows are group names; the busiest first (count▼) until sorted otherwise. A number column
    sorts the biggest first (▼), ties in the order of the groups' names (its values are
    negated: NEGATED); the group column alphabetically (▲)."""

    COLUMNS = COLUMNS
    DEFAULT_SORT = "count"
    NEGATED = frozenset(c.key for c in COLUMNS if c.right)

    def starts_descending(self, column: str) -> bool:
        return column in self.NEGATED

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups: dict[str, Group] = {}

    def cells(self, row: str) -> list[str]:
        g = self.groups.get(row)
        if g is None:
            return [""] * len(COLUMNS)
        d, w = g.duration, g.ttfb
        return [
            escape_text(g.name), f"{g.count:,}",
            f"{100 * g.errors / g.count:.1f}%" if g.count else "",
            short(d.quantile(0.5)), short(d.quantile(0.9)), short(d.quantile(0.99)),
            short(d.max if d.count else None), short(w.quantile(0.5)), short(w.quantile(0.99)),
            size(g.response_bytes),
        ]  # fmt: skip

    def sort_value(self, row: str, column: str) -> Any:
        g = self.groups.get(row)
        if g is None:
            return 0
        d, w = g.duration, g.ttfb
        return {
            "group": g.name, "count": -g.count, "errors": -(g.errors / g.count if g.count else 0),
            "p50": -(d.quantile(0.5) or 0), "p90": -(d.quantile(0.9) or 0),
            "p99": -(d.quantile(0.99) or 0), "max": -d.max, "ttfb50": -(w.quantile(0.5) or 0),
            "ttfb99": -(w.quantile(0.99) or 0), "resp": -g.response_bytes,
        }[column]  # fmt: skip


class StatsView(Vertical):
    """The groups of the exchanges, and a line that says how they are grouped."""

    DEFAULT_CSS = """
    StatsView > #stats-summary { height: auto; max-height: 3; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stats: Stats | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="stats-summary")
        yield StatsTable(id="stats-table")

    @property
    def table(self) -> StatsTable:
        return self.query_one(StatsTable)

    def show(self, stats: Stats | None, note: str = "") -> None:
        self.stats = stats
        table = self.table
        summary = self.query_one("#stats-summary", Static)
        if stats is None:
            table.groups = {}
            table.set_rows([])
            summary.update(Text(note or "Counting…", "dim"))
            return
        table.groups = dict(stats.groups)
        table.set_rows(list(stats.groups))
        total = stats.total
        # Wrapped where the pane is narrow: every word of it stays on screen.
        text = Text(f"{total.count:,} exchanges in {len(stats.groups):,} groups by {stats.grouping}", "bold")
        text.append(f" · errors {total.errors:,} · percentiles within {ACCURACY:.0%}", "dim")
        text.append(" · g: group by endpoint/host/status · s/S: sort · Enter: show a group's "
                    "exchanges", "dim")  # fmt: skip
        if note:
            text.append(f" · {note}", "yellow")
        summary.update(text)
