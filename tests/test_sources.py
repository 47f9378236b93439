"""Capture sources: files, merges, stdin, broken files, pcapng with mixed link types, gzip and
zstd compressed captures, live capture, writing. The parser and writer themselves are tested in test_pcapfile.py.

libpcap's own per-packet `next()` is the reference for what a file holds. Classic pcap files are
read both ways the source has (the `reader` fixture): framed by `sources._Records`, as the
compiled build reads them, and by libpcap's batches. Live tests capture on the loopback
interface and need root; they are skipped otherwise.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pcapy
import pytest

import engine
from engine import sources
from engine.batch import MAX_CAPLEN, META, Batch, pcap_records
from engine.sources import (
    MAX_BATCH,
    CaptureError,
    CaptureStats,
    FilterError,
    Source,
    list_interfaces,
    open_files,
    open_live,
    validate_filter,
    write_packets,
)
from tests.captures import (
    BIG,
    COMPRESSIONS,
    HTTP_GET,
    LOOPBACK,
    NFLOG,
    PCAPNG,
    PCAPS,
    RAW,
    SNAPPED,
    SUFFIX,
    Record,
    compress,
    compressed_copy,
    reference,
    zstd,
    zstd_in_blocks,
)

ETHERNET = PCAPS / "gopacket" / "pcap_test_ethernet.pcap"
SIMPLE_GET = PCAPS / "arkime" / "http-simple-get.pcap"
MIXED_BE = PCAPS / "gopacket" / "pcapgo_tests_be_test100.pcapng"
MIXED_LE = PCAPS / "gopacket" / "pcapgo_tests_le_test202.pcapng"
NG_001 = PCAPS / "gopacket" / "pcapgo_tests_le_test001.pcapng"
NG_010 = PCAPS / "gopacket" / "pcapgo_tests_le_test010.pcapng"

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="live capture on 'lo' needs root (run the tests with sudo)"
)


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(params=["records", "libpcap"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Classic pcap files read by `sources._Records` (the compiled build's way) or by libpcap."""
    monkeypatch.setattr(sources, "READ_RECORDS", request.param == "records")
    return str(request.param)


def drain(source: Source, timeout: float | None = None) -> list[Batch]:
    batches: list[Batch] = []
    for _ in range(100_000):
        batch = source.next_batch(timeout)
        if batch is None:
            return batches
        batches.append(batch)
    raise AssertionError("source never ended")


def flatten(batches: list[Batch]) -> list[tuple[int, int, bytes]]:
    out = []
    for batch in batches:
        for sec, usec, off, caplen in META.iter_unpack(batch.meta):
            out.append((sec, usec, batch.data[off : off + caplen]))
    return out


def without_wire_len(records: list[Record]) -> list[tuple[int, int, bytes]]:
    return [(sec, usec, data) for sec, usec, _caplen, _wire, data in records]


def read_all(path: Path | str, bpf: str = "") -> tuple[list[tuple[int, int, bytes]], Source]:
    source = open_files([str(path)], bpf)
    try:
        return flatten(drain(source)), source
    finally:
        source.close()


def write_with_pcapy(src: Path, out: Path, keep: list[int]) -> None:
    """Copy the packets at the given indexes of `src` into `out`, with libpcap's own dumper."""
    handle = pcapy.open_offline(str(src))
    dumper = handle.dump_open(str(out))
    for index in range(100_000):
        header, data = handle.next()
        if header is None:
            break
        if index in keep:
            dumper.dump(header, data)
    dumper.close()


LARGE = "greater 300"  # a filter that keeps some of the last packets of BIG, all IPv6
_large_program = pcapy.compile(1, 262144, LARGE, 1, 0)


def is_large(record: Record) -> bool:
    return bool(_large_program.filter(record[4]))


# --- files read by libpcap --------------------------------------------------------------------


@pytest.mark.parametrize("path", [HTTP_GET, BIG, PCAPNG, LOOPBACK, RAW, NFLOG, SNAPPED, NG_010])
def test_batches_of_a_file_are_its_packets(path: Path, reader: str) -> None:
    expected, problem = reference(path)
    assert problem is None
    source = open_files([str(path)])
    classic = path.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    assert (source._records is not None) == (classic and reader == "records")  # type: ignore[attr-defined]
    batches = drain(source)
    assert flatten(batches) == without_wire_len(expected)
    assert all(0 < len(b) <= MAX_BATCH for b in batches)
    linktype = pcapy.open_offline(str(path)).datalink()
    assert {b.linktype for b in batches} == {linktype}
    assert source.error is None and source.stats() is None and not source.live
    assert source.name == str(path)
    source.close()


