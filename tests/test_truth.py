"""Each case of the engine's truth contract, end to end: a capture made here, read by
`wirepeek -r FILE --json`, and what its records must say. One row per case; the property tests
and the unit tests of each module go deeper (test_http_causality, test_reassembler,
test_tunnels, test_pcapfile, test_detect, test_escape)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conversations import build, causal
from tests.synth import (
    ETH_TEB,
    IPPROTO_GRE,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    ether,
    gre,
    ipv4,
    write_pcap,
)
from tests.test_tls import alpn, client_hello, sni
from tui.cli import main

HOST = b"Host: truth.example\r\n"
GET = b"GET /a HTTP/1.1\r\n" + HOST + b"\r\n"
HEAD = b"HEAD /b HTTP/1.1\r\n" + HOST + b"\r\n"
GET_C = b"GET /c HTTP/1.1\r\n" + HOST + b'If-None-Match: "1"\r\n\r\n'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"
NOT_MODIFIED = b'HTTP/1.1 304 Not Modified\r\nETag: "1"\r\nContent-Length: 50\r\n\r\n'
SCRIPT = [("c", GET), ("s", OK), ("c", HEAD), ("s", HEAD_OK), ("c", GET_C), ("s", NOT_MODIFIED)]
PAIRS = [("GET", "/a", 200, 5), ("HEAD", "/b", 200, 0), ("GET", "/c", 304, 0)]

Capture = tuple[list[tuple[float, bytes]], int]  # packets, snap length


def answers_first() -> Capture:
    client, server = build(SCRIPT)
    return server + client, 262144


def request_lost() -> Capture:
    """The second request was never captured. (Had it been a HEAD, its answer could not be
    framed: without the request, a Content-Length announces a body.)"""
    lost = b"GET /lost HTTP/1.1\r\n" + HOST + b"\r\n"
    client, server = build([("c", GET), ("s", OK), ("c", lost), ("s", OK)] + SCRIPT[2:])
    client = [p for p in client if b"GET /lost" not in p[1]]
    return causal(client, server), 262144


def snap_length() -> Capture:
    client, server = build(SCRIPT)
    return causal(client, server), 96


def bare_lf_chunked() -> Capture:
    chunked = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n"
    client, server = build([("c", GET), ("s", chunked)])
    return causal(client, server), 262144


def h2c() -> Capture:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    client, server = build([("c", preface), ("s", b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")])
    return causal(client, server), 262144


def _tunnel(wrap: Callable[[bytes], bytes], ipv6: bool = False) -> Capture:
    client, server = build(SCRIPT, ipv6=ipv6)
    return [(ts, wrap(frame)) for ts, frame in causal(client, server)], 262144


def ip_in_ip() -> Capture:
    return _tunnel(lambda f: ether(ipv4("192.0.2.1", "192.0.2.2", IPPROTO_IPIP, f[14:])))


def six_in_four() -> Capture:
    return _tunnel(lambda f: ether(ipv4("192.0.2.1", "192.0.2.2", IPPROTO_IPV6, f[14:])), True)


def gre_ethernet() -> Capture:
    return _tunnel(lambda f: ether(ipv4("192.0.2.1", "192.0.2.2", IPPROTO_GRE, gre(f, ETH_TEB, key=7))))


def fin_lost() -> Capture:
    client, server = build(SCRIPT + [("c-fin",)])
    client = [p for p in client if not (p[1][47] & 0x01)]  # the client's FIN never captured
    return causal(client, server), 262144


def sni_with_control_bytes() -> Capture:
    hello = client_hello([sni(b"ev\x1bil\\.example"), alpn(b"h2\r", b"http/1.1")])
    client, server = build([("c", hello), ("s", b"\x15\x03\x03\x00\x02\x02\x28")])
    return causal(client, server), 262144


def _http(records: list[dict]) -> list[tuple]:
    http = sorted((r for r in records if r["type"] == "http"), key=lambda r: r["index"])
    return [(r["request"] and r["request"]["method"], r["request"] and r["request"]["target"],
             r["response"] and r["response"]["status"],
             r["response"] and r["response"]["body_bytes"]) for r in http]


def _connection(records: list[dict]) -> dict:
    [conn] = [r for r in records if r["type"] == "connection"]
    return conn


def _notes(records: list[dict]) -> list[str]:
    return [n for r in records if r["type"] == "http" for n in r.get("notes", ())]


CASES: list[tuple[str, Callable[[], Capture], Callable[[list[dict]], object]]] = [
    ("answers captured before their requests (HEAD, 304)", answers_first,
     lambda rs: _http(rs) == PAIRS and not _notes(rs)),
    ("a request acknowledged but never captured", request_lost,
     lambda rs: _http(rs) == [PAIRS[0], (None, None, 200, 5), *PAIRS[1:]]
     and "its request was in client bytes that were lost or not understood" in _notes(rs)),
    ("heads cut by a 96-byte snap length", snap_length,
     lambda rs: [t[:3] for t in _http(rs)] == [t[:3] for t in PAIRS]
     and any(n.startswith("only the first 42 bytes of the response were captured") for n in _notes(rs))),
    ("chunked framing with bare LF", bare_lf_chunked,
     lambda rs: _http(rs) == [("GET", "/a", 200, 5)]
     and _notes(rs) == ["the response's chunked framing uses bare LF line ends"]),
    ("the HTTP/2 preface", h2c,
     lambda rs: _connection(rs)["protocol"] == "http2" and _http(rs) == []),
    ("IP in IP", ip_in_ip,
     lambda rs: _http(rs) == PAIRS and _connection(rs)["server"] == "10.1.0.2:8080"),
    ("IPv6 in IPv4", six_in_four,
     lambda rs: _http(rs) == PAIRS and _connection(rs)["server"] == "[fd00:1::2]:8080"),
    ("Ethernet in GRE", gre_ethernet,
     lambda rs: _http(rs) == PAIRS and _connection(rs)["client"] == "10.1.0.1:43210"),
    ("a FIN acknowledged but never captured", fin_lost,
     lambda rs: _connection(rs)["missing_bytes"] == {"client": 0, "server": 0}),
    ("wire text stays text in the records", sni_with_control_bytes,
     lambda rs: _connection(rs)["tls"]["sni"] == "ev\x1bil\\.example"
     and _connection(rs)["tls"]["alpn"] == ["h2\r", "http/1.1"]),
]


def _records(path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    assert main(["-r", str(path), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("name,make,expect", CASES, ids=[c[0] for c in CASES])
def test_case(name, make, expect, tmp_path, capsys):
    packets, snaplen = make()
    path = tmp_path / "case.pcap"
    write_pcap(path, packets, snaplen=snaplen)
    records = _records(path, capsys)
    assert expect(records), records
    # The same capture gzip-compressed reads to the same records.
    packed = tmp_path / "case.pcap.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert _records(packed, capsys) == records
