"""The headless command line, run as a user would: a subprocess, real files, real exit codes."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.captures import COMPRESSIONS, capture, compress, compressed_copy
from tui.cli import DEMO_CAPTURE

WIREPEEK = [sys.executable, "-m", "tui.cli"]
ROOT = Path(__file__).parent.parent


def wirepeek(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*WIREPEEK, *args], input=stdin, capture_output=True, cwd=ROOT, timeout=timeout)


def records(out: bytes, kind: str | None = None) -> list[dict]:
    found = [json.loads(line) for line in out.decode().splitlines()]
    return [r for r in found if kind is None or r["type"] == kind]


def no_traceback(proc: subprocess.CompletedProcess[bytes]) -> None:
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()


def test_json_connection_record_follows_the_contract():
    proc = wirepeek("-r", capture("zeek/http__get.pcap"), "--json")
    assert proc.returncode == 0, proc.stderr
    [rec] = records(proc.stdout, "connection")
    assert rec["id"] == 0
    assert rec["client"] == "141.142.228.5:59856" and rec["server"] == "192.150.187.43:80"
    assert (rec["state"], rec["conn_state"], rec["history"]) == ("CLOSED", "SF", "ShADadFf")
    assert rec["packets"] == {"client": 7, "server": 7}
    assert rec["bytes"] == {"client": 136, "server": 5007}
    assert rec["missing_bytes"] == {"client": 0, "server": 0}
    assert rec["protocol"] == "http"
    assert rec["first_ts"] == pytest.approx(1362692526.869344)
    assert rec["last_ts"] >= rec["first_ts"]


def test_json_with_bpf_filter():
    all_ids = records(wirepeek("-r", capture("zeek/wikipedia.pcap"), "--json").stdout, "connection")
    web = records(wirepeek("-r", capture("zeek/wikipedia.pcap"), "--json", "tcp", "port", "80").stdout,
                  "connection")
    assert 0 < len(web) <= len(all_ids)
    assert all(r["server"].endswith(":80") for r in web)


def test_follow_prints_exactly_the_server_bytes(tmp_path):
    proc = wirepeek("-r", capture("zeek/http__get.pcap"), "--follow", "0", "--dir", "server")
    assert proc.returncode == 0
    assert len(proc.stdout) == 5007
    assert proc.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    client = wirepeek("-r", capture("zeek/http__get.pcap"), "--follow", "0", "--dir", "client").stdout
    both = wirepeek("-r", capture("zeek/http__get.pcap"), "--follow", "0").stdout
    assert both == client + proc.stdout  # the request came first, then the whole response


def test_follow_reports_gaps_on_stderr_and_keeps_stdout_exact():
    proc = wirepeek("-r", capture("zeek/http__1000-requests-one-dropped-response.pcap"),
                    "--follow", "0", "--dir", "server")
    assert proc.returncode == 0
    assert b"238 server bytes missing at offset 0" in proc.stderr
    assert proc.stdout.count(b"HTTP/1.1 200") == 999


def test_follow_hex_dump():
    proc = wirepeek("-r", capture("zeek/http__get.pcap"), "--follow", "0", "--hex")
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("# client 141.142.228.5:59856 -> 192.150.187.43:80")
    assert lines[1].startswith("00000000  47 45 54 20 2f 64 6f 77  6e 6c 6f 61 64 2f 43 48 |GET /download/CH|")
    assert any(line.startswith("# server ") for line in lines)


def test_follow_unknown_id():
    proc = wirepeek("-r", capture("zeek/http__get.pcap"), "--follow", "7")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == "wirepeek: no connection 7: the capture has 1 connections (ids 0 to 0)"


def test_write_filtered_packets_round_trip(tmp_path):
    out = tmp_path / "web.pcap"
    proc = wirepeek("-r", capture("zeek/wikipedia.pcap"), "-w", str(out), "tcp", "port", "80")
    assert proc.returncode == 0, proc.stderr
    again = records(wirepeek("-r", str(out), "--json").stdout)
    direct = records(wirepeek("-r", capture("zeek/wikipedia.pcap"), "--json", "tcp port 80").stdout)
    assert again == direct


def test_stdin_stream():
    data = Path(capture("zeek/http__get.pcap")).read_bytes()
    proc = wirepeek("-r", "-", "--json", stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert records(proc.stdout, "connection")[0]["bytes"] == {"client": 136, "server": 5007}


def test_summary_is_the_default():
    proc = wirepeek("-r", capture("zeek/http__get.pcap"))
    assert proc.returncode == 0
    out = proc.stdout.decode()
    assert "141.142.228.5:59856" in out and "CLOSED" in out and "http" in out


# The TLS connection of escapes.pcap (scripts/make_demo_capture.py): its SNI and ALPN as sent
# (Latin-1 text), and as a display shows them (escaped once, the wire's backslash doubled).
WIRE_SNI = "ev\x1bil\r\x00\x9b\xe9\\x1b.test"
WIRE_ALPN = "h\x1b\r\x00\xe9\\2"
SHOWN_SNI = r"ev\x1bil\r\x00\x9b" + "é" + r"\\x1b.test"
SHOWN_ALPN = r"h\x1b\r\x00" + "é" + r"\\2"


def test_summary_shows_tls_names_escaped_once():
    proc = wirepeek("-r", capture("escapes.pcap"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert not set("\x1b\r\x00\x9b") & set(out)
    [line] = [line for line in out.splitlines() if "192.0.2.44:443" in line]
    assert line.endswith(f"  tls TLS 1.2 SNI {SHOWN_SNI} ALPN {SHOWN_ALPN} (selected)")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_json_tls_names_round_trip_and_print_inert(jobs):
    proc = wirepeek("-r", capture("escapes.pcap"), "--json", "--jobs", jobs)
    assert proc.returncode == 0, proc.stderr
    assert not set(b"\x1b\r\x00\x9b\xe9") & set(proc.stdout)  # json escaped them
    [tls] = [r for r in records(proc.stdout, "connection") if r["server"] == "192.0.2.44:443"]
    assert tls["protocol"] == "tls"
    assert tls["tls"] == {"sni": WIRE_SNI, "alpn": ["h2", WIRE_ALPN], "version": "TLS 1.2",
                          "cipher": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                          "alpn_selected": WIRE_ALPN}


def test_json_tls_fields_of_a_tls13_session():
    [tls] = [r for r in records(wirepeek("-r", str(DEMO_CAPTURE), "--json").stdout, "connection")
             if r["protocol"] == "tls"]
    assert tls["tls"] == {"sni": "api.example.com", "alpn": ["h2", "http/1.1"], "version": "TLS 1.3",
                          "cipher": "TLS_AES_128_GCM_SHA256", "alpn_selected": None}


def test_follow_to_a_terminal_escapes_once():
    """On a terminal, --follow shows the stream escaped (a pipe gets the bytes exactly)."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen([*WIREPEEK, "-r", capture("escapes.pcap"), "--follow", "3", "--dir",
                             "client"], stdout=child, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    text = shown.decode("ascii")  # everything from the wire was escaped to ASCII
    assert r"ev\x1bil\r\x00\x9b\xe9\\x1b.test" in text
    assert r"h\x1b\r\x00\xe9\\2" in text


