"""Which protocol a TCP connection carries, from the first bytes of its streams, whatever the port.

The sniffer holds the first delivered chunks of each direction (at most `LIMIT` bytes) until it
can decide; the chunks are then replayed to the consumers attached for that protocol, so they see
the streams from their first byte. It never guesses from port numbers: non-HTTP bytes on port 80
stay unrecognised.

Protocols: HTTP/1.x (`HTTP`), TLS (`TLS`), those registered in `engine.protocols` (Redis,
MySQL: its server's greeting is judged too), and HTTP/2 (`HTTP2`): in clear, from the client
connection preface (RFC 9113 3.4), whatever the port; over TLS, when the hellos show that h2
was chosen (see `TlsHelloReader`), which relabels a `TLS` connection once its hellos are read.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Final

from engine import protocols, tls

if TYPE_CHECKING:
    from engine.tcp import Connection

LIMIT: Final = 16 * 1024
HTTP: Final = "http"
HTTP2: Final = "http2"
TLS: Final = "tls"
NOTHING: Final = ""  # decided: no known protocol

KNOWN_METHODS: Final = frozenset(
    b"GET POST PUT DELETE HEAD OPTIONS PATCH CONNECT TRACE PROPFIND PROPPATCH MKCOL COPY MOVE "
    b"LOCK UNLOCK SEARCH REPORT".split()
)
# What an HTTP/2 client sends first (RFC 9113 3.4). "PRI" is not an HTTP/1 method: a request
# line "PRI * HTTP/2.0" is only ever this. (h2c reached by an HTTP/1.1 Upgrade sends it after
# the 101: engine.http hands the rest to engine.http2 and relabels the connection `HTTP2`.)
H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_TOKEN: Final = re.compile(rb"[A-Z][A-Z0-9_-]{0,23}")
_REQUEST_LINE_END: Final = re.compile(rb" HTTP/[0-9]\.[0-9]\r?$")


# HTTP/2 frames (RFC 9113 6), as far as telling them apart from other bytes goes.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = 0, 1, 2, 3, 4, 5, 6, 7
WINDOW_UPDATE, CONTINUATION = 8, 9
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20
# Flags each frame type defines, and whether its stream id must be 0 (True), not 0 (False) or
# either (None): what a plausible frame header looks like when looking for one after a loss.
_FRAME_RULES: Final = {
    DATA: (_END_STREAM | _PADDED, False),
    HEADERS: (_END_STREAM | _END_HEADERS | _PADDED | _PRIORITY, False),
    PRIORITY: (0, False),
    RST_STREAM: (0, False),
    SETTINGS: (0x1, True),
    PUSH_PROMISE: (_END_HEADERS | _PADDED, False),
    PING: (0x1, True),
    GOAWAY: (0, True),
    WINDOW_UPDATE: (0, None),
    CONTINUATION: (_END_HEADERS, False),
}
_FIXED_LENGTH: Final = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}

MAX_PLAUSIBLE_FRAME: Final = 1 << 20  # longer frames exist, but are not taken as a sign of HTTP/2


def plausible_frame_header(head: bytes | bytearray | memoryview) -> int | None:
    """The frame length that a 9-byte frame header announces, if it looks like one that a
    peer would send (a known type, its flags, its stream id rules, a sane length); else None."""
    length = (head[0] << 16) | (head[1] << 8) | head[2]
    kind, flags = head[3], head[4]
    stream = int.from_bytes(head[5:9], "big")
    rules = _FRAME_RULES.get(kind)
    if rules is None or stream >> 31 or flags & ~rules[0] or length > MAX_PLAUSIBLE_FRAME:
        return None
    if rules[1] is not None and (stream == 0) != rules[1]:
        return None
    fixed = _FIXED_LENGTH.get(kind)
    if fixed is not None and length != fixed:
        return None
    if (kind == SETTINGS and length % 6) or (kind == GOAWAY and length < 8):
        return None
    return length


def h2_frames_start(prefix: bytes) -> str | None:
    """A client stream seen from the middle of an HTTP/2 connection (a capture that began
    later): two plausible frame headers in a row at its start. HTTP2, NOTHING, or None: need
    more."""
    if len(prefix) < 9:
        return None
    length = plausible_frame_header(prefix[:9])
    if length is None:
        return NOTHING
    if len(prefix) < 9 + length + 9:
        return None if length + 18 <= 8192 else NOTHING
    return (
        HTTP2 if plausible_frame_header(prefix[9 + length : 18 + length]) is not None else NOTHING
    )


def h2_preface_start(prefix: bytes) -> bool | None:
    """Does a client stream starting with prefix open with the HTTP/2 preface? None: need more."""
    if len(prefix) < len(H2_PREFACE):
        return None if H2_PREFACE.startswith(prefix) else False
    return prefix.startswith(H2_PREFACE)


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
    the client's bytes decide; the server's count only when the client's bytes said nothing
    known, or the client sent nothing (before the limit was reached, or at all). That is how a
    protocol whose server speaks first is told (`Protocol.server_start`: MySQL's greeting): its
    client's first bytes answer the server's and are not a client start that anything knows.
    """

    __slots__ = ("chunks", "prefixes", "size", "verdicts")

    def __init__(self) -> None:
        # What the streams delivered, in order, replayed to the consumers once they are attached:
        # (from_client, ts, stream offset, data, ack, "") for bytes, and
        # (from_client, ts, stream offset, None, size, reason) for bytes never seen.
        self.chunks: list[tuple[bool, float, int, bytes | None, int, str]] = []
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

    def add(self, from_client: bool, ts: float, offset: int, data: bytes, ack: int) -> str | None:
        """Add delivered bytes; return the protocol once decided, else None."""
        self.chunks.append((from_client, ts, offset, data, ack, ""))
        self.size += len(data)
        if self.verdicts[from_client] is None:
            prefix = self.prefixes[from_client] + data[:8192]
            self.prefixes[from_client] = prefix
            self.verdicts[from_client] = self._judge(from_client, prefix)
        return self._verdict()

    def missed(
        self, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> str | None:
        """Bytes of one side were never seen: what comes after them cannot be recognised."""
        self.chunks.append((from_client, ts, offset, None, size, reason))
        return self.ended(from_client)

    def ended(self, from_client: bool) -> str | None:
        """One side has no (more) bytes to judge by."""
        if self.verdicts[from_client] is None:
            self.verdicts[from_client] = NOTHING
        return self._verdict()

    def _verdict(self) -> str | None:
        client, server = self.verdicts[True], self.verdicts[False]
        if client:
            return client
        if client == NOTHING:
            if server is not None:
                return server if server != HTTP2 else NOTHING  # (h2 is only the client's word)
            if self.prefixes[False][:1] == b"\0":
                return NOTHING  # (what the server's first bytes may yet say would not count)
        if self.size > LIMIT:
            return server or NOTHING
        return None

    @staticmethod
    def _judge(from_client: bool, prefix: bytes) -> str | None:
        if tls.looks_like_tls(prefix[:3]) and len(prefix) >= 3:
            return TLS
        if len(prefix) < 3 and tls.looks_like_tls(prefix):
            return None
        if from_client:
            for protocol in protocols.PROTOCOLS:  # the others (engine.protocols)
                verdict = protocol.client_start(prefix)
                if verdict is None:
                    return None
                if verdict:
                    return protocol.name
            h2 = h2_preface_start(prefix)
            if h2 is not False:
                return HTTP2 if h2 else None
            if prefix and prefix[0] < 0x10:  # (a frame of at most 1 MiB: not a method's letter)
                return h2_frames_start(prefix)
        elif (spoken := _server_speaks_first(prefix)) != NOTHING:
            return spoken  # a protocol whose server speaks first, or None: need more
        elif prefix[:1] == b"\0":
            # An HTTP/2 server speaks first with a SETTINGS frame (RFC 9113 3.4): it decides
            # only when the client's first bytes come too late (a capture that shows the
            # server's side first, past LIMIT).
            if len(prefix) < 9:
                return None
            length = int.from_bytes(prefix[:3], "big")
            settings = prefix[3:9] == b"\x04\0\0\0\0\0" and length % 6 == 0 and length <= 600
            return HTTP2 if settings else NOTHING
        verdict = http_request_start(prefix) if from_client else http_response_start(prefix)
        if verdict is None:
            return None
        return HTTP if verdict else NOTHING


def _server_speaks_first(prefix: bytes) -> str | None:
    """The registered protocol whose server's first bytes these are (`Protocol.server_start`),
    NOTHING if none, None while too few have come to tell."""
    for protocol in protocols.PROTOCOLS:
        if protocol.server_start is not None:
            verdict = protocol.server_start(prefix)
            if verdict is None:
                return None
            if verdict:
                return protocol.name
    return NOTHING


class TlsHelloReader:
    """Reads the hellos of a TLS connection, then stops reading.

    From the client's first bytes, the ClientHello: SNI and the offered ALPN (`conn.sni`,
    `conn.alpn`); from the server's, the ServerHello (`conn.server_hello`: version, cipher suite,
    and the ALPN it selected, which only TLS 1.2 and earlier show), and before TLS 1.3 the
    certificate that follows it (`conn.certificate`: TLS 1.3 encrypts it; engine.tlsdecrypt
    reads it there when it has the keys). A connection labelled `TLS`
    becomes `HTTP2` when h2 is known to be spoken: the ServerHello selected it, or, with no
    selection visible, the client offered h2 and nothing else. Each side buffers at most
    `LIMIT` bytes. Inside an HTTP CONNECT tunnel (engine.http) only the client side is fed, and
    the connection keeps its label.
    """

    __slots__ = ("buffers", "finished")

    LIMIT: ClassVar[int] = tls.MAX_HELLO_BYTES

    def __init__(self) -> None:
        self.buffers = {True: b"", False: b""}
        self.finished = {True: False, False: False}

    @property
    def done(self) -> bool:
        """The client's side is read (or given up): it needs no more client bytes."""
        return self.finished[True]

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.finished[from_client]:
            return
        buffer = self.buffers[from_client] + data
        if not from_client and conn.server_hello is not None:
            self._certificate(conn, buffer)
            return
        result = tls.parse_client_hello(buffer) if from_client else tls.parse_server_hello(buffer)
        if result is tls.NEED_MORE and len(buffer) < self.LIMIT:
            self.buffers[from_client] = buffer
            return
        if isinstance(result, tls.ClientHello):
            conn.sni = result.sni
            conn.alpn = result.alpn
            conn.tls_random = result.random
        elif isinstance(result, tls.ServerHello):
            conn.server_hello = result
        if conn.protocol in (TLS, HTTP2):
            conn.protocol = HTTP2 if speaks_h2(conn.alpn, conn.server_hello) else TLS
        if isinstance(result, tls.ServerHello) and result.version_number < tls.TLS_1_3:
            self._certificate(conn, buffer)  # TLS 1.2 and earlier: the certificate follows
        else:
            self._stop(from_client)

    def _certificate(self, conn: Connection, buffer: bytes) -> None:
        """Read the server's certificate from its first flight (in the clear before TLS 1.3)."""
        found = tls.parse_server_certificate(buffer)
        if found is tls.NEED_MORE and len(buffer) < self.LIMIT:
            self.buffers[False] = buffer
            return
        if isinstance(found, tls.Certificate):
            conn.certificate = found
        self._stop(False)

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        self._stop(from_client)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        self._stop(from_client)

    def on_close(self, conn: Connection, ts: float) -> None:
        self._stop(True)
        self._stop(False)

    def _stop(self, from_client: bool) -> None:
        self.finished[from_client] = True
        self.buffers[from_client] = b""


def speaks_h2(offered: tuple[str, ...], server: tls.ServerHello | None) -> bool:
    """Is h2 known to be the application protocol of a TLS connection?"""
    if server is not None and server.alpn is not None:
        return server.alpn == "h2"
    return offered == ("h2",)
