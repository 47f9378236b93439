"""Connections inside tunnels are tracked, reassembled and parsed exactly as without the tunnel.

Every case scripts the same HTTP/1.1 exchanges (a GET and a POST on one keep-alive connection),
once as plain Ethernet + IP + TCP and once with each packet wrapped in an encapsulation, and
compares what the pipeline reports: connection, streams, HTTP transactions and counters must be
the same, under the inner addresses and ports.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import decode, sources
from engine.batch import Batch
from engine.bounds import Bounds
from engine.events import HttpTransaction
from engine.pipeline import Pipeline
from engine.tcp import endpoints_key
from tests.captures import Replay, replay_file
from tests.synth import (
    CLIENT_MAC,
    ETH_ERSPAN_1_2,
    ETH_ERSPAN_3,
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_TEB,
    GENEVE_PORT,
    IPPROTO_GRE,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    SERVER_MAC,
    VXLAN_PORT,
    Packet,
    TcpConversation,
    erspan2,
    erspan3,
    ether,
    geneve,
    gre,
    ipv4,
    ipv4_fragments,
    ipv6,
    ipv6_fragments,
    mpls,
    ppp,
    pptp_gre,
    udp,
    vxlan,
    write_pcap,
)

# Tunnel endpoints (the outer addresses) and the connection inside, per address family.
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8:ffff::1", "2001:db8:ffff::2")}
INNER = {4: (("10.0.0.1", 51234), ("10.0.0.2", 80)), 6: (("fd00::1", 51234), ("fd00::2", 80))}
VTEP_MAC = {True: bytes.fromhex("0200000000a1"), False: bytes.fromhex("0200000000a2")}

REQUEST = b"GET /index.html HTTP/1.1\r\nHost: inner.example\r\n\r\n"
BODY = bytes(range(256)) * 16  # 4096 bytes: three segments
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
POSTED = b"field=" + b"p" * 2000
POST = b"POST /form HTTP/1.1\r\nHost: inner.example\r\nContent-Length: %d\r\n\r\n%s" % (
    len(POSTED), POSTED)
ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


def conversation(family: int, linktype: int) -> TcpConversation:
    """The exchanges, framed for `linktype` (raw IP, to be wrapped, or Ethernet)."""
    client, server = INNER[family]
    conv = TcpConversation(client=client, server=server, linktype=linktype)
    conv.handshake()
    conv.client_send(REQUEST)
    conv.server_send(RESPONSE)
    conv.client_send(POST)
    conv.server_send(ANSWER)
    conv.close()
    return conv


Wrap = Callable[[bytes, bool], bytes]  # (inner IP packet, sent by the client) -> Ethernet frame


def inner_ether(packet: bytes, from_client: bool, vlan: tuple[int, ...] = ()) -> bytes:
    src, dst = (CLIENT_MAC, SERVER_MAC) if from_client else (SERVER_MAC, CLIENT_MAC)
    ethertype = ETH_IPV6 if packet[0] >> 4 == 6 else ETH_IPV4
    return ether(packet, ethertype, vlan, src_mac=src, dst_mac=dst)


def over_ip(proto: int, body: Callable[[bytes, bool], bytes], family: int = 4,
            port: int = 0) -> Wrap:
    """Outer Ethernet + IPv4/IPv6 between the tunnel endpoints, protocol `proto` (UDP to `port`),
    then body(inner packet, from_client)."""
    def wrap(packet: bytes, from_client: bool) -> bytes:
        src, dst = reverse(OUTER[family], from_client)
        payload = body(packet, from_client)
        if proto == IPPROTO_UDP:
            # The source port varies per flow in real VXLAN/Geneve; only the destination matters.
            payload = udp(49152 + len(packet) % 1000, port, payload, src_ip=src, dst_ip=dst)
        outer = (ipv6(src, dst, proto, payload) if family == 6
                 else ipv4(src, dst, proto, payload, flags_frag=0))
        return ether(outer, ETH_IPV6 if family == 6 else ETH_IPV4,
                     src_mac=VTEP_MAC[from_client], dst_mac=VTEP_MAC[not from_client])
    return wrap


def bare(packet: bytes, from_client: bool) -> bytes:
    return packet


def gre_of(key: int | None = None) -> Callable[[bytes, bool], bytes]:
    """GRE with the inner packet's own protocol type (IPv4 or IPv6)."""
    def body(packet: bytes, from_client: bool) -> bytes:
        return gre(packet, ETH_IPV6 if packet[0] >> 4 == 6 else ETH_IPV4, key=key)
    return body


