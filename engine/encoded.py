"""Exchanges encoded as records: what an HTTP helper process (tui.http_helpers) sends the app,
and what the app's ring file of exchanges (tui.exchange_log) holds. Here, in the compiled engine,
because a helper encodes every exchange it parses: interpreted, this was a sixth of its time.

A record is `marshal`'s writing of a tuple (every field a str, bytes, int, float, bool, None, or
a tuple or list of them, which marshal writes and reads back exactly and at C speed). An HTTP exchange's
tuple starts with its index (an int), a transaction's with its protocol's name (a str). The
connection's id is not in it: its reader knows it (the helpers number connections their own way).

Written in marshal's format version 2 (MARSHAL_VERSION), not the newest (4): version 3 added
references to objects seen before, which cost a table per call and find nothing to share in a
record, so on keep-alive exchanges with realistic heads version 2 writes a record in 1.25 us
instead of 1.73 (reads it in 1.65 instead of 1.98), for 3% more bytes. marshal.loads reads any.
"""

from __future__ import annotations

import marshal
from typing import Any, Final

from engine.events import (
    ExchangeRecord,
    Headers,
    HttpRequest,
    HttpRequestSeen,
    HttpResponse,
    HttpTransaction,
    Message,
    Transaction,
)
from engine.spool import DATA, add_same, header_start

Exchange = HttpTransaction | Transaction  # what a connection's list holds

NO_ANSWER: Final = -2  # a row's status when its last request got no answer (it will get none)
# A row's status when its last transaction (not HTTP) was answered: Transaction.status "ok" or
# "error" (a transaction without an answer is NO_ANSWER, as an HTTP request is).
ANSWERED_OK: Final = -3
ANSWERED_ERROR: Final = -4
MARSHAL_VERSION: Final = 2
EXCHANGE_HEADER: Final = header_start(DATA, False, 0.0, 0, -1, 0)
"""The start of every exchange's record header (engine.spool): a DATA record of no stream."""


def encode(tx: Exchange) -> bytes:
    """The record of an exchange, without its connection's id."""
    if isinstance(tx, Transaction):
        return marshal.dumps((
            tx.protocol, tx.index, _side(tx.request), tx.request_summary, _side(tx.response),
            tx.response_summary, tx.status, tx.error, tx.notes,
        ), MARSHAL_VERSION)  # fmt: skip
    request, response = tx.request, tx.response
    return http_record(
        tx.index, tx.error, tx.tunnel, tx.notes,
        None if request is None else stored_fields(request),
        None if response is None else stored_fields(response),
        tx.stream, None if tx.grpc is None else tuple(tx.grpc),
    )  # fmt: skip


def http_record(
    index: int,
    error: str | None,
    tunnel: bool,
    notes: tuple[str, ...],
    request: list[Any] | None,
    response: list[Any] | None,
    stream: int | None = None,
    grpc: tuple[Any, ...] | None = None,
) -> bytes:
    """The record of an HTTP exchange from its fields (an HttpTransaction's but its connection),
    each message's as `stored_fields` gives them: `encode`'s, and the HTTP parser's own
    (ExchangeRecord)."""
    return marshal.dumps(
        (index, error, tunnel, notes, request, response, stream, grpc), MARSHAL_VERSION
    )


def stored_fields(message: HttpRequest | HttpResponse) -> list[Any]:
    """A message's fields as marshal writes them: its headers as `stored_headers` gives them.
    (A list: made at once and changed in place, where a tuple took two slices and two joins.)"""
    fields: list[Any] = list(message)
    fields[5] = stored_headers(fields[5])
    return fields


def stored_headers(headers: Any) -> Any:
    """Headers as a record keeps them: their text when they have one (Headers.stored), else
    their pairs (some makers of records give a tuple of pairs)."""
    return headers.stored() if type(headers) is Headers else tuple(headers)


def _side(message: Message | None) -> tuple[float, float, int] | None:
    return None if message is None else (message.ts, message.end_ts, message.size)


def row_of(tx: Exchange) -> tuple[str, int]:
    """What its connection's row shows of an exchange: its request line, and its status; of a
    transaction, its request's summary (or, without one, its answer's), and ANSWERED_OK,
    ANSWERED_ERROR or NO_ANSWER (wire text: the row escapes it)."""
    if isinstance(tx, Transaction):
        if tx.request_summary is not None:
            line = tx.request_summary
        else:
            line = "(no request)" + (f" {tx.response_summary}" if tx.response_summary else "")
        if tx.status is None:
            return line, NO_ANSWER
        return line, ANSWERED_ERROR if tx.status == "error" else ANSWERED_OK
    request, response = tx.request, tx.response
    status = None if response is None else response.status
    if request is None:
        return http_row(None, "", status)
    return http_row(request.method, request.target, status)


def http_row(method: str | None, target: str, status: int | None) -> tuple[str, int]:
    """What its connection's row shows of an HTTP exchange: its request line ("(no request)"
    when method is None) and its status (NO_ANSWER when status is None)."""
    line = f"{method} {target}" if method is not None else "(no request)"
    return line, NO_ANSWER if status is None else status


Columns = tuple[bytearray, Any, Any, list[str], Any, Any, Any]
"""The columns of tui.exchange_log.EncodedExchanges, in this order: records, starts,
connections, lines, statuses, offsets, indexes (each of the others an array("q"))."""


def add(columns: Columns, connection: int, tx: Exchange) -> None:
    """Append an exchange to `columns`: its record to the records, where it starts, its
    connection, its row's line and status, its request's stream offset (-1 without one: a
    transaction's request is never listed as waiting) and its index."""
    line, status = row_of(tx)
    request = tx.request if isinstance(tx, HttpTransaction) else None
    offset = request.offset if request is not None else -1
    _append(columns, connection, encode(tx), line, status, offset, tx.index)


def add_record_of(columns: Columns, record: ExchangeRecord) -> None:
    """`add` for an exchange the parser gave as its record."""
    _append(columns, record.connection, record.record, record.line, record.status,
            record.offset, record.index)  # fmt: skip


def _append(
    columns: Columns, connection: int, blob: bytes, line: str, status: int, offset: int, index: int
) -> None:
    records, starts, connections, lines, statuses, offsets, indexes = columns
    starts.append(len(records))
    add_same(records, EXCHANGE_HEADER, blob)
    connections.append(connection)
    lines.append(line)
    statuses.append(status)
    offsets.append(offset)
    indexes.append(index)


def collect(
    events: list[Any], columns: Columns, seen: dict[tuple[int, int], HttpRequest] | None = None
) -> None:
    """`add` each exchange and transaction among a pipeline's events (here, compiled: a helper
    runs this loop for every exchange it parses); with `seen`, the requests announced as waiting
    there too, by connection and offset, none whose exchange came since."""
    for event in events:
        if type(event) is ExchangeRecord:
            add_record_of(columns, event)
            if seen and event.offset >= 0:
                seen.pop((event.connection, event.offset), None)
        elif isinstance(event, HttpTransaction):
            add(columns, event.connection, event)
            if seen and event.request is not None:
                seen.pop((event.connection, event.request.offset), None)
        elif isinstance(event, Transaction):
            add(columns, event.connection, event)
        elif seen is not None and isinstance(event, HttpRequestSeen):
            seen[(event.connection, event.request.offset)] = event.request
