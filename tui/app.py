"""The Textual inspector: connections on top, the selected one's HTTP exchanges and stream below.

The capture driver (tui.capture) runs in a thread worker and posts one EngineUpdate per tick;
the app folds it into its own store (tui.store) and redraws only the rows that changed. Nothing
here reads the engine's live objects.
"""

from __future__ import annotations

import asyncio
import sys
import time

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Input, Label, TabbedContent, TabPane
from textual.css.query import NoMatches
from textual.worker import Worker, WorkerState, get_current_worker

from engine import sources
from engine.bounds import Bounds
from engine.events import Stats
from tui.capture import CaptureDriver, SourceSpec
from tui.collector import Collector
from tui.escape import escape_text
from tui.memory import DEFAULT_MEMORY, MemoryReading, MemorySplit, give_back, resident_bytes
from tui.messages import CaptureStatus, EngineUpdate, FilterApplied
from tui.screens.help import HelpScreen
from tui.store import TrafficStore
from tui.widgets.connections import ConnectionsTable
from tui.widgets.detail import HttpView, StreamView
from tui.widgets.packets import PacketsView, dissect, summarise
from tui.widgets.status import StatusBar


SWITCH_INTERVAL = 0.0005  # seconds; see on_mount
KEY_HOLD = 0.05  # seconds the capture thread may wait for a key to be answered, at most
ROWS_BUDGET = 0.02  # seconds of row updates per engine update, at most


class WirepeekApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "wirepeek"

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("f", "edit_capture_filter", "Capture filter"),
        Binding("slash", "edit_display_filter", "Find", key_display="/"),
        Binding("p", "pause", "Pause"),
        Binding("1", "show_tab('tab-http')", "HTTP"),
        Binding("2", "show_tab('tab-stream')", "Stream"),
        Binding("3", "show_tab('tab-packets')", "Packets"),
        Binding("w", "write_pcap", "Write pcap"),
        Binding("W", "write_shown", "Write all shown", show=False),
        Binding("x", "toggle_hex", "Text/hex"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self, spec: SourceSpec, bpf: str = "", bounds: Bounds | None = None,
                 memory: MemorySplit | None = None) -> None:
        """memory: the shares of --memory (tui.memory) for the packet ring and the store; the
        engine's is bounds.memory_budget, which the caller sets from it (tui.cli)."""
        super().__init__()
        bounds = bounds or Bounds()
        self.memory = memory or MemorySplit.of(DEFAULT_MEMORY)
        self.store = TrafficStore(budget=self.memory.store)
        self.driver = CaptureDriver(spec, bpf, bounds, self.post_message, self.memory.ring)
        self.read_resident = resident_bytes  # tests that need the same screen every run set it
        self.resident: int | None = None  # read once a second
        self.resident_at_start: int | None = None
        self._evicted: tuple[int, ...] = ()
        self.selected: int | None = None
        self.paused = False
        self.generation = 0
        self.status: CaptureStatus | None = None
        self.stats: Stats | None = None
        self.file_done = asyncio.Event()  # a capture file has been read to its end (for tests)
        self.collector = Collector()
        self._switch_interval = sys.getswitchinterval()

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield ConnectionsTable(self.store, id="connections")
            with TabbedContent(id="detail", initial="tab-http"):
                with TabPane("HTTP (1)", id="tab-http"):
                    yield HttpView(id="http")
                with TabPane("Stream (2)", id="tab-stream"):
                    yield StreamView(id="stream")
                with TabPane("Packets (3)", id="tab-packets"):
                    yield PacketsView(id="packets")
        with Vertical(id="prompt"):
            yield Label("", id="prompt-error")
            yield Input(id="capture-filter", placeholder="BPF capture filter, e.g. tcp port 80")
            yield Input(id="display-filter", placeholder="show connections matching these words")
            yield Input(id="write-path", placeholder="write the selected connection's packets to")
            yield Input(id="write-all-path", placeholder="write the packets of every connection shown to")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt").display = False
        self.query_one("#connections").focus()
        # The capture thread runs Python flat out under load. Each time the event loop waits (it
        # does many times per key) it gives up the GIL and must win it back, by default after up
        # to 5 ms: dozens of such waits made a key take hundreds of ms. A shorter switch interval
        # costs the engine a little and keeps keys quick.
        sys.setswitchinterval(SWITCH_INTERVAL)
        # Full garbage collections wait until no key has come for a while (tui.collector).
        self.collector.start(time.monotonic())
        self.set_interval(1.0, self._collect)
        self.resident = self.resident_at_start = self.read_resident()
        self.set_interval(1.0, self._sample_memory)
        self.run_capture()

    def on_unmount(self) -> None:
        self.collector.stop()
        sys.setswitchinterval(self._switch_interval)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)) and not event.is_forwarded:
            now = time.monotonic()
            self.collector.key(now)
            self.driver.hold_until = now + KEY_HOLD
            self.call_after_refresh(self._release_hold)
        await super().on_event(event)

    def _release_hold(self) -> None:
        self.driver.hold_until = 0.0

    def _collect(self) -> None:
        self.collector.tick(time.monotonic())

    def _sample_memory(self) -> None:
        evicted = (self.store.evicted_exchanges, self.store.evicted,
                   self.driver.packets.dropped_batches,
                   self.stats.dropped_kept_bytes if self.stats else 0)
        if evicted != self._evicted:
            self._evicted = evicted
            give_back()  # what was evicted since the last second
        self.resident = self.read_resident()
        self._show_status()
        if self.stats is not None:
            self.query_one(StatusBar).tooltip = self._memory_reading(self.stats).describe()

    def _memory_reading(self, stats: Stats) -> MemoryReading:
        store = self.store
        return MemoryReading(self.resident, self.resident_at_start, "scapy" in sys.modules,
                             self.memory, stats.memory_used, self.driver.packets.bytes,
                             store.cost, store.evicted_exchanges, store.evicted)

    @work(thread=True, exclusive=True, exit_on_error=False, name="capture")
    def run_capture(self) -> None:
        worker = get_current_worker()
        self.driver.run(lambda: worker.is_cancelled)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name == "capture" and event.state == WorkerState.ERROR:
            # A bug, not bad input (the driver reports those): say so rather than freeze quietly.
            error = escape_text(f"{type(event.worker.error).__name__}: {event.worker.error}")
            self.notify(f"the capture stopped: {error}", severity="error", timeout=60, markup=False)

    # ------------------------------------------------------------------ engine updates

    def on_engine_update(self, update: EngineUpdate) -> None:
        try:
            self._take(update)
        except NoMatches:
            pass  # the app is closing and its widgets are going; the worker's last words
        finally:
            self.driver.taken.set()  # the driver may send the next one

    def _take(self, update: EngineUpdate) -> None:
        if update.generation != self.generation:
            # The file was read again: nothing shown before stays, not even the open connection.
            self.generation = update.generation
            self.store.reset()
            self.query_one(ConnectionsTable).clear()
            self._select(ConnectionsTable.Selected(None))
        self.store.apply(update.events)
        self.status, self.stats = update.status, update.stats
        if update.stream_id is not None and update.stream_id == self.selected:
            stream = self.query_one(StreamView)
            if update.stream_reset:
                stream.reset(self._endpoints(update.stream_id))
                stream.set_marks(self.store.http.get(update.stream_id, []))
            if update.stream:
                stream.add(update.stream)
        if not self.paused:
            self._redraw()
        self._show_status()
        if update.status.finished and not update.status.live and not self.store.changed:
            self.file_done.set()

    def _redraw(self) -> None:
        changed, removed = self.store.take_changes()
        table = self.query_one(ConnectionsTable)
        # Rows that did not fit in this update's time wait for the next one (keys come first).
        self.store.changed |= table.update_rows(changed, removed, budget=ROWS_BUDGET)
        if self.selected is not None and self.selected in changed:
            transactions = self.store.http.get(self.selected, [])
            self.query_one(HttpView).show(self.selected, transactions)
            self.query_one(StreamView).set_marks(transactions)

    def _show_status(self) -> None:
        if self.status is None or self.stats is None:
            return
        shown = self.query_one(ConnectionsTable).row_count
        self.query_one(StatusBar).show(self.status, self.stats, self.paused, time.monotonic(), shown,
                                       self._memory_reading(self.stats))

    def _endpoints(self, conn_id: int) -> tuple[str, str]:
        info = self.store.connections.get(conn_id)
        return (info.client, info.server) if info else ("client", "server")

    # ------------------------------------------------------------------ selection

    @on(ConnectionsTable.Selected)
    def select_connection(self, event: ConnectionsTable.Selected) -> None:
        if event.conn_id == self.selected:
            return
        try:
            self._select(event)
        except NoMatches:
            pass  # the app is closing: the first rows of a capture came as its widgets went

    def _select(self, event: ConnectionsTable.Selected) -> None:
        self.selected = event.conn_id
        self.driver.follow = event.conn_id
        stream = self.query_one(StreamView)
        stream.reset(self._endpoints(event.conn_id) if event.conn_id is not None
                     else ("client", "server"))
        stream.set_marks(self.store.http.get(event.conn_id, []) if event.conn_id is not None else [])
        self.query_one(HttpView).show(event.conn_id, self.store.http.get(event.conn_id, [])
                                      if event.conn_id is not None else [])
        if self.query_one(TabbedContent).active == "tab-packets":
            self.load_packets()

    @on(ConnectionsTable.Opened)
    def open_detail(self) -> None:
        self.query_one("#http-table").focus()

    @on(DataTable.RowHighlighted, "#http-table")
    def show_transaction(self, event: DataTable.RowHighlighted) -> None:
        if self.selected is None or event.row_key.value is None:
            return
        index = int(event.row_key.value)
        for tx in self.store.http.get(self.selected, []):
            if tx.index == index:
                try:
                    self.query_one(HttpView).describe(tx)
                except NoMatches:
                    pass  # the app is closing: the highlight came as its widgets went
                break

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        seen = []
        for binding in [*self.BINDINGS, *ConnectionsTable.BINDINGS]:
            assert isinstance(binding, Binding)
            seen.append((binding.key_display or binding.key, binding.description))
        seen += [("Tab", "Next pane"), ("Escape", "Back to the connections")]
        self.push_screen(HelpScreen(seen))

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._redraw()
        self._show_status()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "tab-packets":
            self.load_packets()

    # ------------------------------------------------------------------ packets

    @work(thread=True, exclusive=True, group="packets", exit_on_error=False)
    def load_packets(self) -> None:
        conn_id = self.selected
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        if info is None:
            return
        ring = self.driver.packets
        packets = ring.packets_of([(info.client, info.server)])
        complete = ring.dropped_batches == 0
        self.post_message(PacketsView.Loaded(info.id, packets, summarise(packets), complete))

    def on_packets_view_loaded(self, loaded: PacketsView.Loaded) -> None:
        if loaded.conn_id == self.selected:
            self.query_one(PacketsView).show(loaded)

    @on(DataTable.RowHighlighted, "#packets-table")
    def packet_highlighted(self, event: DataTable.RowHighlighted) -> None:
        view = self.query_one(PacketsView)
        if event.row_key.value is not None and int(event.row_key.value) < len(view.packets):
            self.dissect_packet(view.packets[int(event.row_key.value)])

    @work(thread=True, exclusive=True, group="dissect", exit_on_error=False)
    def dissect_packet(self, packet: object) -> None:
        self.post_message(PacketsView.Dissected(dissect(packet)))  # type: ignore[arg-type]

    def on_packets_view_dissected(self, message: PacketsView.Dissected) -> None:
        self.query_one("#packet-text").update(Text(message.text))  # type: ignore[attr-defined]

    def action_write_pcap(self) -> None:
        if self.selected is None:
            self.notify("select a connection first", severity="warning")
            return
        self._open_prompt("#write-path", f"wirepeek-connection-{self.selected}.pcap")

    @on(Input.Submitted, "#write-path")
    def write_pcap(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        info = self.store.connections.get(self.selected) if self.selected is not None else None
        if not path or info is None:
            return
        self._close_prompt()
        self.write_connections([(info.client, info.server)], path, "")

    def action_write_shown(self) -> None:
        if not self.query_one(ConnectionsTable).row_count:
            self.notify("no connection is shown", severity="warning")
            return
        self._open_prompt("#write-all-path", "wirepeek-shown.pcap")

    @on(Input.Submitted, "#write-all-path")
    def write_shown(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            return
        self._close_prompt()
        connections = self.store.connections
        shown = [(info.client, info.server) for conn_id in self.query_one(ConnectionsTable).order
                 if (info := connections.get(conn_id)) is not None]
        self.write_connections(shown, path,
                               f" of {len(shown)} connection{'s' if len(shown) != 1 else ''}")

    @work(thread=True, exclusive=True, group="write", exit_on_error=False)
    def write_connections(self, endpoints: list[tuple[str, str]], path: str, what: str) -> None:
        """Write the packets of these connections that the ring still holds, and say how it went
        ("wrote N packets{what} to PATH")."""
        ring = self.driver.packets
        try:
            written = sources.write_packet_list(ring.packets_of(endpoints), path)
        except sources.CaptureError as e:
            self.call_from_thread(self.notify, escape_text(str(e)), severity="error", markup=False)
            return
        older = " (older packets are no longer held)" if ring.dropped_batches else ""
        self.call_from_thread(self.notify, escape_text(f"wrote {written} packets{what} to {path}{older}"),
                              markup=False)

    def action_toggle_hex(self) -> None:
        self.query_one(StreamView).toggle_hex()
        self.query_one(TabbedContent).active = "tab-stream"

    def action_back(self) -> None:
        if self.query_one("#prompt").display:
            self._close_prompt()
        else:
            self.query_one("#connections").focus()

    def action_edit_capture_filter(self) -> None:
        self._open_prompt("#capture-filter", self.status.filter if self.status else self.driver.bpf)

    def action_edit_display_filter(self) -> None:
        self._open_prompt("#display-filter", self.query_one(ConnectionsTable).query_text)

    def _open_prompt(self, which: str, value: str) -> None:
        prompt = self.query_one("#prompt")
        prompt.display = True
        for field in prompt.query(Input):
            field.display = f"#{field.id}" == which
        self.query_one("#prompt-error", Label).update("")
        field = self.query_one(which, Input)
        field.value = value
        field.focus()

    def _close_prompt(self) -> None:
        self.query_one("#prompt").display = False
        self.query_one("#connections").focus()

    @on(Input.Submitted, "#capture-filter")
    def apply_capture_filter(self, event: Input.Submitted) -> None:
        self.query_one("#prompt-error", Label).update(Text("checking…", "dim"))
        self.driver.set_filter(event.value.strip())

    def on_filter_applied(self, message: FilterApplied) -> None:
        if not self.is_running:
            return
        if message.error is not None:
            # The old filter stays in force; say why, and leave the input open to fix it.
            self.query_one("#prompt-error", Label).update(Text(escape_text(message.error), "bold red"))
            return
        self._close_prompt()
        self.notify(escape_text(f"capture filter: {message.expression or '(none)'}"), timeout=2,
                    markup=False)

    @on(Input.Submitted, "#display-filter")
    def apply_display_filter(self, event: Input.Submitted) -> None:
        table = self.query_one(ConnectionsTable)
        table.query_text = event.value.strip().lower()
        table.rebuild()
        self._close_prompt()
        self._show_status()