def eth_in(builder: Callable[[bytes], bytes], vlan: tuple[int, ...] = ()
           ) -> Callable[[bytes, bool], bytes]:
    """The inner packet in an Ethernet frame (with `vlan` tags), then builder(frame)."""
    return lambda packet, from_client: builder(inner_ether(packet, from_client, vlan))


def reverse(pair: tuple[str, str], from_client: bool) -> tuple[str, str]:
    return pair if from_client else (pair[1], pair[0])


def nested_ipip_in_gre(packet: bytes, from_client: bool) -> bytes:
    return gre(ipv4(*reverse(OUTER[4], from_client), IPPROTO_IPIP, packet, flags_frag=0))


def nested_three(packet: bytes, from_client: bool) -> bytes:
    """Inside IPv6-in-IPv6: UDP to VXLAN, an Ethernet frame, IPv4, GRE, then the packet."""
    src, dst = reverse(("2001:db8:1::1", "2001:db8:1::2"), from_client)
    frame = ether(ipv4(*reverse(("172.16.0.1", "172.16.0.2"), from_client), IPPROTO_GRE,
                       gre(packet), flags_frag=0))
    return ipv6(src, dst, IPPROTO_UDP, udp(40000, VXLAN_PORT, vxlan(frame, 9), src_ip=src,
                                           dst_ip=dst))


GENEVE_OPTION = struct.pack("!HBB", 0x0108, 1, 1) + b"\x00\x00\x00\x2a"  # class, type, 1 word

# name -> (inner address family, how each inner IP packet is wrapped)
ENCAPSULATIONS: dict[str, tuple[int, Wrap]] = {
    "IPIP": (4, over_ip(IPPROTO_IPIP, bare)),
    "6in4 (SIT)": (6, over_ip(IPPROTO_IPV6, bare)),
    "4in6": (4, over_ip(IPPROTO_IPIP, bare, family=6)),
    "6in6": (6, over_ip(IPPROTO_IPV6, bare, family=6)),
    "GRE IPv4": (4, over_ip(IPPROTO_GRE, gre_of())),
    "GRE IPv6 inside": (6, over_ip(IPPROTO_GRE, gre_of())),
    "GRE over IPv6": (4, over_ip(IPPROTO_GRE, gre_of(), family=6)),
    "GRE checksum+key+sequence": (4, over_ip(IPPROTO_GRE, lambda p, c: gre(
        p, ETH_IPV4, checksum=True, key=0xDEADBEEF, sequence=len(p)))),
    "GRE key only": (4, over_ip(IPPROTO_GRE, gre_of(key=7))),
    "GRE Ethernet (gretap)": (4, over_ip(IPPROTO_GRE, eth_in(lambda f: gre(f, ETH_TEB)))),
    "GRE Ethernet with VLAN tag": (4, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(f, ETH_TEB, key=5), vlan=(100,)))),
    "GRE Ethernet with QinQ, IPv6 inside": (6, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(f, ETH_TEB), vlan=(100, 200)))),
    "GRE MPLS": (4, over_ip(IPPROTO_GRE, lambda p, c: gre(mpls(p, [16, 17]), ETH_MPLS))),
    "ERSPAN I": (4, over_ip(IPPROTO_GRE, eth_in(lambda f: gre(f, ETH_ERSPAN_1_2)))),
    "ERSPAN II": (4, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(erspan2(f, 42, index=3), ETH_ERSPAN_1_2, sequence=len(f))))),
    "ERSPAN II with VLAN tag inside": (4, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(erspan2(f, 42, vlan=100), ETH_ERSPAN_1_2, sequence=len(f)), vlan=(100,)))),
    "ERSPAN III": (4, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(erspan3(f, 42, timestamp=12345), ETH_ERSPAN_3, sequence=len(f))))),
    "ERSPAN III with platform subheader": (4, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(erspan3(f, 42, platform=bytes(range(1, 9)), hw_id=9), ETH_ERSPAN_3,
                      sequence=len(f))))),
    "ERSPAN III IP frame type, IPv6": (6, over_ip(IPPROTO_GRE, lambda p, c: gre(
        erspan3(p, 42, frame_type=2), ETH_ERSPAN_3, sequence=len(p)))),
    "ERSPAN III over IPv6": (4, over_ip(IPPROTO_GRE, eth_in(
        lambda f: gre(erspan3(f, 1), ETH_ERSPAN_3)), family=6)),
    "PPTP (GRE v1, PPP)": (4, over_ip(IPPROTO_GRE, lambda p, c: pptp_gre(
        ppp(p), call_id=0x4000 if c else 0x4001, sequence=len(p), ack=5))),
    "PPTP, compressed PPP fields": (4, over_ip(IPPROTO_GRE, lambda p, c: pptp_gre(
        ppp(p, address_control=False, compress_protocol=True), call_id=1))),
    "VXLAN": (4, over_ip(IPPROTO_UDP, eth_in(lambda f: vxlan(f, 5001)), port=VXLAN_PORT)),
    "VXLAN with VLAN tag, IPv6 inside": (6, over_ip(
        IPPROTO_UDP, eth_in(lambda f: vxlan(f, 5001), vlan=(7,)), port=VXLAN_PORT)),
    "VXLAN over IPv6": (4, over_ip(IPPROTO_UDP, eth_in(lambda f: vxlan(f, 5001)), family=6,
                                   port=VXLAN_PORT)),
    "Geneve": (4, over_ip(IPPROTO_UDP, eth_in(lambda f: geneve(f, 77)), port=GENEVE_PORT)),
    "Geneve with an option, IP payload": (4, over_ip(
        IPPROTO_UDP, lambda p, c: geneve(p, 77, ETH_IPV4, options=GENEVE_OPTION),
        port=GENEVE_PORT)),
    "IPIP inside GRE": (4, over_ip(IPPROTO_GRE, nested_ipip_in_gre)),
    "GRE in VXLAN in 6in6": (4, over_ip(IPPROTO_IPV6, nested_three, family=6)),
}


