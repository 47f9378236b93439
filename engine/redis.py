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
several channels are folded into that command's transaction. Bytes never seen end the reading
of their direction: what follows cannot be paired for certain, and the transactions say so.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.events import Event, Message, Transaction

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
    """One direction's RESP values, read incrementally (see the module)."""

    def __init__(self, client: bool) -> None:
        self.client = client
        self.buf = bytearray()
        self.stack: list[int] = []  # elements left in each open aggregate
        self.bulk_left = 0  # bytes left of a bulk string, its CRLF included
        self.bulk_keep = bytearray()
        self.bulk_keep_len = 0  # how much of bulk_keep is the string (not its CRLF)
        self.message: Message | None = None
        self.kind = b""  # the type byte of the message's top-level value
        self.parts: list[str] = []
        self.error = False  # the top-level value is an error
        self.broken: str | None = None

    def feed(
        self, ts: float, data: bytes, done: Callable[[Message, bytes, list[str], bool], None]
    ) -> None:
        if self.broken is not None:
            return
        self.buf += data
        message = self.message
        while True:
            if message is None and not self.buf:
                return
            if message is None:
                message = self.message = Message(ts, ts, 0)
            if self.bulk_left:
                take = min(self.bulk_left, len(self.buf))
                room = min(take, KEEP + 2 - len(self.bulk_keep))
                if room > 0:
                    self.bulk_keep += self.buf[:room]
                del self.buf[:take]
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
            end = self.buf.find(b"\r\n")
            if end < 0:
                if len(self.buf) > MAX_LINE:
                    self._break("a line longer than 64 KiB: not RESP")
                else:
                    message.end_ts = ts
                return
            line = bytes(self.buf[:end])
            del self.buf[: end + 2]
            message.size += end + 2
            message.end_ts = ts
            if self._line(line):
                self._finish(ts, done)
                message = None
            elif self.broken is not None:
                return

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
            self._break(f"not RESP: {line[:20]!r}")
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
                self._break("aggregates nested too deep")
                return False
            self.stack.append(count)
            return False
        self._break(f"not RESP: {line[:20]!r}")
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

    def _finish(self, ts: float, done: Callable[[Message, bytes, list[str], bool], None]) -> None:
        message = self.message
        assert message is not None
        message.end_ts = ts
        done(message, self.kind, self.parts, self.error)
        self.message = None
        self.parts = []
        self.kind = b""
        self.error = False

    def _break(self, why: str) -> None:
        self.broken = why
        self.buf.clear()


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


class RedisParser:
    """Pairs a connection's commands and replies into `Transaction` events (see the module)."""

    def __init__(self, conn: Connection, emit: Callable[[Event], None]) -> None:
        self.conn = conn
        self.emit = emit
        self.readers = {True: _Reader(True), False: _Reader(False)}
        # Commands waiting for replies: message, summary, replies still expected, and whether
        # its transaction was made (a SUBSCRIBE's first confirmation makes it).
        self.commands: deque[tuple[Message, str, int, bool]] = deque()
        self.replies: deque[tuple[Message, str, bool, bool]] = deque()  # summary, error, push
        self.index = 0
        self.lost: dict[bool, bool] = {True: False, False: False}

    # --- the stream consumer --------------------------------------------------------------

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if from_client:
            self.readers[True].feed(ts, data, self._command)
        else:
            self.readers[False].feed(ts, data, self._reply)
        self._pair()

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        reader = self.readers[from_client]
        if reader.broken is None:
            side = "client" if from_client else "server"
            reader._break(f"{size} {side} bytes were not captured ({reason})")
            self.lost[from_client] = True

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float) -> None:
        self._pair()
        for message, summary, _, made in self.commands:
            if not made:
                self._emit(message, summary, None, None, False, (self._why_unanswered(),))
        self.commands.clear()
        for message, summary, error, push in self.replies:
            notes = ("a push from the server",) if push else (self._why_unasked(),)
            self._emit(None, "", message, summary, error, notes, push=True)
        self.replies.clear()

    # --- pairing ------------------------------------------------------------------------------

    def _command(self, message: Message, kind: bytes, parts: list[str], error: bool) -> None:
        name, summary = _command_summary(parts)
        expect = max(1, len(parts) - 1) if name in _SUBSCRIBES else 1
        if len(self.commands) >= MAX_PENDING:
            old, old_summary, _, made = self.commands.popleft()
            if not made:
                note = f"more than {MAX_PENDING:,} commands waited for their replies"
                self._emit(old, old_summary, None, None, False, (note,))
        self.commands.append((message, summary, expect, False))

    def _reply(self, message: Message, kind: bytes, parts: list[str], error: bool) -> None:
        push = kind == b">" or (kind == b"*" and bool(parts) and parts[0].lower() in _PUBSUB)
        self.replies.append((message, _reply_summary(kind, parts), error, push))

    def _pair(self) -> None:
        commands, replies = self.commands, self.replies
        while replies:
            message, summary, error, push = replies[0]
            if push:
                replies.popleft()
                self._emit(None, "", message, summary, error, ("a push from the server",),
                           push=True)  # fmt: skip
                continue
            if not commands:
                return
            replies.popleft()
            request, request_summary, expect, made = commands[0]
            if expect > 1:  # a SUBSCRIBE to several channels: a confirmation for each
                commands[0] = (request, request_summary, expect - 1, True)
            else:
                commands.popleft()
            if not made:
                self._emit(request, request_summary, message, summary, error, ())

    def _why_unanswered(self) -> str:
        if self.lost[False]:
            return "server bytes were not captured: its reply may be among them"
        if self.lost[True]:
            return "client bytes were not captured before it: it cannot be paired for certain"
        return "no reply was seen"

    def _why_unasked(self) -> str:
        if self.lost[True]:
            return "its command was in client bytes that were not captured"
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


def redis_parser_factory() -> Callable[[Connection, Callable[[Event], None]], RedisParser]:
    """A consumer factory for `Pipeline(consumers={"redis": [...]})`."""

    def make(conn: Connection, emit: Callable[[Event], None]) -> RedisParser:
        return RedisParser(conn, emit)

    return make
