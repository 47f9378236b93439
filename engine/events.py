"""What the engine tells its users: small immutable records that may cross a thread boundary.

The pipeline returns a list of `Event`s from every `feed` and `flush`: an `Event` is an
`HttpTransaction` or one of the classes derived from `EventRecord`, so a consumer can match on
the type and the type checker knows the fields.
Connection events carry a `ConnectionInfo` snapshot taken at the end of the batch, so a consumer
in another thread never sees a half-updated connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from engine.tls import Certificate, ServerHello


class EventRecord:
    """The base of what the engine emits, but for `HttpTransaction` (a named tuple: see there)."""

    __slots__ = ()


Random = bytes  # (a field below is named `bytes`)

from_fields: Final[Any] = tuple.__new__
"""`from_fields(cls, fields)`: a named tuple of this module made from all its fields at once.
Calling the class goes through the `__new__` that typing.NamedTuple generates, an interpreted
function: for the HTTP/1 parser's HttpRequest and HttpResponse, 1.9% of reading a keep-alive
capture's exchanges (engine.http), and for decoding records (tui.exchange_log)."""


class ConnectionInfo(NamedTuple):
    """A connection as it was at the end of a batch.

    A named tuple rather than a frozen dataclass: one is built for every connection that changed,
    on every batch, and a tuple builds several times faster. It is just as immutable.
    """

    id: int
    client: str  # "addr:port" ("[v6]:port" for IPv6)
    server: str
    state: str
    conn_state: str
    history: str
    direction_guessed: bool
    first_ts: float
    last_ts: float
    packets: tuple[int, int]  # (client, server)
    bytes: tuple[int, int]  # stream bytes delivered in order, once
    missing_bytes: tuple[int, int]
    retransmitted_bytes: tuple[int, int]
    inconsistent_retransmissions: int
    protocol: str | None
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    kept_bytes: int = (
        0  # what the follow view keeps: stream bytes, and a small cost per resend mark
    )
    dropped_kept_bytes: int = 0  # stream bytes no longer kept (per-connection cap or memory budget)
    first_packet: int = 0  # number of the packet that opened it, counted from 0 in the capture
    server_hello: ServerHello | None = None  # TLS: the version, cipher and ALPN the server chose
    # Number of the last packet given to it (as first_packet): with the key, its packets are
    # those of its ports numbered first_packet..last_packet, even when the ports were reused.
    last_packet: int = 0
    # TLS with a key log (engine.tlsdecrypt): "decrypted", or why not; None when not tried.
    tls_decryption: str | None = None
    certificate: Certificate | None = None  # the server's, when it was seen (engine.tls)
    tls_random: Random | None = (
        None  # TLS: the ClientHello's random, its session's name in key logs
    )
    host: str | None = None  # the host it was captured on, when there are several (--ssh)
    transport: str = "tcp"  # or "udp": a flow of DNS messages (engine.dns), without a stream


@dataclass(frozen=True, slots=True)
class ConnectionOpened(EventRecord):
    info: ConnectionInfo


@dataclass(frozen=True, slots=True)
class ConnectionUpdated(EventRecord):
    info: ConnectionInfo


@dataclass(frozen=True, slots=True)
class ConnectionClosed(EventRecord):
    """The connection left the engine's table; its info is final.

    reason: "closed" (FIN/RST and linger over), "idle", "evicted" (a bound), "reused" (a new SYN on the
    same ports), "end" (end of the capture).
    """

    info: ConnectionInfo
    reason: str


@dataclass(frozen=True, slots=True)
class Gap(EventRecord):
    """Bytes of one direction that were never seen and were skipped."""

    connection: int
    from_client: bool
    offset: int  # stream offset where the gap starts
    size: int
    ts: float
    reason: str  # "acked" (the peer acknowledged them), "buffer", "close", "end", "idle", "evicted", "snaplen"


@dataclass(frozen=True, slots=True)
class Stats(EventRecord):
    ts: float | None  # packet time of the last packet
    packets: int
    bytes: int
    tcp_packets: int
    udp_packets: int
    other_packets: int
    malformed: int
    truncated: int  # packets cut by the snapshot length before their TCP payload (not decoded)
    fragments: int
    connections_total: int
    connections_active: int
    evicted_connections: int
    dropped_kept_bytes: int
    memory_used: int
    memory_budget: int
    unparsed_connections: int = 0  # not given their protocol parser: the reader was behind
    ignored_segments: int = 0  # TCP data too far ahead of its stream to be believed
    fragments_dropped: int = 0  # IP datagrams whose fragments never all came (timeout, bound)
    cut_payloads: int = 0  # TCP segments whose payload the snapshot length cut (bytes missing)


