"""Capture sources: where packets come from, handed on as `Batch`es.

A source is a live capture on one or more interfaces, one or more capture files (pcap or pcapng,
merged by timestamp), or a capture stream on stdin. Whoever drives the pipeline pulls batches
with `Source.next_batch()`. The capture (BPF) filter runs in the kernel or in libpcap, and can be
changed while the source is open.

This is the only module of wirepeek that imports pcapy, and the only one that opens capture
devices and capture files. Regular files go to libpcap, the fast path; pipes, stdin and the files
libpcap cannot read, or gives up on part way, go to `engine.pcapfile.CaptureParser`, fed by
`CaptureStream`. Pcap files are written by `engine.pcapfile.PcapWriter`. It must never:

- block forever: live reads wait in select() with a timeout, because a blocking libpcap read on a
  quiet Linux interface (TPACKET_V3) only times out once a packet has arrived;
- let a libpcap exception escape: every failure becomes a `CaptureError` whose text is one line
  the user can act on;
- lose a packet it has read: a broken file yields every packet before the break, then
  `Source.error` says which file broke and where;
- decode anything beyond the capture file's own framing.

Sources are not thread-safe: one thread opens, reads, re-filters and closes a source.
"""

from __future__ import annotations

import os
import pwd
import select
import stat
import struct
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Self, TypeVar

import pcapy

from engine.batch import MAX_CAPLEN, META, Batch, pcap_records
from engine.decode import innermost_tcp, tcp_key
from engine.keylog import CLIENT_RANDOM, CLIENT_TRAFFIC_0, SERVER_TRAFFIC_0, KeyLog
from engine.pcapfile import (
    ETHERNET,
    PCAP_MAGICS,
    SNAPLEN,
    CaptureError,
    CaptureParser,
    Decompressor,
    Packet,
    PcapngWriter,
    PcapWriter,
    compression_of,
)
from engine.tcp import HOST_SHIFT, reverse_key

MAX_BATCH = 4096
"""Most packets in one batch: big enough to amortise per-call costs, small enough to stay fresh."""

LIVE_BLOCK_TIMEOUT_MS = 50
"""The kernel hands a partly filled ring block to us after this long, which bounds live latency."""

READ_CHUNK = 1 << 20

_Handle = Any  # pcapy's capture handle; the extension module does not export its type
_Read = TypeVar("_Read", Batch, list["Packet"])

# libpcap 1.9 refuses pcapng files whose interfaces have different link types with this message.
_MIXED_LINKTYPES = "different from the type of the first interface"


class FilterError(CaptureError):
    """An invalid BPF expression; str(e) is libpcap's message, prefixed with the expression."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"invalid filter '{expression}': {reason}")
        self.expression = expression
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """libpcap's counters for a live capture, summed over its interfaces."""

    received: int
    dropped: int
    if_dropped: int


# --- filters, interfaces, privileges ----------------------------------------------------------


def _compile(expr: str, linktype: int) -> pcapy.BPFProgram:
    try:
        return pcapy.compile(linktype, SNAPLEN, expr, 1, 0)
    except pcapy.PcapError as e:
        raise FilterError(expr, str(e)) from None


def validate_filter(expr: str, linktype: int = ETHERNET) -> None:
    """Raise FilterError unless libpcap compiles `expr` for packets of `linktype`."""
    _compile(expr.strip(), linktype)


def list_interfaces() -> list[str]:
    """The device names libpcap can capture on, in libpcap's order."""
    try:
        return list(pcapy.findalldevs())
    except pcapy.PcapError as e:
        raise CaptureError(f"cannot list interfaces: {e}") from None


def drop_privileges() -> str | None:
    """Become the user who ran `sudo`, as tcpdump -Z does; return that user's name.

    Call it once every capture handle is open: open handles keep capturing, and their filters can
    still be changed. Does nothing (returns None) unless running as root under sudo.
    """
    if os.geteuid() != 0:
        return None
    try:
        uid = int(os.environ["SUDO_UID"])
        gid = int(os.environ["SUDO_GID"])
    except (KeyError, ValueError):
        return None
    if uid == 0:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    try:
        # The group list goes first: once we are no longer root we could not shed root's groups.
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as e:
        raise CaptureError(f"cannot drop privileges to {name}: {e.strerror}") from None
    return name


