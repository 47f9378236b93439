"""engine.events.Headers: header fields kept as their text and split on first use read exactly
as the pairs they stand for, and survive every way an exchange is stored or sent."""

from __future__ import annotations

import marshal
import pickle

from engine.events import Headers, HttpRequest, HttpTransaction
from engine.http import HeadCache, _plain_head
from tui.exchange_log import decode, encode

HEAD = (b"GET /a HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nX-Blank: \t a  b \t\r\n"
        b"Cookie: sid=1; theme=dark\r\n\r\n")
PAIRS = (("Host", "example.com"), ("X-Empty", ""), ("X-Blank", "a  b"),
         ("Cookie", "sid=1; theme=dark"))


def fast_headers(head: bytes) -> Headers:
    data = bytearray(head)
    parsed = _plain_head(data, HeadCache.head_end(data), True)
    assert parsed is not None
    return parsed.fields


def test_the_text_of_a_fast_head_splits_into_its_pairs() -> None:
    headers = fast_headers(HEAD)
    assert headers.raw is not None  # kept as text until asked for
    assert headers == PAIRS and PAIRS == headers and not headers != PAIRS
    assert tuple(headers) == PAIRS and list(headers) == list(PAIRS)
    assert len(headers) == 4 and headers[0] == ("Host", "example.com") and headers[1:2] == PAIRS[1:2]
    assert hash(headers) == hash(PAIRS)
    assert headers != PAIRS[:3] and headers != Headers.of("Host: other.example")


def test_empty_headers_are_false_and_equal_to_no_pairs() -> None:
    for empty in (Headers.of(""), Headers(()), Headers()):
        assert not empty and len(empty) == 0 and empty == () and list(empty) == []
    assert Headers.of("A: b") and Headers((("A", "b"),))


def test_text_and_pairs_compare_by_their_pairs() -> None:
    assert Headers.of("A:b") == Headers.of("A: b") == Headers((("A", "b"),))


def test_headers_survive_pickle_and_marshal_either_way() -> None:
    for headers in (fast_headers(HEAD), Headers(PAIRS), Headers.of("")):
        again = pickle.loads(pickle.dumps(headers))
        assert type(again) is Headers and again == headers == tuple(headers)
        stored = marshal.loads(marshal.dumps(headers.stored()))
        assert Headers.load(stored) == headers
    assert fast_headers(HEAD).stored() == HEAD.split(b"\r\n", 1)[1][:-4].decode("latin-1")


def test_an_exchange_reads_back_from_the_ring_with_the_same_headers() -> None:
    request = HttpRequest(1.0, 1.0, "GET", "/a", "1.1", fast_headers(HEAD), 0, 0, b"", True, 0)
    tx = HttpTransaction(3, 0, request, None)
    back = decode(encode(tx), 3)
    assert back == tx and back.request is not None and back.request.headers == PAIRS
    plain = HttpTransaction(3, 0, request._replace(headers=PAIRS), None)  # type: ignore[arg-type]
    assert decode(encode(plain), 3) == tx
