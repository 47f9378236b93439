"""Tests of engine.tls: hellos built byte by byte here, random and mutated input, real captures."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.tls import (
    CIPHER_SUITE_NAMES,
    MAX_HELLO_BYTES,
    NEED_MORE,
    ClientHello,
    ServerHello,
    cipher_suite_name,
    looks_like_tls,
    parse_client_hello,
    parse_server_hello,
)

PCAPS = Path(__file__).parent / "data" / "pcaps"

# --- building hellos -----------------------------------------------------------------------------


def vec1(body: bytes) -> bytes:
    return struct.pack("!B", len(body)) + body


def vec2(body: bytes) -> bytes:
    return struct.pack("!H", len(body)) + body


def extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!H", kind) + vec2(body)


def server_name(*names: tuple[int, bytes]) -> bytes:
    return extension(0, vec2(b"".join(struct.pack("!B", t) + vec2(n) for t, n in names)))


def sni(host: bytes) -> bytes:
    return server_name((0, host))


def alpn(*names: bytes) -> bytes:
    return extension(16, vec2(b"".join(vec1(n) for n in names)))


def supported_versions(*versions: int) -> bytes:
    return extension(43, vec1(b"".join(struct.pack("!H", v) for v in versions)))


def padding(size: int) -> bytes:
    return extension(21, bytes(size))


def hello_body(
    extensions: list[bytes] | None,
    *,
    version: int = 0x0303,
    session_id: bytes = b"\x11" * 32,
    suites: bytes = b"\x13\x01\xc0\x2f",
    compression: bytes = b"\x00",
) -> bytes:
    """A ClientHello body; extensions None leaves out the extensions block altogether."""
    body = struct.pack("!H", version) + bytes(range(32)) + vec1(session_id)
    body += vec2(suites) + vec1(compression)
    if extensions is not None:
        body += vec2(b"".join(extensions))
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return struct.pack("!B", msg_type) + len(body).to_bytes(3, "big") + body


def record(fragment: bytes, content_type: int = 0x16, version: int = 0x0301) -> bytes:
    return struct.pack("!BHH", content_type, version, len(fragment)) + fragment


def records(message: bytes, size: int) -> bytes:
    """The message cut into handshake records of `size` bytes (the last one shorter)."""
    return b"".join(record(message[i : i + size]) for i in range(0, len(message), size))


def client_hello(extensions: list[bytes] | None, **fields: bytes | int) -> bytes:
    """A whole first flight: one record holding one ClientHello."""
    return record(handshake(hello_body(extensions, **fields)))  # type: ignore[arg-type]


def hello(
    version: str = "TLS 1.2", sni: str | None = None, alpn: tuple[str, ...] = ()
) -> ClientHello:
    return ClientHello(version=version, sni=sni, alpn=alpn)


TYPICAL = handshake(hello_body([sni(b"example.com"), alpn(b"h2", b"http/1.1")]))
TYPICAL_RESULT = hello(sni="example.com", alpn=("h2", "http/1.1"))

# --- table: valid hellos -------------------------------------------------------------------------

VALID = [
    pytest.param(record(TYPICAL), TYPICAL_RESULT, id="sni-and-alpn"),
    pytest.param(client_hello(None), hello(), id="no-extensions-block"),
    pytest.param(client_hello([]), hello(), id="empty-extensions-block"),
    pytest.param(client_hello([sni(b"a.example")]), hello(sni="a.example"), id="sni-only"),
    pytest.param(
        client_hello([alpn(b"h2", b"http/1.1", b"spdy/3.1")]),
        hello(alpn=("h2", "http/1.1", "spdy/3.1")),
        id="multiple-alpn-in-order",
    ),
    pytest.param(
        record(TYPICAL[:40]) + record(TYPICAL[40:]), TYPICAL_RESULT, id="fragmented-two-records"
    ),
    pytest.param(records(TYPICAL, 1), TYPICAL_RESULT, id="one-byte-records"),
    pytest.param(records(TYPICAL, 3), TYPICAL_RESULT, id="header-split-across-records"),
    pytest.param(
        client_hello([supported_versions(0x0A0A, 0x0304, 0x0303), sni(b"x.test")]),
        hello("TLS 1.3", sni="x.test"),
        id="tls13-via-supported-versions",
    ),
    pytest.param(
        client_hello([supported_versions(0x0303, 0x0302)]),
        hello("TLS 1.2"),
        id="supported-versions-without-tls13",
    ),
    pytest.param(client_hello(None, version=0x0301), hello("TLS 1.0"), id="legacy-tls10"),
    pytest.param(client_hello(None, version=0x0300), hello("SSL 3.0"), id="ssl3"),
    pytest.param(client_hello(None, version=0x0305), hello("0x0305"), id="unknown-version-as-hex"),
    pytest.param(client_hello(None, session_id=b""), hello(), id="empty-session-id"),
    pytest.param(
        client_hello([sni(b"evil\x1b[2J\x07\r\x00\x9b\xe9.test\\x1b"), alpn(b"h\xff2", b"\x00")]),
        hello(sni="evil\x1b[2J\x07\r\x00\x9b\xe9.test\\x1b", alpn=("h\xff2", "\x00")),
        id="control-bytes-as-sent",
    ),
    pytest.param(
        client_hello([server_name((7, b"other"), (0, b"host.test"), (0, b"second.test"))]),
        hello(sni="host.test"),
        id="first-host-name-of-list",
    ),
    pytest.param(
        client_hello(
            [extension(0xFF01, b"\x00"), padding(100), sni(b"s.test"), extension(0x0A0A, b"")]
        ),
        hello(sni="s.test"),
        id="unknown-extensions-skipped",
    ),
    pytest.param(
        record(TYPICAL) + record(b"\x01", content_type=0x14) + b"\x17\x03\x03garbage",
        TYPICAL_RESULT,
        id="bytes-after-hello-ignored",
    ),
    pytest.param(
        record(TYPICAL + handshake(b"next", msg_type=0x0B)),
        TYPICAL_RESULT,
        id="hello-followed-by-message-in-same-record",
    ),
    pytest.param(record(TYPICAL, version=0x0303), TYPICAL_RESULT, id="record-version-tls12"),
    pytest.param(
        records(handshake(hello_body([sni(b"big.test"), padding(40000)])), 16384),
        hello(sni="big.test"),
        id="large-hello-in-full-records",
    ),
]


@pytest.mark.parametrize(("stream", "expected"), VALID)
def test_valid_hello(stream: bytes, expected: ClientHello) -> None:
    assert parse_client_hello(stream) == expected


@pytest.mark.parametrize(("stream", "expected"), VALID)
def test_every_truncation_needs_more(stream: bytes, expected: ClientHello) -> None:
    assert all(parse_client_hello(stream[:n]) is NEED_MORE for n in range(hello_end(stream)))


def hello_end(stream: bytes) -> int:
    """How many bytes of the stream the parser needs before it answers (the hello's end)."""
    return next(
        n for n in range(len(stream) + 1) if parse_client_hello(stream[:n]) is not NEED_MORE
    )


def test_two_records_split_at_every_offset() -> None:
    for cut in range(1, len(TYPICAL)):
        assert parse_client_hello(record(TYPICAL[:cut]) + record(TYPICAL[cut:])) == TYPICAL_RESULT


# --- table: not a ClientHello, or malformed ------------------------------------------------------


def tamper(body: bytes, old: bytes, new: bytes) -> bytes:
    assert body.count(old) == 1
    return record(handshake(body.replace(old, new)))


NOT_A_HELLO = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh"),
    pytest.param(bytes(64), id="zeros"),
    pytest.param(b"\x16\x02", id="bad-major-version"),
    pytest.param(b"\x16\x03\x05\x00\x05", id="bad-minor-version"),
    pytest.param(record(TYPICAL, content_type=0x17), id="application-data-record"),
    pytest.param(record(handshake(hello_body(None), msg_type=2)), id="server-hello"),
    pytest.param(b"\x16\x03\x01\x00\x00" + record(TYPICAL), id="zero-length-record"),
    pytest.param(b"\x16\x03\x01\x40\x01\x01", id="record-longer-than-2^14"),
    pytest.param(
        record(TYPICAL[:20]) + record(b"\x02\x28", content_type=0x15) + record(TYPICAL[20:]),
        id="alert-inside-fragmented-hello",
    ),
    pytest.param(
        b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + bytes(37), id="sslv2-compatible"
    ),
    pytest.param(record(handshake(b"")), id="empty-hello"),
    pytest.param(record(handshake(hello_body(None)[:-1])), id="no-compression-methods"),
    pytest.param(client_hello(None, suites=b"\x13"), id="odd-cipher-suites"),
    pytest.param(client_hello(None, suites=b""), id="no-cipher-suites"),
    pytest.param(client_hello(None, compression=b""), id="empty-compression-methods"),
    pytest.param(client_hello(None, session_id=bytes(33)), id="session-id-too-long"),
    pytest.param(record(handshake(hello_body([]) + b"\x00")), id="bytes-after-extensions"),
    pytest.param(record(handshake(hello_body(None) + b"\x00")), id="one-stray-byte-for-extensions"),
    pytest.param(
        client_hello([extension(0, b"\x00\x14\x00" + vec2(b"a.test"))]),
        id="server-name-list-overruns",
    ),
    pytest.param(
        tamper(TYPICAL[4:], sni(b"example.com"), sni(b"example.com") + b"\x00\x00\x00\x05abc"),
        id="extension-overruns-block",
    ),
    pytest.param(client_hello([sni(b"a.test"), sni(b"b.test")]), id="duplicate-extension"),
    pytest.param(client_hello([extension(0, vec2(b""))]), id="empty-server-name-list"),
    pytest.param(client_hello([sni(b"")]), id="empty-host-name"),
    pytest.param(client_hello([extension(0, vec2(b"\x00\x00\x05ab"))]), id="host-name-overruns"),
    pytest.param(
        client_hello([extension(0, vec2(b"\x00" + vec2(b"a")) + b"!")]),
        id="bytes-after-server-name-list",
    ),
    pytest.param(client_hello([alpn()]), id="empty-alpn-list"),
    pytest.param(client_hello([alpn(b"h2", b"")]), id="empty-alpn-name"),
    pytest.param(client_hello([extension(43, vec1(b"\x03\x04\x03"))]), id="odd-supported-versions"),
    pytest.param(client_hello([extension(43, vec1(b""))]), id="empty-supported-versions"),
]


