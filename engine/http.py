"""HTTP/1.x exchanges from a connection's reassembled streams, parsed with h11's head readers.

An `HttpParser` is a stream consumer (see `engine.tcp.StreamConsumer`) attached to connections
that the sniffer recognised as HTTP. It reads requests from the client's stream and responses from
the server's, pairs each response with the request it answers, and emits one `HttpTransaction`
per exchange. For a live view it can also announce each request that is still waiting for its
answer (`HttpRequestSeen`), without changing how or when anything is paired.

How h11 is used, and why: h11's `Connection` is one endpoint of a conversation, so watching both
sides with it means feeding each parser the other side's events (`send()` re-serialises them).
We use h11's parsing layer instead: its receive buffer, its request-line / status-line / header
readers and its framing rules (`_body_framing`: HEAD, CONNECT, 1xx, 204 and 304 have no body;
Transfer-Encoding beats Content-Length), and read bodies ourselves (`_LengthBody`,
`_ChunkedBody`, `_CloseBody`), because an observer must also step over bytes that were never
captured and accept chunked framing with bare LF line ends, as servers do. These are private
names of h11, so the supported h11 versions are pinned in pyproject.toml and
`tests/test_http.py` checks them.

Rules this module keeps:
- A response is paired by what TCP says, never by the order in which the capture shows the two
  directions (which is not causal): it answers the oldest unanswered request whose first byte
  the server had received when it started answering, that is, one that starts before the
  acknowledgment number of the segment carrying the response's first byte. Until the client's
  stream has been read that far, the response is held (bounded in bytes and in packet time);
  its framing depends on the request's method (HEAD, CONNECT, 1xx, 204, 304), so a response is
  never read before its request is known. A response whose request the server had received but
  the capture did not show gets an exchange with no request, and a note saying so.
- Exchanges are numbered when they are paired (or found unanswered), in the order of the
  responses, so the numbers do not depend on the interleaving either. Every time comes from the
  segment that carried the byte in question, not from when the parser got to it.
- 1xx responses are kept with the exchange and do not end it. A 2xx answer to CONNECT, or 101
  Switching Protocols, turns the rest of the connection into an opaque tunnel: bytes are
  counted, not parsed.
- Each side starts unsynchronised and looks for a message start (request line or status line),
  so a capture that begins mid-message resynchronises; so does a parse error or a gap that breaks
  the framing. A gap inside a body of known length is skipped and counted as missing body bytes.
  A head cut short by a gap (a small snapshot length) still gives a record of what it showed.
- A request is announced only while its exchange has no number (nothing answered it yet), so
  its `HttpTransaction` always comes after its announcements, with the same request offset.
- Nothing here raises on any input: protocol errors become the transaction's `error`.
"""

from __future__ import annotations

import re
import types
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, cast

import h11
from h11._abnf import token
from h11._connection import _body_framing
from h11._readers import (
    _decode_header_lines,
    maybe_read_from_SEND_RESPONSE_server,
    request_line_re,
)
from h11._receivebuffer import ReceiveBuffer
from h11._util import validate

from engine.detect import HTTP2, KNOWN_METHODS, TlsHelloReader
from engine.encoded import http_record, http_row, stored_fields, stored_headers
from engine.events import (
    NO_HEADERS,
    Event,
    ExchangeRecord,
    Headers,
    HttpRequest,
    HttpRequestSeen,
    HttpResponse,
    HttpTransaction,
    from_fields,
)
from engine.http2 import Http2Parser
from engine.reassembly import NO_ACK, SNAPLEN
from engine.tcp import Connection

if TYPE_CHECKING:
    from mypy_extensions import i64

MAX_HEAD: Final = 64 * 1024
"""A header block still incomplete after this many bytes is an error (h11's own limit is 16 KiB)."""
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_HOLD = 4 * 1024 * 1024
"""Server bytes held at most while a response waits for the client's stream to reach it (the
pipeline passes Bounds.max_ooo_bytes: both are how far one stream may run ahead)."""
MAX_CHUNK_LINE: Final = 4096
MAX_LOST_RANGES: Final = 64

REQUEST_START: Final = re.compile(rb"(?:^|\n)([A-Z][A-Z0-9_-]{0,23} [^ \r\n]+ HTTP/1\.[01]\r?\n)")
# A status line is distinctive enough to be found anywhere: after lost bytes, the next response
# may follow the visible end of a body directly. A request line must start a line (a method is
# just capital letters, which a body may end with).
RESPONSE_START: Final = re.compile(rb"(HTTP/1\.[01] [0-9]{3}[ \r\n])")
# What is left of a head that a gap cut short (the snapshot length, most often).
PARTIAL_REQUEST: Final = re.compile(
    rb"([A-Z][A-Z0-9_-]{0,23}) ([^ \r\n]*)(?: HTTP/([0-9]\.[0-9]))?"
)
PARTIAL_RESPONSE: Final = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([^\r\n]*))?")
_CHUNK_SIZE: Final = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")


def _text(raw: bytes) -> str:
    # Latin-1 maps every byte to one character, so nothing is lost; escaping for the terminal is
    # the display's job (tui.escape), and JSON escapes control characters itself.
    return raw.decode("latin-1")


class _Buffer:
    """A side's bytes not read yet, oldest first. h11's ReceiveBuffer did this; its head readers
    still read through one (`_h11_head`), but the common path, compiled with this module, uses
    this one: half a dozen calls an exchange into h11's interpreted class were a tenth of the
    parsing. Taking bytes from the front of a bytearray moves its start, not its bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        return len(self.data) > 0

    def maybe_extract_at_most(self, count: int) -> bytearray | None:
        """The first `count` bytes (fewer if fewer are here), taken; None if there are none."""
        data = self.data
        out = data[:count]
        if not out:
            return None
        del data[:count]
        return out

    def skip(self, count: int) -> None:
        """Take the first `count` bytes (at most all) without looking at them."""
        del self.data[:count]


def _data(buf: _Buffer) -> bytearray:
    """The bytes waiting in a buffer, without copying them."""
    return buf.data


def _h11_head(
    buf: _Buffer, request: bool
) -> tuple[Any, list[tuple[bytes, bytes]] | None, str | None]:
    """A head read by h11's readers (through an h11 ReceiveBuffer holding a copy of the bytes),
    as `read_request_head` or h11's response reader reads it; what they took is taken from buf
    too, also when they raise."""
    h11_buf = ReceiveBuffer()
    h11_buf += buf.data
    try:
        if request:
            return read_request_head(h11_buf)
        return maybe_read_from_SEND_RESPONSE_server(h11_buf), None, None
    finally:
        taken = len(buf.data) - len(h11_buf)
        if taken:
            del buf.data[:taken]


# ---------------------------------------------------------------------- bodies


class _BadBody(Exception):
    """The body's framing is broken."""


END: Final = b""
"""What a body reader returns at the end of the body (data is never empty)."""


