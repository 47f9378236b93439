"""MySQL transactions (engine.mysql): generated conversations in every interleaving and
segmentation, a failed login, TLS, lost bytes on either side, fuzzed bytes, detection; and a real
MariaDB server driven by mysql-connector-python, captured live."""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import mysql
from engine.batch import Batch
from engine.detect import NOTHING, Sniffer
from engine.events import ConnectionClosed, Transaction
from engine.pipeline import Pipeline
from engine.reassembly import NO_ACK
from engine.stats import is_error
from engine.tcp import MIDSTREAM
from tests.conversations import build, causal, interleavings, summary, transactions
from tests.live import json_capture, wait_capturing

ROOT = Path(__file__).parent.parent

# --- the protocol, as a server and a client write it -------------------------------------------

LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, SSL = 0x1, 0x8, 0x200, 0x800
SECURE_CONNECTION, MULTI_RESULTS, PLUGIN_AUTH = 0x8000, 0x20000, 0x80000
LENENC_DATA, DEPRECATE_EOF = 0x200000, 0x1000000
CLIENT = LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | SECURE_CONNECTION | MULTI_RESULTS
CLIENT |= PLUGIN_AUTH | LENENC_DATA
MORE_RESULTS, AUTOCOMMIT = 0x8, 0x2


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload


def lenenc(n: int) -> bytes:
    if n < 0xFB:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lstr(s: bytes) -> bytes:
    return lenenc(len(s)) + s


def greeting(version: bytes = b"5.5.5-10.11.6-MariaDB", caps: int = 0xFFFFFFFF & ~0x20) -> bytes:
    payload = b"\x0a" + version + b"\0" + (42).to_bytes(4, "little") + b"abcdefgh" + b"\0"
    payload += (caps & 0xFFFF).to_bytes(2, "little") + b"\x2d" + AUTOCOMMIT.to_bytes(2, "little")
    payload += (caps >> 16).to_bytes(2, "little") + bytes([21]) + bytes(10)
    payload += b"ijklmnopqrst\0" + b"mysql_native_password\0"
    return packet(0, payload)


def handshake_response(
    user: bytes = b"app",
    db: bytes | None = b"shop",
    caps: int = CLIENT,
    plugin: bytes = b"mysql_native_password",
    attrs: bytes = b"",
) -> bytes:
    if db is None:
        caps &= ~CONNECT_WITH_DB
    payload = caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + b"\x2d" + bytes(23)
    payload += user + b"\0" + lstr(bytes(range(1, 21)))
    if db is not None:
        payload += db + b"\0"
    payload += plugin + b"\0"
    if attrs:
        payload += lstr(attrs)
    return packet(1, payload)


def ok(
    seq: int,
    affected: int = 0,
    insert_id: int = 0,
    status: int = AUTOCOMMIT,
    warnings: int = 0,
    header: int = 0,
) -> bytes:
    payload = bytes([header]) + lenenc(affected) + lenenc(insert_id)
    return packet(seq, payload + status.to_bytes(2, "little") + warnings.to_bytes(2, "little"))


def err(seq: int, code: int, state: bytes, message: bytes) -> bytes:
    return packet(seq, b"\xff" + code.to_bytes(2, "little") + b"#" + state + message)


def eof(seq: int, status: int = AUTOCOMMIT) -> bytes:
    return packet(seq, b"\xfe\0\0" + status.to_bytes(2, "little"))


def column(name: bytes, table: bytes = b"users") -> bytes:
    return (
        lstr(b"def")
        + lstr(b"shop")
        + lstr(table)
        + lstr(table)
        + lstr(name)
        + lstr(name)
        + b"\x0c"
        + b"\x2d\0"
        + (255).to_bytes(4, "little")
        + b"\xfd"
        + b"\0\0"
        + b"\0"
        + b"\0\0"
    )


