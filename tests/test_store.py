"""The UI's store under its byte budget: what it counts, what it evicts first, what it says."""

from __future__ import annotations

import gc
import tracemalloc

from engine import sources
from engine.bounds import Bounds
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    HttpRequest,
    HttpResponse,
    HttpTransaction,
)
from engine.pipeline import Pipeline
from tests.captures import capture
from tui.store import CONNECTION_COST, TrafficStore, transaction_cost

SHARED_HEAD = (("Server", "nginx"), ("Content-Type", "text/html"), ("Connection", "keep-alive"))


def info(conn_id: int) -> ConnectionInfo:
    return ConnectionInfo(conn_id, f"10.0.0.1:{40000 + conn_id}", "10.0.0.2:80", "ESTABLISHED",
                          "S1", "ShAD", False, 1.0, 2.0, (1, 1), (10, 10), (0, 0), (0, 0), 0,
                          "http")


def exchange(conn_id: int, index: int, body: int = 1000, shared: bool = False) -> HttpTransaction:
    # Fresh strings, as the parser makes them; a repeated response head shares its tuple.
    headers = SHARED_HEAD if shared else tuple(
        (f"X-Header-{j}", f"value {index} {j}") for j in range(4))
    request = HttpRequest(1.0, 1.1, "GET", f"/items/{conn_id}/{index}", "1.1",
                          ((f"Host{''}", f"example{index}"),), 0, 0, b"", True)
    response = HttpResponse(1.2, 1.3, 200, "OK", "1.1", headers, body, 0, bytes([index % 256]) * body,
                            True)
    return HttpTransaction(conn_id, index, request, response)


def recount(store: TrafficStore) -> int:
    """The cost as it would be counted from scratch over what the store holds now."""
    total = CONNECTION_COST * len(store.connections)
    for conn_id, txs in store.http.items():
        each = [transaction_cost(tx, txs[i - 1] if i else None) for i, tx in enumerate(txs)]
        assert list(store.costs.get(conn_id, ())) == each  # what it was counted for, in step
        total += sum(each)
    return total


def test_past_its_budget_the_store_evicts_the_oldest_connections_exchanges_first():
    budget = 60_000
    store = TrafficStore(budget=budget)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(3)))
    store.take_changes()
    sent = 0
    for round_ in range(40):
        store.apply(tuple(exchange(i, round_) for i in range(3)))
        sent += 3
        assert store.cost <= budget
        assert store.cost == recount(store)
        if store.evicted_exchanges and round_ < 40 and "first" not in locals():
            # The first eviction took the oldest connection's oldest exchanges, and only those.
            first = [len(store.http.get(i, [])) for i in range(3)]
            assert first[0] < first[1] == first[2] == round_ + 1
    kept = sum(len(txs) for txs in store.http.values())
    assert 0 < kept < sent
    assert store.evicted_exchanges == sent - kept  # every one that went is counted
    assert list(store.connections) == [0, 1, 2]  # the rows stay: only exchanges were needed
    # Each connection keeps its newest exchanges, in order.
    for txs in store.http.values():
        assert [tx.index for tx in txs] == list(range(40 - len(txs), 40))
    changed, _removed = store.take_changes()
    assert 0 in changed  # its row and exchange list are redrawn


def test_header_tuples_shared_with_the_exchange_before_are_counted_once():
    store = TrafficStore(budget=10**9)
    store.apply((ConnectionOpened(info(0)),))
    store.apply(tuple(exchange(0, i, shared=True) for i in range(10)))
    first, second = store.http[0][0], store.http[0][1]
    assert transaction_cost(second, first) < transaction_cost(second, None)
    assert store.cost == recount(store)
    # Evicting the first makes the second the owner of the tuple: the count follows.
    store.budget = store.cost - 1
    store.apply(())
    assert store.cost == recount(store) and store.cost <= store.budget


def test_rows_alone_past_the_budget_evict_the_oldest_connections_and_count_them():
    store = TrafficStore(budget=10 * CONNECTION_COST)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(4)))
    store.apply((exchange(0, 0), exchange(0, 1)))
    store.apply(tuple(ConnectionClosed(info(i), "closed") for i in range(4, 15)))
    assert store.cost <= store.budget
    assert len(store.connections) == 10 and 0 not in store.connections
    assert store.evicted == 5
    assert store.evicted_exchanges == 2  # connection 0's, gone first as exchanges or with it
    _changed, removed = store.take_changes()
    assert removed == {0, 1, 2, 3, 4}


def test_reset_forgets_the_cost_and_the_counts():
    store = TrafficStore(budget=5_000)
    store.apply((ConnectionOpened(info(0)), *(exchange(0, i) for i in range(20))))
    assert store.evicted_exchanges
    store.reset()
    assert store.cost == 0 and store.evicted_exchanges == 0


def test_the_estimate_is_close_to_what_the_objects_hold():
    """The constants were measured with tracemalloc on the parser's own output: they still
    describe what the store holds for a capture (1,000 keep-alive exchanges)."""
    source = sources.open_files([capture("zeek/http__1000-requests-one-dropped-response.pcap")])
    batches = []
    while (batch := source.next_batch()) is not None:
        batches.append(batch)
    source.close()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = TrafficStore(budget=10**12)
        pipeline = Pipeline(Bounds(), live_updates=True)
        for batch in batches:
            store.apply(tuple(pipeline.feed(batch)))
        store.apply(tuple(pipeline.finish()))
        del pipeline
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(len(txs) for txs in store.http.values()) >= 999
    assert 0.8 < store.cost / held < 1.25, (store.cost, held)


def test_packed_headers_read_as_the_pairs_they_were_made_from():
    from tui.store import PackedHeaders, pack

    for headers in [(("Host", "a"),), (("", ""), ("X", ""), ("", "y")),
                    (("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Caf\xe9", "\x00\x1b[2J\r\xff"))]:
        packed = pack(headers)
        assert type(packed) is PackedHeaders
        assert tuple(packed) == headers and packed == headers and headers == packed
        assert len(packed) == len(headers) and packed[0:] == headers
        assert hash(packed) == hash(headers) and repr(packed) == repr(headers)
        assert packed == pack(headers) and packed != pack((("Other", "1"),))
    # Nothing to pack, or a field the packing cannot hold: kept as they are.
    assert pack(()) == ()
    odd = (("X", "a\nb"),)
    assert pack(odd) is odd


def test_the_store_packs_headers_and_shares_a_repeated_heads_pack():
    store = TrafficStore(budget=10**9)
    store.apply((ConnectionOpened(info(0)),))
    sent = [exchange(0, i, shared=True) for i in range(3)]
    store.apply(tuple(sent))
    kept = store.http[0]
    assert kept == sent  # the same exchanges, read back
    assert [type(tx.response.headers).__name__ for tx in kept] == ["PackedHeaders"] * 3
    assert kept[1].response.headers is kept[0].response.headers  # one pack for the shared tuple
    assert kept[1].request.headers is not kept[0].request.headers  # each request its own
    # The same tuple from the engine (its HeadCache) shares a pack on any connection.
    store.apply((ConnectionOpened(info(1)), exchange(1, 0, shared=True)))
    assert store.http[1][0].response.headers is kept[0].response.headers
    assert store.cost == recount(store)
