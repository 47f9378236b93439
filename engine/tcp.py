"""A TCP connection as the observer sees it: its two directions, counters, and the follow view.

The reassembly of each direction is `engine.reassembly`'s; a `HalfStream` is a reassembler plus
what the observer notes about that endpoint (packets, flags, history letters, its last
acknowledgment). The connection table (`engine.connections`) finds connections by key, drives
their state and lifecycle, and passes what the reassemblers deliver to the stream consumers.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from engine.reassembly import NO_ACK, Reassembler, Sink
from engine.spool import SpooledEntries
from engine.tcpstate import State, conn_state

if TYPE_CHECKING:
    from engine.tls import Certificate, ServerHello

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20

# Keys: IPv4 is (src << 32 | dst) << 32 | (sport << 16 | dport); IPv6 the same with 128-bit
# addresses and a tag bit above, so that the two families never collide.
V6_TAG: Final = 1 << 300
# Packets captured on one of several hosts (wirepeek --ssh) carry the host's number (from 1)
# above that: the same addresses and ports seen on two hosts make two connections.
HOST_SHIFT: Final = 320
_M16: Final = 0xFFFF
_M32: Final = 0xFFFFFFFF
_M128: Final = (1 << 128) - 1
_MFLOW: Final = (1 << HOST_SHIFT) - 1


def key_host(key: int) -> int:
    """The number of the host a key's packets were captured on (0: the local capture)."""
    return key >> HOST_SHIFT


class Resent(NamedTuple):
    """A follow-view entry: bytes that arrived again after they were delivered. Nothing is
    delivered for them; the view marks where they came."""

    size: int
    differs: bool | None  # from what was delivered first; None when that is no longer kept


# What a Resent entry counts against the keep bounds, so that a flood of duplicates stays bounded.
RESENT_COST: Final = 64

# A follow-view entry: (from_client, ts, offset, bytes delivered | size of a gap | Resent).
Kept = tuple[bool, float, int, "bytes | int | Resent"]


def reverse_key(key: int) -> int:
    if key >> HOST_SHIFT:
        return reverse_key(key & _MFLOW) | (key >> HOST_SHIFT << HOST_SHIFT)
    ports = key & _M32
    rports = ((ports & _M16) << 16) | (ports >> 16)
    if key >= V6_TAG:
        addrs = (key - V6_TAG) >> 32
        raddrs = ((addrs & _M128) << 128) | (addrs >> 128)
        return V6_TAG | (raddrs << 32) | rports
    addrs = key >> 32
    raddrs = ((addrs & _M32) << 32) | (addrs >> 32)
    return (raddrs << 32) | rports


def key_endpoints(key: int) -> tuple[str, str]:
    """("src:port", "dst:port") of the sender of packets with this key."""
    key &= _MFLOW
    ports = key & _M32
    sport, dport = ports >> 16, ports & _M16
    if key >= V6_TAG:
        addrs = (key - V6_TAG) >> 32
        src = socket.inet_ntop(socket.AF_INET6, (addrs >> 128).to_bytes(16, "big"))
        dst = socket.inet_ntop(socket.AF_INET6, (addrs & _M128).to_bytes(16, "big"))
        return f"[{src}]:{sport}", f"[{dst}]:{dport}"
    addrs = key >> 32
    src = socket.inet_ntop(socket.AF_INET, (addrs >> 32).to_bytes(4, "big"))
    dst = socket.inet_ntop(socket.AF_INET, (addrs & _M32).to_bytes(4, "big"))
    return f"{src}:{sport}", f"{dst}:{dport}"


MIDSTREAM = "the capture began inside the connection"


