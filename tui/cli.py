"""The `wirepeek` command: argument parsing and the headless modes (--json, --follow, -w, summary).

Errors the user can act on end in one line on stderr and a non-zero exit, never a traceback:
exit 1 for a capture problem (missing file, bad filter, no permission, a file that broke part
way), exit 2 for a usage mistake (argparse's own).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import IO

import orjson

from engine import sources
from engine.batch import META, Batch
from engine.bounds import Bounds, MiB
from engine.connections import ConsumerFactory
from engine.detect import HTTP2
from engine.dns import DnsFlow
from engine.ecs import record as ecs_record
from engine.events import ConnectionClosed, Event, Gap, HttpTransaction, Transaction
from engine.filter import (
    BODY_SEARCHED,
    FilterError,
    OpenConnections,
    RecordFilter,
    help_text,
    uses_bodies,
)
from engine.filter import parse as parse_filter
from engine.har import entry as har_entry
from engine.har import har
from engine.http import DEFAULT_MAX_BODY
from engine.http2 import Http2Parser
from engine.keylog import KeyLog, open_keys
from engine.pipeline import Pipeline
from engine.procs import Attribution, owner_record
from engine.records import connection_record, dumps, http_record, line, transaction_record
from engine.remote import DEFAULT_INTERFACE, HEADERS_ONLY, RemoteCaptures, RemoteTarget
from engine.stats import ACCURACY, GROUPINGS, Stats
from engine.tcp import Connection
from engine.tls import DECRYPTED
from tui import collector, http_helpers
from tui.escape import escape_bytes, escape_text, hexdump_lines
from tui.live_feed import FEED_BYTES
from tui.memory import (
    DEFAULT_MEMORY,
    ENGINE_EIGHTHS,
    RING_EIGHTHS,
    SCAPY,
    STORE_EIGHTHS,
    WORKING_SET,
    MemorySplit,
    physical_bytes,
)
from tui.sharded import default_jobs, json_records_sharded
from tui.spec import SourceSpec
from tui.store import LOG_BYTES, MAX_TRANSACTIONS_PER_CONNECTION, MIN_LOG_BYTES, tls_summary

DEFAULT_SPOOL = 1024 * MiB  # --spool: disk for the interactive view's kept streams

DESCRIPTION = """\
Inspect TCP traffic: live from interfaces or from capture files. Connections are reassembled
exactly: retransmissions and overlaps are delivered once, bytes never seen are reported missing.

A BPF expression (the same language as tcpdump) after the options selects what is captured.
Run as root, or give the interpreter the capture capability:
  sudo setcap cap_net_raw,cap_net_admin=eip "$(readlink -f "$(which python3)")"
When started with sudo, wirepeek opens the capture, then drops to the invoking user (like tcpdump -Z).
"""

EPILOG = """\
examples:
  wirepeek -r capture.pcap --json                 connections as NDJSON records
  wirepeek -i lo --json --count 1000 tcp port 80  live, stop after 1000 packets
  wirepeek -r capture.pcap --follow 3 --dir server > body.bin
  wirepeek -r capture.pcap -w web.pcap tcp port 80
  ssh host tcpdump -U -w - 'tcp port 80' | wirepeek -r - --json
