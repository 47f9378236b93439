"""Link-layer, IP and tunnel decoding on a batch buffer, by offsets, without copying.

Functions here take the whole batch buffer and the offsets of one packet, and answer with
offsets into the same buffer, so the hot loop makes no object per header. They never raise on
malformed input: they return None (or a status, for `decapsulate`), and the caller counts the
packet as malformed, truncated or other.

Link types (libpcap's LINKTYPE_* numbers): Ethernet with 802.1Q/802.1ad/QinQ tags, PPPoE session
and MPLS; Linux cooked v1 and v2; BSD NULL and LOOP; raw IP (three numbers); NFLOG.

Tunnels, opened one level at a time by `decapsulate` down to the packet they carry, over IPv4 or
IPv6 alike: IP-in-IP (protocol 4: IPIP, 4in6) and IPv6-in-IP (41: 6in4/6to4/SIT, 6in6); GRE (47)
version 0 with its optional checksum, key and sequence fields, carrying IPv4, IPv6, MPLS, an
Ethernet frame (0x6558, VLAN tags and all) or ERSPAN types I, II and III (mirror ports); GRE
version 1 as PPTP uses it (PPP inside; encrypted or compressed PPP is opaque); VXLAN (UDP
destination port 4789) and Geneve (UDP 6081). GRE with the routing bit (RFC 1701 source routes)
is not opened. At most `MAX_ENCAPSULATION` tunnels are opened per packet, so no packet can make
a caller loop. `tcp_key` and the pipeline walk the same `decapsulate`, so both find a tunnelled
segment under its inner addresses and ports.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from engine.tcp import V6_TAG

ETHERNET: Final = 1
NULL = 0
RAW_BSD = 12
RAW_OPENBSD = 14
RAW = 101
LOOP = 108
LINUX_SLL = 113
NFLOG = 239
RAW_IPV4 = 228
RAW_IPV6 = 229
LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    {
        ETHERNET,
        NULL,
        RAW_BSD,
        RAW_OPENBSD,
        RAW,
        LOOP,
        LINUX_SLL,
        NFLOG,
        RAW_IPV4,
        RAW_IPV6,
        LINUX_SLL2,
    }
)
"""The link types `network_offset` decodes (the fuzz test draws from them)."""

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = frozenset({0x8847, 0x8848})
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
# BSD address families for IPv6 differ per system: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, macOS 30.
AF_INET = 2
AF_INET6 = frozenset({10, 24, 28, 30})

TCP: Final = 6

_u16: Final = struct.Struct("!H").unpack_from
_u16le: Final = struct.Struct("<H").unpack_from


def network_offset(linktype: int, buf: bytes, off: int, end: int) -> tuple[int, int] | None:
    """(IP version, offset of the IP header) of the packet at buf[off:end], or None if not IP."""
    if linktype == ETHERNET:
        return _ethernet(buf, off + 12, end)
    if linktype == LINUX_SLL:
        if end - off < 16:
            return None
        return _ethertype(_u16(buf, off + 14)[0], buf, off + 16, end)
    if linktype == LINUX_SLL2:
        if end - off < 20:
            return None
        return _ethertype(_u16(buf, off)[0], buf, off + 20, end)
    if linktype in (NULL, LOOP):
        if end - off < 4:
            return None
        # NULL stores the family in the capturing host's byte order: the small value is in one end.
        family = buf[off] | buf[off + 3]
        if family == AF_INET:
            return 4, off + 4
        if family in AF_INET6:
            return 6, off + 4
        return None
    if linktype in (RAW, RAW_BSD, RAW_OPENBSD, RAW_IPV4, RAW_IPV6):
        return _by_version(buf, off, end)
    if linktype == NFLOG:
        return _nflog(buf, off, end)
    return None


def _by_version(buf: bytes, off: int, end: int) -> tuple[int, int] | None:
    if off >= end:
        return None
    version = buf[off] >> 4
    if version == 4 or version == 6:
        return version, off
    return None


def _ethernet(buf: bytes, type_off: int, end: int) -> tuple[int, int] | None:
    if type_off + 2 > end:
        return None
    return _ethertype(_u16(buf, type_off)[0], buf, type_off + 2, end)


def _ethertype(ethertype: int, buf: bytes, off: int, end: int) -> tuple[int, int] | None:
    # Tags are bounded by the packet length, so this loop ends on any input.
    while True:
        if ethertype == ETH_IPV4:
            return 4, off
        if ethertype == ETH_IPV6:
            return 6, off
        if ethertype in ETH_VLAN_TAGS:
            if off + 4 > end:
                return None
            ethertype = _u16(buf, off + 2)[0]
            off += 4
            continue
        if ethertype == ETH_PPPOE_SESSION:
            return _ppp(buf, off + 6, end)
        if ethertype in ETH_MPLS:
            while off + 4 <= end:
                bottom = buf[off + 2] & 1
                off += 4
                if bottom:
                    return _by_version(buf, off, end)
            return None
        return None


def _ppp(buf: bytes, off: int, end: int) -> tuple[int, int] | None:
    """A PPP frame's IP packet, past the protocol field at buf[off]."""
    if off + 2 > end:
        return None
    # PPP may compress its protocol field to one byte (RFC 1661 6.5): odd means compressed.
    if buf[off] & 1:
        proto, ip = buf[off], off + 1
    else:
        proto, ip = _u16(buf, off)[0], off + 2
    if proto == PPP_IPV4:
        return 4, ip
    if proto == PPP_IPV6:
        return 6, ip
    return None


