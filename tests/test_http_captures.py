"""HTTP transactions in the bundled real captures: what wirepeek reports is what the capture holds.

Every expectation below was checked against the raw streams (`replay(name).stream(...)`), and the
bodies are checked again here by an independent reading of those streams (`read_messages`, a few
lines written for this test, not engine.http). The README's tshark figures are a reference, not the
truth; where wirepeek reports something else, a comment on the case says why.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import Counter
from dataclasses import dataclass

import pytest
from scapy.all import TCP, rdpcap  # type: ignore[attr-defined]

from engine.events import Gap, HttpTransaction
from tests.captures import Replay, all_captures, capture, replay, tshark_profiles

# ---------------------------------------------------------------------------- helpers


@functools.cache
def _replay(name: str) -> Replay:
    return replay(name)


def transactions(name: str, conn: int | None = None) -> list[HttpTransaction]:
    """The capture's transactions in (connection, index) order."""
    found = [e for e in _replay(name).events if isinstance(e, HttpTransaction)]
    if conn is not None:
        found = [t for t in found if t.connection == conn]
    return sorted(found, key=lambda t: (t.connection, t.index))


def gaps(name: str, conn: int, from_client: bool) -> list[int]:
    return _replay(name).recorders[conn].gaps[from_client]


@dataclass(frozen=True)
class Message:
    start_line: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased
    body: bytes
    end: int  # stream offset just after the message

    @property
    def method(self) -> str:
        return self.start_line.split(b" ")[0].decode("latin-1")

    @property
    def target(self) -> str:
        return self.start_line.split(b" ")[1].decode("latin-1")

    @property
    def status(self) -> int:
        return int(self.start_line.split(b" ")[1])


def dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    """The body of a chunked message whose first chunk-size line starts at pos, and the offset
    after the message (trailers included). Lenient: lines may end with a bare LF, and whitespace
    may come before ';' (RFC 9112 7.1.1 allows BWS there)."""
    out = bytearray()
    while True:
        eol = data.index(b"\n", pos)
        size = int(data[pos:eol].split(b";")[0].strip(), 16)
        pos = eol + 1
        if size == 0:
            break
        out += data[pos:pos + size]
        pos += size
        pos += 2 if data[pos:pos + 2] == b"\r\n" else 1
    while True:  # the trailer section ends with an empty line
        eol = data.index(b"\n", pos)
        line, pos = data[pos:eol].rstrip(b"\r"), eol + 1
        if not line:
            return bytes(out), pos


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def read_messages(data: bytes, responses: bool, methods: list[str] | None = None) -> list[Message]:
    """Every message of a gap-free stream. `methods`: the requests' methods, in order, for the
    responses (HEAD and CONNECT decide whether a response has a body). Stops at a tunnel."""
    out: list[Message] = []
    methods = list(methods or [])
    pos = 0
    while True:
        while data[pos:pos + 1] in (b"\r", b"\n"):
            pos += 1
        if pos >= len(data):
            return out
        blank = _BLANK_LINE.search(data, pos)
        assert blank is not None, f"no end of header block after offset {pos}"
        body_start = blank.end()
        lines = re.split(rb"\r?\n", data[pos:blank.start()])
        headers = tuple(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in lines[1:])
        )
        te = b",".join(v for k, v in headers if k == b"transfer-encoding").lower()
        lengths = [int(v) for k, v in headers if k == b"content-length"]
        if responses:
            status = int(lines[0].split(b" ")[1])
            method = methods.pop(0) if status >= 200 and methods else ""
            tunnel = status == 101 or (method == "CONNECT" and 200 <= status < 300)
            no_body = status < 200 or status in (204, 304) or method == "HEAD" or tunnel
        else:
            method = lines[0].split(b" ")[0].decode("latin-1")
            tunnel = method == "CONNECT" or any(k == b"upgrade" for k, _ in headers)
            no_body = not te and not lengths
        if no_body:
            body, end = b"", body_start
        elif b"chunked" in te:
            body, end = dechunk(data, body_start)
        elif lengths:
            body, end = data[body_start:body_start + lengths[0]], body_start + lengths[0]
        else:  # a response without a length: its body ends with the connection
            body, end = data[body_start:], len(data)
        out.append(Message(lines[0], headers, body, end))
        pos = end
        if tunnel:
            return out


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Tx:
    """What one transaction should look like. `method` None: no request; `status` None: no
    response. `target` is a prefix; `error` and each of `notes` are substrings (no notes given:
    there must be none)."""

    method: str | None
    target: str = ""
    req_body: int = 0
    status: int | None = None
    body: int = 0
    missing: int = 0
    complete: bool = True  # both messages that are present were seen to their end
    interim: tuple[int, ...] = ()
    tunnel: bool = False
    error: str | None = None
    notes: tuple[str, ...] = ()
    conn: int = 0