"""


DEMO_CAPTURE = Path(__file__).parent / "data" / "demo.pcap"


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wirepeek",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("what to read")
    src.add_argument("-i", "--interface", action="append", default=[], metavar="IFACE",
                     help="capture live on IFACE; repeat for several ('any' for all)")
    src.add_argument("-r", "--read", action="append", default=[], metavar="FILE",
                     help="read a pcap or pcapng file, plain or gzip/zstd-compressed ('-' for a "
                          "capture stream on stdin); several are merged by time")
    src.add_argument("--ssh", action="append", default=[], metavar="[USER@]HOST[:IFACE]",
                     help="capture on HOST over SSH; repeat for several hosts, merged live by "
                          "time, each connection tagged with its host. Runs 'tcpdump -i IFACE "
                          f"-U -w -' there (IFACE default {DEFAULT_INTERFACE}) through the system "
                          "ssh in batch mode: your ssh config, agent, jump hosts and known hosts "
                          "apply, no password is ever asked. A host that fails is tried again, "
                          "the others go on. tcpdump needs root there: log in as root, or give "
                          "--ssh-sudo with a sudoers rule that lets you run it without a password")
    src.add_argument("--ssh-command", default="ssh", metavar="CMD",
                     help="the ssh to run, with its options (default 'ssh'; e.g. "
                          "'ssh -F ~/.ssh/capture_config -J bastion')")
    src.add_argument("--ssh-sudo", action="store_true",
                     help="with --ssh: run tcpdump under 'sudo -n' on the hosts")
    src.add_argument("--snaplen", type=int, metavar="BYTES",
                     help="with --ssh: bytes of each packet tcpdump sends over the link (default "
                          "all); payload past it is counted as not captured")
    src.add_argument("--headers-only", action="store_true",
                     help=f"with --ssh: for links that must not carry bodies, only the first "
                          f"{HEADERS_ONLY} bytes of each packet cross the link (its headers and "
                          "the start of its payload: request and status lines, the first header "
                          "lines); what was cut is counted as not captured")
    src.add_argument("--list-interfaces", action="store_true", help="list capture interfaces and exit")
    src.add_argument("--demo", action="store_true",
                     help="the interactive view on a bundled capture, replayed live (no root needed)")
    src.add_argument("--keylog", metavar="FILE",
                     help="decrypt TLS with the secrets in this key log (the SSLKEYLOGFILE format "
                          "that curl, browsers, OpenSSL, Go and Python write), read again as it "
                          "grows; without it, $SSLKEYLOGFILE when set")
    out = p.add_argument_group(
        "headless output (without these: the interactive view on a terminal, else a summary)")
    out.add_argument("--json", action="store_true", help="NDJSON records on stdout, then exit")
    out.add_argument("--schema", choices=("native", "ecs"), default="native",
                     help="with --json: the records' field names: wirepeek's own (default), or "
                          "the Elastic Common Schema (source.ip, http.request.method, "
                          "event.duration in ns, network.community_id...) for a fleet's store; "
                          "pipe them into a collector: ... --json --schema ecs | vector")
    out.add_argument("--where", metavar="EXPR",
                     help="with --json: only the exchanges that match EXPR, and the connections "
                          "that match or have such an exchange (the language of / in the "
                          "inspector: status >= 500, dur > 1s, path ~ ^/api, words...; see "
                          "--help-filter)")
    out.add_argument("--stats", action="store_true",
                     help="latency statistics of the HTTP exchanges instead of records: count, "
                          "error rate (5xx, no answer, unparsable), p50/p90/p99/max of duration "
                          "and time to first byte (within 1%%), bytes; with --json, one record a "
                          "group; --where filters the exchanges first")
    out.add_argument("--group-by", choices=GROUPINGS, default="endpoint",
                     help="with --stats: method and path with ids collapsed (GET /users/{id}), "
                          "the Host, or the status (default endpoint)")
    out.add_argument("--har", metavar="FILE",
                     help="write the HTTP exchanges (those --where keeps) to FILE as HAR 1.2, "
                          "the format browsers import: headers, cookies, query strings, bodies "
                          "decoded (the first MiB of each), timings; '-' for stdout")
    out.add_argument("--help-filter", action="store_true",
                     help="the display filter's fields and syntax, then exit")
    out.add_argument("--follow", type=int, metavar="ID",
                     help="print the reassembled stream of connection ID (ids as in --json)")
    out.add_argument("--dir", choices=("client", "server", "both"), default="both",
                     help="with --follow: which direction (default both, in arrival order)")
    out.add_argument("--hex", action="store_true", help="with --follow: a hex dump instead of bytes")
    out.add_argument("--stream", type=int, metavar="N",
                     help="with --follow: the body of HTTP/2 stream N of that connection, as sent "
                          "(DATA without padding; --dir client: the request's, server: the "
                          "response's, both: as they came)")
    out.add_argument("--raw", action="store_true",
                     help="with --follow and a key log: the TLS records as captured, not the "
                          "decrypted plaintext")
    out.add_argument("-w", "--write", metavar="OUT",
                     help="write the packets that pass the filter to OUT: pcap, or pcapng when "
                          "OUT ends in .pcapng, then with the TLS secrets of the sessions it "
                          "holds (from --keylog and the inputs), so it opens decrypted")
    out.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    out.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of live capture")
    out.add_argument("--jobs", type=int, default=0, metavar="N",
                     help="processes sharing the work: with --json on files, each tracks a "
                          "share of the connections; in the interactive view, helpers read files "
                          "(each tracks and parses a share of the connections) and parse the HTTP "
                          "of live captures (default: one per core, at most 2)")
    lim = p.add_argument_group("bounds")
    lim.add_argument("--memory", type=int, default=DEFAULT_MEMORY // MiB, metavar="MIB",
                     help="what the traffic may make wirepeek hold, in MiB (default "
                          f"{DEFAULT_MEMORY // MiB}). In the interactive view: "
                          f"{Fraction(ENGINE_EIGHTHS, 8)} for the engine (connections, "
                          f"out-of-order data, kept streams), {Fraction(RING_EIGHTHS, 8)} for the "
                          f"recent packets of a live capture (Packets tab, w; a file's are read "
                          f"again from it), {Fraction(STORE_EIGHTHS, 8)} for the "
                          "connection list and its HTTP exchanges (the newest "
                          f"{MAX_TRANSACTIONS_PER_CONNECTION:,} of a connection), the other "
                          "half for what "
                          "they hold beyond what they count; past a share the oldest go first, "
                          "and the status bar counts them. The headless modes give it all to "
                          "the engine. On top of it: the process before any traffic (about 45 "
                          f"MiB), what reading takes whatever the budget (about "
                          f"{WORKING_SET // MiB} MiB) and scapy once the Packets tab dissects "
                          f"(about {SCAPY // MiB} MiB)")
    lim.add_argument("--spool", type=int, default=DEFAULT_SPOOL // MiB, metavar="MIB",
                     help="disk for the streams the interactive view keeps (Stream tab), in MiB "
                          f"(default {DEFAULT_SPOOL // MiB}): a ring file in the temporary "
                          "directory, deleted as it is made; past it the oldest bytes go and the "
                          "view says so. 0 keeps them in memory, within --memory. A capture "
                          "file's streams are not kept: the one the Stream tab shows is read "
                          "again from the file. The HTTP "
                          "exchanges go to a second ring file, a quarter of this size (at least "
                          f"{MIN_LOG_BYTES // MiB}, or {LOG_BYTES // MiB} with --spool 0); "
                          "memory keeps where each is. A live capture is written to disk by a "
                          "capture process for the view to read at its pace: at most half of "
                          f"this (or {FEED_BYTES // MiB} with --spool 0) waits there, past it "
                          "packets are skipped and the status bar counts them")
    lim.add_argument("--max-connections", type=int, default=250_000, metavar="N",
                     help="connections tracked at once (default 250000)")
    lim.add_argument("--reorder-window", type=float, default=Bounds().reorder_window,
                     metavar="S",
                     help="seconds one direction may be captured late against the other "
                          "(multi-queue NICs, the any device, merged captures): an acknowledged "
                          "hole waits this long for its bytes, an HTTP answer twice as long for "
                          f"its request (default {Bounds().reorder_window:g})")
    p.add_argument("filter", nargs="*", metavar="BPF", help="capture filter expression")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"wirepeek: error: {e}", file=sys.stderr)
        return 2
    except sources.CaptureError as e:
        print(f"wirepeek: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (| head): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def run(args: argparse.Namespace) -> int:
    if args.list_interfaces:
        for name in sources.list_interfaces():
            print(name)
        return 0
    if sum(map(bool, (args.interface, args.read, args.ssh))) > 1:
        raise UsageError("read files (-r), capture live (-i) or capture over SSH (--ssh): one of them")
    if (args.ssh_sudo or args.snaplen is not None or args.ssh_command != "ssh"
            or args.headers_only) and not args.ssh:
        raise UsageError("--ssh-command, --ssh-sudo, --snaplen and --headers-only go with --ssh")
    if args.headers_only and args.snaplen is not None:
        raise UsageError(f"--headers-only is --snaplen {HEADERS_ONLY}: give one of them")
    if args.headers_only:
        args.snaplen = HEADERS_ONLY
    if args.snaplen is not None and not 64 <= args.snaplen <= 262144:
        raise UsageError("--snaplen must be between 64 and 262144 bytes")
    try:
        targets = [RemoteTarget.parse(text) for text in args.ssh]
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.jobs < 0:
        raise UsageError("--jobs must be at least 1 (or 0 for one per core)")
    check_memory(args.memory)
    if args.spool < 0:
        raise UsageError(f"--spool is in MiB and cannot be negative (got {args.spool})")
    if not 0 <= args.reorder_window <= 3600:
        raise UsageError("--reorder-window must be between 0 and 3600 seconds")
    if args.help_filter:
        print(help_text())
        return 0
    if args.follow is not None and args.json:
        raise UsageError("--follow and --json are separate modes")
    args.where_filter = None
    if args.schema != "native" and (not args.json or args.stats):
        raise UsageError("--schema goes with --json (records; not --stats)")
    if args.group_by != "endpoint" and not args.stats:
        raise UsageError("--group-by goes with --stats")
    if args.where is not None:
        if not args.json and not args.stats and args.har is None:
            raise UsageError("--where goes with --json (in the inspector, / takes the same language)")
        try:
            args.where_filter = parse_filter(args.where)
        except FilterError as e:
            raise UsageError(f"--where: {e.message}, column {e.column}:\n{e.pointer()}") from None
    if (args.hex or args.dir != "both" or args.raw or args.stream is not None) and args.follow is None:
        raise UsageError("--hex, --dir, --raw and --stream go with --follow")
    if args.demo:
        if args.interface or args.read or args.ssh or args.json or args.follow is not None or args.write:
            raise UsageError("--demo plays its own capture in the interactive view; it takes no other source")
        return interactive(args, SourceSpec(files=(str(DEMO_CAPTURE),), replay=True), " ".join(args.filter))
    if not args.interface and not args.read and not args.ssh:
        raise UsageError("nothing to read: give -r FILE, -i IFACE or --ssh HOST (or try --demo)")
    bpf = " ".join(args.filter)
    args.keys = open_keylog(args)
    if args.read:
        source = sources.open_files(args.read, bpf)
    elif args.ssh:
        source = RemoteCaptures(targets, bpf, args.ssh_command, args.ssh_sudo,
                                args.snaplen or sources.SNAPLEN)
        note = f" (filter: {bpf})" if bpf else ""
        print(f"wirepeek: capturing over SSH on {source.name}{note}", file=sys.stderr, flush=True)
    else:
        source = sources.open_live(args.interface, bpf)
        user = sources.drop_privileges()
        note = f" (filter: {bpf})" if bpf else ""
        note += f", running as {user}" if user else ""
        print(f"wirepeek: capturing on {source.name}{note}", file=sys.stderr, flush=True)
    if args.write or args.follow is not None or args.json or not sys.stdout.isatty():
        collector.headless()  # inherited by the workers of a parallel --json
    try:
        if args.write:
            # The secrets embedded in a .pcapng: --keylog's and the inputs' own, never those of
            # a $SSLKEYLOGFILE merely set in the environment (a browser's, say).
            keys = args.keys if args.keylog else open_keys(None, args.read)
            sources.write_packets(source, args.write, count=args.count, duration=args.duration,
                                  keys=keys)
            status = 0
        elif args.follow is not None:
            status = follow(args, source)
        elif args.stats:
            status = stats_report(args, source)
        elif args.har is not None:
            status = har_export(args, source)
        elif args.json and _parallel(args) > 1:
            source.close()  # opened to check the files and filter; the workers open their own
            error = json_records_sharded(args.read, bpf, args.count, bounds_from(args, 64 * 1024),
                                         _parallel(args), keylog=args.keys, where=args.where,
                                         transform=ecs_line_of if args.schema == "ecs" else None)
            if error:
                print(f"wirepeek: {error}", file=sys.stderr)
                return 1
            return 0
        elif args.json:
            status = json_records(args, source)
        elif sys.stdout.isatty():
            keylog = args.keylog or os.environ.get("SSLKEYLOGFILE") or None
            spec = SourceSpec(files=tuple(args.read), interfaces=tuple(args.interface), opened=source,
                              keylog=keylog)
            source = None  # the app owns it now
            return interactive(args, spec, bpf)
        else:
            status = summary(args, source)
        if source is None:
            return status
        if isinstance(source, RemoteCaptures):
            return remote_report(source, status)
        if source.live:
            st = source.stats()
            if st is not None:
                print(f"wirepeek: {st.received} packets received by the filter, {st.dropped} dropped "
                      f"by the kernel, {st.if_dropped} by the interface", file=sys.stderr)
        if source.error:
            sys.stdout.flush()
            print(f"wirepeek: {source.error}", file=sys.stderr)
            return 1
        return status
    finally:
        if source is not None:
            source.close()


def remote_report(source: RemoteCaptures, status: int) -> int:
    """How each host's capture went; 1 if a host never captured (why is said)."""
    source.close()
    for notice in source.notices():
        print(f"wirepeek: {escape_text(notice)}", file=sys.stderr)
    never = 0
    for host in source.host_status():
        counts = ""
        if host.received is not None:
            counts = (f", tcpdump: {host.received} received by the filter, "
                      f"{host.dropped} dropped by the kernel")
        print(f"wirepeek: {escape_text(host.name)}: {host.packets} packets{counts}", file=sys.stderr)
        if not host.packets and host.detail:
            never += 1
            print(f"wirepeek: {escape_text(host.name)}: no capture: {escape_text(host.detail)}",
                  file=sys.stderr)
    return 1 if never else status


