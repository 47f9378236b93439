"""Which protocol a TCP connection carries, from the first bytes of its streams, whatever the port.

The sniffer holds the first delivered chunks of each direction (at most `LIMIT` bytes) until it
can decide; the chunks are then replayed to the consumers attached for that protocol, so they see
the streams from their first byte. It never guesses from port numbers: non-HTTP bytes on port 80
stay unrecognised.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from engine import tls

if TYPE_CHECKING:
    from engine.tcp import Connection

LIMIT = 16 * 1024
HTTP = "http"
TLS = "tls"
NOTHING = ""  # decided: no known protocol

KNOWN_METHODS = frozenset(
    b"GET POST PUT DELETE HEAD OPTIONS PATCH CONNECT TRACE PROPFIND PROPPATCH MKCOL COPY MOVE "
    b"LOCK UNLOCK SEARCH REPORT PRI".split()
)
_TOKEN = re.compile(rb"[A-Z][A-Z0-9_-]{0,23}")
_REQUEST_LINE_END = re.compile(rb" HTTP/[0-9]\.[0-9]\r?$")


def http_request_start(prefix: bytes) -> bool | None:
    """Does a client stream starting with prefix carry HTTP/1.x requests? None: need more bytes."""
    m = _TOKEN.match(prefix)
    if m is None:
        return False
    end = m.end()
    if end == len(prefix):
        return None
    if prefix[end] != 0x20:
        return False
    if m.group() in KNOWN_METHODS:
        return True
    # An unknown method is HTTP only if its request line ends with a version.
    newline = prefix.find(b"\n")
    if newline < 0:
        return None if len(prefix) < 8192 else False
    return _REQUEST_LINE_END.search(prefix[:newline]) is not None


def http_response_start(prefix: bytes) -> bool | None:
    head = b"HTTP/1."
    if len(prefix) < len(head):
        return None if head.startswith(prefix) else False
    return prefix.startswith(head)


class Sniffer:
    """The first chunks of a connection's two streams, held until they tell its protocol.

    The verdict must not depend on the order in which the capture shows the two directions, so
    the client's bytes decide (every protocol recognised here is one where the client speaks
    first); the server's count only when the client's bytes said nothing known, or the client
    sent nothing before the limit was reached.
    """

    __slots__ = ("chunks", "prefixes", "size", "verdicts")

    def __init__(self) -> None:
        # (from_client, ts, stream offset, data, ack) as delivered, replayed to the consumers
        self.chunks: list[tuple[bool, float, int, bytes, int]] = []
        self.size = 0
        self.verdicts: dict[bool, str | None] = {True: None, False: None}  # None: undecided
        self.prefixes: dict[bool, bytes] = {True: b"", False: b""}

    @staticmethod
    def of(conn: Connection) -> Sniffer:
        if conn.sniffed is None:
            conn.sniffed = Sniffer()
        assert isinstance(conn.sniffed, Sniffer)
        return conn.sniffed

    @staticmethod
    def release(conn: Connection) -> None:
        conn.sniffed = None

    def add(
        self, from_client: bool, ts: float, offset: int, data: bytes | None, ack: int
    ) -> str | None:
        """Add a chunk (None: a gap or the end); return the protocol once decided, else None."""
        if data is None:
            if self.verdicts[from_client] is None:
                self.verdicts[from_client] = NOTHING
        else:
            self.chunks.append((from_client, ts, offset, data, ack))
            self.size += len(data)
            if self.verdicts[from_client] is None:
                prefix = self.prefixes[from_client] + data[:8192]
                self.prefixes[from_client] = prefix
                self.verdicts[from_client] = self._judge(from_client, prefix)
        client, server = self.verdicts[True], self.verdicts[False]
        if client:
            return client
        if client == NOTHING and server is not None:
            return server
        if self.size > LIMIT:
            return server or NOTHING
        return None

    @staticmethod
    def _judge(from_client: bool, prefix: bytes) -> str | None:
        if tls.looks_like_tls(prefix[:3]) and len(prefix) >= 3:
            return TLS
        if len(prefix) < 3 and tls.looks_like_tls(prefix):
            return None
        verdict = http_request_start(prefix) if from_client else http_response_start(prefix)
        if verdict is None:
            return None
        return HTTP if verdict else NOTHING


class TlsHelloReader:
    """Reads the client's first bytes for a ClientHello: SNI and ALPN, then stops reading."""

    __slots__ = ("buffer", "done")

    LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.buffer = b""
        self.done = False

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.done or not from_client:
            return
        self.buffer += data
        result = tls.parse_client_hello(self.buffer)
        if result is tls.NEED_MORE and len(self.buffer) < self.LIMIT:
            return
        if isinstance(result, tls.ClientHello):
            conn.sni = result.sni
            conn.alpn = result.alpn
        self.done = True
        self.buffer = b""

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        if from_client:
            self.done = True
            self.buffer = b""

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float) -> None:
        self.buffer = b""
