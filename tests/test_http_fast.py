"""The fast path for plain heads (engine.http._plain_head) against h11, the parser of record.

A head the fast path reads must give exactly what h11 gives for it (start line, fields, framing,
where the head ends); anything else must be left to h11. Checked head by head on generated heads
that are mostly plain with the oddities h11 cares about mixed in, on whole conversations cut at
every point, and on every bundled capture, with the fast path on and off.
"""

from __future__ import annotations

import h11
import pytest
from h11._connection import _body_framing
from h11._readers import maybe_read_from_SEND_RESPONSE_server
from h11._receivebuffer import ReceiveBuffer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import engine
from engine import http
from engine.batch import Batch
from engine.bounds import Bounds
from engine.connections import ConnectionTable
from engine.events import Event, HttpRequestSeen, HttpTransaction
from engine.http import HeadCache, HttpParser
from engine.pipeline import Pipeline
from engine.reassembly import NO_ACK
from engine.tcp import Connection
from tests.captures import PCAPS, all_captures, replay_file
from tests.conversations import build, interleavings
from tui.cli import DEMO_CAPTURE

METHODS = (b"GET", b"HEAD", b"CONNECT", b"POST")


def by_h11(data: bytes, request: bool) -> tuple | None:
    """How engine.http reads this head through h11: (bytes taken, start line, fields, note,
    framing for each request method), an error, or None while incomplete."""
    buf = ReceiveBuffer()
    buf += data
    try:
        if request:
            head, fields, note = http.read_request_head(buf)
        else:
            head, fields, note = maybe_read_from_SEND_RESPONSE_server(buf), None, None
    except h11.ProtocolError as e:
        return ("error", str(e))
    if head is None:
        return None
    taken = len(data) - len(buf)
    if type(head) is h11.InformationalResponse:
        return ("interim", taken, head.status_code)
    if request:
        start = (head.method, head.target, head.http_version)
        framing: tuple = (_body_framing(b"", head),)
    else:
        start = (head.status_code, head.reason, head.http_version)
        fields = head.headers.raw_items()
        framing = tuple(_body_framing(m, head) for m in METHODS)
    return (taken, start, [tuple(f) for f in fields], note, framing)


def by_fast(data: bytes, request: bool) -> tuple | None:
    """The same for the fast path; None when it leaves the head to h11. It is read
    both ways it has (engine.http.SCAN_HEADS: a byte loop, the compiled build's, or patterns
    and searches), which must agree."""
    chosen = http.SCAN_HEADS
    try:
        http.SCAN_HEADS = True
        scanned = read_fast(data, request)
        http.SCAN_HEADS = False
        searched = read_fast(data, request)
    finally:
        http.SCAN_HEADS = chosen
    assert scanned == searched
    # Read in one pass from the buffer's first bytes, its end found as it goes (as the parser
    # does when its head cache is paused): the same head, ending at the same place.
    head, end = http._scanned_head(bytes(data[:http.FAST_HEAD]), request)
    assert (head is None) == (scanned is None)
    if head is not None:
        assert described(head, request, end) == scanned
    return scanned


def read_fast(data: bytes, request: bool) -> tuple | None:
    buf = bytearray(data)
    end = HeadCache.head_end(buf)
    head = http._plain_head(buf, end, request) if end >= 0 else None
    return None if head is None else described(head, request, end)


def described(head: http._Head, request: bool, end: int) -> tuple:
    """A head the fast path read, its CRLFCRLF at `end`, as by_h11 describes one."""
    if request:
        start = (head.method, head.target, head.http_version)
        framing: tuple = (head.framing(b""),)
    else:
        start = (head.status_code, head.reason, head.http_version)
        framing = tuple(head.framing(m) for m in METHODS)
    fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in head.fields]
    return (end + 4, start, fields, None, framing)


# ---------------------------------------------------------------------- generated heads

def mostly(plain: list[bytes], odd: list[bytes], odds: int = 10) -> st.SearchStrategy[bytes]:
    """One of `plain`, or one of `odd` once in `odds` draws: a head then has few oddities, and
    a good share of heads is plain enough for the fast path."""
    return st.integers(1, odds).flatmap(
        lambda n: st.sampled_from(odd if n == 1 else plain)
    )


