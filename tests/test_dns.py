"""DNS transactions (engine.dns): messages read as dnspython reads them, UDP queries and answers
paired by ID in any order, DNS over TCP in every interleaving and segmentation with a gap to
resynchronise after, fuzzed bytes, and a real dnsmasq asked by dnspython over UDP and TCP,
captured live."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from engine import dns as wdns
from engine.batch import Batch
from engine.events import ConnectionClosed, Transaction
from engine.pipeline import Pipeline
from tests.conversations import build, causal, interleavings
from tests.live import json_capture, wait_capturing
from tests.synth import write_pcap

ROOT = Path(__file__).parent.parent
CLIENT, SERVER = ("10.1.0.1", 40000), ("10.1.0.53", 53)


def query(name: str, rtype: str = "A", ident: int = 1) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    q.id = ident
    return q


def answer(q: dns.message.Message, *records: str, rcode: int = 0) -> dns.message.Message:
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for text in records:  # "name ttl IN TYPE data"
        r.answer.append(dns.rrset.from_text(*text.split(" ", 4)))
    return r


def udp(message: dns.message.Message | bytes, from_client: bool = True, ts: float = 0.0,
        client: tuple[str, int] = CLIENT) -> tuple[float, bytes]:
    src, dst = (client, SERVER) if from_client else (SERVER, client)
    wire = message if isinstance(message, bytes) else message.to_wire()
    pkt = Ether() / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / Raw(wire)
    return 1_700_000_000.0 + ts, bytes(pkt)


def run(packets: list[tuple[float, bytes]], batch: int = 3, **kwargs) -> list:
    pipeline = Pipeline(**kwargs)
    events = []
    for i in range(0, len(packets), batch):
        events += pipeline.feed(Batch.from_packets(1, packets[i : i + batch]))
    return events + pipeline.finish()


def said(events: list) -> list[tuple]:
    return [(t.request_summary, t.response_summary, t.status, t.error, t.notes)
            for t in events if isinstance(t, Transaction)]


# --- messages -------------------------------------------------------------------------------

names = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
                 min_size=1, max_size=5).map(lambda labels: ".".join(labels) + ".")
records = st.one_of(
    st.tuples(st.just("A"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("AAAA"), st.ip_addresses(v=6).map(str)),
    st.tuples(st.just("CNAME"), names),
    st.tuples(st.just("MX"), names.map(lambda n: f"10 {n}")),
    st.tuples(st.just("TXT"), st.text("abcdef xyz", max_size=30).map(lambda t: f'"{t}"')),
)


@given(names, st.sampled_from(["A", "AAAA", "MX", "TXT", "SRV"]), st.lists(st.tuples(names, records), max_size=6, unique=True),
       st.sampled_from([0, 2, 3, 5]), st.integers(0, 65535))
@example("jusw.", "MX", [("0.", ("A", "52.216.53.190")), ("guz0rn.", ("TXT", '""')),
                         ("0.", ("A", "10.20.113.187"))], 3, 243)  # one name and type, apart
@settings(max_examples=200, deadline=None)
def test_messages_read_as_dnspython_reads_them(qname, qtype, answers, rcode, ident) -> None:
    q = query(qname, qtype, ident)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for owner, (rtype, data) in answers:
        r.answer.append(dns.rrset.from_text(owner, 60, "IN", rtype, data))
    wire = r.to_wire()  # (names compressed)
    ours = wdns.read_message(wire)
    assert ours is not None and ours.id == ident and ours.response and ours.rcode == rcode
    assert ours.questions == ((qname, dns.rdatatype.from_text(qtype)),)
    theirs = dns.message.from_wire(wire)
    flat = [(rrset.name.to_text(), rrset.rdtype, rd) for rrset in theirs.answer for rd in rrset]
    assert ours.answer_count == len(flat)
    # dnspython gathers the records of one name and type into one set, where the first of them
    # came; ours are in wire order: put them in its order (a stable sort by that first place).
    first: dict[tuple[str, int], int] = {}
    for mine in ours.answers:
        first.setdefault((mine.name, mine.type), len(first))
    in_sets = sorted(ours.answers, key=lambda mine: first[(mine.name, mine.type)])
    for mine, (owner, rdtype, rd) in zip(in_sets, flat, strict=False):
        assert (mine.name, mine.type) == (owner, rdtype)
        assert mine.data == expected_data(rdtype, rd)
    assert wdns.read_message(q.to_wire()) is not None
    assert wdns.read_message(wire + b"x") is None  # not whole
    assert wdns.read_message(wire + b"x", whole=False) is not None


def expected_data(rdtype: int, rd) -> str:
    if rdtype == 28:
        return str(ipaddress.IPv6Address(str(rd)))
    if rdtype == 16:
        return rd.strings[0].decode() if rd.strings else ""
    return rd.to_text()


def test_summaries() -> None:
    q = query("example.com", "A")
    r = answer(q, "example.com. 60 IN CNAME web.example.com.", "web.example.com. 60 IN A 192.0.2.1",
               "web.example.com. 60 IN A 192.0.2.2", "web.example.com. 60 IN A 192.0.2.3",
               "web.example.com. 60 IN A 192.0.2.4")
    message = wdns.read_message(r.to_wire())
    assert wdns.question_summary(message) == "A example.com."
    assert wdns.answer_summary(message) == \
        "NOERROR CNAME web.example.com., 192.0.2.1, 192.0.2.2, 192.0.2.3 (+1 more)"
    assert wdns.answer_summary(wdns.read_message(answer(q, rcode=3).to_wire())) == "NXDOMAIN"
    assert wdns.answer_summary(wdns.read_message(answer(q).to_wire())) == "NOERROR (no answer)"


@pytest.mark.parametrize("wire", [
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a pointer to itself
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\xc0\x20\x00\x01\x00\x01",  # forwards
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 * 5,  # too long
    b"\x00\x01\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00",  # 256 questions
    b"\x00\x01\x01",
])
def test_what_is_not_dns_is_said_so(wire: bytes) -> None:
    assert wdns.read_message(wire) is None


# --- over UDP ------------------------------------------------------------------------------------

def test_udp_answers_pair_by_id_whatever_the_order() -> None:
    q1, q2, q3 = query("a.example.", ident=7), query("b.example.", "AAAA", ident=8), query("c.example.", ident=9)
    packets = [
        udp(q1, ts=0.000), udp(q2, ts=0.001),
        udp(answer(q2, "b.example. 60 IN AAAA 2001:db8::1"), False, ts=0.010),
        udp(answer(q1, "a.example. 60 IN A 192.0.2.7"), False, ts=0.020),
        udp(q3, ts=0.030), udp(q3, ts=1.030),  # asked again after a second
        udp(answer(q3, rcode=3), False, ts=1.040),
    ]
    expected = [
        ("AAAA b.example.", "NOERROR 2001:db8::1", "ok", None, ()),
        ("A a.example.", "NOERROR 192.0.2.7", "ok", None, ()),
        ("A c.example.", "NXDOMAIN", "error", "NXDOMAIN", ()),
    ]
    events = run(packets)
    assert said(events) == expected
    txs = [e for e in events if isinstance(e, Transaction)]
    assert [t.connection for t in txs] == [0, 0, 0] and [t.index for t in txs] == [0, 1, 2]
    assert round(txs[0].duration, 6) == 0.009 and txs[0].response.size == len(
        answer(q2, "b.example. 60 IN AAAA 2001:db8::1").to_wire())
    [closed] = [e for e in events if isinstance(e, ConnectionClosed)]
    info = closed.info
    assert (info.client, info.server, info.protocol, info.transport, info.state, info.conn_state) == \
        ("10.1.0.1:40000", "10.1.0.53:53", "dns", "udp", "UDP", "SF")
    assert info.packets == (4, 3)
    # Every answer before its query (a capture merged from two taps): the same pairs.
    server_first = [p for p in packets if p[1][34:36] == b"\x00\x35"] + \
        [p for p in packets if p[1][34:36] != b"\x00\x35"]
    assert said(run(server_first, batch=1)) == expected  # in the answers' order, as before
    assert round([t for t in run(server_first) if isinstance(t, Transaction)
                  and t.request_summary == "A c.example."][0].duration, 6) == 1.01  # from the first copy


def test_unanswered_unasked_truncated_and_flows() -> None:
    q = query("big.example.", "TXT", ident=3)
    truncated = answer(q)
    truncated.flags |= dns.flags.TC
    orphan = answer(query("old.example.", ident=99), "old.example. 60 IN A 192.0.2.9")
    packets = [udp(q, ts=0), udp(truncated, False, ts=0.01), udp(query("lost.example.", ident=4), ts=0.02),
               udp(orphan, False, ts=0.03),
               udp(query("other.example.", ident=5), ts=0.04, client=("10.1.0.1", 40001))]
    got = said(run(packets))
    assert got == [
        ("TXT big.example.", "NOERROR (no answer) (truncated)", "ok", None,
         ("truncated: the client should ask again over TCP",)),
        (None, "NOERROR 192.0.2.9", "ok", None, ("its query was not seen (sent before the capture started?)",)),
        ("A lost.example.", None, None, None, ("no answer was seen",)),
        ("A other.example.", None, None, None, ("no answer was seen",)),
    ]
    # A flow idle for IDLE seconds ends (its unanswered query said then), a later one is new.
    events = run([udp(query("x.example.", ident=1), ts=0), udp(query("y.example.", ident=2), ts=wdns.IDLE + 5)], batch=1)
    closed = [e.info for e in events if isinstance(e, ConnectionClosed)]
    assert [(i.id, i.conn_state) for i in closed] == [(0, "S0"), (1, "S0")]


@given(st.binary(max_size=300), st.sampled_from([53, 5353, 9999]))
@settings(max_examples=300, deadline=None)
def test_any_udp_payload_is_read_without_failing(junk: bytes, port: int) -> None:
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=33333, dport=port) / Raw(junk)
    for t in run([(1.0, bytes(pkt)), udp(query("a.example."), ts=0.5)]):
        if isinstance(t, Transaction):
            assert t.protocol == "dns"


def test_other_udp_is_not_dns() -> None:
    ntp = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=123, dport=123) / Raw(b"\x23" + b"\x00" * 47)
    quic = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=50000, dport=443) / Raw(b"\xc3" + bytes(range(200)))
    events = run([(1.0, bytes(ntp)), (1.1, bytes(quic))])
    assert not [e for e in events if isinstance(e, (Transaction, ConnectionClosed))]


# --- over TCP ------------------------------------------------------------------------------------

def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return len(wire).to_bytes(2, "big") + wire


TQ1, TQ2 = query("zone.example.", "SOA", ident=11), query("axfr.example.", "MX", ident=12)
TCP_SCRIPT = [
    ("c", framed(TQ1) + framed(TQ2)),  # pipelined
    ("s", framed(answer(TQ2, "axfr.example. 60 IN MX 10 mail.example.")) +  # out of order
     framed(answer(TQ1, rcode=2))),
    ("c-fin",),
]
TCP_EXPECTED = [
    ("MX axfr.example.", "NOERROR 10 mail.example.", "ok", None, ()),
    ("SOA zone.example.", "SERVFAIL", "error", "SERVFAIL", ()),
]


def test_tcp_pairs_by_id_in_every_interleaving_and_segmentation() -> None:
    client, server = build(TCP_SCRIPT)
    assert said(run(causal(client, server))) == TCP_EXPECTED
    for n, packets in enumerate(interleavings(client, server, limit=30)):
        assert said(run(packets, batch=1 + n % 5)) == TCP_EXPECTED
    for mss in (1, 2, 3, 7, 64):
        assert said(run(causal(*build(TCP_SCRIPT, mss=mss)), batch=40)) == TCP_EXPECTED
    infos = [e.info for e in run(causal(client, server)) if isinstance(e, ConnectionClosed)]
    assert [(i.protocol, i.transport) for i in infos] == [("dns", "tcp")]


def test_tcp_resynchronises_after_a_gap() -> None:
    answers = [answer(query(f"n{i}.example.", ident=100 + i), f"n{i}.example. 60 IN A 192.0.2.{i}")
               for i in range(6)]
    script = [("c", b"".join(framed(query(f"n{i}.example.", ident=100 + i)) for i in range(6)))]
    script += [("s", framed(a)) for a in answers] + [("c-fin",)]
    client, server = build(script, mss=1460)
    # Drop the server's segment with the third answer: the fourth and later pair again.
    third = next(p for p in server if b"n2\x07example" in p[1])
    got = said(run(causal(client, [p for p in server if p is not third])))
    assert [g[0] for g in got if g[1] is not None] == \
        ["A n0.example.", "A n1.example.", "A n3.example.", "A n4.example.", "A n5.example."]
    [lost] = [g for g in got if g[1] is None]
    assert lost[0] == "A n2.example." and "server bytes were not captured" in lost[4][0]
    # A cut inside a message, not at its boundary: the rest is looked through.
    cuts = {i: [7] for i in range(1, 7)}
    client, server = build(script, cuts=cuts)
    second = [p for p in server if len(p[1]) > 60][2]  # the first part of the second answer
    got = said(run(causal(client, [p for p in server if p is not second])))
    assert [g[0] for g in got if g[1] is not None][-4:] == \
        ["A n2.example.", "A n3.example.", "A n4.example.", "A n5.example."]


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_tcp_bytes_after_a_query_are_read_without_failing(junk: bytes) -> None:
    script = [("c", framed(TQ1) + junk), ("s", junk + framed(answer(TQ1))), ("c-fin",)]
    for t in run(causal(*build(script, mss=50))):
        if isinstance(t, Transaction):
            assert t.protocol == "dns"


def test_detection_over_tcp() -> None:
    assert wdns.query_start(framed(TQ1)) is True
    assert wdns.query_start(framed(TQ1)[:10]) is None and wdns.query_start(b"\x00") is None
    assert wdns.query_start(framed(answer(TQ1))) is False
    assert wdns.query_start(b"GET / HTTP/1.1\r\n") is False
    assert wdns.query_start(b"\x00\x00\x00\x08\x04\xd2\x16\x2f") is False  # a PostgreSQL SSLRequest


# --- the command line -----------------------------------------------------------------------------

def test_records_and_jobs(tmp_path: Path) -> None:
    packets = []
    for i in range(40):  # flows from many ports, so that two jobs share them
        q = query(f"h{i}.example.", ident=i)
        packets += [udp(q, ts=i * 0.01, client=("10.1.0.1", 41000 + i)),
                    udp(answer(q, f"h{i}.example. 60 IN A 192.0.2.{i}"), False, ts=i * 0.01 + 0.002,
                        client=("10.1.0.1", 41000 + i))]
    path = tmp_path / "dns.pcap"
    write_pcap(path, packets)
    outputs = []
    for jobs in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--json", "--jobs", jobs],
                             capture_output=True, cwd=ROOT, check=True).stdout
        outputs.append(sorted(out.splitlines()))
    assert outputs[0] == outputs[1]
    records = [json.loads(line) for line in outputs[0]]
    txs = sorted((r for r in records if r["type"] == "transaction"), key=lambda r: r["connection"])
    assert len(txs) == 40 and txs[5]["request"]["summary"] == "A h5.example."
    assert txs[5]["response"]["summary"] == "NOERROR 192.0.2.5" and txs[5]["client"] == "10.1.0.1:41005"
    conns = {r["id"]: r for r in records if r["type"] == "connection"}
    assert conns[5]["transport"] == "udp" and conns[5]["community_id"] == txs[5]["community_id"]
    # The Community ID of a UDP flow is that of protocol 17.
    assert conns[5]["community_id"] == wdns_community("10.1.0.1", 41005)
    out = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--json", "--where",
                          "proto = dns and path ~ h1[0-9]"], capture_output=True, cwd=ROOT, check=True).stdout
    assert len([line for line in out.splitlines() if b'"transaction"' in line]) == 10


def wdns_community(client: str, port: int) -> str:
    from engine.communityid import community_id

    return community_id(socket.inet_aton(client), socket.inet_aton(SERVER[0]), 17, port, 53)


# --- a real server --------------------------------------------------------------------------------

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")
@pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed (Debian: dnsmasq-base)")
def test_a_real_server_over_udp_and_tcp(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                               f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                               "--user=root", "--pid-file=" + str(tmp_path / "pid"),
                               "--address=/web.test/192.0.2.80", "--host-record=db.test,192.0.2.5,2001:db8::5",
                               "--mx-host=test,mail.test,10", "--local=/test/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    err = tmp_path / "err"
    capture = None
    try:
        for _ in range(100):
            try:
                dns.query.udp(query("db.test."), "127.0.0.1", port=port, timeout=0.2)
                break
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        capture = json_capture(f"port {port}", err, 4)
        wait_capturing(capture, err)
        r = dns.query.udp(query("db.test.", "A", 21), "127.0.0.1", port=port, timeout=2)
        assert [str(rd) for rd in r.answer[0]] == ["192.0.2.5"]
        r = dns.query.udp(query("db.test.", "AAAA", 22), "127.0.0.1", port=port, timeout=2)
        r = dns.query.udp(query("nothing.test.", "A", 23), "127.0.0.1", port=port, timeout=2)
        assert r.rcode() == dns.rcode.NXDOMAIN
        r = dns.query.tcp(query("web.test.", "A", 24), "127.0.0.1", port=port, timeout=2)
        assert [str(rd) for rd in r.answer[0]] == ["192.0.2.80"]
        r = dns.query.tcp(query("test.", "MX", 25), "127.0.0.1", port=port, timeout=2)
        out, _ = capture.communicate(timeout=30)
    finally:
        if capture is not None:
            capture.kill()
        server.terminate()
        server.wait(timeout=10)
    records = [json.loads(line) for line in out.splitlines()]
    txs = {r["request"]["summary"]: r for r in records if r["type"] == "transaction"}
    assert txs["A db.test."]["response"]["summary"] == "NOERROR 192.0.2.5"
    assert txs["AAAA db.test."]["response"]["summary"] == "NOERROR 2001:db8::5"
    assert txs["A nothing.test."]["status"] == "error" and txs["A nothing.test."]["error"] == "NXDOMAIN"
    assert txs["A web.test."]["response"]["summary"] == "NOERROR 192.0.2.80"
    assert txs["MX test."]["response"]["summary"] == "NOERROR 10 mail.test."
    assert all(r["duration"] is not None and r["duration"] < 1 for r in txs.values())
    conns = {r["id"]: r for r in records if r["type"] == "connection"}
    assert conns[txs["A db.test."]["connection"]].get("transport") == "udp"
    assert "transport" not in conns[txs["A web.test."]["connection"]]  # TCP: the default
    assert {c["protocol"] for c in conns.values()} == {"dns"}


def test_ecs_says_udp(tmp_path: Path) -> None:
    q = query("a.example.", ident=1)
    path = tmp_path / "dns.pcap"
    write_pcap(path, [udp(q), udp(answer(q, "a.example. 60 IN A 192.0.2.1"), False, ts=0.001)])
    out = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--json", "--schema", "ecs"],
                         capture_output=True, cwd=ROOT, check=True).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["network"]["transport"], r["network"]["iana_number"]) for r in records] == [("udp", "17")] * 2
    assert records[0]["event"]["dataset"] == "wirepeek.dns"


def test_follow_says_a_udp_flow_has_no_stream(tmp_path: Path) -> None:
    path = tmp_path / "dns.pcap"
    write_pcap(path, [udp(query("a.example."))])
    done = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--follow", "0"],
                          capture_output=True, cwd=ROOT)
    assert done.returncode == 1 and done.stdout == b""
    assert b"connection 0 is DNS over UDP (10.1.0.1:40000 10.1.0.53:53)" in done.stderr
    done = subprocess.run([sys.executable, "-m", "tui.cli", "-r", str(path), "--follow", "0", "--stream", "1"],
                          capture_output=True, cwd=ROOT)
    assert done.returncode == 1 and b"connection 0 is DNS over UDP" in done.stderr


def test_a_flows_packets_are_picked_by_its_key_and_numbers() -> None:
    from engine.sources import packets_in_spans
    from engine.tcp import endpoints_key

    q = query("a.example.", ident=1)
    packets = [udp(q), udp(query("b.example.", ident=2), client=("10.1.0.1", 40001)),
               udp(answer(q, "a.example. 60 IN A 192.0.2.1"), False, ts=0.001)]
    events = run(packets, batch=10)
    info = next(e.info for e in events if isinstance(e, ConnectionClosed) and e.info.client.endswith(":40000"))
    assert (info.first_packet, info.last_packet) == (0, 2)
    wanted = {endpoints_key(info.client, info.server): [(info.first_packet, info.last_packet)]}
    found = packets_in_spans([(0, Batch.from_packets(1, packets))], wanted)
    assert [n for n, _ in found] == [0, 2]
