"""The Textual app driven with Pilot on real capture files: no root, no terminal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from textual.widgets import DataTable, Input, Label, TabbedContent

from engine import sources
from engine.bounds import Bounds
from engine.events import HttpTransaction
from engine.tcp import Resent
from tests.captures import COMPRESSIONS, capture, compressed_copy
from tui.app import WirepeekApp
from tui.capture import SourceSpec
from tui.cli import DEMO_CAPTURE
from tui.screens.help import HelpScreen
from tui.widgets.connections import ConnectionsTable
from tui.widgets.http import HttpView
from tui.widgets.stream import StreamView
from tui.widgets.status import StatusBar

SIZE = (120, 40)


def app_for(name: str, bpf: str = "") -> WirepeekApp:
    return WirepeekApp(SourceSpec(files=(capture(name),)), bpf, Bounds(keep_after_close=True))


async def read_all(app: WirepeekApp, pilot: object) -> None:
    await asyncio.wait_for(app.file_done.wait(), timeout=20)
    await pilot.pause()  # type: ignore[attr-defined]


async def workers_done(app: WirepeekApp, group: str) -> None:
    """Wait for the app's helper workers of a group (not the capture worker, which runs on)."""
    workers = [w for w in app.workers if w.group == group]
    if workers:  # a finished worker has left the list; an empty list would mean every worker
        await app.workers.wait_for_complete(workers)


async def until(pilot: object, condition: Callable[[], bool]) -> None:
    """Let the app run until the condition holds, for two seconds at most (the worker answers
    within a tick); the caller asserts what it needs."""
    for _ in range(100):
        if condition():
            return
        await pilot.pause(0.02)  # type: ignore[attr-defined]


async def open_stream(app: WirepeekApp, pilot: object) -> StreamView:
    """The Stream tab (key 2), once the worker has sent the selected connection's bytes."""
    await pilot.press("2")  # type: ignore[attr-defined]
    stream = app.query_one(StreamView)
    await until(pilot, lambda: bool(stream.index.blocks))
    return stream


def stream_lines(stream: StreamView) -> list[str]:
    """Every line of the Stream tab as it reads (made one by one, as when drawn)."""
    return list(stream.index.lines(0, len(stream.index)))


def screen_lines(app: WirepeekApp) -> list[str]:
    """The screen as a terminal shows it, line by line: what the compositor draws, widgets
    overlapping and scroll bars included (a row behind the scroll bar is not in it)."""
    return ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]


def table_ids(app: WirepeekApp) -> list[int]:
    table = app.query_one(ConnectionsTable)
    return list(table.order)


def status_text(app: WirepeekApp) -> str:
    return str(app.query_one(StatusBar).render())


@pytest.mark.asyncio
async def test_connections_and_http_exchanges_are_listed():
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        assert table_ids(app) == [0]
        assert app.selected == 0
        http = app.query_one("#exchanges")
        assert http.row_count == 5
        assert "GET /style/enhanced.css" in app.query_one("#http-message").plain
        assert "done" in status_text(app) and "49 pkts" in status_text(app)


