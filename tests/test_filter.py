"""The display filter (engine.filter): table-driven, valid expressions against exchanges whose
answer is known, invalid ones against the message and the column they must give."""

from __future__ import annotations

import gzip

import pytest

from engine.events import ConnectionInfo, GrpcCall, HttpRequest, HttpResponse, HttpTransaction
from engine.filter import FIELDS, FilterError, help_text, parse


def conn(client: str = "10.0.0.5:40000", server: str = "10.9.9.9:443", **more: object) -> ConnectionInfo:
    defaults = {f: ConnectionInfo._field_defaults.get(f) for f in ConnectionInfo._fields}
    fields = dict(id=1, client=client, server=server, state="CLOSED", conn_state="SF",
                  direction_guessed=False, first_ts=0.0, last_ts=1.0, packets=(3, 3),
                  bytes=(100, 200), missing_bytes=(0, 0), retransmitted_bytes=(0, 0),
                  inconsistent_retransmissions=0, history="ShADadFf", protocol="http")  # fmt: skip
    fields.update(more)
    return ConnectionInfo(**{**defaults, **fields})  # type: ignore[arg-type]


def exchange(method: str = "GET", target: str = "/api/users/42?limit=3", status: int = 200,
             dur: float = 0.25, ttfb: float = 0.05, req_body: bytes = b"", resp_body: bytes = b"",
             req_headers: tuple = (("Host", "api.example.com:8443"), ("User-Agent", "curl/8.5.0")),
             resp_headers: tuple = (("Content-Type", "application/json"),),
             missing: int = 0, error: str | None = None, notes: tuple = (), stream: int | None = None,
             grpc: GrpcCall | None = None, trailers: tuple = ()) -> HttpTransaction:  # fmt: skip
    start = 100.0
    request = HttpRequest(start, start + 0.01, method, target, "1.1", req_headers, len(req_body),
                          0, req_body, True, 0)  # fmt: skip
    response = HttpResponse(start + 0.01 + ttfb, start + dur, status, "OK", "1.1", resp_headers,
                            len(resp_body) + missing, missing, resp_body, True, trailers=trailers)  # fmt: skip
    return HttpTransaction(1, 0, request, response, error, False, notes, stream, grpc)


SLOW_500 = exchange("POST", "/checkout", 503, dur=2.5, ttfb=2.4, req_body=b'{"cart": 7}',
                    resp_body=gzip.compress(b'{"error": "Out of stock"}'),
                    resp_headers=(("Content-Encoding", "gzip"), ("X-Request-Id", "abc123")))
FAST_200 = exchange(resp_body=b"x" * 2048)
MISSING = exchange(target="/big", missing=1500, resp_body=b"y" * 10, error="the stream ended inside the message")
GRPC = exchange("POST", "/shop.Cart/Add", 200, stream=3, trailers=(("grpc-status", "9"),),
                grpc=GrpcCall("shop.Cart", "Add", 9, "out of stock", 1, 0, 7, 0, (0, 0)))
ALL = {"slow500": SLOW_500, "fast200": FAST_200, "missing": MISSING, "grpc": GRPC}

