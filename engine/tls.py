"""Read the hellos at the start of a TLS connection: what the client offers, what the server picks.

This is what wirepeek can tell about an encrypted connection without keys: which host the client
asked for (server_name), which application protocols it offered (ALPN), and, from the server's
ServerHello, the TLS version and cipher suite it chose and (TLS 1.2 and earlier) the application
protocol it selected. TLS 1.3 sends the selected ALPN in EncryptedExtensions, so there it is
unknown. Each parser is fed the first bytes of one side's reassembled stream, as many as have
arrived, and answers `NEED_MORE` until the whole hello is there, even when it spans several
records.

Names from the wire (SNI, ALPN) are text as sent: their bytes decoded as Latin-1, one character
per byte, nothing lost and nothing escaped. Showing them safely is the display's job
(`tui.escape`); JSON escapes control characters itself.

It must never:
- raise, whatever the bytes (malformed input is `None`, "not a hello");
- look further than `MAX_HELLO_BYTES` into the stream, or do I/O of any kind.

An SSLv2-compatible ClientHello (a two-byte header with the high bit set, sent only by clients
from before TLS extensions existed, so never with SNI or ALPN) is not recognised: `looks_like_tls`
is False for it and `parse_client_hello` returns None. A HelloRetryRequest (RFC 8446 4.1.4) has
the layout of a ServerHello and names the version and cipher suite of the final one, so it is
read as one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

DECRYPTED: Final = "decrypted"  # ConnectionInfo.tls_status of a connection engine.tlsdecrypt reads
MAX_HELLO_BYTES: Final = 64 * 1024  # of stream, record headers included; beyond that, give up
MAX_RECORD_LENGTH: Final = 1 << 14  # RFC 8446 5.1: a plaintext record carries at most 2^14 bytes

CONTENT_HANDSHAKE: Final = 0x16
HANDSHAKE_CLIENT_HELLO: Final = 0x01
HANDSHAKE_SERVER_HELLO: Final = 0x02
HANDSHAKE_CERTIFICATE: Final = 0x0B
EXT_SERVER_NAME: Final = 0
EXT_ALPN: Final = 16
EXT_SUPPORTED_VERSIONS: Final = 43
EXT_ENCRYPT_THEN_MAC: Final = 22
NAME_TYPE_HOST_NAME: Final = 0
TLS_1_3: Final = 0x0304

VERSION_NAMES: Final = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}

# IANA names (the TLS Cipher Suites registry) of the suites servers commonly choose; any other
# suite is shown by its number.
CIPHER_SUITE_NAMES: Final = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0xC09C: "TLS_RSA_WITH_AES_128_CCM",
    0xC09D: "TLS_RSA_WITH_AES_256_CCM",
    0xC0A0: "TLS_RSA_WITH_AES_128_CCM_8",
    0xC0A1: "TLS_RSA_WITH_AES_256_CCM_8",
    0xC0AC: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
    0xC0AD: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
    0xC0AE: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    0xC0AF: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
}


class NeedMore(enum.Enum):
    """The type of `NEED_MORE`: the hello is not complete yet; call again with more bytes."""

    NEED_MORE = "need more"


NEED_MORE: Final = NeedMore.NEED_MORE


@dataclass(frozen=True, slots=True)
class ClientHello:
    version: str  # "TLS 1.3" if supported_versions offers it, else the hello's legacy_version
    sni: str | None  # the first host_name of server_name, as sent (Latin-1)
    alpn: tuple[str, ...]  # offered protocol names in the client's order, as sent (Latin-1)
    # What decryption needs (engine.tlsdecrypt), not part of what a hello is said to be:
    random: bytes = field(default=b"", compare=False)  # the key log's key to the session


@dataclass(frozen=True, slots=True)
class ServerHello:
    version: str  # the negotiated version: supported_versions if present, else legacy_version
    cipher: str  # the chosen suite's IANA name, or its number as "0x1234"
    alpn: str | None  # the selected protocol as sent (Latin-1); None if not in the ServerHello
    # What decryption needs (engine.tlsdecrypt):
    random: bytes = field(default=b"", compare=False)
    suite: int = field(default=0, compare=False)  # the chosen suite's number
    version_number: int = field(default=0, compare=False)  # the negotiated version's number
    encrypt_then_mac: bool = field(default=False, compare=False)  # RFC 7366, for CBC suites


@dataclass(frozen=True, slots=True)
class Certificate:
    """The server's certificate (the first of its chain), as far as a view shows it."""

    subject: str  # RFC 4514, as the certificate says it
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str


