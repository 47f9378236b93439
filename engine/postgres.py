"""PostgreSQL transactions: the v3 frontend/backend protocol, read from both streams.

A stream consumer (`engine.tcp.StreamConsumer`) for connections the sniffer found speaking
PostgreSQL (`client_start`: the client's first bytes are a StartupMessage, an SSLRequest, a
GSSENCRequest or a CancelRequest). Each direction is framed as it comes: a message's header,
the first bytes of its body as far as a summary needs them, and the rest stepped over, so a
DataRow or CopyData of a gigabyte costs what a short one does. A length under 4 or over 1 GiB
is not PostgreSQL: that side stops being read, and the transactions say so.

What one transaction is:
- the startup: the StartupMessage (with the password messages of its authentication) and
  everything the server says up to ReadyForQuery: `authentication ok`, the method it asked for,
  or the ErrorResponse that refused it. An SSLRequest (GSSENCRequest) is a transaction of its
  own: answered S (G), the rest is encrypted and the connection is not read further; answered N,
  the plaintext startup follows.
- a simple Query: its answer up to ReadyForQuery, the CommandComplete tags of every statement
  it ran (`BEGIN; INSERT 0 1; COMMIT`), rows counted from DataRow, an ErrorResponse as the error
  (`ERROR 42P01: relation "nope" does not exist`: severity, SQLSTATE, message), a note when
  ReadyForQuery says the transaction block failed (E). COPY data is stepped over, the client's
  folded into the request, the server's into the answer.
- extended query: one transaction per Execute, from the first message that prepared it (Parse,
  Bind, Describe) to its CommandComplete, its request the statement's SQL and its parameters:
  a named statement's SQL is remembered from its Parse, so a later Bind of it shows the SQL.
  (Per Execute rather than per Sync: a pipeline of many statements then reads as one line each,
  with its own outcome and time, as simple queries do.) An error ends the Execute it belongs
  to; the server then skips to Sync, and each Execute it skipped is a transaction without an
  answer that says so. A batch without an Execute is a transaction only when it has a Parse
  (`prepare name: SQL`) or fails (an error at Sync: a deferred commit).
- a NotificationResponse (LISTEN/NOTIFY) is a transaction of its own, without a request. A
  NoticeResponse is a note of the transaction it came in, or, sent before the server had
  received the next request (by the acknowledgment of its segment), its own transaction.
  ParameterStatus is passed over. Terminate ends the client's side; a CancelRequest is a
  transaction the server answers by closing.

Pairing is by order on each side, never by how the capture interleaved them: the server answers
in order, and every Query, Sync and startup gets exactly one ReadyForQuery, so each server
message is matched with the client message it answers, one after the other. A transaction is
emitted when its answer is complete (and its request: COPY data, passwords), so the numbering
follows the server's stream whatever the interleaving.

Bytes never captured:
- inside a message of known length (a long DataRow, CopyData, Query): stepped over, counted, and
  the transaction notes them; nothing else changes.
- on the client's side across a message boundary: its framing is lost, and the client's side is
  not read further. How many requests the lost bytes held is not known, and nothing bounds it
  (the server may still be answering them), so no later answer can be paired for certain: the
  requests already read are answered in order, the answers after them are transactions without
  a request, noted.
- on the server's side across a message boundary: the server's stream is read forward to a
  point where a chain of well-formed backend messages starts that reaches a ReadyForQuery (or
  runs eight messages); from there it is read again. How many ReadyForQuery were lost is not
  known, so the answers read after the loss are held, not guessed. The batch (Query, Sync,
  startup) that a ReadyForQuery after the loss answers is bounded below (at least one after the
  last answered before the loss, one more for each ReadyForQuery since) and above (the
  requests the server had received in full when it sent it, by its segment's acknowledgment).
  When the bounds meet (most often a client waiting for each answer, whose answer lost its
  middle), the held answers are paired again in order, the one the loss cut into noted, and the
  requests before them are transactions whose answer was lost. Otherwise (a whole answer lost
  with its ReadyForQuery while the client had already sent the next request) they never meet:
  past 16 held answers, or at another loss or the connection's end, the oldest is reported
  without its request, and the requests up to its lower bound, answered by then, without their
  answers, each noted.

Bounds: at most 10,000 requests wait for their answers (then the client's side is not read
further, said), 10,000 server messages for their requests (rows merged), 1,000 named statements
and portals are remembered (the oldest forgotten); bodies keep 4 KiB at most; reading ahead
after a loss holds 64 KiB.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from engine.events import Event, Message, Transaction

if TYPE_CHECKING:
    from engine.tcp import Connection

PROTOCOL = "postgresql"
MAX_MESSAGE = 1 << 30  # a longer message is not PostgreSQL
MAX_STARTUP = 10_000  # the server refuses a longer startup packet
KEEP = 64  # characters kept of a name, a tag, a parameter
KEEP_SQL = 200  # characters kept of a statement (whitespace collapsed)
KEEP_BODY = 4096  # bytes kept of a Query or Parse body, for its SQL
KEEP_OTHER = 1024  # bytes kept of other bodies that are summarised (Bind, errors, ...)
PARAMS = 4  # parameters of a Bind shown
MAX_PENDING = 10_000  # requests waiting for their answers
MAX_UNITS = 10_000  # server messages waiting for their requests (rows merged)
MAX_STATEMENTS = 1_000  # named statements (and portals) remembered per connection
MAX_RUN = 16  # answers held after a loss on the server's side, waiting to be paired for certain
MAX_HELD = 10_000  # server messages in them
MAX_NOTES = 6
MAX_TAGS = 8  # CommandComplete tags shown for one Query
RESYNC_WINDOW = 64 * 1024  # bytes read ahead after a loss to find where messages start again
RESYNC_CHAIN = 8  # well-formed messages in a row that say so (or fewer ending in ReadyForQuery)

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_V3 = 3 << 16

# Kinds of steps (what the client sent) and of units (what the server sent) beyond the letters.
STARTUP, SSL, GSS, CANCEL, QUERY, CALL, EXTENDED, UNSEEN = (
    "startup", "ssl", "gss", "cancel", "query", "call", "extended", "unseen",
)  # fmt: skip
YES, NO, LOSS = "yes", "no", "loss"

_AUTH = {2: "Kerberos V5", 3: "cleartext password", 5: "md5", 7: "GSSAPI", 9: "SSPI"}
_AUTH_ANSWERED = frozenset({3, 5, 7, 9, 10, 11})  # requests the client answers with a message
_BACKEND_TYPE = re.compile(rb"[123ACDEGHIKNRSTVWZcdnstv]")
_FIXED = {ord(c): 4 for c in "123nIcs"} | {ord("Z"): 5}
_V = TypeVar("_V")
_KEY = re.compile(rb"[A-Za-z_][A-Za-z0-9_.\-]{0,62}")


# --- detection -------------------------------------------------------------------------------


def client_start(prefix: bytes) -> bool | None:
    """Whether a client's first bytes open a PostgreSQL connection (None: too few to tell): a
    StartupMessage of protocol 3, or an SSLRequest, GSSENCRequest or CancelRequest."""
    n = len(prefix)
    if n >= 1 and prefix[0] != 0:
        return False  # (no startup packet reaches 16 MiB)
    if n >= 2 and prefix[1] > MAX_STARTUP >> 8:
        return False
    if n < 4:
        return None
    length = int.from_bytes(prefix[:4], "big")
    if length < 8 or length > MAX_STARTUP:
        return False
    codes = (SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST, _V3)
    if n < 8:
        head = prefix[4:]
        return None if any(c.to_bytes(4, "big").startswith(head) for c in codes) else False
    code = int.from_bytes(prefix[4:8], "big")
    if code in (SSL_REQUEST, GSS_REQUEST):
        return length == 8
    if code == CANCEL_REQUEST:
        return length == 16
    if code >> 16 != 3 or code & 0xFFFF > 9 or length < 10:
        return False
    body = prefix[8:length]
    parts = body.split(b"\0")
    complete = n >= length
    if complete:
        if body[-2:] != b"\0\0" or len(parts) % 2:
            return False  # key, value, ..., "" and the split's last ""
        keys = parts[0:-2:2]
        return bool(keys) and b"user" in keys and all(_KEY.fullmatch(k) for k in keys)
    keys = parts[0 : len(parts) - 1 : 2]  # (the last part may be cut)
    if not all(_KEY.fullmatch(k) for k in keys):
        return False
    return True if len(prefix) >= 8192 else None


# --- what each side sent -----------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    """What the client sent that one answer (or none) goes with: a startup-phase message, a
    Query, a FunctionCall, or extended-query messages up to an Execute, a Sync or a Flush."""

    kind: str
    message: Message
    summary: str = ""
    subs: str = ""  # (extended) the letters of its messages, in order: P B D C E S H
    seq: int = 0  # its number among the requests answered by ReadyForQuery (0: not one)
    batch: int = 0  # the number of the ReadyForQuery that ends its batch
    end: int = 0  # client stream offset after its last message
    first_end: int = 0  # ... after its first message
    passwords: int = 0  # password messages folded in (startup)
    copy_ended: bool = False  # CopyDone or CopyFail folded in
    finished: bool = False  # a later request came: nothing more is folded in
    prepared: str | None = None  # (extended) "prepare name: SQL" of its Parse
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Unit:
    """One message from the server (consecutive DataRows or CopyData merged: `count`)."""

    kind: str
    ts: float
    end_ts: float
    size: int
    text: str = ""
    count: int = 0
    acked: int | None = None  # client offset its segment acknowledged (None: not known)
    lost: int = 0  # bytes of it not captured
    detail: str = ""


@dataclass(slots=True)
class _Reply:
    """An answer, as far as it has come."""

    ts: float
    end_ts: float
    size: int = 0
    tags: list[str] = field(default_factory=list)
    more: int = 0  # tags beyond MAX_TAGS
    rows: int = 0  # rows since the last tag
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    copy_in: bool = False
    methods: list[str] = field(default_factory=list)
    authenticated: bool = False
    passwords: int = 0  # password messages its authentication requests ask for
    ready: str = ""  # ReadyForQuery's transaction status
    answer: str = ""  # (SSL, GSS) what the one-byte answer said
    done: bool = False  # complete (it may wait for the rest of its request)
    lost: int = 0


def _note(notes: list[str], text: str) -> None:
    if len(notes) < MAX_NOTES and text not in notes:
        notes.append(text)


def _text(raw: bytes, keep: int = KEEP) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= keep else text[:keep] + "…"


def _sql(raw: bytes, cut: bool = False) -> str:
    """A statement as a summary shows it: whitespace collapsed, cut short."""
    text = " ".join(raw.decode("utf-8", "replace").split())
    if len(text) > KEEP_SQL:
        return text[:KEEP_SQL] + "…"
    return text + "…" if cut else text


def _fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse or NoticeResponse, by their code letter."""
    out: dict[str, str] = {}
    i, n = 0, len(body)
    while i < n and body[i]:
        end = body.find(b"\0", i + 1)
        if end < 0:
            end = n
        out.setdefault(chr(body[i]), _text(body[i + 1 : end], 200))
        i = end + 1
    return out


