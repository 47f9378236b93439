"""Redis transactions: commands and their replies, read from RESP2 and RESP3 streams.

A stream consumer (`engine.tcp.StreamConsumer`) for connections the sniffer found speaking RESP
(`command_start`: the client's first bytes are an array of bulk strings). Each direction's
bytes are read as they come by a small state machine that never holds a value whole: bulk
strings are stepped over, keeping their first bytes for the summary, so a 512 MB value costs
what a short one does.

Commands and replies pair by their order on each side (Redis answers in order, pipelined or
not), so the pairing does not depend on how the capture interleaved the two directions. Replies
that answer nothing are their own transactions with no request: RESP3 pushes (`>`), pub/sub
messages (`message`, `pmessage`, `smessage`), and the extra confirmations of a SUBSCRIBE to
several channels are folded into that command's transaction.

After bytes never seen (or bytes that are not RESP) a side reads on from the next message it can
find: the client's next command at the start of a line; the server's next reply where a later
command's first byte acknowledged the server's stream (a client that sent it had every reply
before it). The commands and replies read meanwhile are said without their pair (their notes say
why) until the acknowledgments pair one for certain (`RedisParser`); then order pairs again.
A connection the capture joined after its start (`engine.tcp.MIDSTREAM`) is read the same way
from the first command and reply found. The acknowledgments are certain for a client that waits
for each reply, or for each pipelined batch (redis-benchmark -P, a MULTI block); a client that
keeps sending while replies to commands in the lost bytes are still coming could be paired one
off, as nothing counts the commands those bytes held.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.events import Event, Message, Transaction
from engine.reassembly import NO_ACK
from engine.tcp import MIDSTREAM

if TYPE_CHECKING:
    from engine.tcp import Connection

PROTOCOL = "redis"
MAX_LINE = 64 * 1024  # a longer line (a type, a length, a simple string) is not RESP
MAX_DEPTH = 64  # nested aggregates
MAX_PENDING = 10_000  # commands waiting for their replies
KEEP = 64  # characters of each part kept for a summary
PARTS = 4  # parts of a command or reply kept for its summary
_SCALARS = b"+-:,#(_"
_BULKS = b"$!="
_AGGREGATES = b"*%~>|"
# A finished message: message, type byte, parts, error, stream offsets of its first byte and
# past its last, and the acknowledgment number its first byte carried (NO_ACK: none).
Done = Callable[[Message, bytes, list[str], bool, int, int, int], None]
_PUBSUB = frozenset({"message", "pmessage", "smessage"})
_SUBSCRIBES = frozenset({"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"})
# A Redis client's command: an array of bulk strings (RESP), as every client library sends it.
_COMMAND = re.compile(rb"\*[1-9][0-9]{0,5}\r\n\$[0-9]{1,9}\r\n")
_COMMAND_START = re.compile(rb"\*(?:[1-9][0-9]{0,5}(?:\r(?:\n(?:\$(?:[0-9]{1,9}\r?)?)?)?)?)?")


def command_start(prefix: bytes) -> bool | None:
    """Whether a client's first bytes are a Redis command (None: too few to tell)."""
    if prefix[:1] != b"*":
        return False
    if _COMMAND.match(prefix):
        return True
    return None if _COMMAND_START.fullmatch(prefix) else False


