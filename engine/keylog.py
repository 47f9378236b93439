"""TLS secrets from a key log: the NSS key log format that curl, browsers, OpenSSL-based servers,
Go's KeyLogWriter, Python's `SSLContext.keylog_filename` and Java agents write, and that
Wireshark reads (and that a pcapng Decryption Secrets Block of type TLS holds).

Each line is `LABEL <client random, 64 hex digits> <secret, hex>`; `#` starts a comment. The
labels read here:

- `CLIENT_RANDOM`: the TLS 1.0-1.2 master secret (48 bytes) of the session that ClientHello
  random began;
- `CLIENT_HANDSHAKE_TRAFFIC_SECRET`, `SERVER_HANDSHAKE_TRAFFIC_SECRET`,
  `CLIENT_TRAFFIC_SECRET_0`, `SERVER_TRAFFIC_SECRET_0`, `CLIENT_EARLY_TRAFFIC_SECRET`: TLS 1.3
  traffic secrets (as long as the suite's hash: 32 or 48 bytes).

Other labels (EXPORTER_SECRET, RSA, ...) are known and skipped; a line that is not of this form
is counted as malformed and skipped, never an error. A key log grows while a capture runs (keys
are written after each handshake): `KeyLog.feed` takes it a piece at a time, a line cut at the
end of a piece waiting for the rest; `KeyLogFile` reads a file again from where it stopped
when asked (`refresh`) and it grew.

It must never: raise on the contents of a key log; hold more than the file's secrets.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Final

CLIENT_RANDOM: Final = "CLIENT_RANDOM"
CLIENT_EARLY: Final = "CLIENT_EARLY_TRAFFIC_SECRET"
CLIENT_HANDSHAKE: Final = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE: Final = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_0: Final = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_0: Final = "SERVER_TRAFFIC_SECRET_0"
LABELS: Final = frozenset(
    {
        CLIENT_RANDOM,
        CLIENT_EARLY,
        CLIENT_HANDSHAKE,
        SERVER_HANDSHAKE,
        CLIENT_TRAFFIC_0,
        SERVER_TRAFFIC_0,
    }
)
# Written by the same tools, not needed to decrypt: skipped without being called malformed.
OTHER_LABELS: Final = frozenset({"EXPORTER_SECRET", "EARLY_EXPORTER_SECRET", "RSA"})
MAX_LINE: Final = 1024  # a longer unfinished line is malformed (no valid line comes near it)
MAX_HELD: Final = 32 * 1024 * 1024  # see KeyLog.max_held


class KeyLog:
    """Secrets by ClientHello random (32 bytes), then by label."""

    def __init__(self) -> None:
        self.secrets: dict[bytes, dict[str, bytes]] = {}
        self.lines = 0  # lines with a secret taken
        self.malformed = 0  # lines skipped as not of the key log's form
        self._partial = b""  # the end of the last piece, not a whole line yet
        # Bytes of TLS records waiting for keys, all the connections that use this key log
        # together, and their bound: past it a connection that would make more wait gives up
        # (engine.tlsdecrypt), so that a capture of many connections whose keys are not in the
        # key log holds no more than this.
        self.held = 0
        self.max_held = MAX_HELD

    def __len__(self) -> int:
        return len(self.secrets)

    def get(self, client_random: bytes) -> dict[str, bytes] | None:
        """The secrets logged for the session that ClientHello random began, if any."""
        return self.secrets.get(client_random)

    def refresh(self) -> bool:
        """Look for secrets added since (a file read again); whether any came. Nothing here."""
        return False

    def feed(self, data: bytes) -> None:
        """Take the next piece of a key log."""
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self.malformed += 1
            self._partial = b""
        for line in lines:
            self._line(line)

    def end(self) -> None:
        """The key log is whole: its last line, if it had no line end, counts too."""
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        line = raw.strip()
        if not line or line.startswith(b"#"):
            return
        fields = line.split()
        if len(fields) != 3:
            self.malformed += 1
            return
        label = fields[0].decode("ascii", "replace")
        if label in OTHER_LABELS:
            return
        try:
            client_random = bytes.fromhex(fields[1].decode("ascii"))
            secret = bytes.fromhex(fields[2].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            self.malformed += 1
            return
        lengths = (48,) if label == CLIENT_RANDOM else (32, 48)
        if label not in LABELS or len(client_random) != 32 or len(secret) not in lengths:
            self.malformed += 1
            return
        self.secrets.setdefault(client_random, {})[label] = secret
        self.lines += 1


class KeyLogFile(KeyLog):
    """A key log file, read as it grows. Raises OSError at once when it cannot be read.

    `refresh` looks at the file's size (a stat, about a microsecond) and reads only when it
    changed. A last line without its line end is taken once the file has not grown since the
    read before: writers write a line at once, so that is a file whose last line has no end."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.offset = 0
        with open(path, "rb") as f:
            self._read(f)
        self.end()

    def refresh(self) -> bool:
        before = self.lines
        try:
            size = os.stat(self.path).st_size
            if size == self.offset:
                return False
            if size < self.offset:  # truncated and written anew
                self.offset = 0
                self._partial = b""
            with open(self.path, "rb") as f:
                if not self._read(f):
                    self.end()
        except OSError:
            return False  # it went away: the secrets read so far stay
        return self.lines > before

    def _read(self, f: BinaryIO) -> int:
        """Read what was added since the last read; how many bytes."""
        f.seek(self.offset)
        data = f.read()
        self.offset += len(data)
        self.feed(data)
        return len(data)


def open_keys(path: str | None, captures: list[str] | tuple[str, ...] = ()) -> KeyLog | None:
    """The key log of `path` (raising OSError when it cannot be read), with the secrets that
    the capture files' pcapng Decryption Secrets Blocks hold; None when there are neither.
    Only plain files are looked into (not pipes, nor compressed captures)."""
    keys: KeyLog | None = KeyLogFile(path) if path is not None else None
    for capture in captures:
        found = _capture_secrets(capture)
        if found:
            if keys is None:
                keys = KeyLog()
            keys.feed(found + b"\n")
    return keys


def _capture_secrets(path: str) -> bytes:
    import mmap

    from engine.pcapfile import tls_key_logs

    if path == "-":
        return b""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 12:
                return b""
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return tls_key_logs(data)
    except (OSError, ValueError):
        return b""  # not a regular file: whoever reads the capture says what is wrong
