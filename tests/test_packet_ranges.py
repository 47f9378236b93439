"""Each connection knows the numbers of its first and last packets (ConnectionInfo.first_packet,
last_packet), so that its packets can be told from those of a connection that reused its ports."""

from __future__ import annotations

from collections import defaultdict

import pytest

from engine.batch import Batch
from engine.pipeline import Pipeline
from engine.tcp import endpoints_key, reverse_key
from tests.captures import all_captures, replay
from tests.conversations import build


def test_port_reuse_gives_each_connection_its_own_packet_numbers():
    result = replay("wirepeek/lo-port-reuse.pcap")
    infos = result.infos()
    # Two connections on the same four ports, one on another client port, one over IPv6.
    assert [(i.client, i.server) for i in infos] == [
        ("127.0.0.1:41234", "127.0.0.1:18765"), ("127.0.0.1:41234", "127.0.0.1:18765"),
        ("127.0.0.1:41235", "127.0.0.1:18765"), ("[::1]:41236", "[::1]:18766")]
    assert [(i.first_packet, i.last_packet) for i in infos] == [(0, 11), (12, 24), (25, 36), (37, 49)]
    for info in infos:  # nothing else came in between here
        assert info.last_packet - info.first_packet + 1 == sum(info.packets)


def test_last_packet_is_the_last_one_given_even_while_open():
    client, server = build([("c", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ("s", b"HTTP/1.1 204 No\r\n\r\n")])
    packets = sorted(client + server)
    other = build([("c", b"x")])[0][0]
    pipeline = Pipeline(live_updates=True)
    first = pipeline.feed(Batch.from_packets(1, packets[:3]))  # the handshake
    assert first[-1].info.last_packet == 2  # type: ignore[attr-defined]
    pipeline.feed(Batch.from_packets(1, [(other[0], b"\x00" * 60)]))  # not TCP: numbered all the same
    events = pipeline.feed(Batch.from_packets(1, packets[3:]))
    info = events[-1].info  # type: ignore[attr-defined]
    assert (info.first_packet, info.last_packet) == (0, len(packets))


@pytest.mark.parametrize("name", all_captures())
def test_ranges_of_the_same_ports_never_overlap(name):
    result = replay(name)
    total = result.pipeline.stats().packets
    by_ports = defaultdict(list)
    for info in result.infos():
        assert 0 <= info.first_packet <= info.last_packet < total
        key = endpoints_key(info.client, info.server)
        by_ports[min(key, reverse_key(key))].append((info.first_packet, info.last_packet))
    for spans in by_ports.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end < start


@pytest.mark.parametrize("name", all_captures())
def test_picking_by_spans_finds_what_the_general_decoder_finds(name):
    """packets_in_spans reads Ethernet/IPv4 keys without the general walk: the same packets."""
    from engine import sources
    from tests.captures import capture

    source = sources.open_files([capture(name)])
    batches = []
    number = 0
    while (batch := source.next_batch()) is not None:
        batches.append((number, batch))
        number += len(batch)
    source.close()
    keys = {endpoints_key(i.client, i.server) for i in replay(name).infos()}
    everything = {key: [(0, number)] for key in keys}
    picked = [p for _, p in sources.packets_in_spans(batches, everything)]
    assert picked == sources.packets_of_connections([b for _, b in batches], keys)
