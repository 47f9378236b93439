"""Helpers of the tests that run wirepeek (or a server) as a child process on a live interface."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent


def wait_for_line(
    proc: subprocess.Popen[bytes], needle: bytes, timeout: float, stdout: bool = False
) -> bytes:
    """Read the child's stderr (or stdout) until it holds needle, or fail at the deadline."""
    stream = proc.stdout if stdout else proc.stderr
    assert stream is not None
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    got = b""
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} from {proc.args} within {timeout} s: {got!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"{proc.args} ended before saying {needle!r}: {got!r}"
            got += chunk
    return got


def json_capture(bpf: str, err: Path, duration: int) -> subprocess.Popen[bytes]:
    """`wirepeek -i lo --json --duration N BPF`, its records on a pipe, its stderr in `err`
    (see `wait_capturing`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "-i", "lo", "--json", "--duration", str(duration), bpf],
        stdout=subprocess.PIPE, stderr=err.open("wb"), cwd=ROOT,
    )  # fmt: skip


def wait_capturing(proc: subprocess.Popen[bytes], err: Path, timeout: float = 30) -> None:
    """Wait until a `json_capture` says it captures on lo; fail if it ends or the time is up."""
    deadline = time.monotonic() + timeout
    while b"capturing on lo" not in err.read_bytes():
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < deadline, f"no capture within {timeout} s: {err.read_text()}"
        time.sleep(0.02)


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child if it still runs, reap it and close its pipes."""
    proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class LoopbackServer:
    """A TCP server on loopback, on a port of its own, handing each connection to `answer` in
    its accepting thread (a subclass that wants them side by side starts threads there)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()
