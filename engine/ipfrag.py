"""IPv4 and IPv6 fragment reassembly, bounded in bytes and in time.

A datagram is reassembled when its last fragment has arrived and every byte before it is covered.
Overlapping fragments keep the bytes that arrived first. Datagrams wait at most `timeout` seconds of
packet time, and all waiting fragments together take at most `max_bytes`; past either bound the
oldest datagram is dropped and counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

FragmentKey = tuple[bytes, bytes, int, int]  # (source, destination, identification, protocol)


@dataclass(slots=True)
class _Datagram:
    first_ts: float
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, data), not overlapping
    total: int | None = None  # known once the last fragment arrived
    size: int = 0


class Defragmenter:
    def __init__(self, max_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.pending: OrderedDict[FragmentKey, _Datagram] = OrderedDict()
        self.bytes = 0
        self.dropped = 0  # datagrams given up (timeout or bound)

    def add(
        self, key: FragmentKey, ts: float, offset: int, more: bool, data: bytes
    ) -> bytes | None:
        """Add one fragment; return the whole payload once the datagram is complete."""
        self._expire(ts)
        dgram = self.pending.get(key)
        if dgram is None:
            dgram = self.pending[key] = _Datagram(ts)
        end = offset + len(data)
        if not more:
            if dgram.total is None:
                dgram.total = end
        elif dgram.total is not None and end > dgram.total:
            data = data[: max(0, dgram.total - offset)]
            end = offset + len(data)
        added = self._insert(dgram, offset, data)
        self.bytes += added
        dgram.size += added
        if dgram.total is not None and self._complete(dgram):
            del self.pending[key]
            self.bytes -= dgram.size
            dgram.pieces.sort()
            return b"".join(piece for _, piece in dgram.pieces)[: dgram.total]
        while self.bytes > self.max_bytes and self.pending:
            self._drop(next(iter(self.pending)))
        return None

    @staticmethod
    def _insert(dgram: _Datagram, offset: int, data: bytes) -> int:
        """Keep only the parts of data that no earlier fragment covered."""
        new: list[tuple[int, bytes]] = [(offset, data)]
        for start, piece in dgram.pieces:
            stop = start + len(piece)
            kept = []
            for o, d in new:
                e = o + len(d)
                if e <= start or o >= stop:
                    kept.append((o, d))
                    continue
                if o < start:
                    kept.append((o, d[: start - o]))
                if e > stop:
                    kept.append((stop, d[stop - o :]))
            new = kept
            if not new:
                return 0
        new = [(o, d) for o, d in new if d]
        dgram.pieces.extend(new)
        return sum(len(d) for _, d in new)

    @staticmethod
    def _complete(dgram: _Datagram) -> bool:
        covered = 0
        for start, piece in sorted(dgram.pieces):
            if start > covered:
                return False
            covered = max(covered, start + len(piece))
        return covered >= (dgram.total or 0)

    def clear(self) -> None:
        """End of capture: datagrams still incomplete are given up."""
        while self.pending:
            self._drop(next(iter(self.pending)))

    def _expire(self, now: float) -> None:
        while self.pending:
            key = next(iter(self.pending))
            if now - self.pending[key].first_ts <= self.timeout:
                break
            self._drop(key)

    def _drop(self, key: FragmentKey) -> None:
        dgram = self.pending.pop(key)
        self.bytes -= dgram.size
        self.dropped += 1
