"""TLS decryption with a key log (engine.keylog, engine.tlsdecrypt): real sessions made by
OpenSSL through Python's ssl module (tests.tls_sessions), for every suite wirepeek reads, become
captures; with the client's key log, their HTTP exchanges come out byte for byte as they were
sent, whatever the order between the directions and however the segments were cut. Without the
right keys, the connection says why."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from engine.batch import Batch
from engine.events import ConnectionClosed, Event, HttpTransaction
from engine.keylog import CLIENT_RANDOM, SERVER_TRAFFIC_0, KeyLog
from engine.pipeline import Pipeline
from engine.tlsdecrypt import DECRYPTED, NO_KEYS, SUITES, hkdf_expand_label
from tests.tls_sessions import Session, session

BODIES = (0, 1, 1000, 20_000, 70_000)  # the last two take several records


def exchanges() -> list[tuple[bytes, bytes]]:
    out = []
    for i, size in enumerate(BODIES):
        body = bytes((i * 7 + j) % 251 for j in range(size))
        sent = body[: size // 3]
        request = (f"POST /upload/{i} HTTP/1.1\r\nHost: test.local\r\n"
                   f"Content-Length: {len(sent)}\r\n\r\n".encode() + sent)  # fmt: skip
        response = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + body
        out.append((request, response))
    return out


# (version, OpenSSL's suite name, encrypt-then-MAC): every kind of suite engine.tlsdecrypt reads.
CASES = [
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256", True),
    ("TLSv1.3", "TLS_AES_256_GCM_SHA384", True),
    ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", True),
    ("TLSv1.3", "TLS_AES_128_CCM_SHA256", True),
    ("TLSv1.3", "TLS_AES_128_CCM_8_SHA256", True),
    ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", True),
    ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", True),
    ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", True),
    ("TLSv1.2", "ECDHE-ECDSA-AES128-CCM", True),
    ("TLSv1.2", "ECDHE-ECDSA-AES256-CCM8", True),
    ("TLSv1.2", "AES128-GCM-SHA256", True),  # RSA key exchange
    ("TLSv1.2", "ECDHE-RSA-AES128-SHA", True),  # CBC, HMAC-SHA1, encrypt-then-MAC
    ("TLSv1.2", "ECDHE-RSA-AES128-SHA", False),  # the same, MAC-then-encrypt
    ("TLSv1.2", "AES256-SHA256", False),
    ("TLSv1.2", "ECDHE-RSA-AES256-SHA384", True),
    ("TLSv1.1", "AES256-SHA", False),
    ("TLSv1", "ECDHE-RSA-AES128-SHA", False),  # chained IVs
    ("TLSv1", "ECDHE-RSA-AES128-SHA", True),
]


@functools.cache
def made(version: str, cipher: str, etm: bool) -> Session:
    return session(version, cipher, exchanges(), encrypt_then_mac=etm)


def keys_of(text: str) -> KeyLog:
    keys = KeyLog()
    keys.feed(text.encode())
    return keys


def run(packets: list[tuple[float, bytes]], keys: KeyLog) -> list[Event]:
    pipeline = Pipeline(keylog=keys)
    return pipeline.feed(Batch.from_packets(1, packets)) + pipeline.finish()


def found(events: list[Event]) -> list[tuple[bytes | None, bytes | None]]:
    """Each exchange as (request line and body, response body)."""
    out = []
    for e in events:
        if isinstance(e, HttpTransaction):
            req, resp = e.request, e.response
            out.append((req and f"{req.method} {req.target}".encode() + b" " + req.body,
                        resp and resp.body))  # fmt: skip
    return out


def expected(s: Session) -> list[tuple[bytes, bytes]]:
    out = []
    for request, response in zip(s.requests, s.responses, strict=True):
        line, _, rest = request.partition(b"\r\n")
        method, target, _ = line.split(b" ")
        out.append((method + b" " + target + b" " + rest.partition(b"\r\n\r\n")[2],
                    response.partition(b"\r\n\r\n")[2]))  # fmt: skip
    return out


def status(events: list[Event]) -> str | None:
    closed = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1
    return closed[0].info.tls_decryption


@pytest.mark.parametrize(("version", "cipher", "etm"), CASES,
                         ids=[f"{v}-{c}-{'etm' if e else 'mte'}" for v, c, e in CASES])  # fmt: skip
def test_every_suite_gives_the_exchanges_byte_for_byte(version, cipher, etm):
    s = made(version, cipher, etm)
    events = run(s.packets(), keys_of(s.keylog))
    assert status(events) == DECRYPTED
    assert found(events) == expected(s)
    [closed] = [e for e in events if isinstance(e, ConnectionClosed)]
    assert closed.info.protocol == "tls" and closed.info.server_hello is not None
    assert closed.info.server_hello.suite in SUITES


def test_the_order_between_the_directions_and_the_segment_sizes_do_not_matter():
    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    keys = s.keylog
    want = expected(s)
    for mss in (1, 5, 17, 100, 1460, 16_000):
        assert found(run(s.packets(mss=mss), keys_of(keys))) == want, mss
    packets = s.packets(mss=700)
    client = [p for p in packets if _from_client(p)]
    server = [p for p in packets if not _from_client(p)]
    # Everything the server sent shown first, then the client's (as a merged capture may).
    assert found(run(server + client, keys_of(keys))) == want
    assert found(run(client + server, keys_of(keys))) == want


def _from_client(packet: tuple[float, bytes]) -> bool:
    return packet[1][26:30] == bytes([10, 0, 0, 1])  # the IPv4 source address


def test_without_its_keys_a_connection_says_so_and_gives_no_exchange():
    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    other = made("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", True)
    events = run(s.packets(), keys_of(other.keylog))  # another session's keys
    assert status(events) == NO_KEYS
    assert found(events) == []


def test_a_wrong_key_is_an_authentication_failure_not_a_crash():
    s = made("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", True)
    lines = []
    for line in s.keylog.splitlines():
        if line.startswith(CLIENT_RANDOM):
            label, random, secret = line.split()
            line = f"{label} {random} {'00' * 48}"
        lines.append(line)
    events = run(s.packets(), keys_of("\n".join(lines) + "\n"))
    assert status(events).startswith("authentication failed")
    assert found(events) == []


def test_keys_that_come_later_decrypt_the_records_that_waited():
    """A live key log: the client writes its keys after the handshake; records wait for them."""
    s = made("TLSv1.3", "TLS_AES_256_GCM_SHA384", True)

    class Late(KeyLog):
        asked = 0

        def refresh(self) -> bool:
            self.asked += 1
            if self.asked == 3:
                self.feed(s.keylog.encode())
                return True
            return False

    keys = Late()
    events = run(s.packets(mss=300), keys)
    assert keys.asked >= 3
    assert status(events) == DECRYPTED and found(events) == expected(s)


@pytest.mark.parametrize(("version", "cipher"), [("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"),
                                                 ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
                                                 ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")])
@pytest.mark.parametrize("lost", [1, 3, 20])  # segments of 1,000 bytes: inside a record, or several
def test_a_gap_costs_only_the_records_it_touches(version, cipher, lost):
    """Segments lost in the middle of the last response (70,000 bytes of body, records of
    16 KB): decryption goes on after them, the response counts exactly the body bytes it lost,
    and every other byte is as sent."""
    s = made(version, cipher, True)
    packets = s.packets(mss=1000)
    server_data = [i for i, p in enumerate(packets) if not _from_client(p) and len(p[1]) > 500]
    first = server_data[-45]  # within the body, past the record that holds the head
    del packets[first : first + lost]
    events = run(packets, keys_of(s.keylog))
    assert status(events) == DECRYPTED
    got, want = found(events), expected(s)
    assert got[:-1] == want[:-1]  # every exchange before the gap, whole
    [last] = [e for e in events if isinstance(e, HttpTransaction)][-1:]
    body, sent = last.response.body, want[-1][1]
    assert last.response.body_bytes == len(sent) and last.response.body_missing > 0
    assert len(body) + last.response.body_missing == len(sent)
    # What was kept is what was sent, around the hole the gap left (body_gaps says where).
    [(at, missing)] = last.response.body_gaps
    assert body[:at] == sent[:at] and body[at:] == sent[at + missing :]


def test_a_gap_in_the_handshake_stops_decryption_and_says_so():
    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    packets = s.packets(mss=200)
    server_data = [i for i, p in enumerate(packets) if not _from_client(p) and len(p[1]) > 150]
    del packets[server_data[2]]  # inside the server's first flight
    events = run(packets, keys_of(s.keylog))
    assert "gap" in status(events)


def test_the_tls13_key_schedule_matches_rfc_8448():
    # RFC 8448 section 3, "{server} derive write traffic keys for handshake data".
    prk = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert hkdf_expand_label(prk, b"key", b"", 16, "sha256").hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert hkdf_expand_label(prk, b"iv", b"", 12, "sha256").hex() == "5d313eb2671276ee13000b30"


# --- the key log ---------------------------------------------------------------------------------

RANDOM = "ab" * 32


def test_key_log_lines_are_read_and_bad_ones_counted_and_skipped():
    keys = KeyLog()
    lines = [
        "# TLS secrets log file",
        "",
        f"CLIENT_RANDOM {RANDOM} {'11' * 48}",
        f"CLIENT_RANDOM nothex {'22' * 48}",
        f"CLIENT_RANDOM {RANDOM} {'33' * 47}",  # a master secret is 48 bytes
        f"SERVER_TRAFFIC_SECRET_0 {RANDOM} {'44' * 32}",
        f"EXPORTER_SECRET {RANDOM} {'55' * 32}",  # known, not needed
        "garbage",
        f"SERVER_TRAFFIC_SECRET_0 {RANDOM[:10]} {'66' * 32}",
    ]
    keys.feed("\n".join(lines).encode() + b"\n")
    assert keys.lines == 2 and keys.malformed == 4
    assert keys.get(bytes.fromhex(RANDOM)) == {CLIENT_RANDOM: b"\x11" * 48,
                                               SERVER_TRAFFIC_0: b"\x44" * 32}  # fmt: skip


def test_a_key_log_read_in_pieces_waits_for_whole_lines():
    line = f"CLIENT_RANDOM {RANDOM} {'11' * 48}\n".encode()
    keys = KeyLog()
    for i in range(len(line)):
        keys.feed(line[i : i + 1])
        assert len(keys) == (1 if i == len(line) - 1 else 0)
    keys.feed(line[:-1])  # a last line without its end counts once the log is whole
    keys.end()
    assert keys.lines == 2 and keys.malformed == 0


def test_a_key_log_file_is_read_again_as_it_grows(tmp_path):
    from engine.keylog import KeyLogFile

    path = tmp_path / "keys.log"
    path.write_text("# nothing yet\n")
    keys = KeyLogFile(str(path))
    assert len(keys) == 0
    with open(path, "a") as f:
        f.write(f"CLIENT_RANDOM {RANDOM} {'11' * 48}\n")
    assert keys.refresh() and len(keys) == 1
    assert not keys.refresh()  # it did not grow
    with pytest.raises(OSError):
        KeyLogFile(str(tmp_path / "missing.log"))


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capture_and_keys(tmp_path_factory: pytest.TempPathFactory):
    """A capture of two TLS connections (1.3 and 1.2) and the client's key log of both."""
    from tests.synth import write_pcap

    one = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    two = made("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", True)
    packets = one.packets() + two.packets(client=("10.0.0.1", 51300), start=1_700_000_100.0)
    directory = tmp_path_factory.mktemp("tls")
    write_pcap(directory / "tls.pcap", packets)
    (directory / "keys.log").write_text(one.keylog + two.keylog)
    return directory / "tls.pcap", directory / "keys.log", (one, two)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_json_with_a_key_log_gives_the_decrypted_exchanges(capture_and_keys, jobs):
    import json

    from tests.test_cli import records, wirepeek

    path, keys, sessions = capture_and_keys
    proc = wirepeek("-r", str(path), "--keylog", str(keys), "--json", "--jobs", jobs)
    assert proc.returncode == 0, proc.stderr.decode()
    conns = records(proc.stdout, "connection")
    assert [c["tls"]["decrypted"] for c in conns] == [True, True]
    assert [c["tls"]["why_not"] for c in conns] == [None, None]
    assert [c["tls"]["version"] for c in conns] == ["TLS 1.3", "TLS 1.2"]
    assert [c["tls"]["certificate"]["subject"] for c in conns] == ["CN=test.local"] * 2
    assert conns[0]["tls"]["certificate"]["not_after"] == "2035-12-30T00:00:00+00:00"
    http = records(proc.stdout, "http")
    for conn_id, s in enumerate(sessions):
        mine = [r for r in http if r["connection"] == conn_id]
        assert [r["request"]["target"] for r in mine] == [f"/upload/{i}" for i in range(len(BODIES))]
        assert [r["response"]["body_bytes"] for r in mine] == list(BODIES)
    # Without the key log: the same connections, not decrypted, and no exchange.
    plain = wirepeek("-r", str(path), "--json", "--jobs", jobs)
    assert records(plain.stdout, "http") == []
    assert all("decrypted" not in c.get("tls", {}) for c in records(plain.stdout, "connection"))
    json.dumps(conns)  # (records as they are)