def plain_and_wrapped(name: str) -> tuple[list[Packet], list[Packet]]:
    family, wrap = ENCAPSULATIONS[name]
    plain = conversation(family, LINKTYPE_ETHERNET).packets
    raw = conversation(family, LINKTYPE_RAW)
    wrapped = [(ts, wrap(packet, seg.from_client))
               for (ts, packet), seg in zip(raw.packets, raw.segments, strict=True)]
    return plain, wrapped


def run(tmp_path: Path, packets: list[Packet], name: str) -> Replay:
    path = tmp_path / name
    write_pcap(path, packets, LINKTYPE_ETHERNET)
    return replay_file(str(path))


def transactions(result: Replay) -> list[HttpTransaction]:
    return [e for e in result.events if isinstance(e, HttpTransaction)]


def assert_same_as_plain(plain: Replay, tunnelled: Replay, family: int) -> None:
    [info] = tunnelled.infos()
    # The same but for packet numbers: a tunnel may take more packets (outer fragments).
    assert [i._replace(last_packet=0) for i in tunnelled.infos()] == [
        i._replace(last_packet=0) for i in plain.infos()]
    client, server = INNER[family]
    show = "[{}]:{}" if family == 6 else "{}:{}"
    assert (info.client, info.server) == (show.format(*client), show.format(*server))
    assert (info.state, info.conn_state, info.protocol) == ("CLOSED", "SF", "http")
    assert info.bytes == (len(REQUEST) + len(POST), len(RESPONSE) + len(ANSWER))
    assert info.missing_bytes == (0, 0)
    assert tunnelled.stream(0, True) == REQUEST + POST
    assert tunnelled.stream(0, False) == RESPONSE + ANSWER
    got = transactions(tunnelled)
    assert got == transactions(plain)
    assert [(tx.request.method, tx.request.body_bytes, tx.response.status, tx.response.body_bytes)
            for tx in got if tx.request and tx.response] == [
        ("GET", 0, 200, len(BODY)), ("POST", len(POSTED), 204, 0)]
    stats, base = tunnelled.pipeline.stats(), plain.pipeline.stats()
    assert (stats.tcp_packets, stats.udp_packets, stats.other_packets, stats.malformed,
            stats.truncated) == (base.tcp_packets, 0, 0, 0, 0)


