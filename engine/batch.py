"""The unit of work between a capture source and the pipeline.

A batch is what pcapy-ng's `next_batch` returns, kept as it is: every captured packet back to
back in one bytes object, and a packed index of 16-byte native-endian records
(seconds, microseconds, offset, captured length), one per packet. The pipeline walks the index
with `struct.iter_unpack`, so no Python object is made per packet until it is needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

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
