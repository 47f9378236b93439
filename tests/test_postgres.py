"""PostgreSQL transactions (engine.postgres): generated conversations in every interleaving and
segmentation, SSL negotiation, fuzzed bytes, gaps; and a real PostgreSQL server driven by
psycopg, captured live."""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from engine.batch import Batch
from engine.events import ConnectionClosed, Event, Transaction
from engine.pipeline import Pipeline
from engine.postgres import PROTOCOL as POSTGRES
from engine.postgres import PostgresParser, _frontend_chain, _sql, client_start
from engine.tcp import MIDSTREAM, Connection
from tests.conversations import build, causal, interleavings, summary, transactions
from tests.live import json_capture, wait_capturing

ROOT = Path(__file__).parent.parent


# --- the wire format, written out --------------------------------------------------------------


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def startup(**params: str) -> bytes:
    body = (
        struct.pack("!I", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    )
    return struct.pack("!I", len(body) + 4) + body


SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSS_REQUEST = struct.pack("!II", 8, 80877104)


def query(sql: str) -> bytes:
    return msg(b"Q", cstr(sql))


def parse(name: str, sql: str, oids: tuple[int, ...] = ()) -> bytes:
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack(f"!H{len(oids)}I", len(oids), *oids))


def bind(portal: str, statement: str, params: list[bytes | None]) -> bytes:
    body = cstr(portal) + cstr(statement) + struct.pack("!HH", 0, len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!I", len(p)) + p
    return msg(b"B", body + struct.pack("!H", 0))


def describe(what: bytes, name: str) -> bytes:
    return msg(b"D", what + cstr(name))


def execute(portal: str = "", rows: int = 0) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack("!I", rows))


SYNC, FLUSH, TERMINATE = msg(b"S"), msg(b"H"), msg(b"X")


def ready(status: bytes = b"I") -> bytes:
    return msg(b"Z", status)


def auth(code: int, extra: bytes = b"") -> bytes:
    return msg(b"R", struct.pack("!I", code) + extra)


def parameter(name: str, value: str) -> bytes:
    return msg(b"S", cstr(name) + cstr(value))


def backend_key(pid: int, key: int) -> bytes:
    return msg(b"K", struct.pack("!II", pid, key))


def row_description(*names: str) -> bytes:
    fields = b"".join(cstr(n) + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0) for n in names)
    return msg(b"T", struct.pack("!H", len(names)) + fields)


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack("!H", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!I", len(v)) + v
    return msg(b"D", body)


def complete(tag: str) -> bytes:
    return msg(b"C", cstr(tag))


def error(
    code: str, message: str, severity: str = "ERROR", kind: bytes = b"E", detail: str = ""
) -> bytes:
    fields = (
        b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code) + b"M" + cstr(message)
    )
    if detail:
        fields += b"D" + cstr(detail)
    return msg(kind, fields + b"\0")


def notification(pid: int, channel: str, payload: str) -> bytes:
    return msg(b"A", struct.pack("!I", pid) + cstr(channel) + cstr(payload))


PARSE_COMPLETE, BIND_COMPLETE, NO_DATA = msg(b"1"), msg(b"2"), msg(b"n")


def copy_out(columns: int) -> bytes:
    return msg(b"H", struct.pack(f"!bH{columns}h", 0, columns, *([0] * columns)))


# --- a scripted conversation ------------------------------------------------------------------

START = startup(user="app", database="shop", application_name="psql")
SCRIPT = [
    ("c", START),
    (
        "s",
        auth(0)
        + parameter("server_version", "15.8")
        + parameter("client_encoding", "UTF8")
        + backend_key(4242, 7)
        + ready(),
    ),
    ("c", query("SELECT id, name\n  FROM items")),
    (
        "s",
        row_description("id", "name")
        + data_row(b"1", b"a")
        + data_row(b"2", b"b")
        + data_row(b"3", None)
        + complete("SELECT 3")
        + ready(),
    ),
    ("c", query("BEGIN; INSERT INTO items VALUES (4, 'd'); COMMIT")),  # several statements
    ("s", complete("BEGIN") + complete("INSERT 0 1") + complete("COMMIT") + ready()),
    ("c", query("SELECT * FROM nope")),
    ("s", error("42P01", 'relation "nope" does not exist') + ready()),
    ("c", parse("s1", "SELECT name FROM items WHERE id = $1", (23,)) + SYNC),  # a named statement
    ("s", PARSE_COMPLETE + ready()),
    ("c", bind("", "s1", [b"2"]) + describe(b"P", "") + execute() + SYNC),
    (
        "s",
        BIND_COMPLETE + row_description("name") + data_row(b"b") + complete("SELECT 1") + ready(),
    ),
    ("c", bind("", "s1", [b"3"]) + execute() + SYNC),
    ("s", BIND_COMPLETE + data_row(None) + complete("SELECT 1") + ready()),
    (
        "c",
        parse("", "SELECT * FROM nope2")
        + bind("", "", [])
        + execute()  # an error in a batch
        + parse("", "SELECT 1")
        + bind("", "", [])
        + execute()
        + SYNC,
    ),
    ("s", error("42P01", 'relation "nope2" does not exist') + ready()),
    ("c", query("LISTEN ch1")),
    ("s", complete("LISTEN") + ready()),
    ("s", notification(4243, "ch1", "hello")),  # while the client is idle
    ("c", query("COPY items TO STDOUT")),
    (
        "s",
        copy_out(2)
        + msg(b"d", b"1\ta\n")
        + msg(b"d", b"2\tb\n")
        + msg(b"d", b"3\t\\N\n")
        + msg(b"c")
        + complete("COPY 3")
        + ready(),
    ),
    ("c", query("COPY items FROM STDIN")),
    ("s", msg(b"G", struct.pack("!bHhh", 0, 2, 0, 0))),
    ("c", msg(b"d", b"5\te\n") + msg(b"d", b"6\tf\n") + msg(b"c")),
    ("s", complete("COPY 2") + ready()),
    ("c", query("")),
    ("s", msg(b"I") + ready()),
    ("c", TERMINATE),
    ("c-fin",),
]
EXPECTED = [
    ("startup user=app database=shop application_name=psql", "authentication ok", "ok"),
    ("SELECT id, name FROM items", "SELECT 3", "ok"),
    ("BEGIN; INSERT INTO items VALUES (4, 'd'); COMMIT", "BEGIN; INSERT 0 1; COMMIT", "ok"),
    ("SELECT * FROM nope", 'ERROR 42P01: relation "nope" does not exist', "error"),
    ("prepare s1: SELECT name FROM items WHERE id = $1", "ParseComplete", "ok"),
    ("SELECT name FROM items WHERE id = $1 ['2']", "SELECT 1", "ok"),
    ("SELECT name FROM items WHERE id = $1 ['3']", "SELECT 1", "ok"),
    ("SELECT * FROM nope2", 'ERROR 42P01: relation "nope2" does not exist', "error"),
    ("SELECT 1", None, None),
    ("LISTEN ch1", "LISTEN", "ok"),
    (None, 'NOTIFY ch1 "hello" (backend pid 4243)', "ok"),
    ("COPY items TO STDOUT", "COPY 3", "ok"),
    ("COPY items FROM STDIN", "COPY 2", "ok"),
    ("", "empty query", "ok"),
]


