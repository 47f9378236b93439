"""The NDJSON records in Elastic Common Schema field names (`--json --schema ecs`).

A fleet's store (Elasticsearch, OpenSearch, anything fed by Vector, Fluent Bit or Logstash)
indexes and joins records by these names: `source.ip`, `destination.port`,
`http.request.method`, `http.response.status_code`, `url.path`, `event.duration` (nanoseconds),
`network.community_id` (the flow's Community ID, as Zeek, Suricata and Packetbeat write it).
What ECS has no field for (the TCP state and history, missing and retransmitted bytes, header
lists, gRPC, the exchange's index on its connection) stays under `wirepeek.*`, by the names the
native records give it. The records are made from the native ones (`engine.records`), so both
say the same thing; strings stay wire text, escaped by the encoder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

ECS_VERSION = "8.11.0"


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _time(ts: float | None) -> str | None:
    """ECS dates: ISO 8601 in UTC, to the microsecond (a record's times mostly share their
    second, whose text is made once)."""
    if ts is None:
        return None
    micros = round(ts * 1_000_000)
    second, micro = divmod(micros, 1_000_000)
    if second != _second[0]:
        _second[0] = second
        _second[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{micro:06d}Z"


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e9)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _network(
    client: str, community_id: str, protocol: str | None, transport: str = "tcp"
) -> dict[str, Any]:
    network: dict[str, Any] = {
        "transport": transport,
        "iana_number": "17" if transport == "udp" else "6",
        "type": "ipv6" if client.startswith("[") else "ipv4",
        "community_id": community_id,
    }
    if protocol:
        network["protocol"] = protocol.lower()
    return network


def _tls(tls: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    version = tls.get("version")
    if version:
        protocol, _, number = version.partition(" ")
        out["version_protocol"] = protocol.lower()
        out["version"] = number
    if tls.get("cipher"):
        out["cipher"] = tls["cipher"]
    if tls.get("sni"):
        out["client"] = {"server_name": tls["sni"]}
    if tls.get("alpn_selected"):
        out["next_protocol"] = tls["alpn_selected"]
    cert = tls.get("certificate")
    if cert:
        out["server"] = {
            "subject": cert["subject"],
            "issuer": cert["issuer"],
            "not_before": cert["not_before"],
            "not_after": cert["not_after"],
        }
    return out


def connection(record: dict[str, Any]) -> dict[str, Any]:
    """A connection record (as engine.records.connection_record makes it) in ECS names."""
    (cip, cport), (sip, sport) = _endpoint(record["client"]), _endpoint(record["server"])
    packets, sent = record["packets"], record["bytes"]
    out: dict[str, Any] = {
        "@timestamp": _time(record["first_ts"]),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "end"],
            "dataset": "wirepeek.connection",
            "start": _time(record["first_ts"]),
            "end": _time(record["last_ts"]),
            "duration": _ns(record["last_ts"] - record["first_ts"]),
        },
        "network": _network(
            record["client"],
            record["community_id"],
            record["protocol"],
            record.get("transport", "tcp"),
        ),
        "source": {"ip": cip, "port": cport, "bytes": sent["client"], "packets": packets["client"]},
        "destination": {
            "ip": sip,
            "port": sport,
            "bytes": sent["server"],
            "packets": packets["server"],
        },
    }
    out["network"]["bytes"] = sent["client"] + sent["server"]
    out["network"]["packets"] = packets["client"] + packets["server"]
    if "host" in record:
        out["host"] = {"name": record["host"]}
    if "tls" in record:
        out["tls"] = _tls(record["tls"])
    ours = {
        k: record[k]
        for k in (
            "id",
            "state",
            "conn_state",
            "history",
            "missing_bytes",
            "retransmitted_bytes",
            "inconsistent_retransmissions",
            "direction_guessed",
        )
    }
    processes = record.get("process")
    if processes is not None:  # a live capture on this host: who holds each end (engine.procs)
        ours["process"] = processes
        local = [p for p in (processes["client"], processes["server"]) if p is not None]
        if len(local) == 1:  # one end here: ECS's process is that one
            out["process"] = {"pid": local[0]["pid"], "name": local[0]["name"]}
            if local[0]["user"] is not None:
                out["user"] = {"name": local[0]["user"]}
    tls = record.get("tls")
    if tls and ("decrypted" in tls or tls.get("alpn")):
        ours["tls"] = {k: tls[k] for k in ("alpn", "decrypted", "why_not") if k in tls}
    out["wirepeek"] = {"connection": ours}
    return out


def _fields(headers: Any) -> dict[str, str]:
    """A message's header values by lower-case name, the first of each name."""
    return {str(n).lower(): str(v) for n, v in reversed(headers)}


def _url(target: str, authority: str | None) -> dict[str, Any]:
    """url.* of a request target, with the Host (or :authority) for the domain."""
    url: dict[str, Any] = {"original": target}
    host, path, query = authority, "", ""
    if target.startswith("/"):  # origin form
        path, _, query = target.partition("?")
    elif "://" in target:  # absolute form (a request to a proxy)
        try:
            parts = urlsplit(target)
        except ValueError:
            return url
        url["full"], url["scheme"] = target, parts.scheme
        path, query = parts.path or "/", parts.query
        host = parts.netloc.rpartition("@")[2] or authority
    elif target != "*":  # authority form (CONNECT host:port)
        host = target
    if path:
        url["path"] = path
    if query:
        url["query"] = query
    if host:
        name, colon, number = host.rpartition(":")
        if colon and number.isdigit() and (":" not in name or name.startswith("[")):
            url["domain"], url["port"] = name.strip("[]"), int(number)
        else:
            url["domain"] = host.strip("[]")
    return url


