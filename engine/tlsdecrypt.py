"""TLS connections decrypted with secrets from a key log (engine.keylog), into their plaintext.

A `TlsDecryptor` is a stream consumer (engine.tcp.StreamConsumer) of a connection the sniffer
recognised as TLS. It reads each direction's records (RFC 8446 5, RFC 5246 6.2), follows the
handshake in them, derives the record keys from the secrets the key log has for the session
(found by the ClientHello random) and decrypts application data into a plaintext stream of each
direction, which it gives to the consumer the plaintext calls for: engine.http's parser when the
client speaks HTTP/1.x. So the exchanges of a decrypted HTTPS connection are the same records as
those of a plain HTTP one.

What it reads:
- TLS 1.3 (RFC 8446 7): record keys from the traffic secrets in the key log (HKDF-Expand-Label:
  "key", "iv"), handshake keys until each side's Finished, then application keys; KeyUpdate.
  A client record the handshake keys do not open is tried as 0-RTT data under
  CLIENT_EARLY_TRAFFIC_SECRET when the key log has it (checked with records the tests write:
  Python's ssl cannot send early data). AES-128/256-GCM, ChaCha20-Poly1305, AES-128-CCM and
  CCM_8.
- TLS 1.2, 1.1 and 1.0 (RFC 5246 6.3): the key block from CLIENT_RANDOM's master secret, both
  randoms and the suite's PRF (P_SHA256/P_SHA384; TLS 1.0/1.1: P_MD5 xor P_SHA1); records after
  each side's ChangeCipherSpec: AES-GCM, AES-CCM(_8), ChaCha20-Poly1305 (RFC 7905), and AES-CBC
  with HMAC-SHA1/SHA256/SHA384, MAC-then-encrypt or encrypt-then-MAC (RFC 7366) as negotiated,
  TLS 1.0's chained IVs included. The key exchange does not matter: the master secret is logged.
The primitives are the `cryptography` package's; this module is only the record layer and the
key schedule.

Rules it keeps:
- The two directions are read separately and may come in any order (the capture's order between
  them is not causal): a record that needs what the other side has not shown yet (the
  ServerHello's suite, or keys not in the key log yet) waits, within HOLD_BYTES a direction, and
  is read once it can be. A live key log grows after each handshake: a connection waiting for
  keys asks the key log to look again (KeyLog.refresh).
- An authentication tag that fails (a wrong key, a record that is not what its place says)
  stops that direction's decryption with the reason; nothing is ever raised.
- Bytes never captured (a TCP gap) stop the direction's decryption at that point: the records
  after it cannot be found for sure. Either way the plaintext consumer is told the stream ended.
- What the connection shows (`Connection.tls_status`): "decrypted", or why not.
"""

from __future__ import annotations

import hmac
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from engine import keylog, tls
from engine.detect import H2_PREFACE, http_request_start
from engine.events import Event
from engine.keylog import KeyLog
from engine.tls import DECRYPTED

if TYPE_CHECKING:
    from engine.tcp import Connection, StreamConsumer

CHANGE_CIPHER_SPEC: Final = 20
ALERT: Final = 21
HANDSHAKE: Final = 22
APPLICATION_DATA: Final = 23
FINISHED: Final = 20
KEY_UPDATE: Final = 24
MAX_CIPHERTEXT: Final = (1 << 14) + 2048  # RFC 5246 6.2.3 (TLS 1.3 allows 2^14 + 256)
HOLD_BYTES: Final = 4 * 1024 * 1024  # a direction's records waiting for the other side or keys
# (and all connections' together, at most their key log's max_held)
LOOK_BYTES: Final = 16 * 1024  # plaintext looked at, at most, to tell what the client speaks
# After a gap: how many records it may have swallowed (each tried as the next record number),
# and how far past it a record is looked for before decryption of that side stops.
MAX_LOST_RECORDS: Final = 64
RESYNC_BYTES: Final = 256 * 1024
MAX_HANDSHAKE: Final = 1 << 20  # handshake bytes buffered while a message is incomplete
# RFC 8446 4.1.3: the random of a HelloRetryRequest, which a real ServerHello follows.
HELLO_RETRY: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

NO_KEYS: Final = "no keys for this connection in the key log"
NO_HANDSHAKE: Final = "its handshake was not captured"
WAITING: Final = "waiting for its keys in the key log"


class Suite(NamedTuple):
    name: str
    tls13: bool
    kind: str  # "gcm", "ccm", "ccm8", "chacha" (AEAD) or "cbc"
    key: int  # key length
    iv: int  # fixed IV (TLS 1.2 AEAD: 4 or 12; TLS 1.3: 12; CBC: the block, 16)
    mac: str | None  # CBC: the HMAC's hash
    prf: str  # TLS 1.2's PRF hash, TLS 1.3's HKDF hash