def _bad_file(tmp_path: Path, kind: str) -> str:
    path = tmp_path / f"{kind}.pcap"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a capture\n" * 10)
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "missing":
        return str(tmp_path / "nothing-here.pcap")
    elif kind == "directory":
        return str(tmp_path)
    return str(path)


@pytest.mark.parametrize("kind", ["empty", "text", "random", "missing", "directory"])
def test_bad_files_get_one_line_and_nonzero_exit(tmp_path, kind):
    proc = wirepeek("-r", _bad_file(tmp_path, kind), "--json")
    no_traceback(proc)
    assert proc.returncode == 1
    err = proc.stderr.decode().strip()
    assert err.startswith("wirepeek: ") and "\n" not in err
    assert proc.stdout == b""


def test_truncated_capture_reports_what_was_read_then_where_it_broke(tmp_path):
    data = Path(capture("zeek/http__get.pcap")).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 700])
    proc = wirepeek("-r", str(cut), "--json")
    no_traceback(proc)
    assert proc.returncode == 1
    assert len(records(proc.stdout, "connection")) == 1  # the connection, as far as it was read
    assert "truncated" in proc.stderr.decode()


def test_invalid_bpf():
    proc = wirepeek("-r", capture("zeek/http__get.pcap"), "--json", "port", "banana")
    no_traceback(proc)
    assert proc.returncode == 1
    assert "banana" in proc.stderr.decode()


def test_unknown_interface_lists_the_real_ones():
    proc = wirepeek("-i", "nosuchif0", "--json", "--count", "1")
    no_traceback(proc)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "nosuchif0" in err and "lo" in err


def test_usage_errors_exit_2():
    proc = wirepeek("--hex", "-r", capture("zeek/http__get.pcap"))
    assert proc.returncode == 2
    assert b"--hex, --dir, --raw and --stream go with --follow" in proc.stderr


@pytest.mark.parametrize(("value", "message"), [
    ("0", b"--memory is in MiB and must be at least 1 (got 0)"),
    ("-5", b"--memory is in MiB and must be at least 1 (got -5)"),
    ("99999999", b"--memory 99999999 is more than this machine has ("),
    ("1.5", b"argument --memory: invalid int value: '1.5'"),
])
def test_memory_must_be_a_size_this_machine_can_hold(value, message):
    proc = wirepeek("--memory", value, "-r", capture("zeek/http__get.pcap"), "--json")
    no_traceback(proc)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == b""


