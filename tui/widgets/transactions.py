"""The HTTP tab of a connection of another protocol (Redis, and those engine.protocols registers):
its transactions in a virtual table, and one of them in full.

It is the exchanges list (tui.widgets.http) for `Transaction`s: rows are positions in the
store's own list of the connection's transactions, each read back from the exchange log when it
is drawn; sorted by index (the default, kept in memory) a connection of 10,000 opens without
reading them. An answer that is an error is red. The view that holds it (`HttpView`) shows this
table or the exchanges one, by the connection's protocol.

Every summary, error and note came from the wire: it goes through tui.escape, once, where it
becomes text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text

from engine.events import HttpRequest, Message, Transaction
from tui.escape import escape_text
from tui.exchange_log import GONE, Exchange, Exchanges
from tui.times import short, wall
from tui.widgets.connections import size
from tui.widgets.table import Column, VirtualTable

# The outcome and the duration before the summaries, which are long (a statement, a value): so
# that they stay in view on a narrow terminal.
COLUMNS = [
    Column("index", "#", right=True),
    Column("time", "time"),
    Column("status", "status"),
    Column("duration", "dur", right=True),
    Column("request", "request", limit=50),
    Column("response", "response", limit=50),
    Column("req", "req", right=True),
    Column("resp", "resp", right=True),
    Column("wait", "wait", right=True),
    Column("note", "note"),
]
STATUS, REQUEST, RESPONSE = 2, 4, 5

# What a protocol's transactions are called where the tab names them (else the protocol's name).
TITLES = {"redis": "Redis", "postgresql": "PostgreSQL", "mysql": "MySQL", "dns": "DNS"}


def title(protocol: str | None) -> str:
    return TITLES.get(protocol or "", protocol or "")


def wait(tx: Transaction) -> float | None:
    """From the request's last byte to the answer's first."""
    if tx.request is None or tx.response is None:
        return None
    return tx.response.ts - tx.request.end_ts


def as_transaction(tx: Exchange, connection: int) -> Transaction:
    """A row's transaction; the stand-in the exchange log gives for a record that its ring
    overwrote (an HttpTransaction) says so as a transaction."""
    if isinstance(tx, Transaction):
        return tx
    error = tx.error or GONE
    return Transaction("", connection, -1, None, None, None, f"({error})", None, error)


class TransactionsTable(VirtualTable):
    """Rows are positions in the connection's list of transactions (the store's own list, which
    only grows). Like ExchangesTable it has `transactions`, `transaction(row)`, `pending`
    (always empty: no request of these protocols is listed while it waits) and `tick`."""

    COLUMNS = COLUMNS
    DEFAULT_SORT = "index"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transactions: Sequence[Exchange] = []
        self.pending: dict[int, HttpRequest] = {}
        # The row last made into cells, and whether its answer is an error: its cells are
        # coloured just after (VirtualTable._line), without reading its record again.
        self._drawn: tuple[int, bool] = (-1, False)

    def transaction(self, row: int) -> Transaction | None:
        transactions = self.transactions
        if not 0 <= row < len(transactions):
            return None
        return as_transaction(transactions[row], getattr(transactions, "connection", -1))

    def cells(self, row: int) -> list[str]:
        tx = self.transaction(row)
        if tx is None:
            return [""] * len(COLUMNS)
        self._drawn = (row, tx.status == "error")
        req, resp = tx.request, tx.response
        first = req or resp
        return [
            str(tx.index) if tx.index >= 0 else "",
            wall(first.ts) if first is not None else "",
            tx.status or "—",
            short(tx.duration),
            "—" if tx.request_summary is None else escape_text(tx.request_summary),
            "—" if tx.response_summary is None else escape_text(tx.response_summary),
            size(req.size) if req else "",
            size(resp.size) if resp else "",
            short(wait(tx)),
            "note" if tx.notes else "",
        ]

    def sort_value(self, row: int, column: str) -> Any:
        transactions = self.transactions
        if column == "index" and isinstance(transactions, Exchanges):
            return transactions.index_at(row)  # from memory: no record read
        tx = self.transaction(row)
        if tx is None:
            return 0
        req, resp = tx.request, tx.response
        if column == "index":
            return tx.index
        if column == "time":
            first = req or resp
            return first.ts if first is not None else 0.0
        if column == "request":
            return tx.request_summary or ""
        if column == "response":
            return tx.response_summary or ""
        if column == "status":
            return tx.status or ""
        if column == "req":
            return req.size if req else -1
        if column == "resp":
            return resp.size if resp else -1
        if column == "wait":
            waited = wait(tx)
            return waited if waited is not None else -1.0
        if column == "duration":
            return tx.duration if tx.duration is not None else -1.0
        return "note" if tx.notes else ""

    def cell_style(self, row: int, column: int, value: str) -> Style | None:
        if column in (STATUS, RESPONSE) and self._drawn == (row, True):
            return self.get_component_rich_style("table--error")
        return None

    def tick(self, now: float) -> None:
        """(Nothing here runs on with the clock.)"""


def _side(out: Text, name: str, summary: str | None, message: Message | None) -> None:
    out.append(f"{name:<9}", "bold")
    if summary is not None:
        out.append(escape_text(summary))
    elif message is None:
        out.append("(not captured)", "dim")
    out.append("\n")
    if message is not None:
        spent = message.end_ts - message.ts
        out.append(" " * 9 + f"{wall(message.ts)}, {size(message.size)} on the wire"
                   + (f", over {short(spent)}" if spent > 0 else "") + "\n", "dim")


def transaction_text(tx: Transaction) -> Text:
    """One transaction in full: protocol, outcome, each side's summary, times and size, the
    timings, the error and the notes (wire text escaped)."""
    out = Text()
    outcome = tx.status or "no answer"
    heading = f"{title(tx.protocol) or 'transaction'} transaction {tx.index}: {outcome}"
    style = "bold red" if tx.status == "error" else ("bold green" if tx.status else "bold yellow")
    out.append(heading + "\n\n", style)  # (the engine's words: nothing from the wire)
    _side(out, "request", tx.request_summary, tx.request)
    _side(out, "response", tx.response_summary, tx.response)
    timings = []
    if (waited := wait(tx)) is not None:
        timings.append(f"wait {short(waited)}")
    if tx.duration is not None:
        timings.append(f"duration {short(tx.duration)}")
    if timings:
        out.append("\n" + " · ".join(timings) + "\n")
    if tx.error:
        out.append("\nerror: " + escape_text(tx.error) + "\n", "bold red")
    for note in tx.notes:
        out.append("note: " + escape_text(note) + "\n", "yellow")
    return out
