"""`make bench`: engine throughput and memory on workloads the project writes itself.

Prints figures; asserts nothing about time (speed targets live here, never in timed tests).
Each measurement runs in a fresh subprocess so that its peak memory (ru_maxrss) is its own.

    python -m tests.bench.run            all workloads
    python -m tests.bench.run --quick    smaller workloads, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench-data"

# (label, workload, parameters). "unique heads": every request and response head differs, as
# in real traffic (tests.bench.workloads._Varied); the others repeat heads as naive load does.
SIZES = [
    ("keep-alive, unique heads", "keepalive_http", {"connections": 50, "transactions": 161_500, "vary": True}),
    ("keep-alive, repeated", "keepalive_http", {"connections": 50, "transactions": 161_500}),
    ("conn/request, unique", "conn_per_request_http", {"connections": 79_100, "vary": True}),
    ("conn/request, repeated", "conn_per_request_http", {"connections": 79_100}),
    ("syn flood", "syn_flood", {"connections": 500_000}),
]
QUICK = [
    ("keep-alive, unique heads", "keepalive_http", {"connections": 50, "transactions": 10_000, "vary": True}),
    ("keep-alive, repeated", "keepalive_http", {"connections": 50, "transactions": 10_000}),
    ("conn/request, unique", "conn_per_request_http", {"connections": 3_000, "vary": True}),
    ("syn flood", "syn_flood", {"connections": 50_000}),
]


def workload_file(name: str, params: dict[str, object]) -> tuple[Path, dict[str, object]]:
    from tests.bench.workloads import WORKLOADS

    DATA.mkdir(exist_ok=True)
    tag = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    path = DATA / f"{name}-{tag}.pcap"
    facts_path = path.with_suffix(".json")
    if not path.exists() or not facts_path.exists():
        facts = WORKLOADS[name](str(path), **params)
        facts_path.write_text(json.dumps(facts, default=str))
    return path, json.loads(facts_path.read_text())


def measure(path: str, keep: int, budget_mib: int) -> dict[str, object]:
    """In this process: raw read rate, then the pipeline over pre-read batches, then peak memory."""
    import pcapy

    from engine import sources
    from engine.bounds import MiB, Bounds
    from engine.pipeline import Pipeline

    handle = pcapy.open_offline(path)
    t0 = time.perf_counter()
    raw = 0
    while True:
        _data, meta = handle.next_batch(4096)
        if not meta:
            break
        raw += len(meta) // 16
    raw_s = time.perf_counter() - t0

    source = sources.open_files([path])
    batches = []
    while (batch := source.next_batch()) is not None:
        batches.append(batch)
    source.close()
    packets = sum(len(b) for b in batches)
    size = sum(len(b.data) for b in batches)
    # Decode + connection tracking + reassembly: HTTP parsing is measured end to end below.
    pipeline = Pipeline(Bounds(keep_stream_bytes=keep, memory_budget=budget_mib * MiB),
                        http_body_limit=None)
    peak_budget = 0
    t0 = time.process_time()
    for batch in batches:
        pipeline.feed(batch)
        peak_budget = max(peak_budget, pipeline.table.memory)
    pipeline.finish()
    cpu = time.process_time() - t0
    stats = pipeline.stats()
    return {
        "packets": packets,
        "raw_read_s": raw_s,
        "raw_pps": raw / raw_s if raw_s else 0,
        "pipeline_cpu_s": cpu,
        "pps": packets / cpu if cpu else 0,
        "mbps": size / cpu / 1e6 if cpu else 0,
        "connections": stats.connections_total,
        "evicted": stats.evicted_connections,
        "peak_accounted_mib": peak_budget / MiB,
        "budget_mib": budget_mib,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def read_rates(path: Path) -> list[tuple[str, int, float]]:
    """Packets per CPU second of reading a file to its end, best of three: plain as a file is
    opened (CaptureFile: a classic pcap file's records framed by the compiled engine,
    sources._Records, when there is one), plain through libpcap's batches, plain through our own
    parser (CaptureStream, as for pipes), and gzip and zstd copies of it (through our parser:
    libpcap cannot read them)."""
    from engine import sources
    from tests.captures import SUFFIX, compressed_copy

    def drain(source: sources.Source) -> int:
        n = 0
        while (batch := source.next_batch()) is not None:
            n += len(batch)
        source.close()
        return n

    def stream(name: str) -> sources.Source:
        capture = sources.CaptureStream(name, open(name, "rb", buffering=0), (name,))  # noqa: SIM115
        capture.read_header()
        return capture

    def by_libpcap(name: str) -> sources.Source:
        framing, sources.READ_RECORDS = sources.READ_RECORDS, False
        try:
            return sources.open_files([name])
        finally:
            sources.READ_RECORDS = framing

    rows = []
    framed = "framed by the engine" if sources.READ_RECORDS else "libpcap (engine not compiled)"
    opened = [(f"plain, {framed}", lambda: sources.open_files([str(path)])),
              ("plain, libpcap", lambda: by_libpcap(str(path))),
              ("plain, our parser", lambda: stream(str(path)))]
    for kind in ("gzip", "zstd"):
        packed = path.with_name(path.name + SUFFIX[kind])
        if not packed.exists():
            compressed_copy(path, kind, path.parent)
        opened.append((f"{kind}, our parser", lambda packed=packed: sources.open_files([str(packed)])))
    for label, open_source in opened:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            packets = drain(open_source())
            best = min(best, time.process_time() - t0)
        rows.append((label, packets, best))
    return rows


def end_to_end(path: Path, jobs: int = 0) -> tuple[float, int]:
    """Wall time of `wirepeek -r FILE --json` and the HTTP records it printed."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--json", "--jobs", str(jobs)],
                          cwd=ROOT, stdout=subprocess.PIPE, check=True)
    seconds = time.perf_counter() - t0
    return seconds, proc.stdout.count(b'{"type":"http"')


