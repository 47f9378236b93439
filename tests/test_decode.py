"""Link layers down to the IP header, table-driven; each wraps the same IPv4 or IPv6 packet."""

from __future__ import annotations

import struct

import pytest

from engine import decode
from engine.tcp import endpoints_key, key_endpoints, reverse_key
from tests import synth
from tests.synth import ether, ipv4, ipv4_fragments, ipv6, ipv6_ext_header, tcp, udp

V4 = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, 1, 0, "S", src_ip="10.0.0.1", dst_ip="10.0.0.2"))
V6 = ipv6("fe80::1", "fe80::2", 6, tcp(40000, 80, 1, 0, "S", src_ip="fe80::1", dst_ip="fe80::2"))


def sll(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, proto) + payload


def sll2(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 1, 772, 0, 6, b"\0" * 8) + payload


CASES = [
    ("ethernet v4", decode.ETHERNET, ether(V4), 4, 14),
    ("ethernet v6", decode.ETHERNET, ether(V6, ethertype=0x86DD), 6, 14),
    ("802.1Q", decode.ETHERNET, ether(V4, vlan=[100]), 4, 18),
    ("QinQ", decode.ETHERNET, ether(V4, vlan=[100, 200]), 4, 22),
    ("MPLS two labels", decode.ETHERNET,
     ether(struct.pack("!II", 0x00001040, 0x00002140) + V4, ethertype=0x8847), 4, 22),
    ("PPPoE", decode.ETHERNET, ether(struct.pack("!BBHHH", 0x11, 0, 1, len(V4) + 2, 0x0021) + V4,
                                     ethertype=0x8864), 4, 22),
    ("linux cooked v1", decode.LINUX_SLL, sll(0x0800, V4), 4, 16),
    ("linux cooked v2", decode.LINUX_SLL2, sll2(0x86DD, V6), 6, 20),
    ("BSD NULL little-endian", decode.NULL, struct.pack("<I", 2) + V4, 4, 4),
    ("BSD NULL big-endian v6", decode.NULL, struct.pack(">I", 30) + V6, 6, 4),
    ("LOOP", decode.LOOP, struct.pack(">I", 2) + V4, 4, 4),
    ("raw", decode.RAW, V6, 6, 0),
    ("raw v4 only", decode.RAW_IPV4, V4, 4, 0),
    ("NFLOG", decode.NFLOG, b"\x02\x00\x00\x00" + struct.pack("<HH", 4 + len(V4), 9) + V4, 4, 8),
]


@pytest.mark.parametrize("name,linktype,frame,version,offset", CASES, ids=[c[0] for c in CASES])
def test_network_offset(name, linktype, frame, version, offset):
    assert decode.network_offset(linktype, frame, 0, len(frame)) == (version, offset)


@pytest.mark.parametrize("linktype,frame", [
    (decode.ETHERNET, ether(b"\0" * 28, ethertype=0x0806)),  # ARP
    (decode.ETHERNET, b"\0" * 10),
    (decode.ETHERNET, ether(b"", vlan=[1])[:15]),
    (decode.LINUX_SLL2, b"\x08\x00"),
    (decode.NULL, struct.pack("<I", 99) + V4),
    (decode.RAW, b"\x50" + V4[1:]),
    (decode.NFLOG, b"\x02\x00\x00\x00\x00\x00\x09\x00"),
    (147, V4),  # a link type we do not decode
])
def test_not_ip_or_cut_short_is_none(linktype, frame):
    assert decode.network_offset(linktype, frame, 0, len(frame)) is None


def test_ipv6_extension_headers_are_walked():
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # hop-by-hop -> destination options
    dst = bytes([6, 0]) + b"\x01\x04\0\0\0\0"  # destination options -> TCP
    payload = tcp(1, 2, 3, 0, "S")
    pkt = ipv6("::1", "::2", 0, hop + dst + payload)
    nh, l4, end, frag = decode.ipv6_payload(pkt, 0, len(pkt))
    assert (nh, l4, end, frag) == (6, 56, len(pkt), None)


# --- the connection key of a packet, for writing many connections at once -------------------------


@pytest.mark.parametrize("packet,src,dst", [
    (V4, "10.0.0.1:40000", "10.0.0.2:80"),
    (V6, "[fe80::1]:40000", "[fe80::2]:80"),
    (ipv6("2001:db8::1", "2001:db8::2", 0, tcp(5, 443, 1, 0, "S", src_ip="2001:db8::1",
                                               dst_ip="2001:db8::2"), ipv6_ext_header(6)),
     "[2001:db8::1]:5", "[2001:db8::2]:443"),  # after a hop-by-hop header
])
def test_tcp_key_is_the_table_key_of_the_sender(packet, src, dst):
    frame = ether(packet, ethertype=0x86DD if packet[0] >> 4 == 6 else 0x0800)
    key = decode.tcp_key(decode.ETHERNET, frame, 0, len(frame))
    assert key == endpoints_key(src, dst)
    assert key_endpoints(key) == (src, dst)
    assert reverse_key(key) == endpoints_key(dst, src)


