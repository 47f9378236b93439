"""The Stream tab: both directions of the selected connection as they were sent, text or hex.

A line-API view over tui.stream_index: it draws only the lines on screen, each made when it is
drawn, so opening a 16 MiB stream, `x` (text/hex), Home and End take the same time as for a
small one. Every byte shown is escaped by the index (tui.escape) before it becomes a segment.

What the app uses, and nothing else:
- `reset(endpoints, sent, live, note)`: show another connection (or none); `live` follows its
  tail; `note` is what the view says when it has no bytes to show (a UDP flow has no stream);
- `add(chunks)`: the followed connection's new kept entries (EngineUpdate.stream);
- `set_marks(transactions)`: where its HTTP messages start;
- `toggle_hex()`: text or hex, keeping the same bytes on screen;
- `toggle_frames()`: every HTTP/2 frame marked (type, stream, flags, length), or not;
- `set_relative(start)`: times as seconds since `start`, or the wall clock when None.
Mouse selection and copy (Ctrl+C) go through Textual's screen selection: `get_selection`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

from engine.content import looks_textual
from engine.events import HttpTransaction
from engine.http2 import FrameScanner
from tui.exchange_log import Exchange
from tui.messages import StreamChunk
from tui.stream_index import (
    DATA,
    GAP,
    HEADER,
    MARK,
    NOTE,
    RESENT,
    RESENT_DIFFERS,
    Marks,
    StreamIndex,
)

CLIENT_STYLE = "cyan"
SERVER_STYLE = "magenta"

# (kind, from_client) -> style; from_client None for lines of neither direction.
STYLES = {
    (DATA, True): Style.parse(CLIENT_STYLE),
    (DATA, False): Style.parse(SERVER_STYLE),
    (HEADER, True): Style.parse(f"bold {CLIENT_STYLE}"),
    (HEADER, False): Style.parse(f"bold {SERVER_STYLE}"),
    (MARK, True): Style.parse(f"dim {CLIENT_STYLE}"),
    (MARK, False): Style.parse(f"dim {SERVER_STYLE}"),
    (GAP, True): Style.parse("bold red"),
    (GAP, False): Style.parse("bold red"),
    (RESENT, True): Style.parse(f"dim {CLIENT_STYLE}"),
    (RESENT, False): Style.parse(f"dim {SERVER_STYLE}"),
    (RESENT_DIFFERS, True): Style.parse("bold yellow"),
    (RESENT_DIFFERS, False): Style.parse("bold yellow"),
    (NOTE, True): Style.parse("bold yellow"),
    (NOTE, False): Style.parse("bold yellow"),
    (NOTE, None): Style.parse("bold yellow"),
}
NOTE_STYLE = Style(italic=True)  # what the view says instead of bytes (a UDP flow has none)
HEX_WIDTH = 78  # columns of a hex line
# Entries that come at once (opening a connection that kept many) are indexed in a worker
# thread past this many, and the exchanges' marks with them: the UI thread only swaps the index.
BULK = 256
JUDGED = 64 * 1024  # bytes from a stream's start that decide text or hex
WINDOW = 8 * 1024  # judged a window at a time (engine.content.looks_textual reads 8 KiB)


def message_marks(transactions: Sequence[Exchange],
                  before: Marks | None = None) -> Marks:
    """Where each HTTP message starts in its direction's stream, and what to call it there
    (added to the marks of the exchanges before these, if given: new lists, the old kept).
    Other protocols' transactions have no offsets: they mark nothing."""
    marks: Marks = {True: list(before[True]), False: list(before[False])} if before else {
        True: [], False: []}
    for tx in transactions:
        if not isinstance(tx, HttpTransaction):
            continue
        req, resp = tx.request, tx.response
        number = str(tx.index) if tx.stream is None else f"s{tx.stream}"  # (as the HTTP tab)
        if req is not None and req.offset >= 0:
            marks[True].append((req.offset, f"request {number}: {req.method} {req.target}"))
        if resp is not None and resp.offset >= 0:
            marks[False].append((resp.offset, f"response {number}: {resp.status} {resp.reason}".rstrip()))
    for side in marks.values():
        side.sort()
    return marks