def _error_text(body: bytes) -> tuple[str, str]:
    """("SEVERITY CODE: message", detail) of an ErrorResponse or NoticeResponse."""
    f = _fields(body)
    severity = f.get("V") or f.get("S") or "ERROR"
    return f"{severity} {f.get('C', '?')}: {f.get('M', '')}", f.get("D", "")


def _int(body: bytes, at: int, size: int, signed: bool = False) -> int | None:
    if at + size > len(body):
        return None
    return int.from_bytes(body[at : at + size], "big", signed=signed)


def _bind_params(
    body: bytes, cut: bool, types: Callable[[str], tuple[int, ...]]
) -> tuple[str, str, str]:
    """(portal, statement, parameters shown) of a Bind's kept body; `types` gives the types
    a statement's Parse declared, to show binary values of the common ones."""
    parts = body.split(b"\0", 2)
    if len(parts) < 3:
        return "", "", ""
    portal, statement, rest = _text(parts[0]), _text(parts[1]), parts[2]
    nformats = _int(rest, 0, 2)
    if nformats is None:
        return portal, statement, ""
    formats = [_int(rest, 2 + 2 * i, 2) for i in range(min(nformats, PARAMS))]
    at = 2 + 2 * nformats
    count = _int(rest, at, 2)
    if count is None:
        return portal, statement, " […]" if cut else ""
    at += 2
    oids = types(statement)
    shown: list[str] = []
    for i in range(min(count, PARAMS)):
        size = _int(rest, at, 4, signed=True)
        if size is None:
            shown.append("…")
            break
        at += 4
        if size < 0:
            shown.append("NULL")
            continue
        fmt = formats[0] if nformats == 1 else (formats[i] if i < len(formats) else 0)
        value = rest[at : at + size]
        at += size
        if len(value) < size:
            shown.append("'" + _text(value) + "…'" if not fmt else f"<{size} bytes>")
        elif fmt:
            shown.append(_binary(value, oids[i] if i < len(oids) else 0))
        else:
            shown.append("'" + _text(value) + "'")
    if count > PARAMS:
        shown.append(f"… {count} in all")
    return portal, statement, f" [{', '.join(shown)}]" if shown else ""


def _binary(value: bytes, oid: int) -> str:
    """A parameter in binary format, as text when its type is a common one."""
    n = len(value)
    if oid in (20, 21, 23) and n in (2, 4, 8):  # int8, int2, int4
        return str(int.from_bytes(value, "big", signed=True))
    if oid == 26 and n == 4:  # oid
        return str(int.from_bytes(value, "big"))
    if oid == 16 and n == 1:  # bool
        return "true" if value[0] else "false"
    if oid in (700, 701) and n in (4, 8):  # float4, float8
        return repr(struct.unpack("!f" if n == 4 else "!d", value)[0])
    if oid in (18, 19, 25, 114, 1042, 1043):  # char, name, text, json, bpchar, varchar
        return "'" + _text(value) + "'"
    if oid == 2950 and n == 16:  # uuid
        return str(uuid.UUID(bytes=value))
    return f"<{n} bytes>"