def test_a_file_longer_than_a_batch_comes_in_several(
    reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (_Records reads 1 MiB at a time: here, more than the file, so that MAX_BATCH bounds it.)
    monkeypatch.setattr(sources, "_RECORDS_READ", 64 << 20)
    source = open_files([str(BIG)])
    sizes = [len(b) for b in drain(source)]
    assert sizes == [MAX_BATCH, 4102 - MAX_BATCH]


def test_bpf_filter_is_applied_to_files() -> None:
    got, _ = read_all(HTTP_GET, "tcp[tcpflags] & tcp-syn != 0")
    expected, _ = reference(HTTP_GET, "tcp[tcpflags] & tcp-syn != 0")
    assert got == without_wire_len(expected)
    assert 0 < len(got) < 14


def test_invalid_filter_on_open_names_expression_and_libpcap_reason() -> None:
    with pytest.raises(FilterError) as caught:
        open_files([str(HTTP_GET)], "tcp port banana")
    assert str(caught.value) == "invalid filter 'tcp port banana': unknown port 'banana'"
    assert caught.value.reason == "unknown port 'banana'"
    assert isinstance(caught.value, CaptureError)


def test_filter_invalid_for_the_link_type_is_refused() -> None:
    with pytest.raises(FilterError, match="ethernet addresses supported only"):
        open_files([str(LOOPBACK)], "ether host 01:02:03:04:05:06")


def test_validate_filter() -> None:
    validate_filter("tcp port 80 and host 10.0.0.1")
    validate_filter("")
    with pytest.raises(FilterError, match="unknown port 'banana'"):
        validate_filter("port banana")
    with pytest.raises(FilterError, match="syntax error"):
        validate_filter("tcp and and")
    validate_filter("ip", linktype=113)


def test_set_filter_invalid_keeps_the_old_filter() -> None:
    source = open_files([str(HTTP_GET)], "tcp port 80")
    with pytest.raises(FilterError, match="unknown port 'banana'"):
        source.set_filter("tcp port banana")
    assert source.filter == "tcp port 80"
    got = flatten(drain(source))
    assert got == without_wire_len(reference(HTTP_GET, "tcp port 80")[0])


def test_set_filter_on_a_file_applies_from_the_next_batch(reader: str) -> None:
    source = open_files([str(BIG)])
    first = source.next_batch()
    assert first is not None and 1000 < len(first) <= MAX_BATCH
    source.set_filter(LARGE)
    rest = flatten(drain(source))
    everything, _ = reference(BIG)
    assert flatten([first]) == without_wire_len(everything[: len(first)])
    large = [r for r in everything[len(first) :] if is_large(r)]
    assert 0 < len(large) and rest == without_wire_len(large)
    assert source.filter == LARGE


# --- classic pcap files framed by _Records -----------------------------------------------------


def classic_records(path: Path) -> tuple[bytes, list[Record]]:
    """A little-endian microsecond pcap file's header, and its records as libpcap reads them."""
    header = path.read_bytes()[:24]
    assert header[:4] == b"\xd4\xc3\xb2\xa1"
    records, problem = reference(path)
    assert problem is None
    return header, records


def write_classic(
    out: Path, header: bytes, records: list[Record], big: bool,
    nano: bool, snaplen: int | None = None,
) -> None:
    """`records` as a classic pcap file in either byte order, with microsecond or nanosecond
    timestamps (usec * 1000 + 999 nanoseconds: libpcap gives usec)."""
    order = ">" if big else "<"
    _magic, major, minor, zone, sigfigs, snap, linktype = struct.unpack("<IHHiIII", header)
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    parts = [struct.pack(order + "IHHiIII", magic, major, minor, zone, sigfigs,
                         snap if snaplen is None else snaplen, linktype)]
    for sec, usec, caplen, wire, data in records:
        parts.append(struct.pack(order + "IIII", sec, usec * 1000 + 999 if nano else usec,
                                 caplen, wire) + data)
    out.write_bytes(b"".join(parts))


@pytest.mark.parametrize(("big", "nano"), [(False, False), (True, False), (False, True), (True, True)])
def test_either_byte_order_and_nanoseconds_read_as_libpcap_reads_them(
    tmp_path: Path, reader: str, big: bool, nano: bool
) -> None:
    header, records = classic_records(BIG)
    path = tmp_path / "variant.pcap"
    write_classic(path, header, records, big, nano)
    expected, problem = reference(path)
    assert problem is None and len(expected) == 4102
    got, source = read_all(path)
    assert got == without_wire_len(expected)
    assert source.error is None


def test_records_cut_by_the_reads_come_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "READ_RECORDS", True)
    expected = without_wire_len(reference(BIG)[0])
    for size in (100, 1000, 4099, 70_000):  # (one record is 1,514 bytes; a read ends inside it)
        monkeypatch.setattr(sources, "_RECORDS_READ", size)
        source = open_files([str(BIG)])
        seen = []
        batches = []
        for _ in range(100_000):
            batch = source.next_batch()
            if batch is None:
                break
            batches.append(batch)
            seen.append(source.progress())
        assert flatten(batches) == expected, size
        assert all(0 < len(b) <= MAX_BATCH for b in batches)
        assert len(batches) > 1 and source.error is None
        done = [p[0] for p in seen if p is not None]
        assert done == sorted(done) and seen[-1] == (BIG.stat().st_size, BIG.stat().st_size)
        source.close()


@pytest.mark.parametrize("snaplen", [60, 300, 0, MAX_CAPLEN + 1])
def test_records_longer_than_the_snapshot_length(tmp_path: Path, reader: str, snaplen: int) -> None:
    # libpcap cuts a record longer than the file's snapshot length (or than its own most, when
    # the file's is 0 or more); _Records leaves those to it: from the first record (60), from
    # the sixth (300: the records are 78, 74, 66, 202, 66, 1514... bytes long).
    header, records = classic_records(HTTP_GET)
    path = tmp_path / "snap.pcap"
    write_classic(path, header, records, big=False, nano=False, snaplen=snaplen)
    expected, problem = reference(path)
    assert problem is None and len(expected) == len(records)
    cut = snaplen if 0 < snaplen <= MAX_CAPLEN else MAX_CAPLEN
    assert [len(r[4]) for r in expected] == [min(cut, r[2]) for r in records]
    got, source = read_all(path)
    assert got == without_wire_len(expected) and source.error is None


def test_a_record_too_long_to_frame_is_left_to_libpcap(tmp_path: Path, reader: str) -> None:
    header, records = classic_records(BIG)
    path = tmp_path / "long.pcap"
    # Record 3000 claims more than libpcap reads whole: it refuses it, and what follows is the
    # capture stream's to read (it refuses it too); the packets before it come either way.
    sec, usec, _caplen, wire, data = records[3000]
    write_classic(path, header, [*records[:3000], (sec, usec, MAX_CAPLEN + 1, wire, data)],
                  big=False, nano=False)
    expected, problem = reference(path)
    assert problem is not None and len(expected) == 3000
    got, source = read_all(path)
    assert got == without_wire_len(expected)
    assert source.error is not None and source.error.startswith(f"{path}: ")
    with_libpcap = sources.READ_RECORDS
    sources.READ_RECORDS = False
    try:
        assert read_all(path)[1].error == source.error
    finally:
        sources.READ_RECORDS = with_libpcap


