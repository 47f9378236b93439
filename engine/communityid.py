"""Community ID flow hashes (version 1), so that records join with Zeek's, Suricata's and
Packetbeat's for the same flow.

The hash is SHA-1 over a seed and the flow's two endpoints in a canonical order (the smaller
address first, the smaller port when the addresses are equal), then the protocol and the ports,
written as "1:" and the digest in base64. ICMP and ICMPv6 put the message type and code where
the ports go, and the type of the answer instead of the code when the message has one, so that
a request and its reply hash alike; messages without one are one-way and keep their order.
The specification and its test vectors: github.com/corelight/community-id-spec.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct

TCP, UDP, ICMP, ICMP6, SCTP = 6, 17, 1, 58, 132
_PORTED = frozenset({TCP, UDP, SCTP, ICMP, ICMP6})

# Message types that have an answer, both ways (echo, timestamp, information, router, address
# mask; for ICMPv6 echo, multicast listener, router, neighbour, node information, home agent).
_ICMP_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129,
    129: 128,
    130: 131,
    131: 130,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    139: 140,
    140: 139,
    144: 145,
    145: 144,
}
_ports = struct.Struct("!HH").pack


def community_id(
    src: bytes, dst: bytes, proto: int, sport: int = 0, dport: int = 0, seed: int = 0
) -> str:
    """The Community ID of a flow from `src` to `dst` (packed addresses: 4 or 16 bytes). For
    ICMP and ICMPv6, sport is the message type and dport its code. Ports of other protocols
    than TCP, UDP, SCTP and ICMP are not part of the hash."""
    one_way = False
    if proto in (ICMP, ICMP6):
        pairs = _ICMP_PAIRS if proto == ICMP else _ICMP6_PAIRS
        answer = pairs.get(sport)
        if answer is None:
            one_way = True
        else:
            dport = answer
    if not one_way and (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    data = seed.to_bytes(2, "big") + src + dst + bytes((proto, 0))
    if proto in _PORTED:
        data += _ports(sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def _address(text: str) -> tuple[bytes, int]:
    """Packed address and port of "addr:port" or "[v6addr]:port"."""
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        return socket.inet_pton(socket.AF_INET6, host[1:-1]), int(port)
    return socket.inet_aton(host), int(port)


def tcp_community_id(client: str, server: str, seed: int = 0, proto: int = TCP) -> str:
    """The Community ID of a TCP connection (or, with proto 17, a UDP flow) from its
    endpoints as the records write them."""
    (src, sport), (dst, dport) = _address(client), _address(server)
    return community_id(src, dst, proto, sport, dport, seed)
