"""One direction of a TCP connection: segments in, the sender's bytes in order out.

A `Reassembler` is given the segments one endpoint sent (sequence number, captured payload,
length on the wire, the segment's timestamp and acknowledgment number) and tells its `Sink` what
became of them: bytes delivered in order, bytes that will never be seen (gaps, with the reason),
and bytes that arrived again after they were delivered. It does no I/O and knows nothing of
connections, states or protocols: the connection table (`engine.connections`) is its sink in
wirepeek, and the tests use a recorder.

Rules kept here:
- Every stream byte is delivered once, in order. A byte that arrives again (retransmission,
  duplicate, overlap) is not delivered again; where it differs from the copy that came first, the
  sink is told. First data wins, for delivered bytes and for buffered ones alike.
- Sequence numbers are compared modulo 2**32 against the next expected one, so a stream may run
  past 4 GiB; stream offsets are plain Python integers that never wrap.
- A hole is skipped as a gap only when it can no longer fill: the out-of-order buffer is full, or
  the stream ends, or the peer acknowledged bytes past it (the endpoint got them; the capture
  did not). The order between the two directions in a capture is not causal (multi-queue NICs,
  the `any` device, merged captures), so one acknowledgment captured before the segment it
  covers is not enough: the hole is skipped at the second acknowledgment past it, or when the
  first is a reorder window old. Waiting longer would hold up every byte after a capture loss,
  and with them whatever is built on the stream. Nothing is invented to fill a hole.
- Each delivered chunk carries the timestamp and the acknowledgment number of the segment that
  brought it, so what is built on top (pairing HTTP answers with requests) can follow what TCP
  said rather than the order in which the capture happened to show the two directions.
"""

from __future__ import annotations

import bisect
from typing import Final, NamedTuple, Protocol

SEQ_MASK: Final = 0xFFFFFFFF
SEQ_HALF: Final = 0x80000000
MAX_AHEAD: Final = 1 << 30
"""Data further ahead of the next expected byte than this is not plausible for a real window
(1 GiB, the largest scaled window): it is counted as ignored rather than buffered."""

NO_ACK: Final = -1
"""The acknowledgment number of a segment without the ACK flag."""

# Why bytes were skipped: the peer acknowledged them, the buffer bound, the stream closed or the
# capture ended or the connection was dropped (idle, evicted), or the snapshot length cut them.
ACKED: Final = "acked"
BUFFER: Final = "buffer"
SNAPLEN: Final = "snaplen"


def seq_delta(seq: int, ref: int) -> int:
    """Signed distance from ref to seq, modulo 2**32."""
    return ((seq - ref + SEQ_HALF) & SEQ_MASK) - SEQ_HALF


class Pending(NamedTuple):
    """Out-of-order bytes waiting for the hole before them to fill."""

    start: int  # stream offset
    end: int
    data: bytes
    ts: float  # of the segment that brought them
    ack: int  # of that segment (NO_ACK: none)
    cut: int  # bytes of that segment after `data` that the capture did not keep (snap length)


class Sink(Protocol):
    """What a reassembler reports to. Every method gets the reassembler it comes from."""

    max_ooo: int
    """Out-of-order bytes a reassembler may buffer before it skips its oldest hole."""
    reorder_window: float
    """Seconds an acknowledged hole stays open for its bytes to arrive late."""

    def delivered(self, r: Reassembler, ts: float, offset: int, data: bytes, ack: int) -> None:
        """Bytes at `offset`, in order, once; ts and ack are those of the segment that brought
        them."""

    def missed(self, r: Reassembler, ts: float, offset: int, size: int, reason: str) -> None:
        """`size` bytes at `offset` were never seen and are skipped."""

    def resent(self, r: Reassembler, ts: float, offset: int, size: int, data: bytes) -> None:
        """`size` already delivered bytes from `offset` came again; `data` is their captured part."""

    def inconsistent(self, r: Reassembler) -> None:
        """Bytes that came again as out-of-order data differed from the copy buffered first."""

    def ignored_segment(self, r: Reassembler) -> None:
        """A segment too far ahead of the stream to be believed was dropped."""

    def buffered(self, r: Reassembler, change: int) -> None:
        """The out-of-order buffer grew (or shrank) by `change` bytes."""

    def complete(self, r: Reassembler, ts: float) -> None:
        """Every byte before the FIN has been delivered or skipped."""