class _Reader:
    """One direction's RESP values, read incrementally (see the module).

    After bytes that were not captured (or bytes that are not RESP) it is `lost`: the client's
    reader looks for the next command (an array of bulk strings at the start of a line); the
    server's holds what comes (at most `HOLD` bytes) until the parser tells it where a reply
    starts (`resume_at`)."""

    HOLD = 1024 * 1024

    def __init__(self, client: bool) -> None:
        self.client = client
        self.buf = bytearray()
        self.base = 0  # the stream offset of buf[0]
        self.start = 0  # the stream offset of the message being read
        self.start_ack = NO_ACK  # the acknowledgment number its first byte carried
        self.stack: list[int] = []  # elements left in each open aggregate
        self.bulk_left = 0  # bytes left of a bulk string, its CRLF included
        self.bulk_keep = bytearray()
        self.bulk_keep_len = 0  # how much of bulk_keep is the string (not its CRLF)
        self.message: Message | None = None
        self.kind = b""  # the type byte of the message's top-level value
        self.parts: list[str] = []
        self.error = False  # the top-level value is an error
        self.lost = False
        self.held: deque[tuple[int, int]] = deque()  # lost: each held segment's offset, ack

    def feed(self, ts: float, offset: int, data: bytes, ack: int, done: Done) -> None:
        if not self.buf:
            self.base = offset
        self.buf += data
        if self.lost:
            if not self.client:
                held = self.held
                held.append((offset, ack))
                if len(self.buf) > self.HOLD:
                    cut = len(self.buf) - self.HOLD
                    del self.buf[:cut]
                    self.base += cut
                while len(held) > 1 and held[1][0] <= self.base:
                    held.popleft()
                return
            if not self._find_command():
                return
        self._read(ts, ack, done)

    def _read(self, ts: float, ack: int, done: Done) -> None:
        buf = self.buf
        message = self.message
        while True:
            if message is None and not buf:
                return
            if message is None:
                message = self.message = Message(ts, ts, 0)
                self.start = self.base
                self.start_ack = ack
            if self.bulk_left:
                take = min(self.bulk_left, len(buf))
                room = min(take, KEEP + 2 - len(self.bulk_keep))
                if room > 0:
                    self.bulk_keep += buf[:room]
                del buf[:take]
                self.base += take
                self.bulk_left -= take
                message.size += take
                if self.bulk_left:
                    message.end_ts = ts
                    return
                text = bytes(self.bulk_keep[: self.bulk_keep_len]).decode("latin-1")
                self.bulk_keep.clear()
                if self._element(text):
                    self._finish(ts, done)
                    message = None
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_LINE:
                    self.lose()
                else:
                    message.end_ts = ts
                return
            line = bytes(buf[:end])
            del buf[: end + 2]
            self.base += end + 2
            message.size += end + 2
            message.end_ts = ts
            if self._line(line):
                self._finish(ts, done)
                message = None
            elif self.lost:
                if self.client and self._find_command():
                    message = None
                    continue
                return

    def _find_command(self) -> bool:
        """Drop bytes up to the next command at the start of a line; whether there is one."""
        buf = self.buf
        at = next(
            (
                found.start()
                for found in _COMMAND.finditer(bytes(buf))
                if found.start() == 0 or buf[found.start() - 2 : found.start()] == b"\r\n"
            ),
            -1,
        )
        if at >= 0:
            del buf[:at]
            self.base += at
            self.lost = False
            return True
        keep = min(len(buf), 64)  # (a command's start may be cut at the end)
        self.base += len(buf) - keep
        del buf[: len(buf) - keep]
        return False

    def resume_at(self, offset: int, ts: float, done: Done) -> bool:
        """A lost server side: read again from the stream offset `offset` (a reply starts there)
        if it holds that byte; whether it does."""
        if not self.lost or not self.base <= offset < self.base + len(self.buf):
            return False
        ack = NO_ACK  # that of the segment the offset is in
        for start, segment_ack in self.held:
            if start > offset:
                break
            ack = segment_ack
        self.held.clear()
        del self.buf[: offset - self.base]
        self.base = offset
        self.lost = False
        self._read(ts, ack, done)
        return True

    def _line(self, line: bytes) -> bool:
        """Read one line; True when it completes the top-level value."""
        kind = line[:1]
        top = not self.stack
        if top and not self.parts:
            self.kind = kind
        if self.client and top and not self.parts and kind != b"*":
            self.parts = [w.decode("latin-1")[:KEEP] for w in line.split()[:PARTS]]  # inline
            return True
        if kind and kind in _SCALARS:
            text = line[1:].decode("latin-1")
            if kind == b"-" and top:
                self.error = True
            return self._element("(nil)" if kind == b"_" else text)
        try:
            n = int(line[1:])
        except ValueError:
            self.lose()
            return False
        if kind and kind in _BULKS:
            if n < 0:
                return self._element("(nil)")
            if kind == b"!" and top:
                self.error = True
            self.bulk_left = n + 2
            self.bulk_keep_len = min(n, KEEP)
            return False
        if kind and kind in _AGGREGATES:
            count = n * 2 if kind in b"%|" else n
            if kind == b"|":
                count += 1  # the attributes, then the value they are about
            if count <= 0:
                return self._element("(nil)" if n < 0 else "(empty)")
            if len(self.stack) >= MAX_DEPTH:
                self.lose()
                return False
            self.stack.append(count)
            return False
        self.lose()
        return False

    def _element(self, text: str) -> bool:
        """A value ends; True when that completes the top-level value."""
        if len(self.parts) < PARTS:
            self.parts.append(text[:KEEP])
        stack = self.stack
        while stack:
            stack[-1] -= 1
            if stack[-1] > 0:
                return False
            stack.pop()
        return True

    def _finish(self, ts: float, done: Done) -> None:
        message = self.message
        assert message is not None
        message.end_ts = ts
        done(message, self.kind, self.parts, self.error, self.start, self.base, self.start_ack)
        self._reset()

    def _reset(self) -> None:
        self.message = None
        self.parts = []
        self.kind = b""
        self.error = False
        self.stack.clear()
        self.bulk_left = 0
        self.bulk_keep.clear()

    def lose(self) -> None:
        """Bytes were not captured, or are not RESP: what is being read is lost, and reading
        starts again where the next message can be found."""
        self._reset()
        self.lost = True
        self.held.clear()