def interactive(args: argparse.Namespace, spec: SourceSpec, bpf: str) -> int:
    """The Textual app; it takes its keys from the terminal even when the capture comes on stdin."""
    jobs = args.jobs or None
    if spec.helper_jobs(jobs):
        # The helpers' fork server imports the engine while this process imports Textual: the
        # helpers then start at once when the app reads the file.
        http_helpers.prepare()
    from tui.app import WirepeekApp  # Textual loads only for the interactive view

    if "-" in spec.files:
        # The capture stream keeps its own copy of the pipe (sources dup'ed it); the app reads
        # keys from file descriptor 0, which must now be the terminal.
        try:
            tty = os.open("/dev/tty", os.O_RDWR)
        except OSError:
            raise sources.CaptureError("no terminal to take keys from: use --json or --follow "
                                       "when the capture comes on stdin without a terminal") from None
        os.dup2(tty, 0)
        os.close(tty)
    WirepeekApp(spec, bpf, *interactive_bounds(args), jobs=jobs).run()
    return 0


def interactive_bounds(args: argparse.Namespace) -> tuple[Bounds, MemorySplit]:
    """The engine's bounds and the shares of --memory for the interactive view."""
    split = MemorySplit.of(args.memory * MiB)
    bounds = replace(bounds_from(args, keep_stream=Bounds().keep_stream_bytes), keep_after_close=True,
                     memory_budget=split.engine, spool_bytes=args.spool * MiB)
    return bounds, split


