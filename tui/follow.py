"""The Stream tab's bytes of a connection of a capture file, read again from the file.

Reading a file, the app tracks every connection (for their rows: in its HTTP helper processes,
tui.http_helpers, or with none in the capture thread) but keeps none of their bytes: a copy of
every stream in the spool cost a third of the reading's time, and a file bigger than the spool
lost the streams of its first connections. The file itself stays on disk, as it
does for the Packets tab (tui.capture.FileRing); when the Stream tab shows a connection,
`FileFollow` reads the file again under the same filter, so that its packets are numbered as
they were the first time, from the packet that opened the connection to the last one given to
it, and feeds the packets of that connection alone (`Pipeline(only=...)`) to a pipeline of its
own. That pipeline keeps the connection's follow-view entries as one reading the whole file
would (the same bounds, a spool of its own) and, for TLS with keys, its plaintext: what is shown is what
each endpoint sent, as `--follow` prints it, and nothing of the other connections is kept.

While the file is still being read, the connection's last packet is not known yet: the reader
goes as far as the app has read (every helper), and on as it reads.
"""

from __future__ import annotations

import time

from engine import sources
from engine.batch import META, Batch
from engine.bounds import Bounds
from engine.connections import KeptSlice
from engine.decrypted import DecryptedStreams
from engine.events import ConnectionInfo
from engine.keylog import KeyLog
from engine.pipeline import Pipeline
from engine.spool import Spool
from engine.tcp import HOST_SHIFT, endpoints_key

LOCAL_ID = 0
"""The connection's id in the reader's pipeline: the first (and only) one that it opens."""


def table_key(info: ConnectionInfo, hosts: tuple[str, ...] = ()) -> int:
    """The connection's key in the engine's table (engine.tcp.endpoints_key), with its capture
    host's number when there are several (engine.tcp.HOST_SHIFT)."""
    key = endpoints_key(info.client, info.server)
    if info.host is not None and info.host in hosts:
        key |= (hosts.index(info.host) + 1) << HOST_SHIFT
    return key


def _part(batch: Batch, start: int, stop: int) -> Batch:
    """Packets start..stop-1 of a batch (their offsets into its data are unchanged)."""
    if start == 0 and stop == len(batch):
        return batch
    return Batch(batch.linktype, batch.data, batch.meta[start * META.size : stop * META.size],
                 batch.host)


class FileFollow:
    """One connection's stream, read again from capture files. Raises sources.CaptureError
    when the files cannot be opened."""

    def __init__(self, files: tuple[str, ...], bpf: str, bounds: Bounds, keys: KeyLog | None,
                 info: ConnectionInfo, hosts: tuple[str, ...] = ()) -> None:
        self.conn_id = info.id
        self.first = info.first_packet
        self.last = info.last_packet
        self.closed = False  # the connection is over: `last` is its last packet
        key = table_key(info, hosts)
        self.source = sources.open_files(list(files), bpf)
        self.spool = Spool(bounds.spool_bytes) if bounds.spool_bytes else None
        self.decrypted = (DecryptedStreams(self.spool, bounds.keep_stream_bytes)
                          if keys is not None and self.spool is not None else None)
        self.pipeline = Pipeline(
            bounds, spool=self.spool, http_body_limit=None, keylog=keys, only=key,
            plaintext=[self.decrypted.listener] if self.decrypted is not None else None,
        )
        self.number = 0  # the number of the next packet to read
        self.held: Batch | None = None  # read, not fed: the packets from `number` on
        self.done = False  # fed to its last packet (or the files' end), and flushed
        self.error: str | None = None

    def update(self, info: ConnectionInfo, closed: bool) -> None:
        """The connection as the app saw it last (closed: for good)."""
        self.last = info.last_packet
        self.closed = self.closed or closed

    def read(self, through: int, until: float) -> bool:
        """Feed the connection's packets up to number `through`, until the monotonic clock
        passes `until`; whether it has caught up. Once the connection is closed and its last
        packet fed, the packets after it are read for their time alone, until the connection
        leaves the reader's table (or the files end): what its reassembly holds then is flushed
        as it was in a reading of the whole file, at the same moment of the capture."""
        if self.closed:
            through = min(through, self.last)
        while not self.done and self.error is None:
            past = self.closed and self.number > self.last
            if past:
                self.pipeline.ignore_all()
                if self.pipeline.table.connection(LOCAL_ID) is None:
                    self.done = True
                    break
            elif self.number > through:
                break
            if time.monotonic() > until:
                return False
            batch, self.held = self.held, None
            if batch is None:
                batch = self.source.next_batch()
                if batch is None:
                    self.error = self.source.error
                    self.pipeline.finish()  # the files' end: as a whole reading's
                    self.done = True
                    break
            count = len(batch)
            skip = min(count, max(0, self.first - self.number))
            take = count
            if not past:
                # (Up to its last packet: one of a connection that reuses its ports must not
                # reach it.)
                take = min(count, through + 1 - self.number)
            if take < count:
                self.held = _part(batch, take, count)
            if take > skip:
                self.pipeline.feed(_part(batch, skip, take))
            self.number += take
        return True

    def since(self, cursor: int, plain: bool) -> KeptSlice | None:
        """The follow view's entries from `cursor` on (its decrypted plaintext if `plain`), as
        `ConnectionTable.kept_since` gives them; None while none is kept."""
        if plain and self.decrypted is not None:
            return self.decrypted.since(LOCAL_ID, cursor)
        return self.pipeline.kept_since(LOCAL_ID, cursor)

    def has_plaintext(self) -> bool:
        return self.decrypted is not None and LOCAL_ID in self.decrypted

    def close(self) -> None:
        self.source.close()
        if self.spool is not None:
            self.spool.close()