class _PacketFilter:
    """A BPF expression run by us, packet by packet, for packets libpcap does not filter itself."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        # None: the expression does not compile for that link type, so no such packet matches it
        # (an Ethernet-only filter on a mixed Ethernet/loopback file keeps the Ethernet packets).
        self._programs: dict[int, pcapy.BPFProgram | None] = {}

    def check(self, linktypes: Iterable[int]) -> None:
        """Raise FilterError unless the expression compiles for at least one of the link types."""
        if not self.expr:
            return
        first: FilterError | None = None
        for linktype in sorted(set(linktypes)) or [ETHERNET]:
            try:
                self._programs[linktype] = _compile(self.expr, linktype)
                return
            except FilterError as e:
                self._programs[linktype] = None
                first = first or e
        if first is not None:
            raise first

    def matches(self, linktype: int, data: bytes) -> bool:
        if not self.expr:
            return True
        if linktype not in self._programs:
            try:
                self._programs[linktype] = _compile(self.expr, linktype)
            except FilterError:
                self._programs[linktype] = None
        program = self._programs[linktype]
        # BPFProgram.filter returns the BPF program's verdict: 0 to reject, else the snap length.
        return program is not None and program.filter(data) != 0


# --- the Source interface ---------------------------------------------------------------------


class Source:
    """Where packets come from. Read it with `next_batch` (the fast path) or `next_packets`."""

    name: str
    """What the user named: "lo", "lo,any", "capture.pcap", "a.pcap,b.pcap", "stdin"."""
    live: bool
    filter: str
    """The capture filter in force ("" for none)."""
    paths: tuple[str, ...]
    """The files this source reads (none for interfaces and stdin)."""
    hosts: tuple[str, ...] = ()
    """The capture hosts whose batches are numbered 1, 2... (`Batch.host`): engine.remote."""

    def __init__(self, name: str, live: bool, paths: tuple[str, ...] = ()) -> None:
        self.name = name
        self.live = live
        self.filter = ""
        self.paths = paths
        self._error: str | None = None

    @property
    def error(self) -> str | None:
        """Once the source is exhausted: why it ended early, in one line, or None if it did not."""
        return self._error

    def progress(self) -> tuple[int, int] | None:
        """(bytes read, bytes in all) of the files being read, when that is known (not for
        interfaces, pipes or stdin)."""
        return None

    @property
    def linktypes(self) -> frozenset[int]:
        """The link types of the packets seen or announced so far."""
        raise NotImplementedError

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """Up to MAX_BATCH packets of one link type, or None once the source is exhausted.

        Waits at most `timeout` seconds for packets (None: until some arrive) and may return an
        empty batch. Reading a regular file never waits.
        """
        raise NotImplementedError

    def next_packets(self, timeout: float | None = None) -> list[Packet] | None:
        """Like `next_batch`, but each packet whole, with its wire length (for writing captures)."""
        raise NotImplementedError

    def set_filter(self, expr: str) -> None:
        """Change the capture filter; on FilterError the old one stays in force.

        Live captures apply it at once, to packets already queued in the kernel too; files apply
        it from the next packet read.
        """
        expr = expr.strip()
        self._check_filter(expr)
        self._apply_filter(expr)
        self.filter = expr

    def _check_filter(self, expr: str) -> None:
        raise NotImplementedError

    def _apply_filter(self, expr: str) -> None:
        raise NotImplementedError

    def stats(self) -> CaptureStats | None:
        """Kernel counters of a live capture; None for files."""
        return None

    def notices(self) -> list[str]:
        """What happened to the source since the last call, a line each (engine.remote's hosts)."""
        return []

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} filter={self.filter!r}>"


def _pack(packets: list[Packet]) -> Batch:
    data = bytearray()
    meta = bytearray()
    for p in packets:
        meta += META.pack(p.sec, p.usec, len(data), len(p.data))
        data += p.data
    return Batch(packets[0].linktype, bytes(data), bytes(meta))


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class _PacketSource(Source):
    """A source that reads `Packet`s itself (our own parser, merges) and packs them into batches."""

    def __init__(self, name: str, live: bool, paths: tuple[str, ...] = ()) -> None:
        super().__init__(name, live, paths)
        self._ready: deque[Packet] = deque()
        self._last_linktype = ETHERNET

    def _read_packets(self, timeout: float | None) -> list[Packet] | None:
        """Packets that pass the filter; [] if none came in time; None when exhausted."""
        raise NotImplementedError

    def next_packets(self, timeout: float | None = None) -> list[Packet] | None:
        if self._ready:
            n = min(len(self._ready), MAX_BATCH)
            return [self._ready.popleft() for _ in range(n)]
        return self._read_packets(timeout)

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        if not self._ready:
            got = self._read_packets(timeout)
            if got is None:
                return None
            self._ready.extend(got)
        if not self._ready:
            return Batch(self._last_linktype, b"", b"")
        # A batch has one link type, so it ends where the link type changes.
        linktype = self._ready[0].linktype
        run: list[Packet] = []
        while self._ready and len(run) < MAX_BATCH and self._ready[0].linktype == linktype:
            run.append(self._ready.popleft())
        self._last_linktype = linktype
        return _pack(run)

    def _drop_unmatched(self, packet_filter: _PacketFilter) -> None:
        """Apply a new filter to packets read under the old one but not yet handed out."""
        self._ready = deque(p for p in self._ready if packet_filter.matches(p.linktype, p.data))


# --- live capture -----------------------------------------------------------------------------


# Resolved at import: setcap wants the real file, not a venv symlink, and once privileges are
# dropped the links may sit in directories we can no longer look into.
_INTERPRETER = os.path.realpath(sys.executable)


def _permission_message(interface: str) -> str:
    return (
        f"no permission to capture on '{interface}': run with sudo, or grant the interpreter the"
        f" capability (sudo setcap cap_net_raw,cap_net_admin=eip {_INTERPRETER}), or read a file"
        " with -r"
    )


def _explain_open_failure(interface: str, message: str) -> CaptureError:
    try:
        known = list_interfaces()
    except CaptureError:
        known = []
    # Checked first: without the right to capture, libpcap says "permission denied" even for a
    # device that does not exist.
    if known and interface not in known:
        return CaptureError(f"no such interface '{interface}'; interfaces: {', '.join(known)}")
    lowered = message.lower()
    if "permission" in lowered or "not permitted" in lowered:
        return CaptureError(_permission_message(interface))
    return CaptureError(f"cannot capture on '{interface}': {message}")


