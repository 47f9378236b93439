"""Benchmark captures: write large, realistic pcap files fast, streaming to disk.

Each workload is `name(path, **params) -> dict of facts` (packets, connections, transactions,
bytes, ...), so a benchmark can check what the engine reports against what was written. Frames
carry correct IPv4 header and TCP checksums.

Speed comes from linearity: a one's complement checksum is a sum modulo 0xFFFF, so the sum of
everything constant in one direction of a connection (addresses, ports, fixed options) is taken
once, and each packet adds only what changes (lengths, ident, sequence numbers, timestamps, the
payload's own sum). A 32-bit field adds as itself, because 2**16 == 1 modulo 0xFFFF.

Output is deterministic for given parameters (seeded `random.Random`). Nothing here holds a
whole capture in memory or reads the wall clock.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from tests.synth import ip_address_bytes, ones_complement_sum, pcap_header

Facts = dict[str, Any]

LOOPBACK = "127.0.0.1"
LOOPBACK_MAC = b"\x00" * 6  # what Linux puts in both addresses on `lo`
EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_RECORD = struct.Struct("<IIII")
# Ethernet + IPv4 (no options) + TCP with a 32-bit header word layout:
#   16s: MACs, ethertype 0x0800, IP version/IHL and TOS (constant per direction)
#   HHHBBH: total length, ident, flags/fragment, TTL, protocol, header checksum
#   12s: addresses and ports (constant per direction)
#   IIBBHHH: seq, ack, data offset, flags, window, checksum, urgent pointer
# then options: NOP NOP TS for data segments (Linux's usual), MSS SACK_PERM TS NOP WS for SYNs.
_PLAIN = struct.Struct("!16sHHHBBH12sIIBBHHH")
_TS = struct.Struct("!16sHHHBBH12sIIBBHHH4sII")
_SYN_TS = struct.Struct("!16sHHHBBH12sIIBBHHH8sII4s")

_TS_PREFIX = b"\x01\x01\x08\x0a"
_SYN_PREFIX = b"\x02\x04\xff\xd7\x04\x02\x08\x0a"  # MSS 65495 (loopback MTU), SACK permitted, TS
_SYN_SUFFIX = b"\x01\x03\x03\x07"  # NOP, window scale 7
_TS_SUM = ones_complement_sum(_TS_PREFIX)
_SYN_SUM = ones_complement_sum(_SYN_PREFIX + _SYN_SUFFIX)

SYN_WINDOW = 65495
DATA_WINDOW = 512  # 65536 bytes with window scale 7


class _Half:
    """The constant parts of one direction of one TCP connection over Ethernet + IPv4."""

    __slots__ = ("head", "addr_ports", "ip_sum", "tcp_sum", "ident")

    def __init__(self, src: str, dst: str, sport: int, dport: int, *, src_mac: bytes,
                 dst_mac: bytes, ttl: int = 64, ident: int = 0) -> None:
        addrs = ip_address_bytes(src) + ip_address_bytes(dst)
        self.head = dst_mac + src_mac + b"\x08\x00\x45\x00"
        self.addr_ports = addrs + struct.pack("!HH", sport, dport)
        addr_sum = int.from_bytes(addrs, "big") % 0xFFFF
        self.ip_sum = 0x4500 + 0x4000 + (ttl << 8 | 6) + addr_sum
        # Pseudo header (addresses, protocol) and the ports; lengths and the rest come per packet.
        self.tcp_sum = addr_sum + 6 + sport + dport
        self.ident = ident


class _CaptureWriter:
    """Streams Ethernet/IPv4/TCP frames into a classic pcap file, buffering a few MB at a time."""

    def __init__(self, path: str | os.PathLike[str], start: float) -> None:
        self._file = open(path, "wb")
        self._file.write(pcap_header())
        self._parts: list[bytes] = []
        self.now_us = round(start * 1_000_000)
        self.first_us = 0
        self.packets = 0
        self.frame_bytes = 0

    def close(self) -> None:
        self._flush()
        self._file.close()

    def _flush(self) -> None:
        self._file.write(b"".join(self._parts))
        self._parts.clear()

    def _record(self, frame_len: int) -> None:
        if not self.packets:
            self.first_us = self.now_us
        sec, usec = divmod(self.now_us, 1_000_000)
        self._parts.append(_RECORD.pack(sec, usec, frame_len, frame_len))
        self.packets += 1
        self.frame_bytes += frame_len
        if len(self._parts) >= 30_000:
            self._flush()

    def ts_segment(self, h: _Half, seq: int, ack: int, flags: int, tsval: int, tsecr: int,
                   payload: bytes = b"", payload_sum: int = 0, window: int = DATA_WINDOW) -> None:
        """A segment with NOP NOP Timestamps; `payload_sum` is the payload's ones_complement_sum."""
        plen = len(payload)
        ident = h.ident
        h.ident = (ident + 1) & 0xFFFF
        ip_csum = -(h.ip_sum + 52 + plen + ident) % 0xFFFF
        tcp_csum = -(h.tcp_sum + 32 + plen + seq + ack + (0x8000 | flags) + window + _TS_SUM
                     + tsval + tsecr + payload_sum) % 0xFFFF
        self._record(66 + plen)
        parts = self._parts
        parts.append(_TS.pack(h.head, 52 + plen, ident, 0x4000, 64, 6, ip_csum, h.addr_ports,
                              seq, ack, 0x80, flags, window, tcp_csum, 0, _TS_PREFIX, tsval, tsecr))
        if plen:
            parts.append(payload)

    def syn_segment(self, h: _Half, seq: int, ack: int, flags: int, tsval: int, tsecr: int) -> None:
        """A SYN or SYN-ACK with Linux's option set."""
        ident = h.ident
        h.ident = (ident + 1) & 0xFFFF
        ip_csum = -(h.ip_sum + 60 + ident) % 0xFFFF
        tcp_csum = -(h.tcp_sum + 40 + seq + ack + (0xA000 | flags) + SYN_WINDOW + _SYN_SUM
                     + tsval + tsecr) % 0xFFFF
        self._record(74)
        self._parts.append(_SYN_TS.pack(h.head, 60, ident, 0x4000, 64, 6, ip_csum, h.addr_ports,
                                        seq, ack, 0xA0, flags, SYN_WINDOW, tcp_csum, 0,
                                        _SYN_PREFIX, tsval, tsecr, _SYN_SUFFIX))

    def plain_segment(self, head: bytes, addr_ports: bytes, ip_sum: int, tcp_sum: int, ident: int,
                      seq: int, ack: int, flags: int, window: int) -> None:
        """An option-less, payload-less segment; sums as in `_Half` (for one-off flows)."""
        ip_csum = -(ip_sum + 40 + ident) % 0xFFFF
        tcp_csum = -(tcp_sum + 20 + seq + ack + (0x5000 | flags) + window) % 0xFFFF
        self._record(54)
        self._parts.append(_PLAIN.pack(head, 40, ident, 0x4000, 64, 6, ip_csum, addr_ports,
                                       seq, ack, 0x50, flags, window, tcp_csum, 0))


