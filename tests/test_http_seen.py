"""Requests announced while they wait for their answer (HttpRequestSeen), for live views.

A live pipeline (`live_updates=True`) reports the same transactions as any other, at the same
point, and besides announces each request that nothing has answered yet: identified by
(connection, request offset), never after its transaction, always followed by exactly one.
The conversations are built with scapy in causal order (tests/conversations.py) and captured in
many interleavings, fed packet by packet and in batches.
"""

from __future__ import annotations

import pytest

from engine.batch import Batch
from engine.bounds import Bounds
from engine.connections import ConnectionTable
from engine.events import Event, HttpRequestSeen, HttpTransaction
from engine.http import HttpParser
from engine.pipeline import Pipeline
from engine.reassembly import NO_ACK, SNAPLEN
from engine.tcp import Connection
from tests.captures import capture
from tests.conversations import Packet, build, causal, interleavings
from tests.test_http_causality import (
    CLOSE_GET,
    CLOSE_OK,
    CONTINUE,
    CREATED,
    HEAD_OK,
    KEEP_ALIVE,
    PIPELINED,
    POST_HEAD,
    get,
    ok,
)


def feed(packets: list[Packet], batch: int = 1, live: bool = True, linktype: int = 1
         ) -> list[list[Event]]:
    """The events of each batch of `batch` packets (the last list: the end of the capture)."""
    pipeline = Pipeline(live_updates=live)
    out = [pipeline.feed(Batch.from_packets(linktype, packets[i : i + batch]))
           for i in range(0, len(packets), batch)]
    out.append(pipeline.finish())
    return out


def flat(batches: list[list[Event]]) -> list[Event]:
    return [e for events in batches for e in events]


def transactions(events: list[Event]) -> list[HttpTransaction]:
    return [e for e in events if isinstance(e, HttpTransaction)]


def seen(events: list[Event]) -> list[HttpRequestSeen]:
    return [e for e in events if isinstance(e, HttpRequestSeen)]


def check_rule(events: list[Event]) -> dict[tuple[int, int], list[HttpRequestSeen]]:
    """The event's documented rule, on one run; returns the announcements by identity."""
    answered: dict[tuple[int, int], HttpTransaction] = {}
    announced: dict[tuple[int, int], list[HttpRequestSeen]] = {}
    for event in events:
        if isinstance(event, HttpTransaction) and event.request is not None:
            key = (event.connection, event.request.offset)
            assert key not in answered, f"two transactions share {key}"
            answered[key] = event
        elif isinstance(event, HttpRequestSeen):
            key = (event.connection, event.request.offset)
            assert event.request.offset >= 0
            assert key not in answered, f"{key} announced after its transaction"
            announced.setdefault(key, []).append(event)
    for key, told in announced.items():
        assert key in answered, f"{key} announced and never reported"
        final = answered[key].request
        assert final is not None
        for event in told:
            r = event.request
            assert (r.ts, r.method, r.target, r.version, r.headers) == (
                final.ts, final.method, final.target, final.version, final.headers)
            assert r.body_bytes <= final.body_bytes
        # Once, or twice: while its body was coming, then whole.
        assert [e.request.complete for e in told] in ([True], [False], [False, True])
    return announced


@pytest.mark.parametrize("script", [KEEP_ALIVE, PIPELINED], ids=["keep-alive", "pipelined"])
@pytest.mark.parametrize("batch", [1, 7])
def test_a_live_pipeline_pairs_the_same_and_keeps_the_rule_in_every_interleaving(script, batch):
    client, server = build(script, mss=40)
    count = 0
    for packets in interleavings(client, server, limit=150):
        live = flat(feed(packets, batch))
        # Announcing changes neither the pairing nor any time, nor when a transaction comes.
        assert transactions(live) == transactions(flat(feed(packets, batch, live=False)))
        check_rule(live)
        count += 1
    assert count >= 150


