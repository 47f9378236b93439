"""tests/synth.py and tests/bench/workloads.py build what scapy and libpcap agree is on the wire."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pcapy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, defragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, defragment6
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

from tests import synth
from tests.bench import workloads
from tests.synth import (
    ETH_IPV4,
    ETH_IPV6,
    IPPROTO_DSTOPTS,
    IPPROTO_HOPOPTS,
    IPPROTO_TCP,
    IPPROTO_UDP,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    TcpConversation,
    ether,
    internet_checksum,
    ipv4,
    ipv4_fragments,
    ipv6,
    ipv6_ext_header,
    ipv6_fragments,
    linux_sll,
    pcap_bytes,
    retime,
    tcp,
    tcp_options,
    udp,
    write_pcap,
    write_pcapng,
)

PAYLOAD = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" + bytes(range(256)) + b"odd"


def assert_checksums_valid(pkt: ScapyPacket, layers: tuple[type[ScapyPacket], ...] = (IP, TCP, UDP)
                           ) -> None:
    """scapy recomputes every IP/TCP/UDP checksum of `pkt` to the value we wrote."""
    rebuilt = pkt.copy()
    for layer in layers:
        if layer in rebuilt:
            del rebuilt[layer].chksum
    rebuilt = rebuilt.__class__(bytes(rebuilt))
    for layer in layers:
        if layer in pkt:
            assert pkt[layer].chksum == rebuilt[layer].chksum, layer.__name__


def read_pcap(path: Path | str) -> list[tuple[float, int, bytes]]:
    """(timestamp, original length, captured bytes) of every packet, read by libpcap."""
    reader = pcapy.open_offline(str(path))
    out = []
    while True:
        header, data = reader.next()
        if header is None:
            return out
        sec, usec = header.getts()
        out.append((sec + usec / 1e6, header.getlen(), data))


@given(st.binary(max_size=300))
def test_internet_checksum_matches_a_word_by_word_sum(data: bytes) -> None:
    padded = data + b"\x00" * (len(data) & 1)
    total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    # 0 and 0xFFFF are the same number in one's complement; we write 0, as most stacks do.
    assert internet_checksum(data) in ({0, 0xFFFF} if total in (0, 0xFFFF) else {~total & 0xFFFF})


def test_ipv4_tcp_frame_dissects_with_our_fields_and_checksums() -> None:
    options = tcp_options(mss=1460, sack_permitted=True, timestamps=(1, 2), wscale=7)
    segment = tcp(51234, 80, 2**32 - 1, 12345, "PA", PAYLOAD, window=29200, options=options,
                  src_ip="192.168.1.10", dst_ip="93.184.216.34")
    pkt = Ether(ether(ipv4("192.168.1.10", "93.184.216.34", IPPROTO_TCP, segment, ident=4242)))

    assert pkt[IP].src == "192.168.1.10" and pkt[IP].dst == "93.184.216.34"
    ip_fields = (pkt[IP].id, pkt[IP].flags, pkt[IP].ttl, pkt[IP].len)
    assert ip_fields == (4242, "DF", 64, 20 + len(segment))
    tcp_fields = (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, pkt[TCP].ack)
    assert tcp_fields == (51234, 80, 2**32 - 1, 12345)
    assert pkt[TCP].flags == "PA" and pkt[TCP].window == 29200
    assert dict(pkt[TCP].options) == {"MSS": 1460, "SAckOK": b"", "Timestamp": (1, 2), "WScale": 7,
                                      "NOP": None}
    assert bytes(pkt[TCP].payload) == PAYLOAD
    assert_checksums_valid(pkt)


@pytest.mark.parametrize("flags", ["S", "SA", "A", "PA", "FA", "R", "RA", "FPAU"])
def test_tcp_flags_letters_are_scapys(flags: str) -> None:
    segment = tcp(1, 2, 3, 4, flags, src_ip="10.0.0.1", dst_ip="10.0.0.2")
    pkt = IP(ipv4("10.0.0.1", "10.0.0.2", IPPROTO_TCP, segment))
    assert pkt[TCP].flags == flags
    assert_checksums_valid(pkt)


def test_ipv6_with_extension_headers_dissects_and_checksums() -> None:
    src, dst = "2001:db8::1", "2001:db8:ffff::2"
    segment = tcp(443, 50000, 7, 8, "A", PAYLOAD, src_ip=src, dst_ip=dst)
    pad_n = b"\x01\x04\x00\x00\x00\x00"
    chain = ipv6_ext_header(IPPROTO_DSTOPTS) + ipv6_ext_header(IPPROTO_TCP, pad_n)
    pkt = Ether(ether(ipv6(src, dst, IPPROTO_HOPOPTS, segment, chain), ETH_IPV6))

    assert (pkt[IPv6].src, pkt[IPv6].dst) == (src, dst)
    assert pkt[IPv6].plen == len(chain) + len(segment)
    assert IPv6ExtHdrHopByHop in pkt and IPv6ExtHdrDestOpt in pkt
    assert (pkt[TCP].sport, pkt[TCP].dport, bytes(pkt[TCP].payload)) == (443, 50000, PAYLOAD)
    assert_checksums_valid(pkt)


def test_vlan_tags_and_qinq() -> None:
    packet = ipv4("10.1.1.1", "10.1.1.2", IPPROTO_UDP, udp(53, 5353, b"x", src_ip="10.1.1.1",
                                                            dst_ip="10.1.1.2"))
    single = Ether(ether(packet, vlan=[0x2000 | 100]))
    assert single.type == 0x8100 and single[Dot1Q].vlan == 100 and single[Dot1Q].prio == 1
    qinq = Ether(ether(packet, vlan=[300, 42]))
    assert qinq.type == 0x88A8 and qinq[Dot1AD].vlan == 300 and qinq[Dot1Q].vlan == 42
    assert qinq[IP].src == "10.1.1.1" and qinq[UDP].dport == 5353
    assert_checksums_valid(qinq)


def _tunnel_headers() -> list[tuple[str, bytes, ScapyPacket]]:
    """(name, what tests/synth.py builds, what scapy builds from the same fields)."""
    from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
    from scapy.contrib.geneve import GENEVE, GeneveOptions
    from scapy.contrib.mpls import MPLS
    from scapy.layers.l2 import GRE, GRE_PPTP
    from scapy.layers.ppp import HDLC, PPP
    from scapy.layers.vxlan import VXLAN

    inner = ipv4("10.0.0.1", "10.0.0.2", IPPROTO_TCP,
                 tcp(1, 80, 7, 0, "S", src_ip="10.0.0.1", dst_ip="10.0.0.2"))
    frame = ether(inner)
    option = struct.pack("!HBB", 0x0108, 1, 1) + b"\x00\x00\x00\x2a"
    return [
        ("GRE checksum, key, sequence", synth.gre(inner, checksum=True, key=0xDEADBEEF, sequence=9),
         GRE(chksum_present=1, key_present=1, seqnum_present=1, key=0xDEADBEEF,
             sequence_number=9) / IP(inner)),
        ("GRE Ethernet", synth.gre(frame, synth.ETH_TEB), GRE(proto=0x6558) / Ether(frame)),
        ("GRE routing bit", synth.gre(inner, routing=True),
         GRE(routing_present=1, proto=0x0800) / IP(inner)),
        ("PPTP", synth.pptp_gre(synth.ppp(inner), 0x4000, sequence=3, ack=5),
         GRE_PPTP(seqnum_present=1, acknum_present=1, call_id=0x4000, sequence_number=3,
                  ack_number=5) / HDLC() / PPP(proto=0x21) / IP(inner)),
        ("VXLAN", synth.vxlan(frame, 5001), VXLAN(flags=0x08, vni=5001) / Ether(frame)),
        ("Geneve", synth.geneve(inner, 77, ETH_IPV4, options=option),
         GENEVE(vni=77, proto=0x0800,
                options=[GeneveOptions(classid=0x0108, type=1, data=b"\x00\x00\x00\x2a")])
         / IP(inner)),
        ("ERSPAN II", synth.erspan2(frame, 42, vlan=100, index=3),
         ERSPAN_II(session_id=42, vlan=100, index=3) / Ether(frame)),
        ("ERSPAN III", synth.erspan3(frame, 42, timestamp=12345, hw_id=9),
         ERSPAN_III(session_id=42, timestamp=12345, hw=9) / Ether(frame)),
        ("ERSPAN III, platform subheader, IP", synth.erspan3(
            inner, 42, frame_type=2, platform=bytes(range(1, 9))),
         ERSPAN_III(session_id=42, ft=2, o=1)
         / ERSPAN_PlatformSpecific(info1=0x01020304, info2=0x05060708) / IP(inner)),
        ("MPLS", synth.mpls(inner, [16, 17]), MPLS(label=16, s=0, ttl=64)
         / MPLS(label=17, s=1, ttl=64) / IP(inner)),
    ]


@pytest.mark.parametrize("name", [name for name, _, _ in _tunnel_headers()])
def test_tunnel_headers_are_what_scapy_builds(name: str) -> None:
    [(_, ours, theirs)] = [t for t in _tunnel_headers() if t[0] == name]
    assert ours == bytes(theirs)


def test_linux_cooked_frame() -> None:
    pkt = CookedLinux(linux_sll(ipv4("10.0.0.1", "10.0.0.2", IPPROTO_TCP,
                                     tcp(1, 2, 3, 4, "S", src_ip="10.0.0.1", dst_ip="10.0.0.2"))))
    assert pkt[IP].dst == "10.0.0.2" and pkt[TCP].flags == "S"


def test_ipv4_fragments_reassemble_in_scapy() -> None:
    segment = tcp(40000, 80, 99, 100, "PA", PAYLOAD * 3, src_ip="10.0.0.1", dst_ip="10.0.0.2")
    packet = ipv4("10.0.0.1", "10.0.0.2", IPPROTO_TCP, segment, ident=0xBEEF)
    fragments = ipv4_fragments(packet, 100)

    assert len(fragments) == -(-len(segment) // 96)
    parsed = [IP(f) for f in fragments]
    assert [p.frag * 8 for p in parsed] == list(range(0, len(segment), 96))
    assert [p.flags for p in parsed] == ["MF"] * (len(parsed) - 1) + [0]
    for p in parsed:
        assert_checksums_valid(p, (IP,))  # a TCP checksum covers the whole segment, not a fragment
    # (scapy 2.8's defragment mishandles fragments given out of order, so keep them in order.)
    reassembled = defragment(parsed)
    assert len(reassembled) == 1
    whole = IP(bytes(reassembled[0]))  # scapy leaves the reassembled header to be rebuilt
    assert bytes(whole[TCP]) == segment
    assert_checksums_valid(whole)


def test_ipv6_fragments_reassemble_in_scapy() -> None:
    src, dst = "fe80::1", "2001:db8::2"
    segment = tcp(40000, 80, 99, 100, "PA", PAYLOAD * 3, src_ip=src, dst_ip=dst)
    packet = ipv6(src, dst, IPPROTO_HOPOPTS, segment, ipv6_ext_header(IPPROTO_TCP))
    fragments = ipv6_fragments(packet, 200, ident=7)

    assert len(fragments) == -(-len(segment) // 200)
    parsed = [IPv6(f) for f in fragments]
    assert all(IPv6ExtHdrHopByHop in p for p in parsed)  # unfragmentable part repeated
    whole = defragment6(parsed)
    assert bytes(whole) == packet


def test_conversation_tracks_sequence_numbers_across_wraparound() -> None:
    conv = TcpConversation(client=("10.0.0.1", 50000), server=("10.0.0.2", 80),
                           client_isn=2**32 - 10, server_isn=2**32 - 1, mss=100)
    conv.handshake()
    request, response = b"q" * 250, b"r" * 30
    conv.client_send(request)
    conv.server_send(response)
    conv.close()

    pkts = [Ether(frame) for _, frame in conv.packets]
    summary = [
        (p[IP].src == "10.0.0.1", str(p[TCP].flags), p[TCP].seq, p[TCP].ack, len(p[TCP].payload))
        for p in pkts
    ]
    c0, s0 = 2**32 - 10, 2**32 - 1
    assert summary == [
        (True, "S", c0, 0, 0),
        (False, "SA", s0, c0 + 1, 0),
        (True, "A", c0 + 1, 0, 0),  # server ISN + 1 wrapped to 0
        (True, "A", c0 + 1, 0, 100),
        (True, "A", 91, 0, 100),  # client sequence numbers wrapped inside the first segment
        (True, "PA", 191, 0, 50),
        (False, "A", 0, 241, 0),
        (False, "PA", 0, 241, 30),
        (True, "A", 241, 30, 0),
        (True, "FA", 241, 30, 0),
        (False, "FA", 30, 242, 0),
        (True, "A", 242, 31, 0),
    ]
    assert b"".join(bytes(p[TCP].payload) for p in pkts if p[IP].src == "10.0.0.1") == request
    timestamps = [ts for ts, _ in conv.packets]
    assert timestamps == sorted(set(timestamps))
    for p in pkts:
        assert_checksums_valid(p)


def test_conversation_over_ipv6_and_edited_segments() -> None:
    conv = TcpConversation(client=("2001:db8::1", 50000), server=("2001:db8::2", 443),
                           auto_ack=False, linktype=LINKTYPE_LINUX_SLL)
    conv.handshake()
    conv.client_send(b"hello")
    retransmit = conv.segments[-1]
    frames = conv.frames([retransmit, retransmit])
    assert frames[0][1] == frames[1][1]
    reordered = retime([conv.packets[3], *conv.packets[:3]])
    assert [ts for ts, _ in reordered] == sorted(ts for ts, _ in reordered)
    pkt = CookedLinux(reordered[0][1])
    assert pkt[IPv6].src == "2001:db8::1" and bytes(pkt[TCP].payload) == b"hello"
    assert_checksums_valid(pkt)


def test_write_pcap_reads_back_with_pcapy(tmp_path: Path) -> None:
    conv = TcpConversation(start=1_700_000_123.000001, step=0.25)
    conv.handshake()
    conv.client_send(PAYLOAD)
    path = tmp_path / "c.pcap"
    assert write_pcap(path, conv.packets) == len(conv.packets)

    reader = pcapy.open_offline(str(path))
    assert reader.datalink() == LINKTYPE_ETHERNET
    header, data = reader.next()
    assert header.getts() == (1_700_000_123, 1) and data == conv.packets[0][1]
    assert [(round(ts, 6), data) for ts, _, data in read_pcap(path)] == conv.packets


def test_write_pcap_snaplen_keeps_original_length(tmp_path: Path) -> None:
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", IPPROTO_TCP, tcp(1, 2, 3, 4, "PA", PAYLOAD)))
    path = tmp_path / "short.pcap"
    path.write_bytes(pcap_bytes([(1.5, frame)], snaplen=64))
    assert read_pcap(path) == [(1.5, len(frame), frame[:64])]


def test_write_pcapng_reads_back_with_pcapy(tmp_path: Path) -> None:
    conv = TcpConversation()
    conv.handshake()
    path = tmp_path / "c.pcapng"
    write_pcapng(path, conv.packets)
    assert [(round(ts, 6), data) for ts, _, data in read_pcap(path)] == conv.packets


def test_pcap_file_fixture(pcap_file: Callable[..., Path]) -> None:
    conv = TcpConversation()
    conv.handshake()
    assert len(read_pcap(pcap_file(conv.packets))) == 3


def check_workload_capture(path: str, facts: dict[str, object]) -> list[ScapyPacket]:
    """The capture holds the advertised packets, valid checksums, increasing timestamps, and
    each direction of each connection is contiguous in sequence space."""
    records = read_pcap(path)
    assert len(records) == facts["packets"]
    assert [ts for ts, _, _ in records] == sorted(ts for ts, _, _ in records)
    assert records[0][0] == facts["first_ts"] and records[-1][0] == facts["last_ts"]
    pkts = [Ether(data) for _, _, data in records]
    next_seq: dict[tuple[str, int, str, int], int] = {}
    payload_bytes = 0
    for p in pkts:
        assert_checksums_valid(p)
        flow = (p[IP].src, p[TCP].sport, p[IP].dst, p[TCP].dport)
        seq, length = p[TCP].seq, len(p[TCP].payload)
        if "S" in p[TCP].flags:
            next_seq[flow] = seq
        assert next_seq[flow] == seq, flow
        next_seq[flow] = (seq + length + ("S" in p[TCP].flags) + ("F" in p[TCP].flags)) % 2**32
        payload_bytes += length
    assert payload_bytes == facts["bytes"]
    return pkts


def test_keepalive_workload_has_advertised_packets(tmp_path: Path) -> None:
    path = str(tmp_path / "keepalive.pcap")
    facts = workloads.keepalive_http(path, connections=5, transactions=42)
    assert facts["packets"] == 5 * 3 + 42 * 2 + 5 * 3
    pkts = check_workload_capture(path, facts)
    requests = [bytes(p[Raw]) for p in pkts if Raw in p and p[TCP].dport == 8080]
    assert sorted(r.split(b" ")[1] for r in requests) == sorted(b"/items/%d" % n for n in range(42))
    assert all(80 <= len(r) <= 120 for r in requests)
    responses = [bytes(p[Raw]) for p in pkts if Raw in p and p[TCP].sport == 8080]
    assert len(responses) == 42
    head, _, body = responses[0].partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head


def test_keepalive_workload_with_bare_acks(tmp_path: Path) -> None:
    path = str(tmp_path / "keepalive.pcap")
    facts = workloads.keepalive_http(path, connections=3, transactions=10, bare_acks=True)
    assert facts["packets"] == 3 * 3 + 10 * 4 + 3 * 3
    check_workload_capture(path, facts)


def test_conn_per_request_workload(tmp_path: Path) -> None:
    path = str(tmp_path / "cpr.pcap")
    facts = workloads.conn_per_request_http(path, connections=30, concurrency=4)
    assert facts["packets"] == 300 and facts["connections"] == 30
    pkts = check_workload_capture(path, facts)
    assert len({p[TCP].sport for p in pkts if p[TCP].flags == "S"}) == 30


def test_syn_flood_workload(tmp_path: Path) -> None:
    path = str(tmp_path / "flood.pcap")
    facts = workloads.syn_flood(path, connections=2_000, syn_ack_every=500)
    assert facts["packets"] == 2_004 and facts["syn_acks"] == 4
    pkts = [Ether(data) for _, _, data in read_pcap(path)]
    syns = [p for p in pkts if p[TCP].flags == "S"]
    assert len({(p[IP].src, p[TCP].sport) for p in syns}) == 2_000
    for p in pkts[:50]:
        assert_checksums_valid(p)