def result_set(
    seq: int,
    names: list[bytes],
    rows: list[list[bytes]],
    deprecate_eof: bool,
    status: int = AUTOCOMMIT,
    binary: bool = False,
) -> tuple[bytes, int]:
    """A result set from `seq` on; returns it and the sequence id after it."""
    out = packet(seq, lenenc(len(names)))
    seq += 1
    for name in names:
        out += packet(seq, column(name))
        seq += 1
    if not deprecate_eof:
        out += eof(seq)
        seq += 1
    for row in rows:
        if binary:
            payload = b"\0" + bytes((len(row) + 7 + 2) // 8) + b"".join(lstr(v) for v in row)
        else:
            payload = b"".join(lstr(v) for v in row)
        out += packet(seq, payload)
        seq += 1
    out += ok(seq, status=status, header=0xFE) if deprecate_eof else eof(seq, status)
    return out, seq + 1


def command(code: int, body: bytes = b"", seq: int = 0) -> bytes:
    return packet(seq, bytes([code]) + body)


def query(sql: bytes) -> bytes:
    return command(0x03, sql)


def execute(statement: int, value: bytes) -> bytes:
    body = statement.to_bytes(4, "little") + b"\0" + (1).to_bytes(4, "little")  # flags, iterations
    body += b"\0" + b"\1" + b"\x0f\0" + lstr(value)  # null bitmap, types bound, VARCHAR, value
    return command(0x17, body)


def prepare_ok(statement: int, columns: list[bytes], params: int, deprecate_eof: bool) -> bytes:
    seq = 1
    out = packet(
        seq,
        b"\0"
        + statement.to_bytes(4, "little")
        + len(columns).to_bytes(2, "little")
        + params.to_bytes(2, "little")
        + b"\0"
        + b"\0\0",
    )
    seq += 1
    for group in ([b"?"] * params, columns):
        for name in group:
            out += packet(seq, column(name))
            seq += 1
        if group and not deprecate_eof:
            out += eof(seq)
            seq += 1
    return out


def script(deprecate_eof: bool) -> list[tuple]:
    caps = CLIENT | (DEPRECATE_EOF if deprecate_eof else 0)
    users, _ = result_set(
        1, [b"id", b"name"], [[b"1", b"ann"], [b"2", b"bob"], [b"3", b"cy"]], deprecate_eof
    )
    by_id, _ = result_set(1, [b"name"], [[b"ann"]], deprecate_eof, binary=True)
    first, seq = result_set(
        1, [b"n"], [[b"1"], [b"2"]], deprecate_eof, status=AUTOCOMMIT | MORE_RESULTS
    )
    second, seq = result_set(
        seq, [b"a", b"b"], [[b"x", b"y"]], deprecate_eof, status=AUTOCOMMIT | MORE_RESULTS
    )
    return [
        ("s", greeting()),
        ("c", handshake_response(caps=caps)),
        ("s", ok(2)),
        ("c", query(b"SELECT id,  name\n  FROM users")),
        ("s", users),
        ("c", query(b"INSERT INTO users (name) VALUES ('dee')")),
        ("s", ok(1, affected=1, insert_id=42)),
        ("c", query(b"SELECT * FROM nope")),
        ("s", err(1, 1146, b"42S02", b"Table 'shop.nope' doesn't exist")),
        ("c", command(0x16, b"SELECT name FROM users WHERE id = ?")),
        ("s", prepare_ok(1, [b"name"], 1, deprecate_eof)),
        ("c", execute(1, b"1")),
        ("s", by_id),
        ("c", execute(1, b"2")),
        ("s", by_id),
        ("c", command(0x19, (1).to_bytes(4, "little"))),  # COM_STMT_CLOSE: no response
        ("c", query(b"CALL report()")),
        ("s", first + second + ok(seq)),
        ("c", command(0x0E)),  # COM_PING
        ("s", ok(1)),
        ("c", command(0x01)),  # COM_QUIT
        ("c-fin",),
    ]


SQL_BY_ID = "SELECT name FROM users WHERE id = ?"
EXPECTED = [
    ("login user=app db=shop auth=mysql_native_password", "OK (server 10.11.6-MariaDB)", "ok"),
    ("SELECT id, name FROM users", "3 rows, 2 columns", "ok"),
    ("INSERT INTO users (name) VALUES ('dee')", "OK, 1 row affected, last insert id 42", "ok"),
    ("SELECT * FROM nope", "ERR 1146 (42S02): Table 'shop.nope' doesn't exist", "error"),
    (f"PREPARE {SQL_BY_ID}", "statement #1, 1 param, 1 column", "ok"),
    (f"EXECUTE #1: {SQL_BY_ID}", "1 row, 1 column", "ok"),
    (f"EXECUTE #1: {SQL_BY_ID}", "1 row, 1 column", "ok"),
    (f"CLOSE #1: {SQL_BY_ID}", None, "ok"),
    ("CALL report()", "2 rows, 1 column; 1 row, 2 columns; OK, 0 rows affected", "ok"),
    ("PING", "OK", "ok"),
    ("QUIT", None, "ok"),
]


# --- generated conversations -----------------------------------------------------------------


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_commands_and_responses_pair_in_order(deprecate_eof: bool) -> None:
    steps = script(deprecate_eof)
    txs = transactions(causal(*build(steps)))
    assert summary(txs) == EXPECTED
    assert [t.index for t in txs] == list(range(len(EXPECTED)))
    assert all(t.protocol == "mysql" for t in txs)
    login, select = txs[0], txs[1]
    assert login.request.size == len(steps[1][1]) and login.response.size == len(steps[2][1])
    assert select.request.size == len(steps[3][1]) and select.response.size == len(steps[4][1])
    assert select.duration == pytest.approx(select.response.end_ts - select.request.ts)
    assert txs[3].error == "ERR 1146 (42S02): Table 'shop.nope' doesn't exist"
    assert txs[7].notes == ("this command has no response",) and txs[7].response is None
    # A command that has no response is not counted as failed (QUIT ends every session).
    assert not is_error(txs[7]) and not is_error(txs[-1]) and is_error(txs[3])


def test_the_pairing_does_not_depend_on_the_interleaving_or_the_segments() -> None:
    for deprecate_eof in (False, True):
        steps = script(deprecate_eof)
        client, server = build(steps, mss=40)
        for n, packets in enumerate(interleavings(client, server, limit=40)):
            assert summary(transactions(packets, batch=1 + n % 7)) == EXPECTED, n
        # (scapy's building of one-byte segments is what takes the time: all sizes once)
        for mss in (1, 2, 3, 7, 64) if deprecate_eof else (7, 64):
            assert summary(transactions(causal(*build(steps, mss=mss)), batch=50)) == EXPECTED, mss


def test_a_failed_login() -> None:
    steps = [
        ("s", greeting(b"8.0.36")),
        ("c", handshake_response(user=b"app", db=None, plugin=b"caching_sha2_password")),
        (
            "s",
            err(
                2, 1045, b"28000", b"Access denied for user 'app'@'10.1.0.1' (using password: YES)"
            ),
        ),
        ("s-fin",),
    ]
    [tx] = transactions(causal(*build(steps)))
    assert tx.request_summary == "login user=app auth=caching_sha2_password"
    assert tx.status == "error"
    assert (
        tx.error
        == tx.response_summary
        == ("ERR 1045 (28000): Access denied for user 'app'@'10.1.0.1' (using password: YES)")
    )
    assert "server 8.0.36" in tx.notes


def test_an_auth_switch_and_caching_sha2_fast_auth_are_one_login() -> None:
    steps = [
        ("s", greeting(b"8.0.36")),
        ("c", handshake_response(plugin=b"caching_sha2_password")),
        (
            "s",
            packet(2, b"\xfe" + b"mysql_native_password\0" + b"0123456789abcdefghij\0"),
        ),  # switch
        ("c", packet(3, bytes(20))),
        ("s", packet(4, b"\x01\x03")),  # (fast auth: the server then says OK at once)
        ("s", ok(5)),
        ("c", query(b"SELECT 1")),
        ("s", result_set(1, [b"1"], [[b"1"]], False)[0]),
        ("c-fin",),
    ]
    client, server = build(steps, mss=9)
    for packets in interleavings(client, server, limit=30):
        txs = transactions(packets, batch=3)
        assert summary(txs) == [
            ("login user=app db=shop auth=caching_sha2_password", "OK (server 8.0.36)", "ok"),
            ("SELECT 1", "1 row, 1 column", "ok"),
        ]
        login = txs[0]
        assert login.request.size == len(steps[1][1]) + len(steps[3][1])
        assert login.response.size == len(steps[2][1]) + len(steps[4][1]) + len(steps[5][1])
        assert "auth switched to mysql_native_password" in login.notes
        assert "fast auth: the password's hash was cached" in login.notes


def test_an_ssl_request_is_one_transaction_and_the_rest_is_not_read() -> None:
    ssl_request = packet(
        1,
        (CLIENT | SSL).to_bytes(4, "little")
        + (1 << 24).to_bytes(4, "little")
        + b"\x2d"
        + bytes(23),
    )
    tls = bytes.fromhex("16030100a5010000a10303") + bytes(160)
    steps = [("s", greeting()), ("c", ssl_request), ("c", tls), ("s", tls), ("c", tls), ("c-fin",)]
    for packets in interleavings(*build(steps), limit=20):
        [tx] = transactions(packets)
        assert tx.request_summary == "SSLRequest: switching to TLS" and tx.response is None
        assert "the rest of the connection is TLS: it is not read" in tx.notes
        assert "server 10.11.6-MariaDB" in tx.notes


def test_lost_server_bytes_are_said_not_guessed_and_pairing_resumes() -> None:
    rows = [[b"%d" % i, b"x" * 100] for i in range(60)]
    big, _ = result_set(1, [b"id", b"v"], rows, False)
    steps = [
        ("s", greeting()),
        ("c", handshake_response()),
        ("s", ok(2)),
        ("c", query(b"SELECT id, v FROM big")),
        ("s", big),
        ("c", query(b"SELECT * FROM nope")),
        ("s", err(1, 1146, b"42S02", b"Table 'shop.nope' doesn't exist")),
        ("c", query(b"DELETE FROM t")),
        ("s", ok(1, affected=3)),
        ("c-fin",),
    ]
    client, server = build(steps, mss=700)
    dropped = [p for p in server if b"x" * 100 in p[1]][2]
    txs = transactions(causal(client, [p for p in server if p is not dropped]))
    said = summary(txs)
    assert said[0][2] == "ok"
    cut = txs[1]
    assert cut.request_summary == "SELECT id, v FROM big" and cut.status is None
    assert cut.response_summary.endswith("(incomplete)")
    assert "server bytes were not captured: its response is incomplete" in cut.notes
    # After the loss the server's answers are tied to their commands by acknowledgment.
    assert said[2:] == [
        ("SELECT * FROM nope", "ERR 1146 (42S02): Table 'shop.nope' doesn't exist", "error"),
        ("DELETE FROM t", "OK, 3 rows affected", "ok"),
    ]
    assert any("paired by the acknowledgments" in n for n in txs[2].notes)


def test_lost_client_bytes_resynchronise_at_the_next_command() -> None:
    steps = script(False)
    client, server = build(steps)
    dropped = next(p for p in client if b"INSERT INTO users" in p[1])
    txs = transactions(causal([p for p in client if p is not dropped], server))
    said = summary(txs)
    assert said[:2] == EXPECTED[:2]
    # The INSERT is not known; its OK answers nothing that can be paired for certain, and the
    # next command's answer is found by acknowledgment.
    assert said[2:] == EXPECTED[3:]
    after = txs[2]
    assert any("client bytes before it were not captured" in n for n in after.notes)
    assert any("paired by the acknowledgments" in n for n in after.notes)


def test_other_commands_in_every_interleaving() -> None:
    cursor_execute = command(0x17, (1).to_bytes(4, "little") + b"\x01" + (1).to_bytes(4, "little"))
    rows = b"".join(packet(seq, b"\0\0" + lstr(name)) for seq, name in ((1, b"ann"), (2, b"bob")))
    steps = [
        ("s", greeting()),
        ("c", handshake_response()),
        ("s", ok(2)),
        ("c", query(b"LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t")),
        ("s", packet(1, b"\xfb/tmp/x.csv")),
        ("c", packet(2, b"1,ann\n" * 50) + packet(3, b"2,bob\n") + packet(4, b"")),
        ("s", ok(5, affected=51)),
        ("c", command(0x02, b"other")),
        ("s", ok(1)),
        ("c", command(0x04, b"users\0")),
        ("s", packet(1, column(b"id")) + packet(2, column(b"name")) + eof(3)),
        ("c", command(0x09)),
        ("s", packet(1, b"Uptime: 5  Threads: 1  Questions: 9")),
        ("c", command(0x1B, b"\0\0")),
        ("s", eof(1)),
        ("c", command(0x16, b"SELECT name FROM users")),
        ("s", prepare_ok(1, [b"name"], 0, False)),
        ("c", cursor_execute),
        ("s", packet(1, b"\x01") + packet(2, column(b"name")) + eof(3, AUTOCOMMIT | 0x40)),
        ("c", command(0x1C, (1).to_bytes(4, "little") + (10).to_bytes(4, "little"))),
        ("s", rows + eof(3, AUTOCOMMIT | 0x80)),
        (
            "c",
            command(
                0x11,
                b"bob\0" + lstr(bytes(20)) + b"shop\0" + b"\x2d\0" + b"mysql_native_password\0",
            ),
        ),
        ("s", ok(1)),
        (
            "s",
            err(
                0,
                4031,
                b"HY000",
                b"The client was disconnected by the server because of inactivity",
            ),
        ),
        ("s-fin",),
    ]
    expected = [
        ("login user=app db=shop auth=mysql_native_password", "OK (server 10.11.6-MariaDB)", "ok"),
        (
            "LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t",
            "LOCAL INFILE '/tmp/x.csv'; OK, 51 rows affected",
            "ok",
        ),
        ("INIT_DB other", "OK", "ok"),
        ("FIELD_LIST users", "2 columns", "ok"),
        ("STATISTICS", "Uptime: 5 Threads: 1 Questions: 9", "ok"),
        ("SET_OPTION MULTI_STATEMENTS_ON", "OK", "ok"),
        ("PREPARE SELECT name FROM users", "statement #1, 0 params, 1 column", "ok"),
        ("EXECUTE #1: SELECT name FROM users", "cursor, 1 column", "ok"),
        ("FETCH #1 (10 rows): SELECT name FROM users", "2 rows, last row sent", "ok"),
        ("CHANGE_USER user=bob db=shop", "OK (server 10.11.6-MariaDB)", "ok"),
        (
            None,
            "ERR 4031 (HY000): The client was disconnected by the server because of inactivity",
            "error",
        ),
    ]
    client, server = build(steps, mss=23)
    for n, packets in enumerate(interleavings(client, server, limit=20)):
        txs = transactions(packets, batch=1 + n % 5)
        assert summary(txs) == expected, n
        load = txs[1]
        assert "the server asked for the client's file '/tmp/x.csv'" in load.notes
        assert "the client sent 306 bytes of the file" in load.notes
        assert load.request.size == len(steps[3][1]) + len(steps[5][1])
        assert txs[-1].notes == (
            "it answers no command seen (sent before the capture started, or unasked)",
        )


def test_a_compressed_connection_is_read_up_to_its_login() -> None:
    compress = 0x20
    steps = [
        ("s", greeting(caps=0xFFFFFFFF)),
        ("c", handshake_response(caps=CLIENT | compress)),
        ("s", ok(2)),
        ("c", bytes.fromhex("0d0000000000000800000003534c") + b"junk"),
        ("s", bytes(30)),
        ("c-fin",),
    ]
    txs = transactions(causal(*build(steps)))
    assert summary(txs) == [
        ("login user=app db=shop auth=mysql_native_password", "OK (server 10.11.6-MariaDB)", "ok")
    ]
    assert "the rest of the connection is compressed: it is not read" in txs[0].notes


@given(st.binary(max_size=300), st.booleans())
@settings(max_examples=200, deadline=None)
def test_any_bytes_are_read_without_failing(junk: bytes, first: bool) -> None:
    steps = [("s", greeting()), ("c", handshake_response()), ("s", ok(2))]
    if first:
        steps = [("s", greeting() + junk), ("c", handshake_response() + junk)]
    steps += [("c", query(b"SELECT 1") + junk), ("s", junk + ok(1) + junk), ("c", junk), ("c-fin",)]
    for t in transactions(causal(*build(steps, mss=97))):
        assert t.protocol == "mysql"


@given(st.lists(st.binary(min_size=1, max_size=80), max_size=12), st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_any_bytes_and_gaps_given_to_a_parser_never_fail(
    chunks: list[bytes], gap_every: int
) -> None:
    from engine.bounds import Bounds
    from engine.connections import ConnectionTable
    from engine.tcp import Connection

    conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 0, False)
    out: list = []
    parser = mysql.MysqlParser(conn, out.append)
    offsets = {True: 0, False: 0}
    parser.on_data(conn, False, 0.0, 0, greeting(), NO_ACK)
    offsets[False] = len(greeting())
    for i, chunk in enumerate(chunks):
        side = bool(i % 2)
        if gap_every and i % (gap_every + 1) == gap_every:
            parser.on_gap(conn, side, 0.0, offsets[side], len(chunk), "test")
        else:
            parser.on_data(conn, side, 0.0, offsets[side], chunk, NO_ACK)
        offsets[side] += len(chunk)
    parser.on_end(conn, True, 1.0)
    parser.on_close(conn, 1.0)
    assert all(isinstance(t, Transaction) for t in out)


def test_bounds() -> None:
    from engine.bounds import Bounds
    from engine.connections import ConnectionTable
    from engine.tcp import Connection

    conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 0, False)
    out: list = []
    parser = mysql.MysqlParser(conn, out.append)
    client = handshake_response() + b"".join(query(b"SELECT %d" % i) for i in range(3000))
    parser.on_data(conn, True, 0.0, 0, client, NO_ACK)
    assert len(parser.commands) <= mysql.MAX_PENDING
    # Server bytes that answer nothing known yet are held up to HOLD, then given up.
    at = 0
    for _ in range(40):
        chunk = packet(1, b"\x01" + bytes(60_000))
        parser.on_data(conn, False, 0.0, at, chunk, NO_ACK)
        at += len(chunk)
        assert parser.server.held <= mysql.HOLD + len(chunk)
    for i in range(3000):  # prepared statements: the oldest forgotten
        parser._prepared(parser.commands[0], i)
    assert len(parser.statements) == mysql.MAX_STATEMENTS
    parser.on_close(conn, 1.0)
    assert len(out) >= 3000
    assert any(
        f"more than {mysql.MAX_PENDING:,} commands waited" in n for t in out for n in t.notes
    )


