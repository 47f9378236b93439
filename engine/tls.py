"""Read the ClientHello at the start of a TLS client stream: the version, SNI and ALPN it offers.

This is what wirepeek can tell about an encrypted connection without keys: which host the client
asked for (server_name), which application protocols it offered (ALPN), and which TLS version.
It is fed the first bytes of the client's reassembled stream, as many as have arrived, and
answers `NEED_MORE` until the whole ClientHello is there, even when it spans several records.

It must never:
- raise, whatever the bytes (malformed input is `None`, "not a ClientHello");
- return a string holding a control character: names come from the wire, so every byte that is
  not printable ASCII, and the backslash, is written as an escape such as `\\x1b`;
- look further than `MAX_HELLO_BYTES` into the stream, or do I/O of any kind.

An SSLv2-compatible ClientHello (a two-byte header with the high bit set, sent only by clients
from before TLS extensions existed, so never with SNI or ALPN) is not recognised: `looks_like_tls`
is False for it and `parse_client_hello` returns None.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

MAX_HELLO_BYTES: Final = 64 * 1024  # of stream, record headers included; beyond that, give up
MAX_RECORD_LENGTH: Final = 1 << 14  # RFC 8446 5.1: a plaintext record carries at most 2^14 bytes

CONTENT_HANDSHAKE: Final = 0x16
HANDSHAKE_CLIENT_HELLO: Final = 0x01
EXT_SERVER_NAME: Final = 0
EXT_ALPN: Final = 16
EXT_SUPPORTED_VERSIONS: Final = 43
NAME_TYPE_HOST_NAME: Final = 0
TLS_1_3: Final = 0x0304

VERSION_NAMES: Final = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}


class NeedMore(enum.Enum):
    """The type of `NEED_MORE`: the ClientHello is not complete yet; call again with more bytes."""

    NEED_MORE = "need more"


NEED_MORE: Final = NeedMore.NEED_MORE


@dataclass(frozen=True, slots=True)
class ClientHello:
    version: str  # "TLS 1.3" if supported_versions offers it, else the hello's legacy_version
    sni: str | None  # the first host_name of server_name, escaped
    alpn: tuple[str, ...]  # offered protocol names in the client's order, escaped


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
    message = _reassemble_hello(data[:MAX_HELLO_BYTES])
    if message is NEED_MORE:
        return None if len(data) >= MAX_HELLO_BYTES else NEED_MORE
    if message is None:
        return None
    try:
        return _read_hello_body(message[4:])
    except _Malformed:
        return None


def _reassemble_hello(data: bytes) -> bytes | NeedMore | None:
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
        if message and message[0] != HANDSHAKE_CLIENT_HELLO:
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


def _read_hello_body(body: bytes) -> ClientHello:
    """RFC 8446 4.1.2 (and RFC 5246 7.4.1.2, whose layout is the same)."""
    hello = _Reader(body)
    legacy_version = hello.uint(2)
    hello.take(32)  # random
    if hello.vector(1).remaining > 32:  # legacy_session_id
        raise _Malformed
    cipher_suites = hello.vector(2, min_size=2)
    if cipher_suites.remaining % 2:
        raise _Malformed
    hello.vector(1, min_size=1)  # legacy_compression_methods
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    offered: tuple[int, ...] = ()
    if hello.remaining:  # a hello without extensions simply ends here
        extensions = hello.vector(2)
        hello.expect_end()
        seen: set[int] = set()
        while extensions.remaining:
            kind = extensions.uint(2)
            content = extensions.vector(2)
            if kind in seen:  # RFC 8446 4.2: at most one extension of each type
                raise _Malformed
            seen.add(kind)
            if kind == EXT_SERVER_NAME:
                sni = _read_server_name(content)
            elif kind == EXT_ALPN:
                alpn = _read_alpn(content)
            elif kind == EXT_SUPPORTED_VERSIONS:
                offered = _read_supported_versions(content)
    version = TLS_1_3 if TLS_1_3 in offered else legacy_version
    return ClientHello(version=_version_name(version), sni=sni, alpn=alpn)


def _read_server_name(content: _Reader) -> str | None:
    """RFC 6066 section 3: a list of (name_type, name); we want the host_name."""
    names = content.vector(2, min_size=1)
    content.expect_end()
    host: str | None = None
    while names.remaining:
        name_type = names.uint(1)
        name = names.vector(2, min_size=1).rest()
        if name_type == NAME_TYPE_HOST_NAME and host is None:
            host = escape(name)
    return host


def _read_alpn(content: _Reader) -> tuple[str, ...]:
    """RFC 7301 section 3.1: a non-empty list of non-empty protocol names."""
    names = content.vector(2, min_size=1)
    content.expect_end()
    protocols = []
    while names.remaining:
        protocols.append(escape(names.vector(1, min_size=1).rest()))
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


def escape(raw: bytes) -> str:
    """Printable ASCII as is; every other byte, and the backslash, as a `\\xNN` escape."""
    return "".join(
        chr(byte) if 0x20 <= byte < 0x7F and byte != 0x5C else f"\\x{byte:02x}" for byte in raw
    )