def check_memory(mib: int) -> None:
    if mib < 1:
        raise UsageError(f"--memory is in MiB and must be at least 1 (got {mib})")
    physical = physical_bytes()
    if physical is not None and mib * MiB > physical:
        raise UsageError(f"--memory {mib} is more than this machine has "
                         f"({physical // MiB:,} MiB): the bound would never be reached")


def _parallel(args: argparse.Namespace) -> int:
    """Processes for --json: several only for files (each worker reads them itself)."""
    if not args.read or "-" in args.read or args.duration is not None:
        return 1
    return args.jobs if args.jobs > 0 else default_jobs()


def bounds_from(args: argparse.Namespace, keep_stream: int) -> Bounds:
    return Bounds(
        memory_budget=args.memory * MiB,
        max_connections=args.max_connections,
        keep_stream_bytes=keep_stream,
        reorder_window=args.reorder_window,
    )


def batches(args: argparse.Namespace, source: sources.Source,
            pipeline: Pipeline, stop: Callable[[], bool] = lambda: False) -> Iterator[list[Event]]:
    """Events of each batch, honouring --count and --duration; the final flush comes last."""
    remaining = args.count
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop():
            if deadline is not None and time.monotonic() >= deadline:
                break
            timeout = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            batch = source.next_batch(timeout)
            for notice in source.notices():
                print(f"wirepeek: {escape_text(notice)}", file=sys.stderr, flush=True)
            if batch is None:
                break
            if not len(batch):
                if source.live:
                    yield pipeline.flush(time.time())
                continue
            if remaining is not None and len(batch) >= remaining:
                batch = Batch(batch.linktype, batch.data, batch.meta[: remaining * META.size])
                yield pipeline.feed(batch)
                break
            if remaining is not None:
                remaining -= len(batch)
            events = pipeline.feed(batch)
            collector.after_batch()
            yield events
    except KeyboardInterrupt:
        pass  # a live capture ends with Ctrl-C: report what was seen
    yield pipeline.finish()


