"""The decrypted plaintext of TLS connections, kept for the follow view (the Stream tab).

A connection's follow view keeps what TCP delivered (engine.connections): for TLS, the records.
When engine.tlsdecrypt decrypts a connection, `DecryptedStreams` is given its plaintext as it
comes (it is one of the decryptor's listeners) and keeps it the same way: each chunk, and each
stretch of plaintext lost in a gap, as a record of the spool (engine.spool), with 12 bytes of
memory an entry to find it; entries added at the end, dropped from the front, so that a
cursor of `since` stays valid. Bounds: `keep` bytes a connection (its newest), and `max_entries`
entries of all connections together, past which the connections kept longest go first. What the
spool's ring overwrote is no longer there, and `since` says entries were dropped.

It never holds plaintext in memory (the spool does), and keeps nothing without a spool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from engine.connections import KeptSlice, kept_entry
from engine.events import Event
from engine.spool import DATA, GAP, Spool, SpooledEntries
from engine.tcp import Kept

if TYPE_CHECKING:
    from engine.tcp import Connection

MAX_ENTRIES: Final = 1 << 20  # 12 MiB of entries, all connections together


class _Kept:
    __slots__ = ("bytes", "count", "entries")

    def __init__(self) -> None:
        self.entries = SpooledEntries()
        self.count = 0  # entries ever added: the cursor after the newest
        self.bytes = 0  # plaintext bytes of the entries kept


class DecryptedStreams:
    def __init__(self, spool: Spool, keep: int, max_entries: int = MAX_ENTRIES) -> None:
        self.spool = spool
        self.keep = keep
        self.max_entries = max_entries
        self.kept: OrderedDict[int, _Kept] = OrderedDict()
        self.entries = 0  # of all connections

    def __contains__(self, conn_id: int) -> bool:
        return conn_id in self.kept

    def listener(self, conn: Connection, emit: Callable[[Event], None]) -> _Listener:
        """A consumer of one connection's plaintext (a factory for Pipeline(plaintext=...))."""
        return _Listener(self, conn.id)

    def add(self, conn_id: int, kind: int, from_client: bool, ts: float, offset: int,
            value: int, extra: bytes) -> None:  # fmt: skip
        kept = self.kept.get(conn_id)
        if kept is None:
            kept = self.kept[conn_id] = _Kept()
        pos = self.spool.append(kind, from_client, ts, offset, -1, value, extra)
        size = value if kind == DATA else 0
        kept.entries.append(pos, size)
        kept.count += 1
        kept.bytes += size
        self.entries += 1
        while kept.bytes > self.keep and len(kept.entries) > 1:
            kept.bytes -= kept.entries.popleft()
            self.entries -= 1
        while self.entries > self.max_entries and len(self.kept) > 1:
            _id, oldest = self.kept.popitem(last=False)
            self.entries -= len(oldest.entries)

    def since(self, conn_id: int, cursor: int) -> KeptSlice | None:
        """The connection's plaintext entries from `cursor` on (as ConnectionTable.kept_since);
        None if none is kept for it."""
        kept = self.kept.get(conn_id)
        if kept is None:
            return None
        entries = kept.entries
        oldest = self.spool.oldest
        while entries and entries.oldest_position() < oldest:  # overwritten by the ring
            kept.bytes -= entries.popleft()
            self.entries -= 1
        first = kept.count - len(entries)
        start = max(cursor, first)
        out: list[Kept] = []
        for i in range(start - first, len(entries)):
            record = self.spool.read(entries.at(i)[0])
            if record is None:  # overwritten meanwhile: from here on
                out.clear()
                first = kept.count
                continue
            out.append(kept_entry(record))
        return KeptSlice(tuple(out), kept.count, cursor < first)


class _Listener:
    """One connection's plaintext, into DecryptedStreams."""

    __slots__ = ("conn_id", "streams")

    def __init__(self, streams: DecryptedStreams, conn_id: int) -> None:
        self.streams = streams
        self.conn_id = conn_id

    def on_data(self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes,
                ack: int) -> None:  # fmt: skip
        self.streams.add(self.conn_id, DATA, from_client, ts, offset, len(data), data)

    def on_gap(self, conn: Connection, from_client: bool, ts: float, offset: int, size: int,
               reason: str) -> None:  # fmt: skip
        self.streams.add(self.conn_id, GAP, from_client, ts, offset, size, reason.encode())

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float) -> None:
        pass
