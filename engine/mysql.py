"""MySQL transactions: commands and their responses, read from the classic client/server protocol
(MySQL and MariaDB).

A stream consumer (`engine.tcp.StreamConsumer`) for connections the sniffer found speaking MySQL.
The server speaks first: `greeting_start` tells its initial handshake (protocol 10, a version
string, a thread id), or the error a server sends instead of one; `handshake_response_start`
tells the client's answer (a HandshakeResponse41 or an SSLRequest), so either side decides.

Packets are a 3-byte length and a sequence id; a payload of 0xFFFFFF bytes goes on in the next
packet. Each direction is read as it comes, keeping only a payload's first `KEEP` bytes: rows
and big values are stepped over, so a result set of a million rows costs what one row does.

What is read:
- The login is one transaction: the HandshakeResponse (`login user=app db=shop auth=plugin`)
  and the server's final OK or ERR; an AuthSwitchRequest, auth more data (caching_sha2's fast
  auth) and the client's answers to them are folded into it, and the server's version (from its
  greeting) is in the summary. An SSLRequest turns the rest of the connection into TLS: one
  transaction says so and nothing more is read. So does a login that enables compression.
- A command starts with a client packet of sequence id 0. COM_QUERY shows its SQL (whitespace
  collapsed, cut to `SQL_CHARS`), COM_STMT_PREPARE its SQL and the statement id and counts the
  server gives, COM_STMT_EXECUTE and the other statement commands the SQL of that id (up to
  `MAX_STATEMENTS` remembered per connection: one prepared before the capture began is said so,
  `EXECUTE #7 (prepared before the capture)`, its SQL not being known); the others are named.
  COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA and COM_QUIT have no response and are not waited for
  (their transactions are ok: nothing failed).
- A response is OK (`OK, 1 row affected`), ERR (`ERR 1146 (42S02): ...`, status error), a result
  set (`3 rows, 2 columns`: column count, definitions, rows in the text or binary protocol, and
  an EOF or, with CLIENT_DEPRECATE_EOF, an OK to end them), or for a few commands something of
  their own. Whether an EOF follows definitions is read from the packets themselves (an EOF is
  0xFE and 5 bytes long, a row or an OK that ends rows is not): when the login that negotiated
  CLIENT_DEPRECATE_EOF was not seen, the first result set tells, and a prepared statement's
  definitions read before that end with the next packet that does not continue them. Results
  that say more follow (SERVER_MORE_RESULTS_EXISTS: a CALL, several statements) are folded into
  the command's transaction, and so is a LOCAL INFILE exchange.
  Every packet of a response continues the sequence ids of its command: one that does not ends
  the response (so a packet that answers no command seen is not taken for an answer).

Pairing is by order on each side, never by the order in which the capture shows the two
directions: the client's commands are read as they come (at most `MAX_PENDING` wait), and the
server's bytes are read as the responses to them, in order, as soon as the command they answer
is known (they wait for it, up to `HOLD` bytes). A login or LOCAL INFILE exchange, where the
client sends within the response, ends once the client's side has been read as far as the
server had received when it answered (its acknowledgment), so the client's part is counted
whatever the interleaving. Server packets that answer no command seen (an error sent before
closing an idle connection) are a transaction with no request. Each transaction is numbered
when it is complete, in the order of the conversation.

Bytes never captured (`on_gap`): a gap inside a packet's payload only costs that packet bytes.
One that breaks the framing is resynchronised where that can be done for certain, and the notes
say what could not be paired:
- Client side: the bytes that follow are scanned for a packet of sequence id 0 with a known
  command byte, a length that command can have, and text where it has SQL. Commands in the lost
  bytes are not known, so the server's answers to them cannot be told apart from the next
  one's: the server's packets are passed over until one that was sent after the server had
  received that whole command (its segment's acknowledgment covers it: `Connection.peer_offset`)
  and starts a response to it. A command the client sent without waiting (it had received
  nothing since a command that has an answer, or since bytes of one not known: its segment's
  acknowledgment is the one before) cannot be told apart from that earlier command's answer so:
  only the first segment the server sent after receiving the last command that was waited for
  is taken, as that one's answer, and the rest follows by order.
- Server side: the response cut short is emitted as it was read, with a note. The server's
  packets are then passed over up to a segment that was sent after the server had received a
  command it had not yet been seen answering, and that starts with a response's first packet
  header; the commands between, whose answers were in the lost bytes, are emitted without one.
Without acknowledgments nothing is resynchronised, and the commands left say so.

A capture begun inside the connection (no SYN seen: the consumer is told by an empty gap at
offset 0 of each side, `engine.tcp.MIDSTREAM`, before any bytes): no greeting or login is
expected, unless a side's first bytes are one (a capture begun just after the handshake). The
connection is in its command phase, and both sides are read as after lost bytes, above: the
client's from its first command (the end of one sent before is not read, and its first
command's notes say so), the server's from the first response that the acknowledgments tie to a
command; the server bytes before it, which answer commands sent before the capture began, are
one transaction with no request. The server's bytes wait for the client's first byte (before it
their acknowledgments cannot be placed: up to `HOLD` bytes). A pool's connection whose client
waits for each answer is so paired from its first command after the capture began; the notes on
what could not be paired say the capture began inside the connection. Until a pairing has shown
the bytes are plain MySQL packets, compression or TLS negotiated before the capture cannot be
told from the login: a segment that starts TLS records or compressed packets (their 7-byte
header), or a client whose packets do not frame as commands `MAX_MISFRAMES` times, is one
transaction that says so, and nothing more is read (no guessed transactions).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from engine.events import Event, Message, Transaction
from engine.reassembly import NO_ACK
from engine.tcp import MIDSTREAM

if TYPE_CHECKING:
    from engine.tcp import Connection

PROTOCOL = "mysql"
KEEP = 2048  # bytes of a payload kept for its summary
SQL_CHARS = 200  # characters of SQL (or other text) in a summary
MESSAGE_CHARS = 300  # characters of an error message
MAX_PENDING = 1000  # commands waiting for their responses
MAX_STATEMENTS = 1024  # prepared statements remembered per connection
HOLD = 1024 * 1024  # server bytes held while the command they answer is not known yet
MAX_CHUNKS = 8192  # delivered chunks held (their times and acknowledgments)
MAX_AUTH_PACKETS = 16  # packets of a login's exchange
MAX_PARTS = 4  # results shown in a response's summary
MAX_COLUMNS = 4096  # a result set has at most this many (MySQL's limit)
MAX_MISFRAMES = 4  # times the client's bytes may not frame before any pairing (midstream)
MAX_PACKET = 0xFFFFFF  # a payload this long goes on in the next packet

# Capability flags (the server's in its greeting, the client's in its HandshakeResponse).
CLIENT_CONNECT_WITH_DB: Final = 0x8
CLIENT_COMPRESS: Final = 0x20
CLIENT_PROTOCOL_41: Final = 0x200
CLIENT_SSL: Final = 0x800
CLIENT_SECURE_CONNECTION: Final = 0x8000
CLIENT_PLUGIN_AUTH: Final = 0x80000
CLIENT_CONNECT_ATTRS: Final = 0x100000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: Final = 0x200000
CLIENT_DEPRECATE_EOF: Final = 0x1000000
CLIENT_ZSTD_COMPRESSION_ALGORITHM: Final = 0x4000000
CLIENT_QUERY_ATTRIBUTES: Final = 0x8000000
# Server status flags (in OK and EOF packets).
SERVER_MORE_RESULTS_EXISTS: Final = 0x8
SERVER_STATUS_CURSOR_EXISTS: Final = 0x40
SERVER_STATUS_LAST_ROW_SENT: Final = 0x80

# What a response is made of, by command.
_NONE, _SIMPLE, _RESULT, _PREPARE, _FIELDS, _FETCH, _STRING, _AUTH, _STREAM, _OPEN = range(10)
QUERY, FIELD_LIST, CHANGE_USER = 0x03, 0x04, 0x11
PREPARE, EXECUTE, SEND_LONG_DATA, CLOSE, RESET, FETCH = 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C
INIT_DB, PROCESS_KILL, SET_OPTION, BULK_EXECUTE = 0x02, 0x0C, 0x1B, 0xFA
LOGIN, SSL_REQUEST = -1, -2  # the client's first packet, as a command
# Command byte: name, least and most payload length (the command byte included), response.
_COMMANDS: Final = {
    0x01: ("QUIT", 1, 1, _NONE),
    INIT_DB: ("INIT_DB", 2, 1024, _SIMPLE),
    QUERY: ("QUERY", 2, MAX_PACKET, _RESULT),
    FIELD_LIST: ("FIELD_LIST", 2, 4096, _FIELDS),
    0x05: ("CREATE_DB", 2, 1024, _SIMPLE),
    0x06: ("DROP_DB", 2, 1024, _SIMPLE),
    0x07: ("REFRESH", 2, 2, _SIMPLE),
    0x08: ("SHUTDOWN", 1, 2, _SIMPLE),
    0x09: ("STATISTICS", 1, 1, _STRING),
    0x0A: ("PROCESS_INFO", 1, 1, _RESULT),
    PROCESS_KILL: ("PROCESS_KILL", 5, 5, _SIMPLE),
    0x0D: ("DEBUG", 1, 1, _SIMPLE),
    0x0E: ("PING", 1, 1, _SIMPLE),
    CHANGE_USER: ("CHANGE_USER", 2, 65535, _AUTH),
    0x12: ("BINLOG_DUMP", 11, 65535, _STREAM),
    0x13: ("TABLE_DUMP", 3, 1024, _OPEN),
    0x15: ("REGISTER_SLAVE", 18, 65535, _SIMPLE),
    PREPARE: ("PREPARE", 2, MAX_PACKET, _PREPARE),
    EXECUTE: ("EXECUTE", 10, MAX_PACKET, _RESULT),
    SEND_LONG_DATA: ("SEND_LONG_DATA", 7, MAX_PACKET, _NONE),
    CLOSE: ("CLOSE", 5, 5, _NONE),
    RESET: ("RESET", 5, 5, _SIMPLE),
    SET_OPTION: ("SET_OPTION", 3, 3, _SIMPLE),
    FETCH: ("FETCH", 9, 9, _FETCH),
    0x1E: ("BINLOG_DUMP_GTID", 19, MAX_PACKET, _STREAM),
    0x1F: ("RESET_CONNECTION", 1, 1, _SIMPLE),
    BULK_EXECUTE: ("BULK_EXECUTE", 7, MAX_PACKET, _RESULT),  # MariaDB
}
_TEXT_COMMANDS = frozenset({QUERY, PREPARE, INIT_DB, FIELD_LIST, CHANGE_USER, 0x05, 0x06})
# Commands looked for in a client's stream after lost bytes (not the rare ones: replication,
# deprecated commands), whose length and first bytes are checked (`_plausible_command`).
_RESYNC_COMMANDS = frozenset(
    {0x01, INIT_DB, QUERY, FIELD_LIST, 0x09, PROCESS_KILL, 0x0E, CHANGE_USER, PREPARE, EXECUTE,
     SEND_LONG_DATA, CLOSE, RESET, SET_OPTION, FETCH, 0x1F, BULK_EXECUTE}
)  # fmt: skip
_STATEMENT_COMMANDS = frozenset({EXECUTE, SEND_LONG_DATA, CLOSE, RESET, FETCH, BULK_EXECUTE})
# The first payload byte a response of each kind can start with (None: any).
_FIRST_BYTES: Final[dict[int, frozenset[int] | None]] = {
    _SIMPLE: frozenset({0x00, 0xFE, 0xFF}),
    _RESULT: frozenset({0x00, 0xFB, 0xFC, 0xFF, *range(1, 0xFB)}),
    _PREPARE: frozenset({0x00, 0xFF}),
    _FIELDS: frozenset({0x03, 0xFE, 0xFF}),
    _FETCH: frozenset({0x00, 0xFE, 0xFF}),
    _STRING: None,
    _AUTH: frozenset({0x00, 0x01, 0xFE, 0xFF}),
    _STREAM: frozenset({0x00, 0xFE, 0xFF}),
    _OPEN: None,
}
_OPTIONS = {0: "MULTI_STATEMENTS_ON", 1: "MULTI_STATEMENTS_OFF"}


# --- detection ---------------------------------------------------------------------------------


def greeting_start(prefix: bytes) -> bool | None:
    """Whether a server's first bytes are a MySQL initial handshake (protocol 10), or the error
    a server sends instead of one (None: too few to tell)."""
    n = len(prefix)
    if n >= 2 and prefix[1] > 3:  # a greeting is shorter than 1 KiB
        return False
    if (n >= 3 and prefix[2] != 0) or (n >= 4 and prefix[3] != 0):
        return False
    if n < 5:
        return None
    length = prefix[0] | prefix[1] << 8
    end = min(n, 4 + length)
    if prefix[4] == 0xFF:  # "Host ... is not allowed to connect", "Too many connections"
        if length < 12:
            return False
        if n < 7:
            return None
        code = prefix[5] | prefix[6] << 8
        text = prefix[7:end]
        if not 1000 <= code < 10000 or any(b < 0x20 or b == 0x7F for b in text):
            return False
        return True if n >= 4 + length else None
    if prefix[4] != 10 or length < 30:
        return False
    at = 5
    while at < end and prefix[at] != 0:
        if not 0x20 < prefix[at] < 0x7F or at > 5 + 60:
            return False
        at += 1
    if n > 5 and not 0x30 <= prefix[5] <= 0x39:  # a version number first
        return False
    filler = at + 1 + 4 + 8  # after the version: the thread id, the scramble's first part
    if filler >= 4 + length:
        return False
    if filler >= n:
        return None
    return prefix[filler] == 0


def handshake_response_start(prefix: bytes) -> bool | None:
    """Whether a client's first bytes are a MySQL HandshakeResponse41 or SSLRequest: sequence id
    1, CLIENT_PROTOCOL_41, a character set, and the filler's zeros (None: too few to tell)."""
    n = len(prefix)
    if (n >= 3 and prefix[2] != 0) or (n >= 4 and prefix[3] != 1):
        return False
    if n < 4:
        return None
    length = prefix[0] | prefix[1] << 8
    if length < 32:
        return False
    if n >= 8:
        caps = int.from_bytes(prefix[4:8], "little")
        if not caps & CLIENT_PROTOCOL_41 or (length == 32 and not caps & CLIENT_SSL):
            return False
    if n >= 13 and prefix[12] == 0:  # the character set
        return False
    if any(prefix[13 : min(n, 32)]):  # MariaDB uses the filler's last 4 bytes
        return False
    return True if n >= 32 else None


