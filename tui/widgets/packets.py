"""The Packets tab: the selected connection's packets (from the recent-packet ring) and a full
dissection of one of them by scapy, made in a worker thread (scapy is slow to import and to
dissect, and the UI must not wait for it)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from engine.sources import Packet
from tui.escape import escape_rendered

MAX_LISTED = 5000


def scapy_layer(linktype: int):  # type: ignore[no-untyped-def]
    # scapy registers its link types as its layers load: load them all, once, in this thread.
    from scapy.all import conf

    return conf.l2types.get(linktype)


def summarise(packets: list[Packet]) -> list[tuple[str, str, str]]:
    """(time, length, scapy's one-line summary) per packet: runs in a worker thread."""
    rows = []
    for p in packets[:MAX_LISTED]:
        layer = scapy_layer(p.linktype)
        try:
            summary = layer(p.data).summary() if layer else f"link type {p.linktype}"
        except Exception as e:  # scapy may fail on anything odd; the list still shows the packet
            summary = f"(scapy: {e})"
        rows.append((f"{p.sec}.{p.usec:06d}", str(len(p.data)), escape_rendered(summary)))
    return rows


def dissect(packet: Packet) -> str:
    """scapy's full layer-by-layer view of one packet, escaped: runs in a worker thread.

    scapy shows payloads as Python byte literals, already escaped: only what escaped that (a
    control character in a field scapy shows as text) is escaped here."""
    layer = scapy_layer(packet.linktype)
    if layer is None:
        return f"scapy does not know link type {packet.linktype}"
    try:
        shown = layer(packet.data).show(dump=True)
    except Exception as e:
        return f"scapy could not dissect this packet: {e}"
    return escape_rendered(shown, keep_newlines=True)


class PacketsView(Vertical):
    class Loaded(Message):
        def __init__(self, conn_id: int, packets: list[Packet], rows: list[tuple[str, str, str]],
                     ring_complete: bool) -> None:
            super().__init__()
            self.conn_id = conn_id
            self.packets = packets
            self.rows = rows
            self.ring_complete = ring_complete

    class Dissected(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.conn_id: int | None = None
        self.packets: list[Packet] = []

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", id="packets-table")
        table.add_columns("#", "time", "len", "summary")
        yield table
        with VerticalScroll(id="packet-dissection"):
            yield Static(id="packet-text")

    def show(self, loaded: Loaded) -> None:
        self.conn_id, self.packets = loaded.conn_id, loaded.packets
        table = self.query_one("#packets-table", DataTable)
        table.clear()
        for n, (ts, length, summary) in enumerate(loaded.rows):
            table.add_row(str(n), ts, length, summary, key=str(n))
        note = "" if loaded.ring_complete else " (older packets are no longer kept)"
        if len(loaded.packets) > len(loaded.rows):
            note += f" (first {len(loaded.rows)} of {len(loaded.packets)} listed)"
        self.query_one("#packet-text", Static).update(
            Text(f"{len(loaded.packets)} packets of connection {loaded.conn_id} kept{note}.", "dim"))
