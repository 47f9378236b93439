"""MySQL transactions (engine.mysql): generated conversations in every interleaving and
segmentation, a failed login, TLS, lost bytes on either side, fuzzed bytes, detection; and a real
MariaDB server driven by mysql-connector-python, captured live."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
from tests.conversations import build, causal, interleavings, summary, transactions

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


def handshake_response(user: bytes = b"app", db: bytes | None = b"shop", caps: int = CLIENT,
                       plugin: bytes = b"mysql_native_password", attrs: bytes = b"") -> bytes:
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


def ok(seq: int, affected: int = 0, insert_id: int = 0, status: int = AUTOCOMMIT, warnings: int = 0,
       header: int = 0) -> bytes:
    payload = bytes([header]) + lenenc(affected) + lenenc(insert_id)
    return packet(seq, payload + status.to_bytes(2, "little") + warnings.to_bytes(2, "little"))


def err(seq: int, code: int, state: bytes, message: bytes) -> bytes:
    return packet(seq, b"\xff" + code.to_bytes(2, "little") + b"#" + state + message)


def eof(seq: int, status: int = AUTOCOMMIT) -> bytes:
    return packet(seq, b"\xfe\0\0" + status.to_bytes(2, "little"))


def column(name: bytes, table: bytes = b"users") -> bytes:
    return (lstr(b"def") + lstr(b"shop") + lstr(table) + lstr(table) + lstr(name) + lstr(name)
            + b"\x0c" + b"\x2d\0" + (255).to_bytes(4, "little") + b"\xfd" + b"\0\0" + b"\0" + b"\0\0")


def result_set(seq: int, names: list[bytes], rows: list[list[bytes]], deprecate_eof: bool,
               status: int = AUTOCOMMIT, binary: bool = False) -> tuple[bytes, int]:
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
    out = packet(seq, b"\0" + statement.to_bytes(4, "little") + len(columns).to_bytes(2, "little")
                 + params.to_bytes(2, "little") + b"\0" + b"\0\0")
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
    users, _ = result_set(1, [b"id", b"name"], [[b"1", b"ann"], [b"2", b"bob"], [b"3", b"cy"]],
                          deprecate_eof)
    by_id, _ = result_set(1, [b"name"], [[b"ann"]], deprecate_eof, binary=True)
    first, seq = result_set(1, [b"n"], [[b"1"], [b"2"]], deprecate_eof,
                            status=AUTOCOMMIT | MORE_RESULTS)
    second, seq = result_set(seq, [b"a", b"b"], [[b"x", b"y"]], deprecate_eof,
                             status=AUTOCOMMIT | MORE_RESULTS)
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
    (f"CLOSE #1: {SQL_BY_ID}", None, None),
    ("CALL report()", "2 rows, 1 column; 1 row, 2 columns; OK, 0 rows affected", "ok"),
    ("PING", "OK", "ok"),
    ("QUIT", None, None),
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
        ("s", err(2, 1045, b"28000", b"Access denied for user 'app'@'10.1.0.1' (using password: YES)")),
        ("s-fin",),
    ]
    [tx] = transactions(causal(*build(steps)))
    assert tx.request_summary == "login user=app auth=caching_sha2_password"
    assert tx.status == "error"
    assert tx.error == tx.response_summary == (
        "ERR 1045 (28000): Access denied for user 'app'@'10.1.0.1' (using password: YES)")
    assert "server 8.0.36" in tx.notes


def test_an_auth_switch_and_caching_sha2_fast_auth_are_one_login() -> None:
    steps = [
        ("s", greeting(b"8.0.36")),
        ("c", handshake_response(plugin=b"caching_sha2_password")),
        ("s", packet(2, b"\xfe" + b"mysql_native_password\0" + b"0123456789abcdefghij\0")),  # switch
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
    ssl_request = packet(1, (CLIENT | SSL).to_bytes(4, "little") + (1 << 24).to_bytes(4, "little")
                         + b"\x2d" + bytes(23))
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
    assert any("paired by acknowledgment" in n for n in txs[2].notes)


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
    assert any("paired by acknowledgment" in n for n in after.notes)


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
        ("c", command(0x11, b"bob\0" + lstr(bytes(20)) + b"shop\0" + b"\x2d\0"
                      + b"mysql_native_password\0")),
        ("s", ok(1)),
        ("s", err(0, 4031, b"HY000", b"The client was disconnected by the server because of inactivity")),
        ("s-fin",),
    ]
    expected = [
        ("login user=app db=shop auth=mysql_native_password", "OK (server 10.11.6-MariaDB)", "ok"),
        ("LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t",
         "LOCAL INFILE '/tmp/x.csv'; OK, 51 rows affected", "ok"),
        ("INIT_DB other", "OK", "ok"),
        ("FIELD_LIST users", "2 columns", "ok"),
        ("STATISTICS", "Uptime: 5 Threads: 1 Questions: 9", "ok"),
        ("SET_OPTION MULTI_STATEMENTS_ON", "OK", "ok"),
        ("PREPARE SELECT name FROM users", "statement #1, 0 params, 1 column", "ok"),
        ("EXECUTE #1: SELECT name FROM users", "cursor, 1 column", "ok"),
        ("FETCH #1 (10 rows): SELECT name FROM users", "2 rows, last row sent", "ok"),
        ("CHANGE_USER user=bob db=shop", "OK (server 10.11.6-MariaDB)", "ok"),
        (None, "ERR 4031 (HY000): The client was disconnected by the server because of inactivity",
         "error"),
    ]
    client, server = build(steps, mss=23)
    for n, packets in enumerate(interleavings(client, server, limit=20)):
        txs = transactions(packets, batch=1 + n % 5)
        assert summary(txs) == expected, n
        load = txs[1]
        assert "the server asked for the client's file '/tmp/x.csv'" in load.notes
        assert "the client sent 306 bytes of the file" in load.notes
        assert load.request.size == len(steps[3][1]) + len(steps[5][1])
        assert txs[-1].notes == ("it answers no command seen (sent before the capture started, or unasked)",)


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
        ("login user=app db=shop auth=mysql_native_password", "OK (server 10.11.6-MariaDB)", "ok")]
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
def test_any_bytes_and_gaps_given_to_a_parser_never_fail(chunks: list[bytes], gap_every: int) -> None:
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
    assert any(f"more than {mysql.MAX_PENDING:,} commands waited" in n for t in out for n in t.notes)


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


# --- detection -------------------------------------------------------------------------------


def test_detection() -> None:
    hello = greeting()
    assert mysql.greeting_start(hello) is True
    assert mysql.greeting_start(greeting(b"8.0.36")) is True
    assert all(mysql.greeting_start(hello[:n]) is None for n in range(0, 20))
    assert mysql.greeting_start(b"HTTP/1.1 200 OK\r\n") is False
    assert mysql.greeting_start(b"SSH-2.0-OpenSSH_9.2\r\n") is False
    assert mysql.greeting_start(b"\0\0\x12\x04\0\0\0\0\0") is False  # an HTTP/2 SETTINGS frame
    refused = packet(0, b"\xff" + (1130).to_bytes(2, "little")
                     + b"Host '10.1.0.1' is not allowed to connect to this MariaDB server")
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
        None, "greeting (server 10.11.6-MariaDB)", ("the client sent no login",))
    refused = packet(0, b"\xff" + (1040).to_bytes(2, "little") + b"Too many connections")
    [tx] = transactions(causal(*build([("s", refused), ("s-fin",)])))
    assert tx.request is None and tx.status == "error" and tx.error == "ERR 1040: Too many connections"


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
@pytest.mark.skipif(MARIADBD is None or INSTALL_DB is None or MARIADB is None,
                    reason="MariaDB is not installed (Debian: mariadb-server)")
def test_a_real_server_and_client(tmp_path: Path) -> None:
    connector = pytest.importorskip("mysql.connector", reason="mysql-connector-python is not installed")
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
            [INSTALL_DB, "--no-defaults", f"--datadir={data}", f"--user={user}", "--skip-test-db",
             "--auth-root-authentication-method=socket", "--skip-name-resolve"],
            capture_output=True, timeout=60)
        assert install.returncode == 0, install.stderr.decode()[-2000:]
        server = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
             f"--socket={sock}", f"--user={user}", "--skip-name-resolve", "--skip-log-bin",
             "--innodb-buffer-pool-size=16M", f"--pid-file={base / 'pid'}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("wb"))
        for _ in range(200):
            if sock.exists():
                break
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.05)
        setup = (b"CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'secret';"
                 b"GRANT ALL ON shop.* TO 'app'@'127.0.0.1';"
                 b"CREATE TABLE shop.users (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(20));"
                 b"INSERT INTO shop.users (name) VALUES ('ann'), ('bob'), ('cy');")
        done = subprocess.run([MARIADB, "--no-defaults", f"--socket={sock}", "-uroot"], input=setup,
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()
        capture = subprocess.Popen([sys.executable, "-m", "tui.cli", "-i", "lo", "--json", "--duration", "4",
                                    f"tcp port {port}"], stdout=subprocess.PIPE, stderr=err.open("wb"), cwd=ROOT)
        while b"capturing on lo" not in err.read_bytes():
            assert capture.poll() is None, err.read_text()
            time.sleep(0.05)
        db = connector.connect(host="127.0.0.1", port=port, user="app", password="secret", database="shop",
                               ssl_disabled=True, use_pure=True)
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
            connector.connect(host="127.0.0.1", port=port, user="app", password="wrong", ssl_disabled=True,
                              use_pure=True)
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
    said = [(r["request"] and r["request"]["summary"], r["response"] and r["response"]["summary"], r["status"])
            for r in txs]
    logins = [s for s in said if s[0] and s[0].startswith("login user=app")]
    assert len(logins) == 2, said
    assert logins[0][2] == "ok" and logins[0][1].startswith("OK (server ") and "MariaDB" in logins[0][1]
    assert logins[0][0].startswith("login user=app db=shop auth=")
    assert logins[1][2] == "error" and logins[1][1].startswith("ERR 1045 (28000): Access denied")
    assert ("SELECT id, name FROM users ORDER BY id", "3 rows, 2 columns", "ok") in said
    assert ("INSERT INTO users (name) VALUES ('dee')", "OK, 1 row affected, last insert id 4", "ok") in said
    assert ("SELECT * FROM nope", "ERR 1146 (42S02): Table 'shop.nope' doesn't exist", "error") in said
    prepares = [s for s in said if s[0] == "PREPARE SELECT name FROM users WHERE id = ?"]
    assert len(prepares) == 1 and prepares[0][1].startswith("statement #") and prepares[0][2] == "ok"
    statement = prepares[0][1].split(",")[0].removeprefix("statement ")
    executes = [s for s in said if s[0] == f"EXECUTE {statement}: SELECT name FROM users WHERE id = ?"]
    assert [s[1:] for s in executes] == [("1 row, 1 column", "ok")] * 2, said
    connections = [r for r in records if r["type"] == "connection"]
    assert {r["protocol"] for r in connections} == {"mysql"}
    assert not [r for r in txs if r.get("notes") and any("not captured" in n for n in r["notes"])]
