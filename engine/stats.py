"""Latency statistics of HTTP exchanges and other protocols' transactions, grouped by endpoint, host or status, in fixed memory.

Percentiles come from a log-bucket sketch (the idea of DDSketch): a value v > 0 falls in bucket
ceil(log(v) / log(gamma)) with gamma = (1 + a) / (1 - a), and a quantile is answered with the
middle of its bucket, 2 gamma^i / (gamma + 1), which is within a relative `a` of a value whose
rank is the quantile's (here a = 1%). The number of buckets is bounded by the range of the
values, not by how many there are: from a microsecond to a day, at most 1,300 buckets a sketch,
whatever the number of exchanges. Counts, sums and the maximum are exact.

The endpoint of an exchange is its method and its path with the parts that name one thing
among many collapsed into `{id}` (numbers, UUIDs, long hexadecimal or base64-like tokens), the
query string left out: `GET /users/42/orders?page=2` and `GET /users/7/orders` are both
`GET /users/{id}/orders`. A transaction of another protocol is grouped by its command
(engine.stats.command_of).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from engine.events import ConnectionInfo, HttpTransaction, Transaction
from engine.filter import host_name

ACCURACY: Final = 0.01  # relative error of the percentiles
GROUPINGS: Final = ("endpoint", "host", "status")
MAX_GROUPS: Final = 10_000  # past it, new groups are counted together as "(other)"
ID_PATTERN: Final = (
    r"[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[^/?#]*[0-9])[0-9a-fA-F]{8,}|(?=[^/?#]*[0-9])[A-Za-z0-9_-]{20,}"
)  # a path segment that names one thing among many (its own part of a filter's regex too)
_ID_SEGMENT: Final = re.compile(ID_PATTERN)


class Sketch:
    """Quantiles of positive values within a relative ACCURACY, in memory bounded by their
    range; zero and negative values are counted apart (as zero)."""

    __slots__ = ("_log_gamma", "buckets", "count", "max", "min", "total", "zeros")

    def __init__(self, accuracy: float = ACCURACY) -> None:
        gamma = (1 + accuracy) / (1 - accuracy)
        self._log_gamma = math.log(gamma)
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.zeros = 0
        self.total = 0.0
        self.max = 0.0
        self.min = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.max or self.count == 1:
            self.max = value
        if value < self.min or self.count == 1:
            self.min = value
        if value <= 0:
            self.zeros += 1
            return
        key = math.ceil(math.log(value) / self._log_gamma)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The value at quantile q (0..1): that of rank ceil(q * count), within ACCURACY."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        gamma = math.exp(self._log_gamma)
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:  # (within the exact extremes: one value is given exactly)
                return max(self.min, min(2 * gamma**key / (gamma + 1), self.max))
        return self.max

    def merge(self, other: Sketch) -> None:
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n
        if other.count and (not self.count or other.max > self.max):
            self.max = other.max
        if other.count and (not self.count or other.min < self.min):
            self.min = other.min
        self.count += other.count
        self.zeros += other.zeros
        self.total += other.total


def endpoint(tx: HttpTransaction | Transaction) -> str:
    if isinstance(tx, Transaction):
        return command_of(tx)
    request = tx.request
    if request is None:
        return "(request not captured)"
    path = request.target.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # an absolute form (proxies): the path only
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return f"{request.method} {'/'.join(_collapsed(part) for part in path.split('/'))}"


def _collapsed(part: str) -> str:
    """A segment, or `{id}` for what names one thing among many (`{id}.png` for a numbered
    file name: its extension stays)."""
    if _ID_SEGMENT.fullmatch(part):
        return "{id}"
    stem, dot, extension = part.rpartition(".")
    if dot and stem and extension.isalnum() and _ID_SEGMENT.fullmatch(stem):
        return "{id}." + extension
    return part


# SQL literals, replaced by ? in a statement's group: strings, numbers, placeholders.
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'|\b[0-9]+(?:\.[0-9]+)?\b|\$[0-9]+")
_STATEMENTS = frozenset({"postgresql", "mysql"})


def command_of(tx: Transaction) -> str:
    """A transaction's group: its protocol and command (`redis GET`), a statement with its
    literals as ? (`mysql SELECT * FROM users WHERE id = ?`), a DNS question (`dns A
    example.com`)."""
    summary = tx.request_summary
    if summary is None:
        return f"{tx.protocol} (request not captured)"
    if tx.protocol in _STATEMENTS:
        return f"{tx.protocol} {_SQL_LITERAL.sub('?', summary)[:100]}"
    if tx.protocol == "dns":
        return f"dns {summary[:100]}"
    return f"{tx.protocol} {summary.split(None, 1)[0] if summary.strip() else summary}"


def host_of(tx: HttpTransaction | Transaction, info: ConnectionInfo | None) -> str:
    """As the display filter's `host` field sees it (engine.filter.host_name)."""
    return host_name(tx if isinstance(tx, HttpTransaction) else None, info) or "(unknown)"