def open_keylog(args: argparse.Namespace) -> KeyLog | None:
    """The key log of --keylog, or of $SSLKEYLOGFILE, with the secrets the capture files carry
    (pcapng Decryption Secrets Blocks); None without any."""
    path = args.keylog or os.environ.get("SSLKEYLOGFILE") or None
    try:
        keys = open_keys(path, args.read)
    except OSError as e:
        named = "--keylog" if args.keylog else "$SSLKEYLOGFILE"
        raise UsageError(f"cannot read the key log {path} ({named}): {e.strerror or e}") from None
    if keys is not None and keys.malformed:
        print(f"wirepeek: key log: {keys.malformed} line(s) not in the key log format, skipped",
              file=sys.stderr)
    return keys


def ecs_line(record: dict) -> bytes:
    return dumps(ecs_record(record))


def ecs_line_of(native: bytes) -> bytes:
    """A native record's line as an ECS record's (the parallel reader numbers lines first)."""
    return dumps(ecs_record(orjson.loads(native)))


def json_records(args: argparse.Namespace, source: sources.Source) -> int:
    where = args.where_filter
    opened = OpenConnections()
    consumers: list[ConsumerFactory] = [opened.note]
    # A live capture on this host: each connection's local processes (engine.procs).
    attribution = Attribution() if isinstance(source, sources.LiveCapture) else None
    if attribution is not None:
        consumers.append(lambda conn, emit: attribution.opened(conn.id, conn.client_addr,
                                                               conn.server_addr))
    pipeline = Pipeline(bounds_from(args, keep_stream=64 * 1024), hosts=source.hosts,
                        consumers={None: consumers},
                        http_body_limit=BODY_SEARCHED if where and uses_bodies(where) else 0,
                        keylog=args.keys)  # fmt: skip
    keep = RecordFilter(where, opened.info) if where is not None else None
    out = sys.stdout.buffer  # one write per batch: unbuffered (PYTHONUNBUFFERED) or not
    write = line if args.schema == "native" else ecs_line
    for events in batches(args, source, pipeline):
        lines = []
        opened.batch(events)
        if attribution is not None:
            attribution.poll()
        for event in events:
            if isinstance(event, ConnectionClosed):
                record = connection_record(event.info)
                if attribution is not None:
                    client, server = attribution.take(event.info.id)
                    record["process"] = {"client": owner_record(client),
                                         "server": owner_record(server)}
                if keep is None or keep.connection(event.info):
                    lines.append(write(record))
            elif isinstance(event, HttpTransaction):
                if keep is None or keep.exchange(event):
                    lines.append(write(http_record(event, opened.flow(event.connection))))
            elif isinstance(event, Transaction):
                if keep is None or keep.exchange(event):
                    lines.append(write(transaction_record(event, opened.flow(event.connection))))
        if lines:
            lines.append(b"")
            out.write(b"\n".join(lines))
        if source.live:
            out.flush()
    out.flush()
    return 0