def read_certificate(body: bytes, tls13: bool) -> Certificate | None:
    """The first certificate of a Certificate handshake message's body (RFC 5246 7.4.2; TLS 1.3
    adds a request context and extensions to each entry, RFC 8446 4.4.2); None if it is
    malformed or not an X.509 certificate that the `cryptography` package reads."""
    try:
        reader = _Reader(body)
        if tls13:
            reader.vector(1)  # certificate_request_context
        entries = reader.vector(3)
        if not entries.remaining:
            return None
        der = entries.vector(3, min_size=1).rest()
    except _Malformed:
        return None
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        return Certificate(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
        )
    except (ValueError, TypeError):
        return None


def parse_server_certificate(data: bytes) -> Certificate | NeedMore | None:
    """The certificate in the server's first flight of a TLS 1.2 or earlier handshake, from the
    server's stream's first byte (its ServerHello, then Certificate, in handshake records in
    the clear); None when there is none there (TLS 1.3 encrypts it; a resumed session has none)
    or it cannot be read; `NEED_MORE` while it is incomplete, within MAX_HELLO_BYTES."""
    messages = bytearray()
    offset = 0
    limit = data[:MAX_HELLO_BYTES]
    while True:
        header = limit[offset : offset + 5]
        if len(header) < 5 or offset + 5 + int.from_bytes(header[3:5], "big") > len(limit):
            return NEED_MORE if len(data) < MAX_HELLO_BYTES else None
        if header[0] != CONTENT_HANDSHAKE:
            return None  # (a ChangeCipherSpec: no certificate came)
        length = int.from_bytes(header[3:5], "big")
        messages += limit[offset + 5 : offset + 5 + length]
        offset += 5 + length
        at = 0
        while at + 4 <= len(messages):
            size = int.from_bytes(messages[at + 1 : at + 4], "big")
            if at + 4 + size > len(messages):
                break
            if messages[at] == HANDSHAKE_CERTIFICATE:
                return read_certificate(bytes(messages[at + 4 : at + 4 + size]), tls13=False)
            if messages[at] not in (HANDSHAKE_SERVER_HELLO,):
                return None  # past where a certificate comes
            at += 4 + size


def looks_like_tls(prefix: bytes) -> bool:
    """Do these bytes start like a TLS handshake record (0x16, 0x03, 0x00..0x04)?

    Only the first three bytes are judged. With one or two bytes the answer is "maybe": True when
    what is there is consistent, so a caller that must be sure waits for the third byte. Empty
    bytes are False.
    """
    if not prefix or prefix[0] != CONTENT_HANDSHAKE:
        return False
    if len(prefix) >= 2 and prefix[1] != 0x03:
        return False
    return len(prefix) < 3 or prefix[2] <= 0x04


def parse_client_hello(data: bytes) -> ClientHello | NeedMore | None:
    """Parse the ClientHello at the start of `data`, the client's stream from its first byte.

    Returns the ClientHello once complete (bytes after it are ignored), `NEED_MORE` while it is a
    consistent but incomplete start, and None when it is not a ClientHello, is malformed, or is
    still incomplete after `MAX_HELLO_BYTES` of stream.
    """
    message = _first_message(data, HANDSHAKE_CLIENT_HELLO)
    if not isinstance(message, bytes):
        return message
    try:
        return _read_client_hello(message[4:])
    except _Malformed:
        return None


def parse_server_hello(data: bytes) -> ServerHello | NeedMore | None:
    """Parse the ServerHello at the start of `data`, the server's stream from its first byte.

    The same answers as `parse_client_hello`. Bytes after the ServerHello (Certificate and the
    rest of a TLS 1.2 flight, or ciphertext) are not looked at.
    """
    message = _first_message(data, HANDSHAKE_SERVER_HELLO)
    if not isinstance(message, bytes):
        return message
    try:
        return _read_server_hello(message[4:])
    except _Malformed:
        return None


def cipher_suite_name(suite: int) -> str:
    return CIPHER_SUITE_NAMES.get(suite, f"0x{suite:04x}")


def _first_message(data: bytes, kind: int) -> bytes | NeedMore | None:
    """The first handshake message (header included) if it is of this kind, within the bound."""
    message = _reassemble_message(data[:MAX_HELLO_BYTES], kind)
    if message is NEED_MORE and len(data) >= MAX_HELLO_BYTES:
        return None
    return message


def _reassemble_message(data: bytes, kind: int) -> bytes | NeedMore | None:
    """Join the payloads of the leading handshake records until they hold one whole message."""
    message = bytearray()
    offset = 0
    while True:
        header = data[offset : offset + 5]
        if len(header) < 5:
            return NEED_MORE if not header or looks_like_tls(header) else None
        if not looks_like_tls(header):
            return None
        length = int.from_bytes(header[3:5], "big")
        if not 0 < length <= MAX_RECORD_LENGTH:  # zero-length handshake records are forbidden
            return None
        fragment = data[offset + 5 : offset + 5 + length]
        message += fragment
        if message and message[0] != kind:
            return None
        if len(message) >= 4:
            size = 4 + int.from_bytes(message[1:4], "big")
            if size > MAX_HELLO_BYTES:
                return None
            if len(message) >= size:
                return bytes(message[:size])
        if len(fragment) < length:
            return NEED_MORE
        offset += 5 + length