# --- framing ---------------------------------------------------------------------------------


class _Framer:
    """One direction's messages as they come: each header, the first bytes of each body (as
    many as `keep` says), the rest stepped over. `done` gets each message when it is whole."""

    def __init__(
        self,
        untyped: bool,
        keep: Callable[[int, int], int],
        check: Callable[[int, int, int], str | None],
        done: Callable[[int, int, bytes, int, float, float, int, int | None, int], None],
    ) -> None:
        self.untyped = untyped  # startup phase: a length and a code, no type byte
        self.keep_of = keep
        self.check = check
        self.done = done
        self.pos = 0  # stream offset of the next byte
        self.head = bytearray()
        self.left = -1  # body bytes still to come (-1: reading a header)
        self.kind = 0
        self.code = 0  # (untyped) the code after the length
        self.length = 0  # of the body
        self.keep = bytearray()
        self.keep_max = 0
        self.ts = 0.0  # of the message's first byte
        self.start = 0  # its stream offset
        self.acked: int | None = None  # of the segment with its first byte
        self.lost = 0
        self.stopped: str | None = None  # why reading stopped ("": quietly, the rest encrypted)

    def feed(self, ts: float, data: bytes, acked: int | None) -> None:
        i, n = 0, len(data)
        while i < n and self.stopped is None:
            if self.left < 0:
                if not self.head:
                    self.ts, self.start, self.acked = ts, self.pos, acked
                need = (8 if self.untyped else 5) - len(self.head)
                chunk = data[i : i + need]
                self.head += chunk
                i += len(chunk)
                self.pos += len(chunk)
                if len(chunk) < need:
                    return
                head = self.head
                if self.untyped:
                    length = int.from_bytes(head[0:4], "big")
                    self.kind, self.code, body = 0, int.from_bytes(head[4:8], "big"), length - 8
                else:
                    length = int.from_bytes(head[1:5], "big")
                    self.kind, self.code, body = head[0], 0, length - 4
                why = self.check(self.kind, self.code, length) if length >= 4 else None
                if why is None and (length < 4 or length > MAX_MESSAGE):
                    why = f"a message length of {length}: not PostgreSQL"
                if why is not None:
                    self.stopped = why
                    return
                self.head.clear()
                self.length = self.left = body
                self.keep_max = self.keep_of(self.kind, self.code)
                if body == 0:
                    self._complete(ts)
                continue
            take = min(self.left, n - i)
            room = self.keep_max - len(self.keep)
            if room > 0:
                self.keep += data[i : i + min(room, take)]
            i += take
            self.pos += take
            self.left -= take
            if self.left == 0:
                self._complete(ts)

    def _complete(self, ts: float) -> None:
        header = 8 if self.untyped else 5
        body = bytes(self.keep)
        self.keep.clear()
        self.left = -1
        lost, self.lost = self.lost, 0
        self.done(self.kind, self.code, body, self.length + header, self.ts, ts, self.pos,
                  self.acked, lost)  # fmt: skip

    def gap(self, ts: float, size: int) -> bool:
        """Bytes not captured: True when they lie inside the message being read (its framing
        holds), False when the next message's start is lost."""
        if self.stopped is not None:
            return True
        if self.left > 0 and size <= self.left:
            self.left -= size
            self.pos += size
            self.lost += size
            self.keep_max = len(self.keep)  # (what is kept stays contiguous: cut here)
            if self.left == 0:
                self._complete(ts)
            return True
        self.head.clear()
        self.keep.clear()
        self.left = -1
        self.lost = 0
        self.pos += size
        return False


def _plausible(buf: bytearray, at: int) -> bool | None:
    """Does a chain of well-formed backend messages start at `at` (RESYNC_CHAIN of them, or
    fewer up to a ReadyForQuery)? None: it needs more bytes than `buf` holds."""
    count = 0
    n = len(buf)
    while True:
        if at + 5 > n:
            return None
        kind = buf[at]
        length = int.from_bytes(buf[at + 1 : at + 5], "big")
        if length < 4 or length > RESYNC_WINDOW or not _BACKEND_TYPE.fullmatch(bytes((kind,))):
            return False
        fixed = _FIXED.get(kind)
        if fixed is not None and length != fixed:
            return False
        end = at + 1 + length
        if end > n:
            return None
        if not _well_formed(kind, bytes(buf[at + 5 : end])):
            return False
        count += 1
        if kind == 0x5A or count >= RESYNC_CHAIN:
            return True
        at = end


def _well_formed(kind: int, body: bytes) -> bool:
    """Whether a backend message's body is what its type says (used only to resynchronise)."""
    k = chr(kind)
    n = len(body)
    if k == "Z":
        return body in (b"I", b"T", b"E")
    if k == "C":
        return 1 < n <= 64 and body[-1] == 0 and b"\0" not in body[:-1] and body[:1].isupper()
    if k == "D":
        count = _int(body, 0, 2)
        if count is None:
            return False
        at = 2
        for _ in range(count):
            size = _int(body, at, 4, signed=True)
            if size is None or size < -1:
                return False
            at += 4 + max(size, 0)
        return at == n
    if k == "T":
        count = _int(body, 0, 2)
        at = 2
        for _ in range(count or 0):
            end = body.find(b"\0", at)
            if end < 0:
                return False
            at = end + 1 + 18
        return count is not None and at == n
    if k == "t":
        count = _int(body, 0, 2)
        return count is not None and n == 2 + 4 * count
    if k in "EN":
        at = 0
        while at < n and body[at]:
            end = body.find(b"\0", at + 1)
            if end < 0 or not body[at : at + 1].isalpha():
                return False
            at = end + 1
        return at == n - 1
    if k == "S":
        return n >= 2 and body.count(b"\0") == 2 and body[-1] == 0
    if k == "K":
        return 8 <= n <= 264
    if k == "R":
        code = _int(body, 0, 4)
        return code in (0, 2, 3, 5, 7, 8, 9, 10, 11, 12)
    if k in "GHW":
        count = _int(body, 1, 2)
        return count is not None and n == 3 + 2 * count
    if k == "A":
        return n >= 6 and body.count(b"\0") == 2 and body[-1] == 0
    return k in "dV123nIcsv"


