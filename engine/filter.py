"""The display filter: which connections and HTTP exchanges to show (`/` in the inspector,
`--where` with --json).

An expression is parsed once (`parse`) into a tree that is evaluated on each exchange with its
connection, or on a connection alone. Errors say what is wrong and where (`FilterError.column`,
counted from 1). `FIELDS` documents every field, and the help screen and `--help` are made from
it and from `SYNTAX` (`help_text`), so the two cannot drift apart.

Grammar (words are case-insensitive, as are field names):

    expr       := term ("or" term)*
    term       := factor (["and"] factor)*        adjacent factors are and-ed
    factor     := "not" factor | "(" expr ")" | comparison | word
    comparison := FIELD OP value                  OP: = != < <= > >= ~ contains
    value      := "quoted string" | bare token    numbers take units: 200ms 1.5s 10KB 2MiB
    word       := "quoted string" | bare token    text search, as before the language

A bare word keeps the meaning it always had: the exchange (method, target, status, headers,
error, decoded bodies) or its connection (addresses, ports, state, protocol, TLS names) contains
it, case ignored. Evaluated on a connection alone, exchange fields have no value and their
comparisons are false (`not` makes them true), and words are looked for in the connection only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from engine.communityid import tcp_community_id
from engine.content import decode_message_body
from engine.dns import DnsFlow
from engine.events import ConnectionInfo, HttpRequest, HttpResponse, HttpTransaction, Transaction
from engine.records import Flow

BODY_SEARCHED: Final = 64 * 1024  # decoded body bytes looked at per message (`body`, words)

SYNTAX: Final = """\
Words are looked for in the exchange (method, target, status, headers, error, decoded bodies)
and its connection (addresses, ports, state, protocol, TLS names), case ignored: every word
must be there. Comparisons name a field: FIELD OP VALUE, OP one of = != < <= > >= ~ (a regular
expression, case ignored) and contains; combine with and, or, not and parentheses. Numbers take
units: 200ms 1.5s 2m for times, 10KB 2MiB for sizes; status = 5xx matches a class. Quote values
with spaces: header.user-agent ~ "curl/8". Examples:
  status >= 500                  method = POST and dur > 1s       not proto = tls
  path ~ "^/api/users/[0-9]+"    header.x-request-id = abc123     resp.size > 1MB
  host = api.example.com         body contains "out of stock"     500 checkout"""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "text", "number", "duration", "size", "status"
    help: str


FIELDS: Final = {f.name: f for f in (
    Field("host", "text", "the request's Host (or :authority), else the TLS server name, else "
                          "the server's address; or the host it was captured on (--ssh)"),
    Field("ip", "text", "the client's or the server's address (either)"),
    Field("port", "number", "the client's or the server's port (either)"),
    Field("client", "text", "the client, address:port (or the address alone)"),
    Field("server", "text", "the server, address:port (or the address alone)"),
    Field("state", "text", "the connection's state (ESTABLISHED, CLOSED, RESET...) or Zeek "
                           "conn_state (SF, REJ...)"),
    Field("proto", "text", "http, http2, tls, redis, postgresql, mysql or dns"),
    Field("sni", "text", "the TLS server name"),
    Field("method", "text", "the request's method; a transaction's command (its first word)"),
    Field("path", "text", "the request's target (also: target); a transaction's request"),
    Field("status", "status", "the response's status: a number, or a class such as 5xx; "
                              "a transaction's: ok or error"),
    Field("dur", "duration", "from the request's first byte to the response's last"),
    Field("ttfb", "duration", "from the request's last byte to the response's first"),
    Field("req.size", "size", "the request body's size, as sent (a transaction's request)"),
    Field("resp.size", "size", "the response body's size, as sent (a transaction's response)"),
    Field("header.NAME", "text", "the value of header NAME in the request or the response"),
    Field("body", "text", "the request's or the response's body, decoded (its first 64 KiB)"),
    Field("missing", "size", "bytes never captured: of the exchange's bodies, or of the "
                             "connection"),
    Field("error", "text", "why the exchange could not be parsed, and its notes"),
    Field("stream", "number", "the HTTP/2 stream id"),
    Field("grpc.status", "number", "the gRPC status of the call"),
)}  # fmt: skip
ALIASES: Final = {"target": "path", "protocol": "proto"}
OPERATORS: Final = ("<=", ">=", "!=", "=", "<", ">", "~")
UNITS_DURATION: Final = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
UNITS_SIZE: Final = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3,
}  # fmt: skip


def help_text() -> str:
    """The fields and the syntax, for the help screen and --help."""
    lines = [SYNTAX, "Fields:"]
    width = max(len(name) for name in FIELDS)
    for field in FIELDS.values():
        lines.append(f"  {field.name:<{width}}  {field.help}")
    return "\n".join(lines)


class FilterError(ValueError):
    """A filter that cannot be read: what is wrong, and the column (from 1) where it is."""

    def __init__(self, message: str, column: int, text: str) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.text = text

    def __str__(self) -> str:
        return f"{self.message} (column {self.column})"

    def pointer(self) -> str:
        """The expression and a caret under the bad column."""
        return f"{self.text}\n{' ' * (self.column - 1)}^"


# ---------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<unclosed>["'])
      | (?P<op><=|>=|!=|=|<|>|~)
      | (?P<paren>[()])
      | (?P<bare>(?:[^\s()<>=!~"']|!(?!=))+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "quoted", "op", "paren", "bare", "end"
    text: str  # the value (a quoted string without its quotes, unescaped)
    column: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            start = len(text[pos:]) - len(text[pos:].lstrip()) + pos
            raise FilterError(f"unexpected {text[start]!r}", start + 1, text)
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        column = m.start(kind) + 1
        if kind == "unclosed":
            raise FilterError("a quoted value without its closing quote", column, text)
        if kind == "quoted":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append(_Token(kind, value, column))
        pos = m.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


# ---------------------------------------------------------------------------- the tree


class _Facts:
    """What one evaluation looks at, computed once when first asked for."""

    __slots__ = ("_bodies", "_conn_text", "_heads", "info", "other", "tx")

    def __init__(
        self, info: ConnectionInfo | None, tx: HttpTransaction | Transaction | None
    ) -> None:
        self.info = info
        # An HTTP exchange (tx), or a transaction of another protocol (other): one is None.
        self.tx = tx if isinstance(tx, HttpTransaction) else None
        self.other = tx if isinstance(tx, Transaction) else None
        self._conn_text: str | None = None
        self._heads: str | None = None
        self._bodies: list[str] | None = None

    def conn_text(self) -> str:
        if self._conn_text is None:
            info = self.info
            last = _last_connection
            if info is None:
                self._conn_text = ""
            elif last is not None and last[0] is info:
                self._conn_text = last[1]  # (a connection's exchanges are looked at in a row)
            else:
                hello, cert = info.server_hello, info.certificate
                tls = " ".join(filter(None, (
                    hello.version if hello else None, hello.cipher if hello else None,
                    hello.alpn if hello else None, info.sni, *info.alpn, info.tls_decryption,
                    cert.subject if cert else None)))  # fmt: skip
                self._conn_text = " ".join((info.client, info.server, info.state,
                                            info.conn_state, info.protocol or "", tls)).lower()  # fmt: skip
                _remember(info, self._conn_text)
        return self._conn_text

    def heads(self) -> str:
        if self._heads is None:
            tx = self.tx
            parts = []
            if tx is not None:
                for m in (tx.request, tx.response):
                    if m is not None:
                        parts.append(_head_text(m))
                if tx.error:
                    parts.append(tx.error.lower())
                parts.extend(note.lower() for note in tx.notes)
            other = self.other
            if other is not None:
                parts += [other.protocol, other.request_summary or "", other.response_summary or "",
                          other.error or "", *other.notes]  # fmt: skip
            self._heads = "\n".join(parts).lower() if other is not None else "\n".join(parts)
        return self._heads

    def bodies(self) -> list[str]:
        if self._bodies is None:
            tx = self.tx
            out = []
            if tx is not None:
                for m in (tx.request, tx.response):
                    if m is not None and m.body:
                        out.append(decode_message_body(m, BODY_SEARCHED).data.decode("latin-1"))
            self._bodies = out
        return self._bodies


_last_connection: tuple[ConnectionInfo, str] | None = None


def _remember(info: ConnectionInfo, text: str) -> None:
    global _last_connection
    _last_connection = (info, text)


def _head_text(message: HttpRequest | HttpResponse) -> str:
    if isinstance(message, HttpRequest):
        start = f"{message.method} {message.target} http/{message.version}"
    else:
        start = f"{message.status} {message.reason} http/{message.version}"
    return (start + "\n" + "\n".join(f"{name}: {value}" for name, value in message.headers)).lower()


class Node:
    def matches(self, facts: _Facts) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class _And(Node):
    parts: tuple[Node, ...]

    def matches(self, facts: _Facts) -> bool:
        return all(p.matches(facts) for p in self.parts)


@dataclass(frozen=True)
class _Or(Node):
    parts: tuple[Node, ...]

    def matches(self, facts: _Facts) -> bool:
        return any(p.matches(facts) for p in self.parts)


@dataclass(frozen=True)
class _Not(Node):
    part: Node

    def matches(self, facts: _Facts) -> bool:
        return not self.part.matches(facts)


@dataclass(frozen=True)
class _Word(Node):
    word: str  # lower case

    def matches(self, facts: _Facts) -> bool:
        word = self.word
        if word in facts.conn_text() or word in facts.heads():
            return True
        return any(word in body.lower() for body in facts.bodies())


@dataclass(frozen=True)
class _Compare(Node):
    field: str
    op: str
    value: Any  # str (lower case for case-free fields), float, or a status class (100..500)
    pattern: re.Pattern[str] | None
    getter: Callable[[_Facts], list[Any]]
    kind: str

    def matches(self, facts: _Facts) -> bool:
        values = self.getter(facts)
        if not values:
            return False
        op = self.op
        if op == "!=":  # none of the values is it (ip != x: neither end is x)
            return not any(self._equal(v) for v in values)
        return any(self._one(v) for v in values)

    def _equal(self, v: Any) -> bool:
        if self.kind == "status" and isinstance(self.value, str):
            if self.value in ("ok", "error"):  # a transaction's status
                return v == self.value
            return isinstance(v, int) and v // 100 == int(self.value[0])
        if isinstance(v, str) and isinstance(self.value, str):
            return v.lower() == self.value if self.field in _CASE_FREE else v == self.value
        return bool(v == self.value)

    def _one(self, v: Any) -> bool:
        op = self.op
        if op == "=":
            return self._equal(v)
        if op == "~":
            assert self.pattern is not None
            return self.pattern.search(str(v)) is not None
        if op == "contains":
            return str(self.value).lower() in str(v).lower()
        if not isinstance(v, (int, float)):
            return False
        value = self.value
        return bool(v < value if op == "<" else v <= value if op == "<=" else
                    v > value if op == ">" else v >= value)  # fmt: skip


_CASE_FREE: Final = frozenset({"host", "state", "proto", "sni", "method"})


def _endpoint(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    return address.strip("[]"), int(port) if port.isdigit() else -1


def _getter(name: str) -> Callable[[_Facts], list[Any]]:
    """The values a field has for an exchange with its connection (several: either end, either
    message); an empty list when it has none."""

    def req(f: _Facts) -> HttpRequest | None:
        return f.tx.request if f.tx is not None else None

    def resp(f: _Facts) -> HttpResponse | None:
        return f.tx.response if f.tx is not None else None

    if name.startswith("header."):
        header = name[7:]

        def headers(f: _Facts) -> list[Any]:
            out = []
            for m in (req(f), resp(f)):
                if m is not None:
                    out += [v for n, v in m.headers if n.lower() == header]
                    out += [v for n, v in m.trailers if n.lower() == header]
            return out

        return headers
    table: dict[str, Callable[[_Facts], list[Any]]] = {
        "host": _host,
        "ip": lambda f: [] if f.info is None else [_endpoint(f.info.client)[0], _endpoint(f.info.server)[0]],
        "port": lambda f: [] if f.info is None else [_endpoint(f.info.client)[1], _endpoint(f.info.server)[1]],
        "client": lambda f: [] if f.info is None else [f.info.client, _endpoint(f.info.client)[0]],
        "server": lambda f: [] if f.info is None else [f.info.server, _endpoint(f.info.server)[0]],
        "state": lambda f: [] if f.info is None else [f.info.state, f.info.conn_state],
        "sni": lambda f: [] if f.info is None or f.info.sni is None else [f.info.sni],
        "proto": _proto,
        "method": lambda f: [m.method] if (m := req(f)) is not None else _command(f),
        "path": lambda f: [m.target] if (m := req(f)) is not None else
                          [o.request_summary] if (o := f.other) and o.request_summary else [],
        "status": lambda f: [m.status] if (m := resp(f)) is not None else
                            [o.status] if (o := f.other) and o.status else [],
        "dur": _duration,
        "ttfb": _wait,
        "req.size": lambda f: [m.body_bytes] if (m := req(f)) is not None else
                              [o.request.size] if (o := f.other) and o.request else [],
        "resp.size": lambda f: [m.body_bytes] if (m := resp(f)) is not None else
                               [o.response.size] if (o := f.other) and o.response else [],
        "body": lambda f: f.bodies(),
        "missing": _missing,
        "error": lambda f: [" ".join(filter(None, (t.error, *t.notes)))]
                           if (t := f.tx or f.other) is not None else [],
        "stream": lambda f: [] if f.tx is None or f.tx.stream is None else [f.tx.stream],
        "grpc.status": lambda f: [] if f.tx is None or f.tx.grpc is None or f.tx.grpc.status is None
                                 else [f.tx.grpc.status],
    }  # fmt: skip
    return table[name]


def _proto(f: _Facts) -> list[Any]:
    names = [] if f.info is None or f.info.protocol is None else [f.info.protocol]
    if f.other is not None and f.other.protocol not in names:
        names.append(f.other.protocol)
    return names


def _command(f: _Facts) -> list[Any]:
    """A transaction's command: its request summary's first word (GET, SELECT, A...)."""
    other = f.other
    if other is None or not other.request_summary:
        return []
    return [other.request_summary.split(None, 1)[0]]


def _duration(f: _Facts) -> list[Any]:
    tx = f.tx if f.tx is not None else f.other
    d = tx.duration if tx is not None else None
    return [] if d is None else [d]


def _wait(f: _Facts) -> list[Any]:
    if f.tx is not None:
        w = f.tx.wait
    elif f.other is not None:
        w = f.other.wait
    else:
        return []
    return [] if w is None else [w]


def host_name(tx: HttpTransaction | None, info: ConnectionInfo | None) -> str | None:
    """The host an exchange went to: its Host (or :authority) without the port, else the TLS
    server name, else the server's address (the `host` field, and the Stats tab's groups)."""
    if tx is not None and tx.request is not None:
        for n, v in tx.request.headers:
            if n.lower() in ("host", ":authority"):
                return v.rsplit(":", 1)[0] if v.count(":") == 1 else v
    if info is None:
        return None
    return info.sni or _endpoint(info.server)[0]


def _host(f: _Facts) -> list[Any]:
    host = host_name(f.tx, f.info)  # (a transaction's: its connection's)
    names = [] if host is None else [host]
    if f.info is not None and f.info.host is not None:
        names.append(f.info.host)  # the capture host (engine.remote)
    return names


def _missing(f: _Facts) -> list[Any]:
    tx = f.tx
    if tx is not None:
        return [sum(m.body_missing for m in (tx.request, tx.response) if m is not None)]
    return [] if f.info is None else [sum(f.info.missing_bytes)]


# ---------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, message: str, token: _Token) -> FilterError:
        return FilterError(message, token.column, self.text)

    def keyword(self, token: _Token, word: str) -> bool:
        return token.kind == "bare" and token.text.lower() == word

    def parse(self) -> Node | None:
        if self.peek().kind == "end":
            return None
        node = self.expr()
        token = self.peek()
        if token.kind != "end":
            raise self.error(f"unexpected {token.text!r}", token)
        return node

    def expr(self) -> Node:
        parts = [self.term()]
        while self.keyword(self.peek(), "or"):
            token = self.take()
            if self.peek().kind == "end" or self.peek().text == ")":
                raise self.error("'or' needs something after it", token)
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else _Or(tuple(parts))

    def term(self) -> Node:
        parts = [self.factor()]
        while True:
            token = self.peek()
            if token.kind == "end" or (token.kind == "paren" and token.text == ")"):
                break
            if self.keyword(token, "or"):
                break
            if self.keyword(token, "and"):
                self.take()
                if self.peek().kind == "end" or self.keyword(self.peek(), "or"):
                    raise self.error("'and' needs something after it", token)
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else _And(tuple(parts))

    def factor(self) -> Node:
        token = self.peek()
        if self.keyword(token, "not"):
            self.take()
            if self.peek().kind == "end":
                raise self.error("'not' needs something after it", token)
            return _Not(self.factor())
        if token.kind == "paren":
            if token.text == ")":
                raise self.error("a ')' without its '('", token)
            self.take()
            if self.peek().kind == "paren" and self.peek().text == ")":
                raise self.error("empty parentheses", self.peek())
            node = self.expr()
            close = self.peek()
            if not (close.kind == "paren" and close.text == ")"):
                raise self.error("a '(' without its ')'", token)
            self.take()
            return node
        if token.kind == "op":
            raise self.error(f"'{token.text}' needs a field before it", token)
        self.take()
        following = self.peek()
        is_op = following.kind == "op" or self.keyword(following, "contains")
        if token.kind == "bare" and is_op:
            word = self.glued_word(token)
            if word is not None:
                return _Word(word.lower())
            return self.comparison(token)
        if token.kind == "bare" and token.text.lower() in ("and", "or"):
            raise self.error(f"'{token.text}' needs something before it", token)
        return _Word(token.text.lower())

    def glued_word(self, token: _Token) -> str | None:
        """`limit=3`: a word as before the language, when what stands before the operator is no
        field and nothing separates the three (else a misspelt field is an error)."""
        name = token.text.lower()
        if ALIASES.get(name, name) in FIELDS or name.startswith("header."):
            return None
        op, value = self.peek(), self.tokens[self.i + 1]
        end = token.column + len(token.text)
        if op.kind != "op" or op.column != end or value.kind != "bare":
            return None
        if value.column != op.column + len(op.text):
            return None
        self.i += 2
        return token.text + op.text + value.text

    def comparison(self, field_token: _Token) -> Node:
        name = field_token.text.lower()
        name = ALIASES.get(name, name)
        if name.startswith("header."):
            if len(name) == 7:
                raise self.error("header. needs a header name: header.content-type", field_token)
            kind = "text"
        elif name in FIELDS:
            kind = FIELDS[name].kind
        else:
            close = difflib.get_close_matches(name, [*FIELDS, *ALIASES], n=1, cutoff=0.6)
            hint = f" (did you mean {ALIASES.get(close[0], close[0])}?)" if close else ""
            raise self.error(f"no field named {field_token.text!r}{hint}; "
                             f"fields: {', '.join(FIELDS)}", field_token)  # fmt: skip
        op_token = self.take()
        op = "contains" if op_token.kind == "bare" else op_token.text
        value_token = self.take()
        if value_token.kind in ("end", "op") or value_token.kind == "paren":
            raise self.error(f"'{op}' needs a value after it", op_token)
        raw = value_token.text
        pattern = None
        value: Any = raw
        if op == "~":
            try:
                pattern = re.compile(raw, re.IGNORECASE)
            except re.error as e:
                raise self.error(f"not a regular expression: {e}", value_token) from None
        elif op == "contains":
            pass
        elif kind == "text":
            if op in ("<", "<=", ">", ">="):
                raise self.error(f"{name} is text: use =, !=, ~ or contains", op_token)
            value = raw.lower() if name in _CASE_FREE else raw
        else:
            value = self.number(kind, name, op, value_token)
        return _Compare(name, op, value, pattern, _getter(name), kind)

    def number(self, kind: str, name: str, op: str, token: _Token) -> Any:
        raw = token.text.lower()
        if kind == "status":
            if re.fullmatch(r"[1-5]xx", raw):
                if op not in ("=", "!="):
                    raise self.error("a status class goes with = or !=", token)
                return raw
            if raw.isdigit():
                return int(raw)
            if raw in ("ok", "error"):  # a transaction's (engine.protocols)
                if op not in ("=", "!="):
                    raise self.error(f"status {raw} goes with = or !=", token)
                return raw
            raise self.error(
                "status is a number such as 404, a class such as 5xx, or ok or error "
                f"(not {token.text!r})",
                token,
            )
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-zµ]*)", raw)
        if m is None:
            raise self.error(f"{name} needs a number (not {token.text!r})", token)
        number, unit = float(m.group(1)), m.group(2)
        if kind == "duration":
            if unit and unit not in UNITS_DURATION:
                raise self.error(f"{unit!r} is not a unit of time: us, ms, s, m, h", token)
            return number * UNITS_DURATION.get(unit, 1.0)
        if kind == "size":
            if unit and unit not in UNITS_SIZE:
                raise self.error(
                    f"{unit!r} is not a unit of size: B, KB, MB, GB, KiB, MiB, GiB", token
                )
            return number * UNITS_SIZE.get(unit, 1)
        if unit:
            raise self.error(f"{name} takes no unit", token)
        return int(number) if number.is_integer() else number


@dataclass(frozen=True)
class Filter:
    """A parsed expression. An empty one matches everything."""

    text: str
    tree: Node | None

    def __bool__(self) -> bool:
        return self.tree is not None

    def exchange(self, info: ConnectionInfo | None, tx: HttpTransaction | Transaction) -> bool:
        """Whether an exchange (or a transaction of another protocol), with its connection,
        matches."""
        return self.tree is None or self.tree.matches(_Facts(info, tx))

    def connection(self, info: ConnectionInfo) -> bool:
        """Whether a connection matches by its own fields (exchange fields have no value)."""
        return self.tree is None or self.tree.matches(_Facts(info, None))


def parse(text: str) -> Filter:
    """The filter an expression says. Raises FilterError."""
    return Filter(text.strip(), _Parser(text).parse())


class OpenConnections:
    """What an exchange's record and its --where need of its connection: `note` is a consumer
    factory that keeps each connection as it opens. A batch's exchanges may come after their
    connection left the engine (its last exchanges come as it closes, before its
    ConnectionClosed in the same batch): `batch` is given each batch's events first, and such a
    connection is then described by its final info."""

    def __init__(self) -> None:
        self.open: dict[int, Any] = {}  # id -> engine.tcp.Connection
        self.closing: dict[int, ConnectionInfo] = {}
        self.flows: dict[int, Flow] = {}  # made once a connection (a hash each)

    def note(self, conn: Any, emit: Any) -> None:
        self.open[conn.id] = conn

    def batch(self, events: list[Any]) -> None:
        from engine.events import ConnectionClosed

        for conn_id in self.closing:  # the last batch's: their last exchanges were in it
            self.flows.pop(conn_id, None)
        self.closing = {e.info.id: e.info for e in events if isinstance(e, ConnectionClosed)}
        for conn_id in self.closing:
            self.open.pop(conn_id, None)

    def info(self, conn_id: int) -> ConnectionInfo | None:
        from engine.connections import snapshot

        closing = self.closing.get(conn_id)
        if closing is not None:
            return closing
        conn = self.open.get(conn_id)
        if isinstance(conn, DnsFlow):
            return conn.snapshot()
        return snapshot(conn) if conn is not None else None

    def flow(self, conn_id: int) -> Flow | None:
        """The connection as an exchange's record names it (see engine.records.Flow)."""
        flow = self.flows.get(conn_id)
        if flow is None:
            closing = self.closing.get(conn_id)
            conn = self.open.get(conn_id)
            if closing is not None:
                client, server, host = closing.client, closing.server, closing.host
                udp = closing.transport == "udp"
            elif conn is not None:
                client, server, host = conn.client_addr, conn.server_addr, conn.host
                udp = isinstance(conn, DnsFlow)
            else:
                return None
            flow = self.flows[conn_id] = Flow(
                client,
                server,
                tcp_community_id(client, server, proto=17 if udp else 6),
                host,
                "udp" if udp else "tcp",
            )
        return flow


