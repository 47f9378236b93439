r"""Making bytes and text from the wire safe to show on a terminal: the one place they are escaped.

Nothing from a packet may reach the terminal raw: an ESC sequence in an HTTP header could retitle
the window, move the cursor or worse. The engine never escapes: it keeps wire text as text, its
bytes decoded as Latin-1 (one character per byte, nothing lost). Whatever the UI or the headless
text output shows from the wire goes through this module once, where it is shown; NDJSON does not
(json escapes control characters itself).

The rule, for bytes (`escape_bytes`) and for text decoded from them (`escape_text`):
- printable ASCII passes as is, except the backslash;
- the backslash itself is written `\\`, so an escape written here (`\x1b`: one ESC byte on the
  wire) can be told from the same four characters sent on the wire (shown `\\x1b`);
- tab, newline and carriage return are `\t`, `\n`, `\r` (tab and newline pass as they are where
  a caller asks: multi-line views);
- every other control character, C0, DEL and C1 (0x80-0x9F: some terminals take 0x9B for CSI),
  is `\xNN`;
- the rest of the upper half: `escape_bytes` writes each byte as `\xNN` (a byte stream has no
  encoding), `escape_text` shows 0xA0-0xFF as the Latin-1 characters they were decoded to
  (0xE9 as é): printable, and inert on a terminal.
The escapes are Python's: `codecs.escape_decode` turns what `escape_bytes` wrote, or what
`escape_text` wrote encoded as Latin-1, back into the bytes.

Text that another encoder has already escaped (scapy's dissection, which shows payloads as
Python byte literals; a JSON body re-encoded by engine.content.pretty_json) goes through
`escape_rendered` instead: its backslashes are that encoder's escapes, so they pass, and any
control character still left is escaped as above. Escaping it as wire text would escape every
escape twice (a JSON `\"` would show as `\\"`).
"""

from __future__ import annotations

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"}


def _table(keep_newlines: bool) -> list[str]:
    table = []
    for b in range(256):
        if keep_newlines and b in (0x09, 0x0A):
            table.append(chr(b))
        elif b in _NAMED:
            table.append(_NAMED[b])
        elif 0x20 <= b < 0x7F:
            table.append(chr(b))
        else:
            table.append(f"\\x{b:02x}")
    return table


_INLINE = _table(keep_newlines=False)
_MULTILINE = _table(keep_newlines=True)


def escape_bytes(data: bytes, keep_newlines: bool = False) -> str:
    """Bytes as a string with only printable ASCII (plus tab/newline if asked) left as is."""
    table = _MULTILINE if keep_newlines else _INLINE
    return "".join([table[b] for b in data])


# C0 and C1 controls, DEL and the backslash, for str.translate; everything else passes.
_TEXT = {o: _NAMED.get(o, f"\\x{o:02x}") for o in [*range(0x20), *range(0x7F, 0xA0), 0x5C]}


def escape_text(text: str) -> str:
    """Text from the wire (its bytes decoded as Latin-1) with controls and the backslash escaped."""
    return text.translate(_TEXT)


# The same without the backslash; and for multi-line text, without tab and newline.
_RENDERED = {o: v for o, v in _TEXT.items() if o != 0x5C}
_RENDERED_MULTILINE = {o: v for o, v in _RENDERED.items() if o not in (0x09, 0x0A)}


def escape_rendered(text: str, keep_newlines: bool = False) -> str:
    """Text already escaped by its own encoder (repr, JSON): control characters left escaped,
    backslashes kept (they are the encoder's), tab and newline kept if asked."""
    return text.translate(_RENDERED_MULTILINE if keep_newlines else _RENDERED)


def hexdump_lines(data: bytes, offset: int = 0, width: int = 16) -> list[str]:
    """Offset, hex and ASCII columns; non-printable bytes are dots in the ASCII column."""
    lines = []
    for i in range(0, len(data), width):
        row = data[i : i + width]
        hexes = " ".join(f"{b:02x}" for b in row)
        if width == 16 and len(row) > 8:
            hexes = hexes[:23] + " " + hexes[23:]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        lines.append(f"{offset + i:08x}  {hexes:<{width * 3}} |{text}|")
    return lines