class _ServerReader:
    """The server's messages: its one-byte answers to SSLRequest/GSSENCRequest first, then
    typed messages; after a loss that broke the framing, reads ahead to where it holds again."""

    def __init__(
        self,
        done: Callable[[int, int, bytes, int, float, float, int, int | None, int], None],
        answer: Callable[[int, float], None],
    ) -> None:
        self.framer = _Framer(False, self._keep, self._check, done)
        self.answer = answer
        self.answers = True  # at the start: one-byte answers may come
        self.resync: bytearray | None = None  # bytes read ahead after a loss

    @staticmethod
    def _keep(kind: int, code: int) -> int:
        k = chr(kind)
        if k in "ENA":
            return KEEP_OTHER
        if k in "CRSv":
            return 256
        if k in "ZK":
            return 8
        return 0

    @staticmethod
    def _check(kind: int, code: int, length: int) -> str | None:
        fixed = _FIXED.get(kind)
        if fixed is not None and length != fixed:
            return f"a {chr(kind)!r} message of length {length}: not PostgreSQL"
        return None

    @property
    def stopped(self) -> str | None:
        return self.framer.stopped

    def feed(self, ts: float, data: bytes, acked: int | None) -> None:
        framer = self.framer
        if framer.stopped is not None:
            return
        while self.answers and data:
            byte = data[0]
            if byte not in b"SNG":
                self.answers = False
                break
            data = data[1:]
            framer.pos += 1
            self.answer(byte, ts)
            if byte != ord("N"):
                framer.stopped = ""  # the rest is encrypted
                return
        if self.resync is not None:
            self.resync += data
            at = self._find()
            if at is None:
                return
            data = bytes(self.resync[at:])
            framer.pos += at
            self.resync = None
        framer.feed(ts, data, acked)

    def _find(self) -> int | None:
        """Where a well-formed chain starts in the bytes read ahead (dropping those before it
        that cannot start one); None while it cannot be told yet."""
        buf = self.resync
        assert buf is not None
        at = 0
        while True:
            m = _BACKEND_TYPE.search(buf, at)
            if m is None:
                at = len(buf)
                break
            at = m.start()
            verdict = _plausible(buf, at)
            if verdict:
                return at
            if verdict is None and len(buf) - at < RESYNC_WINDOW:
                break
            at += 1
        del buf[:at]
        self.framer.pos += at
        return None

    def gap(self, ts: float, size: int) -> bool:
        """Bytes not captured; False when the framing is lost (reading ahead begins)."""
        framer = self.framer
        if framer.stopped is not None:
            return True
        if self.resync is not None:
            framer.pos += len(self.resync) + size
            self.resync.clear()
            return False
        self.answers = False
        if framer.gap(ts, size):
            return True
        self.resync = bytearray()
        return False


# --- the consumer ----------------------------------------------------------------------------


def _deserves(step: _Step) -> bool:
    """Whether a step is a transaction of its own (an extended step only with an Execute or a
    Parse; a Sync, Describe, Close or Flush goes with them, unless it fails)."""
    if step.kind != EXTENDED:
        return True
    return "E" in step.subs or step.prepared is not None