def _payload_sum(payload: bytes) -> int:
    return ones_complement_sum(payload)


class _HttpConnection:
    """One scripted HTTP/1.1 connection on loopback: its two directions and sequence state."""

    __slots__ = ("client", "server", "cseq", "sseq", "cts", "sts", "step", "left")

    def __init__(self, client_port: int, server_port: int, client_isn: int, server_isn: int,
                 ts_offsets: tuple[int, int], ident: int) -> None:
        self.client = _Half(LOOPBACK, LOOPBACK, client_port, server_port,
                            src_mac=LOOPBACK_MAC, dst_mac=LOOPBACK_MAC, ident=ident)
        self.server = _Half(LOOPBACK, LOOPBACK, server_port, client_port,
                            src_mac=LOOPBACK_MAC, dst_mac=LOOPBACK_MAC, ident=0)
        self.cseq = client_isn  # next sequence number each side sends
        self.sseq = server_isn
        self.cts, self.sts = ts_offsets  # per-connection TSval offsets, as Linux randomises them
        self.step = 0
        self.left = 0


def _tsval(now_us: int, offset: int) -> int:
    return (now_us // 1000 + offset) & 0xFFFFFFFF


# Loosely what nginx serves for a static file; the body is our own page, padded to a round size.
_BODY = (
    b"<!DOCTYPE html>\n<html>\n<head>\n<title>wirepeek benchmark</title>\n"
    b"<style>body { width: 40em; margin: 0 auto; font-family: sans-serif; }</style>\n"
    b"</head>\n<body>\n<h1>It works.</h1>\n<p>This page stands in for a small static file "
    b"served over a keep-alive connection. Its size is close to a web server's default index "
    b"page, so the benchmark moves a realistic number of bytes per response.</p>\n"
)
_BODY += b"<!-- " + b"." * (600 - len(_BODY) - 25) + b" -->\n</body>\n</html>\n"


def _response_factory(connection_header: bytes) -> Callable[[int], tuple[bytes, int]]:
    """Responses whose Date header follows the capture clock, cached per second."""
    cache: dict[int, tuple[bytes, int]] = {}

    def response(now_us: int) -> tuple[bytes, int]:
        sec = now_us // 1_000_000
        hit = cache.get(sec)
        if hit is None:
            head = (
                b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: "
                + formatdate(sec, usegmt=True).encode()
                + b"\r\nContent-Type: text/html\r\nContent-Length: %d\r\n" % len(_BODY)
                + b"Last-Modified: Mon, 13 Nov 2023 09:00:00 GMT\r\nConnection: "
                + connection_header
                + b"\r\nETag: \"6551e5d0-%x\"\r\nAccept-Ranges: bytes\r\n\r\n" % len(_BODY)
            )
            payload = head + _BODY
            hit = cache[sec] = (payload, _payload_sum(payload))
        return hit

    return response


def _request(n: int, server_port: int, connection_header: bytes) -> bytes:
    return (b"GET /items/%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: wrk/4.2.0\r\n"
            b"Accept: */*\r\nConnection: %s\r\n\r\n" % (n, server_port, connection_header))


_AGENTS = [
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.%d.%d"
    b" Safari/537.36",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:%d.0) Gecko/20100101 Firefox/%d.%d",
    b"curl/8.%d.%d-%d",
    b"python-requests/2.%d.%d (build %d)",
    b"Go-http-client/1.1 (svc-%d; rev %d.%d)",
    b"okhttp/4.%d.%d (android %d)",
]
_PATHS = [b"/api/v1/users/%d/orders", b"/api/v1/items/%d", b"/static/img/%d.png",
          b"/search?q=item%d&page=2", b"/api/v2/carts/%d/lines?expand=price"]