class LiveCapture(Source):
    """Packets from one or more network interfaces, one nonblocking libpcap handle each.

    If reading an interface fails (it went away, say), the capture ends with `error` set.
    """

    def __init__(self, interfaces: list[str], handles: list[_Handle]) -> None:
        super().__init__(",".join(interfaces), live=True)
        self._interfaces = interfaces
        self._handles = handles
        self._fds = [h.getfd() for h in handles]
        self._linktypes = [h.datalink() for h in handles]
        self._turn = 0
        self._closed = False
        self._final_stats: CaptureStats | None = None

    @property
    def linktypes(self) -> frozenset[int]:
        return frozenset(self._linktypes)

    def _poll(self, read: Callable[[int], _Read | None], timeout: float | None) -> _Read | None:
        """Call read(i) on each handle in turn until one returns something, waiting in select().

        Returns None when the timeout ran out; raises CaptureError if a handle failed.
        """
        deadline = _deadline(timeout)
        n = len(self._handles)
        while True:
            # Round robin from the handle after the last one served, so a busy interface cannot
            # starve a quiet one.
            for _ in range(n):
                i = self._turn
                self._turn = (i + 1) % n
                try:
                    got = read(i)
                except pcapy.PcapError as e:
                    raise CaptureError(f"{self._interfaces[i]}: {e}") from None
                if got:
                    return got
            wait = _remaining(deadline)
            if wait is not None and wait <= 0:
                return None
            select.select(self._fds, [], [], wait)

    def _poll_or_end(
        self, read: Callable[[int], _Read | None], timeout: float | None
    ) -> _Read | None:
        """Poll; an interface that fails ends the capture with its message in `error`."""
        try:
            return self._poll(read, timeout)
        except CaptureError as e:
            self._error = str(e)
            self.close()
            return None

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        if self._closed:
            return None

        def read(i: int) -> Batch | None:
            data, meta = self._handles[i].next_batch(MAX_BATCH)
            return Batch(self._linktypes[i], data, meta) if meta else None

        got = self._poll_or_end(read, timeout)
        if self._closed:
            return None
        return got if got is not None else Batch(self._linktypes[0], b"", b"")

    def next_packets(self, timeout: float | None = None) -> list[Packet] | None:
        if self._closed:
            return None

        def read(i: int) -> list[Packet] | None:
            handle, linktype = self._handles[i], self._linktypes[i]
            out: list[Packet] = []
            while len(out) < MAX_BATCH:
                header, data = handle.next()
                if header is None:
                    break
                sec, usec = header.getts()
                out.append(Packet(sec, usec, linktype, header.getlen(), data))
            return out or None

        got = self._poll_or_end(read, timeout)
        if self._closed:
            return None
        return got if got is not None else []

    def _check_filter(self, expr: str) -> None:
        # Every interface needs the filter installed, so it must compile for each link type.
        for interface, linktype in zip(self._interfaces, self._linktypes, strict=True):
            try:
                _compile(expr, linktype)
            except FilterError as e:
                if len(set(self._linktypes)) == 1:
                    raise
                raise FilterError(expr, f"{e.reason} (on '{interface}')") from None

    def _apply_filter(self, expr: str) -> None:
        done: list[_Handle] = []
        try:
            for handle in self._handles:
                handle.setfilter(expr)
                done.append(handle)
        except pcapy.PcapError as e:
            for handle in done:
                handle.setfilter(self.filter)
            raise FilterError(expr, str(e)) from None

    def stats(self) -> CaptureStats | None:
        if self._closed:
            return self._final_stats
        received = dropped = if_dropped = 0
        for handle in self._handles:
            try:
                r, d, i = handle.stats()
            except (pcapy.PcapError, ValueError):
                continue
            received, dropped, if_dropped = received + r, dropped + d, if_dropped + i
        return CaptureStats(received, dropped, if_dropped)

    def close(self) -> None:
        if self._closed:
            return
        # Kept so the final counters can still be shown once the capture has stopped.
        self._final_stats = self.stats()
        self._closed = True
        for handle in self._handles:
            handle.close()


LIVE_BUFFER_BYTES = 64 * 1024 * 1024
"""The kernel's capture buffer for each interface (libpcap's default is 2 MiB): what a burst,
or a pause of the reading process, may fill before the kernel drops packets."""


def _open_interface(interface: str, snaplen: int, promisc: bool) -> _Handle:
    """A libpcap handle on the interface with LIVE_BUFFER_BYTES of kernel buffer. pcapy-ng's
    `activate` gives libpcap's status, not its message: when it fails, `open_live` opens the
    interface as before, with the default buffer, or raises with libpcap's own words."""
    handle = pcapy.create(interface)
    handle.set_snaplen(snaplen)
    handle.set_promisc(int(promisc))
    handle.set_timeout(LIVE_BLOCK_TIMEOUT_MS)
    handle.set_buffer_size(LIVE_BUFFER_BYTES)
    status = handle.activate()
    if isinstance(status, int) and status < 0:
        handle.close()
        return pcapy.open_live(interface, snaplen, int(promisc), LIVE_BLOCK_TIMEOUT_MS)
    return handle


def open_live(
    interfaces: list[str], bpf: str = "", snaplen: int = SNAPLEN, promisc: bool = False
) -> LiveCapture:
    """Capture on each of `interfaces` ("any" included); raise CaptureError or FilterError."""
    if not interfaces:
        raise CaptureError("no interface to capture on")
    handles: list[_Handle] = []
    try:
        for interface in interfaces:
            try:
                handle = _open_interface(interface, snaplen, promisc)
                handle.setnonblock(1)
            except pcapy.PcapError as e:
                raise _explain_open_failure(interface, str(e)) from None
            handles.append(handle)
        source = LiveCapture(list(interfaces), handles)
        if bpf.strip():
            source.set_filter(bpf)
    except CaptureError:
        for handle in handles:
            handle.close()
        raise
    return source


def _locate(name: str, records: int, message: str) -> str:
    """The one-line account of a broken capture: which file, after how many packets, and why."""
    what = "truncated" if message.startswith("truncated") else "unreadable"
    return f"{name}: {what} after {records} packets: {message}"


# --- capture streams: stdin, pipes, and files libpcap gave up on -----------------------------


@dataclass(slots=True)
class _FilterSpan:
    """How many packets were handed out while one filter was in force."""

    expr: str
    delivered: int = 0