# expression -> the exchanges it matches (of ALL, on the connection `conn()`).
VALID = [
    ("", {"slow500", "fast200", "missing", "grpc"}),
    ("status >= 500", {"slow500"}),
    ("status = 5xx", {"slow500"}),
    ("status != 2xx", {"slow500"}),
    ("status = 200", {"fast200", "missing", "grpc"}),
    ("method = post", {"slow500", "grpc"}),
    ("method = POST and dur > 1s", {"slow500"}),
    ("dur > 1s or resp.size >= 2KiB", {"slow500", "fast200"}),
    ("dur <= 250ms", {"fast200", "missing", "grpc"}),
    ("ttfb > 2400ms", {"slow500"}),
    ("ttfb < 0.1", {"fast200", "missing", "grpc"}),
    ("resp.size > 2KB", {"fast200"}),  # 2,048 > 2,000; 1,510 (10 + 1,500 missing) is not
    ("resp.size > 1KB and resp.size < 2KB", {"missing"}),
    ("req.size > 0", {"slow500"}),
    ("path ~ ^/api/users/[0-9]+", {"fast200"}),
    ("target ~ \"^/(checkout|big)$\"", {"slow500", "missing"}),
    ("path contains CART", {"grpc"}),
    ("path = /checkout", {"slow500"}),
    ("path = /CHECKOUT", set()),  # paths are compared as sent
    ("header.x-request-id = abc123", {"slow500"}),
    ("header.content-type ~ json", {"fast200", "missing", "grpc"}),
    ("header.user-agent contains \"curl/8\"", {"slow500", "fast200", "missing", "grpc"}),
    ("header.grpc-status = 9", {"grpc"}),  # trailers count as headers
    ("body contains \"out of stock\"", {"slow500"}),  # decoded from gzip
    ("body ~ cart", {"slow500"}),
    ("missing > 0", {"missing"}),
    ("error contains ended", {"missing"}),
    ("host = api.example.com", {"slow500", "fast200", "missing", "grpc"}),
    ("ip = 10.0.0.5", {"slow500", "fast200", "missing", "grpc"}),
    ("ip != 10.0.0.5", set()),
    ("port = 443 and client = 10.0.0.5", {"slow500", "fast200", "missing", "grpc"}),
    ("server = 10.9.9.9:443", {"slow500", "fast200", "missing", "grpc"}),
    ("state = sf and proto = http", {"slow500", "fast200", "missing", "grpc"}),
    ("stream = 3", {"grpc"}),
    ("grpc.status != 0", {"grpc"}),
    ("not status = 200", {"slow500"}),
    ("not (status = 200 or status = 503)", set()),
    ("status = 200 and not path contains big or method = POST and dur > 2s",
     {"fast200", "grpc", "slow500"}),  # and binds tighter than or
    ("(status = 200 or dur > 2s) and req.size > 0", {"slow500"}),
    # Bare words: the meaning they had before the language.
    ("checkout", {"slow500"}),
    ("limit=3", {"fast200"}),  # no field named limit, nothing between: a word
    ("10.0.0.5 503", {"slow500"}),
    ("\"out of stock\"", {"slow500"}),  # in a decoded body
    ("abc123 or big", {"slow500", "missing"}),
    ("application/json status = 200", {"fast200", "missing", "grpc"}),
]


@pytest.mark.parametrize("text,expected", VALID, ids=[t or "empty" for t, _ in VALID])
def test_valid_expressions_match_what_they_say(text, expected):
    f = parse(text)
    assert {name for name, tx in ALL.items() if f.exchange(conn(), tx)} == expected


# expression -> (the message's start, the column it points at)
INVALID = [
    ("status >", ("'>' needs a value after it", 8)),
    ("stauts = 500", ("no field named 'stauts'", 1)),
    ("resp.sise > 1KB", ("no field named 'resp.sise' (did you mean resp.size?)", 1)),
    ("status > ok", ("status ok goes with = or !=", 10)),
    ("status = 5yy", ("status is a number such as 404, a class such as 5xx, or ok or error", 10)),
    ("status > 5xx", ("a status class goes with = or !=", 10)),
    ("dur > fast", ("dur needs a number (not 'fast')", 7)),
    ("dur > 2ps", ("'ps' is not a unit of time", 7)),
    ("resp.size > 10XB", ("'xb' is not a unit of size", 13)),
    ("path < 3", ("path is text: use =, !=, ~ or contains", 6)),
    ("path ~ \"([\"", ("not a regular expression", 8)),
    ("(status = 200", ("a '(' without its ')'", 1)),
    ("status = 200)", ("unexpected ')'", 13)),
    ("()", ("empty parentheses", 2)),
    ("status = 200 and", ("'and' needs something after it", 14)),
    ("or status = 200", ("'or' needs something before it", 1)),
    ("not", ("'not' needs something after it", 1)),
    ("= 200", ("'=' needs a field before it", 1)),
    ("path = \"/a", ("a quoted value without its closing quote", 8)),
    ("header. = x", ("header. needs a header name", 1)),
    ("port = eighty", ("port needs a number (not 'eighty')", 8)),
]


@pytest.mark.parametrize("text,expected", INVALID, ids=[t for t, _ in INVALID])
def test_invalid_expressions_say_what_and_where(text, expected):
    message, column = expected
    with pytest.raises(FilterError) as raised:
        parse(text)
    assert raised.value.message.startswith(message), raised.value.message
    assert raised.value.column == column
    assert raised.value.pointer() == f"{text}\n{' ' * (column - 1)}^"