Field = tuple[str, str]


class Headers:
    """A message's header fields as sent, in order: (name, value) pairs, Latin-1 decoded and
    unescaped, each value without the blanks around it. It reads as the tuple of those pairs
    (iteration, length, indexing, comparison with a tuple).

    A head read by the fast path (engine.http) keeps its field lines as one text, already
    checked against h11's grammar, and splits them into pairs only when they are first asked
    for: most exchanges of a big capture are listed and never opened, and one text is cheaper to
    keep, copy and store than a pair of strings per field. `raw` is that text (None when the
    pairs came some other way); `Headers.of(raw)` makes the same object back from it.
    """

    __slots__ = ("_pairs", "raw")

    def __init__(self, pairs: tuple[Field, ...] | None = None, raw: str | None = None) -> None:
        self._pairs = pairs
        self.raw = raw  # field lines joined by CRLF, each "name:value" as h11 accepts it

    @staticmethod
    def of(raw: str) -> Headers:
        return Headers(None, raw)

    @property
    def pairs(self) -> tuple[Field, ...]:
        pairs = self._pairs
        if pairs is None:
            raw = self.raw
            if raw:
                out = []
                for line in raw.split("\r\n"):
                    name, _, value = line.partition(":")
                    out.append((name, value.strip(" \t")))
                pairs = tuple(out)
            else:
                pairs = ()
            self._pairs = pairs
        return pairs

    def stored(self) -> str | tuple[Field, ...]:
        """What to write to keep it: its text when it has one, else its pairs."""
        return self.raw if self.raw is not None else self.pairs

    @staticmethod
    def load(stored: Any) -> Headers:
        """The headers `stored()` gave."""
        return Headers(None, stored) if type(stored) is str else Headers(tuple(stored), None)

    def __iter__(self) -> Iterator[Field]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __bool__(self) -> bool:
        return bool(self.raw) if self._pairs is None else bool(self._pairs)

    def __getitem__(self, i: Any) -> Any:
        return self.pairs[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            if self.raw is not None and self.raw == other.raw:
                return True
            return self.pairs == other.pairs
        if isinstance(other, tuple):
            return self.pairs == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self.pairs)

    def __repr__(self) -> str:
        return f"Headers({self.pairs!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Headers, (self._pairs, self.raw))


NO_HEADERS: Final = Headers((), None)


class HttpRequest(NamedTuple):
    """An HTTP request as seen. HTTP records are named tuples for the same reason as
    ConnectionInfo: one is built per message, and tuples build several times faster."""

    ts: float  # first byte
    end_ts: float | None  # last byte, if its end was seen
    method: str
    target: str
    version: str
    headers: Headers  # as sent
    body_bytes: int  # after removing chunked framing, before content decoding
    body_missing: int  # body bytes that were never captured
    body: bytes  # the body as far as it is kept (see engine.http max_body)
    complete: bool
    offset: int = -1  # stream offset of its first byte in its direction (-1: not known)
    body_gaps: tuple[tuple[int, int], ...] = ()  # (offset in `body`, bytes never captured there)
    trailers: tuple[Field, ...] = ()  # HTTP/2: the header fields after the body


class HttpResponse(NamedTuple):
    ts: float
    end_ts: float | None
    status: int
    reason: str
    version: str
    headers: Headers
    body_bytes: int
    body_missing: int
    body: bytes
    complete: bool
    interim: tuple[
        tuple[int, str, float], ...
    ] = ()  # 1xx responses before it: (status, reason, ts)
    offset: int = -1  # stream offset of its first byte (of the final response, after any 1xx)
    body_gaps: tuple[tuple[int, int], ...] = ()  # (offset in `body`, bytes never captured there)
    trailers: tuple[Field, ...] = ()  # HTTP/2 (gRPC's status): the header fields after the body


class GrpcCall(NamedTuple):
    """What an HTTP/2 exchange whose content type is application/grpc* says of its call
    (engine.http2): service and method from the path, status and message from the trailers,
    and the length-prefixed messages of each direction (counted as they start)."""

    service: str
    method: str
    status: int | None  # grpc-status, None when no trailers said
    message: str | None  # grpc-message, percent-decoded
    requests: int  # messages the client sent
    responses: int
    request_bytes: int  # their payload bytes, without the 5-byte prefixes
    response_bytes: int
    compressed: tuple[int, int]  # messages with the compressed flag (client, server)
    framing_lost: bool = False  # a gap hid a prefix: the counts stop there