class FollowWriter:
    """Writes one connection's reassembled bytes as they are delivered, nothing else on stdout.

    With `decrypting` (a key log, no --raw), a TLS connection that engine.tlsdecrypt decrypts
    is written as its plaintext, which the decryptor gives to `plaintext()`; its records are
    not written. Until the connection's protocol is known its first bytes wait (the sniffer
    decides on the client's first bytes, at most LIMIT of them)."""

    LIMIT = 64 * 1024

    def __init__(self, out: IO[bytes], direction: str, hexdump: bool, escape: bool,
                 decrypting: bool = False) -> None:
        self.out = out
        self.want = {"client": (True,), "server": (False,), "both": (True, False)}[direction]
        self.hexdump = hexdump
        self.escape = escape
        self.decrypting = decrypting
        self.held: list[tuple[Connection, bool, float, int, bytes]] = []
        self.tls = False  # decrypted: the plaintext is written, not the records
        self.last_dir: bool | None = None
        self.missing = {True: 0, False: 0}
        self.seen = False
        self.done = False

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        if self.decrypting and not self.tls:
            if conn.sniffing and sum(len(h[4]) for h in self.held) < self.LIMIT:
                self.held.append((conn, from_client, ts, offset, data))
                return
            # (Imported here: cryptography is loaded only where there are keys to decrypt with.)
            from engine.tlsdecrypt import TlsDecryptor

            if any(isinstance(c, TlsDecryptor) for c in conn.consumers):
                self.tls = True
                self.held = []
            else:
                self._flush_held()
        if not self.tls:
            self._write(conn, from_client, ts, offset, data)

    def _flush_held(self) -> None:
        held, self.held = self.held, []
        for conn, from_client, ts, offset, data in held:
            self._write(conn, from_client, ts, offset, data)

    def _write(self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes) -> None:
        if from_client not in self.want:
            return
        if self.hexdump:
            self._header(conn, from_client, offset, ts)
            text = "\n".join(hexdump_lines(data, offset)) + "\n"
            self.out.write(text.encode())
        elif self.escape:
            self.out.write(escape_bytes(data, keep_newlines=True).encode())
        else:
            self.out.write(data)

    def plaintext(self) -> FollowPlaintext:
        return FollowPlaintext(self)

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        if from_client not in self.want or self.tls:
            return
        self._flush_held()
        self.missing[from_client] += size
        side = "client" if from_client else "server"
        if self.hexdump:
            self._header(conn, from_client, offset, ts)
            self.out.write(f"-- {size} bytes missing from the {side} --\n".encode())
        print(f"wirepeek: connection {conn.id}: {size} {side} bytes missing at offset {offset}",
              file=sys.stderr)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float, decryptor: bool = False) -> None:
        if self.done or (self.tls and not decryptor):  # (the decryptor closes after, and says)
            return
        self._flush_held()
        if self.tls and conn.tls_status != DECRYPTED:
            print(f"wirepeek: connection {conn.id}: not decrypted, or not to its end: "
                  f"{conn.tls_status} (--raw writes its TLS records)", file=sys.stderr)
        self.done = True

    def _header(self, conn: Connection, from_client: bool, offset: int, ts: float) -> None:
        if len(self.want) == 1 or self.last_dir == from_client:
            return
        self.last_dir = from_client
        src, dst = (conn.client_addr, conn.server_addr) if from_client else (conn.server_addr, conn.client_addr)
        label = "client" if from_client else "server"
        line = f"# {label} {escape_text(src)} -> {escape_text(dst)}  offset {offset}  ts {ts:.6f}\n"
        self.out.write(line.encode())


class FollowPlaintext:
    """What a TLS decryptor gives --follow's writer: the connection's plaintext."""

    def __init__(self, writer: FollowWriter) -> None:
        self.writer = writer

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        self.writer.tls = True
        self.writer._write(conn, from_client, ts, offset, data)

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        pass  # (the decryptor stops at a gap; the writer says so when the connection closes)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        pass

    def on_close(self, conn: Connection, ts: float) -> None:
        self.writer.tls = True
        self.writer.on_close(conn, ts, decryptor=True)