def test_the_key_log_may_come_from_sslkeylogfile_and_a_missing_one_is_said(capture_and_keys, tmp_path):
    import os
    import subprocess

    from tests.test_cli import ROOT, WIREPEEK, records

    path, keys, _ = capture_and_keys
    env = {**os.environ, "SSLKEYLOGFILE": str(keys)}
    proc = subprocess.run([*WIREPEEK, "-r", str(path), "--json"], env=env, cwd=ROOT,
                          capture_output=True, timeout=60, check=False)  # fmt: skip
    assert len(records(proc.stdout, "http")) == 2 * len(BODIES)
    missing = tmp_path / "none.log"
    for args, env in (
        (["--keylog", str(missing)], dict(os.environ)),
        ([], {**os.environ, "SSLKEYLOGFILE": str(missing)}),
    ):
        proc = subprocess.run([*WIREPEEK, "-r", str(path), "--json", *args], env=env, cwd=ROOT,
                              capture_output=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 2 and b"Traceback" not in proc.stderr
        named = "--keylog" if args else "$SSLKEYLOGFILE"
        assert f"cannot read the key log {missing} ({named})" in proc.stderr.decode()


# --- the inspector -------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("jobs", [0, 2])  # HTTP in the capture thread, or in the helpers
async def test_the_inspector_lists_the_decrypted_exchanges_and_says_so(capture_and_keys, jobs):
    from engine.bounds import Bounds
    from tests.test_app import SIZE, read_all
    from tui.app import WirepeekApp
    from tui.capture import SourceSpec
    from tui.widgets.http import ExchangesTable

    path, keys, sessions = capture_and_keys
    app = WirepeekApp(SourceSpec(files=(str(path),), keylog=str(keys)), "",
                      Bounds(keep_after_close=True), jobs=jobs)  # fmt: skip
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        assert [info.tls_decryption for info in app.store.connections.values()] == [DECRYPTED] * 2
        table = app.query_one(ExchangesTable)
        assert table.row_count == len(BODIES)
        summary = str(app.query_one("#http-summary").render())
        assert summary.startswith(f"{len(BODIES)} exchanges · TLS 1.3 TLS_AES_128_GCM_SHA256 decrypted")
        from tui.widgets.connections import ConnectionsTable

        assert [ConnectionsTable.cells(app.query_one(ConnectionsTable), i)[4] for i in (0, 1)] == [
            "tls ✓"] * 2
        bodies = [tx.response.body for tx in app.store.exchanges(0)]
        assert bodies == [r.partition(b"\r\n\r\n")[2] for r in sessions[0].responses]


def test_follow_writes_the_plaintext_and_raw_the_records(capture_and_keys):
    from tests.test_cli import wirepeek

    path, keys, sessions = capture_and_keys
    for conn_id, s in enumerate(sessions):
        for direction, sent in (("client", s.requests), ("server", s.responses)):
            proc = wirepeek("-r", str(path), "--keylog", str(keys), "--follow", str(conn_id),
                            "--dir", direction)  # fmt: skip
            assert proc.returncode == 0 and proc.stderr == b""
            assert proc.stdout == b"".join(sent)  # exactly what that side sent, decrypted
    raw = wirepeek("-r", str(path), "--keylog", str(keys), "--follow", "0", "--dir", "server",
                   "--raw")  # fmt: skip
    records = b"".join(data for from_client, data in sessions[0].flights if not from_client)
    assert raw.returncode == 0 and raw.stdout == records  # the TLS records as captured
    # With a key log that has not this connection's keys: nothing written, and why.
    other = made("TLSv1.2", "AES128-GCM-SHA256", True)
    no_keys = path.parent / "other.log"
    no_keys.write_text(other.keylog)
    proc = wirepeek("-r", str(path), "--keylog", str(no_keys), "--follow", "1")
    assert proc.stdout == b"" and f"connection 1: not decrypted, or not to its end: {NO_KEYS}" in (
        proc.stderr.decode())


def test_a_pcapng_with_a_decryption_secrets_block_opens_decrypted(capture_and_keys, tmp_path):
    """As a capture handed over with `editcap --inject-secrets tls,keys.log` opens in Wireshark:
    the key log travels inside the pcapng file, and no --keylog is needed."""
    from engine.pcapfile import tls_key_logs
    from tests.synth import write_pcapng
    from tests.test_cli import records, wirepeek

    _, keys, sessions = capture_and_keys
    packets = sessions[0].packets() + sessions[1].packets(client=("10.0.0.1", 51300),
                                                          start=1_700_000_100.0)  # fmt: skip
    path = tmp_path / "with-secrets.pcapng"
    write_pcapng(path, packets, tls_key_log=keys.read_bytes())
    assert tls_key_logs(path.read_bytes()) == keys.read_bytes()
    proc = wirepeek("-r", str(path), "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    assert [c["tls"]["decrypted"] for c in records(proc.stdout, "connection")] == [True, True]
    assert len(records(proc.stdout, "http")) == 2 * len(BODIES)
    # Without the block, the same packets are not decrypted.
    write_pcapng(tmp_path / "without.pcapng", packets)
    assert records(wirepeek("-r", str(tmp_path / "without.pcapng"), "--json").stdout, "http") == []


def test_records_waiting_for_keys_stay_within_a_bound_whatever_the_connections():
    """Many connections whose keys never come: each gives up once waiting would pass the bound
    all of them share, and says it has no keys; nothing grows with their number."""
    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    keys = keys_of(made("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", True).keylog)  # not theirs
    keys.max_held = 50_000
    packets = []
    for i in range(6):  # each session's records: about 90 KB from the server
        packets += s.packets(client=("10.0.0.1", 40000 + i), start=1_700_000_000.0 + i)
    pipeline = Pipeline(keylog=keys)
    pipeline.feed(Batch.from_packets(1, packets))
    assert keys.held <= 50_000 + 20_000  # (a record past the bound at most, then it gives up)
    events = pipeline.finish()
    assert [e.info.tls_decryption for e in events if isinstance(e, ConnectionClosed)] == [NO_KEYS] * 6
    assert keys.held == 0


@pytest.mark.asyncio
async def test_a_key_log_loaded_in_the_inspector_decrypts_the_file_read_again(capture_and_keys):
    from engine.bounds import Bounds
    from tests.test_app import SIZE, read_all, until
    from tui.app import WirepeekApp
    from tui.capture import SourceSpec
    from tui.widgets.http import ExchangesTable

    path, keys, _ = capture_and_keys
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", Bounds(keep_after_close=True))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        assert app.query_one(ExchangesTable).row_count == 0
        assert [info.tls_decryption for info in app.store.connections.values()] == [None, None]
        await pilot.press("K")
        field = app.query_one("#keylog-path")
        assert field.has_focus
        field.value = str(path.parent / "missing.log")
        await pilot.press("enter")
        await until(pilot, lambda: "cannot read" in str(app.query_one("#prompt-error").render()))
        assert "cannot read" in str(app.query_one("#prompt-error").render())
        field.value = str(keys)
        app.file_done.clear()
        await pilot.press("enter")
        await until(pilot, lambda: app.generation == 1 and app.file_done.is_set())
        await read_all(app, pilot)
        assert [info.tls_decryption for info in app.store.connections.values()] == [DECRYPTED] * 2
        assert app.query_one(ExchangesTable).row_count == len(BODIES)
        assert not app.query_one("#prompt").display
        said = [n.message for n in app._notifications]
        assert said == [f"key log {keys}: keys of 2 sessions"]
        # Loaded into a live capture, the notice says what it cannot do.
        from tui.messages import KeylogLoaded

        app.post_message(KeylogLoaded(str(keys), None, 2, live=True))
        await until(pilot, lambda: len(app._notifications) == 2)
        assert "connections closed before stay encrypted" in list(app._notifications)[-1].message


def test_a_key_update_moves_the_direction_to_its_next_secret():
    """Python's ssl cannot ask for a KeyUpdate: the test writes one itself, after a real
    session, under the server's application key at its next record number (RFC 8446 4.6.3),
    then a response under the updated secret ("traffic upd", RFC 8446 7.2), and a request
    from the client under its unchanged key before it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from engine.tlsdecrypt import TlsDecryptor

    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    pipeline = Pipeline(keylog=keys_of(s.keylog))
    pipeline.feed(Batch.from_packets(1, s.packets(close=False)))
    [conn] = pipeline.table.lru.values()
    [decryptor] = [c for c in conn.consumers if isinstance(c, TlsDecryptor)]

    def record(secret: bytes, seq: int, content: bytes, kind: int) -> bytes:
        key = hkdf_expand_label(secret, b"key", b"", 16, "sha256")
        iv = hkdf_expand_label(secret, b"iv", b"", 12, "sha256")
        nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
        inner = content + bytes([kind])
        header = bytes([23, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
        return header + AESGCM(key).encrypt(nonce, inner, header)

    client_secret, server_secret = decryptor.secret_of[True], decryptor.secret_of[False]
    client_seq, server_seq = decryptor.sides[True].keys.seq, decryptor.sides[False].keys.seq
    request = b"GET /after-update HTTP/1.1\r\nHost: test.local\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nupdated"
    updated = hkdf_expand_label(server_secret, b"traffic upd", b"", 32, "sha256")
    extra = [
        (True, record(client_secret, client_seq, request, 23)),
        (False, record(server_secret, server_seq, b"\x18\x00\x00\x01\x00", 22)  # KeyUpdate
         + record(updated, 0, response, 23)),
    ]
    events = run(s.packets(extra=extra), keys_of(s.keylog))
    assert status(events) == DECRYPTED
    assert found(events) == [*expected(s), (b"GET /after-update ", b"updated")]


def test_the_servers_certificate_is_read_in_the_clear_before_tls13_and_decrypted_in_it():
    from engine.tls import Certificate

    cert = Certificate("CN=test.local", "CN=test.local", "2026-01-01T00:00:00+00:00",
                       "2035-12-30T00:00:00+00:00")  # tests.tls_sessions makes it so
    twelve = made("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", True)
    thirteen = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)

    def certificate(s: Session, keys: KeyLog) -> Certificate | None:
        [closed] = [e for e in run(s.packets(), keys) if isinstance(e, ConnectionClosed)]
        return closed.info.certificate

    assert certificate(twelve, KeyLog()) == cert  # no keys needed
    assert certificate(thirteen, KeyLog()) is None  # encrypted
    assert certificate(thirteen, keys_of(thirteen.keylog)) == cert


@pytest.mark.asyncio
async def test_the_stream_tab_shows_the_plaintext_and_r_the_records(capture_and_keys):
    from engine.bounds import Bounds
    from tests.test_app import SIZE, open_stream, read_all, stream_lines, until
    from tui.app import WirepeekApp
    from tui.capture import SourceSpec

    path, keys, sessions = capture_and_keys
    bounds = Bounds(keep_after_close=True, spool_bytes=64 << 20)
    app = WirepeekApp(SourceSpec(files=(str(path),), keylog=str(keys)), "", bounds)
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        stream = await open_stream(app, pilot)
        text = "\n".join(stream_lines(stream))  # (binary bodies: it opens as a hex dump)
        assert "|POST /upload/0 H" in text and "|HTTP/1.1 200 OK." in text
        assert "request 0: POST /upload/0" in text  # the exchanges are marked where they begin
        await pilot.press("r")
        await until(pilot, lambda: "POST /upload/0" not in "\n".join(stream_lines(stream)))
        records = "\n".join(stream_lines(stream))
        assert "POST /upload/0" not in records and "request 0" not in records
        assert "00000000  16 03 01" in records  # the ClientHello's record, as captured
        await pilot.press("r")
        await until(pilot, lambda: "POST /upload/0" in "\n".join(stream_lines(stream)))
        assert "request 0: POST /upload/0" in "\n".join(stream_lines(stream))


def test_decrypted_streams_keep_each_connections_newest_within_their_bounds():
    from engine.decrypted import DecryptedStreams
    from engine.spool import DATA, GAP, Spool

    streams = DecryptedStreams(Spool(1 << 20), keep=100, max_entries=6)
    for i in range(5):
        streams.add(0, DATA, True, 1.0 + i, 40 * i, 40, bytes([i]) * 40)
    got = streams.since(0, 0)
    assert got is not None and got.dropped  # 200 bytes sent, the newest 100 at most kept
    assert [e[2] for e in got.entries] == [120, 160] and got.cursor == 5
    streams.add(0, GAP, False, 9.0, 0, 7, b"lost")
    later = streams.since(0, got.cursor)
    assert later is not None and later.entries == ((False, 9.0, 0, 7),) and not later.dropped
    for i in range(4):  # another connection: past 6 entries in all, the first goes whole
        streams.add(1, DATA, False, 2.0, 10 * i, 10, b"x" * 10)
    assert 0 not in streams and streams.since(0, 0) is None
    assert [e[3] for e in streams.since(1, 0).entries] == [b"x" * 10] * 4


@pytest.mark.parametrize(("version", "cipher"), [("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
                                                 ("TLSv1.2", "AES256-SHA256"),
                                                 ("TLSv1.3", "TLS_AES_128_GCM_SHA256")])
def test_a_resumed_session_decrypts_with_its_own_logged_keys(version, cipher):
    """An abbreviated handshake (a session ticket or id; in TLS 1.3 a PSK) has no key exchange
    to see: the key log's secrets for its own ClientHello random open it."""
    s = session(version, cipher, exchanges(), resume=True)
    assert s.resumed
    events = run(s.packets(), keys_of(s.keylog))
    assert status(events) == DECRYPTED
    assert found(events) == expected(s)


def test_early_data_opens_with_the_early_secret():
    """Python's ssl cannot send 0-RTT data: the test puts a record of it after a real TLS 1.3
    ClientHello, under a CLIENT_EARLY_TRAFFIC_SECRET it adds to the key log, as a client that
    resumes with early data would (RFC 8446 4.2.10). The request in it comes out (unanswered:
    this server never saw it, so the answers pair one request early), before the session's
    own requests."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    secret = os.urandom(32)
    key = hkdf_expand_label(secret, b"key", b"", 16, "sha256")
    iv = hkdf_expand_label(secret, b"iv", b"", 12, "sha256")
    early = b"GET /early HTTP/1.1\r\nHost: test.local\r\n\r\n"
    inner = early + bytes([23])
    header = bytes([23, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
    record = header + AESGCM(key).encrypt(iv, inner, header)  # record number 0: the nonce is iv
    first, *rest = s.flights
    assert first[0]  # the ClientHello
    random = first[1][11:43].hex()
    s = dataclasses.replace(s, flights=[(True, first[1] + record), *rest])  # (made() caches s)
    keys = keys_of(s.keylog + f"CLIENT_EARLY_TRAFFIC_SECRET {random} {secret.hex()}\n")
    events = run(s.packets(), keys)
    assert status(events) == DECRYPTED
    requests = [request for request, _ in found(events)]
    assert requests == [b"GET /early "] + [request for request, _ in expected(s)]


def test_a_connection_whose_handshake_was_not_captured_says_so():
    """A capture that starts after the ClientHello has no random to look the keys up by."""
    from engine.tlsdecrypt import NO_HANDSHAKE

    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    packets = s.packets(mss=1460)
    start = next(i for i, p in enumerate(packets) if _from_client(p) and len(p[1]) > 100)
    events = run(packets[start + 1 :], keys_of(s.keylog))  # from after the ClientHello
    assert status(events) == NO_HANDSHAKE and found(events) == []


def test_application_records_wait_for_their_secret_when_the_key_log_has_only_the_handshakes():
    """A live key log read between two of the client's lines (the handshake secrets written,
    the application secrets not yet): the records after each Finished wait for theirs instead
    of being tried with the handshake keys."""
    s = made("TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    lines = s.keylog.splitlines(keepends=True)
    early = "".join(line for line in lines if "HANDSHAKE" in line)
    later = "".join(line for line in lines if "HANDSHAKE" not in line)

    class Growing(KeyLog):
        asked = 0

        def refresh(self) -> bool:
            self.asked += 1
            if self.asked == 4:
                self.feed(later.encode())
                return True
            return False

    keys = Growing()
    keys.feed(early.encode())
    events = run(s.packets(mss=500), keys)
    assert status(events) == DECRYPTED and found(events) == expected(s)


def test_a_key_log_of_chosen_sessions_has_their_lines_only():
    keys = keys_of("CLIENT_RANDOM " + "11" * 32 + " " + "aa" * 48 + "\n"
                   "CLIENT_RANDOM " + "22" * 32 + " " + "bb" * 48 + "\n"
                   "SERVER_TRAFFIC_SECRET_0 " + "22" * 32 + " " + "cc" * 32 + "\n")
    lines, sessions = keys.lines_for([bytes.fromhex("22" * 32), bytes.fromhex("33" * 32),
                                      bytes.fromhex("22" * 32)])
    assert sessions == 1
    again = KeyLog()
    again.feed(lines)
    assert again.secrets == {bytes.fromhex("22" * 32): keys.secrets[bytes.fromhex("22" * 32)]}
    assert keys.lines_for([]) == (b"", 0)


@pytest.mark.asyncio
async def test_w_writes_a_decrypted_connection_to_pcapng_with_its_keys(capture_and_keys, tmp_path):
    """The file w writes opens decrypted without the key log, here (and in Wireshark): its
    Decryption Secrets Block holds the keys of the sessions written, and only theirs."""
    from engine.bounds import Bounds
    from engine.pcapfile import tls_key_logs
    from tests.test_app import SIZE, read_all, workers_done
    from tests.test_cli import records, wirepeek
    from tui.app import WirepeekApp
    from tui.capture import SourceSpec

    path, keys, (one, two) = capture_and_keys
    app = WirepeekApp(SourceSpec(files=(str(path),), keylog=str(keys)), "",
                      Bounds(keep_after_close=True))
    plain = tmp_path / "second.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("j")
        conn_id = app.selected
        info = app.store.connections[conn_id]
        assert info.tls_decryption == DECRYPTED and info.tls_random is not None
        await pilot.press("w")
        field = app.query_one("#write-path")
        assert field.value == f"wirepeek-connection-{conn_id}.pcapng"
        field.value = str(tmp_path / "second.pcapng")
        await pilot.press("enter")
        await workers_done(app, "write")
        await pilot.pause()
        said = [n.message for n in app._notifications][-1]
        assert said == (f"wrote {sum(info.packets)} packets to {tmp_path / 'second.pcapng'}, "
                        "with the TLS keys of 1 session")
        await pilot.press("w")
        field.value = str(plain)
        await pilot.press("enter")
        await workers_done(app, "write")
        await pilot.pause()
        assert [n.message for n in app._notifications][-1].endswith(
            "(a .pcapng name would carry their TLS keys)")
    written = (tmp_path / "second.pcapng").read_bytes()
    embedded = KeyLog()
    embedded.feed(tls_key_logs(written))
    embedded.end()
    assert list(embedded.secrets) == [info.tls_random]
    assert embedded.secrets[info.tls_random] == keys_of(two.keylog).secrets[info.tls_random]
    proc = wirepeek("-r", str(tmp_path / "second.pcapng"), "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    [conn] = records(proc.stdout, "connection")
    assert conn["tls"]["decrypted"] is True and conn["tls"]["version"] == "TLS 1.2"
    got = [r["response"]["body_bytes"] for r in records(proc.stdout, "http")]
    assert got == list(BODIES)
    # The pcap file has the same packets (as libpcap reads both) and no keys.
    assert tls_key_logs(plain.read_bytes()) == b""
    packets = libpcap_packets(str(plain))
    assert libpcap_packets(str(tmp_path / "second.pcapng")) == packets
    assert len(packets) == sum(info.packets)


def test_w_on_the_command_line_embeds_the_keys_of_the_sessions_written(capture_and_keys, tmp_path):
    """-w X.pcapng with --keylog: the file carries the secrets of the sessions it holds (of the
    filter's connection, not the other's), opens decrypted without the key log, and passes them
    on when written again; a key log only set in the environment is not embedded."""
    import os
    import subprocess

    from engine.pcapfile import tls_key_logs
    from tests.test_cli import ROOT, WIREPEEK, records, wirepeek

    path, keys, (one, two) = capture_and_keys
    out = tmp_path / "second.pcapng"
    proc = wirepeek("-r", str(path), "--keylog", str(keys), "-w", str(out), "tcp port 51300")
    assert proc.returncode == 0, proc.stderr.decode()
    embedded = KeyLog()
    embedded.feed(tls_key_logs(out.read_bytes()))
    embedded.end()
    assert embedded.secrets == keys_of(two.keylog).secrets
    assert len(embedded.secrets) == 1 and not keys_of(one.keylog).secrets.keys() & embedded.secrets.keys()
    assert secrets_come_first(str(out)) == 1
    proc = wirepeek("-r", str(out), "--json")
    [conn] = records(proc.stdout, "connection")
    assert conn["tls"]["decrypted"] is True and conn["tls"]["version"] == "TLS 1.2"
    assert [r["response"]["body_bytes"] for r in records(proc.stdout, "http")] == list(BODIES)
    # Written again from the pcapng, without --keylog: its own secrets go along.
    again = tmp_path / "again.pcapng"
    assert wirepeek("-r", str(out), "-w", str(again)).returncode == 0
    assert tls_key_logs(again.read_bytes()) == tls_key_logs(out.read_bytes())
    # $SSLKEYLOGFILE decrypts what is read, but is not handed on inside a written file.
    quiet = tmp_path / "env.pcapng"
    proc = subprocess.run([*WIREPEEK, "-r", str(path), "-w", str(quiet)], cwd=ROOT, capture_output=True,
                          env={**os.environ, "SSLKEYLOGFILE": str(keys)}, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert tls_key_logs(quiet.read_bytes()) == b""
    assert libpcap_packets(str(quiet)) == libpcap_packets(str(path))


def secrets_come_first(path: str) -> int:
    """Check that a pcapng file gives each session's secrets (complete: the master secret, or
    both traffic secrets) before any packet with a payload after its ClientHello, as Wireshark
    wants them; the number of sessions."""
    import struct

    from engine.decode import innermost_tcp
    from engine.pcapfile import ETHERNET, Packet
    from engine.sources import client_hello_random

    data = open(path, "rb").read()
    known = KeyLog()
    known.noted = set()
    hellos: list[bytes] = []
    pos = 0
    while pos < len(data):
        kind, length = struct.unpack_from("<II", data, pos)
        if kind == 10:  # Decryption Secrets Block
            size = struct.unpack_from("<I", data, pos + 12)[0]
            known.feed(data[pos + 16 : pos + 16 + size])
        elif kind == 6:  # Enhanced Packet Block
            caplen = struct.unpack_from("<I", data, pos + 20)[0]
            packet = data[pos + 28 : pos + 28 + caplen]
            client_random = client_hello_random(Packet(0, 0, ETHERNET, caplen, packet))
            at = innermost_tcp(ETHERNET, packet, 0, caplen)
            assert at is not None
            has_payload = at.l4 + ((packet[at.l4 + 12] >> 4) << 2) < min(at.end, at.wire_end)
            if client_random is not None:
                hellos.append(client_random)
            elif has_payload:
                for r in hellos:
                    got = known.get(r) or {}
                    assert "CLIENT_RANDOM" in got or {"CLIENT_TRAFFIC_SECRET_0",
                                                      "SERVER_TRAFFIC_SECRET_0"} <= got.keys()
        pos += length
    return len(hellos)


def libpcap_packets(path: str) -> list[tuple[tuple[int, int], int, int, bytes]]:
    import pcapy

    handle = pcapy.open_offline(path)
    found = []
    while True:
        header, data = handle.next()
        if header is None:
            return found
        found.append((header.getts(), header.getcaplen(), header.getlen(), bytes(data)))


def test_a_connection_read_again_from_the_file_gives_its_plaintext_as_a_whole_reading(
        capture_and_keys):
    """tui.follow: the Stream tab's stream of a file's connection is read again from the file;
    with the key log, its decrypted plaintext is the one a pipeline keeping every connection's
    gave, record for record."""
    from engine import sources
    from engine.bounds import Bounds
    from engine.decrypted import DecryptedStreams
    from engine.keylog import open_keys
    from engine.spool import Spool
    from tui.follow import FileFollow

    path, keys_path, _sessions = capture_and_keys
    bounds = Bounds(keep_after_close=True, spool_bytes=16 << 20)
    keys = open_keys(str(keys_path), [str(path)])
    assert keys is not None
    spool = Spool(bounds.spool_bytes)
    plain = DecryptedStreams(spool, bounds.keep_stream_bytes)
    pipeline = Pipeline(bounds, http_body_limit=None, spool=spool, keylog=keys,
                        plaintext=[plain.listener])
    source = sources.open_files([str(path)])
    events = [e for batch in iter(source.next_batch, None) for e in pipeline.feed(batch)]
    events += pipeline.finish()
    source.close()
    closed = [e.info for e in events if isinstance(e, ConnectionClosed)]
    assert len(closed) == 2
    for info in closed:
        reader = FileFollow((str(path),), "", bounds, keys, info)
        reader.update(info, closed=True)
        assert reader.read(1 << 62, float("inf")) and reader.done
        assert reader.has_plaintext()
        mine, whole = reader.since(0, True), plain.since(info.id, 0)
        assert mine is not None and whole is not None
        assert mine.entries == whole.entries and b"POST /upload/0" in mine.entries[0][3]
        records = reader.since(0, False)
        assert records is not None
        assert records.entries == pipeline.kept_since(info.id, 0).entries
        reader.close()
    spool.close()
