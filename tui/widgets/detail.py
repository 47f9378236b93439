"""How HTTP messages and the reassembled stream of the selected connection are written out.

Every byte shown here came from the wire: it goes through tui.escape before it becomes text, and
is wrapped in rich Text objects, which Textual never parses for markup.
"""

from __future__ import annotations

from bisect import bisect_left

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, RichLog, Static

from engine.content import decode_message_body, looks_textual, pretty_json
from engine.events import HttpRequest, HttpResponse, HttpTransaction
from engine.tcp import Resent
from tui.escape import escape_bytes, escape_rendered, escape_text, hexdump_lines
from tui.messages import StreamChunk
from tui.widgets.connections import size

BODY_SHOWN = 64 * 1024
CLIENT_STYLE = "cyan"
SERVER_STYLE = "magenta"


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


def message_marks(transactions: list[HttpTransaction]) -> dict[bool, list[tuple[int, str]]]:
    """Where each HTTP message starts in its direction's stream, and what to call it there."""
    marks: dict[bool, list[tuple[int, str]]] = {True: [], False: []}
    for tx in transactions:
        req, resp = tx.request, tx.response
        if req is not None and req.offset >= 0:
            marks[True].append((req.offset, f"request {tx.index}: {req.method} {req.target}"))
        if resp is not None and resp.offset >= 0:
            marks[False].append((resp.offset, f"response {tx.index}: {resp.status} {resp.reason}"))
    for side in marks.values():
        side.sort()
    return marks


RERENDER_LINES = 5_000  # marks that arrive for bytes already shown redraw a view up to this size


class StreamView(RichLog):
    """Both directions in arrival order, coloured by direction, as text or a hex dump, with the
    start of every HTTP message, gaps and retransmissions marked."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(wrap=False, markup=False, highlight=False, max_lines=50_000, **kwargs)  # type: ignore[arg-type]
        self.chunks: list[StreamChunk] = []
        self.hex = False
        self.endpoints = ("client", "server")
        self.marks: dict[bool, list[tuple[int, str]]] = {True: [], False: []}
        self._shown_to = {True: 0, False: 0}  # stream offset up to which each direction is drawn
        self._last_dir: bool | None = None

    def reset(self, endpoints: tuple[str, str]) -> None:
        self.chunks = []
        self.endpoints = endpoints
        self.marks = {True: [], False: []}
        self._shown_to = {True: 0, False: 0}
        self._last_dir = None
        self.clear()

    def set_marks(self, transactions: list[HttpTransaction]) -> None:
        """Mark message starts; redraw if some fall in bytes already drawn (and the view is small:
        a larger one gets them when it is drawn again, with x or on coming back to it)."""
        marks = message_marks(transactions)
        if marks == self.marks:
            return
        late = any(offset < self._shown_to[side] and (offset, label) not in self.marks[side]
                   for side, found in marks.items() for offset, label in found)
        self.marks = marks
        if late and len(self.lines) <= RERENDER_LINES:
            self._redraw(scroll=self.is_vertical_scroll_end)

    def add(self, chunks: tuple[StreamChunk, ...]) -> None:
        at_end = self.is_vertical_scroll_end or not self.chunks
        self.chunks.extend(chunks)
        for chunk in chunks:
            self._render(chunk, at_end)

    def toggle_hex(self) -> None:
        self.hex = not self.hex
        self._redraw(scroll=True)

    def _redraw(self, scroll: bool) -> None:
        self.clear()
        self._last_dir = None
        self._shown_to = {True: 0, False: 0}
        for chunk in self.chunks:
            self._render(chunk, scroll)

    def _render(self, chunk: StreamChunk, scroll: bool) -> None:
        from_client, ts, offset, data = chunk
        if isinstance(data, Resent):
            self._resent(from_client, ts, offset, data, scroll)
            return
        end = offset + (data if isinstance(data, int) else len(data))
        self._shown_to[from_client] = max(self._shown_to[from_client], end)
        if isinstance(data, int):
            self._render_part(from_client, ts, offset, data, scroll)
            return
        # Split the chunk where messages start, with a mark line before each.
        style = CLIENT_STYLE if from_client else SERVER_STYLE
        start = 0
        marks = self.marks[from_client]
        for mark, label in marks[bisect_left(marks, (offset, "")):]:
            if mark >= offset + len(data):
                break
            if mark > offset + start:
                self._render_part(from_client, ts, offset + start, data[start : mark - offset], scroll)
                start = mark - offset
            self._direction(from_client, ts, offset + start, scroll)
            self.write(Text(f"┄┄ {escape_text(label)}", f"dim {style}"), scroll_end=scroll)
        if start < len(data):
            self._render_part(from_client, ts, offset + start, data[start:], scroll)

    def _resent(self, from_client: bool, ts: float, offset: int, resent: Resent,
                scroll: bool) -> None:
        """A line where bytes came again; the data after it gets a fresh header."""
        who = "client" if from_client else "server"
        style = f"dim {CLIENT_STYLE if from_client else SERVER_STYLE}"
        if resent.differs:
            verdict, style = "DIFFERENT from the first copy, which is what is shown", "bold yellow"
        elif resent.differs is None:
            verdict = "the first copy is no longer kept to compare"
        else:
            verdict = "same as the first copy"
        self.write(Text(f"↻ {who} resent {resent.size} bytes at offset {offset} · {ts:.6f}: {verdict}",
                        style), scroll_end=scroll)
        self._last_dir = None

    def _direction(self, from_client: bool, ts: float, offset: int, scroll: bool) -> None:
        """A header line where the direction changes."""
        if from_client == self._last_dir:
            return
        self._last_dir = from_client
        src, dst = self.endpoints if from_client else self.endpoints[::-1]
        who = "client" if from_client else "server"
        style = CLIENT_STYLE if from_client else SERVER_STYLE
        self.write(Text(f"── {who} {src} → {dst} · offset {offset} · {ts:.6f}", f"bold {style}"),
                   scroll_end=scroll)

    def _render_part(self, from_client: bool, ts: float, offset: int, data: bytes | int,
                     scroll: bool) -> None:
        self._direction(from_client, ts, offset, scroll)
        if isinstance(data, int):
            self.write(Text(f"⟂ {data} bytes never captured (offset {offset})", "bold red"),
                       scroll_end=scroll)
            return
        style = CLIENT_STYLE if from_client else SERVER_STYLE
        if self.hex:
            lines = hexdump_lines(data, offset)
        else:
            # As in a follow view: CRLF breaks the line; every other byte shows as itself or as an
            # escape. The hex view (x) shows every byte.
            lines = escape_bytes(data.replace(b"\r\n", b"\n"), keep_newlines=True).split("\n")
            if lines and lines[-1] == "":
                lines.pop()
        for line in lines:
            self.write(Text(line, style), scroll_end=scroll)