def seen_as(tx: HttpTransaction, like: Tx) -> Tx:
    """`tx` projected onto the fields of `like`, so that equality is the check and a failure
    shows a readable diff."""
    q, r = tx.request, tx.response
    complete = (q is None or q.complete) and (r is None or r.complete)
    error = tx.error
    if like.error is not None and error is not None and like.error in error:
        error = like.error
    notes = tuple(tx.notes)
    if like.notes and all(any(n in note for note in tx.notes) for n in like.notes):
        notes = like.notes
    return Tx(
        method=q.method if q else None,
        target=q.target[:len(like.target)] if q else "",
        req_body=q.body_bytes if q else 0,
        status=r.status if r else None,
        body=r.body_bytes if r else 0,
        missing=(r.body_missing if r else 0) + (q.body_missing if q else 0),
        complete=complete,
        interim=tuple(s for s, _, _ in r.interim) if r else (),
        tunnel=tx.tunnel,
        error=error,
        notes=notes,
        conn=tx.connection,
    )


CASES = [
    pytest.param("zeek/http__get.pcap", None, [
        Tx("GET", "/download/CHANGES.bro-aux.txt", status=200, body=4705),
    ], id="get"),
    # Five requests on one keep-alive connection, reported in order. Despite the file's name each
    # request leaves after the previous response has ended (frames 4-20), so tshark and wirepeek
    # agree without any pipelining to untangle.
    pytest.param("zeek/http__pipelined-requests.pcap", None, [
        Tx("GET", "/style/enhanced.css", status=200, body=946),
        Tx("GET", "/script/urchin.js", status=200, body=6716),
        Tx("GET", "/images/template/screen/bullet_utility.png", status=200, body=94),
        Tx("GET", "/images/template/screen/key-point-top.png", status=200, body=2349),
        Tx("GET", "/projects/calendar/images/header-sunbird.png", status=200, body=27579),
    ], id="pipelined-requests"),
    # 1xx answers belong to the exchange and do not end it; the final answer is the response.
    pytest.param("zeek/http__100-continue.pcap", None, [
        Tx("POST", "/", req_body=2001, status=200, body=60731, interim=(100,)),
    ], id="100-continue"),
    pytest.param("arkime/http-100-continue.pcap", None, [
        Tx("POST", "/re/abcdefghijklmnopqrstuvwxyz123456", req_body=12, status=404, body=445,
           interim=(100,)),
    ], id="arkime-100-continue"),
    pytest.param("suricata-verify/http-multiple100__input.pcap", None, [
        Tx("POST", "/upload", req_body=34498, status=200, body=27, interim=(100, 100)),
    ], id="multiple-100"),
    # An answer to HEAD has no body whatever its head says: here no length at all (so a GET's
    # answer would run to the FIN), and in methods.pcap "Transfer-Encoding: chunked".
    pytest.param("arkime/http-500-head.pcap", None, [
        Tx("HEAD", "/UpdataConfig.dat", status=500, body=0),
    ], id="500-head"),
    pytest.param("zeek/http__methods.pcap", 44, [
        Tx("HEAD", "/", status=200, body=0, conn=44),
    ], id="head-chunked"),
    # 304 has no body; the first answer is chunked. The capture starts after the handshake (the
    # connection is MIDSTREAM) and the second connection carries no data.
    pytest.param("gopacket/pcap_test_loopback.pcap", None, [
        Tx("GET", "/pkg/github.com/gconnell/gopacket/", status=200, body=54518),
        Tx("GET", "/doc/style.css", status=304, body=0),
        Tx("GET", "/doc/godocs.js", status=304, body=0),
    ], id="loopback-304"),
    # Chunked answers: body_bytes is the de-chunked size (checked below by de-chunking the raw
    # stream). "no_crlf": each POST's body starts with an extra CRLF that Content-Length counts.
    pytest.param("zeek/http__no_crlf.pcap", None, [
        Tx("POST", "/7u0e9j2avwlvnuynyo/", req_body=6084, status=200, body=306596),
        Tx("POST", "/ko5ezxmguvv/", req_body=7556, status=200, body=411556),
        Tx("POST", "/vwst360x8syxks325x/", req_body=8212, status=200, body=473908),
        Tx("POST", "/mro86v6nvs42/", req_body=6276, status=200, body=287012),
        Tx("POST", "/raet/", req_body=6228, status=200, body=1172),
    ], id="chunked-no-crlf"),
    # HTTP/1.0 answer without Content-Length: the body is everything up to the server's FIN.
    pytest.param("arkime/http-no-length.pcap", None, [
        Tx("GET", "/js/xxxxxx.js", status=200, body=165),
    ], id="close-delimited"),
    # CONNECT 2xx: the rest of the connection is an opaque tunnel.
    pytest.param("arkime/https-connect.pcap", None, [
        Tx("CONNECT", "ts01-b.cloudsink.net:443", status=200, body=0, tunnel=True),
    ], id="https-connect"),
    pytest.param("zeek/http__connect-with-header.pcap", None, [
        Tx("CONNECT", "secure.newegg.com:443", status=200, body=0, tunnel=True),
    ], id="connect-with-header"),
    # tshark counts a GET (and no second 200) inside this tunnel: it dissects what a CONNECT
    # carries. wirepeek does not parse tunnelled bytes, so the GET and the second "200 OK" in the
    # tunnel are not transactions. The request has no Host header, which is noted.
    pytest.param("suricata-verify/http-connect__http-connect-simple__input.pcap", None, [
        Tx("CONNECT", "abc:443", status=200, body=0, tunnel=True, notes=("no Host header",)),
    ], id="connect-simple"),
    # 101 Switching Protocols: websocket frames follow (the zeek server's frames even carry the
    # text of another "HTTP/1.1 101" handshake, which must not become a transaction).
    pytest.param("zeek/http__websocket.pcap", None, [
        Tx("GET", "/echo?.kl=Y", status=101, body=0, tunnel=True),
    ], id="websocket"),
    pytest.param("suricata-verify/websocket__basic_websockets.pcap", None, [
        Tx("GET", "/service", status=101, body=0, tunnel=True),
    ], id="websocket-suricata"),
    pytest.param("zeek/http__docker-http-upgrade.pcap", None, [
        Tx("HEAD", "/_ping", status=200, body=0),
        Tx("POST", "/v1.41/containers/create", req_body=1719, status=201, body=88),
        Tx("POST", "/v1.41/containers/", status=200, body=30),
        Tx("POST", "/v1.41/containers/", status=101, body=0, tunnel=True, conn=1),  # Upgrade: tcp
        Tx("POST", "/v1.41/containers/", status=204, body=0, conn=2),
        Tx("POST", "/v1.41/containers/", status=200, body=0, conn=2),
    ], id="docker-upgrade"),
    # Gaps: bytes the capture never saw. Inside a Content-Length body they are counted as
    # body_missing and the exchanges after them stay in step. tshark counts one 200 fewer in both
    # suricata captures: it cannot reassemble the answer whose segment was lost.
    pytest.param("suricata-verify/http-gap-simple__input.pcap", None, [
        Tx("GET", "/1", status=200, body=12),
        Tx("GET", "/2", status=200, body=70, missing=14),
        Tx("GET", "/3", status=200, body=12),
    ], id="gap-simple"),
    pytest.param("suricata-verify/http-gap-double__input.pcap", None, [
        Tx("GET", "/1", status=200, body=12),
        Tx("GET", "/2", status=200, body=70, missing=28),
        Tx("GET", "/3", status=200, body=12),
    ], id="gap-double"),
    # The 733-byte gap is exactly the second answer's body. tshark reports only the first answer:
    # it does not reorder the out-of-order segment and stops at the lost one.
    pytest.param("suricata-verify/http-pipeline-files-with-gap__input.pcap", None, [
        Tx("GET", "/", status=200, body=24555),
        Tx("GET", "/wp-content/themes/wall-street/js/skip-link-focus-fix.js", status=200,
           body=733, missing=733),
        Tx("GET", "/wp-content/uploads/2015/04/NSL-InvestorPitch-9.00", status=200, body=34152),
    ], id="pipeline-files-with-gap"),
    # tshark reports no response in these two: the lost segment is inside the body, so its
    # reassembly of the response never completes.
    pytest.param("zeek/http__entity_gap.pcap", None, [
        Tx("GET", "/download/CHANGES.bro-aux.txt", status=200, body=4705, missing=1448),
    ], id="entity-gap"),
    pytest.param("zeek/http__content-range-gap.pcap", None, [
        Tx("GET", "/images/misc/static/2012/11/ifdata-welcome-0.png", status=206, body=10353,
           missing=1380),
    ], id="content-range-gap"),
    # The "large gap" is in the file, not the capture: a 2-byte range 2 GiB into an ISO
    # (Content-Range: bytes 2147483648-2147483649). No byte of the connection is missing.
    pytest.param("zeek/http__http-large-gap.pcap", None, [
        Tx("GET", "/22.04.3/ubuntu-22.04.3-desktop-amd64.iso", status=206, body=2, missing=0),
    ], id="large-gap"),
    # The server answered the first request three times (frames 10-16, all before the second
    # request in frame 18): 5 requests, 7 responses, as tshark counts. The two extra answers have
    # no request. Connection 0 is a refused IPv6 attempt, connection 2 a lone FIN/ACK.
    pytest.param("zeek/http__http-desync-request-response-5.pcap", None, [
        Tx("GET", "/", status=200, body=19, conn=1),
        Tx(None, status=200, body=19, conn=1),
        Tx(None, status=200, body=19, conn=1),
        Tx("GET", "/", status=200, body=19, conn=1),
        Tx("GET", "/", status=200, body=19, conn=1),
        Tx("GET", "/", status=200, body=19, conn=1),
        Tx("GET", "/", status=200, body=19, conn=1),
    ], id="desync"),
    # The capture starts after the request: a response without its request.
    pytest.param("suricata-verify/alert-testmyids-midstream__input.pcap", None, [
        Tx(None, status=200, body=39, notes=("sent before the capture started",)),
    ], id="midstream"),
    pytest.param("suricata-verify/tcp-stream-after-swap__http-start-from-response.pcap", None, [
        Tx(None, status=200, body=11, notes=("sent before the capture started",)),
        Tx("GET", "/favicon.ico", status=404, body=209),
    ], id="start-from-response"),
    # Two Content-Length headers that disagree (11 and 93): a request whose framing cannot be
    # trusted. wirepeek reports an error naming the request line, paired with the server's 501,
    # and parses nothing after it on that side. tshark counts a second POST (/evil.php), found
    # by picking one of the two lengths; the server (Python's SimpleHTTP) answered once and closed.
    pytest.param("suricata-verify/http-multiple-cl__input.pcap", None, [
        Tx(None, status=501, body=497,
           error='conflicting Content-Length headers in "POST /which.php HTTP/1.1"'),
    ], id="multiple-content-length"),
    # Transfer-Encoding and Content-Length together: Transfer-Encoding wins (RFC 9112 6.3), so the
    # POST's body is the empty chunked body "0\r\n\r\n" and the smuggled GET is a request of its
    # own, as tshark also sees it. The server never answered.
    pytest.param("zeek/http__261__variant-04-te_cl_desync.pcap", None, [
        Tx("POST", "/", req_body=0),
        Tx("GET", "/smuggled-te-cl", req_body=0),
    ], id="te-cl-desync"),
    # "Expect: 100-continue" with "Content-Length: 0": there is no body to wait for, so the GET
    # that follows is the next request.
    pytest.param("zeek/http__261__variant-07-expect_100_cl0.pcap", None, [
        Tx("POST", "/", req_body=0),
        Tx("GET", "/smuggled-expect-100", req_body=0),
    ], id="expect-100-cl0"),
]


