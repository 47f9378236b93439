"""The processes that share a file's connections (tui.sharded): when the reader of the records
goes away (`wirepeek -r big.pcap --json | head`), they are stopped at once, not waited for."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.bounds import Bounds
from tui import sharded


def endless_worker(paths: list[str], bpf: str, count: int | None, bounds: Bounds,
                   shard: tuple[int, int], out: Any, *rest: Any) -> None:
    """A worker with a long file ahead of it: one record, then it is busy for a minute."""
    out.send(([0], [("connection", 0, b"}")], False, None))
    time.sleep(60)


class GoneReader:
    def write(self, data: bytes) -> int:
        raise BrokenPipeError("the reader went away")

    def flush(self) -> None:
        pass


def test_the_workers_are_stopped_when_the_reader_goes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharded, "_worker", endless_worker)
    procs: list[Any] = []
    real_process = sharded.multiprocessing.get_context("fork").Process

    class Recorded(real_process):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            procs.append(self)
            super().start()

    monkeypatch.setattr(sharded.multiprocessing.get_context("fork"), "Process", Recorded)
    started = time.monotonic()
    with pytest.raises(BrokenPipeError):
        sharded.json_records_sharded(["unused.pcap"], "", None, Bounds(), 2, out=GoneReader())
    # Stopped, not joined: a join would have waited up to 5 s for each (the old behaviour kept
    # `| head` waiting 10 s on a large file).
    assert time.monotonic() - started < 4
    assert len(procs) == 2
    for proc in procs:
        proc.join(timeout=5)
        assert not proc.is_alive()


def _handshake(i: int) -> list[tuple[float, bytes]]:
    """SYN, then SYN-ACK: both directions of connection i."""
    from tests.synth import ether, ipv4, tcp

    client, server = f"10.1.{i >> 8 & 255}.{i & 255}", "192.0.2.80"
    port = 1024 + i * 7 % 60000
    return [
        (1000.0 + i * 1e-4, ether(ipv4(client, server, 6, tcp(port, 80, i, 0, "S",
                                                               src_ip=client, dst_ip=server)))),
        (1000.0 + i * 1e-4 + 5e-5, ether(ipv4(server, client, 6, tcp(80, port, 9 * i, i + 1, "SA",
                                                                      src_ip=server, dst_ip=client)))),
    ]


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_share_the_connections_each_whole(shards):
    """Each connection is in exactly one shard, both its directions there (the SYN-ACK finds
    the SYN's connection)."""
    from engine.batch import Batch
    from engine.pipeline import Pipeline

    packets = [p for i in range(300) for p in _handshake(i)]
    owners: dict[int, int] = {}
    for shard in range(shards):
        pipe = Pipeline(shard=(shard, shards))
        for start in range(0, len(packets), 64):
            pipe.feed(Batch.from_packets(1, packets[start:start + 64]))
        for conn in pipe.table.lru.values():
            assert conn.client.packets == conn.server.packets == 1  # the SYN and its SYN-ACK
            assert conn.client_key not in owners
            owners[conn.client_key] = shard
    assert len(owners) == 300
    assert all(len([k for k, s in owners.items() if s == shard]) > 300 / shards / 2
               for shard in range(shards))  # spread, not all in one


def test_the_hot_loops_shard_of_ipv4_is_the_shard_function():
    """The hot loop's machine-word shard of an IPv4 connection (_shard4) is _shard_of's, which
    the other paths (IPv6, tunnels, fragments, UDP) take: a connection whose packets take both
    paths stays in one shard. Edge values (all bits set, zero) and random ones, 2 to 7 shards."""
    import random

    from engine.pipeline import _shard4, _shard_of

    rng = random.Random(7)
    top = (1 << 32) - 1
    values = [(top, top, top), (0, 0, 0), (top, 0, 1), (0, top, top), (0x7F000001, 0x7F000001, 0)]
    values += [(rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(20000)]
    for src, dst, ports in values:
        for shards in range(2, 8):
            assert _shard4(src, dst, ports, shards) == _shard_of(src << 32 | dst, ports, shards)
