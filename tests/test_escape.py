"""tui.escape: the one escaping rule, and the views that show already-escaped text escaping once."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sources import Packet
from tui.escape import escape_bytes, escape_rendered, escape_text
from tui.widgets.detail import body_text
from tui.widgets.packets import dissect

# Every printable ASCII character but the backslash, and nothing else, shown as itself.
INERT = set(map(chr, range(0x20, 0x7F))) - {"\\"}


@pytest.mark.parametrize(
    ("wire", "shown"),
    [
        (b"plain text", "plain text"),
        (b"\x1b]2;title\x07", r"\x1b]2;title\x07"),
        (b"a\r\n\tb\x00", r"a\r\n\tb\x00"),
        (b"\x7f\x80\x9b\x9f", r"\x7f\x80\x9b\x9f"),  # DEL and the C1 controls
        (b"\\x1b", r"\\x1b"),  # typed on the wire: the backslash doubled
        (b"\\", r"\\"),
    ],
)
def test_bytes_and_text_follow_the_same_rule(wire: bytes, shown: str) -> None:
    assert escape_bytes(wire) == shown
    assert escape_text(wire.decode("latin-1")) == shown


def test_the_upper_half_as_bytes_and_as_latin1_text() -> None:
    assert escape_bytes(b"caf\xe9\xa0\xff") == r"caf\xe9\xa0\xff"
    assert escape_text(b"caf\xe9\xa0\xff".decode("latin-1")) == "caf\xe9\xa0\xff"  # letters


def test_newlines_kept_where_asked() -> None:
    assert escape_bytes(b"a\tb\nc\r\n", keep_newlines=True) == "a\tb\nc\\r\n"
    assert escape_rendered("a\tb\n\x1b\\n", keep_newlines=True) == "a\tb\n\\x1b\\n"


@given(st.binary(max_size=200))
def test_escaped_bytes_are_inert_and_reversible(wire: bytes) -> None:
    shown = escape_bytes(wire)
    assert set(shown) <= INERT | {"\\"}
    assert codecs.escape_decode(shown.encode())[0] == wire


@given(st.binary(max_size=200))
def test_escaped_latin1_text_is_inert_and_reversible(wire: bytes) -> None:
    shown = escape_text(wire.decode("latin-1"))
    assert all(ch in INERT or ch == "\\" or "\xa0" <= ch <= "\xff" for ch in shown)
    assert codecs.escape_decode(shown.encode("latin-1"))[0] == wire


@given(st.text(max_size=200))
def test_rendered_text_keeps_its_backslashes_and_loses_its_controls(text: str) -> None:
    shown = escape_rendered(text)
    assert shown.count("\\") >= text.count("\\")
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in shown)
    if not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        assert shown == text


def test_a_json_body_shows_its_escapes_once() -> None:
    body = b'{"path": "C:\\\\temp", "quote": "say \\"hi\\"", "esc": "\\u001b[2J", "c1": "\xc2\x9b"}'
    shown = str(body_text(body))
    assert '"path": "C:\\\\temp"' in shown  # JSON's own escape of one backslash, not four
    assert '"quote": "say \\"hi\\""' in shown
    assert '"esc": "\\u001b[2J"' in shown
    assert '"c1": "\\u009b"' in shown  # pretty_json escaped the C1 control
    assert "\x1b" not in shown and "\x9b" not in shown


def test_a_plain_text_body_doubles_the_backslashes_sent() -> None:
    shown = str(body_text(b"say \\x1b and \x1b\n"))
    assert shown == "say \\\\x1b and \\x1b\n\n"  # the view adds a line end


def test_scapy_dissection_shows_the_payload_escaped_once() -> None:
    from scapy.all import IP, TCP, Ether, Raw  # type: ignore[attr-defined]

    frame = bytes(Ether() / IP() / TCP() / Raw(b"GET /\x1b]0;t\x07 \\x1b HTTP/1.1\r\n"))
    shown = dissect(Packet(0, 0, 1, len(frame), frame))
    # scapy writes the payload as a Python bytes literal; that escaping is shown as it is.
    assert "load      = b'GET /\\x1b]0;t\\x07 \\\\x1b HTTP/1.1\\r\\n'" in shown
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
