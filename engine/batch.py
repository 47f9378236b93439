"""The unit of work between a capture source and the pipeline.

A batch is what pcapy-ng's `next_batch` returns, kept as it is: every captured packet back to
back in one bytes object, and a packed index of 16-byte native-endian records
(seconds, microseconds, offset, captured length), one per packet. The pipeline walks the index
with `struct.iter_unpack`, so no Python object is made per packet until it is needed.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mypy_extensions import i64

META: Final = struct.Struct("=IIII")


@dataclass(frozen=True, slots=True)
class Batch:
    linktype: int
    data: bytes
    meta: bytes
    host: int = 0  # which capture host's packets (from 1, see engine.tcp.HOST_SHIFT); 0: local

    def __len__(self) -> int:
        return len(self.meta) // META.size

    def packets(self) -> list[tuple[float, bytes]]:
        """(timestamp, packet bytes) for each packet: for tests and slow paths, not the hot loop."""
        out = []
        for sec, usec, off, caplen in META.iter_unpack(self.meta):
            out.append((sec + usec / 1e6, self.data[off : off + caplen]))
        return out

    @classmethod
    def from_packets(cls, linktype: int, packets: list[tuple[float, bytes]]) -> Batch:
        """Pack (timestamp, bytes) pairs into a batch, as a source would."""
        data = bytearray()
        meta = bytearray()
        for ts, pkt in packets:
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            meta += META.pack(sec, usec, len(data), len(pkt))
            data += pkt
        return cls(linktype, bytes(data), bytes(meta))


MAX_CAPLEN: Final = 262144
"""libpcap's MAXIMUM_SNAPLEN: it reads a record of a classic pcap file longer than its snapshot
length (the file's, when that is from 1 to this) only in part, or refuses it."""


def _u32(buf: bytes, at: i64, big: bool) -> i64:
    """The 32-bit number at buf[at:], big- or little-endian."""
    if big:
        return buf[at] << 24 | buf[at + 1] << 16 | buf[at + 2] << 8 | buf[at + 3]
    return buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16 | buf[at + 3] << 24


def pcap_records(data: bytes, limit: i64, big: bool, nano: bool, snap: i64) -> tuple[bytes, i64]:
    """Frame the records of a classic pcap file in `data`, which starts at a record's header:
    (the index of a Batch of `data`, the bytes framed). It frames at most `limit` records, and
    those that are whole in `data`; it stops at one longer than `snap` (at most MAX_CAPLEN:
    libpcap would cut it, or refuse it), which the next call then frames none of. big:
    the file's numbers are big-endian; nano: its timestamps are in nanoseconds, given in
    microseconds (truncated, as libpcap gives them).
    (Compiled, a header is read byte by byte in machine words: 0.1 us a record, where libpcap
    and pcapy's batch took 0.5.)"""
    fields: list[int] = []
    at: i64 = 0
    n: i64 = len(data)
    count: i64 = 0
    while count < limit and at + 16 <= n:
        caplen = _u32(data, at + 8, big)
        if caplen > snap:
            break
        end = at + 16 + caplen
        if end > n:
            break
        usec = _u32(data, at + 4, big)
        fields.append(_u32(data, at, big))
        fields.append(usec // 1000 if nano else usec)
        fields.append(at + 16)
        fields.append(caplen)
        at = end
        count += 1
    return array("I", fields).tobytes(), at
