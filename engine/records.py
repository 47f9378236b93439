"""NDJSON records of the headless command line (the contract is in the design document).

Every string here may come from the wire (addresses do not, but SNI, ALPN and HTTP fields do).
They are text as sent, bytes decoded as Latin-1, never escaped by the engine: `json.dumps`
escapes control characters (and, with its default ensure_ascii, every non-ASCII character), so
a record printed to a terminal is inert and a reader gets the wire text back with `json.loads`.
"""

from __future__ import annotations

import json
from typing import Any

from engine.events import ConnectionInfo, HttpRequest, HttpResponse, HttpTransaction


def connection_record(info: ConnectionInfo) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "connection",
        "id": info.id,
        "client": info.client,
        "server": info.server,
        "state": info.state,
        "conn_state": info.conn_state,
        "history": info.history,
        "first_ts": round(info.first_ts, 6),
        "last_ts": round(info.last_ts, 6),
        "packets": {"client": info.packets[0], "server": info.packets[1]},
        "bytes": {"client": info.bytes[0], "server": info.bytes[1]},
        "missing_bytes": {"client": info.missing_bytes[0], "server": info.missing_bytes[1]},
        "retransmitted_bytes": {
            "client": info.retransmitted_bytes[0],
            "server": info.retransmitted_bytes[1],
        },
        "inconsistent_retransmissions": info.inconsistent_retransmissions,
        "protocol": info.protocol,
        "direction_guessed": info.direction_guessed,
    }
    hello = info.server_hello
    if info.sni is not None or info.alpn or hello is not None:
        record["tls"] = {
            "sni": info.sni,
            "alpn": list(info.alpn),
            "version": hello.version if hello else None,  # negotiated: from the ServerHello
            "cipher": hello.cipher if hello else None,
            "alpn_selected": hello.alpn if hello else None,  # TLS 1.3 encrypts it: null there
        }
    return record


def _ts(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _message(r: HttpRequest | HttpResponse, start_line: dict[str, Any]) -> dict[str, Any]:
    """The fields both messages have, around those of their start line (keys in contract order)."""
    return {
        "ts": _ts(r.ts),
        "end_ts": _ts(r.end_ts),
        **start_line,
        "version": r.version,
        "headers": r.headers,  # pairs: JSON arrays
        "body_bytes": r.body_bytes,
        "body_missing": r.body_missing,
        "complete": r.complete,
    }


def _request(r: HttpRequest) -> dict[str, Any]:
    return _message(r, {"method": r.method, "target": r.target})


def _response(r: HttpResponse) -> dict[str, Any]:
    record = _message(r, {"status": r.status, "reason": r.reason})
    record["interim"] = [
        {"status": s, "reason": reason, "ts": _ts(ts)} for s, reason, ts in r.interim
    ]
    return record


def http_record(tx: HttpTransaction) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "http",
        "connection": tx.connection,
        "index": tx.index,
        "request": _request(tx.request) if tx.request is not None else None,
        "response": _response(tx.response) if tx.response is not None else None,
        "error": tx.error,
    }
    if tx.tunnel:
        record["tunnel"] = True
    if tx.notes:
        record["notes"] = list(tx.notes)
    return record


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(", ", ": "))


# A record as a line whose connection id is filled in last: the parallel reader (tui.sharded)
# numbers connections only once every process has reported what it saw.
ID_FIELD = {"connection": "id", "http": "connection"}


def split_line(record: dict[str, Any]) -> tuple[str, int, str]:
    """(type, connection id, the rest of the JSON object after the id)."""
    kind = record["type"]
    field = ID_FIELD[kind]
    rest = {k: v for k, v in record.items() if k not in ("type", field)}
    return kind, record[field], dumps(rest)[1:]


def join_line(kind: str, conn_id: int, rest: str) -> str:
    return f'{{"type": "{kind}", "{ID_FIELD[kind]}": {conn_id}, {rest}'


def line(record: dict[str, Any]) -> str:
    return join_line(*split_line(record))
