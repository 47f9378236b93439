"""Reassembly: every byte once, in order, whatever the order, duplicates, overlaps and wraps."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bounds import Bounds
from engine.tcp import RESENT_COST, Resent
from tests.feeding import feed, handshake, segments_of

C_ISN, S_ISN = 1000, 5000
C0, S0 = C_ISN + 1, S_ISN + 1  # sequence numbers of the first data bytes
REQ = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def close(c_end: int, s_end: int) -> list:
    return [
        (True, "FA", c_end, s_end, b""),
        (False, "FA", s_end, c_end + 1, b""),
        (True, "A", c_end + 1, s_end + 1, b""),
    ]


def test_plain_exchange_is_exact_and_closes():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ),
        (False, "A", S0, C0 + len(REQ), b""),
        (False, "PA", S0, C0 + len(REQ), RESP),
        (True, "A", C0 + len(REQ), S0 + len(RESP), b""),
        *close(C0 + len(REQ), S0 + len(RESP)),
    ]
    fed = feed(segs)
    assert fed.stream(True) == REQ
    assert fed.stream(False) == RESP
    info = fed.info()
    assert (info.state, info.conn_state, info.history) == ("CLOSED", "SF", "ShADadFf")
    assert info.bytes == (len(REQ), len(RESP))
    assert info.missing_bytes == (0, 0)
    assert info.protocol == "http"
    assert not info.direction_guessed
    assert (info.client, info.server) == ("10.0.0.1:40000", "10.0.0.2:80")


# (name, segments after the handshake, expected client stream, retransmitted, inconsistent)
CASES = [
    ("reordered", [(True, "PA", C0 + 10, 0, REQ[10:]), (True, "PA", C0, 0, REQ[:10])], REQ, 0, 0),
    ("duplicate", [(True, "PA", C0, 0, REQ), (True, "PA", C0, 0, REQ)], REQ, len(REQ), 0),
    (
        "overlap trimmed",
        [(True, "PA", C0, 0, REQ[:20]), (True, "PA", C0 + 10, 0, REQ[10:])],
        REQ, 10, 0,
    ),
    (
        "first data wins on conflicting overlap",
        [(True, "PA", C0, 0, REQ[:20]), (True, "PA", C0 + 10, 0, b"X" * 10 + REQ[20:])],
        REQ, 10, 1,
    ),
    (
        "first buffered data wins",
        [
            (True, "PA", C0 + 20, 0, REQ[20:]),
            (True, "PA", C0 + 15, 0, b"Y" * 10 + REQ[25:30]),
            (True, "PA", C0, 0, REQ[:20]),
        ],
        REQ, 0, 1,
    ),
    (
        "keep-alive probe is not a retransmission",
        [(True, "PA", C0, 0, REQ), (True, "A", C0 + len(REQ) - 1, 0, b"\x00")],
        REQ, 0, 0,
    ),
    (
        "zero-window probe then the full segment",
        [(True, "PA", C0, 0, REQ[:1]), (True, "PA", C0, 0, REQ)],
        REQ, 1, 0,
    ),
    (
        "segment covering two buffered ones",
        [
            (True, "PA", C0 + 30, 0, REQ[30:]),
            (True, "PA", C0 + 10, 0, REQ[10:20]),
            (True, "PA", C0, 0, REQ),
        ],
        REQ, 0, 0,
    ),
]


@pytest.mark.parametrize("name,segs,expected,retrans,inconsistent", CASES, ids=[c[0] for c in CASES])
def test_reassembly_cases(name, segs, expected, retrans, inconsistent):
    fed = feed(handshake(C_ISN, S_ISN) + segs)
    assert fed.stream(True) == expected
    info = fed.info()
    assert info.retransmitted_bytes[0] == retrans
    assert info.inconsistent_retransmissions == inconsistent
    assert info.missing_bytes == (0, 0)
    assert fed.gaps() == []


@pytest.mark.parametrize("isn", [0xFFFFFFFF - 5, 0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF])
def test_sequence_wraparound(isn):
    data = bytes(range(256)) * 4
    segs = handshake(isn, 0xFFFFFFFE) + segments_of(data, isn + 1, list(range(0, len(data), 100)), ack=0xFFFFFFFF)
    segs[3:] = reversed(segs[3:])  # and out of order across the wrap
    fed = feed(segs)
    assert fed.stream(True) == data
    assert fed.info().missing_bytes == (0, 0)


def test_stream_longer_than_4_gib():
    chunk = b"z" * (1 << 20)
    count = 4 * 1024 + 10  # 4 GiB + 10 MiB, so sequence numbers wrap more than once... once at least
    segs = handshake(0xFFFF0000)
    segs += [(True, "PA", 0xFFFF0001 + i * len(chunk), 0, chunk) for i in range(count)]
    fed = feed(segs, bounds=Bounds(keep_stream_bytes=0), finish=True)
    info = fed.info()
    assert info.bytes[0] == count * len(chunk)
    assert info.missing_bytes == (0, 0)
    assert info.retransmitted_bytes == (0, 0)


def test_data_on_syn_is_delivered():
    segs = [
        (True, "S", C_ISN, 0, REQ),
        (False, "SA", S_ISN, C_ISN + 1 + len(REQ), b""),
        (True, "A", C_ISN + 1 + len(REQ), S0, b""),
    ]
    fed = feed(segs)
    assert fed.stream(True) == REQ


def test_hole_acked_by_peer_twice_becomes_gap():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:]),
        (False, "A", S0, C0 + len(REQ), b""),  # the server got everything
        (False, "A", S0, C0 + len(REQ), b""),  # and says so again: the bytes were not captured
    ]
    fed = feed(segs[:-1], finish=False)
    assert fed.stream(True) == REQ[:10] and not fed.gaps()
    fed = feed(segs, finish=False)
    assert fed.stream(True) == REQ[:10] + REQ[20:]
    [gap] = fed.gaps()
    assert (gap.from_client, gap.offset, gap.size, gap.reason) == (True, 10, 10, "acked")
    assert fed.recorders[0].gaps[True] == [10]


def test_hole_acked_once_becomes_gap_after_the_reorder_window():
    window = Bounds().reorder_window
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:30]),
        (False, "A", S0, C0 + 30, b""),
        (True, "PA", C0 + 30, S0, REQ[30:]),  # the client goes on, a window later
    ]
    fed = feed(segs, finish=False, times={len(segs) - 1: 1.0 + window})
    assert fed.stream(True) == REQ[:10] + REQ[20:]
    assert [(g.size, g.reason) for g in fed.gaps()] == [(10, "acked")]


def test_hole_acked_before_its_bytes_were_captured_fills_when_they_come():
    """The capture showed the server's acknowledgment before the segment it covers (the order
    between directions is not causal): the bytes are delivered, nothing is missing."""
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:]),
        (False, "A", S0, C0 + len(REQ), b""),
        (True, "PA", C0 + 10, S0, REQ[10:20]),
    ]
    fed = feed(segs)
    assert fed.stream(True) == REQ
    assert not fed.gaps() and fed.info().missing_bytes == (0, 0)


def test_hole_acked_is_skipped_at_once_with_no_reorder_window():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:]),
        (False, "A", S0, C0 + len(REQ), b""),
    ]
    fed = feed(segs, Bounds(reorder_window=0.0), finish=False)
    assert fed.stream(True) == REQ[:10] + REQ[20:]
    assert [(g.size, g.reason) for g in fed.gaps()] == [(10, "acked")]


def test_a_hole_the_peer_acknowledged_is_reported_acked_at_the_end():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:]),
        (False, "A", S0, C0 + len(REQ), b""),
    ]
    fed = feed(segs)
    assert [(g.size, g.reason) for g in fed.gaps()] == [(10, "acked")]


def test_a_fin_never_captured_but_acknowledged_is_no_missing_byte():
    answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    segs = handshake() + [
        (True, "PA", C0, S0, REQ),
        (False, "PA", S0, C0 + len(REQ), answer),
        # the client's FIN was lost; the server acknowledges it and closes
        (False, "FA", S0 + len(answer), C0 + len(REQ) + 1, b""),
        (True, "A", C0 + len(REQ) + 1, S0 + len(answer) + 1, b""),
    ]
    fed = feed(segs)
    assert fed.info().missing_bytes == (0, 0)
    assert not fed.gaps()
    # One more byte than that acknowledged is a byte, though: it cannot be a FIN alone.
    segs[-2] = (False, "FA", S0 + len(answer), C0 + len(REQ) + 2, b"")
    assert feed(segs).info().missing_bytes == (2, 0)


def test_unfilled_hole_reported_at_end():
    segs = handshake() + [(True, "PA", C0, S0, REQ[:10]), (True, "PA", C0 + 20, S0, REQ[20:])]
    fed = feed(segs)
    assert fed.stream(True) == REQ[:10] + REQ[20:]
    assert [(g.size, g.reason) for g in fed.gaps()] == [(10, "end")]
    assert fed.info().missing_bytes == (10, 0)
    assert "G" in fed.info().history


def test_trailing_bytes_acked_but_never_seen_are_missing():
    segs = handshake() + [(True, "PA", C0, S0, REQ), (False, "A", S0, C0 + len(REQ) + 50, b"")]
    fed = feed(segs)
    assert fed.info().missing_bytes == (50, 0)


def test_bytes_before_fin_never_seen_are_missing():
    segs = handshake() + [(True, "PA", C0, S0, REQ[:10]), (True, "FA", C0 + len(REQ), S0, b"")]
    fed = feed(segs)
    assert fed.info().missing_bytes == (len(REQ) - 10, 0)
    assert fed.info().bytes == (10, 0)


def test_out_of_order_buffer_is_bounded():
    data = bytes(1000)
    segs = handshake() + segments_of(data, C0 + 100, list(range(0, 1000, 100)))
    fed = feed(segs, bounds=Bounds(max_ooo_bytes=500), finish=False)
    gaps = fed.gaps()
    assert gaps and gaps[0].reason == "buffer" and gaps[0].size == 100
    assert fed.table.by_key  # still tracked
    half = next(iter(fed.table.lru.values())).client
    assert half.ooo_bytes <= 500


def test_rst_flushes_holes_and_resets():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:]),
        (False, "R", S0, 0, b""),
    ]
    fed = feed(segs, finish=False)
    assert [(g.size, g.reason) for g in fed.gaps()] == [(10, "close")]
    assert fed.stream(True) == REQ[:10] + REQ[20:]
    conn = fed.table.connection(0)
    assert conn is not None and conn.state.value == "RESET" and conn.conn_state() == "RSTR"


def test_rejected_connection():
    fed = feed([(True, "S", C_ISN, 0, b""), (False, "RA", 0, C_ISN + 1, b"")])
    assert (fed.info().state, fed.info().conn_state) == ("RESET", "REJ")


def test_midstream_pickup_guesses_direction_from_ports():
    segs = [(False, "PA", S0, C0, RESP), (True, "A", C0, S0 + len(RESP), b"")]
    fed = feed(segs)
    info = fed.info()
    assert info.direction_guessed
    assert (info.client, info.server) == ("10.0.0.1:40000", "10.0.0.2:80")
    assert (info.state, info.conn_state) == ("MIDSTREAM", "OTH")
    assert fed.stream(False) == RESP
    assert info.protocol == "http"


def test_new_syn_after_close_opens_a_new_connection():
    first = handshake() + [(True, "PA", C0, S0, REQ), *close(C0 + len(REQ), S0)]
    second = handshake(90000, 70000) + [(True, "PA", 90001, 70001, b"second")]
    fed = feed(first + second)
    assert [e.info.id for e in fed.closed()] == [0, 1]
    assert fed.closed()[0].reason == "reused"
    assert fed.stream(True, 0) == REQ
    assert fed.stream(True, 1) == b"second"


def test_snaplen_cut_payload_is_reported_missing():
    segs = handshake() + [(True, "PA", C0, S0, REQ[:10]), (True, "PA", C0 + len(REQ), S0, b"tail")]
    fed = feed(segs, wire_lens={3: len(REQ)})
    assert fed.stream(True) == REQ[:10] + b"tail"
    assert [(g.offset, g.size, g.reason) for g in fed.gaps()] == [(10, len(REQ) - 10, "snaplen")]


@pytest.mark.parametrize("cut", range(1, len(REQ)))
def test_split_at_every_offset_in_both_orders(cut):
    for order in ((0, 1), (1, 0)):
        parts = segments_of(REQ, C0, [cut])
        fed = feed(handshake() + [parts[i] for i in order])
        assert fed.stream(True) == REQ


def test_every_order_of_four_segments():
    parts = segments_of(REQ, C0, [7, 19, 30])
    for perm in itertools.permutations(parts):
        assert feed(handshake() + list(perm)).stream(True) == REQ


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=2999), max_size=20),
    dups=st.lists(st.integers(min_value=0, max_value=20), max_size=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    isn=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_bytes_never_depend_on_arrival_order(data, cuts, dups, seed, isn):
    parts = segments_of(data, isn + 1, cuts)
    parts += [parts[i % len(parts)] for i in dups]
    # Overlapping resends of consistent bytes: any window of the data.
    rng = random.Random(seed)
    for _ in range(3):
        a = rng.randrange(len(data))
        b = rng.randrange(a, len(data)) + 1
        parts.append((True, "PA", isn + 1 + a, 0, data[a:b]))
    rng.shuffle(parts)
    fed = feed(handshake(isn, 77) + parts)
    assert fed.stream(True) == data
    info = fed.info()
    assert info.missing_bytes == (0, 0)
    assert info.inconsistent_retransmissions == 0


def test_each_direction_ends_once_at_its_fin():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ),
        (True, "FA", C0 + len(REQ), S0, b""),
        (False, "PA", S0, C0 + len(REQ) + 1, RESP),
    ]
    fed = feed(segs, finish=False)
    assert fed.recorders[0].ends == [True]  # the client's FIN came after all its bytes
    fed.table.finish_all(2000.0)
    assert fed.recorders[0].ends == [True, False]  # the end of the capture ends the other side


def test_fin_before_a_hole_ends_only_when_flushed():
    segs = handshake() + [(True, "PA", C0, S0, REQ[:10]), (True, "FA", C0 + len(REQ), S0, b"")]
    fed = feed(segs, finish=False)
    assert fed.recorders[0].ends == []
    fed.table.finish_all(2000.0)
    assert fed.recorders[0].ends[0] is True and fed.recorders[0].gaps[True] == [len(REQ) - 10]


def kept_entries(fed) -> list:  # type: ignore[no-untyped-def]
    return [(fc, off, data) for fc, _ts, off, data in fed.table.kept_since(0, 0).entries]


def test_the_follow_view_marks_resent_bytes_without_delivering_them():
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:20]),
        (True, "PA", C0, S0, REQ[:20]),  # resent whole, same bytes
        (True, "PA", C0 + 10, S0, b"X" * 10 + REQ[20:]),  # 10 old bytes that differ, then new
    ]
    fed = feed(segs, finish=False)
    assert kept_entries(fed) == [
        (True, 0, REQ[:20]),
        (True, 0, Resent(20, False)),
        (True, 10, Resent(10, True)),
        (True, 20, REQ[20:]),
    ]
    # The consumers got each byte once, the first copy.
    assert fed.stream(True) == REQ
    # Kept bytes count the bytes and a fixed cost per mark.
    assert fed.table.connection(0).kept_bytes == len(REQ) + 2 * RESENT_COST


def test_a_resend_of_bytes_no_longer_kept_cannot_be_compared():
    body = bytes(range(256)) * 8
    segs = handshake() + segments_of(body, C0, list(range(256, len(body), 256)))
    segs.append((True, "PA", C0, S0, body[:256]))  # the first 256 bytes were trimmed
    fed = feed(segs, bounds=Bounds(keep_stream_bytes=1024), finish=False)
    assert kept_entries(fed)[-1] == (True, 0, Resent(256, None))
    assert fed.table.connection(0).inconsistent == 0


def test_a_flood_of_duplicates_stays_within_the_keep_bound():
    keep = 64 * 1024
    segs = handshake() + [(True, "PA", C0, S0, REQ)] * 20_000
    fed = feed(segs, bounds=Bounds(keep_stream_bytes=keep), finish=False)
    conn = fed.table.connection(0)
    assert conn.kept_bytes <= keep + keep // 8
    assert len(conn.kept) <= (keep + keep // 8) // RESENT_COST + 1
    assert fed.table.memory < 2 * keep
    # The trimmed marks are not counted as dropped stream bytes: only the request was.
    assert conn.dropped_kept == len(REQ)
    assert fed.stream(True) == REQ


def test_an_acknowledged_hole_becomes_a_gap_when_time_passes_without_packets():
    """Live, the capture may go quiet after a loss: the wall clock (Pipeline.flush) moves the
    hole on, so what follows it is not held until the next packet."""
    segs = handshake() + [
        (True, "PA", C0, S0, REQ[:10]),
        (True, "PA", C0 + 20, S0, REQ[20:]),
        (False, "A", S0, C0 + len(REQ), b""),
    ]
    fed = feed(segs, finish=False)
    assert fed.stream(True) == REQ[:10]
    fed.table.expire(1000.0 + 1.0)  # the segments came at about 1000.006 s
    assert fed.stream(True) == REQ[:10] + REQ[20:]
    assert [(g.size, g.reason) for g in fed.table.take_events() if type(g).__name__ == "Gap"] == [
        (10, "acked")]
    assert not fed.table.buffering


def test_payloads_cut_by_the_snapshot_length_are_counted():
    fed = feed(handshake() + [(True, "PA", C0, S0, REQ[:10])], wire_lens={3: len(REQ)})
    assert fed.table.cut == 1
