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
end of a piece waiting for the rest; a file given to `KeyLog.add_file` is read again from where
it stopped when asked (`refresh`) and it grew.

It must never: raise on the contents of a key log; hold more than the file's secrets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Final

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


class _File:
    """A key log file being read: how far, and the end of a line not yet whole."""

    __slots__ = ("offset", "partial", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""


class KeyLog:
    """Secrets by ClientHello random (32 bytes), then by label: from pieces fed to it, and from
    files (`add_file`), each read again as it grows when a connection needs keys (`refresh`: a
    stat of each, a read only when one changed). A last line without its line end is taken once
    its file has not grown since the read before (writers write a line at once: that is a file
    whose last line has no end). A listing (`watch`) names more files as they are added to it."""

    def __init__(self) -> None:
        self.secrets: dict[bytes, dict[str, bytes]] = {}
        self.lines = 0  # lines with a secret taken
        self.malformed = 0  # lines skipped as not of the key log's form
        self._partial = b""  # the end of the last piece fed, not a whole line yet
        self.files: list[_File] = []
        self.listing: str | None = None  # a file naming key log files, one a line
        self._listed = 0  # its bytes read
        # Bytes of TLS records waiting for keys, all the connections that use this key log
        # together, and their bound: past it a connection that would make more wait gives up
        # (engine.tlsdecrypt), so that a capture of many connections whose keys are not in the
        # key log holds no more than this.
        self.held = 0
        self.max_held = MAX_HELD
        # When a set: the client randoms whose secrets came since its owner emptied it (a
        # capture being written embeds them as they come: engine.sources.write_packets).
        self.noted: set[bytes] | None = None

    def __len__(self) -> int:
        return len(self.secrets)

    @property
    def given(self) -> bool:
        """Whether there is a key log at all (a file, or secrets): a connection without keys in
        an empty one (the inspector's, before one is loaded) does not say it has none."""
        return bool(self.files or self.secrets or self.lines or self.malformed)

    def get(self, client_random: bytes) -> dict[str, bytes] | None:
        """The secrets logged for the session that ClientHello random began, if any."""
        return self.secrets.get(client_random)

    @staticmethod
    def line(client_random: bytes, label: str, secret: bytes) -> bytes:
        """One secret as a key log line."""
        return b"%s %s %s\n" % (label.encode(), client_random.hex().encode(), secret.hex().encode())

    def lines_for(self, randoms: Iterable[bytes]) -> tuple[bytes, int]:
        """The key log lines of these sessions (by ClientHello random), and how many sessions
        had secrets: a key log of just them, to embed in a capture of their connections."""
        lines: list[bytes] = []
        sessions = 0
        for client_random in dict.fromkeys(randoms):
            secrets = self.secrets.get(client_random)
            if secrets:
                sessions += 1
                lines += [
                    self.line(client_random, label, secret) for label, secret in secrets.items()
                ]
        return b"".join(lines), sessions

    def add_file(self, path: str) -> None:
        """Read a key log file, and again as it grows. Raises OSError when it cannot be read."""
        if any(f.path == path for f in self.files):
            return
        source = _File(path)
        self._read(source, first=True)
        self.files.append(source)

    def watch(self, listing: str) -> None:
        """Take the key log files a listing names (one a line), now and as it grows."""
        self.listing = listing
        self._read_listing()

    def refresh(self) -> bool:
        """Look for secrets added since; whether any came."""
        before = self.lines
        if self.listing is not None:
            self._read_listing()
        for source in self.files:
            with contextlib.suppress(OSError):  # (gone: the secrets read so far stay)
                self._read(source)
        return self.lines > before

    def feed(self, data: bytes) -> None:
        """Take the next piece of a key log (given, not read from a file)."""
        self._partial = self._lines(self._partial + data)

    def end(self) -> None:
        """The key log fed is whole: its last line, if it had no line end, counts too."""
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _read(self, source: _File, first: bool = False) -> None:
        size = os.stat(source.path).st_size
        if size == source.offset:
            if source.partial:  # no longer growing: that last line has no end
                self._line(source.partial)
                source.partial = b""
            return
        if size < source.offset:  # truncated and written anew
            source.offset = 0
            source.partial = b""
        with open(source.path, "rb") as f:
            f.seek(source.offset)
            data = f.read()
        source.offset += len(data)
        source.partial = self._lines(source.partial + data)
        if first and source.partial:
            self._line(source.partial)
            source.partial = b""

    def _read_listing(self) -> None:
        listing = self.listing
        assert listing is not None
        try:
            with open(listing, "rb") as f:
                f.seek(self._listed)
                data = f.read()
        except OSError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        self._listed += len(whole)
        for line in whole.decode("utf-8", "replace").splitlines():
            if line.strip():
                with contextlib.suppress(OSError):  # (the app checked it could read it)
                    self.add_file(line.strip())

    def _lines(self, data: bytes) -> bytes:
        """Take the whole lines in data; what is left after the last line end."""
        lines = data.split(b"\n")
        partial = lines.pop()
        if len(partial) > MAX_LINE:
            self.malformed += 1
            partial = b""
        for line in lines:
            self._line(line)
        return partial

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
        if self.noted is not None:
            self.noted.add(client_random)


class KeyLogFile(KeyLog):
    """A key log file, read as it grows (KeyLog.add_file). Raises OSError at once when it
    cannot be read."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.add_file(path)


def open_keys(path: str | None, captures: list[str] | tuple[str, ...] = (),
              more: list[str] | tuple[str, ...] = ()) -> KeyLog | None:  # fmt: skip
    """The key log of `path` and of `more` (raising OSError when one cannot be read), with the
    secrets that the capture files' pcapng Decryption Secrets Blocks hold; None when there are
    none of these. Only plain files are looked into (not pipes, nor compressed captures)."""
    keys: KeyLog | None = None
    for name in ([path] if path is not None else []) + list(more):
        if keys is None:
            keys = KeyLog()
        keys.add_file(name)
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
