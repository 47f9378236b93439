"""The bundled real captures: every one processed without error, and the unambiguous ones checked
byte for byte against a naive reading of the same packets."""

from __future__ import annotations

import pytest
from scapy.all import IP, TCP, IPv6, rdpcap  # type: ignore[attr-defined]

from engine.events import ConnectionClosed
from tests.captures import all_captures, capture, replay, tshark_profiles

ALL = all_captures()


def test_the_captures_are_here():
    assert len(ALL) > 100


@pytest.mark.parametrize("name", ALL)
def test_every_capture_is_processed(name):
    result = replay(name)
    stats = result.pipeline.stats()
    assert result.error is None
    assert stats.packets > 0
    infos = result.infos(None)
    # Every connection is reported final exactly once, ids in first-seen order from 0.
    assert [i.id for i in infos] == list(range(stats.connections_total))
    assert stats.memory_used == 0  # everything given back at the end
    for info in infos:
        assert sum(info.packets) > 0
        assert info.first_ts <= info.last_ts


def _clean(profile: str) -> bool:
    return "flags={}" in profile and "streams=1 " in profile


# The naive reading below does not reassemble IP fragments; that capture has its own test.
CLEAN = [
    n for n, prof in tshark_profiles().items()
    if _clean(prof) and not n.endswith("pcapng") and n != "arkime/socks5-http-302-frag.pcap"
]


def _naive_streams(name: str) -> dict[bool, bytes]:
    """Payloads in capture order, split by direction (the SYN sender's or lower-port side is client)."""
    out = {True: b"", False: b""}
    client = None
    for pkt in rdpcap(capture(name)):
        if TCP not in pkt:
            continue
        t = pkt[TCP]
        ip = pkt[IP] if IP in pkt else pkt[IPv6]
        src = (ip.src, t.sport)
        if client is None and t.flags & 0x02:
            client = src if not t.flags & 0x10 else (ip.dst, t.dport)
        if client is None:
            client = src if t.sport > t.dport else (ip.dst, t.dport)
        size = ip.len - ip.ihl * 4 - t.dataofs * 4 if IP in pkt else ip.plen - t.dataofs * 4
        out[src == client] += bytes(t.payload)[:size]
    return out


@pytest.mark.parametrize("name", CLEAN)
def test_clean_single_stream_captures_match_a_naive_reading(name):
    """Where tshark saw no retransmission, gap or reordering, the streams are the payloads in order."""
    result = replay(name)
    [info] = result.infos()
    naive = _naive_streams(name)
    if not naive[True] and not naive[False] and info.bytes != (0, 0):
        pytest.skip("scapy does not decode this link layer (IPv6 in BSD NULL)")
    assert result.stream(info.id, True) == naive[True]
    assert result.stream(info.id, False) == naive[False]
    assert info.missing_bytes == (0, 0)
    assert info.bytes == (len(naive[True]), len(naive[False]))


def test_zeek_get_exact_streams_and_state():
    result = replay("zeek/http__get.pcap")
    [info] = result.infos()
    request = result.stream(0, True)
    assert request.startswith(b"GET /download/CHANGES.bro-aux.txt HTTP/1.1\r\n")
    assert request.endswith(b"Connection: Keep-Alive\r\n\r\n")
    response = result.stream(0, False)
    head, body = response.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 4705" in head and len(body) == 4705
    assert (info.state, info.conn_state, info.history) == ("CLOSED", "SF", "ShADadFf")
    assert (info.client, info.server) == ("141.142.228.5:59856", "192.150.187.43:80")
    assert info.protocol == "http"


