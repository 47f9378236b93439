"""The follow view's bytes on disk: a bounded ring file of records, and each connection's index.

The interactive app keeps every connection's reassembled stream for its Stream tab. Held in
memory, that was most of what the process grew by on a big capture (a kept stream is 1-16 MiB a
connection). With a spool, the table writes each follow-view entry (bytes delivered, a gap, a
resend) as one record at the end of a file and keeps, per connection, only where its records are
and how many payload bytes each has (12 bytes an entry); reading a connection's entries back
gives exactly what was delivered, in the same order, as `wirepeek --follow` prints it.

The file is a ring of `capacity` bytes: positions grow without end and a record lives at its
position modulo the capacity, so once more than `capacity` bytes were written after a record it
is overwritten. A reader asking for it is told so (None), and the table counts its bytes as no
longer kept, as it does for bytes trimmed by the per-connection bound. The file is made in the
temporary directory and unlinked at once: nothing is left behind, whatever the exit.

Records are written through a buffer (flushed when it holds FLUSH_AT bytes) and read either from
the file or from that buffer. The engine's thread writes; other threads may read: a lock
orders a flush against a read, and a record is only visible once `written` says so.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from array import array
from typing import Final

# kind, from_client, ts, stream offset, ack (NO_ACK: -1), value (payload length, gap or resend
# size), length of what follows the header (payload bytes, or a gap's reason).
HEADER: Final = struct.Struct("<BBdqqQI")
LENGTH: Final = struct.Struct("<I")  # HEADER's last field: the length of what follows
DATA: Final = 0
GAP: Final = 1
RESENT: Final = 2  # differs unknown
RESENT_SAME: Final = 3
RESENT_DIFFERS: Final = 4
FLUSH_AT: Final = 1 << 20
WRITE_AT: Final = 1 << 16
"""Records given at once (Spool.append_records) this big or bigger go straight to the file
(after the buffer), not through the buffer: another copy of what a helper process sent."""


class Record:
    """One record read back."""

    __slots__ = ("ack", "extra", "from_client", "kind", "offset", "ts", "value")

    def __init__(
        self,
        kind: int,
        from_client: bool,
        ts: float,
        offset: int,
        ack: int,
        value: int,
        extra: bytes,
    ) -> None:
        self.kind = kind
        self.from_client = from_client
        self.ts = ts
        self.offset = offset
        self.ack = ack
        self.value = value
        self.extra = extra


def add_record(
    out: bytearray,
    kind: int,
    from_client: bool,
    ts: float,
    offset: int,
    ack: int,
    value: int,
    extra: bytes = b"",
) -> None:
    """Append one record to `out` as `Spool.append` writes it (its header, then `extra`, not
    joined first): the spool's buffer, or records made elsewhere (another process) for
    `Spool.append_records`."""
    out += HEADER.pack(kind, from_client, ts, offset, ack, value, len(extra))
    out += extra


def header_start(
    kind: int, from_client: bool, ts: float, offset: int, ack: int, value: int
) -> bytes:
    """A record's header but the length of what follows (its last field): for records made
    many times with the same fields, `add_same` adds the rest (packing the whole header each
    time cost twice as much)."""
    return HEADER.pack(kind, from_client, ts, offset, ack, value, 0)[: HEADER.size - LENGTH.size]


def add_same(out: bytearray, start: bytes, extra: bytes) -> None:
    """`add_record` with the header's start made by `header_start`."""
    out += start
    out += len(extra).to_bytes(LENGTH.size, "little")  # (LENGTH's bytes, without a pack call)
    out += extra


