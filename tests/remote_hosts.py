"""Test hosts for remote capture: network namespaces, each with sshd and an HTTP server.

`Hosts(n)` (n at most 4) makes n namespaces joined to this one by veth pairs (198.18.N.1 here,
198.18.N.2 there), generates a client key and a host key, starts sshd in each (root may log in
with the key only) and Python's HTTP server on the namespace's loopback, and writes an ssh config that
names them web1, web2...: `ssh -F hosts.config web1` logs in. Traffic is made inside a namespace
with `get(i, path)`, so it never leaves it. Everything goes in `close`.

Needs root, `ip`, sshd and tcpdump (the hosts' capture runs tcpdump); `missing()` says what is
not there, for a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
HTTP_PORT = 8080


def missing() -> str | None:
    """Why these hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "ssh", "ssh-keygen", "tcpdump"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    if SSHD is None:
        return "sshd is not installed (Debian: openssh-server)"
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Hosts:
    made = 0  # sets of hosts made by this process: each gets its own names and addresses

    def __init__(self, count: int) -> None:
        assert count <= 4
        Hosts.made += 1
        self.dir = Path(tempfile.mkdtemp(prefix="wirepeek-hosts-"))
        self.tag = f"wp{os.getpid() % 100000}x{Hosts.made}"
        # Subnets of 198.18.0.0/15, the range set aside for tests (RFC 2544), never a real
        # network's: 12 a process from its id, so that two test runs at once (CI and a
        # developer's) do not make the same addresses, which would route to each other's sshd.
        self.first = (os.getpid() % 40) * 12 + (Hosts.made - 1) % 3 * 4
        self.names = [f"web{i}" for i in range(1, count + 1)]
        self.namespaces = [f"{self.tag}h{i}" for i in range(1, count + 1)]
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {ns: [] for ns in self.namespaces}
        self.config = self.dir / "hosts.config"
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _subnet(self, i: int) -> str:
        k = self.first + i
        return f"198.{18 + k // 256}.{k % 256}"

    def address(self, i: int) -> str:
        return f"{self._subnet(i)}.2"

    def _make(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        key = self.dir / "id"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key"))
        (self.dir / "authorized_keys").write_bytes((self.dir / "id.pub").read_bytes())
        config = []
        for i, ns in enumerate(self.namespaces):
            here, there = f"{self.tag}a{i}", f"{self.tag}b{i}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
            _run("ip", "link", "set", there, "netns", ns)
            _run("ip", "addr", "add", f"{self._subnet(i)}.1/24", "dev", here)
            _run("ip", "link", "set", here, "up")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.address(i)}/24", "dev", there)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sshd_config = self.dir / f"sshd-{i}.config"
            sshd_config.write_text(
                f"ListenAddress {self.address(i)}\n"
                f"HostKey {self.dir / 'host_key'}\n"
                f"PidFile {self.dir / f'sshd-{i}.pid'}\n"
                f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\n"
            )
            self.start(i, SSHD or "sshd", "-D", "-e", "-f", str(sshd_config))
            self.start(i, sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "127.0.0.1",
                       "--directory", str(self.dir))
            config.append(
                f"Host {self.names[i]}\n  HostName {self.address(i)}\n  User root\n"
                f"  IdentityFile {key}\n  UserKnownHostsFile {self.dir / 'known_hosts'}\n"
                "  StrictHostKeyChecking no\n  LogLevel ERROR\n  ConnectTimeout 5\n"
            )
        self.config.write_text("".join(config))
        (self.dir / "index.html").write_text("hello\n")
        for i in range(len(self.namespaces)):
            self._wait_for(i, 22)
            self._wait_for(i, HTTP_PORT, loopback=True)

    def start(self, i: int, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespaces[i], *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[self.namespaces[i]].append(proc)
        return proc

    def _wait_for(self, i: int, port: int, loopback: bool = False) -> None:
        address = "127.0.0.1" if loopback else self.address(i)
        probe = (f"import socket,time\nfor _ in range(100):\n try:\n  socket.create_connection("
                 f"('{address}',{port}),1).close();break\n except OSError:\n  time.sleep(0.05)\n"
                 "else:\n raise SystemExit(1)")
        _run("ip", "netns", "exec", self.namespaces[i], sys.executable, "-c", probe)

    def get(self, i: int, paths: list[str]) -> None:
        """GET each path from host i's HTTP server, from inside host i, on one connection each."""
        script = ("import http.client,sys\nfor p in sys.argv[1:]:\n c=http.client.HTTPConnection("
                  f"'127.0.0.1',{HTTP_PORT},timeout=5)\n c.request('GET',p)\n c.getresponse().read()\n"
                  " c.close()")
        _run("ip", "netns", "exec", self.namespaces[i], sys.executable, "-c", script, *paths)

    def kill(self, i: int) -> None:
        """Host i goes down: every process in its namespace (sshd, its sessions, tcpdump) dies."""
        out = subprocess.run(["ip", "netns", "pids", self.namespaces[i]], capture_output=True,
                             text=True, timeout=10).stdout
        for pid in out.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def ssh_command(self) -> str:
        return f"ssh -F {self.config}"

    def close(self) -> None:
        for i, ns in enumerate(self.namespaces):
            if os.path.exists(f"/run/netns/{ns}"):
                self.kill(i)
            for proc in self.procs.get(ns, []):
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", f"{self.tag}a{i}"], capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(path: Path, text: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False
