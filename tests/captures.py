"""Test helpers for the bundled captures (tests/data/pcaps, provenance in its README)."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pcapy

from engine import sources
from engine.bounds import Bounds
from engine.events import ConnectionClosed, ConnectionInfo, Event
from engine.pipeline import Pipeline
from tests.feeding import Recorder

PCAPS = Path(__file__).parent / "data" / "pcaps"
# Captures the source and file-format tests share.
HTTP_GET = PCAPS / "zeek" / "http__get.pcap"  # 14 packets, Ethernet
BIG = PCAPS / "zeek" / "http__1000-requests-one-dropped-response.pcap"  # 4102 packets
PCAPNG = PCAPS / "zeek" / "http__cooper-grill-dvwa.pcapng"  # 64 packets, one interface
SNAPPED = PCAPS / "zeek" / "tcp__retransmit-fast009.pcap"  # caplen < wire length for some
RAW = PCAPS / "zeek" / "tcp__payload-syn.pcap"  # LINKTYPE_RAW (101), which libpcap calls 12
NFLOG = PCAPS / "zeek" / "nflog-http.pcap"
LOOPBACK = PCAPS / "gopacket" / "pcap_test_loopback.pcap"  # BSD loopback (DLT_NULL)

Record = tuple[int, int, int, int, bytes]  # sec, usec, caplen, wire length, bytes


def capture(name: str) -> str:
    return str(PCAPS / name)


def all_captures() -> list[str]:
    return sorted(
        str(p.relative_to(PCAPS)) for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng")
    )


def tshark_profiles() -> dict[str, str]:
    """name -> the tshark profile column of the README's table."""
    out = {}
    for line in (PCAPS / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*([\w./-]+\.pcap(?:ng)?)\s*\|.*\|\s*([^|]*)\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


@dataclass
class Replay:
    pipeline: Pipeline
    events: list[Event]
    recorders: dict[int, Recorder]
    error: str | None

    def infos(self, transport: str | None = "tcp") -> list[ConnectionInfo]:
        """The connections reported closed (TCP's; transport None: the DNS flows over UDP too)."""
        return sorted((e.info for e in self.events if isinstance(e, ConnectionClosed)
                       and transport in (None, e.info.transport)), key=lambda i: i.id)

    def stream(self, conn_id: int, from_client: bool) -> bytes:
        return bytes(self.recorders[conn_id].data[from_client])


def replay(name: str, bpf: str = "", bounds: Bounds | None = None) -> Replay:
    """Run a bundled capture through the pipeline, recording every connection's streams."""
    return replay_file(capture(name), bpf, bounds)


def replay_file(path: str, bpf: str = "", bounds: Bounds | None = None, **options: Any) -> Replay:
    """Run a capture file through the pipeline (made with `options` too), recording every
    connection's streams."""
    recorders: dict[int, Recorder] = {}

    def record(conn, emit):  # type: ignore[no-untyped-def]
        recorders[conn.id] = Recorder()
        return recorders[conn.id]

    pipeline = Pipeline(bounds, consumers={None: [record]}, **options)
    source = sources.open_files([path], bpf)
    events: list[Event] = []
    try:
        while (batch := source.next_batch()) is not None:
            events += pipeline.feed(batch)
    finally:
        source.close()
    events += pipeline.finish()
    return Replay(pipeline, events, recorders, source.error)


def reference(path: Path | str, bpf: str = "") -> tuple[list[Record], str | None]:
    """What libpcap's per-packet next() reads from a file, and the error it stopped on."""
    handle = pcapy.open_offline(str(path))
    if bpf:
        handle.setfilter(bpf)
    out: list[Record] = []
    try:
        for _ in range(1_000_000):
            header, data = handle.next()
            if header is None:
                return out, None
            sec, usec = header.getts()
            out.append((sec, usec, header.getcaplen(), header.getlen(), data))
    except pcapy.PcapError as e:
        return out, str(e)
    raise AssertionError("file too long for a test")


# --- compressed copies ------------------------------------------------------------------------

COMPRESSIONS = ("gzip", "zstd")
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}


def zstd() -> ModuleType:
    """Python 3.14's compression.zstd, or its backport (a dependency of wirepeek before 3.14)."""
    try:
        from compression import zstd as module  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd as module  # type: ignore[no-redef]
    return module


def compress(data: bytes, kind: str, **options: Any) -> bytes:
    """`data` as one gzip member or one zstd frame (gzip with a fixed mtime: the same every run)."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0, **options)
    return bytes(zstd().compress(data, **options))


def zstd_in_blocks(data: bytes, size: int = 65536) -> bytes:
    """One zstd frame that ends a block every `size` bytes, as a streaming compressor's does (a
    decompressor hands out a block only once it has all of it)."""
    compressor = zstd().ZstdCompressor()
    blocks = [
        compressor.compress(data[i : i + size], compressor.FLUSH_BLOCK)
        for i in range(0, len(data), size)
    ]
    return b"".join(blocks) + compressor.flush()


def compressed_copy(path: str | Path, kind: str, directory: Path, name: str | None = None) -> Path:
    """A compressed copy of a capture in `directory`, named like tshark's users name them."""
    source = Path(path)
    out = directory / (name or source.name + SUFFIX[kind])
    out.write_bytes(compress(source.read_bytes(), kind))
    return out
