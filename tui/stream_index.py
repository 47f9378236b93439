"""The Stream tab's model: an index of the followed connection's kept bytes, as screen lines.

The view (tui.widgets.stream) asks for one line at a time (`line(y)`), when it is drawn; this
module knows how many lines there are and which bytes each shows, and makes the text of a line
only when asked. So opening a 16 MiB stream, switching between text and hex, or jumping to its
first or last byte costs the same as for a small one: nothing here walks every byte or every line
on a key, only when bytes arrive (once each: their newlines are found) or marks split a block.

What it holds: the follow view's entries as the engine keeps them (engine.tcp `Kept`: bytes
delivered, gaps, resends), both directions in arrival order, cut into blocks:
- a data block is a run of one direction's bytes, contiguous, with no resend, gap or message
  start inside; it may open with a direction header (where the direction changes, or after a
  resend line) and an HTTP message mark (where a request or response starts);
- a gap block is one "never captured" line, a resend block one "resent" line, a note block one
  "no longer kept" line where bytes went by that the view never got.
The count of lines of each block, as text and as hex, is known when the block is made; prefix
sums of the counts of the mode shown map a line number to its block with a bisection.

Text lines: an LF ends a line (with the CR before it: CRLF); every other byte is shown as itself
or escaped by tui.escape (never raw). A line longer than CAP bytes goes on in the next line, the
first ending in CONTINUED. Hex lines: 16 bytes each, aligned to the block's start.

Nothing is dropped silently: when the start of a direction is no longer kept (the engine's bound
on kept bytes, or this index's own, which is the same), the first line says how many bytes of
each direction came before what is shown.

It never touches a widget and never imports Textual: it is tested on its own.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate
from operator import sub

from engine.bounds import Bounds, MiB
from engine.tcp import RESENT_COST, Kept, Resent
from tui.escape import escape_bytes, escape_text, hexdump_lines
from tui.times import shown

CAP = 4096  # bytes of a text line at most (give or take a CR): longer ones go on below
HEX_WIDTH = 16
CONTINUED = " ↩"  # ends a text line that the next line continues
_LF = re.compile(b"\n")

# Line kinds, which the view styles: (kind, from_client) pairs come back with each line.
DATA, HEADER, MARK, GAP, RESENT, RESENT_DIFFERS, NOTE = (
    "data", "header", "mark", "gap", "resent", "resent-differs", "note"
)

Marks = dict[bool, list[tuple[int, str]]]


def who(from_client: bool) -> str:
    return "client" if from_client else "server"


class Block:
    """A run of lines: one direction's contiguous bytes (with a header or mark line before
    them), or a gap, resend or note line."""

    __slots__ = ("end", "from_client", "header", "kind", "lines", "mark", "resent", "start",
                 "starts", "ts")

    def __init__(self, kind: str, from_client: bool, ts: float, start: int, end: int,
                 header: bool = False, mark: str | None = None,
                 resent: Resent | None = None) -> None:
        self.kind = kind
        self.from_client = from_client
        self.ts = ts
        self.start = start  # stream offsets of its direction, [start, end)
        self.end = end
        self.header = header
        self.mark = mark
        self.resent = resent
        # A data block's text lines: how many, and where each starts when some line is cut at
        # CAP; otherwise (starts None) each starts after an LF, found in its direction's list.
        self.lines = 0
        self.starts: array[int] | None = None

    def prefix(self) -> int:
        """Lines before its bytes: the direction header and the message mark."""
        return self.header + (self.mark is not None)

    def count(self, hex_view: bool) -> int:
        if self.kind != DATA:
            return 1 + self.header
        if hex_view:
            return self.prefix() + -(-(self.end - self.start) // HEX_WIDTH)
        return self.prefix() + self.lines


class Direction:
    """One direction's kept bytes: the pieces as they came, and where their newlines are."""

    __slots__ = ("at", "lfs", "next", "pieces", "seen")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.at: list[int] = []  # stream offset of each piece
        self.lfs = array("q")  # stream offset of every LF byte kept
        self.next = 0  # the stream offset after the last byte or gap given
        self.seen = False  # some bytes or gap came

    def add(self, offset: int, data: bytes) -> None:
        self.pieces.append(data)
        self.at.append(offset)
        if b"\n" in data:
            self.lfs.fromlist([offset + m.start() for m in _LF.finditer(data)])

    def read(self, start: int, end: int) -> bytes:
        """The kept bytes [start, end) (the caller asks only for bytes a data block holds)."""
        at, pieces = self.at, self.pieces
        i = max(0, bisect_right(at, start) - 1)
        out = []
        while start < end and i < len(pieces):
            piece, base = pieces[i], at[i]
            if base + len(piece) > start:
                out.append(piece[start - base : end - base])
                start = base + len(piece)
            i += 1
        return out[0] if len(out) == 1 else b"".join(out)

    def line_starts(self, start: int, end: int, out: array[int]) -> None:
        """Append to `out` where the text lines of the bytes [start, end) start."""
        lfs = self.lfs
        i, j = bisect_left(lfs, start), bisect_left(lfs, end)
        if i < j:
            ends = lfs[i:j]
            longest = max(ends[0] - start, end - ends[-1] - 1, max(map(sub, ends[1:], ends), default=0))
            if longest <= CAP:
                # No line to cut (the usual case): every line starts after an LF.
                out.append(start)
                if ends[-1] + 1 == end:
                    ends.pop()
                out.fromlist(list(map((1).__add__, ends)))
                return
        pos = start
        while i < j:
            lf = lfs[i]
            while lf - pos > CAP + 1:  # the CR of a CRLF may make it one longer
                out.append(pos)
                pos += CAP
            out.append(pos)
            pos = lf + 1
            i += 1
        while end - pos > CAP:
            out.append(pos)
            pos += CAP
        if pos < end:
            out.append(pos)

    def has_long_line(self, start: int, end: int) -> bool:
        """Whether a line of the bytes [start, end) is longer than CAP."""
        lfs = self.lfs
        i, j = bisect_left(lfs, start), bisect_left(lfs, end)
        if i == j:
            return end - start > CAP
        ends = lfs[i:j]
        return max(ends[0] - start, end - ends[-1] - 1, max(map(sub, ends[1:], ends), default=0)) > CAP

    def count_lines(self, start: int, end: int) -> int:
        """Lines of the bytes [start, end), none cut at CAP: one per LF, and a last one without."""
        lfs = self.lfs
        i, j = bisect_left(lfs, start), bisect_left(lfs, end)
        return j - i + (i == j or lfs[j - 1] + 1 < end)

    def nth_start(self, start: int, k: int) -> int:
        """Where line k of the bytes from `start` on starts (none cut at CAP)."""
        return start if k == 0 else self.lfs[bisect_left(self.lfs, start) + k - 1] + 1

    def line_index(self, start: int, offset: int) -> int:
        """Which line of the bytes from `start` on holds the byte at `offset` (none cut)."""
        return bisect_left(self.lfs, offset) - bisect_left(self.lfs, start)

    def trim(self, keep_from: int) -> int:
        """Forget the pieces that end before `keep_from`; how many bytes they held."""
        at = self.at
        k = bisect_right(at, keep_from) - 1  # the piece holding keep_from stays
        if k <= 0:
            return 0
        dropped = sum(len(p) for p in self.pieces[:k])
        del self.pieces[:k], at[:k]
        del self.lfs[: bisect_left(self.lfs, at[0])]
        return dropped