def test_a_value_of_several_packets_is_stepped_over() -> None:
    from engine.bounds import Bounds
    from engine.connections import ConnectionTable
    from engine.tcp import Connection

    payload = lstr(b"v" * (mysql.MAX_PACKET + 100))
    response = packet(1, b"\x01") + packet(2, column(b"v")) + eof(3)
    response += packet(4, payload[: mysql.MAX_PACKET]) + packet(5, payload[mysql.MAX_PACKET :])
    response += eof(6)
    conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 0, False)
    out: list = []
    parser = mysql.MysqlParser(conn, out.append)
    client = handshake_response() + query(b"SELECT v FROM big")
    parser.on_data(conn, True, 0.0, 0, client, NO_ACK)
    server = greeting() + ok(2) + response
    for at in range(0, len(server), 1 << 20):
        parser.on_data(conn, False, 1.0, at, server[at : at + (1 << 20)], NO_ACK)
        assert len(parser.server.buf) < 1 << 20
    parser.on_close(conn, 2.0)
    assert summary(out)[1] == ("SELECT v FROM big", "1 row, 1 column", "ok")
    assert out[1].response.size == len(response)


# --- a capture begun inside the connection ---------------------------------------------------

CLIENT_ISN, SERVER_ISN = 1_000_001, 3_000_000_001  # (tests.conversations: each side's offset 0)
BEGUN = f"{MIDSTREAM}: paired by the acknowledgments"
BEFORE = f"{MIDSTREAM}: these server bytes answer commands sent before it"
UNTOLD = f"{MIDSTREAM}: its response cannot be told for certain"


