"""TLS and HTTP/2 seen live on loopback: real handshakes by Python's ssl module (OpenSSL), real
HTTP/2 spoken by the `h2` library, captured by `wirepeek -i lo --json`.

- TLS 1.2 with ALPN h2 selected in the ServerHello: the connection is `http2`, with its version,
  cipher suite and selected ALPN in the `tls` object.
- TLS 1.3 with h2 offered along with http/1.1: the selection is encrypted, so it stays `tls`.
- Cleartext HTTP/2 with prior knowledge (h2c) on an arbitrary port: `http2`, and no HTTP/1 records.

Needs root for the capture (CI runs as root) and the openssl command for a throwaway certificate;
skipped otherwise. `scripts/make_h2_capture.py` uses the same peers to write the committed capture
tests/data/pcaps/h2-loopback.pcap.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.tls import CIPHER_SUITE_NAMES
from tests.live import end_process, wait_for_line
from tests.test_cli import ROOT, WIREPEEK, records

h2 = pytest.importorskip("h2", reason="the h2 package (a test dependency) is not installed")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

BODY = b"hello over HTTP/2\n"


# --- the peers -----------------------------------------------------------------------------------


def serve_h2(sock: socket.socket) -> None:
    """Answer every request on one HTTP/2 connection with 200 and BODY until the client's end of
    the stream (after its GOAWAY), then close."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    with sock:
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.send_headers(event.stream_id, [(":status", "200"),
                                                        ("content-length", str(len(BODY)))])
                    conn.send_data(event.stream_id, BODY, end_stream=True)
            sock.sendall(conn.data_to_send())


def fetch_h2(sock: socket.socket, authority: str) -> bytes:
    """One GET / on a new HTTP/2 connection, then GOAWAY; returns the response body."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                          (":authority", authority)], end_stream=True)
    sock.sendall(conn.data_to_send())
    body = b""
    ended = False
    while not ended:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        sock.sendall(conn.data_to_send())
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.shutdown(socket.SHUT_WR)  # FIN (without a TLS close_notify: the server reads EOF)
    while sock.recv(65536):  # what is left (session tickets), until the server's FIN
        pass
    sock.close()
    return body


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made by the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class Server:
    """A listening socket on 127.0.0.1 whose connections `handle` serves, one thread each."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.handle = handle
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.handle(sock)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(e)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (closing does not)
        self.listener.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def tls_server(cert: Path, key: Path, alpn: list[str],
               version: ssl.TLSVersion) -> Callable[[socket.socket], None]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(alpn)
    ctx.minimum_version = ctx.maximum_version = version

    def handle(sock: socket.socket) -> None:
        serve_h2(ctx.wrap_socket(sock, server_side=True))

    return handle