@pytest.mark.parametrize("name", list(ENCAPSULATIONS))
def test_tunnelled_exchange_is_reported_as_without_the_tunnel(tmp_path, name):
    plain, wrapped = plain_and_wrapped(name)
    assert all(w != p for (_, w), (_, p) in zip(wrapped, plain, strict=True))
    assert_same_as_plain(run(tmp_path, plain, "plain.pcap"), run(tmp_path, wrapped, "tunnel.pcap"),
                         ENCAPSULATIONS[name][0])


@pytest.mark.parametrize("name", list(ENCAPSULATIONS))
def test_tcp_key_of_a_tunnelled_packet_is_its_inner_key(name):
    plain, wrapped = plain_and_wrapped(name)
    for (_, p), (_, w) in zip(plain, wrapped, strict=True):
        key = decode.tcp_key(decode.ETHERNET, w, 0, len(w))
        assert key is not None
        assert key == decode.tcp_key(decode.ETHERNET, p, 0, len(p))


@pytest.mark.parametrize("name", ["GRE checksum+key+sequence", "VXLAN", "ERSPAN II", "6in4 (SIT)"])
def test_writing_a_tunnelled_connection_keeps_all_its_packets(tmp_path, name):
    family, _ = ENCAPSULATIONS[name]
    plain, wrapped = plain_and_wrapped(name)
    # Another connection in the same tunnel, which must not be picked.
    other = TcpConversation(client=(INNER[family][0][0], 40000), server=INNER[family][1],
                            linktype=LINKTYPE_RAW, start=1_700_000_100.0)
    other.handshake()
    other.client_send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    wrap = ENCAPSULATIONS[name][1]
    noise = [(ts, wrap(p, s.from_client)) for (ts, p), s in zip(other.packets, other.segments,
                                                                 strict=True)]
    batch = Batch.from_packets(LINKTYPE_ETHERNET, wrapped + noise)
    client, server = INNER[family]
    show = "[{}]:{}" if family == 6 else "{}:{}"
    keys = {endpoints_key(show.format(*client), show.format(*server))}
    picked = sources.packets_of_connections([batch], keys)
    assert [p.data for p in picked] == [w for _, w in wrapped]
    out = tmp_path / "picked.pcap"
    assert sources.write_packet_list(picked, str(out)) == len(wrapped)
    assert_same_as_plain(run(tmp_path, plain, "plain.pcap"), replay_file(str(out)), family)


def scapy_wrap(name: str, packet: bytes, from_client: bool) -> bytes:
    """The same encapsulations built by scapy, as a check on tests/synth.py's builders."""
    from scapy.contrib.erspan import ERSPAN_III
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import GRE, Ether
    from scapy.layers.vxlan import VXLAN

    src, dst = reverse(OUTER[4], from_client)
    mac, peer = VTEP_MAC[from_client], VTEP_MAC[not from_client]
    inner = IPv6(packet) if packet[0] >> 4 == 6 else IP(packet)
    outer = Ether(src=mac, dst=peer) / IP(src=src, dst=dst)
    if name == "GRE":
        built = outer / GRE(key_present=1, key=1, seqnum_present=1, sequence_number=len(packet)) / inner
    elif name == "VXLAN":
        built = (outer / UDP(sport=50000, dport=VXLAN_PORT) / VXLAN(flags=0x08, vni=1)
                 / Ether(src=CLIENT_MAC, dst=SERVER_MAC) / inner)
    elif name == "ERSPAN III":
        built = (outer / GRE(seqnum_present=1, sequence_number=len(packet)) / ERSPAN_III(session_id=3)
                 / Ether(src=CLIENT_MAC, dst=SERVER_MAC) / inner)
    else:
        built = outer / inner  # IP-in-IP or IPv6-in-IPv4: scapy sets the protocol
    return bytes(built)


@pytest.mark.parametrize("name,family", [("GRE", 4), ("VXLAN", 6), ("ERSPAN III", 4), ("IPIP", 4),
                                         ("6in4", 6)])