@pytest.mark.parametrize(("name", "conn", "expected"), CASES)
def test_transactions_match_the_capture(name, conn, expected):
    found = transactions(name, conn)
    assert [seen_as(tx, like) for tx, like in zip(found, expected)] == expected
    assert len(found) == len(expected)


# ---------------------------------------------------------------------------- bodies from raw bytes

# Gap-free captures where a plain reading of the streams is unambiguous.
GAP_FREE = [
    "arkime/http-100-continue.pcap",
    "arkime/http-500-head.pcap",
    "arkime/http-no-length.pcap",
    "arkime/http-simple-get.pcap",
    "arkime/http-syn-ack.pcap",
    "arkime/https-connect.pcap",
    "arkime/v6-http.pcap",
    "arkime/wireshark-retrans.pcap",
    "gopacket/pcap_test_ethernet.pcap",
    "gopacket/pcap_test_loopback.pcap",
    "suricata-verify/alert-testmyids-midstream__input.pcap",
    "suricata-verify/bug-4810__pppoe-session-http.pcap",
    "suricata-verify/http-async__input.pcap",
    "suricata-verify/http-connect__http-connect-simple__input.pcap",
    "suricata-verify/http-multiple100__input.pcap",
    "suricata-verify/http-sticky-start__input.pcap",
    "suricata-verify/tcp-stream-after-swap__http-start-from-response.pcap",
    "suricata-verify/websocket__basic_websockets.pcap",
    "zeek/http__100-continue.pcap",
    "zeek/http__261__variant-04-te_cl_desync.pcap",
    "zeek/http__261__variant-07-expect_100_cl0.pcap",
    "zeek/http__connect-with-header.pcap",
    "zeek/http__cooper-grill-dvwa.pcapng",
    "zeek/http__docker-http-upgrade.pcap",
    "zeek/http__get.pcap",
    "zeek/http__http-desync-request-response-5.pcap",
    "zeek/http__http-large-gap.pcap",
    "zeek/http__multipart.pcap",
    "zeek/http__no_crlf.pcap",
    "zeek/http__pipelined-requests.pcap",
    "zeek/http__smuggle-http-request.pcap",
    "zeek/http__websocket.pcap",
    "zeek/wikipedia.pcap",
]


