"""Packet crafting for wirepeek's tests: frames and pcap files built with plain struct.

Everything here builds bytes exactly as they would appear on the wire, with correct IPv4 header
checksums and TCP/UDP checksums (IPv4 and IPv6 pseudo headers), so the engine can be fed traffic
whose every field a test chose. scapy would do the same, a thousand times slower; tests use scapy
only to cross-check this module (tests/test_synth.py).

This module must never read the network, the wall clock or a random source: the same calls give
the same bytes, so a failing test replays exactly.

Layers compose by nesting, innermost last:

    frame = ether(ipv4("10.0.0.1", "10.0.0.2", TCP, tcp(51234, 80, 1000, 0, "S",
                                                         src_ip="10.0.0.1", dst_ip="10.0.0.2")))

`TcpConversation` scripts whole connections; `write_pcap` / `write_pcapng` store them.
"""

from __future__ import annotations

import functools
import io
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

# A captured packet as the engine receives it: (timestamp in seconds, frame bytes).
Packet = tuple[float, bytes]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_8021Q = 0x8100
ETH_8021AD = 0x88A8

IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_DSTOPTS = 60
IPPROTO_NONE = 59

IPV4_DF = 0x4000
IPV4_MF = 0x2000

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")

_TCP_FLAG_BITS = {
    "F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80,
}

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_IPV6_FRAGMENT = struct.Struct("!BBHI")


# --- checksums -----------------------------------------------------------------------------------


def ones_complement_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of `data`, as an int congruent to it modulo 0xFFFF.

    The sum of big-endian 16-bit words is congruent modulo 0xFFFF to the whole buffer read as one
    big-endian integer (because 2**16 == 1 modulo 0xFFFF), and Python reduces that in C.
    """
    if len(data) & 1:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum of `data` (the field's value, to be written with the field zeroed)."""
    return -ones_complement_sum(data) % 0xFFFF


@functools.lru_cache(maxsize=1024)
def ip_address_bytes(address: str) -> bytes:
    """4 or 16 packed bytes of an IPv4 or IPv6 address in text form."""
    if ":" in address:
        return socket.inet_pton(socket.AF_INET6, address)
    return socket.inet_pton(socket.AF_INET, address)


def _pseudo_header_sum(src_ip: str, dst_ip: str, proto: int, length: int) -> int:
    src, dst = ip_address_bytes(src_ip), ip_address_bytes(dst_ip)
    if len(src) != len(dst):
        raise ValueError(f"address families differ: {src_ip} and {dst_ip}")
    # Both pseudo headers reduce to the same word sum: addresses, protocol, upper-layer length.
    return int.from_bytes(src + dst, "big") + proto + length


# --- link layers ---------------------------------------------------------------------------------


def ether(
    payload: bytes,
    ethertype: int = ETH_IPV4,
    vlan: Sequence[int] = (),
    *,
    src_mac: bytes = CLIENT_MAC,
    dst_mac: bytes = SERVER_MAC,
) -> bytes:
    """An Ethernet II frame; `vlan` lists tag TCIs, outermost first (VLAN id; PCP in bits 13-15).

    One tag is 802.1Q (0x8100). With more than one, the outermost is an 802.1ad service tag
    (0x88A8) and the rest are 0x8100, as in QinQ.
    """
    tags = b""
    for i, tci in enumerate(vlan):
        tpid = ETH_8021AD if i == 0 and len(vlan) > 1 else ETH_8021Q
        tags += struct.pack("!HH", tpid, tci & 0xFFFF)
    return dst_mac + src_mac + tags + struct.pack("!H", ethertype) + payload


def linux_sll(payload: bytes, protocol: int = ETH_IPV4, *, packet_type: int = 0,
              address: bytes = CLIENT_MAC) -> bytes:
    """A Linux cooked v1 frame (link type 113), as captured on the `any` device."""
    return struct.pack("!HHH8sH", packet_type, 1, len(address), address, protocol) + payload


def bsd_null(payload: bytes, family: int = socket.AF_INET) -> bytes:
    """A BSD loopback frame (link type 0): the address family in host (here little-endian) order."""
    return struct.pack("<I", family) + payload


