"""Capture on other hosts over SSH: tcpdump on each, its pcap stream read here, merged live.

Each host runs `tcpdump -i IFACE -U -s SNAPLEN -w - BPF` through the system's `ssh` (so the
user's config, agent, jump hosts and known hosts apply; wirepeek never handles a password: ssh
runs in batch mode), optionally under `sudo -n`. The pcap stream comes back on ssh's standard
output and is framed by `engine.pcapfile.CaptureParser`; tcpdump's standard error comes back
too, and with it its own counters (every STATS_EVERY seconds a SIGUSR1 makes it print them).

A host that fails (ssh cannot connect, tcpdump is refused, the link drops) is started again
after a back-off that doubles up to RETRY_MAX; the others go on. Its packets are numbered
(`Batch.host`), so that its connections stay its own (`engine.tcp.HOST_SHIFT`).

Packets of several hosts are merged by timestamp among those that have arrived: a host with
nothing to say never holds the others back, so packets of hosts whose clocks or links differ
may come slightly out of time order between hosts (never within one host, and a connection is
one host's).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.batch import META, Batch
from engine.pcapfile import CaptureParser, Packet
from engine.sources import (
    MAX_BATCH,
    CaptureError,
    CaptureStats,
    Source,
    _PacketFilter,
)

DEFAULT_INTERFACE = "any"
STATS_EVERY = 2  # seconds between the counters tcpdump is asked for
# tcpdump's kernel buffer on the hosts, in KiB: a burst waits there while the link carries the
# packets before it (with tcpdump's default of 2 MiB, a 2 MiB answer on loopback lost a quarter).
BUFFER_KIB = 32768
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # back-off before a failed host is started again
STEADY = 30.0  # a host capturing this long starts its next back-off from RETRY_FIRST again
READ_CHUNK = 1 << 20
# --headers-only: the snapshot length that sends a packet's headers (link, IP, TCP) and the
# first 130 to 200 bytes of its payload over the link, and never a body's full segments.
HEADERS_ONLY = 256
STDERR_KEPT = 4096  # the end of a host's error output kept to say why it failed
SSH_OPTIONS = (
    "-T",  # no terminal: the pcap stream must come through untouched
    "-o", "BatchMode=yes",  # never ask for a password or a host key: fail and say so
    "-o", "ServerAliveInterval=5",  # a link that died is noticed in about 15 s
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip

_STATS = re.compile(
    rb"(\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped by kernel"
)

CONNECTING, CAPTURING, LOST, STOPPED = "connecting", "capturing", "lost", "stopped"


@dataclass(frozen=True)
class RemoteTarget:
    """One `--ssh` argument: [user@]host[:iface]; an IPv6 address goes in brackets."""

    destination: str  # what ssh is given: [user@]host, or a Host of the ssh config
    interface: str
    name: str  # the host as connections carry it (`host` in records and in the filter)

    @classmethod
    def parse(cls, text: str) -> RemoteTarget:
        user, at, rest = text.rpartition("@")
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ValueError(f"--ssh {text}: an IPv6 address goes in brackets: [addr]:iface")
            colon, iface = tail[:1], tail[1:]
        else:
            host, colon, iface = rest.partition(":")
        if not host or (at and not user) or any(c.isspace() for c in text) or host.startswith("-"):
            raise ValueError(f"--ssh {text}: expected [user@]host[:iface]")
        if colon and not iface:
            raise ValueError(f"--ssh {text}: no interface after ':'")
        return cls(f"{user}{at}{host}", iface or DEFAULT_INTERFACE, host)


def remote_command(interface: str, bpf: str, snaplen: int, sudo: bool) -> str:
    """The command line each host runs: tcpdump writing pcap to its output, packet by packet
    (-U), each as soon as the kernel has it (without --immediate-mode a quiet host's packets
    waited up to a second in a half-filled block), and asked for its counters every STATS_EVERY
    seconds while it runs."""
    options = ["-U", "--immediate-mode", "-B", str(BUFFER_KIB), "-s", str(snaplen)]
    tcpdump = shlex.join(["tcpdump", "-i", interface, *options, "-w", "-", "--", bpf])
    script = (
        f"PATH=$PATH:/usr/sbin:/sbin; {tcpdump} & p=$!; "
        'trap "kill $p 2>/dev/null" HUP INT TERM PIPE; '
        f"while sleep {STATS_EVERY}; kill -USR1 $p 2>/dev/null; do :; done; wait $p"
    )
    return ("exec sudo -n sh -c " if sudo else "exec sh -c ") + shlex.quote(script)


class HostStatus(NamedTuple):
    """What the status bar and stderr say about one host."""

    name: str
    state: str  # CONNECTING, CAPTURING, LOST, STOPPED
    detail: str  # why it was lost (ssh's or tcpdump's last words), "" otherwise
    packets: int  # read from it
    received: int | None  # tcpdump's counters, once it reported them
    dropped: int | None
    retry_in: float | None  # seconds before it is tried again, when lost
    starts: int  # how many times it was started


@dataclass
class _Remote:
    target: RemoteTarget
    number: int  # Batch.host
    proc: subprocess.Popen[bytes] | None = None
    parser: CaptureParser = field(default_factory=CaptureParser)
    queue: deque[Packet] = field(default_factory=deque)
    state: str = CONNECTING
    detail: str = ""
    stderr: bytes = b""
    packets: int = 0
    received: int | None = None
    dropped: int | None = None
    # Counters of the runs before this one (each run's tcpdump counts from 0).
    received_before: int = 0
    dropped_before: int = 0
    backoff: float = RETRY_FIRST
    retry_at: float | None = None
    started_at: float = 0.0
    starts: int = 0

    def bank(self) -> None:
        """Keep the counters of the run that ends (the next tcpdump counts from 0)."""
        if self.received is not None:
            self.received_before += self.received
            self.dropped_before += self.dropped or 0
        self.received = self.dropped = None

    def status(self, now: float) -> HostStatus:
        received = None if self.received is None else self.received_before + self.received
        dropped = None if self.dropped is None else self.dropped_before + self.dropped
        retry = None if self.retry_at is None else max(0.0, self.retry_at - now)
        return HostStatus(
            self.target.name, self.state, self.detail, self.packets, received, dropped, retry,
            self.starts,
        )  # fmt: skip


class RemoteCaptures(Source):
    """Live capture on several hosts at once, over SSH (see the module)."""

    def __init__(
        self,
        targets: list[RemoteTarget],
        bpf: str = "",
        ssh_command: str = "ssh",
        sudo: bool = False,
        snaplen: int = 262144,
    ) -> None:
        plain = [t.name for t in targets]
        # Two users on one host: each is named by its destination (user@host).
        names = [t.destination if plain.count(t.name) > 1 else t.name for t in targets]
        targets = [
            RemoteTarget(t.destination, t.interface, n)
            for t, n in zip(targets, names, strict=False)
        ]
        super().__init__(",".join(names), live=True)
        self.hosts = tuple(names)
        try:
            self._ssh = shlex.split(ssh_command)
        except ValueError as e:
            raise CaptureError(f"--ssh-command {ssh_command!r}: {e}") from None
        if not self._ssh:
            raise CaptureError("--ssh-command is empty")
        self._sudo = sudo
        self._snaplen = snaplen
        self._filter = _PacketFilter("")
        self._remotes = [_Remote(t, i) for i, t in enumerate(targets, 1)]
        self._notices: list[str] = []
        self._closed = False
        self._last_linktype = 1
        self.filter = ""
        if bpf.strip():
            self._check_filter(bpf.strip())
            self._filter = _PacketFilter(bpf.strip())
            self.filter = bpf.strip()
        for remote in self._remotes:
            self._start(remote)

    # --- hosts ------------------------------------------------------------------------------

    def _start(self, remote: _Remote) -> None:
        target = remote.target
        command = remote_command(target.interface, self.filter, self._snaplen, self._sudo)
        argv = [*self._ssh, *SSH_OPTIONS, target.destination, command]
        remote.parser = CaptureParser()
        remote.stderr = b""
        remote.received = remote.dropped = None
        remote.retry_at = None
        remote.detail = ""
        remote.state = CONNECTING
        remote.started_at = time.monotonic()
        remote.starts += 1
        try:
            remote.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # the terminal's Ctrl-C is ours to handle, not ssh's
            )
        except OSError as e:
            raise CaptureError(f"cannot run {self._ssh[0]}: {e.strerror or e}") from None
        for pipe in (remote.proc.stdout, remote.proc.stderr):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)

    def _lost(self, remote: _Remote, why: str) -> None:
        """The host's capture ended: say why, and start it again after the back-off."""
        self._stop(remote)
        now = time.monotonic()
        if now - remote.started_at >= STEADY:
            remote.backoff = RETRY_FIRST
        remote.bank()
        remote.state = LOST
        remote.detail = why
        remote.retry_at = now + remote.backoff
        self._notices.append(
            f"{remote.target.name}: capture lost: {why}; trying again in {remote.backoff:g} s"
        )
        remote.backoff = min(RETRY_MAX, remote.backoff * 2)

    def _stop(self, remote: _Remote) -> None:
        proc, remote.proc = remote.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

    def _why(self, remote: _Remote, code: int | None) -> str:
        """ssh's or tcpdump's last line of complaint, else the exit status."""
        lines = [
            line.strip()
            for line in remote.stderr.decode("utf-8", "replace").splitlines()
            if line.strip()
            and not line.startswith(("tcpdump: listening on", "Warning: Permanently added"))
            and not _STATS.search(line.encode())
            and not re.fullmatch(r"\d+ packets? (captured|received by filter|dropped by kernel)", line.strip())
        ]  # fmt: skip
        if lines:
            return lines[-1][:200]
        if remote.parser.broken:
            return f"the capture stream broke: {remote.parser.broken}"
        return "the connection closed" if code in (0, None) else f"ssh exited with status {code}"

    def _read_stdout(self, remote: _Remote) -> None:
        proc = remote.proc
        assert proc is not None and proc.stdout is not None
        try:
            data = os.read(proc.stdout.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(remote, e.strerror or str(e))
            return
        if not data:
            self._drain_stderr(remote)
            code = proc.wait() if proc.poll() is not None else None
            self._lost(remote, self._why(remote, code))
            return
        parser = remote.parser
        parser.feed(data)
        while True:
            got = parser.parse(MAX_BATCH)
            if not got:
                break
            remote.packets += len(got)
            remote.queue.extend(got)  # (filtered by the host's tcpdump: its filter is ours)
        if parser.started and remote.state == CONNECTING:
            remote.state = CAPTURING
            self._notices.append(f"{remote.target.name}: capturing on {remote.target.interface}")
        if parser.broken is not None:
            self._lost(remote, f"the capture stream broke: {parser.broken}")

    def _drain_stderr(self, remote: _Remote) -> None:
        proc = remote.proc
        if proc is None or proc.stderr is None:
            return
        while True:
            try:
                data = os.read(proc.stderr.fileno(), 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            remote.stderr = (remote.stderr + data)[-STDERR_KEPT:]
            for found in _STATS.finditer(data):
                remote.received, remote.dropped = int(found[2]), int(found[3])

    # --- the Source interface ----------------------------------------------------------------

    def notices(self) -> list[str]:
        """What happened to the hosts since the last call (started, lost, retried), one line each."""
        out, self._notices = self._notices, []
        return out

    def host_status(self) -> list[HostStatus]:
        now = time.monotonic()
        return [r.status(now) for r in self._remotes]

    @property
    def linktypes(self) -> frozenset[int]:
        return frozenset().union(*(r.parser.linktypes for r in self._remotes))

    def _poll(self, timeout: float | None) -> None:
        """Start what is due, then read whatever the hosts sent within `timeout` seconds."""
        now = time.monotonic()
        for remote in self._remotes:
            if remote.state == LOST and remote.retry_at is not None and remote.retry_at <= now:
                self._start(remote)
        waits = [r.retry_at - now for r in self._remotes if r.retry_at is not None]
        if waits:
            timeout = (
                max(0.0, min(waits)) if timeout is None else min(timeout, max(0.0, min(waits)))
            )
        fds: dict[int, tuple[_Remote, bool]] = {}
        for remote in self._remotes:
            proc = remote.proc
            if proc is not None and proc.stdout is not None and proc.stderr is not None:
                fds[proc.stdout.fileno()] = (remote, True)
                fds[proc.stderr.fileno()] = (remote, False)
        if not fds:
            if timeout:
                time.sleep(timeout)
            return
        ready, _, _ = select.select(list(fds), [], [], timeout)
        for fd in ready:
            remote, is_stdout = fds[fd]
            if remote.proc is None:
                continue
            if is_stdout:
                self._read_stdout(remote)
            else:
                self._drain_stderr(remote)

    def _take(self) -> tuple[int, list[Packet]]:
        """The oldest packets waiting, of one host and one link type, up to the next host's."""
        heads = sorted(
            (r.queue[0].sec, r.queue[0].usec, r.number) for r in self._remotes if r.queue
        )
        if not heads:
            return 0, []
        number = heads[0][2]
        bound = heads[1] if len(heads) > 1 else None
        queue = self._remotes[number - 1].queue
        linktype = queue[0].linktype
        run: list[Packet] = []
        while queue and len(run) < MAX_BATCH and queue[0].linktype == linktype:
            p = queue[0]
            if bound is not None and run and (p.sec, p.usec, number) > bound:
                break
            run.append(queue.popleft())
        return number, run

    def _next_run(self, timeout: float | None) -> tuple[int, list[Packet]] | None:
        """A host's number and its packets (see `_take`), nothing if none came in time."""
        if self._closed:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            number, run = self._take()
            left = None if deadline is None else deadline - time.monotonic()
            if run or (left is not None and left <= 0):
                return number, run
            self._poll(left)

    def next_packets(self, timeout: float | None = None) -> list[Packet] | None:
        got = self._next_run(timeout)
        return None if got is None else got[1]

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        got = self._next_run(timeout)
        if got is None:
            return None
        number, run = got
        if not run:
            return Batch(self._last_linktype, b"", b"")
        data = bytearray()
        meta = bytearray()
        for p in run:
            meta += META.pack(p.sec, p.usec, len(data), len(p.data))
            data += p.data
        self._last_linktype = run[0].linktype
        return Batch(run[0].linktype, bytes(data), bytes(meta), number)

    def _check_filter(self, expr: str) -> None:
        _PacketFilter(expr).check(self.linktypes)

    def _apply_filter(self, expr: str) -> None:
        """Start every host's tcpdump again with the new filter; the connections stay."""
        self._filter = _PacketFilter(expr)
        self.filter = expr
        for remote in self._remotes:
            remote.queue = deque(
                p for p in remote.queue if self._filter.matches(p.linktype, p.data)
            )
            if remote.proc is not None:
                self._drain_stderr(remote)
                remote.bank()
                self._stop(remote)
            self._start(remote)

    def stats(self) -> CaptureStats | None:
        """tcpdump's own counters, summed over the hosts that reported them."""
        now = time.monotonic()
        statuses = [r.status(now) for r in self._remotes]
        return CaptureStats(
            sum(s.received or 0 for s in statuses), sum(s.dropped or 0 for s in statuses), 0
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for remote in self._remotes:
            self._stop(remote)
            remote.state = STOPPED