@pytest.mark.parametrize("name", GAP_FREE)
def test_bodies_are_the_bytes_of_the_streams(name):
    """Each request and response, its body byte for byte (de-chunked), as a plain reading of the
    reassembled streams finds them."""
    result = _replay(name)
    found = transactions(name)
    assert found
    for conn in sorted({t.connection for t in found}):
        assert not any(gaps(name, conn, True) + gaps(name, conn, False))
        txs = [t for t in found if t.connection == conn]
        requests = read_messages(result.stream(conn, True), responses=False)
        responses = read_messages(result.stream(conn, False), responses=True,
                                  methods=[m.method for m in requests])
        assert [(q.method, q.target, q.body_bytes, q.body) for t in txs if (q := t.request)] == [
            (m.method, m.target, len(m.body), m.body) for m in requests
        ]
        expected = []
        interim: list[int] = []
        for m in responses:
            if m.status < 200 and m.status != 101:
                interim.append(m.status)
                continue
            expected.append((m.status, tuple(interim), len(m.body), m.body))
            interim = []
        assert [
            (r.status, tuple(s for s, _, _ in r.interim), r.body_bytes, r.body)
            for t in txs if (r := t.response)
        ] == expected
        for t in txs:
            for message in (t.request, t.response):
                assert message is None or message.body_missing == 0