def on_mysql_port(steps: list[tuple], mss: int = 1460) -> tuple[list, list]:
    """`build` with the server on 3306: a connection joined midway is MySQL by its port."""
    return build(steps, mss=mss, port=3306)


def payload_size(frame: bytes) -> int:
    ip = frame[14:]
    ihl = (ip[0] & 0xF) * 4
    return int.from_bytes(ip[2:4], "big") - ihl - (ip[ihl + 12] >> 4) * 4


def sent_at(packets: list, offset: int) -> float:
    """When the segment that carried byte `offset` of a side's stream was sent."""
    at = 0
    for ts, frame in packets:
        size = payload_size(frame)
        if at <= offset < at + size:
            return ts
        at += size
    raise AssertionError(f"no byte {offset}")


def offset_of(steps: list[tuple], step: int) -> int:
    """The stream offset of a step's first byte, in its side's stream."""
    return sum(len(s[1]) for s in steps[:step] if len(s) > 1 and s[0] == steps[step][0])


def begun(
    steps: list[tuple], client: list, server: list, step: int, within: int = 0
) -> tuple[list, list]:
    """What a capture begun when byte `within` of a step was sent shows: what was sent from then."""
    ts = sent_at(client if steps[step][0] == "c" else server, offset_of(steps, step) + within)
    return [p for p in client if p[0] >= ts], [p for p in server if p[0] >= ts]


def said(txs: list[Transaction]) -> list[tuple]:
    """summary() with the notes."""
    return [(*s, t.notes) for s, t in zip(summary(txs), txs, strict=True)]


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_a_capture_begun_between_commands_pairs_from_the_first_one(deprecate_eof: bool) -> None:
    # A pool's long-lived connection: the capture begins between two commands, the login long
    # gone; each command is paired from the first one on, whatever the interleaving.
    steps = script(deprecate_eof)
    none = ("this command has no response",)
    # The step a command starts at, and its transaction in EXPECTED.
    for step, first in ((3, 1), (5, 2), (7, 3), (9, 4), (16, 8)):
        expected = [(*e, none if e[1] is None else ()) for e in EXPECTED[first:]]
        expected[0] = (*EXPECTED[first], (BEGUN,))
        for mss in (40, 1460):
            client, server = begun(steps, *on_mysql_port(steps, mss=mss), step)
            for n, packets in enumerate(interleavings(client, server, limit=25, seed=step)):
                assert said(transactions(packets, batch=1 + n % 7)) == expected, (step, mss, n)


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_statements_prepared_before_the_capture_are_said_so(deprecate_eof: bool) -> None:
    steps = script(deprecate_eof)
    client, server = begun(steps, *on_mysql_port(steps, mss=40), 11)  # the first EXECUTE
    expected = [
        ("EXECUTE #1 (prepared before the capture)", "1 row, 1 column", "ok", (BEGUN,)),
        ("EXECUTE #1 (prepared before the capture)", "1 row, 1 column", "ok", ()),
        ("CLOSE #1 (prepared before the capture)", None, "ok", ("this command has no response",)),
        (*EXPECTED[8], ()),
        (*EXPECTED[9], ()),
        ("QUIT", None, "ok", ("this command has no response",)),
    ]
    for n, packets in enumerate(interleavings(client, server, limit=30)):
        assert said(transactions(packets, batch=1 + n % 5)) == expected, n
    # The other statement commands; and one prepared after the capture began has its SQL.
    steps = [
        *script(deprecate_eof)[:3],
        ("c", command(0x18, (7).to_bytes(4, "little") + b"\0\0" + b"abc")),  # SEND_LONG_DATA
        ("c", execute(7, b"1")),
        ("s", ok(1)),
        ("c", command(0x1A, (7).to_bytes(4, "little"))),  # RESET
        ("s", ok(1)),
        ("c", command(0x1C, (7).to_bytes(4, "little") + (5).to_bytes(4, "little"))),  # FETCH
        ("s", packet(1, b"\0\0" + lstr(b"ann")) + eof(2, AUTOCOMMIT | 0x80)),
        ("c", command(0x16, b"SELECT 2")),
        ("s", prepare_ok(8, [b"2"], 0, deprecate_eof)),
        ("c", execute(8, b"")),
        ("s", result_set(1, [b"2"], [[b"2"]], deprecate_eof, binary=True)[0]),
        ("c-fin",),
    ]
    client, server = begun(steps, *on_mysql_port(steps), 3)
    expected = [
        (
            "SEND_LONG_DATA #7 param 0 (prepared before the capture)",
            None,
            "ok",
            ("this command has no response",),
        ),
        ("EXECUTE #7 (prepared before the capture)", "OK, 0 rows affected", "ok", (BEGUN,)),
        ("RESET #7 (prepared before the capture)", "OK", "ok", ()),
        ("FETCH #7 (5 rows) (prepared before the capture)", "1 row, last row sent", "ok", ()),
        ("PREPARE SELECT 2", "statement #8, 0 params, 1 column", "ok", ()),
        ("EXECUTE #8: SELECT 2", "1 row, 1 column", "ok", ()),
    ]
    for n, packets in enumerate(interleavings(client, server, limit=30)):
        assert said(transactions(packets, batch=1 + n % 5)) == expected, n


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_a_capture_begun_inside_a_result_set(deprecate_eof: bool) -> None:
    rows = [[b"%d" % i, b"x" * 100] for i in range(60)]
    big, _ = result_set(1, [b"id", b"v"], rows, deprecate_eof)
    by_id, _ = result_set(1, [b"name"], [[b"ann" * 20]] * 30, deprecate_eof, binary=True)
    steps = [
        *script(deprecate_eof)[:3],
        ("c", query(b"SELECT id, v FROM big")),
        ("s", big),
        ("c", query(b"SELECT * FROM nope")),
        ("s", err(1, 1146, b"42S02", b"Table 'shop.nope' doesn't exist")),
        ("c", execute(3, b"1")),
        ("s", by_id),
        ("c", query(b"SELECT id, v FROM big")),
        ("s", big),
        ("c", command(0x0E)),
        ("s", ok(1)),
        ("c-fin",),
    ]
    built = on_mysql_port(steps, mss=500)
    for step, within, paired in ((4, 3000, 2), (8, 700, 4), (10, 5000, 5)):
        client, server = begun(steps, *built, step, within)
        # What the server sent from the segment the capture began with to the end of that step.
        passed = (
            offset_of(steps, step)
            + len(steps[step][1])
            - sum(payload_size(f[1]) for f in built[1] if f[0] < server[0][0])
        )
        expected = [
            (None, f"{passed:,} bytes", None, (BEFORE,)),
            (
                "SELECT * FROM nope",
                "ERR 1146 (42S02): Table 'shop.nope' doesn't exist",
                "error",
                (),
            ),
            ("EXECUTE #3 (prepared before the capture)", "30 rows, 1 column", "ok", ()),
            ("SELECT id, v FROM big", "60 rows, 2 columns", "ok", ()),
            ("PING", "OK", "ok", ()),
        ]
        expected = [expected[0], *expected[paired - 1 :]]
        expected[1] = (*expected[1][:3], (BEGUN,))
        for n, packets in enumerate(interleavings(client, server, limit=30, seed=step)):
            txs = transactions(packets, batch=1 + n % 7)
            assert said(txs) == expected, (step, n)
            assert txs[0].response.ts == server[0][0] and txs[0].request is None


