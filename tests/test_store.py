"""The UI's store: exchanges kept on disk and read back as they came, within its byte budget
and its ring file: what it counts, what it evicts first, what it says."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from engine import sources
from engine.bounds import Bounds, MiB
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    HttpRequest,
    HttpResponse,
    HttpTransaction,
    Transaction,
)
from engine.pipeline import Pipeline
from tests.captures import all_captures, capture
from tui.exchange_log import GONE, decode, encode
from tui.store import (
    CONNECTION_COST,
    EXCHANGE_COST,
    LOG_BYTES,
    MIN_LOG_BYTES,
    NO_ANSWER,
    TrafficStore,
    exchange_log_bytes,
)


def info(conn_id: int) -> ConnectionInfo:
    return ConnectionInfo(conn_id, f"10.0.0.1:{40000 + conn_id}", "10.0.0.2:80", "ESTABLISHED",
                          "S1", "ShAD", False, 1.0, 2.0, (1, 1), (10, 10), (0, 0), (0, 0), 0,
                          "http")


def exchange(conn_id: int, index: int, body: int = 1000) -> HttpTransaction:
    headers = tuple((f"X-Header-{j}", f"value {index} {j}") for j in range(4))
    request = HttpRequest(1.0, 1.1, "GET", f"/items/{conn_id}/{index}", "1.1",
                          (("Host", f"example{index}"),), 0, 0, b"", True, 17 * index)
    response = HttpResponse(1.2, 1.3, 200, "OK", "1.1", headers, body, 0, bytes([index % 256]) * body,
                            True, (), 40 * index)
    return HttpTransaction(conn_id, index, request, response)


def recount(store: TrafficStore) -> int:
    """The cost as it would be counted from scratch over what the store holds now."""
    return (CONNECTION_COST * len(store.connections)
            + EXCHANGE_COST * sum(len(txs) for txs in store.http.values()))


def records_read(monkeypatch: pytest.MonkeyPatch, store: TrafficStore) -> list[tuple]:
    """The reads of the store's ring file of exchanges from now on (each call's arguments), for
    tests that a view reads only what it draws."""
    read: list[tuple] = []
    original = store.log.read
    monkeypatch.setattr(store.log, "read", lambda *a: read.append(a) or original(*a))
    return read


def test_past_its_budget_the_store_evicts_the_oldest_connections_exchanges_first():
    budget = 3 * CONNECTION_COST + 400 * EXCHANGE_COST
    store = TrafficStore(budget=budget)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(3)))
    store.take_changes()
    sent = 0
    for round_ in range(200):
        store.apply(tuple(exchange(i, round_, body=10) for i in range(3)))
        sent += 3
        assert store.cost <= budget
        assert store.cost == recount(store)
        if store.evicted_exchanges and "first" not in locals():
            # The first eviction took the oldest connection's oldest exchanges, and only those.
            first = [len(store.http.get(i, [])) for i in range(3)]
            assert first[0] < first[1] == first[2] == round_ + 1
    kept = sum(len(txs) for txs in store.http.values())
    assert 0 < kept < sent
    assert store.evicted_exchanges == sent - kept  # every one that went is counted
    assert list(store.connections) == [0, 1, 2]  # the rows stay: only exchanges were needed
    # Each connection keeps its newest exchanges, in order.
    for txs in store.http.values():
        assert [tx.index for tx in txs] == list(range(200 - len(txs), 200))
    changed, _removed = store.take_changes()
    assert 0 in changed  # its row and exchange list are redrawn


def test_rows_alone_past_the_budget_evict_the_oldest_closed_connections_and_count_them():
    store = TrafficStore(budget=10 * CONNECTION_COST)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(4)))
    store.apply((exchange(0, 0), exchange(0, 1)))
    store.apply((ConnectionClosed(info(1), "closed"),))
    store.apply(tuple(ConnectionClosed(info(i), "closed") for i in range(4, 15)))
    assert store.cost <= store.budget
    # Down to 7/8 of the budget: the closed ones went, the oldest first; the open ones stay
    # with their exchanges.
    assert list(store.connections) == [0, 2, 3, *range(10, 15)]
    assert store.evicted == 7
    assert len(store.http[0]) == 2 and store.evicted_exchanges == 0
    _changed, removed = store.take_changes()
    assert removed == {1, 4, 5, 6, 7, 8, 9}


def test_closed_rows_go_with_their_exchanges_rather_than_every_row_losing_its_http():
    """One connection per request: a row costs what some hundreds of exchanges do, so the
    oldest connections go whole and the newest keep their exchanges."""
    store = TrafficStore(budget=20 * (CONNECTION_COST + EXCHANGE_COST))
    for i in range(100):
        store.apply((ConnectionOpened(info(i)), exchange(i, 0), ConnectionClosed(info(i), "closed")))
        assert store.cost <= store.budget and store.cost == recount(store)
    assert all(len(store.http[conn_id]) == 1 for conn_id in store.connections)
    assert list(store.connections) == list(range(100 - len(store.connections), 100))
    assert store.evicted_exchanges == 100 - len(store.connections) == store.evicted


def test_open_rows_alone_past_the_budget_evict_the_oldest_and_count_them():
    store = TrafficStore(budget=10 * CONNECTION_COST)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(4)))
    store.apply((exchange(0, 0), exchange(0, 1)))
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(4, 15)))
    assert store.cost <= store.budget
    assert len(store.connections) == 10 and 0 not in store.connections
    assert store.evicted == 5
    assert store.evicted_exchanges == 2  # connection 0's, gone first as exchanges or with it
    _changed, removed = store.take_changes()
    assert removed == {0, 1, 2, 3, 4}


def test_reset_forgets_the_cost_and_the_counts():
    store = TrafficStore(budget=CONNECTION_COST + 10 * EXCHANGE_COST)
    store.apply((ConnectionOpened(info(0)), *(exchange(0, i) for i in range(20))))
    assert store.evicted_exchanges
    store.reset()
    assert store.cost == 0 and store.evicted_exchanges == 0


def test_the_estimate_is_close_to_what_the_objects_hold(tmp_path):
    """The constants were measured with tracemalloc on the parser's own output: they still
    describe what the store holds for a capture (one connection per request, and keep-alive)."""
    from tests.bench.workloads import WORKLOADS

    short, long = tmp_path / "short.pcap", tmp_path / "long.pcap"
    WORKLOADS["conn_per_request_http"](str(short), connections=1500, vary=True)
    WORKLOADS["keepalive_http"](str(long), connections=10, transactions=6000, vary=True)
    for path, connections, exchanges in [(short, 1500, 1500), (long, 10, 6000)]:
        batches = []
        source = sources.open_files([str(path)])
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
            store.log.spool.flush()  # its write buffer is the working set, not the store's
            store.take_changes()  # the app takes them at every refresh of the screen
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(store.connections) == connections
        assert sum(len(txs) for txs in store.http.values()) == exchanges
        assert 0.75 < store.cost / held < 1.33, (path.name, store.cost, held)
        # What an exchange costs in memory, whatever its heads and bodies: a few bytes.
        assert held / exchanges < 2 * CONNECTION_COST * connections / exchanges + 64


def test_exchanges_read_back_are_those_the_engine_gave_on_every_capture():
    """Heads with any characters, bodies, gaps, notes, errors, tunnels and 1xx answers come
    back from the ring file equal, in order, as the views read them (index, slice, iteration)."""
    total = 0
    for name in all_captures():
        store = TrafficStore(budget=10**12)
        given = load(capture(name), store)
        for conn_id, txs in store.http.items():
            want = [tx for tx in given if tx.connection == conn_id]
            assert list(txs) == want and txs[:] == want and txs == want, name
            assert [txs[i] for i in range(len(txs))] == want and txs[-1] == want[-1]
        assert sum(len(txs) for txs in store.http.values()) == len(given)
        total += len(given)
        store.close()
    assert total > 1000  # the captures do hold exchanges


def load(path: str, store: TrafficStore) -> list[HttpTransaction | Transaction]:
    """The store fed as the app feeds it, from a capture file; the exchanges (and other
    protocols' transactions) the engine gave."""
    source = sources.open_files([path])
    pipeline = Pipeline(Bounds(), live_updates=True)
    given: list[HttpTransaction | Transaction] = []
    try:
        while True:
            batch = source.next_batch()
            events = tuple(pipeline.feed(batch) if batch is not None else pipeline.finish())
            given += [e for e in events if isinstance(e, (HttpTransaction, Transaction))]
            store.apply(events)
            if batch is None:
                return given
    finally:
        source.close()


def test_encoding_keeps_every_field_exactly():
    odd = HttpTransaction(
        7, 3,
        HttpRequest(1.5, None, "GET", "/\x00\x1b[2J\xff", "1.0", (("Caf\xe9", "\r\n"), ("", "")),
                    5, 2, b"ab\x00", False, 12, ((1, 2),)),
        HttpResponse(2.25, 3.0, 101, "Switching", "1.1", (), 0, 0, b"", True,
                     ((100, "Continue", 2.0),), 99),
        "an error", True, ("bytes lost before this message",))
    assert decode(encode(odd), 7) == odd
    back = decode(encode(odd), 7)
    assert type(back.request) is HttpRequest and type(back.response) is HttpResponse
    assert decode(encode(HttpTransaction(0, 0, None, None)), 0) == HttpTransaction(0, 0, None, None)


def test_past_its_ring_the_store_forgets_the_oldest_exchanges_before_they_are_overwritten():
    store = TrafficStore(budget=10**12, log_bytes=256 * 1024)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(3)))
    sent = 0
    for round_ in range(400):  # about 1.2 KB each: 480 KB through a 256 KiB ring
        store.apply(tuple(exchange(i, round_) for i in range(3)))
        sent += 3
        for conn_id, txs in store.http.items():
            # Whatever is listed reads back whole: never a record the ring overwrote.
            assert txs[0].error is None and txs[0].connection == conn_id
    kept = sum(len(txs) for txs in store.http.values())
    assert 0 < kept < sent and store.evicted_exchanges == sent - kept
    assert store.cost == recount(store)
    for conn_id, txs in store.http.items():
        assert [tx.index for tx in txs] == list(range(400 - len(txs), 400))  # the newest
        assert store.dropped[conn_id] == 400 - len(txs)
    assert store.log.spool.file_size <= 256 * 1024
    assert "exchanges evicted" not in store.summary(0)  # some are still kept: the last one shows
    # A view still holding a list the store replaced reads what was overwritten as gone.
    old = store.http[0]
    store.apply(tuple(exchange(0, 400 + i) for i in range(400)))
    assert old[0].error == GONE and old[0].index == -1