def test_requests_and_answers_pair_in_order() -> None:
    txs = transactions(causal(*build(SCRIPT)))
    assert summary(txs) == EXPECTED
    assert [t.index for t in txs] == list(range(len(EXPECTED)))
    assert all(t.protocol == "postgresql" for t in txs)
    sent = {i: step[1] for i, step in enumerate(SCRIPT) if len(step) > 1}
    # Sizes: a request is its messages (with what belongs to it), an answer its messages.
    assert txs[0].request.size == len(START) and txs[0].response.size == len(sent[1])
    assert txs[0].notes == ("backend pid 4242",)
    assert txs[1].request.size == len(sent[2]) and txs[1].response.size == len(sent[3])
    assert txs[3].error == 'ERROR 42P01: relation "nope" does not exist' and txs[3].notes == ()
    assert txs[4].request.size == len(sent[8]) and txs[4].response.size == len(sent[9])
    # An Execute's transaction runs from its Bind to its CommandComplete (the Sync's
    # ReadyForQuery ends the batch, not the Execute).
    assert txs[5].request.size == len(sent[10]) - len(SYNC)
    assert txs[5].response.size == len(sent[11]) - len(ready())
    assert txs[5].duration is not None and txs[5].duration > 0
    assert txs[7].error == 'ERROR 42P01: relation "nope2" does not exist'
    assert txs[8].response is None and txs[8].notes == (
        "not executed: the server skipped it after an error before it in its batch (until Sync)",
    )
    assert txs[10].request is None and txs[10].notes == ("a notification (LISTEN/NOTIFY)",)
    assert txs[11].response.size == len(sent[20])
    assert txs[12].request.size == len(sent[21]) + len(sent[23])  # the COPY data it sent
    assert txs[12].response.size == len(sent[22]) + len(sent[24])


def test_the_pairing_does_not_depend_on_the_interleaving_or_the_segments() -> None:
    client, server = build(SCRIPT, mss=700)
    reference = transactions(causal(client, server))
    assert summary(reference) == EXPECTED

    def said(txs: list[Transaction]) -> list[tuple]:
        return [
            (*s, t.notes, t.request and t.request.size, t.response and t.response.size)
            for s, t in zip(summary(txs), txs, strict=True)
        ]

    expected = said(reference)
    for n, packets in enumerate(interleavings(client, server, limit=40)):
        assert said(transactions(packets, batch=1 + n % 7)) == expected
    for mss in (1, 2, 3, 7, 64):
        assert said(transactions(causal(*build(SCRIPT, mss=mss)), batch=50)) == expected


# --- SSL, GSSAPI, authentication, cancel --------------------------------------------------------

TLS_HELLO = bytes.fromhex("1603010050010000" + "4c0303") + bytes(77)
TLS_SERVER = bytes.fromhex("160303003a020000360303") + bytes(55)


def test_ssl_accepted_is_one_transaction_and_the_rest_is_not_read() -> None:
    script = [
        ("c", SSL_REQUEST),
        ("s", b"S"),
        ("c", TLS_HELLO),
        ("s", TLS_SERVER),
        ("c", b"\x17\x03\x03\x00\x20" + query("SELECT 1") * 3),
        ("s", b"\x17\x03\x03\x00\x10" + ready() * 3),
        ("c-fin",),
    ]
    client, server = build(script, mss=7)
    for packets in interleavings(client, server, limit=10):
        txs = transactions(packets)
        assert summary(txs) == [("SSLRequest", "TLS accepted: the rest is encrypted", "ok")]
        assert txs[0].request.size == 8 and txs[0].response.size == 1
    txs = transactions(
        causal(
            *build(
                [
                    ("c", GSS_REQUEST),
                    ("s", b"G"),
                    ("c", b"\0\0\0\x20" + bytes(32)),
                    ("s", b"\0\0\0\x10" + bytes(16)),
                    ("c-fin",),
                ]
            )
        )
    )
    assert summary(txs) == [
        ("GSSENCRequest", "GSSAPI encryption accepted: the rest is encrypted", "ok")
    ]


def test_ssl_refused_then_a_plaintext_startup_with_scram() -> None:
    script = [
        ("c", SSL_REQUEST),
        ("s", b"N"),
        ("c", START),
        ("s", auth(10, b"SCRAM-SHA-256\0\0")),
        ("c", msg(b"p", cstr("SCRAM-SHA-256") + b"\0\0\0\x10" + bytes(16))),
        ("s", auth(11, b"r=abc")),
        ("c", msg(b"p", b"c=biws,r=abc,p=xyz")),
        ("s", auth(12, b"v=ok") + auth(0) + backend_key(7, 8) + ready()),
        ("c", query("SELECT 1")),
        ("s", data_row(b"1") + complete("SELECT 1") + ready()),
        ("c-fin",),
    ]
    client, server = build(script, mss=5)
    startup_size = len(script[2][1]) + len(script[4][1]) + len(script[6][1])
    for n, packets in enumerate(interleavings(client, server, limit=20)):
        txs = transactions(packets, batch=1 + n % 5)
        assert summary(txs) == [
            ("SSLRequest", "TLS refused (N): the client may go on in plaintext", "ok"),
            (
                "startup user=app database=shop application_name=psql",
                "authentication ok (SCRAM-SHA-256)",
                "ok",
            ),
            ("SELECT 1", "SELECT 1", "ok"),
        ]
        assert txs[1].request.size == startup_size  # its password messages included


def test_a_refused_password_a_cancel_request_and_server_errors() -> None:
    txs = transactions(
        causal(
            *build(
                [
                    ("c", START),
                    ("s", auth(5, b"salt")),
                    ("c", msg(b"p", cstr("md5abc"))),
                    ("s", error("28P01", 'password authentication failed for user "app"', "FATAL")),
                    ("s-fin",),
                ]
            )
        )
    )
    assert summary(txs) == [
        (
            "startup user=app database=shop application_name=psql",
            'FATAL 28P01: password authentication failed for user "app"',
            "error",
        )
    ]
    assert txs[0].notes == ("authentication asked: md5",)
    txs = transactions(
        causal(*build([("c", struct.pack("!IIII", 16, 80877102, 4242, 99)), ("c-fin",)]))
    )
    assert summary(txs) == [("CancelRequest for backend pid 4242", None, None)]
    assert txs[0].notes == ("the server answers a cancel request by closing the connection",)
    # A notice sent while nothing was asked, and a FATAL error on its own before the server closes.
    txs = transactions(
        causal(
            *build(
                [
                    ("c", START),
                    ("s", auth(0) + ready()),
                    ("s", error("01000", "the server says hello", "WARNING", kind=b"N")),
                    ("c", query("SELECT 1")),
                    (
                        "s",
                        error("00000", "inside", "NOTICE", kind=b"N")
                        + complete("SELECT 1")
                        + ready(),
                    ),
                    (
                        "s",
                        error(
                            "57P01", "terminating connection due to administrator command", "FATAL"
                        ),
                    ),
                    ("s-fin",),
                ]
            )
        )
    )
    assert summary(txs) == [
        ("startup user=app database=shop application_name=psql", "authentication ok", "ok"),
        (None, "", "ok"),
        ("SELECT 1", "SELECT 1", "ok"),
        (None, "FATAL 57P01: terminating connection due to administrator command", "error"),
    ]
    assert txs[1].notes == (
        "WARNING 01000: the server says hello",
        "sent before the server had received the next request: no request was waiting",
    )
    assert txs[2].notes == ("NOTICE 00000: inside",)


def test_what_is_not_postgresql_stops_its_side_and_is_said() -> None:
    for bad, why in (
        (b"Z\0\0\0\x02", "a message length of 2: not PostgreSQL"),
        (b"Z\0\0\0\x07IZZ", "a 'Z' message of length 7: not PostgreSQL"),
        (b"C\x7f\0\0\0", "a message length of 2130706432: not PostgreSQL"),
    ):
        txs = transactions(
            causal(
                *build(
                    [
                        ("c", START),
                        ("s", auth(0) + ready()),
                        ("c", query("SELECT 1")),
                        ("s", bad + complete("SELECT 1") + ready()),
                        ("c-fin",),
                    ]
                )
            )
        )
        assert summary(txs)[1] == ("SELECT 1", None, None)
        assert txs[1].notes == (f"the server's side was not read further: {why}",)


# --- bytes not captured -------------------------------------------------------------------------