class _Malformed(Exception):
    pass


class _Reader:
    """Reads big-endian integers and length-prefixed vectors, raising _Malformed past the end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise _Malformed
        self._pos += size
        return self._data[self._pos - size : self._pos]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int, *, min_size: int = 0) -> _Reader:
        body = self.take(self.uint(length_size))
        if len(body) < min_size:
            raise _Malformed
        return _Reader(body)

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def expect_end(self) -> None:
        if self.remaining:
            raise _Malformed


def _read_client_hello(body: bytes) -> ClientHello:
    """RFC 8446 4.1.2 (and RFC 5246 7.4.1.2, whose layout is the same)."""
    hello = _Reader(body)
    legacy_version = hello.uint(2)
    random = hello.take(32)
    if hello.vector(1).remaining > 32:  # legacy_session_id
        raise _Malformed
    cipher_suites = hello.vector(2, min_size=2)
    if cipher_suites.remaining % 2:
        raise _Malformed
    hello.vector(1, min_size=1)  # legacy_compression_methods
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    offered: tuple[int, ...] = ()
    for kind, content in _extensions(hello):
        if kind == EXT_SERVER_NAME:
            sni = _read_server_name(content)
        elif kind == EXT_ALPN:
            alpn = _read_alpn(content)
        elif kind == EXT_SUPPORTED_VERSIONS:
            offered = _read_supported_versions(content)
    version = TLS_1_3 if TLS_1_3 in offered else legacy_version
    return ClientHello(version=_version_name(version), sni=sni, alpn=alpn, random=random)


def _read_server_hello(body: bytes) -> ServerHello:
    """RFC 8446 4.1.3 (and RFC 5246 7.4.1.3, whose layout is the same)."""
    hello = _Reader(body)
    version = hello.uint(2)
    random = hello.take(32)
    if hello.vector(1).remaining > 32:  # legacy_session_id_echo
        raise _Malformed
    suite = hello.uint(2)
    hello.uint(1)  # legacy_compression_method
    alpn: str | None = None
    etm = False
    for kind, content in _extensions(hello):
        if kind == EXT_ENCRYPT_THEN_MAC:
            etm = True
        elif kind == EXT_ALPN:
            names = _read_alpn(content)
            if len(names) != 1:  # RFC 7301 3.1: the server selects exactly one
                raise _Malformed
            alpn = names[0]
        elif kind == EXT_SUPPORTED_VERSIONS:
            version = content.uint(2)  # RFC 8446 4.2.1, the ServerHello form: one version
            content.expect_end()
    return ServerHello(
        version=_version_name(version),
        cipher=cipher_suite_name(suite),
        alpn=alpn,
        random=random,
        suite=suite,
        version_number=version,
        encrypt_then_mac=etm,
    )


def _extensions(hello: _Reader) -> list[tuple[int, _Reader]]:
    """The extensions block that ends a hello: (type, content) pairs; a hello may end without."""
    if not hello.remaining:
        return []
    block = hello.vector(2)
    hello.expect_end()
    found: list[tuple[int, _Reader]] = []
    seen: set[int] = set()
    while block.remaining:
        kind = block.uint(2)
        content = block.vector(2)
        if kind in seen:  # RFC 8446 4.2: at most one extension of each type
            raise _Malformed
        seen.add(kind)
        found.append((kind, content))
    return found


def _read_server_name(content: _Reader) -> str | None:
    """RFC 6066 section 3: a list of (name_type, name); we want the host_name."""
    names = content.vector(2, min_size=1)
    content.expect_end()
    host: str | None = None
    while names.remaining:
        name_type = names.uint(1)
        name = names.vector(2, min_size=1).rest()
        if name_type == NAME_TYPE_HOST_NAME and host is None:
            host = name.decode("latin-1")
    return host


def _read_alpn(content: _Reader) -> tuple[str, ...]:
    """RFC 7301 section 3.1: a non-empty list of non-empty protocol names."""
    names = content.vector(2, min_size=1)
    content.expect_end()
    protocols = []
    while names.remaining:
        protocols.append(names.vector(1, min_size=1).rest().decode("latin-1"))
    return tuple(protocols)


def _read_supported_versions(content: _Reader) -> tuple[int, ...]:
    """RFC 8446 4.2.1, the ClientHello form: a list of two-byte versions."""
    versions = content.vector(1, min_size=2)
    content.expect_end()
    if versions.remaining % 2:
        raise _Malformed
    return tuple(versions.uint(2) for _ in range(versions.remaining // 2))


def _version_name(version: int) -> str:
    return VERSION_NAMES.get(version, f"0x{version:04x}")