@pytest.mark.parametrize("stream", NOT_A_HELLO)
def test_not_a_hello(stream: bytes) -> None:
    assert parse_client_hello(stream) is None


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x16", id="one-byte"),
        pytest.param(b"\x16\x03", id="two-bytes"),
        pytest.param(b"\x16\x03\x01\x00", id="partial-header"),
        pytest.param(b"\x16\x03\x01\x00\x05", id="header-only"),
        pytest.param(b"\x16\x03\x01\x00\x05\x01", id="hello-type-only"),
        pytest.param(record(TYPICAL)[:-1], id="last-byte-missing"),
    ],
)
def test_needs_more(stream: bytes) -> None:
    assert parse_client_hello(stream) is NEED_MORE


# --- the 64 KiB bound ----------------------------------------------------------------------------


def test_declared_hello_larger_than_bound_is_refused_at_once() -> None:
    oversized = b"\x01" + (MAX_HELLO_BYTES).to_bytes(3, "big")
    assert parse_client_hello(record(oversized)) is None


def test_hello_not_complete_within_bound_is_refused() -> None:
    # 1-byte records multiply the stream by six: this 12 kB hello needs 72 kB of stream.
    message = handshake(hello_body([sni(b"far.test"), padding(12000)]))
    assert parse_client_hello(records(message, 16384)) == hello(sni="far.test")
    stream = records(message, 1)
    assert len(stream) > MAX_HELLO_BYTES
    assert parse_client_hello(stream[: MAX_HELLO_BYTES - 1]) is NEED_MORE
    assert parse_client_hello(stream[:MAX_HELLO_BYTES]) is None
    assert parse_client_hello(stream) is None


