"""The Stream tab: its index of kept bytes (tui.stream_index) on its own, and the view in the app
on a real 2 MB download (tests/data/pcaps/download-2m.pcap.gz, see its README)."""

from __future__ import annotations

import asyncio
import random

import pytest
from textual.app import App, ComposeResult

from engine.bounds import Bounds, MiB
from engine.tcp import Resent
from tests.captures import capture
from tests.conversations import build, causal
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.escape import escape_bytes
from tui.stream_index import CAP, CONTINUED, StreamIndex
from tui.widgets.stream import BULK, StreamView

SIZE = (120, 40)
DOWNLOAD = "download-2m.pcap.gz"
BODY = 2 * MiB  # the download's body; its response header is 191 bytes
SERVER_BYTES = 2_097_343
CLIENT_BYTES = 86
REQUEST_LINE = "GET /big.txt HTTP/1.1"
LAST_LINE = "002654LAST BYTES."  # the body's last line was cut to make room for these


def lines_of(index: StreamIndex) -> list[str]:
    return list(index.lines(0, len(index)))


def data_lines(index: StreamIndex) -> list[str]:
    return [index.line(y)[0] for y in range(len(index)) if index.line(y)[1] == "data"]


# ---------------------------------------------------------------------------- the index alone


def test_text_lines_end_at_lf_and_run_across_entries():
    index = StreamIndex(("10.0.0.1:5000", "10.0.0.2:80"))
    # One line cut across three entries, a CRLF cut between two, controls escaped.
    index.add([(True, 1.0, 0, b"GET /a HT"), (True, 1.0, 9, b"TP/1.1\r"), (True, 1.0, 16, b"\nX: \x1b[1m\r\n\r\n")])
    assert data_lines(index) == ["GET /a HTTP/1.1", "X: \\x1b[1m", ""]
    assert lines_of(index)[0].startswith("── client 10.0.0.1:5000 → 10.0.0.2:80 · offset 0 · ")


def test_long_lines_go_on_below_with_a_mark_and_every_byte_is_shown_once():
    data = b"a" * (CAP * 2 + 10) + b"\n" + b"b" * 5
    index = StreamIndex()
    index.add([(False, 1.0, 0, data)])
    lines = data_lines(index)
    assert lines == ["a" * CAP + CONTINUED, "a" * CAP + CONTINUED, "a" * 10, "b" * 5]