class PostgresParser:
    """Pairs a connection's requests and answers into `Transaction` events (see the module)."""

    def __init__(self, conn: Connection, emit: Callable[[Event], None]) -> None:
        self.conn = conn
        self.emit = emit
        self.index = 0
        self.client = _Framer(True, self._client_keep, self._client_check, self._client_message)
        self.server = _ServerReader(self._server_message, self._answer)
        self.steps: deque[_Step] = deque()  # requests waiting for (the rest of) their answer
        self.units: deque[_Unit] = deque()  # server messages waiting to be paired
        # The client's side.
        self.open: _Step | None = None  # extended messages since the last Execute/Sync/Flush
        self.copy_target: _Step | None = None  # where CopyData from the client goes
        self.auth_target: _Step | None = None  # where password messages go
        # Prepared statements by name: their SQL (None: not seen) and the types Parse declared.
        self.statements: dict[str, tuple[str | None, tuple[int, ...]]] = {}
        self.portals: dict[str, tuple[str, str]] = {}  # name: (SQL and parameters, statement)
        self.seqs = 0
        self.requested: str | None = None  # SSL or GSS, when the last startup message was one
        self.client_done: str | None = None  # why no more requests come ("lost": bytes lost)
        self.client_upto: int | None = None  # (then) before which offset all were read
        self.server_done: str | None = None
        # The pairing.
        self.reply: _Reply | None = None  # the answer to steps[0] so far
        self.sub = 0  # (extended) how many of steps[0]'s messages are answered
        self.failed = False  # (extended) an error: the server skips to Sync
        self.skip_note = ""
        self.skipped: list[_Step] = []  # skipped Executes, said at their batch's ReadyForQuery
        self.matched = 0  # ReadyForQuery answered (the seq of the last request they answered)
        self.encrypted = False
        self.lost = {True: 0, False: 0}
        # After a loss on the server's side (see the module).
        self.unsynced = False
        self.zs = 0  # ReadyForQuery seen since
        self.hi: int | None = None  # the most the last one of them can answer
        # Answers held, each ending with its ReadyForQuery, with the first batch it may answer.
        self.run: list[tuple[int, list[_Unit]]] = []
        self.group: list[_Unit] = []  # the next one, as far as it has come
        self.held = 0
        self.partial = False  # run[0] is the answer the loss cut into
        self.loss_note = ""  # what the loss was
        self.dropped = False  # an answer held since was given up

    # --- the stream consumer --------------------------------------------------------------

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.encrypted:
            return
        if from_client:
            if self.client_done is None:
                self.client.feed(ts, data, None)
                if self.client.stopped is not None:
                    self._client_stop(self.client.stopped, upto=self.client.start)
        else:
            self.server.feed(ts, data, conn.peer_offset(False, ack))
            if self.server.stopped and self.server_done is None:
                self.server_done = self.server.stopped
        self._pair()

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        if self.encrypted:
            return
        self.lost[from_client] += size
        why = f"{size:,} {'client' if from_client else 'server'} bytes were not captured"
        why += f" ({reason})" if reason else ""
        if from_client:
            if self.client_done is None and not self.client.gap(ts, size):
                self._client_stop(why, upto=offset, lost=True)
        elif self.server_done is None and not self.server.gap(ts, size):
            self.units.append(_Unit(LOSS, ts, ts, size, why))
        self._pair()

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        if from_client:
            self._client_stop("")
        elif self.server_done is None:
            self.server_done = ""
        self._pair()

    def on_close(self, conn: Connection, ts: float) -> None:
        self._client_stop("")
        if self.server_done is None:
            self.server_done = ""
        self._pair()
        if self.encrypted:
            return
        if self.unsynced:
            self._drop_run()
        why = self._why_unanswered()
        while self.steps:
            head = self.steps.popleft()
            reply, self.reply, self.sub = self.reply, None, 0
            if reply is not None and reply.done:
                self._tx(head, reply, True, [])
            elif reply is not None:
                cut = why if self.server_done or self.lost[False] else "the connection closed"
                self._tx(head, reply, False, [f"its answer was not complete: {cut}"])
            elif head.kind == EXTENDED and self.failed and "S" not in head.subs:
                if _deserves(head):
                    self._tx(head, None, False, [self.skip_note])
            elif _deserves(head) and head.kind != UNSEEN:
                self._tx(head, None, False, [why])
        self._flush_skipped()
        if self.units:
            self._orphan(list(self.units), self._why_unasked())
            self.units.clear()

    # --- the client's side ---------------------------------------------------------------

    @staticmethod
    def _client_keep(kind: int, code: int) -> int:
        if kind == 0:
            return MAX_STARTUP if code >> 16 == 3 else 8
        k = chr(kind)
        if k in "QP":
            return KEEP_BODY
        if k in "BDCEF":
            return KEEP_OTHER
        return 0

    def _client_check(self, kind: int, code: int, length: int) -> str | None:
        if kind:
            return None
        requested, self.requested = self.requested, None
        if requested and length >> 24 == 0x16:
            return ""  # a TLS ClientHello after the server said S
        if code in (SSL_REQUEST, GSS_REQUEST) and length == 8:
            return None
        if code == CANCEL_REQUEST and length == 16:
            return None
        if code >> 16 == 3 and 8 < length <= MAX_STARTUP:
            return None
        if requested == GSS:
            return ""  # GSSAPI-encrypted after the server said G
        return f"not a PostgreSQL startup message (length {length}, code {code})"

    def _client_stop(self, why: str, upto: int | None = None, lost: bool = False) -> None:
        """No more requests will be read: why ("" the client's side ended); upto: the client
        offset before which every request was read, when it stopped short of its end."""
        if self.client_done is not None:
            return
        self.client_done = "lost" if lost else why
        self.client_upto = upto
        self._queue_open()
        for target in (self.copy_target, self.auth_target):
            if target is not None:
                target.finished = True

    def _client_message(
        self, kind: int, code: int, body: bytes, size: int, ts: float, end_ts: float, end: int,
        acked: int | None, lost: int,
    ) -> None:  # fmt: skip
        if self.client_done is not None:
            return
        message = Message(ts, end_ts, size)
        note = f"{lost:,} client bytes of it were not captured" if lost else ""
        if kind == 0:
            self._startup_message(code, body, message, end)
        elif chr(kind) in "dcfp":
            target = self.auth_target if kind == ord("p") else self.copy_target
            if target is not None:
                target.message.size += size
                target.message.end_ts = end_ts
                target.passwords += kind == ord("p")
                target.copy_ended |= kind in b"cf"
                if note:
                    _note(target.notes, note)
        else:
            self._typed(chr(kind), body, message, end, note)

    def _typed(self, k: str, body: bytes, message: Message, end: int, note: str) -> None:
        size = message.size
        if k not in "SH":
            for target in (self.copy_target, self.auth_target):
                if target is not None:
                    target.finished = True
        if k == "Q":
            self._queue_open()
            step = _Step(QUERY, message, _sql(body.split(b"\0", 1)[0], size - 5 > len(body)))
            if note:
                _note(step.notes, note)
            self._queue(step, end, end, seq=True)
            self.copy_target = step
        elif k == "F":
            self._queue_open()
            oid = _int(body, 0, 4)
            step = _Step(CALL, message, f"function call (oid {oid})")
            if note:
                _note(step.notes, note)
            self._queue(step, end, end, seq=True)
        elif k in "PBDCESH":
            self._extended(k, body, message, end, note)
        elif k == "X":
            self._client_stop("")
            self.client_done = "terminated"

    def _startup_message(self, code: int, body: bytes, message: Message, end: int) -> None:
        if code == SSL_REQUEST:
            self.requested = SSL
            self._queue(_Step(SSL, message, "SSLRequest"), end, end)
        elif code == GSS_REQUEST:
            self.requested = GSS
            self._queue(_Step(GSS, message, "GSSENCRequest"), end, end)
        elif code == CANCEL_REQUEST:
            pid = _int(body, 0, 4)
            self._queue(_Step(CANCEL, message, f"CancelRequest for backend pid {pid}"), end, end)
            self._client_stop("")
        else:
            parts = body.split(b"\0")
            pairs = [
                f"{_text(k)}={_text(v)}"
                for k, v in zip(parts[0:-1:2], parts[1::2], strict=False)
                if k
            ]
            minor = code & 0xFFFF
            if minor:
                pairs.append(f"protocol=3.{minor}")
            summary = _cut(" ".join(["startup", *pairs]))
            step = _Step(STARTUP, message, summary)
            self._queue(step, end, end, seq=True)
            self.auth_target = step
            self.client.untyped = False

    def _extended(self, k: str, body: bytes, message: Message, end: int, note: str) -> None:
        size = message.size
        step = self.open
        if step is None:
            step = self.open = _Step(EXTENDED, Message(message.ts, message.end_ts, 0))
            step.first_end = end
        step.message.end_ts = message.end_ts
        step.message.size += size
        step.end = end
        step.subs += k
        if note:
            _note(step.notes, note)
        cut = size - 5 > len(body)
        if k == "P":
            parts = body.split(b"\0", 2)
            name = _text(parts[0])
            sql = _sql(parts[1], cut and len(parts) < 3) if len(parts) > 1 else None
            count = _int(parts[2], 0, 2) if len(parts) > 2 else None
            types = tuple(_int(parts[2], 2 + 4 * i, 4) or 0 for i in range(min(count or 0, PARAMS)))
            self._remember(self.statements, name, (sql, types))
            step.prepared = f"prepare {name}: {sql}" if name else f"prepare: {sql}"
        elif k == "B":
            portal, statement, params = _bind_params(body, cut, self._types)
            sql = self.statements.get(statement, (None, ()))[0]
            if sql is None:
                sql = f"EXECUTE {statement}" if statement else "EXECUTE"
                if statement not in self.statements:
                    _note(step.notes, "its statement was prepared before the capture began")
            self._remember(self.portals, portal, (sql + params, statement))
        elif k == "C":
            what, name = body[:1], _text(body[1:].split(b"\0", 1)[0])
            (self.statements if what == b"S" else self.portals).pop(name, None)
            if not step.summary:
                step.summary = f"close {'statement' if what == b'S' else 'portal'} {name}"
        elif k == "D":
            what, name = body[:1], _text(body[1:].split(b"\0", 1)[0])
            if not step.summary:
                step.summary = f"describe {'statement' if what == b'S' else 'portal'} {name}"
        if k == "E":
            portal = _text(body.split(b"\0", 1)[0])
            found = self.portals.get(portal)
            if found is None:
                step.summary = f"EXECUTE portal {portal}" if portal else "EXECUTE"
                _note(step.notes, "its portal was bound before the capture began")
            else:
                step.summary = found[0]
            self.open = None
            self._queue(step, step.first_end, end)
            self.copy_target = step
        elif k == "S":
            self.open = None
            if step.prepared is not None:
                step.summary = step.prepared
            elif not step.summary or step.subs == "S":
                step.summary = "Sync"
            self._queue(step, step.first_end, end, seq=True)
        elif k == "H":
            self.open = None
            if step.prepared is not None:
                step.summary = step.prepared
            elif not step.summary:
                step.summary = "Flush"
            self._queue(step, step.first_end, end)

    def _types(self, statement: str) -> tuple[int, ...]:
        return self.statements.get(statement, (None, ()))[1]

    @staticmethod
    def _remember(table: dict[str, _V], name: str, value: _V) -> None:
        table.pop(name, None)
        if len(table) >= MAX_STATEMENTS:
            del table[next(iter(table))]
        table[name] = value

    def _queue_open(self) -> None:
        step = self.open
        if step is not None:
            self.open = None
            step.summary = step.prepared or step.summary or "Parse/Bind"
            self._queue(step, step.first_end, step.end)

    def _queue(self, step: _Step, first_end: int, end: int, seq: bool = False) -> None:
        if len(self.steps) >= MAX_PENDING:
            why = f"more than {MAX_PENDING:,} requests waited for their answers"
            self._client_stop(why, upto=self.steps[-1].end if self.steps else 0)
            return
        step.first_end, step.end = first_end, end
        step.batch = self.seqs + 1
        if seq:
            self.seqs += 1
            step.seq = self.seqs
        self.steps.append(step)

    # --- the server's side ---------------------------------------------------------------

    def _answer(self, byte: int, ts: float) -> None:
        self.units.append(_Unit(NO if byte == ord("N") else YES, ts, ts, 1, chr(byte)))

    def _server_message(
        self, kind: int, code: int, body: bytes, size: int, ts: float, end_ts: float, end: int,
        acked: int | None, lost: int,
    ) -> None:  # fmt: skip
        k = chr(kind)
        units = self.units
        if k in "Dd" and units:
            last = units[-1]
            if last.kind == k:
                last.count += 1
                last.size += size
                last.end_ts = end_ts
                last.lost += lost
                return
        if len(units) >= MAX_UNITS:
            if self.server_done is None:
                self.server_done = (
                    f"more than {MAX_UNITS:,} server messages waited for their requests"
                )
                self.server.framer.stopped = self.server_done
            return
        unit = _Unit(k, ts, end_ts, size, acked=acked, lost=lost, count=1)
        if k in "EN":
            unit.text, unit.detail = _error_text(body)
        elif k == "C":
            unit.text = _text(body.split(b"\0", 1)[0])
        elif k == "Z":
            unit.text = chr(body[0]) if body else "?"
        elif k == "R":
            unit.count = _int(body, 0, 4) or 0
            if unit.count == 10:
                unit.text = "/".join(_text(m) for m in body[4:].split(b"\0") if m)
        elif k == "A":
            pid = _int(body, 0, 4)
            parts = body[4:].split(b"\0")
            channel = _text(parts[0])
            payload = _text(parts[1]) if len(parts) > 1 else ""
            unit.text = f'NOTIFY {channel} "{payload}" (backend pid {pid})'
        elif k == "K":
            unit.count = _int(body, 0, 4) or 0
        elif k == "v":
            unit.text = f"the server speaks protocol 3.{_int(body, 0, 4)} at most"
        units.append(unit)

    # --- pairing ---------------------------------------------------------------------------

    def _pair(self) -> None:
        units = self.units
        while True:
            if self.encrypted:
                units.clear()
                self.steps.clear()
                return
            if not self._advance() or not units:
                return
            unit = units[0]
            if unit.kind == "A":
                units.popleft()
                self._tx(None, self._reply_of([unit]), True, ["a notification (LISTEN/NOTIFY)"])
                continue
            if unit.kind == LOSS:
                units.popleft()
                self._lose(unit)
                continue
            if self.unsynced:
                if not self._unsynced(unit):
                    return
                continue
            steps = self.steps
            if not steps:
                if self.client_done is None:
                    return
                steps.append(_Step(UNSEEN, Message(unit.ts, unit.ts, 0)))
            head = steps[0]
            if (
                unit.kind in "NE"
                and self.reply is None
                and self.sub == 0
                and head.kind != UNSEEN
                and unit.acked is not None
                and unit.acked < head.first_end
            ):
                units.popleft()
                note = (
                    "sent before the server had received the next request: no request was waiting"
                )
                self._tx(None, self._reply_of([unit]), True, [note])
                continue
            units.popleft()
            self._take(head, unit)

    def _advance(self) -> bool:
        """Settle steps[0] as far as it goes without another server message; False: it waits
        for the client's side (the rest of its request)."""
        steps = self.steps
        while steps:
            head = steps[0]
            reply = self.reply
            if reply is not None and reply.done:
                if not self._complete(head, reply):
                    return False
                steps.popleft()
                self.reply, self.sub = None, 0
                self._tx(head, reply, True, [])
                continue
            if self.unsynced:
                return True
            if head.kind == CANCEL:
                steps.popleft()
                note = "the server answers a cancel request by closing the connection"
                self._tx(head, None, False, [note])
                continue
            if head.kind != EXTENDED:
                return True
            subs = head.subs
            while self.sub < len(subs) and (
                subs[self.sub] == "H" or (self.failed and subs[self.sub] != "S")
            ):
                self.sub += 1
            if self.sub < len(subs):
                return True
            if reply is not None and reply.copy_in and not self._complete(head, reply):
                return False
            steps.popleft()
            self._step_done(head)
        return True

    def _complete(self, head: _Step, reply: _Reply) -> bool:
        """Whether the request is whole: what the client sends after its message and that
        belongs to it (passwords, COPY data) has come."""
        if self.client_done is not None or head.finished:
            return True
        if head.kind == STARTUP:
            return head.passwords >= reply.passwords
        return not reply.copy_in or head.copy_ended

    def _step_done(self, head: _Step) -> None:
        """Every message of an extended step is answered or skipped."""
        reply, self.reply, self.sub = self.reply, None, 0
        if "S" in head.subs:  # the end of its batch
            self._flush_skipped()
            if reply is not None and (reply.error or head.prepared is not None):
                self._tx(head, reply, True, [])
            self.failed, self.skip_note = False, ""
        elif reply is None:
            if self.failed and _deserves(head):
                if len(self.skipped) >= MAX_PENDING:
                    self._tx(self.skipped.pop(0), None, False, [self.skip_note])
                self.skipped.append(head)
        elif _deserves(head) or reply.error:
            self._tx(head, reply, True, [])

    def _flush_skipped(self) -> None:
        for step in self.skipped:
            self._tx(step, None, False, [self.skip_note])
        self.skipped.clear()

    def _take(self, head: _Step, unit: _Unit) -> None:
        """Pair one server message with the request at the head (see the module)."""
        had = self.reply is not None
        reply = self.reply
        if reply is None:
            reply = self.reply = _Reply(unit.ts, unit.end_ts)
        k = unit.kind
        if head.kind in (SSL, GSS):
            self.steps.popleft()
            self.reply = None
            if k in (YES, NO):
                _absorb(reply, unit)
                what = "TLS" if head.kind == SSL else "GSSAPI encryption"
                if k == YES:
                    reply.answer = f"{what} accepted: the rest is encrypted"
                    self.encrypted = True
                else:
                    reply.answer = f"{what} refused (N): the client may go on in plaintext"
                self._tx(head, reply, True, [])
            elif k == "E":
                _absorb(reply, unit)
                self._tx(head, reply, True, [])
            else:
                self._tx(head, None, False, ["no answer to it was seen"])
                self.units.appendleft(unit)
            return
        if head.kind != EXTENDED:
            _absorb(reply, unit)
            if k == "Z" or (head.kind == STARTUP and k == "E"):
                reply.done = True
                self.matched = max(self.matched, head.seq)
                if k == "Z" and reply.ready == "E" and head.kind == QUERY:
                    _note(reply.notes, "in a failed transaction block (ReadyForQuery E)")
            return
        letter = head.subs[self.sub]
        if k == "Z" and letter != "S":
            # The server ended the batch before the pairing did: what is left was not answered.
            at = head.subs.find("S", self.sub)
            self.units.appendleft(unit)
            if at >= 0:
                self.sub = at
                return
            self.steps.popleft()
            self.reply, self.sub = None, 0
            if had and (_deserves(head) or reply.error):
                self._tx(head, reply, False, ["no complete answer came before ReadyForQuery"])
            elif _deserves(head):
                self._tx(head, None, False, ["no answer to it came before ReadyForQuery"])
            self.failed = True
            self.skip_note = "no answer to it came before its batch's ReadyForQuery"
            return
        _absorb(reply, unit)
        if k == "Z":
            self.sub += 1
            self.matched = max(self.matched, head.seq)
        elif k == "E":
            if letter != "S":
                self.failed = True
                self.skip_note = "not executed: the server skipped it after an error before it in its batch (until Sync)"
                self.sub += 1
        elif (
            (letter == "P" and k == "1")
            or (letter == "B" and k == "2")
            or (letter == "D" and k in "Tn")
            or (letter == "C" and k == "3")
            or (letter == "E" and k in "CIs")
        ):
            self.sub += 1

    # --- after a loss on the server's side -----------------------------------------------

    def _lose(self, unit: _Unit) -> None:
        if self.unsynced:
            self._drop_run()
        self.unsynced = True
        self.hi = None
        self.partial = True
        self.loss_note = unit.text

    def _unsynced(self, unit: _Unit) -> bool:
        """Hold a server message read after a loss; at a ReadyForQuery, pair the held answers
        again if which request it answers is certain. False: wait for the client's side."""
        units = self.units
        if unit.kind != "Z":
            units.popleft()
            self.group.append(unit)
            self.held += 1
            self._hold()
            return True
        acked = unit.acked
        if acked is not None and self.client_done is None and self.client.pos < acked:
            return False  # (the requests the server had received are not all read yet)
        units.popleft()
        self.group.append(unit)
        self.held += 1
        self.zs += 1
        lo = self.matched + self.zs  # at least one request after each answer seen
        bounds = []
        upto = self.client_upto
        if acked is not None and (upto is None or acked <= upto):
            # At most the requests the server had received in full when it sent this.
            received = sum(1 for s in self.steps if s.seq > self.matched and s.end <= acked)
            bounds.append(self.matched + received)
        if self.hi is not None:
            bounds.append(self.hi + 1)
        hi = min(bounds) if bounds else None
        self.run.append((lo, self.group))
        self.group = []
        if hi == lo:
            self._pin(lo)
            return True
        self.hi = hi if hi is not None and hi > lo else None
        self._hold()
        return True

    def _hold(self) -> None:
        while self.run and (len(self.run) > MAX_RUN or self.held > MAX_HELD):
            self._drop_group()
        if self.held > MAX_HELD and self.group:
            self.held -= len(self.group)
            self._orphan(self.group, self._unpaired_note())
            self.group = []

    def _unpaired_note(self) -> str:
        return f"{self.lost[False]:,} server bytes were not captured before it: it could not be paired for certain"

    def _drop_group(self) -> None:
        """Give up pairing the oldest answer held: it is reported without its request, and
        the requests it shows were answered by then (up to the first it may answer) without
        theirs."""
        lo, group = self.run.pop(0)
        self.held -= len(group)
        self.partial = False
        self.dropped = True
        self._orphan(group, self._unpaired_note())
        self._release(lo)
        self.zs -= lo - self.matched
        self.matched = lo

    def _drop_run(self) -> None:
        while self.run:
            self._drop_group()
        if self.group:
            self._orphan(self.group, self._unpaired_note())
        self.group, self.held, self.partial = [], 0, False

    def _release(self, last: int) -> None:
        """The requests of the batches up to `last` were answered in what was lost (or in an
        answer that could not be paired, when one was given up)."""
        doubt = ", or could not be paired for certain" if self.dropped else ""
        lost = f"its answer was lost{doubt}: {self.loss_note}"
        steps = self.steps
        while steps and steps[0].batch <= last:
            head = steps.popleft()
            reply, self.reply, self.sub = self.reply, None, 0
            if reply is not None and reply.done:
                self._tx(head, reply, True, [])
            elif reply is not None:
                self._tx(head, reply, False, [f"the rest of {lost}"])
            elif head.kind == EXTENDED and self.failed and "S" not in head.subs:
                if _deserves(head):
                    self._tx(head, None, False, [self.skip_note])
            elif _deserves(head) and head.kind != CANCEL:
                self._tx(head, None, False, [lost])
            if head.seq:
                self._flush_skipped()
                self.failed = False

    def _pin(self, last: int) -> None:
        """The held answers are the answers to the batches up to `last`, in order."""
        groups = [group for _, group in self.run]
        first = last - len(groups) + 1
        self._release(first - 1)
        self.matched = max(self.matched, first - 1)
        back = self._tail(groups[0]) if self.partial else groups[0]
        for group in groups[1:]:
            back += group
        self.units.extendleft(reversed(back))
        self.run, self.held, self.zs, self.hi = [], 0, 0, None
        self.unsynced = self.partial = self.dropped = False

    def _tail(self, group: list[_Unit]) -> list[_Unit]:
        """The answer the loss cut into: set the pairing where its end goes, or, where that is
        not certain, keep only its ReadyForQuery."""
        steps = self.steps
        if not steps:
            return group
        head = steps[0]
        started = self.reply is not None or self.sub > 0 or self.failed
        where = self.loss_note
        if head.kind != EXTENDED:
            if self.reply is None:
                self.reply = _Reply(group[0].ts, group[0].ts)
            what = "part" if started else "the start"
            _note(self.reply.notes, f"{what} of its answer was lost: {where}")
            return group
        batch: list[_Step] = []
        for step in steps:
            batch.append(step)
            if "S" in step.subs:
                break
        executes = [i for i, s in enumerate(batch) if "E" in s.subs]
        if started and not [i for i in executes if i > 0]:
            if self.reply is None:
                self.reply = _Reply(group[0].ts, group[0].ts)
            _note(self.reply.notes, f"part of its answer was lost: {where}")
            return group
        if not started and len(executes) == 1:
            for _ in range(executes[0]):
                step = steps.popleft()
                if _deserves(step):
                    self._tx(step, None, False, [f"its answer was lost: {where}"])
            self.sub = steps[0].subs.index("E")
            self.reply = _Reply(group[0].ts, group[0].ts)
            _note(self.reply.notes, f"the start of its answer was lost: {where}")
            return group
        # Several Executes: whose answer the tail is cannot be told.
        reply, self.reply = self.reply, None
        while steps and "S" not in steps[0].subs:
            step = steps.popleft()
            if reply is not None:
                self._tx(step, reply, False, [f"the rest of its answer was lost: {where}"])
                reply = None
            elif self.failed and _deserves(step):
                self._tx(step, None, False, [self.skip_note])
            elif _deserves(step):
                self._tx(step, None, False, [f"its answer was lost, or is not told apart: {where}"])
        self._flush_skipped()
        self.failed = False
        if steps:
            self.sub = steps[0].subs.index("S")
            if _deserves(steps[0]):
                self.reply = _Reply(group[-1].ts, group[-1].ts)
                _note(self.reply.notes, f"the start of its answer was lost: {where}")
        return [group[-1]]

    # --- what is said -----------------------------------------------------------------------

    def _reply_of(self, units: list[_Unit]) -> _Reply:
        reply = _Reply(units[0].ts, units[0].end_ts)
        for unit in units:
            _absorb(reply, unit)
        return reply

    def _orphan(self, units: list[_Unit], note: str) -> None:
        """Server messages whose request is not known, as transactions of their own (one per
        ReadyForQuery)."""
        start = 0
        for i, unit in enumerate(units):
            if unit.kind in ("Z", "A") or i == len(units) - 1:
                part = units[start : i + 1]
                start = i + 1
                if unit.kind == "A" and len(part) > 1:
                    self._tx(None, self._reply_of(part[:-1]), False, [note])
                    part = part[-1:]
                if unit.kind == "A":
                    self._tx(None, self._reply_of(part), True, ["a notification (LISTEN/NOTIFY)"])
                else:
                    self._tx(None, self._reply_of(part), unit.kind == "Z", [note])

    def _why_unanswered(self) -> str:
        if self.server_done:
            return f"the server's side was not read further: {self.server_done}"
        if self.lost[False]:
            return f"{self.lost[False]:,} server bytes were not captured: its answer was among them, or could not be paired for certain after them"
        return "no answer was seen"

    def _why_unasked(self) -> str:
        if self.client_done == "lost":
            return "its request was in client bytes that were not captured"
        if self.client_done and self.client_done != "terminated":
            return f"the client's side was not read further: {self.client_done}"
        return "no request was waiting for it (sent by the server on its own)"

    def _tx(
        self, step: _Step | None, reply: _Reply | None, complete: bool, notes: list[str]
    ) -> None:
        request = None
        request_summary = None
        said: list[str] = []
        if step is not None and step.kind != UNSEEN:
            m = step.message
            request = Message(m.ts, m.end_ts, m.size)
            request_summary = step.summary
            said += step.notes
        response = None
        response_summary = None
        status = None
        error = None
        if reply is not None:
            response = Message(reply.ts, reply.end_ts, reply.size)
            response_summary = _summary(step, reply)
            error = reply.error
            status = "error" if error else ("ok" if complete else None)
            said += reply.notes
            if reply.error and reply.methods:
                said.append(f"authentication asked: {'/'.join(reply.methods)}")
            if reply.lost:
                said.append(f"{reply.lost:,} server bytes of it were not captured")
        if step is not None and step.kind == UNSEEN:
            said.append(self._why_unasked())
        said += notes
        self.emit(
            Transaction(
                protocol=PROTOCOL,
                connection=self.conn.id,
                index=self.index,
                request=request,
                request_summary=request_summary,
                response=response,
                response_summary=response_summary,
                status=status,
                error=error,
                notes=tuple(dict.fromkeys(n for n in said if n)),
            )
        )
        self.index += 1


