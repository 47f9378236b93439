"""An HTTP parser that gives its exchanges as records (Pipeline(records=True), as the app's
helper processes run it: engine.events.ExchangeRecord) gives exactly what encoding its
HttpTransactions gives (engine.encoded: the record's bytes, the row's line and status, the
request's offset, the index), and the same other events, in the same order: on every bundled
capture, with requests announced as they wait (a live helper's) and without, on conversations
cut at every point, and on decrypted TLS."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.batch import Batch
from engine.events import Event, ExchangeRecord, HttpRequest, HttpRequestSeen, HttpTransaction
from engine.pipeline import Pipeline
from tests.captures import PCAPS, all_captures, replay_file
from tests.test_http_fast import KEEPALIVE, messages, parse
from tests.test_tlsdecrypt import keys_of, made
from tui.cli import DEMO_CAPTURE
from tui.exchange_log import EncodedExchanges, decode, row_of


def columns(events: list[Event]) -> tuple:
    """The exchanges among `events` as a helper sends them, and the other events in order."""
    encoded = EncodedExchanges()
    encoded.collect(events)
    return (bytes(encoded.records), list(encoded.starts), list(encoded.connections),
            encoded.lines, list(encoded.statuses), list(encoded.offsets), list(encoded.indexes),
            [e for e in events if not isinstance(e, (HttpTransaction, ExchangeRecord))])


def read(path: str, records: bool, announce: bool) -> list[Event]:
    return replay_file(path, announce=announce, records=records).events


CAPTURES = [str(PCAPS / name) for name in all_captures()] + [str(DEMO_CAPTURE)]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.rsplit("/", 2)[-1])
def test_every_capture_gives_the_same_records_either_way(path: str) -> None:
    for announce in (False, True):
        by_events = read(path, False, announce)
        by_records = read(path, True, announce)
        assert columns(by_records) == columns(by_events)
        assert not any(isinstance(e, HttpTransaction) and e.stream is None
                       for e in by_records)  # (HTTP/2's still come as transactions)


def test_each_record_reads_back_as_its_exchange() -> None:
    """Not two ways of nothing: each record of the demo capture reads back (as the app reads
    the ring) as the HttpTransaction the other way gives, with its row."""
    transactions = [e for e in read(str(DEMO_CAPTURE), False, False)
                    if isinstance(e, HttpTransaction)]
    records = [e for e in read(str(DEMO_CAPTURE), True, False) if isinstance(e, ExchangeRecord)]
    assert len(records) == len(transactions) > 10
    for record, tx in zip(records, transactions):
        assert decode(record.record, record.connection) == tx
        assert (record.line, record.status) == row_of(tx)
        assert record.index == tx.index and record.connection == tx.connection


@pytest.mark.parametrize("announce", [False, True])
def test_a_conversation_cut_at_every_size_gives_the_same_records(announce: bool) -> None:
    whole = parse(KEEPALIVE, 1 << 20, True, announce)
    assert sum(isinstance(e, HttpTransaction) for e in whole) == 8
    for cuts in range(1, 80):
        for fast in (True, False):  # (heads read by h11 keep their fields as pairs)
            expected = columns(parse(KEEPALIVE, cuts, fast, announce))
            assert columns(parse(KEEPALIVE, cuts, fast, announce, records=True)) == expected


def test_an_announced_request_leaves_the_waiting_list_when_its_record_comes() -> None:
    """A live helper lists the requests still waiting (HttpRequestSeen) and drops those whose
    exchange came, by connection and offset: a record carries its request's offset for that."""
    events = parse(KEEPALIVE[:1], 1 << 20, True, True, records=True)
    seen_events = [e for e in events if isinstance(e, HttpRequestSeen)]
    assert seen_events
    seen: dict[tuple[int, int], HttpRequest] = {}
    EncodedExchanges().collect(seen_events, seen)
    assert len(seen) == 1
    answered = parse(KEEPALIVE[:2], 1 << 20, True, True, records=True)
    [record] = [e for e in answered if isinstance(e, ExchangeRecord)]
    EncodedExchanges().collect([record], seen)
    assert seen == {}


def test_decrypted_tls_gives_the_same_records_either_way() -> None:
    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", False)
    found = []
    for records in (False, True):
        pipeline = Pipeline(keylog=keys_of(s.keylog), records=records)
        found.append(columns(pipeline.feed(Batch.from_packets(1, s.packets())) + pipeline.finish()))
    assert found[0] == found[1] and len(found[0][3]) > 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.booleans().flatmap(lambda r: st.tuples(st.just(r), messages(r))),
                min_size=1, max_size=6), st.integers(1, 40), st.booleans())
def test_generated_conversations_give_the_same_records(script, cuts, announce) -> None:
    expected = columns(parse(script, cuts, True, announce))
    assert columns(parse(script, cuts, True, announce, records=True)) == expected
