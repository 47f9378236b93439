"""engine.tcpdump: our packet lines against what tcpdump -nn itself prints for the same files."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from engine import sources
from engine.tcpdump import (
    ABSOLUTE,
    ACK,
    SYN,
    Offsets,
    SequenceBases,
    TcpHeader,
    packet_line,
    tcp_header,
    tcp_line,
)
from tests.captures import all_captures, capture

needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")

# Ethernet (IPv4 and IPv6), Linux cooked (SLL), BSD loopback, raw IP, NFLOG, VLAN and QinQ tags,
# PPPoE, TCP Fast Open, urgent data, SACK and EOL options: then every capture we hold.
CHOSEN = [
    "wirepeek/lo-port-reuse.pcap",
    "wirepeek/any-sll-port-reuse.pcap",
    "arkime/v6-http.pcap",
    "zeek/wikipedia.pcap",
    "gopacket/pcap_test_loopback.pcap",
    "zeek/tcp__payload-syn.pcap",
    "zeek/nflog-http.pcap",
    "zeek/http-qinq-0.pcap",
    "suricata-verify/bug-4810__pppoe-session-http.pcap",
    "suricata-verify/tcp-fastopen-01__tfo.pcap",
    "suricata-verify/tcp-urgp-01-oob__tcp-urgent1.pcap",
    "zeek/tcp__retransmit-fast009.pcap",
]

# From the (last) IP header tcpdump printed for the TCP segment to its length: what follows
# is tcpdump's protocol printers (": HTTP: GET / HTTP/1.1"), which we do not imitate.
_SEGMENT = re.compile(r"(IP6? [0-9A-Fa-f.:]+\.\d+ > [0-9A-Fa-f.:]+\.\d+: .*?)(?=: [A-Z]|$)")
_FIELDS = re.compile(
    r"^(?P<addresses>IP6? \S+ > \S+): Flags \[(?P<flags>[^\]]*)\]"
    r"(?:, seq (?P<seq>[\d:]+))?(?:, ack (?P<ack>\d+))?, win (?P<win>\d+)(?:, urg (?P<urg>\d+))?"
    r"(?:, options \[(?P<options>.*)\])?, length (?P<length>\d+)$"
)


def tcpdump_lines(path: str) -> dict[int, str]:
    """Packet number (from 0) -> tcpdump's line for it, without the time."""
    # Not checked: tcpdump refuses a few files (pcapng with mixed link types) after their first
    # packets or at once; what it printed is still its reading.
    out = subprocess.run(["tcpdump", "-nn", "-#", "-r", path], capture_output=True, text=True,
                         errors="replace").stdout
    lines = {}
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+)\s+\d\d:\d\d:\d\d\.\d{6} (.*)$", line)
        if m:
            lines[int(m.group(1)) - 1] = m.group(2)
    return lines


def segment_of(tcpdump: str) -> str | None:
    found = _SEGMENT.findall(tcpdump)
    if not found:
        return None
    text = found[-1]
    # Cut what a protocol printer added after the length.
    m = re.match(r"^(.*?, length \d+)", text)
    return m.group(1) if m else text


def fields(line: str) -> dict[str, str | None]:
    m = _FIELDS.match(line)
    return m.groupdict() if m else {"line": line}


def our_lines(path: str) -> dict[int, str]:
    bases = SequenceBases()
    lines = {}
    source = sources.open_files([path])
    n = 0
    while (batch := source.next_batch()) is not None:
        for _ts, data in batch.packets():
            header = tcp_header(batch.linktype, data)
            if header is not None:
                lines[n] = tcp_line(header, bases.offsets(header))
            n += 1
    source.close()
    return lines


def compare(name: str) -> int:
    """Assert that every TCP line we make is tcpdump's, field by field; return how many."""
    path = capture(name)
    theirs = tcpdump_lines(path)
    compared = 0
    for n, ours in our_lines(path).items():
        segment = segment_of(theirs.get(n, ""))
        if segment is None or "Flags [" not in segment and "[|tcp]" not in segment:
            continue  # tcpdump did not print it as a TCP segment (a protocol it dissects itself)
        assert fields(ours) == fields(segment), f"{name} packet {n + 1}:\n ours {ours}\n tcpdump {segment}"
        compared += 1
    return compared


@needs_tcpdump
@pytest.mark.parametrize("name", CHOSEN)
def test_lines_are_tcpdumps(name):
    assert compare(name) > 0


@needs_tcpdump
def test_lines_are_tcpdumps_for_every_capture_we_hold():
    compared = sum(compare(name) for name in all_captures())
    assert compared > 9_000  # 9,755 when written