ROWS = b"".join(data_row(str(i).encode(), b"x" * 40) for i in range(120))  # (<16 KiB: see detect)
GAP_SCRIPT = [
    ("c", START),
    ("s", auth(0) + ready()),
    ("c", query("SELECT 1")),
    ("s", data_row(b"1") + complete("SELECT 1") + ready()),
    ("c", query("SELECT * FROM big")),
    ("s", row_description("id", "v") + ROWS + complete("SELECT 120") + ready()),
    ("c", query("SELECT 2")),
    ("s", data_row(b"2") + complete("SELECT 1") + ready()),
    ("c", parse("", "SELECT * FROM big WHERE id > $1") + bind("", "", [b"0"]) + execute() + SYNC),
    ("s", PARSE_COMPLETE + BIND_COMPLETE + ROWS + complete("SELECT 120") + ready()),
    ("c", query("SELECT 3")),
    ("s", data_row(b"3") + complete("SELECT 1") + ready()),
    ("c-fin",),
]
GAP_EXPECTED = [
    ("startup user=app database=shop application_name=psql", "authentication ok", "ok"),
    ("SELECT 1", "SELECT 1", "ok"),
    ("SELECT * FROM big", "SELECT 120", "ok"),
    ("SELECT 2", "SELECT 1", "ok"),
    ("SELECT * FROM big WHERE id > $1 ['0']", "SELECT 120", "ok"),
    ("SELECT 3", "SELECT 1", "ok"),
]


def test_a_loss_inside_an_answer_is_noted_and_the_pairing_resumes() -> None:
    client, server = build(GAP_SCRIPT, mss=1000)
    assert summary(transactions(causal(client, server))) == GAP_EXPECTED
    full = [p for p in server if len(p[1]) > 1000]
    for dropped, at in ((full[2], 2), (full[-2], 4)):  # inside the Query's rows, the Execute's
        rest = [p for p in server if p is not dropped]
        for n, packets in enumerate(interleavings(client, rest, limit=8)):
            txs = transactions(packets, batch=1 + n % 4)
            assert summary(txs) == GAP_EXPECTED  # the pairing holds, after the loss too
            assert [i for i, t in enumerate(txs) if t.notes] == [at]
            assert txs[at].notes == (
                "part of its answer was lost: 1,000 server bytes were not captured (acked)",
            )


def test_a_lost_answer_is_not_guessed() -> None:
    client, server = build(GAP_SCRIPT, mss=1000)
    # The whole answer to SELECT 1 lost: whether the next ReadyForQuery answers it or SELECT *
    # (the client had sent both by then) cannot be told, so nothing after is paired.
    rest = [
        p for p in server if not (p[1].endswith(data_row(b"1") + complete("SELECT 1") + ready()))
    ]
    assert len(rest) == len(server) - 1
    for n, packets in enumerate(interleavings(client, rest, limit=8)):
        txs = transactions(packets, batch=1 + n % 4)
        assert summary(txs)[0] == GAP_EXPECTED[0]
        later = txs[1:]
        assert all(t.request is None or t.response is None for t in later)  # nothing mispaired
        assert sorted(t.request_summary for t in later if t.request) == sorted(
            s[0] for s in GAP_EXPECTED[1:]
        )
        assert sorted(t.response_summary for t in later if t.response) == sorted(
            s[1] for s in GAP_EXPECTED[2:]
        )
        for t in later:
            assert any("server bytes were not captured" in note for note in t.notes), t


def test_lost_client_bytes() -> None:
    long_sql = "SELECT '" + "y" * 2500 + "'"
    script = [
        ("c", START),
        ("s", auth(0) + ready()),
        ("c", query(long_sql)),
        ("s", data_row(b"y") + complete("SELECT 1") + ready()),
        ("c", query("SELECT 2")),
        ("s", complete("SELECT 1") + ready()),
        ("c", query("SELECT 3")),
        ("s", complete("SELECT 1") + ready()),
        ("c-fin",),
    ]
    client, server = build(script, mss=1000)
    # Inside the long Query: its framing holds, its summary stops where the loss began.
    middle = [p for p in client if len(p[1]) > 1000][1]
    txs = transactions(causal([p for p in client if p is not middle], server))
    assert [s[1:] for s in summary(txs)] == [
        ("authentication ok", "ok"),
        ("SELECT 1", "ok"),
        ("SELECT 1", "ok"),
        ("SELECT 1", "ok"),
    ]
    assert txs[1].request_summary.startswith("SELECT 'yyy") and txs[1].request_summary.endswith("…")
    assert txs[1].request.size == len(query(long_sql))
    assert txs[1].notes == ("1,000 client bytes of it were not captured",)
    # A whole Query lost: its answer is said alone; the client's side is read again from the
    # next Query, which nothing after it shows the client waited for (no Terminate): alone too.
    lost = packet(client, query("SELECT 2"))
    txs = transactions(causal([p for p in client if p is not lost], server))
    assert summary(txs)[:2] == summary(transactions(causal(client, server)))[:2]
    assert summary(txs)[2:] == [
        (None, "SELECT 1", "ok"),
        ("SELECT 3", None, None),
        (None, "SELECT 1", "ok"),
    ]
    unasked = "client bytes were not captured before it: its request could not be told for certain"
    assert [t.notes for t in txs[2:]] == [
        (unasked,),
        (
            "client bytes were not captured before it: which answer is its own could not be told for certain",
        ),
        (unasked,),
    ]
    # With a Terminate after it, the client is seen to have waited for its answer: paired.
    client, server = build([*script[:-1], ("c", TERMINATE), ("c-fin",)], mss=1000)
    lost = packet(client, query("SELECT 2"))
    txs = transactions(causal([p for p in client if p is not lost], server))
    assert summary(txs)[2:] == [(None, "SELECT 1", "ok"), ("SELECT 3", "SELECT 1", "ok")]


def _random_conversation(rng: random.Random) -> tuple[list[tuple], dict[str, str | None]]:
    """Queries and extended batches (some failing), answered at once or pipelined, with rows of
    random sizes and notifications; and what answers each request (None: skipped)."""
    script: list[tuple] = [("c", START), ("s", auth(0) + ready())]
    answers: dict[str, str | None] = {}
    pending: list[bytes] = []
    for i in range(1, rng.randrange(4, 10)):
        rows = b"".join(data_row(b"v" * rng.randrange(300)) for _ in range(rng.randrange(12)))
        if rng.random() < 0.5:
            request = query(f"q{i}")
            failed = rng.random() < 0.2
            answer = (
                rows + (error("XX000", f"err{i}") if failed else complete(f"SELECT {i}")) + ready()
            )
            answers[f"q{i}"] = f"ERROR XX000: err{i}" if failed else f"SELECT {i}"
        else:
            request, answer, failed = b"", b"", False
            count = rng.randrange(1, 4)
            fail_at = rng.randrange(count) if rng.random() < 0.3 else -1
            for j in range(count):
                name = f"e{i}_{j}"
                request += parse("", name) + bind("", "", []) + execute()
                if failed:
                    answers[name] = None
                    continue
                failed = j == fail_at
                answer += PARSE_COMPLETE + BIND_COMPLETE + rows
                answer += error("XX000", f"err{name}") if failed else complete(f"SELECT {name}")
                answers[name] = f"ERROR XX000: err{name}" if failed else f"SELECT {name}"
            request += SYNC
            answer += ready()
        script.append(("c", request))
        pending.append(answer)
        if rng.random() < 0.7 or len(pending) > 2:  # the client waits for its answers, or not
            script += [("s", a) for a in pending]
            pending = []
            if rng.random() < 0.2:
                script.append(("s", notification(1, "ch", f"n{i}")))
    script += [("s", a) for a in pending]
    return [*script, ("c-fin",)], answers


