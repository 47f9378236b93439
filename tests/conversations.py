"""TCP conversations built with scapy in causal order, to be captured in any interleaving.

A script says who sends what, in the order it really happened: ("c", bytes) the client sends,
("s", bytes) the server sends, ("c-fin",) / ("s-fin",) one side closes. `build` turns it into the
packets each side sent, with sequence and acknowledgment numbers as TCP would have them: every
segment acknowledges all that the other side had sent before it (delivery is immediate), and a
side that receives data and has nothing to send at once answers with a pure ACK. Each packet keeps
the time at which it was sent (1 ms apart), whatever order a capture later shows it in.

`interleavings` gives orders of the two sides' packets that keep each side's own order, as a
capture on a multi-queue NIC, on the `any` device or merged from two taps may show them: the
causal order, the two extremes (every client packet first, every server packet first), and all
the others (or a seeded sample of them when there are too many).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from engine.batch import Batch
from engine.bounds import Bounds
from engine.events import HttpTransaction, Transaction
from engine.pipeline import Pipeline

Packet = tuple[float, bytes]
Script = Sequence[tuple]

CLIENT = ("10.1.0.1", 43210)
SERVER = ("10.1.0.2", 8080)
CLIENT6 = ("fd00:1::1", 43210)
SERVER6 = ("fd00:1::2", 8080)
START = 1_700_000_000.0


def build(
    script: Script, mss: int = 1460, cuts: dict[int, list[int]] | None = None,
    acks: bool = True, ipv6: bool = False, port: int | None = None,
) -> tuple[list[Packet], list[Packet]]:
    """The client's and the server's packets for a script (handshake first).

    mss splits each send into segments; cuts[i] gives explicit cut points for step i instead.
    acks: answer data with a pure ACK when the receiver does not send next. ipv6: between
    CLIENT6 and SERVER6 instead of the IPv4 addresses. port: the server's, instead of 8080.
    """
    client_end, server_end = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)
    if port is not None:
        server_end = (server_end[0], port)
    network = IPv6 if ipv6 else IP
    cisn, sisn = 1_000_000, 3_000_000_000  # the server's numbers wrap past 2**32
    sent = {True: 0, False: 0}  # stream bytes each side sent
    fin = {True: False, False: False}
    out: dict[bool, list[Packet]] = {True: [], False: []}
    clock = [START]

    def emit(from_client: bool, flags: str, payload: bytes = b"", syn: bool = False) -> None:
        src, dst = (client_end, server_end) if from_client else (server_end, client_end)
        isn, peer_isn = (cisn, sisn) if from_client else (sisn, cisn)
        seq = (isn + (0 if syn else 1) + sent[from_client] + fin[from_client]) & 0xFFFFFFFF
        ack = (peer_isn + 1 + sent[not from_client] + fin[not from_client]) & 0xFFFFFFFF
        layer = TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, window=65535)
        if "A" in flags:
            layer.ack = ack
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / network(src=src[0], dst=dst[0])
        pkt = pkt / layer
        if payload:
            pkt = pkt / Raw(payload)
        clock[0] += 0.001
        out[from_client].append((round(clock[0], 6), bytes(pkt)))

    emit(True, "S", syn=True)
    emit(False, "SA", syn=True)
    emit(True, "A")
    for i, step in enumerate(script):
        who = step[0]
        from_client = who.startswith("c")
        if who.endswith("-fin"):
            emit(from_client, "FA")
            fin[from_client] = True
        else:
            data = step[1]
            points = cuts.get(i) if cuts and i in cuts else list(range(mss, len(data), mss))
            bounds = [0, *sorted(p for p in points if 0 < p < len(data)), len(data)]
            for a, b in itertools.pairwise(bounds):
                emit(from_client, "PA", data[a:b])
                sent[from_client] += b - a
        following = script[i + 1][0] if i + 1 < len(script) else None
        if acks and (following is None or following.startswith("c") == from_client):
            if not fin[not from_client]:
                emit(not from_client, "A")  # the receiver acknowledges and says nothing
    if fin[True] != fin[False]:
        closer = fin[True]
        emit(not closer, "FA")
        fin[not closer] = True
        emit(closer, "A")
    return out[True], out[False]


def since(packets: list[Packet], ts: float) -> list[Packet]:
    """The packets sent at or after ts: what a capture started then shows of a connection."""
    return [p for p in packets if p[0] >= ts]


def causal(client: list[Packet], server: list[Packet]) -> list[Packet]:
    """The two sides' packets in the order they were sent."""
    return sorted(client + server, key=lambda p: p[0])


def interleavings(
    client: list[Packet], server: list[Packet], limit: int = 500, seed: int = 0
) -> Iterator[list[Packet]]:
    """Orders of the two sides' packets that keep each side's own order (see the module)."""
    n, m = len(client), len(server)
    yield causal(client, server)
    yield client + server
    yield server + client
    if math.comb(n + m, n) <= limit:
        chosen: Iterator[tuple[int, ...]] = itertools.combinations(range(n + m), n)
    else:
        rng = random.Random(seed)
        chosen = (tuple(sorted(rng.sample(range(n + m), n))) for _ in range(limit))
    for positions in chosen:
        at = set(positions)
        ci, si = iter(client), iter(server)
        yield [next(ci) if k in at else next(si) for k in range(n + m)]


def http_records(
    packets: list[Packet], batch: int = 7, bounds: Bounds | None = None
) -> list[HttpTransaction]:
    """The HTTP transactions the pipeline finds in a capture of these packets, by index."""
    pipeline = Pipeline(bounds)
    events = []
    for i in range(0, len(packets), batch):
        events += pipeline.feed(Batch.from_packets(1, packets[i : i + batch]))
    events += pipeline.finish()
    found = [e for e in events if isinstance(e, HttpTransaction)]
    return sorted(found, key=lambda t: (t.connection, t.index))


def transactions(packets: list[Packet], batch: int = 5) -> list[Transaction]:
    """The transactions (Redis, PostgreSQL, MySQL, DNS) the pipeline finds in these packets,
    fed `batch` packets at a time."""
    pipeline = Pipeline()
    events = []
    for i in range(0, len(packets), batch):
        events += pipeline.feed(Batch.from_packets(1, packets[i : i + batch]))
    events += pipeline.finish()
    return [e for e in events if isinstance(e, Transaction)]


def summary(txs: list[Transaction]) -> list[tuple]:
    """(request summary, response summary, status) of each."""
    return [(t.request_summary, t.response_summary, t.status) for t in txs]