def test_each_request_is_announced_in_the_packet_that_completes_it_before_its_answer():
    client, server = build(KEEP_ALIVE, mss=40)
    packets = causal(client, server)
    batches = feed(packets)
    told = [(i, e.request.method, e.request.target, e.request.complete)
            for i, events in enumerate(batches) for e in seen(events)]
    # A request is announced whole, except the POST that waits for 100 Continue: its head is
    # announced alone, and the 100 answers it, so the body's end is not announced again.
    assert [t[1:] for t in told] == [
        ("GET", "/a?limit=3", True), ("HEAD", "/big", True), ("POST", "/upload", False),
        ("GET", "/chunked", True), ("GET", "/empty", True), ("GET", "/cached", True),
        ("GET", "/last", True),
    ]
    for (i, _method, target, _complete), tx in zip(told, transactions(flat(batches)), strict=True):
        assert tx.request is not None and tx.request.target == target
        # Announced when the client's packet carrying the last byte of the head came ...
        assert packets[i] in client
        # ... and its answer began only in a later packet.
        first_answer = next(j for j, events in enumerate(batches)
                            if any(isinstance(e, HttpTransaction) and e.request is not None
                                   and e.request.offset == tx.request.offset for e in events))
        assert first_answer > i


def test_a_body_that_comes_in_several_segments_is_announced_again_once_whole():
    body = b"field=" + b"p" * 2994
    post = (b"POST /upload HTTP/1.1\r\nHost: api.example\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    client, server = build([("c", post + body), ("s", CREATED)], mss=1000)
    batches = feed(causal(client, server))
    told = seen(flat(batches))
    assert [(e.request.complete, e.request.body_bytes) for e in told] == [
        (False, 1000 - len(post)), (True, len(body))]
    assert told[0].request.end_ts is None and told[1].request.end_ts is not None
    assert told[1].request.body == body
    [tx] = transactions(flat(batches))
    assert tx.response is not None and tx.response.status == 201
    assert tx.request == told[1].request  # the transaction holds what was last announced
    check_rule(flat(batches))


def test_a_request_never_answered_is_announced_then_reported_at_the_end():
    client, server = build([("c", get("/hang"))])
    batches = feed(causal(client, server))
    [told] = seen(flat(batches))
    assert told.request.target == "/hang" and told.request.complete
    assert not transactions(flat(batches[:-1]))  # nothing else while the capture goes on
    [tx] = transactions(batches[-1])
    assert tx.response is None and tx.request == told.request
    assert check_rule(flat(batches)).keys() == {(told.connection, told.request.offset)}


def test_a_request_answered_in_the_same_packet_batch_is_still_followed_by_its_transaction():
    """Every server packet captured first: each answer is held until its request comes, and the
    transaction follows its announcement in the same batch (a fold never shows it waiting)."""
    client, server = build(PIPELINED)
    batches = feed(server + client)
    for events in batches:
        waiting = {(e.connection, e.request.offset) for e in seen(events)}
        done = {(t.connection, t.request.offset) for t in transactions(events) if t.request}
        assert waiting <= done
    check_rule(flat(batches))


def test_offsets_tell_apart_the_requests_of_a_connection_and_of_a_reused_port():
    """Pipelined requests, and a second connection on the same ports: each announcement is
    matched to its own transaction, by connection and offset."""
    first = build([("c", get("/1") + get("/2") + get("/3")), ("s", ok(b"one")), ("c-fin",)])
    again = build([("c", get("/1")), ("s", ok(b"one")), ("c", CLOSE_GET), ("s", CLOSE_OK),
                   ("s-fin",)])
    later = [(ts + 60.0, frame) for ts, frame in causal(*again)]
    events = flat(feed(causal(*first) + later))
    announced = check_rule(events)
    assert len(announced) == 5 and len({conn for conn, _ in announced}) == 2
    offsets = sorted(offset for conn, offset in announced if conn == 0)
    assert offsets == [0, len(get("/1")), 2 * len(get("/1"))]


def test_only_a_live_pipeline_announces():
    packets = causal(*build(KEEP_ALIVE))
    assert seen(flat(feed(packets, live=False))) == []
    assert len(seen(flat(feed(packets)))) == 7


@pytest.mark.parametrize("name", [
    "zeek/http__1000-requests-one-dropped-response.pcap",
    "zeek/http__pipelined-requests.pcap",
    "zeek/http__100-continue.pcap",
    "suricata-verify/http-pipeline-files-with-gap__input.pcap",
    "zeek/http__zero-length-bodies-with-drops.pcap",
    "zeek/http__connect-with-header.pcap",
])
def test_real_captures_pair_the_same_live_and_keep_the_rule(name):
    from engine import sources

    source = sources.open_files([capture(name)])
    packets: list[Packet] = []
    while (batch := source.next_batch()) is not None:
        packets += batch.packets()
        linktype = batch.linktype
    source.close()
    live = flat(feed(packets, 1, True, linktype))
    assert transactions(live) == transactions(flat(feed(packets, 1, False, linktype)))
    assert transactions(live) and check_rule(live)


# ---------------------------------------------------------------------------- the parser itself


def parse(steps: list[tuple]) -> list[Event]:
    """Feed an announcing parser: (True, bytes) client data, (False, bytes) server data,
    ("gap", from_client, size, reason)."""
    out: list[Event] = []
    conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 1, False)
    parser = HttpParser(conn, out.append, announce=True)
    offsets = {True: 0, False: 0}
    ts = 100.0
    for step in steps:
        ts += 1.0
        if step[0] == "gap":
            parser.on_gap(conn, step[1], ts, offsets[step[1]], step[2], step[3])
            offsets[step[1]] += step[2]
        else:
            parser.on_data(conn, step[0], ts, offsets[step[0]], step[1], NO_ACK)
            offsets[step[0]] += len(step[1])
    parser.on_close(conn, ts + 1)
    return out