def test_chunked_bodies_are_counted_after_removing_the_framing():
    """no_crlf's answers are chunked: de-chunk the raw server stream here and compare."""
    name = "zeek/http__no_crlf.pcap"
    server = _replay(name).stream(0, False)
    found = transactions(name)
    pos = 0
    for tx in found:
        assert tx.response is not None
        head_end = server.index(b"\r\n\r\n", pos) + 4
        assert server.startswith(b"HTTP/1.1 200 OK\r\n", pos)
        assert b"Transfer-Encoding: chunked\r\n" in server[pos:head_end]
        body, pos = dechunk(server, head_end)
        assert pos - head_end > len(body)  # the framing was there, and is not counted
        assert tx.response.body_bytes == len(body)
        assert tx.response.body == body
    assert len(found) == 5 and pos == len(server)


def test_content_length_body_is_the_bytes_after_the_blank_line():
    name = "zeek/http__get.pcap"
    server = _replay(name).stream(0, False)
    head_end = server.index(b"\r\n\r\n") + 4
    assert b"Content-Length: 4705\r\n" in server[:head_end]
    [tx] = transactions(name)
    assert tx.response is not None
    assert tx.response.body == server[head_end:] and len(server) - head_end == 4705


def test_close_delimited_body_ends_at_the_fin():
    name = "arkime/http-no-length.pcap"
    server = _replay(name).stream(0, False)
    head_end = server.index(b"\r\n\r\n") + 4
    assert b"content-length" not in server[:head_end].lower()
    [tx] = transactions(name)
    assert tx.response is not None and tx.response.complete
    assert tx.response.body == server[head_end:]
    [info] = _replay(name).infos()
    assert info.conn_state == "SF"
    server_port = int(info.server.rsplit(":", 1)[1])
    [fin_ts] = [float(p.time) for p in rdpcap(capture(name))
                if p[TCP].sport == server_port and p[TCP].flags & 0x01]
    assert tx.response.end_ts == pytest.approx(fin_ts, abs=1e-6)


@pytest.mark.parametrize(("name", "conn"), [("arkime/http-500-head.pcap", 0),
                                           ("zeek/http__methods.pcap", 44)])
def test_an_answer_to_head_ends_with_its_head(name, conn):
    """Not at the server's FIN, as a body without a length would (the FIN comes in the next
    packet, 2 microseconds later in http-500-head)."""
    [tx] = transactions(name, conn)
    assert tx.request is not None and tx.request.method == "HEAD"
    assert tx.response is not None and tx.response.complete and tx.response.body_bytes == 0
    info = _replay(name).infos()[conn]
    client_port = int(info.client.rsplit(":", 1)[1])
    server_port = int(info.server.rsplit(":", 1)[1])
    [fin_ts] = [float(p.time) for p in rdpcap(capture(name))
                if (p[TCP].sport, p[TCP].dport) == (server_port, client_port)
                and p[TCP].flags & 0x01]
    assert tx.response.end_ts == tx.response.ts < fin_ts


def test_interim_responses_come_before_the_final_one():
    for name in ("zeek/http__100-continue.pcap", "suricata-verify/http-multiple100__input.pcap"):
        [tx] = transactions(name)
        assert tx.request is not None and tx.response is not None
        times = [ts for _, _, ts in tx.response.interim]
        assert times and all(tx.request.ts <= ts <= tx.response.ts for ts in times)
        assert [reason for _, reason, _ in tx.response.interim] == ["Continue"] * len(times)


# ---------------------------------------------------------------------------- gaps, from raw bytes

GAPPED = [
    # (capture, connection, transaction index, server bytes lost)
    ("suricata-verify/http-gap-simple__input.pcap", 0, 1, [14]),
    ("suricata-verify/http-gap-double__input.pcap", 0, 1, [14, 14]),
    ("suricata-verify/http-pipeline-files-with-gap__input.pcap", 0, 1, [733]),
    ("zeek/http__entity_gap.pcap", 0, 0, [1448]),
    ("zeek/http__content-range-gap.pcap", 0, 0, [1380]),
]