def _cut(text: str) -> str:
    return text if len(text) <= KEEP_SQL else text[:KEEP_SQL] + "…"


def _tag(reply: _Reply, tag: str) -> None:
    if reply.rows and not tag[-1:].isdigit():
        tag += f" ({reply.rows} row{'s' if reply.rows != 1 else ''})"
    reply.rows = 0
    if len(reply.tags) < MAX_TAGS:
        reply.tags.append(tag)
    else:
        reply.more += 1


def _absorb(reply: _Reply, unit: _Unit) -> None:
    """What a server message adds to the answer it is part of."""
    reply.end_ts = unit.end_ts
    reply.size += unit.size
    reply.lost += unit.lost
    k = unit.kind
    if k == "D":
        reply.rows += unit.count
    elif k == "C":
        _tag(reply, unit.text)
    elif k == "I":
        _tag(reply, "empty query")
    elif k == "s":
        _tag(reply, f"suspended after {reply.rows} row{'s' if reply.rows != 1 else ''}")
    elif k == "V":
        _tag(reply, "function result")
    elif k == "E":
        if reply.error is None:
            reply.error = unit.text
            if unit.detail:
                _note(reply.notes, f"DETAIL: {unit.detail}")
        else:
            _note(reply.notes, unit.text)
    elif k == "N":
        _note(reply.notes, unit.text)
    elif k in "GW":
        reply.copy_in = True
    elif k == "R":
        code = unit.count
        if code == 0:
            reply.authenticated = True
        else:
            method = unit.text if code == 10 else _AUTH.get(code)
            if method and method not in reply.methods:
                reply.methods.append(method)
        if code in _AUTH_ANSWERED:
            reply.passwords += 1
    elif k == "K":
        _note(reply.notes, f"backend pid {unit.count}")
    elif k == "v":
        _note(reply.notes, unit.text)
    elif k == "Z":
        reply.ready = unit.text
    elif k == "A":
        reply.answer = unit.text


def _summary(step: _Step | None, reply: _Reply) -> str:
    if reply.answer:
        return reply.answer
    if reply.error is None and (reply.methods or reply.authenticated):
        methods = "/".join(reply.methods)
        if reply.authenticated:
            return "authentication ok" + (f" ({methods})" if methods else "")
        return f"authentication asked: {methods}"
    parts = list(reply.tags)
    if reply.more:
        parts.append(f"and {reply.more} more")
    if reply.rows:
        parts.append(f"{reply.rows} row{'s' if reply.rows != 1 else ''}")
    if reply.error:
        parts.append(reply.error)
    if not parts and step is not None and step.kind == EXTENDED:
        if step.prepared is not None:
            return "ParseComplete"
        return "CloseComplete" if "C" in step.subs else "ReadyForQuery"
    return "; ".join(parts)