def tshark_http(path: Path) -> tuple[float, int] | None:
    """tshark's HTTP dissection of the same file, as in the design document."""
    if shutil.which("tshark") is None:
        return None
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["tshark", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path), "-Y", "http.response",
         "-T", "fields", "-e", "http.response.code"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0, len(proc.stdout.splitlines())


TLS_CASES = [("TLSv1.3", "TLS_AES_128_GCM_SHA256"), ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
             ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"), ("TLSv1.2", "ECDHE-RSA-AES128-SHA256")]


def tls_throughput(exchanges: int = 1500) -> None:
    """Decryption with a key log: one keep-alive session of each suite made by OpenSSL
    (tests.tls_sessions), with varied bodies (about 9 KB on average); CPU time of the pipeline
    over its packets with the key log (decryption and HTTP) and without (TCP only)."""
    import random

    from engine.batch import Batch
    from engine.keylog import KeyLog
    from engine.pipeline import Pipeline
    from tests.tls_sessions import session

    rng = random.Random(7)
    pairs = []
    for i in range(exchanges):
        size = rng.choice((120, 900, 2_500, 7_000, 16_000, 40_000))
        body = bytes(rng.getrandbits(8) for _ in range(64)) * (size // 64)
        pairs.append((f"GET /api/items/{i}?session={rng.getrandbits(40):x} HTTP/1.1\r\n"
                      f"Host: api.example\r\nCookie: sid={rng.getrandbits(64):x}\r\n\r\n".encode(),
                      f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                      f"X-Request-Id: {rng.getrandbits(64):x}\r\n\r\n".encode() + body))
    print(f"\nTLS decryption: one keep-alive session a suite, {exchanges:,} exchanges "
          "(bodies of 120 B to 40 KB), CPU time on one core")
    for version, cipher in TLS_CASES:
        made = session(version, cipher, pairs)
        packets = made.packets()
        batches = [Batch.from_packets(1, packets[i : i + 4096]) for i in range(0, len(packets), 4096)]
        size = sum(len(d) for _, d in made.flights)
        records = sum(_records(d) for _, d in made.flights)
        figures = {}
        for label, keylog in (("plain TCP", None), ("decrypted", made.keylog)):
            keys = None
            if keylog is not None:
                keys = KeyLog()
                keys.feed(keylog.encode())
            pipeline = Pipeline(keylog=keys)
            t0 = time.process_time()
            http = 0
            for batch in batches:
                http += sum(1 for e in pipeline.feed(batch) if type(e).__name__ == "HttpTransaction")
            http += sum(1 for e in pipeline.finish() if type(e).__name__ == "HttpTransaction")
            figures[label] = (time.process_time() - t0, http)
        (plain, _), (dec, http) = figures["plain TCP"], figures["decrypted"]
        print(f"  {made.version} {made.cipher:<30} {size / 1e6:6.1f} MB {records:>7,} records: "
              f"decrypted with HTTP {dec:5.2f} s ({size / dec / 1e6:5.1f} MB/s, {records / dec:>7,.0f}"
              f" records/s, {http:,} exchanges); TCP alone {plain:5.2f} s ({size / plain / 1e6:5.1f} MB/s)")


def h2_throughput(connections: int = 20, streams: int = 1000) -> None:
    """HTTP/2 (h2c) exchanges per second: connections made by real HTTP/2 peers (the h2
    library, tests.h2_sessions), eight streams in flight at a time, every head unique (ids in
    paths, cookies, user agents, request ids: HPACK's dynamic table helps as it would in real
    traffic, no more), bodies of 0 to 16 KB; CPU time of the pipeline with HTTP parsing."""
    import random

    from engine.batch import Batch
    from engine.pipeline import Pipeline
    from tests.h2_sessions import Pair
    from tests.synth import TcpConversation

    rng = random.Random(11)
    agents = [f"client/{rng.randint(1, 9)}.{rng.randint(0, 30)} (build {rng.getrandbits(24):x})"
              for _ in range(40)]  # fmt: skip
    packets: list = []
    total = 0
    t_make = time.perf_counter()
    for c in range(connections):
        pair = Pair()
        conv = TcpConversation(client=("10.0.1.1", 40000 + c), server=("10.0.2.2", 8080),
                               start=1_700_000_000.0 + c)  # fmt: skip
        conv.handshake()
        for who, data in pair.script:
            (conv.client_send if who == "c" else conv.server_send)(data)
        done = len(pair.script)
        for first in range(0, streams, 8):
            ids = []
            for _ in range(min(8, streams - first)):
                sid = pair.client.get_next_available_stream_id()
                ids.append(sid)
                pair.client.send_headers(sid, [
                    (":method", rng.choice(("GET", "GET", "GET", "POST"))), (":scheme", "http"),
                    (":authority", "api.example"),
                    (":path", f"/v2/users/{rng.getrandbits(32)}/orders?page={rng.randint(1, 50)}"),
                    ("user-agent", rng.choice(agents)),
                    ("cookie", f"sid={rng.getrandbits(64):x}; theme={rng.choice(('dark', 'light'))}"),
                    ("accept", "application/json")], end_stream=True)  # fmt: skip
            pair.client_flush()
            for sid in ids:
                body = rng.randbytes(rng.choice((0, 200, 1_500, 4_000, 16_000)))
                pair.server.send_headers(sid, [
                    (":status", rng.choice(("200", "200", "200", "404", "500"))),
                    ("content-type", "application/json"), ("x-request-id", f"{rng.getrandbits(64):x}"),
                    ("date", f"Sat, 05 Dec 2026 20:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} GMT")],
                    end_stream=not body)  # fmt: skip
                if body:
                    pair.send_body(False, sid, body, True)
                pair.server_flush()
            pair.flush()
            for who, data in pair.script[done:]:
                (conv.client_send if who == "c" else conv.server_send)(data)
            done = len(pair.script)
        conv.close()
        packets += conv.packets
        total += sum(len(d) for _, d in pair.script)
    made = time.perf_counter() - t_make
    packets.sort(key=lambda p: p[0])
    batches = [Batch.from_packets(1, packets[i : i + 4096]) for i in range(0, len(packets), 4096)]
    best = None
    for _ in range(3):
        pipeline = Pipeline(http_body_limit=0)
        t0 = time.process_time()
        found = 0
        for batch in batches:
            found += sum(1 for e in pipeline.feed(batch) if type(e).__name__ == "HttpTransaction")
        found += sum(1 for e in pipeline.finish() if type(e).__name__ == "HttpTransaction")
        took = time.process_time() - t0
        best = took if best is None else min(best, took)
    assert best is not None
    print(f"\nHTTP/2 (h2c, made by the h2 library in {made:.1f} s): {connections} connections x "
          f"{streams:,} streams, {len(packets):,} packets, {total / 1e6:.1f} MB, unique heads, "
          f"CPU time on one core (best of 3)")
    print(f"  {found:,} exchanges in {best:.2f} s: {found / best:,.0f} exchanges/s, "
          f"{len(packets) / best:,.0f} packets/s, {total / best / 1e6:.1f} MB/s")


def _records(data: bytes) -> int:
    n = at = 0
    while at + 5 <= len(data):
        at += 5 + int.from_bytes(data[at + 3 : at + 5], "big")
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tls-only", action="store_true", help="only the TLS decryption figures")
    parser.add_argument("--h2-only", action="store_true", help="only the HTTP/2 figures")
    parser.add_argument("--measure", nargs=3, metavar=("FILE", "KEEP", "BUDGET_MIB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        path, keep, budget = args.measure
        print(json.dumps(measure(path, int(keep), int(budget))))
        return 0
    if args.tls_only:
        tls_throughput()
        return 0
    if args.h2_only:
        h2_throughput()
        return 0
    sizes = QUICK if args.quick else SIZES
    import engine

    build = "compiled with mypyc" if engine.COMPILED else "plain Python"
    print(f"wirepeek engine benchmark ({os.cpu_count()} cores, engine {build})")
    print("pipeline: decode + connection tracking + reassembly, CPU time on one core, batches read first;")
    print("keep: stream bytes kept per connection for the follow view\n")
    header = (f"{'workload':<26} {'keep':>6} {'packets':>9} {'raw read':>12} {'pipeline':>12} "
              f"{'MB/s':>6} {'conns':>7} {'evicted':>8} {'accounted':>10} {'peak RSS':>9}")
    print(header)
    print("-" * len(header))
    e2e = []
    for label, name, params in sizes:
        path, facts = workload_file(name, params)
        runs = [(64 * 1024, 512), (1024 * 1024, 512)]
        if name == "syn_flood":
            runs = [(64 * 1024, 512), (64 * 1024, 64)]
        for keep, budget in runs:
            out = subprocess.run(
                [sys.executable, "-m", "tests.bench.run", "--measure", str(path), str(keep), str(budget)],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )
            m = json.loads(out.stdout)
            print(f"{label:<26} {keep // 1024:>5}K {m['packets']:>9,} {m['raw_pps']:>10,.0f}/s "
                  f"{m['pps']:>10,.0f}/s {m['mbps']:>6.0f} {m['connections']:>7,} {m['evicted']:>8,} "
                  f"{m['peak_accounted_mib']:>6.0f}/{m['budget_mib']}M {m['maxrss_mib']:>7.0f}M")
        e2e.append((label, path, facts))
    label, path, _facts = e2e[0]
    print(f"\nreading {label} to its end (best of 3, CPU time)")
    for label, packets, seconds in read_rates(path):
        print(f"  {label:<30} {seconds:6.3f} s  {packets / seconds:>10,.0f} packets/s")
    print("\nend to end: wirepeek -r FILE --json > pipe (whole process, wall clock), and tshark's")
    print("HTTP dissection of the same file (tshark -Y http.response -T fields)")
    for label, path, facts in e2e:
        if facts["transactions"] == 0:
            continue
        tshark = tshark_http(path)
        for jobs in (1, 0):
            seconds, http = end_to_end(path, jobs)
            how = "1 process" if jobs == 1 else "default (one per core)"
            ratio = f"  {seconds / tshark[0]:.2f}x tshark" if tshark else ""
            print(f"  {label:<26} {how:<23} {seconds:6.2f} s  {facts['packets'] / seconds:>10,.0f} packets/s"
                  f"  {http:>7,} HTTP records  {http / seconds:>8,.0f}/s{ratio}")
        if tshark is None:
            print(f"  {label:<26} tshark is not installed: no comparison")
        else:
            print(f"  {label:<26} {'tshark':<23} {tshark[0]:6.2f} s  {tshark[1]:>36,} responses")
    tls_throughput(300 if args.quick else 1500)
    h2_throughput(4 if args.quick else 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
