"""An exchange as something to paste: a curl command that sends its request again, or its
request and response as raw HTTP/1.1 text.

The curl command carries the method, the URL (engine.har's), the headers as sent except those
curl makes itself (Host is kept only when it differs from the URL's; Content-Length,
Transfer-Encoding, Connection and HTTP/2's pseudo-headers are left to curl), and the body as
sent (decoded from chunked framing, not from its content coding); a body that is not UTF-8
text goes through `printf` escapes. Every value is shell-quoted: text from the wire is never
run by the shell that the command is pasted into.
"""

from __future__ import annotations

import shlex
from typing import Final

from engine.events import ConnectionInfo, HttpRequest, HttpResponse, HttpTransaction
from engine.har import _url

LEFT_TO_CURL: Final = frozenset({"content-length", "transfer-encoding", "connection", "host"})


def curl_command(tx: HttpTransaction, info: ConnectionInfo | None = None) -> str | None:
    """The curl command of the exchange's request (None without a request)."""
    request = tx.request
    if request is None:
        return None
    url = _url(request, info)
    words = ["curl"]
    if request.version == "2":
        words.append("--http2-prior-knowledge" if url.startswith("http:") else "--http2")
    if request.method == "HEAD":
        words.append("--head")
    elif request.method != "GET" or request.body:
        words += ["-X", request.method]
    words.append(url)
    authority = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
    for name, value in request.headers:
        low = name.lower()
        if low.startswith(":"):
            continue
        if low == "host" and value == authority:
            continue
        if low in LEFT_TO_CURL and low != "host":
            continue
        words += ["-H", f"{name}: {value}"]
    command = " ".join(shlex.quote(w) for w in words)
    if request.body:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            escaped = "".join(f"\\x{b:02x}" for b in request.body)
            return f"printf '%b' {shlex.quote(escaped)} | {command} --data-binary @-"
        command += f" --data-binary {shlex.quote(text)}"
    if request.body_missing or len(request.body) < request.body_bytes:
        command += "  # the body was not all captured or kept"
    return command


def body_message(tx: HttpTransaction) -> HttpRequest | HttpResponse | None:
    """The message whose body a "save the body" means: the response's, else the request's."""
    for message in (tx.response, tx.request):
        if message is not None and message.body:
            return message
    return None


def _message(start: str, message: HttpRequest | HttpResponse) -> bytes:
    head = start + "".join(f"{n}: {v}\r\n" for n, v in message.headers if not n.startswith(":"))
    return head.encode("latin-1", "replace") + b"\r\n" + message.body


def raw_http(tx: HttpTransaction) -> bytes:
    """The request and the response as HTTP/1.1 text, heads as sent, bodies as kept (decoded
    from chunked framing; an HTTP/2 exchange is written in HTTP/1.1's form)."""
    out = b""
    request, response = tx.request, tx.response
    if request is not None:
        out += _message(f"{request.method} {request.target} HTTP/{request.version}\r\n", request)
    if response is not None:
        if out:
            out += b"\r\n\r\n"
        reason = f" {response.reason}" if response.reason else ""
        out += _message(f"HTTP/{response.version} {response.status}{reason}\r\n", response)
    return out
