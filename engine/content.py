"""Undo an HTTP body's content-codings for display, on demand, within a fixed output bound.

The body view asks for this when the user opens a message; nothing on the capture path calls it.
`decode_body` undoes the codings a Content-Encoding header lists (gzip, deflate, br, identity),
last applied first, and says what it undid, whether the result is cut, and why decoding stopped
if it failed. `looks_textual` picks the text or the hex view; `pretty_json` indents a JSON body.

It must never:
- raise, whatever the bytes or the header: a failure is an `error` line next to what decoded
  before it;
- hold much more than `limit` bytes of output at once, however well the body compresses (a few
  KiB of gzip can expand to gigabytes): every decompressor is asked for at most `_STEP` bytes a
  call, and decoding stops as soon as the output passes `limit`;
- do I/O, or import anything from the UI.
"""

from __future__ import annotations

import codecs
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import brotli

from engine.tls import escape

DEFAULT_LIMIT: Final = 4 * 1024 * 1024
MAX_CODINGS: Final = 8  # real servers stack at most two; each layer costs up to `limit` of work

_STEP: Final = 64 * 1024  # most output asked of a decompressor in one call
_PIECE: Final = 16 * 1024  # most compressed input handed to a decompressor in one call
_GZIP_MAGIC: Final = b"\x1f\x8b"
_WBITS_GZIP: Final = 16 + zlib.MAX_WBITS
_WBITS_ZLIB: Final = zlib.MAX_WBITS
_WBITS_RAW: Final = -zlib.MAX_WBITS

_TEXT_SAMPLE: Final = 8 * 1024  # looks_textual judges this many leading bytes
_WHITESPACE: Final = frozenset(b"\t\n\r\f\v")


@dataclass(frozen=True, slots=True)
class DecodedBody:
    data: bytes  # decoded bytes, at most `limit` of them
    encodings: tuple[str, ...]  # the content-codings undone, in the order they were undone
    truncated: bool  # `data` is not the whole decoded body: cut at `limit`, or the input was cut
    error: str | None  # one line on why decoding stopped part way; None when it did not


@dataclass(frozen=True, slots=True)
class _Stage:
    """What undoing one coding gave, at most `limit` bytes of it."""

    data: bytes
    cut: bool = False  # output stopped short of the end of what the input encodes
    error: str | None = None


def decode_body(
    body: bytes,
    content_encoding: str | None,
    limit: int = DEFAULT_LIMIT,
    body_complete: bool = True,
) -> DecodedBody:
    """Undo the codings listed in `content_encoding` (a header value such as "gzip, br").

    `body_complete` is False when the capture holds only the start of the body; the body then
    decodes as far as it goes, marked truncated but not in error. An unknown coding stops
    decoding there: `data` is what the body was before it, with an error naming the coding.
    """
    limit = max(0, limit)
    codings = _parse_codings(content_encoding)
    if len(codings) > MAX_CODINGS:
        return DecodedBody(
            body[:limit],
            (),
            not body_complete or len(body) > limit,
            f"too many content-codings ({len(codings)}; at most {MAX_CODINGS} are undone)",
        )
    data = body
    complete = body_complete
    truncated = not body_complete
    undone: list[str] = []
    error: str | None = None
    for coding in reversed(codings):
        if coding == "identity":
            continue
        undo = _DECODERS.get(coding)
        if undo is None:
            error = error or f"unknown content-coding '{_printable(coding)}'"
            break
        undone.append(coding)
        if not data:
            # HEAD answers, 204s and 304s often carry Content-Encoding over an empty body.
            continue
        stage = undo(data, limit, complete)
        data = stage.data
        if stage.cut:
            complete = False
            truncated = True
        error = error or stage.error
    if len(data) > limit:
        data = data[:limit]
        truncated = True
    return DecodedBody(bytes(data), tuple(undone), truncated, error)


