"""Link-layer and IP decoding on a batch buffer, by offsets, without copying.

Functions here take the whole batch buffer and the offsets of one packet, and answer with
offsets into the same buffer, so the hot loop makes no object per header. They never raise on
malformed input: they return None, and the caller counts the packet as malformed.

Link types (libpcap's LINKTYPE_* numbers): Ethernet with 802.1Q/802.1ad/QinQ tags, PPPoE session
and MPLS; Linux cooked v1 and v2; BSD NULL and LOOP; raw IP (three numbers); NFLOG.
"""

from __future__ import annotations

import struct

from engine.tcp import V6_TAG

ETHERNET = 1
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

TCP = 6

_u16 = struct.Struct("!H").unpack_from
_u16le = struct.Struct("<H").unpack_from


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
            if off + 8 > end:
                return None
            # PPP may compress its protocol field to one byte (RFC 1661 6.5): odd means compressed.
            if buf[off + 6] & 1:
                proto, ip = buf[off + 6], off + 7
            else:
                proto, ip = _u16(buf, off + 6)[0], off + 8
            if proto == PPP_IPV4:
                return 4, ip
            if proto == PPP_IPV6:
                return 6, ip
            return None
        if ethertype in ETH_MPLS:
            while off + 4 <= end:
                bottom = buf[off + 2] & 1
                off += 4
                if bottom:
                    return _by_version(buf, off, end)
            return None
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


def tcp_key(linktype: int, buf: bytes, off: int, end: int) -> int | None:
    """The connection table key (see `engine.tcp`) of the TCP segment at buf[off:end], from its
    sender's side; None if it is not TCP or is a fragment (only the reassembled datagram has both
    ports for certain)."""
    found = network_offset(linktype, buf, off, end)
    if found is None:
        return None
    version, ip = found
    if version == 4:
        if ip + 20 > end:
            return None
        ihl = (buf[ip] & 15) << 2
        if buf[ip + 9] != TCP or _u16(buf, ip + 6)[0] & 0x3FFF or ihl < 20:
            return None
        addrs = int.from_bytes(buf[ip + 12 : ip + 20], "big")
        l4 = ip + ihl
    else:
        walked = ipv6_payload(buf, ip, end)
        if walked is None:
            return None
        proto, l4, _stop, frag_at = walked
        if proto != TCP or frag_at is not None:
            return None
        addrs = int.from_bytes(buf[ip + 8 : ip + 40], "big") | V6_TAG >> 32
    if l4 + 4 > end:
        return None
    return (addrs << 32) | int.from_bytes(buf[l4 : l4 + 4], "big")
