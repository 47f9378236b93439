"""engine.pcapfile without libpcap in the way: the pcap/pcapng parser, the pcap writer, and the
gzip/zstd decompressor in front of the parser.

libpcap's own per-packet `next()` is the reference for what a file holds: the parser must frame
the same packets from the same bytes however they are chunked, and libpcap must read back what
the writer wrote. The decompressor must give back exactly the bytes that were compressed.
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
import zlib
from pathlib import Path

import pcapy
import pytest

from engine.pcapfile import (
    GZIP_MAGIC,
    PARSE_LIMIT,
    CaptureError,
    CaptureParser,
    Decompressor,
    Packet,
    PcapWriter,
    compression_of,
)
from tests.captures import (
    BIG,
    HTTP_GET,
    LOOPBACK,
    NFLOG,
    PCAPNG,
    PCAPS,
    RAW,
    SNAPPED,
    compress,
    reference,
    zstd_in_blocks,
)

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


# --- compressed captures ----------------------------------------------------------------------


def inflate(decompressor: Decompressor, blob: bytes, chunk: int, size: int) -> bytes:
    """Feed `blob` in chunks, reading at most `size` plain bytes at a time, then finish."""
    out = bytearray()
    for start in range(0, len(blob), chunk):
        decompressor.feed(blob[start : start + chunk])
        while piece := decompressor.read(size):
            assert len(piece) <= size or decompressor.kind == ""
            out += piece
    decompressor.finish()
    while piece := decompressor.read(size):
        out += piece
    return bytes(out)


@pytest.mark.parametrize("kind", ["gzip", "zstd", ""])
@pytest.mark.parametrize(("chunk", "size"), [(1, 1 << 20), (7, 100), (1000, 1), (1 << 20, 4096)])
def test_decompressor_gives_the_capture_back_in_any_chunking(kind: str, chunk: int, size: int) -> None:
    plain = PCAPNG.read_bytes()
    blob = compress(plain, kind) if kind else plain
    decompressor = Decompressor()
    assert inflate(decompressor, blob, chunk, size) == plain
    assert decompressor.kind == kind
    assert decompressor.end() is None and decompressor.broken is None


def test_compression_is_told_by_the_first_bytes() -> None:
    assert compression_of(b"\x1f\x8b\x08\x00") == "gzip"
    assert compression_of(b"\x28\xb5\x2f\xfd") == "zstd"
    assert compression_of(HTTP_GET.read_bytes()[:4]) is None
    assert compression_of(b"\x1f") is None  # too short to say
    # Plain bytes that merely start like gzip are plain once the input ends.
    decompressor = Decompressor()
    decompressor.feed(b"\x1f")
    assert decompressor.read(10) == b"" and decompressor.kind is None
    decompressor.finish()
    assert decompressor.read(10) == b"\x1f" and decompressor.kind == ""


def test_several_gzip_members_and_zero_padding_read_as_one_stream() -> None:
    plain = HTTP_GET.read_bytes()
    blob = compress(plain[:1000], "gzip") + compress(plain[1000:], "gzip") + b"\0" * 512
    decompressor = Decompressor()
    assert inflate(decompressor, blob, 333, 1 << 20) == plain
    assert decompressor.end() is None


def test_several_zstd_frames_and_skippable_frames_read_as_one_stream() -> None:
    plain = HTTP_GET.read_bytes()
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"notes"
    blob = compress(plain[:1000], "zstd") + skippable + compress(plain[1000:], "zstd")
    decompressor = Decompressor()
    assert inflate(decompressor, blob, 333, 1 << 20) == plain
    assert decompressor.end() is None


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_compressed_data_gives_all_it_can_then_says_so(kind: str) -> None:
    plain = BIG.read_bytes()
    blob = zstd_in_blocks(plain) if kind == "zstd" else compress(plain, kind)
    cut = blob[: len(blob) // 2]
    decompressor = Decompressor()
    got = inflate(decompressor, cut, 4096, 1 << 16)
    assert 0 < len(got) < len(plain) and plain.startswith(got)
    assert decompressor.end() == f"truncated {kind} data; the compressed stream ends early"
    if kind == "gzip":  # zlib itself gives no more from the same bytes
        assert got == zlib.decompressobj(31).decompress(cut)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("gzip", "corrupt gzip data (unknown compression method)"),
     ("zstd", "corrupt zstd data (Unknown frame descriptor)")],
)
def test_corrupt_compressed_data_keeps_what_came_before(kind: str, message: str) -> None:
    plain = HTTP_GET.read_bytes()
    second = bytearray(compress(plain[3000:], kind))
    second[2 if kind == "gzip" else 0] ^= 0x0F  # the compression method, or the frame magic
    blob = compress(plain[:3000], kind) + bytes(second)
    decompressor = Decompressor()
    assert inflate(decompressor, blob, 1 << 20, 1 << 20) == plain[:3000]
    assert decompressor.broken == message and decompressor.end() == message
    assert decompressor.read(100) == b""  # nothing more once broken


def test_garbage_after_a_gzip_member_is_corrupt_data() -> None:
    blob = compress(HTTP_GET.read_bytes(), "gzip") + b"trailing text"
    decompressor = Decompressor()
    assert inflate(decompressor, blob, 1 << 20, 1 << 20) == HTTP_GET.read_bytes()
    assert decompressor.end() == "corrupt gzip data (incorrect header check)"


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_small_file_that_expands_hugely_is_read_a_slice_at_a_time(kind: str) -> None:
    bomb = compress(b"\0" * (64 << 20), kind)
    assert len(bomb) < 1 << 20
    decompressor = Decompressor()
    decompressor.feed(bomb)
    pieces = [decompressor.read(1 << 20) for _ in range(3)]
    assert [len(p) for p in pieces] == [1 << 20] * 3


def test_zstd_without_its_module_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    decompressor = Decompressor()
    decompressor.feed(compress(HTTP_GET.read_bytes(), "zstd"))
    assert decompressor.read(100) == b""
    assert decompressor.broken == (
        "zstd-compressed, and reading zstd needs the backports.zstd package"
        " (pip install backports.zstd)"
    )


def deflate(data: bytes, finish: bool = True) -> bytes:
    """Raw deflate data; unfinished, it ends on a byte boundary where a new block may start."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if finish else zlib.Z_SYNC_FLUSH)