def test_what_is_paired_is_never_mispaired_whatever_is_lost() -> None:
    rng = random.Random(7)
    for _ in range(30):
        script, answers = _random_conversation(rng)
        client, server = build(script, mss=rng.choice([200, 500, 1000]))
        if rng.random() < 0.3:  # a client segment lost
            k = rng.randrange(3, len(client))
            client = client[:k] + client[k + 1 :]
        for _ in range(rng.randrange(3)):  # server segments lost
            k = rng.randrange(3, len(server))
            server = server[:k] + server[k + 1 :]
        said = []
        for packets in (causal(client, server), client + server):
            txs = transactions(packets, batch=rng.randrange(1, 6))
            said.append([(t.request_summary, t.response_summary, t.status, t.notes) for t in txs])
            for t in txs[1:]:
                if t.request is None or t.response is None:
                    assert t.notes, t  # what is not paired says why
                    continue
                own = t.request_summary.lstrip("qe")
                named = re.findall(r"(?:SELECT |err)[qe]?(\d+(?:_\d+)?)", t.response_summary)
                assert answers[t.request_summary] is not None and all(n == own for n in named), t
                if not t.notes:
                    assert t.response_summary.endswith(answers[t.request_summary]), t
        assert said[0] == said[1]  # whatever the interleaving


# --- lost client bytes, and a capture that began inside the connection -------------------------


class _Told:
    """The parser, told the capture began inside the connection when no SYN was seen (as the
    connection table tells the consumers of a connection it recognised by its port): so that
    these tests drive every connection with it, whatever the sniffer makes of its bytes."""

    def __init__(self, conn: Connection, emit: Callable[[Event], None]) -> None:
        self.parser = PostgresParser(conn, emit)
        self.told = False

    def _tell(self, conn: Connection, ts: float) -> None:
        if not self.told:
            self.told = True
            if not (conn.client.syn or conn.server.syn):
                self.parser.on_gap(conn, True, ts, 0, 0, MIDSTREAM)
                self.parser.on_gap(conn, False, ts, 0, 0, MIDSTREAM)

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        self._tell(conn, ts)
        self.parser.on_data(conn, from_client, ts, offset, data, ack)

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        self.told = self.told or reason == MIDSTREAM
        self._tell(conn, ts)
        self.parser.on_gap(conn, from_client, ts, offset, size, reason)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        self._tell(conn, ts)
        self.parser.on_end(conn, from_client, ts)

    def on_close(self, conn: Connection, ts: float) -> None:
        self._tell(conn, ts)
        self.parser.on_close(conn, ts)


def parsed(packets: list, batch: int = 5) -> list[Transaction]:
    """The transactions of a capture of these packets, the parser reading every connection."""
    pipeline = Pipeline(consumers={None: [_Told]}, http_body_limit=None)
    events = []
    for i in range(0, len(packets), batch):
        events += pipeline.feed(Batch.from_packets(1, packets[i : i + batch]))
    events += pipeline.finish()
    return [e for e in events if isinstance(e, Transaction)]


def since(packets: list, ts: float) -> list:
    """What a capture started at ts shows of these packets."""
    return [p for p in packets if p[0] >= ts]


def packet(packets: list, piece: bytes, nth: int = 0) -> tuple[float, bytes]:
    """The nth packet carrying these bytes."""
    return [p for p in packets if piece in p[1]][nth]


def said(txs: list[Transaction]) -> list[tuple]:
    return [(*s, t.notes) for s, t in zip(summary(txs), txs, strict=True)]


MID = "the capture began inside the connection"
MID_ALONE = (f"{MID}: its request could not be told for certain",)
MID_UNTOLD = (f"{MID}: which answer is its own could not be told for certain",)
LOST_ALONE = (
    "client bytes were not captured before it: its request could not be told for certain",
)
LOST_UNTOLD = (
    "client bytes were not captured before it: which answer is its own could not be told for certain",
)

BIG_ROW = data_row(b"x" * 20000)
LONG_SQL = "SELECT '" + "y" * 3000 + "' AS long"
COPY_OUT = copy_out(1) + b"".join(msg(b"d", b"r%d\n" % i * 100) for i in range(20)) + msg(b"c")
COPY_IN = b"".join(msg(b"d", b"w%d\n" % i * 100) for i in range(20)) + msg(b"c")
EXTENDED = parse("", "SELECT $1") + bind("", "", [b"7"]) + describe(b"P", "") + execute() + SYNC
# A client that waits for each answer (a pool's connection): simple queries, extended batches,
# COPY both ways, a long statement; every answer tells which request it answers.
WAITING = [
    ("c", START),
    ("s", auth(0) + ready()),
    ("c", query("SELECT 1")),
    ("s", data_row(b"1") + complete("SELECT 1") + ready()),
    ("c", query("SELECT big")),
    ("s", row_description("v") + BIG_ROW + complete("SELECT 20") + ready()),
    ("c", EXTENDED),
    (
        "s",
        PARSE_COMPLETE
        + BIND_COMPLETE
        + row_description("x")
        + data_row(b"7")
        + complete("SELECT 30")
        + ready(),
    ),
    ("c", query("COPY t TO STDOUT")),
    ("s", COPY_OUT + complete("COPY 20") + ready()),
    ("c", query("COPY t FROM STDIN")),
    ("s", msg(b"G", struct.pack("!bHh", 0, 1, 0))),
    ("c", COPY_IN),
    ("s", complete("COPY 21") + ready()),
    ("c", query(LONG_SQL)),
    ("s", data_row(b"y") + complete("SELECT 40") + ready()),
    ("c", parse("s1", "SELECT name FROM t WHERE id = $1", (23,)) + SYNC),
    ("s", PARSE_COMPLETE + ready()),
    ("c", bind("", "s1", [b"2"]) + execute() + SYNC),
    ("s", BIND_COMPLETE + data_row(b"b") + complete("SELECT 50") + ready()),
    ("c", query("SELECT 3")),
    ("s", data_row(b"3") + complete("SELECT 60") + ready()),
    ("c", TERMINATE),
    ("c-fin",),
]
WAITING_EXPECTED = [
    ("SELECT 1", "SELECT 1", "ok", ()),
    ("SELECT big", "SELECT 20", "ok", ()),
    ("SELECT $1 ['7']", "SELECT 30", "ok", ()),
    ("COPY t TO STDOUT", "COPY 20", "ok", ()),
    ("COPY t FROM STDIN", "COPY 21", "ok", ()),
    (_sql(LONG_SQL.encode()), "SELECT 40", "ok", ()),
    ("prepare s1: SELECT name FROM t WHERE id = $1", "ParseComplete", "ok", ()),
    ("SELECT name FROM t WHERE id = $1 ['2']", "SELECT 50", "ok", ()),
    ("SELECT 3", "SELECT 60", "ok", ()),
]
# The first bytes of each request, in order.
REQUESTS = [
    query("SELECT 1"),
    query("SELECT big"),
    EXTENDED[:18],
    query("COPY t TO STDOUT"),
    query("COPY t FROM STDIN"),
    query(LONG_SQL)[:40],
    parse("s1", "SELECT name FROM t WHERE id = $1", (23,)),
    bind("", "s1", [b"2"]),
    query("SELECT 3"),
]


def _cases() -> list[tuple[str, float, list[tuple]]]:
    """Where a capture of WAITING may begin, and what it shows then."""
    client, server = build(WAITING)
    out = []
    for k, first in enumerate(REQUESTS):  # between two requests
        out.append((f"before request {k}", packet(client, first)[0], WAITING_EXPECTED[k:]))
    unprepared = (
        "EXECUTE s1 ['2']",
        "SELECT 50",
        "ok",
        ("its statement was prepared before the capture began",),
    )
    out[7] = (out[7][0], out[7][1], [unprepared, *WAITING_EXPECTED[8:]])
    alone = [
        (None, tag, "ok", MID_ALONE) for tag in ("SELECT 20", "COPY 20", "COPY 21", "SELECT 40")
    ]
    out += [
        (
            "inside a DataRow of 20 KB",
            packet(server, b"x" * 1000, 5)[0],
            [alone[0], *WAITING_EXPECTED[2:]],
        ),
        (
            "inside the server's CopyData",
            packet(server, b"r7\nr7\n")[0],
            [alone[1], *WAITING_EXPECTED[4:]],
        ),
        (
            "inside the client's CopyData",
            packet(client, b"w9\nw9\n")[0],
            [alone[2], *WAITING_EXPECTED[5:]],
        ),
        (
            "inside a Query's SQL",
            packet(client, b"y" * 1000, 1)[0],
            [alone[3], *WAITING_EXPECTED[6:]],
        ),
    ]
    return out