def status_of(tx: HttpTransaction | Transaction) -> str:
    if isinstance(tx, Transaction):
        return f"{tx.protocol} {tx.status}" if tx.status is not None else "(no response)"
    return str(tx.response.status) if tx.response is not None else "(no response)"


def is_error(tx: HttpTransaction | Transaction) -> bool:
    """An exchange that failed: a 5xx answer, no answer, or one that could not be parsed; a
    transaction answered with an error, or not answered."""
    if isinstance(tx, Transaction):
        return tx.status != "ok"
    return tx.response is None or tx.response.status >= 500 or tx.error is not None


@dataclass
class Group:
    name: str
    count: int = 0
    errors: int = 0
    duration: Sketch = field(default_factory=Sketch)
    ttfb: Sketch = field(default_factory=Sketch)
    request_bytes: int = 0
    response_bytes: int = 0

    def add(self, tx: HttpTransaction | Transaction) -> None:
        self.count += 1
        self.errors += is_error(tx)
        if (d := tx.duration) is not None:
            self.duration.add(d)
        if (w := tx.wait) is not None:
            self.ttfb.add(w)
        if isinstance(tx, Transaction):
            self.request_bytes += tx.request.size if tx.request is not None else 0
            self.response_bytes += tx.response.size if tx.response is not None else 0
            return
        if tx.request is not None:
            self.request_bytes += tx.request.body_bytes
        if tx.response is not None:
            self.response_bytes += tx.response.body_bytes

    def record(self, grouping: str) -> dict[str, Any]:
        def figures(sketch: Sketch) -> dict[str, float | None]:
            return {
                "p50": _rounded(sketch.quantile(0.5)),
                "p90": _rounded(sketch.quantile(0.9)),
                "p99": _rounded(sketch.quantile(0.99)),
                "max": _rounded(sketch.max if sketch.count else None),
            }

        return {
            "type": "stats", "group_by": grouping, "group": self.name, "count": self.count,
            "errors": self.errors, "error_rate": round(self.errors / self.count, 4) if self.count else 0,
            "duration": figures(self.duration), "ttfb": figures(self.ttfb),
            "bytes": {"request": self.request_bytes, "response": self.response_bytes},
        }  # fmt: skip


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class Stats:
    """Exchanges grouped by `grouping` (endpoint, host or status), at most MAX_GROUPS groups."""

    def __init__(self, grouping: str = "endpoint") -> None:
        if grouping not in GROUPINGS:
            raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {grouping!r}")
        self.grouping = grouping
        self.groups: dict[str, Group] = {}
        self.total = Group("(all)")

    def key(self, tx: HttpTransaction | Transaction, info: ConnectionInfo | None) -> str:
        if self.grouping == "endpoint":
            return endpoint(tx)
        if self.grouping == "host":
            return host_of(tx, info)
        return status_of(tx)

    def add(self, tx: HttpTransaction | Transaction, info: ConnectionInfo | None = None) -> str:
        """Count an exchange in; the name of its group."""
        name = self.key(tx, info)
        group = self.groups.get(name)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                name = "(other)"
                group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = Group(name)
        group.add(tx)
        self.total.add(tx)
        return name

    def sorted(self, by: str = "count") -> list[Group]:
        """The groups, the busiest (or slowest: by p99 duration) first."""
        groups: Iterable[Group] = self.groups.values()
        if by == "p99":
            return sorted(groups, key=lambda g: -(g.duration.quantile(0.99) or 0.0))
        return sorted(groups, key=lambda g: (-g.count, g.name))
