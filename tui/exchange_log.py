"""The exchanges the UI keeps, on disk: a ring file of encoded exchanges, and per connection
the positions of its own. An exchange is an HTTP one (`HttpTransaction`) or a transaction of
another protocol (`Transaction`: Redis, and the protocols engine.protocols registers); a
connection's list holds one kind or the other, and the views read each as what it is.

An exchange as the engine gives it (heads, kept bodies, times) costs 1-3 KB of Python objects;
a keep-alive capture of 160,000 exchanges held that way was most of what the app grew by, and
the store had to forget most of them to stay within --memory. Here each exchange is written once,
when it comes, as one record of an `engine.spool.Spool` (a ring file in the temporary directory,
unlinked as it is made), as engine.encoded makes it. Memory keeps 16 bytes an exchange: where its record is, and its
index (the HTTP tab's default order). Views read exchanges back by position when they draw them
(a screenful at a time), the search and the statistics in their worker threads.

Past the ring's size the oldest records are overwritten: the store forgets those exchanges before
that happens (`TrafficStore`), counting them as evicted, as it does past its memory
budget. A reader that loses the race to an overwrite gets a stand-in that says so (`GONE`).
"""

from __future__ import annotations

import marshal
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, overload

from engine.encoded import (  # noqa: F401 (encode and row_of: this module's to its users)
    ANSWERED_ERROR,
    ANSWERED_OK,
    NO_ANSWER,
    Columns,
    Exchange,
    add,
    collect,
    encode,
    row_of,
)
from engine.events import (
    GrpcCall,
    Headers,
    HttpRequest,
    HttpResponse,
    HttpTransaction,
    Message,
    Transaction,
    from_fields,
)
from engine.spool import DATA, HEADER, Spool

OUTCOME_WORDS = {ANSWERED_OK: "ok", ANSWERED_ERROR: "error"}
GONE = "no longer kept: the ring file of exchanges (--spool) was overwritten"


def _loaded(cls: Any, fields: tuple[Any, ...]) -> Any:
    return from_fields(cls, (*fields[:5], Headers.load(fields[5]), *fields[6:]))


def decode(blob: bytes, connection: int) -> Exchange:
    fields = marshal.loads(blob)
    if type(fields[0]) is str:  # a transaction's record starts with its protocol
        protocol, index, request, request_summary, response, response_summary, status, error, \
            notes = fields
        return Transaction(
            protocol, connection, index, None if request is None else Message(*request),
            request_summary, None if response is None else Message(*response), response_summary,
            status, error, notes,
        )
    index, error, tunnel, notes, request, response, stream, grpc = fields
    return HttpTransaction(
        connection, index,
        None if request is None else _loaded(HttpRequest, request),
        None if response is None else _loaded(HttpResponse, response),
        error, tunnel, notes, stream, None if grpc is None else GrpcCall(*grpc),
    )


class EncodedExchanges:
    """Exchanges encoded in one process (an HTTP helper, tui.http_helpers) for the log of another
    (the app's): their records back to back, as the log writes them, so that the app writes them
    all at once; and per exchange, in arrays, what the store needs without reading the record:
    its connection, where its record starts among the records, what its connection's row shows
    (request line, status), and its request's stream offset (-1 without a request).

    One message of a helper is one of these, pickled at the cost of a few buffers whatever the
    number of exchanges (a tuple and a bytes object each cost the app ~5 us an exchange)."""

    __slots__ = ("connections", "indexes", "lines", "offsets", "records", "starts", "statuses")

    def __init__(self) -> None:
        self.records = bytearray()  # (as made, and as received: tui.http_helpers._received)
        self.starts = array("q")
        self.connections = array("q")
        self.lines: list[str] = []
        self.statuses = array("q")
        self.offsets = array("q")
        self.indexes = array("q")

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, connection: int, tx: Exchange) -> None:
        add(self._columns(), connection, tx)

    def collect(self, events: list[Any],
                seen: dict[tuple[int, int], HttpRequest] | None = None) -> None:
        """Add the exchanges and transactions among a pipeline's events (engine.encoded.collect);
        with `seen`, the requests announced as waiting there too, none answered since."""
        collect(events, self._columns(), seen)

    def _columns(self) -> Columns:
        return (self.records, self.starts, self.connections, self.lines, self.statuses, self.offsets,
                self.indexes)

    def blob(self, i: int) -> bytes:
        """The i-th exchange's record as `encode` made it."""
        starts = self.starts
        end = starts[i + 1] if i + 1 < len(starts) else len(self.records)
        return bytes(self.records[starts[i] + HEADER.size : end])

    def __iter__(self) -> Iterator[tuple[int, bytes, str, int, int]]:
        """(connection, record, request line, status, request offset) of each exchange."""
        for i, connection in enumerate(self.connections):
            yield connection, self.blob(i), self.lines[i], self.statuses[i], self.offsets[i]

    def renamed(self, ids: Sequence[int]) -> EncodedExchanges:
        """The same exchanges, each connection `c` named `ids[c]`."""
        out = EncodedExchanges()
        out.records, out.starts, out.lines = self.records, self.starts, self.lines
        out.statuses, out.offsets, out.indexes = self.statuses, self.offsets, self.indexes
        out.connections = array("q", [ids[c] for c in self.connections])
        return out