ENDS = mostly([b"\r\n"], [b"\n", b"\r\r\n", b"\n\r", b" \r\n", b"\r"], 25)
NAMES = mostly(
    [b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"CONTENT-LENGTH",
     b"Transfer-Encoding", b"transfer-encoding", b"Connection", b"Upgrade", b"Cookie",
     b"X-Request-Id", b"User-Agent", b"!#$%&'*+.^_`|~"],
    [b"Bad Name", b"", b"X\x00", b"X:Y", b"Host ", b" Host", b"Content-Length\t", b"\xe9t\xe9"],
)
VALUES = mostly(
    [b"", b"x", b"1", b"0", b"007", b"12", b"chunked", b"a b", b"a\tb", b"a  b", b"\x80\xff",
     b"  trailing  ", b"\t", b"h2c", b"keep-alive", b"sid=9f3a; theme=dark", b"1" * 20,
     b"a\x85b", b"x\x1cy", b"\xa0"],
    [b"12, 12", b"1,2", b"12,", b" 5 ", b"5 6", b"+5", b"-1", b"1" * 21, b"Chunked", b"CHUNKED",
     b"gzip, chunked", b"chunked,", b",chunked", b"chunked ", b"identity", b"x\x00y", b"x\x0by",
     b"x\x0cy"],
    4,
)
SEPARATORS = st.sampled_from([b": ", b":", b":\t", b" : ", b":  ", b": \t"])
# The fields h11 treats specially, often and repeated, so that pairs of them are common.
FRAMING = st.sampled_from(
    [b"Content-Length: 12", b"content-length:12", b"Content-Length: 5", b"Content-Length: 0",
     b"Transfer-Encoding: chunked", b"transfer-encoding:chunked", b"Host: a", b"host:b"]
)


