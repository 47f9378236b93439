"""Community ID flow hashes against the specification's test vectors, in the records; and the
capture host as part of a connection's identity (several hosts, one view)."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from engine.batch import Batch
from engine.communityid import community_id, tcp_community_id
from engine.events import ConnectionClosed, HttpTransaction
from engine.filter import OpenConnections
from engine.pipeline import Pipeline
from engine.records import connection_record, http_record
from engine.tcp import HOST_SHIFT, key_endpoints, key_host, reverse_key
from tests.conversations import CLIENT, CLIENT6, SERVER, SERVER6, build, causal

VECTORS = Path(__file__).parent / "data" / "community-id"
REQUEST = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _vectors(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())


def _packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


@pytest.mark.parametrize(("name", "seed"), [("baseline_deflt.json", 0), ("baseline_seed1.json", 1)])
def test_every_vector_of_the_specification(name: str, seed: int) -> None:
    vectors = _vectors(name)
    assert len(vectors) == 23
    for v in vectors:
        got = community_id(
            _packed(v["saddr"]), _packed(v["daddr"]), v["proto"], v["sport"] or 0, v["dport"] or 0, seed
        )
        assert got == v["communityid"], v


def test_tcp_endpoints_as_records_write_them() -> None:
    assert tcp_community_id("128.232.110.120:34855", "66.35.250.204:80") == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert tcp_community_id("66.35.250.204:80", "128.232.110.120:34855") == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    v6 = "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943", "[2607:f8b0:400c:c03::1a]:25"
    assert tcp_community_id(*v6) == "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="


def _records(packets: list[tuple[float, bytes]], hosts: tuple[str, ...] = (), host: int = 0) -> list[dict]:
    opened = OpenConnections()
    pipeline = Pipeline(consumers={None: [opened.note]}, hosts=hosts)
    records = []
    for events in (pipeline.feed(replace(Batch.from_packets(1, packets), host=host)), pipeline.finish()):
        opened.batch(events)
        for e in events:
            if isinstance(e, ConnectionClosed):
                records.append(connection_record(e.info))
            elif isinstance(e, HttpTransaction):
                records.append(http_record(e, opened.flow(e.connection)))
    return records


@pytest.mark.parametrize("ipv6", [False, True])
def test_connection_and_exchange_records_carry_the_flows_id(ipv6: bool) -> None:
    packets = causal(*build([("c", REQUEST), ("s", RESPONSE), ("c-fin",)], ipv6=ipv6))
    [http, conn] = _records(packets)
    (ca, cp), (sa, sp) = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)
    expected = community_id(_packed(ca), _packed(sa), 6, cp, sp)
    assert conn["community_id"] == http["community_id"] == expected
    assert "host" not in conn and "host" not in http  # one capture: no host named


def test_the_same_flow_on_two_hosts_is_two_connections() -> None:
    """A connection seen on the load balancer and on the backend, or two hosts' loopback
    traffic on the same ports: the host is part of the key, the Community ID is the flow's."""
    packets = causal(*build([("c", REQUEST), ("s", RESPONSE), ("c-fin",)]))
    opened = OpenConnections()
    pipeline = Pipeline(consumers={None: [opened.note]}, hosts=("web1", "web2"))
    events = []
    for i in range(0, len(packets), 3):  # the two hosts' packets interleaved, batch by batch
        chunk = Batch.from_packets(1, packets[i : i + 3])
        events += pipeline.feed(replace(chunk, host=1)) + pipeline.feed(replace(chunk, host=2))
    events += pipeline.finish()
    closed = [e.info for e in events if isinstance(e, ConnectionClosed)]
    assert sorted(c.host for c in closed) == ["web1", "web2"]
    for info in closed:
        assert sum(info.packets) == len(packets) and info.bytes == (len(REQUEST), len(RESPONSE))
        assert info.retransmitted_bytes == (0, 0)  # not each other's retransmissions
        assert connection_record(info)["host"] == info.host
    exchanges = [e for e in events if isinstance(e, HttpTransaction)]
    assert len(exchanges) == 2 and all(t.response.status == 200 for t in exchanges)
    assert len({connection_record(c)["community_id"] for c in closed}) == 1


def test_keys_keep_their_host() -> None:
    key = (((0x0A010001 << 32) | 0x0A010002) << 32) | (43210 << 16) | 8080
    tagged = key | 7 << HOST_SHIFT
    assert key_host(tagged) == 7 and key_host(key) == 0
    assert key_host(reverse_key(tagged)) == 7 and reverse_key(reverse_key(tagged)) == tagged
    assert reverse_key(tagged) == reverse_key(key) | 7 << HOST_SHIFT
    assert key_endpoints(tagged) == key_endpoints(key) == ("10.1.0.1:43210", "10.1.0.2:8080")


def test_the_packets_of_a_connection_are_its_hosts_only() -> None:
    """The Packets tab and w pick a connection's packets by key and packet numbers: with the
    same flow on two hosts at once, each connection gets its own host's packets."""
    from tui.capture import PacketRing

    packets = causal(*build([("c", REQUEST), ("s", RESPONSE), ("c-fin",)]))
    pipeline = Pipeline(hosts=("web1", "web2"))
    ring = PacketRing(hosts=("web1", "web2"))
    events = []
    for i in range(0, len(packets), 3):
        for host in (1, 2):
            batch = replace(Batch.from_packets(1, packets[i : i + 3]), host=host)
            first = pipeline.packets
            events += pipeline.feed(batch)
            ring.add(batch, first)
    events += pipeline.finish()
    closed = {e.info.host: e.info for e in events if isinstance(e, ConnectionClosed)}
    for host in ("web1", "web2"):
        picked = ring.pick([closed[host]])
        assert picked.complete and len(picked.packets) == len(packets)
        assert [p.data for p in picked.packets] == [data for _, data in packets]
    both = ring.pick(list(closed.values()))
    assert len(both.packets) == 2 * len(packets)
