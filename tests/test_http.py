"""The HTTP parser fed with stream bytes directly: table-driven, whole, byte by byte, split."""

from __future__ import annotations

import h11
import pytest

from engine import http
from engine.bounds import Bounds
from engine.connections import ConnectionTable
from engine.events import Event, HttpRequest, HttpResponse, HttpTransaction
from engine.http import HttpParser
from engine.reassembly import NO_ACK
from engine.tcp import Connection

# A script is a list of steps: (True, bytes) client data, (False, bytes) server data,
# ("gap", from_client, size), ("end", from_client).
Step = tuple


def run(script: list[Step], split: int | None = None, max_body: int = 1 << 20) -> list[HttpTransaction]:
    """Feed a script; data steps are cut into pieces of `split` bytes when given."""
    out: list[Event] = []
    conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 1, False)
    parser = HttpParser(conn, out.append, max_body)
    offsets = {True: 0, False: 0}
    ts = 100.0
    for step in script:
        ts += 1.0
        if step[0] == "gap":
            parser.on_gap(conn, step[1], ts, offsets[step[1]], step[2], "acked")
            offsets[step[1]] += step[2]
        elif step[0] == "end":
            parser.on_end(conn, step[1], ts)
        else:
            data = step[1]
            size = split or len(data) or 1
            for i in range(0, len(data), size):
                piece = data[i : i + size]
                parser.on_data(conn, step[0], ts, offsets[step[0]], piece, NO_ACK)
                offsets[step[0]] += len(piece)
    parser.on_close(conn, ts + 1)
    return [e for e in out if isinstance(e, HttpTransaction)]


def summary(tx: HttpTransaction) -> tuple:
    req, resp = tx.request, tx.response
    return (
        req and req.method,
        req and req.target,
        req and req.body_bytes,
        resp and resp.status,
        resp and resp.body_bytes,
        resp and tuple(s for s, _, _ in resp.interim),
        tx.tunnel,
        tx.error is not None,
    )


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
GET2 = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
GET3 = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
OK3 = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;name=value\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n"
)
POST_EXPECT = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

