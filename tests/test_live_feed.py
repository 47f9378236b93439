"""A live capture read by a capture process into a feed on disk (tui.live_feed): the feed's files
on their own, then the app's capture driver on `lo` with a real server and client, as root."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from engine import sources
from engine.batch import Batch
from engine.bounds import Bounds
from engine.events import ConnectionOpened, HttpRequestSeen
from tests.live import LoopbackServer
from tui.capture import CaptureDriver, SourceSpec
from tui.exchange_log import decode
from tui.live_feed import BATCH, END, FLUSH, SKIP, FeedReader, LiveFeed
from tui.messages import EngineUpdate, FilterApplied

root = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")


def batch(n: int, size: int = 100, first: int = 0) -> Batch:
    return Batch.from_packets(1, [(1.0 + i, bytes([(first + i) % 256]) * size) for i in range(n)])


def test_records_come_in_order_across_files_and_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(LiveFeed, "SEGMENT", 4096)
    feed = LiveFeed(str(tmp_path), limit=1 << 20)
    reader = FeedReader(str(tmp_path))
    assert reader.next() is None  # nothing written yet
    sent = [batch(10, first=10 * i) for i in range(20)]  # 1,000 bytes of packets each
    for i, b in enumerate(sent):
        feed.add(b)
        if i == 5:
            feed.flush(123.5)
    feed.end()
    assert feed.index > 3  # it went on to new files
    got = []
    while (record := reader.next()) is not None:
        got.append(record)
    kinds = [kind for kind, *_ in got]
    assert kinds == [BATCH] * 6 + [FLUSH] + [BATCH] * 14 + [END]
    assert got[6][2] == 123.5
    batches = [Batch(linktype, data, meta) for kind, linktype, _, data, meta in got if kind == BATCH]
    assert [b.packets() for b in batches] == [b.packets() for b in sent]
    assert reader.packets == 200 and reader.index == feed.index


def test_a_record_half_written_is_not_read_until_it_is_whole(tmp_path):
    feed = LiveFeed(str(tmp_path), limit=1 << 20)
    reader = FeedReader(str(tmp_path))
    b = batch(3)
    feed.add(b)
    path = feed.path(0)
    whole = open(path, "rb").read()
    with open(path, "r+b") as f:  # as a reader may find it while the write is under way
        f.truncate(len(whole) - 7)
    assert reader.next() is None
    with open(path, "r+b") as f:
        f.seek(0, 2)
        f.write(whole[-7:])
    kind, _, _, data, meta = reader.next()
    assert kind == BATCH and Batch(1, data, meta).packets() == b.packets()


def test_past_its_bound_the_feed_counts_batches_instead_and_deletes_what_readers_passed(
        tmp_path, monkeypatch):
    monkeypatch.setattr(LiveFeed, "SEGMENT", 4096)
    feed = LiveFeed(str(tmp_path), limit=0)  # at least two files' worth
    reader = FeedReader(str(tmp_path))
    for i in range(30):
        feed.add(batch(10, first=i))
    assert feed.skipped > 0
    kept = 30 * 10 - feed.skipped
    records = []
    while (record := reader.next()) is not None:
        records.append(record)
    assert sum(len(meta) // 16 for kind, _, _, _, meta in records if kind == BATCH) == kept
    assert sum(int(value) for kind, _, value, _, _ in records if kind == SKIP) == feed.skipped
    assert reader.packets == 300
    files = sorted(os.listdir(tmp_path), key=int)
    assert len(files) == feed.index + 1
    reader.release(through=0)  # another reader has read nothing: nothing goes
    assert len(os.listdir(tmp_path)) == len(files)
    reader.release(through=300)
    assert os.listdir(tmp_path) == [str(feed.index)]  # all but the file being written
    # With the files gone, batches are written again.
    before = feed.skipped
    feed.add(batch(10))
    assert feed.skipped == before
    kind, *_ = reader.next()
    assert kind == BATCH


def test_a_reader_far_behind_passes_over_batches_and_counts_their_packets(tmp_path, monkeypatch):
    monkeypatch.setattr(LiveFeed, "SEGMENT", 4096)
    feed = LiveFeed(str(tmp_path), limit=1 << 20)
    reader = FeedReader(str(tmp_path))
    for i in range(40):
        feed.add(batch(10, first=i))
    feed.flush(9.0)
    assert reader.behind(3) and not reader.behind(feed.index + 1)
    reader.passing = True
    records = []
    while (record := reader.next()) is not None:
        records.append(record)
    # Every batch comes as a skip of its packets; the other records as they are.
    assert [kind for kind, *_ in records] == [SKIP] * 40 + [FLUSH]
    assert all(value == 10 and not data and not meta for kind, _, value, data, meta in records[:40])
    assert reader.passed_over == 400 and reader.packets == 400
    reader.passing = False
    feed.add(batch(10))
    kind, _, _, data, meta = reader.next()
    assert kind == BATCH and len(meta) // 16 == 10 and reader.passed_over == 400


def test_files_a_helper_holds_past_the_bound_go_and_it_jumps_over_them(tmp_path, monkeypatch):
    """The capture thread must keep up; a helper need not: past `keep` files it has left, the
    capture thread deletes them whatever the helpers have read, and a helper that finds its next
    file gone goes on from the oldest one left, the packets between passed over, so that it
    numbers packets as every other reader does."""
    monkeypatch.setattr(LiveFeed, "SEGMENT", 4096)
    feed = LiveFeed(str(tmp_path), limit=1 << 20)
    ahead, helper = FeedReader(str(tmp_path)), FeedReader(str(tmp_path))
    for i in range(5):
        feed.add(batch(10, first=i))
    first = helper.next()  # the helper reads one batch, and is in file 0
    assert first is not None and first[0] == BATCH and helper.packets == 10
    for i in range(5, 60):
        feed.add(batch(10, first=i))
    while ahead.next() is not None:
        pass
    assert ahead.packets == 600 and len(ahead.left) == feed.index
    ahead.release(through=helper.packets, keep=2)  # the helper has read 10 packets
    assert len(ahead.left) == 2 and len(os.listdir(tmp_path)) == 3
    got = []
    while (record := helper.next()) is not None:
        got.append(record)
    batches = [len(meta) // 16 for kind, _, _, _, meta in got if kind == BATCH]
    skips = [int(value) for kind, _, value, _, _ in got if kind == SKIP]
    assert len(skips) == 1 and 10 + skips[0] + sum(batches) == 600 == helper.packets
    assert helper.passed_over == skips[0] > 0
    # Each batch it read, before the jump (the rest of the file it had open) and after, comes
    # where the capture thread numbered it: batch i holds packets 10 * i on.
    packets = 10
    for kind, _, value, data, meta in got:
        if kind == BATCH:
            assert data[0] == packets // 10
        packets += int(value) if kind == SKIP else len(meta) // 16


class KeepAliveServer(LoopbackServer):
    """HTTP/1.1 on loopback: every request on a connection answered in turn, with its number."""

    def answer(self, conn: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    got = conn.recv(65536)
                    if not got:
                        return
                    data += got
                head, _, data = data.partition(b"\r\n\r\n")
                target = head.split(b" ")[1]
                body = b"answer to " + target
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def requests(port: int, n: int) -> None:
    """n requests on one connection, each waiting for its answer."""
    with socket.create_connection(("127.0.0.1", port)) as c:
        for i in range(n):
            c.sendall(f"GET /item/{i} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            want = len(f"answer to /item/{i}")
            got = b""
            while not (b"\r\n\r\n" in got and len(got.partition(b"\r\n\r\n")[2]) >= want):
                chunk = c.recv(65536)
                assert chunk
                got += chunk


class Driven:
    """The capture driver reading a live capture, with the app's side played by the test."""

    def __init__(self, bpf: str) -> None:
        self.posted: list[object] = []
        source = sources.open_live(["lo"], bpf)
        self.driver = CaptureDriver(SourceSpec(interfaces=("lo",), opened=source), bpf,
                                    Bounds(keep_after_close=True), self._post, jobs=2)
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self.driver.run, args=(self.stop.is_set,))
        self.worker.start()

    def _post(self, message: object) -> None:
        self.posted.append(message)
        if isinstance(message, EngineUpdate):
            self.driver.taken.set()

    def updates(self) -> list[EngineUpdate]:
        return [m for m in self.posted if isinstance(m, EngineUpdate)]

    def exchanges(self) -> list[tuple[int, bytes, str, int, int]]:
        return [e for u in self.updates() for batch in u.exchanges for e in batch]

    def wait(self, condition: object, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.02)
        raise AssertionError("the driver never posted what was expected")

    def close(self) -> None:
        self.stop.set()
        self.worker.join(10)
        assert not self.worker.is_alive()