def test_help_says_how_memory_is_shared():
    out = " ".join(wirepeek("--help").stdout.decode().split())
    assert ("In the interactive view: 1/4 for the engine (connections, out-of-order data, kept "
            "streams), 1/8 for the recent packets of a live capture (Packets tab, w; a file's are read again from it), 1/8 for the connection list "
            "and its HTTP exchanges (the newest 10,000 of a connection), the other half for what "
            "they hold beyond what they count") in out


def test_help_says_how_to_capture_without_root():
    out = wirepeek("--help").stdout.decode()
    assert "setcap" in out and "drops to the invoking user" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
def test_live_capture_reports_loopback_connections_with_exact_bytes():
    """A real server on loopback, real requests, and the headless live mode counts every byte."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    replies = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n for n in (5, 3000, 70000)]

    def serve() -> None:
        for reply in replies:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proc = subprocess.Popen([*WIREPEEK, "-i", "lo", "--json", "--duration", "4", "tcp", "port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # capture is open once it says so
        assert b"capturing on lo" in line, line
        requests = []
        for i, reply in enumerate(replies):
            request = b"GET /%d HTTP/1.1\r\nHost: test\r\n\r\n" % i
            requests.append(request)
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(request)
                got = b""
                while len(got) < len(reply):
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                assert got == reply
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        server.close()
    assert proc.returncode == 0, err
    assert b"dropped by the kernel" in err  # capture statistics at the end
    recs = [r for r in records(out) if r["type"] == "connection"]
    assert len(recs) == 3
    for rec, request, reply in zip(sorted(recs, key=lambda r: r["id"]), requests, replies):
        assert rec["server"] == f"127.0.0.1:{port}"
        assert rec["bytes"] == {"client": len(request), "server": len(reply)}
        assert rec["missing_bytes"] == {"client": 0, "server": 0}
        assert rec["protocol"] == "http"
        assert rec["conn_state"] in ("SF", "S1", "S2", "S3")


@pytest.mark.parametrize("name", [
    "zeek/wikipedia.pcap",
    "arkime/tcp-reassembly-synthetic.pcap",
    "zeek/http__methods.pcap",
    "zeek/ipv6-http-atomic-frag.pcap",
])
def test_parallel_json_gives_the_same_records_as_one_process(name):
    one = wirepeek("-r", capture(name), "--json", "--jobs", "1")
    two = wirepeek("-r", capture(name), "--json", "--jobs", "2")
    three = wirepeek("-r", capture(name), "--json", "--jobs", "3")
    assert one.returncode == two.returncode == three.returncode == 0
    assert sorted(one.stdout.splitlines()) == sorted(two.stdout.splitlines()) == sorted(three.stdout.splitlines())
    assert wirepeek("-r", capture(name), "--json", "--jobs", "2").stdout == two.stdout  # same every run


def test_parallel_json_on_many_connections_and_count(tmp_path):
    from tests.bench.workloads import conn_per_request_http

    path = tmp_path / "many.pcap"
    facts = conn_per_request_http(str(path), connections=600)
    one = wirepeek("-r", str(path), "--json", "--jobs", "1", "--count", "4000")
    two = wirepeek("-r", str(path), "--json", "--jobs", "2", "--count", "4000")
    assert sorted(one.stdout.splitlines()) == sorted(two.stdout.splitlines())
    conns = records(two.stdout, "connection")
    assert [r["id"] for r in sorted(conns, key=lambda r: r["id"])] == list(range(len(conns)))
    assert 0 < len(conns) < facts["connections"]  # --count cut the capture short
    # An id from the parallel run names the same connection for --follow (one process).
    last = max(conns, key=lambda r: r["id"])
    follow = wirepeek("-r", str(path), "--follow", str(last["id"]), "--dir", "client", "--count", "4000")
    assert len(follow.stdout) == last["bytes"]["client"]


def without_capture_rights() -> None:
    """In the child, before exec: take CAP_NET_RAW and CAP_NET_ADMIN out of the bounding set, so
    that even root cannot open a live capture (as a user without sudo or setcap)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (12, 13):  # CAP_NET_ADMIN, CAP_NET_RAW
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root (CI runs as root)")
@pytest.mark.parametrize("mode", [["--json"], [], ["-w", "/dev/null"]])
def test_live_capture_without_permission_says_what_to_do(mode):
    proc = subprocess.run([*WIREPEEK, "-i", "lo", *mode, "--duration", "1"], capture_output=True,
                          cwd=ROOT, timeout=60, preexec_fn=without_capture_rights)
    no_traceback(proc)
    assert proc.returncode == 1 and proc.stdout == b""
    message = proc.stderr.decode()
    assert message.count("\n") == 1 and message.startswith("wirepeek: no permission to capture on 'lo'")
    assert "sudo" in message and "setcap cap_net_raw,cap_net_admin=eip" in message and "-r" in message