def test_tcp_key_is_none_for_fragments_udp_and_short_packets():
    big = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, 1, 0, "PA", b"x" * 100, src_ip="10.0.0.1",
                                             dst_ip="10.0.0.2"))
    for fragment in ipv4_fragments(big, 48):
        frame = ether(fragment)
        assert decode.tcp_key(decode.ETHERNET, frame, 0, len(frame)) is None
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, src_ip="10.0.0.1", dst_ip="10.0.0.2")))
    assert decode.tcp_key(decode.ETHERNET, frame, 0, len(frame)) is None
    frame = ether(V4)
    assert decode.tcp_key(decode.ETHERNET, frame, 0, 14 + 20 + 3) is None  # ports cut short


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1:x", "10.0.0.1:70000", "[::1:80",
                                  "300.0.0.1:80", "[10.0.0.1]:80"])
def test_endpoints_key_refuses_what_is_not_an_endpoint(text):
    with pytest.raises(ValueError):
        endpoints_key(text, "10.0.0.2:80")
    with pytest.raises(ValueError):
        endpoints_key("10.0.0.2:80", "[::1]:80")  # two families


# --- tunnels: one level opened, the inner IP header's offset -------------------------------------

FRAME_V4 = ether(V4)
GENEVE_OPTION = struct.pack("!HBB", 0x0108, 1, 1) + b"\0\0\0\x2a"

DECAPSULATED = [
    ("IPIP", 4, V4, 4, 0),
    ("6in4", 41, V6, 6, 0),
    ("GRE", 47, synth.gre(V4), 4, 4),
    ("GRE IPv6", 47, synth.gre(V6, 0x86DD), 6, 4),
    ("GRE checksum", 47, synth.gre(V4, checksum=True), 4, 8),
    ("GRE key", 47, synth.gre(V4, key=1), 4, 8),
    ("GRE sequence", 47, synth.gre(V4, sequence=1), 4, 8),
    ("GRE all three", 47, synth.gre(V4, checksum=True, key=1, sequence=2), 4, 16),
    ("GRE Ethernet", 47, synth.gre(FRAME_V4, 0x6558), 4, 4 + 14),
    ("GRE Ethernet, VLAN", 47, synth.gre(ether(V4, vlan=[5]), 0x6558, key=3), 4, 8 + 18),
    ("GRE MPLS", 47, synth.gre(synth.mpls(V6, [20]), 0x8847), 6, 4 + 4),
    ("ERSPAN I", 47, synth.gre(FRAME_V4, 0x88BE), 4, 4 + 14),
    ("ERSPAN II", 47, synth.gre(synth.erspan2(FRAME_V4, 1), 0x88BE, sequence=1), 4, 8 + 8 + 14),
    ("ERSPAN III", 47, synth.gre(synth.erspan3(FRAME_V4, 1), 0x22EB), 4, 4 + 12 + 14),
    ("ERSPAN III platform", 47,
     synth.gre(synth.erspan3(FRAME_V4, 1, platform=bytes(8)), 0x22EB, sequence=1), 4, 8 + 20 + 14),
    ("ERSPAN III IP", 47, synth.gre(synth.erspan3(V6, 1, frame_type=2), 0x22EB), 6, 4 + 12),
    ("PPTP", 47, synth.pptp_gre(synth.ppp(V4), 1, sequence=1, ack=2), 4, 16 + 4),
    ("PPTP compressed", 47,
     synth.pptp_gre(synth.ppp(V6, address_control=False, compress_protocol=True), 1), 6, 8 + 1),
    ("VXLAN", 17, udp(1, 4789, synth.vxlan(FRAME_V4, 7)), 4, 8 + 8 + 14),
    ("Geneve", 17, udp(1, 6081, synth.geneve(ether(V6, 0x86DD), 7, options=GENEVE_OPTION)), 6,
     8 + 8 + 8 + 14),
    ("Geneve IP", 17, udp(1, 6081, synth.geneve(V4, 7, 0x0800)), 4, 8 + 8),
]


@pytest.mark.parametrize("name,proto,payload,version,offset", DECAPSULATED,
                         ids=[c[0] for c in DECAPSULATED])
def test_decapsulate_finds_the_inner_header(name, proto, payload, version, offset):
    buf = b"\xee" * 3 + payload  # not at the start of the buffer
    assert decode.decapsulate(proto, buf, 3, len(buf)) == (version, 3 + offset)
    # Cut anywhere before the inner header, the tunnel says where its header would end (or that
    # the frame inside is not one it can read); it never reads past the end it is given.
    for cut in range(3, 3 + offset):
        kind, _at = decode.decapsulate(proto, buf[:cut], 3, cut)
        assert kind in (decode.CUT, decode.OPAQUE, decode.NOT_A_TUNNEL)