@needs_tcpdump
def test_the_example_line():
    theirs = tcpdump_lines(capture("wirepeek/lo-port-reuse.pcap"))
    ours = our_lines(capture("wirepeek/lo-port-reuse.pcap"))
    # The request of the first connection, relative numbers after the handshake.
    assert ours[3] == ("IP 127.0.0.1.41234 > 127.0.0.1.18765: Flags [P.], seq 1:80, ack 1, win 64, "
                       "options [nop,nop,TS val 727797041 ecr 4151312], length 79")
    assert theirs[3].startswith(ours[3])
    # IPv6 as IP6; the handshake's SYN-ACK records the numbers, so it prints them absolute.
    assert ours[37].startswith("IP6 ::1.41236 > ::1.18766: Flags [S], seq 4180164535, win 65476")
    assert ours[38].startswith("IP6 ::1.18766 > ::1.41236: Flags [S.], seq 1696830012, ack 4180164536")
    assert ours[39].startswith("IP6 ::1.41236 > ::1.18766: Flags [.], ack 1, win 64")


def header(**fields: object) -> TcpHeader:
    defaults: dict[str, object] = dict(
        ipv6=False, src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), sport=40000, dport=80,
        seq=1000, ack=0, flags=SYN, window=512, urgent=0, header_len=20, options=b"", length=20,
        cut=False)
    defaults.update(fields)
    return TcpHeader(**defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize("h, expected", [
    (header(), "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 512, length 0"),
    (header(flags=0), "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [none], win 512, length 0"),
    (header(flags=0xFF, urgent=7, ack=5),
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [FSRP.UEW], seq 1000, ack 5, win 512, urg 7, length 0"),
    (header(flags=ACK | 0x08, ack=9, length=30),
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [P.], seq 1000:1010, ack 9, win 512, length 10"),
    (header(seq=0xFFFFFFFF, flags=ACK, ack=1, length=22),  # the end wraps past 2**32
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [.], seq 4294967295:1, ack 1, win 512, length 2"),
    (header(header_len=28, options=bytes([2, 4, 5, 180, 1, 3, 3, 7]), length=28),
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 512, options [mss 1460,nop,wscale 7],"
     " length 0"),
    (header(header_len=24, options=bytes([2, 9, 5, 180]), length=24),  # longer than the header
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 512, options [[bad opt]"),
    (header(header_len=28, options=bytes([1, 2, 4]), length=28),  # the capture ends in the mss
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 512, options [nop,mss [|tcp]>"),
    (header(header_len=24, options=bytes([0x99, 4, 0xAB, 0xCD]), length=24),
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 512, options [unknown-153 0xabcd],"
     " length 0"),
    (header(header_len=16, length=16),
     "IP 10.0.0.1.40000 > 10.0.0.2.80:  tcp 0 [bad hdr length 16 - too short, < 20]"),
    (header(header_len=40, length=30),
     "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S] [bad hdr length 40 - too long, > 30]"),
    (header(cut=True), "IP 10.0.0.1.40000 > 10.0.0.2.80:  [|tcp]"),
    (header(ipv6=True, src=bytes(15) + b"\x01", dst=bytes.fromhex("fd000000000000000000000000000002")),
     "IP6 ::1.40000 > fd00::2.80: Flags [S], seq 1000, win 512, length 0"),
])
def test_line_fields(h, expected):
    assert tcp_line(h) == expected


def test_relative_numbers_follow_tcpdumps_rules():
    bases = SequenceBases()
    syn = header(seq=100)
    syn_ack = header(src=bytes([10, 0, 0, 2]), dst=bytes([10, 0, 0, 1]), sport=80, dport=40000,
                     seq=5000, ack=101, flags=SYN | ACK)
    data = header(seq=101, ack=5001, flags=ACK, length=30)
    assert bases.offsets(syn) == ABSOLUTE  # no ACK: absolute, nothing recorded
    assert bases.offsets(syn_ack) == Offsets(0, 0, 100)  # recorded, itself absolute
    assert tcp_line(data, bases.offsets(data)).startswith(
        "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [.], seq 1:11, ack 1,")
    # The server's packets count from its own number, and SACK edges from what they acknowledge.
    reply = syn_ack._replace(seq=5001, ack=111, flags=ACK)
    assert bases.offsets(reply) == Offsets(5000, 100, 100)


def test_what_is_not_tcp_says_so():
    assert packet_line(1, b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28) == "not a TCP segment (42 bytes captured)"


@pytest.mark.parametrize("name", all_captures())
def test_the_quick_offsets_are_the_decoded_ones(name):
    quick, decoded = SequenceBases(), SequenceBases()
    source = sources.open_files([capture(name)])
    while (batch := source.next_batch()) is not None:
        for _ts, data in batch.packets():
            header = tcp_header(batch.linktype, data)
            assert quick.packet_offsets(batch.linktype, data) == (
                decoded.offsets(header) if header is not None else ABSOLUTE)
    source.close()
