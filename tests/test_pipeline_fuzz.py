"""Random and mutated packets never raise out of the pipeline, and bounds hold."""

from __future__ import annotations

import random
from pathlib import Path

import pcapy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.batch import Batch
from engine.bounds import Bounds
from engine.decode import SUPPORTED_LINKTYPES
from engine.pipeline import Pipeline

PCAPS = Path(__file__).parent / "data" / "pcaps"


def capture(name: str) -> str:
    return str(PCAPS / name)


def _frames(name: str) -> tuple[int, list[bytes]]:
    handle = pcapy.open_offline(capture(name))
    frames = []
    while True:
        hdr, data = handle.next()
        if hdr is None:
            break
        frames.append(data)
    return handle.datalink(), frames


SEEDS = [_frames(n) for n in (
    "zeek/http__get.pcap",
    "arkime/socks5-http-302-frag.pcap",
    "zeek/ipv6-http-atomic-frag.pcap",
    "zeek/http-qinq-0.pcap",
    "suricata-verify/bug-4810__pppoe-session-http.pcap",
    "zeek/nflog-http.pcap",
)]


def _run(linktype: int, frames: list[bytes]) -> Pipeline:
    pipeline = Pipeline(Bounds(max_connections=50, memory_budget=1 << 20))
    packets = [(1000.0 + i * 0.01, f) for i, f in enumerate(frames)]
    for i in range(0, len(packets), 7):
        pipeline.feed(Batch.from_packets(linktype, packets[i : i + 7]))
    pipeline.finish()
    assert pipeline.stats().memory_used == 0
    return pipeline


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    linktype=st.sampled_from(sorted(SUPPORTED_LINKTYPES) + [9999]),
    frames=st.lists(st.binary(max_size=200), max_size=30),
)
def test_random_bytes_never_raise(linktype, frames):
    _run(linktype, frames)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(SEEDS) - 1), seed=st.integers(0, 2**32 - 1))
def test_mutated_real_packets_never_raise(which, seed):
    rng = random.Random(seed)
    linktype, frames = SEEDS[which]
    mutated = []
    for frame in frames:
        f = bytearray(frame)
        for _ in range(rng.randrange(4)):
            action = rng.randrange(3)
            if action == 0 and f:
                f[rng.randrange(len(f))] = rng.randrange(256)
            elif action == 1 and f:
                del f[rng.randrange(len(f)) :]
            else:
                f[rng.randrange(len(f) + 1) : 0] = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
        mutated.append(bytes(f))
    rng.shuffle(mutated)
    _run(linktype, mutated)