def test_a_capture_begun_inside_a_commands_sql() -> None:
    sql = b"SELECT id FROM users WHERE " + b" OR ".join(b"name = 'n%d'" % i for i in range(200))
    steps = [
        *script(False)[:3],
        ("c", query(sql)),
        ("s", result_set(1, [b"id"], [[b"1"], [b"2"]], False)[0]),
        ("c", query(b"DELETE FROM t")),
        ("s", ok(1, affected=3)),
        ("c-fin",),
    ]
    built = on_mysql_port(steps, mss=300)
    client, server = begun(steps, *built, 3, 1000)
    tail = offset_of(steps, 5) - sum(payload_size(f[1]) for f in built[0] if f[0] < client[0][0])
    answer = len(steps[4][1])
    expected = [
        (None, f"{answer:,} bytes", None, (BEFORE,)),
        (
            "DELETE FROM t",
            "OK, 3 rows affected",
            "ok",
            (
                f"{MIDSTREAM}: the end of a command sent before it ({tail:,} client bytes) was not read",
                BEGUN,
            ),
        ),
    ]
    for n, packets in enumerate(interleavings(client, server, limit=40)):
        assert said(transactions(packets, batch=1 + n % 5)) == expected, n


def test_pipelined_commands_after_a_capture_began() -> None:
    # MariaDB's connectors send PREPARE and EXECUTE (of statement -1: the one prepared last)
    # together: the first segment the server sent after receiving them starts the PREPARE's answer.
    steps = [
        *script(True)[:3],
        ("c", command(0x16, b"SELECT name FROM users WHERE id = ?") + execute(0xFFFFFFFF, b"1")),
        (
            "s",
            prepare_ok(3, [b"name"], 1, True)
            + result_set(1, [b"name"], [[b"ann"]], True, binary=True)[0],
        ),
        ("c", query(b"SELECT 1") + query(b"SELECT 2") + query(b"SELECT 3")),
        ("s", ok(1) + result_set(1, [b"2"], [[b"2"]], True)[0] + err(1, 1064, b"42000", b"syntax")),
        ("c", command(0x0E)),
        ("s", ok(1)),
        ("c-fin",),
    ]
    expected = [
        (
            "PREPARE SELECT name FROM users WHERE id = ?",
            "statement #3, 1 param, 1 column",
            "ok",
            (BEGUN,),
        ),
        ("EXECUTE #3: SELECT name FROM users WHERE id = ?", "1 row, 1 column", "ok", ()),
        ("SELECT 1", "OK, 0 rows affected", "ok", ()),
        ("SELECT 2", "1 row, 1 column", "ok", ()),
        ("SELECT 3", "ERR 1064 (42000): syntax", "error", ()),
        ("PING", "OK", "ok", ()),
    ]
    built = on_mysql_port(steps)
    client, server = begun(steps, *built, 3)
    for n, packets in enumerate(interleavings(client, server, limit=30)):
        assert said(transactions(packets, batch=1 + n % 5)) == expected, n
    # Begun inside the batch of three: the two sent with the first cannot be told from it.
    built = on_mysql_port(steps, mss=9)
    client, server = begun(steps, *built, 5, 9)
    expected = [  # (the answers to the three came after the server had received them all)
        (
            "SELECT 2",
            None,
            None,
            (
                f"{MIDSTREAM}: the end of a command sent before it (4 client bytes) was not read",
                UNTOLD,
            ),
        ),
        ("SELECT 3", None, None, (UNTOLD,)),
        (
            "PING",
            "OK",
            "ok",
            (
                f"{MIDSTREAM}: {len(steps[6][1]):,} server bytes before its response"
                " were passed over; paired by the acknowledgments",
            ),
        ),
    ]
    for n, packets in enumerate(interleavings(client, server, limit=30)):
        assert said(transactions(packets, batch=1 + n % 5)) == expected, n


def test_a_capture_begun_just_after_the_handshake_or_before_the_login() -> None:
    steps = script(False)
    built = on_mysql_port(steps)
    client, server = begun(steps, *built, 0)  # the greeting: the whole conversation
    for n, packets in enumerate(interleavings(client, server, limit=20)):
        assert summary(transactions(packets, batch=1 + n % 5)) == EXPECTED, n
    client, server = begun(steps, *built, 1)  # the login, without the greeting
    expected = [("login user=app db=shop auth=mysql_native_password", "OK", "ok"), *EXPECTED[1:]]
    for n, packets in enumerate(interleavings(client, server, limit=20)):
        txs = transactions(packets, batch=1 + n % 5)
        assert summary(txs) == expected, n
        assert txs[0].notes == (BEGUN,)


def test_only_the_servers_side_captured() -> None:
    rows = [[b"%d" % i, b"x" * 100] for i in range(60)]
    big, _ = result_set(1, [b"id", b"v"], rows, False)
    steps = [*script(False)[:3], ("c", query(b"SELECT id, v FROM big")), ("s", big), ("c-fin",)]
    _, server = begun(steps, *on_mysql_port(steps, mss=500), 4, 2000)
    passed = sum(payload_size(f[1]) for f in server)
    [tx] = transactions(causal([], server))
    assert said([tx]) == [(None, f"{passed:,} bytes", None, (BEFORE,))]


def tls_record(size: int, seed: int) -> bytes:
    return (
        b"\x17\x03\x03"
        + size.to_bytes(2, "big")
        + bytes((i * 37 + seed) % 256 for i in range(size))
    )


def compressed(seq: int, payload: bytes, deflate: bool = False) -> bytes:
    """A packet of the compressed protocol: as is, or deflated (its length once inflated)."""
    if deflate:
        data = zlib.compress(payload)
        return (
            len(data).to_bytes(3, "little")
            + bytes([seq])
            + len(payload).to_bytes(3, "little")
            + data
        )
    return len(payload).to_bytes(3, "little") + bytes([seq]) + bytes(3) + payload