@pytest.mark.parametrize(("per_batch", "body"), [(1, 1000), (7, 1000), (150, 1000),
                                                (1200, 1000), (1200, 957), (1200, 1131),
                                                (400, 40_000)])
def test_helpers_batches_are_written_so_that_nothing_kept_is_overwritten(per_batch, body):
    """Exchanges from the helpers come encoded in batches written at once (a batch of 1,200 is
    about 1.4 MB, over five times the ring): written a slice of an eighth of the ring at a time,
    each after a sweep, every exchange listed reads back whole, as one at a time did; whatever
    the records' size (where they end against an eighth of the ring, or over one)."""
    from tui.exchange_log import EncodedExchanges

    store = TrafficStore(budget=10**12, log_bytes=256 * 1024)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(3)))
    sent = [exchange(i % 3, i // 3, body) for i in range(1200)]
    for first in range(0, len(sent), per_batch):
        batch = EncodedExchanges()
        for tx in sent[first:first + per_batch]:
            batch.add(tx.connection, tx)
        store.apply_encoded([batch])
        for conn_id, txs in store.http.items():
            assert all(tx.error is None and tx.connection == conn_id for tx in txs)
        assert store.cost == recount(store)
    kept = {conn_id: list(txs) for conn_id, txs in store.http.items()}
    assert 0 < sum(map(len, kept.values())) < 1200
    assert store.evicted_exchanges == 1200 - sum(map(len, kept.values()))
    for conn_id, txs in kept.items():
        assert txs == sent[-3 * len(txs):][conn_id::3]  # the newest, as they were sent
        assert store.last_status(conn_id) == 200
        assert store.summary(conn_id).startswith(f"GET /items/{conn_id}/399 ")


def test_an_encoded_batch_gives_back_each_exchange_and_what_its_row_shows():
    from tui.exchange_log import EncodedExchanges, row_of

    batch = EncodedExchanges()
    sent = [exchange(5, 0), HttpTransaction(5, 1, None, exchange(5, 1).response),
            HttpTransaction(5, 2, exchange(5, 2).request, None)]
    for tx in sent:
        batch.add(7, tx)  # a helper's own connection id
    renamed = batch.renamed([0] * 7 + [5])
    assert list(batch.connections) == [7, 7, 7] and list(renamed.connections) == [5, 5, 5]
    got = list(renamed)
    assert [decode(blob, conn) for conn, blob, *_ in got] == sent
    assert [(line, status) for _, _, line, status, _ in got] == [row_of(tx) for tx in sent]
    assert [offset for *_, offset in got] == [0, -1, 34]


def test_a_rows_summary_and_status_come_from_memory_not_the_ring():
    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)), exchange(0, 0), exchange(0, 1)))
    unanswered = HttpTransaction(0, 2, exchange(0, 2).request, None)
    assert store.summary(0) == "GET /items/0/1 (+1)" and store.last_status(0) == 200
    store.log.close()  # nothing can be read back now
    store.apply((unanswered,))
    assert store.summary(0) == "GET /items/0/2 (+2)" and store.last_status(0) == NO_ANSWER
    store.apply((ConnectionOpened(info(1)),))
    assert store.last_status(1) == -1


