"""The capture driver's side of the UI: folding updates the UI has not taken, and not running ahead."""

from __future__ import annotations

import threading
import time

from engine.bounds import Bounds
from engine.events import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    ConnectionUpdated,
    Gap,
    HttpRequest,
    HttpRequestSeen,
    HttpTransaction,
)
from tests.captures import capture
from tui.capture import CaptureDriver, Governor, Pending, SourceSpec
from tui.cli import DEMO_CAPTURE
from tui.messages import EngineUpdate


def info(conn_id: int, packets: int) -> ConnectionInfo:
    return ConnectionInfo(  # type: ignore[call-arg]
        *(ConnectionInfo._field_defaults.get(f, None) for f in ConnectionInfo._fields)
    )._replace(id=conn_id, packets=(packets, 0))


def tx(conn_id: int, index: int) -> HttpTransaction:
    return HttpTransaction(connection=conn_id, index=index, request=None, response=None)


def test_pending_keeps_the_latest_state_of_each_connection_and_every_transaction():
    pending = Pending()
    pending.add([ConnectionOpened(info(1, 1)), ConnectionUpdated(info(1, 2)), tx(1, 0),
                 ConnectionOpened(info(2, 1)), Gap(1, True, 0, 10, 0.0, "acked")])
    pending.add([ConnectionUpdated(info(1, 3)), ConnectionClosed(info(2, 5), "closed"),
                 ConnectionUpdated(info(3, 9)), tx(1, 1)])
    assert len(pending) == 5
    events = pending.take()
    assert events == (
        ConnectionOpened(info(1, 3)),  # opened since the last take: still an opening, latest state
        ConnectionClosed(info(2, 5), "closed"),
        ConnectionUpdated(info(3, 9)),
        tx(1, 0),
        tx(1, 1),
    )
    assert pending.take() == () and len(pending) == 0


def request(offset: int, body_bytes: int = 0, complete: bool = True) -> HttpRequest:
    return HttpRequest(1.0, 1.0 if complete else None, "POST", f"/{offset}", "1.1", (),
                       body_bytes, 0, b"", complete, offset)


def answered(conn_id: int, index: int, offset: int) -> HttpTransaction:
    return HttpTransaction(connection=conn_id, index=index, request=request(offset), response=None)


def test_pending_keeps_waiting_requests_in_order_and_drops_those_answered_meanwhile():
    pending = Pending()
    # Connection 1: a request waits, its body grows, then another request waits behind it.
    # Connection 2: a request at the same offset as one of connection 1's waits, and is answered
    # within the same fold.
    pending.add([HttpRequestSeen(1, request(0, 10, complete=False)), tx(1, 0),
                 HttpRequestSeen(2, request(0)), HttpRequestSeen(1, request(500))])
    pending.add([HttpRequestSeen(1, request(0, 40)), answered(2, 0, 0)])
    assert pending.take() == (
        HttpRequestSeen(1, request(0, 40)),  # its latest state, in the place it first came
        tx(1, 0),
        HttpRequestSeen(1, request(500)),
        answered(2, 0, 0),  # answered in the same fold: never shown waiting
    )
    # Taken: the UI has the waiting rows now, and drops them itself when their answers come.
    pending.add([answered(1, 1, 0), HttpRequestSeen(1, request(900))])
    assert pending.take() == (answered(1, 1, 0), HttpRequestSeen(1, request(900)))
    assert pending.take() == () and len(pending) == 0


