"""Protocol recognition from the first bytes, whatever the port."""

from __future__ import annotations

import struct

import pytest

from engine.bounds import Bounds
from engine.connections import ConnectionTable
from engine.detect import HTTP, HTTP2, NOTHING, TLS, Sniffer, TlsHelloReader, http_request_start
from engine.events import ConnectionInfo, HttpTransaction
from engine.reassembly import NO_ACK
from engine.tcp import Connection
from engine.tls import ServerHello
from tests.captures import Replay, capture, replay_file
from tests.feeding import feed, handshake, segments_of
from tests.synth import TcpConversation, write_pcap
from tests.test_tls import alpn, client_hello, record, selected_version, server_hello, sni

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


def _first_bytes(client: bytes, server: bytes = b"", end: bool = True) -> str | None:
    sniffer = Sniffer()
    decided = sniffer.add(True, 0.0, 0, client, NO_ACK) if client else None
    if decided is None and server:
        decided = sniffer.add(False, 0.0, 0, server, NO_ACK)
    if decided is None and end:  # the client's stream ends (or starts with a gap)
        decided = sniffer.ended(True)
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


# --- HTTP/2 ------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind: int, payload: bytes, flags: int = 0, stream: int = 0) -> bytes:
    """An HTTP/2 frame (RFC 9113 4.1): 24-bit length, type, flags, 31-bit stream id."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return h2_frame(0x4, b"".join(struct.pack("!HI", k, v) for k, v in pairs), flags=int(ack))


H2_CLIENT = PREFACE + h2_settings((0x3, 100), (0x4, 65535))  # MAX_CONCURRENT_STREAMS, WINDOW
H2_SERVER = h2_settings((0x3, 128)) + h2_settings(ack=True)


@pytest.mark.parametrize(
    "client,expected",
    [
        (PREFACE, HTTP2),
        (H2_CLIENT, HTTP2),
        (PREFACE[:3], None),  # "PRI": need more
        (PREFACE[:16], None),  # the request line of the preface: still need more
        (PREFACE[:-1], None),
        (b"PRI / HTTP/1.1\r\n", HTTP),  # not the preface: judged as HTTP/1
        (b"PRI\x00", NOTHING),
    ],
)
def test_h2_preface(client, expected):
    # The server's first bytes decide nothing; the client's stream goes on.
    assert _first_bytes(client, b"\x00", end=False) == expected


def test_h2_preface_split_at_every_offset():
    for cut in range(1, len(H2_CLIENT)):
        sniffer = Sniffer()
        first = sniffer.add(True, 0.0, 0, H2_CLIENT[:cut], NO_ACK)
        assert first in (None, HTTP2)
        assert first == HTTP2 or sniffer.add(True, 0.0, cut, H2_CLIENT[cut:], NO_ACK) == HTTP2


def replay_conversation(tmp_path, conv: TcpConversation) -> Replay:
    path = tmp_path / "conversation.pcap"
    write_pcap(path, conv.packets)
    return replay_file(str(path))


def test_cleartext_h2_on_any_port_is_http2_and_parsed_as_such(tmp_path):
    for port in (80, 8080, 50051):
        conv = TcpConversation(server=("10.0.0.2", port))
        conv.handshake()
        conv.client_send(H2_CLIENT)
        conv.server_send(H2_SERVER)
        conv.client_send(h2_settings(ack=True) + h2_frame(0x1, b"\x82\x86\x84", flags=0x5, stream=1))
        conv.close()
        replay = replay_conversation(tmp_path, conv)
        [info] = replay.infos()
        assert info.protocol == HTTP2, port
        [tx] = [e for e in replay.events if isinstance(e, HttpTransaction)]  # (engine.http2)
        assert (tx.stream, tx.request.method, tx.request.target, tx.response) == (1, "GET", "/", None)
        assert replay.stream(0, True) == H2_CLIENT + h2_settings(ack=True) + h2_frame(
            0x1, b"\x82\x86\x84", flags=0x5, stream=1)


# --- TLS: labelled by ALPN ---------------------------------------------------------------------


def tls_conversation(tmp_path, client: bytes, server: bytes) -> ConnectionInfo:
    conv = TcpConversation(server=("10.0.0.2", 443))
    conv.handshake()
    conv.client_send(client)
    conv.server_send(server)
    conv.client_send(b"\x17\x03\x03\x00\x05" + bytes(5))
    conv.close()
    [info] = replay_conversation(tmp_path, conv).infos()
    return info


TLS12_SUITE = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


@pytest.mark.parametrize(
    "offered,server,protocol,selected,version",
    [
        # TLS 1.2: the ServerHello says what was chosen.
        ((b"h2", b"http/1.1"), server_hello([alpn(b"h2")]), HTTP2, "h2", "TLS 1.2"),
        ((b"h2", b"http/1.1"), server_hello([alpn(b"http/1.1")]), TLS, "http/1.1", "TLS 1.2"),
        # TLS 1.3: the choice is encrypted; h2 among others stays TLS, h2 alone is HTTP/2.
        ((b"h2", b"http/1.1"), server_hello([selected_version(0x0304)], suite=0x1301), TLS, None,
         "TLS 1.3"),
        ((b"h2",), server_hello([selected_version(0x0304)], suite=0x1301), HTTP2, None, "TLS 1.3"),
        ((b"h2",), b"", HTTP2, None, None),  # the client's hello alone is enough
        ((), server_hello([]), TLS, None, "TLS 1.2"),
    ],
)
def test_tls_connection_is_http2_when_h2_is_known(tmp_path, offered, server, protocol, selected,
                                                  version):
    extensions = [sni(b"h2.test")] + ([alpn(*offered)] if offered else [])
    info = tls_conversation(tmp_path, client_hello(extensions), server)
    assert info.protocol == protocol
    assert info.sni == "h2.test"
    assert info.alpn == tuple(p.decode() for p in offered)
    if version is None:
        assert info.server_hello is None
    else:
        assert info.server_hello.version == version
        assert info.server_hello.alpn == selected
        assert info.server_hello.cipher == (TLS12_SUITE if version == "TLS 1.2"
                                            else "TLS_AES_128_GCM_SHA256")


def test_tls_hellos_split_at_every_offset_give_the_same_result():
    client = client_hello([sni(b"split.test"), alpn(b"h2", b"http/1.1")])
    server = server_hello([alpn(b"h2")]) + record(bytes(2000), version=0x0303)
    for cut in range(1, max(len(client), len(server))):
        segments = handshake()
        segments += segments_of(client, C0, [cut], from_client=True, ack=S0)
        segments += segments_of(server, S0, [cut], from_client=False, ack=C0 + len(client))
        info = feed(segments).info()
        assert (info.protocol, info.sni, info.server_hello.alpn) == (HTTP2, "split.test", "h2"), cut


def test_a_server_hello_that_never_ends_is_given_up_within_the_bound():
    # A 60 kB ServerHello in one-byte records: 360 kB of stream, past what the reader buffers.
    message = b"\x02" + (60000).to_bytes(3, "big") + bytes(60000)
    stream = b"".join(record(message[i : i + 1], version=0x0303) for i in range(len(message)))
    reader = TlsHelloReader()
    conn = Connection(ConnectionTable(Bounds()), 0, 0.0, 0, False)
    for at in range(0, len(stream), 1000):
        reader.on_data(conn, False, 0.0, at, stream[at : at + 1000], NO_ACK)
        assert len(reader.buffers[False]) < TlsHelloReader.LIMIT
    assert reader.finished[False] and not reader.finished[True]
    assert conn.server_hello is None


def test_recorded_loopback_h2_capture():
    """h2-loopback.pcap (scripts/make_h2_capture.py): OpenSSL's hellos and h2's frames."""
    replay = replay_file(capture("h2-loopback.pcap"))
    tls12, tls13, h2c = replay.infos()
    assert (tls12.protocol, tls13.protocol, h2c.protocol) == (HTTP2, TLS, HTTP2)
    assert tls12.sni == tls13.sni == "localhost"
    assert tls12.alpn == tls13.alpn == ("h2", "http/1.1")
    assert tls12.server_hello == ServerHello("TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                                             "h2")
    assert tls13.server_hello == ServerHello("TLS 1.3", "TLS_AES_256_GCM_SHA384", None)
    assert h2c.server_hello is None and h2c.sni is None
    assert replay.stream(2, True).startswith(PREFACE)
    [tx] = [e for e in replay.events if isinstance(e, HttpTransaction)]  # the h2c one's
    assert (tx.connection, tx.stream, tx.request.target, tx.response.status) == (2, 1, "/", 200)