class Reassembler:
    """The bytes one endpoint sent, in order."""

    __slots__ = (
        "base",
        "delivered",
        "fin_offset",
        "hole_acked_at",
        "missing",
        "offset",
        "ooo",
        "ooo_bytes",
        "retransmitted",
        "sink",
    )

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.base: int | None = None  # sequence number of stream offset 0
        self.offset = 0  # stream offset of the next byte expected (delivered + missing)
        self.delivered = 0
        self.missing = 0
        self.retransmitted = 0
        self.ooo: list[Pending] | None = None  # sorted, not overlapping; None until needed
        self.ooo_bytes = 0
        self.fin_offset: int | None = None  # stream offset of the FIN (past the last byte)
        self.hole_acked_at: float | None = None  # when the peer first acknowledged past the hole

    # ------------------------------------------------------------------ positions

    def offset_of(self, seq: int) -> int:
        """Stream offset of a sequence number (the stream's start must be known)."""
        assert self.base is not None
        return self.offset + seq_delta(seq, (self.base + self.offset) & SEQ_MASK)

    def acked_offset(self, ack: int) -> int | None:
        """Stream offset up to which an acknowledgment number covers this stream, if known.
        The FIN takes one sequence number and no stream byte: the offset stops at it."""
        if ack == NO_ACK or self.base is None:
            return None
        end = self.offset_of(ack)
        if self.fin_offset is not None and end > self.fin_offset:
            end = self.fin_offset
        return end

    # ------------------------------------------------------------------ input

    def start_after(self, seq: int) -> None:
        """A SYN: the stream starts after it, unless bytes were already taken as its start."""
        if self.base is None or (self.offset == 0 and not self.ooo):
            self.base = (seq + 1) & SEQ_MASK

    def end_at(self, ts: float, seq: int, wire_len: int) -> None:
        """A FIN: the stream ends with this segment's last byte (the first FIN decides)."""
        if self.base is None:
            self.base = seq
        if self.fin_offset is None:
            self.fin_offset = self.offset_of((seq + wire_len) & SEQ_MASK)
        if self.offset >= self.fin_offset:
            self.sink.complete(self, ts)

    def segment(self, ts: float, seq: int, data: bytes, wire_len: int, ack: int) -> None:
        """A segment carrying wire_len bytes from seq, of which `data` (a prefix) was captured."""
        base = self.base
        if base is None:
            self.base = base = seq  # picked up mid-stream: the first byte seen is offset 0
        if seq == (base + self.offset) & SEQ_MASK and not self.ooo and len(data) == wire_len:
            self._deliver(ts, data, ack)
            if self.fin_offset is not None and self.offset >= self.fin_offset:
                self.sink.complete(self, ts)
            return
        self._segment(ts, seq, data, wire_len, ack)
        if self.hole_acked_at is not None:
            self.check_hole(ts)
        if self.fin_offset is not None and self.offset >= self.fin_offset:
            self.sink.complete(self, ts)

    def peer_acked(self, ts: float, ack: int) -> None:
        """The peer acknowledged up to `ack`. Past a hole, the endpoint got bytes we did not see:
        the hole is skipped at the second such acknowledgment, or once the first is a reorder
        window old."""
        if not self.ooo:
            return
        acked = self.acked_offset(ack)
        if acked is None or acked <= self.offset or self.ooo[0].start > acked:
            return
        if self.hole_acked_at is None:
            self.hole_acked_at = ts
            self.check_hole(ts)
        else:
            self.check_hole(ts, again=True)

    def check_hole(self, now: float, again: bool = False) -> None:
        """Skip the acknowledged hole if it was acknowledged `again`, or a reorder window ago."""
        at = self.hole_acked_at
        if at is None or (not again and now - at < self.sink.reorder_window):
            return
        self.hole_acked_at = None
        if self.ooo:
            self._skip_hole(ACKED)
        if self.fin_offset is not None and self.offset >= self.fin_offset:
            self.sink.complete(self, now)

    def flush(self, ts: float, reason: str, peer_ack: int) -> None:
        """No more segments will come: every hole becomes a gap, and so do the bytes up to the FIN
        or to what the peer acknowledged last. A hole the peer acknowledged is skipped as
        acknowledged (that is how we know the endpoint sent it); one sequence number acknowledged
        past the last byte, with no FIN seen, is taken for the FIN the capture missed, not for a
        missing byte."""
        acked = self.acked_offset(peer_ack)
        while self.ooo:
            past = acked is not None and acked >= self.ooo[0].start
            self._skip_hole(ACKED if past else reason)
        self.hole_acked_at = None
        end = self.fin_offset
        if end is None:
            end = acked
            if end == self.offset + 1:
                end = self.offset  # the FIN
        if end is not None and self.offset < end <= self.offset + MAX_AHEAD:
            self._gap(ts, end - self.offset, reason)

    # ------------------------------------------------------------------ the work

    def _segment(self, ts: float, seq: int, data: bytes, wire_len: int, ack: int) -> None:
        """Everything but the in-order fast path: holes, retransmissions, overlaps, cut segments."""
        assert self.base is not None
        delta = seq_delta(seq, (self.base + self.offset) & SEQ_MASK)
        if delta > 0:
            if delta > MAX_AHEAD:
                self.sink.ignored_segment(self)
                return
            self._buffer(self.offset + delta, data, ts, ack, wire_len - len(data))
            if self.ooo_bytes > self.sink.max_ooo:
                half = self.sink.max_ooo // 2
                while self.ooo and self.ooo_bytes > half:
                    self._skip_hole(BUFFER)
            return
        old = min(-delta, wire_len)
        # A keep-alive probe sends one old byte again; it is not a retransmission.
        if old and not (delta == -1 and wire_len == 1):
            self.retransmitted += old
            self.sink.resent(self, ts, self.offset + delta, old, data[:old])
        new = wire_len - old
        if new <= 0:
            return
        fresh = data[old:]
        if fresh:
            self._deliver(ts, fresh, ack, drain=False)
        if len(fresh) < new:
            self._gap(ts, new - len(fresh), SNAPLEN)
        if self.ooo:
            self._drain()

    def _deliver(self, ts: float, data: bytes, ack: int, drain: bool = True) -> None:
        off = self.offset
        self.offset = off + len(data)
        self.delivered += len(data)
        self.sink.delivered(self, ts, off, data, ack)
        if drain and self.ooo and self.ooo[0].start <= self.offset:
            self._drain()

    def _gap(self, ts: float, size: int, reason: str) -> None:
        off = self.offset
        self.offset = off + size
        self.missing += size
        self.sink.missed(self, ts, off, size, reason)

    def _buffer(self, start: int, data: bytes, ts: float, ack: int, cut: int) -> None:
        """Buffer out-of-order data; bytes already buffered win, and a difference is reported."""
        end = start + len(data)
        if self.ooo is None:
            self.ooo = []
        ooo = self.ooo
        i = max(bisect.bisect_left(ooo, (start,)) - 1, 0)
        pieces: list[Pending] = []
        differing = False
        cur = start
        while i < len(ooo) and cur < end:
            p = ooo[i]
            i += 1
            if p.end <= cur:
                continue
            if p.start >= end:
                break
            if p.start > cur:
                pieces.append(
                    Pending(cur, p.start, data[cur - start : p.start - start], ts, ack, 0)
                )
            lo, hi = max(p.start, cur), min(p.end, end)
            if p.data[lo - p.start : hi - p.start] != data[lo - start : hi - start]:
                differing = True
            cur = p.end
        if cur < end:
            pieces.append(Pending(cur, end, data[cur - start :], ts, ack, cut))
        added = 0
        for piece in pieces:
            bisect.insort(ooo, piece)
            added += piece.end - piece.start
        if added:
            self.ooo_bytes += added
            self.sink.buffered(self, added)
        if differing:
            self.sink.inconsistent(self)

    def _drain(self) -> None:
        """Deliver buffered data that has become contiguous, each piece with its own segment's
        time and acknowledgment. The hole that was acknowledged, if any, is gone: the next one
        waits for an acknowledgment of its own."""
        ooo = self.ooo
        self.hole_acked_at = None
        while ooo and ooo[0].start <= self.offset:
            p = ooo.pop(0)
            self.ooo_bytes -= p.end - p.start
            self.sink.buffered(self, p.start - p.end)
            if p.end > self.offset:
                self._deliver(p.ts, p.data[self.offset - p.start :], p.ack, drain=False)
            if p.cut and self.offset == p.end:
                # The capture kept only the start of that segment: its rest is known lost, up to
                # where the next buffered bytes begin.
                stop = p.end + p.cut
                if ooo and ooo[0].start < stop:
                    stop = ooo[0].start
                self._gap(p.ts, stop - self.offset, SNAPLEN)

    def _skip_hole(self, reason: str) -> None:
        """Skip the hole before the first buffered bytes, then deliver what follows it."""
        assert self.ooo
        first = self.ooo[0]
        if first.start > self.offset:
            self._gap(first.ts, first.start - self.offset, reason)
        self._drain()