def test_complete_hello_followed_by_much_more_data() -> None:
    assert parse_client_hello(record(TYPICAL) + bytes(2 * MAX_HELLO_BYTES)) == TYPICAL_RESULT


# --- looks_like_tls ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"", False),
        (b"\x16", True),  # maybe: consistent so far
        (b"\x16\x03", True),  # maybe
        (b"\x16\x03\x00", True),
        (b"\x16\x03\x01", True),
        (b"\x16\x03\x04", True),
        (b"\x16\x03\x01\x02\x00\x01", True),
        (b"\x16\x03\x05", False),
        (b"\x16\x02", False),
        (b"\x16\x04\x01", False),
        (b"\x17\x03\x03", False),  # application data: not the start of a client stream
        (b"\x15", False),
        (b"GET", False),
        (b"\x80\x2e\x01\x03\x01", False),  # SSLv2-compatible hello: not recognised
    ],
)
def test_looks_like_tls(prefix: bytes, expected: bool) -> None:
    assert looks_like_tls(prefix) is expected


# --- properties ----------------------------------------------------------------------------------


def assert_safe(result: object) -> None:
    """An answer of the parsers' kinds, whose names are Latin-1 text (one character per byte)."""
    assert result is None or result is NEED_MORE or isinstance(result, ClientHello | ServerHello)
    if isinstance(result, ClientHello):
        assert all(" " <= ch <= "~" for ch in result.version)
        for text in (result.sni or "", *result.alpn):
            assert isinstance(text, str) and max(map(ord, text), default=0) <= 0xFF
    if isinstance(result, ServerHello):
        assert all(" " <= ch <= "~" for ch in result.version + result.cipher)
        assert result.alpn is None or max(map(ord, result.alpn)) <= 0xFF


