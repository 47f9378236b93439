"""Record tests/data/pcaps/h2-loopback.pcap: three HTTP/2 connections on loopback, captured live.

    sudo .venv/bin/python scripts/make_h2_capture.py [OUT.pcap]

Runs the peers of tests/test_tls_live.py (Python's ssl module and the `h2` library) on 127.0.0.1
while `wirepeek -i lo -w OUT` records them: one GET over TLS 1.2 with ALPN h2 selected in the
ServerHello, one over TLS 1.3 (h2 selected, but encrypted), and one in clear with prior knowledge
(h2c). Needs root (live capture), the openssl command (a throwaway self-signed certificate) and
the `h2` package (a test dependency). Every run records different bytes (keys, ports, times).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_http_live import _wait_for_line  # noqa: E402
from tests.test_tls_live import exchanges  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "pcaps" / "h2-loopback.pcap"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    with tempfile.TemporaryDirectory() as folder:
        ports, run, stop = exchanges(Path(folder))
        bpf = " or ".join(f"tcp port {p}" for p in ports)
        proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "-i", "lo", "-w", str(out),
                                 "--duration", "3", bpf], stderr=subprocess.PIPE, cwd=ROOT)
        try:
            _wait_for_line(proc, b"capturing on lo", timeout=30)
            seen = run()
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
            stop()
    if proc.returncode != 0:
        print(err.decode(errors="replace"), file=sys.stderr)
        return 1
    print(f"{out}: {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