def test_the_ring_file_of_exchanges_is_a_quarter_of_the_spool():
    assert exchange_log_bytes(Bounds(spool_bytes=1024 * MiB)) == 256 * MiB
    assert exchange_log_bytes(Bounds(spool_bytes=8 * MiB)) == MIN_LOG_BYTES
    assert exchange_log_bytes(Bounds(spool_bytes=0)) == LOG_BYTES


@pytest.mark.parametrize("n", [0, 1, 5])
def test_the_store_gives_an_empty_list_for_a_connection_without_exchanges(n):
    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)), *(exchange(0, i) for i in range(n))))
    assert len(store.exchanges(0)) == n and store.exchanges(0) is store.exchanges(0)


def test_exchanges_of_a_forgotten_connection_are_counted_not_kept():
    """The HTTP helpers run behind the capture thread: a connection's row can be evicted before
    its exchanges come. They are counted as evicted, not kept under a row that is gone."""
    from tui.exchange_log import EncodedExchanges

    store = TrafficStore(budget=4 * CONNECTION_COST)
    store.apply(tuple(ConnectionClosed(info(i), "closed") for i in range(10)))
    gone = [i for i in range(10) if i not in store.connections]
    kept = [i for i in range(10) if i in store.connections]
    assert gone and kept
    batch = EncodedExchanges()
    batch.add(gone[0], exchange(gone[0], 0))
    batch.add(kept[0], exchange(kept[0], 0))
    store.apply_encoded([batch])
    store.apply((exchange(gone[-1], 1),))
    assert list(store.http) == [kept[0]]
    assert store.evicted_exchanges == 2
    assert store.cost == recount(store)


