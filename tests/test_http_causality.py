"""HTTP pairing by TCP causality: the records must not depend on how a capture interleaves the two
directions (each direction's own order is kept), nor on how the bytes were split into segments.

The connections are built with scapy in causal order (tests/conversations.py); the captures are
every interleaving of their packets that keeps each side's order, responses captured before the
requests they answer among them.
"""

from __future__ import annotations

import json

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.bounds import Bounds
from engine.events import HttpTransaction
from tests.conversations import build, causal, http_records, interleavings
from tests.synth import write_pcap
from tui.cli import main

HOST = b"Host: api.example\r\n"


def get(path: str, *extra: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"".join(extra) + b"\r\n"


def ok(body: bytes, *extra: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        + b"".join(extra) + b"\r\n" + body
    )


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
HEAD = b"HEAD /big HTTP/1.1\r\n" + HOST + b"\r\n"
HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"  # no body: it answers a HEAD
POST_HEAD = (
    b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\nExpect: 100-continue\r\n\r\n"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CREATED = ok(b'{"id": 7}', b"Location: /upload/7\r\n", status=b"201 Created")
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
NOT_MODIFIED = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 512\r\n\r\n'
CLOSE_GET = get("/last", b"Connection: close\r\n")
CLOSE_OK = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"

KEEP_ALIVE = [
    ("c", get("/a?limit=3")),
    ("s", ok(b"alpha")),
    ("c", HEAD),
    ("s", HEAD_OK),
    ("c", POST_HEAD),
    ("s", CONTINUE),
    ("c", b"hello=world"),
    ("s", CREATED),
    ("c", get("/chunked")),
    ("s", CHUNKED),
    ("c", get("/empty")),
    ("s", NO_CONTENT),
    ("c", get("/cached", b'If-None-Match: "v1"\r\n')),
    ("s", NOT_MODIFIED),
    ("c", CLOSE_GET),
    ("s", CLOSE_OK),
    ("s-fin",),
]

# Pipelined: three requests (a HEAD in the middle) before any answer; the answers come in one
# burst, the HEAD's without the body its Content-Length announces.
PIPELINED = [
    ("c", get("/1") + HEAD + get("/3")),
    ("s", ok(b"one") + HEAD_OK + ok(b"three")),
    ("c", get("/4")),
    ("s", NOT_MODIFIED),
]

EXPECTED_KEEP_ALIVE = [
    ("GET", "/a?limit=3", 0, 200, 5, ()),
    ("HEAD", "/big", 0, 200, 0, ()),
    ("POST", "/upload", 11, 201, 9, (100,)),
    ("GET", "/chunked", 0, 200, 12, ()),
    ("GET", "/empty", 0, 204, 0, ()),
    ("GET", "/cached", 0, 304, 0, ()),
    ("GET", "/last", 0, 200, 13, ()),
]


def summary(tx: HttpTransaction) -> tuple:
    assert tx.request is not None and tx.response is not None, tx
    return (
        tx.request.method, tx.request.target, tx.request.body_bytes,
        tx.response.status, tx.response.body_bytes, tuple(s for s, _, _ in tx.response.interim),
    )


def untimed(tx: HttpTransaction) -> HttpTransaction:
    """The record without its times, which depend on which packet carried each byte."""
    req = tx.request and tx.request._replace(ts=0.0, end_ts=0.0)
    resp = tx.response and tx.response._replace(
        ts=0.0, end_ts=0.0, interim=tuple((s, r, 0.0) for s, r, _ in tx.response.interim)
    )
    return tx._replace(request=req, response=resp)


@pytest.mark.parametrize(
    "script,expected",
    [
        (KEEP_ALIVE, EXPECTED_KEEP_ALIVE),
        (PIPELINED, [
            ("GET", "/1", 0, 200, 3, ()), ("HEAD", "/big", 0, 200, 0, ()),
            ("GET", "/3", 0, 200, 5, ()), ("GET", "/4", 0, 304, 0, ()),
        ]),
    ],
    ids=["keep-alive", "pipelined"],
)
def test_records_are_the_same_for_every_interleaving(script, expected):
    client, server = build(script, mss=40)
    reference = None
    count = 0
    for packets in interleavings(client, server, limit=300):
        records = http_records(packets)
        if reference is None:  # the causal order: check it is right, not only stable
            assert [summary(t) for t in records] == expected
            assert all(t.error is None and not t.notes for t in records), records
            reference = records
        assert records == reference, [summary(t) for t in records]
        count += 1
    assert count >= 300


def test_every_interleaving_of_a_small_pipelined_exchange():
    """Exhaustively: every order of the two sides' packets, none left out."""
    script = [("c", get("/1") + HEAD), ("s", ok(b"one") + HEAD_OK), ("c-fin",)]
    client, server = build(script, mss=30, acks=False)
    orders = list(interleavings(client, server, limit=10_000))
    n, m = len(client), len(server)
    assert n + m >= 12
    assert len(orders) == 3 + math.comb(n + m, n)  # every one, and the three named orders
    reference = http_records(orders[0])
    assert [summary(t) for t in reference] == [
        ("GET", "/1", 0, 200, 3, ()), ("HEAD", "/big", 0, 200, 0, ()),
    ]
    for packets in orders:
        assert http_records(packets) == reference


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.dictionaries(
        st.integers(0, len(KEEP_ALIVE) - 1), st.lists(st.integers(1, 80), max_size=4)
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_records_depend_neither_on_the_interleaving_nor_on_the_segments(cuts, seed):
    reference = [untimed(t) for t in http_records(causal(*build(KEEP_ALIVE)))]
    client, server = build(KEEP_ALIVE, cuts=cuts)
    for packets in interleavings(client, server, limit=3, seed=seed):
        assert [untimed(t) for t in http_records(packets, batch=5)] == reference


def test_a_response_captured_before_its_request_is_paired_in_a_real_capture_file(tmp_path, capsys):
    """Through the command line, from a pcap file where every server packet comes first."""
    client, server = build(PIPELINED)
    path = tmp_path / "server-first.pcap"
    write_pcap(path, server + client)
    assert main(["-r", str(path), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    http = [r for r in records if r["type"] == "http"]
    assert len(http) == 4
    assert all(r["request"] is not None and r["error"] is None for r in http)
    assert http[1]["request"]["method"] == "HEAD"
    assert (http[1]["response"]["body_bytes"], http[1]["response"]["body_missing"]) == (0, 0)


# ---------------------------------------------------------------------------- the cases, one by one


def _records(packets: list, bounds: Bounds | None = None) -> list[tuple]:
    """(method or None, target, status or None, notes) of each record."""
    out = []
    for t in http_records(packets, bounds=bounds):
        out.append((
            t.request and t.request.method, t.request and t.request.target,
            t.response and t.response.status, t.notes, t.error,
        ))
    return out


def _data_packets(packets: list, needle: bytes) -> list[int]:
    return [i for i, (_ts, frame) in enumerate(packets) if needle in frame]


LOST_REQUEST = "its request was in client bytes that were lost or not understood"
ANSWERED_EARLY = (
    "its answer was captured too long before it and is reported as an exchange with no request"
)


def _lose_request(order: str) -> list:
    """Three GETs on a connection; the second's only segment was never captured."""
    script = [("c", get("/1")), ("s", ok(b"one")), ("c", get("/2")), ("s", ok(b"two")),
              ("c", get("/3")), ("s", ok(b"three"))]
    client, server = build(script)
    [lost] = _data_packets(client, b"GET /2 ")
    client = client[:lost] + client[lost + 1:]
    return {"causal": causal(client, server), "server first": server + client,
            "client first": client + server}[order]


@pytest.mark.parametrize("order", ["causal", "server first", "client first"])
def test_a_request_the_server_acknowledged_but_the_capture_missed(order):
    """The answer gets an exchange with no request, and says why; the others pair right."""
    assert _records(_lose_request(order)) == [
        ("GET", "/1", 200, (), None),
        (None, None, 200, (LOST_REQUEST,), None),
        ("GET", "/3", 200, (f"{len(get('/2'))} bytes before this request were lost or not"
                            " understood; resynchronised here",), None),
    ]


def test_an_answer_waits_for_its_request_only_within_the_bound(monkeypatch):
    """A capture whose client side comes far too late (here after every server packet, which
    span more than twice the reorder window): the answers stop waiting, say so, and the requests
    are reported unanswered, rather than memory growing or the pairing being made up."""
    script = [("c", get("/1")), ("s", ok(b"one")), ("c", get("/2")), ("s", ok(b"two"))]
    client, server = build(script)
    window = Bounds().reorder_window
    late = [(ts + 3 * window, frame) if b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo" in frame
            else (ts, frame) for ts, frame in server]
    records = _records(late + client)
    # The first answer stopped waiting; its request, when it came, was known to be answered
    # already, so it does not take the second answer, which pairs with its own request.
    assert [(r[0], r[1], r[2]) for r in records] == [
        (None, None, 200), ("GET", "/1", None), ("GET", "/2", 200),
    ]
    assert "no request for it was captured in time" in records[0][3][0]
    assert records[1][3] == (ANSWERED_EARLY,)
    # Within the window, the same late client side pairs as it should.
    assert [(r[0], r[2]) for r in _records(server + client)] == [("GET", 200), ("GET", 200)]


def test_an_answer_held_beyond_the_byte_bound_goes_on():
    """The bound is Bounds.max_ooo_bytes: how far one stream may run ahead of the other."""
    script = [("c", get("/big")), ("s", ok(b"x" * 5000)), ("c", get("/small")), ("s", ok(b"y"))]
    client, server = build(script)
    records = _records(server + client, Bounds(max_ooo_bytes=2000))
    assert [(r[0], r[1], r[2]) for r in records] == [
        (None, None, 200), ("GET", "/big", None), ("GET", "/small", 200),
    ]  # the first answer could not wait: 5000 bytes > 2000
    assert _records(causal(client, server))[0][:3] == ("GET", "/big", 200)


def test_a_capture_that_starts_after_the_request_says_so():
    script = [("c", get("/1")), ("s", ok(b"one")), ("c", get("/2")), ("s", ok(b"two"))]
    client, server = build(script)
    # From the first answer on: no handshake, no first request.
    [first] = _data_packets(server, b"one")
    [second] = _data_packets(client, b"GET /2 ")
    for packets in (server[first:] + client[second:], client[second:] + server[first:]):
        assert _records(packets) == [
            (None, None, 200, ("its request was sent before the capture started",), None),
            ("GET", "/2", 200, (), None),
        ]


@pytest.mark.parametrize("order", ["causal", "server first"])
def test_head_and_304_answers_have_no_body_whatever_the_order(order):
    script = [("c", HEAD), ("s", HEAD_OK), ("c", get("/c")), ("s", NOT_MODIFIED),
              ("c", get("/d")), ("s", ok(b"dee"))]
    client, server = build(script, mss=20)
    packets = causal(client, server) if order == "causal" else server + client
    records = http_records(packets)
    assert [(t.request.method, t.response.status, t.response.body_bytes) for t in records] == [
        ("HEAD", 200, 0), ("GET", 304, 0), ("GET", 200, 3),
    ]


def test_the_parallel_reader_and_the_reorder_window_option(tmp_path, capsys):
    client, server = build(KEEP_ALIVE)
    path = tmp_path / "server-first.pcap"
    write_pcap(path, server + client)
    outputs = []
    for jobs in ("1", "2"):
        assert main(["-r", str(path), "--json", "--jobs", jobs]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    http = [r for r in map(json.loads, outputs[0].splitlines()) if r["type"] == "http"]
    assert len(http) == 7 and all(r["request"] is not None for r in http)
    assert main(["-r", str(path), "--json", "--reorder-window", "-1"]) == 2
    assert "--reorder-window must be between 0 and 3600" in capsys.readouterr().err


# ---------------------------------------------------------------------------- snap length


SNAP_SCRIPT = [
    ("c", get("/api/v1/items?id=42", b"User-Agent: curl/8.5.0\r\nAccept: */*\r\n")),
    ("s", ok(b"x" * 3000, b"Content-Type: application/json\r\nServer: nginx\r\n")),
    ("c", b"HEAD /health HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("s", HEAD_OK),
    ("c", get("/missing")),
    ("s", ok(b"no such thing", status=b"404 Not Found")),
]


@pytest.mark.parametrize("snaplen", [84, 96, 128])
@pytest.mark.parametrize("order", ["causal", "server first"])
def test_packets_cut_by_a_small_snap_length_still_give_each_exchange(tmp_path, capsys, snaplen,
                                                                        order):
    """As `tcpdump -s 96` writes them: every exchange is there with what was captured of it
    (method, target as far as it went, status), and a note that the rest was cut off."""
    client, server = build(SNAP_SCRIPT)
    packets = causal(client, server) if order == "causal" else server + client
    path = tmp_path / "cut.pcap"
    write_pcap(path, packets, snaplen=snaplen)
    from tests.captures import replay_file

    replay = replay_file(str(path))
    txs = [e for e in replay.events if isinstance(e, HttpTransaction)]
    txs.sort(key=lambda t: t.index)
    payload = snaplen - 54  # what is left after the Ethernet, IPv4 and TCP headers
    cut = sum(len(frame) > snaplen for _ts, frame in packets)
    assert replay.pipeline.stats().cut_payloads == cut > 0  # the status bar says how many
    assert [(t.request.method, t.response.status) for t in txs] == [
        ("GET", 200), ("HEAD", 200), ("GET", 404),
    ]
    assert [t.request.target for t in txs] == ["/api/v1/items?id=42", "/health", "/missing"]
    cut = "the capture's snapshot length cut off the rest"
    for t, (_who, sent), (_, answer) in zip(txs, SNAP_SCRIPT[::2], SNAP_SCRIPT[1::2]):
        assert t.error is None
        for message, raw, what in ((t.request, sent, "request"), (t.response, answer, "response")):
            whole = len(raw) <= payload
            assert message.complete == whole
            note = f"only the first {payload} bytes of the {what} were captured: {cut}"
            assert (note in t.notes) != whole, t.notes
        assert len(t.notes) == (len(sent) > payload) + (len(answer) > payload)  # nothing else
        assert t.request.ts <= t.response.ts
    assert txs[0].response.body_bytes == 0  # nothing of it was seen
    if payload >= len(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n"):
        assert ("Content-Length", "3000") in txs[0].response.headers
    # The same through the command line: one record per exchange, nothing invented.
    assert main(["-r", str(path), "--json"]) == 0
    http = [r for r in map(json.loads, capsys.readouterr().out.splitlines()) if r["type"] == "http"]
    assert len(http) == 3 and all(r["request"] is not None for r in http)


def test_a_protocol_known_only_at_the_end_still_gets_its_close():
    """Only the server spoke and the capture ends without a FIN: the client's silence decides
    the protocol at the end, and the parser attached then must still be closed, or the answer
    whose body runs to the close is lost (it was)."""
    client, server = build([("s", b"HTTP/1.1 200 OK\r\n\r\nhello, close-delimited")])  # no close
    [tx] = http_records(causal(client, server))
    assert tx.request is None and tx.response is not None
    assert tx.response.body == b"hello, close-delimited"