class ExchangeLog:
    """Encoded exchanges in a ring file of `capacity` bytes. The UI thread appends; any thread
    may read (the spool orders a flush against a read)."""

    def __init__(self, capacity: int, directory: str | None = None) -> None:
        self.spool = Spool(capacity, directory)

    @property
    def capacity(self) -> int:
        return self.spool.capacity

    def append(self, tx: Exchange) -> int:
        """Write one exchange; its position."""
        return self.spool.append(DATA, False, 0.0, 0, -1, 0, encode(tx))

    def append_records(self, records: bytes | bytearray) -> int:
        """Write records of EncodedExchanges (made in another process); the position of the
        first (the others follow it as in `records`)."""
        return self.spool.append_records(records)

    def read(self, pos: int, connection: int) -> Exchange | None:
        """The exchange of `connection` at `pos`, or None once its record was overwritten."""
        record = self.spool.read(pos)
        return None if record is None else decode(record.extra, connection)

    @property
    def written(self) -> int:
        return self.spool.written

    @property
    def oldest(self) -> int:
        """The first position not yet overwritten."""
        return self.spool.oldest

    def close(self) -> None:
        self.spool.close()


class Exchanges(Sequence[Exchange]):
    """One connection's exchanges as the store keeps them: their positions in the log, read
    back on each access. The store appends to it; when it forgets the oldest it makes a new
    one, so that a view holding this one sees no shift. A record overwritten meanwhile reads as
    an HttpTransaction stand-in whose error is GONE (whatever the kind it was)."""

    __slots__ = ("connection", "indexes", "log", "positions", "start")

    def __init__(self, log: ExchangeLog, connection: int, positions: array[int] | None = None,
                 start: int = 0, indexes: array[int] | None = None) -> None:
        self.log = log
        self.connection = connection
        self.positions = positions if positions is not None else array("q")
        # Each exchange's index on its connection, which the HTTP tab sorts by unless told
        # otherwise: opening a connection then reads no record.
        self.indexes = indexes if indexes is not None else array("q")
        # How many of the connection's exchanges the lists before this one forgot: a view of
        # one of those finds its rows here `start` minus its own start places earlier.
        self.start = start

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, i: int) -> Exchange: ...

    @overload
    def __getitem__(self, i: slice) -> list[Exchange]: ...

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._read(pos) for pos in self.positions[i]]
        return self._read(self.positions[i])

    def __iter__(self) -> Iterator[Exchange]:
        for pos in self.positions:
            yield self._read(pos)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Exchanges, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Exchanges of connection {self.connection}: {len(self)}>"

    def _read(self, pos: int) -> Exchange:
        tx = self.log.read(pos, self.connection)
        if tx is None:
            return HttpTransaction(self.connection, -1, None, None, GONE)
        return tx

    def append(self, pos: int, index: int) -> None:
        self.positions.append(pos)
        self.indexes.append(index)

    def extend(self, positions: list[int], indexes: list[int]) -> None:
        self.positions.extend(positions)
        self.indexes.extend(indexes)

    def index_at(self, i: int) -> int:
        """The index of the i-th exchange (as its record says), read from memory."""
        return self.indexes[i]

    def without_first(self, n: int) -> Exchanges:
        return Exchanges(self.log, self.connection, self.positions[n:], self.start + n,
                         self.indexes[n:])
