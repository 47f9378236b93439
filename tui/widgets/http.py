"""The HTTP tab: the selected connection's exchanges in a virtual table, and one of them in full.

The table is a `VirtualTable`: opening a connection of 10,000 exchanges costs a sort of its row
ids, not 10,000 rows of widgets, and moving the cursor redraws only the lines on screen. A
request still waiting for its answer is a row of its own, its duration growing, until the
answer comes. The message pane below shows the exchange under the cursor (`LinesView`, drawn
only where it is on screen); under a search (`/`) only the matching exchanges are listed.

A connection of another protocol (Redis, and those engine.protocols registers) has its
transactions listed here instead, in a table of their own (tui.widgets.transactions), with the
same behaviour.

Every byte shown here came from the wire: it goes through tui.escape before it becomes text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from engine.events import HttpRequest, HttpTransaction
from tui.escape import escape_text
from tui.exchange_log import Exchange, Exchanges
from tui.store import MAX_TRANSACTIONS_PER_CONNECTION, lists_transactions
from tui.times import ms, wall
from tui.widgets.connections import size, status_style
from tui.widgets.detail import message_text
from tui.widgets.lines import LinesView
from tui.widgets.table import Column, VirtualTable
from tui.widgets.transactions import TransactionsTable, title, transaction_text

COLUMNS = [
    Column("index", "#", right=True),
    Column("time", "time"),
    Column("method", "method"),
    Column("target", "target", limit=60),
    Column("status", "status", right=True),
    Column("req", "req", right=True),
    Column("resp", "resp", right=True),
    Column("ttfb", "ttfb", right=True),
    Column("duration", "dur", right=True),
    Column("note", "note"),
]
STATUS = 4
LATER = 1 << 62  # sorts a request still waiting after every answered one


def pending_id(request: HttpRequest) -> int:
    """The row id of a request waiting for its answer (answered exchanges are 0, 1, 2...)."""
    return -1 - request.offset


class ExchangesTable(VirtualTable):
    """Rows are positions in the connection's list of exchanges (the store's own list, which
    only grows), and `pending_id`s of requests that wait for their answer."""

    COLUMNS = COLUMNS
    DEFAULT_SORT = "index"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transactions: Sequence[Exchange] = []
        self.pending: dict[int, HttpRequest] = {}  # row id -> request
        self.now = 0.0  # the time pending durations run to (the wall clock, or the last packet)

    def transaction(self, row: int) -> HttpTransaction | None:
        tx = self.transactions[row] if 0 <= row < len(self.transactions) else None
        return tx if isinstance(tx, HttpTransaction) else None  # (another protocol's: HttpView's other table)

    def cells(self, row: int) -> list[str]:
        if row < 0:
            req = self.pending.get(row)
            if req is None:
                return [""] * len(COLUMNS)
            waited = max(0.0, self.now - req.ts)
            return ["", wall(req.ts), escape_text(req.method), escape_text(req.target), "…",
                    size(req.body_bytes), "", "", f"{waited:.1f}s…", "waiting"]
        tx = self.transaction(row)
        if tx is None:
            return [""] * len(COLUMNS)
        req, resp = tx.request, tx.response
        note = "tunnel" if tx.tunnel else ("error" if tx.error else ("note" if tx.notes else ""))
        first = req or resp
        return [
            str(tx.index) if tx.stream is None else f"s{tx.stream}",  # HTTP/2: its stream id
            wall(first.ts) if first is not None else "",
            escape_text(req.method) if req else "—",
            escape_text(req.target) if req else "—",
            str(resp.status) if resp else "—",
            size(req.body_bytes) if req else "",
            size(resp.body_bytes) if resp else "",
            ms(tx.wait),
            ms(tx.duration),
            note,
        ]

    def sort_value(self, row: int, column: str) -> Any:
        if row < 0:
            req = self.pending.get(row)
            if req is None:
                return 0
            return {
                "index": LATER + req.offset, "time": req.ts, "method": req.method,
                "target": req.target, "status": 0, "req": req.body_bytes, "resp": -1,
                "ttfb": float("inf"), "duration": float("inf"), "note": "waiting",
            }[column]
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
        if column == "method":
            return req.method if req else ""
        if column == "target":
            return req.target if req else ""
        if column == "status":
            return resp.status if resp else -1
        if column == "req":
            return req.body_bytes if req else -1
        if column == "resp":
            return resp.body_bytes if resp else -1
        if column == "ttfb":
            return tx.wait if tx.wait is not None else -1.0
        if column == "duration":
            return tx.duration if tx.duration is not None else -1.0
        return self.cells(row)[-1]

    def row_style(self, row: int, index: int) -> Style | None:
        return self.get_component_rich_style("table--dim") if row < 0 else None

    def cell_style(self, row: int, column: int, value: str) -> Style | None:
        if column == STATUS:
            return status_style(value, self.get_component_rich_style("table--error"),
                                self.get_component_rich_style("table--warning"))
        return None

    def tick(self, now: float) -> None:
        """Pending durations run on: redraw them."""
        self.now = now
        if self.pending:
            self.refresh()


class HttpView(Vertical):
    """The exchanges of one connection, and the selected one in full; for a connection of
    another protocol, its transactions (`listing_transactions`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id: int | None = None
        self.protocol: str | None = None
        self.positions: list[int] | None = None  # under a search: the exchanges that matched
        self._listed = 0  # exchanges of the list taken so far (or positions, under a search)
        self._summary: Text | None = None  # what the summary line says
        self.tls = ""  # what TLS decryption with a key log made of the connection
        self.listing_transactions = False  # the transactions table is shown, not the exchanges

    def compose(self) -> ComposeResult:
        yield Static(id="http-summary")
        yield ExchangesTable(id="exchanges")
        yield TransactionsTable(id="transactions")
        yield LinesView(id="http-message")

    def on_mount(self) -> None:
        self.query_one(TransactionsTable).display = False

    @property
    def table(self) -> ExchangesTable | TransactionsTable:
        """The table shown: the exchanges, or a connection of another protocol's transactions."""
        if self.listing_transactions:
            return self.query_one(TransactionsTable)
        return self.query_one(ExchangesTable)

    def _list_transactions(self, wanted: bool) -> None:
        """Show the transactions table (or the exchanges one) in place of the other; the focus,
        when it was on the one that goes, goes to the one that comes."""
        if wanted == self.listing_transactions:
            return
        old = self.table
        self.listing_transactions = wanted
        new = self.table
        old.clear()
        old.transactions = []
        new.display, old.display = True, False
        if old.has_focus:
            new.focus()

    def show(self, conn_id: int | None, transactions: Sequence[Exchange],
             pending: dict[int, HttpRequest] | None = None, protocol: str | None = None,
             positions: list[int] | None = None, query: str = "", evicted: int = 0,
             tls: str = "") -> None:
        """Show a connection's exchanges (`positions`: only those, under a search); for the same
        connection and search, take only what is new. `pending` maps requests that wait for
        their answer by their stream offset. A connection whose protocol has transactions
        (tui.store.lists_transactions) has them listed in the transactions table."""
        switched = lists_transactions(protocol) != self.listing_transactions
        self._list_transactions(lists_transactions(protocol))
        table = self.table
        if self.listing_transactions:
            pending = None
        pending_rows = {pending_id(r): r for r in (pending or {}).values() if r.offset >= 0}
        # The store replaces a connection's list when it evicts its oldest exchanges: positions
        # in the old one are `gone` places later in the new one. Under a search the matches are
        # looked for again (tui.search); else the rows move up by as much.
        old = table.transactions
        gone = getattr(transactions, "start", 0) - getattr(old, "start", 0)
        shifted = (conn_id == self.conn_id and positions is None and self.positions is None
                   and old is not transactions and 0 < gone <= self._listed
                   and getattr(old, "connection", None) == conn_id)
        fresh = switched or (not shifted and (conn_id != self.conn_id or positions is not self.positions
                                              or old is not transactions))
        self.protocol = protocol
        self.tls = tls
        table.transactions = transactions
        if shifted:
            table.shift_rows(gone)
            self._listed -= gone
        if fresh:
            self.conn_id, self.positions = conn_id, positions
            table.pending = pending_rows
            listed = positions if positions is not None else range(len(transactions))
            table.set_rows([*listed, *pending_rows])
            table.move_to(0)
            self._listed = len(listed)
        else:
            gone = [row for row in table.pending if row not in pending_rows]
            table.pending = pending_rows
            if gone:
                table.remove_rows(gone)
            source = positions if positions is not None else range(len(transactions))
            new = list(source[self._listed:])
            self._listed = len(source)
            table.put_rows([*new, *(row for row in pending_rows if row not in table.rows)])
        self._say(query, evicted)
        if fresh:
            self.describe_row(table.selected_id())

    def _say(self, query: str, evicted: int) -> None:
        table = self.table
        total = len(table.transactions)
        waiting = len(table.pending)
        noun = f"{title(self.protocol)} transaction" if self.listing_transactions else "exchange"
        gone = (f"{evicted:,} earlier {noun}{'s' if evicted != 1 else ''} evicted "
                f"(bounds: {MAX_TRANSACTIONS_PER_CONNECTION:,} a connection, --memory, --spool)")
        if self.conn_id is None:
            text = Text("No connection selected.", "dim")
        elif total == 0 and waiting == 0 and evicted:
            text = Text(f"No {noun} kept: {gone}.", "yellow")
        elif total == 0 and waiting == 0:
            if self.listing_transactions:
                text = Text(f"No {noun} read on this connection (yet): its bytes are in the "
                            "Stream tab (2).", "dim")
            elif self.protocol == "http2":
                text = Text("No HTTP/2 stream read on this connection (yet): its bytes are in "
                            "the Stream tab (2).", "dim")
            else:
                text = Text("No HTTP on this connection.", "dim")
        else:
            words = [f"{total:,} {noun}{'s' if total != 1 else ''}"]
            if waiting:
                words.append(f"{waiting} waiting for an answer")
            if self.positions is not None:
                words.append(f"{len(self.positions):,} match {escape_text(query)!r}")
            text = Text(" · ".join(words), "bold")
            if evicted:
                text.append(f" · {gone}", "yellow")
        if self.tls:  # from the wire (SNI): escaped; after the counts, which must stay in view
            text = Text.assemble(text, " · ", (escape_text(self.tls), "cyan"))
        summary = self.query_one("#http-summary", Static)
        if text != self._summary:  # one line high: no layout to redo
            self._summary = text
            summary.update(text, layout=False)

    @on(VirtualTable.Selected, "#exchanges, #transactions")
    def _selected(self, event: VirtualTable.Selected) -> None:
        event.stop()
        if event.table is self.table:  # (not the table that was just put away)
            self.describe_row(event.row)

    def describe_row(self, row: int | None) -> None:
        table = self.table
        view = self.query_one(LinesView)
        if row is None:
            view.set_text(Text())
            return
        if isinstance(table, TransactionsTable):
            found = table.transaction(row)
            view.set_text(transaction_text(found) if found is not None else Text())
            return
        if row < 0:
            req = table.pending.get(row)
            out = Text("waiting for the answer\n\n", "yellow")
            if req is not None:
                out.append_text(message_text(req))
            view.set_text(out)
            return
        tx = table.transaction(row)
        if tx is not None:
            view.set_text(exchange_text(tx))


def exchange_text(tx: HttpTransaction) -> Text:
    out = Text()
    if tx.stream is not None:
        out.append(f"HTTP/2 stream {tx.stream}\n", "bold cyan")
    grpc = tx.grpc
    if grpc is not None:
        status = "no status" if grpc.status is None else f"status {grpc.status}"
        line = (f"gRPC {grpc.service}/{grpc.method}: {status}"
                + (f" ({grpc.message})" if grpc.message else "")
                + f"; messages {grpc.requests} sent ({size(grpc.request_bytes)}), "
                f"{grpc.responses} answered ({size(grpc.response_bytes)})")  # fmt: skip
        if any(grpc.compressed):
            line += f"; compressed {grpc.compressed[0]} and {grpc.compressed[1]}"
        if grpc.framing_lost:
            line += "; counts stop at a gap"
        out.append(escape_text(line) + "\n", "bold red" if grpc.status else "bold green")
    if tx.error:
        out.append("error: " + escape_text(tx.error) + "\n", "bold red")
    for note in tx.notes:
        out.append("note: " + escape_text(note) + "\n", "yellow")
    if tx.tunnel:
        out.append("After this exchange the connection is a tunnel: see the stream (2).\n", "yellow")
    out.append_text(message_text(tx.request) if tx.request else Text("(request not captured)\n", "dim"))
    out.append("\n")
    out.append_text(message_text(tx.response) if tx.response else Text("(no response)\n", "dim"))
    return out