def _nflog(buf: bytes, off: int, end: int) -> tuple[int, int] | None:
    # NFLOG: 4-byte header (family, version, resource id), then TLVs in the host's byte order
    # (little-endian in practice), each padded to 4 bytes; type 9 holds the packet.
    pos = off + 4
    while pos + 4 <= end:
        length, tlv_type = _u16le(buf, pos)[0], _u16le(buf, pos + 2)[0]
        if length < 4:
            return None
        if tlv_type == 9:
            return _by_version(buf, pos + 4, min(end, pos + length))
        pos += (length + 3) & ~3
    return None


# IPv6 extension headers that we walk through to find TCP: hop-by-hop, routing, destination
# options, mobility. Fragment (44) and AH (51) are handled separately.
IPV6_SKIPPABLE = frozenset({0, 43, 60, 135})
IPV6_FRAGMENT = 44
IPV6_AH = 51


def ipv6_payload(buf: bytes, off: int, end: int) -> tuple[int, int, int, int | None] | None:
    """Walk IPv6 extension headers: (next header, payload offset, payload end, fragment header offset)."""
    if off + 40 > end:
        return None
    plen = _u16(buf, off + 4)[0]
    stop = off + 40 + plen if plen else end  # a zero length means a jumbogram: trust the capture
    stop = min(stop, end)  # cut by the snapshot length; the caller compares with the real length
    nh = buf[off + 6]
    pos = off + 40
    frag = None
    for _ in range(16):
        if nh in IPV6_SKIPPABLE:
            if pos + 2 > stop:
                return None
            nh, pos = buf[pos], pos + (buf[pos + 1] + 1) * 8
        elif nh == IPV6_AH:
            if pos + 2 > stop:
                return None
            nh, pos = buf[pos], pos + (buf[pos + 1] + 2) * 4
        elif nh == IPV6_FRAGMENT:
            if pos + 8 > stop:
                return None
            frag = pos
            nh, pos = buf[pos], pos + 8
        else:
            break
    if pos > stop:
        return None
    return nh, pos, off + 40 + plen if plen else stop, frag


# --- tunnels --------------------------------------------------------------------------------

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
UDP: Final = 17
VXLAN_PORT = 4789  # IANA's; Linux's old default 8472 (flannel) is not opened
GENEVE_PORT = 6081
# Every transport protocol that may carry a tunnel. The pipeline's fast path (Ethernet, IPv4,
# TCP) never sees them, so tunnels cost nothing to the packets that are not in one.
CARRIERS: Final = frozenset({IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE, UDP})
MAX_ENCAPSULATION: Final = 4  # tunnels opened per packet, outermost first; deeper ones are "other"

# What `decapsulate` found, besides an IP version (4 or 6) with the inner header's offset.
NOT_A_TUNNEL: Final = 0  # a transport we do not open (plain UDP): counted as it always was
OPAQUE: Final = 1  # a tunnel whose payload is not an IP packet we decode: counted as other
CUT: Final = 2  # the tunnel header ends past `end`; the offset says where it would end
MALFORMED = 3  # a header that contradicts itself (an inner IP header of the wrong version)

GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_ACK = 0x0080  # version 1 (PPTP) only
ETH_TRANSPARENT_BRIDGING = 0x6558
ETH_ERSPAN_1_2 = 0x88BE
ETH_ERSPAN_3 = 0x22EB
ETH_PPP = 0x880B

_u16x2: Final = struct.Struct("!HH").unpack_from


def decapsulate(proto: int, buf: bytes, off: int, end: int) -> tuple[int, int]:
    """Open one tunnel: the payload of IP protocol `proto` at buf[off:end] (cut at the outer
    packet's end), as (4 or 6, offset of the inner IP header), or (status, offset) with a status
    above: NOT_A_TUNNEL, OPAQUE, CUT (offset: where the header would end) or MALFORMED.

    The inner packet's connections are keyed by their own addresses and ports only, so two
    tunnels carrying the same inner 5-tuple (overlapping private addresses, say) are one
    connection to the caller, and inner fragments with the same addresses and identification
    are one datagram: there is no tunnel identity in a key.
    """
    if proto == IPPROTO_IPIP:
        found = 4, off
    elif proto == IPPROTO_IPV6:
        found = 6, off
    elif proto == IPPROTO_GRE:
        found = _gre(buf, off, end)
    elif proto == UDP:
        found = _udp_tunnel(buf, off, end)
    else:
        return NOT_A_TUNNEL, 0
    version, at = found
    if version == 4 or version == 6:
        if at >= end:
            return CUT, at + 1
        if buf[at] >> 4 != version:
            return MALFORMED, at
    return found


def _gre(buf: bytes, off: int, end: int) -> tuple[int, int]:
    if off + 4 > end:
        return CUT, off + 4
    flags, ptype = _u16x2(buf, off)
    version = flags & 7
    if version == 0:
        if flags & GRE_ROUTING:
            return OPAQUE, 0
        # Checksum (with the reserved offset), key and sequence number: 4 bytes each, in order.
        at = off + 4
        at += 4 if flags & GRE_CHECKSUM else 0
        at += 4 if flags & GRE_KEY else 0
        at += 4 if flags & GRE_SEQUENCE else 0
        if at > end:
            return CUT, at
        return _gre_payload(ptype, flags, buf, at, end)
    if version == 1 and ptype == ETH_PPP and flags & GRE_KEY:
        # PPTP (RFC 2637): the key holds the payload length and call id; then sequence and
        # acknowledgement numbers when their bits are set. A packet with no payload is an ack.
        at = off + 8 + (4 if flags & GRE_SEQUENCE else 0) + (4 if flags & GRE_ACK else 0)
        if at > end:
            return CUT, at
        if not _u16(buf, off + 4)[0]:
            return OPAQUE, 0
        # Address and control bytes (0xFF 0x03) are there unless both ends agreed to drop them.
        if at + 2 <= end and buf[at] == 0xFF and buf[at + 1] == 0x03:
            at += 2
        return _found(_ppp(buf, at, end))
    return OPAQUE, 0


def _gre_payload(ptype: int, flags: int, buf: bytes, at: int, end: int) -> tuple[int, int]:
    if ptype == ETH_TRANSPARENT_BRIDGING:
        return _found(_ethernet(buf, at + 12, end))
    if ptype == ETH_ERSPAN_1_2:
        # Type I has no header of its own and no GRE sequence number; type II has both.
        if not flags & GRE_SEQUENCE:
            return _found(_ethernet(buf, at + 12, end))
        if at + 8 > end:
            return CUT, at + 8
        if buf[at] >> 4 != 1:
            return OPAQUE, 0
        return _found(_ethernet(buf, at + 8 + 12, end))
    if ptype == ETH_ERSPAN_3:
        # 12 bytes; the last two hold the frame type (bits 2-6 of the first) and, in the last
        # bit, whether an 8-byte platform-specific subheader follows.
        if at + 12 > end:
            return CUT, at + 12
        if buf[at] >> 4 != 2:
            return OPAQUE, 0
        frame_type = (buf[at + 10] >> 2) & 0x1F
        inner = at + (20 if buf[at + 11] & 1 else 12)
        if frame_type == 0:
            return _found(_ethernet(buf, inner + 12, end))
        if frame_type == 2:
            return _found(_by_version(buf, inner, end))
        return OPAQUE, 0
    # Otherwise the protocol type is an Ethernet type: IPv4, IPv6, MPLS and the like.
    return _found(_ethertype(ptype, buf, at, end))