def test_tls_or_compression_from_before_the_capture_is_not_read() -> None:
    rows, _ = result_set(1, [b"id", b"name"], [[b"%d" % i, b"n" * 30] for i in range(20)], False)
    tls = [
        ("c", tls_record(60, 1)),
        ("s", tls_record(300, 2)),
        ("c", tls_record(45, 3)),
        ("s", tls_record(40, 4) + tls_record(90, 5)),
    ]
    packed = [
        ("c", compressed(0, query(b"SELECT 1"))),
        ("s", compressed(1, ok(1))),
        ("c", compressed(0, query(b"SELECT id, name FROM users"))),
        ("s", compressed(1, rows, True)),
        ("c", compressed(0, query(b"SELECT " + b"a, " * 40 + b"b"), True)),
        ("s", compressed(1, ok(1))),
    ]
    notes = {
        "TLS records": f"{MIDSTREAM}: its bytes are TLS records (negotiated before): they are not read",
        "compressed packets": f"{MIDSTREAM}: its packets are compressed (CLIENT_COMPRESS, negotiated at"
        " the login before): they are not read",
    }
    for what, talk in (("TLS records", tls), ("compressed packets", packed)):
        for start in range(len(talk) - 1):
            steps = [*script(False)[:3], *talk, ("c-fin",)]
            client, server = begun(steps, *on_mysql_port(steps), 3 + start)
            for n, packets in enumerate(interleavings(client, server, limit=15)):
                [tx] = transactions(packets, batch=1 + n % 3)
                assert (tx.request_summary or tx.response_summary, tx.status) == (what, None), n
                assert tx.notes == (notes[what],)
                assert (tx.request is None) != (tx.response is None)