# --- packets -----------------------------------------------------------------------------------


class _Packet:
    """One logical packet: the first bytes of its payload, and where and when it was sent."""

    __slots__ = ("ack", "cut", "end", "end_ack", "end_ts", "head", "last_seq", "lost", "prior",
                 "seq", "size", "start", "ts", "wire")  # fmt: skip

    def __init__(self, seq: int, ts: float, ack: int, start: int, prior: int) -> None:
        self.seq = seq
        self.last_seq = seq  # of its last physical packet
        self.head = bytearray()
        self.size = 0  # payload bytes, those not captured included
        self.wire = 0  # bytes on the wire, headers included
        self.ts = ts
        self.end_ts = ts
        self.ack = ack  # of the segment that carried its first byte
        self.end_ack = ack  # of the segment that carried its last byte
        self.prior = prior  # of the segment that carried the byte before it (NO_ACK: not read)
        self.start = start  # stream offset of its header
        self.end = start
        self.lost = 0  # payload bytes that were not captured
        self.cut = False  # the framing was lost inside it: it ends somewhere unknown

    @property
    def first(self) -> int:
        return self.head[0] if self.head else -1


class _Stream:
    """One direction's bytes, read as packets when the reader wants them (see the module).

    Delivered chunks wait in `buf` (with their times and acknowledgments in `marks`); those
    after a gap wait in `queue` behind it until the reader gets there.
    """

    __slots__ = ("buf", "delivered", "ended", "held", "left", "lost", "lost_bytes", "marks",
                 "more", "packet", "pos", "prior", "queue")  # fmt: skip

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # stream offset of buf[0]
        self.marks: deque[tuple[int, float, int]] = deque()  # (offset, ts, ack) of each chunk
        self.queue: deque[tuple[int, float, int, bytes | None, int]] = deque()  # a gap first
        self.packet: _Packet | None = None  # the packet being read
        self.left = 0  # payload bytes of the current physical packet still to read
        self.more = False  # the current physical packet is 0xFFFFFF long: another follows
        self.lost = False  # the framing was lost: the reader looks for it again
        self.lost_bytes = 0  # bytes not read since then
        self.ended = False
        self.delivered = 0  # stream offset after the last byte or gap given
        self.held = 0  # bytes waiting in buf and queue
        self.prior = NO_ACK  # ack of the segment that brought the last byte read (NO_ACK: a gap)

    def add(self, offset: int, ts: float, ack: int, data: bytes) -> None:
        self.delivered = offset + len(data)
        self.held += len(data)
        if self.queue:
            self.queue.append((offset, ts, ack, data, len(data)))
            return
        if not self.buf:
            self.pos = offset
        self.marks.append((offset, ts, ack))
        self.buf += data

    def gap(self, offset: int, ts: float, size: int) -> None:
        self.delivered = offset + size
        self.queue.append((offset, ts, NO_ACK, None, size))

    @property
    def exhausted(self) -> bool:
        """Nothing is waiting to be read (and, once `ended`, nothing will come)."""
        return not self.buf and not self.queue and self.packet is None

    def mark_at(self, offset: int) -> tuple[float, int]:
        """(ts, ack) of the chunk that brought the byte at `offset` (still held)."""
        found = (0.0, NO_ACK)
        for start, ts, ack in self.marks:
            if start > offset:
                break
            found = (ts, ack)
        return found

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.pos += n
        self.held -= n
        marks = self.marks
        while len(marks) > 1 and marks[1][0] <= self.pos:
            marks.popleft()
        if not self.buf:
            marks.clear()

    def _take_gap(self) -> int:
        """Step over the gap at the head of the queue (buf is empty); returns its size."""
        offset, _, _, _, size = self.queue.popleft()
        self.pos = offset + size
        self.prior = NO_ACK
        self.marks.clear()
        while self.queue and self.queue[0][3] is not None:
            offset, ts, ack, data, _ = self.queue.popleft()
            if not self.buf:
                self.pos = offset
            self.marks.append((offset, ts, ack))
            self.buf += data or b""
        return size

    def _lose(self) -> None:
        """The framing is lost here: drop what is held before the next gap and step over it."""
        self.lost = True
        self.prior = NO_ACK
        self.lost_bytes += len(self.buf)
        self._consume(len(self.buf))
        if self.queue:
            self.lost_bytes += self._take_gap()

    def drop(self) -> int:
        """Drop everything held (a bound): the framing is lost. Returns how many bytes."""
        held = self.held
        self.packet = None
        self.left = 0
        self.more = False
        self.lost = True
        self.prior = NO_ACK
        self.lost_bytes += held
        self._consume(len(self.buf))
        self.queue.clear()
        self.held = 0
        return held

    def seq(self) -> int | None:
        """The sequence id of the next packet (or the one being read), if its header is here."""
        if self.lost:
            return None
        if self.packet is not None:
            return self.packet.seq
        if len(self.buf) >= 4:
            return self.buf[3]
        if self.queue:  # a gap where a header should be
            self._lose()
        return None

    def header(self) -> tuple[int, int, int] | None:
        """(seq, first payload byte or -1, ack) of the next packet, at a packet boundary."""
        buf = self.buf
        if self.lost or self.packet is not None:
            return None
        if len(buf) >= 5 or (len(buf) == 4 and not buf[0] and not buf[1] and not buf[2]):
            return buf[3], buf[4] if len(buf) >= 5 else -1, self.mark_at(self.pos)[1]
        if self.queue:
            self._lose()
        return None

    def next(self) -> _Packet | None:
        """The next whole packet; None when more bytes are needed, or the framing was lost
        (`lost`). A packet in which the framing was lost comes with `cut` set."""
        if self.lost:
            return None
        buf = self.buf
        while True:
            p = self.packet
            if p is None or (not self.left and self.more):
                if len(buf) < 4:
                    if self.queue:  # a gap where a header should be
                        self.packet = None
                        self.more = False
                        self._lose()
                        if p is not None:
                            p.cut = True
                            return p
                    return None
                length = buf[0] | buf[1] << 8 | buf[2] << 16
                if p is None:
                    ts, ack = self.mark_at(self.pos)
                    p = self.packet = _Packet(buf[3], ts, ack, self.pos, self.prior)
                else:
                    p.last_seq = buf[3]
                self._consume(4)
                p.wire += 4
                self.left = length
                self.more = length == MAX_PACKET
            if self.left:
                take = min(self.left, len(buf))
                if take:
                    room = KEEP - len(p.head)
                    if room > 0:
                        p.head += buf[: min(room, take)]
                    p.end_ts, p.end_ack = self.mark_at(self.pos + take - 1)
                    self._consume(take)
                    self.left -= take
                    p.size += take
                    p.wire += take
                if self.left:
                    if buf or not self.queue:
                        return None
                    size = self.queue[0][4]
                    if size <= self.left:  # a gap inside this packet: the framing holds
                        self._take_gap()
                        self.left -= size
                        p.lost += size
                        p.size += size
                        p.wire += size
                        continue
                    rest = self.left  # the gap runs past this packet: its end is known, no more
                    p.lost += rest
                    p.size += rest
                    p.wire += rest
                    p.cut = True
                    self.packet = None
                    self.left = 0
                    self.more = False
                    self.lost = True
                    self.lost_bytes += self._take_gap() - rest
                    return p
            if self.more:
                continue
            self.packet = None
            self.prior = p.end_ack
            p.end = self.pos
            return p

    def scan(self, plausible: Callable[[bytearray, int], bool | None]) -> bool:
        """Lost: look for a packet header that `plausible` accepts and resume reading there.
        False: none yet (the bytes that cannot start one are dropped)."""
        buf = self.buf
        while True:
            at = 0
            while True:
                zero = buf.find(0, at + 3)  # a command's sequence id is 0
                if zero < 0:
                    at = max(at, len(buf) - 3)
                    break
                at = zero - 3
                verdict = plausible(buf, at) if len(buf) >= at + 5 else None
                if verdict:
                    self._pass(at)
                    self.lost = False
                    return True
                if verdict is None:
                    break
                at += 1
            self._pass(at)
            if not self.queue:
                return False
            self.lost_bytes += len(buf)
            self._consume(len(buf))
            self.lost_bytes += self._take_gap()

    def _pass(self, n: int) -> None:
        """Lost: step over n bytes that start nothing (their last one's ack is kept)."""
        if n > 0:
            self.prior = self.mark_at(self.pos + n - 1)[1]
            self.lost_bytes += n
            self._consume(n)

    def chunk(self) -> tuple[int, int, int] | None:
        """Lost: (seq, first payload byte, ack) of the header at the next chunk's start, which
        the reader then takes (`found`) or passes over (`skip_chunk`); None: wait."""
        while True:
            marks = self.marks
            while marks and marks[0][0] < self.pos:
                marks.popleft()
            if marks and marks[0][0] > self.pos:
                self.lost_bytes += marks[0][0] - self.pos
                self._consume(marks[0][0] - self.pos)
            if marks and len(self.buf) >= 5:
                return self.buf[3], self.buf[4], marks[0][2]
            if not self.queue:
                return None
            self.lost_bytes += len(self.buf)
            self._consume(len(self.buf))
            self.lost_bytes += self._take_gap()

    def skip_chunk(self) -> None:
        for start, _, _ in self.marks:
            if start > self.pos:
                self.lost_bytes += start - self.pos
                self._consume(start - self.pos)
                return
        self.lost_bytes += len(self.buf)
        self._consume(len(self.buf))

    def found(self) -> int:
        """Lost: the framing resumes at the chunk `chunk` gave; returns the bytes not read."""
        lost, self.lost_bytes, self.lost = self.lost_bytes, 0, False
        return lost


