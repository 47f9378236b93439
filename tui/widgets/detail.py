"""The detail pane of the selected connection: its HTTP exchanges (the stream is tui.widgets.stream).

Every byte shown here came from the wire: it goes through tui.escape before it becomes text, and
is wrapped in rich Text objects, which Textual never parses for markup.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from engine.content import decode_message_body, looks_textual, pretty_json
from engine.events import HttpRequest, HttpResponse, HttpTransaction
from tui.escape import escape_bytes, escape_rendered, escape_text, hexdump_lines
from tui.widgets.connections import size

BODY_SHOWN = 64 * 1024


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}ms"


def message_text(message: HttpRequest | HttpResponse) -> Text:
    """Start line, headers and body of one message, escaped."""
    out = Text()
    if isinstance(message, HttpRequest):
        out.append(escape_text(f"{message.method} {message.target} HTTP/{message.version}"), "bold")
    else:
        out.append(escape_text(f"HTTP/{message.version} {message.status} {message.reason}"), "bold")
        for status, reason, _ts in message.interim:
            out.append(escape_text(f"   (after {status} {reason})"), "dim")
    out.append("\n")
    for name, value in message.headers:
        out.append(escape_text(name), "bold")
        out.append(": " + escape_text(value) + "\n")
    out.append("\n")
    facts = [f"body {size(message.body_bytes)}"]
    if message.body_missing:
        facts.append(f"{size(message.body_missing)} never captured")
    if not message.complete:
        facts.append("incomplete")
    if message.body_bytes:
        decoded = decode_message_body(message, BODY_SHOWN)
        if decoded.encodings:
            facts.append("decoded " + "+".join(decoded.encodings))
        if decoded.truncated:
            facts.append("truncated")
        if decoded.error:
            facts.append(escape_text(decoded.error))
        out.append("[" + ", ".join(facts) + "]\n", "dim")
        if message.body_gaps and not decoded.encodings:
            out.append_text(body_with_gaps(decoded.data, message.body_gaps))
        else:
            out.append_text(body_text(decoded.data))
    elif facts[1:]:
        out.append("[" + ", ".join(facts) + "]\n", "dim")
    return out


def body_with_gaps(data: bytes, gaps: tuple[tuple[int, int], ...]) -> Text:
    """A body with a line where each run of bytes never captured fell (an encoded body cannot
    be shown this way: its decoding stops at the first gap)."""
    out = Text()
    start = 0
    for at, missing in gaps:
        if at > len(data):
            break  # past what is shown
        out.append_text(body_text(data[start:at]))
        out.append(f"⟂ {missing} bytes never captured\n", "bold red")
        start = at
    out.append_text(body_text(data[start:]))
    return out


def body_text(data: bytes) -> Text:
    if not data:
        return Text()
    if looks_textual(data):
        pretty = pretty_json(data, BODY_SHOWN)
        if pretty is not None:
            # JSON has escaped the strings' controls and backslashes already (and pretty_json the
            # C1 controls): escaping its backslashes again would show every escape doubled.
            return Text(escape_rendered(pretty, keep_newlines=True) + "\n")
        return Text(escape_bytes(data, keep_newlines=True) + "\n")
    return Text("\n".join(hexdump_lines(data[:4096])) + "\n", "dim")


class HttpView(Vertical):
    """The exchanges of one connection, and the selected one in full."""

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", id="http-table")
        table.add_columns("#", "method", "target", "status", "req", "resp", "wait", "total", "")
        yield table
        with VerticalScroll(id="http-message"):
            yield Static(id="http-text")

    conn_id: int | None = None

    def show(self, conn_id: int | None, transactions: list[HttpTransaction]) -> None:
        """Show a connection's exchanges; for the same connection, add only the new ones."""
        table = self.query_one("#http-table", DataTable)
        shown = table.row_count
        if conn_id != self.conn_id or shown > len(transactions):
            self.conn_id = conn_id
            table.clear()
            shown = 0
        for tx in transactions[shown:]:
            req, resp = tx.request, tx.response
            table.add_row(
                str(tx.index),
                escape_text(req.method) if req else "—",
                escape_text(req.target)[:60] if req else "—",
                str(resp.status) if resp else "—",
                size(req.body_bytes) if req else "",
                size(resp.body_bytes) if resp else "",
                _ms(tx.wait),
                _ms(tx.duration),
                "tunnel" if tx.tunnel else ("error" if tx.error else ("note" if tx.notes else "")),
                key=str(tx.index),
            )
        if shown == 0 and transactions:
            self.describe(transactions[0])
        elif not transactions:
            self.query_one("#http-text", Static).update(Text("No HTTP on this connection.", "dim"))

    def describe(self, tx: HttpTransaction) -> None:
        out = Text()
        if tx.error:
            out.append("error: " + escape_text(tx.error) + "\n", "bold red")
        for note in tx.notes:
            out.append("note: " + escape_text(note) + "\n", "yellow")
        if tx.tunnel:
            out.append("After this exchange the connection is a tunnel: see the stream (2).\n", "yellow")
        out.append_text(message_text(tx.request) if tx.request else Text("(request not captured)\n", "dim"))
        out.append("\n")
        out.append_text(message_text(tx.response) if tx.response else Text("(no response)\n", "dim"))
        self.query_one("#http-text", Static).update(out)