def test_bytes_that_do_not_frame_as_mysql_packets_are_not_read() -> None:
    # Each segment starts like a command, but what follows it does not frame as one.
    junk = b"".join(query(b"SELECT %d" % i) + b"\x05\x00\x00\x00\x63" + bytes(20) for i in range(6))
    steps = [*script(False)[:3], ("c", junk), ("s", ok(1)), ("c-fin",)]
    client, server = begun(steps, *on_mysql_port(steps, mss=len(junk) // 6), 3)
    for n, packets in enumerate(interleavings(client, server, limit=10)):
        [tx] = transactions(packets, batch=1 + n % 3)
        assert tx.request_summary == "not MySQL packets" and tx.response is None
        assert tx.notes == (
            f"{MIDSTREAM}: its bytes do not frame as plain MySQL packets (compressed"
            " or TLS, negotiated before?): they are not read",
        )


class Sides:
    """A parser fed directly, each side's bytes acknowledging all that the other side sent."""

    def __init__(self, midstream: bool = True) -> None:
        from engine.bounds import Bounds
        from engine.connections import ConnectionTable
        from engine.tcp import Connection

        self.conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 0, False)
        self.conn.client.base, self.conn.server.base = CLIENT_ISN, SERVER_ISN
        self.out: list = []
        self.parser = mysql.MysqlParser(self.conn, self.out.append)
        self.sent = {True: 0, False: 0}
        self.ts = 0.0
        if midstream:
            for side in (True, False):
                self.parser.on_gap(self.conn, side, 0.0, 0, 0, MIDSTREAM)

    def send(self, from_client: bool, data: bytes, ack: bool = True) -> None:
        if not data:
            return
        self.ts += 0.001
        peer = SERVER_ISN if from_client else CLIENT_ISN
        number = (peer + self.sent[not from_client]) & 0xFFFFFFFF if ack else NO_ACK
        self.parser.on_data(self.conn, from_client, self.ts, self.sent[from_client], data, number)
        self.sent[from_client] += len(data)

    def close(self) -> list[Transaction]:
        self.parser.on_end(self.conn, True, self.ts)
        self.parser.on_end(self.conn, False, self.ts)
        self.parser.on_close(self.conn, self.ts)
        return self.out


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_the_eof_mode_is_told_by_what_the_server_sends(deprecate_eof: bool) -> None:
    sides = Sides()
    sides.send(True, query(b"SELECT 1"))
    sides.send(False, result_set(1, [b"1"], [[b"1"]], deprecate_eof)[0])
    assert sides.parser.deprecate_eof is deprecate_eof
    # A prepared statement's definitions then end with or without an EOF, as told: the PREPARE
    # is complete at once, not when the next packet comes.
    sides.send(True, command(0x16, b"SELECT name FROM users"))
    sides.send(False, prepare_ok(4, [b"name"], 0, deprecate_eof))
    assert summary(sides.out) == [
        ("SELECT 1", "1 row, 1 column", "ok"),
        ("PREPARE SELECT name FROM users", "statement #4, 0 params, 1 column", "ok"),
    ]
    # Without a result set before, the next packet tells.
    sides = Sides()
    sides.send(True, command(0x16, b"SELECT name FROM users"))
    sides.send(False, prepare_ok(4, [b"name"], 0, deprecate_eof))
    if deprecate_eof:
        assert sides.out == []  # (an EOF may follow)
    sides.send(True, execute(4, b""))
    sides.send(False, result_set(1, [b"name"], [[b"ann"]], deprecate_eof, binary=True)[0])
    assert summary(sides.close()) == [
        ("PREPARE SELECT name FROM users", "statement #4, 0 params, 1 column", "ok"),
        ("EXECUTE #4: SELECT name FROM users", "1 row, 1 column", "ok"),
    ]
    assert sides.parser.deprecate_eof is deprecate_eof


def test_a_long_response_before_the_clients_first_byte() -> None:
    # Inside a long result set the client sends nothing: the server's bytes cannot be placed
    # against the client's stream until its first byte; past HOLD they are passed over.
    sides = Sides()
    sides.conn.client.base = None  # (the connection table knows it from the client's first byte)
    row = packet(5, lstr(b"v" * 60_000))
    for _ in range(40):
        sides.send(False, row)
        assert sides.parser.server.held <= mysql.HOLD + len(row)
    sides.send(False, eof(6))
    sides.conn.client.base = CLIENT_ISN
    sides.send(True, query(b"SELECT 2"))
    sides.send(False, ok(1))
    txs = sides.close()
    passed = 40 * len(row) + len(eof(6))
    assert said(txs) == [
        (
            None,
            f"{passed:,} bytes",
            None,
            (
                f"{BEFORE} (those more than {mysql.HOLD // 1024:,} KiB ahead of the client's, unchecked)",
            ),
        ),
        ("SELECT 2", "OK, 0 rows affected", "ok", (BEGUN,)),
    ]


def test_random_conversations_cut_at_random_points_pair_only_true_pairs() -> None:
    """Random conversations of a client that waits for its answers (but for PREPARE+EXECUTE
    and batches of queries sent together), captured from a random packet on, in a random
    interleaving and segmentation: every pair is a true pair (the one a capture of the whole
    conversation makes), every command sent after the capture began is paired, and what is not
    paired says that the capture began inside the connection."""
    rng = random.Random(20240611)

    def words(t: Transaction) -> tuple:
        # A statement prepared before the capture has no SQL; a greeting not seen, no version.
        request = (
            (t.request_summary or "").split(":")[0].removesuffix(" (prepared before the capture)")
        )
        response = (t.response_summary or "").split(" (server")[0]
        return (
            t.request.ts,
            t.request.size,
            request,
            t.response.ts,
            t.response.size,
            response,
            t.status,
        )

    for case in range(120):
        deprecate_eof = rng.random() < 0.5
        steps = random_conversation(rng, deprecate_eof)
        client, server = on_mysql_port(steps, mss=rng.choice([40, 97, 300, 1460]))
        whole = transactions(causal(client, server))
        pairs = {words(t) for t in whole if t.request and t.response}
        cut = rng.choice(causal(client, server)[3:])[0]
        late = [p for p in client if p[0] >= cut], [p for p in server if p[0] >= cut]
        orders = list(interleavings(*late, limit=4, seed=case))
        txs = transactions(rng.choice(orders), batch=rng.randint(1, 7))
        for t in txs:
            if t.request and t.response:
                assert words(t) in pairs, (case, t)
            elif "this command has no response" not in t.notes:
                assert any(n.startswith(MIDSTREAM) for n in t.notes), (case, t)
                assert not any("not captured" in n for n in t.notes), (case, t)
        # Every command of a step sent after the capture began is paired.
        starts = sorted(
            sent_at(client, offset_of(steps, i)) for i, s in enumerate(steps) if s[0] == "c"
        )
        paired = {(t.request.ts, t.request.size) for t in txs if t.request and t.response}
        for t in whole:
            if t.request and t.response and t.request.ts >= cut:
                step_start = max(s for s in starts if s <= t.request.ts)
                if step_start >= cut:
                    assert (t.request.ts, t.request.size) in paired, (case, t)


def random_conversation(rng: random.Random, deprecate_eof: bool) -> list[tuple]:
    caps = CLIENT | (DEPRECATE_EOF if deprecate_eof else 0)
    steps: list[tuple] = [("s", greeting()), ("c", handshake_response(caps=caps)), ("s", ok(2))]
    statement, live = 0, []
    for _ in range(rng.randint(3, 10)):
        kind = rng.choice(
            [
                "ok",
                "err",
                "rows",
                "rows",
                "sql",
                "prepare",
                "execute",
                "close",
                "ping",
                "pipelined",
                "call",
                "batch",
            ]
        )
        if kind == "ok":
            steps += [
                ("c", query(b"UPDATE t SET a = %d" % rng.randint(0, 99))),
                ("s", ok(1, affected=rng.randint(0, 5))),
            ]
        elif kind == "err":
            steps += [
                ("c", query(b"SELECT * FROM nope")),
                ("s", err(1, 1146, b"42S02", b"no such table")),
            ]
        elif kind in ("rows", "sql"):
            names = [b"c%d" % i for i in range(rng.randint(1, 3))]
            rows = [[b"v" * rng.randint(0, 300) for _ in names] for _ in range(rng.randint(0, 40))]
            sql = b"SELECT " + b", ".join(names) + b" FROM t"
            if kind == "sql":  # over several segments
                sql += b" WHERE " + b" OR ".join(
                    b"c0 = 'x%d'" % i for i in range(rng.randint(50, 300))
                )
            steps += [("c", query(sql)), ("s", result_set(1, names, rows, deprecate_eof)[0])]
        elif kind == "prepare":
            statement += 1
            live.append(statement)
            steps += [
                ("c", command(0x16, b"SELECT a FROM t WHERE id = ? /* %d */" % statement)),
                ("s", prepare_ok(statement, [b"a"], 1, deprecate_eof)),
            ]
        elif kind == "execute" and live:
            rows = [[b"x"]] * rng.randint(0, 3)
            steps += [
                ("c", execute(rng.choice(live), b"%d" % rng.randint(0, 9))),
                ("s", result_set(1, [b"a"], rows, deprecate_eof, binary=True)[0]),
            ]
        elif kind == "close" and live:
            steps += [
                ("c", command(0x19, live.pop(rng.randrange(len(live))).to_bytes(4, "little")))
            ]
        elif kind == "ping":
            steps += [("c", command(0x0E)), ("s", ok(1))]
        elif kind == "pipelined":
            statement += 1
            live.append(statement)
            sql = b"SELECT b FROM t WHERE id = ? /* %d */" % statement
            answer = result_set(1, [b"b"], [[b"y"]], deprecate_eof, binary=True)[0]
            steps += [
                ("c", command(0x16, sql) + execute(0xFFFFFFFF, b"1")),
                ("s", prepare_ok(statement, [b"b"], 1, deprecate_eof) + answer),
            ]
        elif kind == "call":
            first, seq = result_set(
                1, [b"n"], [[b"1"]], deprecate_eof, status=AUTOCOMMIT | MORE_RESULTS
            )
            steps += [("c", query(b"CALL p()")), ("s", first + ok(seq))]
        elif kind == "batch":
            count = rng.randint(2, 4)
            answers = [
                ok(1),
                result_set(1, [b"x"], [[b"1"]] * rng.randint(0, 5), deprecate_eof)[0],
                err(1, 1064, b"42000", b"syntax"),
            ]
            steps += [
                ("c", b"".join(query(b"SELECT %d" % rng.randint(0, 99)) for _ in range(count))),
                ("s", b"".join(rng.choice(answers) for _ in range(count))),
            ]
    return [*steps, ("c", command(0x01)), ("c-fin",)]


PIECES = [
    query(b"SELECT 1"),
    command(0x16, b"SELECT ?"),
    execute(7, b"1"),
    command(0x19, bytes(4)),
    command(0x0E),
    ok(1),
    err(1, 1064, b"42000", b"syntax"),
    eof(3),
    prepare_ok(7, [b"a"], 1, False),
    result_set(1, [b"a"], [[b"x"]], False)[0],
    result_set(1, [b"a"], [[b"x"]], True)[0],
    tls_record(40, 1),
    compressed(0, query(b"SELECT 1")),
]


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.binary(min_size=1, max_size=80), st.sampled_from(PIECES)),
            st.integers(0, 5),
            st.integers(0, 100),
        ),
        max_size=16,
    )
)
@settings(max_examples=400, deadline=None)
def test_any_bytes_after_a_capture_began_never_fail(
    chunks: list[tuple[bool, bytes, int, int]],
) -> None:
    sides = Sides()
    for from_client, data, how, cut in chunks:
        if how == 0:  # bytes not captured
            sides.parser.on_gap(
                sides.conn, from_client, sides.ts, sides.sent[from_client], len(data), "test"
            )
            sides.sent[from_client] += len(data)
        elif how == 1:  # told again, or an empty gap elsewhere: nothing is lost
            sides.parser.on_gap(
                sides.conn, from_client, sides.ts, sides.sent[from_client], 0, MIDSTREAM
            )
            sides.send(from_client, data)
        elif how == 2:  # a segment's bytes without an acknowledgment
            sides.send(from_client, data, ack=False)
        elif how == 3:  # in two segments
            sides.send(from_client, data[:cut])
            sides.send(from_client, data[cut:])
        else:
            sides.send(from_client, data)
    for t in sides.close():
        assert isinstance(t, Transaction) and t.protocol == "mysql"


# --- detection -------------------------------------------------------------------------------


