"""Undo an HTTP body's content-codings for display, on demand, within a fixed output bound.

The body view asks for this when the user opens a message; nothing on the capture path calls it.
`decode_body` undoes the codings a Content-Encoding header lists (gzip, deflate, br, identity),
last applied first, and says what it undid, whether the result is cut, and why decoding stopped
if it failed. `looks_textual` picks the text or the hex view; `pretty_json` indents a JSON body.

Stacked codings are undone as a chain of generators, each pulling small chunks from the one
before, so no coding's whole output is ever held: only the final output, up to `limit`.

It must never:
- raise, whatever the bytes or the header: a failure is an `error` line next to what decoded
  before it;
- hold more than the output (up to `limit`, twice over while it becomes `bytes`) and a few
  chunks, however well the body compresses (a few KiB of gzip expand to gigabytes): every
  decompressor is asked for at most `_STEP` bytes a call, and the chain stops being pulled as
  soon as the output passes `limit`, or inner decoders make more than `_Meter` allows;
- do I/O, or import anything from the UI.
"""

from __future__ import annotations

import codecs
import itertools
import json
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import brotli

from engine.events import HttpRequest, HttpResponse

DEFAULT_LIMIT: Final = 4 * 1024 * 1024
MAX_CODINGS: Final = 8  # real servers stack at most two
_WORK_FACTOR: Final = 2  # each inner decoder of a chain may make this many times limit + _STEP

_STEP: Final = 64 * 1024  # most output asked of a decompressor in one call
_PIECE: Final = 16 * 1024  # the body is fed to the first decoder in pieces of this size
# Brotli is fed in small pieces, so that the end of its stream shows close to where it is.
_BROTLI_PIECE: Final = 1024
_BROTLI_REPLAY: Final = 1024 * 1024  # most brotli input kept to decode again (see _unbrotli_again)
_TRAILING_LOOK: Final = 64 * 1024  # most trailing data counted after the end of a stream
_GZIP_MAGIC_FIRST: Final = 0x1F
_WBITS_GZIP: Final = 16 + zlib.MAX_WBITS
_WBITS_ZLIB: Final = zlib.MAX_WBITS
_WBITS_RAW: Final = -zlib.MAX_WBITS

_TEXT_SAMPLE: Final = 8 * 1024  # looks_textual judges this many leading bytes
_WHITESPACE: Final = frozenset(b"\t\n\r\f\v")


@dataclass(frozen=True, slots=True)
class DecodedBody:
    """A body with its content-codings undone, as far as that went."""

    data: bytes  # decoded bytes, at most `limit` of them
    encodings: tuple[str, ...]  # the content-codings undone, in the order they were undone
    truncated: bool  # `data` is not the whole decoded body: cut at `limit`, or the input was cut
    error: str | None  # one line on why decoding stopped part way; None when it did not


@dataclass(slots=True)
class _Progress:
    """How one coding's stream went, written by its decoder as the chain is pulled."""

    coding: str
    starved: bool = False  # its input ran out before the end of the stream
    broken: bool = False  # corrupt data stopped it; its output ends before the failure
    error: str | None = None  # corrupt or trailing data


@dataclass(slots=True)
class _Meter:
    """Bytes made by the inner decoders of a chain (all but the last), against a budget.

    The output bound alone does not bound the work: a decoder can swallow a flood of input and
    give out nothing (empty gzip members, brotli metadata blocks), and the decoder before it can
    make that flood from a small body. Compressed data is seldom larger than what it decodes to,
    so honest stacked codings need about `limit` bytes from each inner decoder: twice that is
    the budget.
    """

    budget: int = 0
    spent: int = 0
    exhausted: bool = False


_Chunks = Generator[bytes, None, None]
_Decoder = Callable[[Iterable[bytes], _Progress], _Chunks]


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
    An empty body is empty whatever the codings (HEAD answers, 204s and 304s often name one).
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
    decoders: list[tuple[str, _Decoder]] = []
    unknown: str | None = None
    for coding in reversed(codings):
        if coding == "identity":
            continue
        decoder = _DECODERS.get(coding)
        if decoder is None:
            unknown = f"unknown content-coding '{_shortened(coding)}'"
            break
        decoders.append((coding, decoder))
    stages = [_Progress(coding) for coding, _ in decoders]
    # What the last decoder makes is bounded by `limit`; what the others make, by the meter.
    meter = _Meter(budget=_WORK_FACTOR * (len(decoders) - 1) * (limit + _STEP))
    chain = _pieces(body, _PIECE)
    for index, ((_, decoder), stage) in enumerate(zip(decoders, stages, strict=True)):
        chain = decoder(chain, stage)
        if index < len(decoders) - 1:
            chain = _metered(chain, meter)
    out = bytearray()
    for chunk in chain:
        out += chunk
        if len(out) > limit:
            break
    chain.close()
    truncated = not body_complete or len(out) > limit
    del out[limit:]
    error = None
    input_complete = body_complete and not meter.exhausted
    for stage in stages:
        error = error or stage.error
        if stage.starved and input_complete:
            error = error or f"{stage.coding}: compressed body ends early"
        if stage.starved or stage.broken:
            input_complete = False
            truncated = True
    if meter.exhausted:
        truncated = True
        error = error or "decoding stopped: inner content-codings made far more than came out"
    undone = tuple(stage.coding for stage in stages)
    return DecodedBody(bytes(out), undone, truncated, error or unknown)