def test_a_file_is_not_read_ahead_of_the_ui():
    """Until the UI says it took an update, the driver posts nothing more and waits; once a
    file is read and the UI told, it posts only when there is something new."""
    posted: list[EngineUpdate] = []
    # (jobs=0: HTTP parsed in the driver's thread, so that the first tick reads it all)
    driver = CaptureDriver(SourceSpec(files=(capture("zeek/http__get.pcap"),)), "",
                           Bounds(keep_after_close=True), posted.append, jobs=0)
    stop = threading.Event()
    worker = threading.Thread(target=driver.run, args=(stop.is_set,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not posted and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # several ticks: nothing more may come, the first was not taken
        assert len(posted) == 1
        assert posted[0].status.finished  # (a small file: read whole in the first tick)
        driver.taken.set()
        time.sleep(0.5)  # taken, but nothing new: the driver rests (the app redraws nothing)
        assert len(posted) == 1
        # The app selects the connection, with the Stream tab shown: its stream is read again
        # from the file (tui.follow) and sent.
        closed = [e.info for e in posted[0].events if isinstance(e, ConnectionClosed)]
        driver.stream_shown = True
        driver.follow_info = (closed[0], True, driver.generation)
        driver.follow = 0
        deadline = time.monotonic() + 10
        while len(posted) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(posted) == 2 and posted[1].stream_id == 0 and posted[1].stream
        time.sleep(0.3)
        assert len(posted) == 2
    finally:
        stop.set()
        driver.taken.set()
        worker.join(10)
    assert not worker.is_alive()
    # Whatever the ticks, the file's one connection arrives whole and closed.
    events = [e for update in posted for e in update.events]
    assert any(isinstance(e, ConnectionClosed) for e in events)
    assert sum(isinstance(e, HttpTransaction) for e in events) == 1


def test_governor_sheds_after_sustained_overload_and_resumes_after_sustained_room():
    governor = Governor()
    assert [governor.tick(load) for load in (1.0, 1.0, 0.5, 1.0, 0.95)] == [False] * 5
    assert governor.tick(1.0) is True  # three busy ticks in a row
    assert [governor.tick(0.3) for _ in range(Governor.RESUME_AFTER - 1)] == [True] * 9
    assert governor.tick(0.75) is True  # neither busy nor idle: the count starts again
    assert [governor.tick(0.3) for _ in range(Governor.RESUME_AFTER)][-1] is False


def test_governor_tries_parsing_again_while_overloaded():
    governor = Governor()
    busy = [governor.tick(1.0) for _ in range(Governor.SHED_AFTER + Governor.PROBE_AFTER)]
    assert busy[Governor.SHED_AFTER - 1] is True and busy[-1] is False  # the probe
    again = [governor.tick(1.0) for _ in range(Governor.SHED_AFTER)]
    assert again == [False, False, True]  # still too much: shed again after three busy ticks


def demo_transactions(shedding: frozenset[str], keep: int | None = None) -> tuple[dict[int, int], int]:
    """HTTP transactions per connection id in the demo capture, and how many went unparsed."""
    from engine import sources
    from engine.pipeline import Pipeline

    pipeline = Pipeline(Bounds())
    pipeline.shed(shedding, keep)
    source = sources.open_files([str(DEMO_CAPTURE)], "")
    events: list[Event] = []
    while (batch := source.next_batch()) is not None:
        events += pipeline.feed(batch)
    events += pipeline.finish()
    per_connection: dict[int, int] = {}
    for event in events:
        if isinstance(event, HttpTransaction):
            per_connection[event.connection] = per_connection.get(event.connection, 0) + 1
    protocols = {e.info.id: e.info.protocol for e in events if isinstance(e, ConnectionClosed)}
    assert sum(p == "http" for p in protocols.values()) >= 8  # still recognised as HTTP
    return per_connection, pipeline.stats().unparsed_connections


def test_shedding_skips_http_parsing_of_new_connections_except_the_one_kept():
    parsed, unparsed = demo_transactions(frozenset())
    assert unparsed == 0 and len(parsed) >= 8
    none, unparsed = demo_transactions(frozenset({"http"}))
    assert none == {} and unparsed == len(parsed)
    kept, unparsed = demo_transactions(frozenset({"http"}), keep=0)
    assert kept == {0: parsed[0]} and unparsed == len(parsed) - 1