class _Varied:
    """Heads as real clients and nginx send them: no two alike. Each request has an id in its
    path, its own session cookie and a user agent with versions drawn at random; each answer a
    request id, an ETag and a body size of its own, and the Date of the capture clock."""

    def __init__(self, rng: random.Random, server_port: int, connection_header: bytes) -> None:
        self.rng = rng
        self.host = b"127.0.0.1:%d" % server_port
        self.connection = connection_header

    def request(self, n: int) -> bytes:
        bits = self.rng.getrandbits
        agent = _AGENTS[n % len(_AGENTS)] % (bits(7), bits(12), bits(8))
        path = _PATHS[bits(8) % len(_PATHS)] % n
        return (b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: application/json,"
                b" text/html;q=0.9\r\nAccept-Encoding: gzip, br\r\nCookie: sid=%032x;"
                b" _ga=GA1.2.%d.%d\r\nConnection: %s\r\n\r\n"
                % (path, self.host, agent, bits(128), bits(30), 1_700_000_000 + bits(20),
                   self.connection))

    def response(self, now_us: int) -> tuple[bytes, int]:
        bits = self.rng.getrandbits
        size = 200 + bits(10)
        body = _BODY[: min(size, len(_BODY))].ljust(size, b".")
        head = (
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: "
            + formatdate(now_us // 1_000_000, usegmt=True).encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % size
            + b"Connection: " + self.connection
            + b"\r\nETag: \"%x-%x\"\r\nX-Request-Id: %032x\r\nCache-Control: private,"
              b" max-age=%d\r\n\r\n" % (bits(32), size, bits(128), bits(12))
        )
        payload = head + body
        return payload, _payload_sum(payload)


def _facts(w: _CaptureWriter, path: str | os.PathLike[str], **more: Any) -> Facts:
    return {
        "path": os.fspath(path),
        "packets": w.packets,
        "frame_bytes": w.frame_bytes,
        "first_ts": w.first_us / 1_000_000,
        "last_ts": w.now_us / 1_000_000,
        **more,
    }


def keepalive_http(
    path: str | os.PathLike[str],
    connections: int = 50,
    transactions: int = 115_000,
    *,
    server_port: int = 8080,
    seed: int = 1,
    start: float = 1_700_000_000.0,
    bare_acks: bool = False,
    vary: bool = False,
) -> Facts:
    """wrk-style load on nginx over loopback: `connections` keep-alive connections share
    `transactions` GET requests (each request's target is /items/N, N unique from 0), each
    answered with a 200 and a Content-Length body, interleaved across connections.

    As on a real loopback capture, each request carries the ACK of the previous response and
    each response the ACK of its request: two packets per transaction (`bare_acks` adds an ACK
    after each, four per transaction). Handshakes open the capture, FIN/FIN/ACK closes it.
    The first connection's ISNs sit just below 2**32 so its sequence numbers wrap.
    `vary`: every head unique, as in real traffic (see `_Varied`); otherwise the request heads
    differ only in the target and the response heads repeat within each second.
    """
    rng = random.Random(seed)
    w = _CaptureWriter(path, start)
    conns = _open_connections(w, rng, connections, server_port)
    base, extra = divmod(transactions, max(1, connections))
    for i, c in enumerate(conns):
        c.left = base + (i < extra)
    active = [c for c in conns if c.left]
    keep_alive = b"keep-alive"
    varied = _Varied(random.Random(seed + 100), server_port, keep_alive) if vary else None
    response = varied.response if varied else _response_factory(keep_alive)
    ts_segment = w.ts_segment
    getrandbits = rng.getrandbits
    client_bytes = server_bytes = 0
    n = 0
    while active:
        i = getrandbits(16) % len(active)
        c = active[i]
        w.now_us += 1 + getrandbits(4)
        now = w.now_us
        if c.step == 0:  # request
            req = varied.request(n) if varied else _request(n, server_port, keep_alive)
            n += 1
            ts_segment(c.client, c.cseq, c.sseq, PSH | ACK, _tsval(now, c.cts), _tsval(now, c.sts),
                       req, _payload_sum(req))
            c.cseq = (c.cseq + len(req)) & 0xFFFFFFFF
            client_bytes += len(req)
            c.step = 1
            if bare_acks:
                w.now_us += 1 + getrandbits(4)
                ts_segment(c.server, c.sseq, c.cseq, ACK, _tsval(w.now_us, c.sts),
                           _tsval(now, c.cts))
        else:  # response
            payload, psum = response(now)
            ts_segment(c.server, c.sseq, c.cseq, PSH | ACK, _tsval(now, c.sts), _tsval(now, c.cts),
                       payload, psum)
            c.sseq = (c.sseq + len(payload)) & 0xFFFFFFFF
            server_bytes += len(payload)
            c.step = 0
            c.left -= 1
            if bare_acks:
                w.now_us += 1 + getrandbits(4)
                ts_segment(c.client, c.cseq, c.sseq, ACK, _tsval(w.now_us, c.cts),
                           _tsval(now, c.sts))
            if not c.left:
                active[i] = active[-1]
                active.pop()
    for c in conns:
        _client_close(w, c, rng)
    w.close()
    return _facts(w, path, connections=connections, transactions=n,
                  bytes=client_bytes + server_bytes, client_bytes=client_bytes,
                  server_bytes=server_bytes)


def _open_connections(w: _CaptureWriter, rng: random.Random, count: int,
                      server_port: int) -> list[_HttpConnection]:
    """Handshakes of `count` loopback connections from distinct ephemeral ports, one after
    another, as wrk opens them."""
    ports = rng.sample(EPHEMERAL_PORTS, count)
    conns = []
    for i, port in enumerate(ports):
        if i == 0:
            isns = (2**32 - 3_000, 2**32 - 40_000)  # wrap early in both directions
        else:
            isns = (rng.getrandbits(32), rng.getrandbits(32))
        c = _HttpConnection(port, server_port, isns[0], isns[1],
                            (rng.getrandbits(32), rng.getrandbits(32)), rng.getrandbits(16))
        _handshake(w, c, rng)
        conns.append(c)
    return conns


def _handshake(w: _CaptureWriter, c: _HttpConnection, rng: random.Random) -> None:
    w.now_us += 5 + rng.getrandbits(5)
    w.syn_segment(c.client, c.cseq, 0, SYN, _tsval(w.now_us, c.cts), 0)
    c.cseq = (c.cseq + 1) & 0xFFFFFFFF
    w.now_us += 2 + rng.getrandbits(3)
    w.syn_segment(c.server, c.sseq, c.cseq, SYN | ACK, _tsval(w.now_us, c.sts),
                  _tsval(w.now_us, c.cts))
    c.sseq = (c.sseq + 1) & 0xFFFFFFFF
    w.now_us += 2 + rng.getrandbits(3)
    w.ts_segment(c.client, c.cseq, c.sseq, ACK, _tsval(w.now_us, c.cts), _tsval(w.now_us, c.sts))


def _client_close(w: _CaptureWriter, c: _HttpConnection, rng: random.Random) -> None:
    """Client FIN, server FIN-ACK, client ACK."""
    w.now_us += 5 + rng.getrandbits(5)
    now = w.now_us
    w.ts_segment(c.client, c.cseq, c.sseq, FIN | ACK, _tsval(now, c.cts), _tsval(now, c.sts))
    c.cseq = (c.cseq + 1) & 0xFFFFFFFF
    w.now_us += 2 + rng.getrandbits(3)
    w.ts_segment(c.server, c.sseq, c.cseq, FIN | ACK, _tsval(w.now_us, c.sts), _tsval(now, c.cts))
    c.sseq = (c.sseq + 1) & 0xFFFFFFFF
    w.now_us += 2 + rng.getrandbits(3)
    w.ts_segment(c.client, c.cseq, c.sseq, ACK, _tsval(w.now_us, c.cts), _tsval(now, c.sts))


def conn_per_request_http(
    path: str | os.PathLike[str],
    connections: int = 27_600,
    *,
    concurrency: int = 50,
    server_port: int = 8080,
    seed: int = 2,
    start: float = 1_700_000_000.0,
    vary: bool = False,
) -> Facts:
    """One loopback connection per GET (with "Connection: close"), `concurrency` of them open at
    a time and interleaved, ten packets each: SYN, SYN-ACK, ACK, request, ACK, response, ACK,
    server FIN, client FIN, server ACK. Client ports walk the ephemeral range in order and are
    reused once it is exhausted (beyond 28,232 connections). `vary`: as for keepalive_http."""
    rng = random.Random(seed)
    w = _CaptureWriter(path, start)
    varied = _Varied(random.Random(seed + 100), server_port, b"close") if vary else None
    response = varied.response if varied else _response_factory(b"close")
    ports = EPHEMERAL_PORTS
    getrandbits = rng.getrandbits
    ts_segment = w.ts_segment
    client_bytes = server_bytes = 0
    started = 0
    active: list[_HttpConnection] = []
    while active or started < connections:
        while len(active) < concurrency and started < connections:
            c = _HttpConnection(ports[started % len(ports)], server_port, getrandbits(32),
                                getrandbits(32), (getrandbits(32), getrandbits(32)),
                                getrandbits(16))
            c.left = started  # request number, for the target
            started += 1
            active.append(c)
        i = getrandbits(16) % len(active)
        c = active[i]
        w.now_us += 1 + getrandbits(4)
        now = w.now_us
        step = c.step
        c.step = step + 1
        if step == 0:
            w.syn_segment(c.client, c.cseq, 0, SYN, _tsval(now, c.cts), 0)
            c.cseq = (c.cseq + 1) & 0xFFFFFFFF
        elif step == 1:
            w.syn_segment(c.server, c.sseq, c.cseq, SYN | ACK, _tsval(now, c.sts),
                          _tsval(now, c.cts))
            c.sseq = (c.sseq + 1) & 0xFFFFFFFF
        elif step == 2:
            ts_segment(c.client, c.cseq, c.sseq, ACK, _tsval(now, c.cts), _tsval(now, c.sts))
        elif step == 3:
            req = varied.request(c.left) if varied else _request(c.left, server_port, b"close")
            ts_segment(c.client, c.cseq, c.sseq, PSH | ACK, _tsval(now, c.cts), _tsval(now, c.sts),
                       req, _payload_sum(req))
            c.cseq = (c.cseq + len(req)) & 0xFFFFFFFF
            client_bytes += len(req)
        elif step == 4:
            ts_segment(c.server, c.sseq, c.cseq, ACK, _tsval(now, c.sts), _tsval(now, c.cts))
        elif step == 5:
            payload, psum = response(now)
            ts_segment(c.server, c.sseq, c.cseq, PSH | ACK, _tsval(now, c.sts), _tsval(now, c.cts),
                       payload, psum)
            c.sseq = (c.sseq + len(payload)) & 0xFFFFFFFF
            server_bytes += len(payload)
        elif step == 6:
            ts_segment(c.client, c.cseq, c.sseq, ACK, _tsval(now, c.cts), _tsval(now, c.sts))
        elif step == 7:
            ts_segment(c.server, c.sseq, c.cseq, FIN | ACK, _tsval(now, c.sts), _tsval(now, c.cts))
            c.sseq = (c.sseq + 1) & 0xFFFFFFFF
        elif step == 8:
            ts_segment(c.client, c.cseq, c.sseq, FIN | ACK, _tsval(now, c.cts), _tsval(now, c.sts))
            c.cseq = (c.cseq + 1) & 0xFFFFFFFF
        else:
            ts_segment(c.server, c.sseq, c.cseq, ACK, _tsval(now, c.sts), _tsval(now, c.cts))
            active[i] = active[-1]
            active.pop()
    w.close()
    return _facts(w, path, connections=connections, transactions=connections,
                  bytes=client_bytes + server_bytes, client_bytes=client_bytes,
                  server_bytes=server_bytes)


def syn_flood(
    path: str | os.PathLike[str],
    connections: int = 500_000,
    *,
    server: str = "192.0.2.80",
    server_port: int = 80,
    syn_ack_every: int = 1_000,
    seed: int = 3,
    start: float = 1_700_000_000.0,
) -> Facts:
    """Spoofed SYNs (no options, as flooding tools send them) from `connections` distinct
    addresses in 10.0.0.0/8 with scattered source ports to one server port; the server answers
    one SYN in `syn_ack_every` with a SYN-ACK (its backlog is full for the rest). No handshake
    completes and no payload is sent."""
    if connections > 1 << 24:
        raise ValueError("at most 2**24 distinct sources")
    rng = random.Random(seed)
    w = _CaptureWriter(path, start)
    client_mac, server_mac = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000bb02")
    dst = ip_address_bytes(server)
    dst_sum = int.from_bytes(dst, "big")
    to_server = server_mac + client_mac + b"\x08\x00\x45\x00"
    to_client = client_mac + server_mac + b"\x08\x00\x45\x00"
    ip_const = 0x4500 + 0x4000 + (64 << 8 | 6)
    getrandbits = rng.getrandbits
    plain = w.plain_segment
    syn_acks = 0
    server_ident = 0
    for i in range(connections):
        # An odd multiplier permutes 2**24, so every source address is distinct.
        host = (i * 0x9E3779 + 1) & 0xFFFFFF
        src_int = 0x0A000000 | host
        sport = 1024 + (host * 40503 >> 8) % 64511
        seq = getrandbits(32)
        ident = getrandbits(16)
        src = src_int.to_bytes(4, "big")
        addr_sum = src_int + dst_sum
        w.now_us += 1 + getrandbits(2)
        plain(to_server, src + dst + struct.pack("!HH", sport, server_port), ip_const + addr_sum,
              addr_sum + 6 + sport + server_port, ident, seq, 0, SYN, 1024)
        if syn_ack_every and i % syn_ack_every == 0:
            w.now_us += 1 + getrandbits(3)
            plain(to_client, dst + src + struct.pack("!HH", server_port, sport),
                  ip_const + addr_sum, addr_sum + 6 + sport + server_port, server_ident,
                  getrandbits(32), (seq + 1) & 0xFFFFFFFF, SYN | ACK, 64240)
            server_ident = (server_ident + 1) & 0xFFFF
            syn_acks += 1
    w.close()
    return _facts(w, path, connections=connections, transactions=0, bytes=0, client_bytes=0,
                  server_bytes=0, syn_acks=syn_acks)


WORKLOADS: dict[str, Callable[..., Facts]] = {
    "keepalive_http": keepalive_http,
    "conn_per_request_http": conn_per_request_http,
    "syn_flood": syn_flood,
}