def _udp_tunnel(buf: bytes, off: int, end: int) -> tuple[int, int]:
    if off + 8 > end:
        return NOT_A_TUNNEL, 0  # no port to go by: plain UDP
    port = _u16(buf, off + 2)[0]
    at = off + 8
    if port == VXLAN_PORT:
        if at + 8 > end:
            return CUT, at + 8
        if not buf[at] & 0x08:  # the I flag: a VNI follows, as RFC 7348 requires
            return NOT_A_TUNNEL, 0
        return _found(_ethernet(buf, at + 8 + 12, end))
    if port == GENEVE_PORT:
        if at + 8 > end:
            return CUT, at + 8
        if buf[at] >> 6:  # version 0 is the only one there is
            return NOT_A_TUNNEL, 0
        ptype = _u16(buf, at + 2)[0]
        inner = at + 8 + (buf[at] & 0x3F) * 4  # past the options
        if inner > end:
            return CUT, inner
        if ptype == ETH_TRANSPARENT_BRIDGING:
            return _found(_ethernet(buf, inner + 12, end))
        return _found(_ethertype(ptype, buf, inner, end))
    return NOT_A_TUNNEL, 0


def _found(found: tuple[int, int] | None) -> tuple[int, int]:
    # An inner link layer that holds no IP (ARP, a frame cut short) is what the outermost one
    # would be: not something we decode.
    return (OPAQUE, 0) if found is None else found


class TcpAt(NamedTuple):
    """Where the innermost TCP segment of a packet is (see `innermost_tcp`)."""

    version: int  # of the IP header that carries it: 4 or 6
    ip: int  # offset of that IP header
    l4: int  # offset of the TCP header
    wire_end: int  # where the IP datagram ends on the wire (may be past what was captured)
    end: int  # where the captured bytes of that datagram end


def innermost_tcp(linktype: int, buf: bytes, off: int, end: int, udp: bool = False) -> TcpAt | None:
    """The TCP segment at buf[off:end], inside as many tunnels as the pipeline opens; None if
    it is not TCP, is a fragment at any level (only the reassembled datagram has both ports for
    certain), or its ports were not captured. udp: a UDP datagram that is no tunnel too (the
    DNS flows of engine.dns)."""
    found = network_offset(linktype, buf, off, end)
    if found is None:
        return None
    version, ip = found
    for depth in range(MAX_ENCAPSULATION + 1):
        if version == 4:
            if ip + 20 > end:
                return None
            ihl = (buf[ip] & 15) << 2
            total = _u16(buf, ip + 2)[0]
            if _u16(buf, ip + 6)[0] & 0x3FFF or ihl < 20:
                return None
            proto = buf[ip + 9]
            l4 = ip + ihl
            wire_end = ip + total if total else end
        else:
            walked = ipv6_payload(buf, ip, end)
            if walked is None:
                return None
            proto, l4, wire_end, frag_at = walked
            if frag_at is not None:
                return None
        if proto == TCP:
            return TcpAt(version, ip, l4, wire_end, end) if l4 + 4 <= end else None
        stop = min(wire_end, end)  # an inner packet cannot run past the outer one
        kind, inner = (
            decapsulate(proto, buf, l4, stop) if depth < MAX_ENCAPSULATION else (NOT_A_TUNNEL, 0)
        )
        if kind != 4 and kind != 6:
            if udp and proto == UDP and kind == NOT_A_TUNNEL and l4 + 4 <= end:
                return TcpAt(version, ip, l4, wire_end, end)
            return None
        version, ip, end = kind, inner, stop
    return None


def tcp_key(linktype: int, buf: bytes, off: int, end: int, udp: bool = False) -> int | None:
    """The connection table key (see `engine.tcp`) of the TCP segment at buf[off:end], from its
    sender's side (see `innermost_tcp` for when there is none); udp: of a UDP datagram too."""
    at = innermost_tcp(linktype, buf, off, end, udp)
    if at is None:
        return None
    ip, l4 = at.ip, at.l4
    if at.version == 4:
        addrs = int.from_bytes(buf[ip + 12 : ip + 20], "big")
    else:
        addrs = int.from_bytes(buf[ip + 8 : ip + 40], "big") | V6_TAG >> 32
    return (addrs << 32) | int.from_bytes(buf[l4 : l4 + 4], "big")