def test_a_capture_begun_inside_the_connection_pairs_from_its_first_complete_request() -> None:
    client, server = build(WAITING)
    assert said(parsed(causal(client, server)))[1:] == WAITING_EXPECTED
    for name, ts, expected in _cases():
        c, s = since(client, ts), since(server, ts)
        for n, packets in enumerate(interleavings(c, s, limit=25)):
            txs = parsed(packets, batch=1 + n % 5)
            assert said(txs) == expected, (name, n)
            assert [t.index for t in txs] == list(range(len(expected)))
        # The sizes are the captured requests' and answers' own.
        txs = parsed(causal(c, s))
        for t, (request, _, _, _) in zip(txs, expected, strict=True):
            if request == "SELECT 3":
                assert t.request.size == len(query("SELECT 3"))
                assert t.response.size == len(data_row(b"3") + complete("SELECT 60") + ready())


def test_a_capture_begun_inside_the_connection_in_every_segmentation() -> None:
    requests = [
        query("SELECT 1"),
        parse("", "SELECT 2") + bind("", "", []) + execute() + SYNC,
        query("SELECT 3"),
        parse("", "SELECT 4") + bind("", "", []) + execute() + SYNC,
    ]
    answers = [
        (PARSE_COMPLETE + BIND_COMPLETE if i % 2 else b"")
        + data_row(b"v" * 30)
        + complete(f"SELECT {i + 1}")
        + ready()
        for i in range(4)
    ]
    script = [
        ("c", START),
        ("s", auth(0) + ready()),
        *[step for r, a in zip(requests, answers, strict=True) for step in (("c", r), ("s", a))],
        ("c", TERMINATE),
        ("c-fin",),
    ]
    names = [f"SELECT {i + 1}" for i in range(4)]
    starts = [len(START) + sum(map(len, requests[:k])) for k in range(4)]
    for mss in (1, 2, 3, 7, 64):
        client, server = build(script, mss=mss)
        at = {Ether(p[1])[TCP].seq - 1_000_001: p for p in client if Ether(p[1])[TCP].payload}
        for k in range(4):
            # Between two requests: each from there is paired.
            expected = [(name, name, "ok", ()) for name in names[k:]]
            # Inside one (its first segment not captured): its answer is alone; an extended
            # batch is read again from its Bind, whose answer cannot be told from the batch's.
            inside = [(None, names[k], "ok", MID_ALONE), *expected[1:]]
            if k % 2:
                note = "its statement was prepared before the capture began"
                inside.insert(0, ("EXECUTE", None, None, (note, *MID_UNTOLD)))
            cuts = [(at[starts[k]][0], expected)]
            if starts[k] + mss < starts[k] + len(requests[k]):
                cuts.append((at[starts[k] + mss][0], inside))
            for ts, want in cuts:
                c, s = since(client, ts), since(server, ts)
                for n, packets in enumerate((causal(c, s), c + s, s + c)):
                    assert said(parsed(packets, batch=(1, 7, 50)[n])) == want, (mss, k, n)


def test_the_real_pipeline_reads_a_postgresql_connection_joined_in_its_middle() -> None:
    # (By the server's port, as the connection table does; it tells the parser MIDSTREAM.)
    client, server = build(WAITING, port=5432)
    ts = packet(client, REQUESTS[3])[0]
    txs = transactions(causal(since(client, ts), since(server, ts)))
    assert {t.protocol for t in txs} == {"postgresql"}
    assert said(txs) == WAITING_EXPECTED[3:]


def test_notifications_to_a_listening_client_joined_in_its_middle_are_said_as_they_come() -> None:
    script = [("c", START), ("s", auth(0) + ready()), ("c", query("LISTEN ch")),
              ("s", complete("LISTEN") + ready()),
              *[("s", notification(7, "ch", f"n{i}")) for i in range(40)],
              ("c", query("SELECT 1")), ("s", complete("SELECT 1") + ready()), ("c", TERMINATE), ("c-fin",)]  # fmt: skip
    client, server = build(script)
    ts = packet(server, notification(7, "ch", "n0"))[0]
    packets = causal(since(client, ts), since(server, ts))
    pipeline = Pipeline(consumers={None: [_Told]}, http_body_limit=None)
    # While the client says nothing, each notification is said as it comes: it answers no
    # request (nor does anything wait for the client to know where the next answer starts).
    quiet = packets.index(packet(client, query("SELECT 1")))
    live = []
    for i in range(0, quiet, 4):
        batch = Batch.from_packets(1, packets[i : min(i + 4, quiet)])
        live += [e for e in pipeline.feed(batch) if isinstance(e, Transaction)]
    assert [t.response_summary for t in live] == [
        f'NOTIFY ch "n{i}" (backend pid 7)' for i in range(40)
    ]
    assert all(t.notes == ("a notification (LISTEN/NOTIFY)",) for t in live)
    txs = live + [
        e
        for e in pipeline.feed(Batch.from_packets(1, packets[quiet:]))
        if isinstance(e, Transaction)
    ]
    txs += [e for e in pipeline.finish() if isinstance(e, Transaction)]
    assert said(txs)[40:] == [("SELECT 1", "SELECT 1", "ok", ())]
    for order in (since(client, ts) + since(server, ts), since(server, ts) + since(client, ts)):
        assert said(parsed(order)) == said(txs)


def test_lost_client_bytes_across_message_boundaries_resynchronise() -> None:
    # The extended batch in three segments: Parse's start | Parse's end, Bind's start | the rest.
    client, server = build(WAITING, cuts={6: [24, 40]})
    assert said(parsed(causal(client, server)))[1:] == WAITING_EXPECTED
    start = ("startup user=app database=shop application_name=psql", "authentication ok", "ok", ())
    untold_execute = (
        "EXECUTE",
        None,
        None,
        ("its portal was bound in client bytes that were not captured", *LOST_UNTOLD),
    )
    cases = {
        # A whole Query (between messages): its answer alone, then order again.
        "a whole Query": (
            [packet(client, query("SELECT big"))],
            [
                start,
                WAITING_EXPECTED[0],
                (None, "SELECT 20", "ok", LOST_ALONE),
                *WAITING_EXPECTED[2:],
            ],
        ),
        # A Query's header (its SQL is read past: no message starts inside SQL text).
        "a Query's first segment": (
            [packet(client, query(LONG_SQL)[:40])],
            [
                start,
                *WAITING_EXPECTED[:5],
                (None, "SELECT 40", "ok", LOST_ALONE),
                *WAITING_EXPECTED[6:],
            ],
        ),
        # Inside a Parse/Bind chain: the Parse read whole before is answered; what is read
        # after (Describe, Execute, Sync) cannot be told from the rest of that batch's answer.
        "Parse's end and Bind's start": (
            [packet(client, EXTENDED[24:40])],
            [
                start,
                *WAITING_EXPECTED[:2],
                ("prepare: SELECT $1", "ParseComplete", "ok", ()),
                untold_execute,
                (None, "SELECT 30", "ok", LOST_ALONE),
                *WAITING_EXPECTED[3:],
            ],
        ),
        "Parse's start": (
            [packet(client, EXTENDED[:24])],
            [
                start,
                *WAITING_EXPECTED[:2],
                untold_execute,
                (None, "SELECT 30", "ok", LOST_ALONE),
                *WAITING_EXPECTED[3:],
            ],
        ),
        # Two losses: each is read past.
        "two Queries": (
            [packet(client, query("SELECT 1")), packet(client, query("COPY t TO STDOUT"))],
            [
                start,
                (None, "SELECT 1", "ok", LOST_ALONE),
                *WAITING_EXPECTED[1:3],
                (None, "COPY 20", "ok", LOST_ALONE),
                *WAITING_EXPECTED[4:],
            ],
        ),
    }
    for name, (lost, expected) in cases.items():
        rest = [p for p in client if p not in lost]
        for n, packets in enumerate(interleavings(rest, server, limit=20)):
            assert said(parsed(packets, batch=1 + n % 6)) == expected, (name, n)