def link_frame(linktype: int, ip_packet: bytes, vlan: Sequence[int] = (),
               *, src_mac: bytes = CLIENT_MAC, dst_mac: bytes = SERVER_MAC) -> bytes:
    """Wrap an IPv4 or IPv6 packet in the link layer of `linktype` (0, 1, 101 or 113)."""
    v6 = ip_packet[0] >> 4 == 6
    if linktype == LINKTYPE_ETHERNET:
        ethertype = ETH_IPV6 if v6 else ETH_IPV4
        return ether(ip_packet, ethertype, vlan, src_mac=src_mac, dst_mac=dst_mac)
    if linktype == LINKTYPE_RAW:
        return ip_packet
    if linktype == LINKTYPE_LINUX_SLL:
        return linux_sll(ip_packet, ETH_IPV6 if v6 else ETH_IPV4, address=src_mac)
    if linktype == LINKTYPE_NULL:
        return bsd_null(ip_packet, 10 if v6 else socket.AF_INET)
    raise ValueError(f"no framing for link type {linktype}")


# --- IP ------------------------------------------------------------------------------------------


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    ident: int = 0,
    flags_frag: int = IPV4_DF,
    ttl: int = 64,
    *,
    tos: int = 0,
    options: bytes = b"",
    total_length: int | None = None,
) -> bytes:
    """An IPv4 packet with a correct header checksum.

    `flags_frag` is the whole 16-bit flags + fragment offset field (offset in 8-byte units);
    `options` is padded with zeros to a 4-byte multiple; `total_length` overrides the computed
    length, to craft malformed packets.
    """
    if len(options) % 4:
        options += b"\x00" * (4 - len(options) % 4)
    ihl = 5 + len(options) // 4
    length = ihl * 4 + len(payload) if total_length is None else total_length
    header = _IPV4.pack(0x40 | ihl, tos, length, ident & 0xFFFF, flags_frag, ttl, proto, 0,
                        ip_address_bytes(src), ip_address_bytes(dst)) + options
    csum = internet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv6(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    ext_headers: bytes = b"",
    *,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """An IPv6 packet. `next_header` is the fixed header's Next Header field: the type of the
    first extension header when `ext_headers` is not empty (build those with `ipv6_ext_header`
    and `ipv6_fragment_header`, which chain by their own next-header arguments)."""
    first_word = (6 << 28) | (traffic_class << 20) | (flow_label & 0xFFFFF)
    body = ext_headers + payload
    return _IPV6.pack(first_word, len(body), next_header, hop_limit,
                      ip_address_bytes(src), ip_address_bytes(dst)) + body


def ipv6_ext_header(next_header: int, data: bytes = b"") -> bytes:
    """A Hop-by-Hop, Routing or Destination Options header: next header, length, then `data`,
    padded with PadN to a multiple of 8 bytes (2 + len(data) rounded up)."""
    size = -(-(2 + len(data)) // 8) * 8
    pad = size - 2 - len(data)
    if pad == 1:
        padding = b"\x00"  # Pad1
    elif pad > 1:
        padding = bytes([1, pad - 2]) + b"\x00" * (pad - 2)  # PadN
    else:
        padding = b""
    return bytes([next_header, size // 8 - 1]) + data + padding


def ipv6_fragment_header(next_header: int, offset: int, more: bool, ident: int) -> bytes:
    """An IPv6 Fragment header; `offset` in bytes (a multiple of 8)."""
    if offset % 8:
        raise ValueError("fragment offset must be a multiple of 8")
    return _IPV6_FRAGMENT.pack(next_header, 0, offset | int(more), ident & 0xFFFFFFFF)


def ipv4_fragments(packet: bytes, fragment_size: int) -> list[bytes]:
    """Split an IPv4 packet (from `ipv4`) into fragments carrying at most `fragment_size` bytes of
    its payload each (rounded down to a multiple of 8). DF is cleared; ident is kept, so give the
    packet a non-zero ident. A packet that is already a fragment keeps its offset and MF."""
    size = fragment_size // 8 * 8
    if size <= 0:
        raise ValueError("fragment_size must be at least 8")
    ihl = (packet[0] & 0x0F) * 4
    header = packet[:ihl]
    (total_length,) = struct.unpack_from("!H", packet, 2)
    payload = packet[ihl:total_length]
    (field_,) = struct.unpack_from("!H", packet, 6)
    base_offset = (field_ & 0x1FFF) * 8
    last_more = field_ & IPV4_MF
    fragments = []
    for start in range(0, len(payload), size):
        chunk = payload[start : start + size]
        more = IPV4_MF if start + size < len(payload) else last_more
        flags_frag = more | ((base_offset + start) // 8)
        head = bytearray(header)
        struct.pack_into("!HHH", head, 2, ihl + len(chunk), struct.unpack_from("!H", header, 4)[0],
                         flags_frag)
        head[10:12] = b"\x00\x00"
        head[10:12] = struct.pack("!H", internet_checksum(bytes(head)))
        fragments.append(bytes(head) + chunk)
    return fragments


def ipv6_fragments(packet: bytes, fragment_size: int, ident: int = 0x1234) -> list[bytes]:
    """Split an IPv6 packet (from `ipv6`) into fragments with a Fragment header each.

    The unfragmentable part (the fixed header plus any Hop-by-Hop, Routing, and Destination
    Options headers up to the last Routing header, RFC 8200 section 4.5) is repeated in every
    fragment; the rest is cut at 8-byte boundaries, at most `fragment_size` bytes per fragment.
    """
    size = fragment_size // 8 * 8
    if size <= 0:
        raise ValueError("fragment_size must be at least 8")
    (payload_length,) = struct.unpack_from("!H", packet, 4)
    end = 40 + payload_length
    # Walk the extension headers that may be unfragmentable; remember the Next Header byte of the
    # last one that must be (Hop-by-Hop or Routing): it will point at the Fragment header.
    split_field, split_at = 6, 40
    off, nh = 40, packet[6]
    while nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS):
        hdr_len = (packet[off + 1] + 1) * 8
        if nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING):
            split_field, split_at = off, off + hdr_len
        nh, off = packet[off], off + hdr_len
    unfragmentable = bytearray(packet[:split_at])
    fragmentable_type = unfragmentable[split_field]
    unfragmentable[split_field] = IPPROTO_FRAGMENT
    rest = packet[split_at:end]
    fragments = []
    for start in range(0, len(rest), size):
        chunk = rest[start : start + size]
        more = start + size < len(rest)
        body = ipv6_fragment_header(fragmentable_type, start, more, ident) + chunk
        head = bytearray(unfragmentable)
        struct.pack_into("!H", head, 4, len(head) - 40 + len(body))
        fragments.append(bytes(head) + body)
    return fragments


# --- transport -----------------------------------------------------------------------------------


def tcp_flag_bits(flags: str | int) -> int:
    """The flag byte for a string of flag letters (F S R P A U E C), e.g. "SA" -> 0x12."""
    if isinstance(flags, int):
        return flags
    bits = 0
    for letter in flags.upper():
        bits |= _TCP_FLAG_BITS[letter]
    return bits


def tcp_options(
    *,
    mss: int | None = None,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    wscale: int | None = None,
    sack: Sequence[tuple[int, int]] = (),
) -> bytes:
    """TCP options laid out the way Linux sends them, already a multiple of 4 bytes."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if timestamps is not None:
        ts = struct.pack("!BBII", 8, 10, timestamps[0] & 0xFFFFFFFF, timestamps[1] & 0xFFFFFFFF)
        out += (b"\x04\x02" if sack_permitted else b"\x01\x01") + ts
    elif sack_permitted:
        out += b"\x01\x01\x04\x02"
    if sack:
        out += b"\x01\x01" + bytes([5, 2 + 8 * len(sack)])
        out += b"".join(struct.pack("!II", a & 0xFFFFFFFF, b & 0xFFFFFFFF) for a, b in sack)
    if wscale is not None:
        out += bytes([1, 3, 3, wscale])
    return out


def tcp(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: str | int,
    payload: bytes = b"",
    window: int = 65535,
    options: bytes = b"",
    *,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    urgent: int = 0,
    checksum: int | None = None,
) -> bytes:
    """A TCP segment. With `src_ip` and `dst_ip` (v4 or v6) its checksum is correct; without,
    it is zero. `checksum` forces a value (to craft a bad one). Options are zero-padded."""
    if len(options) % 4:
        options += b"\x00" * (4 - len(options) % 4)
    if len(options) > 40:
        raise ValueError("TCP options longer than 40 bytes")
    offset = (5 + len(options) // 4) << 4
    header = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset,
                       tcp_flag_bits(flags), window, 0, urgent) + options
    if checksum is None:
        if src_ip is None or dst_ip is None:
            checksum = 0
        else:
            segment_length = len(header) + len(payload)
            total = (_pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, segment_length)
                     + ones_complement_sum(header) + ones_complement_sum(payload))
            checksum = -total % 0xFFFF
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def udp(sport: int, dport: int, payload: bytes = b"", *, src_ip: str | None = None,
        dst_ip: str | None = None) -> bytes:
    """A UDP datagram, with a correct checksum when the addresses are given."""
    length = 8 + len(payload)
    checksum = 0
    if src_ip is not None and dst_ip is not None:
        total = (_pseudo_header_sum(src_ip, dst_ip, IPPROTO_UDP, length) + sport + dport + length
                 + ones_complement_sum(payload))
        checksum = -total % 0xFFFF or 0xFFFF  # zero means "no checksum" in UDP
    return _UDP.pack(sport, dport, length, checksum) + payload


def ip_packet(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 0,
              ttl: int = 64) -> bytes:
    """An IPv4 or IPv6 packet, by the family of `src`."""
    if ":" in src:
        return ipv6(src, dst, proto, payload, hop_limit=ttl)
    return ipv4(src, dst, proto, payload, ident=ident, ttl=ttl)


# --- tunnels ------------------------------------------------------------------------------------

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame inside GRE or Geneve
ETH_ERSPAN_1_2 = 0x88BE
ETH_ERSPAN_3 = 0x22EB
ETH_PPP = 0x880B
ETH_MPLS = 0x8847
VXLAN_PORT = 4789
GENEVE_PORT = 6081


def gre(payload: bytes, protocol: int = ETH_IPV4, *, checksum: bool = False,
        key: int | None = None, sequence: int | None = None, routing: bool = False) -> bytes:
    """A GRE version 0 header (RFC 2784/2890) and `payload`. With `checksum` the checksum field
    holds the right value; `routing` sets the RFC 1701 routing bit (and its offset field), which
    a decoder cannot skip without parsing source routes."""
    flags = (0x8000 if checksum else 0) | (0x4000 if routing else 0)
    flags |= (0x2000 if key is not None else 0) | (0x1000 if sequence is not None else 0)
    optional = b"\x00\x00\x00\x00" if checksum or routing else b""
    if key is not None:
        optional += struct.pack("!I", key & 0xFFFFFFFF)
    if sequence is not None:
        optional += struct.pack("!I", sequence & 0xFFFFFFFF)
    packet = struct.pack("!HH", flags, protocol) + optional + payload
    if checksum:
        packet = packet[:4] + struct.pack("!H", internet_checksum(packet)) + packet[6:]
    return packet


def pptp_gre(ppp_frame: bytes, call_id: int, *, sequence: int | None = None,
             ack: int | None = None) -> bytes:
    """An enhanced GRE (version 1) header as PPTP sends it (RFC 2637 4.1), then `ppp_frame`."""
    flags = 0x2000 | 0x0001 | (0x1000 if sequence is not None else 0) | (0x0080 if ack is not None else 0)
    header = struct.pack("!HHHH", flags, ETH_PPP, len(ppp_frame), call_id)
    if sequence is not None:
        header += struct.pack("!I", sequence)
    if ack is not None:
        header += struct.pack("!I", ack)
    return header + ppp_frame


def ppp(ip_packet: bytes, *, address_control: bool = True, compress_protocol: bool = False) -> bytes:
    """A PPP frame of an IP packet (without HDLC framing), as inside PPTP or PPPoE."""
    proto = 0x57 if ip_packet[0] >> 4 == 6 else 0x21
    head = b"\xff\x03" if address_control else b""
    return head + (bytes([proto]) if compress_protocol else struct.pack("!H", proto)) + ip_packet


def vxlan(frame: bytes, vni: int, *, flags: int = 0x08) -> bytes:
    """A VXLAN header (RFC 7348: flags with I set, 24-bit VNI) and the Ethernet frame it carries;
    put it in `udp(sport, VXLAN_PORT, ...)`."""
    return struct.pack("!B3xI", flags, (vni & 0xFFFFFF) << 8) + frame


def geneve(payload: bytes, vni: int, protocol: int = ETH_TEB, options: bytes = b"") -> bytes:
    """A Geneve header (RFC 8926) with `options` (a multiple of 4 bytes) and its payload."""
    if len(options) % 4:
        raise ValueError("Geneve options are whole 4-byte words")
    return struct.pack("!BBHI", len(options) // 4, 0, protocol, (vni & 0xFFFFFF) << 8) + options + payload


def erspan2(frame: bytes, session: int, *, vlan: int = 0, index: int = 0) -> bytes:
    """An ERSPAN type II header (version 1, 8 bytes) and the mirrored Ethernet frame; GRE carries it
    as 0x88BE with a sequence number."""
    return struct.pack("!HHI", (1 << 12) | (vlan & 0xFFF), session & 0x3FF, index & 0xFFFFF) + frame


def erspan3(frame: bytes, session: int, *, timestamp: int = 0, frame_type: int = 0,
            platform: bytes | None = None, hw_id: int = 0) -> bytes:
    """An ERSPAN type III header (version 2, 12 bytes; with `platform`, the O bit and that
    8-byte platform-specific subheader) and the mirrored frame (Ethernet, or IP for type 2)."""
    if platform is not None and len(platform) != 8:
        raise ValueError("the platform-specific subheader is 8 bytes")
    last = ((frame_type & 0x1F) << 10) | ((hw_id & 0x3F) << 4) | (1 if platform is not None else 0)
    header = struct.pack("!HHIHH", 2 << 12, session & 0x3FF, timestamp & 0xFFFFFFFF, 0, last)
    return header + (platform or b"") + frame


def mpls(payload: bytes, labels: Sequence[int], ttl: int = 64) -> bytes:
    """An MPLS label stack (outermost first), bottom of stack on the last."""
    out = b""
    for i, label in enumerate(labels):
        out += struct.pack("!I", (label << 12) | ((i == len(labels) - 1) << 8) | ttl)
    return out + payload


# --- scripted TCP conversations ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One TCP segment of a `TcpConversation`, before framing. Edit copies with
    `dataclasses.replace` and frame them with `TcpConversation.frame` to craft retransmissions
    with different bytes, bad sequence numbers and the like."""

    ts: float
    from_client: bool
    seq: int
    ack: int
    flags: str
    payload: bytes = b""
    window: int = 65535
    options: bytes = b""

    @property
    def length(self) -> int:
        """Sequence space the segment takes: its payload plus one for SYN and one for FIN."""
        return len(self.payload) + ("S" in self.flags) + ("F" in self.flags)


@dataclass
class TcpConversation:
    """Script a TCP connection as seen on the wire between `client` and `server`.

    Each method appends segments to `segments` and returns the frames it made as (ts, bytes);
    `packets` holds every frame so far. Timestamps start at `start` and grow by `step` per
    segment, kept in whole microseconds. Sequence numbers wrap at 2**32, so an ISN near it
    tests wraparound. Data longer than `mss` is cut into several segments, PSH on the last.
    With `auto_ack`, the receiver answers every send or FIN with a bare ACK.

    For reordering, duplication or loss, take `packets` (or `segments`) apart and rebuild the
    list; `retime` gives a reordered list increasing timestamps again.
    """

    client: tuple[str, int] = ("10.0.0.1", 51234)
    server: tuple[str, int] = ("10.0.0.2", 80)
    client_isn: int = 1_000
    server_isn: int = 5_000_000
    mss: int = 1460
    start: float = 1_700_000_000.0
    step: float = 0.0001
    auto_ack: bool = True
    window: int = 65535
    linktype: int = LINKTYPE_ETHERNET
    vlan: Sequence[int] = ()
    ttl: int = 64
    segments: list[Segment] = field(default_factory=list)
    packets: list[Packet] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._now_us = round(self.start * 1_000_000)
        self._step_us = max(1, round(self.step * 1_000_000))
        self.client_seq = self.client_isn & 0xFFFFFFFF  # next sequence number each side sends
        self.server_seq = self.server_isn & 0xFFFFFFFF
        self._ident = {True: 1, False: 1}
        self._started = False

    # -- time

    def now(self) -> float:
        return self._now_us / 1_000_000

    def idle(self, seconds: float) -> None:
        """Let time pass before the next segment."""
        self._now_us += round(seconds * 1_000_000)

    def _tick(self) -> float:
        if self._started:
            self._now_us += self._step_us
        self._started = True
        return self._now_us / 1_000_000

    # -- the one place segments are made

    def send_segment(
        self,
        from_client: bool,
        flags: str,
        payload: bytes = b"",
        *,
        seq: int | None = None,
        ack: int | None = None,
        advance: bool = True,
        window: int | None = None,
        options: bytes = b"",
    ) -> Packet:
        """Send one segment. `seq` defaults to the sender's next sequence number and `ack` to the
        receiver's; with `advance` the sender's next sequence number moves past this segment."""
        if seq is None:
            seq = self.client_seq if from_client else self.server_seq
        if ack is None:
            ack = (self.server_seq if from_client else self.client_seq) if "A" in flags else 0
        segment = Segment(self._tick(), from_client, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags,
                          payload, self.window if window is None else window, options)
        if advance:
            nxt = (segment.seq + segment.length) & 0xFFFFFFFF
            if from_client:
                self.client_seq = nxt
            else:
                self.server_seq = nxt
        packet = (segment.ts, self.frame(segment))
        self.segments.append(segment)
        self.packets.append(packet)
        return packet

    def frame(self, segment: Segment) -> bytes:
        """The link-layer frame of `segment`, with correct checksums."""
        (src, sport), (dst, dport) = (
            (self.client, self.server) if segment.from_client else (self.server, self.client))
        seg = tcp(sport, dport, segment.seq, segment.ack, segment.flags, segment.payload,
                  segment.window, segment.options, src_ip=src, dst_ip=dst)
        ident = self._ident[segment.from_client]
        self._ident[segment.from_client] = (ident + 1) & 0xFFFF
        packet = ip_packet(src, dst, IPPROTO_TCP, seg, ident=ident, ttl=self.ttl)
        src_mac, dst_mac = (
            (CLIENT_MAC, SERVER_MAC) if segment.from_client else (SERVER_MAC, CLIENT_MAC))
        return link_frame(self.linktype, packet, self.vlan, src_mac=src_mac, dst_mac=dst_mac)

    def frames(self, segments: Iterable[Segment]) -> list[Packet]:
        """Frame segments (e.g. an edited copy of `segments`), keeping their timestamps."""
        return [(s.ts, self.frame(s)) for s in segments]

    # -- scripted moves

    def handshake(self, *, options: bytes | None = None) -> list[Packet]:
        """SYN, SYN-ACK, ACK. Both SYNs carry an MSS option unless `options` says otherwise."""
        syn_options = tcp_options(mss=self.mss) if options is None else options
        return [
            self.send_segment(True, "S", options=syn_options),
            self.send_segment(False, "SA", options=syn_options),
            self.send_segment(True, "A"),
        ]

    def client_send(self, data: bytes, *, push: bool = True,
                    ack: bool | None = None) -> list[Packet]:
        """The client sends `data` in MSS-sized segments; the server ACKs if asked."""
        return self._send(True, data, push, self.auto_ack if ack is None else ack)

    def server_send(self, data: bytes, *, push: bool = True,
                    ack: bool | None = None) -> list[Packet]:
        """The server sends `data` in MSS-sized segments; the client ACKs if asked."""
        return self._send(False, data, push, self.auto_ack if ack is None else ack)

    def client_ack(self) -> Packet:
        return self.send_segment(True, "A")

    def server_ack(self) -> Packet:
        return self.send_segment(False, "A")

    def client_fin(self, *, ack: bool | None = None) -> list[Packet]:
        return self._fin(True, self.auto_ack if ack is None else ack)

    def server_fin(self, *, ack: bool | None = None) -> list[Packet]:
        return self._fin(False, self.auto_ack if ack is None else ack)

    def close(self) -> list[Packet]:
        """Orderly close started by the client: FIN, FIN-ACK, ACK."""
        return [*self.client_fin(ack=False), *self.server_fin(ack=False), self.client_ack()]

    def rst(self, from_client: bool = True, *, with_ack: bool = True) -> Packet:
        return self.send_segment(from_client, "RA" if with_ack else "R")

    def _send(self, from_client: bool, data: bytes, push: bool, ack: bool) -> list[Packet]:
        out = []
        mss = max(1, self.mss)
        for start in range(0, len(data), mss):
            last = start + mss >= len(data)
            out.append(self.send_segment(from_client, "PA" if push and last else "A",
                                         data[start : start + mss]))
        if ack and data:
            out.append(self.send_segment(not from_client, "A"))
        return out

    def _fin(self, from_client: bool, ack: bool) -> list[Packet]:
        out = [self.send_segment(from_client, "FA")]
        if ack:
            out.append(self.send_segment(not from_client, "A"))
        return out


def retime(packets: Iterable[Packet], start: float | None = None,
           step: float = 0.0001) -> list[Packet]:
    """The same frames with increasing timestamps from `start` (default: the first one's)."""
    packets = list(packets)
    if not packets:
        return []
    now_us = round((packets[0][0] if start is None else start) * 1_000_000)
    step_us = max(1, round(step * 1_000_000))
    out = []
    for _, frame in packets:
        out.append((now_us / 1_000_000, frame))
        now_us += step_us
    return out


# --- capture files -------------------------------------------------------------------------------

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
_PCAP_RECORD = struct.Struct("<IIII")

PathOrFile = str | os.PathLike[str] | BinaryIO


def pcap_header(linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144,
                *, nanosecond: bool = False) -> bytes:
    """The 24-byte global header of a classic little-endian pcap file."""
    magic = PCAP_MAGIC_NSEC if nanosecond else PCAP_MAGIC_USEC
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: float, frame: bytes, snaplen: int = 262144,
                *, nanosecond: bool = False) -> bytes:
    """One pcap record: header then the frame, cut to `snaplen` (the original length is kept)."""
    scale = 1_000_000_000 if nanosecond else 1_000_000
    sec, frac = divmod(round(ts * scale), scale)
    data = frame[:snaplen]
    return _PCAP_RECORD.pack(sec, frac, len(data), len(frame)) + data


def pcap_bytes(packets: Iterable[Packet], linktype: int = LINKTYPE_ETHERNET,
               snaplen: int = 262144, *, nanosecond: bool = False) -> bytes:
    """A whole classic pcap file in memory (e.g. to pipe into `wirepeek -r -`)."""
    buf = io.BytesIO()
    write_pcap(buf, packets, linktype, snaplen, nanosecond=nanosecond)
    return buf.getvalue()


def write_pcap(path: PathOrFile, packets: Iterable[Packet], linktype: int = LINKTYPE_ETHERNET,
               snaplen: int = 262144, *, nanosecond: bool = False) -> int:
    """Write a classic pcap file (microsecond timestamps unless `nanosecond`) to a path or an open
    binary file; return the number of packets written."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "wb") as f:
            return write_pcap(f, packets, linktype, snaplen, nanosecond=nanosecond)
    path.write(pcap_header(linktype, snaplen, nanosecond=nanosecond))
    count = 0
    for ts, frame in packets:
        path.write(pcap_record(ts, frame, snaplen, nanosecond=nanosecond))
        count += 1
    return count


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def write_pcapng(
    path: PathOrFile,
    packets: Iterable[Packet | tuple[float, bytes, int]],
    linktype: int = LINKTYPE_ETHERNET,
    snaplen: int = 262144,
    *,
    linktypes: Sequence[int] | None = None,
    tls_key_log: bytes | None = None,
) -> int:
    """Write a pcapng file: one section, one interface per entry of `linktypes` (default just
    `linktype`), microsecond timestamps. A packet may name its interface as a third element, so
    a test can mix link types in one file. With `tls_key_log`, a Decryption Secrets Block of
    type TLSK holding it comes before the packets (as editcap --inject-secrets puts it). Returns
    the number of packets written."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "wb") as f:
            return write_pcapng(f, packets, linktype, snaplen, linktypes=linktypes,
                                tls_key_log=tls_key_log)
    interfaces = [linktype] if linktypes is None else list(linktypes)
    path.write(_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    for lt in interfaces:
        path.write(_pcapng_block(0x00000001, struct.pack("<HHI", lt, 0, snaplen)))
    if tls_key_log is not None:
        path.write(_pcapng_block(0x0000000A, struct.pack("<II", 0x544C534B, len(tls_key_log))
                                 + tls_key_log))
    count = 0
    for packet in packets:
        ts, frame = packet[0], packet[1]
        interface = packet[2] if len(packet) > 2 else 0  # type: ignore[misc]
        stamp = round(ts * 1_000_000)
        data = frame[:snaplen]
        body = struct.pack("<IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF, len(data),
                           len(frame)) + data
        path.write(_pcapng_block(0x00000006, body))
        count += 1
    return count
