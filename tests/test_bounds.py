"""Memory stays within the configured bounds whatever the traffic, and eviction is counted."""

from __future__ import annotations

import gc

from engine import sources
from engine.batch import Batch
from engine.bounds import ARCHIVED_COST, CONNECTION_COST, Bounds
from engine.events import ConnectionClosed
from engine.http import HttpParser
from engine.pipeline import Pipeline
from engine.tcp import Connection, HalfStream
from tests.captures import capture
from tests.synth import ether, ipv4, tcp

SERVER = "192.0.2.80"


def syn(i: int) -> bytes:
    src = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return ether(ipv4(src, SERVER, 6, tcp(1024 + i % 60000, 80, i * 7919, 0, "S", src_ip=src, dst_ip=SERVER)))


def test_syn_flood_never_exceeds_the_budget():
    budget = 2000 * CONNECTION_COST
    pipeline = Pipeline(Bounds(memory_budget=budget))
    closed = 0
    for start in range(0, 20_000, 1000):
        batch = Batch.from_packets(1, [(1000.0 + (start + i) * 1e-4, syn(start + i)) for i in range(1000)])
        events = pipeline.feed(batch)
        closed += sum(isinstance(e, ConnectionClosed) and e.reason == "evicted" for e in events)
        assert pipeline.table.memory <= budget
    stats = pipeline.stats()
    assert stats.connections_total == 20_000
    assert stats.evicted_connections == closed == 20_000 - stats.connections_active
    assert stats.connections_active <= 2000


def test_connection_count_bound():
    pipeline = Pipeline(Bounds(max_connections=100))
    pipeline.feed(Batch.from_packets(1, [(1000.0 + i * 1e-4, syn(i)) for i in range(1000)]))
    assert len(pipeline.table.lru) == 100
    assert pipeline.stats().evicted_connections == 900
    # The oldest went first: the survivors are the last 100 seen.
    assert min(pipeline.table.lru) == 900


def test_kept_payload_is_dropped_first_under_pressure():
    client, server = "10.0.0.1", "10.0.0.2"
    chunk = b"x" * 1400
    packets = []
    for c in range(20):
        sport = 40000 + c
        packets.append(ether(ipv4(client, server, 6, tcp(sport, 80, 0, 0, "S", src_ip=client, dst_ip=server))))
        for k in range(50):
            seg = tcp(sport, 80, 1 + k * len(chunk), 0, "PA", chunk, src_ip=client, dst_ip=server)
            packets.append(ether(ipv4(client, server, 6, seg)))
    budget = 20 * CONNECTION_COST + 300_000
    pipeline = Pipeline(Bounds(memory_budget=budget, keep_stream_bytes=1 << 20))
    for i in range(0, len(packets), 100):
        pipeline.feed(Batch.from_packets(1, [(1000.0 + (i + j) * 1e-4, p) for j, p in enumerate(packets[i : i + 100])]))
        assert pipeline.table.memory <= budget
    stats = pipeline.stats()
    assert stats.evicted_connections == 0  # payload went, connections stayed
    assert stats.dropped_kept_bytes > 0
    assert all(c.client.delivered == 50 * len(chunk) for c in pipeline.table.lru.values())


def test_kept_bytes_outlive_the_connection_only_within_the_budget():
    from tests.synth import TcpConversation

    packets = []
    for i in range(30):
        conv = TcpConversation(client=("10.0.0.1", 40000 + i), start=1000.0 + i)
        packets += conv.handshake() + conv.client_send(b"q" * 5000) + conv.close()
    budget = 30 * CONNECTION_COST + 60_000
    pipeline = Pipeline(Bounds(memory_budget=budget, keep_after_close=True), http_body_limit=None)
    for i in range(0, len(packets), 10):
        pipeline.feed(Batch.from_packets(1, packets[i : i + 10]))
        assert pipeline.table.memory <= budget
    pipeline.finish()
    kept = [pipeline.kept_since(i, 0) for i in range(30)]
    newest = kept[-1]
    assert newest is not None and sum(len(c[3]) for c in newest.entries) == 5000  # they remain
    assert kept[0] is None  # the oldest gave way to the budget
    assert pipeline.stats().dropped_kept_bytes > 0


