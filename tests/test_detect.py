"""Protocol recognition from the first bytes, whatever the port."""

from __future__ import annotations

import pytest

from engine.detect import HTTP, NOTHING, TLS, Sniffer, http_request_start
from engine.reassembly import NO_ACK
from tests.feeding import feed, handshake
from tests.test_tls import alpn, client_hello, sni

C0, S0 = 1001, 5001


@pytest.mark.parametrize(
    "prefix,expected",
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"GE", None),
        (b"GET", None),
        (b"PROPFIND /x HTTP/1.1\r\n", True),
        (b"BREW /pot HTTP/1.1\r\n", True),  # unknown method, but a request line
        (b"BREW /pot coffee\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n", False),
        (b"get / HTTP/1.1\r\n", False),
        (b"\x16\x03\x01", False),
    ],
)
def test_http_request_start(prefix, expected):
    assert http_request_start(prefix) is expected


def _first_bytes(client: bytes, server: bytes = b"") -> str | None:
    sniffer = Sniffer()
    decided = sniffer.add(True, 0.0, 0, client, NO_ACK) if client else None
    if decided is None and server:
        decided = sniffer.add(False, 0.0, 0, server, NO_ACK)
    if decided is None:  # the client's stream ends (or starts with a gap): nothing from it
        decided = sniffer.add(True, 0.0, len(client), None, NO_ACK)
    return decided


@pytest.mark.parametrize(
    "client,server,expected",
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"", HTTP),
        (b"", b"HTTP/1.1 200 OK\r\n", HTTP),  # picked up mid-stream: only a response
        (b"\x16\x03\x01\x02\x00\x01", b"", TLS),
        (b"SSH-2.0-x\r\n", b"SSH-2.0-y\r\n", NOTHING),
        # The client's bytes decide whatever the server's say, so the verdict does not depend on
        # which direction the capture showed first: TLS answered by a plain-text HTTP error.
        (b"\x16\x03\x01\x02\x00\x01", b"HTTP/1.1 400 Bad Request\r\n", TLS),
    ],
)
def test_sniffer(client, server, expected):
    assert _first_bytes(client, server) == expected


def test_the_client_decides_even_when_the_server_is_seen_first():
    sniffer = Sniffer()
    assert sniffer.add(False, 0.0, 0, b"HTTP/1.1 400 Bad Request\r\n", NO_ACK) is None
    assert sniffer.add(True, 0.0, 0, b"\x16\x03\x01\x02\x00\x01", NO_ACK) == TLS


def test_tls_on_port_80_with_sni_and_alpn():
    data = client_hello([sni(b"api.example.com"), alpn(b"h2", b"http/1.1")])
    fed = feed(handshake() + [(True, "PA", C0, S0, data[:40]), (True, "PA", C0 + 40, S0, data[40:])])
    info = fed.info()
    assert info.protocol == "tls"
    assert info.sni == "api.example.com"
    assert info.alpn == ("h2", "http/1.1")


def test_non_http_bytes_on_port_80_stay_unrecognised():
    fed = feed(handshake() + [(True, "PA", C0, S0, b"\x00\x01binary junk"), (False, "PA", S0, C0 + 13, b"\x02")])
    assert fed.info().protocol is None