def _command_summary(parts: list[str]) -> tuple[str, str]:
    name = parts[0].upper() if parts else ""
    return name, " ".join([name, *parts[1:]])


def _reply_summary(kind: bytes, parts: list[str]) -> str:
    if kind in (b"*", b"~", b">", b"%"):
        shown = " ".join(parts[:PARTS])
        return f"[{shown}]" if parts else "[]"
    if kind == b":":
        return f"(integer) {parts[0]}" if parts else ":"
    return parts[0] if parts else ""


class _Command:
    __slots__ = ("ack", "again", "end", "expect", "made", "message", "start", "summary")

    def __init__(self, message: Message, summary: str, expect: int, start: int, end: int,
                 ack: int) -> None:  # fmt: skip
        self.message = message
        self.summary = summary
        self.expect = expect  # replies still expected (a SUBSCRIBE: one a channel)
        self.made = False  # its transaction was made (a SUBSCRIBE's first confirmation makes it)
        self.start = start
        self.end = end  # stream offsets
        self.ack = ack  # the acknowledgment number its first byte carried (NO_ACK: none)
        self.again = False  # paired by the acknowledgments after lost bytes


class _Reply:
    __slots__ = ("ack", "error", "message", "push", "start", "summary")

    def __init__(self, message: Message, summary: str, error: bool, push: bool, start: int,
                 ack: int) -> None:  # fmt: skip
        self.message = message
        self.summary = summary
        self.error = error
        self.push = push
        self.start = start
        self.ack = ack  # the acknowledgment number its first byte carried (NO_ACK: none)