def test_after_lost_client_bytes_a_pipelining_client_is_not_guessed() -> None:
    def answer(i: int) -> bytes:
        return data_row(b"%d" % i) + complete(f"SELECT {i}") + ready()

    start = [("c", START), ("s", auth(0) + ready()), ("c", query("q1")), ("s", answer(1))]
    first = [
        ("startup user=app database=shop application_name=psql", "authentication ok", "ok", ()),
        ("q1", "SELECT 1", "ok", ()),
    ]
    cases = [
        # q2 lost, sent with q3 before their answers (two segments): q3 acknowledged where
        # q2's answer starts, which the server sent once it had q3 too; q4, sent once the
        # client had both, shows that answer was not q3's. q4 is paired.
        (
            [
                ("c", query("q2")),
                ("c", query("q3")),
                ("s", answer(2)),
                ("s", answer(3)),
                ("c", query("q4")),
                ("s", answer(4)),
                ("c", TERMINATE),
                ("c-fin",),
            ],
            None,
            [
                ("q3", None, None, LOST_UNTOLD),
                (None, "SELECT 2", "ok", LOST_ALONE),
                (None, "SELECT 3", "ok", LOST_ALONE),
                ("q4", "SELECT 4", "ok", ()),
            ],
        ),
        # The same in one write (q2 in its own segment), with q4 too and no later request:
        # nothing after the loss is paired.
        (
            [
                ("c", query("q2") + query("q3") + query("q4")),
                ("s", answer(2) + answer(3) + answer(4)),
                ("c-fin",),
            ],
            {4: [len(query("q2"))]},
            [
                ("q3", None, None, LOST_UNTOLD),
                ("q4", None, None, LOST_UNTOLD),
                (None, "SELECT 2", "ok", LOST_ALONE),
                (None, "SELECT 3", "ok", LOST_ALONE),
                (None, "SELECT 4", "ok", LOST_ALONE),
            ],
        ),
        # q2 lost but answered before q3, then q3 and q4 pipelined: q3's answer starts where it
        # acknowledged, but q4 acknowledged the same point (it did not wait): neither is paired;
        # q5, sent once the client had both, is.
        (
            [
                ("c", query("q2")),
                ("s", answer(2)),
                ("c", query("q3")),
                ("c", query("q4")),
                ("s", answer(3)),
                ("s", answer(4)),
                ("c", query("q5")),
                ("s", answer(5)),
                ("c", TERMINATE),
                ("c-fin",),
            ],
            None,
            [
                (None, "SELECT 2", "ok", LOST_ALONE),
                ("q3", None, None, LOST_UNTOLD),
                ("q4", None, None, LOST_UNTOLD),
                (None, "SELECT 3", "ok", LOST_ALONE),
                (None, "SELECT 4", "ok", LOST_ALONE),
                ("q5", "SELECT 5", "ok", ()),
            ],
        ),
    ]
    for script, cuts, expected in cases:
        client, server = build([*start, *script], cuts=cuts)
        lost = packet(client, query("q2"))
        rest = [p for p in client if p is not lost]
        for n, packets in enumerate(interleavings(rest, server, limit=30)):
            assert said(parsed(packets, batch=1 + n % 4)) == [*first, *expected], n
        # The capture beginning just after q2 instead: the same, said so.
        c, s = since(client, lost[0] + 0.0005), since(server, lost[0] + 0.0005)
        late = [
            (
                r,
                a,
                ok,
                MID_ALONE if why == LOST_ALONE else MID_UNTOLD if why == LOST_UNTOLD else why,
            )
            for r, a, ok, why in expected
        ]
        for packets in (causal(c, s), c + s, s + c):
            assert said(parsed(packets)) == late


def test_what_is_paired_after_lost_client_bytes_or_a_late_start_is_never_mispaired() -> None:
    rng = random.Random(11)
    paired = requests = 0
    for _ in range(60):
        script, answers = _random_conversation(rng)
        if rng.random() < 0.3:  # pipelined requests in one write
            merged: list[tuple] = []
            for step in script:
                if (
                    merged
                    and step[0] == merged[-1][0] == "c"
                    and len(step) > 1
                    and len(merged[-1]) > 1
                ):
                    merged[-1] = ("c", merged[-1][1] + step[1])
                else:
                    merged.append(step)
            script = merged
        if rng.random() < 0.5:
            script = [*script[:-1], ("c", TERMINATE), ("c-fin",)]
        client, server = build(script, mss=rng.choice([200, 500, 1000]))
        mode = rng.random()
        if mode < 0.6:  # client segments lost
            for _ in range(rng.randrange(1, 3)):
                k = rng.randrange(3, len(client))
                client = client[:k] + client[k + 1 :]
        if mode > 0.4:  # the capture begins anywhere
            ts = rng.choice(causal(client, server)[3:])[0]
            client, server = since(client, ts), since(server, ts)
        if rng.random() < 0.3 and len(server) > 3:  # and a server segment lost
            k = rng.randrange(0 if mode > 0.4 else 3, len(server))
            server = server[:k] + server[k + 1 :]
        results = []
        for packets in (causal(client, server), client + server, server + client):
            txs = parsed(packets, batch=rng.randrange(1, 6))
            results.append(said(txs))
            for t in txs:
                if t.request is None or t.response is None:
                    assert t.notes, t  # what is not paired says why
                    continue
                if t.request_summary.startswith("startup"):
                    continue
                own = t.request_summary.lstrip("qe")
                named = re.findall(r"(?:SELECT |err)[qe]?(\d+(?:_\d+)?)", t.response_summary)
                assert answers[t.request_summary] is not None and all(n == own for n in named), t
                if not t.notes:
                    assert t.response_summary.endswith(answers[t.request_summary]), t
        assert results[0] == results[1] == results[2]  # whatever the interleaving
        paired += sum(1 for r in results[0] if r[0] and r[1])
        requests += sum(1 for r in results[0] if r[0])
    assert paired > requests // 2  # (most are: the client usually waits)


def test_a_resynchronising_chain_is_not_found_inside_values_or_sql() -> None:
    rng = random.Random(5)
    noise = bytearray(rng.randbytes(300_000))
    sql = bytearray(
        query(
            "SELECT '" + "".join(rng.choice("QPBDESHX abc\\n'()0123") for _ in range(50_000)) + "'"
        )
    )
    rows = bytearray(msg(b"d", rng.randbytes(60_000)))  # a binary CopyData
    for buf in (noise, sql[5:], rows[5:]):
        assert not [at for at in range(len(buf)) if _frontend_chain(buf, at)]
    well = bytearray(EXTENDED + query("SELECT 1") + bind("", "s1", [b"2", None]) + execute() + SYNC)
    assert _frontend_chain(well, 0) and _frontend_chain(well, len(EXTENDED))
    assert _frontend_chain(bytearray(SYNC), 0) is None  # a Sync alone says nothing yet
    assert _frontend_chain(bytearray(SYNC + query("SELECT 1")), 0)


@given(st.binary(max_size=400), st.binary(max_size=400), st.binary(max_size=200), st.integers(0, 8))
@settings(max_examples=200, deadline=None)
def test_any_bytes_after_a_late_start_are_read_without_failing(
    client_junk: bytes, server_junk: bytes, more: bytes, drop: int
) -> None:
    script = [
        ("c", START),
        ("s", auth(0) + ready()),
        ("c", client_junk + query("SELECT 1") + more),
        ("s", server_junk + data_row(b"1") + complete("SELECT 1") + ready()),
        ("c", more + EXTENDED + client_junk),
        ("s", more + PARSE_COMPLETE + server_junk + ready()),
        ("c", query("SELECT 2")),
        ("s", server_junk),
        ("c", TERMINATE),
        ("c-fin",),
    ]
    client, server = build(script, mss=97)
    ts = causal(client, server)[4 + drop][0]
    client, server = since(client, ts), since(server, ts)
    if drop % 3 == 0 and len(client) > 2:  # and a client segment lost
        client = client[:1] + client[2:]
    for packets in (causal(client, server), server + client):
        for t in parsed(packets, batch=3):
            assert t.protocol == "postgresql"