def test_tunnels_built_by_scapy(tmp_path, name, family):
    plain = conversation(family, LINKTYPE_ETHERNET).packets
    raw = conversation(family, LINKTYPE_RAW)
    frames = [(ts, scapy_wrap(name, packet, seg.from_client))
              for (ts, packet), seg in zip(raw.packets, raw.segments, strict=True)]
    assert_same_as_plain(run(tmp_path, plain, "plain.pcap"), run(tmp_path, frames, "scapy.pcap"),
                         family)


# --- fragments ----------------------------------------------------------------------------------


def test_fragmented_outer_packets_are_reassembled_then_decapsulated(tmp_path):
    plain, _ = plain_and_wrapped("GRE IPv4")
    raw = conversation(4, LINKTYPE_RAW)
    frames: list[Packet] = []
    for i, ((ts, packet), seg) in enumerate(zip(raw.packets, raw.segments, strict=True)):
        a, b = OUTER[4] if seg.from_client else OUTER[4][::-1]
        outer = ipv4(a, b, IPPROTO_GRE, gre(packet, key=1), ident=i + 1, flags_frag=0)
        pieces = ipv4_fragments(outer, 512) if len(outer) > 600 else [outer]
        if i % 2:
            pieces.reverse()  # the last fragment first: still one datagram
        frames += [(ts, ether(piece)) for piece in pieces]
    assert len(frames) > len(plain)
    result = run(tmp_path, frames, "fragmented.pcap")
    assert result.pipeline.stats().fragments > 0
    assert_same_as_plain(run(tmp_path, plain, "plain.pcap"), result, 4)


def test_fragmented_outer_ipv6_carrying_ipv4(tmp_path):
    plain, _ = plain_and_wrapped("4in6")
    raw = conversation(4, LINKTYPE_RAW)
    frames: list[Packet] = []
    for i, ((ts, packet), seg) in enumerate(zip(raw.packets, raw.segments, strict=True)):
        a, b = OUTER[6] if seg.from_client else OUTER[6][::-1]
        outer = ipv6(a, b, IPPROTO_IPIP, packet)
        pieces = ipv6_fragments(outer, 400, ident=i + 1) if len(outer) > 500 else [outer]
        frames += [(ts, ether(piece, ETH_IPV6)) for piece in pieces]
    assert len(frames) > len(plain)
    assert_same_as_plain(run(tmp_path, plain, "plain.pcap"), run(tmp_path, frames, "f6.pcap"), 4)


def test_fragmented_inner_packets_inside_a_tunnel(tmp_path):
    plain, _ = plain_and_wrapped("VXLAN")
    raw = conversation(4, LINKTYPE_RAW)
    wrap = ENCAPSULATIONS["VXLAN"][1]
    frames: list[Packet] = []
    fragments: list[bytes] = []
    for (ts, packet), seg in zip(raw.packets, raw.segments, strict=True):
        # The conversation numbers each side's datagrams from 1: every one has its own ident.
        pieces = ipv4_fragments(packet, 256) if len(packet) > 300 else [packet]
        fragments += [wrap(piece, seg.from_client) for piece in pieces if len(pieces) > 1]
        frames += [(ts, wrap(piece, seg.from_client)) for piece in pieces]
    assert len(frames) > len(plain)
    result = run(tmp_path, frames, "inner-fragments.pcap")
    assert result.pipeline.stats().fragments > 0
    assert_same_as_plain(run(tmp_path, plain, "plain.pcap"), result, 4)
    # Fragments have no ports to key by, at any depth.
    assert fragments
    assert all(decode.tcp_key(decode.ETHERNET, f, 0, len(f)) is None for f in fragments)


# --- nesting and what is not opened --------------------------------------------------------------

_TCP = conversation(4, LINKTYPE_RAW).packets[0][1]  # the client's SYN, as a raw IPv4 packet


def ipip_levels(levels: int, packet: bytes = _TCP) -> bytes:
    for _ in range(levels):
        packet = ipv4("192.0.2.1", "192.0.2.2", IPPROTO_IPIP, packet, flags_frag=0)
    return ether(packet)