@given(st.binary(max_size=512))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert_safe(parse_client_hello(data))
    looks_like_tls(data)


@given(st.binary(max_size=512))
def test_random_bytes_behind_a_record_header_never_raise(data: bytes) -> None:
    assert_safe(parse_client_hello(record(b"\x01" + len(data).to_bytes(3, "big") + data)))
    assert_safe(parse_client_hello(b"\x16\x03\x01" + data))


SEEDS = [cast(bytes, p.values[0]) for p in VALID]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of the seeds with up to four bytes flipped, set, inserted, deleted, or cut there."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at < len(data):
            if action == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif action == "set":
                data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
            else:
                del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


@settings(max_examples=500)
@given(mutated(SEEDS))
def test_mutated_hellos_never_raise(data: bytes) -> None:
    assert_safe(parse_client_hello(data))


@given(
    st.binary(min_size=1, max_size=300),
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6),
)
def test_names_from_the_wire_are_latin1_text_as_sent(host: bytes, protocols: list[bytes]) -> None:
    result = parse_client_hello(client_hello([sni(host), alpn(*protocols)]))
    assert_safe(result)
    assert isinstance(result, ClientHello)
    assert result.sni is not None
    assert result.sni.encode("latin-1") == host
    assert [p.encode("latin-1") for p in result.alpn] == protocols


# --- the ServerHello ----------------------------------------------------------------------------

HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def server_hello_body(
    extensions: list[bytes] | None,
    *,
    version: int = 0x0303,
    random: bytes = bytes(range(32, 64)),
    session_id: bytes = b"\x11" * 32,
    suite: int = 0xC02F,
    compression: int = 0,
) -> bytes:
    body = struct.pack("!H", version) + random + vec1(session_id)
    body += struct.pack("!HB", suite, compression)
    if extensions is not None:
        body += vec2(b"".join(extensions))
    return body


