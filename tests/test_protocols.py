"""The protocol registry's second hint and midstream starts (engine.protocols, engine.connections):
a connection the content says nothing about is read by its server's port; one the capture
joined in its middle is read from the first message that can be found, whatever the
interleaving, and pairs only what the acknowledgments make certain."""

from __future__ import annotations

from engine.batch import Batch
from engine.events import ConnectionClosed, Gap
from engine.pipeline import Pipeline
from engine.protocols import BY_PORT, NAMES, PROTOCOLS
from engine.tcp import MIDSTREAM
from tests.conversations import Packet, build, causal, interleavings, since, transactions
from tests.test_dns import answer, framed, query
from tests.test_redis import EXPECTED, SCRIPT

JOINED = f"{MIDSTREAM}: paired by the acknowledgments"


def closed(packets: list[Packet]) -> list[ConnectionClosed]:
    pipeline = Pipeline()
    events = pipeline.feed(Batch.from_packets(1, packets)) + pipeline.finish()
    return [e for e in events if isinstance(e, ConnectionClosed)]


def said(packets: list[Packet], batch: int = 5) -> list[tuple]:
    return [(t.request_summary, t.response_summary, t.status, t.notes)
            for t in transactions(packets, batch)]  # fmt: skip


def test_every_protocol_names_its_port() -> None:
    assert {p.name for p in PROTOCOLS} == NAMES
    assert BY_PORT == {6379: "redis", 53: "dns", 5432: "postgresql", 3306: "mysql"}


def test_the_port_is_the_second_hint_never_the_first() -> None:
    inline = [
        ("c", b"PING\r\n"),
        ("s", b"+PONG\r\n"),
        ("c", b"set a 1\r\n"),
        ("s", b"+OK\r\n"),
        ("c-fin",),
    ]
    # Redis's inline commands say nothing a content test could tell: on Redis's port they are
    # read; on another they are not taken for Redis.
    on_port = causal(*build(inline, port=6379))
    assert [c.info.protocol for c in closed(on_port)] == ["redis"]
    assert said(on_port) == [("PING", "PONG", "ok", ()), ("SET a 1", "OK", "ok", ())]
    elsewhere = causal(*build(inline, port=8080))
    assert [c.info.protocol for c in closed(elsewhere)] == [None] and said(elsewhere) == []
    # What the content says wins over the port.
    http = [
        ("c", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("s", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("c-fin",),
    ]
    assert [c.info.protocol for c in closed(causal(*build(http, port=6379)))] == ["http"]
    resp = [*SCRIPT[:2], ("c-fin",)]
    assert [c.info.protocol for c in closed(causal(*build(resp, port=5432)))] == ["redis"]


def test_a_connection_joined_inside_a_command_is_read_by_its_port_in_any_interleaving() -> None:
    client, server = build(SCRIPT, mss=700, port=6379)
    start = causal(client, server)[5][0]  # inside the 5000-byte SET: no SYN, no first command
    client, server = since(client, start), since(server, start)
    assert not client[0][1][47:48].startswith(b"*")  # (the first bytes seen are its value)
    expected = [(*EXPECTED[1], (JOINED,)), *[(*e, ()) for e in EXPECTED[2:7]]]
    for n, packets in enumerate(interleavings(client, server, limit=40)):
        got = said(packets, batch=1 + n % 4)
        assert [g[:4] for g in got[:6]] == expected, n
        assert [g[:3] for g in got[6:]] == EXPECTED[7:], n
    # Not a loss: no gap is reported for where the capture began.
    pipeline = Pipeline()
    events = pipeline.feed(Batch.from_packets(1, causal(client, server))) + pipeline.finish()
    assert not [e for e in events if isinstance(e, Gap)]
    assert [c.info.protocol for c in closed(causal(client, server))] == ["redis"]


def test_a_connection_joined_between_commands_is_found_by_its_content() -> None:
    client, server = build(SCRIPT, mss=700)  # port 8080: the content tells
    start = next(p[0] for p in client if b"*2\r\n$3\r\nGET" in p[1])
    client, server = since(client, start), since(server, start)
    for n, packets in enumerate(interleavings(client, server, limit=40)):
        got = said(packets, batch=1 + n % 4)
        assert got[0] == (*EXPECTED[1], (JOINED,)), n
        assert [g[:3] for g in got[1:]] == EXPECTED[2:], n


def test_dns_over_tcp_joined_inside_a_message_on_its_port() -> None:
    queries = [query(f"n{i}.example.", ident=100 + i) for i in range(5)]
    script = []
    for i, q in enumerate(queries):
        script += [("c", framed(q)), ("s", framed(answer(q, f"n{i}.example. 60 IN A 192.0.2.{i}")))]
    client, server = build([*script, ("c-fin",)], mss=7, port=53)
    # The capture begins inside the second query: its length and first bytes are not seen.
    start = next(p for p in client if b"n1" in p[1])[0]
    client, server = since(client, start), since(server, start)
    expected = [(f"A n{i}.example.", f"NOERROR 192.0.2.{i}") for i in range(2, 5)]
    for n, packets in enumerate(interleavings(client, server, limit=30)):
        got = [(t.request_summary, t.response_summary, t.notes) for t in transactions(packets, 1 + n % 4)]
        # The answer to the query cut in two answers nothing seen; the others pair by ID.
        assert [g[:2] for g in got if g[0] is not None] == expected, n
        assert [g[1] for g in got if g[0] is None] == ["NOERROR 192.0.2.1"], n