def _mime(fields: dict[str, str]) -> str | None:
    """The media type of a Content-Type, without its parameters."""
    value = fields.get("content-type")
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def http(record: dict[str, Any]) -> dict[str, Any]:
    """An HTTP exchange record (engine.records.http_record) in ECS names."""
    request, response = record["request"], record["response"]
    start = request["ts"] if request else response["ts"] if response else None
    end = response["end_ts"] if response else request["end_ts"] if request else None
    event: dict[str, Any] = {
        "kind": "event",
        "category": ["network", "web"],
        "type": ["connection", "protocol"],
        "dataset": "wirepeek.http",
        "start": _time(start),
        "end": _time(end),
        "duration": _ns(record["duration"]),
    }
    status = response["status"] if response else None
    if status is None or record["error"]:
        event["outcome"] = "unknown"
    else:
        event["outcome"] = "failure" if status >= 400 else "success"
    out: dict[str, Any] = {
        "@timestamp": _time(start),
        "ecs": {"version": ECS_VERSION},
        "event": event,
    }
    if "client" in record:
        (cip, cport), (sip, sport) = _endpoint(record["client"]), _endpoint(record["server"])
        out["network"] = _network(record["client"], record["community_id"], "http")
        out["source"] = {"ip": cip, "port": cport}
        out["destination"] = {"ip": sip, "port": sport}
    if "host" in record:
        out["host"] = {"name": record["host"]}
    message = response or request
    version = message["version"] if message else None
    http_: dict[str, Any] = {}
    if version:
        http_["version"] = version
    ours: dict[str, Any] = {"connection": record["connection"], "index": record["index"]}
    if request:
        req: dict[str, Any] = {
            "method": request["method"],
            "body": {"bytes": request["body_bytes"]},
        }
        fields = _fields(request["headers"])
        mime = _mime(fields)
        if mime:
            req["mime_type"] = mime
        referrer = fields.get("referer")
        if referrer:
            req["referrer"] = referrer
        http_["request"] = req
        out["url"] = _url(request["target"], fields.get(":authority") or fields.get("host"))
        agent = fields.get("user-agent")
        if agent:
            out["user_agent"] = {"original": agent}
        ours["request"] = _message_rest(request)
    if response:
        resp: dict[str, Any] = {
            "status_code": response["status"],
            "body": {"bytes": response["body_bytes"]},
        }
        mime = _mime(_fields(response["headers"]))
        if mime:
            resp["mime_type"] = mime
        http_["response"] = resp
        ours["response"] = _message_rest(response)
    out["http"] = http_
    if record["error"]:
        out["error"] = {"message": record["error"]}
    ours["ttfb"] = _ns(record["ttfb"])
    for key in ("stream", "grpc", "tunnel", "notes"):
        if key in record:
            ours[key] = record[key]
    out["wirepeek"] = ours
    return out


def _message_rest(message: dict[str, Any]) -> dict[str, Any]:
    """What ECS has no name for in a request or response: kept as the native record has it."""
    rest: dict[str, Any] = {
        k: message[k]
        for k in ("headers", "body_missing", "complete", "reason", "interim", "trailers")
        if k in message
    }
    rest["ts"], rest["end_ts"] = _time(message["ts"]), _time(message["end_ts"])
    return rest


def transaction(record: dict[str, Any]) -> dict[str, Any]:
    """A transaction record of another protocol than HTTP (Redis) in ECS names."""
    request, response = record["request"], record["response"]
    start = request["ts"] if request else response["ts"] if response else None
    end = response["end_ts"] if response else request["end_ts"] if request else None
    status = record["status"]
    out: dict[str, Any] = {
        "@timestamp": _time(start),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "category": ["network", "database"],
            "type": ["connection", "protocol"],
            "dataset": f"wirepeek.{record['protocol']}",
            "start": _time(start),
            "end": _time(end),
            "duration": _ns(record["duration"]),
            "outcome": {"ok": "success", "error": "failure"}.get(status or "", "unknown"),
        },
    }
    if "client" in record:
        (cip, cport), (sip, sport) = _endpoint(record["client"]), _endpoint(record["server"])
        out["network"] = _network(
            record["client"],
            record["community_id"],
            record["protocol"],
            record.get("transport", "tcp"),
        )
        out["source"] = {"ip": cip, "port": cport}
        out["destination"] = {"ip": sip, "port": sport}
    if "host" in record:
        out["host"] = {"name": record["host"]}
    if record["error"]:
        out["error"] = {"message": record["error"]}
    ours = {k: record[k] for k in ("connection", "index", "request", "response", "status")}
    for side in ("request", "response"):
        if ours[side] is not None:
            ours[side] = {**ours[side], "ts": _time(ours[side]["ts"]),
                          "end_ts": _time(ours[side]["end_ts"])}  # fmt: skip
    if "notes" in record:
        ours["notes"] = record["notes"]
    out["wirepeek"] = ours
    return out


def record(native: dict[str, Any]) -> dict[str, Any]:
    """Any native record in ECS names."""
    kind = native["type"]
    if kind == "connection":
        return connection(native)
    return http(native) if kind == "http" else transaction(native)