class Spool:
    def __init__(self, capacity: int, directory: str | None = None) -> None:
        if capacity < HEADER.size:
            raise ValueError(f"a spool of {capacity} bytes cannot hold a record")
        self.capacity = capacity
        # Held open for the spool's life (closed by close()), so no context manager.
        self._file = tempfile.TemporaryFile(prefix="wirepeek-spool-", dir=directory)  # noqa: SIM115
        self._fd = self._file.fileno()
        self.written = 0  # position after the last record: the logical size of everything written
        self._flushed = 0  # positions below this are in the file, the rest in _buf
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._buf = bytearray()
            self._file.close()

    @property
    def oldest(self) -> int:
        """The first position not yet overwritten."""
        return max(0, self.written - self.capacity)

    @property
    def file_size(self) -> int:
        """Bytes the file holds on disk (never more than the capacity)."""
        return min(self._flushed, self.capacity)

    def append(
        self,
        kind: int,
        from_client: bool,
        ts: float,
        offset: int,
        ack: int,
        value: int,
        extra: bytes = b"",
    ) -> int:
        """Write one record; its position."""
        pos = self.written
        buf = self._buf
        add_record(buf, kind, from_client, ts, offset, ack, value, extra)
        self.written = pos + HEADER.size + len(extra)
        if len(buf) >= FLUSH_AT:
            self.flush()
        return pos

    def append_records(self, records: bytes | bytearray) -> int:
        """Write records made by `add_record` (back to back, as another process may make them);
        the position of the first (the others follow it as they do in `records`)."""
        pos = self.written
        if len(records) >= WRITE_AT:  # straight to the file, not copied into the buffer first
            self.flush()
            with self._lock:
                self.written = pos + len(records)
                if not self.closed:
                    self._write(memoryview(records), pos)
                self._flushed = self.written
            return pos
        buf = self._buf
        buf += records
        self.written = pos + len(records)
        if len(buf) >= FLUSH_AT:
            self.flush()
        return pos

    def flush(self) -> None:
        with self._lock:
            if self.closed or not self._buf:
                return
            self._write(memoryview(self._buf), self._flushed)
            self._flushed = self.written
            self._buf = bytearray()

    def _write(self, data: memoryview, start: int) -> None:
        """Write `data`, whose first byte is at position `start`, into the ring."""
        if len(data) > self.capacity:  # only the newest capacity bytes survive
            start += len(data) - self.capacity
            data = data[len(data) - self.capacity :]
        while data:
            at = start % self.capacity
            n = min(len(data), self.capacity - at)
            os.pwrite(self._fd, data[:n], at)
            data, start = data[n:], start + n

    def read(self, pos: int) -> Record | None:
        """The record at `pos`, or None if it was overwritten (or the spool is closed)."""
        with self._lock:
            if self.closed or pos < self.written - self.capacity or pos >= self.written:
                return None
            head = self._get(pos, HEADER.size)
            kind, fc, ts, offset, ack, value, n = HEADER.unpack(head)
            if pos + HEADER.size + n > self.written:
                return None
            extra = self._get(pos + HEADER.size, n) if n else b""
            return Record(kind, bool(fc), ts, offset, ack, value, extra)

    def _get(self, pos: int, n: int) -> bytes:
        flushed = self._flushed
        if pos >= flushed:
            return bytes(self._buf[pos - flushed : pos - flushed + n])
        end = min(pos + n, flushed)
        parts = []
        at = pos
        while at < end:
            ring = at % self.capacity
            size = min(end - at, self.capacity - ring)
            got = os.pread(self._fd, size, ring)
            if len(got) != size:
                raise OSError(f"the spool file was cut short at {ring + len(got)} bytes")
            parts.append(got)
            at += size
        if end < pos + n:
            parts.append(bytes(self._buf[: pos + n - end]))
        return b"".join(parts)


class SpooledEntries:
    """One connection's follow-view entries in a spool: where each record is and what it counts
    against the per-connection bound (its payload bytes; 0 for a gap; minus the fixed cost of a
    resend, which is not stream bytes), oldest first. Entries leave from the front
    only; `first` counts those that left."""

    __slots__ = ("_head", "first", "positions", "sizes")

    COST: Final = 12  # bytes of memory an entry takes

    def __init__(self) -> None:
        self.positions = array("q")
        self.sizes = array("l")
        self._head = 0
        self.first = 0

    def __len__(self) -> int:
        return len(self.positions) - self._head

    def __bool__(self) -> bool:
        return len(self.positions) > self._head

    def append(self, pos: int, size: int) -> None:
        self.positions.append(pos)
        self.sizes.append(size)

    def oldest_position(self) -> int:
        return self.positions[self._head]

    def popleft(self) -> int:
        """Drop the oldest entry; its payload size."""
        size = self.sizes[self._head]
        self._head += 1
        self.first += 1
        if self._head >= 4096 and self._head * 2 >= len(self.positions):
            del self.positions[: self._head]
            del self.sizes[: self._head]
            self._head = 0
        return size

    def at(self, i: int) -> tuple[int, int]:
        """Position and size of the i-th entry still kept (0: the oldest)."""
        j = self._head + i
        return self.positions[j], self.sizes[j]

    def newest_first(self) -> range:
        """Indexes (as for `at`) from the newest entry to the oldest."""
        return range(len(self) - 1, -1, -1)