class StreamConsumer(Protocol):
    """Something that reads a connection's reassembled streams (the HTTP parser, a follow writer).

    Each direction's bytes come in order, once, with their stream offset, and with the timestamp
    and acknowledgment number (NO_ACK: none) of the segment that brought them; bytes that were
    never seen come as gaps. Nothing is said about the order between the two directions: it is
    the capture's, which need not be causal (see engine.reassembly).

    A connection whose start the capture did not see (a SYN neither way) begins at the first
    byte the capture showed of each side: the consumers of the protocols beyond HTTP
    (engine.protocols) are then told so before anything else by an empty gap at offset 0 of
    each side, `on_gap(conn, from_client, ts, 0, 0, MIDSTREAM)`, and read on as after lost
    bytes, pairing only what they can pair for certain.
    """

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None: ...

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None: ...

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        """That direction's stream is complete: FIN reached in order, a reset, or the capture ended."""

    def on_close(self, conn: Connection, ts: float) -> None:
        """The connection leaves the table; nothing more will be delivered."""


def endpoints_key(src: str, dst: str) -> int:
    """The key of packets from `src` to `dst` ("addr:port", "[v6addr]:port"): the inverse of
    `key_endpoints`. Raises ValueError for anything else."""
    (sa, sp), (da, dp) = _endpoint(src), _endpoint(dst)
    if len(sa) != len(da):
        raise ValueError(f"{src} and {dst} are not of one address family")
    ports = (sp << 16) | dp
    addrs = (int.from_bytes(sa, "big") << (8 * len(da))) | int.from_bytes(da, "big")
    if len(sa) == 16:
        return V6_TAG | (addrs << 32) | ports
    return (addrs << 32) | ports


def _endpoint(text: str) -> tuple[bytes, int]:
    address, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > _M16:
        raise ValueError(f"not an address and port: {text!r}")
    try:
        if address.startswith("[") and address.endswith("]"):
            return socket.inet_pton(socket.AF_INET6, address[1:-1]), int(port)
        return socket.inet_pton(socket.AF_INET, address), int(port)
    except OSError:
        raise ValueError(f"not an address and port: {text!r}") from None


class HalfStream(Reassembler):
    """One direction of a connection: the bytes one endpoint sent, and what it did."""

    __slots__ = ("ack", "conn", "ended", "fin", "from_client", "letters", "packets", "peer", "syn")
    __deletable__ = ("conn", "peer")  # for a compiled build (mypyc): see Connection.release

    def __init__(self, sink: Sink, conn: Connection, from_client: bool) -> None:
        super().__init__(sink)
        self.conn = conn
        self.peer: HalfStream = self
        self.from_client = from_client
        self.packets = 0
        self.ack = NO_ACK  # the furthest acknowledgment number this side sent
        self.letters = ""
        self.syn = False
        self.fin = False
        self.ended = False  # consumers were told the stream is complete

    def mark(self, letter: str) -> None:
        """Record a history letter (Zeek's conn.log vocabulary: S H A D F R T G I W), once;
        upper case for the client, lower case for the server."""
        if letter not in self.letters:
            self.letters += letter
            self.conn.history += letter if self.from_client else letter.lower()