def with_frames(marks: Marks, scanners: dict[bool, FrameScanner]) -> Marks:
    """The message marks and the frame marks together (one line where both fall on a byte)."""
    out: Marks = {}
    for side in (True, False):
        frames = scanners[side].frames
        if not frames:
            out[side] = marks[side]
            continue
        by_offset = dict(frames)
        merged = []
        for offset, label in marks[side]:
            frame = by_offset.pop(offset, None)
            merged.append((offset, label if frame is None else f"{label} · {frame}"))
        merged.extend(by_offset.items())
        merged.sort()
        out[side] = merged
    return out


def scanners_for() -> dict[bool, FrameScanner]:
    return {True: FrameScanner(True), False: FrameScanner(False)}


def scan(scanners: dict[bool, FrameScanner], chunks: Sequence[StreamChunk]) -> int:
    """Give the scanners the bytes of these entries; how many frames they found."""
    found = 0
    for from_client, _ts, offset, data in chunks:
        if isinstance(data, bytes):
            found += scanners[from_client].feed(offset, data)
    return found


class StreamView(ScrollView, can_focus=True):
    """Both directions in arrival order, coloured by direction, as text or a hex dump, with the
    start of every HTTP message, gaps, resends and bytes no longer kept marked."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "line_up", "Up a line", show=False),
        Binding("down,j", "line_down", "Down a line", show=False),
        Binding("pageup", "page_up", "A page up", show=False, key_display="PgUp"),
        Binding("pagedown", "page_down", "A page down", show=False, key_display="PgDn"),
        Binding("home", "first", "The first byte kept", show=False),
        Binding("end", "last", "The last byte (and follow a live stream)", show=False),
        Binding("left,h", "scroll_left", "Scroll left", show=False),
        Binding("right,l", "scroll_right", "Scroll right", show=False),
    ]

    class Stale(Message):
        """The view dropped what came while its tab was hidden (more than it would keep): the
        app asks the driver for the connection's kept entries again."""

    class Indexed(Message):
        """A worker thread has indexed what a connection kept when it was opened."""

        def __init__(self, token: int, index: StreamIndex, marked: tuple[object, int, Marks],
                     scanners: dict[bool, FrameScanner] | None) -> None:
            super().__init__()
            self.token = token
            self.index = index
            self.marked = marked
            self.scanners = scanners

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.index = StreamIndex()
        # The exchanges whose marks the index has: (their list, how many, the marks), so that
        # new exchanges cost only their own marks.
        self._marked: tuple[object, int, Marks] | None = None
        self._transactions: Sequence[Exchange] = []  # the latest the app gave
        # HTTP/2 frames, looked for once `frames` is on (F), in the bytes kept and those that come.
        self.scanners: dict[bool, FrameScanner] | None = None
        self.frames = False
        self._frames_marked = -1  # frames found when the marks were last given to the index
        self._token = 0  # bumps on reset: an index built for an earlier connection is dropped
        self._windows: list[bool] = []  # per window judged since the reset: binary?
        self._loading: list[StreamChunk] | None = None  # entries that came while one is built
        # While its tab is not shown the view indexes nothing: what comes waits here, up to
        # the index's own bound; past it, it is dropped and the view asks for it again (Stale).
        self.shown = True  # the app says otherwise while its tab is not the one shown
        self._deferred: list[StreamChunk] = []
        self._deferred_cost = 0
        self._stale = False
        self.live = False  # the connection is open: its tail is followed
        self.following = False  # keep the last line on screen as bytes come
        self._hex_chosen = False  # the user pressed x since the reset: no automatic choice
        self._widest = 0
        self._toggled: tuple[int, tuple[int, int]] | None = None  # (line, place) of the last x
        self.note: list[str] = []  # lines shown instead of an empty stream (reset's note)

    # ------------------------------------------------------------------ the app's interface

    @property
    def hex(self) -> bool:
        return self.index.hex

    def reset(self, endpoints: tuple[str, str], sent: tuple[int, int] = (0, 0),
              live: bool = False, note: str = "") -> None:
        """Show another connection: its endpoints (client, server), each side's stream length
        so far (said on the first line for a side none of whose bytes is kept), and whether it
        is still open: a live one follows its tail while the view is at its end, a finished
        one opens at the top. The note (lines) is shown while there are no bytes to show."""
        self.note = note.splitlines()
        hex_view, start = self.index.hex, self.index.time_start
        # The same connection again (its bytes come after the app opened it, or are sent
        # again): an x pressed meanwhile still holds.
        same = endpoints == self.index.endpoints
        self.index = StreamIndex(endpoints, sent)
        self.index.hex, self.index.time_start = hex_view, start
        self._token += 1
        self._windows = []
        self._loading = None
        self._deferred, self._deferred_cost, self._stale = [], 0, False
        self._marked = None
        self._transactions = []
        self.scanners = scanners_for() if self.frames else None
        self._frames_marked = -1
        self.live = live
        self.following = live
        self._hex_chosen = self._hex_chosen and same
        self._toggled = None
        self._widest = 0
        self._resize()
        self.scroll_to(0, 0, animate=False, immediate=True, force=True)
        self.refresh()

    def add(self, chunks: tuple[StreamChunk, ...]) -> None:
        """The followed connection's new entries, as the engine keeps them."""
        if not chunks:
            return
        if not self.shown:
            self._defer(chunks)
            return
        if self._loading is not None:
            self._loading.extend(chunks)  # after the entries being indexed
            return
        if len(chunks) > BULK and not self.index.blocks:
            self._index_in_worker(chunks)
            return
        self._add(chunks)
        self._apply_marks()

    def _defer(self, chunks: tuple[StreamChunk, ...]) -> None:
        if self._stale:
            return
        self._deferred.extend(chunks)
        self._deferred_cost += sum(len(d) if isinstance(d, bytes) else 64 for *_, d in chunks)
        limit = self.index.limit
        if self._deferred_cost > limit + limit // 8:
            self._deferred, self._deferred_cost, self._stale = [], 0, True

    def set_shown(self, shown: bool) -> None:
        """Its tab is shown, or hidden: only a shown view indexes what comes."""
        if shown == self.shown:
            return
        self.shown = shown
        if not shown:
            return
        if self._stale:
            self._stale = False
            self.post_message(self.Stale())
        elif self._deferred:
            chunks, self._deferred, self._deferred_cost = tuple(self._deferred), [], 0
            self.add(chunks)

    def _index_in_worker(self, chunks: tuple[StreamChunk, ...]) -> None:
        old = self.index
        index = StreamIndex(old.endpoints, old.sent)
        index.hex, index.time_start = old.hex, old.time_start
        self._loading = []
        transactions = self._transactions
        self.run_worker(partial(self._build, self._token, index, chunks, transactions,
                                len(transactions), self.frames),
                        thread=True, group="stream-index", exclusive=True, exit_on_error=False)

    def _build(self, token: int, index: StreamIndex, chunks: tuple[StreamChunk, ...],
               transactions: Sequence[Exchange], count: int, frames: bool) -> None:
        """In a worker thread: a fresh index, marks first (cheapest before the bytes)."""
        scanners = scanners_for() if frames else None
        marks = message_marks(transactions[:count])
        if scanners is not None:
            scan(scanners, chunks)
            index.set_marks(with_frames(marks, scanners))
        else:
            index.set_marks(marks)
        index.add(chunks)
        self.post_message(self.Indexed(token, index, (transactions, count, marks), scanners))

    def on_stream_view_indexed(self, message: Indexed) -> None:
        if message.token != self._token:
            return  # built for a connection no longer shown
        message.stop()
        waiting, self._loading = self._loading or [], None
        hex_view, start = self.index.hex, self.index.time_start
        self.index = message.index
        self.index.hex, self.index.time_start = hex_view, start
        self._marked = message.marked
        if self.frames:
            self.scanners = message.scanners or self._scanned()
        self._frames_marked = self._frame_count() if self.frames else -1
        self._chose_hex()
        self._add(tuple(waiting))
        self._apply_marks()

    def _chose_hex(self) -> None:
        """Text or hex, by what the stream mostly is: the first JUDGED bytes in windows of
        WINDOW, hex when three quarters of them look binary (a text request before a binary download is
        still hex). Judged as the bytes come, each window once, until the user presses x."""
        if self._hex_chosen or len(self._windows) * WINDOW >= JUDGED:
            return
        sample = self.index.sample(JUDGED)
        while (len(self._windows) + 1) * WINDOW <= len(sample):
            start = len(self._windows) * WINDOW
            self._windows.append(not looks_textual(sample[start:start + WINDOW]))
        verdicts = list(self._windows)
        rest = sample[len(self._windows) * WINDOW:]
        if rest and not verdicts:
            verdicts.append(not looks_textual(rest))  # less than a window so far
        if verdicts:
            binary = 4 * sum(verdicts) >= 3 * len(verdicts)  # three quarters or more
            if binary != self.index.hex:
                self.index.set_hex(binary)

    def _add(self, chunks: tuple[StreamChunk, ...]) -> None:
        self._note_end()
        if self.scanners is not None and scan(self.scanners, chunks):
            self._apply_marks()  # (before the bytes: their marks split them as they come)
        gone = self.index.add(chunks)
        self._chose_hex()
        self._resize()
        if self.following:
            self._go_end()
        elif gone:  # the oldest bytes went: the same bytes stay on screen
            self._scroll(self.scroll_offset.y - gone)
        self.refresh()

    def set_marks(self, transactions: Sequence[Exchange]) -> None:
        """Mark where the connection's HTTP messages start (their start lines). The store's list
        only grows: only the exchanges not marked yet are looked at."""
        self._transactions = transactions
        if self.shown and self._loading is None and self.index.blocks:
            self._apply_marks()  # (before any bytes, the marks wait for them: see add)

    def _frame_count(self) -> int:
        scanners = self.scanners
        return 0 if scanners is None else scanners[True].total + scanners[False].total

    def _scanned(self) -> dict[bool, FrameScanner]:
        """Scanners given the bytes the index keeps, each direction in order."""
        scanners = scanners_for()
        for side, direction in self.index.dirs.items():
            for offset, piece in zip(direction.at, direction.pieces):
                scanners[side].feed(offset, piece)
        return scanners

    def _apply_marks(self) -> None:
        transactions = self._transactions
        marked = self._marked
        frames = self._frame_count() if self.frames else -1
        if (marked is not None and marked[0] is transactions and marked[1] == len(transactions)
                and frames == self._frames_marked):
            return
        if marked is not None and marked[0] is transactions and marked[1] <= len(transactions):
            marks = message_marks(transactions[marked[1]:], marked[2])
        else:
            marks = message_marks(transactions)
        self._marked = (transactions, len(transactions), marks)
        self._frames_marked = frames
        self._note_end()
        scanners = self.scanners
        self.index.set_marks(with_frames(marks, scanners) if scanners is not None else marks)
        self._resize()
        if self.following:
            self._go_end()
        self.refresh()

    def toggle_hex(self) -> None:
        """Text or hex at once (only the count of lines changes); the line at the top shows the
        same bytes afterwards (at the end: the last ones), and x x comes back to the very line
        it left."""
        self._hex_chosen = True
        self._note_end()
        y = self.scroll_offset.y
        at_end = 0 < y >= self.max_scroll_y  # the last byte on screen stays on screen
        toggled = self._toggled
        where = toggled[1] if toggled is not None and toggled[0] == y else self.index.locate(y)
        self.index.set_hex(not self.index.hex)
        self._widest = 0
        self._resize()
        if self.following or at_end:
            self._go_end()
        else:
            self._scroll(self.index.line_of(*where))
            self._toggled = (self.scroll_offset.y, where)
        self.refresh()

    def toggle_frames(self) -> bool:
        """Mark every HTTP/2 frame, or stop; whether the stream has any frames to mark."""
        self.frames = not self.frames
        self.scanners = self._scanned() if self.frames else None
        self._note_end()
        self._apply_marks()
        return self._frame_count() > 0

    def set_relative(self, start: float | None) -> None:
        """Times as seconds since `start` (the connection's first packet), or the wall clock."""
        self.index.time_start = start
        self.refresh()

    # ------------------------------------------------------------------ moving

    def _resize(self) -> None:
        width = max(self._widest, HEX_WIDTH if self.index.hex else 0)
        lines = len(self.index)
        if not lines and self.note:
            lines, width = len(self.note), max(width, *map(cell_len, self.note))
        self.virtual_size = Size(width, lines)

    def _scroll(self, y: int) -> None:
        # force: a view that was never laid out (its tab not shown yet) scrolls too
        self.scroll_to(y=max(0, y), animate=False, immediate=True, force=True)

    def _go_end(self) -> None:
        self._scroll(self.max_scroll_y)

    def _note_end(self) -> None:
        """A live view follows while it is at its end, however it got there (keys, mouse
        wheel, scroll bar)."""
        self.following = self.live and self.scroll_offset.y >= self.max_scroll_y

    def on_resize(self, event: events.Resize) -> None:
        if self.following:
            self.call_after_refresh(self._go_end)

    def action_line_up(self) -> None:
        self._scroll(self.scroll_offset.y - 1)

    def action_line_down(self) -> None:
        self._scroll(self.scroll_offset.y + 1)

    def action_page_up(self) -> None:
        self._scroll(self.scroll_offset.y - max(1, self.scrollable_content_region.height - 1))

    def action_page_down(self) -> None:
        self._scroll(self.scroll_offset.y + max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self._scroll(0)

    def action_last(self) -> None:
        self._go_end()

    # ------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        index = scroll_y + y
        if index >= len(self.index):
            if not len(self.index) and index < len(self.note):
                strip = Strip([Segment(self.note[index], base + NOTE_STYLE)])
                return strip.crop_extend(scroll_x, scroll_x + width, base)
            return Strip.blank(width, base)
        text, kind, from_client = self.index.line(index)
        style = base + STYLES[(kind, from_client)]
        length = cell_len(text)
        if length > self._widest:
            self._widest = length
            self.call_later(self._resize)
        segments = [Segment(text, style)]
        selection = self.text_selection
        if selection is not None and (span := selection.get_span(index)) is not None:
            start, end = span
            end = len(text) if end == -1 else min(end, len(text))
            picked = style + self.screen.get_component_rich_style("screen--selection")
            segments = [Segment(text[:start], style), Segment(text[start:end], picked),
                        Segment(text[end:], style)]
        strip = Strip(segments, length).crop_extend(scroll_x, scroll_x + width, base)
        return strip.apply_offsets(scroll_x, index)

    # ------------------------------------------------------------------ selection

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The selected text: only the selected lines are made (a stream can be long)."""
        count = len(self.index)
        if not count:
            return None
        first = min(selection.start.y, count - 1) if selection.start is not None else 0
        last = min(selection.end.y, count - 1) if selection.end is not None else count - 1
        lines = list(self.index.lines(first, last + 1))
        if not lines:
            return None
        start_x = selection.start.x if selection.start is not None else 0
        if first == last:
            end_x = selection.end.x if selection.end is not None else len(lines[0])
            return lines[0][start_x:end_x], "\n"
        lines[0] = lines[0][start_x:]
        if selection.end is not None and selection.end.y <= last:
            lines[-1] = lines[-1][: selection.end.x]
        return "\n".join(lines), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()