@pytest.mark.asyncio
async def test_stream_tab_text_and_hex():
    app = app_for("zeek/http__get.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("2")
        assert app.query_one(TabbedContent).active == "tab-stream"
        stream = app.query_one(StreamView)
        await until(pilot, lambda: bool(stream.index.blocks))
        text = "\n".join(stream_lines(stream))
        assert "GET /download/CHANGES.bro-aux.txt HTTP/1.1" in text
        assert "HTTP/1.1 200 OK" in text
        assert stream.index.kept == 136 + 5007
        await pilot.press("x")
        hexed = "\n".join(stream_lines(stream))
        assert "00000000  47 45 54 20" in hexed
        await pilot.press("x")
        assert "00000000  47 45 54 20" not in "\n".join(stream_lines(stream))


@pytest.mark.asyncio
async def test_stream_marks_where_each_http_message_starts():
    """Five pipelined requests, five responses: a mark line before each, bytes untouched."""
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        stream = await open_stream(app, pilot)
        await pilot.pause()
        # Its bodies are gzip and images: mostly binary, so it opens as hex; read it as text.
        assert stream.hex
        await pilot.press("x")
        lines = stream_lines(stream)
        marks = [line for line in lines if line.startswith("┄┄ ")]
        assert marks[0].startswith("┄┄ request 0: GET ")
        assert sum(m.startswith("┄┄ request ") for m in marks) == 5
        assert sum(m.startswith("┄┄ response ") for m in marks) == 5
        # Every mark is followed by the start line of the message it names.
        for i, line in enumerate(lines):
            if line.startswith("┄┄ request "):
                method_target = line.split(": ", 1)[1]
                assert lines[i + 1].startswith(method_target + " HTTP/1.1")
            elif line.startswith("┄┄ response "):
                assert lines[i + 1].startswith("HTTP/1.1 " + line.split(": ", 1)[1].split()[0])
        # Take away the marks and the direction lines: the same lines as a view without marks
        # (messages start after a CRLF, so no line of the bytes is cut by a mark).
        shown = [line for line in lines if not line.startswith(("┄┄ ", "── "))]
        marks_kept = stream.index.marks
        stream.index.set_marks({True: [], False: []})
        assert shown == [line for line in stream_lines(stream) if not line.startswith("── ")]
        stream.index.set_marks(marks_kept)
        assert stream_lines(stream) == lines
        await pilot.press("x")  # the hex view marks them too
        assert sum(line.startswith("┄┄ ") for line in stream_lines(stream)) == 10


@pytest.mark.asyncio
async def test_stream_marks_retransmissions_and_shows_each_byte_once():
    """A capture with 15,666 client and 1,728 server bytes sent again: each resend is a line
    in arrival order, and the bytes shown are the stream, once."""
    app = app_for("arkime/wireshark-retrans.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        stream = await open_stream(app, pilot)
        resent = {True: 0, False: 0}
        shown = {True: 0, False: 0}
        for block in stream.index.blocks:
            if block.resent is not None:
                assert block.resent.differs is False
                resent[block.from_client] += block.resent.size
            else:
                shown[block.from_client] += block.end - block.start
        assert (resent[True], resent[False]) == (15666, 1728)
        assert (shown[True], shown[False]) == (5222, 576)
        lines = stream_lines(stream)
        marks = [line for line in lines if line.startswith("↻ ")]
        assert len(marks) == sum(isinstance(b.resent, Resent) for b in stream.index.blocks)
        assert any(m.startswith("↻ server resent ") for m in marks)
        assert all(m.endswith("same as the first copy") for m in marks)
        # After a resend line the bytes go on under a fresh header that names their offset.
        i = lines.index(marks[0])
        assert lines[i + 1].startswith("── ") or lines[i + 1].startswith("↻ ")


def http_text(app: WirepeekApp) -> str:
    return app.query_one("#http-message").plain


async def open_exchange(app: WirepeekApp, pilot: object, conn_id: int, index: int) -> str:
    """Select a connection, open its exchanges (Enter) and move down to one: its text."""
    app.query_one(ConnectionsTable).select(conn_id)
    await pilot.pause()  # type: ignore[attr-defined]
    await pilot.press("enter", *["down"] * index)  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    assert app.selected == conn_id and app.query_one("#exchanges").cursor_row == index
    return http_text(app)


@pytest.mark.asyncio
async def test_http_bodies_json_pretty_printed_and_binary_as_a_hex_dump():
    app = WirepeekApp(SourceSpec(files=(str(DEMO_CAPTURE),)), "", Bounds())
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        # The demo's POST sends its JSON on one line; the view indents it.
        text = await open_exchange(app, pilot, 0, 1)
        assert "POST /api/v1/orders HTTP/1.1" in text and "HTTP/1.1 201 Created" in text
        assert '\n  "customer_id": 1187,\n' in text
        assert '{"customer_id": 1187, "items"' not in text
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        text = await open_exchange(app, pilot, 0, 2)  # an image: a hex dump, not bytes
        assert "GET /images/template/screen/bullet_utility.png" in text
        assert "00000000  47 49 46 38 39 61" in text and "|GIF89a" in text  # a GIF, named .png


@pytest.mark.asyncio
async def test_http_detail_marks_bytes_never_captured_and_parse_errors():
    app = app_for("suricata-verify/http-gap-simple__input.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        text = await open_exchange(app, pilot, 0, 1)
        assert "[body 70B, 14B never captured, truncated]" in text
        # ...and where they fell: after the first 14 bytes of the body.
        body = text.split("[body 70B, 14B never captured, truncated]\n", 1)[1]
        first, rest = body.split("⟂ 14 bytes never captured\n")
        assert len(first.strip("\n")) == 14 and len(rest.strip("\n")) == 42
    app = app_for("suricata-verify/http-multiple-cl__input.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        text = await open_exchange(app, pilot, 0, 0)
        assert text.startswith("error: bad request: conflicting Content-Length headers")
        table = app.query_one("#exchanges")
        assert table.cells(table.selected_id())[-1] == "error"


@pytest.mark.asyncio
async def test_moving_between_connections_follows_the_selection():
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        ids = table_ids(app)
        assert len(ids) > 3
        await pilot.press("j")
        assert app.selected == ids[1]
        await pilot.press("j", "j")
        assert app.selected == ids[3]
        await pilot.press("k")
        assert app.selected == ids[2]
        assert app.driver.follow == ids[2]
        await pilot.pause()
        # The detail shows that connection's exchanges (a DNS flow's transactions), not the
        # previous one's.
        http = app.query_one(HttpView).table
        assert http.row_count == len(app.store.http.get(ids[2], []))
        first = app.store.http[ids[2]][0]
        said = first.request.target if isinstance(first, HttpTransaction) else first.response_summary
        assert said and said in app.query_one("#http-message").plain


@pytest.mark.asyncio
async def test_invalid_capture_filter_is_refused_and_the_old_one_stays():
    app = app_for("zeek/wikipedia.pcap", "tcp")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        before = table_ids(app)
        await pilot.press("f")
        field = app.query_one("#capture-filter", Input)
        assert field.has_focus and field.value == "tcp"
        field.value = "port banana"
        await pilot.press("enter")
        await until(pilot, lambda: "banana" in str(app.query_one("#prompt-error", Label).render()))
        assert "unknown port 'banana'" in str(app.query_one("#prompt-error", Label).render())
        assert app.query_one("#prompt").display  # still open, to fix it
        await pilot.press("escape")
        assert table_ids(app) == before
        assert "filter: tcp" in status_text(app)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["", *COMPRESSIONS])
async def test_valid_capture_filter_rereads_the_file(tmp_path, kind):
    path = capture("zeek/wikipedia.pcap")
    if kind:
        path = str(compressed_copy(path, kind, tmp_path))
    app = WirepeekApp(SourceSpec(files=(path,)), "", Bounds(keep_after_close=True))
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        everything = len(table_ids(app))
        app.file_done.clear()
        await pilot.press("f")
        # Brackets are BPF here, not markup, wherever the filter is shown.
        bpf = "host 208.80.152.3 and tcp[0:2] != 0"
        app.query_one("#capture-filter", Input).value = bpf
        await pilot.press("enter")
        await read_all(app, pilot)
        await until(pilot, lambda: f"filter: {bpf}" in status_text(app))
        assert f"filter: {bpf}" in status_text(app)
        assert [n.message for n in app._notifications] == [f"capture filter: {bpf}"]
        assert not app.query_one("#prompt").display
        assert 0 < len(table_ids(app)) < everything
        servers = [app.store.connections[i].server for i in table_ids(app)]
        assert set(servers) == {"208.80.152.3:80"}  # numbered from 0 again
        assert table_ids(app) == list(range(len(servers)))


@pytest.mark.asyncio
async def test_a_reread_that_finds_nothing_clears_the_open_connection():
    app = app_for("zeek/http__get.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await until(pilot, lambda: app.query_one("#exchanges").row_count == 1)
        assert app.query_one("#exchanges").row_count == 1
        app.file_done.clear()
        await pilot.press("f")
        app.query_one("#capture-filter", Input).value = "tcp port 1"
        await pilot.press("enter")
        await read_all(app, pilot)
        await until(pilot, lambda: app.query_one("#exchanges").row_count == 0)
        assert table_ids(app) == [] and app.selected is None
        assert app.query_one("#exchanges").row_count == 0
        assert app.query_one(StreamView).index.blocks == []
        assert len(app.query_one(StreamView).index) == 0


@pytest.mark.asyncio
async def test_display_filter_narrows_the_list():
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        everything = table_ids(app)
        # Address and port: one TCP connection (mDNS flows share theirs: 224.0.0.251:5353).
        one = [i for i in everything if app.store.connections[i].transport == "tcp"][2]
        client = app.store.connections[one].client
        await pilot.press("slash")
        await pilot.press(*client)
        await pilot.press("enter")
        assert table_ids(app) == [one]
        await pilot.press("slash", "ctrl+u", "enter")
        assert table_ids(app) == everything


@pytest.mark.asyncio
async def test_pause_and_help():
    app = app_for("zeek/http__get.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("p")
        assert app.paused and "PAUSED" in status_text(app)
        await pilot.press("p")
        assert not app.paused
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help-body Static").render())
        assert "Capture filter" in help_text and "Find (/)" in help_text
        bindings = help_text.split("Find (/)")[0]  # (the filter's fields are listed after)
        keys = [line.split()[0] for line in bindings.splitlines() if line.startswith("  ")]
        assert "status >= 500" in help_text and "resp.size" in help_text
        assert len(keys) == len(set(keys)), keys  # each key once (Escape was listed twice)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@pytest.mark.asyncio
async def test_enter_opens_the_exchanges_and_escape_comes_back():
    app = app_for("zeek/http__pipelined-requests.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("enter")
        assert app.query_one("#exchanges").has_focus
        await pilot.press("down")
        assert "GET /script/urchin.js" in app.query_one(HttpView).query_one("#http-message").plain
        await pilot.press("escape")
        assert app.query_one(ConnectionsTable).has_focus


@pytest.mark.asyncio
async def test_escape_sequences_from_the_wire_are_shown_escaped():
    """Header values, bodies and stream bytes with ESC sequences reach the screen as escapes."""
    app = app_for("escapes.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        seen = []
        for conn_id in table_ids(app):
            app.query_one(ConnectionsTable).select(conn_id)
            await pilot.pause()
            seen.append(app.query_one("#http-message").plain)
            await pilot.press("2")
            await pilot.pause()
            seen.append("\n".join(stream_lines(app.query_one(StreamView))))
            await pilot.press("1")
        seen += [app.query_one(ConnectionsTable).row_text(conn_id) for conn_id in table_ids(app)]
        screen = "\n".join(seen)
        assert "\x1b" not in screen and "\x07" not in screen
        assert "hello \\x1b]2;title\\x07world" in screen  # the X-Comment header, as an escape
        assert "\\x1b[31mred\\x1b[0m" in screen  # the Cookie header
        svg = app.export_screenshot()
        assert "\x1b" not in svg


# The TLS connection of escapes.pcap, as the display must show it: every control byte escaped
# once, the Latin-1 letter as itself, the backslash typed on the wire doubled.
SHOWN_SNI = r"ev\x1bil\r\x00\x9b" + "é" + r"\\x1b.test"
SHOWN_ALPN = r"h\x1b\r\x00" + "é" + r"\\2"


@pytest.mark.asyncio
async def test_tls_names_with_control_bytes_are_shown_escaped_once_in_the_connections_pane():
    app = app_for("escapes.pcap")
    async with app.run_test(size=(220, 20)) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ConnectionsTable)
        table.select(3)
        await pilot.pause()
        assert app.selected == 3
        screen = [table.render_line(y).text for y in range(table.size.height)]
        [row] = [line for line in screen if "192.0.2.44:443" in line]
        assert " tls " in row
        assert f" TLS 1.2 SNI {SHOWN_SNI} ALPN {SHOWN_ALPN} (selected)" in row
        assert "\\\\x1b" not in row.replace(r"\\x1b.test", "")  # no escape escaped again
        assert not any(ch in row for ch in "\x1b\r\x00\x9b")
        assert "No HTTP on this connection" in str(app.query_one("#http-summary").render())


def count_packets(path: str) -> int:
    import pcapy

    handle = pcapy.open_offline(path)
    count = 0
    while handle.next()[0] is not None:
        count += 1
    return count


def bpf_matches(path: str, client: str, server: str, transport: str = "tcp") -> list[bytes]:
    """A capture file's packets of one connection (or UDP flow) as a libpcap filter picks them."""
    import pcapy

    (a, p), (b, q) = (endpoint.rpartition(":")[::2] for endpoint in (client, server))
    expression = f"{transport} and host {a} and host {b} and port {p} and port {q}"
    found = []
    source = sources.open_files([path])
    batches = []
    while (batch := source.next_batch()) is not None:
        batches.append(batch)
    source.close()
    for batch in batches:
        program = pcapy.compile(batch.linktype, 65535, expression, 1, 0)
        found += [data for _ts, data in batch.packets() if program.filter(data) != 0]
    return found


@pytest.mark.asyncio
async def test_shift_w_writes_every_connection_the_display_filter_shows(tmp_path):
    app = app_for("zeek/wikipedia.pcap")
    out = tmp_path / "shown [1].pcap"  # brackets in a path are not markup either
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        everything = table_ids(app)
        await pilot.press("slash", *"208.80.152.2", "enter")
        shown = table_ids(app)
        assert 1 < len(shown) < len(everything)
        await pilot.press("W")
        field = app.query_one("#write-all-path", Input)
        assert field.has_focus and field.value == "wirepeek-shown.pcap"
        field.value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        await workers_done(app, "write")
        await pilot.pause()
        assert [n.message for n in app._notifications][-1] == (
            f"wrote {sum(sum(app.store.connections[i].packets) for i in shown)} packets of "
            f"{len(shown)} connections to {out}")
    assert count_packets(str(out)) == sum(sum(app.store.connections[i].packets) for i in shown)
    # The same packets as libpcap picks with a filter per connection (a DNS answer names the
    # address too: its UDP flow is shown).
    ring = app.driver.packets
    singles = sorted(data for i in shown
                     for data in bpf_matches(capture("zeek/wikipedia.pcap"), app.store.connections[i].client,
                                             app.store.connections[i].server,
                                             app.store.connections[i].transport))
    assert sorted(p.data for p in ring.pick([app.store.connections[i] for i in shown]).packets) == singles


@pytest.mark.asyncio
async def test_write_key_saves_the_connection_as_pcap(tmp_path):
    app = app_for("zeek/wikipedia.pcap")
    out = tmp_path / "one.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("j", "j")
        conn_id = app.selected
        await pilot.press("w")
        field = app.query_one("#write-path", Input)
        assert field.value == f"wirepeek-connection-{conn_id}.pcap"
        field.value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        await workers_done(app, "write")
        await pilot.pause()
        info = app.store.connections[conn_id]
        # Said once written (standard output is Textual's inside the app: the writer must not
        # reach for it).
        assert [n.message for n in app._notifications][-1] == (
            f"wrote {sum(info.packets)} packets to {out}")
    assert count_packets(str(out)) == sum(info.packets)


# ---------------------------------------------------------------------------- at 80 columns, UDP


@pytest.mark.asyncio
async def test_end_shows_the_last_connection_above_the_horizontal_scroll_bar():
    """At 80x24 the columns are wider than the screen: the list has a horizontal scroll bar,
    and End (and PgDn to the end) must show the last row above it, not behind it."""
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=(80, 24)) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ConnectionsTable)
        last = table_ids(app)[-1]
        assert table.show_horizontal_scrollbar and len(table_ids(app)) > table.size.height
        await pilot.press("end")
        await pilot.pause()
        assert app.selected == last
        client = app.store.connections[last].client
        assert any(line.split()[:2] == [str(last), client] for line in screen_lines(app))
        await pilot.press("home", *["pagedown"] * 10)
        await pilot.pause()
        assert app.selected == last
        assert any(line.split()[:2] == [str(last), client] for line in screen_lines(app))


def a_dns_flow(app: WirepeekApp) -> int:
    return next(c for c, info in app.store.connections.items()
                if info.transport == "udp" and info.protocol == "dns" and sum(info.packets) > 1)


@pytest.mark.asyncio
async def test_a_udp_flow_shows_its_datagrams_says_it_has_no_stream_and_r_does_not_apply():
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        conn_id = a_dns_flow(app)
        info = app.store.connections[conn_id]
        app.query_one(ConnectionsTable).select(conn_id)
        await until(pilot, lambda: app.selected == conn_id)
        # Packets: tcpdump's line for a UDP datagram, its ports and its payload's length.
        await pilot.press("3")
        listed = app.query_one("#packets-list")
        await until(pilot, lambda: listed.row_count == sum(info.packets))
        lines = [listed.line(i) for i in range(listed.row_count)]
        assert all(" UDP, length " in line for line in lines), lines
        assert not any("not a TCP segment" in line for line in lines)
        client_port, server_port = info.client.rsplit(":", 1)[1], info.server.rsplit(":", 1)[1]
        assert any(f".{client_port} > " in line and line.split(": ")[0].endswith(f".{server_port}")
                   for line in lines)
        # Stream: not a blank pane; it says why, and where to look instead.
        await pilot.press("2")
        await pilot.pause()
        stream = app.query_one(StreamView)
        said = " ".join(stream.render_line(y).text for y in range(4))
        assert "A UDP flow has no byte stream" in said
        assert "Packets tab (3)" in said and "DNS transactions in the DNS tab (1)" in said
        # r: for TLS only; on a DNS flow it says so and changes nothing.
        plaintext = app.driver.plaintext
        await pilot.press("r")
        said = [n.message for n in app._notifications][-1]
        assert said.startswith("r is for TLS connections") and "DNS over UDP" in said
        assert "TLS records as captured" not in said and app.driver.plaintext == plaintext
        # A TCP connection after it: its stream as usual, no note.
        tcp = next(c for c, i in app.store.connections.items() if i.transport == "tcp" and sum(i.bytes))
        app.query_one(ConnectionsTable).select(tcp)
        await until(pilot, lambda: bool(stream.index.blocks))
        assert stream.note == [] and "no byte stream" not in stream.render_line(0).text


def key_1_names(app: WirepeekApp) -> list[str]:
    """What the footer calls the key 1."""
    from textual.widgets._footer import FooterKey

    return [key.description for key in app.query(FooterKey) if key.key == "1"]


@pytest.mark.asyncio
async def test_the_key_1_is_named_after_the_first_tab_in_the_footer_and_help():
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=(80, 24)) as pilot:
        await read_all(app, pilot)
        dns = a_dns_flow(app)
        http = next(c for c, i in app.store.connections.items() if i.protocol == "http")
        for conn_id, name in ((dns, "DNS"), (http, "HTTP"), (dns, "DNS")):
            app.query_one(ConnectionsTable).select(conn_id)
            await until(pilot, lambda name=name: key_1_names(app) == [name])
            assert key_1_names(app) == [name]
            assert str(app.query_one(TabbedContent).get_tab("tab-http").label) == f"{name} (1)"
            await pilot.press("question_mark")
            await pilot.pause()
            help_keys = [(k, d) for k, d in app.screen.bindings if k == "1"]
            assert help_keys == [("1", name)]
            await pilot.press("escape")
        # The key still opens the first tab, whatever it is called.
        await pilot.press("2", "1")
        assert app.query_one(TabbedContent).active == "tab-http"


@pytest.mark.asyncio
async def test_the_footer_is_rebuilt_once_for_bindings_that_change_several_times_in_a_row():
    from tui.widgets.footer import Footer

    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=(80, 24)) as pilot:
        await read_all(app, pilot)
        footer = app.query_one(Footer)
        rebuilds = []
        rebuild = footer.recompose

        async def counted() -> None:
            rebuilds.append(1)
            await rebuild()

        footer.recompose = counted  # type: ignore[method-assign]
        for _ in range(3):
            app.screen.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        assert len(rebuilds) == 1
        # A change after that rebuild gets its own, and the footer shows it.
        dns = a_dns_flow(app)
        http = next(c for c, i in app.store.connections.items() if i.protocol == "http")
        for count, (conn_id, name) in enumerate(((http, "HTTP"), (dns, "DNS"), (http, "HTTP")), 2):
            app.query_one(ConnectionsTable).select(conn_id)
            await until(pilot, lambda name=name: key_1_names(app) == [name])
            assert len(rebuilds) == count


def spy_on_helpers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, bool]]:
    """Each set of helper processes a CaptureDriver makes, and whether the app's screen had
    been mounted then."""
    from tui.capture import CaptureDriver

    made: list[tuple[object, bool]] = []
    mounted: list[bool] = []
    on_mount, new_helpers = WirepeekApp.on_mount, CaptureDriver._new_helpers

    def mount(self: WirepeekApp) -> None:
        mounted.append(True)
        on_mount(self)

    def helpers(self: CaptureDriver) -> object:
        made.append((new_helpers(self), bool(mounted)))
        return made[-1][0]

    monkeypatch.setattr(WirepeekApp, "on_mount", mount)
    monkeypatch.setattr(CaptureDriver, "_new_helpers", helpers)
    return made


@pytest.mark.asyncio
async def test_a_files_helpers_start_before_the_screen_is_built(monkeypatch):
    """The helpers that read a file start as the app loads, so that they read it on the other
    core while Textual builds the screen; the capture thread takes them and makes no others."""
    made = spy_on_helpers(monkeypatch)
    app = app_for("zeek/wikipedia.pcap")
    async with app.run_test(size=(80, 24)) as pilot:
        await read_all(app, pilot)
        assert [when for _, when in made] == [False]  # one set, made before the screen
        assert app.driver.helpers is made[0][0]
        assert app.status is not None and app.status.finished
        assert len(app.store.connections) > 10 and app.store.http


@pytest.mark.asyncio
async def test_helpers_started_for_a_file_that_cannot_be_read_are_stopped(monkeypatch, tmp_path):
    made = spy_on_helpers(monkeypatch)
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture file at all" * 10)
    app = WirepeekApp(SourceSpec(files=(str(junk),)), "", Bounds())
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status is not None and app.status.error is not None)
        assert app.status is not None and app.status.error
        helpers = made[0][0]
        await until(pilot, lambda: not any(p.is_alive() for p in helpers.procs))
        assert app.driver._early is None and not any(p.is_alive() for p in helpers.procs)