class _LengthBody:
    """A body of known length (Content-Length)."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def read(self, buf: _Buffer) -> bytes | bytearray | None:
        if not self.remaining:
            return END
        data = buf.maybe_extract_at_most(self.remaining)
        if data is None:
            return None
        self.remaining -= len(data)
        return data


class _CloseBody:
    """A body that ends when the stream does (HTTP/1.0 style, or no framing headers)."""

    __slots__ = ()

    def read(self, buf: _Buffer) -> bytes | bytearray | None:
        return buf.maybe_extract_at_most(len(buf))


_SIZE: Final = 0  # the states of a _ChunkedBody
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3


class _ChunkedBody:
    """Transfer-Encoding: chunked, read leniently: LF or CRLF line ends (RFC 9112 2.2 lets a
    recipient accept a bare LF, and servers send them), and blanks before a chunk extension."""

    __slots__ = ("bare_lf", "remaining", "state")

    def __init__(self) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.bare_lf = False

    def _line(self, buf: _Buffer, limit: int, what: str) -> bytes | None:
        data = _data(buf)
        end = data.find(b"\n", 0, limit + 1)
        if end < 0:
            if len(data) > limit:
                raise _BadBody(f"{what} longer than {limit} bytes")
            return None
        raw = buf.maybe_extract_at_most(end + 1)
        assert raw is not None
        if end and raw[end - 1] == 0x0D:
            return bytes(raw[: end - 1])
        self.bare_lf = True
        return bytes(raw[:end])

    def read(self, buf: _Buffer) -> bytes | bytearray | None:
        while True:
            state = self.state
            if state == _DATA:
                data = buf.maybe_extract_at_most(self.remaining)
                if data is None:
                    return None
                self.remaining -= len(data)
                if not self.remaining:
                    self.state = _DATA_END
                return data
            if state == _SIZE:
                line = self._line(buf, MAX_CHUNK_LINE, "a chunk size line")
                if line is None:
                    return None
                m = _CHUNK_SIZE.fullmatch(line)
                if m is None:
                    raise _BadBody(f'bad chunk size line "{_text(line[:40])}"')
                size = int(m.group(1), 16)
                self.state, self.remaining = (_DATA, size) if size else (_TRAILER, 0)
            elif state == _DATA_END:
                data = _data(buf)
                if not data or data == b"\r":
                    return None
                if data[:2] == b"\r\n":
                    buf.skip(2)
                elif data[0] == 0x0A:
                    buf.skip(1)
                    self.bare_lf = True
                else:
                    raise _BadBody("chunk data not followed by a line end")
                self.state = _SIZE
            else:  # trailer fields, up to an empty line
                line = self._line(buf, MAX_HEAD, "a trailer field")
                if line is None:
                    return None
                if not line:
                    return END


_BodyReader = _LengthBody | _ChunkedBody | _CloseBody


def _body_reader(kind: str, args: tuple[Any, ...]) -> _BodyReader:
    if kind == "content-length":
        return _LengthBody(args[0])
    if kind == "chunked":
        return _ChunkedBody()
    return _CloseBody()


# ---------------------------------------------------------------------- messages and exchanges


class _Partial(NamedTuple):
    """What a head cut short showed: its start line (the fields h11's events have)."""

    method: bytes = b""
    target: bytes = b""
    http_version: bytes = b""
    status_code: int = 0
    reason: bytes = b""


class _Message:
    """A request or response being read."""

    __slots__ = (
        "ack",
        "body_bytes",
        "cached",
        "chunks",
        "complete",
        "end_ts",
        "expected",
        "gaps",
        "head",
        "interim",
        "kept",
        "missing",
        "offset",
        "sent_headers",
        "told",
        "ts",
    )

    def __init__(self, head: Any, ts: float, expected: int | None, offset: int, ack: int) -> None:
        self.head = head
        self.ts = ts
        self.offset = offset  # stream offset of its first byte
        self.ack = ack  # acknowledgment number of the segment that carried its first byte
        self.end_ts: float | None = None
        self.body_bytes = 0
        self.missing = 0
        self.chunks: list[bytes | bytearray] = []
        self.kept = 0
        self.expected = expected  # the Content-Length, when the body has one
        self.complete = False
        self.interim: list[tuple[int, str, float]] = []
        self.sent_headers: list[tuple[bytes, bytes]] | None = None  # request headers as sent
        # Its HeadCache entry (_Heads.read), or one of its own: [head, decoded headers, ...].
        self.cached: list[Any] | None = None
        self.gaps: list[tuple[int, int]] | None = None  # (offset in the kept body, bytes missing)
        self.told: HttpRequest | None = None  # as announced once complete: it will not change

    def add(self, data: bytes | bytearray, max_body: int) -> None:
        n = len(data)
        self.body_bytes += n
        room = max_body - self.kept
        if room > 0:
            piece = data if n <= room else data[:room]
            self.chunks.append(piece)
            self.kept += len(piece)

    def skip(self, size: int) -> None:
        """Body bytes that were never captured: counted, and where they fell noted."""
        self.body_bytes += size
        self.missing += size
        if self.gaps is None:
            self.gaps = []
        self.gaps.append((self.kept, size))

    def body(self, stored: bool) -> bytes | bytearray:
        """The body as far as it is kept; stored (for marshal, which writes a bytearray as it
        writes bytes), a body that came in one piece as it came, not copied again."""
        chunks = self.chunks
        if stored and len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def headers(self) -> Headers:
        if self.cached is not None and self.cached[1] is not None:
            return cast(Headers, self.cached[1])
        head = self.head
        if type(head) is _Head and self.sent_headers is None:
            text = head.fields  # read as text already
        else:
            raw = self.sent_headers if self.sent_headers is not None else head.headers.raw_items()
            text = Headers(tuple([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]))
        if self.cached is not None:
            self.cached[1] = text
        return text

    def request(self) -> HttpRequest:
        if self.told is not None:
            return self.told
        return from_fields(HttpRequest, self.request_fields(False))

    def request_fields(self, stored: bool) -> list[Any]:
        """HttpRequest's fields, in order (as told, once it was); stored: its headers as an
        exchange's record keeps them."""
        if self.told is not None:
            return stored_fields(self.told) if stored else list(self.told)
        h = self.head
        headers = self.headers()
        return [
            self.ts,
            self.end_ts,
            _text(h.method),
            _text(h.target),
            _text(h.http_version),
            stored_headers(headers) if stored else headers,
            self.body_bytes,
            self.missing,
            self.body(stored),
            self.complete,
            self.offset,
            tuple(self.gaps or ()),
            (),
        ]  # (every field, as from_fields needs)

    def response(self) -> HttpResponse:
        return from_fields(HttpResponse, self.response_fields(False))

    def response_fields(self, stored: bool) -> list[Any]:
        """HttpResponse's fields, in order; stored: as request_fields."""
        h = self.head
        headers = self.headers()
        return [
            self.ts,
            self.end_ts,
            h.status_code,
            _text(h.reason),
            _text(h.http_version),
            stored_headers(headers) if stored else headers,
            self.body_bytes,
            self.missing,
            self.body(stored),
            self.complete,
            tuple(self.interim),
            self.offset,
            tuple(self.gaps or ()),
            (),
        ]


class _Exchange:
    __slots__ = ("error", "index", "interim", "notes", "request", "response", "start", "tunnel")

    def __init__(self, start: int | None) -> None:
        self.start = start  # client stream offset where its request began (None: not seen)
        self.index: int | None = None  # given when it is paired, or found unanswered
        self.request: _Message | None = None
        self.response: _Message | None = None
        self.interim: list[tuple[int, str, float]] = []
        self.error: str | None = None
        self.notes: list[str] = []
        self.tunnel = False


class _Side:
    """One direction's parsing state."""

    __slots__ = (
        "after_cut",
        "buf",
        "ended",
        "exchange",
        "loss_start",
        "lost",
        "lost_ranges",
        "marks",
        "marks_head",
        "msg",
        "offset",
        "queue",
        "reader",
        "received",
        "synced",
    )

    def __init__(self) -> None:
        self.buf = _Buffer()
        self.offset = 0  # stream offset just past the last byte given to this side (or lost)
        self.received = 0  # the same, counting what waits in `queue`
        # Where each delivered chunk still (partly) in buf began, with the time and the
        # acknowledgment number of its segment: (stream offset, ts, ack), oldest first.
        # A list from marks_head on (an empty deque would take 770 bytes).
        self.marks: list[tuple[int, float, int]] = []
        self.marks_head = 0
        self.loss_start: int | None = None  # where bytes were lost since the last message start
        self.reader: _BodyReader | None = None  # None between messages
        self.msg: _Message | None = None
        self.exchange: _Exchange | None = None
        self.synced = False
        self.lost = 0  # bytes lost since the last message start, to be noted on the next one
        # Lost or unreadable bytes, the latest MAX_LOST_RANGES (a list made at the first: most
        # connections lose nothing, and an empty deque already takes 770 bytes).
        self.lost_ranges: list[tuple[int, int]] | None = None
        self.ended = False
        # A head was cut short: bytes lost until the next message start are the rest of it, and
        # the note on that message said so already.
        self.after_cut = False
        # Events that came while the side was held (server only): ("data", ts, data, ack),
        # ("gap", ts, size, reason) or ("end", ts), in order.
        self.queue: deque[tuple[Any, ...]] | None = None

    @property
    def consumed(self) -> int:
        """Stream offset of the first byte not read yet."""
        return self.offset - len(self.buf)

    def mark_at(self, offset: int) -> tuple[float, int]:
        """(ts, ack) of the segment that carried the byte at `offset` (still buffered)."""
        marks, head = self.marks, self.marks_head
        for i in range(len(marks) - 1, head - 1, -1):
            start, ts, ack = marks[i]
            if start <= offset:
                return ts, ack
        return (marks[head][1], marks[head][2]) if len(marks) > head else (0.0, NO_ACK)

    def forget_before(self, offset: int) -> None:
        """Drop the marks of chunks that end before `offset`."""
        marks = self.marks
        head = self.marks_head
        while head + 1 < len(marks) and marks[head + 1][0] <= offset:
            head += 1
        if head > 32 and 2 * head > len(marks):  # compacted once in a while: amortised O(1)
            del marks[:head]
            head = 0
        self.marks_head = head

    def clear_marks(self) -> None:
        self.marks.clear()
        self.marks_head = 0

    def lose(self, size: int, start: int) -> None:
        """Bytes from stream offset `start` are gone (with what was buffered): resynchronise."""
        held = len(self.buf)
        self.lost += size + held
        self.note_lost(start - held, start + size)
        if self.loss_start is None:
            self.loss_start = start
        self.synced = False
        self.buf = _Buffer()
        self.reader = None

    def lost_between(self, start: int, end: int) -> bool:
        """Were bytes lost or unreadable anywhere in [start, end)?"""
        return any(s < end and e > start for s, e in self.lost_ranges or ())

    def note_lost(self, start: int, end: int) -> None:
        ranges = self.lost_ranges
        if ranges is None:
            ranges = self.lost_ranges = []
        elif len(ranges) >= MAX_LOST_RANGES:
            del ranges[0]
        ranges.append((start, end))


ANSWERED_EARLY: Final = (
    "its answer was captured too long before it and is reported as an exchange with no request"
)


class _Answer:
    """Where a response began in the client's stream (see HttpParser._answer_point). A plain
    class: compiled, making one is a C call, where a named tuple's generated __new__ is
    interpreted Python (once a response)."""

    __slots__ = ("acked", "bounded")

    def __init__(self, acked: int | None, bounded: bool = False) -> None:
        self.acked = acked  # the client offset its first segment acknowledged (None: not known)
        self.bounded = bounded  # it stopped waiting for the client's stream because of a bound


UNKNOWN: Final = _Answer(None)


def _message_start(side: _Side, buf: _Buffer, pattern: re.Pattern[bytes]) -> int | None:
    """The stream offset where the next message begins in `buf` (blank lines skipped, and after
    lost or unreadable bytes, resynchronised on `pattern`); None until its first bytes are here."""
    _skip_blank_lines(buf)
    if not buf:
        return None
    if not side.synced:
        if not _resync(side, pattern):
            return None
        side.synced = True
    return side.consumed


def _resync(side: _Side, pattern: re.Pattern[bytes]) -> bool:
    """Drop bytes up to the next message start; True once the buffer begins with one.

    Dropped bytes count as lost: the next message on this side says so.
    """
    data = _data(side.buf)
    m = pattern.search(data)
    if m is not None:
        if m.start(1):
            _drop(side, m.start(1))
        return True
    # No complete start line yet: keep the last, unfinished line, which may become one.
    drop = data.rfind(b"\n") + 1
    if len(data) - drop > MAX_HEAD:
        drop = len(data)
    if drop:
        _drop(side, drop)
    return False


def _drop(side: _Side, size: int) -> None:
    start = side.consumed
    side.lost += size
    side.note_lost(start, start + size)
    side.buf.skip(size)


def _skip_blank_lines(buf: _Buffer) -> None:
    # Empty lines between messages are tolerated (RFC 9112 2.2); h11 would call them an error.
    data = _data(buf)
    n = 0
    while n < len(data) and data[n] in b"\r\n":
        n += 1
    if n:
        buf.skip(n)


def _partial_head(data: bytes, from_client: bool, anywhere: bool) -> tuple[_Partial, list] | None:
    """The start line and the complete header lines of a head cut short, if `data` (from a
    message boundary) begins like one. Unless `anywhere`, a request must use a known method."""
    lines = data.split(b"\n")
    first = lines[0].rstrip(b"\r")
    if from_client:
        m = PARTIAL_REQUEST.match(first)
        if m is None or (not anywhere and m.group(1) not in KNOWN_METHODS):
            return None
        part = _Partial(method=m.group(1), target=m.group(2), http_version=m.group(3) or b"")
    else:
        m = PARTIAL_RESPONSE.match(first)
        if m is None:
            return None
        part = _Partial(
            http_version=m.group(1), status_code=int(m.group(2)), reason=m.group(3) or b""
        )
    headers = []
    for line in lines[1:-1]:  # the last line was cut (or is empty)
        name, sep, value = line.rstrip(b"\r").partition(b":")
        if not sep or not name or name != name.strip():
            break
        headers.append((name, value.strip(b" \t")))
    return part, headers


def read_request_head(
    buf: ReceiveBuffer,
) -> tuple[h11.Request | None, list[tuple[bytes, bytes]], str | None]:
    """h11's request-head reader, made lenient where an observer must be.

    Returns (request, headers as sent, note); request is None while the head is incomplete. The
    request given to h11's framing rules may differ from what was sent only in ways that do not
    change the framing: a missing or doubled Host (a server must refuse those, RFC 9112 3.2, but
    the observer still shows them) and empty elements of a Transfer-Encoding list, which
    RFC 9110 5.6.1 says to ignore. Raises h11.ProtocolError when the framing or the request line
    is broken; the message names the request line.
    """
    lines = buf.maybe_extract_lines()
    if lines is None:
        if buf.is_next_line_obviously_invalid_request_line():
            raise h11.LocalProtocolError("illegal request line")
        return None, [], None
    if not lines:
        raise h11.LocalProtocolError("no request line received")
    try:
        first: Any = lines[0]  # a bytearray, which h11's readers take (a cast would check it)
        fields = validate(request_line_re, first)
    except h11.LocalProtocolError:
        raise h11.LocalProtocolError(f'illegal request line "{_text(bytes(lines[0]))}"') from None
    rest: Any = lines[1:]
    sent = list(_decode_header_lines(rest))
    headers = [(k, _clean_list(v) if k.lower() == b"transfer-encoding" else v) for k, v in sent]
    note = None
    hosts = [h for h in headers if h[0].lower() == b"host"]
    if len(hosts) != 1 and fields["http_version"] == b"1.1":
        note = "no Host header" if not hosts else "several Host headers"
        headers = [h for h in headers if h[0].lower() != b"host"] + hosts[:1]
        if not hosts:
            headers.append((b"Host", b""))
    try:
        return h11.Request(headers=headers, _parsed=True, **fields), sent, note
    except h11.LocalProtocolError as e:
        raise h11.LocalProtocolError(f'{e} in "{_text(bytes(lines[0]))}"') from None


# ---------------------------------------------------------------------- plain heads, read fast

FAST_PATH = True
"""Read plain heads with `_plain_head` instead of h11 (tests compare the two)."""
FAST_HEAD: Final = 8192
"""Heads up to this size may take the fast path; longer ones always go to h11."""

# h11's grammar (h11._abnf) for a header field line: a token, a colon, then the value between
# optional blanks (spaces and tabs), made of characters that are not NUL or whitespace (\s of a
# bytes pattern: space, tab, CR, LF, FF, VT) in runs that blanks may separate. So a line is a
# field exactly when its name is a token and no NUL, CR, LF, FF or VT follows the colon; the
# value is what is left once the blanks around it are stripped.
# The field lines of a head are checked at once, in one pass: _FIELD_LINES says each is a token,
# a colon and no NUL, CR, LF, FF or VT before its CRLF. (Two counts and three searches after a
# looser pattern did the same in 1.35 us a head of 7 fields, this in 1.1.) The value's class
# is written as the ranges it allows, the printable one first: the regular expression engine
# tries a class's ranges in order for each byte, so most bytes of a value are settled by the
# first test (0.76 us for the keep-alive benchmark's heads, 1.01 as "not NUL, CR, LF, FF, VT").
# The fields that the framing or the parser reads are found in the lowercased lines (h11
# lowercases names), their values then taken as sent.
_VALUE_BYTE = rb"[\x0e-\xff\x01-\x09]"  # not NUL, CR, LF, FF or VT, the printable range first
# h11's request line (h11._abnf), as a constant of this module: the compiled code looks an
# imported name up in the module's dict on every use.
_REQUEST_LINE: Final = request_line_re
_FIELD_LINES: Final = re.compile(
    rb"(?:" + token.encode("ascii") + rb":" + _VALUE_BYTE + rb"*\r\n)*"
)
_CONTENT_LENGTH: Final = re.compile(rb"[0-9]{1,20}")
# h11's status line (h11._readers.status_line_re), its reason phrase's class (a blank, or a byte
# that is not NUL or whitespace: _VALUE_BYTE, the class of a field value's bytes) written as the
# bytes it allows rather than as an alternation tried byte by byte; and its groups unnamed, to
# take them at once: 0.42 us a status line, was 0.68.
_STATUS_LINE: Final = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: (" + _VALUE_BYTE + rb"*))?")