def _suites() -> dict[int, Suite]:
    out: dict[int, Suite] = {
        0x1301: Suite("TLS_AES_128_GCM_SHA256", True, "gcm", 16, 12, None, "sha256"),
        0x1302: Suite("TLS_AES_256_GCM_SHA384", True, "gcm", 32, 12, None, "sha384"),
        0x1303: Suite("TLS_CHACHA20_POLY1305_SHA256", True, "chacha", 32, 12, None, "sha256"),
        0x1304: Suite("TLS_AES_128_CCM_SHA256", True, "ccm", 16, 12, None, "sha256"),
        0x1305: Suite("TLS_AES_128_CCM_8_SHA256", True, "ccm8", 16, 12, None, "sha256"),
    }
    for number, kind, key, prf in (
        (0xC02B, "gcm", 16, "sha256"), (0xC02C, "gcm", 32, "sha384"),
        (0xC02F, "gcm", 16, "sha256"), (0xC030, "gcm", 32, "sha384"),
        (0x009C, "gcm", 16, "sha256"), (0x009D, "gcm", 32, "sha384"),
        (0x009E, "gcm", 16, "sha256"), (0x009F, "gcm", 32, "sha384"),
        (0xCCA8, "chacha", 32, "sha256"), (0xCCA9, "chacha", 32, "sha256"),
        (0xCCAA, "chacha", 32, "sha256"),
        (0xC09C, "ccm", 16, "sha256"), (0xC09D, "ccm", 32, "sha256"),
        (0xC0AC, "ccm", 16, "sha256"), (0xC0AD, "ccm", 32, "sha256"),
        (0xC0A0, "ccm8", 16, "sha256"), (0xC0A1, "ccm8", 32, "sha256"),
        (0xC0AE, "ccm8", 16, "sha256"), (0xC0AF, "ccm8", 32, "sha256"),
    ):  # fmt: skip
        out[number] = Suite(tls.cipher_suite_name(number), False, kind, key,
                            12 if kind == "chacha" else 4, None, prf)  # fmt: skip
    for number, key, mac, prf in (
        (0x002F, 16, "sha1", "sha256"), (0x0035, 32, "sha1", "sha256"),
        (0x003C, 16, "sha256", "sha256"), (0x003D, 32, "sha256", "sha256"),
        (0x0033, 16, "sha1", "sha256"), (0x0039, 32, "sha1", "sha256"),
        (0x0067, 16, "sha256", "sha256"), (0x006B, 32, "sha256", "sha256"),
        (0xC009, 16, "sha1", "sha256"), (0xC00A, 32, "sha1", "sha256"),
        (0xC013, 16, "sha1", "sha256"), (0xC014, 32, "sha1", "sha256"),
        (0xC023, 16, "sha256", "sha256"), (0xC024, 32, "sha384", "sha384"),
        (0xC027, 16, "sha256", "sha256"), (0xC028, 32, "sha384", "sha384"),
    ):  # fmt: skip
        out[number] = Suite(tls.cipher_suite_name(number), False, "cbc", key, 16, mac, prf)
    return out


SUITES: Final = _suites()
_HASHES: Final = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}
_MAC_SIZES: Final = {"sha1": 20, "sha256": 32, "sha384": 48}


# ---------------------------------------------------------------------- key schedules


def hkdf_expand_label(
    secret: bytes, label: bytes, context: bytes, length: int, hash_name: str
) -> bytes:
    """RFC 8446 7.1: HKDF-Expand-Label."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(_HASHES[hash_name], length, info).derive(secret)


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 5: P_hash."""
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return out[:length]


def prf(
    version: int, hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int
) -> bytes:
    """The TLS PRF: TLS 1.2's P_<hash> (RFC 5246 5), or TLS 1.0/1.1's P_MD5 xor P_SHA1 over the
    secret's two halves (RFC 2246 5)."""
    if version >= 0x0303:
        return _p_hash(hash_name, secret, label + seed, length)
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha1 = _p_hash("sha1", secret[len(secret) - half :], label + seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha1, strict=True))


# ---------------------------------------------------------------------- record protection