class CaptureStream(_PacketSource):
    """A pcap or pcapng stream read by `CaptureParser`: stdin, a pipe, a compressed file, or a
    file libpcap refused. gzip and zstd are undone on the way (`Decompressor`), found by the
    stream's first bytes whatever its name.

    Waits for data in select(), so a stream fed slowly (tcpdump -U -w - | wirepeek -r -) gives
    packets as they come, and `next_batch(timeout)` returns in time.
    """

    def __init__(self, name: str, stream: BinaryIO, paths: tuple[str, ...] = ()) -> None:
        super().__init__(name, live=False, paths=paths)
        self._stream = stream
        self._fd = stream.fileno()
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._input = Decompressor()
        self._parser = CaptureParser()
        self._pending: deque[Packet] = deque()  # framed, but not yet filtered
        self._filter = _PacketFilter("")
        self._eof = False  # the stream said so; what it gave may still be waiting to be framed
        self._ended = False
        self._closed = False
        self._got_data = False
        self._problem: str | None = None
        self.libpcap_error: str | None = None
        """What libpcap said about this file, if it gave up on it before we took over."""

    def progress(self) -> tuple[int, int] | None:
        return _file_progress(self._fd) if self._regular and not self._closed else None

    @property
    def linktypes(self) -> frozenset[int]:
        return frozenset(self._parser.linktypes)

    def read_header(self) -> None:
        """Wait for the file header, so the format and first link type are known; CaptureError."""
        while not self._parser.started and not self._ended:
            self._fill(None)
        if self._parser.started:
            return
        kind = self._input.kind
        if self._parser.broken == "unknown file format":
            if kind:
                raise CaptureError(
                    f"{self.name}: {kind}-compressed, but not a pcap or pcapng file inside"
                    " (unknown file format)"
                )
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (unknown file format)")
        if self._problem is not None:
            raise CaptureError(f"{self.name}: {self._problem}")
        inside = f" (nothing inside the {kind} data)" if kind else ""
        raise CaptureError(f"{self.name}: empty input{inside}")

    def _parse(self) -> list[Packet]:
        """The packets that the bytes read so far complete, decompressing as much as that takes."""
        got = self._parser.parse(MAX_BATCH)
        while not got and self._parser.broken is None:
            plain = self._input.read(READ_CHUNK)
            if not plain:
                break
            self._parser.feed(plain)
            got = self._parser.parse(MAX_BATCH)
        return got

    def _fill(self, timeout: float | None) -> bool:
        """Frame more packets into `_pending`, reading if need be. False if nothing came in time."""
        if self._ended:
            return False
        got = self._parse()
        if not got and self._parser.broken is None:
            if self._input.broken is None and not self._eof:
                ready, _, _ = select.select([self._fd], [], [], timeout)
                if not ready:
                    return False
                try:
                    data = os.read(self._fd, READ_CHUNK)
                except OSError as e:
                    self._finish(e.strerror or str(e))
                    return True
                if data:
                    self._got_data = True
                    self._input.feed(data)
                else:
                    self._eof = True
                    self._input.finish()
                got = self._parse()
            if not got and self._parser.broken is None and (self._eof or self._input.broken):
                # Nothing more can be framed: the compressed data's problem comes first, as the
                # capture inside it then breaks off too.
                self._finish(self._input.end() or self._parser.end())
                return True
        self._pending.extend(got)
        if self._parser.broken is not None:
            self._finish(self._parser.broken)
        return True

    def _finish(self, problem: str | None) -> None:
        self._ended = True
        self._problem = problem or self.libpcap_error
        if self._problem is not None and self._got_data:
            self._error = _locate(self.name, self._parser.records, self._problem)

    def _read_packets(self, timeout: float | None) -> list[Packet] | None:
        deadline = _deadline(timeout)
        out: list[Packet] = []
        matches = self._filter.matches
        while True:
            while self._pending and len(out) < MAX_BATCH:
                p = self._pending.popleft()
                if matches(p.linktype, p.data):
                    out.append(p)
            # A stream hands out what it has; a file, which never waits, whole batches as
            # libpcap does, so that a compressed file is cut into the same batches as the plain one.
            if len(out) == MAX_BATCH or (out and not self._regular):
                return out
            if self._ended:
                return out or None
            if not self._fill(_remaining(deadline)):
                return out

    def skip(self, spans: list[_FilterSpan]) -> None:
        """Pass over the packets libpcap already handed out, filter by filter, before taking over."""
        for span in spans:
            packet_filter = _PacketFilter(span.expr)
            left = span.delivered
            while left:
                if not self._pending and not self._fill(None):
                    return
                if not self._pending and self._ended:
                    return
                while self._pending and left:
                    p = self._pending.popleft()
                    if packet_filter.matches(p.linktype, p.data):
                        left -= 1

    def _check_filter(self, expr: str) -> None:
        _PacketFilter(expr).check(self._parser.linktypes)

    def _apply_filter(self, expr: str) -> None:
        self._filter = _PacketFilter(expr)
        self._drop_unmatched(self._filter)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ended = True
            self._stream.close()


# --- capture files read by libpcap ------------------------------------------------------------