@pytest.mark.parametrize(("name", "conn", "index", "lost"), GAPPED)
def test_a_gap_inside_a_content_length_body_is_missing_body(name, conn, index, lost):
    """The body is as long as its Content-Length says; the bytes seen are the bytes in the
    stream between the head and the next response (or the end); the rest is body_missing."""
    assert gaps(name, conn, False) == lost
    assert gaps(name, conn, True) == []
    server = _replay(name).stream(conn, False)
    txs = transactions(name, conn)
    tx = txs[index]
    assert tx.response is not None and tx.response.complete and tx.error is None
    # Find this response's head in the stream: the index-th status line.
    starts = [m.start() for m in re.finditer(rb"HTTP/1\.[01] \d{3} ", server)]
    head_start = starts[index]
    head_end = server.index(b"\r\n\r\n", head_start) + 4
    length = int(re.search(rb"Content-Length: (\d+)", server[head_start:head_end]).group(1))
    seen_until = starts[index + 1] if index + 1 < len(starts) else len(server)
    seen = server[head_end:seen_until]
    assert tx.response.body_bytes == length
    assert tx.response.body_missing == sum(lost)
    assert tx.response.body_bytes - tx.response.body_missing == len(seen)
    assert tx.response.body == seen
    # Where each run fell in the body: the engine's gap events, in stream offsets (which count
    # missing bytes), less the head and the bytes missing before them.
    events = [g for g in _replay(name).events
              if isinstance(g, Gap) and g.connection == conn and not g.from_client]
    missing_before = [sum(g.size for g in events[:i]) for i in range(len(events))]
    expected = [(g.offset - before - head_end, g.size) for g, before in zip(events, missing_before)]
    assert list(tx.response.body_gaps) == expected
    assert [size for _, size in tx.response.body_gaps] == lost
    # The exchanges around it are untouched.
    for other in txs:
        if other is not tx:
            assert other.response is None or other.response.body_missing == 0


# ---------------------------------------------------------------------------- tunnels


def test_sni_from_inside_a_connect_tunnel():
    [info] = _replay("zeek/http__connect-with-header.pcap").infos()
    assert info.sni == "secure.newegg.com"
    assert info.protocol == "http"


def test_connect_tunnel_without_sni():
    # The ClientHello in this tunnel has no server_name extension (only ec_point_formats,
    # supported_groups, session_ticket, signature_algorithms, heartbeat): nothing to report.
    result = _replay("arkime/https-connect.pcap")
    client = result.stream(0, True)
    hello = client[client.index(b"\r\n\r\n") + 4:]
    assert hello[:1] == b"\x16"  # a TLS handshake record does follow the CONNECT
    [info] = result.infos()
    assert info.sni is None


@pytest.mark.parametrize("name", [
    "arkime/https-connect.pcap",
    "zeek/http__connect-with-header.pcap",
    "zeek/http__websocket.pcap",
    "suricata-verify/websocket__basic_websockets.pcap",
])
def test_nothing_after_a_tunnel_opens_is_parsed(name):
    txs = transactions(name)
    assert txs[-1].tunnel
    assert sum(t.tunnel for t in txs) == 1
    assert all(t.error is None and not t.notes for t in txs)


# ---------------------------------------------------------------------------- one dropped response


ONE_DROPPED = "zeek/http__1000-requests-one-dropped-response.pcap"


def test_one_dropped_response_leaves_999_responses_for_1000_requests():
    txs = transactions(ONE_DROPPED)
    assert gaps(ONE_DROPPED, 0, False) == [238]  # the first response's head never arrived
    assert len(txs) == 1000
    assert [t.index for t in txs] == list(range(1000))
    assert all(t.request is not None and t.request.method == "GET" for t in txs)
    responses = [t.response for t in txs if t.response is not None]
    assert len(responses) == 999
    assert {(r.status, r.body_bytes, r.complete) for r in responses} == {(200, 615, True)}
    # Request 0 says its answer was not captured; request 1 says bytes were lost before its answer.
    assert [t.index for t in txs if t.notes] == [0, 1]
    assert "not captured" in txs[0].notes[0] and "lost" in txs[1].notes[0]


def test_one_dropped_response_pairs_the_others_with_their_own_requests():
    # python-requests sends each request only after the previous answer has ended, so the answer
    # to request i starts after request i and before request i+1. Request 0's answer lost its
    # head in the gap (its 615 body bytes were seen but cannot be told from noise).
    txs = transactions(ONE_DROPPED)
    assert txs[0].response is None
    for tx, after in zip(txs[1:], txs[2:]):
        assert tx.request is not None and tx.response is not None and after.request is not None
        assert tx.request.ts <= tx.response.ts <= after.request.ts
    assert txs[-1].response is not None
    assert any("lost" in note for note in txs[1].notes + txs[0].notes)


# ---------------------------------------------------------------------------- known limits


def test_chunked_request_with_bare_lf_lines():
    """Chunked framing with bare LF line ends is read as tshark reads it, and noted."""
    name = "suricata-verify/http-event-chunk__input.pcap"
    client = _replay(name).stream(0, True)
    head_end = client.index(b"\n\n") + 2
    body, end = dechunk(client, head_end)
    assert (body, end) == (b"tototatatiti", len(client))
    [tx] = transactions(name)
    assert tx.request is not None and tx.response is not None
    assert (tx.request.method, tx.request.target) == ("POST", "/qwe.asd")
    assert tx.request.complete and tx.error is None
    assert tx.request.body_bytes == len(body) and tx.request.body == body
    assert (tx.response.status, tx.response.body_bytes) == (200, 1)  # close-delimited "\n"
    assert "the request's chunked framing uses bare LF line ends" in tx.notes