@root
def test_a_live_capture_is_read_by_a_capture_process_and_its_http_by_the_helpers():
    server = KeepAliveServer()
    driven = Driven(f"tcp port {server.port}")
    feed = driven.driver.feed
    assert feed is not None and driven.driver.helpers is None  # made by the capture thread
    try:
        requests(server.port, 300)
        driven.wait(lambda: len(driven.exchanges()) == 300)
        helpers = driven.driver.helpers
        assert helpers is not None and helpers.feed is feed
        [conn_id] = {e.info.id for u in driven.updates() for e in u.events
                     if isinstance(e, ConnectionOpened)}
        got = [decode(blob, conn) for conn, blob, *_ in driven.exchanges()]
        assert {tx.connection for tx in got} == {conn_id}
        assert [tx.request.target for tx in got] == [f"/item/{i}" for i in range(300)]
        assert [tx.index for tx in got] == list(range(300))
        assert all(tx.response is not None and tx.response.status == 200 for tx in got)
        # No HTTP in the capture thread: its events carry connections only.
        assert not [e for u in driven.updates() for e in u.events if type(e).__name__ == "HttpTransaction"]
        last = driven.updates()[-1].status
        assert last.capture is not None and last.capture.dropped == 0 and last.skipped == 0
        assert last.error is None
    finally:
        driven.close()
        server.close()
    # The capture process is gone, and so is the feed.
    with pytest.raises(ChildProcessError):
        os.waitpid(feed.pid, os.WNOHANG)
    assert not os.path.exists(feed.dir)