def _file_progress(fd: int, pos: int | None = None) -> tuple[int, int] | None:
    """Where the kernel's file position is in a regular file (what was read, buffering
    included), or `pos` for a reader that does not move it (os.pread), and its size."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if pos is None:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
        return min(pos, info.st_size), info.st_size
    except OSError:
        return None


READ_RECORDS = not isinstance(pcap_records, types.FunctionType)
"""Frame the records of classic pcap files ourselves (`_Records`) when `pcap_records` is
compiled; interpreted, it is slower than libpcap, which reads them then."""

_RECORDS_READ = 1 << 20
"""Bytes of a classic pcap file `_Records` reads at once: a batch holds the whole records among
them (about 1,450 packets of the keep-alive benchmark; from 2 MiB up, each read cost more a byte)."""


class _Records:
    """The packets of a classic pcap file (version 2.4), framed by `pcap_records` from what
    os.pread reads: no copy but the kernel's (libpcap read each record with fread into its
    buffer, and pcapy copied it into the batch: 0.16 s for the keep-alive benchmark's 232 MB,
    this 0.07). It stops, to leave the rest to libpcap, at a record it does not frame (longer
    than libpcap reads whole), at one that the file ends inside, and when a read fails."""

    HEADER = 24

    def __init__(self, fd: int, big: bool, nano: bool, snap: int) -> None:
        self.fd = fd
        self.big = big
        self.nano = nano
        self.snap = snap  # the longest record libpcap reads whole
        self.pos = self.HEADER  # where the next record starts
        self.ended = False  # it read to the file's end, after a whole record

    @classmethod
    def of(cls, fd: int) -> _Records | None:
        """The reader for the file open at `fd`, if it is a classic pcap file of version 2.4."""
        try:
            head = os.pread(fd, cls.HEADER, 0)
        except OSError:
            return None
        kind = PCAP_MAGICS.get(head[:4])
        if kind is None or len(head) < cls.HEADER:
            return None
        order, divisor = kind
        major, minor, _zone, _sigfigs, snaplen = struct.unpack_from(order + "HHiII", head, 4)
        if (major, minor) != (2, 4):
            return None
        # libpcap cuts a record to the file's snapshot length, or to its own most for the link
        # type (MAX_CAPLEN for most) when the file's is 0 or more than that.
        snap = snaplen if 0 < snaplen <= MAX_CAPLEN else MAX_CAPLEN
        return cls(fd, order == ">", divisor == 1000, snap)

    def next(self, limit: int) -> tuple[bytes, bytes] | None:
        """(data, index) of the next batch, at most `limit` packets; None at the file's end
        (`ended`) or where this reader stops (libpcap goes on from there)."""
        try:
            data = os.pread(self.fd, _RECORDS_READ, self.pos)
        except OSError:
            return None
        if not data:
            self.ended = True
            return None
        meta, used = pcap_records(data, limit, self.big, self.nano, self.snap)
        if not meta:
            # A record the file ends inside, or one too long to frame: libpcap's to read or to
            # report as it does (it reads the file again to there, passing over the packets).
            return None
        self.pos += used
        return data, meta


class CaptureFile(Source):
    """One regular capture file, read by libpcap's `next_batch` (the fast path), or for a
    classic pcap file with no filter, by `_Records` as far as it frames its records (then by
    libpcap from there).

    If libpcap gives up part way (a truncated file, a pcapng with mixed link types), reading goes
    on with `CaptureStream` from the start of the file, passing over what was already handed out,
    so the packets libpcap read into the batch that failed are not lost.
    """

    def __init__(self, path: str, handle: _Handle) -> None:
        super().__init__(path, live=False, paths=(path,))
        self._handle = handle
        self._linktype = handle.datalink()
        self._spans = [_FilterSpan("")]
        self._done = False
        self._closed = False
        self._takeover: CaptureStream | None = None
        try:
            self._fd: int | None = handle.getfd()
        except pcapy.PcapError:
            self._fd = None
        # libpcap's handle has read the file's header only, until _Records stops.
        self._records = _Records.of(self._fd) if READ_RECORDS and self._fd is not None else None

    def progress(self) -> tuple[int, int] | None:
        if self._takeover is not None:
            return self._takeover.progress()
        if self._fd is None or self._closed:
            return None
        return _file_progress(self._fd, None if self._records is None else self._records.pos)

    def _to_libpcap(self) -> None:
        """Leave `_Records` for libpcap, which passes over the packets handed out so far."""
        if self._records is None:
            return
        self._records = None
        left = self._spans[-1].delivered  # (no filter was set while _Records read)
        while left and not self._done:
            try:
                _data, meta = self._handle.next_batch(min(left, MAX_BATCH))
            except pcapy.PcapError as e:
                self._take_over(str(e))
                return
            if not meta:
                self._done = True  # (the file shrank since)
                return
            left -= len(meta) // META.size

    @property
    def linktypes(self) -> frozenset[int]:
        if self._takeover is not None:
            return self._takeover.linktypes | {self._linktype}
        return frozenset({self._linktype})

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        if self._takeover is not None:
            return self._takeover.next_batch(timeout)
        if self._done:
            return None
        if self._records is not None:
            got = self._records.next(MAX_BATCH)
            if got is not None:
                self._spans[-1].delivered += len(got[1]) // META.size
                return Batch(self._linktype, *got)
            if self._records.ended:
                self._done = True
                return None
            self._to_libpcap()
            return self.next_batch(timeout)
        try:
            data, meta = self._handle.next_batch(MAX_BATCH)
        except pcapy.PcapError as e:
            self._take_over(str(e))
            return self.next_batch(timeout)
        if not meta:
            self._done = True
            return None
        self._spans[-1].delivered += len(meta) // META.size
        return Batch(self._linktype, data, meta)

    def next_packets(self, timeout: float | None = None) -> list[Packet] | None:
        self._to_libpcap()  # (libpcap gives each packet's wire length)
        if self._takeover is not None:
            return self._takeover.next_packets(timeout)
        if self._done:
            return None
        out: list[Packet] = []
        try:
            while len(out) < MAX_BATCH:
                header, data = self._handle.next()
                if header is None:
                    self._done = True
                    break
                sec, usec = header.getts()
                out.append(Packet(sec, usec, self._linktype, header.getlen(), data))
        except pcapy.PcapError as e:
            self._spans[-1].delivered += len(out)
            self._take_over(str(e))
            return out or self.next_packets(timeout)
        self._spans[-1].delivered += len(out)
        return out or None

    def _take_over(self, message: str) -> None:
        self._done = True
        try:
            stream = open(self.name, "rb", buffering=0)  # noqa: SIM115 - owned by the stream
        except OSError as e:
            self._error = f"{self.name}: {message} (and cannot reopen it: {e.strerror})"
            return
        takeover = CaptureStream(self.name, stream, self.paths)
        if _MIXED_LINKTYPES not in message:
            takeover.libpcap_error = message
        takeover.skip(self._spans)
        takeover._apply_filter(self.filter)
        takeover.filter = self.filter
        self._takeover = takeover
        self._closed = True
        self._handle.close()

    @property
    def error(self) -> str | None:
        if self._takeover is not None:
            return self._takeover.error
        return self._error

    def _check_filter(self, expr: str) -> None:
        if self._takeover is not None:
            self._takeover._check_filter(expr)
        else:
            _compile(expr, self._linktype)

    def _apply_filter(self, expr: str) -> None:
        self._to_libpcap()  # (which filters)
        if self._takeover is not None:
            self._takeover._apply_filter(expr)
            self._takeover.filter = expr
            return
        if self._done:
            return
        try:
            self._handle.setfilter(expr)
        except pcapy.PcapError as e:
            raise FilterError(expr, str(e)) from None
        self._spans.append(_FilterSpan(expr))

    def close(self) -> None:
        if self._takeover is not None:
            self._takeover.close()
        elif not self._closed:
            self._closed = True
            self._done = True
            self._handle.close()


# --- several files, merged by timestamp -------------------------------------------------------


class MergedCaptures(_PacketSource):
    """Several capture files (or a file and stdin) read as one, packet by packet in time order.

    Packets with equal timestamps keep the order of the files on the command line.
    """

    def __init__(self, sources: list[Source]) -> None:
        paths = tuple(p for s in sources for p in s.paths)
        super().__init__(",".join(s.name for s in sources), live=False, paths=paths)
        self._sources = sources
        self._queues: list[deque[Packet]] = [deque() for _ in sources]
        self._open = [True] * len(sources)

    @property
    def linktypes(self) -> frozenset[int]:
        return frozenset().union(*(s.linktypes for s in self._sources))

    def progress(self) -> tuple[int, int] | None:
        parts = [s.progress() for s in self._sources]
        if any(p is None for p in parts):
            return None
        return sum(p[0] for p in parts if p), sum(p[1] for p in parts if p)

    @property
    def error(self) -> str | None:
        errors = [s.error for s in self._sources if s.error]
        return "; ".join(errors) if errors else None

    def _read_packets(self, timeout: float | None) -> list[Packet] | None:
        deadline = _deadline(timeout)
        queues = self._queues
        out: list[Packet] = []
        while len(out) < MAX_BATCH:
            for i, source in enumerate(self._sources):
                if queues[i] or not self._open[i]:
                    continue
                got = source.next_packets(_remaining(deadline))
                if got is None:
                    self._open[i] = False
                elif not got:
                    # A stream with nothing yet: no packet can be placed before its next one.
                    return out
                else:
                    queues[i].extend(got)
            heads = [(q[0].sec, q[0].usec, i) for i, q in enumerate(queues) if q]
            if not heads:
                return out or None
            heads.sort()
            first = heads[0][2]
            bound = heads[1] if len(heads) > 1 else None
            queue = queues[first]
            # Take the whole run that comes before the next file's head, not one packet per scan.
            while queue and len(out) < MAX_BATCH:
                p = queue[0]
                if bound is not None and (p.sec, p.usec, first) > bound:
                    break
                out.append(queue.popleft())
        return out

    def _check_filter(self, expr: str) -> None:
        for source in self._sources:
            source._check_filter(expr)

    def _apply_filter(self, expr: str) -> None:
        for source in self._sources:
            source._apply_filter(expr)
            source.filter = expr
        packet_filter = _PacketFilter(expr)
        for i, queue in enumerate(self._queues):
            self._queues[i] = deque(p for p in queue if packet_filter.matches(p.linktype, p.data))
        self._drop_unmatched(packet_filter)

    def close(self) -> None:
        for source in self._sources:
            source.close()


# --- opening files ----------------------------------------------------------------------------


def _open_stdin() -> CaptureStream:
    if os.isatty(0):
        raise CaptureError("stdin: is a terminal, not a capture; pipe one in (tcpdump -w - | ...)")
    # Our own descriptor, so the caller may put a terminal on fd 0 (for the UI) once we are open.
    stdin = CaptureStream("stdin", os.fdopen(os.dup(0), "rb", buffering=0))
    try:
        stdin.read_header()
    except CaptureError:
        stdin.close()
        raise
    return stdin


def _compressed(stream: BinaryIO) -> bool:
    """Whether a regular file starts like gzip or zstd; leaves it at its start."""
    try:
        head = os.pread(stream.fileno(), 4, 0)
    except OSError:
        return False  # libpcap will say what is wrong with it
    return compression_of(head) is not None


def _open_path(path: str) -> Source:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise CaptureError(f"{path}: no such file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as e:
        raise CaptureError(f"{path}: {e.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CaptureError(f"{path}: is a directory")
    try:
        stream = open(path, "rb", buffering=0)  # noqa: SIM115 - owned by the source
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as e:
        raise CaptureError(f"{path}: {e.strerror}") from None
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        stream.close()
        raise CaptureError(f"{path}: empty file")
    # A pipe or a device: libpcap would block on it, and could not reopen it after a failure.
    # A compressed file: libpcap cannot read it at all. Our parser reads both.
    if not stat.S_ISREG(info.st_mode) or _compressed(stream):
        capture = CaptureStream(path, stream, (path,))
        try:
            capture.read_header()
        except CaptureError:
            capture.close()
            raise
        return capture
    stream.close()
    try:
        handle = pcapy.open_offline(path)
    except pcapy.PcapError as e:
        message = str(e)
        if message == "unknown file format":
            raise CaptureError(f"{path}: not a pcap or pcapng file (unknown file format)") from None
        raise CaptureError(f"{path}: {message}") from None
    return CaptureFile(path, handle)


def open_files(paths: list[str], bpf: str = "") -> Source:
    """Read capture files ("-" is stdin), merged by timestamp; raise CaptureError or FilterError."""
    if not paths:
        raise CaptureError("no capture file to read")
    if paths.count("-") > 1:
        raise CaptureError("stdin ('-') can be read only once")
    sources: list[Source] = []
    try:
        for path in paths:
            if path == "-":
                sources.append(_open_stdin())
            else:
                sources.append(_open_path(path))
        source = sources[0] if len(sources) == 1 else MergedCaptures(sources)
        if bpf.strip():
            source.set_filter(bpf)
    except CaptureError:
        for opened in sources:
            opened.close()
        raise
    return source


# --- writing captures -------------------------------------------------------------------------


def _packets_to_write(
    source: Source, count: int | None, duration: float | None
) -> Iterator[Packet]:
    """The packets of `source` up to `count` of them, or up to `duration` seconds."""
    # Live: seconds of wall clock, as the packets may never come. Files: seconds of capture time
    # from the first packet, so that a file gives the same packets however fast it is read.
    deadline = _deadline(duration) if duration is not None and source.live else None
    end_ts: float | None = None
    taken = 0
    while count is None or taken < count:
        timeout = _remaining(deadline)
        if timeout is not None and timeout <= 0:
            return
        packets = source.next_packets(timeout)
        if packets is None:
            return
        for p in packets:
            if count is not None and taken >= count:
                return
            if duration is not None and not source.live:
                ts = p.sec + p.usec / 1e6
                end_ts = ts + duration if end_ts is None else end_ts
                if ts > end_ts:
                    return
            taken += 1
            yield p


def _is_input(source: Source, out_path: str) -> bool:
    for path in source.paths:
        try:
            if os.path.samefile(path, out_path):
                return True
        except OSError:
            continue
    return False


def write_packets(
    source: Source,
    out_path: str,
    count: int | None = None,
    duration: float | None = None,
    keys: KeyLog | None = None,
) -> int:
    """Copy the packets `source` delivers (its filter applied) to a capture file; return how many.

    Each packet keeps its timestamp, captured bytes and wire length. Stops at the end of the
    source, after `count` packets, or after `duration` seconds: wall-clock seconds for a live
    capture, capture-time seconds from the first packet for files. "-" writes pcap to stdout.
    A name that ends in .pcapng is written as pcapng, which holds several link types and, with
    `keys`, the TLS secrets of the sessions written (`_EmbeddedSecrets`); any other as pcap.
    Raises CaptureError if the output cannot be written or would mix link types.
    """
    pcapng = out_path != "-" and is_pcapng_name(out_path)
    linktypes = source.linktypes
    if len(linktypes) > 1 and not pcapng:
        raise CaptureError(
            f"{out_path}: a pcap file holds one link type, and {source.name} has several"
            f" ({', '.join(map(str, sorted(linktypes)))}); a .pcapng name holds them all"
        )
    if out_path != "-" and _is_input(source, out_path):
        raise CaptureError(f"{out_path}: is also an input; refusing to overwrite it")
    try:
        out = sys.stdout.buffer if out_path == "-" else open(out_path, "wb")  # noqa: SIM115
    except OSError as e:
        raise CaptureError(f"{out_path}: {(e.strerror or str(e)).lower()}") from None
    writer: PcapWriter | PcapngWriter
    if pcapng and keys is not None:
        writer = _WithSecrets(out, out_path, keys, source.live)
    elif pcapng:
        writer = PcapngWriter(out, out_path)
    else:
        writer = PcapWriter(out, out_path, owned=out_path != "-")
    interrupted = False
    try:
        try:
            for p in _packets_to_write(source, count, duration):
                writer.write(p)
        except KeyboardInterrupt:  # a live capture ends with Ctrl-C: the file ends well
            interrupted = True
        writer.close(next(iter(linktypes), ETHERNET))
    except OSError as e:
        raise CaptureError(f"{out_path}: {(e.strerror or str(e)).lower()}") from None
    finally:
        if not out.closed and out_path != "-":
            out.close()
    if interrupted:
        raise KeyboardInterrupt
    return writer.written


class _WithSecrets(PcapngWriter):
    """A pcapng writer that embeds the TLS secrets of the sessions it writes: those whose
    ClientHello it holds (the client random read from a segment that begins with the
    ClientHello record), never the rest of the key log. Each session's secrets go in a
    Decryption Secrets Block before its ClientHello, as Wireshark wants them before the
    packets they open (wirepeek reads them wherever they are).

    Live, a key log is written after the handshake: from a ClientHello whose secrets are not
    there yet, the packets wait (up to `HOLD_BYTES`, until a packet comes `HOLD_SECONDS` later)
    while the key log is read again every `LOOK_EVERY` seconds; then its secrets, if they came, go
    before them. Secrets that come later still go in a later block (for wirepeek). Sessions
    whose secrets are complete: TLS 1.2's master secret, or TLS 1.3's two traffic secrets."""

    HOLD_SECONDS = 2.0
    HOLD_BYTES = 16 << 20
    LOOK_EVERY = 0.01
    LATE_EVERY = 0.5  # how often a live capture looks for secrets that came late

    def __init__(self, out: BinaryIO, name: str, keys: KeyLog, live: bool) -> None:
        super().__init__(out, name)
        self.keys = keys
        self.live = live
        self.seen: set[bytes] = set()  # the client randoms of the ClientHellos written
        self.embedded: dict[bytes, set[str]] = {}  # client random -> labels of its secrets
        self.waiting: set[bytes] = set()  # seen, secrets not complete, packets held for them
        self.held: list[Packet] = []
        self.held_bytes = 0
        self.held_since = 0.0
        self.looked = 0.0  # when the key log was last read again
        keys.noted = set()

    def complete(self, client_random: bytes) -> bool:
        secrets = self.keys.get(client_random) or {}
        return CLIENT_RANDOM in secrets or (
            CLIENT_TRAFFIC_0 in secrets and SERVER_TRAFFIC_0 in secrets
        )

    def write(self, p: Packet) -> None:
        client_random = client_hello_random(p)
        if client_random is not None and client_random not in self.seen:
            self.seen.add(client_random)
            assert self.keys.noted is not None
            self.keys.noted.add(client_random)  # its secrets, if any, go before it
            if self.live and not self.complete(client_random):
                self.waiting.add(client_random)
        if not self.live:
            self.embed()
            super().write(p)
            return
        now = time.monotonic()
        if self.waiting or self.held:
            if not self.held:
                self.held_since = now
            self.held.append(p)
            self.held_bytes += len(p.data)
            if now - self.looked >= self.LOOK_EVERY:
                self.looked = now
                self.keys.refresh()
                self.waiting = {r for r in self.waiting if not self.complete(r)}
            if self.waiting and (
                now - self.held_since < self.HOLD_SECONDS and self.held_bytes < self.HOLD_BYTES
            ):
                return
            self.release()
            return
        if now - self.looked >= self.LATE_EVERY:
            self.looked = now
            self.keys.refresh()
        self.embed()
        super().write(p)

    def release(self) -> None:
        """Write the packets held, after the secrets that came; stop waiting for the rest."""
        self.waiting.clear()
        self.embed()
        for p in self.held:
            super().write(p)
        self.held.clear()
        self.held_bytes = 0

    def embed(self) -> None:
        """A block of the secrets that came for sessions written, if any came."""
        noted = self.keys.noted
        if not noted:
            return
        lines = []
        for client_random in noted & self.seen:
            secrets = self.keys.get(client_random)
            if not secrets:
                continue
            done = self.embedded.setdefault(client_random, set())
            for label, secret in secrets.items():
                if label not in done:
                    done.add(label)
                    lines.append(KeyLog.line(client_random, label, secret))
        noted.clear()
        self.secrets(b"".join(lines))

    def close(self, linktype_if_empty: int) -> None:
        if self.live:
            self.keys.refresh()
        self.release()
        super().close(linktype_if_empty)


def client_hello_random(p: Packet) -> bytes | None:
    """The client random of the TLS ClientHello this packet's TCP segment begins with, if it
    begins with one (its first 43 bytes captured); None otherwise."""
    buf = p.data
    at = innermost_tcp(p.linktype, buf, 0, len(buf))
    if at is None or at.l4 + 13 > at.end:
        return None
    payload = at.l4 + ((buf[at.l4 + 12] >> 4) << 2)
    end = min(at.end, at.wire_end)
    if end - payload < 43:
        return None
    if buf[payload] != 22 or buf[payload + 1] != 3 or buf[payload + 5] != 1:
        return None
    return bytes(buf[payload + 11 : payload + 43])


def is_pcapng_name(path: str) -> bool:
    """Whether a file written there is pcapng (its name says so), else pcap."""
    return path.lower().endswith(".pcapng")


# --- packets kept by the caller -----------------------------------------------------------------


def packets_of_connections(batches: Iterable[Batch], keys: set[int]) -> list[Packet]:
    """The TCP packets (and UDP ones: DNS flows) of these batches whose table key (either
    direction) is in `keys` (`engine.tcp.endpoints_key`). Fragments are left out: only whole datagrams carry both ports.

    Batches carry no wire length, so each packet's wire length is its captured length.
    """
    found = []
    for batch in batches:
        linktype, data = batch.linktype, batch.data
        for sec, usec, off, caplen in META.iter_unpack(batch.meta):
            key = tcp_key(linktype, data, off, off + caplen, True)
            if key is not None and (key in keys or reverse_key(key) in keys):
                found.append(Packet(sec, usec, linktype, caplen, data[off : off + caplen]))
    return found


Span = tuple[int, int]  # packet numbers first..last, both included


def packets_in_spans(
    batches: Iterable[tuple[int, Batch]], wanted: dict[int, list[Span]]
) -> list[tuple[int, Packet]]:
    """(number, packet) of the TCP packets whose table key (either direction) is in `wanted` and
    whose number falls in one of that key's spans, in capture order.

    `batches` are (number of the batch's first packet, batch) in order, numbered as the pipeline
    that was fed them numbered them, so that a connection's (first_packet, last_packet) picks its
    own packets and not those of a connection that used the same ports before or after it. Only
    the packets between the lowest first and the highest last number are looked at.
    """
    if not wanted:
        return []
    low = min(first for spans in wanted.values() for first, _ in spans)
    high = max(last for spans in wanted.values() for _, last in spans)
    found = []
    for number, batch in batches:
        count = len(batch)
        if number + count <= low or number > high:
            continue
        start, stop = max(0, low - number), min(count, high - number + 1)
        linktype, data = batch.linktype, batch.data
        ethernet = linktype == ETHERNET
        host_bits = batch.host << HOST_SHIFT  # a capture host's packets (engine.remote)
        meta = batch.meta[start * META.size : stop * META.size]
        for n, (sec, usec, off, caplen) in enumerate(META.iter_unpack(meta), number + start):
            key = None
            if ethernet and caplen >= 54:
                # Ethernet, IPv4, TCP, no fragment: the key without the general walk (as the
                # pipeline's hot loop reads it); anything else goes through tcp_key.
                ethertype, vihl, frag, proto, addrs = _eth_ipv4(data, off)
                ihl = (vihl & 15) << 2
                if (
                    ethertype == 0x0800
                    and vihl >> 4 == 4
                    and proto == 6
                    and not frag & 0x3FFF
                    and 20 <= ihl <= caplen - 18
                ):
                    key = (addrs << 32) | _u32(data, off + 14 + ihl)[0]
            if key is None:
                key = tcp_key(linktype, data, off, off + caplen, True)
                if key is None:
                    continue
            key |= host_bits
            spans = wanted.get(key)
            if spans is None:
                spans = wanted.get(reverse_key(key))
                if spans is None:
                    continue
            for first, last in spans:
                if first <= n <= last:
                    found.append((n, Packet(sec, usec, linktype, caplen, data[off : off + caplen])))
                    break
    return found


_eth_ipv4 = struct.Struct("!12xHB5xHxB2xQ").unpack_from  # type, ver/IHL, frag, proto, addresses
_u32 = struct.Struct("!I").unpack_from


def write_packet_list(packets: Iterable[Packet], out_path: str, secrets: bytes = b"") -> int:
    """Write packets to a new capture file; return how many. Raises CaptureError. A name that
    ends in .pcapng is written as pcapng, with `secrets` (a TLS key log) embedded; any other
    as pcap, which has no place for them."""
    try:
        out = open(out_path, "wb")  # noqa: SIM115
    except OSError as e:
        raise CaptureError(f"{out_path}: {(e.strerror or str(e)).lower()}") from None
    writer: PcapWriter | PcapngWriter
    if is_pcapng_name(out_path):
        writer = PcapngWriter(out, out_path, secrets)
    else:
        writer = PcapWriter(out, out_path)
    try:
        first = ETHERNET
        for p in packets:
            writer.write(p)
            first = writer.linktype or first
        writer.close(first)
    except OSError as e:
        raise CaptureError(f"{out_path}: {(e.strerror or str(e)).lower()}") from None
    finally:
        if not out.closed:
            out.close()
    return writer.written