def looks_textual(data: bytes) -> bool:
    """Whether `data` reads as text (so the text view suits it better than a hex dump).

    Judged on the first few KiB: text is UTF-8 (a multi-byte character cut at the end of the
    sample is allowed) with few control characters, or, in another 8-bit charset, mostly
    printable ASCII. A NUL byte means binary.
    """
    sample = data[:_TEXT_SAMPLE]
    if not sample:
        return True
    if 0 in sample:
        return False
    try:
        text = _decode_utf8_prefix(sample)
    except UnicodeDecodeError:
        printable = sum(1 for b in sample if 0x20 <= b < 0x7F or b in _WHITESPACE)
        return printable * 10 >= len(sample) * 9
    controls = sum(1 for ch in text if _is_control(ch))
    return controls * 10 <= len(text)


def pretty_json(data: bytes, limit: int) -> str | None:
    """`data` indented by two spaces if it parses as JSON, else None; at most `limit` characters.

    A rendering longer than `limit` is cut there (indentation can grow a deeply nested document
    many times over, so it is produced piece by piece and never built whole). Characters that
    could act on a terminal (C1 controls, DEL, line and paragraph separators, bidi overrides) are
    written as JSON escapes, so the result stays valid JSON wherever it was not cut.
    """
    try:
        value = json.loads(data)
        pieces: list[str] = []
        size = 0
        encoder = json.JSONEncoder(ensure_ascii=False, indent=2)
        for piece in encoder.iterencode(value):
            pieces.append(piece.translate(_JSON_UNSAFE))
            size += len(pieces[-1])
            if size >= limit:
                break
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and integers longer than Python will convert.
        return None
    return "".join(pieces)[:limit]


def _decode_utf8_prefix(sample: bytes) -> str:
    """Decode `sample` as UTF-8, allowing only its last character to be cut short."""
    return codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)


def _parse_codings(header: str | None) -> list[str]:
    if not header:
        return []
    return [token.strip(" \t").lower() for token in header.split(",") if token.strip(" \t")]


def _printable(name: str) -> str:
    shown = escape(name.encode("utf-8", "surrogateescape")[:40])
    return shown + ("..." if len(name) > 40 else "")


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return (code < 0x20 and code not in _WHITESPACE) or 0x7F <= code < 0xA0


_JSON_UNSAFE: Final = {
    code: f"\\u{code:04x}"
    for code in [
        *range(0x7F, 0xA0),  # DEL and C1 controls: json escapes only C0
        0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),  # bidi marks, overrides
        0x2028, 0x2029,  # line and paragraph separators
    ]
}


# --- gzip and deflate --------------------------------------------------------------------------


def _inflate_stream(body: bytes, start: int, wbits: int, out: bytearray, limit: int) -> int | None:
    """Inflate the one zlib/gzip/raw-deflate stream that begins at `body[start]` onto `out`.

    Returns the offset just past the stream's end, or None when the output passed `limit` or the
    input ran out first (`len(out) > limit` tells which). Raises zlib.error on corrupt data.
    """
    inflater = zlib.decompressobj(wbits)
    pos = start
    pending = b""
    while True:
        if not pending and pos < len(body):
            pending = body[pos : pos + _PIECE]
            pos += len(pending)
        # Asking with empty input still drains what zlib holds back once input has run out.
        chunk = inflater.decompress(pending, _STEP)
        stalled = not chunk and len(inflater.unconsumed_tail) == len(pending)
        pending = inflater.unconsumed_tail
        out += chunk
        if len(out) > limit:
            return None
        if inflater.eof:
            return pos - len(inflater.unused_data)
        if stalled:  # input used up (no progress on input left is not possible, but never spin)
            return None


def _gunzip(body: bytes, limit: int, complete: bool) -> _Stage:
    out = bytearray()
    start = 0
    while True:
        try:
            end = _inflate_stream(body, start, _WBITS_GZIP, out, limit)
        except zlib.error as exc:
            return _stage(out, limit, cut=True, error=f"gzip: corrupt data ({exc})")
        if end is None:
            return _ended_early(out, limit, complete, "gzip")
        head = body[end : end + len(_GZIP_MAGIC)]
        if not head:
            return _stage(out, limit)
        if _GZIP_MAGIC.startswith(head):
            start = end  # another member: concatenated gzip streams decode as one
            continue
        trailing = body[end:]
        if not trailing.strip(b"\x00"):
            return _stage(out, limit)  # zero padding after the last member, as gzip(1) allows
        return _stage(out, limit, error=f"gzip: {len(trailing)} bytes of trailing data")