def looks_textual(data: bytes) -> bool:
    """Whether `data` reads as text (so the text view suits it better than a hex dump).

    Judged on the first few KiB: text is UTF-8 (a multi-byte character cut at the end of the
    sample is allowed) with few control characters, or else nearly all printable Latin-1.
    A NUL byte means binary.
    """
    sample = data[:_TEXT_SAMPLE]
    if not sample:
        return True
    if 0 in sample:
        return False
    try:
        text = _decode_utf8_prefix(sample)
    except UnicodeDecodeError:
        # Latin-1 and its kin: letters from 0xA0 up, everything else printable ASCII. Binary data
        # has about a quarter of its bytes outside that, and control bytes among them.
        printable = sum(1 for b in sample if 0x20 <= b < 0x7F or b >= 0xA0 or b in _WHITESPACE)
        return printable * 20 >= len(sample) * 19
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


def _shortened(name: str) -> str:
    """A coding's name for the error line: as sent (the display escapes it), and not too long."""
    return name[:40] + ("..." if len(name) > 40 else "")


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return (code < 0x20 and code not in _WHITESPACE) or 0x7F <= code < 0xA0


_C1_CONTROLS: Final = range(0x7F, 0xA0)  # and DEL: json escapes only the C0 controls
_BIDI_CONTROLS: Final = (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_SEPARATORS: Final = (0x2028, 0x2029)  # line and paragraph separators
_JSON_UNSAFE: Final = {
    code: f"\\u{code:04x}" for code in (*_C1_CONTROLS, *_BIDI_CONTROLS, *_SEPARATORS)
}


# --- decoders: generators from input chunks to output chunks of at most about _STEP bytes ------


def _pieces(data: bytes, size: int) -> _Chunks:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _metered(chunks: _Chunks, meter: _Meter) -> _Chunks:
    for chunk in chunks:
        meter.spent += len(chunk)
        if meter.spent > meter.budget:
            meter.exhausted = True
            return
        yield chunk


def _inflate_chunk(inflater: zlib._Decompress, data: bytes) -> _Chunks:
    """All `inflater` makes of `data`, `_STEP` bytes at a time; stops at the end of its stream."""
    while True:
        chunk = inflater.decompress(data, _STEP)
        data = inflater.unconsumed_tail
        if chunk:
            yield chunk
        # Less than asked for, with no input left over, means zlib holds nothing back.
        if inflater.eof or (len(chunk) < _STEP and not data):
            return


def _gunzip(chunks: Iterable[bytes], progress: _Progress) -> _Chunks:
    """gzip, and several gzip members one after another, which decode as one body (RFC 1952)."""
    rest = iter(chunks)
    inflater: zlib._Decompress | None = None
    members = 0
    try:
        for chunk in rest:
            while chunk:
                if inflater is None:
                    if members and chunk[0] != _GZIP_MAGIC_FIRST:
                        # Zero padding after the last member is allowed, as gzip(1) allows it.
                        _note_trailing(progress, chunk, rest, zeros_allowed=True)
                        return
                    inflater = zlib.decompressobj(_WBITS_GZIP)
                    members += 1
                yield from _inflate_chunk(inflater, chunk)
                chunk = b""
                if inflater.eof:
                    chunk = inflater.unused_data  # what follows: another member, or not
                    inflater = None
    except zlib.error as exc:
        progress.broken = True
        progress.error = f"gzip: corrupt data ({exc})"
        return
    progress.starved = inflater is not None


def _inflate(chunks: Iterable[bytes], progress: _Progress) -> _Chunks:
    """deflate: zlib-wrapped (RFC 9110), or raw deflate, which many servers send instead.

    The two bytes of a zlib header decide: without a valid one, the stream is taken as raw.
    """
    rest = iter(chunks)
    head = b""
    inflater: zlib._Decompress | None = None
    try:
        for chunk in rest:
            if inflater is None:
                head += chunk
                if len(head) < 2:
                    continue
                inflater = zlib.decompressobj(_WBITS_ZLIB if _zlib_header(head) else _WBITS_RAW)
                chunk = head
            yield from _inflate_chunk(inflater, chunk)
            if inflater.eof:
                _note_trailing(progress, inflater.unused_data, rest)
                return
    except zlib.error as exc:
        progress.broken = True
        progress.error = f"deflate: corrupt data ({exc})"
        return
    progress.starved = bool(head)


def _zlib_header(head: bytes) -> bool:
    method, flags = head[0], head[1]
    return method & 0x0F == 8 and method >> 4 <= 7 and (method << 8 | flags) % 31 == 0


def _unbrotli(chunks: Iterable[bytes], progress: _Progress) -> _Chunks:
    pieces = _repiece(chunks, _BROTLI_PIECE)
    decompressor = brotli.Decompressor()
    # The input fed so far, to decode again after a failure; None once past _BROTLI_REPLAY.
    history: bytearray | None = bytearray()
    made = 0
    fed = False
    for piece in pieces:
        if decompressor.is_finished():
            _note_trailing(progress, piece, pieces)
            return
        fed = True
        try:
            for chunk in _unbrotli_piece(decompressor, piece):
                made += len(chunk)
                yield chunk
        except brotli.error as exc:
            if history is None:
                progress.broken = True
                progress.error = f"br: corrupt data ({exc})"
                return
            again = yield from _unbrotli_again(bytes(history), made, piece, pieces, progress)
            if again is None:
                return
            decompressor, made = again
        if history is not None:
            history += piece
            if len(history) > _BROTLI_REPLAY:
                history = None
    progress.starved = fed and not decompressor.is_finished()


def _unbrotli_again(
    history: bytes, made: int, piece: bytes, rest: Iterator[bytes], progress: _Progress
) -> Generator[bytes, None, tuple[brotli.Decompressor, int] | None]:
    """Decode `history` again, then `piece`, whose call failed, a byte at a time.

    A failing brotli call loses its output and cannot say where in its input it failed, nor
    whether its stream had ended with trailing data after it. Fed byte by byte, the end of the
    stream shows (`is_finished`) and a corrupt byte loses nothing decoded before it. The first
    `made` bytes of output were given out already and are skipped. Returns the decompressor to
    go on with and the output made so far, or None when this found the end: corrupt data, or the
    stream's end.
    """
    decompressor = brotli.Decompressor()
    skip = made
    fed = 0
    remade = 0
    try:
        for part in itertools.chain(_pieces(history, _PIECE), _pieces(piece, 1)):
            if decompressor.is_finished():  # the main loop saw no end in history: in `piece`
                _note_trailing(progress, piece[fed - len(history) :], rest)
                return None
            for chunk in _unbrotli_piece(decompressor, part):
                remade += len(chunk)
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                yield chunk[skip:]
                skip = 0
            fed += len(part)
    except brotli.error as exc:
        progress.broken = True
        progress.error = f"br: corrupt data ({exc})"
        return None
    return decompressor, max(made, remade)


def _unbrotli_piece(decompressor: brotli.Decompressor, piece: bytes) -> _Chunks:
    """All `decompressor` makes of `piece`, about `_STEP` bytes at a time (brotli's output buffer
    grows in blocks, so it may pass the limit by one)."""
    while chunk := decompressor.process(piece, output_buffer_limit=_STEP):
        yield chunk
        piece = b""  # once the limit is hit, brotli wants empty input until it has drained


# --- shared ------------------------------------------------------------------------------------


def _repiece(chunks: Iterable[bytes], size: int) -> _Chunks:
    for chunk in chunks:
        yield from _pieces(chunk, size)


def _note_trailing(
    progress: _Progress, first: bytes, rest: Iterator[bytes], zeros_allowed: bool = False
) -> None:
    """Record the bytes after the end of a stream as an error, unless there are none.

    Counts at most about `_TRAILING_LOOK` of them: upstream decoders make the rest, and making
    it only to count it could be a great deal of work.
    """
    seen = len(first)
    zeros = not first.strip(b"\x00")
    more = False
    for chunk in rest:
        if seen >= _TRAILING_LOOK:
            more = True
            break
        seen += len(chunk)
        zeros = zeros and not chunk.strip(b"\x00")
    if seen == 0 or (zeros_allowed and zeros and not more):
        return
    amount = f"at least {seen}" if more else str(seen)
    progress.error = f"{progress.coding}: {amount} bytes of trailing data"


_DECODERS: Final[dict[str, _Decoder]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _inflate,
    "br": _unbrotli,
}


def decode_message_body(
    message: HttpRequest | HttpResponse, limit: int = DEFAULT_LIMIT
) -> DecodedBody:
    """The body of an HTTP message as kept by engine.http, with its Content-Encoding undone.

    `truncated` is also set when the kept body is not the whole body: bytes were never captured,
    the message did not end, or the parser kept less than it saw (its body limit).
    """
    codings = [v for k, v in message.headers if k.lower() == "content-encoding"]
    whole = (
        message.complete and message.body_missing == 0 and len(message.body) == message.body_bytes
    )
    return decode_body(message.body, ", ".join(codings) or None, limit, body_complete=whole)