class RedisParser:
    """Pairs a connection's commands and replies into `Transaction` events (see the module).

    After bytes that were not captured (on either side) the order no longer tells which reply
    answers which command: the commands and replies read meanwhile are said without their pair,
    until the acknowledgments pair one for certain: a command whose first byte acknowledged the
    server's stream up to where a reply starts (its client had every earlier reply), and that
    reply acknowledging the command's last byte. From there they pair by order again.
    """

    def __init__(self, conn: Connection, emit: Callable[[Event], None]) -> None:
        self.conn = conn
        self.emit = emit
        self.readers = {True: _Reader(True), False: _Reader(False)}
        self.commands: deque[_Command] = deque()
        self.replies: deque[_Reply] = deque()
        self.index = 0
        self.lost: dict[bool, bool] = {True: False, False: False}
        self.resync = False  # pairing waits for the acknowledgments (see the class)
        self.midstream = False  # the capture began inside the connection
        self.ts = 0.0

    # --- the stream consumer --------------------------------------------------------------

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        self.ts = ts
        reader = self.readers[from_client]
        was_lost = reader.lost
        reader.feed(ts, offset, data, ack, self._command if from_client else self._reply)
        if reader.lost and not was_lost:
            self._lose(from_client)
        if self.readers[False].lost:
            self._resume()
        self._pair()

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        self.readers[from_client].lose()
        self.readers[from_client].buf.clear()
        if size == 0 and reason == MIDSTREAM:
            self.midstream = True  # (not a loss: the notes say the capture began later)
            self.resync = True
            return
        self._lose(from_client)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float) -> None:
        self._pair()
        self._flush_commands(self._why_unanswered())
        self._flush_replies()

    # --- pairing ------------------------------------------------------------------------------

    def _command(self, message: Message, kind: bytes, parts: list[str], error: bool, start: int,
                 end: int, ack: int) -> None:  # fmt: skip
        name, summary = _command_summary(parts)
        expect = max(1, len(parts) - 1) if name in _SUBSCRIBES else 1
        commands = self.commands
        if len(commands) >= MAX_PENDING:
            old = commands.popleft()
            if not old.made:
                note = f"more than {MAX_PENDING:,} commands waited for their replies"
                self._emit(old.message, old.summary, None, None, False, (note,))
        commands.append(_Command(message, summary, expect, start, end, ack))

    def _reply(self, message: Message, kind: bytes, parts: list[str], error: bool, start: int,
               end: int, ack: int) -> None:  # fmt: skip
        push = kind == b">" or (kind == b"*" and bool(parts) and parts[0].lower() in _PUBSUB)
        replies = self.replies
        if len(replies) >= MAX_PENDING:
            old = replies.popleft()
            self._emit(None, "", old.message, old.summary, old.error, (self._why_unasked(),),
                       push=True)  # fmt: skip
        replies.append(_Reply(message, _reply_summary(kind, parts), error, push, start, ack))

    def _lose(self, from_client: bool) -> None:
        """One side's bytes were lost (or were not RESP): what waits cannot be paired by order
        any more, only by the acknowledgments (see the class)."""
        self.lost[from_client] = True
        self._pair()
        self.resync = True

    def _resume(self) -> None:
        """The server's side is lost: read it again from where a waiting command's first byte
        acknowledged it (its client had all before: a reply starts there), if that has come."""
        server = self.readers[False]
        for command in self.commands:
            at = self._acked(True, command.ack)
            if at is not None and at >= server.base and server.resume_at(at, self.ts, self._reply):
                return

    def _acked(self, from_client: bool, ack: int) -> int | None:
        """The other side's stream offset an acknowledgment number covers (None: not known,
        or not yet: the capture may show that side's start later)."""
        return None if ack == NO_ACK else self.conn.peer_offset(from_client, ack)

    def _flush_commands(self, why: str) -> None:
        for command in self.commands:
            if not command.made:
                self._emit(command.message, command.summary, None, None, False, (why,))
        self.commands.clear()

    def _flush_replies(self) -> None:
        for reply in self.replies:
            notes = ("a push from the server",) if reply.push else (self._why_unasked(),)
            self._emit(None, "", reply.message, reply.summary, reply.error, notes, push=True)
        self.replies.clear()

    def _pair(self) -> None:
        if self.resync and not self._find_pair():
            return
        commands, replies = self.commands, self.replies
        while replies:
            reply = replies[0]
            if reply.push:
                replies.popleft()
                self._emit(None, "", reply.message, reply.summary, reply.error,
                           ("a push from the server",), push=True)  # fmt: skip
                continue
            if not commands:
                return
            replies.popleft()
            command = commands[0]
            if command.expect > 1:  # a SUBSCRIBE to several channels: a confirmation for each
                command.expect -= 1
                made, command.made = command.made, True
            else:
                commands.popleft()
                made = command.made
            if not made:
                notes: tuple[str, ...] = ()
                if command.again and (self.lost[True] or self.lost[False]):
                    notes = ("paired again after lost bytes, by the acknowledgments",)
                elif command.again:
                    notes = (f"{MIDSTREAM}: paired by the acknowledgments",)
                self._emit(command.message, command.summary, reply.message, reply.summary,
                           reply.error, notes)  # fmt: skip

    def _find_pair(self) -> bool:
        """Resynchronising: a command and a reply that the acknowledgments pair (see the
        class); those before them are said unpaired. Whether one was found."""
        commands, replies = self.commands, self.replies
        if not commands or not replies:
            return False
        starts = {reply.start: j for j, reply in enumerate(replies) if not reply.push}
        for i, command in enumerate(commands):
            acked = self._acked(True, command.ack)
            j = starts.get(acked) if acked is not None else None
            if j is not None:
                got = self._acked(False, replies[j].ack)
                if got is not None and got >= command.end:
                    if self.lost[True] or self.lost[False]:
                        note = "sent around bytes that were not captured: its reply cannot be told for certain"  # fmt: skip
                        unasked = "its command cannot be told after bytes that were not captured"
                    else:
                        note = f"{MIDSTREAM}: its reply cannot be told for certain"
                        unasked = f"{MIDSTREAM}: its command cannot be told for certain"
                    for _ in range(i):
                        old = commands.popleft()
                        self._emit(old.message, old.summary, None, None, False, (note,))
                    for _ in range(j):
                        old_reply = replies.popleft()
                        notes = ("a push from the server",) if old_reply.push else (unasked,)
                        self._emit(None, "", old_reply.message, old_reply.summary,
                                   old_reply.error, notes, push=True)  # fmt: skip
                    command.again = True
                    self.resync = False
                    return True
        return False

    def _why_unanswered(self) -> str:
        if self.lost[False]:
            return "server bytes were not captured: its reply may be among them"
        if self.lost[True]:
            return "client bytes were not captured before it: it cannot be paired for certain"
        if self.midstream and self.resync:
            return f"{MIDSTREAM}: its reply cannot be told for certain"
        return "no reply was seen"

    def _why_unasked(self) -> str:
        if self.lost[True]:
            return "its command was in client bytes that were not captured"
        if self.lost[False]:
            return "its command cannot be told after bytes that were not captured"
        if self.midstream:
            return f"{MIDSTREAM}: its command cannot be told for certain"
        return "its command was not seen (sent before the capture started?)"

    def _emit(
        self,
        request: Message | None,
        request_summary: str,
        response: Message | None,
        response_summary: str | None,
        error: bool,
        notes: tuple[str, ...],
        push: bool = False,
    ) -> None:
        self.emit(
            Transaction(
                protocol=PROTOCOL,
                connection=self.conn.id,
                index=self.index,
                request=request,
                request_summary=request_summary if request is not None else None,
                response=response,
                response_summary=response_summary,
                status=None if response is None else ("error" if error else "ok"),
                error=response_summary if error else None,
                notes=notes,
            )
        )
        self.index += 1
