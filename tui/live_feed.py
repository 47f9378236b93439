"""A live capture read by a process of its own, as Wireshark's dumpcap does, onto disk.

With the app open, the capture thread used to read the kernel's buffer between its other work,
sharing the GIL with the screen: at 100,000 packets/s of keep-alive HTTP on `lo` it read too
seldom, the kernel dropped most packets, and the holes those left cost the engine more again.
Now a capture process, forked from the app before it starts (it inherits the open capture
handles, so it needs no privileges of its own), does nothing but read the kernel and append each
batch, as it came, to a `LiveFeed`: files in the temporary directory. The capture thread
(`FeedCapture`) and the HTTP helpers (tui.http_helpers) each read the feed as it grows, at their
own pace; what they have not read yet waits on disk, within a bound (half of --spool) past which
the capture process writes a batch's packet count instead of the batch: those packets are
counted as skipped, like the kernel's drops, and every reader numbers them all the same.

The feed is a sequence of records (`_RECORD` then the data): a batch; a flush (no packet came for
a while: readers expire idle connections at the wall time it carries, so all agree); a skip; the
kernel's counters; an error (the capture failed); the end; as the last record of a full file, the
move to the next file; and as the first of every file, the number of packets before it. A file
is deleted once every reader is past it, or, when the helpers hold half of the bound, once the
capture thread is: the capture thread must keep up with the traffic, the helpers need not. A
helper whose next file went finds the oldest one left and numbers its packets from there, the
packets between counted as passed over.

Filter changes go to the capture process over a pipe, which it answers; when the app goes, the
pipe closes and the process ends.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections import deque
from typing import NamedTuple

from engine import sources
from engine.batch import Batch
from engine.bounds import MiB, Bounds

# kind, link type, a value (a flush's time, a skip's packets), the lengths of the two parts
# that follow (a batch's data and index; a message, or the kernel's counters, as the first).
_RECORD = struct.Struct("<BxHdII")
_COUNTERS = struct.Struct("<QQQ")
BATCH, FLUSH, SKIP, STATS, ERROR, END, NEXT, START = 1, 2, 3, 4, 5, 6, 7, 8

NO_PACKETS = Batch(sources.ETHERNET, b"", b"")  # what a wait that saw none gives
FEED_BYTES = 256 * MiB  # the bound with --spool 0 (see feed_bytes)
# The capture process reads the kernel at most this often unless a read comes back full: the
# fewer, larger batches cost the readers less (each batch ends with work per connection touched).
READ_EVERY = 0.01
IDLE_FLUSH = 0.075  # seconds without packets after which the capture process writes a flush
STATS_EVERY = 0.25  # seconds between the kernel counters it writes


def feed_bytes(bounds: Bounds) -> int:
    """Disk for a live capture's packets that a reader has not read yet: half of --spool."""
    if not bounds.spool_bytes:
        return FEED_BYTES
    return max(2 * LiveFeed.SEGMENT, bounds.spool_bytes // 2)


class LiveFeed:
    """The writing side, in the capture process: records in files of about SEGMENT bytes."""

    SEGMENT = 16 * MiB

    def __init__(self, directory: str, limit: int) -> None:
        self.dir = directory
        self.limit = max(limit, 2 * self.SEGMENT)
        self.index = 0
        self.fd = self._create(0)
        self.size = 0  # of the file being written
        self.full: deque[tuple[int, int]] = deque()  # (file, its bytes), not deleted when seen
        self.kept = 0  # bytes of those
        self.skipped = 0
        self.packets = 0  # written, as batches or skips
        self.ended = False
        self._write(START, value=0)

    def path(self, index: int) -> str:
        return os.path.join(self.dir, str(index))

    def _create(self, index: int) -> int:
        return os.open(self.path(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def _write(self, kind: int, linktype: int = 0, value: float = 0.0, first: bytes = b"",
               second: bytes = b"") -> None:
        head = _RECORD.pack(kind, linktype, value, len(first), len(second))
        # One write a record: a reader sees all of it, or waits for the rest.
        self.size += os.writev(self.fd, [head, first, second] if first or second else [head])

    def _backlog(self) -> int:
        """Bytes on disk not yet deleted by the readers (files they are all past go)."""
        while self.full and not os.path.exists(self.path(self.full[0][0])):
            self.kept -= self.full.popleft()[1]
        return self.kept + self.size

    def add(self, batch: Batch) -> None:
        n = len(batch)
        if not n or self.ended:
            return
        if self.kept + self.size + len(batch.data) > self.limit and (
                self._backlog() + len(batch.data) > self.limit):
            self._write(SKIP, value=n)
            self.skipped += n
        else:
            self._write(BATCH, batch.linktype, 0.0, batch.data, batch.meta)
        self.packets += n
        if self.size >= self.SEGMENT:
            fd = self._create(self.index + 1)  # before the record that sends readers to it
            os.write(fd, _RECORD.pack(START, 0, self.packets, 0, 0))
            self._write(NEXT)
            os.close(self.fd)
            self.full.append((self.index, self.size))
            self.kept += self.size
            self.index, self.fd, self.size = self.index + 1, fd, _RECORD.size

    def flush(self, now: float) -> None:
        self._write(FLUSH, value=now)

    def stats(self, stats: sources.CaptureStats | None) -> None:
        if stats is not None:
            self._write(STATS, first=_COUNTERS.pack(stats.received, stats.dropped,
                                                    stats.if_dropped))

    def error(self, message: str) -> None:
        self._write(ERROR, first=message.encode("utf-8", "replace"))

    def end(self) -> None:
        if not self.ended:
            self._write(END)
            self.ended = True


class FeedReader:
    """One reader's way through a feed, as it grows."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.index = 0
        self.fd = os.open(os.path.join(directory, "0"), os.O_RDONLY)
        self.offset = 0
        self.packets = 0  # in the batches and skips read
        self.left: deque[tuple[int, int]] = deque()  # (file, packets read when it was left)
        # Set by a reader that has fallen behind: batches are passed over unread, as skips
        # (of their packets), and counted in `passed_over`.
        self.passing = False
        self.passed_over = 0

    def behind(self, files: int) -> bool:
        """Whether the writer is `files` files or more ahead of this reader."""
        return os.path.exists(os.path.join(self.dir, str(self.index + files)))

    def next(self) -> tuple[int, int, float, bytes, bytes] | None:
        """The next record (kind, link type, value, first part, second part), or None while it
        is not written yet. After a jump over files deleted before this reader got to them
        (see `release`), a skip of the packets they held."""
        while True:
            head = os.pread(self.fd, _RECORD.size, self.offset)
            if len(head) < _RECORD.size:
                return None
            kind, linktype, value, first_len, second_len = _RECORD.unpack(head)
            body = b""
            if kind == BATCH and self.passing:
                self.offset += _RECORD.size + first_len + second_len
                self.packets += second_len // 16
                self.passed_over += second_len // 16
                return SKIP, linktype, float(second_len // 16), b"", b""
            if first_len or second_len:
                body = os.pread(self.fd, first_len + second_len, self.offset + _RECORD.size)
                if len(body) < first_len + second_len:
                    return None
            self.offset += _RECORD.size + first_len + second_len
            if kind == BATCH:
                self.packets += second_len // 16
            elif kind == SKIP:
                self.packets += int(value)
            elif kind == START:
                jumped = int(value) - self.packets
                if jumped > 0:  # files this reader had not read went
                    self.packets += jumped
                    self.passed_over += jumped
                    return SKIP, 0, float(jumped), b"", b""
                continue
            if kind != NEXT:
                return kind, linktype, value, body[:first_len], body[first_len:]
            self.left.append((self.index, self.packets))
            os.close(self.fd)
            self.fd = self._open_next()
            self.offset = 0

    def _open_next(self) -> int:
        """The next file; if it went (released while this reader was behind), the oldest one
        after it that is left (its first record says how many packets came before it)."""
        while True:
            self.index += 1
            try:
                return os.open(os.path.join(self.dir, str(self.index)), os.O_RDONLY)
            except FileNotFoundError:
                left = [int(name) for name in os.listdir(self.dir) if name.isdigit()]
                later = [i for i in left if i > self.index]
                if not later:
                    raise
                self.index = min(later) - 1

    def release(self, through: int, keep: int | None = None) -> None:
        """Delete the files this reader has left whose packets every other reader has read
        (`through`: the fewest packets another reader has read); and, past `keep` files left
        and not deleted, the oldest of them whatever the others (they jump over them)."""
        left = self.left
        while left and (left[0][1] <= through or (keep is not None and len(left) > keep)):
            try:
                os.unlink(os.path.join(self.dir, str(left.popleft()[0])))
            except OSError:
                pass

    def close(self) -> None:
        os.close(self.fd)


class _Stopped(Exception):
    """The capture process was asked to end (SIGTERM)."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def _capture(source: sources.LiveCapture, feed: LiveFeed, commands: socket.socket,
             signals: set[signal.Signals]) -> None:
    """The capture process: read the kernel, append to the feed, answer filter changes.
    signals: the signal mask to restore (signals that came since the fork are taken now)."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, signals)
        _read(source, feed, commands)
        # The readers may still be reading what was written: the feed goes when the app does
        # (also when it was killed, so nothing is left behind in the temporary directory).
        while _receive(commands) is not None:
            commands.sendall(_frame("error:the capture has ended"))
    except (OSError, _Stopped):
        pass
    finally:
        shutil.rmtree(feed.dir, ignore_errors=True)


def _read(source: sources.LiveCapture, feed: LiveFeed, commands: socket.socket) -> None:
    """Read the kernel into the feed until the capture fails or the app goes."""
    quiet_since = time.monotonic()
    stats_at = 0.0
    read_at = 0.0
    try:
        while True:
            wait = read_at + READ_EVERY - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            read_at = time.monotonic()
            batch = source.next_batch(0.02)
            now = time.monotonic()
            if batch is not None and len(batch) >= sources.MAX_BATCH:
                read_at = 0.0  # the kernel has more waiting: read it at once
            if batch is None:  # the capture failed (an interface went away)
                feed.stats(source.stats())
                feed.error(source.error or "the capture ended")
                break
            if len(batch):
                feed.add(batch)
                quiet_since = now
            elif now - quiet_since >= IDLE_FLUSH:
                feed.flush(time.time())
                quiet_since = now
            if now - stats_at >= STATS_EVERY:
                feed.stats(source.stats())
                stats_at = now
            if select.select([commands], [], [], 0)[0]:
                expression = _receive(commands)
                if expression is None:
                    break  # the app went
                try:
                    source.set_filter(expression)
                    answer = "ok:"
                except sources.FilterError as e:
                    answer = f"filter:{e.reason}"
                except sources.CaptureError as e:
                    answer = f"error:{e}"
                commands.sendall(_frame(answer))
    except OSError:
        pass  # the disk is full, or the app went: nothing to tell anyone
    finally:
        try:
            feed.end()
        except OSError:
            pass
        source.close()


def _frame(text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    return struct.pack("<I", len(data)) + data


def _receive(sock: socket.socket) -> str | None:
    """One framed message, or None when the other side closed."""
    head = _read_exactly(sock, 4)
    if head is None:
        return None
    body = _read_exactly(sock, struct.unpack("<I", head)[0])
    return None if body is None else body.decode("utf-8", "replace")


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    out = b""
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            return None
        out += got
    return out


class Record(NamedTuple):
    kind: int
    batch: Batch | None = None
    value: float = 0.0


class FeedCapture:
    """A live capture as the capture thread reads it: from the feed that the capture process
    writes, record by record (`next_record`); with what a live source has besides (name, filter,
    error, set_filter, stats, close)."""

    live = True

    def __init__(self, source: sources.LiveCapture, limit: int) -> None:
        self.name = source.name
        self.filter = source.filter
        self.limit = limit
        self.error: str | None = None
        self.dir = tempfile.mkdtemp(prefix="wirepeek-live-")
        feed = LiveFeed(self.dir, limit)
        ours, theirs = socket.socketpair()
        # Held from the fork until the capture process has chosen what they do to it.
        held = {signal.SIGINT, signal.SIGHUP, signal.SIGTERM}
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        pid = os.fork()
        if pid == 0:  # the capture process
            status = 0
            try:
                ours.close()
                # The app stops it, by the pipe: when a terminal closes (SIGHUP) or a key
                # interrupts (SIGINT), the app goes and then it does, taking the feed with it.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, _stop)  # asked to end: it does, feed and all
                try:
                    os.nice(-10)  # first on a busy machine, as the kernel's buffer waits for it
                except OSError:
                    pass  # not allowed: as the app
                _capture(source, feed, theirs, before)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        theirs.close()
        os.close(feed.fd)
        source.close()  # our copy: the capture process has its own
        self.pid = pid
        self.commands = ours
        self.reader = FeedReader(self.dir)
        self.counters: sources.CaptureStats | None = None
        self.skipped = 0  # packets the capture process could not write (the backlog bound)
        self.ended = False
        self.closed = False

    def next_record(self, timeout: float) -> Record | None:
        """The next record: a batch, a flush (expire idle connections at its time) or a skip
        (of its number of packets); an empty batch when none came within the timeout; None
        once the capture has ended."""
        if self.ended:
            return None
        deadline = time.monotonic() + timeout
        while True:
            record = self.reader.next()
            if record is None:
                if time.monotonic() >= deadline:
                    return Record(BATCH, NO_PACKETS)
                if not self._alive():
                    self.error = self.error or "the capture process ended unexpectedly"
                    self.ended = True
                    return None
                time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
                continue
            kind, linktype, value, first, second = record
            if kind == BATCH:
                return Record(BATCH, Batch(linktype, first, second))
            if kind == FLUSH:
                return Record(FLUSH, value=value)
            if kind == SKIP:
                self.skipped += int(value)
                return Record(SKIP, value=value)
            if kind == STATS:
                self.counters = sources.CaptureStats(*_COUNTERS.unpack(first))
            elif kind == ERROR:
                self.error = first.decode("utf-8", "replace")
            elif kind == END:
                self.ended = True
                return None

    def _alive(self) -> bool:
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def stats(self) -> sources.CaptureStats | None:
        return self.counters

    def set_filter(self, expression: str) -> None:
        """Change the capture filter in the capture process; raise as a live source does."""
        sources.validate_filter(expression)
        try:
            self.commands.sendall(_frame(expression))
            self.commands.settimeout(10)
            answer = _receive(self.commands)
        except OSError:
            answer = None
        finally:
            self.commands.settimeout(None)
        if answer is None:
            raise sources.CaptureError("the capture process does not answer")
        kind, _, reason = answer.partition(":")
        if kind == "filter":
            raise sources.FilterError(expression, reason)
        if kind == "error":
            raise sources.CaptureError(reason)
        self.filter = expression

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.commands.close()  # the capture process ends when it sees the pipe closed
        deadline = time.monotonic() + 2
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._alive():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.reader.close()
        shutil.rmtree(self.dir, ignore_errors=True)
