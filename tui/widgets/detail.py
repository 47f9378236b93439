"""How the HTTP tab writes out a message: start line, headers, and the body decoded, as text,
pretty JSON or a hex dump (the stream is tui.widgets.stream)."""

from __future__ import annotations

from rich.text import Text

from engine.content import decode_message_body, looks_textual, pretty_json
from engine.events import HttpRequest, HttpResponse
from tui.escape import escape_bytes, escape_rendered, escape_text, hexdump_lines
from tui.widgets.connections import size

BODY_SHOWN = 64 * 1024


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
    if message.trailers:
        out.append("\ntrailers\n", "dim")
        for name, value in message.trailers:
            out.append(escape_text(name), "bold")
            out.append(": " + escape_text(value) + "\n")
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