# --- payloads ----------------------------------------------------------------------------------


def _lenenc(b: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """A length-encoded integer at `at`: (value, offset after it), or None."""
    if at >= len(b):
        return None
    first = b[at]
    if first < 0xFB:
        return first, at + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or at + 1 + size > len(b):
        return None
    return int.from_bytes(b[at + 1 : at + 1 + size], "little"), at + 1 + size


def _cstring(b: bytes | bytearray, at: int) -> tuple[bytes, int]:
    """A NUL-terminated string at `at` (to the end if cut short), and the offset after it."""
    end = b.find(0, at)
    if end < 0:
        return bytes(b[at:]), len(b)
    return bytes(b[at:end]), end + 1


def _u16(b: bytes | bytearray, at: int) -> int:
    return int.from_bytes(b[at : at + 2], "little") if len(b) >= at + 2 else 0


def _u32(b: bytes | bytearray, at: int) -> int:
    return int.from_bytes(b[at : at + 4], "little") if len(b) >= at + 4 else 0


def _text(b: bytes | bytearray, limit: int = SQL_CHARS) -> str:
    """Wire text as a summary shows it: UTF-8, whitespace collapsed, cut to `limit` characters."""
    text = " ".join(bytes(b).decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _ok(head: bytes | bytearray) -> tuple[int, int, int, int]:
    """An OK packet (0x00, or 0xFE ending rows): affected rows, last insert id, status, warnings."""
    affected = _lenenc(head, 1)
    if affected is None:
        return 0, 0, 0, 0
    insert_id = _lenenc(head, affected[1])
    if insert_id is None:
        return affected[0], 0, 0, 0
    at = insert_id[1]
    return affected[0], insert_id[0], _u16(head, at), _u16(head, at + 2)


def _eof(head: bytes | bytearray) -> tuple[int, int]:
    """An EOF packet (0xFE, shorter than 9 bytes): status, warnings."""
    return _u16(head, 3), _u16(head, 1)


def _terminator(p: _Packet) -> tuple[int, int]:
    """Status and warnings of a packet that ends rows: an EOF (5 bytes, 1 before protocol 4.1),
    or an OK (CLIENT_DEPRECATE_EOF: 7 bytes or more)."""
    if p.size <= 5:
        return _eof(p.head)
    _, _, status, warnings = _ok(p.head)
    return status, warnings


def _is_end(p: _Packet) -> bool:
    """Does this packet end rows or definitions (0xFE: an EOF, or an OK with DEPRECATE_EOF)?"""
    return p.first == 0xFE and p.size < MAX_PACKET


def _err(head: bytes | bytearray) -> tuple[int, str]:
    """An ERR packet: its code and the text a summary shows."""
    code = _u16(head, 1)
    if head[3:4] == b"#":
        state = bytes(head[4:9]).decode("latin-1")
        return code, f"ERR {code} ({state}): {_text(head[9:], MESSAGE_CHARS)}"
    return code, f"ERR {code}: {_text(head[3:], MESSAGE_CHARS)}"


def _skip_query_attributes(body: bytes | bytearray) -> int | None:
    """Where the SQL starts in a COM_QUERY payload (after its command byte) that carries query
    attributes (CLIENT_QUERY_ATTRIBUTES); None when it cannot be told (cut short)."""
    count = _lenenc(body, 0)
    sets = _lenenc(body, count[1]) if count else None
    if count is None or sets is None:
        return None
    n, at = count[0], sets[1]
    if n == 0:
        return at
    if n > 1024:
        return None
    at += (n + 7) // 8
    if at >= len(body) or body[at] != 1:  # new_params_bind_flag: the types and names follow
        return None
    at += 1
    types = []
    for _ in range(n):
        types.append(_u16(body, at) & 0xFF)
        name = _lenenc(body, at + 2)
        if name is None:
            return None
        at = name[1] + name[0]
    nulls = body[sets[1] : sets[1] + (n + 7) // 8]
    for i, kind in enumerate(types):
        if nulls[i // 8] >> (i % 8) & 1:
            continue
        fixed = {1: 1, 2: 2, 13: 2, 3: 4, 9: 4, 4: 4, 8: 8, 5: 8, 6: 0}.get(kind)
        if fixed is not None:
            at += fixed
        elif kind in (7, 10, 11, 12):  # dates and times: a length byte first
            if at >= len(body):
                return None
            at += 1 + body[at]
        else:
            size = _lenenc(body, at)
            if size is None:
                return None
            at = size[1] + size[0]
    return at if at <= len(body) else None


def _plausible_command(buf: bytearray, at: int) -> bool | None:
    """Could a command start at buf[at] (a client's stream, resynchronising)? None: need more."""
    length = buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16
    if buf[at + 3] != 0:
        return False
    code = buf[at + 4]
    rule = _COMMANDS.get(code)
    if rule is None or code not in _RESYNC_COMMANDS or not rule[1] <= length <= rule[2]:
        return False
    if code in _TEXT_COMMANDS:  # some text: printable, or UTF-8
        body = at + 5
        if code == QUERY and buf[body : body + 2] == b"\x00\x01":
            body += 2  # query attributes, none
        want = min(8, at + 4 + length - body)
        if want <= 0:
            return False
        if len(buf) < body + want:
            return None
        return all(b >= 0x20 or b in (9, 10, 13) for b in buf[body : body + want])
    if code in _STATEMENT_COMMANDS:  # a statement id: small, or MariaDB's "the last one"
        if len(buf) < at + 9:
            return None
        stmt = _u32(buf, at + 5)
        if not 0 < stmt < 1 << 20 and stmt != 0xFFFFFFFF:
            return False
        if code == EXECUTE:
            if len(buf) < at + 14:
                return None
            return buf[at + 9] < 0x10 and _u32(buf, at + 10) == 1  # flags, one iteration
    return True


def _tls_record(b: bytes, at: int) -> int:
    """The length of the TLS record whose header is at b[at] (-1: not one, or cut short)."""
    if at + 5 > len(b) or not 0x14 <= b[at] <= 0x18 or b[at + 1] != 3 or not 1 <= b[at + 2] <= 4:
        return -1
    size = b[at + 3] << 8 | b[at + 4]
    return size if 0 < size <= 0x4800 else -1


def _not_plain(chunk: bytes, from_client: bool) -> str | None:
    """What a segment's bytes are when they start something other than plain MySQL packets:
    "TLS" (records: one that ends with the segment, or two in a row) or "compressed" (packets
    of the compressed protocol: a 7-byte header, then plain packets that fill it exactly, or
    zlib or zstd data); None when they may be plain packets (see the module)."""
    n = len(chunk)
    if n < 9:
        return None
    if from_client:
        head = bytearray(chunk[:16])
        if _plausible_command(head, 0) is not False:
            return None  # (a command, or too few bytes to tell)
    size = _tls_record(chunk, 0)
    if size >= 0 and (5 + size == n or _tls_record(chunk, 5 + size) >= 0):
        return "TLS"
    length = chunk[0] | chunk[1] << 8 | chunk[2] << 16
    plain = chunk[4] | chunk[5] << 8 | chunk[6] << 16  # the length once uncompressed (0: as is)
    if plain == 0:
        end = min(n, 7 + length)
        at = 7
        while at + 4 <= end:
            at += 4 + (chunk[at] | chunk[at + 1] << 8 | chunk[at + 2] << 16)
        if length < 5 or at != 7 + length or at > n:
            return None
        if from_client:  # a command's packet has sequence id 0, a response's from 1
            return "compressed" if chunk[10] == 0 and chunk[11] in _COMMANDS else None
        return "compressed" if chunk[10] != 0 else None
    zlib = chunk[7] == 0x78 and (0x7800 | chunk[8]) % 31 == 0
    zstd = chunk[7:11] == b"\x28\xb5\x2f\xfd"
    if (zlib or zstd) and 7 + length == n and plain > length // 2:
        return "compressed"
    return None


# --- commands and responses --------------------------------------------------------------------


class _Command:
    """A command the client sent, waiting for its response."""

    __slots__ = ("after_loss", "code", "end", "head", "last_seq", "message", "notes",
                 "pending", "reply", "sent", "start")  # fmt: skip

    def __init__(self, code: int, p: _Packet, reply: int) -> None:
        self.code = code
        self.head = bytes(p.head)
        self.message = Message(p.ts, p.end_ts, p.wire)
        self.last_seq = p.last_seq
        self.start = p.start
        self.end = p.end
        self.reply = reply
        self.notes: list[str] = []
        self.after_loss = False  # client bytes before it were lost: its answer is found by ack
        # Sent while the server may still have owed an answer (the client had received nothing
        # since a command that has one): after a loss, its answer cannot be told by ack.
        self.pending = False
        self.sent = 0  # payload bytes the client sent within its exchange (auth data, a file)
        if p.lost or p.cut:
            self.notes.append(f"{p.lost:,} bytes of it were not captured")


# What a response is being read as.
_START, _DEFS, _META, _ROWS, _PARAMS, _COLS, _EOF_THEN, _LIST, _DONE = range(9)


class _Reply:
    """What has been read of a response (see `MysqlParser._feed`)."""

    __slots__ = ("columns", "cursor", "defined", "error", "expect", "infile", "left", "message",
                 "notes", "open_end", "parts", "results", "rows", "state", "then",
                 "warnings")  # fmt: skip

    def __init__(self) -> None:
        self.message: Message | None = None
        self.state = _START
        self.then = _DONE  # the state after an EOF that may or may not come (_EOF_THEN)
        self.parts: list[str] = []
        self.results = 0  # results beyond those shown
        self.error: str | None = None
        self.notes: list[str] = []
        self.expect: int | None = None  # the sequence id of its next packet (None: any)
        self.columns = 0
        self.left = 0  # definitions still to come
        self.defined = False  # a result's column definitions were read (what follows tells EOFs)
        self.rows = 0
        self.warnings = 0
        self.open_end = False  # it may end here: a packet that does not continue it ends it
        self.cursor = False  # an EXECUTE that opened a cursor: rows come by FETCH
        self.infile = False  # a LOCAL INFILE exchange: the client sent packets within it

    def add(self, p: _Packet) -> None:
        if self.message is None:
            self.message = Message(p.ts, p.end_ts, p.wire)
        else:
            self.message.end_ts = p.end_ts
            self.message.size += p.wire
        self.expect = (p.last_seq + 1) & 0xFF

    def part(self, text: str) -> None:
        if len(self.parts) < MAX_PARTS:
            self.parts.append(text)
        else:
            self.results += 1

    def summary(self) -> str:
        text = "; ".join(self.parts)
        if self.results:
            text += f"; … {self.results:,} more results"
        return text


class MysqlParser:
    """Pairs a connection's commands and responses into `Transaction` events (see the module)."""

    def __init__(self, conn: Connection, emit: Callable[[Event], None]) -> None:
        self.conn = conn
        self.emit = emit
        self.client = _Stream()
        self.server = _Stream()
        self.commands: deque[_Command] = deque()
        self.reply: _Reply | None = None  # the response to commands[0] being read
        self.finishing = False  # that response is read; the client's part of it may not be
        self.last_ack = NO_ACK  # of the segment that brought the response's last packet
        self.index = 0
        self.stopped: str | None = None  # why nothing more is read (TLS, compression)
        # The login: the server's greeting and the client's HandshakeResponse.
        self.greeted = False
        self.greeting: Message | None = None
        self.version: str | None = None
        self.server_caps: int | None = None
        self.client_caps: int | None = None
        self.client_seen = False
        self.client_stopped = False  # the client's bytes are not read (TLS, compression)
        self.compressed = False
        # Prepared statements: id -> SQL, oldest first; the last one prepared.
        self.statements: dict[int, str] = {}
        self.last_statement: int | None = None
        # Resynchronising: server packets are passed over until one that a segment's
        # acknowledgment ties to a command (see the module).
        self.syncing = False
        self.floor = 0  # acknowledgments up to this client offset tie nothing new
        self.passed_acked = -1  # the furthest any server bytes passed over acknowledged
        self.answered_end = 0  # client offset after the last command answered
        self.skipped = 0  # server bytes passed over meanwhile
        self.lost = {True: False, False: False}  # bytes of that side were not captured
        self.resync = False  # the client's next command follows lost bytes
        self.too_far = False  # server bytes were dropped: too far ahead of the client's
        self.client_strays = 0  # client packets that started nothing
        self.stray: _Reply | None = None  # server packets that answer no command
        self.stray_note = ""
        self.client_busy = False  # the last command read has an answer, or may be owed one
        # A capture begun inside the connection (see the module): which sides' first bytes are
        # still to come, whether a pairing has shown its bytes to be plain MySQL packets, what
        # the server sent before anything could be paired, and what was inferred meanwhile.
        self.midstream = False
        self.late = {True: False, False: False}  # the capture began inside that side's stream
        self.unseen_start = {True: False, False: False}  # its first bytes are still to come
        self.confirmed = False
        self.client_midstream = False  # no command found yet (and no bytes lost since)
        self.server_midstream = False  # no response found yet (and no bytes lost since)
        self.passed: Message | None = None  # server bytes passed over meanwhile
        self.unchecked = False  # some of them came too far ahead of the client's to be checked
        self.framed = 0  # commands read since the client's reader last found a command
        self.misframed = 0  # times the client's bytes did not frame, before any pairing
        self.deprecate_eof: bool | None = None  # CLIENT_DEPRECATE_EOF, as the server's showed it
        self.forgot = False  # prepared statements were forgotten (MAX_STATEMENTS)
        self.unprepared = False  # a PREPARE was not answered with its statement id

    # --- the stream consumer --------------------------------------------------------------

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.stopped is not None:
            return
        if self.unseen_start[from_client]:
            self.unseen_start[from_client] = False
            if offset == 0:
                self._start_seen(from_client, data)
        if self.late[from_client] and not self.confirmed:
            kind = _not_plain(data, from_client)
            if kind is not None:
                self._unreadable(kind, from_client, Message(ts, ts, len(data)))
                return
        if from_client:
            if self.client_stopped:
                return
            self.client.add(offset, ts, ack, data)
            self._read_client()
        else:
            self.server.add(offset, ts, ack, data)
        self._pair()
        self._bound()

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        if self.stopped is not None:
            return
        if size == 0:  # nothing lost; at a stream's start: the capture began after it
            stream = self.client if from_client else self.server
            if offset == 0 and not stream.delivered and stream.exhausted:
                self._midstream(from_client)
            return
        self.lost[from_client] = True
        self.unseen_start[from_client] = False
        if from_client:
            self.client_midstream = False
        else:
            self._end_midstream()
        if from_client:
            if self.client_stopped:
                return
            self.client.gap(offset, ts, size)
            self._read_client()
        else:
            self.server.gap(offset, ts, size)
        self._pair()

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        if self.stopped is not None:
            return
        (self.client if from_client else self.server).ended = True
        if from_client:
            self._read_client()
        self._pair()

    def on_close(self, conn: Connection, ts: float) -> None:
        if self.stopped is not None:
            return
        self.client.ended = self.server.ended = True
        self._read_client()
        self._pair()
        self._end_midstream()
        if self.reply is not None and self.commands:
            note = None if self.finishing else "the connection ended before its response did"
            self._answered(self.commands.popleft(), self.reply, self.finishing, note)
        for command in self.commands:
            self._answered(command, None, note=self._why_unanswered())
        self.commands.clear()
        self._flush_stray()
        if self.greeting is not None and not self.client_seen:
            summary = f"greeting (server {self.version})" if self.version else "greeting"
            notes = ("the client sent no login",)
            self._emit(None, None, self.greeting, summary, "ok", None, notes)
        self.stopped = "closed"

    # --- a capture begun inside the connection ---------------------------------------------

    def _midstream(self, from_client: bool) -> None:
        """The capture began inside the connection (an empty gap at a stream's start): no
        greeting or login is expected, the command phase is read as after lost bytes."""
        self.midstream = True
        self.late[from_client] = self.unseen_start[from_client] = True
        if from_client:
            self.client_seen = True
            self.client_midstream = True
            self.client.lost = True
        else:
            self.greeted = True
            self.server_midstream = True
            self.server.lost = True
            self.syncing = True

    def _start_seen(self, from_client: bool, data: bytes) -> None:
        """A side's first bytes after a midstream start are its stream's very first (a greeting,
        a HandshakeResponse): read it as a connection whose start was seen."""
        if from_client:
            if handshake_response_start(data) is not True:
                return
            self.client_seen = False
            self.client_midstream = False
            self.client.lost = False
        else:
            if greeting_start(data) is not True:
                return
            self.greeted = False
            self.server_midstream = False
            self.server.lost = False
            self.syncing = False
        self.late[from_client] = False
        self.midstream = self.late[True] or self.late[False]

    def _unreadable(self, kind: str, from_client: bool, message: Message) -> None:
        """Before anything was paired, a side's bytes showed they are not plain MySQL packets
        (TLS or compression negotiated before the capture began, or no MySQL at all): one
        transaction says so, and nothing more is read."""
        if kind == "TLS":
            summary = "TLS records"
            note = f"{MIDSTREAM}: its bytes are TLS records (negotiated before): they are not read"
        elif kind == "compressed":
            summary = "compressed packets"
            note = (
                f"{MIDSTREAM}: its packets are compressed (CLIENT_COMPRESS, negotiated at the login"
                " before): they are not read"
            )
        else:
            summary = "not MySQL packets"
            note = (
                f"{MIDSTREAM}: its bytes do not frame as plain MySQL packets (compressed or TLS,"
                " negotiated before?): they are not read"
            )
        # What was read before is not to be trusted.
        self.commands.clear()
        self.reply = self.stray = self.passed = None
        request = message if from_client else None
        response = None if from_client else message
        self._emit(request, summary, response, summary, None, None, (note,))
        self.stopped = kind or "not MySQL"
        for s in (self.client, self.server):
            s.buf.clear()
            s.queue.clear()

    def _note_passed(self, ts: float, end_ts: float) -> None:
        """Server bytes sent at ts..end_ts were passed over before anything was paired."""
        if self.passed is None:
            self.passed = Message(ts, end_ts, 0)
        else:
            self.passed.end_ts = end_ts

    def _end_midstream(self) -> None:
        """The server bytes passed over since the capture began, before any response could be
        paired, are a transaction with no request: they answer commands sent before it."""
        if not self.server_midstream:
            return
        self.server_midstream = False
        passed, self.passed = self.passed, None
        size = self.skipped + self.server.lost_bytes
        self.skipped = self.server.lost_bytes = 0
        if passed is not None and size:
            passed.size = size
            note = f"{MIDSTREAM}: these server bytes answer commands sent before it"
            if self.unchecked:
                note += f" (those more than {HOLD // 1024:,} KiB ahead of the client's, unchecked)"
            self._emit(None, None, passed, _plural(size, "byte"), None, None, (note,))

    def _misframe(self, message: Message) -> None:
        """Before anything was paired, a packet the client's reader framed is no command: the
        commands read since it last found one are not to be trusted, and it looks again (up to
        `MAX_MISFRAMES` times: then the connection is said not to be plain MySQL)."""
        self.misframed += 1
        for _ in range(min(self.framed, len(self.commands))):
            self.commands.pop()
        self.framed = 0
        self.client_strays = 0
        self.client_midstream = not self.lost[True]
        if self.misframed >= MAX_MISFRAMES:
            self._unreadable("", True, message)
            return
        self.client.lost = True

    # --- the client's side --------------------------------------------------------------------

    def _read_client(self) -> None:
        s = self.client
        while self.stopped is None and not self.client_stopped:
            if s.lost:
                if not s.scan(_plausible_command):
                    if s.ended:
                        s.buf.clear()
                        s.queue.clear()
                    return
                self.resync = True
            elif self.late[True] and not self.confirmed and self._misframed_header():
                continue
            p = s.next()
            if p is None:
                if s.lost:
                    continue
                return
            self._client_packet(p)

    def _misframed_header(self) -> bool:
        """Before anything was paired, does the client's next packet header (framed after a
        command, not found by the reader) start no command nor go on with the last one? Then
        the framing is not to be trusted (see `_misframe`)."""
        s = self.client
        buf = s.buf
        if self.resync or s.packet is not None or len(buf) < 5:
            return False
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        if buf[3] == 0:
            rule = _COMMANDS.get(buf[4])
            if rule is not None and rule[1] <= length <= rule[2]:
                return False
        else:
            last = self.commands[-1] if self.commands else None
            if last is not None and last.reply in (_AUTH, _RESULT):
                return False
        ts = s.mark_at(s.pos)[0]
        self._misframe(Message(ts, s.marks[-1][1] if s.marks else ts, len(buf)))
        return True

    def _client_packet(self, p: _Packet) -> None:
        first = not self.client_seen
        self.client_seen = True
        if first and p.seq != 0:
            self._login(p)
            return
        probing = self.late[True] and not self.confirmed
        if p.seq == 0 and p.head:
            if self.compressed:  # compressed packets from here on
                self._stop_client()
                return
            code = p.first
            rule = _COMMANDS.get(code)
            if probing and not self.resync and rule is None:  # (else told by its header)
                self._misframe(Message(p.ts, p.end_ts, p.wire))
                return
            command = _Command(code, p, rule[3] if rule else _OPEN)
            # Whether the client had received anything since what came before it.
            waited = NO_ACK not in (p.prior, p.ack) and p.prior != p.ack
            lost = self.client.lost_bytes
            if self.resync:
                self.resync = False
                self.framed = 0
                command.after_loss = True
                # Bytes of a command not known just before it may be owed an answer.
                command.pending = lost > 0 and p.prior != NO_ACK and not waited
                if self.client_midstream:
                    if lost:
                        command.notes.append(
                            f"{MIDSTREAM}: the end of a command sent before it"
                            f" ({_plural(lost, 'client byte')}) was not read"
                        )
                else:
                    command.notes.append(
                        f"client bytes before it were not captured ({lost:,} bytes): commands"
                        " in them are not known"
                    )
                self.client_midstream = False
                self.client.lost_bytes = 0
            else:
                command.pending = self.client_busy and not waited
            self.client_busy = command.reply != _NONE or command.pending
            self.framed += 1
            self._add(command)
            return
        last = self.commands[-1] if self.commands else None
        if last is not None and last.reply in (_AUTH, _RESULT) and not self.resync:
            last.message.end_ts = p.end_ts
            last.message.size += p.wire
            last.sent += p.size
        elif probing and not self.resync:
            self._misframe(Message(p.ts, p.end_ts, p.wire))
        else:
            self.client_strays += 1

    def _login(self, p: _Packet) -> None:
        head = p.head
        caps = _u32(head, 0) if len(head) >= 4 else 0
        if not caps & CLIENT_PROTOCOL_41:
            caps = _u16(head, 0)
        ssl = bool(caps & CLIENT_SSL) and p.size == (32 if caps & CLIENT_PROTOCOL_41 else 5)
        self.client_caps = caps
        if ssl:
            self._add(_Command(SSL_REQUEST, p, _NONE))
            self._stop_client()
            return
        if caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM):
            self.compressed = True
        self._add(_Command(LOGIN, p, _AUTH))

    def _add(self, command: _Command) -> None:
        if self.client_strays:
            command.notes.append(
                f"{_plural(self.client_strays, 'client packet')} before it started no command"
            )
            self.client_strays = 0
        if len(self.commands) >= MAX_PENDING:
            old = self.commands.popleft()
            note = f"more than {MAX_PENDING:,} commands waited for their responses"
            self._answered(old, self.reply, complete=self.finishing, note=note)
            self.syncing = True
            self.floor = max(self.floor, old.end)
        self.commands.append(command)

    def _stop_client(self) -> None:
        """What the client sends from here on is not read (TLS, compressed packets)."""
        self.client_stopped = True
        self.client.drop()
        self.client.lost = False
        self.client.ended = True

    # --- the server's side, paired with the commands --------------------------------------

    def _pair(self) -> None:
        s = self.server
        while self.stopped is None:
            if not self.greeted:
                if not self._greet():
                    return
                continue
            commands = self.commands
            if self.finishing:
                if not self._client_caught_up():
                    return
                self._answered(commands.popleft(), self.reply)
                continue
            if commands and self.reply is None:
                head = commands[0]
                if head.code == SSL_REQUEST:
                    self._stop(head)
                    return
                if head.reply == _NONE:
                    self._answered(commands.popleft(), None)
                    continue
                if head.after_loss:
                    head.after_loss = False
                    self.syncing = True
                    self.floor = max(self.floor, head.start)
            if self.syncing or s.lost:
                if self._resync():
                    continue
                if s.ended and s.exhausted and commands:
                    self._answered(commands.popleft(), None, note=self._why_unanswered())
                    continue
                return
            reply = self.reply
            seq = s.seq()
            if seq is None:
                if s.lost:
                    self._server_lost()
                    continue
                if not (s.ended and s.exhausted):
                    return
                if reply is not None and commands:
                    self.reply = None
                    command = commands.popleft()
                    note = (
                        None if reply.open_end else "the connection ended before its response did"
                    )
                    self._answered(command, reply, complete=reply.open_end, note=note)
                    continue
                if commands:
                    self._answered(commands.popleft(), None, note=self._why_unanswered())
                    continue
                return
            if reply is None:
                if not commands:
                    if not (self.client.ended and self.client.exhausted):
                        return  # its command may yet come
                    if not self._stray_packet():
                        return
                    continue
                head = commands[0]
                if seq != (head.last_seq + 1) & 0xFF:
                    if not self._stray_packet():
                        return
                    continue
                self._flush_stray()
                reply = self.reply = _Reply()
                reply.cursor = (
                    head.code == EXECUTE and len(head.head) > 5 and bool(head.head[5] & 7)
                )
            elif reply.expect is not None and seq != reply.expect and s.packet is None:
                self.reply = None
                note = None
                if not reply.open_end:
                    note = f"a packet with sequence id {seq} ended it before it was complete"
                elif reply.state == _EOF_THEN:
                    self.deprecate_eof = True  # (no EOF came after its definitions)
                self._answered(commands.popleft(), reply, complete=reply.open_end, note=note)
                continue
            p = s.next()
            if p is None:
                if s.lost:
                    continue
                return
            done = self._feed(commands[0], reply, p)
            if p.cut:
                self.reply = None
                command = commands.popleft()
                self._answered(command, reply, complete=False, note=self._cut_note())
                self.floor = max(self.floor, command.end)
                self.syncing = True
                continue
            if done:
                if reply.infile or commands[0].reply == _AUTH:
                    self.finishing = True  # once the client's part of it is read
                    continue
                self.reply = None
                self._answered(commands.popleft(), reply)

    def _greet(self) -> bool:
        """Read the server's greeting (or what came instead); False: wait for it."""
        s = self.server
        seq = s.seq()
        if seq is None:
            if s.lost:
                self.greeted = True
                self.syncing = True
                return True
            if s.ended and s.exhausted:
                self.greeted = True
                return True
            return False
        if seq != 0:
            self.greeted = True
            return True
        p = s.next()
        if p is None:
            if s.lost:
                self.greeted = True
                self.syncing = True
                return True
            return False
        self.greeted = True
        head = p.head
        if p.first == 0xFF:
            _, text = _err(head)
            notes = ("the server refused the connection before the login",)
            self._emit(None, None, Message(p.ts, p.end_ts, p.wire), text, "error", text, notes)
            self.client_seen = True  # (no greeting-only transaction)
            return True
        self.greeting = Message(p.ts, p.end_ts, p.wire)
        if p.first == 10:
            version, at = _cstring(head, 1)
            text = version.decode("latin-1")
            self.version = text[6:] if text.startswith("5.5.5-") else text  # MariaDB
            caps = _u16(head, at + 4 + 8 + 1)
            if len(head) >= at + 4 + 8 + 1 + 2 + 1 + 2 + 2:
                caps |= _u16(head, at + 4 + 8 + 1 + 2 + 1 + 2) << 16
            self.server_caps = caps
        return True

    def _caps(self) -> int | None:
        """The capabilities both sides have (or those of the one side known)."""
        if self.server_caps is not None and self.client_caps is not None:
            return self.server_caps & self.client_caps
        return self.client_caps if self.client_caps is not None else self.server_caps

    def _eof_after_definitions(self) -> bool | None:
        """Does an EOF follow column definitions (no CLIENT_DEPRECATE_EOF)? None: unknown. Not
        seen negotiated (a capture begun after the login), as result sets have shown it."""
        if self.server_caps is None or self.client_caps is None:
            return None if self.deprecate_eof is None else not self.deprecate_eof
        return not (self.server_caps & self.client_caps & CLIENT_DEPRECATE_EOF)

    def _client_caught_up(self) -> bool:
        """Has the client's side been read as far as the server had received when it sent the
        last packet of the response (the client's part of a login or LOCAL INFILE)?"""
        if self.client.ended:
            return True
        ack = self.last_ack
        acked = self.conn.peer_offset(False, ack) if ack != NO_ACK else None
        return acked is None or self.client.delivered >= acked

    # --- reading a response ---------------------------------------------------------------

    def _feed(self, command: _Command, r: _Reply, p: _Packet) -> bool:
        """Read one packet of the response to `command`; True when the response is complete."""
        r.add(p)
        self.last_ack = p.ack
        first = p.first
        if first == 0xFF:
            code, text = _err(p.head)
            if code == 0xFFFF:  # a MariaDB progress report
                return False
            r.part(text)
            if r.error is None:
                r.error = text
            return True
        kind = command.reply
        if kind == _AUTH:
            return self._auth(r, p)
        while True:
            state = r.state
            if state == _START:
                done = self._start(command, r, p)
                if done is None:
                    continue
                return done
            if state in (_DEFS, _PARAMS, _COLS):
                r.left -= 1
                if r.left > 0:
                    return False
                if state == _PARAMS and r.columns:
                    return self._definitions_end(r, _COLS)
                if state == _DEFS:
                    r.state = _META
                    r.open_end = r.cursor
                    r.defined = True
                    return False
                return self._definitions_end(r, _DONE)
            if state == _EOF_THEN:
                if _is_end(p) and p.size < 9:
                    self.deprecate_eof = False
                    if r.then == _DONE:
                        return True
                    r.state = r.then
                    r.left = r.columns
                    r.open_end = False
                    return False
                if r.then == _DONE:  # no EOF: this packet is not part of the response
                    r.notes.append("a packet after its definitions was not an EOF")
                    return True
                self.deprecate_eof = True
                r.state = r.then
                r.left = r.columns
                r.open_end = False
                continue
            if state == _META:
                r.open_end = False
                eof = _is_end(p) and p.size == 5  # an EOF after the definitions (no DEPRECATE_EOF)
                if r.defined:
                    r.defined = False
                    self.deprecate_eof = not eof
                if eof:
                    status, _ = _eof(p.head)
                    if r.cursor and status & SERVER_STATUS_CURSOR_EXISTS:
                        r.part(f"cursor, {_plural(r.columns, 'column')}")
                        return True
                    r.state = _ROWS
                    return False
                r.state = _ROWS
                continue
            if state == _ROWS:
                if not _is_end(p):
                    r.rows += 1
                    return False
                status, warnings = _terminator(p)
                if r.cursor and status & SERVER_STATUS_CURSOR_EXISTS and not r.rows:
                    text = f"cursor, {_plural(r.columns, 'column')}"
                else:
                    text = f"{_plural(r.rows, 'row')}, {_plural(r.columns, 'column')}"
                if warnings:
                    text += f", {_plural(warnings, 'warning')}"
                r.part(text)
                return self._more(r, status)
            if state == _LIST:
                if kind == _FIELDS:
                    if _is_end(p):
                        r.part(_plural(r.rows, "column"))
                        return True
                elif kind == _FETCH:
                    if _is_end(p):
                        status, _ = _terminator(p)
                        text = _plural(r.rows, "row")
                        if status & SERVER_STATUS_LAST_ROW_SENT:
                            text += ", last row sent"
                        r.part(text)
                        return True
                elif kind == _STREAM and _is_end(p) and p.size < 9:
                    r.part(_plural(r.rows, "binlog event") + ", end")
                    return True
                r.rows += 1
                return False
            return True  # (_DONE: nothing more is expected)

    def _start(self, command: _Command, r: _Reply, p: _Packet) -> bool | None:
        """The first packet of a response, or of a result after one that said more follow.
        None: read it again in the state this set."""
        kind, first, head = command.reply, p.first, p.head
        if kind in (_FIELDS, _FETCH, _STREAM):
            r.state = _LIST
            return None
        if kind == _STRING:
            r.part(_text(head) if head else "(empty)")
            return True
        if kind == _PREPARE and first == 0 and p.size >= 12:
            statement = _u32(head, 1)
            r.columns, params = _u16(head, 5), _u16(head, 7)
            warnings = _u16(head, 10)
            text = f"statement #{statement}, {_plural(params, 'param')}, "
            text += _plural(r.columns, "column")
            if warnings:
                text += f", {_plural(warnings, 'warning')}"
            r.part(text)
            self._prepared(command, statement)
            if params:
                r.state, r.left = _PARAMS, params
                return False
            if r.columns:
                r.state, r.left = _COLS, r.columns
                return False
            return True
        if first == 0x00:
            affected, insert_id, status, warnings = _ok(head)
            text = "OK"
            if command.code in (QUERY, EXECUTE, BULK_EXECUTE):
                text += f", {_plural(affected, 'row')} affected"
                if insert_id:
                    text += f", last insert id {insert_id}"
            if warnings:
                text += f", {_plural(warnings, 'warning')}"
            r.part(text)
            return self._more(r, status) if kind == _RESULT else True
        if first == 0xFE and p.size < 9:
            r.part("OK" if kind == _SIMPLE else "EOF")
            return True
        if kind == _RESULT and first == 0xFB:
            name = _text(head[1:], SQL_CHARS)
            r.part(f"LOCAL INFILE '{name}'")
            r.notes.append(f"the server asked for the client's file '{name}'")
            r.infile = True
            r.expect = None  # the client's file went in between
            return False
        if kind == _RESULT:
            count = _lenenc(head, 0)
            if count is not None and 0 < count[0] <= MAX_COLUMNS:
                r.columns, r.rows = count[0], 0
                # A byte after the count: whether definitions follow (optional metadata).
                if p.size == count[1] + 1 and not head[count[1]]:
                    r.state = _META
                    r.open_end = r.cursor
                    return False
                r.state, r.left = _DEFS, r.columns
                return False
        r.part(_plural(p.size, "byte"))
        if kind == _OPEN:
            r.state = _LIST
            r.open_end = True
            return False
        r.notes.append("its response was not one this command has")
        return True

    def _definitions_end(self, r: _Reply, then: int) -> bool:
        """The parameter or column definitions of a prepared statement are read; an EOF follows
        them unless CLIENT_DEPRECATE_EOF (when that is not known, the next packet tells)."""
        eof = self._eof_after_definitions()
        if eof is False:
            if then == _DONE:
                return True
            r.state, r.left = then, r.columns
            return False
        r.state, r.then = _EOF_THEN, then
        r.open_end = eof is None and then == _DONE
        return False

    def _more(self, r: _Reply, status: int) -> bool:
        """A result ended: another follows if its status says so."""
        if status & SERVER_MORE_RESULTS_EXISTS:
            r.state = _START
            return False
        return True

    def _auth(self, r: _Reply, p: _Packet) -> bool:
        first, head = p.first, p.head
        if first == 0x00:
            r.part(f"OK (server {self.version})" if self.version else "OK")
            return True
        if first == 0xFE:  # AuthSwitchRequest
            plugin, _ = _cstring(head, 1)
            r.notes.append(f"auth switched to {plugin.decode('latin-1') or '(old password)'}")
            r.expect = None
        elif first == 0x01:  # auth more data
            data = bytes(head[1:])
            if data == b"\x03":
                r.notes.append("fast auth: the password's hash was cached")
            elif data == b"\x04":
                r.notes.append("full authentication")
            r.expect = None
        r.rows += 1
        if r.rows >= MAX_AUTH_PACKETS:
            r.part("no OK or ERR")
            return True
        return False

    def _prepared(self, command: _Command, statement: int) -> None:
        statements = self.statements
        statements.pop(statement, None)
        if len(statements) >= MAX_STATEMENTS:
            del statements[next(iter(statements))]
            self.forgot = True
        statements[statement] = _text(command.head[1:])
        self.last_statement = statement

    # --- resynchronising ----------------------------------------------------------------------

    def _server_lost(self) -> None:
        """The server's framing was lost between packets: resynchronise (see the module)."""
        if self.reply is not None and self.commands:
            command = self.commands.popleft()
            self._answered(command, self.reply, complete=False, note=self._cut_note())
            self.floor = max(self.floor, command.end)
        self.reply = None
        self.floor = max(self.floor, self.answered_end)
        self.syncing = True

    def _resync(self) -> bool:
        """Pass server bytes over up to a response that an acknowledgment ties to a command
        (see the module). True: reading goes on (resynchronised, or commands emitted)."""
        s = self.server
        while True:
            if s.lost:
                found = s.chunk()
            elif s.packet is not None:
                p = s.next()
                if p is None:
                    if s.lost:
                        continue
                    return False
                self.skipped += p.wire
                if self.server_midstream:
                    self._note_passed(p.ts, p.end_ts)
                continue
            else:
                found = s.header()
                if found is None and s.lost:
                    continue  # a gap where a header should be: chunk starts from here on
            if found is None:
                return False
            seq, first, ack = found
            acked = self.conn.peer_offset(False, ack) if ack != NO_ACK else None
            if acked is None and ack != NO_ACK and not self.client.ended:
                return False  # the client's stream has not begun yet (a capture begun late)
            if acked is None or acked <= self.floor:
                self._pass_over(acked)
                continue
            if self.client.delivered < acked and not self.client.ended:
                return False  # the commands the server had received are not all read yet
            target = waited_for = None
            for command in self.commands:
                if command.end > acked:
                    break
                if command.reply != _NONE:
                    target = command
                    if not command.pending:
                        waited_for = command
            if target is None:
                self.floor = acked
                self._pass_over(acked)
                continue
            self._end_midstream()
            if target.pending:
                # Sent without waiting: its answer cannot be told from an earlier command's,
                # unless this is the first segment sent since the server received the last
                # command that was waited for (whose answer it then starts).
                clean = not (self.lost[False] or self.too_far)
                if waited_for is None or not clean or self.passed_acked >= waited_for.end:
                    self._pass_over(acked)
                    continue
                target = waited_for
            while self.commands[0] is not target:
                command = self.commands.popleft()
                if command.reply == _NONE:
                    self._answered(command, None)
                else:
                    self._answered(command, None, note=self._why_unanswered())
            wanted = _FIRST_BYTES.get(target.reply)
            if seq == (target.last_seq + 1) & 0xFF and (wanted is None or first in wanted):
                skipped = self.skipped + (s.found() if s.lost else 0)
                self.skipped = 0
                self.syncing = False
                self.floor = acked
                target.after_loss = False  # (found: nothing more to pass over for it)
                if skipped and self.midstream and not self.lost[False]:
                    target.notes.append(
                        f"{MIDSTREAM}: {_plural(skipped, 'server byte')} before its response were"
                        " passed over; paired by the acknowledgments"
                    )
                elif skipped:
                    target.notes.append(
                        f"{skipped:,} server bytes before its response were lost or passed over;"
                        " paired by the acknowledgments"
                    )
                elif self.midstream and not self.confirmed:
                    target.notes.append(f"{MIDSTREAM}: paired by the acknowledgments")
                self.confirmed = True
                return True
            self._answered(self.commands.popleft(), None, note=self._why_unanswered())
            self.floor = acked
            self._pass_over(acked)

    def _pass_over(self, acked: int | None) -> None:
        """Pass over the server's next packet, or segment (`acked`: the client offset its
        acknowledgment covers)."""
        s = self.server
        if acked is not None:
            self.passed_acked = max(self.passed_acked, acked)
        if s.lost:
            if self.server_midstream and s.marks:
                ts = s.marks[0][1]
                self._note_passed(ts, ts)
            s.skip_chunk()
            return
        p = s.next()
        if p is not None:
            self.skipped += p.wire
            if self.server_midstream:
                self._note_passed(p.ts, p.end_ts)

    def _stray_packet(self) -> bool:
        """A server packet that answers no command seen, summed up with the others in a row.
        False: it is not whole yet (or the framing was lost)."""
        p = self.server.next()
        if p is None:
            return self.server.lost
        if self.stray is None:
            self.stray = _Reply()
            if p.first == 0xFF:
                _, text = _err(p.head)
                self.stray.error = text
                self.stray.part(text)
            elif p.first == 0x00:
                self.stray.part("OK")
            else:
                self.stray.part(_plural(p.size, "byte"))
            self.stray_note = self._why_unasked()
        else:
            self.stray.results += 1
        self.stray.add(p)
        return True

    def _flush_stray(self) -> None:
        stray = self.stray
        if stray is None:
            return
        self.stray = None
        notes = [self.stray_note]
        if stray.results:
            notes.append(f"{stray.results + 1:,} packets")
            stray.results = 0
        status = "error" if stray.error else "ok"
        self._emit(None, None, stray.message, stray.summary(), status, stray.error, tuple(notes))

    def _bound(self) -> None:
        """Server bytes held past `HOLD` while the commands they answer are not known."""
        s = self.server
        if s.held <= HOLD and len(s.marks) + len(s.queue) <= MAX_CHUNKS:
            return
        if self.server_midstream and not self.commands:
            # Waiting for the client's first bytes (a capture begun inside a long response).
            if s.marks:
                self._note_passed(s.marks[0][1], s.marks[-1][1])
            self.unchecked = True
            s.drop()
            self._pair()
            return
        if self.finishing and self.commands:
            self.finishing = False
            reply, self.reply = self.reply, None
            self._answered(self.commands.popleft(), reply)
        if self.reply is not None and self.commands:
            command = self.commands.popleft()
            self._answered(command, self.reply, complete=False, note=self._cut_note())
        self.reply = None
        s.drop()
        self.too_far = True
        self.lost[False] = True
        self.floor = max(self.floor, self.answered_end)
        self.syncing = True
        self._pair()

    def _stop(self, command: _Command) -> None:
        """TLS from here on (an SSLRequest): say so, and read nothing more."""
        self.commands.popleft()
        notes = []
        summary = self._request_summary(command)
        notes.append("the rest of the connection is TLS: it is not read")
        if self.version:
            notes.append(f"server {self.version}")
        notes += command.notes
        self._emit(command.message, summary, None, None, None, None, tuple(notes))
        self.stopped = "TLS"
        self.client.buf.clear()
        self.server.buf.clear()
        self.client.queue.clear()
        self.server.queue.clear()

    # --- transactions ---------------------------------------------------------------------

    def _cut_note(self) -> str:
        return "server bytes were not captured: its response is incomplete"

    def _why_unanswered(self) -> str:
        if self.too_far:
            return (
                f"server bytes came more than {HOLD // 1024:,} KiB ahead of the commands they"
                " answer: its response was not read"
            )
        if self.lost[False]:
            return "server bytes were not captured: its response may be among them"
        if self.lost[True]:
            return "client bytes were not captured before it: it cannot be paired for certain"
        if self.midstream and self.syncing:
            return f"{MIDSTREAM}: its response cannot be told for certain"
        return "no response was seen"

    def _why_unasked(self) -> str:
        if self.lost[True]:
            return "its command may have been in client bytes that were not captured"
        return "it answers no command seen (sent before the capture started, or unasked)"

    def _answered(
        self,
        command: _Command,
        reply: _Reply | None,
        complete: bool = True,
        note: str | None = None,
    ) -> None:
        """Emit a command's transaction, with its response (None: none came, or it has none)."""
        self.reply = None
        self.finishing = False
        self.answered_end = max(self.answered_end, command.end)
        notes = list(command.notes)
        summary = self._request_summary(command, notes)
        response = None
        response_summary = status = error = None
        if reply is not None and reply.message is not None:
            if not reply.parts and reply.cursor:
                reply.part(f"cursor, {_plural(reply.columns, 'column')}")
            response = reply.message
            if not complete and not reply.error and reply.state in (_DEFS, _META, _ROWS):
                reply.part(f"{_plural(reply.rows, 'row')}, {_plural(reply.columns, 'column')}")
            response_summary = reply.summary()
            error = reply.error
            if not complete and not error:
                response_summary = f"{response_summary} (incomplete)".lstrip()
            status = "error" if error else ("ok" if complete else None)
            notes += reply.notes
        if self.commands and (
            response is not None or (command.reply == _NONE and not command.pending)
        ):
            self.commands[0].pending = False  # nothing is owed before the next command
        if command.sent:
            what = "of the file" if reply is not None and reply.infile else "of auth data"
            notes.append(f"the client sent {command.sent:,} bytes {what}")
        if command.code == LOGIN and self.version and status != "ok":
            notes.append(f"server {self.version}")
        if command.code == CLOSE:
            self.statements.pop(_u32(command.head, 1), None)
        elif command.code == PREPARE and response is None:
            self.unprepared = True  # (its statement id is not known)
        if note is not None:
            notes.append(note)
        elif response is None and command.reply == _NONE:
            notes.append("this command has no response")
            status = "ok"  # (sent is done: not a failure in the statistics)
        compressed = False
        if command.code == LOGIN and status == "ok" and self.compressed:
            caps = self._caps() or 0
            compressed = bool(caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM))
            if compressed:
                notes.append("the rest of the connection is compressed: it is not read")
        self._emit(command.message, summary, response, response_summary, status, error,
                   tuple(notes))  # fmt: skip
        if compressed:
            self.stopped = "compressed"

    def _request_summary(self, command: _Command, notes: list[str] | None = None) -> str:
        code, head = command.code, command.head
        if code == LOGIN:
            return self._login_summary(head, notes)
        if code == SSL_REQUEST:
            return "SSLRequest: switching to TLS"
        rule = _COMMANDS.get(code)
        name = rule[0] if rule else f"command 0x{code:02x}"
        if code == QUERY:
            body = head[1:]
            caps = self._caps()
            attributes = (
                bool(caps & CLIENT_QUERY_ATTRIBUTES) if caps is not None else body[:2] == b"\0\1"
            )
            if attributes:
                at = _skip_query_attributes(body)
                if at is None:
                    return "QUERY (with query attributes)"
                body = body[at:]
            return _text(body) or "QUERY (empty)"
        if code == PREPARE:
            return f"PREPARE {_text(head[1:])}"
        if code in _STATEMENT_COMMANDS:
            statement = _u32(head, 1)
            if statement == 0xFFFFFFFF and self.last_statement is not None:
                statement = self.last_statement  # MariaDB: the statement prepared last
            last = statement == 0xFFFFFFFF  # (and not known)
            text = f"{name} (the statement prepared last)" if last else f"{name} #{statement}"
            if code == SEND_LONG_DATA:
                text += f" param {_u16(head, 5)}"
            elif code == FETCH:
                text += f" ({_plural(_u32(head, 5), 'row')})"
            sql = self.statements.get(statement)
            if sql is not None:
                return f"{text}: {sql}"
            if last:
                return text
            if self.late[True] and not (self.lost[True] or self.forgot or self.unprepared):
                return f"{text} (prepared before the capture)"  # (so its SQL is not known)
            if notes is not None and code != CLOSE:
                notes.append(f"statement #{statement} was not prepared in this capture")
            return text
        if code in (INIT_DB, FIELD_LIST, 0x05, 0x06):
            return f"{name} {_text(_cstring(head, 1)[0], 64)}"
        if code == PROCESS_KILL:
            return f"{name} {_u32(head, 1)}"
        if code == SET_OPTION:
            return f"{name} {_OPTIONS.get(_u16(head, 1), _u16(head, 1))}"
        if code == CHANGE_USER:
            user, at = _cstring(head, 1)
            text = f"{name} user={user.decode('utf-8', 'replace')}"
            caps = self._caps() or CLIENT_SECURE_CONNECTION
            if caps & CLIENT_SECURE_CONNECTION and at < len(head):
                at += 1 + head[at]
            else:
                at = _cstring(head, at)[1]
            db, _ = _cstring(head, at)
            return text + (f" db={db.decode('utf-8', 'replace')}" if db else "")
        return name

    def _login_summary(self, head: bytes, notes: list[str] | None) -> str:
        caps = _u32(head, 0)
        if not caps & CLIENT_PROTOCOL_41:
            user, _ = _cstring(head, 5)
            return f"login user={user.decode('utf-8', 'replace')}"
        user, at = _cstring(head, 32)
        text = f"login user={_text(user, 64)}"
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            size = _lenenc(head, at)
            at = size[1] + size[0] if size else len(head)
        elif caps & CLIENT_SECURE_CONNECTION:
            at = at + 1 + head[at] if at < len(head) else len(head)
        else:
            at = _cstring(head, at)[1]
        if caps & CLIENT_CONNECT_WITH_DB:
            db, at = _cstring(head, at)
            if db:
                text += f" db={_text(db, 64)}"
        if caps & CLIENT_PLUGIN_AUTH:
            plugin, at = _cstring(head, at)
            if plugin:
                text += f" auth={_text(plugin, 64)}"
        if caps & CLIENT_CONNECT_ATTRS and notes is not None:
            attributes = self._attributes(head, at)
            client = " ".join(
                v for v in (attributes.get("_client_name"), attributes.get("_client_version")) if v
            )
            if client:
                notes.append(f"client {client}")
            if attributes.get("program_name"):
                notes.append(f"program {attributes['program_name']}")
        return text

    @staticmethod
    def _attributes(head: bytes, at: int) -> dict[str, str]:
        """The connection attributes of a HandshakeResponse (as far as they were kept)."""
        total = _lenenc(head, at)
        found: dict[str, str] = {}
        if total is None:
            return found
        at, end = total[1], min(len(head), total[1] + total[0])
        while at < end and len(found) < 32:
            key = _lenenc(head, at)
            if key is None:
                break
            value = _lenenc(head, key[1] + key[0])
            if value is None:
                break
            found[_text(head[key[1] : key[1] + key[0]], 64)] = _text(
                head[value[1] : value[1] + value[0]], 64
            )
            at = value[1] + value[0]
        return found

    def _emit(
        self,
        request: Message | None,
        request_summary: str | None,
        response: Message | None,
        response_summary: str | None,
        status: str | None,
        error: str | None,
        notes: tuple[str, ...],
    ) -> None:
        self.emit(
            Transaction(
                protocol=PROTOCOL,
                connection=self.conn.id,
                index=self.index,
                request=request,
                request_summary=request_summary if request is not None else None,
                response=response,
                response_summary=response_summary if response is not None else None,
                # (Without a response only a command that has none is ok: QUIT, CLOSE.)
                status=status if response is not None or status == "ok" else None,
                error=error if response is not None else None,
                notes=notes,
            )
        )
        self.index += 1