def test_ended_connections_go_before_open_ones_and_do_not_come_back():
    """A connection the engine lingers on in a finished state (CLOSED, RESET) has ended: it goes
    before the open ones, and its ConnectionClosed, coming later, does not bring its row back."""
    store = TrafficStore(budget=6 * CONNECTION_COST)
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(4)))
    store.apply(tuple(ConnectionUpdated(info(i)._replace(state="CLOSED")) for i in (1, 2)))
    store.apply(tuple(ConnectionOpened(info(i)) for i in range(4, 8)))
    assert list(store.connections) == [0, 3, 4, 5, 6, 7]  # within the budget: the open stay
    store.apply((ConnectionClosed(info(1)._replace(state="CLOSED"), "reused"),))
    assert 1 not in store.connections and 1 not in store.closed
    assert store.evicted == 2 and store.cost == recount(store)


@pytest.mark.parametrize("encoded", [False, True])
def test_a_connection_past_its_cap_keeps_its_newest_exchanges(monkeypatch, encoded):
    """Live, the newest exchanges of a long keep-alive connection are what one looks at: past
    the cap the oldest go (an eighth of it at a time), counted, as past the other bounds."""
    from tui import store as store_module
    from tui.exchange_log import EncodedExchanges

    monkeypatch.setattr(store_module, "MAX_TRANSACTIONS_PER_CONNECTION", 40)
    monkeypatch.setattr(store_module, "MAX_KEPT", 45)
    store = TrafficStore(budget=10**12)
    store.apply((ConnectionOpened(info(0)), ConnectionOpened(info(1))))
    for i in range(200):
        txs = [exchange(0, i, body=10)] + ([exchange(1, i, body=10)] if i < 30 else [])
        if encoded:
            batch = EncodedExchanges()
            for tx in txs:
                batch.add(tx.connection, tx)
            store.apply_encoded([batch])
        else:
            store.apply(tuple(txs))
        assert 40 <= len(store.http[0]) <= 45 or i < 45
    kept = store.http[0]
    assert [tx.index for tx in kept] == list(range(200 - len(kept), 200))
    assert store.evicted_exchanges == 200 - len(kept) == store.dropped[0]
    assert len(store.http[1]) == 30 and 1 not in store.dropped
    assert store.summary(0).startswith("GET /items/0/199 ")
    assert store.cost == recount(store)