class _Keys:
    """One direction's record keys and sequence number."""

    __slots__ = ("aead", "cbc_key", "etm", "iv", "mac_key", "seq", "suite", "version")

    def __init__(self, suite: Suite, version: int, key: bytes, iv: bytes, mac_key: bytes,
                 etm: bool = False) -> None:  # fmt: skip
        self.suite = suite
        self.version = version
        self.iv = iv
        self.mac_key = mac_key
        self.etm = etm  # CBC with encrypt-then-MAC (RFC 7366)
        self.seq = 0
        self.cbc_key = key
        self.aead: AESGCM | ChaCha20Poly1305 | AESCCM | None = None
        if suite.kind == "gcm":
            self.aead = AESGCM(key)
        elif suite.kind == "chacha":
            self.aead = ChaCha20Poly1305(key)
        elif suite.kind == "ccm":
            self.aead = AESCCM(key, 16)
        elif suite.kind == "ccm8":
            self.aead = AESCCM(key, 8)

    @staticmethod
    def tls13(suite: Suite, secret: bytes) -> _Keys:
        key = hkdf_expand_label(secret, b"key", b"", suite.key, suite.prf)
        iv = hkdf_expand_label(secret, b"iv", b"", suite.iv, suite.prf)
        return _Keys(suite, 0x0304, key, iv, b"")

    def decrypt(self, ctype: int, header: bytes, fragment: bytes) -> tuple[int, bytes]:
        """(content type, plaintext) of the next record; raises InvalidTag or ValueError."""
        seq = self.seq
        self.seq += 1
        if self.version == 0x0304:
            return self._tls13(header, fragment, seq)
        if self.aead is not None:
            return ctype, self._tls12_aead(ctype, fragment, seq)
        return ctype, self._cbc(ctype, fragment, seq)

    def _nonce(self, seq: int) -> bytes:
        padded = seq.to_bytes(len(self.iv), "big")
        return bytes(a ^ b for a, b in zip(self.iv, padded, strict=True))

    def _tls13(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes]:
        assert self.aead is not None
        inner = self.aead.decrypt(self._nonce(seq), fragment, header)
        end = len(inner.rstrip(b"\x00"))
        if not end:
            raise ValueError("a record with no content type")
        return inner[end - 1], inner[: end - 1]

    def _tls12_aead(self, ctype: int, fragment: bytes, seq: int) -> bytes:
        assert self.aead is not None
        tag = 8 if self.suite.kind == "ccm8" else 16
        if self.suite.kind == "chacha":
            nonce, body = self._nonce(seq), fragment
        else:  # the record carries the nonce's explicit part (RFC 5288 3)
            nonce, body = self.iv + fragment[:8], fragment[8:]
        length = len(body) - tag
        if length < 0:
            raise ValueError("a record shorter than its tag")
        aad = seq.to_bytes(8, "big") + bytes([ctype]) + self.version.to_bytes(2, "big")
        return self.aead.decrypt(nonce, body, aad + length.to_bytes(2, "big"))

    def _cbc(self, ctype: int, fragment: bytes, seq: int) -> bytes:
        mac_name = self.suite.mac
        assert mac_name is not None
        size = _MAC_SIZES[mac_name]
        head = seq.to_bytes(8, "big") + bytes([ctype]) + self.version.to_bytes(2, "big")
        etm = self.etm
        if etm:  # RFC 7366: the MAC covers the IV and ciphertext
            body, mac = fragment[:-size], fragment[-size:]
            expected = hmac.digest(
                self.mac_key, head + len(body).to_bytes(2, "big") + body, mac_name
            )
            if len(fragment) < size or not hmac.compare_digest(mac, expected):
                raise InvalidTag
            fragment = body
        if self.version >= 0x0302:  # TLS 1.1 on: an explicit IV begins each record
            iv, body = fragment[:16], fragment[16:]
        else:  # TLS 1.0: the last ciphertext block of the record before
            iv, body = self.iv, fragment
            self.iv = fragment[-16:]
        if not body or len(body) % 16:
            raise ValueError("a CBC record that is not whole blocks")
        decryptor = Cipher(algorithms.AES(self.cbc_key), modes.CBC(iv)).decryptor()
        plain = decryptor.update(body) + decryptor.finalize()
        pad = plain[-1]
        if pad + 1 > len(plain) or plain[-pad - 1 :] != bytes([pad]) * (pad + 1):
            raise InvalidTag
        plain = plain[: -pad - 1]
        if etm:
            return plain
        if len(plain) < size:
            raise InvalidTag
        content, mac = plain[:-size], plain[-size:]
        expected = hmac.digest(
            self.mac_key, head + len(content).to_bytes(2, "big") + content, mac_name
        )
        if not hmac.compare_digest(mac, expected):
            raise InvalidTag
        return content


def tls12_keys(suite: Suite, version: int, master: bytes, client_random: bytes,
               server_random: bytes, etm: bool) -> tuple[_Keys, _Keys]:  # fmt: skip
    """The client's and the server's record keys of a TLS 1.0-1.2 session (RFC 5246 6.3)."""
    mac = _MAC_SIZES[suite.mac] if suite.mac else 0
    iv = suite.iv if suite.kind != "cbc" or version < 0x0302 else 0
    block = prf(version, suite.prf, master, b"key expansion", server_random + client_random,
                2 * (mac + suite.key + iv))  # fmt: skip
    parts = []
    at = 0
    for size in (mac, mac, suite.key, suite.key, iv, iv):
        parts.append(block[at : at + size])
        at += size
    etm = etm and suite.kind == "cbc"
    client = _Keys(suite, version, parts[2], parts[4], parts[0], etm)
    server = _Keys(suite, version, parts[3], parts[5], parts[1], etm)
    return client, server


# ---------------------------------------------------------------------- the consumer


class _Side:
    """One direction: its records being read and where its plaintext is."""

    __slots__ = (
        "buf",
        "done",
        "encrypted",
        "ended",
        "finished",
        "handshake",
        "held",
        "held_bytes",
        "keys",
        "marks",
        "offset",
        "phase",
        "plain",
        "records",
        "resync",
        "scanned",
        "skip_to",
        "stopped",
        "told_end",
    )

    def __init__(self) -> None:
        self.buf = bytearray()  # ciphertext not yet a whole record
        self.offset = 0  # stream offset of buf's first byte
        self.done = 0  # stream offset through which its records are read (none waits before)
        # (stream offset where a delivered chunk began, its ts, its ack), for the records in buf.
        self.marks: list[tuple[int, float, int]] = []
        self.held: list[tuple[int, bytes, bytes, float, int, int]] = []  # waiting records
        self.held_bytes = 0
        self.handshake = bytearray()  # handshake messages not yet whole
        self.keys: _Keys | None = None
        self.encrypted = False  # TLS 1.2: after its ChangeCipherSpec
        self.phase = 0  # TLS 1.3: 0 plaintext, 1 handshake keys, 2 application keys
        self.finished = False  # its Finished was read
        self.plain = 0  # plaintext stream bytes given to the inner consumer
        # For each application record: where it ends in the TLS stream, and in the plaintext.
        self.records: tuple[list[int], list[int]] = ([], [])
        # After a gap: the stream offset up to which the rest of a record it cut is dropped;
        # or, when it hid where the next record begins, the offset from which bytes were lost
        # (records are then looked for, `scanned` bytes of buf so far).
        self.skip_to: int | None = None
        self.resync: int | None = None
        self.scanned = 0
        self.stopped: str | None = None  # why it is read no further ("" once told its end)
        self.ended: float | None = None  # the time its stream ended (its records may still wait)
        self.told_end = False  # the plaintext's consumer was told this side ended