def test_response_after_a_gap_beyond_the_body():
    # The 127-byte gap holds the first answer's 12-byte body and the second answer's head and
    # first body bytes; the third answer (113 bytes, "Hello People") is all in the capture.
    name = "suricata-verify/http-gap-beyond-body__input.pcap"
    assert gaps(name, 0, False) == [127]
    server = _replay(name).stream(0, False)
    assert server.endswith(b"Content-Length: 12\r\n\r\nHello People\r\n")
    txs = transactions(name)
    assert [t.request.target for t in txs if t.request] == ["/1", "/2", "/3"]
    assert txs[0].response is not None
    assert (txs[0].response.body_bytes, txs[0].response.body_missing) == (12, 12)
    last = txs[-1]
    assert last.response is not None and last.request is not None
    assert last.request.target == "/3"
    assert last.response.body == b"Hello People"


# ---------------------------------------------------------------------------- every capture

ALL = all_captures()
HTTP_CAPTURES = [n for n in ALL if transactions(n)]


def test_many_captures_hold_http():
    assert len(HTTP_CAPTURES) > 60


@pytest.mark.parametrize("name", HTTP_CAPTURES)
def test_timestamps_and_indexes_are_sane(name):
    by_conn: dict[int, list[int]] = {}
    protocols = {i.id: i.protocol for i in _replay(name).infos()}
    for tx in transactions(name):
        by_conn.setdefault(tx.connection, []).append(tx.index)
        # HTTP/2 streams are numbered by their id (index = id >> 1): sorted by that, every
        # stream of h2-loopback's h2c connection is there from stream 1 on.
        assert protocols[tx.connection] == ("http" if tx.stream is None else "http2")
        for message in (tx.request, tx.response):
            if message is None:
                continue
            assert message.end_ts is None or message.ts <= message.end_ts
            assert 0 <= message.body_missing <= message.body_bytes
            assert len(message.body) <= message.body_bytes
        if tx.request is not None and tx.response is not None and tx.response.end_ts is not None:
            assert tx.response.end_ts >= tx.request.ts, (tx.connection, tx.index)
    for conn, indexes in by_conn.items():
        assert indexes == list(range(len(indexes))), conn


@pytest.mark.parametrize("name", HTTP_CAPTURES)
def test_an_incomplete_message_always_says_why(name):
    for tx in transactions(name):
        for message in (tx.request, tx.response):
            if message is not None and not message.complete:
                cut = any(note.startswith("only the first ") for note in tx.notes)
                assert tx.error or cut, (tx.connection, tx.index)


# ---------------------------------------------------------------------------- tshark's figures


def _tshark_counts(name: str) -> tuple[dict[str, int], dict[str, int]]:
    profile = tshark_profiles()[name]
    requests = re.search(r"req=(\{[^}]*\})", profile)
    responses = re.search(r"resp=(\{[^}]*\})", profile)
    assert requests is not None and responses is not None, profile
    return ast.literal_eval(requests.group(1)), ast.literal_eval(responses.group(1))


def _counts(name: str) -> tuple[dict[str, int], dict[str, int]]:
    txs = transactions(name)
    requests = Counter(t.request.method for t in txs if t.request is not None)
    responses = Counter(
        str(status) for t in txs if t.response is not None
        for status in [*(s for s, _, _ in t.response.interim), t.response.status]
    )
    return dict(requests), dict(responses)


