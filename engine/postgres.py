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
- on the client's side across a message boundary: the client's stream is read forward to a
  point where a chain of well-formed frontend messages starts that cannot be the middle of a
  message (one ending with a Query, or with a Sync after extended-query messages, or eight
  messages; a header shorter than 16 MiB holds NULs, which SQL text never does), and is read
  again from there. The requests read before the loss are answered first, in order. How many
  requests the lost bytes held is not known, so the answers after those are paired only when
  the acknowledgments make it certain, adrift meanwhile: the first request R read after the
  loss (with its batch, up to its Query or Sync) is paired with the answer that starts where
  its segment acknowledged the server's stream (A: its client had all before, nothing after)
  when
  1. a message starts at A (notifications aside), and the message before it, if one was read,
     is a ReadyForQuery that the server sent once it had every client byte before R (the
     client then waited for no other answer, unless it sent one before it had that one);
  2. that answer was sent once the server had R's first message, and it is made of what
     answers R's messages (ParseComplete for Parse, BindComplete for Bind, rows and a tag for
     Execute, an error skipping to Sync...), up to one ReadyForQuery;
  3. the client's next message (a request, or Terminate) acknowledges that answer whole and
     nothing after it (it waited for it), and a request's answer was sent after it came.
  Otherwise R is said without an answer ("which answer is its own could not be told for
  certain"), the answers before where the next request's acknowledgment points are said
  without a request, and the next batch is tried; from the first pair on, order pairs again.
  Adrift, notifications (which answer nothing) are said as they come, and the rest in the
  order of the server's stream, R where it acknowledged it: the same whatever the interleaving.
  A client that pipelined (sent R before it had an earlier answer) shows it by 1 (a lost
  request sent after that ReadyForQuery; A inside an answer), by 2 (an answer sent before R
  came) or by 3 (its next message acknowledging more than one answer). One case no
  acknowledgment tells from a client that waits: a request lost (or sent before the capture)
  still unanswered when R was sent, whose answer the server began only once it had R, the
  client's next message sent just after that answer and before R's, and R's begun only once
  that message came (a client keeping one request in flight in step with the answers, on a
  server slower than the round trip): its answers would be paired one request late.
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
  answers, each noted. Adrift after a loss on the client's side, the answers held go back to be
  read as above once the requests read before that loss are settled.

A connection the capture joined after its start (`on_gap(..., 0, 0, MIDSTREAM)`, see
`engine.tcp.StreamConsumer`) has no startup to read: both sides are read as after a loss from
their first bytes (which may be inside a message: the client's inside a Query's SQL or its
CopyData, the server's inside a DataRow), and requests pair from the first that the rule above
pairs; the notes say the capture began inside the connection. A client waiting for each answer
(simple Query, or Parse/Bind/Describe/Execute/Sync) is paired from its first request whose start
and answer were captured, the capture beginning between two of them or inside one (but for the
last before the connection's end when no Terminate follows it: nothing says it was waited for).

Bounds: at most 10,000 requests wait for their answers, adrift or not (then the client's side
is not read further, said), 10,000 server messages for their requests (rows merged), 1,000
named statements and portals are remembered (the oldest forgotten); bodies keep 4 KiB at most;
reading ahead after a loss holds 64 KiB on each side.
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
from engine.reassembly import NO_ACK
from engine.tcp import MIDSTREAM

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
_FRONTEND_TYPE = re.compile(rb"[BCDEFHPQSXcdf]")
_FRONTEND_FIXED = {ord(c): 4 for c in "SHXc"}
# What the server may send in a simple Query's answer: not these, which answer extended-query
# messages, FunctionCall or the startup only.
_NOT_QUERY = frozenset("123nstVRKv")
# What the server answers each extended-query message with, when it does not fail.
_ANSWERS = {"P": "1", "B": "2", "C": "3", "D": "Tn", "E": "CIs"}
# The verdicts on whether a request read after a loss on the client's side can be paired.
_WAIT, _NO, _YES = 0, 1, 2
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
    start: int = 0  # ... of its first byte
    ack: int = NO_ACK  # the acknowledgment number of the segment with its first byte
    epoch: int = 0  # how many losses on the client's side came before it
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
    ack: int = NO_ACK  # the acknowledgment number of the segment with its first byte
    acked: int | None = None  # the client offset that covers (None: not known yet)
    lost: int = 0  # bytes of it not captured
    detail: str = ""
    start: int = 0  # server stream offset of its first byte (a loss: of the bytes lost)
    end: int = 0  # ... after its last byte


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


# What a framer tells of each message when it is whole: kind, code (untyped), the body kept,
# size, first and last byte times, the stream offset after it, the acknowledgment number of the
# segment with its first byte, and how many of its bytes were not captured.
Done = Callable[[int, int, bytes, int, float, float, int, int, int], None]


class _Framer:
    """One direction's messages as they come: each header, the first bytes of each body (as
    many as `keep` says), the rest stepped over. `done` gets each message when it is whole."""

    def __init__(
        self,
        untyped: bool,
        keep: Callable[[int, int], int],
        check: Callable[[int, int, int], str | None],
        done: Done,
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
        self.ack = NO_ACK  # the acknowledgment number of the segment with its first byte
        self.lost = 0
        self.stopped: str | None = None  # why reading stopped ("": quietly, the rest encrypted)

    def feed(self, ts: float, data: bytes, ack: int) -> None:
        i, n = 0, len(data)
        while i < n and self.stopped is None:
            if self.left < 0:
                if not self.head:
                    self.ts, self.start, self.ack = ts, self.pos, ack
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
                  self.ack, lost)  # fmt: skip

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


class _Ahead:
    """Bytes read ahead after a loss that broke the framing, to find where messages start
    again: a chain of well-formed ones (`chain`: True, False, or None while it needs more bytes
    than are held). Each piece keeps the time and acknowledgment number of the segment it came
    in, so that the messages read from there carry their own segment's."""

    def __init__(
        self, types: re.Pattern[bytes], chain: Callable[[bytearray, int], bool | None]
    ) -> None:
        self.types = types  # the bytes a message may start with
        self.chain = chain
        self.buf = bytearray()
        self.pieces: deque[tuple[int, float, int]] = deque()  # (size, ts, ack) of each segment

    def add(self, ts: float, data: bytes, ack: int) -> None:
        if data:
            self.buf += data
            self.pieces.append((len(data), ts, ack))

    def find(self, final: bool) -> tuple[int, bool]:
        """Drop the bytes that cannot start a chain: (how many were dropped, whether one starts
        at the front now). `final`: no more bytes will come, so a chain that needs more is not
        one. Bounded: past RESYNC_WINDOW bytes, a start that still needs more is given up."""
        buf = self.buf
        at = 0
        found = False
        while True:
            m = self.types.search(buf, at)
            if m is None:
                at = len(buf)
                break
            at = m.start()
            verdict = self.chain(buf, at)
            if verdict:
                found = True
                break
            if verdict is None and not final and len(buf) - at < RESYNC_WINDOW:
                break
            at += 1
        self.drop(at)
        return at, found

    def drop(self, count: int) -> None:
        del self.buf[:count]
        pieces = self.pieces
        while count and pieces:
            size, ts, ack = pieces[0]
            if size > count:
                pieces[0] = (size - count, ts, ack)
                break
            pieces.popleft()
            count -= size

    def take(self) -> list[tuple[float, bytes, int]]:
        """The bytes held, as the pieces they came in (ts, bytes, ack); none are held after."""
        out: list[tuple[float, bytes, int]] = []
        at = 0
        for size, ts, ack in self.pieces:
            out.append((ts, bytes(self.buf[at : at + size]), ack))
            at += size
        self.buf.clear()
        self.pieces.clear()
        return out


def _frontend_chain(buf: bytearray, at: int) -> bool | None:
    """Does a chain of well-formed frontend messages start at `at`, strong enough that the
    middle of a message does not pass: one that ends with a Query, or with a Sync after
    extended-query messages, or RESYNC_CHAIN messages? None: it needs more bytes than `buf`
    holds. (SQL text has no NUL, and a header shorter than 16 MiB has two, so no header is found
    inside a statement; binary values can hold anything, hence the chain.)"""
    count = 0
    extended = False
    while True:
        end = _message_end(buf, at, _FRONTEND_TYPE, _FRONTEND_FIXED, _frontend_well_formed)
        if end is None or end < 0:
            return None if end is None else False
        count += 1
        k = chr(buf[at])
        if k == "Q" or (k == "S" and extended) or count >= RESYNC_CHAIN:
            return True
        extended = extended or k in "PBDCE"
        at = end


def _message_end(
    buf: bytearray,
    at: int,
    types: re.Pattern[bytes],
    fixed_lengths: dict[int, int],
    well_formed: Callable[[int, bytes], bool],
) -> int | None:
    """Where a well-formed message of one side (its `types`, the lengths some must have, and
    what their bodies must be) that starts at `at` ends; -1: none starts there; None: it needs
    more bytes than `buf` holds."""
    if at + 5 > len(buf):
        return None
    kind = buf[at]
    length = int.from_bytes(buf[at + 1 : at + 5], "big")
    if length < 4 or length > RESYNC_WINDOW or not types.fullmatch(bytes((kind,))):
        return -1
    fixed = fixed_lengths.get(kind)
    if fixed is not None and length != fixed:
        return -1
    end = at + 1 + length
    if end > len(buf):
        return None
    return end if well_formed(kind, bytes(buf[at + 5 : end])) else -1


def _frontend_well_formed(kind: int, body: bytes) -> bool:
    """Whether a frontend message's body is what its type says (used only to resynchronise)."""
    k = chr(kind)
    n = len(body)
    if k in "Qf":  # a statement (an error message), its only NUL at its end
        return n >= 1 and body.find(b"\0") == n - 1
    if k in "DC":  # S or P, a name
        return n >= 2 and body[:1] in (b"S", b"P") and body.find(b"\0") == n - 1
    if k == "E":  # a portal, a row limit
        return n >= 5 and body.find(b"\0") == n - 5
    if k == "P":  # a name, a statement, parameter types
        name = body.find(b"\0")
        sql = body.find(b"\0", name + 1) if name >= 0 else -1
        count = _int(body, sql + 1, 2) if sql >= 0 else None
        return count is not None and n == sql + 3 + 4 * count
    if k == "B":  # a portal, a statement, formats, values, result formats
        portal = body.find(b"\0")
        statement = body.find(b"\0", portal + 1) if portal >= 0 else -1
        if statement < 0:
            return False
        at = _values(body, _formats(body, statement + 1))
        return at >= 0 and _formats(body, at) == n
    if k == "F":  # a function's oid, formats, arguments, the result's format
        at = _values(body, _formats(body, 4))
        return at >= 0 and n == at + 2 and body[at:] in (b"\0\0", b"\0\1")
    return k == "d" or n == 0  # CopyData holds anything; Sync, Flush, CopyDone, Terminate nothing


def _values(body: bytes, at: int) -> int:
    """The offset after a count of values and the values (each its size, -1 for NULL, and its
    bytes) at `at`; -1 if they are not that, or if `at` is -1."""
    count = _int(body, at, 2) if at >= 0 else None
    if count is None:
        return -1
    at += 2
    for _ in range(count):
        size = _int(body, at, 4, signed=True)
        if size is None or size < -1:
            return -1
        at += 4 + max(size, 0)
    return at


def _formats(body: bytes, at: int) -> int:
    """The offset after a count of format codes and the codes (each 0 or 1) at `at`; -1 if
    they are not that."""
    count = _int(body, at, 2)
    if count is None or at + 2 + 2 * count > len(body):
        return -1
    codes = body[at + 2 : at + 2 + 2 * count]
    if any(codes[i] or codes[i + 1] > 1 for i in range(0, len(codes), 2)):
        return -1
    return at + 2 + 2 * count


def _plausible(buf: bytearray, at: int) -> bool | None:
    """Does a chain of well-formed backend messages start at `at` (RESYNC_CHAIN of them, or
    fewer up to a ReadyForQuery)? None: it needs more bytes than `buf` holds."""
    count = 0
    while True:
        end = _message_end(buf, at, _BACKEND_TYPE, _FIXED, _well_formed)
        if end is None or end < 0:
            return None if end is None else False
        count += 1
        if buf[at] == 0x5A or count >= RESYNC_CHAIN:
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
    if k == "A":  # a backend pid, a channel, a payload
        return n >= 6 and body[4:].count(b"\0") == 2 and body[-1] == 0
    return k in "dV123nIcsv"


class _ServerReader:
    """The server's messages: its one-byte answers to SSLRequest/GSSENCRequest first, then
    typed messages; after a loss that broke the framing, reads ahead to where it holds again."""

    def __init__(self, done: Done, answer: Callable[[int, float], None]) -> None:
        self.framer = _Framer(False, self._keep, self._check, done)
        self.answer = answer
        self.answers = True  # at the start: one-byte answers may come
        self.ahead: _Ahead | None = None  # bytes read ahead after a loss

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

    def feed(self, ts: float, data: bytes, ack: int) -> None:
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
        if self.ahead is not None:
            self.ahead.add(ts, data, ack)
            self.resume(False)
            return
        framer.feed(ts, data, ack)

    def lose(self) -> None:
        """Read ahead from here to where messages start again (the capture began inside the
        connection: the server's first bytes may be anywhere in a message)."""
        self.answers = False
        if self.framer.stopped is None and self.ahead is None:
            self.ahead = _Ahead(_BACKEND_TYPE, _plausible)

    def resume(self, final: bool) -> None:
        """Read again from where a chain of messages starts in the bytes read ahead, if one
        does (final: no more bytes will come)."""
        ahead = self.ahead
        if ahead is None:
            return
        dropped, found = ahead.find(final)
        self.framer.pos += dropped
        if found:
            self.ahead = None
            for ts, piece, ack in ahead.take():
                self.framer.feed(ts, piece, ack)

    def gap(self, ts: float, size: int) -> bool:
        """Bytes not captured; False when the framing is lost (reading ahead begins)."""
        framer = self.framer
        if framer.stopped is not None:
            return True
        if self.ahead is not None:
            framer.pos += len(self.ahead.buf) + size
            self.ahead.take()
            return False
        self.answers = False
        if framer.gap(ts, size):
            return True
        self.ahead = _Ahead(_BACKEND_TYPE, _plausible)
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
        self.client_done: str | None = None  # why no more requests come
        self.client_upto: int | None = None  # before which offset the requests in steps were read
        self.server_done: str | None = None
        self.terminate = NO_ACK  # the acknowledgment number Terminate's segment carried
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
        self.loss_unit: _Unit | None = None  # (the loss they are held after)
        # After a loss on the client's side, or a start the capture did not see (see the
        # module): adrift, the requests read since wait in `later` until one is paired for
        # certain; the server's messages wait in `units` (those before it are said alone).
        self.client_ahead: _Ahead | None = None  # the client's bytes read ahead after a loss
        self.midstream = False  # the capture began inside the connection
        self.marker: _Unit | None = None  # (then) the loss that stands for that start
        self.adrift = False
        self.epoch = 0  # losses on the client's side so far
        self.epoch_end: dict[int, int] = {}  # where the client's reading of each one stopped
        self.later: deque[_Step] = deque()
        self.prev: _Unit | None = None  # the last server message taken off `units` (not A)
        self.span: int | None = None  # where the server's stream was read on from up to `units`
        self.stray: list[_Unit] = []  # the answer said without its request, as far as it has come
        self.refuted = False  # a request read adrift was said without its answer

    # --- the stream consumer --------------------------------------------------------------

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.encrypted:
            return
        if from_client:
            if self.client_done is None:
                ahead = self.client_ahead
                if ahead is None:
                    self.client.feed(ts, data, ack)
                else:
                    ahead.add(ts, data, ack)
                    self._client_resume(False)
                if self.client.stopped is not None:
                    self._client_stop(self.client.stopped, upto=self.client.start)
        else:
            self.server.feed(ts, data, ack)
            if self.server.stopped and self.server_done is None:
                self.server_done = self.server.stopped
        self._pair()

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        if self.encrypted:
            return
        if size == 0 and reason == MIDSTREAM:
            self._midstream(ts)
            return
        self.lost[from_client] += size
        why = f"{size:,} {'client' if from_client else 'server'} bytes were not captured"
        why += f" ({reason})" if reason else ""
        if from_client:
            if self.client_done is None:
                self._client_gap(ts, offset, size)
        elif self.server_done is None and not self.server.gap(ts, size):
            self.units.append(_Unit(LOSS, ts, ts, size, why, start=offset, end=offset + size))
        self._pair()

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        if from_client:
            self._client_resume(True)
            self._client_stop("")
        else:
            self.server.resume(True)
            if self.server_done is None:
                self.server_done = ""
        self._pair()

    def on_close(self, conn: Connection, ts: float) -> None:
        self._client_resume(True)
        self._client_stop("")
        self.server.resume(True)
        if self.server_done is None:
            self.server_done = ""
        if self.encrypted:
            return
        why = self._why_unanswered()
        while True:
            self._pair()
            if self.encrypted:
                return
            if self.unsynced:
                self._drop_run()
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
            self.failed = False
            if not (self.adrift and self.later):
                break  # (else the requests read after a loss on the client's side are settled)
        self._flush_stray()
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

    def _client_stop(self, why: str, upto: int | None = None) -> None:
        """No more requests will be read: why ("" the client's side ended); upto: the client
        offset before which every request was read, when it stopped short of its end."""
        if self.client_done is not None:
            return
        self.client_done = why
        if not self.adrift:
            self.client_upto = upto
        self.client_ahead = None
        self._queue_open()
        for target in (self.copy_target, self.auth_target):
            if target is not None:
                target.finished = True

    def _midstream(self, ts: float) -> None:
        """The capture began inside the connection: no startup comes, and both sides are read
        as after a loss (the client's from where requests start again, the server's from where
        its messages do), until the acknowledgments pair a request for certain."""
        if self.midstream:
            return  # (each side says so)
        self.midstream = True
        self.adrift = True
        self.client.untyped = False
        self.client_ahead = _Ahead(_FRONTEND_TYPE, _frontend_chain)
        self.server.lose()
        self.marker = _Unit(LOSS, ts, ts, 0, MIDSTREAM)
        self.units.append(self.marker)

    def _client_gap(self, ts: float, offset: int, size: int) -> None:
        ahead = self.client_ahead
        if ahead is not None:  # still reading ahead after a loss: nothing was read since
            self.client.pos = offset + size
            ahead.take()
            return
        if not self.client.gap(ts, size):
            self._client_lose(offset)

    def _client_lose(self, offset: int) -> None:
        """Client bytes from `offset` were not captured and the framing is lost. The requests
        read before are answered first, in order; those read after the bytes are read again
        wait, adrift, for the acknowledgments to pair one for certain (see the module)."""
        self._queue_open()
        for target in (self.copy_target, self.auth_target):
            if target is not None:
                target.finished = True
        self.copy_target = self.auth_target = None
        # The lost bytes may have prepared the unnamed statement and portal again.
        self.statements.pop("", None)
        self.portals.pop("", None)
        if not self.adrift:
            self.client_upto = offset
        self.epoch_end[self.epoch] = offset
        self.epoch += 1
        self.adrift = True
        self.client.untyped = False
        self.client_ahead = _Ahead(_FRONTEND_TYPE, _frontend_chain)

    def _client_resume(self, final: bool) -> None:
        """Read the client's side again from where requests start in what was read ahead, if
        they do (final: no more bytes will come)."""
        ahead = self.client_ahead
        if ahead is None or self.client_done is not None:
            return
        dropped, found = ahead.find(final)
        self.client.pos += dropped
        if found:
            self.client_ahead = None
            for ts, piece, ack in ahead.take():
                if self.client_done is None:
                    self.client.feed(ts, piece, ack)

    def _unseen_where(self) -> str:
        """Where a statement or portal used but not seen was made."""
        if self.lost[True] and not self.midstream:
            return "in client bytes that were not captured"
        return "before the capture began"

    def _client_message(
        self, kind: int, code: int, body: bytes, size: int, ts: float, end_ts: float, end: int,
        ack: int, lost: int,
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
            self._typed(chr(kind), body, message, end, ack, note)

    def _typed(self, k: str, body: bytes, message: Message, end: int, ack: int, note: str) -> None:
        size = message.size
        if k not in "SH":
            for target in (self.copy_target, self.auth_target):
                if target is not None:
                    target.finished = True
        if k == "Q":
            self._queue_open()
            step = _Step(QUERY, message, _sql(body.split(b"\0", 1)[0], size - 5 > len(body)))
            step.start, step.ack = end - size, ack
            if note:
                _note(step.notes, note)
            self._queue(step, end, end, seq=True)
            self.copy_target = step
        elif k == "F":
            self._queue_open()
            oid = _int(body, 0, 4)
            step = _Step(CALL, message, f"function call (oid {oid})")
            step.start, step.ack = end - size, ack
            if note:
                _note(step.notes, note)
            self._queue(step, end, end, seq=True)
        elif k in "PBDCESH":
            self._extended(k, body, message, end, ack, note)
        elif k == "X":
            self.terminate = ack
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

    def _extended(
        self, k: str, body: bytes, message: Message, end: int, ack: int, note: str
    ) -> None:
        size = message.size
        step = self.open
        if step is None:
            step = self.open = _Step(EXTENDED, Message(message.ts, message.end_ts, 0))
            step.first_end, step.start, step.ack = end, end - size, ack
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
                    _note(step.notes, f"its statement was prepared {self._unseen_where()}")
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
                _note(step.notes, f"its portal was bound {self._unseen_where()}")
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
        if len(self.steps) + len(self.later) >= MAX_PENDING:
            why = f"more than {MAX_PENDING:,} requests waited for their answers"
            self._client_stop(why, upto=self.steps[-1].end if self.steps else 0)
            return
        step.first_end, step.end = first_end, end
        step.batch = self.seqs + 1
        step.epoch = self.epoch
        if seq:
            self.seqs += 1
            step.seq = self.seqs
        (self.later if self.adrift else self.steps).append(step)

    # --- the server's side ---------------------------------------------------------------

    def _answer(self, byte: int, ts: float) -> None:
        self.units.append(_Unit(NO if byte == ord("N") else YES, ts, ts, 1, chr(byte)))

    def _server_message(
        self, kind: int, code: int, body: bytes, size: int, ts: float, end_ts: float, end: int,
        ack: int, lost: int,
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
                last.end = end
                return
        if len(units) >= MAX_UNITS:
            if self.server_done is None:
                self.server_done = (
                    f"more than {MAX_UNITS:,} server messages waited for their requests"
                )
                self.server.framer.stopped = self.server_done
            return
        unit = _Unit(k, ts, end_ts, size, ack=ack, lost=lost, count=1, start=end - size, end=end)
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

    def _client_acked(self, step: _Step) -> int | None:
        """The server offset the segment with a request's first byte acknowledged (None: not
        known, or not yet: the capture may show the server's first bytes later)."""
        return None if step.ack == NO_ACK else self.conn.peer_offset(True, step.ack)

    def _server_acked(self, unit: _Unit) -> int | None:
        """The client offset the segment with a server message's first byte acknowledged
        (None: not known, or not yet). Kept once known: a stream's start does not move."""
        if unit.acked is None and unit.ack != NO_ACK:
            unit.acked = self.conn.peer_offset(False, unit.ack)
        return unit.acked

    def _pair(self) -> None:
        units = self.units
        while True:
            if self.encrypted:
                units.clear()
                self.steps.clear()
                self.later.clear()
                return
            if not self._advance():
                return
            if self.adrift and not self.steps:
                if not self._drift():
                    return
                continue
            if not units:
                return
            unit = units[0]
            if unit.kind == "A":
                self._took(units.popleft())
                self._tx(None, self._reply_of([unit]), True, ["a notification (LISTEN/NOTIFY)"])
                continue
            if unit.kind == LOSS:
                self._took(units.popleft())
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
            acked = self._server_acked(unit)
            self._took(units.popleft())
            if (
                unit.kind in "NE"
                and self.reply is None
                and self.sub == 0
                and head.kind != UNSEEN
                and acked is not None
                and acked < head.first_end
            ):
                note = (
                    "sent before the server had received the next request: no request was waiting"
                )
                self._tx(None, self._reply_of([unit]), True, [note])
                continue
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
        self.loss_unit = unit
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
        acked = self._server_acked(unit)
        if (
            acked is not None
            and self.client_done is None
            and not self.adrift
            and self.client.pos < acked
        ):
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

    # --- after a loss on the client's side, or a start the capture did not see ----------------

    def _drift(self) -> bool:
        """Adrift, with every request read before the loss settled: say the server's messages
        that cannot be the answer to a request read since without it, and those requests that
        cannot be paired for certain without theirs, in order, until one can be (see the
        module). True when one was: the pairing goes on by order from it."""
        self._flush_skipped()
        self.failed, self.skip_note = False, ""
        if self.unsynced:
            self._unhold()
        later = self.later
        while True:
            units = self.units
            # A notification answers no request: it is said as it comes (and a loss before it
            # taken off, when that does not end an answer said so far).
            while units and (units[0].kind == "A" or (units[0].kind == LOSS and not self.stray)):
                self._stray(units.popleft())
            if not later:
                if self.client_done is None:
                    return False  # (where the next request's answer starts is not known yet)
                while units:
                    self._stray(units.popleft())
                if self.server_done is not None:
                    self._flush_stray()
                return False
            verdict = self._verdict()
            if verdict == _WAIT:
                return False
            if verdict == _NO:
                note = (
                    f"{self._drift_cause()}: which answer is its own could not be told for certain"
                )
                for step in self._batch(pop=True):
                    if _deserves(step):
                        self._tx(step, None, False, [note])
                self.refuted = True
                continue
            self._flush_stray()
            head = later[0]
            while later and later[0].epoch == head.epoch:
                self.steps.append(later.popleft())
            self.matched = head.batch - 1
            self.reply, self.sub = None, 0
            self.adrift = head.epoch != self.epoch
            self.client_upto = self.epoch_end.get(head.epoch)
            for epoch in [e for e in self.epoch_end if e < head.epoch]:
                del self.epoch_end[epoch]
            return True

    def _batch(self, pop: bool = False) -> list[_Step]:
        """The requests of the batch the first one read adrift opens: up to the Query or Sync
        that ends it (fewer when the client's side ended or lost bytes first); `pop`: take them
        off."""
        later = self.later
        epoch = later[0].epoch
        batch: list[_Step] = []
        while len(batch) < len(later):
            step = later[len(batch)]
            if step.epoch != epoch:
                break
            batch.append(step)
            if step.seq:
                break
        if pop:
            for _ in batch:
                later.popleft()
        return batch

    def _verdict(self) -> int:
        """Whether the batch the first request read adrift opens can be paired for certain:
        _YES, _NO, or _WAIT for more of either side. The server's messages before where its
        answer may start are said without their request meanwhile (see the module)."""
        later = self.later
        head = later[0]
        batch = self._batch()
        last = batch[-1]
        nxt = later[len(batch)] if len(batch) < len(later) else None
        # 1. Its client had the server's stream up to `at`: a message starts there, and the
        # one before, if read, ends an answer that the server sent once it had every client
        # byte before this request (so the client was not waiting for another answer). Nothing
        # to look at when the capture began right there.
        at = self._client_acked(head)
        if at is None:
            gone = head.ack == NO_ACK or self.server_done is not None
            return _NO if gone else _WAIT
        units = self.units
        while units and (units[0].end <= at or units[0].kind == "A"):
            self._stray(units.popleft())
        if not units and self.server_done is None:
            # (Nothing is said of it before the server's stream is read past `at`, and the
            # notifications there before it: the same whichever side the capture showed first.)
            return _WAIT
        prev = self.prev
        if not last.seq:
            # Not ended by a Query or Sync: lost bytes or the client's end cut it.
            return _NO if nxt is not None or self.client_done is not None else _WAIT
        if not units or (prev is not None and prev.end > at):
            return _NO  # (the second: sent before the client had the answers before it)
        first = units[0]
        if first.start < at or (first.start > at and (self.span is None or self.span > at)):
            return _NO  # `at` is inside a message, or in bytes that were not read
        if prev is None or prev.kind == LOSS:
            if prev is None or prev is not self.marker or self.refuted:
                return _NO
        else:
            prev_acked = self._server_acked(prev)
            if prev.kind != "Z" or prev_acked is None or prev_acked < head.start:
                return _NO
        # 2. Its answer starts there: sent once the server had its first message, and made of
        # what answers its messages, up to the ReadyForQuery of its batch.
        held = list(units)
        first_acked = self._server_acked(first)
        if first.kind == LOSS or first_acked is None or first_acked < head.first_end:
            return _NO
        letters = "".join(
            "Q" if s.kind == QUERY else "F" if s.kind == CALL else s.subs for s in batch
        )
        z = _fits(letters, held, 0)
        if z == -2:
            return _NO if self.server_done is not None else _WAIT
        if z < 0:
            return _NO
        # 3. The client's next message says it had waited for that answer: sent once it had
        # all of it, before anything after it came (and, a request, answered after it came).
        # Without one, an answer to a request lost or sent before the capture began that the
        # server sent once it had this one too could not be told from its own.
        if nxt is not None:
            then = self._client_acked(nxt)
        elif self.terminate != NO_ACK:
            then = self.conn.peer_offset(True, self.terminate)
        elif self.client_done is not None:
            return _NO
        else:
            return _WAIT
        end = held[z].end
        if then is None or then < end:
            return _NO
        y = z + 1
        while y < len(held) and held[y].kind == "A":
            end = held[y].end
            y += 1
        if y < len(held):
            after = held[y]
            if after.start < then:
                return _NO
            if nxt is not None and after.kind != LOSS:
                after_acked = self._server_acked(after)
                if after_acked is None or after_acked < nxt.first_end:
                    return _NO
            return _YES
        if self.server_done is None:
            return _WAIT
        return _YES if then <= end else _NO

    def _drift_cause(self) -> str:
        later = self.later
        epoch = later[0].epoch if later else self.epoch
        if self.midstream and epoch == 0:
            return MIDSTREAM
        return "client bytes were not captured before it"

    def _took(self, unit: _Unit) -> None:
        """A server message is taken off `units` (paired, or said without its request): what a
        request read adrift is sent after is told by the last one (not a notification, which
        answers nothing) and by where the stream was read on from without a loss."""
        if unit.kind == LOSS:
            self.prev, self.span = unit, None
            return
        if self.span is None:
            self.span = unit.start
        if unit.kind != "A":
            self.prev = unit

    def _stray(self, unit: _Unit) -> None:
        """A server message read adrift that answers none of the requests read since (or none
        that can be told for certain): part of an answer said without its request."""
        self._took(unit)
        if unit.kind == "A":
            self._tx(None, self._reply_of([unit]), True, ["a notification (LISTEN/NOTIFY)"])
            return
        if unit.kind == LOSS:
            self._flush_stray()
            return
        self.stray.append(unit)
        if unit.kind == "Z" or len(self.stray) >= MAX_HELD:
            self._flush_stray()

    def _flush_stray(self) -> None:
        stray = self.stray
        if stray:
            note = f"{self._drift_cause()}: its request could not be told for certain"
            self._tx(None, self._reply_of(stray), stray[-1].kind == "Z", [note])
            self.stray = []

    def _unhold(self) -> None:
        """Adrift, with the answers held after a loss on the server's side: every request they
        could have answered is settled, so they go back to be read as the drift reads them."""
        back: list[_Unit] = [] if self.loss_unit is None else [self.loss_unit]
        for _, group in self.run:
            back += group
        back += self.group
        self.units.extendleft(reversed(back))
        self.run, self.group, self.held, self.zs, self.hi = [], [], 0, 0, None
        self.unsynced = self.partial = self.dropped = False

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


def _fits(letters: str, units: list[_Unit], at: int) -> int:
    """Whether the server's messages from units[at] can be the answer to a batch of these
    client messages (Q, F, or the extended P B D C E H S), up to its ReadyForQuery: the index
    of that ReadyForQuery, -1 if they cannot be, -2 while more are needed. Notices,
    ParameterStatus and notifications may come anywhere; an error skips to the Sync."""
    n = len(units)
    failed = False
    i = at
    for letter in letters:
        if letter == "H" or (failed and letter != "S"):
            continue
        i = _skip_async(units, i)
        if i >= n:
            return -2
        k = units[i].kind
        if len(k) > 1:
            return -1  # a loss, or a one-byte answer to SSLRequest
        if letter == "Q":  # statements: anything but what answers extended messages
            while k != "Z":
                if len(k) > 1 or k in _NOT_QUERY:
                    return -1
                i = _skip_async(units, i + 1)
                if i >= n:
                    return -2
                k = units[i].kind
            return i
        if letter in "FS":  # a function's result, or (at Sync) an error of the commit
            if (letter == "F" and k == "V") or (k == "E" and not failed):
                i = _skip_async(units, i + 1)
                if i >= n:
                    return -2
                k = units[i].kind
            return i if k == "Z" else -1
        if letter == "D" and k == "t":  # a statement's parameters, then its row
            i = _skip_async(units, i + 1)
            if i >= n:
                return -2
            k = units[i].kind
        if letter == "E":
            while k in ("D", "d", "H", "G", "W", "c"):  # rows, COPY
                i = _skip_async(units, i + 1)
                if i >= n:
                    return -2
                k = units[i].kind
        if k == "E":
            failed = True
        elif len(k) > 1 or k not in _ANSWERS.get(letter, ""):
            return -1
        i += 1
    return -1  # (a batch ends with a Query, a FunctionCall or a Sync)


def _skip_async(units: list[_Unit], i: int) -> int:
    while i < len(units) and units[i].kind in ("N", "S", "A"):
        i += 1
    return i


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