def tls_fetch(port: int, alpn: list[str], version: ssl.TLSVersion,
              keylog: str | None = None) -> tuple[bytes, str | None]:
    """GET / over TLS; returns the body and the ALPN the handshake chose. keylog: the client
    writes its secrets there, as curl does with SSLKEYLOGFILE."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if keylog is not None:
        ctx.keylog_filename = keylog
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a throwaway certificate: what matters is the handshake
    ctx.set_alpn_protocols(alpn)
    ctx.minimum_version = ctx.maximum_version = version
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                           server_hostname="localhost")
    chosen = sock.selected_alpn_protocol()
    return fetch_h2(sock, f"localhost:{port}"), chosen


def h2c_fetch(port: int) -> bytes:
    return fetch_h2(socket.create_connection(("127.0.0.1", port), timeout=10), f"127.0.0.1:{port}")


def exchanges(folder: Path, keylog: str | None = None,
              ) -> tuple[list[int], Callable[[], dict[str, object]], Callable[[], None]]:
    """Start the three servers; return their ports (TLS 1.2, TLS 1.3, h2c), a function that runs
    one exchange with each (returning what the clients saw), and one that stops the servers."""
    cert, key = make_certificate(folder)
    servers = [
        Server(tls_server(cert, key, ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_2)),
        Server(tls_server(cert, key, ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3)),
        Server(serve_h2),
    ]
    tls12, tls13, h2c = (s.port for s in servers)

    def run() -> dict[str, object]:
        return {
            "tls12": tls_fetch(tls12, ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_2, keylog),
            "tls13": tls_fetch(tls13, ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3, keylog),
            "h2c": h2c_fetch(h2c),
        }

    def stop() -> None:
        for server in servers:
            server.close()
        errors = [e for server in servers for e in server.errors]
        assert not errors, errors

    return [tls12, tls13, h2c], run, stop


# --- the test ------------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_live_tls_and_h2c_connections_are_labelled_by_what_they_speak(tmp_path):
    ports, run, stop = exchanges(tmp_path)
    bpf = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen([*WIREPEEK, "-i", "lo", "--json", "--duration", "4", bpf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for_line(proc, b"capturing on lo", timeout=30)
        seen = run()
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
        stop()
    assert seen == {"tls12": (BODY, "h2"), "tls13": (BODY, "h2"), "h2c": BODY}
    assert proc.returncode == 0, err
    by_port = {int(r["server"].rsplit(":", 1)[1]): r for r in records(out, "connection")}
    # Only the h2c one is read (engine.http2): the others are encrypted, with no key log.
    [http] = records(out, "http")
    assert http["connection"] == by_port[ports[2]]["id"] and http["stream"] == 1
    assert (http["request"]["method"], http["request"]["target"], http["request"]["version"]) == (
        "GET", "/", "2")
    assert (http["response"]["status"], http["response"]["body_bytes"]) == (200, len(BODY))
    assert sorted(by_port) == sorted(ports)
    tls12, tls13, h2c = (by_port[p] for p in ports)

    assert tls12["protocol"] == "http2"  # the ServerHello selected h2
    assert tls12["tls"]["sni"] == "localhost"
    assert tls12["tls"]["alpn"] == ["h2", "http/1.1"]
    assert tls12["tls"]["version"] == "TLS 1.2"
    assert tls12["tls"]["cipher"] in CIPHER_SUITE_NAMES.values()
    assert tls12["tls"]["cipher"].startswith("TLS_ECDHE_")
    assert tls12["tls"]["alpn_selected"] == "h2"

    assert tls13["protocol"] == "tls"  # h2 was chosen, but in EncryptedExtensions
    assert tls13["tls"]["version"] == "TLS 1.3"
    assert tls13["tls"]["cipher"] in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256",
                                      "TLS_CHACHA20_POLY1305_SHA256")
    assert tls13["tls"]["alpn_selected"] is None

    assert h2c["protocol"] == "http2"
    assert "tls" not in h2c
    for rec in (tls12, tls13, h2c):
        assert rec["missing_bytes"] == {"client": 0, "server": 0}
        assert rec["conn_state"] == "SF"


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_live_http2_inside_tls_is_parsed_with_the_clients_key_log(tmp_path):
    """The same peers, the clients writing their key log as they go: the two TLS connections
    are decrypted live and their HTTP/2 is parsed like the h2c one's."""
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    ports, run, stop = exchanges(tmp_path, str(keylog))
    bpf = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen([*WIREPEEK, "-i", "lo", "--keylog", str(keylog), "--json",
                             "--duration", "4", bpf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    try:
        wait_for_line(proc, b"capturing on lo", timeout=30)
        seen = run()
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
        stop()
    assert seen == {"tls12": (BODY, "h2"), "tls13": (BODY, "h2"), "h2c": BODY}
    assert proc.returncode == 0, err
    by_port = {int(r["server"].rsplit(":", 1)[1]): r for r in records(out, "connection")}
    tls12, tls13, h2c = (by_port[p] for p in ports)
    assert tls12["tls"]["decrypted"] is True and tls13["tls"]["decrypted"] is True
    assert tls12["protocol"] == tls13["protocol"] == h2c["protocol"] == "http2"
    http = {r["connection"]: r for r in records(out, "http")}
    for conn in (tls12, tls13, h2c):
        r = http[conn["id"]]
        assert (r["stream"], r["request"]["method"], r["request"]["version"]) == (1, "GET", "2")
        assert (r["response"]["status"], r["response"]["body_bytes"]) == (200, len(BODY))