def follow(args: argparse.Namespace, source: sources.Source) -> int:
    if args.stream is not None:
        return follow_stream(args, source)
    out = sys.stdout.buffer
    decrypting = args.keys is not None and not args.raw
    writer = FollowWriter(out, args.dir, args.hex, escape=out.isatty() and not args.hex,
                          decrypting=decrypting)
    wanted = args.follow

    flows: list[str] = []

    def attach(conn: Connection, emit: Callable[[Event], None]) -> FollowWriter | None:
        if conn.id != wanted:
            return None
        if isinstance(conn, DnsFlow):
            flows.append(f"{conn.client_addr} {conn.server_addr}")
            writer.done = True
            return None
        writer.seen = True
        return writer

    def plaintext(conn: Connection, emit: Callable[[Event], None]) -> FollowPlaintext | None:
        return writer.plaintext() if conn.id == wanted else None

    pipeline = Pipeline(bounds_from(args, keep_stream=64 * 1024), hosts=source.hosts, consumers={None: [attach]},
                        http_body_limit=None, keylog=args.keys if decrypting else None,
                        plaintext=[plaintext])
    total = 0
    for events in batches(args, source, pipeline, stop=lambda: writer.done):
        out.flush()
        total = pipeline.table.next_id
    out.flush()
    if flows:
        print(f"wirepeek: connection {wanted} is DNS over UDP ({flows[0]}): it has no byte stream "
              "to follow; --json shows its queries and answers", file=sys.stderr)
        return 1
    if not writer.seen:
        print(f"wirepeek: no connection {wanted}: the capture has {total} connections "
              f"(ids 0 to {total - 1})" if total else f"wirepeek: no connection {wanted}: "
              "the capture has no TCP connections", file=sys.stderr)
        return 1
    return 0