def stats_of(frame: bytes, snap: int | None = None) -> tuple[int, int, int, int, int]:
    pipeline = Pipeline()
    data = frame[:snap] if snap is not None else frame
    pipeline.feed(Batch.from_packets(LINKTYPE_ETHERNET, [(1.0, data)]))
    s = pipeline.stats()
    return s.tcp_packets, s.udp_packets, s.other_packets, s.malformed, s.truncated


TCP1, UDP1, OTHER, MALFORMED, TRUNCATED = ((1, 0, 0, 0, 0), (0, 1, 0, 0, 0), (0, 0, 1, 0, 0),
                                           (0, 0, 0, 1, 0), (0, 0, 0, 0, 1))


def over4(proto: int, payload: bytes) -> bytes:
    return ether(ipv4("192.0.2.1", "192.0.2.2", proto, payload, flags_frag=0))


def vx(payload_frame: bytes, flags: int = 0x08) -> bytes:
    return over4(IPPROTO_UDP, udp(5555, VXLAN_PORT, vxlan(payload_frame, 1, flags=flags)))


ARP = ether(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, 0x0806)
WRONG_VERSION = b"\x65" + _TCP[1:]
LONG_INNER = bytearray(_TCP)
struct.pack_into("!H", LONG_INNER, 2, len(_TCP) + 100)  # says 100 bytes more than the tunnel holds

COUNTED = [
    ("4 levels of IPIP are opened", ipip_levels(4), None, TCP1),
    ("a 5th level is not", ipip_levels(5), None, OTHER),
    ("GRE with the routing bit", over4(IPPROTO_GRE, gre(_TCP, routing=True)), None, OTHER),
    ("GRE version 2", over4(IPPROTO_GRE, b"\x00\x02\x08\x00" + _TCP), None, OTHER),
    ("GRE carrying ARP", over4(IPPROTO_GRE, gre(ARP[14:], 0x0806)), None, OTHER),
    ("GRE Ethernet carrying ARP", over4(IPPROTO_GRE, gre(ARP, ETH_TEB)), None, OTHER),
    ("VXLAN carrying ARP", vx(ARP), None, OTHER),
    ("VXLAN without its I flag is plain UDP", vx(ether(_TCP), flags=0), None, UDP1),
    ("UDP to another port", over4(IPPROTO_UDP, udp(5555, 80, vxlan(ether(_TCP), 1))), None, UDP1),
    ("ERSPAN II of an unknown version",
     over4(IPPROTO_GRE, gre(b"\x70" + erspan2(ether(_TCP), 1)[1:], ETH_ERSPAN_1_2, sequence=1)),
     None, OTHER),
    ("ERSPAN III of an unknown frame type",
     over4(IPPROTO_GRE, gre(erspan3(ether(_TCP), 1, frame_type=5), ETH_ERSPAN_3)), None, OTHER),
    ("PPTP acknowledgement without payload",
     over4(IPPROTO_GRE, pptp_gre(b"", 1, ack=7)), None, OTHER),
    ("PPTP with encrypted PPP (MPPE)",
     over4(IPPROTO_GRE, pptp_gre(b"\xff\x03\x00\xfd" + b"\x90" * 40, 1, sequence=1)), None, OTHER),
    ("an inner header of the wrong version", over4(IPPROTO_IPIP, WRONG_VERSION), None, MALFORMED),
    ("6in4 carrying IPv4", over4(IPPROTO_IPV6, _TCP), None, MALFORMED),
    ("an inner header cut short by the tunnel", over4(IPPROTO_GRE, gre(_TCP[:12])), None, MALFORMED),
    ("an inner length past the tunnel's end", over4(IPPROTO_IPIP, bytes(LONG_INNER)), None,
     MALFORMED),
    ("a GRE header cut short by the tunnel", over4(IPPROTO_GRE, b"\x30\x00\x08\x00\x00\x00"), None,
     MALFORMED),
    ("a VXLAN header cut short by the tunnel", over4(IPPROTO_UDP, udp(1, VXLAN_PORT, b"\x08\0\0")),
     None, MALFORMED),
    ("an empty IPIP payload", over4(IPPROTO_IPIP, b""), None, MALFORMED),
    ("an inner header cut by the snapshot length", over4(IPPROTO_GRE, gre(_TCP)), 14 + 20 + 4 + 10,
     TRUNCATED),
    ("a GRE header cut by the snapshot length", over4(IPPROTO_GRE, gre(_TCP, key=1)), 14 + 20 + 6,
     TRUNCATED),
    ("a VXLAN inner TCP header cut by the snapshot length", vx(ether(_TCP)),
     14 + 20 + 8 + 8 + 14 + 20 + 10, TRUNCATED),
]


