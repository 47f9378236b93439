"""HAR 1.2 (the HTTP Archive format browsers export and import) of HTTP exchanges.

Each exchange is an entry: request and response with their headers, cookies, query string and
bodies (decoded from their content coding as HAR wants: `content.text`, base64 with
`"encoding": "base64"` when not text; a request body as `postData`), sizes as sent, and timings
from the segments' times (send: the request's first to last byte; wait: its last byte to the
response's first; receive: the response's first to last byte; what was not seen is -1, as the
format says). HAR has no place for what only a capture knows: `_wirepeek` (underscore fields
are the format's extension point) says the connection, the exchange's index, the HTTP/2 stream,
bytes never captured, the parse error and notes. Bodies are those the engine kept (see
`max_body`): a body cut by that bound says so in `_wirepeek.body_truncated`.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from engine.content import decode_message_body
from engine.events import ConnectionInfo, HttpRequest, HttpResponse, HttpTransaction

CREATOR: Final = {"name": "wirepeek", "version": "0.1.0"}
HAR_BODY: Final = 16 * 1024 * 1024  # decoded bytes written per body at most


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(start: float | None, end: float | None) -> float:
    if start is None or end is None:
        return -1
    return round(max(0.0, end - start) * 1000, 3)


def _headers(message: HttpRequest | HttpResponse) -> list[dict[str, str]]:
    return [{"name": n, "value": v} for n, v in message.headers]


def _field(message: HttpRequest | HttpResponse, name: str) -> str | None:
    for n, v in message.headers:
        if n.lower() == name:
            return v
    return None


def _cookies(request: HttpRequest) -> list[dict[str, str]]:
    out = []
    for n, v in request.headers:
        if n.lower() == "cookie":
            for part in v.split(";"):
                name, sep, value = part.strip().partition("=")
                if name and sep:
                    out.append({"name": name, "value": value})
    return out


def _set_cookies(response: HttpResponse) -> list[dict[str, Any]]:
    out = []
    for n, v in response.headers:
        if n.lower() != "set-cookie":
            continue
        first, *attributes = v.split(";")
        name, _, value = first.strip().partition("=")
        cookie: dict[str, Any] = {"name": name, "value": value}
        for attribute in attributes:
            key, _, val = attribute.strip().partition("=")
            key = key.lower()
            if key in ("path", "domain"):
                cookie[key] = val
            elif key == "expires":
                cookie["expires"] = val
            elif key == "httponly":
                cookie["httpOnly"] = True
            elif key == "secure":
                cookie["secure"] = True
        out.append(cookie)
    return out


def _url(request: HttpRequest, info: ConnectionInfo | None) -> str:
    target = request.target
    if "://" in target:
        return target
    fields = dict((n.lower(), v) for n, v in request.headers)
    scheme = fields.get(":scheme")
    if scheme is None:
        tls = info is not None and (info.tls_decryption is not None or info.sni is not None)
        scheme = "https" if tls else "http"
    host = fields.get(":authority") or fields.get("host")
    if host is None and info is not None:
        host = info.server
    if request.method == "CONNECT":
        return f"{scheme}://{target}"
    return f"{scheme}://{host or 'unknown'}{target if target.startswith('/') else '/' + target}"


def _text(data: bytes) -> tuple[str, str | None]:
    """(text, encoding): UTF-8 text as it is, anything else base64."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _version(message: HttpRequest | HttpResponse) -> str:
    return f"HTTP/{message.version}"


def entry(tx: HttpTransaction, info: ConnectionInfo | None) -> dict[str, Any] | None:
    """The HAR entry of an exchange (None without a request: HAR has no entry for that)."""
    request, response = tx.request, tx.response
    if request is None:
        return None
    url = _url(request, info)
    har_request: dict[str, Any] = {
        "method": request.method,
        "url": url,
        "httpVersion": _version(request),
        "cookies": _cookies(request),
        "headers": _headers(request),
        "queryString": [
            {"name": n, "value": v}
            for n, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)
        ],
        "headersSize": -1,
        "bodySize": request.body_bytes,
    }
    notes: dict[str, Any] = {}
    if request.body_bytes:
        sent = decode_message_body(request, HAR_BODY)
        text, encoding = _text(sent.data)
        post: dict[str, Any] = {"mimeType": _field(request, "content-type") or "", "text": text}
        if encoding:
            post["_encoding"] = encoding
        har_request["postData"] = post
        if len(request.body) < request.body_bytes - request.body_missing:
            notes["request_body_truncated"] = True
    if response is not None:
        decoded = decode_message_body(response, HAR_BODY) if response.body_bytes else None
        content: dict[str, Any] = {
            "size": len(decoded.data) if decoded is not None else 0,
            "mimeType": _field(response, "content-type") or "",
        }
        if decoded is not None:
            text, encoding = _text(decoded.data)
            content["text"] = text
            if encoding:
                content["encoding"] = encoding
            content["compression"] = (
                response.body_bytes - len(decoded.data) if decoded.encodings else 0
            )
            if len(response.body) < response.body_bytes - response.body_missing:
                notes["response_body_truncated"] = True
        har_response: dict[str, Any] = {
            "status": response.status,
            "statusText": response.reason,
            "httpVersion": _version(response),
            "cookies": _set_cookies(response),
            "headers": _headers(response),
            "content": content,
            "redirectURL": _field(response, "location") or "",
            "headersSize": -1,
            "bodySize": response.body_bytes,
        }
    else:
        har_response = {
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1,
            "bodySize": -1, "_error": "no response captured",
        }  # fmt: skip
    send = _ms(request.ts, request.end_ts)
    wait = _ms(request.end_ts, response.ts if response else None)
    receive = _ms(response.ts, response.end_ts) if response else -1
    timings = {"blocked": -1, "dns": -1, "connect": -1, "send": send, "wait": wait,
               "receive": receive, "ssl": -1}  # fmt: skip
    record: dict[str, Any] = {
        "startedDateTime": _iso(request.ts),
        "time": round(sum(t for t in (send, wait, receive) if t >= 0), 3),
        "request": har_request,
        "response": har_response,
        "cache": {},
        "timings": timings,
    }
    if info is not None:
        record["serverIPAddress"] = info.server.rpartition(":")[0].strip("[]")
        record["connection"] = str(info.id)
    missing = (request.body_missing, response.body_missing if response else 0)
    record["_wirepeek"] = {
        "connection": tx.connection, "index": tx.index, "stream": tx.stream,
        "client": info.client if info else None, "server": info.server if info else None,
        "body_missing": {"request": missing[0], "response": missing[1]},
        "complete": {"request": request.complete, "response": response.complete if response else False},
        "error": tx.error, "notes": list(tx.notes), **notes,
    }  # fmt: skip
    return record


def har(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The HAR document of these entries, in the order of their start."""
    entries = sorted(entries, key=lambda e: e["startedDateTime"])
    return {"log": {"version": "1.2", "creator": dict(CREATOR), "pages": [], "entries": entries}}