def test_packets_whole_after_framed_batches(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_RECORDS_READ", 200_000)
    expected, _ = reference(BIG)
    source = open_files([str(BIG)])
    first = source.next_batch()
    assert first is not None and 0 < len(first) <= MAX_BATCH
    assert (len(first) < MAX_BATCH) == (reader == "records")  # (a read of 200,000 bytes)
    rest: list[sources.Packet] = []
    while (packets := source.next_packets()) is not None:
        rest += packets
    assert flatten([first]) == without_wire_len(expected[: len(first)])
    assert [(p.sec, p.usec, p.wire_len, p.data) for p in rest] == [
        (sec, usec, wire, data) for sec, usec, _caplen, wire, data in expected[len(first) :]
    ]
    source.close()


def test_pcap_records_frames_whole_records_up_to_a_limit() -> None:
    header, records = classic_records(HTTP_GET)
    body = HTTP_GET.read_bytes()[24:]
    meta, used = pcap_records(body, 5, False, False, MAX_CAPLEN)
    assert used == sum(16 + r[2] for r in records[:5])
    assert [(sec, usec, body[off : off + caplen]) for sec, usec, off, caplen in
            META.iter_unpack(meta)] == [(r[0], r[1], r[4]) for r in records[:5]]
    # A record the data ends inside is not framed; nor is a header cut short.
    assert pcap_records(body[: used + 20], 100, False, False, MAX_CAPLEN) == (meta, used)
    assert pcap_records(body[: used + 10], 100, False, False, MAX_CAPLEN) == (meta, used)
    assert pcap_records(b"", 100, False, False, MAX_CAPLEN) == (b"", 0)
    # One longer than the snapshot length given stops it (whole in the data), and the next call
    # frames none.
    # (The five are 78, 74, 66, 202 and 66 bytes long.)
    long = body[:used] + struct.pack("<IIII", 1, 2, 203, 203) + b"x" * 203
    assert pcap_records(long, 100, False, False, 202) == (meta, used)
    assert pcap_records(long[used:], 100, False, False, 202) == (b"", 0)
    assert pcap_records(long, 100, False, False, 203)[1] == len(long)
    # Compiled (then it is faster than libpcap), sources reads classic files with it.
    assert sources.READ_RECORDS is engine.COMPILED


# --- several files merged ---------------------------------------------------------------------


def test_two_halves_of_a_file_merge_back_into_it(tmp_path: Path) -> None:
    everything, _ = reference(HTTP_GET)
    assert len({(r[0], r[1]) for r in everything}) == len(everything)  # no timestamp ties
    even, odd = tmp_path / "even.pcap", tmp_path / "odd.pcap"
    write_with_pcapy(HTTP_GET, even, list(range(0, 14, 2)))
    write_with_pcapy(HTTP_GET, odd, list(range(1, 14, 2)))
    source = open_files([str(odd), str(even)])
    assert source.name == f"{odd},{even}"
    assert flatten(drain(source)) == without_wire_len(everything)
    assert source.error is None


def test_merge_keeps_link_types_apart_and_time_in_order() -> None:
    source = open_files([str(LOOPBACK), str(ETHERNET), str(HTTP_GET)])
    batches = drain(source)
    packets = [
        (sec, usec, b.linktype) for b in batches for sec, usec, _, _ in META.iter_unpack(b.meta)
    ]
    assert len(packets) == 24 + 10 + 14
    assert [p[:2] for p in packets] == sorted(p[:2] for p in packets)
    assert {b.linktype for b in batches} == {0, 1}
    assert all(len(b) > 0 for b in batches)
    assert source.linktypes == frozenset({0, 1})


def test_merge_with_a_filter_and_a_bad_new_filter() -> None:
    source = open_files([str(HTTP_GET), str(SIMPLE_GET)], "tcp[tcpflags] & tcp-syn != 0")
    with pytest.raises(FilterError):
        source.set_filter("port banana")
    assert source.filter == "tcp[tcpflags] & tcp-syn != 0"
    got = flatten(drain(source))
    expected = reference(HTTP_GET, source.filter)[0] + reference(SIMPLE_GET, source.filter)[0]
    assert sorted(got) == sorted(without_wire_len(expected))


# --- stdin and pipes --------------------------------------------------------------------------

READ_STDIN = """
import sys
from engine.sources import open_files, CaptureError
try:
    source = open_files(['-'], sys.argv[1])
except CaptureError as e:
    print('error:', e)
    raise SystemExit(2)
n = 0
for _ in range(100000):
    batch = source.next_batch(5.0)
    if batch is None:
        break
    for ts, data in batch.packets():
        n += 1
        print(f'{ts:.6f} {len(data)} {data.hex()}')
print('end', n, source.name, source.error)
"""


def run_with_stdin(data: bytes, bpf: str = "") -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", READ_STDIN, bpf],
        input=data,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return _decode(done)


def _decode(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def stdin_lines(records: list[Record]) -> list[str]:
    return [f"{sec + usec / 1e6:.6f} {len(d)} {d.hex()}" for sec, usec, _c, _w, d in records]


@pytest.mark.parametrize("path", [HTTP_GET, PCAPNG])
def test_stdin_is_read_as_a_capture_stream(path: Path) -> None:
    done = run_with_stdin(path.read_bytes())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected, _ = reference(path)
    assert lines[:-1] == stdin_lines(expected)
    assert lines[-1] == f"end {len(expected)} stdin None"


def test_stdin_with_a_filter() -> None:
    done = run_with_stdin(HTTP_GET.read_bytes(), "tcp[tcpflags] & tcp-fin != 0")
    expected, _ = reference(HTTP_GET, "tcp[tcpflags] & tcp-fin != 0")
    assert 0 < len(expected) < 14
    assert done.stdout.splitlines()[:-1] == stdin_lines(expected)


def test_stdin_truncated_says_where(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pcap"
    broken.write_bytes(HTTP_GET.read_bytes()[:-100])
    expected, problem = reference(broken)
    done = run_with_stdin(broken.read_bytes())
    assert done.stdout.splitlines()[:-1] == stdin_lines(expected)
    assert done.stdout.splitlines()[-1] == (
        f"end {len(expected)} stdin stdin: truncated after {len(expected)} packets: {problem}"
    )


def test_stdin_errors() -> None:
    assert run_with_stdin(b"hello, not a capture\n").stdout.strip() == (
        "error: stdin: not a pcap or pcapng file (unknown file format)"
    )
    assert run_with_stdin(b"").stdout.strip() == "error: stdin: empty input"
    assert run_with_stdin(HTTP_GET.read_bytes()[:20]).stdout.strip() == (
        "error: stdin: truncated dump file; tried to read 24 file header bytes, only got 16"
    )


def test_a_pipe_gives_packets_as_they_come_and_honours_the_timeout() -> None:
    blob = HTTP_GET.read_bytes()
    expected, _ = reference(HTTP_GET)
    first_two = 24 + sum(16 + r[2] for r in expected[:2])
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, blob[:first_two])
        source = open_files([f"/dev/fd/{read_end}"])
        batch = source.next_batch(1.0)
        assert batch is not None and flatten([batch]) == without_wire_len(expected[:2])
        started = time.monotonic()
        quiet = source.next_batch(0.2)
        assert quiet is not None and len(quiet) == 0
        assert 0.15 <= time.monotonic() - started < 2.0
        os.write(write_end, blob[first_two:])
        os.close(write_end)
        write_end = -1
        assert flatten(drain(source, 1.0)) == without_wire_len(expected[2:])
        assert source.error is None
        source.close()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


# --- broken and unreadable files --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cut"),
    [(HTTP_GET, 100), (HTTP_GET, 6335 - 24 - 16 - 78 - 5), (BIG, 300), (PCAPNG, 50)],
)
def test_truncated_file_yields_what_precedes_the_cut_then_says_where(
    tmp_path: Path, path: Path, cut: int, reader: str
) -> None:
    broken = tmp_path / path.name
    broken.write_bytes(path.read_bytes()[:-cut])
    expected, problem = reference(broken)
    assert problem is not None and problem.startswith("truncated")
    got, source = read_all(broken)
    assert got == without_wire_len(expected)
    assert source.error == f"{broken}: truncated after {len(expected)} packets: {problem}"


def test_truncated_file_with_filter_changes_on_the_way(tmp_path: Path, reader: str) -> None:
    broken = tmp_path / "big.pcap"
    broken.write_bytes(BIG.read_bytes()[:-300])
    everything, problem = reference(broken)
    source = open_files([str(broken)], "tcp")
    first = source.next_batch()
    assert first is not None and len(first) == MAX_BATCH
    source.set_filter(LARGE)
    rest = flatten(drain(source))
    tcp, _ = reference(broken, "tcp")
    large = [r for r in tcp[MAX_BATCH:] if is_large(r)]
    assert flatten([first]) == without_wire_len(tcp[:MAX_BATCH])
    assert 0 < len(large) and rest == without_wire_len(large)
    assert source.error == f"{broken}: truncated after {len(everything)} packets: {problem}"


def test_file_cut_inside_its_header(tmp_path: Path) -> None:
    broken = tmp_path / "short.pcap"
    broken.write_bytes(HTTP_GET.read_bytes()[:20])
    with pytest.raises(CaptureError) as caught:
        open_files([str(broken)])
    assert str(caught.value) == (
        f"{broken}: truncated dump file; tried to read 24 file header bytes, only got 16"
    )


def test_unreadable_files_get_one_line_messages(tmp_path: Path) -> None:
    text = tmp_path / "x.txt"
    text.write_text("hello\n")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    cases = {
        str(tmp_path / "capture.pcap"): f"{tmp_path / 'capture.pcap'}: no such file",
        str(text): f"{text}: not a pcap or pcapng file (unknown file format)",
        str(empty): f"{empty}: empty file",
        str(tmp_path): f"{tmp_path}: is a directory",
        str(text / "x.pcap"): f"{text / 'x.pcap'}: no such file",
    }
    for path, message in cases.items():
        with pytest.raises(CaptureError) as caught:
            open_files([path])
        assert str(caught.value) == message
    with pytest.raises(CaptureError, match="no such file"):
        open_files([str(HTTP_GET), str(tmp_path / "missing.pcap")])


# --- our own reader: pcapng with mixed link types, chunked input, timestamp formats ----------


def packets_of(source: Source) -> list[tuple[int, int, int, int]]:
    """(sec, usec, link type, caplen) of every packet, in order."""
    return [
        (sec, usec, b.linktype, caplen)
        for b in drain(source)
        for sec, usec, _, caplen in META.iter_unpack(b.meta)
    ]


T = (1340954905, 298858)  # gopacket's test files: 0x4c39764ca47aa microseconds


def test_pcapng_with_mixed_link_types_big_endian() -> None:
    # gopacket's expectations for test100, plus the loopback packet it skips by default; the
    # simple packet blocks carry no timestamp and take the previous packet's.
    source = open_files([str(MIXED_BE)])
    assert packets_of(source) == [
        (0, 0, 1, 314),
        (*T, 1, 342),
        (*T, 1, 314),
        (T[0], T[1] + 2000, 1, 342),
        (T[0], T[1] + 3000, 0, 168),
    ]
    assert source.error is None
    assert source.linktypes == frozenset({0, 1})


def test_pcapng_with_mixed_link_types_and_several_sections() -> None:
    source = open_files([str(MIXED_LE)])
    later = (T[0], T[1] + 3000)
    assert packets_of(source) == [
        (*T, 1, 96),
        (*T, 1, 96),
        (*later, 0, 168),
        (*later, 1, 128),
        (*T, 1, 128),
        (*T, 1, 128),
        (*T, 1, 128),
        (*later, 0, 168),
    ]
    assert source.error is None


def test_mixed_pcapng_batches_carry_whole_packets() -> None:
    batches = drain(open_files([str(MIXED_BE)]))
    assert [b.linktype for b in batches] == [1, 0]
    loopback_packet = flatten(batches[1:])[0][2]
    assert loopback_packet[:4] == b"\x02\x00\x00\x00"  # BSD loopback header: AF_INET
    assert loopback_packet[4] == 0x45


def test_filter_on_mixed_pcapng_applies_per_link_type() -> None:
    everything = packets_of(open_files([str(MIXED_BE)], "udp"))
    assert [p[2] for p in everything] == [1, 1, 1, 1, 0]
    # Ethernet addresses mean nothing on the loopback interface: those packets never match.
    broadcast = packets_of(open_files([str(MIXED_BE)], "ether broadcast"))
    assert [p[2] for p in broadcast] == [1, 1]


# --- compressed captures: gzip and zstd, found by their first bytes ---------------------------


def plain_prefix(blob: bytes, kind: str) -> bytes:
    """All the plain bytes a decompressor can make of a cut compressed capture."""
    if kind == "gzip":
        return zlib.decompressobj(31).decompress(blob)
    return bytes(zstd().ZstdDecompressor().decompress(blob))


@pytest.mark.parametrize("kind", COMPRESSIONS)
@pytest.mark.parametrize("path", [HTTP_GET, BIG, PCAPNG, RAW, MIXED_BE, MIXED_LE])
def test_a_compressed_file_reads_as_the_file_itself(tmp_path: Path, path: Path, kind: str) -> None:
    packed = compressed_copy(path, kind, tmp_path)
    plain = drain(open_files([str(path)]))
    source = open_files([str(packed)])
    batches = drain(source)
    assert flatten(batches) == flatten(plain) and len(flatten(batches)) > 0
    assert [b.linktype for b in batches] == [b.linktype for b in plain]
    assert all(0 < len(b) <= MAX_BATCH for b in batches)
    assert source.error is None and not source.live
    assert source.name == str(packed) and source.paths == (str(packed),)
    assert source.linktypes == frozenset(b.linktype for b in plain)
    source.close()


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_a_truncated_compressed_file_yields_what_precedes_the_cut(tmp_path: Path, kind: str) -> None:
    plain = BIG.read_bytes()
    blob = zstd_in_blocks(plain) if kind == "zstd" else compress(plain, kind)
    cut = tmp_path / f"cut.pcap{SUFFIX[kind]}"
    cut.write_bytes(blob[: len(blob) // 2])
    readable = tmp_path / "readable.pcap"
    readable.write_bytes(plain_prefix(cut.read_bytes(), kind))
    expected, _ = reference(readable)
    assert 0 < len(expected) < 4102
    got, source = read_all(cut)
    assert got == without_wire_len(expected)
    assert source.error == (
        f"{cut}: truncated after {len(expected)} packets: truncated {kind} data; the compressed"
        " stream ends early"
    )


def damaged_after(plain: bytes, where: str) -> bytes:
    """`plain` compressed, the compressed data going bad right after plain[:3000]."""
    head, rest = plain[:3000], plain[3000:]
    if where == "deflate block":
        # Inside one gzip member: a block of the reserved type 3 right after the good data.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(head) + compressor.flush(zlib.Z_SYNC_FLUSH) + b"\x06" + rest
        trailer = struct.pack("<II", zlib.crc32(plain), len(plain))
        return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + trailer
    kind = "gzip" if where == "gzip member" else "zstd"
    second = bytearray(compress(rest, kind))
    second[2 if kind == "gzip" else 0] ^= 0x0F  # the compression method, or the frame magic
    return compress(head, kind) + bytes(second)


@pytest.mark.parametrize(
    ("where", "reason"),
    [("gzip member", "corrupt gzip data (unknown compression method)"),
     ("deflate block", "corrupt gzip data (invalid block type)"),
     ("zstd frame", "corrupt zstd data (Unknown frame descriptor)")],
)
def test_a_corrupt_compressed_file_yields_what_precedes_the_break(
    tmp_path: Path, where: str, reason: str
) -> None:
    plain = HTTP_GET.read_bytes()
    broken = tmp_path / "broken.pcap.gz"
    broken.write_bytes(damaged_after(plain, where))
    readable = tmp_path / "readable.pcap"
    readable.write_bytes(plain[:3000])
    expected, _ = reference(readable)
    assert 0 < len(expected) < 14
    got, source = read_all(broken)
    assert got == without_wire_len(expected)
    assert source.error == f"{broken}: unreadable after {len(expected)} packets: {reason}"


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_damage_anywhere_in_a_compressed_file_is_a_one_line_error(tmp_path: Path, kind: str) -> None:
    # With its checksum, as the zstd command writes it: a damaged frame is then found out.
    checksum = {"options": {zstd().CompressionParameter.checksum_flag: 1}} if kind == "zstd" else {}
    blob = compress(HTTP_GET.read_bytes(), kind, **checksum)
    everything = without_wire_len(reference(HTTP_GET)[0])
    damaged = tmp_path / f"damaged.pcap{SUFFIX[kind]}"
    for at in range(0, len(blob), 97):
        broken = bytearray(blob)
        broken[at] ^= 0x55
        damaged.write_bytes(bytes(broken))
        try:
            got, source = read_all(damaged)
        except CaptureError as e:
            assert str(e).startswith(f"{damaged}: ") and "\n" not in str(e)
            continue
        if source.error is None:  # a header field no one checks, such as gzip's mtime
            assert got == everything, at
        else:
            assert source.error.startswith(f"{damaged}: ") and "\n" not in source.error


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_compressed_stdin(kind: str) -> None:
    done = run_with_stdin(compress(HTTP_GET.read_bytes(), kind))
    assert done.returncode == 0, done.stderr
    expected, _ = reference(HTTP_GET)
    assert done.stdout.splitlines() == [*stdin_lines(expected), "end 14 stdin None"]
    bpf = "tcp[tcpflags] & tcp-fin != 0"
    filtered = run_with_stdin(compress(HTTP_GET.read_bytes(), kind), bpf)
    fins, _ = reference(HTTP_GET, bpf)
    assert 0 < len(fins) < 14
    assert filtered.stdout.splitlines()[:-1] == stdin_lines(fins)


def test_truncated_gzip_on_stdin_says_where() -> None:
    blob = compress(HTTP_GET.read_bytes(), "gzip")
    done = run_with_stdin(blob[:-900])
    lines = done.stdout.splitlines()
    n = len(lines) - 1
    assert 0 < n < 14
    assert lines[-1] == (
        f"end {n} stdin stdin: truncated after {n} packets: truncated gzip data; the compressed"
        " stream ends early"
    )


def test_compressed_files_merge_with_each_other_and_plain_ones(tmp_path: Path) -> None:
    everything, _ = reference(HTTP_GET)
    even, odd, third = tmp_path / "even.pcap", tmp_path / "odd.pcap", tmp_path / "third.pcap"
    write_with_pcapy(HTTP_GET, even, list(range(0, 14, 3)))
    write_with_pcapy(HTTP_GET, odd, list(range(1, 14, 3)))
    write_with_pcapy(HTTP_GET, third, list(range(2, 14, 3)))
    names = [
        str(compressed_copy(even, "gzip", tmp_path)),
        str(compressed_copy(odd, "zstd", tmp_path)),
        str(third),
    ]
    source = open_files(names, "tcp")
    assert source.name == ",".join(names)
    assert flatten(drain(source)) == without_wire_len(everything)
    assert source.error is None


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_bpf_filter_on_a_compressed_file(tmp_path: Path, kind: str) -> None:
    bpf = "tcp[tcpflags] & tcp-syn != 0"
    got, _ = read_all(compressed_copy(HTTP_GET, kind, tmp_path), bpf)
    assert got == without_wire_len(reference(HTTP_GET, bpf)[0]) and 0 < len(got) < 14
    source = open_files([str(compressed_copy(BIG, kind, tmp_path))])
    first = source.next_batch()
    assert first is not None and len(first) == MAX_BATCH  # a file: whole batches, as libpcap's
    with pytest.raises(FilterError, match="unknown port 'banana'"):
        source.set_filter("port banana")
    source.set_filter(LARGE)
    everything, _ = reference(BIG)
    large = [r for r in everything[MAX_BATCH:] if is_large(r)]
    assert 0 < len(large) and flatten(drain(source)) == without_wire_len(large)
    with pytest.raises(FilterError, match="ethernet addresses supported only"):
        open_files([str(compressed_copy(LOOPBACK, kind, tmp_path))], "ether host 01:02:03:04:05:06")


def test_the_first_bytes_decide_not_the_name(tmp_path: Path) -> None:
    expected = without_wire_len(reference(HTTP_GET)[0])
    plain_named_gz = tmp_path / "plain.pcap.gz"
    plain_named_gz.write_bytes(HTTP_GET.read_bytes())
    zstd_named_gz = compressed_copy(HTTP_GET, "zstd", tmp_path, "zstd.pcap.gz")
    gzip_named_pcap = compressed_copy(HTTP_GET, "gzip", tmp_path, "gzip.pcap")
    for path in (plain_named_gz, zstd_named_gz, gzip_named_pcap):
        got, source = read_all(path)
        assert got == expected and source.error is None, path


def test_unreadable_compressed_files_get_one_line_messages(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt.gz"
    text.write_bytes(compress(b"hello, not a capture\n" * 20, "gzip"))
    empty = tmp_path / "empty.pcap.zst"
    empty.write_bytes(compress(b"", "zstd"))
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(compress(HTTP_GET.read_bytes(), "gzip")[:8])
    cases = {
        text: f"{text}: gzip-compressed, but not a pcap or pcapng file inside (unknown file format)",
        empty: f"{empty}: empty input (nothing inside the zstd data)",
        cut: f"{cut}: truncated gzip data; the compressed stream ends early",
    }
    for path, message in cases.items():
        with pytest.raises(CaptureError) as caught:
            open_files([str(path)])
        assert str(caught.value) == message


def test_zstd_without_its_module_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = compressed_copy(HTTP_GET, "zstd", tmp_path)
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    with pytest.raises(CaptureError) as caught:
        open_files([str(packed)])
    assert str(caught.value) == (
        f"{packed}: zstd-compressed, and reading zstd needs the backports.zstd package"
        " (pip install backports.zstd)"
    )
    assert read_all(compressed_copy(HTTP_GET, "gzip", tmp_path))[0]  # gzip needs no module


def test_write_packets_from_a_compressed_file(tmp_path: Path) -> None:
    packed = compressed_copy(SNAPPED, "gzip", tmp_path)
    out = tmp_path / "out.pcap"
    assert write_packets(open_files([str(packed)], "tcp"), str(out)) == 39
    assert reference(out) == (reference(SNAPPED, "tcp")[0], None)
    with pytest.raises(CaptureError, match="is also an input"):
        write_packets(open_files([str(packed)]), str(packed))


# --- live capture -----------------------------------------------------------------------------


def read_until(source: Source, wanted: bytes, seconds: float = 10.0) -> tuple[bytes, list[Batch]]:
    """Batches from `source` until `wanted` shows up in one, or the deadline passes."""
    deadline = time.monotonic() + seconds
    seen = b""
    batches: list[Batch] = []
    while wanted not in seen and time.monotonic() < deadline:
        batch = source.next_batch(timeout=0.2)
        assert batch is not None
        batches.append(batch)
        seen += batch.data
    assert wanted in seen, f"{wanted!r} never arrived"
    return seen, batches


class LoopbackPeers:
    """A TCP server and a connected client on 127.0.0.1."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.server, _ = self.listener.accept()

    def send(self, payload: bytes) -> None:
        self.client.sendall(payload)
        self.server.settimeout(5)
        received = b""
        while len(received) < len(payload):
            chunk = self.server.recv(65536)
            assert chunk
            received += chunk

    def close(self) -> None:
        for sock in (self.client, self.server, self.listener):
            sock.close()


@pytest.fixture
def peers() -> Iterator[LoopbackPeers]:
    pair = LoopbackPeers()
    yield pair
    pair.close()


@needs_root
def test_live_capture_sees_local_tcp_traffic_and_counts_it(peers: LoopbackPeers) -> None:
    source = open_live(["lo"], f"tcp port {peers.port}")
    try:
        assert source.live and source.name == "lo" and source.paths == ()
        assert source.filter == f"tcp port {peers.port}"
        peers.send(b"wirepeek-live-marker")
        _, batches = read_until(source, b"wirepeek-live-marker")
        assert {b.linktype for b in batches} == {1}
        stats = source.stats()
        assert isinstance(stats, CaptureStats)
        assert stats.received >= sum(len(b) for b in batches) >= 1
    finally:
        source.close()
    assert source.next_batch(0.1) is None
    final = source.stats()  # still there once closed, for the last status line
    assert final is not None and final.received >= stats.received


@needs_root
def test_live_set_filter_changes_what_arrives() -> None:
    a, b = LoopbackPeers(), LoopbackPeers()
    source = open_live(["lo"], f"tcp port {a.port}")
    try:
        b.send(b"marker-b-one")
        a.send(b"marker-a-one")
        seen, _ = read_until(source, b"marker-a-one")
        assert b"marker-b-one" not in seen
        # Captured under the old filter but not read yet: the new filter applies to it too.
        a.send(b"marker-a-queued")
        source.set_filter(f"tcp port {b.port}")
        assert source.filter == f"tcp port {b.port}"
        a.send(b"marker-a-two")
        b.send(b"marker-b-two")
        seen, _ = read_until(source, b"marker-b-two")
        assert b"marker-a-two" not in seen and b"marker-a-queued" not in seen
        with pytest.raises(FilterError, match="unknown port 'banana'"):
            source.set_filter("tcp port banana")
        assert source.filter == f"tcp port {b.port}"
    finally:
        source.close()
        a.close()
        b.close()


@needs_root
def test_live_read_on_a_quiet_filter_returns_in_time() -> None:
    source = open_live(["lo"], "udp port 9 and udp port 7")
    try:
        for timeout in (0.2, 0.0):
            started = time.monotonic()
            batch = source.next_batch(timeout=timeout)
            elapsed = time.monotonic() - started
            assert batch is not None and len(batch) == 0 and batch.linktype == 1
            assert timeout - 0.01 <= elapsed < timeout + 0.5
        assert source.next_packets(timeout=0.05) == []
    finally:
        source.close()


@needs_root
def test_live_on_several_interfaces_keeps_link_types(peers: LoopbackPeers) -> None:
    source = open_live(["lo", "any"], f"tcp port {peers.port}")
    try:
        assert source.name == "lo,any" and source.linktypes == frozenset({1, 113})
        linktypes: set[int] = set()
        deadline = time.monotonic() + 10
        while linktypes != {1, 113} and time.monotonic() < deadline:
            peers.send(b"both-interfaces")
            batch = source.next_batch(0.2)
            assert batch is not None
            if len(batch):
                linktypes.add(batch.linktype)
        assert linktypes == {1, 113}
    finally:
        source.close()


def test_unknown_interface_lists_the_real_ones() -> None:
    with pytest.raises(CaptureError) as caught:
        open_live(["eth9"])
    interfaces = list_interfaces()
    assert "lo" in interfaces and "any" in interfaces
    assert str(caught.value) == f"no such interface 'eth9'; interfaces: {', '.join(interfaces)}"


@needs_root
def test_invalid_filter_on_live() -> None:
    with pytest.raises(FilterError) as caught:
        open_live(["lo"], "tcp port banana")
    assert str(caught.value) == "invalid filter 'tcp port banana': unknown port 'banana'"
    with pytest.raises(FilterError, match="on 'any'"):
        open_live(["lo", "any"], "ether host 01:02:03:04:05:06")


DROP_AND_CAPTURE = """
import os, tempfile
from engine.sources import drop_privileges, open_files, open_live, CaptureError
live = open_live(['lo'], 'tcp')
secret = tempfile.mkstemp()[1]
open(secret, 'wb').write(open('tests/data/pcaps/zeek/http__get.pcap', 'rb').read())
os.chmod(secret, 0)
print('user', drop_privileges(), os.getuid(), os.getgid(), os.getgroups())
live.set_filter('udp')
print('filter', live.filter, live.stats() is not None)
for attempt in (lambda: open_live(['lo']), lambda: open_files([secret])):
    try:
        attempt()
    except CaptureError as e:
        print('error', e)
"""


@needs_root
def test_dropping_privileges_keeps_open_captures_and_explains_permission() -> None:
    done = _decode(
        subprocess.run(
            [sys.executable, "-c", DROP_AND_CAPTURE],
            env={**os.environ, "SUDO_UID": "65534", "SUDO_GID": "65534"},
            capture_output=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "user nobody 65534 65534 []", done.stderr
    assert lines[1] == "filter udp True"
    assert lines[2].startswith("error no permission to capture on 'lo': run with sudo, or grant")
    assert "sudo setcap cap_net_raw,cap_net_admin=eip /" in lines[2]
    assert lines[2].endswith("or read a file with -r")
    assert lines[3].startswith("error ") and lines[3].endswith(": permission denied")


def test_drop_privileges_without_sudo_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.sources import drop_privileges

    euid = os.geteuid()
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)
    assert drop_privileges() is None
    assert os.geteuid() == euid


# --- writing captures -------------------------------------------------------------------------


def test_write_packets_round_trip_keeps_wire_lengths(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    source = open_files([str(SNAPPED)], "tcp")
    written = write_packets(source, str(out))
    expected, _ = reference(SNAPPED, "tcp")
    assert written == len(expected) == 39
    assert any(caplen < wire for _, _, caplen, wire, _ in expected)
    assert reference(out) == (expected, None)
    assert pcapy.open_offline(str(out)).datalink() == 1


def test_write_packets_count_duration_and_merge(tmp_path: Path) -> None:
    everything, _ = reference(HTTP_GET)
    out = tmp_path / "five.pcap"
    assert write_packets(open_files([str(HTTP_GET)]), str(out), count=5) == 5
    assert reference(out)[0] == everything[:5]
    start = everything[0][0] + everything[0][1] / 1e6
    within = [r for r in everything if r[0] + r[1] / 1e6 <= start + 0.1]
    assert 0 < len(within) < 14
    out = tmp_path / "tenth.pcap"
    assert write_packets(open_files([str(HTTP_GET)]), str(out), duration=0.1) == len(within)
    assert reference(out)[0] == within
    even, odd = tmp_path / "even.pcap", tmp_path / "odd.pcap"
    write_with_pcapy(HTTP_GET, even, list(range(0, 14, 2)))
    write_with_pcapy(HTTP_GET, odd, list(range(1, 14, 2)))
    out = tmp_path / "merged.pcap"
    assert write_packets(open_files([str(even), str(odd)]), str(out)) == 14
    assert reference(out)[0] == everything


def test_write_packets_raw_link_type_and_empty_result(tmp_path: Path) -> None:
    out = tmp_path / "raw.pcap"
    write_packets(open_files([str(RAW)]), str(out))
    assert reference(out) == reference(RAW)
    assert out.read_bytes()[20:24] == struct.pack("=I", 101)  # the file says LINKTYPE_RAW
    out = tmp_path / "none.pcap"
    assert write_packets(open_files([str(HTTP_GET)], "udp"), str(out)) == 0
    assert reference(out) == ([], None)


def test_write_packets_refuses_what_pcap_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="holds one link type"):
        write_packets(open_files([str(HTTP_GET), str(LOOPBACK)]), str(tmp_path / "x.pcap"))
    with pytest.raises(
        CaptureError, match="after 4 packets of link type 1 came one of link type 0"
    ):
        write_packets(open_files([str(MIXED_BE)]), str(tmp_path / "y.pcap"))
    copy = tmp_path / "in.pcap"
    copy.write_bytes(HTTP_GET.read_bytes())
    with pytest.raises(CaptureError, match="is also an input"):
        write_packets(open_files([str(copy)]), str(copy))
    assert copy.read_bytes() == HTTP_GET.read_bytes()


def packet_list(path: Path | str) -> list[sources.Packet]:
    source = open_files([str(path)])
    found: list[sources.Packet] = []
    while (packets := source.next_packets()) is not None:
        found += packets
    source.close()
    return found


@pytest.mark.parametrize("path", [HTTP_GET, MIXED_BE, MIXED_LE, NFLOG])
def test_a_pcapng_name_is_written_as_pcapng_of_any_link_types(tmp_path: Path, path: Path) -> None:
    """pcapng holds what pcap cannot (several link types) and a TLS key log, which a reader
    finds before the packets; libpcap reads the file as we do."""
    from engine.pcapfile import tls_key_logs

    packets = packet_list(path)
    out = tmp_path / "out.PCAPNG"
    secrets = b"CLIENT_RANDOM " + b"ab" * 32 + b" " + b"cd" * 48 + b"\n"
    assert sources.write_packet_list(packets, str(out), secrets) == len(packets) > 0
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert packet_list(out) == packets
    assert tls_key_logs(out.read_bytes()) == secrets
    if len({p.linktype for p in packets}) == 1:
        expected, problem = reference(path)
        assert problem is None and reference(out) == (expected, None)
    else:  # pcap has no room for them
        with pytest.raises(CaptureError, match="holds one link type"):
            sources.write_packet_list(packets, str(tmp_path / "out.pcap"), secrets)
    empty = tmp_path / "empty.pcapng"
    assert sources.write_packet_list([], str(empty)) == 0
    assert packet_list(empty) == [] and reference(empty) == ([], None)


@needs_root
def test_write_packets_from_live(tmp_path: Path, peers: LoopbackPeers) -> None:
    source = open_live(["lo"], f"tcp port {peers.port}")
    try:
        peers.send(b"to-be-written")
        out = tmp_path / "live.pcap"
        assert write_packets(source, str(out), count=2, duration=10) == 2
        records, problem = reference(out)
        assert problem is None and len(records) == 2
        assert all(caplen == wire for _, _, caplen, wire, _ in records)
    finally:
        source.close()
    quiet = open_live(["lo"], "udp port 9 and udp port 7")
    try:
        started = time.monotonic()
        assert write_packets(quiet, str(tmp_path / "quiet.pcap"), duration=0.3) == 0
        assert 0.29 <= time.monotonic() - started < 2.0
        assert reference(tmp_path / "quiet.pcap") == ([], None)
    finally:
        quiet.close()


@needs_root
def test_live_capture_asks_the_kernel_for_a_big_buffer() -> None:
    # libpcap's default is 2 MiB: a pause of the reading process of a fraction of a second at
    # 100,000 packets/s fills it. The kernel maps the buffer into the process as a socket.
    def socket_maps() -> list[int]:
        sizes = []
        with open("/proc/self/maps") as f:
            for line in f:
                if "socket:[" in line:
                    start, end = line.split()[0].split("-")
                    sizes.append(int(end, 16) - int(start, 16))
        return sizes

    before = socket_maps()
    source = sources.open_live(["lo"])
    try:
        grown = sorted(socket_maps())
        for size in before:
            grown.remove(size)
        assert grown == [sources.LIVE_BUFFER_BYTES] and sources.LIVE_BUFFER_BYTES >= 32 << 20
    finally:
        source.close()