class _Head:
    """A plain head read by `_plain_head`: the fields h11's events have, its header fields as
    sent (as text: each byte a Latin-1 character), and its framing headers already checked.
    (A class of the compiled module, not a named tuple: two are made an exchange, and a named
    tuple is made by an interpreted function.)"""

    __slots__ = (
        "chunked",
        "fields",
        "http_version",
        "length",
        "method",
        "reason",
        "status_code",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        status_code: int,  # 0 for a request
        reason: bytes,
        fields: Headers,
        length: int | None,  # its Content-Length
        chunked: bool,  # Transfer-Encoding: chunked
        upgrade: bool,  # it has an Upgrade field
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.status_code = status_code
        self.reason = reason
        self.fields = fields
        self.length = length
        self.chunked = chunked
        self.upgrade = upgrade

    def framing(self, method: bytes) -> tuple[str, tuple[Any, ...]]:
        """What h11's `_body_framing(method, event)` says for the same head."""
        status = self.status_code
        if status and (
            status in (204, 304)
            or method == b"HEAD"
            or (method == b"CONNECT" and 200 <= status < 300)
        ):
            return "content-length", (0,)
        if self.chunked:
            return "chunked", ()
        if self.length is not None:
            return "content-length", (self.length,)
        if not status:
            return "content-length", (0,)
        return "http/1.0", ()


_CHUNKED: Final = 1  # _scan_fields' flags: a Transfer-Encoding: chunked
_UPGRADE: Final = 2  # an Upgrade field
_HOSTS: Final = 2  # flags >> _HOSTS: how many Host fields
_NAME: Final = 2  # _BYTE_CLASS: a byte of a token (a field's name), which a value may hold too
_VALUE: Final = 1  # a byte that a field's value may hold, and a name not


def _byte_classes() -> bytes:
    """_NAME, _VALUE or 0 for each byte, from the patterns of h11's grammar above."""
    name = re.compile(token.encode("ascii"))
    value = re.compile(_VALUE_BYTE)
    return bytes(
        _NAME if name.fullmatch(bytes((b,))) else _VALUE if value.fullmatch(bytes((b,))) else 0
        for b in range(256)
    )


_BYTE_CLASS: Final = _byte_classes()


def _is_named(block: bytes, at: i64, name: bytes) -> bool:
    """Whether the field name at block[at:] is `name` (lower case) in any case."""
    for k in range(len(name)):
        b = block[at + k]
        if 65 <= b <= 90:  # A-Z
            b += 32
        if b != name[k]:
            return False
    return True


def _value_span(block: bytes, start: i64, end: i64) -> tuple[i64, i64]:
    """block[start:end] without the spaces and tabs around it (as bytes.strip(b" \t"))."""
    while start < end and block[start] in (32, 9):
        start += 1
    while end > start and block[end - 1] in (32, 9):
        end -= 1
    return start, end


def _scan_fields(head: bytes, i: i64) -> tuple[i64, i64, i64, i64]:
    """Read the field lines of a head from head[i:] (each with its CRLF) in one pass, byte by
    byte, as _FIELD_LINES and the searches of _searched_head do, to the empty line that ends
    them: (flags, start, end, blank), where start:end is the value of its Content-Length (-1,
    -1 without one), blank where the empty line's CRLF begins, and flags are _CHUNKED,
    _UPGRADE and the number of Host fields; flags -1 when a line is not a field (a name that
    is not a token, a NUL, CR, LF, FF or VT in a value), or a Content-Length or
    Transfer-Encoding is repeated or not plain (digits; `chunked`), which h11 is left to read,
    or when head ends before the empty line."""
    classes = _BYTE_CLASS
    n: i64 = len(head)
    flags: i64 = 0
    length_at: i64 = -1
    length_end: i64 = -1
    while i + 1 < n:
        if head[i] == 13 and head[i + 1] == 10:  # the empty line
            return flags, length_at, length_end, i
        name: i64 = i
        while i < n and classes[head[i]] == _NAME:
            i += 1
        size = i - name
        if size == 0 or i >= n or head[i] != 58:  # a colon
            return -1, -1, -1, -1
        i += 1
        value: i64 = i
        while i < n and classes[head[i]]:
            i += 1
        if i + 1 >= n or head[i] != 13 or head[i + 1] != 10:  # CRLF
            return -1, -1, -1, -1
        line_end: i64 = i
        i += 2
        if size == 4 and _is_named(head, name, b"host"):
            flags += 1 << _HOSTS
        elif size == 7 and _is_named(head, name, b"upgrade"):
            flags |= _UPGRADE
        elif size == 14 and _is_named(head, name, b"content-length"):
            if length_at >= 0:
                return -1, -1, -1, -1
            length_at, length_end = _value_span(head, value, line_end)
            if not 1 <= length_end - length_at <= 20:
                return -1, -1, -1, -1
            for k in range(length_at, length_end):
                if not 48 <= head[k] <= 57:  # 0-9
                    return -1, -1, -1, -1
        elif size == 17 and _is_named(head, name, b"transfer-encoding"):
            if flags & _CHUNKED:
                return -1, -1, -1, -1
            start, stop = _value_span(head, value, line_end)
            if stop - start != 7 or not head.startswith(b"chunked", start):
                return -1, -1, -1, -1
            flags |= _CHUNKED
    return -1, -1, -1, -1


def _is_version(head: bytes, at: i64) -> bool:
    """Whether head[at:] starts with HTTP/, a digit, a dot and a digit."""
    return (
        at + 8 <= len(head)
        and head[at] == 72  # H (byte by byte: startswith with a start is a call, compiled)
        and head[at + 1] == 84  # T
        and head[at + 2] == 84  # T
        and head[at + 3] == 80  # P
        and head[at + 4] == 47  # /
        and 48 <= head[at + 5] <= 57
        and head[at + 6] == 46
        and 48 <= head[at + 7] <= 57
    )


def _one_host(version: bytes, hosts: int) -> bool:
    """Whether a request with `hosts` Host fields is plain: h11 reads several, or none in
    HTTP/1.1, with a note (and keeps one), which is left to it."""
    return hosts == 1 or (hosts == 0 and version != b"1.1")


def _scanned_head(head: bytes, request: bool) -> tuple[_Head | None, i64]:
    """_plain_head's reading of the head at the start of `head` byte by byte, to the empty line
    that ends it, which need not be found first: its start line as h11's patterns (a
    request's, _STATUS_LINE) read it, then its field lines by _scan_fields. (head, where its
    CRLFCRLF begins), or (None, -1) when it is not plain or `head` ends before its empty line.
    Compiled, a byte is a machine load and a table lookup: a plain head of the keep-alive
    benchmark in 0.76 us, 3.3 by _searched_head; interpreted, that is faster."""
    classes = _BYTE_CLASS
    n: i64 = len(head)
    i: i64 = 0
    if request:
        while i < n and classes[head[i]] == _NAME:
            i += 1
        method_end = i
        if method_end == 0 or i >= n or head[i] != 32:  # a space
            return None, -1
        i += 1
        while i < n and 0x21 <= head[i] <= 0x7E:  # a visible ASCII character
            i += 1
        target_end = i
        if target_end == method_end + 1 or i >= n or head[i] != 32 or not _is_version(head, i + 1):
            return None, -1
        i += 9
        method, target = head[:method_end], head[method_end + 1 : target_end]
        version = head[i - 3 : i]
        status, reason = 0, b""
    else:
        if not (_is_version(head, 0) and n >= 12 and head[8] == 32):
            return None, -1
        status = 0
        for k in range(9, 12):
            digit = head[k] - 48
            if not 0 <= digit <= 9:
                return None, -1
            status = status * 10 + digit
        i = 12
        if i < n and head[i] == 32:
            i += 1
            while i < n and classes[head[i]]:
                i += 1
            reason = head[13:i]
        else:
            reason = b""
        if status < 200:
            return None, -1
        version = head[5:8]
        method = target = b""
    if i + 1 >= n or head[i] != 13 or head[i + 1] != 10:  # CRLF
        return None, -1
    first = i + 2
    if first + 1 < n and head[first] == 13 and head[first + 1] == 10:  # no fields
        if request and not _one_host(version, 0):
            return None, -1
        return _Head(method, target, version, status, reason, NO_HEADERS, None, False, False), i
    flags, length_at, length_end, blank = _scan_fields(head, first)
    if flags < 0 or (request and not _one_host(version, flags >> _HOSTS)):
        return None, -1
    length = int(head[length_at:length_end]) if length_at >= 0 else None
    fields = Headers.of(head[first : blank - 2].decode("latin-1"))
    chunked, upgrade = bool(flags & _CHUNKED), bool(flags & _UPGRADE)
    return _Head(
        method, target, version, status, reason, fields, length, chunked, upgrade
    ), blank - 2


def _searched_head(data: bytearray, end: int, request: bool) -> _Head | None:
    """_plain_head's reading of a head by regular expressions and searches of its lowered lines
    (interpreted, the faster way)."""
    line_end = data.find(b"\r\n", 0, end + 2)
    if request:
        m = _REQUEST_LINE.fullmatch(data, 0, line_end)
        if m is None:
            return None
        method, target, version = m.groups()  # (by position: a third faster than by name)
        status, reason = 0, b""
    else:
        m = _STATUS_LINE.fullmatch(data, 0, line_end)
        if m is None:
            return None
        version, code, reason = m.groups(b"")
        status = int(code)
        if status < 200:
            return None
        method = target = b""
    first = line_end + 2
    # Field lines: data[first:end], CRLF between them (none when the start line ends at end).
    if first >= end:
        if request and not _one_host(version, 0):
            return None
        return _Head(method, target, version, status, reason, NO_HEADERS, None, False, False)
    if _FIELD_LINES.fullmatch(data, first, end + 2) is None:
        return None  # not a field (a folded line begins with a blank), or NUL, CR, LF, FF, VT
    low = data[first - 1 : end + 2].lower()  # LF, then each field line with its CRLF
    base = first - 1
    length: int | None = None
    chunked = False
    at = low.find(b"\ncontent-length:")
    if at >= 0:
        if low.find(b"\ncontent-length:", at + 16) >= 0:
            return None
        value = data[base + at + 16 : base + low.find(b"\r", at)].strip(b" \t")
        if _CONTENT_LENGTH.fullmatch(value) is None:
            return None
        length = int(value)
    at = low.find(b"\ntransfer-encoding:")
    if at >= 0:
        if low.find(b"\ntransfer-encoding:", at + 19) >= 0:
            return None
        if data[base + at + 19 : base + low.find(b"\r", at)].strip(b" \t") != b"chunked":
            return None
        chunked = True
    if request and not _one_host(version, low.count(b"\nhost:")):
        return None
    upgrade = low.find(b"\nupgrade:") >= 0
    fields = Headers.of(data[first:end].decode("latin-1"))
    return _Head(method, target, version, status, reason, fields, length, chunked, upgrade)


SCAN_HEADS = not isinstance(_scanned_head, types.FunctionType)
"""Read plain heads with _scanned_head when it is compiled, else with _searched_head (tests
read every head both ways)."""


def _plain_head(data: bytearray, end: int, request: bool) -> _Head | None:
    """The head in data[:end + 4] (end: where its first CRLFCRLF begins), read without h11,
    when it is plain: CRLF line ends, no folded lines, a start line and fields that h11's
    grammar accepts, at most one Content-Length (digits only) and one Transfer-Encoding
    (`chunked`, lower case), one Host in a request (none in HTTP/1.0), and a final status for a
    response. Then h11 would read it to the same fields with no note, and the framing is the
    same; None for anything else, which goes to h11."""
    if SCAN_HEADS:
        return _scanned_head(bytes(data[: end + 4]), request)[0]
    return _searched_head(data, end, request)


def _read_head(
    buf: _Buffer, data: bytearray, end: int, request: bool
) -> tuple[Any, list[tuple[bytes, bytes]] | None, str | None, bool]:
    """Take the head at the start of buf (see HeadCache.head_end for `end`): by the fast path
    when it is plain, else by h11. Returns (head or None while incomplete, request headers as
    sent when h11 read them, note, whether the head taken is exactly data[:end + 4], which is
    when a head cache may keep it). Raises h11.ProtocolError as h11 does."""
    head: Any = _plain_head(data, end, request) if FAST_PATH and end >= 0 else None
    if head is not None:
        buf.skip(end + 4)
        return head, None, None, True
    before = len(buf)
    head, sent, note = _h11_head(buf, request)
    return head, sent, note, before - len(buf) == end + 4


def _read_unkeyed(
    buf: _Buffer, data: bytearray, request: bool
) -> tuple[Any, list[tuple[bytes, bytes]] | None, str | None]:
    """_read_head for a head that no cache looks up, which need not be found first: compiled,
    _scanned_head reads it from the buffer's first FAST_HEAD bytes in one pass, finding its end
    as it goes (a search for the CRLFCRLF first was a twentieth of the parsing); what it
    leaves, h11 reads, as _read_head would. Returns (head or None while incomplete, request
    headers as sent when h11 read them, note). Raises h11.ProtocolError as h11 does."""
    if SCAN_HEADS and FAST_PATH:
        window = bytes(data) if len(data) <= FAST_HEAD else bytes(data[:FAST_HEAD])
        head, end = _scanned_head(window, request)
        if head is not None:
            buf.skip(end + 4)
            return head, None, None
        return _h11_head(buf, request)
    read, sent, note, _exact = _read_head(buf, data, HeadCache.head_end(data), request)
    return read, sent, note  # (another name: compiled, `head` holds a _Head or None)


def _framing(method: bytes, head: Any) -> tuple[str, tuple[Any, ...]]:
    if type(head) is _Head:
        return head.framing(method)
    return _body_framing(method, head)


def _clean_list(value: bytes) -> bytes:
    return b", ".join(part.strip() for part in value.split(b",") if part.strip())


class _Heads:
    """One direction's cached heads, and whether caching pays there at the moment."""

    __slots__ = ("entries", "hits", "lookups", "off")

    def __init__(self) -> None:
        self.entries: dict[bytes, Any] = {}
        self.lookups = 0  # in the current round of HeadCache.ROUND lookups
        self.hits = 0
        self.off = 0  # heads still to be read without the cache

    def paused(self) -> bool:
        """Whether the next head is read without the cache (and one fewer will be)."""
        if self.off:
            self.off -= 1
            return True
        return False

    def key(self, data: bytearray, end: int) -> bytes | None:
        """The cache key of the head whose CRLFCRLF begins at `end`, if it is small enough;
        None otherwise. (Asked when the cache is not `paused`.)"""
        if end < 0 or end > HeadCache.MAX_HEAD - 4:
            return None
        self.lookups += 1
        if self.lookups >= HeadCache.ROUND:
            if self.hits * 16 < self.lookups:  # under one hit in 16: every head is unique
                self.off = HeadCache.PAUSE
            self.lookups = self.hits = 0
        return bytes(data[: end + 4])

    def read(
        self, buf: _Buffer, request: bool
    ) -> tuple[Any, list[tuple[bytes, bytes]] | None, str | None, list[Any] | None]:
        """The head at the start of buf, from the cache when it holds the head's bytes, else
        read (_read_head, or _read_unkeyed while paused) and kept when it may be: (head or None
        while incomplete, request headers as sent when h11 read them, note, its cache entry:
        [head, its headers once decoded, as sent, note], None when it has none). Raises
        h11.ProtocolError as h11 does."""
        data = _data(buf)
        if self.paused():
            head, sent, note = _read_unkeyed(buf, data, request)
            return head, sent, note, None
        end = HeadCache.head_end(data)
        key = self.key(data, end)
        entry: list[Any] | None = self.get(key) if key is not None else None
        if entry is not None:
            buf.skip(end + 4)
            return entry[0], entry[2], entry[3], entry
        head, sent, note, exact = _read_head(buf, data, end, request)
        if key is not None and head is not None and exact:
            entry = [head, None, sent, note]
            self.put(key, entry)
        return head, sent, note, entry

    def get(self, key: bytes) -> Any:
        found = self.entries.get(key)
        if found is not None:
            self.hits += 1
        return found

    def put(self, key: bytes, value: Any) -> None:
        entries = self.entries
        if len(entries) >= HeadCache.MAX_ENTRIES:
            # Start again rather than drop the oldest one by one: deleting a dict's first entry
            # over and over leaves a run of holes that every later lookup of the first one scans.
            entries.clear()
        entries[key] = value


class HeadCache:
    """Parsed header blocks by their exact bytes, shared by the parsers of one pipeline.

    The same bytes always parse to the same (immutable) head, and real traffic often repeats
    header blocks: polling clients, health checks, the same static answer. A hit skips parsing,
    and exchanges with the same head share its decoded headers. Bounded: small blocks only, at
    most MAX_ENTRIES per direction. A block is kept only when the head read from it is exactly
    that block (h11 ends a head at the first empty line, which a bare LF may bring sooner).
    Where heads do not repeat (ids, cookies, request ids), a lookup only costs: a direction whose
    last ROUND lookups hit less than one time in 16 reads its next PAUSE heads without it.
    """

    MAX_ENTRIES: ClassVar[int] = 1024
    MAX_HEAD: ClassVar[int] = 4096
    ROUND: ClassVar[int] = 2048
    PAUSE: ClassVar[int] = 30_000

    def __init__(self) -> None:
        self.requests = _Heads()  # (head, headers as sent, note)
        self.responses = _Heads()  # [head, its headers decoded, once made]

    @staticmethod
    def head_end(data: bytearray) -> int:
        """Where the first CRLFCRLF begins in data (-1 if not within FAST_HEAD bytes)."""
        return data.find(b"\r\n\r\n", 0, FAST_HEAD)


class HttpParser:
    """The HTTP/1.x exchanges of one connection."""

    def __init__(
        self,
        conn: Connection,
        emit: Callable[[Event], None],
        max_body: int = DEFAULT_MAX_BODY,
        heads: HeadCache | None = None,
        window: float = 0.5,
        hold: int = DEFAULT_HOLD,
        announce: bool = False,
        peer_offset: Callable[[bool, int], int | None] | None = None,
        records: bool = False,
    ) -> None:
        """announce: emit `HttpRequestSeen` for requests waiting for their answer (live views).
        peer_offset: what an acknowledgment number covers of the other direction's stream
        (Connection.peer_offset); a stream of plaintext decrypted from TLS gives its own
        (engine.tlsdecrypt). records: emit each exchange as its record (ExchangeRecord), not
        as an HttpTransaction."""
        self.records = records
        self.conn = conn
        self.peer_offset = peer_offset if peer_offset is not None else conn.peer_offset
        self.conn_id = conn.id
        self.heads = heads or HeadCache()
        self.emit = emit
        self.max_body = max_body
        self.window = window  # seconds a response waits for its request (Bounds.reorder_window)
        self.hold = hold  # server bytes held at most meanwhile
        self.client = _Side()
        self.server = _Side()
        self.pending: deque[_Exchange] = (
            deque()
        )  # requests waiting for their response, oldest first
        # Exchanges answered while their request was still being read, by id of that request.
        self.answered: dict[int, _Exchange] = {}
        self.next_index = 0
        self.last_start = 0  # client offset of the request of the last exchange paired
        self.waiting = False  # the client's next bytes depend on the answer to CONNECT or Upgrade
        self.tunnel = False
        self.tls: TlsHelloReader | None = None  # SNI from inside a CONNECT tunnel
        self.h2: Http2Parser | None = None  # the HTTP/2 after an Upgrade to h2c
        self.leftover = b""  # client bytes that followed the CONNECT request before its answer
        self.closed = False
        self.now = 0.0  # the latest packet time seen on either side
        self.held_since: float | None = None  # a response waits for the client's stream
        # Requests that begin before this client offset were answered by a response that could
        # not wait for them (a bound): when they come, they are not left waiting for another.
        self.answered_below = 0
        self.announce = announce
        # The exchange whose request the client's side is reading, when it is to be announced,
        # and whether it was announced while its body was still coming.
        self.reading: _Exchange | None = None
        self.told_partial = False

    # ------------------------------------------------------------------ stream consumer

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if ts > self.now:
            self.now = ts
        side = self.client if from_client else self.server
        if offset != side.received:
            if offset < side.received:  # cannot happen with in-order delivery; be safe anyway
                data = data[side.received - offset :]
                if not data:
                    return
            else:  # bytes never seen that nobody reported
                self.on_gap(conn, from_client, ts, side.received, offset - side.received, "")
        side.received += len(data)
        if side.queue is not None:
            side.queue.append(("data", ts, data, ack))
            return
        self._take(side, from_client, ts, data, ack)
        if from_client:
            self._release()

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        if ts > self.now:
            self.now = ts
        (self.client if from_client else self.server).received += size
        if from_client:
            self._gap(self.client, True, size, reason)
            self._release()
            return
        side = self.server
        if (
            side.queue is not None
            or self.held_since is not None
            or not self._gap(side, False, size, reason)
        ):
            self._queue(side).append(("gap", ts, size, reason))

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        if from_client:
            self._end(self.client, True)
            self._release()
            return
        side = self.server
        if side.queue is not None or self.held_since is not None:
            self._queue(side).append(("end", ts))
        else:
            self._end(side, False)

    def on_close(self, conn: Connection, ts: float) -> None:
        if self.closed:
            return
        self.on_end(conn, True, ts)
        self.on_end(conn, False, ts)
        self.closed = True
        while self.pending:
            self._emit(self.pending.popleft())
        for ex in list(self.answered.values()):
            self._emit(ex)
        self.answered.clear()
        if self.h2 is not None:
            self.h2.on_close(conn, ts)

    # ------------------------------------------------------------------ input, in order

    @staticmethod
    def _queue(side: _Side) -> deque[tuple[Any, ...]]:
        if side.queue is None:
            side.queue = deque()
        return side.queue

    def _take(self, side: _Side, from_client: bool, ts: float, data: bytes, ack: int) -> None:
        start = side.offset
        side.offset = start + len(data)
        if self.tunnel:
            self._tunnel_data(from_client, ts, start, data, ack)
            return
        if not side.buf:
            side.clear_marks()
        side.marks.append((start, ts, ack))
        side.buf.data += data
        if from_client:
            self._read_requests()
        else:
            self._read_responses()

    def _release(self) -> None:
        """The client's stream moved on: a response held for it may go on, and then whatever
        came after it on the server's side."""
        side = self.server
        if self.held_since is None and side.queue is None:
            return
        self._read_responses()
        queue = side.queue
        while queue and self.held_since is None:
            item = queue.popleft()
            if item[0] == "data":
                self._take(side, False, item[1], item[2], item[3])
            elif item[0] == "gap":
                if not self._gap(side, False, item[2], item[3]):
                    queue.appendleft(item)
                    break
            else:
                self._end(side, False)
        if not queue:
            side.queue = None

    # ------------------------------------------------------------------ reading

    def _read_requests(self) -> None:
        side = self.client
        buf = side.buf
        while not self.tunnel and not self.waiting:
            if side.reader is None:
                if not self._start_request(side, buf):
                    return
                continue
            msg = side.msg
            assert msg is not None
            try:
                data = side.reader.read(buf)
            except _BadBody as e:
                self._abandon(side, True, f"bad request body: {e}")
                continue
            if data is None:
                if self.reading is not None and not self.told_partial:
                    self.told_partial = True
                    self._tell(self.reading)  # its body is still to come
                return
            if data:
                msg.add(data, self.max_body)
                continue
            self._body_end(side, msg)
            side.reader = None
            side.msg = None
            self._message_end(side, msg)
            if self.reading is not None:
                self._tell(self.reading)  # whole now, if still unanswered
                self.reading = None
            self._settled(msg)
            if msg.head.method == b"CONNECT" or _has_upgrade(msg):
                self.waiting = True  # what follows depends on the answer

    def _start_request(self, side: _Side, buf: _Buffer) -> bool:
        """Read a request head if one is complete; False when more bytes are needed."""
        start = _message_start(side, buf, REQUEST_START)
        if start is None:
            return False
        try:
            head, sent, note, _entry = self.heads.requests.read(buf, True)
        except h11.ProtocolError as e:
            self._bad_request(side, start, f"bad request: {e}")
            return True
        if head is None:
            if len(buf) > MAX_HEAD:
                self._bad_request(side, start, "request header block over 64 KiB")
                side.lose(0, side.offset)
            return False
        kind, args = _framing(b"", head)
        ts, ack = side.mark_at(start)
        ex = _Exchange(start)
        ex.request = side.msg = _Message(head, ts, args[0] if args else None, start, ack)
        ex.request.sent_headers = sent
        self._note_lost(side, ex, "request")
        if note:
            ex.notes.append(note)
        if start < self.answered_below:
            ex.notes.append(ANSWERED_EARLY)
            self.answered[id(ex.request)] = ex  # emitted once it is read
            self.reading = None
        else:
            self.pending.append(ex)
            if self.announce:
                self.reading, self.told_partial = ex, False
        side.reader = _body_reader(kind, args)
        return True

    def _read_responses(self) -> None:
        side = self.server
        buf = side.buf
        while not self.tunnel:
            if side.reader is None:
                if not self._start_response(side, buf):
                    return
                continue
            msg = side.msg
            assert msg is not None
            try:
                data = side.reader.read(buf)
            except _BadBody as e:
                self._abandon(side, False, f"bad response body: {e}")
                continue
            if data is None:
                return
            if data:
                msg.add(data, self.max_body)
                continue
            self._body_end(side, msg)
            side.reader = None
            self._response_end(side)

    def _answer_point(self, start: int) -> _Answer | None:
        """Where in the client's stream the server was when it began the response at `start`;
        None while the client's stream has not been read that far and may still get there."""
        ts, ack = self.server.mark_at(start)
        if ack == NO_ACK:
            return UNKNOWN
        acked = self.peer_offset(False, ack)
        client = self.client
        if client.ended:
            self.held_since = None
            return _Answer(acked)
        # Read up to there, unless a head that begins before it is still incomplete.
        if (
            acked is not None
            and client.offset >= acked
            and (self.waiting or client.reader is not None or client.consumed >= acked)
        ):
            self.held_since = None
            return _Answer(acked)
        if self.held_since is None:
            self.held_since = ts
        # Twice the reorder window: a hole in the client's stream that the server acknowledged
        # becomes a gap after one window (engine.reassembly), which lets this answer go on
        # with what was really seen before the bound does.
        if self.now - self.held_since > 2 * self.window or len(self.server.buf) > self.hold:
            self.held_since = None
            return _Answer(acked, bounded=True)
        return None

    def _start_response(self, side: _Side, buf: _Buffer) -> bool:
        start = _message_start(side, buf, RESPONSE_START)
        if start is None:
            return False
        answer = self._answer_point(start)
        if answer is None:
            return False
        try:
            head, _sent, _note, cached = self.heads.responses.read(buf, False)
        except h11.ProtocolError as e:
            self._bad_response(start, answer, f"bad response: {e}")
            return True
        if head is None:
            if len(buf) > MAX_HEAD:
                self._bad_response(start, answer, "response header block over 64 KiB")
                side.lose(0, side.offset)
            return False
        ex = self._answered_by(start, answer)
        self._note_lost(side, ex, "response")
        ts, ack = side.mark_at(start)
        if type(head) is h11.InformationalResponse:
            ex.interim.append((head.status_code, _text(head.reason), ts))
            if head.status_code == 101:
                msg = _Message(head, ts, 0, start, ack)
                self._message_end(side, msg)
                self._finish_exchange(ex, msg, tunnel=True)
            return True
        method = ex.request.head.method if ex.request is not None else b"GET"
        kind, args = _framing(method, head)
        side.msg = _Message(head, ts, args[0] if args else None, start, ack)
        side.msg.cached = cached
        side.exchange = ex
        side.reader = _body_reader(kind, args)
        return True

    def _answered_by(self, start: int, answer: _Answer) -> _Exchange:
        """The exchange a response beginning at server offset `start` answers: the oldest
        unanswered request that began before `answer.acked` in the client's stream, or a new
        exchange with no request when there is none."""
        acked = answer.acked
        side = self.server
        if side.loss_start is not None:
            self._answered_in_loss(side.loss_start, start, acked)
            side.loss_start = None
        pending = self.pending
        if pending and (acked is None or _begins_before(pending[0], acked)):
            ex = pending[0]
        else:
            ex = self._orphan(answer)
            pending.appendleft(ex)
            if answer.bounded and acked is not None and acked > self.answered_below:
                self.answered_below = acked
        if ex.index is None:
            ex.index = self._number()
            if ex.start is not None:
                self.last_start = ex.start
        return ex

    def _response_end(self, side: _Side) -> None:
        msg, ex = side.msg, side.exchange
        assert msg is not None and ex is not None
        side.msg = side.exchange = None
        self._message_end(side, msg)
        method = ex.request.head.method if ex.request is not None else b""
        tunnel = method == b"CONNECT" and 200 <= msg.head.status_code < 300
        self._finish_exchange(ex, msg, tunnel)

    def _message_end(self, side: _Side, msg: _Message) -> None:
        """The message's last byte is the last one read."""
        end = side.consumed
        msg.end_ts = side.mark_at(end - 1)[0]
        msg.complete = True
        side.forget_before(end)

    def _body_end(self, side: _Side, msg: _Message) -> None:
        if isinstance(side.reader, _ChunkedBody) and side.reader.bare_lf:
            ex = side.exchange if side is self.server else self._exchange_of(msg)
            if ex is not None:
                what = "request" if side is self.client else "response"
                ex.notes.append(f"the {what}'s chunked framing uses bare LF line ends")

    def _exchange_of(self, request: _Message) -> _Exchange | None:
        for ex in self.pending:
            if ex.request is request:
                return ex
        return self.answered.get(id(request))

    def _finish_exchange(self, ex: _Exchange, response: _Message, tunnel: bool) -> None:
        response.interim = ex.interim if response.head.status_code >= 200 else ex.interim[:-1]
        ex.response = response
        if self.pending and self.pending[0] is ex:
            self.pending.popleft()
        if tunnel:
            ex.tunnel = True
            if response.head.status_code == 101 and ex.request is not None:
                upgrade = [v for n, v in response.headers() if n.lower() == "upgrade"]
                if upgrade and upgrade[0].strip().lower() == "h2c":
                    self._start_h2c(ex, ex.request)
            self._start_tunnel()
        elif self.waiting:
            self.waiting = False  # the Upgrade or CONNECT was refused: HTTP goes on
        if ex.request is not None and ex.request is self.client.msg:
            self.answered[id(ex.request)] = ex  # its request is still being read: wait for it
        else:
            self._emit(ex)
        if not self.tunnel and self.client.buf:
            self._read_requests()

    # ------------------------------------------------------------------ tunnels, gaps, errors

    def _start_tunnel(self) -> None:
        self.tunnel = True
        self.waiting = False
        self.tls = TlsHelloReader()
        self.leftover = bytes(self.client.buf.data)
        self.client.buf = _Buffer()
        self.server.buf = _Buffer()

    def _start_h2c(self, ex: _Exchange, request: _Message) -> None:
        """A 101 to `Upgrade: h2c`: the rest of both streams is HTTP/2 (engine.http2), its
        stream 1 the answer to the upgraded request (RFC 9113 3.2, by way of RFC 7540). What
        each side's buffer holds past the exchange is the HTTP/2 parser's first bytes."""
        if ex.index is None:
            ex.index = self._number()
        ex.notes.append("upgraded to HTTP/2 (h2c): stream 1 answers this request")
        h2 = Http2Parser(self.conn, self.emit, self.max_body, self.announce, self.peer_offset,
                         index_base=self.next_index)  # fmt: skip
        h2.upgraded(request.request())
        self.h2 = h2
        self.conn.protocol = HTTP2
        for side, from_client in ((self.client, True), (self.server, False)):
            data = bytes(side.buf.data)
            if data:
                at = side.consumed
                ts, ack = side.mark_at(at)
                h2.on_data(self.conn, from_client, ts, at, data, ack)

    def _tunnel_data(
        self, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.h2 is not None:
            self.h2.on_data(self.conn, from_client, ts, offset, data, ack)
            return
        if from_client and self.tls is not None and not self.tls.done:
            leftover, self.leftover = self.leftover, b""
            self.tls.on_data(self.conn, True, ts, 0, leftover + data, NO_ACK)

    def _gap(self, side: _Side, from_client: bool, size: int, reason: str) -> bool:
        """Bytes of one side that were never captured; False when a response cut by it must
        first wait for the client's stream (the gap is then taken again later)."""
        gap_start = side.offset
        if self.tunnel:
            if self.h2 is not None:
                self.h2.on_gap(self.conn, from_client, self.now, side.offset, size, reason)
            side.offset += size
            return True
        msg, reader = side.msg, side.reader
        if msg is not None and isinstance(reader, _LengthBody) and msg.expected is not None:
            # Inside a body of known length (the reader has consumed everything buffered).
            side.offset += size
            remaining = reader.remaining
            skipped = min(size, remaining)
            msg.skip(skipped)
            reader.remaining -= skipped
            if from_client:
                self._read_requests()  # the body may end inside the gap
            else:
                self._read_responses()
            if size > remaining:
                side.lose(size - remaining, gap_start + remaining)
            return True
        if msg is not None and isinstance(reader, _CloseBody):
            side.offset += size
            msg.skip(size)
            return True
        if msg is None and side.buf and not (from_client and self.waiting):
            if not self._cut_head(side, from_client, size, reason):
                return False
            side.offset += size
            side.lose(size, gap_start)
            return True
        side.offset += size
        if msg is not None:
            msg.missing += size
            self._abandon(side, from_client, f"{size} bytes lost inside the message")
        side.lose(size, gap_start)
        return True

    def _cut_head(self, side: _Side, from_client: bool, size: int, reason: str) -> bool:
        """A gap came while a head was still incomplete: record what it showed, if it shows
        a start line (any bytes that began a message after a boundary do, not just any bytes).
        False when the response must wait for the client's stream."""
        start = side.consumed
        found = _partial_head(bytes(_data(side.buf)), from_client, side.synced)
        if found is None:
            return True
        part, headers = found
        what = "request" if from_client else "response"
        why = (
            "the capture's snapshot length cut off the rest"
            if reason == SNAPLEN
            else ("the rest was not captured")
        )
        note = f"only the first {len(side.buf)} bytes of the {what} were captured: {why}"
        ts, ack = side.mark_at(start)
        msg = _Message(part, ts, None, start, ack)
        msg.sent_headers = headers
        msg.end_ts = side.mark_at(side.offset - 1)[0]
        if from_client:
            ex = _Exchange(start)
            ex.request = msg
            self._note_lost(side, ex, what)
            ex.notes.append(note)
            self.pending.append(ex)
            if self.announce:
                self._tell(ex)
        else:
            answer = self._answer_point(start)
            if answer is None:
                return False
            ex = self._answered_by(start, answer)
            self._note_lost(side, ex, what)
            ex.notes.append(note)
            self._finish_exchange(ex, msg, tunnel=False)
        side.buf = _Buffer()
        side.after_cut = True
        return True

    def _end(self, side: _Side, from_client: bool) -> None:
        if side.ended:
            return
        side.ended = True
        if self.tunnel:
            if self.h2 is not None:
                self.h2.on_end(self.conn, from_client, self.now)
            return
        if isinstance(side.reader, _CloseBody) and side.msg is not None:
            msg = side.msg
            side.reader = None
            if from_client:
                side.msg = None
                self._message_end(side, msg)
                self._settled(msg)
            else:
                self._response_end(side)  # a close-delimited body ends here
        elif side.msg is not None:
            self._abandon(side, from_client, "the stream ended inside the message")
        elif side.buf and side.synced and not (from_client and self.waiting):
            what = "request" if from_client else "response"
            reason = f"the stream ended inside a {what} header"
            start = side.consumed
            if from_client:
                self._bad_request(side, start, reason)
            else:
                self._bad_response(start, self._answer_point(start) or UNKNOWN, reason)
        side.buf = _Buffer()

    def _answered_in_loss(self, start: int, resumed: int, acked: int | None) -> None:
        """Retire waiting requests whose answers were in server bytes lost from `start` on.

        A request's answer was lost if the client sent its next request after acknowledging
        server bytes past `start` and not past `resumed` (where the next readable response
        begins): the server had sent an answer there, and answers come in request order.
        Pipelined requests, sent before any of those answers arrived, are left in order. Only
        requests that began before `acked` count: the others came too late for this answer.
        """
        while len(self.pending) >= 2:
            first, second = self.pending[0], self.pending[1]
            if acked is not None and not _begins_before(second, acked):
                return
            seen = None
            if second.request is not None:
                seen = self.peer_offset(True, second.request.ack)
            if first.request is None or seen is None or not start < seen <= resumed:
                return
            self.pending.popleft()
            first.notes.append("its response was in bytes that were not captured")
            self._emit(first)

    def _number(self) -> int:
        index = self.next_index
        self.next_index += 1
        return index

    def _orphan(self, answer: _Answer) -> _Exchange:
        """An exchange for a response whose request was not seen (or not understood)."""
        ex = _Exchange(None)
        client = self.client
        acked = answer.acked
        if acked is None:
            pass
        elif client.lost_between(self.last_start, acked):
            ex.notes.append("its request was in client bytes that were lost or not understood")
        elif answer.bounded and acked > client.offset:
            ex.notes.append(
                f"no request for it was captured in time: the server had received {acked}"
                f" client bytes, the capture had shown {client.offset} by then"
            )
        elif acked <= 0 and not self.conn.client.syn:
            ex.notes.append("its request was sent before the capture started")
        return ex

    def _note_lost(self, side: _Side, ex: _Exchange, what: str) -> None:
        if side.after_cut:
            side.after_cut = False
            side.lost = 0  # the rest of the message cut short before it
        if side.lost:
            ex.notes.append(
                f"{side.lost} bytes before this {what} were lost or not understood;"
                " resynchronised here"
            )
            side.lost = 0

    def _abandon(self, side: _Side, from_client: bool, reason: str) -> None:
        """The current message cannot be finished: record it as incomplete and resynchronise."""
        msg = side.msg
        side.msg = None
        side.reader = None
        side.synced = False
        if msg is None:
            return
        last = side.consumed - 1
        msg.end_ts = side.mark_at(last)[0] if last >= msg.offset else msg.ts
        if from_client:
            reading, self.reading = self.reading, None
            if reading is not None and reading.request is msg and not self.told_partial:
                self._tell(reading)  # it will not grow any more
            ex = self._exchange_of(msg)
            if ex is not None and ex.request is msg and id(msg) not in self.answered:
                ex.error = reason
            else:
                self._settled(msg, reason)
            return
        ex = side.exchange
        side.exchange = None
        if ex is not None:
            ex.error = reason
            ex.response = msg
            if self.pending and self.pending[0] is ex:
                self.pending.popleft()
            self._emit(ex)

    def _settled(self, request: _Message, error: str | None = None) -> None:
        """A request that was answered before it ended has now ended (or failed): emit it."""
        ex = self.answered.pop(id(request), None)
        if ex is not None:
            ex.error = ex.error or error
            self._emit(ex)

    def _bad_request(self, side: _Side, start: int, reason: str) -> None:
        """A request head that cannot be read: an exchange in error that waits for its answer,
        and a search for the next request."""
        ex = _Exchange(start)
        ex.error = reason
        self._note_lost(side, ex, "request")
        self.pending.append(ex)
        side.synced = False

    def _bad_response(self, start: int, answer: _Answer, reason: str) -> None:
        """A response head that cannot be read: the exchange it answers ends in error."""
        ex = self._answered_by(start, answer)
        if self.pending and self.pending[0] is ex:
            self.pending.popleft()
        ex.error = reason
        self.server.synced = False
        self._emit(ex)

    def _tell(self, ex: _Exchange) -> None:
        """Announce the request of an exchange that nothing has answered yet."""
        msg = ex.request
        if ex.index is not None or msg is None:
            return
        if msg.cached is None:
            msg.cached = [msg.head, None]  # its headers are decoded once, here and for its exchange
        request = msg.request()
        if msg.complete:
            msg.told = request  # its exchange reports the same record
        self.emit(HttpRequestSeen(self.conn_id, request))

    def _emit(self, ex: _Exchange) -> None:
        if ex.index is None:
            ex.index = self._number()
        if self.records:
            self.emit(self._record(ex, ex.index))
            return
        request = ex.request.request() if ex.request is not None else None
        response = ex.response.response() if ex.response is not None else None
        # connection, index, request, response, error, tunnel, notes, stream, grpc
        fields = (self.conn_id, ex.index, request, response, ex.error, ex.tunnel, tuple(ex.notes),
                  None, None)  # fmt: skip
        self.emit(from_fields(HttpTransaction, fields))

    def _record(self, ex: _Exchange, index: int) -> ExchangeRecord:
        """What _emit gives as an HttpTransaction, as engine.encoded records it (the same bytes
        and row: tests compare them), without making the transaction or its messages."""
        request = ex.request.request_fields(True) if ex.request is not None else None
        response = ex.response.response_fields(True) if ex.response is not None else None
        record = http_record(index, ex.error, ex.tunnel, tuple(ex.notes), request, response)
        if request is None:
            method, target, offset = None, "", -1
        else:
            method, target, offset = request[2], request[3], request[10]
        line, status = http_row(method, target, None if response is None else response[2])
        return from_fields(ExchangeRecord, (self.conn_id, index, record, line, status, offset))


def _begins_before(ex: _Exchange, offset: int) -> bool:
    return ex.start is not None and ex.start < offset


def _has_upgrade(request: _Message) -> bool:
    head = request.head
    if type(head) is _Head:
        return head.upgrade
    return any(name.lower() == b"upgrade" for name, _ in request.sent_headers or ())


def http_parser_factory(
    max_body: int = DEFAULT_MAX_BODY,
    window: float = 0.5,
    hold: int = DEFAULT_HOLD,
    announce: bool = False,
    records: bool = False,
) -> Callable[[Connection, Callable[[Event], None]], HttpParser]:
    """A consumer factory for `Pipeline(consumers={"http": [...]})`; announce, records: see
    HttpParser."""

    heads = HeadCache()

    def make(conn: Connection, emit: Callable[[Event], None]) -> HttpParser:
        return HttpParser(conn, emit, max_body, heads, window, hold, announce, records=records)

    return make


def inner_http_factory(
    max_body: int = DEFAULT_MAX_BODY,
    window: float = 0.5,
    hold: int = DEFAULT_HOLD,
    announce: bool = False,
    records: bool = False,
) -> Callable[
    [Connection, Callable[[Event], None], Callable[[bool, int], int | None], bool],
    HttpParser | Http2Parser,
]:
    """A factory of parsers for HTTP inside another stream (engine.tlsdecrypt's plaintext),
    whose acknowledgment numbers it maps itself: HTTP/1.x, or HTTP/2 when told (`http2`)."""

    heads = HeadCache()

    def make(
        conn: Connection,
        emit: Callable[[Event], None],
        peer_offset: Callable[[bool, int], int | None],
        http2: bool = False,
    ) -> HttpParser | Http2Parser:
        if http2:
            return Http2Parser(conn, emit, max_body, announce, peer_offset)
        return HttpParser(conn, emit, max_body, heads, window, hold, announce, peer_offset,
                          records)  # fmt: skip

    return make