@root
def test_a_waiting_request_comes_from_the_helpers_at_once():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    driven = Driven(f"tcp port {port}")
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    try:
        client.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        driven.wait(lambda: any(isinstance(e, HttpRequestSeen) for u in driven.updates()
                                for e in u.events))
        [seen] = [e for u in driven.updates() for e in u.events if isinstance(e, HttpRequestSeen)]
        assert seen.request.target == "/slow" and not driven.exchanges()
        served.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        driven.wait(lambda: driven.exchanges())
        [(conn_id, _, line, status, offset)] = driven.exchanges()
        assert (conn_id, line, status, offset) == (seen.connection, "GET /slow", 204, seen.request.offset)
    finally:
        client.close()
        served.close()
        listener.close()
        driven.close()


@root
def test_the_capture_process_changes_its_filter_and_says_when_it_cannot():
    server = KeepAliveServer()
    other = KeepAliveServer()
    driven = Driven(f"tcp port {other.port}")
    try:
        driven.driver.set_filter("tcp port nonsense")
        driven.wait(lambda: any(isinstance(m, FilterApplied) for m in driven.posted))
        [refused] = [m for m in driven.posted if isinstance(m, FilterApplied)]
        assert refused.error
        driven.driver.set_filter(f"tcp port {server.port}")
        driven.wait(lambda: len([m for m in driven.posted if isinstance(m, FilterApplied)]) == 2)
        applied = [m for m in driven.posted if isinstance(m, FilterApplied)][-1]
        assert applied.error is None
        requests(other.port, 5)  # no longer captured
        requests(server.port, 7)
        driven.wait(lambda: len(driven.exchanges()) == 7)
        time.sleep(0.5)
        targets = [decode(blob, conn).request.target for conn, blob, *_ in driven.exchanges()]
        assert targets == [f"/item/{i}" for i in range(7)]
    finally:
        driven.close()
        server.close()
        other.close()


@root
@pytest.mark.parametrize("how", ["SIGKILL to the app", "SIGHUP to the group", "SIGTERM to the group"])
def test_the_capture_process_and_its_files_go_when_the_app_is_killed(how):
    """Killed alone, or with its process group as when its terminal closes (tmux kill-server
    hangs up every process of the pane) or its job is killed: nothing is left running or in the
    temporary directory."""
    import signal
    import subprocess
    import sys

    name = how.split()[0]
    kill = "os.kill(os.getpid(), signal.SIGKILL)" if how.endswith("app") else f"os.killpg(0, signal.{name})"
    script = (
        "import os, signal, sys\n"
        "from engine import sources\n"
        "from tui.live_feed import FeedCapture\n"
        "feed = FeedCapture(sources.open_live(['lo'], 'tcp port 1'), 1 << 26)\n"
        "print(feed.dir, feed.pid, flush=True)\n"
        f"{kill}\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=30,
                          start_new_session=True)
    assert proc.returncode == -getattr(signal, name)
    directory, pid = proc.stdout.split()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(directory):
        time.sleep(0.05)
    assert not os.path.exists(directory)
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the capture process outlived the app")


def test_a_busy_live_helper_says_how_far_it_is_as_it_goes(tmp_path, monkeypatch):
    # So the feed's files it is past can go while it still has more to read.
    from tests.test_http_helpers import helper_messages
    from tui import http_helpers

    monkeypatch.setattr(http_helpers, "SEND_EVERY", 0.0)
    feed = LiveFeed(str(tmp_path), limit=1 << 24)
    for i in range(50):
        feed.add(batch(10, first=i))
    feed.end()
    messages = helper_messages(http_helpers._live_helper, str(tmp_path), 8,
                               http_helpers.bounds_as_fields(Bounds()), 1 << 20, (0, 2))
    throughs = [m.through for m in messages]
    assert len(messages) >= 40 and throughs == sorted(throughs) and throughs[-1] == 500