def server_hello(extensions: list[bytes] | None, **fields: bytes | int) -> bytes:
    """A server's first flight: one record holding one ServerHello."""
    body = server_hello_body(extensions, **fields)  # type: ignore[arg-type]
    return record(handshake(body, msg_type=2), version=0x0303)


def selected_version(version: int) -> bytes:
    return extension(43, struct.pack("!H", version))


def key_share() -> bytes:
    return extension(51, struct.pack("!H", 0x001D) + vec2(bytes(32)))


TLS12_H2 = handshake(server_hello_body([alpn(b"h2"), extension(0xFF01, b"\x00")]), msg_type=2)
TLS12_H2_RESULT = ServerHello("TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "h2")
CERTIFICATE = handshake(bytes(3000), msg_type=0x0B)

VALID_SERVER = [
    pytest.param(record(TLS12_H2), TLS12_H2_RESULT, id="tls12-alpn-h2"),
    pytest.param(
        server_hello([selected_version(0x0304), key_share()], suite=0x1301),
        ServerHello("TLS 1.3", "TLS_AES_128_GCM_SHA256", None),
        id="tls13-via-supported-versions",
    ),
    pytest.param(
        server_hello([selected_version(0x0304), key_share()], suite=0x1302, random=HRR_RANDOM),
        ServerHello("TLS 1.3", "TLS_AES_256_GCM_SHA384", None),
        id="hello-retry-request",
    ),
    pytest.param(
        server_hello(None, suite=0x002F, version=0x0301),
        ServerHello("TLS 1.0", "TLS_RSA_WITH_AES_128_CBC_SHA", None),
        id="tls10-no-extensions-block",
    ),
    pytest.param(
        server_hello([], suite=0xFF85), ServerHello("TLS 1.2", "0xff85", None), id="unnamed-suite"
    ),
    pytest.param(
        server_hello([alpn(b"h\x1b]0;x\x07\r\x00\xe9\\")]),
        ServerHello(
            "TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "h\x1b]0;x\x07\r\x00\xe9\\"
        ),
        id="alpn-as-sent",
    ),
    pytest.param(
        server_hello(None, session_id=b""),
        ServerHello("TLS 1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", None),
        id="empty-session-id",
    ),
    pytest.param(records(TLS12_H2, 7), TLS12_H2_RESULT, id="seven-byte-records"),
    pytest.param(
        record(TLS12_H2 + CERTIFICATE + handshake(b"", msg_type=0x0E)),
        TLS12_H2_RESULT,
        id="rest-of-tls12-flight-in-same-record",
    ),
    pytest.param(
        record(TLS12_H2 + CERTIFICATE[:100]), TLS12_H2_RESULT, id="record-cut-after-hello"
    ),
]


@pytest.mark.parametrize(("stream", "expected"), VALID_SERVER)
def test_valid_server_hello(stream: bytes, expected: ServerHello) -> None:
    assert parse_server_hello(stream) == expected
    end = next(n for n in range(len(stream) + 1) if parse_server_hello(stream[:n]) is not NEED_MORE)
    assert all(parse_server_hello(stream[:n]) is NEED_MORE for n in range(end))
    assert parse_server_hello(stream[:end]) == expected


NOT_A_SERVER_HELLO = [
    pytest.param(record(TYPICAL), id="client-hello"),
    pytest.param(record(b"\x02\x28", content_type=0x15), id="alert"),
    pytest.param(b"HTTP/1.1 200 OK\r\n", id="http"),
    pytest.param(server_hello(None, session_id=bytes(33)), id="session-id-too-long"),
    pytest.param(record(handshake(server_hello_body(None)[:-1], msg_type=2)), id="no-compression"),
    pytest.param(server_hello([alpn(b"h2", b"http/1.1")]), id="two-alpn-selected"),
    pytest.param(server_hello([alpn()]), id="empty-alpn-list"),
    pytest.param(server_hello([extension(43, b"\x03")]), id="short-selected-version"),
    pytest.param(server_hello([extension(43, b"\x03\x04\x00")]), id="long-selected-version"),
    pytest.param(server_hello([alpn(b"h2"), alpn(b"h2")]), id="duplicate-extension"),
    pytest.param(
        record(handshake(server_hello_body([]) + b"\x00", msg_type=2)), id="bytes-after-extensions"
    ),
]