class StreamIndex:
    """Both directions of one connection's kept stream, as numbered lines (text or hex)."""

    def __init__(self, endpoints: tuple[str, str] = ("client", "server"),
                 sent: tuple[int, int] = (0, 0), limit: int | None = None) -> None:
        self.endpoints = endpoints
        self.sent = sent  # bytes each direction had delivered when the view was opened
        self.limit = Bounds().keep_stream_bytes if limit is None else limit
        self.hex = False
        self.time_start: float | None = None  # None: wall clock; else times relative to it
        self.blocks: list[Block] = []
        self.dirs = {True: Direction(), False: Direction()}
        self.marks: Marks = {True: [], False: []}
        self.kept = 0  # data bytes held
        self.lines_cost = 0  # what the gap, resend and note lines count against the limit
        self._last_dir: bool | None = None  # of the last data or gap block: a header when it changes
        self._ends: list[int] = []  # cumulative line counts of the blocks, in the mode shown
        self._dirty = 0  # _ends is right for blocks before this one
        self.top = 0  # 1 when the first line says what is no longer kept
        self._not_kept = (0, 0)

    # ------------------------------------------------------------------ building

    def add(self, entries: Iterable[Kept]) -> int:
        """Index new entries (in the order the engine kept them). Returns how many lines left
        the top (the index keeps at most `limit` bytes, dropping the oldest), so a view can
        keep showing the same bytes."""
        for from_client, ts, offset, data in entries:
            d = self.dirs[from_client]
            if isinstance(data, Resent):
                self._append(Block(RESENT, from_client, ts, offset, offset, resent=data))
                self._last_dir = None
                continue
            if d.seen and offset > d.next:
                self._append(Block(NOTE, from_client, ts, d.next, offset))
                self._last_dir = None
            size = data if isinstance(data, int) else len(data)
            if offset + size <= d.next and d.seen:
                continue  # already indexed (cannot happen with the engine's entries)
            if not d.seen and offset > 0:
                d.next = offset
            d.seen = True
            if isinstance(data, int):
                self._append(Block(GAP, from_client, ts, offset, offset + size,
                                   header=self._last_dir != from_client))
                self._last_dir = from_client
            else:
                d.add(offset, data)
                self.kept += size
                self._data(from_client, ts, offset, offset + size)
            d.next = offset + size
        self._top()
        if self.kept + self.lines_cost > self.limit + self.limit // 8:
            return self._trim()
        return 0

    def _data(self, from_client: bool, ts: float, start: int, end: int) -> None:
        """Bytes [start, end) of a direction, cut where messages start."""
        marks = self.marks[from_client]
        i = bisect_left(marks, (start, ""))
        pos = start
        while pos < end:
            mark = None
            if i < len(marks) and marks[i][0] == pos:
                mark = marks[i][1]
                i += 1
                while i < len(marks) and marks[i][0] == pos:
                    i += 1  # two messages cannot start at one offset; keep the first
            stop = marks[i][0] if i < len(marks) and marks[i][0] < end else end
            self._run(from_client, ts, pos, stop, mark)
            pos = stop

    def _run(self, from_client: bool, ts: float, start: int, end: int, mark: str | None) -> None:
        last = self.blocks[-1] if self.blocks else None
        if (mark is None and last is not None and last.kind == DATA
                and last.from_client == from_client and last.end == start):
            # The bytes go on: the open last line is counted again with them.
            begin = self._line_start(last, last.lines - 1)
            last.end = end
            self._lay_out(last, begin)
            self._dirty = min(self._dirty, len(self.blocks) - 1)
            return
        block = Block(DATA, from_client, ts, start, end,
                      header=self._last_dir != from_client, mark=mark)
        self._lay_out(block)
        self._append(block)
        self._last_dir = from_client

    def _append(self, block: Block) -> None:
        self.blocks.append(block)
        if block.kind != DATA:
            self.lines_cost += RESENT_COST  # so that a flood of resends stays bounded too

    def _lay_out(self, block: Block, begin: int | None = None) -> None:
        """Count a data block's text lines (again from the line starting at `begin`, when bytes
        were added at its end); list where they start only if one is longer than CAP."""
        d = self.dirs[block.from_client]
        if block.starts is None:
            if not d.has_long_line(block.start if begin is None else begin, block.end):
                block.lines = d.count_lines(block.start, block.end)
                return
            block.starts, begin = array("q"), None
        starts = block.starts
        if begin is None:
            del starts[:]
            begin = block.start
        else:
            del starts[bisect_left(starts, begin):]
        d.line_starts(begin, block.end, starts)
        block.lines = len(starts)

    def _line_start(self, block: Block, k: int) -> int:
        if block.starts is not None:
            return block.starts[k]
        return self.dirs[block.from_client].nth_start(block.start, k)

    def _line_holding(self, block: Block, offset: int) -> int:
        if block.starts is not None:
            return max(0, bisect_right(block.starts, offset) - 1)
        return self.dirs[block.from_client].line_index(block.start, offset)

    def set_marks(self, marks: Marks) -> None:
        """Where HTTP messages start (tui.widgets.stream.message_marks); a mark in bytes already
        indexed splits their block there."""
        if marks == self.marks:
            return
        old, self.marks = self.marks, marks
        for side, found in marks.items():
            before = old[side]
            if found[: len(before)] == before:
                added = found[len(before) :]  # the usual case: new exchanges, further on
            else:
                known = set(before)
                gone = known - set(found)
                d = self.dirs[side]
                kept_from = d.at[0] if d.at else d.next
                if any(offset >= kept_from for offset, _ in gone):
                    # A mark of bytes still kept went away (HTTP/2 frames no longer marked).
                    self._rebuild()
                    return
                added = [mark for mark in found if mark not in known]
            added = [mark for mark in added if mark[0] < self.dirs[side].next]
            if len(added) <= 4:
                for offset, label in added:
                    self._mark(side, offset, label)
            elif added:
                self._mark_all(side, added)

    def _mark(self, from_client: bool, offset: int, label: str) -> None:
        """One mark: its block is found from the end (marks come mostly near the end)."""
        for i in range(len(self.blocks) - 1, -1, -1):
            block = self.blocks[i]
            if (block.kind != DATA or block.from_client != from_client
                    or not block.start <= offset < block.end):
                continue
            if offset == block.start:
                if block.mark is None:
                    block.mark = label
            else:
                self.blocks.insert(i + 1, self._split(block, offset, label))
            self._dirty = min(self._dirty, i)
            return

    def _mark_all(self, from_client: bool, added: list[tuple[int, str]]) -> None:
        """Many marks (sorted) in one pass over the blocks."""
        out: list[Block] = []
        k, n = 0, len(added)
        for block in self.blocks:
            if k < n and block.kind == DATA and block.from_client == from_client:
                while k < n and added[k][0] < block.start:
                    k += 1  # in bytes not shown (a gap)
                while k < n and added[k][0] < block.end:
                    offset, label = added[k]
                    k += 1
                    if offset == block.start:
                        if block.mark is None:
                            block.mark = label
                        continue
                    after = self._split(block, offset, label)
                    out.append(block)
                    block = after
            out.append(block)
        self.blocks = out
        self._dirty = 0

    def _split(self, block: Block, offset: int, label: str) -> Block:
        """Cut a data block where a message starts; the part from there on, with its mark."""
        after = Block(DATA, block.from_client, block.ts, offset, block.end, mark=label)
        if block.starts is not None:
            k = bisect_left(block.starts, offset)
            tail = block.starts[k:]
            after.starts = array("q", [] if tail and tail[0] == offset else [offset])
            after.starts.extend(tail)
            after.lines = len(after.starts)
            del block.starts[k:]
            block.lines = len(block.starts)
            block.end = offset
        else:
            block.end = offset
            self._lay_out(block)
            self._lay_out(after)
        return after

    def _rebuild(self) -> None:
        """Index the kept bytes again from scratch (the resend and gap lines are kept)."""
        old = self.blocks
        self.blocks, self._ends, self._dirty, self._last_dir = [], [], 0, None
        self.lines_cost = 0
        for block in old:
            if block.kind == DATA:
                self._data(block.from_client, block.ts, block.start, block.end)
            else:
                block.header = block.kind == GAP and self._last_dir != block.from_client
                self._append(block)
                self._last_dir = None if block.kind in (RESENT, NOTE) else block.from_client

    def _trim(self) -> int:
        """Drop the oldest bytes down to the limit; how many lines left the top."""
        need = self.kept + self.lines_cost - self.limit
        blocks = self.blocks
        drop = 0
        cut: int | None = None  # where the first block left starts now, if it loses a part
        while drop < len(blocks) and need > 0:
            block = blocks[drop]
            size = block.end - block.start if block.kind == DATA else RESENT_COST
            if size <= need:
                need -= size
                drop += 1
                if block.kind != DATA:
                    self.lines_cost -= RESENT_COST
                continue
            # From the first line that starts past what must go.
            k = self._line_holding(block, block.start + need - 1) + 1
            if k < block.lines:
                cut = k
            else:
                drop += 1
            break
        if drop >= len(blocks):
            gone = len(self)
            self.blocks, self._ends, self._dirty = [], [], 0
            for d in self.dirs.values():
                d.pieces, d.at, d.lfs = [], [], array("q")
            self.kept = self.lines_cost = 0
            self._top()
            return gone
        first = blocks[drop]
        anchor = self._line_start(first, cut) if cut is not None else first.start
        before = self.line_of(drop, anchor)
        if cut is not None:
            first.start = anchor
            if first.starts is not None:
                del first.starts[:cut]
            first.lines -= cut
            first.mark = None  # the message it marked starts in the bytes dropped
        del blocks[:drop]
        if first.kind in (DATA, GAP):
            first.header = True
        self._dirty = 0
        for side, d in self.dirs.items():
            starts = [b.start for b in blocks if b.from_client == side and b.kind == DATA][:1]
            self.kept -= d.trim(starts[0] if starts else d.next)
        self._top()
        return before - self.line_of(0, anchor)

    def _top(self) -> None:
        """Work out what the first line says: the bytes before the first shown, each way."""
        firsts: dict[bool, int] = {}
        for block in self.blocks:
            if block.kind in (DATA, GAP) and block.from_client not in firsts:
                firsts[block.from_client] = block.start
                if len(firsts) == 2:
                    break
        counts = []
        for side in (True, False):
            d = self.dirs[side]
            if side in firsts:
                counts.append(firsts[side])
            else:
                counts.append(d.next if d.seen else self.sent[0 if side else 1])
        self._not_kept = (counts[0], counts[1])
        self.top = 1 if any(counts) else 0

    # ------------------------------------------------------------------ reading

    def not_kept(self) -> tuple[int, int]:
        """Bytes at the start of each direction (client, server) that are not shown."""
        return self._not_kept

    def _sums(self) -> None:
        if self._dirty < len(self.blocks) or len(self._ends) != len(self.blocks):
            start = min(self._dirty, len(self._ends))
            base = self._ends[start - 1] if start else 0
            hex_view = self.hex
            self._ends[start:] = accumulate((b.count(hex_view) for b in self.blocks[start:]),
                                            initial=base)
            del self._ends[start]  # the initial value
            self._dirty = len(self.blocks)

    def __len__(self) -> int:
        """Lines in the mode shown."""
        self._sums()
        return self.top + (self._ends[-1] if self._ends else 0)

    def line_count_before(self, i: int) -> int:
        self._sums()
        return self._ends[i - 1] if i else 0

    def set_hex(self, hex_view: bool) -> None:
        if hex_view != self.hex:
            self.hex = hex_view
            self._dirty = 0

    def locate(self, y: int) -> tuple[int, int]:
        """(block, what) of line y: what is the stream offset of a data line's first byte, or
        -1 for a header line, -2 for a mark line, -3 for the block's only line; (-1, -3) for
        the note at the top."""
        if y < self.top:
            return -1, -3
        self._sums()
        y -= self.top
        i = bisect_right(self._ends, y)
        if i >= len(self.blocks):
            return len(self.blocks) - 1, -3
        block = self.blocks[i]
        within = y - (self._ends[i - 1] if i else 0)
        if block.header:
            if within == 0:
                return i, -1
            within -= 1
        if block.kind != DATA:
            return i, -3
        if block.mark is not None:
            if within == 0:
                return i, -2
            within -= 1
        if self.hex:
            return i, block.start + within * HEX_WIDTH
        return i, self._line_start(block, within)

    def line_of(self, i: int, what: int) -> int:
        """The line number of a place `locate` gave, in the mode shown now (its nearest line:
        the one holding that byte)."""
        if i < 0 or not self.blocks:
            return 0
        i = min(i, len(self.blocks) - 1)
        self._sums()
        y = self.top + (self._ends[i - 1] if i else 0)
        block = self.blocks[i]
        if what == -1 or (what < 0 and not block.prefix()):
            return y
        if what == -2:
            return y + block.header
        if block.kind != DATA:
            return y + block.header
        y += block.prefix()
        what = max(block.start, min(what, block.end - 1))
        if self.hex:
            return y + (what - block.start) // HEX_WIDTH
        return y + self._line_holding(block, what)

    def offset_of_line(self, y: int) -> tuple[bool, int] | None:
        """The direction and stream offset a data line starts at (None for other lines)."""
        i, what = self.locate(y)
        if i < 0 or what < 0:
            return None
        return self.blocks[i].from_client, what

    def line(self, y: int) -> tuple[str, str, bool | None]:
        """Line y as (text, kind, from_client): text safe for a terminal; from_client None for
        lines of neither direction."""
        i, what = self.locate(y)
        if i < 0:
            return self._note_top(), NOTE, None
        block = self.blocks[i]
        fc = block.from_client
        if what == -1:
            src, dst = self.endpoints if fc else self.endpoints[::-1]
            return (f"── {who(fc)} {escape_text(src)} → {escape_text(dst)} · offset {block.start}"
                    f" · {shown(block.ts, self.time_start)}", HEADER, fc)
        if what == -2:
            return f"┄┄ {escape_text(block.mark or '')}", MARK, fc
        if block.kind == GAP:
            return f"⟂ {block.end - block.start} bytes never captured (offset {block.start})", GAP, fc
        if block.kind == NOTE:
            return (f"⋯ {block.end - block.start} bytes of the {who(fc)}'s stream (offsets "
                    f"{block.start}-{block.end - 1}) went by and are not kept", NOTE, fc)
        if block.kind == RESENT:
            return self._resent(block)
        d = self.dirs[fc]
        if self.hex:
            end = min(what + HEX_WIDTH, block.end)
            return hexdump_lines(d.read(what, end), what)[0], DATA, fc
        k = self._line_holding(block, what)
        end = self._line_start(block, k + 1) if k + 1 < block.lines else block.end
        raw = d.read(what, end)
        continued = False
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        elif end < block.end:
            continued = True
        text = escape_bytes(raw, keep_newlines=True).expandtabs(8)
        return (text + CONTINUED if continued else text), DATA, fc

    def _resent(self, block: Block) -> tuple[str, str, bool | None]:
        resent = block.resent
        assert resent is not None
        kind = RESENT
        if resent.differs:
            verdict, kind = "DIFFERENT from the first copy, which is what is shown", RESENT_DIFFERS
        elif resent.differs is None:
            verdict = "the first copy is no longer kept to compare"
        else:
            verdict = "same as the first copy"
        return (f"↻ {who(block.from_client)} resent {resent.size} bytes at offset {block.start} · "
                f"{shown(block.ts, self.time_start)}: {verdict}", kind, block.from_client)

    def _note_top(self) -> str:
        parts = [f"the {who(side)}'s first {n:,} bytes"
                 for side, n in zip((True, False), self._not_kept, strict=True) if n]
        limit = self.limit
        bound = f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit:,} bytes"
        return f"⋯ no longer kept: {' and '.join(parts)} (the last {bound} are kept)"

    def lines(self, start: int, end: int) -> Sequence[str]:
        """The text of lines [start, end) (for copying a selection)."""
        return [self.line(y)[0] for y in range(max(0, start), min(end, len(self)))]

    def sample(self, size: int) -> bytes:
        """Up to `size` of the first kept data bytes, both directions in arrival order."""
        out = []
        left = size
        for block in self.blocks:
            if left <= 0:
                break
            if block.kind == DATA:
                end = min(block.end, block.start + left)
                out.append(self.dirs[block.from_client].read(block.start, end))
                left -= end - block.start
        return b"".join(out)

    def first_bytes(self, size: int = 4096) -> bytes:
        """The first kept data bytes (of either direction, in arrival order)."""
        for block in self.blocks:
            if block.kind == DATA:
                return self.dirs[block.from_client].read(block.start,
                                                         min(block.end, block.start + size))
        return b""
