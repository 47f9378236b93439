"""DNS transactions: queries and their answers, over UDP and over TCP.

A message is read whole (RFC 1035 section 4: a 12-byte header, then questions and resource
records whose names may point back into the message), never trusting a count or a pointer:
names are at most 255 bytes and 128 labels, pointers only go backwards and at most 64 of them
are followed, counts past what the message holds make it not DNS. What a transaction says of it:
the question (`A example.com`), the answer's code and its first records (`NOERROR
93.184.216.34`, `NXDOMAIN`), status "ok" for NOERROR and "error" with the code's name for the
others, and a note for a truncated answer (the client should ask again over TCP). A query sent
again before its answer came (the client timed out) is one transaction, timed from its first
copy; the copies show in the flow's packet counts.

Over UDP (`DnsFlows`, fed by the pipeline) each client address and port with its server's is a
flow, listed as a connection (`transport` "udp", state UDP): Zeek's way, and how a DNS client
uses a port. A flow is DNS when a packet's payload reads as a DNS message from its first byte to
its last: a query from any port, or on the DNS ports (53, mDNS 5353, LLMNR 5355) any message
that reads (port second: there a message may also carry bytes past its records). Answers pair
with queries by their ID on the flow, so the capture's order between the two directions does
not matter for anything but which of two copies of a query came first. A flow ends when idle
for `IDLE` seconds (packet time), and its queries never answered then say so.

Over TCP (`DnsTcpParser`, a stream consumer found by the client's first bytes: a two-byte length
and a query) messages are framed by their length; answers pair by ID too (RFC 7766 lets a server
answer out of order). After bytes that were not captured a side looks for the next place where a
length is followed by a message that reads (resynchronising, as HTTP does); the queries whose
answers may have been lost say so.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    Event,
    Message,
    Transaction,
)
from engine.tcp import HOST_SHIFT, MIDSTREAM, key_endpoints, key_host, reverse_key

if TYPE_CHECKING:
    from engine.connections import ConnectionTable
    from engine.tcp import Connection

PROTOCOL = "dns"
PORTS = frozenset({53, 5353, 5355})  # DNS, multicast DNS, LLMNR: where any message is DNS
IDLE = 30.0  # seconds without a packet after which a UDP flow ends
MAX_FLOWS = 100_000  # UDP flows tracked at once; past it the idlest ends
MAX_PENDING = 1_000  # queries waiting for an answer, per flow or connection
MAX_RECORDS = 512  # records a message may count in all (more: not DNS)
SHOWN = 4  # answer records named in a summary
KEEP = 200  # characters of a summary
FLOW_COST = 400  # bytes a UDP flow is counted for in the engine's memory

TYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 64: "SVCB", 65: "HTTPS", 99: "SPF", 251: "IXFR",
    252: "AXFR", 255: "ANY", 257: "CAA",
}  # fmt: skip
RCODES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip
_OPCODES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}


class Record(NamedTuple):
    name: str
    type: int
    data: str  # the record's data as text (an address, a name...), "" for types not read


class DnsMessage(NamedTuple):
    id: int
    response: bool
    opcode: int
    rcode: int
    truncated: bool
    questions: tuple[tuple[str, int], ...]  # (name, type)
    answers: tuple[Record, ...]  # the answer section's first SHOWN records
    answer_count: int
    size: int  # bytes the records took (a UDP payload may have more after them)


class _Bad(Exception):
    """Not a DNS message."""


def type_name(rtype: int) -> str:
    return TYPES.get(rtype) or f"TYPE{rtype}"


def rcode_name(rcode: int) -> str:
    return RCODES.get(rcode) or f"RCODE{rcode}"


def _name(data: bytes, at: int) -> tuple[str, int]:
    """The name at `at` and where what follows it starts."""
    labels: list[str] = []
    length = 0
    after = -1  # where the name ends in place (past its first pointer)
    jumps = 0
    end = len(data)
    while True:
        if at >= end:
            raise _Bad
        n = data[at]
        if n == 0:
            at += 1
            break
        if n & 0xC0 == 0xC0:
            if at + 1 >= end:
                raise _Bad
            target = ((n & 0x3F) << 8) | data[at + 1]
            if after < 0:
                after = at + 2
            if target >= at or jumps >= 64:
                raise _Bad  # forwards, or a loop
            jumps += 1
            at = target
            continue
        if n & 0xC0:
            raise _Bad  # the extended label types are obsolete
        length += n + 1
        if length > 255 or at + 1 + n > end:
            raise _Bad
        labels.append(data[at + 1 : at + 1 + n].decode("latin-1"))
        at += 1 + n
    return ".".join(labels) + "." if labels else ".", after if after >= 0 else at


def _u16(data: bytes, at: int) -> int:
    if at + 2 > len(data):
        raise _Bad
    return (data[at] << 8) | data[at + 1]


def _rdata(data: bytes, rtype: int, at: int, size: int) -> str:
    rd = data[at : at + size]
    if rtype == 1 and size == 4:
        return ".".join(str(b) for b in rd)
    if rtype == 28 and size == 16:
        import ipaddress

        return str(ipaddress.IPv6Address(rd))
    if rtype in (2, 5, 12, 39):  # NS, CNAME, PTR, DNAME
        return _name(data, at)[0]
    if rtype == 15 and size >= 3:  # MX
        return f"{_u16(data, at)} {_name(data, at + 2)[0]}"
    if rtype == 33 and size >= 7:  # SRV: priority weight port target
        return (
            f"{_u16(data, at)} {_u16(data, at + 2)} {_u16(data, at + 4)} {_name(data, at + 6)[0]}"
        )
    if rtype == 6:  # SOA: the primary name server
        return _name(data, at)[0]
    if rtype == 16 and size:  # TXT: its first string
        return rd[1 : 1 + rd[0]].decode("latin-1")
    return ""


def read_message(data: bytes, whole: bool = True) -> DnsMessage | None:
    """The DNS message at the start of `data`, or None when it does not read as one. whole:
    the message must end where `data` does (nothing after its records)."""
    try:
        return _read(data, whole)
    except (_Bad, IndexError, ValueError):
        return None


def _read(data: bytes, whole: bool) -> DnsMessage:
    if len(data) < 12:
        raise _Bad
    ident, flags, qd, an, ns, ar = (_u16(data, i) for i in range(0, 12, 2))
    opcode = (flags >> 11) & 15
    if opcode not in _OPCODES or qd + an + ns + ar > MAX_RECORDS or qd > 16:
        raise _Bad
    at = 12
    questions = []
    for _ in range(qd):
        name, at = _name(data, at)
        qtype = _u16(data, at)
        _u16(data, at + 2)  # the class
        at += 4
        questions.append((name, qtype))
    answers: list[Record] = []
    for i in range(an + ns + ar):
        name, at = _name(data, at)
        rtype, size = _u16(data, at), _u16(data, at + 8)
        at += 10
        if at + size > len(data):
            raise _Bad
        if i < an and len(answers) < SHOWN:
            answers.append(Record(name, rtype, _rdata(data, rtype, at, size)))
        at += size
    if whole and at != len(data):
        raise _Bad
    return DnsMessage(ident, bool(flags & 0x8000), opcode, flags & 15, bool(flags & 0x0200),
                      tuple(questions), tuple(answers), an, at)  # fmt: skip


def question_summary(message: DnsMessage) -> str:
    """`A example.com.`; an opcode other than QUERY first (`UPDATE SOA example.com.`)."""
    text = ", ".join(f"{type_name(qtype)} {name}" for name, qtype in message.questions)
    if message.opcode:
        text = f"{_OPCODES.get(message.opcode, message.opcode)} {text}".rstrip()
    return text[:KEEP] or "(no question)"


def answer_summary(message: DnsMessage) -> str:
    """`NOERROR 93.184.216.34, 93.184.216.35`: the code, then the first answer records (with
    their type when it is not the question's)."""
    asked = {qtype for _, qtype in message.questions}
    parts = []
    for r in message.answers:
        data = r.data or "..."
        parts.append(data if r.type in asked else f"{type_name(r.type)} {data}")
    text = rcode_name(message.rcode)
    if parts:
        text += " " + ", ".join(parts)
        if message.answer_count > len(parts):
            text += f" (+{message.answer_count - len(parts)} more)"
    elif message.rcode == 0:
        text += " (no answer)"
    if message.truncated:
        text += " (truncated)"
    return text[:KEEP]


class _Pairing:
    """Queries and answers paired by ID, whichever of the two the capture shows first; what a
    flow or a connection pairs.

    An answer pairs with the query of its ID sent before it (by the packets' times, give or
    take `SKEW` for two taps' clocks), so an ID used again later starts a new transaction.
    Transactions are emitted in the order of the answers: an answer whose query has not been
    seen waits for it, and the answers after it wait behind it, until the client's messages
    have gone past its time (its query, sent before, would have been seen) or the end. So the
    transactions and their order do not depend on how the capture interleaved the two sides.
    Queries never answered are said at the end.
    """

    SKEW = 0.5

    def __init__(self, conn_id: int, emit: Callable[[Event], None]) -> None:
        self.conn_id = conn_id
        self.emit = emit
        self.waiting: dict[int, tuple[Message, str]] = {}  # id -> query, its summary
        # Answers in their order: response, message, bytes before it lost, its query if seen.
        self.answers: deque[tuple[Message, DnsMessage, bool, tuple[Message, str] | None]] = deque()
        self.client_ts = float("-inf")  # the latest query's time
        # The latest answers' times by ID: a copy of its query sent before it (a client that
        # timed out and asked again) shown after it by the capture is not a new query.
        self.answered: OrderedDict[int, float] = OrderedDict()
        self.index = 0

    def query(self, ts: float, size: int, message: DnsMessage) -> None:
        if ts > self.client_ts:
            self.client_ts = ts
        ident = message.id
        if ident in self.waiting:  # sent again (a timeout): the first copy is the query
            self._drain()
            return
        answered = self.answered.get(ident)
        if answered is not None and ts <= answered + self.SKEW:
            self._drain()
            return  # a copy of a query already answered
        query = (Message(ts, ts, size), question_summary(message))
        answers = self.answers
        for i, (response, answer, lost, paired) in enumerate(answers):
            if paired is None and answer.id == ident and ts <= response.ts + self.SKEW:
                answers[i] = (response, answer, lost, query)
                self._remember(ident, response.ts)
                break
        else:
            waiting = self.waiting
            if len(waiting) >= MAX_PENDING:
                request, summary = waiting.pop(next(iter(waiting)))
                note = f"more than {MAX_PENDING} queries waited"
                self._emit(request, summary, None, None, (note,))
            waiting[ident] = query
        self._drain()

    def answer(self, ts: float, size: int, message: DnsMessage, lost: bool = False) -> None:
        response = Message(ts, ts, size)
        query = self.waiting.get(message.id)
        if query is not None and query[0].ts <= ts + self.SKEW:
            del self.waiting[message.id]
            self._remember(message.id, ts)
        else:
            query = None
        if len(self.answers) >= MAX_PENDING:
            self._pop()
        self.answers.append((response, message, lost, query))
        self._drain()

    def _remember(self, ident: int, ts: float) -> None:
        answered = self.answered
        answered[ident] = ts
        answered.move_to_end(ident)
        if len(answered) > MAX_PENDING:
            answered.popitem(last=False)

    def _drain(self) -> None:
        answers = self.answers
        while answers:
            response, _, _, paired = answers[0]
            if paired is None and self.client_ts <= response.ts + self.SKEW:
                return
            self._pop()

    def _pop(self) -> None:
        response, answer, lost, paired = self.answers.popleft()
        notes: tuple[str, ...] = ()
        if paired is None:
            notes = (
                "its query was in bytes that were not captured"
                if lost
                else "its query was not seen (sent before the capture started?)",
            )
        if answer.truncated:
            notes += ("truncated: the client should ask again over TCP",)
        request, summary = paired if paired is not None else (None, None)
        self._emit(request, summary, response, answer, notes)

    def close(self, why: str) -> None:
        while self.answers:
            self._pop()
        for query, summary in self.waiting.values():
            self._emit(query, summary, None, None, (why,))
        self.waiting.clear()

    def _emit(
        self,
        request: Message | None,
        request_summary: str | None,
        response: Message | None,
        answer: DnsMessage | None,
        notes: tuple[str, ...],
    ) -> None:
        status = error = None
        if answer is not None:
            status = "ok" if answer.rcode == 0 else "error"
            error = None if answer.rcode == 0 else rcode_name(answer.rcode)
        self.emit(
            Transaction(
                protocol=PROTOCOL,
                connection=self.conn_id,
                index=self.index,
                request=request,
                request_summary=request_summary,
                response=response,
                response_summary=answer_summary(answer) if answer is not None else None,
                status=status,
                error=error,
                notes=notes,
            )
        )
        self.index += 1


# ---------------------------------------------------------------------------- over UDP


class DnsFlow:
    """A client's port talking DNS with a server's: a connection of the engine's table without
    a byte stream (its id comes from the table's, so ids stay in the order flows were seen)."""

    __slots__ = (
        "bytes", "client_addr", "client_key", "first_packet", "first_ts", "host", "id",
        "last_packet", "last_ts", "packets", "pairing", "server_addr",
    )  # fmt: skip

    def __init__(self, conn_id: int, ts: float, client_key: int, number: int, host: str | None,
                 emit: Callable[[Event], None]) -> None:  # fmt: skip
        self.id = conn_id
        self.client_key = client_key
        self.first_ts = self.last_ts = ts
        self.first_packet = self.last_packet = number
        self.host = host
        self.client_addr, self.server_addr = key_endpoints(client_key)
        self.packets = [0, 0]
        self.bytes = [0, 0]
        self.pairing = _Pairing(conn_id, emit)

    def snapshot(self) -> ConnectionInfo:
        c, s = self.packets
        state = "SF" if c and s else "S0" if c else "SHR"
        return ConnectionInfo(
            id=self.id,
            client=self.client_addr,
            server=self.server_addr,
            state="UDP",
            conn_state=state,
            history=("D" if c else "") + ("d" if s else ""),
            direction_guessed=False,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            packets=(c, s),
            bytes=(self.bytes[0], self.bytes[1]),
            missing_bytes=(0, 0),
            retransmitted_bytes=(0, 0),
            inconsistent_retransmissions=0,
            protocol=PROTOCOL,
            first_packet=self.first_packet,
            last_packet=self.last_packet,
            host=self.host,
            transport="udp",
        )


class DnsFlows:
    """The UDP flows that carry DNS, fed every UDP packet by the pipeline (see the module)."""

    def __init__(
        self, table: ConnectionTable, live_updates: bool = False, parse: bool = True
    ) -> None:
        self.table = table
        self.live_updates = live_updates
        # Whether to pair and emit transactions: the flows are kept either way, so that
        # connection ids are the same in every pipeline of a capture (some parse no protocol).
        self.parse = parse
        self.flows: OrderedDict[int, DnsFlow] = OrderedDict()  # client key -> flow, idlest first
        self.changed: dict[int, DnsFlow] = {}
        self.packets = 0  # UDP packets that were DNS

    def packet(self, ts: float, key: int, payload: bytes) -> bool:
        """A UDP packet, `key` as a TCP segment's (addresses, ports, host); whether it was DNS."""
        flows = self.flows
        flow = flows.get(key)
        from_client = True
        if flow is None:
            flow = flows.get(reverse_key(key))
            from_client = False
        if flow is not None and ts - flow.last_ts >= IDLE:  # (the batch's end would end it)
            self._close(flow, "idle")
            flow = None
        ports = key & 0xFFFFFFFF
        known = (ports >> 16) in PORTS or (ports & 0xFFFF) in PORTS
        message = read_message(payload, whole=not known)
        if message is None and known and payload[:1]:
            message = read_message(payload, whole=False)
        if flow is None:
            if message is None:
                return False
            # The client is who asks: a message's sender, unless it is an answer.
            flow = self._open(ts, reverse_key(key) if message.response else key)
            from_client = not message.response
        else:
            flows.move_to_end(flow.client_key)
        self.packets += 1
        side = 0 if from_client else 1
        flow.packets[side] += 1
        flow.bytes[side] += len(payload)
        flow.last_ts = ts
        flow.last_packet = self.table.packet_number
        if self.live_updates:
            self.changed[flow.id] = flow
        if message is not None and self.parse:
            if message.response:
                flow.pairing.answer(ts, len(payload), message)
            else:
                flow.pairing.query(ts, len(payload), message)
        return True

    def _open(self, ts: float, client_key: int) -> DnsFlow:
        table = self.table
        if len(self.flows) >= MAX_FLOWS:
            self._close(next(iter(self.flows.values())), "evicted")
        host = table.host_names.get(key_host(client_key)) if client_key >> HOST_SHIFT else None
        flow = DnsFlow(table.next_id, ts, client_key, table.packet_number, host,
                       table.events.append)  # fmt: skip
        table.next_id += 1
        table.memory += FLOW_COST
        self.flows[client_key] = flow
        for factory in table.factories.get(None, ()):
            # Told of it, as of a connection (its id, first packet, ends); it has no bytes.
            factory(flow, table.events.append)  # type: ignore[arg-type]
        table.events.append(ConnectionOpened(flow.snapshot()))
        return flow

    def end_batch(self, now: float) -> None:
        if self.changed:
            for flow in self.changed.values():
                if flow.client_key in self.flows:
                    self.table.events.append(ConnectionUpdated(flow.snapshot()))
            self.changed.clear()
        self.expire(now)

    def expire(self, now: float) -> None:
        flows = self.flows
        while flows:
            flow = next(iter(flows.values()))
            if now - flow.last_ts < IDLE:
                break
            self._close(flow, "idle")

    def finish(self) -> None:
        for flow in list(self.flows.values()):
            self._close(flow, "end")

    def _close(self, flow: DnsFlow, reason: str) -> None:
        del self.flows[flow.client_key]
        self.changed.pop(flow.id, None)
        flow.pairing.close(
            "no answer was seen" if reason != "evicted" else "the flow was evicted (too many)"
        )
        self.table.memory -= FLOW_COST
        self.table.events.append(ConnectionClosed(flow.snapshot(), reason))


# ---------------------------------------------------------------------------- over TCP


def query_start(prefix: bytes) -> bool | None:
    """Whether a client's first bytes are a DNS query over TCP (None: too few to tell)."""
    if len(prefix) < 2:
        return None
    length = (prefix[0] << 8) | prefix[1]
    if length < 12:
        return False
    if len(prefix) < 2 + length:
        if len(prefix) >= 14:  # the header alone can already say no
            flags = prefix[4]
            if flags & 0x80 or (flags >> 3) & 15 not in _OPCODES:
                return False
        return None if length <= 4096 else False
    message = read_message(prefix[2 : 2 + length])
    return message is not None and not message.response


class _Framer:
    """One direction's length-prefixed messages."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.start_ts = 0.0
        self.lost = False  # bytes were not captured: find the next message (resync)
        self.scan_from = 0

    def feed(self, ts: float, data: bytes) -> list[tuple[float, int, DnsMessage | None]]:
        if not self.buf:
            self.start_ts = ts
        self.buf += data
        out: list[tuple[float, int, DnsMessage | None]] = []
        buf = self.buf
        while True:
            if self.lost and not self._resync():
                return out
            if len(buf) < 2:
                return out
            length = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + length:
                return out
            message = read_message(bytes(buf[2 : 2 + length]))
            out.append((self.start_ts, 2 + length, message))
            del buf[: 2 + length]
            self.start_ts = ts

    def _resync(self) -> bool:
        """Drop bytes up to the first length followed by a message that reads; False when the
        bytes so far hold none yet. A place whose message has not all come yet is looked at
        again with more bytes; what is before it is not."""
        buf = self.buf
        waiting = -1
        for at in range(self.scan_from, max(0, len(buf) - 1)):
            length = (buf[at] << 8) | buf[at + 1]
            if length < 12:
                continue
            if at + 2 + length > len(buf):
                if waiting < 0:
                    waiting = at
                continue
            if read_message(bytes(buf[at + 2 : at + 2 + length])) is not None:
                del buf[:at]
                self.lost = False
                self.scan_from = 0
                return True
        self.scan_from = waiting if waiting >= 0 else max(0, len(buf) - 1)
        if self.scan_from > 0:
            del buf[: self.scan_from]
            self.scan_from = 0
        return False


class DnsTcpParser:
    """DNS over one TCP connection (see the module)."""

    def __init__(self, conn: Connection, emit: Callable[[Event], None]) -> None:
        self.pairing = _Pairing(conn.id, emit)
        self.framers = {True: _Framer(), False: _Framer()}
        self.lost = {True: False, False: False}

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        for start, size, message in self.framers[from_client].feed(ts, data):
            if message is None:
                continue
            if message.response:
                self.pairing.answer(start, size, message, lost=self.lost[True])
            else:
                self.pairing.query(start, size, message)

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        framer = self.framers[from_client]
        framer.buf.clear()
        framer.lost = True
        framer.scan_from = 0
        if size or reason != MIDSTREAM:  # (joining a connection late loses nothing)
            self.lost[from_client] = True

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float) -> None:
        self.pairing.close(
            "server bytes were not captured: its answer may be among them"
            if self.lost[False]
            else "no answer was seen"
        )