@st.composite
def field_lines(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(FRAMING) + draw(ENDS)
    if draw(st.integers(0, 60)) == 0:
        return b" folded" + draw(ENDS)  # an obsolete line fold
    if draw(st.integers(0, 60)) == 0:
        return draw(st.binary(max_size=12)) + draw(ENDS)
    return draw(NAMES) + draw(SEPARATORS) + draw(VALUES) + draw(ENDS)


REQUEST_LINES = st.tuples(
    mostly([b"GET", b"POST", b"HEAD", b"CONNECT", b"PUT", b"M-SEARCH", b"get"], [b"G\x00T", b"G T", b""]),
    mostly([b"/", b"/items/42?x=1", b"*", b"example.com:443", b"/%20"], [b"/a b", b"", b"/\x80", b"/\x7f"]),
    mostly([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"], [b"HTTP/1.1 ", b"http/1.1", b"HTTP/1", b"HTTP/11.1"]),
).map(lambda t: b" ".join(t))
STATUS_LINES = mostly(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.0 304 Not Modified",
     b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.1 200 O\tK ", b"HTTP/1.1 200 \x80\xff",
     b"HTTP/1.1 999 Odd", b"HTTP/1.1 500  Internal  Error", b"HTTP/2.0 200 OK"],
    [b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 100 Continue", b"HTTP/1.1 099 Low",
     b"HTTP/1.1 2000 OK", b"HTTP/1.1 20O OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 404 Not\x00Found"],
    4,
)


@st.composite
def heads(draw: st.DrawFn, request: bool) -> bytes:
    first = draw(REQUEST_LINES if request else STATUS_LINES) + draw(ENDS)
    lines = draw(st.lists(field_lines(), max_size=8))
    tail = draw(mostly([b"\r\n"], [b"\n", b"\r\n\r\n", b""], 6))
    after = draw(st.sampled_from([b"", b"body", b"GET /next HTTP/1.1\r\nHost: y\r\n\r\n"]))
    return first + b"".join(lines) + tail + after


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.data())
@example(True, None)
def test_a_head_the_fast_path_reads_is_what_h11_reads(request: bool, data: st.DataObject | None) -> None:
    head = (data.draw(heads(request)) if data is not None
            else b"GET / HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n")
    fast = by_fast(head, request)
    if fast is not None:
        assert fast == by_h11(head, request)


@settings(max_examples=1500, deadline=None)
@given(st.booleans(), st.binary(max_size=120))
def test_random_bytes_are_never_read_differently(request: bool, tail: bytes) -> None:
    head = (b"GET / HTTP/1.1\r\n" if request else b"HTTP/1.1 200 OK\r\n") + tail + b"\r\n\r\n"
    fast = by_fast(head, request)
    if fast is not None:
        assert fast == by_h11(head, request)


PLAIN = [
    (True, b"GET /items/7?x=1 HTTP/1.1\r\nHost: a:8080\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n"),
    (True, b"POST /api HTTP/1.1\r\nhost: a\r\nContent-Length: 12\r\nCookie: s=1; t=2\r\n\r\n"),
    (True, b"PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Empty:\r\n\r\n"),
    (True, b"GET / HTTP/1.0\r\nUser-Agent: ab\r\n\r\n"),
    (True, b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 600\r\nX-Request-Id: 9f\r\n\r\n"),
    (False, b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
    (False, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"),
    (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
    (False, b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
    (False, b"HTTP/1.1 200\r\nVia: 1.1  proxy \t\r\n\r\n"),
]
UNUSUAL = [
    (True, b"GET / HTTP/1.1\r\n\r\n"),  # no Host: a note
    (True, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),  # two: a note
    (True, b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n"),
    (True, b"GET / HTTP/1.1\nHost: a\n\n"),
    (True, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n"),
    (True, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
    (True, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
    (True, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n"),
    (True, b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n"),
    (False, b"HTTP/1.1 100 Continue\r\n\r\n"),
    (False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 21 + b"\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
    # Inside a value, in the last field line or another: a bare LF or CR, NUL, VT, FF.
    (False, b"HTTP/1.1 200 OK\r\nX: a\nb\r\nServer: s\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nServer: s\r\nX: a\nb\r\n\r\n"),
    (False, b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n"),
    (True, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
    (True, b"GET / HTTP/1.1\r\nX: a\x0bb\r\nHost: a\r\n\r\n"),
    (True, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0c\r\n\r\n"),
]


@pytest.mark.parametrize(("request_", "head"), PLAIN)
def test_plain_heads_take_the_fast_path(request_: bool, head: bytes) -> None:
    fast = by_fast(head, request_)
    assert fast is not None
    assert fast == by_h11(head, request_)


@pytest.mark.parametrize(("request_", "head"), UNUSUAL)
def test_unusual_heads_go_to_h11(request_: bool, head: bytes) -> None:
    assert by_fast(head, request_) is None


@pytest.mark.parametrize("byte", range(256))
def test_each_byte_in_a_value_is_read_as_h11_reads_it(byte: int) -> None:
    # The class of a field value's bytes, and of a reason phrase's (the same class), byte by
    # byte: where h11 reads the head, the fast path reads it the same; only the bytes h11
    # refuses there (NUL, CR, LF, FF, VT) go to h11.
    value = b"a" + bytes([byte]) + b"b"
    heads = [
        (True, b"GET / HTTP/1.1\r\nHost: a\r\nX-Value: " + value + b"\r\nServer: s\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nX-Value: " + value + b"\r\nServer: s\r\n\r\n"),
        (False, b"HTTP/1.1 200 O" + value + b"\r\nServer: s\r\n\r\n"),
    ]
    for request, head in heads:
        fast = by_fast(head, request)
        if byte in b"\x00\r\n\x0b\x0c":
            assert fast is None
        else:
            assert fast is not None
            assert fast == by_h11(head, request)


@pytest.mark.parametrize("byte", range(256))
def test_each_byte_in_a_name_is_read_as_h11_reads_it(byte: int) -> None:
    # Only a token's bytes make a name; a head with any other byte in a name goes to h11.
    name = b"X" + bytes([byte]) + b"Y"
    for request, head in [
        (True, b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\n" + name + b": v\r\nServer: s\r\n\r\n"),
    ]:
        fast = by_fast(head, request)
        token = bytes([byte]) in b"!#$%&'*+-.^_`|~" or chr(byte).isascii() and chr(byte).isalnum()
        if token or byte == ord(":"):  # (then the name is X, and the value Y: v)
            assert fast is not None
            assert fast == by_h11(head, request)
        else:
            assert fast is None


def test_the_compiled_build_reads_heads_byte_by_byte() -> None:
    assert http.SCAN_HEADS is engine.COMPILED


def test_a_head_longer_than_the_fast_limit_goes_to_h11() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + b"c" * http.FAST_HEAD + b"\r\n\r\n"
    assert by_fast(head, True) is None
    assert by_h11(head, True) is not None


# ---------------------------------------------------------------------- whole conversations


def parse(script: list[tuple[bool, bytes]], cuts: int, fast: bool, announce: bool = False,
          paused: bool = False, records: bool = False) -> list[Event]:
    """Feed a conversation to one parser, each message cut in pieces of `cuts` bytes; paused:
    its head cache is paused throughout, as where heads do not repeat (heads are then read
    without being found first); records: it gives its exchanges as records."""
    http.FAST_PATH = fast
    try:
        out: list[Event] = []
        conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 1, False)
        cache = HeadCache()
        if paused:
            cache.requests.off = cache.responses.off = 1 << 40
        parser = HttpParser(conn, out.append, 64, cache, announce=announce, records=records)
        offsets = {True: 0, False: 0}
        ts = 10.0
        for from_client, data in script:
            for i in range(0, len(data), cuts):
                ts += 0.001
                piece = data[i : i + cuts]
                parser.on_data(conn, from_client, ts, offsets[from_client], piece, NO_ACK)
                offsets[from_client] += len(piece)
        parser.on_close(conn, ts + 1)
        return out
    finally:
        http.FAST_PATH = True


BODIES = st.sampled_from([b"", b"x", b"hello world", b"0123456789" * 9])


@st.composite
def messages(draw: st.DrawFn, request: bool) -> bytes:
    head = draw(heads(request))
    if draw(st.booleans()):
        body = draw(BODIES)
        if draw(st.booleans()):
            framed = (b"Content-Length: %d\r\n" % len(body), body)
        else:
            framed = (b"Transfer-Encoding: chunked\r\n",
                      (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n")
        first, sep, rest = head.partition(b"\r\n")
        start = b"GET /b HTTP/1.1" if request and draw(st.booleans()) else first
        hosts = b"Host: h\r\n" if request else b""
        return start + b"\r\n" + hosts + framed[0] + b"\r\n" + framed[1]
    return head


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.booleans()).flatmap(
    lambda t: st.tuples(st.just(t[0]), messages(t[0]))), min_size=1, max_size=6),
    st.integers(1, 40), st.booleans())
def test_conversations_give_the_same_events_either_way(script, cuts, announce) -> None:
    by_h11 = parse(script, cuts, False, announce)
    assert parse(script, cuts, True, announce) == by_h11
    assert parse(script, cuts, True, announce, paused=True) == by_h11


KEEPALIVE = [
    (True, b"GET /items/%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: sid=%x\r\n\r\n" % (i, i * 7919))
    if k == 0 else
    (False, b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Request-Id: %x\r\nContent-Length: %d\r\n\r\n%s"
     % (i * 31, i, b"y" * i))
    for i in range(1, 6) for k in (0, 1)
] + [(True, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
     (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
     (True, b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"),
     (False, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
     (True, b"GET /old HTTP/1.0\r\n\r\n"),
     (False, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end")]


def test_a_keepalive_conversation_split_at_every_size_is_the_same() -> None:
    def untimed(events: list[Event]) -> list[tuple]:
        return [(t.index, t.request and t.request._replace(ts=0, end_ts=0),
                 t.response and t.response._replace(ts=0, end_ts=0), t.error, t.notes)
                for t in events if isinstance(t, HttpTransaction)]

    whole = untimed(parse(KEEPALIVE, 1 << 20, False))
    assert len(whole) == 8
    for cuts in range(1, 80):
        fast = parse(KEEPALIVE, cuts, True)
        assert fast == parse(KEEPALIVE, cuts, False), cuts
        assert parse(KEEPALIVE, cuts, True, paused=True) == fast, cuts
        assert untimed(fast) == whole, cuts


def heads_read(fast: bool) -> list[type]:
    """The types of the heads the parser read from KEEPALIVE (the head cache holds them all:
    none repeats, and all are small)."""
    http.FAST_PATH = fast
    try:
        conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 1, False)
        cache = HeadCache()
        parser = HttpParser(conn, lambda e: None, 64, cache)
        offsets = {True: 0, False: 0}
        for from_client, data in KEEPALIVE:
            parser.on_data(conn, from_client, 1.0, offsets[from_client], data, NO_ACK)
            offsets[from_client] += len(data)
        parser.on_close(conn, 2.0)
    finally:
        http.FAST_PATH = True
    return [type(v[0]) for v in cache.requests.entries.values()] + [type(v[0]) for v in cache.responses.entries.values()]


def test_the_fast_path_is_taken_for_plain_heads() -> None:
    assert heads_read(True) == [http._Head] * 16  # all 16 heads are plain
    assert set(heads_read(False)) == {h11.Request, h11.Response}  # and the switch works


def test_a_cached_block_is_only_the_head_it_was_read_as() -> None:
    # h11 ends the first head at its bare-LF empty line: the block up to the first CRLFCRLF
    # also holds the second request, and a cache keyed on it would swallow that request.
    twice = b"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    script = [(True, twice), (True, twice)] + [(False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")] * 4
    for fast in (True, False):
        found = [e for e in parse(script, 1 << 20, fast) if isinstance(e, HttpTransaction)]
        assert [t.request.target for t in found if t.request] == ["/a", "/b", "/a", "/b"]


def test_interleavings_of_captured_packets_give_the_same_records() -> None:
    script = [("c" if from_client else "s", data) for from_client, data in KEEPALIVE] + [("s-fin",)]
    client, server = build(script, mss=50)
    for order in interleavings(client, server, limit=30):
        records = []
        for fast in (True, False):
            http.FAST_PATH = fast
            try:
                pipeline = Pipeline(Bounds())
                events = pipeline.feed(Batch.from_packets(1, order)) + pipeline.finish()
            finally:
                http.FAST_PATH = True
            records.append([e for e in events if isinstance(e, HttpTransaction)])
        assert records[0] == records[1]
        assert len(records[0]) == 8


CAPTURES = [str(PCAPS / name) for name in all_captures()] + [str(DEMO_CAPTURE)]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.rsplit("/", 2)[-1])
def test_every_capture_gives_the_same_http_events_either_way(path: str) -> None:
    found = []
    for fast in (True, False):
        http.FAST_PATH = fast
        try:
            events = replay_file(path).events
        finally:
            http.FAST_PATH = True
        found.append([e for e in events if isinstance(e, (HttpTransaction, HttpRequestSeen))])
    assert found[0] == found[1]


def test_the_head_cache_pauses_where_heads_do_not_repeat() -> None:
    data = bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    end = HeadCache.head_end(data)
    unique = http._Heads()
    for _ in range(HeadCache.ROUND):
        assert not unique.paused()
        key = unique.key(data, end)
        assert key == bytes(data)
    assert all(unique.paused() for _ in range(HeadCache.PAUSE))  # no hit: paused
    assert not unique.paused()  # and then tried again
    assert unique.key(data, end) is not None
    repeated = http._Heads()
    for _ in range(3 * HeadCache.ROUND):
        assert not repeated.paused()
        key = repeated.key(data, end)
        assert key is not None
        if repeated.get(key) is None:
            repeated.put(key, "head")
    assert repeated.hits > 0


def test_a_full_head_cache_starts_again() -> None:
    heads = http._Heads()
    for i in range(HeadCache.MAX_ENTRIES):
        heads.put(b"%d" % i, i)
    assert len(heads.entries) == HeadCache.MAX_ENTRIES
    heads.put(b"new", 0)
    assert heads.entries == {b"new": 0}


@pytest.mark.parametrize("scan", [True, False])
@pytest.mark.parametrize("request_", [True, False])
def test_a_head_read_in_one_pass_takes_exactly_its_bytes(monkeypatch, request_: bool,
                                                          scan: bool) -> None:
    """_read_unkeyed (the parser's reading when its head cache is paused): a plain head is
    read without h11 and exactly its bytes taken, the body after it left; a head not complete
    yet gives nothing and takes nothing; an unusual one is h11's reading of it. Both ways
    (scan: in one pass, as compiled; else found first)."""
    monkeypatch.setattr(http, "SCAN_HEADS", scan)
    first = b"GET /a?b=1 HTTP/1.1\r\n" if request_ else b"HTTP/1.1 200 OK\r\n"
    head = first + b"Host: h\r\nContent-Length: 5\r\nX-Id: 7\r\n\r\n"
    buf = http._Buffer()
    buf.data += head + b"hello" + first
    read, sent, note = http._read_unkeyed(buf, buf.data, request_)
    assert type(read) is http._Head and sent is None and note is None
    assert read.length == 5 and bytes(buf.data) == b"hello" + first
    long = http._Buffer()  # more waiting than the fast path looks at
    long.data += head + b"x" * (2 * http.FAST_HEAD)
    assert type(http._read_unkeyed(long, long.data, request_)[0]) is http._Head
    assert bytes(long.data) == b"x" * (2 * http.FAST_HEAD)
    for cut in range(len(head)):
        partial = http._Buffer()
        partial.data += head[:cut]
        assert http._read_unkeyed(partial, partial.data, request_)[0] is None
        assert bytes(partial.data) == head[:cut]
    folded = http._Buffer()
    folded.data += first + b"Host: h\r\nX-Folded: a\r\n b\r\n\r\n"
    assert type(http._read_unkeyed(folded, folded.data, request_)[0]) is not http._Head
    assert not folded.data
