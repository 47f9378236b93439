"""TLS decrypted live on loopback: the capture starts with an empty key log, then a client using
Python's ssl (OpenSSL) connects to a TLS server on loopback and writes its key log as it goes, as
curl with SSLKEYLOGFILE does; the exchanges come out decrypted, byte counts as sent. Needs root
for the capture (CI runs as root)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests.live import LoopbackServer, end_process, wait_for_line
from tests.test_cli import ROOT, WIREPEEK, records
from tests.tls_sessions import _certificate

root = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
SIZES = (10, 5_000, 100_000)


class TlsServer(LoopbackServer):
    """HTTP/1.1 over TLS: GET /size/N is answered with N bytes, on one connection after another."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while True:
                    while b"\r\n\r\n" not in data:
                        chunk = tls.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    size = int(head.split(b" ")[1].rsplit(b"/", 1)[1])
                    body = bytes(i % 256 for i in range(size))
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body)
        except (OSError, ssl.SSLError):
            return


def fetch(port: int, keylog: str) -> list[int]:
    """GET each size on one connection, with the key log written as OpenSSL goes; the sizes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.keylog_filename = keylog
    got = []
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            context.wrap_socket(raw, server_hostname="test.local") as tls:  # fmt: skip
        for size in SIZES:
            tls.sendall(b"GET /size/%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % size)
            data = b""
            while b"\r\n\r\n" not in data:
                data += tls.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += tls.recv(65536)
            got.append(len(body))
    return got


@root
def test_a_live_capture_decrypts_with_a_key_log_written_while_it_runs(tmp_path):
    cert, key = _certificate(str(tmp_path), rsa=False)
    keylog = tmp_path / "keys.log"
    keylog.write_text("")  # as curl finds it: there, and empty until the handshake
    server = TlsServer(cert, key)
    proc = subprocess.Popen(
        [*WIREPEEK, "-i", "lo", "--keylog", str(keylog), "--json", "--duration", "6",
         f"tcp port {server.port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_line(proc, b"capturing on", 20)
        time.sleep(0.3)
        assert fetch(server.port, str(keylog)) == list(SIZES)
        assert keylog.read_text().count("TRAFFIC_SECRET_0") == 2  # written while captured
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
        server.close()
    assert proc.returncode == 0, err.decode()
    [conn] = records(out, "connection")
    assert conn["tls"]["decrypted"] is True and conn["tls"]["version"] == "TLS 1.3"
    http = records(out, "http")
    assert [r["request"]["target"] for r in http] == [f"/size/{n}" for n in SIZES]
    assert [r["response"]["body_bytes"] for r in http] == list(SIZES)
    assert all(r["response"]["status"] == 200 and r["error"] is None for r in http)


@root
def test_a_live_capture_written_to_pcapng_carries_the_keys_logged_while_it_ran(tmp_path):
    """-i lo --keylog K -w X.pcapng: the secrets logged after the capture began (after their
    handshakes, one session's late) reach the file before the packets they open, and the file
    opens decrypted without the key log."""
    from engine.pcapfile import tls_key_logs
    from tests.test_cli import wirepeek
    from tests.test_tlsdecrypt import secrets_come_first

    cert, key = _certificate(str(tmp_path), rsa=False)
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    out = tmp_path / "live.pcapng"
    server = TlsServer(cert, key)
    proc = subprocess.Popen(
        [*WIREPEEK, "-i", "lo", "--keylog", str(keylog), "-w", str(out), "--duration", "4",
         f"tcp port {server.port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_line(proc, b"capturing on", 20)
        time.sleep(0.3)
        assert fetch(server.port, str(keylog)) == list(SIZES)
        # A second session whose keys reach the key log 0.5 s after its last answer (a client
        # that writes them late): its packets wait for them.
        private = tmp_path / "late.log"
        assert fetch(server.port, str(private)) == list(SIZES)
        time.sleep(0.5)
        with keylog.open("a") as f:
            f.write(private.read_text())
        _, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
        server.close()
    assert proc.returncode == 0, err.decode()
    assert tls_key_logs(out.read_bytes()).count(b"TRAFFIC_SECRET_0") == 4
    # Each session's keys before its packets, for Wireshark: those after the ClientHello waited.
    assert secrets_come_first(str(out)) == 2
    done = wirepeek("-r", str(out), "--json")
    assert done.returncode == 0, done.stderr.decode()
    conns = records(done.stdout, "connection")
    assert [c["tls"]["decrypted"] for c in conns] == [True, True]
    assert [r["response"]["body_bytes"] for r in records(done.stdout, "http")] == list(SIZES) * 2


class RunningDriver:
    """The inspector's capture path without its screen: a CaptureDriver (capture process,
    capture thread, HTTP helpers) on lo, in a thread; what it posts is kept."""

    def __init__(self, bpf: str, keylog: str | None = None) -> None:
        from engine import sources
        from engine.bounds import Bounds
        from tui.capture import CaptureDriver, SourceSpec

        self.posted: list[object] = []
        source = sources.open_live(["lo"], bpf)
        spec = SourceSpec(interfaces=("lo",), opened=source, keylog=keylog)
        self.driver = CaptureDriver(spec, bpf, Bounds(keep_after_close=True), self.post, jobs=2)
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self.driver.run, args=(self.stop.is_set,))
        self.worker.start()

    def post(self, message: object) -> None:
        from tui.messages import EngineUpdate

        self.posted.append(message)
        if isinstance(message, EngineUpdate):
            self.driver.taken.set()

    def updates(self) -> list:
        from tui.messages import EngineUpdate

        return [m for m in self.posted if isinstance(m, EngineUpdate)]

    def exchanges(self) -> list:
        from tui.exchange_log import decode

        return [decode(blob, conn) for m in self.updates() for batch in m.exchanges
                for conn, blob, *_ in batch]  # fmt: skip

    def infos(self) -> dict[int, object]:
        return {e.info.id: e.info for m in self.updates() for e in m.events if hasattr(e, "info")}

    def close(self) -> None:
        self.stop.set()
        self.worker.join(10)


def wait(condition) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@root
def test_the_inspectors_live_capture_decrypts_in_its_helpers(tmp_path):
    """The interactive view's path: the capture process, the capture thread (each connection's
    status) and the HTTP helpers reading the feed (the exchanges), each with the key log."""
    from engine.tlsdecrypt import DECRYPTED

    cert, key = _certificate(str(tmp_path), rsa=False)
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    server = TlsServer(cert, key)
    running = RunningDriver(f"tcp port {server.port}", str(keylog))
    try:
        assert fetch(server.port, str(keylog)) == list(SIZES)
        wait(lambda: len(running.exchanges()) >= len(SIZES))
        got = running.exchanges()
        infos = [e.info for u in running.updates() for e in u.events if hasattr(e, "info")]
    finally:
        running.close()
        server.close()
    assert [tx.request.target for tx in got] == [f"/size/{n}" for n in SIZES]
    assert [tx.response.body_bytes for tx in got] == list(SIZES)
    assert infos and infos[-1].tls_decryption == DECRYPTED


@root
def test_a_key_log_loaded_while_a_live_capture_runs_decrypts_what_comes_after(tmp_path):
    """The inspector started without a key log: a TLS connection is not decrypted, and says
    nothing of keys; once a key log is loaded (K), the next connection's exchanges come out
    decrypted from the HTTP helpers, who learn of it from the feed's listing."""
    from tui.messages import KeylogLoaded

    cert, key = _certificate(str(tmp_path), rsa=False)
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    server = TlsServer(cert, key)
    running = RunningDriver(f"tcp port {server.port}")
    posted, infos = running.posted, running.infos
    try:
        assert fetch(server.port, str(keylog)) == list(SIZES)  # before any key log is loaded
        wait(lambda: 0 in infos() and infos()[0].state in ("CLOSED", "RESET", "FIN_WAIT"))
        running.driver.load_keylog(str(keylog))
        wait(lambda: any(isinstance(m, KeylogLoaded) for m in posted))
        [loaded] = [m for m in posted if isinstance(m, KeylogLoaded)]
        assert loaded.error is None and loaded.sessions == 1 and loaded.live
        assert fetch(server.port, str(keylog)) == list(SIZES)
        wait(lambda: len(running.exchanges()) >= len(SIZES))
        time.sleep(0.3)
        got, seen = running.exchanges(), infos()
    finally:
        running.close()
        server.close()
    assert seen[0].tls_decryption is None  # no key log then: nothing said of keys
    assert {tx.connection for tx in got} == {1}
    assert [tx.response.body_bytes for tx in got] == list(SIZES)