Emit = Callable[[Event], None]
# (conn, emit, peer_offset, http2): a parser of the plaintext, HTTP/1.x or (http2) HTTP/2.
InnerFactory = Callable[
    ["Connection", Emit, Callable[[bool, int], "int | None"], bool], "StreamConsumer"
]
ConsumerFactory = Callable[["Connection", Emit], "StreamConsumer | None"]


class TlsDecryptor:
    """Decrypts one TLS connection (see the module's docstring). `inner(conn, emit, peer_offset)`
    makes the plaintext's HTTP consumer; peer_offset maps an acknowledgment number to the
    other direction's plaintext offset, as Connection.peer_offset does for a plain stream."""

    MAX_RECORDS: Final = 4096  # application records remembered a direction for peer_offset

    def __init__(self, conn: Connection, emit: Emit, keys: KeyLog, inner: InnerFactory | None,
                 listeners: tuple[StreamConsumer, ...] = ()) -> None:  # fmt: skip
        """listeners: consumers given all the plaintext as it comes (--follow's writer)."""
        self.conn = conn
        self.emit = emit
        self.keylog = keys
        self.make_inner = inner
        self.listeners = listeners
        self.inner: StreamConsumer | None = None  # the plaintext's consumer, once known
        self.inner_known = False  # decided (an HTTP parser, or nothing)
        self.sides = {True: _Side(), False: _Side()}
        self.client_random: bytes | None = None
        self.server: tls.ServerHello | None = None
        self.suite: Suite | None = None
        self.secrets: dict[str, bytes] | None = None
        self.early: _Keys | None = None
        self.secret_of: dict[bool, bytes] = {}  # TLS 1.3: each side's current traffic secret
        self.waiting_inner: list[tuple[bool, float, bytes, int]] = []  # plaintext before a verdict
        # The server's plaintext waiting for the client's records it acknowledges (ts, plaintext
        # offset, plaintext, ack).
        self.server_out: list[tuple[float, int, bytes | int, int]] = []  # (an int: a gap's size)
        self.server_out_bytes = 0
        self.failure: str | None = None  # why a side stopped on what it read (not its end)
        self.retrying = False  # in _retry
        self.retry_again = False
        conn.tls_status = None

    # ------------------------------------------------------------------ stream consumer

    def on_data(self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes,
                ack: int) -> None:  # fmt: skip
        side = self.sides[from_client]
        if side.stopped is not None:
            return
        side.marks.append((side.offset + len(side.buf), ts, ack))
        side.buf += data
        self._records(from_client)

    def on_gap(self, conn: Connection, from_client: bool, ts: float, offset: int, size: int,
               reason: str) -> None:  # fmt: skip
        """Bytes never captured. Once application data is being decrypted they cost only the
        records they touch: the rest of a record the gap ends inside is dropped and the next
        one read; when the gap hides where records begin, the first whole record after it is
        found by trying it as each of the next record numbers (an authentication tag that
        holds says both). The plaintext consumer is told how much it lost (the ciphertext's
        length less each record's overhead, exact unless records were padded). Before that,
        or with TLS 1.0's chained IVs, decryption of that side stops."""
        side = self.sides[from_client]
        if side.stopped is not None:
            return
        keys = side.keys
        if (keys is None or side.held or side.skip_to is not None or side.resync is not None
                or (keys.version == 0x0304 and side.phase < 2 and not side.finished)
                or (keys.version < 0x0302 and keys.aead is None)):  # fmt: skip
            self._stop(from_client, "a gap in the TCP stream stopped decryption", ts)
            return
        buf = side.buf
        start, end = side.offset, offset + size
        if len(buf) >= 5:
            record_end = start + 5 + ((buf[3] << 8) | buf[4])
            if record_end > end:  # the gap ends inside this record: only it is lost
                keys.seq += 1
                self._lost(from_client, ts, record_end - start, 1)
                side.skip_to = record_end
                self._drop_buffer(side, end)
                return
        side.resync = start
        side.scanned = 0
        self._drop_buffer(side, end)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        """No more bytes on that side: its records that wait (for the other side's hello, or
        keys) may still be read; the plaintext's consumer is told once none waits."""
        side = self.sides[from_client]
        if side.ended is None:
            side.ended = ts
        self._retry()

    def on_close(self, conn: Connection, ts: float) -> None:
        """Nothing more will come: what still waits is given up."""
        for from_client in (True, False):
            side = self.sides[from_client]
            if side.held and self.conn.tls_status == WAITING:
                self.conn.tls_status = NO_KEYS
            elif self.client_random is None and self.keylog.given and not self.failure:
                self.conn.tls_status = NO_HANDSHAKE  # (no ClientHello: no key to look keys up)
            self._forget_held(side)
            if side.ended is None:
                side.ended = ts
            self._ended(from_client)
        for consumer in (self.inner, *self.listeners):
            if consumer is not None:
                consumer.on_close(conn, ts)

    def _ended(self, from_client: bool) -> None:
        """Tell the plaintext's consumer a side ended, once it did and nothing of it waits."""
        side = self.sides[from_client]
        if side.ended is None or side.held or side.told_end:
            return
        if not from_client and self.server_out and not self.sides[True].told_end:
            return  # its answers still wait for the client's records
        side.told_end = True
        if side.stopped is None:
            side.stopped = ""
        self._inner_end(from_client, side.ended)

    # ------------------------------------------------------------------ records

    def _records(self, from_client: bool) -> None:
        side = self.sides[from_client]
        buf = side.buf
        while side.stopped is None and (len(buf) >= 5 or (side.skip_to is not None and buf)):
            if side.skip_to is not None:  # the rest of a record a gap cut
                n = min(len(buf), side.skip_to - side.offset)
                del buf[:n]
                side.offset += n
                if side.offset < side.skip_to:
                    return
                side.skip_to = None
                self._forget_marks(side)
                continue
            if side.resync is not None and not self._resync(from_client):
                return
            ctype = buf[0]
            length = (buf[3] << 8) | buf[4]
            if (
                not CHANGE_CIPHER_SPEC <= ctype <= APPLICATION_DATA
                or buf[1] != 3
                or (length > MAX_CIPHERTEXT)
            ):
                self._stop(from_client, "not a TLS record where one should begin", self._ts(side))
                return
            if len(buf) < 5 + length:
                return
            header = bytes(buf[:5])
            fragment = bytes(buf[5 : 5 + length])
            start = side.offset
            ts, ack = self._mark(side, start)
            del buf[: 5 + length]
            side.offset += 5 + length
            self._forget_marks(side)
            if side.held:  # waiting records go first
                self._hold(from_client, ctype, header, fragment, ts, ack, side.offset)
                self._retry()
            elif self._record(from_client, ctype, header, fragment, ts, ack, side.offset):
                side.done = side.offset
            else:
                self._hold(from_client, ctype, header, fragment, ts, ack, side.offset)
        if from_client:
            self._release_server()

    @staticmethod
    def _drop_buffer(side: _Side, offset: int) -> None:
        """What is buffered is gone; the stream goes on at `offset`."""
        side.buf.clear()
        side.offset = offset
        side.marks = [m for m in side.marks if m[0] >= offset]

    def _resync(self, from_client: bool) -> bool:
        """After a gap that hid where records begin: whether the buffer now begins with the next
        whole record that the keys open (at the next record numbers). Bytes before it go."""
        side = self.sides[from_client]
        keys, buf = side.keys, side.buf
        assert keys is not None and side.resync is not None
        version = bytes([3, 3 if keys.version == 0x0304 else keys.version & 0xFF])
        at = side.scanned
        while True:
            at = buf.find(b"\x17" + version, at)
            if at < 0 or at + 5 > len(buf):
                side.scanned = max(0, len(buf) - 4)
                break
            length = (buf[at + 3] << 8) | buf[at + 4]
            if length <= MAX_CIPHERTEXT:
                if at + 5 + length > len(buf):
                    side.scanned = at  # wait for the rest of this candidate
                    break
                header, fragment = bytes(buf[at : at + 5]), bytes(buf[at + 5 : at + 5 + length])
                for lost in range(MAX_LOST_RECORDS):
                    trial = _Keys(keys.suite, keys.version, keys.cbc_key, keys.iv, keys.mac_key,
                                  keys.etm)  # fmt: skip
                    trial.aead, trial.seq = keys.aead, keys.seq + lost
                    try:
                        trial.decrypt(APPLICATION_DATA, header, fragment)
                    except (InvalidTag, ValueError):
                        continue
                    ts = self._mark(side, side.offset + at)[0]
                    self._lost(from_client, ts, side.offset + at - side.resync, lost)
                    keys.seq += lost
                    del buf[:at]
                    side.offset += at
                    side.resync = None
                    self._forget_marks(side)
                    return True
            at += 1
        if len(buf) > RESYNC_BYTES:
            self._stop(from_client, "a gap in the TCP stream, and no record found after it",
                       self._ts(side))  # fmt: skip
        return False

    def _lost(self, from_client: bool, ts: float, cipher: int, records: int) -> None:
        """Tell the plaintext's consumer of the plaintext that `records` records, `cipher`
        bytes of the stream with their headers, held (each record's overhead taken off)."""
        side = self.sides[from_client]
        keys = side.keys
        assert keys is not None
        suite = keys.suite
        if keys.version == 0x0304:
            overhead = 5 + (8 if suite.kind == "ccm8" else 16) + 1
        elif suite.kind == "cbc":
            overhead = 5 + 16 + _MAC_SIZES[suite.mac or "sha1"] + 1  # (an IV; a pad of one)
        else:
            overhead = (
                5 + (0 if suite.kind == "chacha" else 8) + (8 if suite.kind == "ccm8" else 16)
            )
        size = max(0, cipher - records * overhead)
        if not size:
            return
        offset = side.plain
        side.plain += size
        if from_client:
            self._deliver_gap(True, ts, offset, size)
        else:
            self.server_out.append((ts, offset, size, -1))

    @staticmethod
    def _mark(side: _Side, offset: int) -> tuple[float, int]:
        """(ts, ack) of the segment that brought the byte at this offset."""
        found = (0.0, -1)
        for start, ts, ack in side.marks:
            if start > offset:
                break
            found = (ts, ack)
        return found

    @staticmethod
    def _forget_marks(side: _Side) -> None:
        marks = side.marks
        n = 0
        while n + 1 < len(marks) and marks[n + 1][0] <= side.offset:
            n += 1
        if n:
            del marks[:n]

    @staticmethod
    def _ts(side: _Side) -> float:
        return side.marks[-1][1] if side.marks else 0.0

    def _hold(self, from_client: bool, ctype: int, header: bytes, fragment: bytes, ts: float,
              ack: int, end: int) -> None:  # fmt: skip
        side = self.sides[from_client]
        side.held.append((ctype, header, fragment, ts, ack, end))
        side.held_bytes += len(fragment)
        self.keylog.held += len(fragment)
        if side.held_bytes > HOLD_BYTES or self.keylog.held > self.keylog.max_held:
            why = NO_KEYS if self.suite is not None else "the server's hello was not seen"
            self._stop(from_client, why, ts)

    def _forget_held(self, side: _Side) -> None:
        self.keylog.held -= side.held_bytes
        side.held.clear()
        side.held_bytes = 0

    def _retry(self) -> None:
        """Read the records that waited, each side in order, as far as they can go now. (Reading
        one can let the other side's go on: the ClientHello's random, the ServerHello's suite.
        Asked again meanwhile, it goes round once more rather than in again.)"""
        if self.retrying:
            self.retry_again = True
            return
        self.retrying = True
        try:
            again = True
            while again:
                self.retry_again = False
                for from_client in (True, False):
                    side = self.sides[from_client]
                    while side.held and side.stopped is None:
                        ctype, header, fragment, ts, ack, end = side.held[0]
                        if not self._record(from_client, ctype, header, fragment, ts, ack, end):
                            break
                        side.held.pop(0)
                        side.held_bytes -= len(fragment)
                        self.keylog.held -= len(fragment)
                        side.done = end
                again = self.retry_again
        finally:
            self.retrying = False
        self._release_server()
        for from_client in (True, False):
            self._ended(from_client)

    def _record(self, from_client: bool, ctype: int, header: bytes, fragment: bytes, ts: float,
                ack: int, end: int) -> bool:  # fmt: skip
        """Read one record; False when it must wait (for the other side's hello, or keys)."""
        side = self.sides[from_client]
        tls13 = self.suite is not None and self.suite.tls13
        if ctype == CHANGE_CIPHER_SPEC:
            if self.suite is None:
                return self._no_suite(from_client)
            if not tls13:
                if not self._keys_ready():
                    return False
                side.encrypted = True
            return True  # (TLS 1.3: a compatibility record, RFC 8446 D.4)
        encrypted = side.encrypted or (ctype == APPLICATION_DATA and (tls13 or self.suite is None))
        if not encrypted:
            if ctype == HANDSHAKE:
                self._handshake(from_client, fragment, ts)
            return True
        if self.suite is None:
            return self._no_suite(from_client)
        if not self._keys_ready():
            return False
        if side.keys is None and tls13 and not self._tls13_keys(from_client):
            return False
        keys = side.keys
        if keys is None:
            self._stop(from_client, "no record keys for this direction", ts)
            return True
        try:
            inner_type, plain = keys.decrypt(ctype, header, fragment)
        except (InvalidTag, ValueError):
            if from_client and tls13 and self._early_data(header, fragment, ts, end, ack):
                return True
            self._stop(from_client, "authentication failed: the key log's keys are not this "
                                    "connection's, or a record was altered", ts)  # fmt: skip
            return True
        if self.failure is None:
            self.conn.tls_status = DECRYPTED
        if inner_type == HANDSHAKE:
            self._handshake(from_client, plain, ts)
        elif inner_type == APPLICATION_DATA:
            self._plaintext(from_client, plain, ts, ack, end)
        return True

    def _no_suite(self, from_client: bool) -> bool:
        """A record that needs the ServerHello's suite before it: it waits (False), unless the
        server's hello came and named a suite this module does not read."""
        if self.server is not None and self.suite is None:
            self._stop(from_client, self._unsupported(), 0.0)
            return True
        return False

    def _unsupported(self) -> str:
        server = self.server
        assert server is not None
        return f"{server.version} {server.cipher} is not a suite wirepeek decrypts"

    # ------------------------------------------------------------------ handshake

    def _handshake(self, from_client: bool, data: bytes, ts: float) -> None:
        side = self.sides[from_client]
        side.handshake += data
        buf = side.handshake
        while len(buf) >= 4:
            size = 4 + int.from_bytes(buf[1:4], "big")
            if size > MAX_HANDSHAKE:
                self._stop(from_client, "a handshake message too long to be read", ts)
                return
            if len(buf) < size:
                break
            message = bytes(buf[:size])
            del buf[:size]
            self._message(from_client, message, ts)

    def _message(self, from_client: bool, message: bytes, ts: float) -> None:
        kind = message[0]
        side = self.sides[from_client]
        if kind == tls.HANDSHAKE_CLIENT_HELLO and from_client:
            offered = tls.parse_client_hello(_as_record(message))
            if isinstance(offered, tls.ClientHello) and self.client_random is None:
                self.client_random = offered.random
                self._retry()  # the server's records may wait for it
        elif kind == tls.HANDSHAKE_SERVER_HELLO and not from_client:
            hello = tls.parse_server_hello(_as_record(message))
            if isinstance(hello, tls.ServerHello) and hello.random != HELLO_RETRY:
                self.server = hello
                self.suite = SUITES.get(hello.suite)
                if self.suite is None:
                    self.conn.tls_status = self._unsupported()
                elif self.suite.tls13:
                    side.phase = 1  # the server's next records are under its handshake keys
                self._retry()
        elif (
            kind == tls.HANDSHAKE_CERTIFICATE and not from_client and self.conn.certificate is None
        ):
            tls13 = self.suite is not None and self.suite.tls13
            self.conn.certificate = tls.read_certificate(message[4:], tls13)
        elif kind == FINISHED and self.suite is not None and self.suite.tls13:
            # The next records are under the application keys: until the key log has them
            # (a live one may not yet), they wait rather than be tried with the handshake keys.
            side.finished = True
            side.keys = None
            self._tls13_keys(from_client)
        elif kind == KEY_UPDATE and side.keys is not None and side.keys.version == 0x0304:
            suite = side.keys.suite
            secret = self.secret_of.get(from_client)
            if secret is not None:
                new = hkdf_expand_label(secret, b"traffic upd", b"", len(secret), suite.prf)
                self._set_secret(from_client, new)

    # ------------------------------------------------------------------ keys

    def _keys_ready(self) -> bool:
        """Whether the key log has this session's secrets (asking it to look again if not)."""
        if self.secrets is not None:
            return True
        if self.client_random is None:
            return False
        secrets = self.keylog.get(self.client_random)
        if secrets is None and self.keylog.refresh():
            secrets = self.keylog.get(self.client_random)
        if secrets is None:
            if self.conn.tls_status is None and self.keylog.given:
                self.conn.tls_status = WAITING
            return False
        self.secrets = secrets
        suite, server = self.suite, self.server
        if suite is not None and server is not None and not suite.tls13:
            master = secrets.get(keylog.CLIENT_RANDOM)
            if master is None:
                self.secrets = None
                self.conn.tls_status = WAITING
                return False
            client, srv = tls12_keys(suite, server.version_number, master, self.client_random,
                                     server.random, server.encrypt_then_mac)  # fmt: skip
            self.sides[True].keys, self.sides[False].keys = client, srv
        return True

    def _tls13_keys(self, from_client: bool) -> bool:
        """The keys a TLS 1.3 direction that has none needs now: its handshake keys, or after
        its Finished its application keys; False while the key log does not have them."""
        if self.sides[from_client].finished:
            label = keylog.CLIENT_TRAFFIC_0 if from_client else keylog.SERVER_TRAFFIC_0
        else:
            label = keylog.CLIENT_HANDSHAKE if from_client else keylog.SERVER_HANDSHAKE
        return self._tls13_switch(from_client, label)

    def _tls13_switch(self, from_client: bool, label: str) -> bool:
        secrets = self.secrets
        secret = secrets.get(label) if secrets is not None else None
        if secret is None:
            if secrets is not None and self.keylog.refresh():
                secret = secrets.get(label)
            if secret is None:
                self.conn.tls_status = WAITING
                return False
        self._set_secret(from_client, secret)
        return True

    def _set_secret(self, from_client: bool, secret: bytes) -> None:
        suite = self.suite
        assert suite is not None
        self.secret_of[from_client] = secret
        self.sides[from_client].keys = _Keys.tls13(suite, secret)

    def _early_data(self, header: bytes, fragment: bytes, ts: float, end: int, ack: int) -> bool:
        """A client record the handshake keys do not open may be 0-RTT data under the early
        traffic secret: read it so, if that opens it."""
        secrets, suite = self.secrets, self.suite
        if secrets is None or suite is None or keylog.CLIENT_EARLY not in secrets:
            return False
        if self.early is None:
            self.early = _Keys.tls13(suite, secrets[keylog.CLIENT_EARLY])
        side = self.sides[True]
        keys = side.keys
        assert keys is not None
        keys.seq -= 1  # that record was not the handshake keys'
        try:
            inner_type, plain = self.early.decrypt(APPLICATION_DATA, header, fragment)
        except (InvalidTag, ValueError):
            self.early.seq -= 1
            keys.seq += 1
            return False
        if inner_type == APPLICATION_DATA:
            self._plaintext(True, plain, ts, ack, end)
        return True

    # ------------------------------------------------------------------ plaintext

    def _plaintext(self, from_client: bool, plain: bytes, ts: float, ack: int, end: int) -> None:
        if not plain:
            return
        side = self.sides[from_client]
        offset = side.plain
        side.plain += len(plain)
        ends, plains = side.records
        ends.append(end)
        plains.append(side.plain)
        if len(ends) > self.MAX_RECORDS:
            del ends[: self.MAX_RECORDS // 2], plains[: self.MAX_RECORDS // 2]
        if from_client:
            self._deliver(True, ts, offset, plain, ack)
        else:
            # An answer is given to the HTTP parser once the client's records it acknowledges
            # are read: the parser pairs it by what they held (see _peer_offset).
            self.server_out.append((ts, offset, plain, ack))
            self.server_out_bytes += len(plain)
            self._release_server()

    def _release_server(self, force: bool = False) -> None:
        """Give the HTTP parser the server's plaintext whose acknowledged client records are
        read (or all of it: `force`, the client's side has stopped, or too much waits)."""
        out, client = self.server_out, self.sides[True]
        while out:
            ts, offset, plain, ack = out[0]
            if isinstance(plain, int):  # plaintext lost in a gap
                out.pop(0)
                self._deliver_gap(False, ts, offset, plain)
                continue
            acked = self.conn.peer_offset(False, ack)
            ready = (force or acked is None or acked <= client.done or client.stopped is not None
                     or self.server_out_bytes > HOLD_BYTES)  # fmt: skip
            if not ready:
                return
            out.pop(0)
            self.server_out_bytes -= len(plain)
            self._deliver(False, ts, offset, plain, ack)
        self._ended(False)  # (if it ended and was waiting for these to go)

    def _deliver_gap(self, from_client: bool, ts: float, offset: int, size: int) -> None:
        reason = "TLS records lost in a gap of the TCP stream"
        if not self.inner_known:
            self._choose_inner(final=True)  # (what came before the gap decides)
        for consumer in (self.inner, *self.listeners):
            if consumer is not None:
                consumer.on_gap(self.conn, from_client, ts, offset, size, reason)

    def _deliver(self, from_client: bool, ts: float, offset: int, plain: bytes, ack: int) -> None:
        for listener in self.listeners:
            listener.on_data(self.conn, from_client, ts, offset, plain, ack)
        if not self.inner_known:
            self.waiting_inner.append((from_client, ts, plain, ack))
            self._choose_inner(final=False)
            return
        inner = self.inner
        if inner is not None:
            inner.on_data(self.conn, from_client, ts, offset, plain, ack)

    def _choose_inner(self, final: bool) -> None:
        """Once the client's first plaintext says what it speaks (or, `final`, all of it came):
        an HTTP/1.x parser, an HTTP/2 one (the connection is then labelled `http2`), or none.
        The plaintext that came meanwhile goes to it, in order."""
        waiting = self.waiting_inner
        client = b"".join(plain for from_client, _, plain, _ in waiting if from_client)
        verdict: bool | None
        h2 = client.startswith(H2_PREFACE)
        if h2:
            verdict = True
            self.conn.protocol = "http2"
        elif H2_PREFACE.startswith(client):
            verdict = None  # (nothing yet, or the preface's start)
        else:
            verdict = http_request_start(client)
        if verdict is None and not final and sum(len(w[2]) for w in waiting) < LOOK_BYTES:
            return
        self.inner_known = True
        if verdict and self.make_inner is not None:
            self.inner = self.make_inner(self.conn, self.emit, self._peer_offset, h2)
        self.waiting_inner = []
        inner = self.inner
        if inner is None:
            return
        offsets = {True: 0, False: 0}
        for from_client, ts, plain, ack in waiting:
            inner.on_data(self.conn, from_client, ts, offsets[from_client], plain, ack)
            offsets[from_client] += len(plain)

    def _peer_offset(self, from_client: bool, ack: int) -> int | None:
        """The plaintext offset of the other direction that an acknowledgment number sent by
        this side covers: the plaintext of the records wholly below the TLS offset it covers."""
        acked = self.conn.peer_offset(from_client, ack)
        if acked is None:
            return None
        ends, plains = self.sides[not from_client].records
        i = bisect_right(ends, acked)
        return plains[i - 1] if i else 0

    def _inner_end(self, from_client: bool, ts: float) -> None:
        self._release_server(force=not from_client)
        if not self.inner_known and self.waiting_inner:
            self._choose_inner(final=True)
        for consumer in (self.inner, *self.listeners):
            if consumer is not None:
                consumer.on_end(self.conn, from_client, ts)

    def _stop(self, from_client: bool, why: str, ts: float) -> None:
        side = self.sides[from_client]
        if side.stopped is not None:
            return
        side.stopped = why
        self._forget_held(side)
        side.told_end = True
        # What the connection says: why not, unless some of it was decrypted and this side
        # merely had no more (the other side's keys missing is still why not).
        if why != NO_KEYS:
            self.failure = self.failure or why
            self.conn.tls_status = self.failure
        elif self.conn.tls_status != DECRYPTED and self.keylog.given:
            self.conn.tls_status = why
        self._inner_end(from_client, ts)


def _as_record(message: bytes) -> bytes:
    """A handshake message as the start of a stream of records, for engine.tls's readers."""
    out = bytearray()
    for at in range(0, len(message), 1 << 14):
        piece = message[at : at + (1 << 14)]
        out += bytes([HANDSHAKE, 3, 3]) + len(piece).to_bytes(2, "big") + piece
    return bytes(out)


def decryptor_factory(
    keys: KeyLog, inner: InnerFactory | None, listeners: tuple[ConsumerFactory, ...] = ()
) -> Callable[[Connection, Emit], TlsDecryptor]:
    """A consumer factory for `Pipeline(consumers={"tls": [...]})`; inner: the plaintext's
    HTTP parsers (engine.http.inner_http_factory), or None to decrypt without parsing;
    listeners: factories of consumers of each connection's whole plaintext (None: not this one)."""

    def make(conn: Connection, emit: Emit) -> TlsDecryptor:
        made = tuple(c for c in (factory(conn, emit) for factory in listeners) if c is not None)
        return TlsDecryptor(conn, emit, keys, inner, made)

    return make
