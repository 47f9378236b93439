"""Making bytes from the wire safe to show on a terminal.

Nothing from a packet may reach the terminal raw: an ESC sequence in an HTTP header could retitle
the window, move the cursor or worse. Printable ASCII passes; tab and newline pass where a caller
allows them; every other byte becomes a visible escape (\\x1b, \\r, \\x00).
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
    """A string that came from the wire (already decoded) with control characters escaped."""
    return text.translate(_TEXT)


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