class Connection:
    """One TCP connection: two half streams, the observer state, counters and consumers."""

    __slots__ = (
        "_endpoints",
        "alpn",
        "certificate",
        "client",
        "client_key",
        "consumers",
        "direction_guessed",
        "dropped_kept",
        "finished_ts",
        "first_packet",
        "first_rst",
        "first_ts",
        "history",
        "host",
        "id",
        "inconsistent",
        "kept",
        "kept_bytes",
        "kept_count",
        "last_packet",
        "last_ts",
        "mark",
        "protocol",
        "server",
        "server_hello",
        "sni",
        "sniffed",
        "sniffing",
        "state",
        "tls_random",
        "tls_status",
        "watch_acks",
    )
    __deletable__ = ("client", "server")  # for a compiled build (mypyc): see release

    def __init__(self, sink: Sink, conn_id: int, ts: float, client_key: int, guessed: bool) -> None:
        self.id = conn_id
        self.client = HalfStream(sink, self, True)
        self.server = HalfStream(sink, self, False)
        self.client.peer = self.server
        self.server.peer = self.client
        self.client_key = client_key  # the table key of the client's packets
        self.host: str | None = None  # the capture host's name, when there are several
        self._endpoints: tuple[str, str] | None = None
        self.state: State | None = None
        self.watch_acks = True  # whether a plain ACK can change the state (engine.tcpstate)
        self.history = ""
        self.direction_guessed = guessed
        self.first_ts = ts
        self.last_ts = ts
        self.protocol: str | None = None
        self.sni: str | None = None
        self.alpn: tuple[str, ...] = ()
        self.server_hello: ServerHello | None = None  # engine.detect.TlsHelloReader sets these
        self.tls_status: str | None = None  # engine.tlsdecrypt: "decrypted", or why not
        self.tls_random: bytes | None = None  # its ClientHello's: names the session in key logs
        self.certificate: Certificate | None = None  # the server's (engine.tls)
        self.consumers: tuple[StreamConsumer, ...] = ()
        # The follow view, oldest first. kept_bytes counts its bytes and RESENT_COST per Resent.
        # In memory, or where a spool holds them (engine.spool).
        self.kept: deque[Kept] | SpooledEntries | None = None
        self.kept_bytes = 0
        self.kept_count = 0  # entries ever added to `kept`: the cursor of the newest, plus one
        self.dropped_kept = 0
        self.inconsistent = 0
        self.first_rst: str | None = None
        self.sniffed: object | None = None  # engine.detect.Sniffer while the protocol is unknown
        self.sniffing = True
        self.mark = -1
        self.finished_ts: float | None = None
        self.first_packet = 0  # number of the packet that opened it, in the whole capture
        self.last_packet = 0  # number of the last packet the table gave it

    def release(self) -> None:
        """Break the references between the connection and its half streams once it has left
        the table, so that reference counting frees it at once. Left as a cycle, every closed
        connection would wait for a full garbage collection, which then stops the whole process
        for as long as it takes to free them all (over half a second after 100,000)."""
        for hs in (self.client, self.server):
            del hs.conn, hs.peer
        del self.client, self.server
        self.consumers = ()
        self.sniffed = None

    @property
    def client_addr(self) -> str:
        return self.endpoints()[0]

    @property
    def server_addr(self) -> str:
        return self.endpoints()[1]

    def endpoints(self) -> tuple[str, str]:
        """("client:port", "server:port"), made on first use: a SYN flood never needs them."""
        if self._endpoints is None:
            self._endpoints = key_endpoints(self.client_key)
        return self._endpoints

    def conn_state(self) -> str:
        return conn_state(
            self.client.syn, self.server.syn, self.client.fin, self.server.fin, self.first_rst
        )

    def peer_offset(self, from_client: bool, ack: int) -> int | None:
        """The stream offset of the other direction that an acknowledgment number sent by this
        side (the client if from_client) covers: how much of it that endpoint had received.
        None when there is no acknowledgment or that stream's start is not known yet."""
        return (self.server if from_client else self.client).acked_offset(ack)

    def kept_range(self, from_client: bool, start: int, end: int) -> bytes | None:
        """The delivered bytes [start, end) of one direction, if they are still kept."""
        if self.kept is None or isinstance(self.kept, SpooledEntries):
            return None  # the table reads a spool (ConnectionTable._spooled_range)
        data = (
            (off, d)
            for fc, _ts, off, d in reversed(self.kept)
            if fc == from_client and not isinstance(d, (int, Resent))
        )  # lazy: the walk stops once it has gone past `start`
        return range_of(data, start, end)


def range_of(newest_first: Iterable[tuple[int, bytes]], start: int, end: int) -> bytes | None:
    """Bytes [start, end) of one direction from its kept data entries (offset, bytes), newest
    first; None if any of them is not kept (trimmed, or a gap in between)."""
    found: list[bytes] = []
    need_end = end
    for off, data in newest_first:
        stop = off + len(data)
        if stop <= start:
            break
        if off >= need_end:
            continue
        if stop < need_end:
            return None  # a gap or trimmed data in between
        found.append(data[max(start, off) - off : need_end - off])
        need_end = max(start, off)
        if need_end <= start:
            break
    if need_end > start:
        return None
    return b"".join(reversed(found))
