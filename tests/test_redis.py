"""Redis transactions (engine.redis): generated conversations in every interleaving and
segmentation, fuzzed bytes, gaps; and a real redis-server driven by redis-py, captured live."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batch import Batch
from engine.events import ConnectionClosed
from engine.pipeline import Pipeline
from engine.redis import PROTOCOL as REDIS
from engine.redis import command_start as resp_command_start
from tests.conversations import build, causal, interleavings, summary, transactions
from tests.live import json_capture, wait_capturing

ROOT = Path(__file__).parent.parent


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


SCRIPT = [
    ("c", command(b"SET", b"user:42", b"v" * 5000)),
    ("s", b"+OK\r\n"),
    ("c", command(b"GET", b"user:42") + command(b"GET", b"nope") + command(b"INCR", b"n")),  # pipelined
    ("s", b"$5000\r\n" + b"v" * 5000 + b"\r\n" + b"$-1\r\n" + b":7\r\n"),
    ("c", command(b"NOSUCH", b"a")),
    ("s", b"-ERR unknown command 'NOSUCH'\r\n"),
    ("c", command(b"HGETALL", b"h")),
    ("s", b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n"),  # RESP3 map
    ("c", command(b"SUBSCRIBE", b"ch1", b"ch2")),
    ("s", b"*3\r\n$9\r\nsubscribe\r\n$3\r\nch1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$3\r\nch2\r\n:2\r\n"),
    ("s", b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n"),
    ("s", b">3\r\n$7\r\nmessage\r\n$3\r\nch2\r\n$3\r\nbye\r\n"),
    ("c-fin",),
]
EXPECTED = [
    ("SET user:42 " + "v" * 64, "OK", "ok"),
    ("GET user:42", "v" * 64, "ok"),
    ("GET nope", "(nil)", "ok"),
    ("INCR n", "(integer) 7", "ok"),
    ("NOSUCH a", "ERR unknown command 'NOSUCH'", "error"),
    ("HGETALL h", "[a 1 b 2]", "ok"),
    ("SUBSCRIBE ch1 ch2", "[subscribe ch1 1]", "ok"),
    (None, "[message ch1 hello]", "ok"),
    (None, "[message ch2 bye]", "ok"),
]


def test_commands_and_replies_pair_in_order() -> None:
    txs = transactions(causal(*build(SCRIPT)))
    assert summary(txs) == EXPECTED
    assert [t.index for t in txs] == list(range(len(EXPECTED)))
    assert txs[0].request.size == len(SCRIPT[0][1]) and txs[1].response.size == 5000 + 9
    assert txs[4].error == "ERR unknown command 'NOSUCH'"
    assert txs[7].notes == ("a push from the server",) and txs[7].request is None
    assert all(t.protocol == "redis" for t in txs)


def test_the_pairing_does_not_depend_on_the_interleaving_or_the_segments() -> None:
    client, server = build(SCRIPT, mss=700)
    reference = summary(transactions(causal(client, server)))
    assert reference == EXPECTED
    for n, packets in enumerate(interleavings(client, server, limit=40)):
        assert summary(transactions(packets, batch=1 + n % 7)) == reference
    for mss in (1, 2, 3, 7, 64):
        assert summary(transactions(causal(*build(SCRIPT, mss=mss)), batch=50)) == reference


AGAIN = "paired again after lost bytes, by the acknowledgments"


def test_lost_server_bytes_are_said_not_guessed_and_pairing_comes_back() -> None:
    client, server = build(SCRIPT, mss=700)
    # Drop the server's segment with the middle of the 5000-byte reply.
    dropped = [p for p in server if b"v" * 700 in p[1]][1]
    server = [p for p in server if p is not dropped]
    for n, packets in enumerate([causal(client, server), *interleavings(client, server, limit=12)]):
        txs = transactions(packets, batch=1 + n % 4)
        said = [(t.request_summary, t.response_summary, t.status, t.notes) for t in txs]
        lost = ("sent around bytes that were not captured: its reply cannot be told for certain",)
        assert said[:4] == [
            (*EXPECTED[0], ()),
            ("GET user:42", None, None, lost), ("GET nope", None, None, lost), ("INCR n", None, None, lost),
        ], n
        # The next command acknowledged the server's bytes up to where its reply starts: the
        # two pair again, and the rest by their order.
        assert said[4] == (*EXPECTED[4], (AGAIN,))
        assert [s[:3] for s in said[5:]] == EXPECTED[5:]


def test_lost_client_bytes_leave_their_replies_unasked_and_pairing_comes_back() -> None:
    client, server = build(SCRIPT, mss=700)
    dropped = next(p for p in client if b"GET" in p[1])  # the three pipelined commands
    client = [p for p in client if p is not dropped]
    for n, packets in enumerate([causal(client, server), *interleavings(client, server, limit=12)]):
        said = [(t.request_summary, t.response_summary, t.status, t.notes)
                for t in transactions(packets, batch=1 + n % 4)]
        unasked = ("its command cannot be told after bytes that were not captured",)
        assert said[:4] == [
            (*EXPECTED[0], ()),
            (None, "v" * 64, "ok", unasked), (None, "(nil)", "ok", unasked), (None, "(integer) 7", "ok", unasked),
        ], n
        assert said[4] == (*EXPECTED[4], (AGAIN,))
        assert [s[:3] for s in said[5:]] == EXPECTED[5:]


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_bytes_after_a_command_are_read_without_failing(junk: bytes) -> None:
    script = [("c", command(b"PING") + junk), ("s", junk + b"+PONG\r\n" + junk), ("c-fin",)]
    for t in transactions(causal(*build(script, mss=97))):
        assert t.protocol == "redis"


def test_detection() -> None:
    assert resp_command_start(command(b"GET", b"k")) is True
    assert resp_command_start(b"*2\r") is None and resp_command_start(b"*") is None
    assert resp_command_start(b"*2\r\nGET") is False and resp_command_start(b"*x") is False
    infos = []
    pipeline = Pipeline()
    for e in pipeline.feed(Batch.from_packets(1, causal(*build(SCRIPT[:2])))) + pipeline.finish():
        if isinstance(e, ConnectionClosed):
            infos.append(e.info)
    assert [i.protocol for i in infos] == [REDIS]


# --- a real server ---------------------------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server")


def redis_server(port: int) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:`port`, answering (its answer to a ping on a connection closed
    before the test's own)."""
    import redis

    assert REDIS_SERVER is not None
    server = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, protocol=2)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return server


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (Debian: redis-server)")
def test_a_real_server_and_client(tmp_path: Path) -> None:
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = redis_server(port)
    err = tmp_path / "err"
    capture = None
    try:
        capture = json_capture(f"tcp port {port}", err, 5)
        wait_capturing(capture, err)
        client = redis.Redis(port=port, protocol=2)  # a new connection, from its first command
        client.set("user:42", "x" * 100)
        assert client.get("nope") is None
        with pytest.raises(redis.ResponseError):
            client.execute_command("NOSUCH", "a")
        pipe = client.pipeline(transaction=True)
        for _ in range(3):
            pipe.incr("n")
        assert pipe.execute() == [1, 2, 3]
        big = b"y" * 300_000
        client.set("big", big)
        assert client.get("big") == big
        pubsub = client.pubsub()
        pubsub.subscribe("ch1", "ch2")
        client.publish("ch1", "hello")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                break
        pubsub.close()
        client.close()
        out, _ = capture.communicate(timeout=30)
    finally:
        if capture is not None:
            capture.kill()
        server.terminate()
        server.wait(timeout=10)
    records = [json.loads(line) for line in out.splitlines()]
    txs = [r for r in records if r["type"] == "transaction"]
    assert all(r["protocol"] == "redis" for r in txs)
    said = [(r["request"] and r["request"]["summary"].split(" ")[:2], r["response"] and r["response"]["summary"],
             r["status"]) for r in txs]
    assert (["SET", "user:42"], "OK", "ok") in said
    assert (["GET", "nope"], "(nil)", "ok") in said
    assert any(s[0] == ["NOSUCH", "a"] and s[2] == "error" for s in said)
    assert [s[1] for s in said if s[0] and s[0][0] in ("MULTI", "INCRBY", "EXEC")] == \
        ["OK", "QUEUED", "QUEUED", "QUEUED", "[1 2 3]"]
    [get_big] = [r for r in txs if r["request"] and r["request"]["summary"] == "GET big"]
    assert get_big["response"]["bytes"] == 300_000 + len(b"$300000\r\n\r\n")
    assert any(s[0] == ["SUBSCRIBE", "ch1"] for s in said)
    assert any(s[0] is None and s[1] == "[message ch1 hello]" for s in said)
    connections = [r for r in records if r["type"] == "connection"]
    assert {r["protocol"] for r in connections} == {"redis"}


