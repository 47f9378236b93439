"""HTTP/2 exchanges (RFC 9113) from a connection's reassembled streams: every stream an exchange.

An `Http2Parser` is a stream consumer (see `engine.tcp.StreamConsumer`) attached to connections
that open with the client preface (engine.detect), to the plaintext of decrypted TLS connections
that do (engine.tlsdecrypt), and to the rest of an HTTP/1.1 connection that switched to h2c by
an Upgrade (engine.http hands it over, with the upgraded request as stream 1).

How the libraries are used, and why: frames are read with hyperframe (header, flags, padding,
the fields of each type) and header blocks decoded with hpack's header table (its dynamic
table: entries, sizes, eviction), one per direction (HPACK state is per direction and depends
only on that direction's order). The walk over a block's representations is ours
(`decode_block`), with engine.huffman for Huffman-coded strings: hpack's `Decoder` logs every
field and decodes Huffman in interpreted Python, which took two thirds of the time on real
(unique) heads. h2's `H2Connection` is
not driven: it is one endpoint, enforcing flow control, settings acknowledgments and stream
rules of its own, and refuses traffic that it did not take part in. DATA frames are not
buffered whole: their payload is read as it comes (a frame may be 16 MiB).

Rules this module keeps:
- Each direction is read on its own, in order; what one direction says never depends on how the
  capture interleaves it with the other. Exchanges are numbered by the client's stream id
  (`index` = id >> 1: the order of the client's requests; a pushed exchange takes the index of
  the request whose stream promised it) and carry the id (`stream`).
- A stream's exchange is emitted once both of its halves are over: a half ends with its
  END_STREAM, a RST_STREAM from its sender, a RST_STREAM from the other side once its sender
  acknowledged it (TCP: frames sent after that are not counted in), or the connection's end.
- A gap inside a DATA payload is counted as missing body bytes; a gap anywhere else loses the
  frame boundaries: the parser looks for two plausible frame headers in a row to go on, and the
  HPACK state of that direction is from then on partly unknown (`PartialTable`): fields that
  name dynamic-table entries set before are shown as unknown, the rest decode. A capture that
  starts after the preface starts this way too.
- Bounds: a header block of at most `MAX_HEADER_BLOCK` bytes (more: skipped, noted, HPACK
  state then unknown), decoded header lists of at most `MAX_HEADER_LIST`, an HPACK table of at
  most `MAX_TABLE`, at most `MAX_STREAMS` streams open at once (past it the oldest is reported
  as it stands), at most `max_body` body bytes kept per message. A malformed frame stops the
  parsing of that connection with a note; nothing here raises on any input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final
from urllib.parse import unquote

import hpack
from hpack.table import HeaderTable
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
)

from engine import huffman
from engine.detect import (
    CONTINUATION,
    DATA,
    GOAWAY,
    H2_PREFACE,
    HEADERS,
    PING,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    plausible_frame_header,
)
from engine.events import (
    Event,
    Field,
    GrpcCall,
    Headers,
    HttpRequest,
    HttpRequestSeen,
    HttpResponse,
    HttpTransaction,
)
from engine.reassembly import NO_ACK
from engine.tcp import Connection

MAX_HEADER_BLOCK: Final = 256 * 1024
MAX_HEADER_LIST: Final = 256 * 1024
MAX_TABLE: Final = 64 * 1024
MAX_STREAMS: Final = 1000
DEFAULT_MAX_BODY: Final = 1024 * 1024
GONE_KEPT: Final = 4096  # ids of streams reported, whose late frames are not a new stream

END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8

ERROR_CODES: Final = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)  # fmt: skip
UNKNOWN_NAME: Final = "(unknown)"  # a field whose name was in a dynamic-table entry never seen
_UNKNOWN: Final = b"\0unknown"  # (no header name may hold a NUL: it cannot come from the wire)


def error_name(code: int) -> str:
    return ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else f"0x{code:x}"


class PartialTable:
    """hpack's header table (`HeaderTable`: its entries, sizes and eviction), of which only the
    entries added since some point may be known (`lost`: a capture that began mid-connection,
    or a loss): an index past them reads as an unknown field instead of failing. The entries it
    knows are the newest of the real table, so they stay right: the real table evicts its
    oldest first. A size update to 0 empties the real table too: from then on all of it is
    known."""

    def __init__(self, lost: bool = False) -> None:
        self.table = HeaderTable()
        self.lost = lost

    def get_by_index(self, index: int) -> tuple[bytes, bytes]:
        try:
            found: tuple[bytes, bytes] = self.table.get_by_index(index)
            return found
        except hpack.InvalidTableIndex:
            if self.lost and index > HeaderTable.STATIC_TABLE_LENGTH:
                return _UNKNOWN, b""
            raise

    def add(self, name: bytes, value: bytes) -> None:
        self.table.add(name, value)

    def resize(self, size: int) -> None:
        self.table.maxsize = size
        if size == 0:
            self.lost = False


def decode_block(
    table: PartialTable, data: bytes, max_list: int, max_table: int
) -> list[tuple[bytes, bytes]]:
    """The fields of a whole header block (RFC 7541 6), updating `table` as it says. Raises
    an hpack.HPACKError when the block is malformed, names an entry the table does not have,
    decodes past `max_list` (entry sizes, as SETTINGS_MAX_HEADER_LIST_SIZE counts them) or
    sets a table larger than `max_table`."""
    fields: list[tuple[bytes, bytes]] = []
    pos, end, size = 0, len(data), 0
    while pos < end:
        first = data[pos]
        if first & 0x80:  # an indexed field
            index, pos = _integer(data, pos, 7)
            name, value = table.get_by_index(index)
        elif first & 0x40:  # a literal, then added to the table
            name, value, pos = _literal(table, data, pos, 6)
            table.add(name, value)
        elif first & 0x20:  # a dynamic table size update
            if fields:
                raise hpack.HPACKDecodingError("a table size update after a field")
            new_size, pos = _integer(data, pos, 5)
            if new_size > max_table:
                raise hpack.InvalidTableSizeError(f"a table of {new_size} bytes (over {max_table})")
            table.resize(new_size)
            continue
        else:  # a literal not indexed, or never indexed
            name, value, pos = _literal(table, data, pos, 4)
        fields.append((name, value))
        size += 32 + len(name) + len(value)
        if size > max_list:
            raise hpack.OversizedHeaderListError(f"a header list over {max_list} bytes")
    return fields


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer with an N-bit prefix at data[pos] (RFC 7541 5.1); (value, next pos)."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise hpack.HPACKDecodingError("a header block cut inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 127) << shift
        if not byte & 128:
            return value, pos
        shift += 7
        if shift > 28:
            raise hpack.HPACKDecodingError("an integer too large")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise hpack.HPACKDecodingError("a header block cut before a string")
    coded = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    raw = data[pos : pos + length]
    if len(raw) != length:
        raise hpack.HPACKDecodingError("a header block cut inside a string")
    if not coded:
        return raw, pos + length
    try:
        return huffman.decode(raw), pos + length
    except ValueError as e:
        raise hpack.HPACKDecodingError(str(e)) from None


def _literal(table: PartialTable, data: bytes, pos: int, prefix: int) -> tuple[bytes, bytes, int]:
    index, pos = _integer(data, pos, prefix)
    if index:
        name = table.get_by_index(index)[0]
    else:
        name, pos = _string(data, pos)
    value, pos = _string(data, pos)
    return name, value, pos


class _Grpc:
    """The length-prefixed messages of one direction of a gRPC call, counted as they come."""

    __slots__ = ("bytes", "compressed", "count", "lost", "need", "prefix")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.compressed = 0
        self.prefix = bytearray()  # the 5-byte prefix being read
        self.need = 0  # message bytes still to come before the next prefix
        self.lost = False

    def feed(self, data: bytes | memoryview) -> None:
        pos, size = 0, len(data)
        while pos < size and not self.lost:
            if self.need:
                take = min(self.need, size - pos)
                self.need -= take
                pos += take
                continue
            take = min(5 - len(self.prefix), size - pos)
            self.prefix += data[pos : pos + take]
            pos += take
            if len(self.prefix) == 5:
                flag = self.prefix[0]
                self.need = int.from_bytes(self.prefix[1:5], "big")
                self.prefix.clear()
                self.count += 1
                self.bytes += self.need
                self.compressed += flag & 1


class _Message:
    """One side of a stream as far as it has come."""

    __slots__ = (
        "body", "body_bytes", "body_gaps", "body_missing", "cut", "done", "end_ts", "grpc",
        "headers", "interim", "offset", "trailers", "ts",
    )  # fmt: skip

    def __init__(self) -> None:
        self.ts: float | None = None  # first byte of its (final) HEADERS
        self.end_ts: float | None = None
        self.offset = -1
        self.headers: list[Field] = []
        self.trailers: list[Field] = []
        self.interim: list[tuple[int, str, float]] = []
        self.body = bytearray()
        self.body_bytes = 0
        self.body_missing = 0
        self.body_gaps: list[tuple[int, int]] = []
        self.done = False  # END_STREAM, or reset
        self.cut = False  # bytes of its side were lost where frames could not be told
        self.grpc: _Grpc | None = None

    def field(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class _Stream:
    __slots__ = ("id", "index", "notes", "pushed", "request", "reset", "response",
                 "upgraded", "wait_ack")  # fmt: skip

    def __init__(self, stream_id: int, index: int) -> None:
        self.id = stream_id
        self.index = index
        self.request = _Message()
        self.response = _Message()
        self.notes: list[str] = []
        self.pushed = False
        self.reset: str | None = None
        self.upgraded: HttpRequest | None = None  # stream 1 of an h2c Upgrade: its request
        # A RST_STREAM one side sent: the other side's half ends once that side acknowledged
        # the byte after it (from_client of the sender, its stream offset).
        self.wait_ack: tuple[bool, int] | None = None


class _Side:
    """One direction: its bytes not yet read as frames, and its HPACK decoder."""

    def __init__(self, from_client: bool) -> None:
        self.from_client = from_client
        self.begun = False  # some byte or gap came
        self.buf = bytearray()
        self.start = 0  # stream offset of buf[0]
        self.marks: list[tuple[int, float]] = []  # (stream offset, ts) where chunks in buf begin
        # Whether the side's first bytes are the start of its HTTP/2 (the client's preface, the
        # server's SETTINGS): then frames and HPACK state are known from there; else (a capture
        # that began later) frame boundaries are looked for and HPACK state is partly unknown.
        self.judged = False
        self.synced = True  # frame boundaries known (else looked for)
        self.table = PartialTable()
        # The frame being read: its header fields, and for DATA how much is still to come.
        self.data_stream: _Stream | None = None
        self.data_left = 0  # payload bytes of the DATA frame still to come (data, then padding)
        self.pad_left = 0
        self.pad_byte = False  # the Pad Length byte is still to come
        self.data_end = False  # the frame has END_STREAM
        self.skip = 0  # bytes of a frame being stepped over
        self.block: bytearray | None = None  # a header block waiting for its CONTINUATION
        self.block_stream = 0
        self.block_kind = HEADERS
        self.block_end_stream = False
        self.block_ts = 0.0
        self.block_offset = 0
        self.block_promised = 0
        self.block_over = False  # past MAX_HEADER_BLOCK: stepped over
        self.dead = False  # a malformed frame: nothing more is read
        self.ended = False

    def lose_hpack(self) -> None:
        if not self.table.lost:
            self.table = PartialTable(lost=True)

    def ts_at(self, offset: int, default: float) -> float:
        ts = default
        for start, mark_ts in self.marks:
            if start > offset:
                break
            ts = mark_ts
        return ts

    def consume(self, count: int) -> None:
        del self.buf[:count]
        self.start += count
        marks = self.marks
        while len(marks) > 1 and marks[1][0] <= self.start:
            del marks[0]


class Http2Parser:
    """The HTTP/2 exchanges of one connection."""

    def __init__(
        self,
        conn: Connection,
        emit: Callable[[Event], None],
        max_body: int = DEFAULT_MAX_BODY,
        announce: bool = False,
        peer_offset: Callable[[bool, int], int | None] | None = None,
        index_base: int = 0,
    ) -> None:
        """peer_offset: what an acknowledgment number covers of the other direction's stream
        (Connection.peer_offset; a decrypted stream gives its own). index_base: the exchanges
        of the connection before its HTTP/2 (an h2c Upgrade), numbered before its streams."""
        self.conn = conn
        self.conn_id = conn.id
        self.emit = emit
        self.max_body = max_body
        self.announce = announce
        self.peer_offset = peer_offset if peer_offset is not None else conn.peer_offset
        self.index_base = index_base
        self.max_streams = MAX_STREAMS
        # Given every body byte as it comes (--follow --stream): (stream id, from_client, body
        # offset, the bytes, or None for `size` bytes never captured, size).
        self.tap: Callable[[int, bool, int, bytes | None, int], None] | None = None
        self.client = _Side(True)
        self.server = _Side(False)
        self.streams: dict[int, _Stream] = {}
        self.resets: dict[int, _Stream] = {}  # streams one side reset, waiting for the other's ack
        self.gone: dict[int, None] = {}  # the ids of the streams last reported (GONE_KEPT)
        self.closed = False
        self.last_ts = 0.0
        self.error: str | None = None

    # ------------------------------------------------------------------ stream consumer

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if ts > self.last_ts:
            self.last_ts = ts
        side = self.client if from_client else self.server
        if side.dead or side.ended:
            return
        if not side.begun:
            side.begun = True
            side.start = offset
        expected = side.start + len(side.buf)
        if offset > expected:  # bytes never reported: a gap
            self.on_gap(conn, from_client, ts, expected, offset - expected, "")
            expected = side.start + len(side.buf)
        if offset < expected:
            data = data[expected - offset :]
            if not data:
                return
            offset = expected
        if ack != NO_ACK:
            self._acknowledged(not from_client, ack)
        if not side.buf:
            side.start = offset
            side.marks = [(offset, ts)]
        else:
            side.marks.append((offset, ts))
        side.buf += data
        self._read(side, ts)

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        side = self.client if from_client else self.server
        if side.dead or side.ended or size <= 0:
            return
        if not side.begun:
            side.begun = True
            side.start = offset
        if not side.judged:
            side.judged = True
            self._start_unknown(side)
        self._read(side, ts)
        left = size
        # Inside a DATA payload, or a frame stepped over, of known length: only bytes are lost.
        if not side.buf and side.synced:
            if side.skip:
                step = min(side.skip, left)
                side.skip -= step
                left -= step
            elif side.data_left and not side.pad_byte:
                stream = side.data_stream
                body = side.data_left - side.pad_left
                step = min(body, left)
                if stream is not None and step:
                    self._body_lost(stream, from_client, step)
                side.data_left -= step
                left -= step
                pad = min(side.pad_left, left)
                side.pad_left -= pad
                side.data_left -= pad
                left -= pad
                if side.data_left == 0:
                    self._data_frame_end(side, ts)
        if left:
            self._lose(side, ts, left)
        side.start = offset + size
        side.buf.clear()
        side.marks = [(side.start, ts)]

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        side = self.client if from_client else self.server
        if not side.ended:
            self._read(side, ts)
            side.ended = True
            # The other side cannot acknowledge anything more of a side that ended.
            for stream in list(self.resets.values()):
                assert stream.wait_ack is not None
                if stream.wait_ack[0] == from_client:
                    del self.resets[stream.id]
                    stream.wait_ack = None
                    self._half_over(stream, not from_client, ts)

    def on_close(self, conn: Connection, ts: float) -> None:
        if self.closed:
            return
        self.on_end(conn, True, ts)
        self.on_end(conn, False, ts)
        self.closed = True
        for stream_id in sorted(self.streams):
            self._emit(self.streams[stream_id])
        self.streams.clear()
        self.resets.clear()

    # ------------------------------------------------------------------ frames

    def _read(self, side: _Side, ts: float) -> None:
        buf = side.buf
        pos = 0
        while not side.dead:
            if not side.judged:
                first = bytes(buf[pos : pos + len(H2_PREFACE)])
                if side.from_client:
                    if len(first) < len(H2_PREFACE) and H2_PREFACE.startswith(first):
                        break
                    at_start = first == H2_PREFACE
                    if at_start:
                        pos += len(H2_PREFACE)
                else:
                    if len(first) < 9:
                        break
                    at_start = first[3:9] == b"\x04\0\0\0\0\0" and first[2] % 6 == 0
                side.judged = True
                if not at_start:
                    self._start_unknown(side)
                continue
            if not side.synced:
                found, pos = self._resync(side, pos)
                if not found:
                    break
                side.synced = True
                continue
            if side.skip:
                step = min(side.skip, len(buf) - pos)
                side.skip -= step
                pos += step
                if side.skip:
                    break
                continue
            if side.data_left:
                pos = self._data_payload(side, pos, ts)
                if side.data_left:
                    break
                continue
            if len(buf) - pos < 9:
                break
            try:
                frame, length = Frame.parse_frame_header(memoryview(bytes(buf[pos : pos + 9])))
            except HyperframeError as e:
                self._malformed(side, f"a frame header that cannot be read ({e})")
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            if kind == DATA:
                start = side.start + pos
                pos += 9
                self._data_frame_start(side, frame.stream_id, flags, length, start, ts)
                continue
            if length > MAX_HEADER_BLOCK:
                pos += 9
                side.skip = length
                self._oversized(side, frame, kind, length)
                continue
            if len(buf) - pos < 9 + length:
                break
            frame_start = side.start + pos
            try:  # (a copy: the frame may keep a view of what it is given)
                frame.parse_body(memoryview(bytes(buf[pos + 9 : pos + 9 + length])))
            except HyperframeError as e:
                self._malformed(side, f"a malformed {type(frame).__name__} ({e})")
                break
            pos += 9 + length
            frame_ts = side.ts_at(frame_start, ts)
            self._frame(side, frame, kind, flags, frame_start, frame_ts, ts)
        if pos:
            side.consume(pos)

    @staticmethod
    def _resync(side: _Side, pos: int) -> tuple[bool, int]:
        """(True, where) two plausible frame headers in a row start in the buffer, from pos
        on; else (False, where to look again when more comes)."""
        buf = side.buf
        end = len(buf)
        while pos + 9 <= end:
            length = plausible_frame_header(buf[pos : pos + 9])
            if length is not None:
                after = pos + 9 + length
                if after + 9 > end:
                    return False, pos  # (wait for more to check the next one)
                if plausible_frame_header(buf[after : after + 9]) is not None:
                    return True, pos
            pos += 1
        return False, pos

    def _start_unknown(self, side: _Side) -> None:
        side.synced = False
        side.lose_hpack()

    def _lose(self, side: _Side, ts: float, size: int) -> None:
        """Frame boundaries lost: what was being read is cut, HPACK state from now on unknown,
        and every message of that side still open may have lost some of its bytes (which
        stream they were of cannot be told): none of them is complete."""
        who = self._who(side)
        text = f"{size} {who} bytes lost where frames could not be told: this message may miss some"
        for stream in self.streams.values():
            message = stream.request if side.from_client else stream.response
            if not message.done:
                message.cut = True
                self._note(stream, text)
        side.data_left = side.pad_left = side.skip = 0
        side.pad_byte = False
        side.data_stream = None
        if side.block is not None:
            self._block_lost(side)
        side.synced = False
        side.lose_hpack()

    def _malformed(self, side: _Side, why: str) -> None:
        side.dead = True
        side.buf.clear()
        self.error = f"{self._who(side)}: {why}; the rest of the connection is not read"
        for stream in self.streams.values():
            self._note(stream, self.error)

    def _oversized(self, side: _Side, frame: Frame, kind: int, length: int) -> None:
        if kind in (HEADERS, CONTINUATION, PUSH_PROMISE):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                self._note(stream, f"a header block over {MAX_HEADER_BLOCK} bytes, not read")
            side.block = None
            side.lose_hpack()

    @staticmethod
    def _who(side: _Side) -> str:
        return "client" if side.from_client else "server"

    def _frame(
        self, side: _Side, frame: Any, kind: int, flags: int, start: int, ts: float, now: float
    ) -> None:
        if side.block is not None and kind != CONTINUATION:
            self._block_lost(side)  # (a peer may not do that; go on with what comes)
        if kind in (HEADERS, PUSH_PROMISE):
            assert isinstance(frame, (HeadersFrame, PushPromiseFrame))
            side.block = bytearray(frame.data)
            side.block_stream = frame.stream_id
            side.block_kind = kind
            side.block_end_stream = bool(flags & END_STREAM) and kind == HEADERS
            side.block_ts = ts
            side.block_offset = start
            side.block_promised = (
                frame.promised_stream_id if isinstance(frame, PushPromiseFrame) else 0
            )
            side.block_over = False
            if flags & END_HEADERS:
                self._block_end(side, now)
        elif kind == CONTINUATION:
            assert isinstance(frame, ContinuationFrame)
            if side.block is None or frame.stream_id != side.block_stream:
                side.lose_hpack()  # a block whose start was not seen
                return
            if len(side.block) + len(frame.data) > MAX_HEADER_BLOCK:
                side.block_over = True
            elif not side.block_over:
                side.block += frame.data
            if flags & END_HEADERS:
                self._block_end(side, now)
        elif kind == RST_STREAM:
            assert isinstance(frame, RstStreamFrame)
            self._reset(side, frame.stream_id, frame.error_code, start + 13, now)
        elif kind == GOAWAY:
            assert isinstance(frame, GoAwayFrame)
            self._goaway(side, frame)

    # ------------------------------------------------------------------ DATA

    def _data_frame_start(
        self, side: _Side, stream_id: int, flags: int, length: int, start: int, ts: float
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is None and stream_id:
            stream = self._open(stream_id, side, None)
        side.data_stream = stream
        side.data_left = length
        side.pad_byte = bool(flags & PADDED) and length > 0
        side.pad_left = 0
        side.data_end = bool(flags & END_STREAM)
        if length == 0:
            self._data_frame_end(side, ts)

    def _data_payload(self, side: _Side, pos: int, ts: float) -> int:
        buf = side.buf
        if side.pad_byte:
            if pos >= len(buf):
                return pos
            side.pad_left = buf[pos]
            side.pad_byte = False
            side.data_left -= 1
            pos += 1
            if side.pad_left > side.data_left:
                self._malformed(side, "a DATA frame whose padding is longer than it")
                return len(buf)
        body = side.data_left - side.pad_left
        take = min(body, len(buf) - pos)
        if take:
            stream = side.data_stream
            if stream is not None:
                self._body(stream, side.from_client, memoryview(buf)[pos : pos + take])
            side.data_left -= take
            pos += take
        if side.data_left == side.pad_left and side.pad_left:
            step = min(side.pad_left, len(buf) - pos)
            side.pad_left -= step
            side.data_left -= step
            pos += step
        if side.data_left == 0:
            self._data_frame_end(side, side.ts_at(side.start + pos - 1, ts))
        return pos

    def _data_frame_end(self, side: _Side, ts: float) -> None:
        stream = side.data_stream
        side.data_stream = None
        if stream is not None and side.data_end:
            message = stream.request if side.from_client else stream.response
            message.end_ts = ts
            self._half_over(stream, side.from_client, ts)

    def _body(self, stream: _Stream, from_client: bool, data: memoryview) -> None:
        message = stream.request if from_client else stream.response
        room = self.max_body - len(message.body)
        if room > 0:
            message.body += data[:room]
        if self.tap is not None:
            self.tap(stream.id, from_client, message.body_bytes, bytes(data), len(data))
        message.body_bytes += len(data)
        if message.grpc is not None:
            message.grpc.feed(data)
        data.release()

    def _body_lost(self, stream: _Stream, from_client: bool, size: int) -> None:
        message = stream.request if from_client else stream.response
        if len(message.body) < self.max_body:
            message.body_gaps.append((len(message.body), size))
        if self.tap is not None:
            self.tap(stream.id, from_client, message.body_bytes, None, size)
        message.body_bytes += size
        message.body_missing += size
        if message.grpc is not None:
            message.grpc.lost = True

    # ------------------------------------------------------------------ header blocks

    def _block_lost(self, side: _Side) -> None:
        stream = self.streams.get(side.block_stream)
        if stream is not None:
            self._note(stream, f"a {self._who(side)} header block cut short")
        side.block = None
        side.lose_hpack()

    def _block_end(self, side: _Side, now: float) -> None:
        block, side.block = side.block, None
        assert block is not None
        stream_id = side.block_stream
        fields: list[Field] | None = None
        note = None
        if side.block_over:
            note = f"a header block over {MAX_HEADER_BLOCK} bytes, not read"
            side.lose_hpack()
        else:
            fields, note = self._decode(side, bytes(block))
        if side.block_kind == PUSH_PROMISE:
            parent = self.streams.get(stream_id)
            promised = side.block_promised
            pushed = self.streams.get(promised) or self._open(promised, side, parent)
            if pushed is None:
                return
            pushed.pushed = True
            self._note(pushed, f"pushed by the server, promised on stream {stream_id}")
            message = pushed.request
            message.ts, message.offset = side.block_ts, side.block_offset
            message.headers = fields or []
            message.end_ts = side.block_ts
            message.done = True  # a promised request has no body
            if note:
                self._note(pushed, note)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = self._open(stream_id, side, None)
            if stream is None:
                return
        if note:
            self._note(stream, note)
        message = stream.request if side.from_client else stream.response
        fields = fields or []
        if message.ts is None:
            message.ts, message.offset, message.headers = side.block_ts, side.block_offset, fields
            if side.from_client:
                content_type = message.field("content-type") or ""
                if content_type.startswith("application/grpc"):
                    stream.request.grpc = _Grpc()
                    stream.response.grpc = _Grpc()
                if self.announce and stream.response.ts is None:
                    self.emit(HttpRequestSeen(self.conn_id, self._request(stream)))
        elif not side.from_client and 100 <= self._status(message) < 200:
            # What came before was an interim (1xx) response: kept with the exchange.
            message.interim.append((self._status(message), "", message.ts))
            message.ts, message.offset, message.headers = side.block_ts, side.block_offset, fields
        else:
            message.trailers = fields  # the fields after the body
        if side.block_end_stream:
            message.end_ts = now
            self._half_over(stream, side.from_client, now)

    def _decode(self, side: _Side, block: bytes) -> tuple[list[Field], str | None]:
        note = None
        if side.table.lost:
            note = f"{self._who(side)} HPACK state not all seen: fields it names are unknown"
        try:
            decoded = decode_block(side.table, block, MAX_HEADER_LIST, MAX_TABLE)
        except hpack.HPACKError as e:
            side.lose_hpack()
            return [], f"a {self._who(side)} header block that does not decode ({e})"
        fields: list[Field] = []
        for name, value in decoded:
            if name == _UNKNOWN:
                fields.append((UNKNOWN_NAME, "" if not value else value.decode("latin-1")))
            else:
                fields.append((name.decode("latin-1"), value.decode("latin-1")))
        if note and not any(n == UNKNOWN_NAME for n, _ in fields):
            note = None
        return fields, note

    @staticmethod
    def _status_of(fields: list[Field]) -> int:
        for name, value in fields:
            if name == ":status":
                return int(value) if value.isdigit() and len(value) == 3 else 0
        return 0

    def _status(self, message: _Message) -> int:
        return self._status_of(message.headers)

    # ------------------------------------------------------------------ streams

    def _open(self, stream_id: int, side: _Side, parent: _Stream | None) -> _Stream | None:
        if stream_id in self.gone:
            return None  # (a frame late for a stream already reported: not a new one)
        if len(self.streams) >= self.max_streams:
            oldest = min(self.streams)
            stream = self.streams.pop(oldest)
            self.resets.pop(oldest, None)
            self._note(
                stream, f"reported as it stood: over {self.max_streams} streams open at once"
            )
            self._emit(stream)
        index = parent.index if parent is not None else self.index_base + (stream_id >> 1)
        stream = self.streams[stream_id] = _Stream(stream_id, index)
        return stream

    def upgraded(self, request: HttpRequest) -> None:
        """Stream 1 is the answer to this HTTP/1.1 request, which asked for the Upgrade: its
        request half is over (the client's HTTP/2 begins with the preface)."""
        stream = self._open(1, self.client, None)
        assert stream is not None
        stream.upgraded = request
        message = stream.request
        message.ts, message.end_ts, message.offset = request.ts, request.end_ts, request.offset
        message.done = True

    def _reset(self, side: _Side, stream_id: int, code: int, after: int, now: float) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        who = self._who(side)
        stream.reset = f"reset by the {who}: {error_name(code)}"
        self._note(stream, stream.reset)
        self._half_over(stream, side.from_client, now)
        other = self.server if side.from_client else self.client
        if other.ended:
            self._half_over(stream, not side.from_client, now)
        else:
            stream.wait_ack = (side.from_client, after)
            self.resets[stream.id] = stream

    def _acknowledged(self, acked_side_client: bool, ack: int) -> None:
        """A segment of the other side acknowledged `ack` of this side: the streams this side
        reset, once the reset is acknowledged, are over for the other side too."""
        if not self.resets:
            return
        waiting = [s for s in self.resets.values()
                   if s.wait_ack is not None and s.wait_ack[0] == acked_side_client]  # fmt: skip
        if not waiting:
            return
        covered = self.peer_offset(not acked_side_client, ack)
        if covered is None:
            return
        for stream in waiting:
            assert stream.wait_ack is not None
            if covered >= stream.wait_ack[1]:
                stream.wait_ack = None
                del self.resets[stream.id]
                self._half_over(stream, not acked_side_client, self.last_ts)

    def _goaway(self, side: _Side, frame: GoAwayFrame) -> None:
        text = f"GOAWAY from the {self._who(side)}: {error_name(frame.error_code)}, last stream {frame.last_stream_id}"
        if frame.additional_data:
            text += f" ({bytes(frame.additional_data[:200]).decode('latin-1')})"
        for stream in self.streams.values():
            if stream.id > frame.last_stream_id and (stream.id & 1) != side.from_client:
                self._note(stream, text + ": this stream was not processed")

    def _half_over(self, stream: _Stream, from_client: bool, ts: float) -> None:
        message = stream.request if from_client else stream.response
        if not message.done:
            message.done = True
            if message.end_ts is None and message.ts is not None:
                message.end_ts = ts
        if stream.request.done and stream.response.done and self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self.resets.pop(stream.id, None)
            self._emit(stream)

    @staticmethod
    def _note(stream: _Stream, text: str) -> None:
        if text not in stream.notes:
            stream.notes.append(text)

    # ------------------------------------------------------------------ records

    def _request(self, stream: _Stream) -> HttpRequest:
        m = stream.request
        fields = dict(m.headers)
        method = fields.get(":method", "?" if m.headers else "")
        target = fields.get(":path") or fields.get(":authority") or ""
        return HttpRequest(
            m.ts or 0.0, m.end_ts if m.done else None, method, target, "2",
            Headers(tuple(m.headers), None), m.body_bytes, m.body_missing, bytes(m.body),
            m.done and stream.reset is None and not m.cut, m.offset, tuple(m.body_gaps), tuple(m.trailers),
        )  # fmt: skip

    def _response(self, stream: _Stream) -> HttpResponse:
        m = stream.response
        return HttpResponse(
            m.ts or 0.0, m.end_ts if m.done else None, self._status(m), "", "2",
            Headers(tuple(m.headers), None), m.body_bytes, m.body_missing, bytes(m.body),
            m.done and stream.reset is None and not m.cut, tuple(m.interim), m.offset, tuple(m.body_gaps),
            tuple(m.trailers),
        )  # fmt: skip

    def _grpc(self, stream: _Stream) -> GrpcCall | None:
        if stream.request.grpc is None:
            return None
        path = dict(stream.request.headers).get(":path", "")
        service, _, method = path.lstrip("/").partition("/")
        fields = dict(stream.response.trailers or stream.response.headers)
        raw_status = fields.get("grpc-status")
        status = int(raw_status) if raw_status is not None and raw_status.isdigit() else None
        message = fields.get("grpc-message")
        if message is not None:
            message = unquote(message, encoding="utf-8", errors="replace")
        req, resp = stream.request.grpc, stream.response.grpc
        assert req is not None and resp is not None
        return GrpcCall(
            service, method, status, message, req.count, resp.count, req.bytes, resp.bytes,
            (req.compressed, resp.compressed), req.lost or resp.lost,
        )  # fmt: skip

    def _emit(self, stream: _Stream) -> None:
        gone = self.gone
        gone[stream.id] = None
        if len(gone) > GONE_KEPT:
            del gone[next(iter(gone))]
        request = self._request(stream) if stream.request.ts is not None else None
        if stream.upgraded is not None:
            request = stream.upgraded
        response = self._response(stream) if stream.response.ts is not None else None
        if request is None and not stream.pushed:
            self._note(stream, "its request was not captured")
        self.emit(
            HttpTransaction(
                self.conn_id,
                stream.index,
                request,
                response,
                self.error,
                False,
                tuple(stream.notes),
                stream.id,
                self._grpc(stream),
            )
        )


def http2_parser_factory(
    max_body: int = DEFAULT_MAX_BODY, announce: bool = False
) -> Callable[[Connection, Callable[[Event], None]], Http2Parser]:
    """A consumer factory for `Pipeline(consumers={"http2": [...]})`."""

    def make(conn: Connection, emit: Callable[[Event], None]) -> Http2Parser:
        return Http2Parser(conn, emit, max_body, announce)

    return make


FRAME_NAMES: Final = (
    "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
    "WINDOW_UPDATE", "CONTINUATION",
)  # fmt: skip


def frame_label(kind: int, flags: int, stream_id: int, length: int) -> str:
    """How the Stream tab names a frame: type, stream, flags, length."""
    name = FRAME_NAMES[kind] if kind < len(FRAME_NAMES) else f"type 0x{kind:02x}"
    words = []
    if flags & 0x1:
        words.append("ACK" if kind in (SETTINGS, PING) else "END_STREAM")
    if flags & END_HEADERS and kind in (HEADERS, PUSH_PROMISE, CONTINUATION):
        words.append("END_HEADERS")
    if flags & PADDED and kind in (DATA, HEADERS, PUSH_PROMISE):
        words.append("PADDED")
    if flags & 0x20 and kind == HEADERS:
        words.append("PRIORITY")
    flag_text = f" {'|'.join(words)}" if words else ""
    return f"{name} stream {stream_id}{flag_text} {length:,} B"


class FrameScanner:
    """Where the HTTP/2 frames of one direction start, and what they are, from its bytes given
    in order (the Stream tab's frame marks). It reads frame headers only, stepping over
    payloads. From the stream's start it expects the client's preface or the server's SETTINGS
    (else the stream is not HTTP/2: it stops); from anywhere else (the start not kept, bytes
    not seen) it looks for two plausible frame headers in a row, within `HUNT` bytes, and goes
    on from there. It keeps the newest `limit` frames (those of a long stream's end: the view
    keeps the newest bytes too)."""

    HUNT: ClassVar[int] = 256 * 1024

    def __init__(self, from_client: bool, limit: int = 20_000) -> None:
        self.from_client = from_client
        self.limit = limit
        # The frames found, newest last: (stream offset, type, flags, stream id, length, what
        # is said of it), labelled only when asked for (`frames`): most are never shown.
        self.found_frames: list[tuple[int, int, int, int, int, str]] = []
        self._labels: list[tuple[int, str]] = []  # the labels of the first of them
        self.pos = -1  # stream offset past the bytes given (-1: none yet)
        self.next = 0  # stream offset of the next frame header
        self.pending = b""  # bytes from `next` on, fewer than a header (or the preface's start)
        self.state = "start"  # then "frames", "hunt" or "stopped"
        self.hunt = bytearray()  # bytes looked through for frame headers, from `hunt_at`
        self.hunt_at = 0
        self.hunted = 0  # bytes looked through since the hunt began
        self.found = ""  # said on the first frame found by a hunt
        self.total = 0  # marks made, those no longer kept too

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    @property
    def frames(self) -> list[tuple[int, str]]:
        """The newest frames found (at most `limit` and a quarter), as (stream offset, label)."""
        labels = self._labels
        for offset, kind, flags, stream_id, length, note in self.found_frames[len(labels) :]:
            if kind < 0:
                labels.append((offset, note))
            else:
                labels.append((offset, frame_label(kind, flags, stream_id, length) + note))
        return labels

    def feed(self, offset: int, data: bytes) -> int:
        """Read the next bytes of the direction; the number of marks they gave."""
        if self.state == "stopped" or not data:
            return 0
        found = self.total
        if offset != self.pos:
            if self.pos >= 0 or offset > 0:
                self._hunt(offset)
            self.pos = offset
        self.pos = offset + len(data)
        if self.state == "hunt":
            data = self._hunting(offset, data)
            if not data:
                return self.total - found
            offset = self.next
        elif self.state == "start":
            buf = self.pending + data
            size = len(H2_PREFACE) if self.from_client else 9
            if len(buf) < size:
                if self.from_client and not H2_PREFACE.startswith(buf):
                    self.state = "stopped"
                else:
                    self.pending = buf
                return 0
            if self.from_client:
                if buf[:size] != H2_PREFACE:
                    self.state = "stopped"
                    return 0
                self.found_frames.append((0, -1, 0, 0, 0, "HTTP/2 connection preface"))
                self.total += 1
                self.next = size
            elif buf[3] != SETTINGS:
                self.state = "stopped"
                return 0
            self.state = "frames"
            self.pending = b""
            data, offset = buf, 0
        self._walk(offset, data)
        frames = self.found_frames
        if len(frames) > self.limit + self.limit // 4:
            cut = len(frames) - self.limit
            del frames[:cut]
            del self._labels[:cut]
        return self.total - found

    def _walk(self, offset: int, data: bytes) -> None:
        buf = self.pending + data if self.pending else data
        base = offset - len(self.pending)
        i = self.next - base
        while i + 9 <= len(buf):
            head = buf[i : i + 9]
            length = (head[0] << 16) | (head[1] << 8) | head[2]
            stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            note = ""
            if self.found:
                note, self.found = f" (frames {self.found} here)", ""
            self.found_frames.append((base + i, head[3], head[4], stream_id, length, note))
            self.total += 1
            i += 9 + length
        self.next = base + i
        self.pending = bytes(buf[i:]) if i < len(buf) else b""

    def _hunt(self, offset: int) -> None:
        """Frame boundaries unknown from `offset` on: look for them."""
        self.state = "hunt"
        self.hunt = bytearray()
        self.hunt_at = offset
        self.hunted = 0
        self.pending = b""

    def _hunting(self, offset: int, data: bytes) -> bytes:
        """Look for two plausible frame headers in a row; once found, the bytes from the first
        on (frames are read from there), else b"" (more is needed, or the hunt gave up)."""
        hunt = self.hunt
        hunt += data
        pos = 0
        while pos + 9 <= len(hunt):
            length = plausible_frame_header(hunt[pos : pos + 9])
            if length is not None:
                after = pos + 9 + length
                if after + 9 > len(hunt):
                    break  # (the next header is still to come)
                if plausible_frame_header(hunt[after : after + 9]) is not None:
                    start = self.hunt_at + pos
                    self.found = "found again" if self.total else "found"
                    rest = bytes(hunt[pos:])
                    self.hunt = bytearray()
                    self.state = "frames"
                    self.next = start
                    return rest
            pos += 1
        self.hunted += pos
        if self.hunted > self.HUNT:
            self.state = "stopped"
            self.hunt = bytearray()
            return b""
        del hunt[:pos]
        self.hunt_at += pos
        return b""