class _AnyAcks:
    """A connection whose acknowledgment numbers mean anything (or nothing: None)."""

    id = 1

    def peer_offset(self, from_client: bool, ack: int) -> int | None:
        return None if ack % 7 == 0 else ack % 5000 - 100


_PIECES = st.sampled_from([
    query("SELECT 1"), ready(), complete("SELECT 1"), SYNC, PARSE_COMPLETE, BIND_COMPLETE, EXTENDED,
    execute(), notification(7, "c", "p"), data_row(b"1"), TERMINATE, copy_out(1), msg(b"d", b"x"),
])  # fmt: skip
_SEGMENT = st.tuples(
    st.booleans(),  # from the client
    st.one_of(
        st.binary(min_size=1, max_size=40), st.lists(_PIECES, min_size=1, max_size=4).map(b"".join)
    ),
    st.integers(0, 6000),  # its acknowledgment number
    st.integers(0, 30),  # a gap before it (bytes not captured), when under 5
    st.integers(0, 8),  # cut this many bytes off its start
)


@given(st.lists(_SEGMENT, max_size=40), st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_bytes_from_either_side_after_a_late_start_are_read_without_failing(
    segments: list[tuple[bool, bytes, int, int, int]], ends: bool
) -> None:
    conn = _AnyAcks()
    events: list[Event] = []
    parser = PostgresParser(conn, events.append)  # type: ignore[arg-type]
    for from_client in (True, False):
        parser.on_gap(conn, from_client, 1.0, 0, 0, MIDSTREAM)  # type: ignore[arg-type]
    offset = {True: 0, False: 0}
    for from_client, data, ack, gap, cut in segments:
        if gap < 5:
            parser.on_gap(conn, from_client, 1.0, offset[from_client], gap + 1, "acked")  # type: ignore[arg-type]
            offset[from_client] += gap + 1
        data = data[cut:] or data
        parser.on_data(conn, from_client, 1.0, offset[from_client], data, ack)  # type: ignore[arg-type]
        offset[from_client] += len(data)
    if ends:
        parser.on_end(conn, True, 2.0)  # type: ignore[arg-type]
    parser.on_close(conn, 2.0)  # type: ignore[arg-type]
    assert all(isinstance(e, Transaction) and e.protocol == "postgresql" for e in events)


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 12), st.booleans())
@settings(max_examples=200, deadline=None)
def test_any_bytes_around_an_exchange_are_read_without_failing(
    junk: bytes, more: bytes, drop: int, ssl: bool
) -> None:
    script = [
        ("c", (SSL_REQUEST if ssl else b"") + START + junk),
        ("s", (b"N" if ssl else b"") + more + auth(0) + ready() + junk),
        ("c", query("SELECT 1") + more + execute() + SYNC + junk),
        ("s", junk + data_row(b"1") + complete("SELECT 1") + ready() + more + ready()),
        ("c-fin",),
    ]
    client, server = build(script, mss=331)
    if 3 <= drop < len(server):  # and a server segment lost
        server = server[:drop] + server[drop + 1 :]
    for packets in (causal(client, server), server + client):
        for t in transactions(packets, batch=3):
            assert t.protocol == "postgresql"


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import postgres

    class Conn:
        id = 1

        def peer_offset(self, from_client: bool, ack: int) -> int | None:
            return None

    monkeypatch.setattr(postgres, "MAX_PENDING", 5)
    monkeypatch.setattr(postgres, "MAX_STATEMENTS", 3)
    events: list = []
    parser = postgres.PostgresParser(Conn(), events.append)  # type: ignore[arg-type]
    prepared = b"".join(parse(f"s{i}", f"SELECT {i}") for i in range(6))
    parser.on_data(Conn(), True, 1.0, 0, START + prepared + SYNC + query("SELECT 1") * 9, 0)  # type: ignore[arg-type]
    assert list(parser.statements) == ["s3", "s4", "s5"]
    assert (
        len(parser.steps) == 5
        and parser.client_done == "more than 5 requests waited for their answers"
    )
    parser.on_close(Conn(), 2.0)  # type: ignore[arg-type]
    assert [t.request_summary for t in events] == [
        "startup user=app database=shop application_name=psql",
        "prepare s5: SELECT 5",
        *["SELECT 1"] * 3,
    ]
    assert all(t.response is None and t.notes == ("no answer was seen",) for t in events)


def test_bounds_after_a_late_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import postgres

    conn = _AnyAcks()
    events: list[Event] = []
    parser = PostgresParser(conn, events.append)  # type: ignore[arg-type]
    for from_client in (True, False):
        parser.on_gap(conn, from_client, 1.0, 0, 0, MIDSTREAM)  # type: ignore[arg-type]
    # Read ahead: bytes where no message starts are dropped past 64 KiB (a message that claims
    # to need more than that is given up).
    junk = b"d\0\0\xff\x00" + bytes(range(256)) * 1000  # (a CopyData header claiming 65 KiB)
    for i in range(0, len(junk), 1000):
        parser.on_data(conn, True, 1.0, i, junk[i : i + 1000], 0)  # type: ignore[arg-type]
        ahead = parser.client_ahead
        assert ahead is not None and len(ahead.buf) <= postgres.RESYNC_WINDOW + 1000
    # Requests read adrift wait among the requests the bound counts.
    monkeypatch.setattr(postgres, "MAX_PENDING", 5)
    at = len(junk)
    for i in range(9):
        request = query(f"SELECT {i}")
        parser.on_data(conn, True, 1.0, at, request, 7)  # type: ignore[arg-type]
        at += len(request)
    assert (
        len(parser.later) == 5
        and parser.client_done == "more than 5 requests waited for their answers"
    )
    parser.on_close(conn, 2.0)  # type: ignore[arg-type]
    assert [t.request_summary for t in events] == [f"SELECT {i}" for i in range(5)]
    assert all(
        t.notes == (f"{MID}: which answer is its own could not be told for certain",)
        for t in events
    )


# --- detection and records -----------------------------------------------------------------------


def test_detection() -> None:
    assert client_start(START) is True
    assert client_start(SSL_REQUEST) is True and client_start(GSS_REQUEST) is True
    assert client_start(struct.pack("!IIII", 16, 80877102, 1, 2)) is True
    assert client_start(startup(user="a", protocol="x")[:6]) is None
    assert (
        client_start(START[:20]) is None
        and client_start(b"") is None
        and client_start(b"\0") is None
    )
    assert client_start(startup(database="shop")) is False  # no user
    assert client_start(struct.pack("!II", 16, 80877103)) is False  # an SSLRequest is 8 bytes
    assert client_start(struct.pack("!II", 9, 2 << 16) + b"\0") is False  # protocol 2
    assert client_start(struct.pack("!II", 20000, 3 << 16)) is False  # too long for a startup
    for other in (
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*1\r\n$4\r\nPING\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        bytes.fromhex("5400000185a6ff0100000001ff"),  # a MySQL client's handshake response
        bytes.fromhex("001d12340100000100000000000003777777"),  # DNS over TCP
        bytes.fromhex("000012040000000000"),
    ):  # an HTTP/2 SETTINGS frame
        assert client_start(other) is False, other
    infos = []
    pipeline = Pipeline()
    for e in pipeline.feed(Batch.from_packets(1, causal(*build(SCRIPT[:4])))) + pipeline.finish():
        if isinstance(e, ConnectionClosed):
            infos.append(e.info)
    assert [i.protocol for i in infos] == [POSTGRES] == ["postgresql"]