def test_every_byte_once_in_text_and_in_hex_whatever_the_cuts():
    rng = random.Random(7)
    data = bytes(rng.choice(b"ab\r\n\x00\x1b\\") for _ in range(20_000)) + b"x" * 9000
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    entries = [(True, 1.0, a, data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    index = StreamIndex()
    index.add(entries)
    lines = [line.removesuffix(CONTINUED) for line in data_lines(index)]
    # Each line is its bytes up to an LF (the LF and a CR before it not shown) or a cut at CAP.
    expected = []
    for piece in data.split(b"\n"):
        piece_lines = [piece[i : i + CAP] for i in range(0, len(piece), CAP)] or [b""]
        if len(piece_lines) > 1 and len(piece_lines[-1]) == 1 and piece_lines[-1] == b"\r":
            piece_lines[-2:] = [piece_lines[-2] + b"\r"]  # the CR of a CRLF stays on its line
        expected += piece_lines
    if data.endswith(b"\n"):
        expected.pop()
    text = [escape_bytes(p.removesuffix(b"\r"), keep_newlines=True).expandtabs(8) for p in expected]
    assert lines == text
    index.set_hex(True)
    hexed = b"".join(bytes.fromhex(line[10:58].replace(" ", "")) for line in data_lines(index))
    assert hexed == data


def test_hex_and_text_switch_by_counts_and_keep_the_place():
    body = b"".join(b"%06d some text\r\n" % i for i in range(5000))
    index = StreamIndex()
    index.add([(True, 1.0, 0, b"GET / HTTP/1.1\r\n\r\n"), (False, 1.1, 0, body)])
    text_count = len(index)
    y = 3000
    fc, offset = index.offset_of_line(y)
    index.set_hex(True)
    assert len(index) == 1 + 2 + 1 + -(-len(body) // 16)  # two headers, and the request's rows
    hex_y = index.line_of(1, offset)
    assert index.offset_of_line(hex_y) == (fc, offset - (offset % 16))
    index.set_hex(False)
    assert len(index) == text_count
    assert index.offset_of_line(index.line_of(1, offset)) == (fc, offset)


@pytest.mark.parametrize("body", [b"", b"y" * (3 * CAP)], ids=["short lines", "a long line"])
def test_marks_known_before_or_after_the_bytes_give_the_same_lines(body):
    first = b"GET /1 HTTP/1.1\r\n\r\n" + body
    second = b"GET /2 HTTP/1.1\r\n\r\n"
    marks = {True: [(0, "request 0: GET /1"), (len(first), "request 1: GET /2")], False: []}
    entries = [(True, 1.0, 0, first + second[:5]), (True, 1.0, len(first) + 5, second[5:])]
    before = StreamIndex()
    before.set_marks(marks)
    before.add(entries)
    after = StreamIndex()
    after.add(entries)
    after.set_marks(marks)
    assert lines_of(before) == lines_of(after)
    assert [line for line in lines_of(after) if line.startswith("┄┄ ")] == [
        "┄┄ request 0: GET /1", "┄┄ request 1: GET /2"]
    assert lines_of(after)[-3] == "┄┄ request 1: GET /2"
    after.set_marks({True: [], False: []})  # marks can go too: indexed afresh
    assert not any(line.startswith("┄┄ ") for line in lines_of(after))


@pytest.mark.parametrize("step", [1, 7, 40], ids=["one by one", "in sevens", "all at once"])
def test_many_exchanges_marked_as_they_come_or_late_give_the_same_lines(step):
    """A keep-alive connection of 40 exchanges, its bytes in pieces that cut messages: the marks
    given before the bytes, or afterwards in batches of any size, make the same lines."""
    client = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(40))
    server = b"".join(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" for _ in range(40))
    marks: dict[bool, list[tuple[int, str]]] = {True: [], False: []}
    for side, data, head in ((True, client, b"GET"), (False, server, b"HTTP")):
        at = data.find(head)
        while at >= 0:
            marks[side].append((at, f"{'request' if side else 'response'} {len(marks[side])}"))
            at = data.find(head, at + 1)
    entries = [(side, 1.0, a, data[a : a + 97]) for side, data in ((True, client), (False, server))
               for a in range(0, len(data), 97)]
    first = StreamIndex()
    first.set_marks(marks)
    first.add(entries)
    late = StreamIndex()
    late.add(entries)
    for n in range(step, 40 + step, step):
        late.set_marks({side: found[:n] for side, found in marks.items()})
    assert lines_of(late) == lines_of(first)
    assert sum(line.startswith("┄┄ ") for line in lines_of(late)) == 80


def test_gaps_resends_and_bytes_that_went_by_have_a_line_each():
    index = StreamIndex()
    index.add([
        (True, 1.0, 0, b"abc\n"),
        (True, 1.1, 4, 100),  # never captured
        (True, 1.2, 104, b"def\n"),
        (True, 1.3, 0, Resent(4, True)),
        (True, 1.4, 500, b"ghi\n"),  # 108-499 went by without reaching the view
    ])
    lines = lines_of(index)
    assert "⟂ 100 bytes never captured (offset 4)" in lines
    assert any(line.startswith("↻ client resent 4 bytes at offset 0 · ") and "DIFFERENT" in line
               for line in lines)
    assert "⋯ 392 bytes of the client's stream (offsets 108-499) went by and are not kept" in lines
    assert lines[-1] == "ghi"


def test_the_first_line_says_what_is_no_longer_kept():
    index = StreamIndex(sent=(86, 0))
    index.add([(False, 1.0, 5000, b"tail\n")])  # the client's 86 bytes are all gone
    assert lines_of(index)[0] == ("⋯ no longer kept: the client's first 86 bytes and the "
                                  f"server's first 5,000 bytes (the last "
                                  f"{Bounds().keep_stream_bytes // MiB} MiB are kept)")
    assert index.not_kept() == (86, 5000)


def test_the_index_keeps_its_bound_and_says_so():
    index = StreamIndex(limit=10_000)
    lines = [b"%05d\n" % i for i in range(4000)]  # 6 bytes a line
    gone = 0
    for i in range(0, 4000, 100):
        gone += index.add([(False, 1.0, i * 6, b"".join(lines[i : i + 100]))])
    assert index.kept <= 10_000 + 10_000 // 8 + 600
    assert index.not_kept()[1] > 0
    first = lines_of(index)[0]
    assert first.startswith(f"⋯ no longer kept: the server's first {index.not_kept()[1]:,} bytes")
    shown = data_lines(index)
    assert shown[-1] == "03999"
    assert shown[0] == f"{index.not_kept()[1] // 6:05d}"  # from a whole line on
    assert gone > 0


def test_a_flood_of_resends_stays_within_the_bound():
    index = StreamIndex(limit=10_000)
    index.add([(True, 1.0, 0, b"GET / HTTP/1.1\r\n\r\n")])
    for _ in range(50):
        index.add([(True, 1.0, 0, Resent(18, False))] * 100)
    assert len(index.blocks) <= (10_000 + 10_000 // 8) // 64 + 1
    assert index.not_kept()[0] == 18  # the request went too, and the first line says so


def test_the_bound_cuts_a_long_line_where_it_was_split():
    index = StreamIndex(limit=10_000)
    data = bytes(b for b in range(256) if b != 0x0A) * 200  # 51,000 bytes, no LF: cut at CAP
    gone = 0
    for i in range(0, len(data), 5000):
        gone += index.add([(True, 1.0, i, data[i : i + 5000])])
    first_kept = index.not_kept()[0]
    assert first_kept % CAP == 0 and len(data) - first_kept <= 10_000 + 10_000 // 8 + CAP
    index.set_hex(True)
    rows = [line for line in lines_of(index) if line[:8].isalnum() and "  " in line]
    assert bytes.fromhex("".join(r[10:58].replace(" ", "") for r in rows)) == data[first_kept:]
    assert gone > 0


# ---------------------------------------------------------------------------- the view in the app


def download_app(bounds: Bounds | None = None) -> WirepeekApp:
    return WirepeekApp(SourceSpec(files=(capture(DOWNLOAD),)), "",
                       bounds or Bounds(keep_after_close=True))


async def open_download(app: WirepeekApp, pilot: object) -> StreamView:
    await asyncio.wait_for(app.file_done.wait(), timeout=30)
    await pilot.press("2")  # type: ignore[attr-defined]
    stream = app.query_one(StreamView)
    for _ in range(200):
        if stream.index.blocks:
            break
        await pilot.pause(0.02)  # type: ignore[attr-defined]
    stream.focus()
    await pilot.pause()  # type: ignore[attr-defined]
    return stream


def on_screen(stream: StreamView) -> list[str]:
    """The lines drawn in the view's content area (a scroll bar may take the last row)."""
    return [stream.render_line(y).text.rstrip()
            for y in range(stream.scrollable_content_region.height)]


SPOOLS = pytest.mark.parametrize("spool", [0, 64 * MiB], ids=["in-memory", "spooled"])


@pytest.mark.asyncio
@SPOOLS
async def test_a_2mb_download_from_its_request_line_to_its_last_byte(spool):
    app = download_app(Bounds(keep_after_close=True, spool_bytes=spool))
    async with app.run_test(size=SIZE) as pilot:
        stream = await open_download(app, pilot)
        assert stream.index.kept == CLIENT_BYTES + SERVER_BYTES  # every byte, none dropped
        assert stream.index.not_kept() == (0, 0)
        assert not stream.hex  # text
        screen = on_screen(stream)  # a finished connection opens at the top
        assert screen[0].startswith("── client 127.0.0.1:33278 → 127.0.0.1:18642 · offset 0 · ")
        assert REQUEST_LINE in screen
        await pilot.press("end")
        assert on_screen(stream)[-1] == LAST_LINE
        await pilot.press("x")
        assert stream.hex
        last = on_screen(stream)[-1]
        assert last.startswith(f"{SERVER_BYTES - 1 - (SERVER_BYTES - 1) % 16:08x}  ")
        assert last.endswith("|654LAST BYTES..|")
        await pilot.press("home")
        screen = on_screen(stream)
        assert screen[2].startswith("00000000  47 45 54 20 2f 62 69 67  2e 74 78 74 20 48 54 54")
        await pilot.press("x")
        assert REQUEST_LINE in on_screen(stream)
        await pilot.press("end", "x", "x", "x")  # back and forth at the end: still there
        assert stream.hex and on_screen(stream)[-1].endswith("|654LAST BYTES..|")
        await pilot.press("x")
        assert on_screen(stream)[-1] == LAST_LINE


@pytest.mark.asyncio
async def test_text_and_hex_keep_the_same_bytes_on_screen():
    app = download_app()
    async with app.run_test(size=SIZE) as pilot:
        stream = await open_download(app, pilot)
        await pilot.press(*["pagedown"] * 400)
        top = stream.index.offset_of_line(stream.scroll_offset.y)
        assert top is not None and top[0] is False and top[1] > 10_000
        await pilot.press("x")
        assert stream.hex
        hex_top = stream.index.offset_of_line(stream.scroll_offset.y)
        assert hex_top is not None and 0 <= top[1] - hex_top[1] < 16
        await pilot.press("x")
        assert stream.index.offset_of_line(stream.scroll_offset.y) == top


@pytest.mark.asyncio
@SPOOLS
async def test_bytes_no_longer_kept_are_said_on_the_first_line(spool):
    app = download_app(Bounds(keep_after_close=True, keep_stream_bytes=1 * MiB, spool_bytes=spool))
    async with app.run_test(size=SIZE) as pilot:
        stream = await open_download(app, pilot)
        client, server = stream.index.not_kept()
        assert client == CLIENT_BYTES and server > SERVER_BYTES - 1 * MiB - 1 * MiB // 8
        await pilot.press("home")
        first = on_screen(stream)[0]
        assert first.startswith(f"⋯ no longer kept: the client's first {CLIENT_BYTES} bytes and the "
                                f"server's first {server:,} bytes")
        assert REQUEST_LINE not in "\n".join(on_screen(stream))
        await pilot.press("end")
        assert on_screen(stream)[-1] == LAST_LINE


@pytest.mark.asyncio
async def test_binary_payloads_open_as_hex(pcap_file):
    payload = bytes(range(256)) * 8
    client, server = build([("c", b"\x16\x03\x01" + payload[:300]), ("s", payload)])
    path = pcap_file(causal(client, server))
    app = WirepeekApp(SourceSpec(files=(str(path),)), "", Bounds(keep_after_close=True))
    async with app.run_test(size=SIZE) as pilot:
        stream = await open_download(app, pilot)
        assert stream.hex
        assert on_screen(stream)[1].startswith("00000000  16 03 01 00 01 02")
        await pilot.press("x")  # the user may still read it as text
        assert not stream.hex and on_screen(stream)[1].startswith("\\x16\\x03\\x01\\x00\\x01")


class OneStream(App[None]):
    def compose(self) -> ComposeResult:
        yield StreamView()


@pytest.mark.asyncio
async def test_a_live_stream_follows_its_tail_until_the_user_scrolls_up():
    app = OneStream()
    async with app.run_test(size=(80, 20)) as pilot:
        stream = app.query_one(StreamView)
        stream.focus()
        stream.reset(("c:1", "s:2"), live=True)
        offset = 0
        for i in range(100):
            data = b"line %d\n" % i
            stream.add(((False, 1.0, offset, data),))
            offset += len(data)
        await pilot.pause()
        assert on_screen(stream)[-1] == "line 99"
        await pilot.press("up")
        stream.add(((False, 1.0, offset, b"line 100\n"),))
        await pilot.pause()
        assert on_screen(stream)[-1] == "line 98"  # the user is reading: nothing moves
        await pilot.press("end")
        stream.add(((False, 1.0, offset + 9, b"line 101\n"),))
        await pilot.pause()
        assert on_screen(stream)[-1] == "line 101"
        stream.reset(("c:1", "s:2"), live=False)  # a finished one opens at the top
        stream.add(((False, 1.0, 0, b"".join(b"x%d\n" % i for i in range(100))),))
        await pilot.pause()
        assert on_screen(stream)[1] == "x0"


@pytest.mark.asyncio
async def test_times_are_the_wall_clock_or_relative():
    app = OneStream()
    async with app.run_test(size=(80, 20)) as pilot:
        stream = app.query_one(StreamView)
        stream.reset(("c:1", "s:2"))
        stream.add(((True, 1_700_000_000.25, 0, b"hi\n"),))
        await pilot.pause()
        header = on_screen(stream)[0]
        assert header.startswith("── client c:1 → s:2 · offset 0 · ") and header[-12:-9].count(":") == 1
        assert header.endswith(".250")
        stream.set_relative(1_700_000_000.0)
        await pilot.pause()
        assert on_screen(stream)[0].endswith("· +0.250000s")


@pytest.mark.asyncio
async def test_selecting_stream_text_and_copying_it():
    """A mouse drag over the Stream tab and Ctrl+C put the selected text on the clipboard
    (a method named _render once broke Textual's selection and crashed here)."""
    app = download_app()
    async with app.run_test(size=SIZE) as pilot:
        stream = await open_download(app, pilot)
        screen = on_screen(stream)
        row = screen.index(REQUEST_LINE)
        await pilot.mouse_down(stream, offset=(4, row))
        await pilot.hover(stream, offset=(9, row + 1))
        await pilot.mouse_up(stream, offset=(9, row + 1))
        await pilot.pause()
        assert app.screen.selections
        picked = app.screen.get_component_rich_style("screen--selection")
        drawn = list(stream.render_line(row))
        assert any(seg.text == "/big.txt HTTP/1.1" and seg.style is not None
                   and seg.style.bgcolor == picked.bgcolor for seg in drawn)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.clipboard == "/big.txt HTTP/1.1\nHost: 127."  # the end column included
        # It goes on working after the view changed under it.
        await pilot.press("x", "end")
        await pilot.press("ctrl+c")
        assert app.is_running and app.clipboard.startswith("0000")


class HiddenStream(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.stale = 0

    def compose(self) -> ComposeResult:
        yield StreamView()

    def on_stream_view_stale(self) -> None:
        self.stale += 1


@pytest.mark.asyncio
async def test_a_hidden_stream_indexes_nothing_and_asks_again_past_its_bound():
    app = HiddenStream()
    async with app.run_test(size=(80, 20)) as pilot:
        stream = app.query_one(StreamView)
        stream.reset(("c:1", "s:2"))
        stream.set_shown(False)
        stream.add(((True, 1.0, 0, b"GET / HTTP/1.1\r\n\r\n"),))
        assert len(stream.index) == 0  # waiting, not indexed
        stream.set_shown(True)
        assert "GET / HTTP/1.1" in "\n".join(stream.index.lines(0, len(stream.index)))
        # Hidden again, and more comes than the view would keep: dropped, then asked for again.
        stream.index.limit = 1000
        stream.set_shown(False)
        stream.add(((False, 2.0, 0, b"x" * 2000),))
        assert not stream._deferred
        stream.set_shown(True)
        await pilot.pause()
        assert app.stale == 1


@pytest.mark.asyncio
async def test_many_entries_at_once_are_indexed_in_a_worker_with_their_marks():
    app = OneStream()
    async with app.run_test(size=(80, 20)) as pilot:
        stream = app.query_one(StreamView)
        stream.reset(("c:1", "s:2"))
        chunks = []
        offset = 0
        for i in range(BULK * 2):
            data = b"GET /n/%d HTTP/1.1\r\n\r\n" % i
            chunks.append((True, 1.0 + i, offset, data))
            offset += len(data)
        stream.add(tuple(chunks))
        assert stream._loading is not None  # being indexed elsewhere
        stream.add(((True, 9999.0, offset, b"GET /last HTTP/1.1\r\n\r\n"),))  # waits its turn
        for _ in range(100):
            if stream._loading is None:
                break
            await pilot.pause(0.02)
        text = "\n".join(stream.index.lines(0, len(stream.index)))
        assert "GET /n/0 HTTP/1.1" in text and text.rstrip().endswith("GET /last HTTP/1.1")
        assert text.index("GET /n/0 ") < text.index("GET /n/1 ") < text.index("GET /last")


@pytest.mark.asyncio
async def test_a_text_request_before_a_binary_download_opens_as_hex():
    """Mostly binary is hex, even when the first bytes (the request, the response head) are text."""
    import random

    app = OneStream()
    async with app.run_test(size=(80, 20)):
        stream = app.query_one(StreamView)
        stream.reset(("c:1", "s:2"))
        stream.add(((True, 1.0, 0, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"),))
        assert not stream.hex  # text so far
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 65536\r\n\r\n"
        body = random.Random(7).randbytes(65536)
        stream.add(((False, 1.1, 0, head + body[:20000]),))
        stream.add(((False, 1.2, len(head) + 20000, body[20000:]),))
        assert stream.hex
        # A text stream stays text.
        stream.reset(("c:1", "s:2"))
        stream.add(((True, 1.0, 0, b"GET / HTTP/1.1\r\n\r\n" + b"a line of text\n" * 5000),))
        assert not stream.hex


@pytest.mark.asyncio
async def test_x_pressed_before_the_bytes_come_still_holds():
    """The app opens a connection, the user presses x, then the driver's update brings the
    bytes (and resets the view for the same connection): hex stays, though they are text."""
    app = OneStream()
    async with app.run_test(size=(80, 20)):
        stream = app.query_one(StreamView)
        stream.reset(("c:1", "s:2"))
        stream.toggle_hex()
        stream.reset(("c:1", "s:2"))  # the update for the same connection
        stream.add(((True, 1.0, 0, b"GET / HTTP/1.1\r\n\r\n"),))
        assert stream.hex
        stream.reset(("c:3", "s:4"))  # another connection: chosen again by its bytes
        stream.add(((True, 1.0, 0, b"GET / HTTP/1.1\r\n\r\n"),))
        assert not stream.hex