def har_export(args: argparse.Namespace, source: sources.Source) -> int:
    """--har FILE: the exchanges as HAR 1.2, written as they come (one entry at a time: the
    document is never held whole)."""
    where = args.where_filter
    opened = OpenConnections()
    pipeline = Pipeline(bounds_from(args, keep_stream=0), hosts=source.hosts, consumers={None: [opened.note]},
                        http_body_limit=DEFAULT_MAX_BODY, keylog=args.keys)
    try:
        out = sys.stdout.buffer if args.har == "-" else open(args.har, "wb")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"--har: cannot write {args.har}: {e.strerror or e}") from None
    written = 0
    try:
        head = dumps(har([]))
        out.write(head[: head.rindex(b"[]")] + b"[\n")
        for events in batches(args, source, pipeline):
            opened.batch(events)
            for event in events:
                if not isinstance(event, HttpTransaction):
                    continue
                info = opened.info(event.connection)
                if where is not None and not where.exchange(info, event):
                    continue
                record = har_entry(event, info)
                if record is not None:
                    out.write((b",\n" if written else b"") + dumps(record))
                    written += 1
        out.write(b"\n]}}\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    if args.har != "-":
        print(f"wirepeek: {written} exchanges written to {args.har} (HAR 1.2)", file=sys.stderr)
    return 0


def stats_report(args: argparse.Namespace, source: sources.Source) -> int:
    """--stats: the exchanges grouped (--group-by), a table or (--json) a record a group."""
    where = args.where_filter
    opened = OpenConnections()
    pipeline = Pipeline(bounds_from(args, keep_stream=0), hosts=source.hosts, consumers={None: [opened.note]},
                        http_body_limit=BODY_SEARCHED if where and uses_bodies(where) else 0,
                        keylog=args.keys)  # fmt: skip
    stats = Stats(args.group_by)
    for events in batches(args, source, pipeline):
        opened.batch(events)
        for event in events:
            if isinstance(event, (HttpTransaction, Transaction)):
                info = opened.info(event.connection) if where or args.group_by == "host" else None
                if where is None or where.exchange(info, event):
                    stats.add(event, info)
    groups = stats.sorted()
    out = sys.stdout
    if args.json:
        for group in [*groups, stats.total]:
            out.write(dumps(group.record(stats.grouping)).decode() + "\n")
        return 0
    width = max([len(stats.grouping), 5, *(len(escape_text(g.name)) for g in groups)])
    width = min(width, 60)
    print(f"{stats.grouping:<{width}} {'count':>8} {'errors':>7} {'p50':>9} {'p90':>9} "
          f"{'p99':>9} {'max':>9} {'ttfb p50':>9} {'ttfb p99':>9} {'req':>8} {'resp':>8}", file=out)
    for group in [*groups, stats.total]:
        name = escape_text(group.name)
        name = name if len(name) <= width else name[: width - 1] + "…"
        d, w = group.duration, group.ttfb
        rate = f"{100 * group.errors / group.count:.1f}%" if group.count else "-"
        print(f"{name:<{width}} {group.count:>8,} {rate:>7} {_t(d.quantile(0.5))} "
              f"{_t(d.quantile(0.9))} {_t(d.quantile(0.99))} {_t(d.max if d.count else None)} "
              f"{_t(w.quantile(0.5))} {_t(w.quantile(0.99))} {_bytes(group.request_bytes)} "
              f"{_bytes(group.response_bytes)}", file=out)  # fmt: skip
    print(f"percentiles within {ACCURACY:.0%}; errors: 5xx, no answer, or unparsable", file=out)
    return 0


def _t(seconds: float | None) -> str:
    if seconds is None:
        return f"{'-':>9}"
    if seconds < 1:
        return f"{seconds * 1000:>7.1f}ms"
    return f"{seconds:>8.2f}s"


def _bytes(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:>7}{unit}" if unit == "B" else f"{n:>7.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def follow_stream(args: argparse.Namespace, source: sources.Source) -> int:
    """--follow ID --stream N: the body bytes of one HTTP/2 stream, as they come."""
    out = sys.stdout.buffer
    writer = FollowWriter(out, args.dir, args.hex, escape=out.isatty() and not args.hex)
    wanted, stream_id = args.follow, args.stream
    found = {"stream": False}
    protocol: list[str | None] = []

    def parser(conn: Connection, emit: Callable[[Event], None]) -> Http2Parser | None:
        if conn.id != wanted:
            return None
        writer.seen = True
        h2 = Http2Parser(conn, emit, max_body=0)

        def tap(sid: int, from_client: bool, offset: int, data: bytes | None, size: int) -> None:
            if sid != stream_id:
                return
            found["stream"] = True
            if data is not None:
                writer._write(conn, from_client, conn.last_ts, offset, data)
            else:
                writer.on_gap(conn, from_client, conn.last_ts, offset, size, "")

        h2.tap = tap
        return h2

    flows: list[str] = []

    def seen(conn: Connection, emit: Callable[[Event], None]) -> None:
        if conn.id == wanted:
            if isinstance(conn, DnsFlow):
                flows.append(f"{conn.client_addr} {conn.server_addr}")
                writer.done = True
            else:
                writer.seen = True

    keys = args.keys if not args.raw else None
    pipeline = Pipeline(bounds_from(args, keep_stream=0), hosts=source.hosts, consumers={HTTP2: [parser], None: [seen]},
                        http_body_limit=None, keylog=keys, plaintext=[parser])
    total = 0
    for events in batches(args, source, pipeline, stop=lambda: writer.done):
        for event in events:
            if isinstance(event, HttpTransaction) and event.connection == wanted \
                    and event.stream == stream_id:
                writer.done = True
            elif isinstance(event, ConnectionClosed) and event.info.id == wanted:
                protocol.append(event.info.protocol)
                writer.done = True
        out.flush()
        total = pipeline.table.next_id
    out.flush()
    if flows:
        print(f"wirepeek: connection {wanted} is DNS over UDP ({flows[0]}): it has no byte stream "
              "to follow; --json shows its queries and answers", file=sys.stderr)
        return 1
    if not writer.seen:
        print(f"wirepeek: no connection {wanted}: the capture has {total} connections", file=sys.stderr)
        return 1
    if not found["stream"]:
        kind = protocol[0] if protocol else None
        if kind != HTTP2:
            print(f"wirepeek: connection {wanted} is not HTTP/2 (it is {kind or 'unrecognised'})",
                  file=sys.stderr)
        else:
            print(f"wirepeek: connection {wanted} has no HTTP/2 stream {stream_id} with a body",
                  file=sys.stderr)
        return 1
    return 0


def summary(args: argparse.Namespace, source: sources.Source) -> int:
    """The interim default view: one line per connection as it ends."""
    pipeline = Pipeline(bounds_from(args, keep_stream=0), hosts=source.hosts, http_body_limit=None, keylog=args.keys)
    out = sys.stdout
    print(f"{'id':>5}  {'client':<22} {'server':<22} {'state':<12} {'pkts':>6} "
          f"{'bytes c>s':>10} {'bytes s>c':>10} {'missing':>8}  proto", file=out)
    for events in batches(args, source, pipeline):
        for event in events:
            if isinstance(event, ConnectionClosed):
                i = event.info
                proto = i.protocol or "-"
                if tls := tls_summary(i):
                    proto += f" {escape_text(tls)}"
                print(f"{i.id:>5}  {i.client:<22} {i.server:<22} {i.state:<12} "
                      f"{sum(i.packets):>6} {i.bytes[0]:>10} {i.bytes[1]:>10} "
                      f"{sum(i.missing_bytes):>8}  {proto}", file=out)
            elif isinstance(event, Gap):
                pass
        if source.live:
            out.flush()
    st = pipeline.stats()
    print(f"{st.packets} packets, {st.tcp_packets} TCP, {st.connections_total} connections, "
          f"{st.malformed} malformed, {st.truncated + st.cut_payloads} cut short by the "
          f"snapshot length, "
          f"{st.ignored_segments} segments ignored (too far ahead), "
          f"{st.fragments_dropped} fragmented datagrams never completed", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
