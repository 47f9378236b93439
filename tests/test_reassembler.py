"""engine.reassembly alone: one direction's segments in, what its sink is told out."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.reassembly import MAX_AHEAD, NO_ACK, SEQ_MASK, Reassembler

ISN = 0xFFFFFF00  # wraps past 2**32 within the first 256 bytes


@dataclass
class Sink:
    """Records everything, in order."""

    max_ooo: int = 1 << 20
    reorder_window: float = 0.5
    events: list[tuple] = field(default_factory=list)
    buffered_now: int = 0

    def delivered(self, r, ts, offset, data, ack):
        self.events.append(("data", ts, offset, bytes(data), ack))

    def missed(self, r, ts, offset, size, reason):
        self.events.append(("gap", offset, size, reason))

    def resent(self, r, ts, offset, size, data):
        self.events.append(("resent", offset, size, bytes(data)))

    def inconsistent(self, r):
        self.events.append(("inconsistent",))

    def ignored_segment(self, r):
        self.events.append(("ignored",))

    def buffered(self, r, change):
        self.buffered_now += change

    def complete(self, r, ts):
        self.events.append(("complete",))

    def stream(self) -> bytes:
        return b"".join(e[3] for e in self.events if e[0] == "data")

    def kinds(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


def start(sink: Sink | None = None) -> tuple[Reassembler, Sink]:
    sink = sink or Sink()
    r = Reassembler(sink)
    r.start_after(ISN)
    return r, sink


def seg(r: Reassembler, offset: int, data: bytes, ts: float = 1.0, ack: int = 7,
        wire: int | None = None) -> None:
    r.segment(ts, (ISN + 1 + offset) & SEQ_MASK, data, len(data) if wire is None else wire, ack)


DATA = bytes(range(256)) * 4


def test_in_order_segments_are_delivered_with_their_own_time_and_ack():
    r, sink = start()
    seg(r, 0, DATA[:100], ts=1.0, ack=11)
    seg(r, 100, DATA[100:300], ts=2.0, ack=12)
    assert sink.events == [("data", 1.0, 0, DATA[:100], 11), ("data", 2.0, 100, DATA[100:300], 12)]
    assert (r.offset, r.delivered, r.missing) == (300, 300, 0)


def test_out_of_order_bytes_wait_and_keep_their_segment_time_and_ack():
    r, sink = start()
    seg(r, 100, DATA[100:200], ts=1.0, ack=21)
    assert sink.events == [] and sink.buffered_now == 100
    seg(r, 0, DATA[:100], ts=2.0, ack=22)
    assert sink.events == [("data", 2.0, 0, DATA[:100], 22), ("data", 1.0, 100, DATA[100:200], 21)]
    assert sink.buffered_now == 0


def test_first_data_wins_and_a_differing_copy_is_reported():
    r, sink = start()
    seg(r, 10, b"abcdef")
    seg(r, 12, b"XYZWVU")  # overlaps the buffered bytes, differently, and goes past them
    seg(r, 0, DATA[:10])
    assert sink.stream() == DATA[:10] + b"abcdef" + b"VU"
    assert sink.kinds("inconsistent") == [("inconsistent",)]


def test_bytes_that_come_again_are_reported_resent_not_delivered():
    r, sink = start()
    seg(r, 0, DATA[:100])
    seg(r, 50, DATA[50:150])
    assert sink.stream() == DATA[:150]
    assert sink.kinds("resent") == [("resent", 50, 50, DATA[50:100])]
    assert r.retransmitted == 50


def test_a_keep_alive_probe_is_not_a_retransmission():
    r, sink = start()
    seg(r, 0, DATA[:100])
    seg(r, 99, DATA[99:100])
    assert sink.kinds("resent") == [] and r.retransmitted == 0


def test_a_segment_cut_by_the_snapshot_length_leaves_a_known_gap():
    r, sink = start()
    seg(r, 0, DATA[:30], wire=100)
    seg(r, 100, DATA[100:130], wire=100)
    assert sink.events[:2] == [("data", 1.0, 0, DATA[:30], 7), ("gap", 30, 70, "snaplen")]
    assert sink.kinds("gap") == [("gap", 30, 70, "snaplen"), ("gap", 130, 70, "snaplen")]
    assert r.missing == 140


def test_a_cut_segment_that_waited_out_of_order_also_leaves_a_snaplen_gap():
    r, sink = start()
    seg(r, 100, DATA[100:130], wire=100)
    seg(r, 0, DATA[:100])
    assert sink.stream() == DATA[:130]
    assert sink.kinds("gap") == [("gap", 130, 70, "snaplen")]


def test_an_acknowledged_hole_becomes_a_gap_at_the_second_ack_or_after_the_window():
    r, sink = start()
    seg(r, 0, DATA[:10], ts=1.0)
    seg(r, 20, DATA[20:30], ts=1.1)
    ack_past = (ISN + 1 + 30) & SEQ_MASK
    r.peer_acked(1.2, ack_past)
    assert sink.kinds("gap") == []
    r.peer_acked(1.21, ack_past)
    assert sink.kinds("gap") == [("gap", 10, 10, "acked")]
    assert sink.stream() == DATA[:10] + DATA[20:30]
    r, sink = start()
    seg(r, 0, DATA[:10], ts=1.0)
    seg(r, 20, DATA[20:30], ts=1.1)
    r.peer_acked(1.2, ack_past)
    seg(r, 30, DATA[30:40], ts=1.2 + 0.49)
    assert sink.kinds("gap") == []
    seg(r, 40, DATA[40:50], ts=1.2 + 0.5)
    assert sink.kinds("gap") == [("gap", 10, 10, "acked")]


def test_an_acknowledged_hole_that_fills_within_the_window_loses_nothing():
    r, sink = start()
    seg(r, 0, DATA[:10], ts=1.0)
    seg(r, 20, DATA[20:30], ts=1.1)
    r.peer_acked(1.2, (ISN + 1 + 30) & SEQ_MASK)
    seg(r, 10, DATA[10:20], ts=1.05)  # captured late
    r.peer_acked(5.0, (ISN + 1 + 30) & SEQ_MASK)
    r.peer_acked(5.1, (ISN + 1 + 30) & SEQ_MASK)
    assert sink.stream() == DATA[:30] and sink.kinds("gap") == []


def test_the_buffer_bound_skips_the_oldest_hole():
    r, sink = start(Sink(max_ooo=1000))
    for off in range(100, 1300, 100):
        seg(r, off, DATA[:100])
    assert sink.kinds("gap") == [("gap", 0, 100, "buffer")]
    assert r.ooo_bytes <= 1000


def test_data_too_far_ahead_is_ignored():
    r, sink = start()
    seg(r, MAX_AHEAD + 1, b"x")
    assert sink.events == [("ignored",)] and not r.ooo


def test_flush_turns_holes_and_acknowledged_tail_into_gaps():
    r, sink = start()
    seg(r, 0, DATA[:10])
    seg(r, 20, DATA[20:30])
    r.flush(9.0, "end", (ISN + 1 + 40) & SEQ_MASK)
    assert sink.kinds("gap") == [("gap", 10, 10, "acked"), ("gap", 30, 10, "end")]


def test_one_sequence_number_acknowledged_past_the_end_is_the_fin_not_a_byte():
    r, sink = start()
    seg(r, 0, DATA[:10])
    r.flush(9.0, "end", (ISN + 1 + 11) & SEQ_MASK)
    assert sink.kinds("gap") == [] and r.missing == 0
    r2, sink2 = start()
    seg(r2, 0, DATA[:10])
    r2.flush(9.0, "end", (ISN + 1 + 12) & SEQ_MASK)
    assert sink2.kinds("gap") == [("gap", 10, 2, "end")]


def test_the_fin_completes_the_stream_once_every_byte_before_it_is_in():
    r, sink = start()
    r.end_at(1.0, (ISN + 1 + 20) & SEQ_MASK, 0)
    seg(r, 10, DATA[10:20])
    assert sink.kinds("complete") == []
    seg(r, 0, DATA[:10])
    assert sink.kinds("complete") == [("complete",)]
    assert r.acked_offset((ISN + 1 + 21) & SEQ_MASK) == 20  # the FIN takes no stream byte


def test_no_ack_is_no_offset():
    r, _sink = start()
    assert r.acked_offset(NO_ACK) is None


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=600),
    cuts=st.lists(st.integers(1, 599), max_size=12),
    dups=st.lists(st.integers(0, 30), max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_bytes_and_their_segments_never_depend_on_order_splits_or_copies(data, cuts, dups, seed):
    """However the stream is cut, copied and reordered, the bytes come out once, in order, and
    each delivered byte carries the time and ack of a segment that carried it."""
    points = sorted({c for c in cuts if c < len(data)})
    bounds = [0, *points, len(data)]
    segments = [(a, data[a:b], float(i), 100 + i) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    rng = random.Random(seed)
    segments += [segments[d % len(segments)] for d in dups]
    rng.shuffle(segments)
    r, sink = start()
    for offset, piece, ts, ack in segments:
        seg(r, offset, piece, ts=ts, ack=ack)
    assert sink.stream() == data
    assert sink.kinds("gap") == [] and r.missing == 0 and not r.ooo
    carried = {(ts, ack): (off, off + len(piece)) for off, piece, ts, ack in segments}
    for _kind, ts, off, chunk, ack in sink.kinds("data"):
        lo, hi = carried[(ts, ack)]
        assert lo <= off and off + len(chunk) <= hi