@pytest.mark.parametrize("name,frame,snap,expected", COUNTED, ids=[c[0] for c in COUNTED])
def test_what_is_not_opened_or_broken_is_counted_once(name, frame, snap, expected):
    assert stats_of(frame, snap) == expected
    data = frame[:snap] if snap is not None else frame
    key = decode.tcp_key(decode.ETHERNET, data, 0, len(data))
    if expected == TCP1:
        assert key == decode.tcp_key(decode.RAW, _TCP, 0, len(_TCP))
    elif expected in (OTHER, UDP1):
        assert key is None


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from(sorted(ENCAPSULATIONS)), seed=st.integers(0, 2**32 - 1))
def test_mutated_tunnelled_packets_never_raise(which, seed):
    rng = random.Random(seed)
    _, wrapped = plain_and_wrapped(which)
    mutated = []
    for ts, frame in wrapped:
        f = bytearray(frame)
        for _ in range(rng.randrange(4)):
            if rng.randrange(2) and len(f) > 14:
                f[rng.randrange(14, min(len(f), 120))] = rng.randrange(256)  # tunnel headers
            elif f:
                del f[rng.randrange(len(f)) :]
        mutated.append((ts, bytes(f)))
        decode.tcp_key(decode.ETHERNET, bytes(f), 0, len(f))
    pipeline = Pipeline(Bounds(max_connections=50, memory_budget=1 << 20))
    pipeline.feed(Batch.from_packets(LINKTYPE_ETHERNET, mutated))
    pipeline.finish()
    stats = pipeline.stats()
    assert stats.memory_used == 0
    # Each packet is counted once, as what its innermost packet is; a fragment only once its
    # datagram is whole.
    counted = (stats.tcp_packets + stats.udp_packets + stats.other_packets + stats.malformed
               + stats.truncated)
    assert counted <= len(mutated) <= counted + stats.fragments


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["VXLAN", "GRE Ethernet with VLAN tag",
                                  "ERSPAN III with platform subheader", "6in4 (SIT)"])
def test_json_and_follow_see_through_the_tunnel(tmp_path, name):
    from tests.test_cli import no_traceback, records, wirepeek

    plain, wrapped = plain_and_wrapped(name)
    write_pcap(tmp_path / "plain.pcap", plain)
    write_pcap(tmp_path / "tunnel.pcap", wrapped)
    got = wirepeek("-r", str(tmp_path / "tunnel.pcap"), "--json")
    no_traceback(got)
    assert got.returncode == 0
    assert records(got.stdout) == records(wirepeek("-r", str(tmp_path / "plain.pcap"), "--json").stdout)
    [conn] = records(got.stdout, "connection")
    assert conn["server"].endswith(":80") and conn["protocol"] == "http"
    assert len(records(got.stdout, "http")) == 2
    server = wirepeek("-r", str(tmp_path / "tunnel.pcap"), "--follow", "0", "--dir", "server")
    assert server.returncode == 0 and server.stdout == RESPONSE + ANSWER


def test_write_with_a_filter_on_the_outer_headers(tmp_path):
    from tests.test_cli import records, wirepeek

    _, wrapped = plain_and_wrapped("GRE checksum+key+sequence")
    _, other = plain_and_wrapped("VXLAN")
    write_pcap(tmp_path / "both.pcap", sorted(wrapped + [(ts + 50, f) for ts, f in other]))
    out = tmp_path / "gre.pcap"
    proc = wirepeek("-r", str(tmp_path / "both.pcap"), "-w", str(out), "proto", "gre")
    assert proc.returncode == 0, proc.stderr
    again = records(wirepeek("-r", str(out), "--json").stdout, "connection")
    both = records(wirepeek("-r", str(tmp_path / "both.pcap"), "--json").stdout, "connection")
    assert len(both) == 2 and again == [both[0]]  # the GRE connection, first in time