@pytest.mark.parametrize("per_batch", [1, 7, 130, 400])
def test_a_batch_of_interleaved_connections_keeps_what_one_at_a_time_keeps(monkeypatch, per_batch):
    """The helpers' batches interleave their connections' exchanges, which the store adds a
    connection at a time: the lists, the cap's cuts, the counts and the rows are those of the
    same exchanges added one by one, however many of a connection's a batch holds."""
    from tui import store as store_module
    from tui.exchange_log import EncodedExchanges

    monkeypatch.setattr(store_module, "MAX_TRANSACTIONS_PER_CONNECTION", 40)
    monkeypatch.setattr(store_module, "MAX_KEPT", 45)
    sent = []
    for i in range(400):  # connection 0 most often, 2 now and then; 3 was never opened
        conn_id = 0 if i % 5 < 3 else 1 if i % 5 == 3 else (2 if i % 10 == 4 else 3)
        sent.append(exchange(conn_id, sum(tx.connection == conn_id for tx in sent), body=10))
    one_by_one, batched = TrafficStore(budget=10**12), TrafficStore(budget=10**12)
    for store in (one_by_one, batched):
        store.apply(tuple(ConnectionOpened(info(i)) for i in range(3)))
    for tx in sent:
        batch = EncodedExchanges()
        batch.add(tx.connection, tx)
        one_by_one.apply_encoded([batch])
    for first in range(0, len(sent), per_batch):
        batch = EncodedExchanges()
        for tx in sent[first:first + per_batch]:
            batch.add(tx.connection, tx)
        batched.apply_encoded([batch])
    assert len(batched.http[0]) < 240  # the cap cut connection 0's list
    for conn_id in range(3):
        assert list(batched.http[conn_id]) == list(one_by_one.http[conn_id])
        assert batched.summary(conn_id) == one_by_one.summary(conn_id)
        assert batched.last_status(conn_id) == one_by_one.last_status(conn_id)
    assert batched.dropped == one_by_one.dropped and batched.dropped[0] > 0
    assert batched.evicted_exchanges == one_by_one.evicted_exchanges
    assert batched.cost == recount(batched) == one_by_one.cost