@pytest.mark.parametrize("stream", NOT_A_SERVER_HELLO)
def test_not_a_server_hello(stream: bytes) -> None:
    assert parse_server_hello(stream) is None


def test_server_hello_not_complete_within_bound_is_refused() -> None:
    stream = records(handshake(server_hello_body([padding(12000)]), msg_type=2), 1)
    assert parse_server_hello(stream[: MAX_HELLO_BYTES - 1]) is NEED_MORE
    assert parse_server_hello(stream[:MAX_HELLO_BYTES]) is None


def test_cipher_suite_names_are_the_iana_names() -> None:
    from scapy.layers.tls.crypto.suites import _tls_cipher_suites  # an independent list

    for suite, name in CIPHER_SUITE_NAMES.items():
        assert _tls_cipher_suites[suite] == name
    assert cipher_suite_name(0x0A0A) == "0x0a0a"


@given(st.binary(max_size=512))
def test_random_server_bytes_never_raise(data: bytes) -> None:
    assert_safe(parse_server_hello(data))
    assert_safe(parse_server_hello(record(b"\x02" + len(data).to_bytes(3, "big") + data)))


SERVER_SEEDS = [cast(bytes, p.values[0]) for p in VALID_SERVER]


@settings(max_examples=500)
@given(st.data())
def test_mutated_server_hellos_never_raise(data: st.DataObject) -> None:
    assert_safe(parse_server_hello(data.draw(mutated(SERVER_SEEDS))))


# --- real captures -------------------------------------------------------------------------------


def client_bytes_after_connect_response(path: Path) -> bytes:
    """The client's TCP payload sent after the proxy answered its CONNECT: the tunnelled stream.

    These captures hold one connection, in order, without loss; retransmitted segments are
    dropped by sequence number. Ethernet trailer padding is not payload (scapy keeps it apart).
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw
    from scapy.utils import rdpcap

    segments = []
    for packet in rdpcap(str(path)):
        if TCP not in packet:
            # BSD loopback with AF_INET6 = 30 (macOS), which scapy leaves undecoded.
            raw = bytes(packet)[4:]
            packet = IPv6(raw) if raw[0] >> 4 == 6 else IP(raw)
        segments.append(packet[TCP])
    client_port = next(s.sport for s in segments if s.flags.S and not s.flags.A)
    answered = next(i for i, s in enumerate(segments) if s.dport == client_port and Raw in s)
    stream = b""
    seen: set[int] = set()
    for s in segments[answered + 1 :]:
        if s.sport == client_port and Raw in s and s.seq not in seen:
            seen.add(s.seq)
            stream += s[Raw].load
    return stream


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        pytest.param(
            "zeek/http__connect-with-header.pcap",
            hello(sni="secure.newegg.com", alpn=("h2", "spdy/3.1", "http/1.1")),
            id="zeek-connect-with-header",
        ),
        # A CrowdStrike sensor through a proxy: a TLS 1.2 hello with neither SNI nor ALPN.
        pytest.param("arkime/https-connect.pcap", hello(), id="arkime-https-connect"),
        # Starts like a handshake record, but the record is empty and zeros follow.
        pytest.param(
            "suricata-verify/http-connect__http-connect-tls__input.pcap",
            None,
            id="suricata-http-connect-tls-fake-record",
        ),
    ],
)
def test_real_capture(capture: str, expected: ClientHello | None) -> None:
    stream = client_bytes_after_connect_response(PCAPS / capture)
    assert looks_like_tls(stream)
    assert parse_client_hello(stream) == expected
    if expected is not None:
        assert parse_client_hello(stream[: hello_end(stream)]) == expected
        assert all(parse_client_hello(stream[:n]) is NEED_MORE for n in range(hello_end(stream)))
