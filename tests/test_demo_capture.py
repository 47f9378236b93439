"""The bundled demo capture (tui/data/demo.pcap) and the escape-sequence capture
(tests/data/pcaps/escapes.pcap): wirepeek reads in them what scripts/make_demo_capture.py put
there, and the script still writes exactly the bundled bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.all import IP, TCP, Ether, IPv6, rdpcap  # type: ignore[attr-defined]

from engine.content import decode_message_body
from engine.events import ConnectionInfo, Gap, HttpTransaction
from engine.pipeline import Pipeline
from engine.tls import ClientHello, ServerHello, parse_client_hello
from scripts import make_demo_capture as demo
from tests.captures import capture, replay_file
from tests.feeding import Recorder
from tui.cli import DEMO_CAPTURE
from tui.escape import escape_text

DEMO = DEMO_CAPTURE
ESCAPES = Path(capture("escapes.pcap"))


@dataclass
class Replay:
    pipeline: Pipeline
    infos: dict[int, ConnectionInfo]
    transactions: dict[int, list[HttpTransaction]]
    gaps: list[Gap]
    recorders: dict[int, Recorder]
    error: str | None

    def stream(self, conn_id: int, from_client: bool) -> bytes:
        return bytes(self.recorders[conn_id].data[from_client])


def replay(path: Path) -> Replay:
    run = replay_file(str(path))
    transactions: dict[int, list[HttpTransaction]] = {}
    for e in run.events:
        if isinstance(e, HttpTransaction):
            transactions.setdefault(e.connection, []).append(e)
    for txs in transactions.values():
        txs.sort(key=lambda t: t.index)
    gaps = [e for e in run.events if isinstance(e, Gap)]
    return Replay(run.pipeline, {i.id: i for i in run.infos()}, transactions, gaps, run.recorders,
                  run.error)


@pytest.fixture(scope="module")
def bundled() -> Replay:
    return replay(DEMO)


@pytest.fixture(scope="module")
def escapes() -> Replay:
    return replay(ESCAPES)


# ---------------------------------------------------------------------------- the demo

# id, client address, server, protocol, state, conn_state
CONNECTIONS = [
    (0, "10.0.0.15", "10.0.0.80:80", "http", "CLOSED", "SF"),  # REST on keep-alive
    (1, "10.0.0.15", "198.51.100.20:80", "http", "CLOSED", "SF"),  # chunked gzip page
    (2, "10.0.0.15", "198.51.100.20:80", "http", "CLOSED", "SF"),  # favicon 404
    (3, "10.0.0.15", "10.0.0.81:8000", "http", "CLOSED", "SF"),  # slow CSV
    (4, "10.0.0.15", "192.0.2.44:443", "tls", "CLOSED", "SF"),
    (5, "[fd00::15]", "[fd00::80]:80", "http", "CLOSED", "SF"),  # pipelined pair
    (6, "10.0.0.15", "10.0.0.82:8080", "http", "RESET", "RSTR"),
    (7, "10.0.0.15", "10.0.0.82:9090", None, "RESET", "REJ"),
    (8, "[fd00::15]", "[fd00::80]:80", "http", "CLOSED", "SF"),  # websocket
    (9, "10.0.0.15", "10.0.0.80:80", "http", "CLOSED", "SF"),  # escape sequences
    (10, "10.0.0.15", "10.0.0.80:80", "http", "CLOSED", "SF"),  # HEAD
    (11, "10.0.0.15", "10.0.0.80:80", "http", "CLOSED", "SF"),  # pending orders
]

# connection -> [(method, target, status)]; None where a side is absent
EXCHANGES = {
    0: [("GET", "/api/v1/orders?limit=3", 200), ("POST", "/api/v1/orders", 201),
        ("GET", "/api/v1/orders/42", 200)],
    1: [("GET", "/", 200)],
    2: [("GET", "/favicon.ico", 404)],
    3: [("GET", "/reports/monthly.csv", 200)],
    5: [("GET", "/api/v1/health", 200), ("GET", "/api/v1/version", 200)],
    6: [("GET", "/admin/metrics", None)],
    8: [("GET", "/ws/orders", 101)],
    9: [("POST", "/api/v1/comments", 202)],
    10: [("HEAD", "/api/v1/orders/42", 200)],
    11: [("GET", "/api/v1/orders?status=pending", 200)],
}


def header(message, name: str) -> str | None:  # type: ignore[no-untyped-def]
    values = [v for k, v in message.headers if k.lower() == name.lower()]
    return values[0] if values else None


def test_the_connections_are_as_designed(bundled):
    assert bundled.error is None
    got = [
        (i.id, i.client.rsplit(":", 1)[0], i.server, i.protocol, i.state, i.conn_state)
        for i in sorted(bundled.infos.values(), key=lambda i: i.id)
    ]
    assert got == CONNECTIONS
    assert all(not i.direction_guessed for i in bundled.infos.values())


def test_nothing_is_missing_or_malformed(bundled):
    stats = bundled.pipeline.stats()
    assert stats.malformed == 0 and stats.truncated == 0
    assert stats.packets == stats.tcp_packets
    assert bundled.gaps == []
    for info in bundled.infos.values():
        assert info.missing_bytes == (0, 0), info.id
        assert info.retransmitted_bytes == (0, 0), info.id
        assert info.inconsistent_retransmissions == 0, info.id


def test_every_checksum_is_right():
    for number, frame in enumerate(rdpcap(str(DEMO))):
        ip = frame[IP] if IP in frame else frame[IPv6]
        rebuilt = frame.copy()
        if IP in rebuilt:
            del rebuilt[IP].chksum
        del rebuilt[TCP].chksum
        rebuilt = Ether(bytes(rebuilt))
        if IP in frame:
            assert rebuilt[IP].chksum == ip.chksum, number
        assert rebuilt[TCP].chksum == frame[TCP].chksum, number


def test_the_capture_is_about_half_a_minute_and_never_long_quiet():
    times = [float(p.time) for p in rdpcap(str(DEMO))]
    assert times == sorted(times)
    assert 20 <= times[-1] - times[0] <= 40
    assert max(b - a for a, b in zip(times, times[1:])) < 5  # a live replay keeps moving


def test_http_exchanges(bundled):
    got = {
        conn: [
            (t.request.method if t.request else None, t.request.target if t.request else None,
             t.response.status if t.response else None)
            for t in txs
        ]
        for conn, txs in bundled.transactions.items()
    }
    assert got == EXCHANGES
    for txs in bundled.transactions.values():
        for t in txs:
            assert t.error is None, (t.connection, t.index, t.error)


def test_rest_calls_carry_json(bundled):
    listing, created, fetched = bundled.transactions[0]
    orders = json.loads(listing.response.body)
    assert [o["id"] for o in orders] == [39, 40, 41]
    assert header(listing.response, "Content-Type") == "application/json"
    assert listing.response.body.startswith(b"[\n  {")  # pretty-printed
    assert json.loads(created.request.body) == demo.NEW_ORDER
    assert header(created.request, "Content-Type") == "application/json"
    assert created.response.reason == "Created"
    assert header(created.response, "Location") == "/api/v1/orders/42"
    assert json.loads(fetched.response.body)["id"] == 42
    assert header(listing.request, "User-Agent").startswith("python-requests/")


def test_chunked_gzip_page_decodes_to_html(bundled):
    [page] = bundled.transactions[1]
    response = page.response
    assert header(response, "Transfer-Encoding") == "chunked"
    assert header(response, "Content-Encoding") == "gzip"
    assert response.body_bytes == len(demo.PAGE_GZIP)
    decoded = decode_message_body(response)
    assert decoded.error is None and not decoded.truncated
    assert decoded.encodings == ("gzip",)
    assert decoded.data == demo.PAGE_HTML
    assert decoded.data.startswith(b"<!DOCTYPE html>")
    # Three chunks, then the last (zero) chunk, in the server's stream.
    raw_body = bundled.stream(1, False).split(b"\r\n\r\n", 1)[1]
    sizes = []
    while True:
        line, raw_body = raw_body.split(b"\r\n", 1)
        size = int(line, 16)
        sizes.append(size)
        raw_body = raw_body[size + 2 :]
        if size == 0:
            break
    assert len(sizes) == 4 and sum(sizes) == len(demo.PAGE_GZIP)


def test_favicon_is_not_found(bundled):
    [icon] = bundled.transactions[2]
    assert (icon.response.status, icon.response.reason) == (404, "Not Found")
    assert header(icon.response, "Content-Type") == "text/html"
    assert b"404 Not Found" in icon.response.body


def test_slow_response_waits_two_and_a_half_seconds(bundled):
    [report] = bundled.transactions[3]
    assert 2.5 <= report.wait < 2.6
    assert header(report.response, "Content-Type").startswith("text/csv")
    rows = report.response.body.decode().splitlines()
    assert rows[0] == "date,region,orders,revenue_eur" and len(rows) == 63
    assert report.response.complete


def test_pipelined_requests_both_leave_before_the_first_answer(bundled):
    first, second = bundled.transactions[5]
    assert second.request.end_ts < first.response.ts
    assert first.response.end_ts <= second.response.ts
    assert json.loads(first.response.body)["status"] == "ok"
    assert json.loads(second.response.body)["version"] == "3.8.1"


def test_websocket_upgrade_becomes_a_tunnel(bundled):
    [upgrade] = bundled.transactions[8]
    assert upgrade.tunnel
    assert upgrade.response.status == 101
    assert header(upgrade.request, "Upgrade") == "websocket"
    key = header(upgrade.request, "Sec-WebSocket-Key")
    assert header(upgrade.response, "Sec-WebSocket-Accept") == demo.websocket_accept(key)
    # The frames after the handshake are counted as stream bytes, not parsed as HTTP.
    client, server = bundled.stream(8, True), bundled.stream(8, False)
    client_frames = client.split(b"\r\n\r\n", 1)[1]
    server_frames = server.split(b"\r\n\r\n", 1)[1]
    assert client_frames[0] == 0x81 and client_frames[1] & 0x80  # text, masked
    assert server_frames.startswith(b"\x81\x28" + b'{"type":"subscribed"')
    assert server_frames.endswith(b"\x88\x02\x03\xe8")  # close 1000
    assert bundled.infos[8].last_ts - bundled.infos[8].first_ts > 15


def test_websocket_accept_matches_rfc_6455_example():
    assert demo.websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_tls_client_hello(bundled):
    info = bundled.infos[4]
    assert info.sni == "api.example.com"
    assert info.alpn == ("h2", "http/1.1")
    # TLS 1.3: the server's choice of ALPN is encrypted, and h2 was not the only offer.
    assert info.server_hello == ServerHello("TLS 1.3", "TLS_AES_128_GCM_SHA256", None)
    assert info.protocol == "tls"
    hello = parse_client_hello(bundled.stream(4, True))
    assert hello == ClientHello(version="TLS 1.3", sni="api.example.com", alpn=("h2", "http/1.1"))
    server = bundled.stream(4, False)
    assert server[:6] == b"\x16\x03\x03" + server[3:5] + b"\x02"  # a ServerHello record
    assert 4 not in bundled.transactions


def test_reset_and_refused(bundled):
    reset, refused = bundled.infos[6], bundled.infos[7]
    assert reset.history.endswith("r") and reset.bytes[0] > 0 and reset.bytes[1] == 0
    [request_only] = bundled.transactions[6]
    assert request_only.response is None
    assert (refused.history, refused.packets, refused.bytes) == ("Sr", (1, 1), (0, 0))
    assert 7 not in bundled.transactions


def test_escape_sequences_reach_the_engine_raw_and_leave_the_display_escaped(bundled):
    [post] = bundled.transactions[9]
    agent = header(post.request, "User-Agent")
    assert agent == "evil\x1b]0;pwned\x07agent"
    assert b"\x1b[2J" in post.request.body
    shown = escape_text(agent)
    assert "\x1b" not in shown and "\x07" not in shown and "pwned" in shown


def test_head_response_has_no_body(bundled):
    [head] = bundled.transactions[10]
    assert head.response.body_bytes == 0
    assert int(header(head.response, "Content-Length")) > 0


# ---------------------------------------------------------------------------- escapes.pcap


def test_escapes_capture(escapes):
    assert sorted(escapes.infos) == [0, 1, 2, 3]
    assert escapes.gaps == []
    [in_target] = escapes.transactions[0]
    assert in_target.request is None and in_target.response.status == 400
    assert in_target.error and "illegal request line" in in_target.error
    assert b"GET /\x1b]2;title\x07 HTTP/1.1" in escapes.stream(0, True)
    [in_header] = escapes.transactions[1]
    assert header(in_header.request, "X-Comment") == "hello \x1b]2;title\x07world"
    assert "\x1b" in header(in_header.response, "X-Reply")
    [in_body] = escapes.transactions[2]
    assert b"\x1b]2;title\x07" in in_body.request.body and b"\x1b[2J" in in_body.request.body
    assert b"\x1b[1;31m" in in_body.response.body


def test_escapes_capture_tls_names_reach_the_engine_as_sent(escapes):
    tls = escapes.infos[3]
    assert tls.protocol == "tls"  # the server selected its odd protocol, not h2
    assert tls.sni == demo.EVIL_SNI.decode("latin-1") == "ev\x1bil\r\x00\x9b\xe9\\x1b.test"
    assert tls.alpn == ("h2", demo.EVIL_ALPN.decode("latin-1"))
    assert tls.server_hello == ServerHello(
        "TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "h\x1b\r\x00\xe9\\2")
    assert 3 not in escapes.transactions


# ---------------------------------------------------------------------------- reproducible


def test_regenerating_gives_the_bundled_bytes(tmp_path):
    demo.main(["--demo", str(tmp_path / "demo.pcap"), "--escapes", str(tmp_path / "escapes.pcap")])
    assert (tmp_path / "demo.pcap").read_bytes() == DEMO.read_bytes()
    assert (tmp_path / "escapes.pcap").read_bytes() == ESCAPES.read_bytes()


def test_the_stored_gzip_body_is_the_page():
    import gzip

    assert gzip.decompress(demo.PAGE_GZIP) == demo.PAGE_HTML