class RecordFilter:
    """`--where` over a pipeline's events: an exchange is kept when it matches (with its
    connection as it is then); a connection when it matches on its own fields or one of its
    exchanges was kept. `lookup` gives a connection's info by id (None once it is gone)."""

    def __init__(self, where: Filter, lookup: Callable[[int], ConnectionInfo | None]) -> None:
        self.where = where
        self.lookup = lookup
        self.kept: set[int] = set()  # connections with an exchange kept

    def exchange(self, tx: HttpTransaction | Transaction) -> bool:
        if self.where.exchange(self.lookup(tx.connection), tx):
            self.kept.add(tx.connection)
            return True
        return False

    def connection(self, info: ConnectionInfo) -> bool:
        if info.id in self.kept:
            self.kept.discard(info.id)
            return True
        return self.where.connection(info)


def uses_bodies(where: Filter) -> bool:
    """Whether evaluating it looks at bodies (`body`, or words): they must then be kept."""

    def walk(node: Node | None) -> bool:
        if node is None:
            return False
        if isinstance(node, _Word):
            return True
        if isinstance(node, _Compare):
            return node.field == "body"
        if isinstance(node, _Not):
            return walk(node.part)
        if isinstance(node, (_And, _Or)):
            return any(walk(p) for p in node.parts)
        return False

    return walk(where.tree)