def test_transaction_records_native_and_ecs() -> None:
    from engine import ecs
    from engine.records import Flow, line, transaction_record

    flow = Flow("10.1.0.1:43210", "10.1.0.2:5432", "1:x")
    txs = transactions(causal(*build(SCRIPT)))
    records = [json.loads(line(transaction_record(t, flow))) for t in txs]
    failed = records[3]
    assert (
        failed["type"] == "transaction"
        and failed["protocol"] == "postgresql"
        and failed["index"] == 3
    )
    assert (
        failed["status"] == "error"
        and failed["error"] == 'ERROR 42P01: relation "nope" does not exist'
    )
    assert failed["request"]["summary"] == "SELECT * FROM nope" and failed["client"] == flow.client
    as_ecs = ecs.record(failed)
    assert (
        as_ecs["event"]["dataset"] == "wirepeek.postgresql"
        and as_ecs["event"]["outcome"] == "failure"
    )
    assert records[10]["request"] is None and records[10]["notes"] == [
        "a notification (LISTEN/NOTIFY)"
    ]


# --- a real server ---------------------------------------------------------------------------

POSTGRES_BINARIES = sorted(
    glob.glob("/usr/lib/postgresql/*/bin/postgres"),
    key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for the server's TLS (owned by postgres, the key private)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / "server.crt", directory / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem.chmod(0o600)
    for path in (crt, pem):
        shutil.chown(path, "postgres", "postgres")
    return crt, pem


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.skipif(
    not POSTGRES_BINARIES, reason="PostgreSQL is not installed (Debian: postgresql)"
)
@pytest.mark.skipif(not _has_user("postgres"), reason="no user postgres to run the server as")
def test_a_real_server_and_client() -> None:
    psycopg = pytest.importorskip(
        "psycopg", reason="psycopg is not installed (pip: psycopg[binary])"
    )

    bindir = Path(POSTGRES_BINARIES[-1]).parent
    home = Path(tempfile.mkdtemp(prefix="wirepeek-pg-"))  # (pytest's tmp_path is root's only)
    home.chmod(0o755)
    shutil.chown(home, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = home / "capture.err"
    server = None
    # The capture starts while the cluster is made: its readiness is polled on the unix socket.
    capture = json_capture(f"tcp port {port}", err, 4)
    try:
        subprocess.run(
            [
                bindir / "initdb",
                "-D",
                home / "data",
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            user="postgres",
            group="postgres",
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=home,
        )
        crt, pem = _self_signed(home)
        server = subprocess.Popen(
            [
                bindir / "postgres",
                "-D",
                home / "data",
                "-p",
                str(port),
                "-k",
                home,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "ssl=on",
                "-c",
                f"ssl_cert_file={crt}",
                "-c",
                f"ssl_key_file={pem}",
            ],
            user="postgres",
            group="postgres",
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=(home / "server.log").open("wb"),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(
                    host=str(home), port=port, user="postgres", dbname="postgres"
                ).close()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    home / "server.log"
                ).read_text()
                time.sleep(0.02)
        wait_capturing(capture, err)

        def connect(**options: str) -> psycopg.Connection:
            return psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                dbname="postgres",
                application_name="wirepeek-test",
                autocommit=True,
                **options,
            )

        with connect(sslmode="disable") as conn:
            conn.execute("SELECT 1")  # no parameters: a simple Query
            conn.execute("CREATE TEMP TABLE items (id int, name text)")
            conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g")
            for i in (2, 3, 4):  # prepare=True: Parse of a named statement once, then Bind/Execute
                assert conn.execute(
                    "SELECT name FROM items WHERE id = %s", (i,), prepare=True
                ).fetchone() == (f"item {i}",)
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT * FROM nope")
            assert len(conn.execute("SELECT id, name FROM items ORDER BY id").fetchall()) == 300
            conn.execute(
                "CREATE TEMP TABLE t2 (x int); INSERT INTO t2 VALUES (1), (2); DROP TABLE t2"
            )
            with (
                pytest.raises(psycopg.errors.UndefinedTable),
                conn.pipeline(),
            ):  # one batch, one Sync
                conn.execute("SELECT %s::int", (1,))
                conn.execute("SELECT * FROM nope2 WHERE x = %s", (2,))
                conn.execute("SELECT %s::int", (3,))
            conn.execute("LISTEN ch1")
            with connect(sslmode="disable") as other:
                other.execute("NOTIFY ch1, 'hello'")
            conn.execute("SELECT 2")
            with conn.cursor().copy("COPY items TO STDOUT") as copy:
                assert sum(1 for _ in copy) == 300
        with connect(sslmode="require") as conn:
            conn.execute("SELECT 3")
        out, _ = capture.communicate(timeout=30)
    finally:
        capture.kill()
        if server is not None:
            server.send_signal(2)  # (SIGINT: a fast shutdown)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(home, ignore_errors=True)
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["protocol"] for r in records if r["type"] == "connection"} == {"postgresql"}
    txs = [r for r in records if r["type"] == "transaction"]
    assert txs and all(r["protocol"] == "postgresql" for r in txs)
    by_connection: dict[int, list[dict]] = {}
    for r in txs:
        by_connection.setdefault(r["connection"], []).append(r)
    main, notifier, encrypted = (by_connection[c] for c in sorted(by_connection))

    def said(r: dict) -> tuple:
        return (
            r["request"] and r["request"]["summary"],
            r["response"] and r["response"]["summary"],
            r["status"],
        )

    start = (
        "startup user=postgres database=postgres application_name=wirepeek-test",
        "authentication ok",
        "ok",
    )
    [notify] = [r for r in main if r["request"] is None]
    assert notify["response"]["summary"].startswith('NOTIFY ch1 "hello" (backend pid ')
    assert notify["notes"] == ["a notification (LISTEN/NOTIFY)"]
    [prepare] = [
        said(r) for r in main if r["request"] and r["request"]["summary"].startswith("prepare ")
    ]
    assert prepare[0].endswith(": SELECT name FROM items WHERE id = $1") and prepare[1:] == (
        "ParseComplete",
        "ok",
    )
    skip = (
        prepare,
        said(notify),
        ("DEALLOCATE ALL", "DEALLOCATE ALL", "ok"),
    )  # (psycopg's pipeline)
    assert [said(r) for r in main if said(r) not in skip] == [
        start,
        ("SELECT 1", "SELECT 1", "ok"),
        ("CREATE TEMP TABLE items (id int, name text)", "CREATE TABLE", "ok"),
        (
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g",
            "INSERT 0 300",
            "ok",
        ),
        *[(f"SELECT name FROM items WHERE id = $1 [{i}]", "SELECT 1", "ok") for i in (2, 3, 4)],
        ("SELECT * FROM nope", 'ERROR 42P01: relation "nope" does not exist', "error"),
        ("SELECT id, name FROM items ORDER BY id", "SELECT 300", "ok"),
        (
            "CREATE TEMP TABLE t2 (x int); INSERT INTO t2 VALUES (1), (2); DROP TABLE t2",
            "CREATE TABLE; INSERT 0 2; DROP TABLE",
            "ok",
        ),
        ("SELECT $1::int [1]", "SELECT 1", "ok"),
        (
            "SELECT * FROM nope2 WHERE x = $1 [2]",
            'ERROR 42P01: relation "nope2" does not exist',
            "error",
        ),
        ("SELECT $1::int [3]", None, None),
        ("LISTEN ch1", "LISTEN", "ok"),
        ("SELECT 2", "SELECT 1", "ok"),
        ("COPY items TO STDOUT", "COPY 300", "ok"),
    ]
    [skipped] = [
        r for r in main if r["request"] and r["request"]["summary"] == "SELECT $1::int [3]"
    ]
    assert skipped["notes"][0].startswith("not executed: the server skipped it")
    [rows] = [
        r for r in main if r["request"] and r["request"]["summary"].startswith("SELECT id, name")
    ]
    assert (
        rows["response"]["bytes"] > 300 * len(data_row(b"1", b"item 1")) and rows["duration"] >= 0
    )
    assert [said(r) for r in notifier] == [start, ("NOTIFY ch1, 'hello'", "NOTIFY", "ok")]
    assert [said(r) for r in encrypted] == [
        ("SSLRequest", "TLS accepted: the rest is encrypted", "ok")
    ]