@dataclass(frozen=True, slots=True)
class HttpRequestSeen(EventRecord):
    """A request that has no answer yet, as far as it has come: for a view that shows requests
    waiting for their answer. Only pipelines built with `live_updates=True` emit it.

    When: once its head has been read and its body is still coming (`complete` False), and again
    when its body has ended if it still has no answer then (`complete` True, `end_ts` set); a
    request read whole at once is announced once. A request whose head a gap cut short (a small
    snapshot length) is announced once, incomplete, with what its head showed. A request is
    never announced once a response has been paired with it, nor when the engine already knows
    it will get none (an answer that came too early for it, see engine.http).

    Identity: (connection, request.offset). The offset, the client-stream offset of the
    request's first byte, is always known here (never -1) and no two requests of a connection
    share it. Every request announced is later reported by exactly one `HttpTransaction` of the
    same connection whose `request.offset` is the same, emitted after this event and at the
    latest just before the connection's `ConnectionClosed`; a view drops the waiting request
    when that transaction comes. Announcing changes nothing in how or when exchanges are paired.
    """

    connection: int
    request: HttpRequest


class HttpTransaction(NamedTuple):
    """One request and its response; either side may be None (not captured).

    A named tuple rather than a frozen dataclass, as HttpRequest and HttpResponse are: one is made
    for every exchange, and engine.http makes it with `tuple.__new__` in a few tenths of a
    microsecond, where a frozen dataclass's generated `__init__` (interpreted, one
    `object.__setattr__` a field) took about one, some 5% of reading a keep-alive capture's
    exchanges. It is just as immutable; `_replace` makes a changed copy. It is not an
    `EventRecord` (a named tuple derives from nothing else), hence `Event`, the union.
    """

    connection: int
    index: int  # type: ignore[assignment]  # order on the connection, from 0 (hides tuple.index)
    request: HttpRequest | None
    response: HttpResponse | None
    error: str | None = None  # why parsing failed, if it did
    tunnel: bool = False  # CONNECT 2xx or 101: the rest of the connection is not HTTP
    notes: tuple[str, ...] = ()  # e.g. bytes lost before this message
    stream: int | None = None  # HTTP/2: the stream id (index is the client's stream order)
    grpc: GrpcCall | None = None

    @property
    def wait(self) -> float | None:
        """Time to first byte: from the end of the request to the start of the response."""
        if self.request is None or self.response is None or self.request.end_ts is None:
            return None
        return self.response.ts - self.request.end_ts

    @property
    def duration(self) -> float | None:
        """From the first byte of the request to the last byte of the response."""
        if self.request is None or self.response is None or self.response.end_ts is None:
            return None
        return self.response.end_ts - self.request.ts


@dataclass(slots=True)
class Message:
    """One side of a transaction of a protocol other than HTTP (engine.redis): when its first
    and last bytes came, and its size on the wire."""

    ts: float
    end_ts: float
    size: int


@dataclass(frozen=True, slots=True)
class Transaction(EventRecord):
    """A request and its response in a protocol other than HTTP (engine.redis), numbered on its
    connection (`index`). Either side is None when it was not seen; summaries are wire text
    (decoded as Latin-1), cut short."""

    protocol: str
    connection: int
    index: int
    request: Message | None
    request_summary: str | None
    response: Message | None
    response_summary: str | None
    status: str | None  # "ok", "error", or None without a response
    error: str | None  # the error the server answered
    notes: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        """From the request's first byte to the response's last."""
        if self.request is None or self.response is None:
            return None
        return self.response.end_ts - self.request.ts

    @property
    def wait(self) -> float | None:
        """From the request's last byte to the response's first."""
        if self.request is None or self.response is None:
            return None
        return self.response.ts - self.request.end_ts


class ExchangeRecord(NamedTuple):
    """An HTTP/1.x exchange as a record already (engine.encoded's), which a pipeline made with
    `records=True` emits in place of its HttpTransaction: a process that only sends records
    (tui.http_helpers) makes neither the transaction nor its two messages (a fifth of a
    helper's time on the keep-alive benchmark went to making, encoding and freeing them)."""

    connection: int
    index: int  # type: ignore[assignment]  # order on the connection (hides tuple.index)
    record: bytes  # what engine.encoded.encode gives for the HttpTransaction
    line: str  # what its connection's row shows of it (engine.encoded.row_of)
    status: int
    offset: int  # its request's stream offset (-1 without a request)


Event = EventRecord | HttpTransaction | ExchangeRecord
"""Anything the engine emits."""