CASES = [
    ("one exchange", [(True, GET), (False, OK5)],
     [("GET", "/a", 0, 200, 5, (), False, False)]),
    ("keep-alive", [(True, GET), (False, OK5), (True, GET2), (False, NOT_FOUND)],
     [("GET", "/a", 0, 200, 5, (), False, False), ("GET", "/b", 0, 404, 9, (), False, False)]),
    ("pipelined", [(True, GET + GET2 + GET3), (False, OK5 + OK3 + NOT_FOUND)],
     [("GET", "/a", 0, 200, 5, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False),
      ("GET", "/c", 0, 404, 9, (), False, False)]),
    ("100 continue", [(True, POST_EXPECT), (False, CONTINUE), (True, b"data"), (False, OK5)],
     [("POST", "/up", 4, 200, 5, (100,), False, False)]),
    ("two 100s", [(True, POST_EXPECT), (False, CONTINUE + CONTINUE), (True, b"data"), (False, OK3)],
     [("POST", "/up", 4, 200, 3, (100, 100), False, False)]),
    ("HEAD has no body whatever the headers say",
     [(True, b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n" + GET2),
      (False, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + OK3)],
     [("HEAD", "/a", 0, 200, 0, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("204 and 304 have no body",
     [(True, GET + GET2),
      (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
              b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n")],
     [("GET", "/a", 0, 204, 0, (), False, False), ("GET", "/b", 0, 304, 0, (), False, False)]),
    ("chunked with extension and trailer", [(True, GET), (False, CHUNKED), (True, GET2), (False, OK3)],
     [("GET", "/a", 0, 200, 9, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("chunked request body",
     [(True, b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
      (False, OK5)],
     [("POST", "/p", 3, 200, 5, (), False, False)]),
    ("body delimited by the close",
     [(True, b"GET /old HTTP/1.0\r\n\r\n"), (False, b"HTTP/1.0 200 OK\r\n\r\nall of this"),
      ("end", False)],
     [("GET", "/old", 0, 200, 11, (), False, False)]),
    ("connection close", [(True, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                          (False, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello")],
     [("GET", "/a", 0, 200, 5, (), False, False)]),
    ("CONNECT makes a tunnel",
     [(True, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
      (False, b"HTTP/1.1 200 Connection established\r\n\r\n"),
      (True, GET), (False, OK5)],
     [("CONNECT", "example.com:443", 0, 200, 0, (), True, False)]),
    ("refused CONNECT stays HTTP",
     [(True, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
      (False, b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"),
      (True, GET), (False, OK5)],
     [("CONNECT", "example.com:443", 0, 407, 0, (), False, False),
      ("GET", "/a", 0, 200, 5, (), False, False)]),
    ("websocket upgrade",
     [(True, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
      (False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
      (True, b"\x81\x05hello" + GET), (False, b"\x81\x02hi")],
     [("GET", "/ws", 0, 101, 0, (), True, False)]),
    ("upgrade declined", [(True, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n" + GET2),
                          (False, OK5 + OK3)],
     [("GET", "/ws", 0, 200, 5, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("HTTP/1.0 request", [(True, b"GET / HTTP/1.0\r\n\r\n"), (False, OK5)],
     [("GET", "/", 0, 200, 5, (), False, False)]),
    ("blank lines between requests", [(True, GET + b"\r\n" + GET2), (False, OK5 + OK3)],
     [("GET", "/a", 0, 200, 5, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("request without response", [(True, GET)], [("GET", "/a", 0, None, None, None, False, False)]),
    ("capture starts inside a response",
     [(False, b"tail of a body\r\n" + OK5), (True, b"ody\r\n" + GET2), (False, OK3)],
     [(None, None, None, 200, 5, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("bad header line, then the next request",
     [(True, b"GET /x HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n" + GET2), (False, NOT_FOUND + OK3)],
     [(None, None, None, 404, 9, (), False, True), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("no Host is shown, with a note", [(True, b"GET /a HTTP/1.1\r\n\r\n"), (False, OK5)],
     [("GET", "/a", 0, 200, 5, (), False, False)]),
    ("chunked with bare LF line ends",
     [(True, GET), (False, b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n4\nWiki\n5 ;x=y\npedia\n0\n\n"),
      (True, GET2), (False, OK3)],
     [("GET", "/a", 0, 200, 9, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("chunked request with bare LF and a trailer",
     [(True, b"POST /p HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n3\nabc\n0\nX-T: 1\n\n" + GET2),
      (False, OK5 + OK3)],
     [("POST", "/p", 3, 200, 5, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]),
    ("bad chunk size is an error, then the next answer",
     [(True, GET + GET2), (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + OK3)],
     [("GET", "/a", 0, 200, 0, (), False, True), ("GET", "/b", 0, 200, 3, (), False, False)]),
]


@pytest.mark.parametrize("name,script,expected", CASES, ids=[c[0] for c in CASES])
def test_whole(name, script, expected):
    assert [summary(t) for t in run(script)] == expected


@pytest.mark.parametrize("name,script,expected", CASES, ids=[c[0] for c in CASES])
def test_byte_by_byte(name, script, expected):
    assert [summary(t) for t in run(script, split=1)] == expected


@pytest.mark.parametrize("name,script,expected", CASES, ids=[c[0] for c in CASES])
def test_every_split_size(name, script, expected):
    longest = max(len(s[1]) for s in script if isinstance(s[1], bytes))
    for size in range(2, longest):
        assert [summary(t) for t in run(script, split=size)] == expected, size


def test_every_split_point_of_a_pipelined_exchange():
    client, server = GET + GET2, CHUNKED + OK3
    expected = [("GET", "/a", 0, 200, 9, (), False, False), ("GET", "/b", 0, 200, 3, (), False, False)]
    for cut in range(1, len(server)):
        script = [(True, client[:cut % len(client)]), (True, client[cut % len(client):]),
                  (False, server[:cut]), (False, server[cut:])]
        assert [summary(t) for t in run(script)] == expected, cut


def test_bodies_and_timing():
    [tx] = run([(True, GET), (False, CHUNKED)])
    assert tx.response is not None and tx.request is not None
    assert tx.response.body == b"Wikipedia"
    assert tx.response.headers == (("Transfer-Encoding", "chunked"),)
    assert tx.request.ts == 101.0 and tx.request.end_ts == 101.0
    assert tx.response.ts == 102.0 and tx.response.end_ts == 102.0
    assert tx.wait == 1.0 and tx.duration == 1.0


def test_body_kept_up_to_the_limit():
    [tx] = run([(True, GET), (False, OK5)], max_body=3)
    assert tx.response is not None
    assert tx.response.body == b"hel" and tx.response.body_bytes == 5


def test_missing_host_is_noted_not_refused():
    [tx] = run([(True, b"GET /a HTTP/1.1\r\n\r\n"), (False, OK5)])
    assert tx.notes == ("no Host header",)
    assert tx.request is not None and tx.request.version == "1.1" and tx.request.headers == ()


def test_gap_inside_a_known_length_body_is_skipped():
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    [tx, tx2] = run([(True, GET + GET2), (False, body + b"x" * 30), ("gap", False, 50),
                     (False, b"y" * 20 + OK3)])
    assert tx.response is not None
    assert (tx.response.body_bytes, tx.response.body_missing, tx.response.complete) == (100, 50, True)
    assert tx.response.body == b"x" * 30 + b"y" * 20  # the missing bytes are not invented
    assert tx2.response is not None and tx2.response.status == 200 and tx2.notes == ()


def test_gap_that_swallows_the_end_of_a_body_resynchronises():
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    [tx, tx2] = run([(True, GET + GET2), (False, body + b"x" * 5), ("gap", False, 40),
                     (False, b"junk\r\n" + OK3)])
    assert tx.response is not None and tx.response.body_missing == 5 and tx.response.complete
    assert tx2.response is not None and tx2.response.body_bytes == 3
    assert tx2.notes and "lost or not understood" in tx2.notes[0]


def test_gap_inside_chunked_body_is_an_error_then_resync():
    [tx, tx2] = run([(True, GET + GET2), (False, CHUNKED[:60]), ("gap", False, 10),
                     (False, CHUNKED[70:] + OK3)])
    assert tx.error is not None and "lost" in tx.error
    assert tx2.response is not None and tx2.response.status == 200


def test_gap_between_requests_is_noted_on_the_next():
    [tx, tx2] = run([(True, GET), ("gap", True, 30), (True, GET2), (False, OK5 + OK3)])
    assert tx2.notes and "30 bytes" in tx2.notes[0]


def test_response_bytes_never_raise_on_garbage():
    script = [(True, bytes(range(256)) * 4), (False, b"HTTP/1.1 999 \x00\r\n\r\n" + bytes(range(200)))]
    for tx in run(script, split=7):
        assert tx.index >= 0


def test_h11_internals_we_rely_on_exist():
    """engine.http uses h11's parsing layer; a new h11 release must keep it (see pyproject)."""
    assert h11.__version__.startswith("0.16")
    assert callable(http._body_framing) and callable(http.maybe_read_from_SEND_RESPONSE_server)
    assert hasattr(http.ReceiveBuffer(), "_data")


def test_transactions_completed_in_later_batches_reach_the_caller():
    """Regression: events a consumer emitted after the first batch used to be dropped."""
    from engine.batch import Batch
    from engine.pipeline import Pipeline
    from tests.synth import TcpConversation

    conv = TcpConversation()
    packets = conv.handshake() + conv.client_send(GET) + conv.server_send(OK5) + conv.close()
    pipeline = Pipeline()
    seen = []
    for packet in packets:  # one packet per batch
        seen += [e for e in pipeline.feed(Batch.from_packets(1, [packet])) if isinstance(e, HttpTransaction)]
    assert [summary(t) for t in seen] == [("GET", "/a", 0, 200, 5, (), False, False)]
    assert not [e for e in pipeline.finish() if isinstance(e, HttpTransaction)]


def test_bare_lf_chunked_framing_is_noted():
    [tx] = run([(True, GET), (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"4\nWiki\n0\n\n")])
    assert tx.response.body == b"Wiki" and tx.error is None
    assert tx.notes == ("the response's chunked framing uses bare LF line ends",)
    [tx] = run([(True, GET), (False, CHUNKED)])
    assert tx.notes == ()


def test_marks_answer_as_a_plain_list_would_after_any_forgetting():
    # _Side keeps its marks in a list with a moving head (compacted now and then); what it
    # answers must be what the whole list of the marks not forgotten answers.
    import random

    rng = random.Random(7)
    for _ in range(200):
        side = http._Side()
        kept: list[tuple[int, float, int]] = []
        offset = 0
        for step in range(rng.randint(1, 300)):
            if rng.random() < 0.6:
                mark = (offset, float(step), step)
                side.marks.append(mark)
                kept.append(mark)
                offset += rng.randint(1, 5)
            else:
                at = rng.randint(0, offset + 3)
                side.forget_before(at)
                while len(kept) > 1 and kept[1][0] <= at:
                    kept.pop(0)
            probe = rng.randint(-2, offset + 3)
            expected = next(((ts, ack) for start, ts, ack in reversed(kept) if start <= probe),
                            (kept[0][1], kept[0][2]) if kept else (0.0, NO_ACK))
            assert side.mark_at(probe) == expected
        assert side.marks[side.marks_head:] == kept


@pytest.mark.parametrize("head", [GET, b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"])
def test_an_exchange_is_made_with_every_field_of_its_named_tuples(head: bytes) -> None:
    # engine.http makes HttpTransaction, HttpRequest and HttpResponse with tuple.__new__ from
    # all their fields: one left out (a field added to the class) must not pass unnoticed. The
    # first head is read by the fast path, the second (a folded line) by h11.
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    (tx,) = run([(True, head), (False, answer)])
    assert type(tx) is HttpTransaction and len(tx) == len(HttpTransaction._fields)
    assert type(tx.request) is HttpRequest and len(tx.request) == len(HttpRequest._fields)
    assert type(tx.response) is HttpResponse and len(tx.response) == len(HttpResponse._fields)
    assert tx.request.trailers == tx.response.trailers == () and tx.stream is tx.grpc is None
    assert (tx.response.status, tx.response.body, tx.response.interim[0][0]) == (200, b"ok", 100)