def test_detection() -> None:
    hello = greeting()
    assert mysql.greeting_start(hello) is True
    assert mysql.greeting_start(greeting(b"8.0.36")) is True
    assert all(mysql.greeting_start(hello[:n]) is None for n in range(0, 20))
    assert mysql.greeting_start(b"HTTP/1.1 200 OK\r\n") is False
    assert mysql.greeting_start(b"SSH-2.0-OpenSSH_9.2\r\n") is False
    assert mysql.greeting_start(b"\0\0\x12\x04\0\0\0\0\0") is False  # an HTTP/2 SETTINGS frame
    refused = packet(
        0,
        b"\xff"
        + (1130).to_bytes(2, "little")
        + b"Host '10.1.0.1' is not allowed to connect to this MariaDB server",
    )
    assert mysql.greeting_start(refused) is True
    response = handshake_response()
    assert mysql.handshake_response_start(response) is True
    assert all(mysql.handshake_response_start(response[:n]) is None for n in range(0, 32))
    assert mysql.handshake_response_start(b"GET / HTTP/1.1\r\n") is False
    assert mysql.handshake_response_start(query(b"SELECT 1")) is False

    def sniff(*chunks: tuple[bool, bytes]) -> str | None:
        sniffer = Sniffer()
        decided = None
        for from_client, data in chunks:
            decided = decided or sniffer.add(from_client, 0.0, 0, data, NO_ACK)
        return decided or sniffer.ended(True) or sniffer.ended(False)

    # The greeting decides when the client's bytes say nothing known, whichever came first.
    other = b"\x99\x00\x00\x01" + bytes(40)
    assert sniff((False, hello), (True, other)) == "mysql"
    assert sniff((True, other), (False, hello)) == "mysql"
    assert sniff((False, hello)) == "mysql"  # a client that never logged in
    assert sniff((True, response)) == "mysql"  # the greeting not seen
    assert sniff((False, b"SSH-2.0-x\r\n"), (True, b"SSH-2.0-y\r\n")) == NOTHING

    infos = []
    pipeline = Pipeline()
    steps = script(False)[:4]
    for e in pipeline.feed(Batch.from_packets(1, causal(*build(steps)))) + pipeline.finish():
        if isinstance(e, ConnectionClosed):
            infos.append(e.info)
    assert [i.protocol for i in infos] == ["mysql"]


def test_a_greeting_alone_and_a_refused_connection() -> None:
    [tx] = transactions(causal(*build([("s", greeting()), ("s-fin",)])))
    assert (tx.request, tx.response_summary, tx.notes) == (
        None,
        "greeting (server 10.11.6-MariaDB)",
        ("the client sent no login",),
    )
    refused = packet(0, b"\xff" + (1040).to_bytes(2, "little") + b"Too many connections")
    [tx] = transactions(causal(*build([("s", refused), ("s-fin",)])))
    assert (
        tx.request is None and tx.status == "error" and tx.error == "ERR 1040: Too many connections"
    )


def test_transaction_records() -> None:
    from engine import ecs
    from engine.records import Flow, line, transaction_record

    flow = Flow("10.1.0.1:43210", "10.1.0.2:3306", "1:x")
    txs = transactions(causal(*build(script(True))))
    records = [json.loads(line(transaction_record(t, flow))) for t in txs]
    error = records[3]
    assert error["protocol"] == "mysql" and error["status"] == "error"
    assert error["request"]["summary"] == "SELECT * FROM nope"
    assert ecs.record(error)["event"]["dataset"] == "wirepeek.mysql"


# --- a real server ---------------------------------------------------------------------------

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")
MARIADB = shutil.which("mariadb")  # the command-line client, to create the user and the table


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.skipif(
    MARIADBD is None or INSTALL_DB is None or MARIADB is None,
    reason="MariaDB is not installed (Debian: mariadb-server)",
)
def test_a_real_server_and_client(tmp_path: Path) -> None:
    connector = pytest.importorskip(
        "mysql.connector", reason="mysql-connector-python is not installed"
    )
    port = _free_port()
    # Its own instance, as the package's mysql user, in a directory that user owns (pytest's
    # tmp_path is not open to other users).
    base = Path(tempfile.mkdtemp(prefix="wirepeek-mariadb-"))
    data, sock = base / "data", base / "sock"
    user = "mysql" if _has_user("mysql") else "root"
    shutil.chown(base, user, user)
    err = tmp_path / "err"
    server = capture = None
    try:
        install = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={data}",
                f"--user={user}",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
                "--skip-name-resolve",
            ],
            capture_output=True,
            timeout=60,
        )
        assert install.returncode == 0, install.stderr.decode()[-2000:]
        server = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={data}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--socket={sock}",
                f"--user={user}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                f"--pid-file={base / 'pid'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "server.log").open("wb"),
        )
        for _ in range(200):
            if sock.exists():
                break
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.05)
        setup = (
            b"CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'secret';"
            b"GRANT ALL ON shop.* TO 'app'@'127.0.0.1';"
            b"CREATE TABLE shop.users (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(20));"
            b"INSERT INTO shop.users (name) VALUES ('ann'), ('bob'), ('cy');"
        )
        done = subprocess.run(
            [MARIADB, "--no-defaults", f"--socket={sock}", "-uroot"],
            input=setup,
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode()
        capture = json_capture(f"tcp port {port}", err, 4)
        wait_capturing(capture, err)
        db = connector.connect(
            host="127.0.0.1",
            port=port,
            user="app",
            password="secret",
            database="shop",
            ssl_disabled=True,
            use_pure=True,
        )
        cursor = db.cursor()
        cursor.execute("SELECT id, name FROM users ORDER BY id")
        assert len(cursor.fetchall()) == 3
        cursor.execute("INSERT INTO users (name) VALUES ('dee')")
        db.commit()
        with pytest.raises(connector.Error):
            cursor.execute("SELECT * FROM nope")
        prepared = db.cursor(prepared=True)
        for key in (1, 2):
            prepared.execute("SELECT name FROM users WHERE id = ?", (key,))
            assert len(prepared.fetchall()) == 1
        prepared.close()
        db.close()
        with pytest.raises(connector.Error):
            connector.connect(
                host="127.0.0.1",
                port=port,
                user="app",
                password="wrong",
                ssl_disabled=True,
                use_pure=True,
            )
        out, _ = capture.communicate(timeout=30)
    finally:
        if capture is not None:
            capture.kill()
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)
    records = [json.loads(line) for line in out.splitlines()]
    txs = [r for r in records if r["type"] == "transaction"]
    assert txs and all(r["protocol"] == "mysql" for r in txs)
    said = [
        (
            r["request"] and r["request"]["summary"],
            r["response"] and r["response"]["summary"],
            r["status"],
        )
        for r in txs
    ]
    logins = [s for s in said if s[0] and s[0].startswith("login user=app")]
    assert len(logins) == 2, said
    assert (
        logins[0][2] == "ok"
        and logins[0][1].startswith("OK (server ")
        and "MariaDB" in logins[0][1]
    )
    assert logins[0][0].startswith("login user=app db=shop auth=")
    assert logins[1][2] == "error" and logins[1][1].startswith("ERR 1045 (28000): Access denied")
    assert ("SELECT id, name FROM users ORDER BY id", "3 rows, 2 columns", "ok") in said
    assert (
        "INSERT INTO users (name) VALUES ('dee')",
        "OK, 1 row affected, last insert id 4",
        "ok",
    ) in said
    assert (
        "SELECT * FROM nope",
        "ERR 1146 (42S02): Table 'shop.nope' doesn't exist",
        "error",
    ) in said
    prepares = [s for s in said if s[0] == "PREPARE SELECT name FROM users WHERE id = ?"]
    assert (
        len(prepares) == 1 and prepares[0][1].startswith("statement #") and prepares[0][2] == "ok"
    )
    statement = prepares[0][1].split(",")[0].removeprefix("statement ")
    executes = [
        s for s in said if s[0] == f"EXECUTE {statement}: SELECT name FROM users WHERE id = ?"
    ]
    assert [s[1:] for s in executes] == [("1 row, 1 column", "ok")] * 2, said
    connections = [r for r in records if r["type"] == "connection"]
    assert {r["protocol"] for r in connections} == {"mysql"}
    assert not [r for r in txs if r.get("notes") and any("not captured" in n for n in r["notes"])]