def free_port_below_ephemeral() -> int:
    """A free port under 30000 (Linux's ephemeral ports start at 32768)."""
    for port in random.Random().sample(range(20000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 30000")


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (Debian: redis-server)")
def test_a_real_server_connection_joined_in_its_middle(tmp_path: Path) -> None:
    """A client's connection opened before the capture: read from its first command seen, and
    paired from there by the acknowledgments, then by order."""
    import redis

    # Below the ephemeral range: with no handshake seen, the lower port is taken for the server's.
    port = free_port_below_ephemeral()
    server = redis_server(port)
    err = tmp_path / "err"
    capture = None
    try:
        client = redis.Redis(port=port, protocol=2, single_connection_client=True)
        client.set("before", "b" * 5000)
        capture = json_capture(f"tcp port {port}", err, 4)
        wait_capturing(capture, err)
        time.sleep(0.2)
        for i in range(20):
            client.set(f"k{i}", str(i))
            assert client.get(f"k{i}") == str(i).encode()
        assert len(client.get("before")) == 5000
        with pytest.raises(redis.ResponseError):
            client.execute_command("NOSUCH", "a")
        out, _ = capture.communicate(timeout=30)
        client.close()
    finally:
        if capture is not None:
            capture.kill()
        server.terminate()
        server.wait(timeout=10)
    txs = [r for r in map(json.loads, out.splitlines()) if r["type"] == "transaction"]
    said = [(r["request"] and r["request"]["summary"], r["response"] and r["response"]["summary"][:10],
             r.get("notes", [])) for r in txs]
    expected = [item for i in range(20) for item in ((f"SET k{i} {i}", "OK"), (f"GET k{i}", str(i)))]
    expected += [("GET before", "b" * 10), ("NOSUCH a", "ERR unknow")]
    assert [s[:2] for s in said] == expected
    assert said[0][2] == ["the capture began inside the connection: paired by the acknowledgments"]
    assert not any(s[2] for s in said[1:])


def test_transaction_records_native_and_ecs() -> None:
    from engine import ecs
    from engine.records import Flow, line, transaction_record

    flow = Flow("10.1.0.1:43210", "10.1.0.2:8080", "1:x")
    txs = transactions(causal(*build(SCRIPT)))
    records = [json.loads(line(transaction_record(t, flow))) for t in txs]
    error = records[4]
    assert error["type"] == "transaction" and error["protocol"] == "redis" and error["index"] == 4
    assert error["status"] == "error" and error["error"] == "ERR unknown command 'NOSUCH'"
    assert error["request"]["summary"] == "NOSUCH a" and error["client"] == flow.client
    assert error["duration"] == round(txs[4].response.end_ts - txs[4].request.ts, 6)
    assert records[7]["request"] is None and records[7]["notes"] == ["a push from the server"]
    as_ecs = ecs.record(error)
    assert as_ecs["event"]["dataset"] == "wirepeek.redis" and as_ecs["event"]["outcome"] == "failure"
    assert as_ecs["network"]["protocol"] == "redis" and as_ecs["error"]["message"] == error["error"]
    assert as_ecs["event"]["duration"] == round(error["duration"] * 1e9)
    assert ecs.record(records[7])["wirepeek"]["request"] is None


# --- the filter language and the statistics ---------------------------------------------------


def test_the_filter_language_and_the_statistics_see_transactions() -> None:
    from engine.filter import parse
    from engine.stats import Stats

    txs = transactions(causal(*build(SCRIPT)))

    def matching(text: str) -> list[str | None]:
        where = parse(text)
        return [t.request_summary for t in txs if where.exchange(None, t)]

    assert matching("status = error") == ["NOSUCH a"]
    assert matching("proto = redis and status != error") == [t.request_summary for t in txs
                                                             if t.status == "ok"]
    assert matching("method = get") == ["GET user:42", "GET nope"]
    assert matching("path ~ ^set") == ["SET user:42 " + "v" * 64]
    assert matching("resp.size > 4KB") == ["GET user:42"]
    assert matching('"unknown command"') == ["NOSUCH a"]
    assert matching("hello") == [None]  # the pushed message
    assert matching("error ~ push") == [None, None]
    assert matching("dur >= 0 and ttfb >= 0") == [t.request_summary for t in txs if t.request]
    assert matching("proto = http") == []
    stats = Stats()
    for t in txs:
        stats.add(t)
    groups = {g.name: (g.count, g.errors) for g in stats.sorted()}
    assert groups["redis GET"] == (2, 0) and groups["redis NOSUCH"] == (1, 1)
    assert groups["redis (request not captured)"] == (2, 0)
    assert stats.total.count == len(txs) and stats.total.errors == 1
    assert stats.total.response_bytes == sum(t.response.size for t in txs if t.response)


def test_where_and_stats_on_the_command_line(tmp_path: Path) -> None:
    from tests.synth import write_pcap

    path = tmp_path / "redis.pcap"
    write_pcap(path, causal(*build(SCRIPT)))
    for jobs in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--json", "--jobs", jobs,
                              "--where", "status = error"], capture_output=True, cwd=ROOT, check=True).stdout
        records = [json.loads(line) for line in out.splitlines()]
        assert [(r["type"], r.get("request", {}).get("summary")) for r in records] == \
            [("transaction", "NOSUCH a"), ("connection", None)]
    out = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--stats", "--json"],
                         capture_output=True, cwd=ROOT, check=True).stdout
    groups = {r["group"]: r["count"] for r in map(json.loads, out.splitlines())}
    assert groups["redis GET"] == 2 and groups["(all)"] == len(EXPECTED)