def test_archived_connections_count_what_they_hold_and_stay_within_the_budget(tmp_path):
    """With a spool, an archived connection's entries are a few bytes each, but their objects
    cost hundreds (ARCHIVED_COST): counted, so that many small closed connections are bounded
    too, and the engine's figure is what it holds."""
    import tracemalloc

    from engine.spool import Spool
    from tests.synth import TcpConversation

    packets = []
    for i in range(2000):
        conv = TcpConversation(client=("10.0.0.1", 20000 + i), start=1000.0 + i)
        packets += conv.handshake() + conv.client_send(b"GET / HTTP/1.1\r\n\r\n") + conv.close()
    batches = [Batch.from_packets(1, packets[i : i + 64]) for i in range(0, len(packets), 64)]

    def read(budget: int) -> Pipeline:
        pipeline = Pipeline(Bounds(memory_budget=budget, keep_after_close=True, spool_bytes=1 << 26),
                            spool=Spool(1 << 26, str(tmp_path)), http_body_limit=None)
        for batch in batches:
            pipeline.feed(batch)
            assert pipeline.table.memory <= budget
        pipeline.finish()
        return pipeline

    gc.collect()
    tracemalloc.start()
    whole = read(1 << 40)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(whole.table.archive) == 2000
    # What it counts is near what it holds (the pipeline's own objects besides).
    assert 0.7 * held < whole.table.memory < 1.3 * held + (1 << 20)
    small = read(200 * ARCHIVED_COST)
    assert 0 < len(small.table.archive) < 200
    assert small.kept_since(1999, 0) is not None and small.kept_since(0, 0) is None


def test_connections_leaving_the_table_are_freed_without_the_cycle_collector():
    """Closed connections (and their half streams and HTTP parsers) must not wait for a full
    garbage collection, which the app runs only at quiet moments: reference counting frees them
    as soon as they leave the table."""
    gc.collect()  # what earlier tests left
    gc.disable()
    try:
        pipeline = Pipeline(Bounds(closed_linger=0.0))
        source = sources.open_files([capture("zeek/wikipedia.pcap")])
        try:
            while (batch := source.next_batch()) is not None:
                pipeline.feed(batch)
        finally:
            source.close()
        alive = [o for o in gc.get_objects() if isinstance(o, (Connection, HalfStream, HttpParser))]
        assert any(isinstance(o, HttpParser) for o in alive)  # the capture is parsed as HTTP
        events = pipeline.finish()
        assert sum(isinstance(e, ConnectionClosed) for e in events) == pipeline.stats().connections_total
        del alive, events
        left = [o for o in gc.get_objects() if isinstance(o, (Connection, HalfStream, HttpParser))]
        assert left == []
    finally:
        gc.enable()


def test_segments_too_far_ahead_and_datagrams_never_completed_are_counted():
    from tests.synth import TcpConversation, ipv4_fragments

    conv = TcpConversation()
    packets = conv.handshake()
    # A data segment claiming to be 2 GiB beyond the stream: not believed, counted.
    packets.append((conv.now() + 0.001, ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(
        51234, 80, conv.client_seq + (1 << 31) - 10, conv.server_seq, "PA", b"x" * 10,
        src_ip="10.0.0.1", dst_ip="10.0.0.2"), ident=7))))
    # The first fragment of a datagram whose other fragments never come.
    whole = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(51234, 80, conv.client_seq, conv.server_seq,
                 "PA", b"y" * 100, src_ip="10.0.0.1", dst_ip="10.0.0.2"), ident=9)
    packets.append((conv.now() + 0.002, ether(ipv4_fragments(whole, 48)[0])))
    pipeline = Pipeline()
    pipeline.feed(Batch.from_packets(1, packets))
    pipeline.finish()
    stats = pipeline.stats()
    assert (stats.ignored_segments, stats.fragments_dropped) == (1, 1)


def test_http_parsers_are_counted_while_their_connections_linger(tmp_path):
    """One request per connection, all closed within the linger time: each connection's HTTP
    parser stays in the table with it and is counted, so the budget bounds them too."""
    from engine.bounds import CONSUMER_COST
    from tests.bench.workloads import conn_per_request_http

    path = tmp_path / "short.pcap"
    conn_per_request_http(str(path), connections=400)
    source = sources.open_files([str(path)])
    batches = []
    while (batch := source.next_batch()) is not None:
        batches.append(batch)
    source.close()
    pipeline = Pipeline(Bounds())
    for batch in batches:
        pipeline.feed(batch)
    stats = pipeline.stats()
    lingering = len(pipeline.table.lru)
    assert lingering == stats.connections_total == 400  # all still in the table
    assert stats.memory_used >= lingering * (CONNECTION_COST + CONSUMER_COST)
    pipeline.finish()
    assert pipeline.stats().memory_used == 0  # all given back
    budget = 100 * (CONNECTION_COST + CONSUMER_COST)
    pipeline = Pipeline(Bounds(memory_budget=budget))
    for batch in batches:
        pipeline.feed(batch)
        assert pipeline.table.memory <= budget
    assert pipeline.stats().evicted_connections > 0


def test_a_closed_connection_lingering_is_counted_active_once():
    """Closed connections stay in the table for late retransmissions (closed_linger): they are
    still active, and each counts once (they were counted twice)."""
    pipeline = Pipeline()
    source = sources.open_files([capture("zeek/http__get.pcap")], "")
    while (batch := source.next_batch()) is not None:
        pipeline.feed(batch)
    source.close()
    stats = pipeline.stats()
    assert stats.connections_total == 1 and stats.connections_active == 1