def test_host_is_also_the_capture_host():
    """With --ssh, `host = web3` finds what was captured on web3, connections and exchanges."""
    c = conn(host="web3")
    assert parse("host = web3").connection(c) and parse("host = WEB3").connection(c)
    assert parse("host = web3").exchange(c, exchange())
    assert parse("host = api.example.com").exchange(c, exchange())  # the Host header still counts
    assert not parse("host = web3").connection(conn(host="web2"))
    assert not parse("host = web3").connection(conn())


def test_a_connection_alone_matches_on_its_own_fields():
    c = conn(sni="api.example.com", protocol="tls")
    assert parse("proto = tls").connection(c)
    assert parse("sni = API.example.com").connection(c)
    assert parse("host = api.example.com").connection(c)  # the SNI, without a request
    assert not parse("status >= 500").connection(c)  # no exchange: no status
    assert parse("not status >= 500").connection(c)
    assert parse("10.9.9.9").connection(c) and not parse("checkout").connection(c)
    assert parse("missing = 0").connection(c)
    assert parse("missing > 0").connection(conn(missing_bytes=(0, 1200)))


def test_the_help_is_made_from_the_fields():
    text = help_text()
    for name, field in FIELDS.items():
        assert f"  {name}" in text and field.help in text
    assert "status >= 500" in text


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_json_where_keeps_what_matches_and_its_connections(jobs):
    from tests.test_cli import capture, records, wirepeek

    path = capture("zeek/http__methods.pcap")
    http = records(wirepeek("-r", path, "--json", "--jobs", jobs).stdout, "http")
    expected = {(r["connection"], r["index"]) for r in http
                if r["response"] and r["response"]["status"] >= 400
                and not (r["request"] and r["request"]["method"] == "GET")}  # fmt: skip
    assert 0 < len(expected) < len(http)
    proc = wirepeek("-r", path, "--json", "--jobs", jobs, "--where",
                    "status >= 400 and not method = get")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kept = records(proc.stdout, "http")
    assert {(r["connection"], r["index"]) for r in kept} == expected
    # The connections of those exchanges (none matches on its own fields).
    assert {r["id"] for r in records(proc.stdout, "connection")} == {c for c, _ in expected}


def test_json_where_reads_bodies_when_it_looks_at_them(tmp_path):
    from tests.test_cli import capture, records, wirepeek

    path = capture("zeek/http__get.pcap")
    where = "body contains \"wrong control file\""
    assert len(records(wirepeek("-r", path, "--json", "--where", where).stdout, "http")) == 1
    assert records(wirepeek("-r", path, "--json", "--where", "body contains nowhere-to-be-found").stdout) == []
    assert len(records(wirepeek("-r", path, "--json", "--where", "Wget").stdout, "http")) == 1


def test_a_bad_where_is_a_clear_usage_error():
    from tests.test_cli import capture, wirepeek

    proc = wirepeek("-r", capture("zeek/http__get.pcap"), "--json", "--where", "status >")
    assert proc.returncode == 2
    assert b"--where: '>' needs a value after it, column 8:\nstatus >\n       ^" in proc.stderr
    assert b"Traceback" not in proc.stderr
    listed = wirepeek("--help-filter")
    assert listed.returncode == 0 and b"resp.size" in listed.stdout and b"status >= 500" in listed.stdout


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_http_records_carry_endpoints_and_times_for_jq(jobs):
    """No join with the connection record needed: client, server, duration and ttfb are in
    each http record; --where on connection fields works for exchanges emitted as their
    connection closes."""
    from tests.test_cli import capture, records, wirepeek

    path = capture("zeek/http__get.pcap")
    [r] = records(wirepeek("-r", path, "--json", "--jobs", jobs).stdout, "http")
    assert (r["client"], r["server"]) == ("141.142.228.5:59856", "192.150.187.43:80")
    assert r["duration"] == round(r["response"]["end_ts"] - r["request"]["ts"], 6)
    assert r["ttfb"] == round(r["response"]["ts"] - r["request"]["end_ts"], 6)
    where = "server = 192.150.187.43 and port = 80 and ttfb < 100ms"
    kept = wirepeek("-r", path, "--json", "--jobs", jobs, "--where", where).stdout
    assert len(records(kept, "http")) == 1 and len(records(kept, "connection")) == 1
    assert records(wirepeek("-r", path, "--json", "--jobs", jobs, "--where", "port = 81").stdout) == []
