"""HPACK's Huffman code (RFC 7541 5.2, Appendix B), decoded four bits at a time.

hpack's own decoder walks a table in interpreted Python; decoding header blocks of unique
values (real traffic) spent a third of engine.http2's time there. This module is compiled with
the engine (scripts/compile.py) and runs as the same Python without a compiler. The code itself
is hpack's table (`hpack.huffman_constants`, the RFC's): only the walk is ours.

The decoder is a small automaton: a state is a node of the code's binary tree (0 is its root);
`_STEP[state * 16 + nibble]` packs the state reached after four more bits, the symbol completed
on the way plus one (0: none; at most one, as no code is shorter than five bits) and whether
the end-of-string symbol was reached (an error). A string may end in a state on the all-ones
path from the root at most seven bits deep (the padding, RFC 7541 5.2).
"""

from __future__ import annotations

from typing import Final

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

EOS: Final = 256


def _tables() -> tuple[list[int], list[bool]]:
    left: list[int] = [-1]
    right: list[int] = [-1]
    symbol: list[int] = [-1]
    for sym in range(len(REQUEST_CODES)):
        code, length = REQUEST_CODES[sym], REQUEST_CODES_LENGTH[sym]
        node = 0
        for k in range(length - 1, -1, -1):
            children = right if (code >> k) & 1 else left
            nxt = children[node]
            if nxt < 0:
                nxt = len(symbol)
                left.append(-1)
                right.append(-1)
                symbol.append(-1)
                children[node] = nxt
            node = nxt
        symbol[node] = sym
    # Internal nodes become states (leaves are left at once for the root).
    states = [n for n in range(len(symbol)) if symbol[n] < 0]
    number = {n: i for i, n in enumerate(states)}
    step = [0] * (len(states) * 16)
    for node in states:
        for nibble in range(16):
            at, emitted, failed = node, 0, 0
            for k in range(3, -1, -1):
                at = right[at] if (nibble >> k) & 1 else left[at]
                if symbol[at] >= 0:
                    if symbol[at] == EOS:
                        failed = 1
                    emitted = symbol[at] + 1
                    at = 0
            step[number[node] * 16 + nibble] = number[at] | emitted << 9 | failed << 18
    accept = [False] * len(states)
    node = 0
    for _ in range(8):  # the root and the all-ones path, up to seven bits deep
        accept[number[node]] = True
        node = right[node]
    return step, accept


_STEP, _ACCEPT = _tables()


def decode(data: bytes) -> bytes:
    """The string a Huffman-coded HPACK literal carries. Raises ValueError when it is not one
    (the end-of-string symbol inside, or padding that is not up to seven one bits)."""
    out = bytearray()
    state = 0
    step = _STEP
    for byte in data:
        for nibble in (byte >> 4, byte & 15):
            packed = step[state * 16 + nibble]
            if packed >> 18:
                raise ValueError("the end-of-string symbol inside a Huffman-coded string")
            emitted = (packed >> 9) & 511
            if emitted:
                out.append(emitted - 1)
            state = packed & 511
    if not _ACCEPT[state]:
        raise ValueError("a Huffman-coded string that does not end with its padding")
    return bytes(out)