# --- compressed captures ----------------------------------------------------------------------


@functools.cache
def plain_json(*args: str) -> bytes:
    proc = wirepeek(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("kind", COMPRESSIONS)
@pytest.mark.parametrize("name", [
    "zeek/http__get.pcap",
    "zeek/wikipedia.pcap",
    "zeek/http__cooper-grill-dvwa.pcapng",
    "zeek/http__1000-requests-one-dropped-response.pcap",
    "gopacket/pcapgo_tests_le_test202.pcapng",  # link types libpcap refuses to mix
])
def test_json_of_a_compressed_capture_is_that_of_the_capture(tmp_path, name, kind):
    packed = compressed_copy(capture(name), kind, tmp_path)
    proc = wirepeek("-r", str(packed), "--json")
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    assert proc.stdout == plain_json("-r", capture(name))


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_parallel_json_of_a_compressed_capture_is_that_of_the_capture(tmp_path, kind):
    """--json shares the work between processes by batch: a compressed file must come in the
    same batches as the plain one for the records to come out in the same order."""
    from tests.bench.workloads import conn_per_request_http

    path = tmp_path / "many.pcap"
    conn_per_request_http(str(path), connections=600)  # 6000 packets: two batches
    packed = compressed_copy(path, kind, tmp_path)
    plain = wirepeek("-r", str(path), "--json", "--jobs", "2")
    two = wirepeek("-r", str(packed), "--json", "--jobs", "2")
    assert two.returncode == 0, two.stderr
    assert two.stdout == plain.stdout and len(records(two.stdout, "connection")) == 600


def test_compressed_captures_merged_filtered_and_on_stdin(tmp_path):
    gz = compressed_copy(capture("zeek/wikipedia.pcap"), "gzip", tmp_path)
    zst = compressed_copy(capture("zeek/http__get.pcap"), "zstd", tmp_path)
    merged = wirepeek("-r", str(gz), "-r", str(zst), "--json", "tcp port 80")
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout == plain_json("-r", capture("zeek/wikipedia.pcap"), "-r",
                                       capture("zeek/http__get.pcap"), "tcp port 80")
    assert len(records(merged.stdout, "connection")) > 1
    piped = wirepeek("-r", "-", "--json", stdin=zst.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == plain_json("-r", capture("zeek/http__get.pcap"))


def test_truncated_compressed_capture_reports_what_was_read_then_where_it_broke(tmp_path):
    blob = compress(Path(capture("zeek/wikipedia.pcap")).read_bytes(), "gzip")
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    proc = wirepeek("-r", str(cut), "--json")
    no_traceback(proc)
    assert proc.returncode == 1
    assert 0 < len(records(proc.stdout, "connection"))
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and err.startswith(f"wirepeek: {cut}: truncated after ")
    assert err.rstrip().endswith("packets: truncated gzip data; the compressed stream ends early")


def test_zstd_capture_without_the_zstd_module_says_what_to_install(tmp_path):
    packed = compressed_copy(capture("zeek/http__get.pcap"), "zstd", tmp_path)
    code = ("import sys; sys.modules['compression.zstd'] = sys.modules['backports.zstd'] = None; "
            "from tui.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "-r", str(packed), "--json"],
                          capture_output=True, cwd=ROOT, timeout=60)
    no_traceback(proc)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode() == (f"wirepeek: {packed}: zstd-compressed, and reading zstd needs the "
                                    "backports.zstd package (pip install backports.zstd)\n")


def test_jobs_spread_the_connections_of_one_host_with_even_client_ports():
    """Linux gives connect() even ports: on one host (wrk on lo) every client port is even, and
    a shard chosen by the low bit of a sum put every connection in one worker (--jobs 2 gained
    nothing). Both directions of a connection still land in the same shard."""
    from engine.pipeline import _shard_of

    lo = (0x7F000001 << 32) | 0x7F000001
    counts = [0, 0]
    for port in range(32768, 33768, 2):
        there = _shard_of(lo, (port << 16) | 8080, 2)
        assert there == _shard_of(lo, (8080 << 16) | port, 2)  # the reply direction
        counts[there] += 1
    assert min(counts) >= 0.4 * sum(counts)
    v6 = (1 << 256) | (1 << 128) | 1  # [::1] to [::1], tagged as IPv6
    assert {_shard_of(v6, (p << 16) | 443, 2) for p in range(40000, 40100, 2)} == {0, 1}