def _inflate(body: bytes, limit: int, complete: bool) -> _Stage:
    """"deflate" means zlib-wrapped (RFC 9110), but many servers send raw deflate: try both."""
    wrapped = _inflate_once(body, _WBITS_ZLIB, limit, complete)
    if wrapped.error is None:
        return wrapped
    raw = _inflate_once(body, _WBITS_RAW, limit, complete)
    if raw.error is None or len(raw.data) > len(wrapped.data):
        return raw
    return wrapped


def _inflate_once(body: bytes, wbits: int, limit: int, complete: bool) -> _Stage:
    out = bytearray()
    try:
        end = _inflate_stream(body, 0, wbits, out, limit)
    except zlib.error as exc:
        return _stage(out, limit, cut=True, error=f"deflate: corrupt data ({exc})")
    if end is None:
        return _ended_early(out, limit, complete, "deflate")
    if end < len(body):
        return _stage(out, limit, error=f"deflate: {len(body) - end} bytes of trailing data")
    return _stage(out, limit)


# --- brotli ------------------------------------------------------------------------------------


def _unbrotli(body: bytes, limit: int, complete: bool) -> _Stage:
    stage, failed_at = _unbrotli_from(body, limit, complete, len(body))
    if failed_at is None:
        return stage
    # A failed brotli call loses its output and cannot say where in its input it failed. Decode
    # again, feeding the piece that failed a byte at a time, to keep all that decoded before the
    # bad byte and to tell trailing data from corruption.
    stage, _ = _unbrotli_from(body, limit, complete, failed_at)
    return stage


def _unbrotli_from(
    body: bytes, limit: int, complete: bool, bytewise_from: int
) -> tuple[_Stage, int | None]:
    """Undo brotli, feeding `_PIECE` bytes a call up to `bytewise_from`, then one byte a call.

    Also returns, on corrupt data, the offset of the piece whose call failed.
    """
    decompressor = brotli.Decompressor()
    out = bytearray()
    pos = 0
    piece_at = 0
    try:
        while len(out) <= limit:
            if pos < len(body) and decompressor.is_finished():
                trailing = len(body) - pos
                return _stage(out, limit, error=f"br: {trailing} bytes of trailing data"), None
            piece = b""
            # Once an output limit is hit, brotli wants empty input until it has drained.
            if pos < len(body) and decompressor.can_accept_more_data():
                stop = min(pos + _PIECE, bytewise_from) if pos < bytewise_from else pos + 1
                piece_at = pos
                piece = body[pos:stop]
                pos += len(piece)
            chunk = decompressor.process(piece, output_buffer_limit=_STEP)
            out += chunk
            if not chunk and not piece:
                break
    except brotli.error as exc:
        error = f"br: corrupt data ({exc})"
        return _stage(out, limit, cut=True, error=error), piece_at
    if len(out) <= limit and decompressor.is_finished():
        return _stage(out, limit), None
    return _ended_early(out, limit, complete, "br"), None


# --- shared ------------------------------------------------------------------------------------


def _stage(out: bytearray, limit: int, cut: bool = False, error: str | None = None) -> _Stage:
    """Freeze `out` as a stage's output, cut at `limit` (in place, so it is copied only once)."""
    if len(out) > limit:
        del out[limit:]
        cut = True
    return _Stage(bytes(out), cut, error)


def _ended_early(out: bytearray, limit: int, complete: bool, coding: str) -> _Stage:
    """The stream stopped before its end: at `limit` (fine), or because its input ran out."""
    if len(out) > limit or not complete:
        return _stage(out, limit, cut=True)
    return _stage(out, limit, cut=True, error=f"{coding}: compressed body ends early")


_DECODERS: Final[dict[str, Callable[[bytes, int, bool], _Stage]]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _inflate,
    "br": _unbrotli,
}
