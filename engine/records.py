"""NDJSON records of the headless command line (the contract is in the design document).

Every string here may come from the wire (addresses do not, but SNI, ALPN and HTTP fields do).
They are text as sent, bytes decoded as Latin-1, never escaped by the engine: the encoder
escapes control characters and every non-ASCII character (`\\u00XX`), so a record printed to a
terminal is inert (no C1 control either, as UTF-8 would carry it) and a reader gets the wire text
back with `json.loads`.

Records are encoded by orjson (a fifth of `--json`'s time went to `json.dumps`). orjson writes
non-ASCII text as UTF-8: such a record, rare, is encoded again by `json.dumps` with its default
ensure_ascii, as is anything orjson refuses (an integer past 64 bits, a lone surrogate). Lines are
compact (no spaces after `,` and `:`).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson

from engine.communityid import tcp_community_id
from engine.decode import TCP, UDP
from engine.events import (
    ConnectionInfo,
    GrpcCall,
    HttpRequest,
    HttpResponse,
    HttpTransaction,
    Message,
    Transaction,
)


class Flow(NamedTuple):
    """What an exchange's record says of its connection, so that a reader of the records needs
    no join with the connection record (which comes at its end)."""

    client: str
    server: str
    community_id: str
    host: str | None = None  # the capture host, when there are several
    transport: str = "tcp"  # "udp": a DNS flow (engine.dns)


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
        "community_id": tcp_community_id(
            info.client, info.server, proto=UDP if info.transport == "udp" else TCP
        ),
    }
    if info.transport != "tcp":
        record["transport"] = info.transport
    if info.host is not None:
        record["host"] = info.host
    hello = info.server_hello
    if info.sni is not None or info.alpn or hello is not None:
        record["tls"] = {
            "sni": info.sni,
            "alpn": list(info.alpn),
            "version": hello.version if hello else None,  # negotiated: from the ServerHello
            "cipher": hello.cipher if hello else None,
            "alpn_selected": hello.alpn if hello else None,  # TLS 1.3 encrypts it: null there
        }
        cert = info.certificate
        if cert is not None:
            record["tls"]["certificate"] = {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "not_before": cert.not_before,
                "not_after": cert.not_after,
            }
        if info.tls_decryption is not None:  # a key log was given (engine.tlsdecrypt)
            record["tls"]["decrypted"] = info.tls_decryption == "decrypted"
            record["tls"]["why_not"] = (
                None if info.tls_decryption == "decrypted" else info.tls_decryption
            )
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
        "headers": tuple(r.headers),  # pairs: JSON arrays
        "body_bytes": r.body_bytes,
        "body_missing": r.body_missing,
        "complete": r.complete,
    }


def _request(r: HttpRequest) -> dict[str, Any]:
    record = _message(r, {"method": r.method, "target": r.target})
    if r.trailers:
        record["trailers"] = r.trailers
    return record


def _response(r: HttpResponse) -> dict[str, Any]:
    record = _message(r, {"status": r.status, "reason": r.reason})
    record["interim"] = [
        {"status": s, "reason": reason, "ts": _ts(ts)} for s, reason, ts in r.interim
    ]
    if r.trailers:
        record["trailers"] = r.trailers
    return record


def _grpc(call: GrpcCall) -> dict[str, Any]:
    return {
        "service": call.service,
        "method": call.method,
        "status": call.status,
        "message": call.message,
        "messages": {"request": call.requests, "response": call.responses},
        "message_bytes": {"request": call.request_bytes, "response": call.response_bytes},
        "compressed": {"request": call.compressed[0], "response": call.compressed[1]},
        "framing_lost": call.framing_lost,
    }


def _add_flow(record: dict[str, Any], flow: Flow | None) -> None:
    """An exchange's or transaction's connection, named in its record (see Flow)."""
    if flow is not None:
        record["client"], record["server"] = flow.client, flow.server
        record["community_id"] = flow.community_id
        if flow.host is not None:
            record["host"] = flow.host
        if flow.transport != "tcp":
            record["transport"] = flow.transport


def http_record(tx: HttpTransaction, flow: Flow | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "http", "connection": tx.connection}
    _add_flow(record, flow)
    record["index"] = tx.index
    record["request"] = _request(tx.request) if tx.request is not None else None
    record["response"] = _response(tx.response) if tx.response is not None else None
    record["error"] = tx.error
    record["duration"] = _ts(tx.duration)
    record["ttfb"] = _ts(tx.wait)
    if tx.stream is not None:
        record["stream"] = tx.stream
    if tx.grpc is not None:
        record["grpc"] = _grpc(tx.grpc)
    if tx.tunnel:
        record["tunnel"] = True
    if tx.notes:
        record["notes"] = list(tx.notes)
    return record


def _side(message: Message | None, summary: str | None) -> dict[str, Any] | None:
    if message is None:
        return None
    return {
        "ts": _ts(message.ts),
        "end_ts": _ts(message.end_ts),
        "summary": summary,
        "bytes": message.size,
    }


def transaction_record(tx: Transaction, flow: Flow | None = None) -> dict[str, Any]:
    """A transaction of a protocol other than HTTP (`"protocol": "redis"`)."""
    record: dict[str, Any] = {"type": "transaction", "protocol": tx.protocol}
    record["connection"] = tx.connection
    _add_flow(record, flow)
    record["index"] = tx.index
    record["request"] = _side(tx.request, tx.request_summary)
    record["response"] = _side(tx.response, tx.response_summary)
    record["status"] = tx.status
    record["error"] = tx.error
    record["duration"] = _ts(tx.duration)
    if tx.notes:
        record["notes"] = list(tx.notes)
    return record


def dumps(record: dict[str, Any]) -> bytes:
    """The record as compact ASCII JSON."""
    try:
        out = orjson.dumps(record)
    except orjson.JSONEncodeError:
        out = b""
    if out.isascii() and out:
        return out
    return json.dumps(record, separators=(",", ":")).encode("ascii")


# A record as a line whose connection id is filled in last: the parallel reader (tui.sharded)
# numbers connections only once every process has reported what it saw.
ID_FIELD = {"connection": "id", "http": "connection", "transaction": "connection"}


def split_line(record: dict[str, Any]) -> tuple[str, int, bytes]:
    """(type, connection id, the rest of the JSON object after the id, from its comma on)."""
    kind = record["type"]
    field = ID_FIELD[kind]
    rest = {k: v for k, v in record.items() if k not in ("type", field)}
    body = dumps(rest)
    return kind, record[field], b"," + body[1:] if len(body) > 2 else b"}"


def join_line(kind: str, conn_id: int, rest: bytes) -> bytes:
    """The record's line, without its newline."""
    return b'{"type":"%s","%s":%d%s' % (kind.encode(), ID_FIELD[kind].encode(), conn_id, rest)


def line(record: dict[str, Any]) -> bytes:
    return join_line(*split_line(record))