def gzip_member(body: bytes, plain: bytes, flags: int = 0, fields: bytes = b"") -> bytes:
    """A gzip member made by hand: header (with optional fields), deflate body, trailer."""
    header = GZIP_MAGIC + bytes([8, flags]) + b"\0\0\0\0\0\xff" + fields
    return header + body + struct.pack("<II", zlib.crc32(plain), len(plain))


def test_gzip_header_fields_are_passed_over_in_any_chunking() -> None:
    plain = HTTP_GET.read_bytes()
    fields = struct.pack("<H", 6) + b"AB\x02\x00xy" + b"capture.pcap\0" + b"a comment\0" + b"\0\0"
    blob = gzip_member(deflate(plain), plain, 0x04 | 0x08 | 0x10 | 0x02, fields)
    assert gzip.decompress(blob) == plain  # the gzip module agrees it is well formed
    for chunk in (1, 5, 1 << 20):
        decompressor = Decompressor()
        assert inflate(decompressor, blob, chunk, 1 << 20) == plain
        assert decompressor.end() is None


def test_a_gzip_member_whose_checksum_is_wrong_still_gives_all_its_bytes() -> None:
    plain = HTTP_GET.read_bytes()
    blob = bytearray(gzip_member(deflate(plain), plain))
    blob[-8] ^= 1  # the CRC-32
    decompressor = Decompressor()
    assert inflate(decompressor, bytes(blob), 1 << 20, 1 << 20) == plain
    assert decompressor.end() == "corrupt gzip data (incorrect data check)"
    short = gzip_member(deflate(plain), plain)[:-4] + struct.pack("<I", len(plain) + 1)
    decompressor = Decompressor()
    assert inflate(decompressor, short, 1 << 20, 1 << 20) == plain
    assert decompressor.end() == "corrupt gzip data (incorrect length check)"


@pytest.mark.parametrize("good", [1, 5000, 40000])
def test_bad_deflate_data_gives_every_byte_before_it(good: int) -> None:
    plain = BIG.read_bytes()[:good]
    # A block of the reserved type 3 right after the good data, on a byte boundary.
    blob = gzip_member(deflate(plain, finish=False) + b"\x06" + b"\0" * 100, plain)
    decompressor = Decompressor()
    assert inflate(decompressor, blob, 1 << 20, 1 << 20) == plain  # also when in one slice
    assert decompressor.end() == "corrupt gzip data (invalid block type)"