# wirepeek's (requests by method, responses by status) where they differ from the README's
# tshark figures, and why.
TSHARK_DIFFERS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    # tshark does not reorder: the POST's second segment came first, then a retransmission of the
    # whole request; wirepeek reassembles the POST (300-byte body) and the start of its 200, cut
    # off by the end of the capture (reported incomplete, with an error).
    "arkime/http-tcp-seq-issue.pcap": ({"POST": 1}, {"200": 1}),
    # The capture ends inside the 200's body: tshark never completes the response's reassembly;
    # wirepeek reports it incomplete with "the stream ended inside the message".
    "arkime/no-syn-ack.pcap": ({"GET": 1}, {"200": 1}),
    "arkime/twovlan.pcap": ({"GET": 1}, {"200": 1}),
    # HTTP inside a SOCKS5 connection: tshark dissects SOCKS; wirepeek does not, so the
    # connection is not recognised as HTTP at all.
    "arkime/socks5-http-302-frag.pcap": ({}, {}),
    # tshark counts retransmitted "200 OK" segments (frames 42 and others) again; wirepeek
    # delivers each stream byte once.
    "arkime/wireshark-retrans.pcap": ({"POST": 4}, {"200": 4}),
    # tshark dissects inside the CONNECT tunnel (its GET); wirepeek keeps tunnels opaque.
    "suricata-verify/http-connect__http-connect-simple__input.pcap": ({"CONNECT": 1}, {"200": 1}),
    # Lost segments inside bodies: tshark drops the responses it cannot reassemble; wirepeek
    # reports them with body_missing, and finds GET /3's answer after the gap.
    "suricata-verify/http-gap-beyond-body__input.pcap": ({"GET": 3}, {"200": 2}),
    "suricata-verify/http-gap-double__input.pcap": ({"GET": 3}, {"200": 3}),
    # wirepeek's own escapes.pcap: the first request line has a raw ESC ] 2 ; title BEL in its
    # target, which h11 refuses; wirepeek reports nginx's 400 without its request, with the error.
    "escapes.pcap": ({"GET": 1, "POST": 1}, {"400": 1, "200": 2}),
    "suricata-verify/http-gap-simple__input.pcap": ({"GET": 3}, {"200": 3}),
    "suricata-verify/http-pipeline-files-with-gap__input.pcap": ({"GET": 3}, {"200": 3}),
    "zeek/http__content-range-gap.pcap": ({"GET": 1}, {"206": 1}),
    "zeek/http__entity_gap.pcap": ({"GET": 1}, {"200": 1}),
    # Deliberately malformed (two conflicting Content-Lengths): see the multiple-content-length
    # case above.
    "suricata-verify/http-multiple-cl__input.pcap": ({}, {"501": 1}),
    # Port 9090 is no HTTP port to tshark: it finds the answer by heuristics, not the request,
    # which starts in a 10-byte segment ("GET /malic"). With "-d tcp.port==9090,http" tshark
    # finds it too, and, like wirepeek, keeps the urgent byte in line: "/malicXious".
    "suricata-verify/tcp-urgp-01-oob__tcp-urgent1.pcap": ({"GET": 1}, {"200": 1}),
    # Deliberately malformed request lines ("GET / HTTP/1.", "OPTIONSHTTP/1.1", "PUT/ HTTP/1.1",
    # ...): tshark names a method on 19 of them; wirepeek reports the server's answers to them
    # without a request, with a note of the client bytes it could not read as one.
    "zeek/http__methods.pcap": (
        {"OPTIONS": 1, "GET": 2, "CCM_POST": 1, "CONNECT": 1, "TRACE": 1, "DELETE": 1, "PUT": 1,
         "HEAD": 1},
        {"405": 8, "400": 30, "200": 5, "403": 1, "411": 5},
    ),
    # Port 27272 is no HTTP port to tshark, which finds the answer by heuristics but not the
    # request, sent a byte or a few at a time ("GET / HTTP/1.0\n\n" in 8 segments); with
    # "-d tcp.port==27272,http" it finds the GET.
    "zeek/tcp-http-with-padding.pcap": ({"GET": 1}, {"200": 1}),
    # A head cut short: the request line of a GET, then 16 bytes never captured and a reset (and
    # in tcp__reassembly, a SEARCH whose head is cut by the snapshot length, then lost). tshark
    # shows nothing it cannot reassemble; wirepeek reports the request as far as it was seen,
    # incomplete, with a note saying the rest was not captured.
    "suricata-verify/tcp-rst-unacked-stream-07-http__input.pcap": ({"GET": 1}, {}),
    "zeek/tcp__reassembly.pcap": ({"SEARCH": 1}, {}),
    # The GET rides on the SYN-ACK, i.e. it comes from the side that answered the SYN: wirepeek
    # reads requests only from the client's stream.
    "zeek/tcp__payload-synack.pcap": ({}, {}),
    # The h2c connection's one exchange: tshark dissects it as HTTP/2 (http2 fields), which the
    # profile's HTTP/1 counts leave out; wirepeek reports it as an HTTP record with version 2.
    "h2-loopback.pcap": ({"GET": 1}, {"200": 1}),
}


@pytest.mark.parametrize("name", [
    n for n in ALL if n in TSHARK_DIFFERS or n in HTTP_CAPTURES or any(_tshark_counts(n))
])
def test_counts_agree_with_tshark_or_the_difference_is_explained(name):
    if name in TSHARK_DIFFERS:
        assert _counts(name) == TSHARK_DIFFERS[name]
        assert _counts(name) != _tshark_counts(name)  # else the entry is stale
    else:
        assert _counts(name) == _tshark_counts(name)


@pytest.mark.parametrize("name", GAP_FREE)
def test_messages_know_where_they_start_in_their_stream(name):
    """Each message's offset points at its start line in the reassembled stream of its direction
    (the stream view marks message boundaries with it), and offsets grow along the connection."""
    result = _replay(name)
    found = transactions(name)
    for conn in sorted({t.connection for t in found}):
        upstream, downstream = result.stream(conn, True), result.stream(conn, False)
        starts: dict[bool, list[int]] = {True: [], False: []}
        for t in (t for t in found if t.connection == conn):
            if (q := t.request) is not None:
                assert upstream[q.offset :].startswith(f"{q.method} {q.target} ".encode("latin-1"))
                starts[True].append(q.offset)
            if (r := t.response) is not None:
                assert downstream[r.offset :].startswith(f"HTTP/{r.version} {r.status}".encode())
                starts[False].append(r.offset)
        for offsets in starts.values():
            assert offsets == sorted(set(offsets)) and all(o >= 0 for o in offsets)
