"""The Packets tab: the selected connection's packets, one line each as `tcpdump -nn` prints them
(a DNS flow's UDP datagrams too), and scapy's full dissection of the packet under the cursor.

The packets come from the recent-packet ring (tui.capture.PacketRing), picked by the connection's
own packet numbers, so a connection that reused the ports of another shows only its own. The list
is virtual: `prepare` (in a worker thread) works out, in one pass, what tcpdump's relative
sequence numbers need (engine.tcpdump.SequenceBases); a line is made only when it is drawn, so a
connection of a hundred thousand packets opens as fast as one of ten. scapy dissects one packet
at a time, in a worker thread (it is slow to import and to dissect; the UI must not wait for it).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from engine.decode import UDP, innermost_tcp, ipv6_payload
from engine.events import ConnectionInfo
from engine.sources import Packet
from engine.tcpdump import (
    ABSOLUTE,
    Offsets,
    SequenceBases,
    address,
    packet_line,
    tcp_header,
    tcp_line,
)
from tui.capture import Picked
from tui.escape import escape_rendered, escape_text
from tui.times import shown

CACHED_LINES = 4096  # lines kept once made; the cache starts again when full


def scapy_layer(linktype: int):  # type: ignore[no-untyped-def]
    # scapy registers its link types as its layers load: load them all, once, in this thread.
    from scapy.all import TCP, UDP, conf

    # Ports as numbers, as everywhere else here (scapy would say "omniorb" for 8088).
    conf.noenum.add(TCP.sport, TCP.dport, UDP.sport, UDP.dport)
    return conf.l2types.get(linktype)


def dissect(packet: Packet) -> str:
    """scapy's full layer-by-layer view of one packet, escaped: runs in a worker thread.

    scapy shows payloads as Python byte literals, already escaped: only what escaped that (a
    control character in a field scapy shows as text) is escaped here."""
    layer = scapy_layer(packet.linktype)
    if layer is None:
        return f"scapy does not know link type {packet.linktype}"
    try:
        text = layer(packet.data).show(dump=True)
    except Exception as e:
        return f"scapy could not dissect this packet: {e}"
    return escape_rendered(text, keep_newlines=True)


def datagram_line(linktype: int, data: bytes) -> str | None:
    """The line tcpdump -nn prints for a UDP datagram (a DNS flow's), without what its protocol
    printers add: `IP 10.0.0.1.40000 > 10.0.0.53.53: UDP, length 29`, the length being the
    payload's (the UDP length less its 8-byte header). None if the packet is not UDP."""
    at = innermost_tcp(linktype, data, 0, len(data), udp=True)  # (the innermost TCP or UDP)
    if at is None:
        return None
    ip, l4 = at.ip, at.l4
    if at.version == 4:
        proto = data[ip + 9]
        src, dst = data[ip + 12 : ip + 16], data[ip + 16 : ip + 20]
    else:
        walked = ipv6_payload(data, ip, at.end)
        proto = walked[0] if walked is not None else -1
        src, dst = data[ip + 8 : ip + 24], data[ip + 24 : ip + 40]
    if proto != UDP:
        return None
    sport, dport = int.from_bytes(data[l4 : l4 + 2], "big"), int.from_bytes(data[l4 + 2 : l4 + 4], "big")
    line = f"{'IP6' if at.version == 6 else 'IP'} {address(src)}.{sport} > {address(dst)}.{dport}: "
    if l4 + 8 > at.end:
        return line + "UDP [|udp]"  # its length was not captured
    length = int.from_bytes(data[l4 + 4 : l4 + 6], "big")
    on_wire = at.wire_end - l4
    if length < 8:
        return line + f"UDP, bad length {length} < 8"
    if length > on_wire:
        return line + f"UDP, bad length {length} > {on_wire}"
    captured = min(at.end, l4 + length) - l4 - 8
    cut = f" ({captured} captured)" if captured < length - 8 else ""
    return line + f"UDP, length {length - 8}{cut}"


def any_line(linktype: int, data: bytes, offsets: Offsets) -> str:
    """tcpdump's line for a TCP segment or a UDP datagram; for anything else, what it is."""
    header = tcp_header(linktype, data)
    if header is not None:
        return tcp_line(header, offsets)
    line = datagram_line(linktype, data)
    return line if line is not None else packet_line(linktype, data, offsets)


class ConnectionPackets(NamedTuple):
    """A connection's packets as the list shows them; made in a worker thread by `prepare`."""

    conn_id: int
    first_ts: float  # the connection's first packet (relative times count from it)
    packets: list[Packet]
    numbers: list[int]  # in the capture, from 0
    complete: bool  # the ring still held all of them
    # Where tcpdump's offsets change: at packets[starts[i]] and after, offsets[i] applies.
    starts: list[int]
    offsets: list[Offsets]


def prepare(info: ConnectionInfo, picked: Picked) -> ConnectionPackets:
    """Walk the packets once for their relative sequence numbers: in a worker thread."""
    bases = SequenceBases()
    starts: list[int] = []
    offsets: list[Offsets] = []
    for n, packet in enumerate(picked.packets):
        found = bases.packet_offsets(packet.linktype, packet.data)
        if not offsets or found != offsets[-1]:
            starts.append(n)
            offsets.append(found)
    return ConnectionPackets(info.id, info.first_ts, picked.packets, picked.numbers,
                             picked.complete, starts, offsets)


class PacketList(ScrollView, can_focus=True):
    """One line per packet: its number in the capture, its time, and tcpdump's line for it."""

    BINDINGS = [
        Binding("up,k", "cursor_up", "Previous packet", show=False, key_display="↑ k"),
        Binding("down,j", "cursor_down", "Next packet", show=False, key_display="↓ j"),
        Binding("pageup", "page_up", "A page up", show=False, key_display="PgUp"),
        Binding("pagedown", "page_down", "A page down", show=False, key_display="PgDn"),
        Binding("home", "first", "First packet", show=False, key_display="Home"),
        Binding("end", "last", "Last packet", show=False, key_display="End"),
    ]

    COMPONENT_CLASSES = {"packets--cursor"}

    DEFAULT_CSS = """
    PacketList {
        background: $surface;
        color: $foreground;
        & > .packets--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .packets--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    class Highlighted(Message):
        """The cursor is on another packet."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.data: ConnectionPackets | None = None
        self.start: float | None = None  # times relative to this, or the wall clock
        self.cursor_row = 0
        self.widest = 0
        self._lines: dict[int, str] = {}
        self._time_width = 0
        self._number_width = 0

    @property
    def row_count(self) -> int:
        return len(self.data.packets) if self.data else 0

    def show(self, data: ConnectionPackets | None) -> None:
        self.data = data
        if data is not None and self.start is not None:
            self.start = data.first_ts  # relative times stay relative, to this connection
        self.cursor_row = 0
        self.widest = 0
        self._restyle()
        self.scroll_to(0, 0, animate=False, immediate=True)
        self._announce()

    def set_relative(self, start: float | None) -> None:
        self.start = start
        self._restyle()

    def _restyle(self) -> None:
        self._lines = {}
        packets = self.data.packets if self.data else []
        if packets:
            # Times grow down the list: the first and the last are the widest there are (a
            # capture's clock may step back; a wider time then only pushes its own line).
            self._time_width = max(len(self._time(packets[0])), len(self._time(packets[-1])))
            assert self.data is not None
            self._number_width = len(str(self.data.numbers[-1] + 1))
        for index in range(min(len(packets), 50)):  # a width to start with
            self.widest = max(self.widest, cell_len(self.line(index)))
        self.virtual_size = Size(self.widest, len(packets))
        self.refresh()

    def _time(self, packet: Packet) -> str:
        return shown(packet.sec + packet.usec / 1e6, self.start)

    def line(self, index: int) -> str:
        """The text of a packet's line (made on first use)."""
        text = self._lines.get(index)
        if text is None:
            assert self.data is not None
            data = self.data
            packet = data.packets[index]
            offsets = data.offsets[bisect_right(data.starts, index) - 1] if data.starts else ABSOLUTE
            text = (f"{data.numbers[index] + 1:>{self._number_width}} "
                    f"{self._time(packet):<{self._time_width}} "
                    f"{any_line(packet.linktype, packet.data, offsets)}")
            if len(self._lines) >= CACHED_LINES:
                self._lines = {}
            self._lines[index] = text
        return text

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        index = scroll_y + y
        if index >= self.row_count:
            return Strip.blank(width, base)
        style = base
        if index == self.cursor_row:
            style += self.get_component_rich_style("packets--cursor")
        text = self.line(index)
        if len(text) > self.widest:
            self.widest = len(text)
            self.call_later(self._widen)
        return Strip([Segment(text, style)]).crop_extend(scroll_x, scroll_x + width, style)

    def _widen(self) -> None:
        shown = self._cursor_shown()
        self.virtual_size = Size(self.widest, self.row_count)
        if shown:  # (a horizontal scroll bar may come with the width: not over the cursor)
            self.call_after_refresh(self._show_cursor)

    def _cursor_shown(self) -> bool:
        top = self.scroll_offset.y
        return top <= self.cursor_row < top + self.visible_rows

    def _show_cursor(self) -> None:
        """Scroll so that the cursor's line is on screen."""
        row, height, top = self.cursor_row, self.visible_rows, self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False, immediate=True)

    # ------------------------------------------------------------------ cursor

    def move_to(self, row: int) -> None:
        if not self.row_count:
            return
        row = max(0, min(row, self.row_count - 1))
        if row == self.cursor_row:
            self._show_cursor()  # (End again: the last line into view, wherever it went)
            return
        old, self.cursor_row = self.cursor_row, row
        self._show_cursor()
        self.refresh_lines(old)
        self.refresh_lines(row)
        self._announce()

    def _announce(self) -> None:
        if self.row_count:
            self.post_message(self.Highlighted(self.cursor_row))

    def action_cursor_up(self) -> None:
        self.move_to(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_to(self.cursor_row + 1)

    @property
    def visible_rows(self) -> int:
        """The lines on screen, less the horizontal scroll bar's (the last packet must not
        stay behind it)."""
        return max(1, self.scrollable_content_region.height)

    def action_page_up(self) -> None:
        self.move_to(self.cursor_row - max(1, self.visible_rows - 1))

    def action_page_down(self) -> None:
        self.move_to(self.cursor_row + max(1, self.visible_rows - 1))

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(self.row_count - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None:
            self.move_to(self.scroll_offset.y + offset.y)


class PacketsView(Vertical):
    """The list over the dissection of the packet under its cursor.

    The app gives it a connection's packets (`show`, with what `prepare` made in a worker) and
    the time to count from (`set_relative`: a connection's first packet, or None for the wall
    clock); it dissects the packet under the cursor itself, in a worker thread.
    """

    class Loaded(Message):
        """A connection's packets, ready to show (posted by the app's loading worker)."""

        def __init__(self, packets: ConnectionPackets) -> None:
            super().__init__()
            self.packets = packets

    class Loading(Message):
        """The app's worker has started picking a connection's packets (posted by it)."""

        def __init__(self, conn_id: int) -> None:
            super().__init__()
            self.conn_id = conn_id

    class Failed(Message):
        """A connection's packets could not be read (the capture file changed or is gone)."""

        def __init__(self, conn_id: int, reason: str) -> None:
            super().__init__()
            self.conn_id = conn_id
            self.reason = reason

    class Dissected(Message):
        def __init__(self, conn_id: int, index: int, text: str) -> None:
            super().__init__()
            self.conn_id = conn_id
            self.index = index
            self.text = text

    def compose(self) -> ComposeResult:
        yield Static(id="packets-note")
        yield PacketList(id="packets-list")
        with VerticalScroll(id="packet-dissection"):
            yield Static(id="packet-text")

    @property
    def conn_id(self) -> int | None:
        data = self.query_one(PacketList).data
        return data.conn_id if data else None

    def show_loading(self, conn_id: int) -> None:
        """Say that this connection's packets are coming (a big one takes a moment): nothing of
        the connection shown before stays on screen meanwhile."""
        if self.conn_id == conn_id:
            return  # its packets again (a tab switch): they stay until the new ones come
        self.query_one(PacketList).show(None)
        self.query_one("#packets-note", Static).update(
            Text(f"reading the packets of connection {conn_id}…", "dim"))
        self.query_one("#packet-text", Static).update("")

    def show_error(self, conn_id: int, reason: str) -> None:
        self.query_one(PacketList).show(None)
        self.query_one("#packets-note", Static).update(
            Text(f"the packets of connection {conn_id}: {escape_text(reason)}", "red"))
        self.query_one("#packet-text", Static).update("")

    def show(self, data: ConnectionPackets | None) -> None:
        self.query_one(PacketList).show(data)
        if data is None:
            self.query_one("#packets-note", Static).update("")
            self.query_one("#packet-text", Static).update("")
            return
        note = "" if data.complete else "; older packets are no longer kept"
        count = len(data.packets)
        self.query_one("#packets-note", Static).update(Text(
            f"{count} packet{'s' if count != 1 else ''} of connection {data.conn_id} "
            f"(numbered as in the capture){note}", "dim"))
        if not data.packets:
            self.query_one("#packet-text", Static).update("")

    def set_relative(self, start: float | None) -> None:
        """Show times since `start` (the connection's first packet), or the wall clock (None).
        Once relative, times stay relative to each connection shown next (its first packet)."""
        self.query_one(PacketList).set_relative(start)

    def on_packet_list_highlighted(self, event: PacketList.Highlighted) -> None:
        data = self.query_one(PacketList).data
        if data is not None and event.index < len(data.packets):
            self.dissect_packet(data.conn_id, event.index, data.packets[event.index])

    @work(thread=True, exclusive=True, group="dissect", exit_on_error=False)
    def dissect_packet(self, conn_id: int, index: int, packet: Packet) -> None:
        self.post_message(self.Dissected(conn_id, index, dissect(packet)))

    def on_packets_view_dissected(self, message: Dissected) -> None:
        packets = self.query_one(PacketList)
        if message.conn_id == self.conn_id and message.index == packets.cursor_row:
            self.query_one("#packet-text", Static).update(Text(message.text))