def test_a_head_cut_short_by_the_snap_length_is_announced_with_what_it_showed():
    head = get("/api/v1/items?id=42", b"User-Agent: curl/8.5.0\r\n")
    events = parse([(True, head[:40]), ("gap", True, len(head) - 40, SNAPLEN), (False, HEAD_OK)])
    [told] = seen(events)
    assert (told.request.method, told.request.target, told.request.complete) == (
        "GET", "/api/v1/items?id=42", False)
    [tx] = transactions(events)
    assert tx.request == told.request and tx.response is not None
    check_rule(events)


def test_a_request_whose_body_cannot_be_read_is_announced_once():
    bad = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnot a chunk size\r\n"
    events = parse([(True, bad), (False, ok(b"no"))])
    [told] = seen(events)
    assert told.request.target == "/up" and not told.request.complete
    check_rule(events)


def test_a_request_answered_by_an_interim_response_is_not_announced_again():
    events = parse([(True, POST_HEAD), (False, CONTINUE), (True, b"hello=world"), (False, CREATED)])
    assert [e.request.complete for e in seen(events)] == [False]
    [tx] = transactions(events)
    assert tx.request is not None and tx.request.complete and tx.request.body_bytes == 11


def test_a_request_known_to_be_answered_already_is_not_announced():
    """An answer that could not wait for its request (the byte bound) was reported without it;
    when the request comes it is reported at once as answered early, never as waiting."""
    script = [("c", get("/big")), ("s", ok(b"x" * 5000)), ("c", get("/small")), ("s", ok(b"y"))]
    client, server = build(script)
    pipeline = Pipeline(Bounds(max_ooo_bytes=2000), live_updates=True)
    events = pipeline.feed(Batch.from_packets(1, server + client)) + pipeline.finish()
    targets = [(t.request and t.request.target, t.response and t.response.status)
               for t in transactions(events)]
    assert targets == [(None, 200), ("/big", None), ("/small", 200)]
    assert [e.request.target for e in seen(events)] == ["/small"]
    check_rule(events)