@pytest.mark.parametrize(
    "name,encapsulation",
    [
        ("zeek/http-vlan-0.pcap", "802.1Q"),
        ("zeek/http-qinq-0.pcap", "QinQ"),
        ("suricata-verify/bug-4810__pppoe-session-http.pcap", "PPPoE, compressed PPP protocol"),
        ("zeek/nflog-http.pcap", "NFLOG"),
        ("suricata-verify/http-async__input.pcap", "BSD NULL"),
        ("zeek/http__261__variant-04-te_cl_desync.pcap", "raw IPv4"),
        ("suricata-verify/http-ipv6__input.pcap", "IPv6 over NULL"),
        ("arkime/v6-http.pcap", "IPv6 over Ethernet"),
        ("arkime/twovlan.pcap", "two VLAN tags"),
    ],
)
def test_encapsulations_reach_http(name, encapsulation):
    result = replay(name)
    assert any(i.protocol == "http" for i in result.infos()), encapsulation
    assert result.pipeline.stats().malformed == 0


def test_ipv4_fragments_are_reassembled():
    result = replay("arkime/socks5-http-302-frag.pcap")
    assert result.pipeline.stats().fragments > 0
    [info] = result.infos()
    assert b"HTTP/1.1 302" in result.stream(0, False)
    assert info.missing_bytes == (0, 0)


def test_ipv6_atomic_fragments():
    result = replay("zeek/ipv6-http-atomic-frag.pcap")
    assert result.pipeline.stats().fragments > 0
    assert any(i.protocol == "http" for i in result.infos())


def test_data_on_syn():
    result = replay("zeek/tcp__payload-syn.pcap")
    assert result.stream(0, True).startswith(b"GET ")


def test_retransmissions_are_delivered_once():
    result = replay("zeek/tcp__ssh-dups.pcap")
    [info] = result.infos()
    assert info.retransmitted_bytes[0] > 0 and info.retransmitted_bytes[1] > 0
    assert info.inconsistent_retransmissions == 0
    assert result.stream(0, True).startswith(b"SSH-2.0-")
    assert result.stream(0, False).startswith(b"SSH-2.0-")
    assert info.missing_bytes == (0, 0)
    assert "T" in info.history and "t" in info.history


@pytest.mark.parametrize(
    "name,retransmitted",
    [
        ("suricata-verify/eve-overlap-payload-01__tcp-overlap.pcap", 4),
        ("suricata-verify/eve-overlap-payload-04-partial-overlap__tcp-overlap2.pcap", 3),
    ],
)
def test_overlap_with_different_bytes_is_flagged_and_first_wins(name, retransmitted):
    result = replay(name)
    [info] = result.infos()
    assert info.inconsistent_retransmissions == 1
    assert info.retransmitted_bytes[0] == retransmitted
    assert "I" in info.history
    assert len(result.stream(0, True)) == info.bytes[0]


def test_missing_end_of_response_is_counted():
    result = replay("zeek/tcp__miss_end_data.pcap")
    [info] = result.infos()
    # The server's FIN comes 2902 bytes after the last byte it was seen to send.
    assert info.missing_bytes == (0, 2902)
    assert info.bytes == (538, 0)


def test_dropped_response_is_a_gap_acked_by_the_client():
    result = replay("zeek/http__1000-requests-one-dropped-response.pcap")
    [info] = result.infos()
    assert result.stream(0, True).count(b"GET /") == 1000
    assert info.missing_bytes == (0, 238)
    gaps = [e for e in result.events if type(e).__name__ == "Gap"]
    assert [(g.size, g.reason) for g in gaps] == [(238, "acked")]
    assert result.stream(0, False).count(b"HTTP/1.1 200") == 999


def test_port_reuse_opens_new_connections():
    result = replay("arkime/tcp-reassembly-synthetic.pcap")
    reasons = [e.reason for e in result.events if isinstance(e, ConnectionClosed)]
    assert "reused" in reasons
    assert len(result.infos()) == 12


def test_bpf_filter_applies_to_files():
    everything = replay("zeek/wikipedia.pcap")
    only_web = replay("zeek/wikipedia.pcap", "tcp port 80")
    assert 0 < only_web.pipeline.stats().packets < everything.pipeline.stats().packets
    assert only_web.pipeline.stats().udp_packets == 0
