"""The pcap/pcapng parser and the pcap writer of engine.pcapfile, without libpcap in the way.

libpcap's own per-packet `next()` is the reference for what a file holds: the parser must frame
the same packets from the same bytes however they are chunked, and libpcap must read back what
the writer wrote.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pcapy
import pytest

from engine.pcapfile import PARSE_LIMIT, CaptureError, CaptureParser, Packet, PcapWriter
from tests.captures import PCAPS, reference

HTTP_GET = PCAPS / "zeek" / "http__get.pcap"  # 14 packets, Ethernet
PCAPNG = PCAPS / "zeek" / "http__cooper-grill-dvwa.pcapng"  # 64 packets, one interface
SNAPPED = PCAPS / "zeek" / "tcp__retransmit-fast009.pcap"  # caplen < wire length for some
RAW = PCAPS / "zeek" / "tcp__payload-syn.pcap"  # LINKTYPE_RAW (101), which libpcap calls 12
NFLOG = PCAPS / "zeek" / "nflog-http.pcap"
LOOPBACK = PCAPS / "gopacket" / "pcap_test_loopback.pcap"  # BSD loopback (DLT_NULL)
NG_001 = PCAPS / "gopacket" / "pcapgo_tests_le_test001.pcapng"
NG_010 = PCAPS / "gopacket" / "pcapgo_tests_le_test010.pcapng"


def parse_in_chunks(blob: bytes, size: int) -> tuple[list[Packet], str | None]:
    parser = CaptureParser()
    out: list[Packet] = []
    for start in range(0, len(blob), size):
        parser.feed(blob[start : start + size])
        for _ in range(100_000):
            got = parser.parse(PARSE_LIMIT)
            if not got:
                break
            out.extend(got)
    return out, parser.end()




# --- the parser -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [HTTP_GET, PCAPNG, NG_001, NG_010, RAW, NFLOG, LOOPBACK])
@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
def test_parser_agrees_with_libpcap_in_any_chunking(path: Path, chunk: int) -> None:
    expected, _ = reference(path)
    got, problem = parse_in_chunks(path.read_bytes(), chunk)
    assert problem is None
    assert [(p.sec, p.usec, len(p.data), p.wire_len, p.data) for p in got] == expected
    assert {p.linktype for p in got} == {pcapy.open_offline(str(path)).datalink()}


def swap_pcap(blob: bytes, nanoseconds: bool) -> bytes:
    """The same capture as a big-endian file, with nanosecond timestamps if asked."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    fields = struct.unpack_from("<HHiIII", blob, 4)
    out = bytearray(struct.pack(">I", magic) + struct.pack(">HHiIII", *fields))
    pos = 24
    while pos < len(blob):
        sec, usec, caplen, wire = struct.unpack_from("<IIII", blob, pos)
        frac = usec * 1000 + 999 if nanoseconds else usec
        out += struct.pack(">IIII", sec, frac, caplen, wire)
        out += blob[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
    return bytes(out)


@pytest.mark.parametrize("nanoseconds", [False, True])
def test_big_endian_and_nanosecond_pcap(tmp_path: Path, nanoseconds: bool) -> None:
    crafted = tmp_path / "crafted.pcap"
    crafted.write_bytes(swap_pcap(HTTP_GET.read_bytes(), nanoseconds))
    expected, _ = reference(HTTP_GET)
    assert reference(crafted)[0] == expected  # libpcap reads it as the original
    got, problem = parse_in_chunks(crafted.read_bytes(), 1000)
    assert problem is None
    assert [(p.sec, p.usec, len(p.data), p.wire_len, p.data) for p in got] == expected


def pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def test_pcapng_timestamp_resolutions_and_offsets() -> None:
    shb = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    nano = pcapng_block(1, struct.pack("<HHI", 1, 0, 0) + pcapng_option(9, b"\x09"))
    binary = pcapng_block(
        1,
        struct.pack("<HHI", 101, 0, 0)
        + pcapng_option(9, b"\x8a")  # 2^-10 seconds
        + pcapng_option(14, struct.pack("<q", 100)),
    )
    data = b"\x45" + b"\0" * 19

    def epb(interface: int, ticks: int) -> bytes:
        return pcapng_block(
            6, struct.pack("<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, 20, 60) + data
        )

    blob = (
        shb + nano + binary + epb(0, 1_700_000_000_123_456_789) + epb(1, 1_700_000_000 * 1024 + 512)
    )
    got, problem = parse_in_chunks(blob, 13)
    assert problem is None
    assert [(p.sec, p.usec, p.linktype, p.wire_len, p.data) for p in got] == [
        (1_700_000_000, 123_456, 1, 60, data),
        (1_700_000_100, 500_000, 12, 60, data),  # LINKTYPE_RAW comes out as libpcap's DLT_RAW
    ]


def test_parser_reports_garbage() -> None:
    parser = CaptureParser()
    parser.feed(b"GET / HTTP/1.1\r\n")
    assert parser.parse() == [] and parser.broken == "unknown file format"
    assert parser.end() == "unknown file format"


@pytest.mark.parametrize("path", [HTTP_GET, PCAPNG])
@pytest.mark.parametrize("cut", [3, 10, 60, 200])
def test_parser_reports_truncation_as_libpcap_does(tmp_path: Path, path: Path, cut: int) -> None:
    broken = tmp_path / path.name
    broken.write_bytes(path.read_bytes()[:-cut])
    expected, problem = reference(broken)
    got, parser_problem = parse_in_chunks(broken.read_bytes(), 999)
    assert [(p.sec, p.usec, len(p.data), p.wire_len, p.data) for p in got] == expected
    assert parser_problem == problem


# --- the writer -------------------------------------------------------------------------------


def packets_of(path: Path) -> list[Packet]:
    got, problem = parse_in_chunks(path.read_bytes(), 1 << 20)
    assert problem is None
    return got


@pytest.mark.parametrize("path", [HTTP_GET, SNAPPED, RAW, LOOPBACK])
def test_libpcap_reads_back_what_the_writer_wrote(tmp_path: Path, path: Path) -> None:
    out = tmp_path / "out.pcap"
    packets = packets_of(path)
    with out.open("wb") as stream:
        writer = PcapWriter(stream, str(out))
        for p in packets:
            writer.write(p)
        writer.close(1)
    assert writer.written == len(packets) and stream.closed
    assert reference(out) == (reference(path)[0], None)  # wire lengths kept where caplen is less
    assert pcapy.open_offline(str(out)).datalink() == pcapy.open_offline(str(path)).datalink()


def test_the_file_header_stores_the_linktype_number_not_libpcaps_dlt() -> None:
    out = io.BytesIO()
    writer = PcapWriter(out, "raw.pcap", owned=False)
    for p in packets_of(RAW):
        writer.write(p)
    writer.close(1)
    assert writer.linktype == 12  # DLT_RAW, as libpcap and the parser hand it out
    assert out.getvalue()[20:24] == struct.pack("=I", 101)  # LINKTYPE_RAW in the file
    assert not out.closed  # not owned (standard output): flushed, left open


def test_a_capture_without_packets_is_still_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "none.pcap"
    writer = PcapWriter(out.open("wb"), str(out))
    writer.close(113)
    assert reference(out) == ([], None)
    assert pcapy.open_offline(str(out)).datalink() == 113


def test_the_writer_refuses_a_second_link_type() -> None:
    writer = PcapWriter(io.BytesIO(), "mixed.pcap", owned=False)
    ethernet, loopback = packets_of(HTTP_GET)[:2], packets_of(LOOPBACK)[0]
    for p in ethernet:
        writer.write(p)
    with pytest.raises(CaptureError) as caught:
        writer.write(loopback)
    assert str(caught.value) == (
        "mixed.pcap: a pcap file holds one link type, and after 2 packets of link type 1 came"
        " one of link type 0"
    )
    assert writer.written == 2
