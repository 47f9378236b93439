"""The Textual inspector: connections on top, the selected one's HTTP exchanges (or another
protocol's transactions) and stream below.

The capture driver (tui.capture) runs in a thread worker and posts one EngineUpdate per tick;
the app folds it into its own store (tui.store) and redraws only the rows that changed. Nothing
here reads the engine's live objects. The UI talks to the driver only through the driver's small
interface (`follow`, `set_filter`, `hold_until`, `taken`, `packets`) and its messages.

The selected connection lives in one place, the app's `selected` reactive: the panes watch it.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import sys
import time
from collections.abc import Sequence

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, TabbedContent, TabPane, Tabs
from textual.worker import Worker, WorkerState, get_current_worker

from engine import sources
from engine.bounds import Bounds
from engine.content import decode_message_body
from engine.events import ConnectionInfo, HttpTransaction, Stats
from engine.export import body_message, curl_command, raw_http
from engine.filter import FilterError
from engine.har import entry as har_entry
from engine.har import har
from engine.protocols import PROTOCOLS
from engine.records import dumps
from engine.stats import GROUPINGS, Stats
from engine.tls import DECRYPTED
from tui.capture import CaptureDriver, SourceSpec
from tui.collector import Collector
from tui.escape import escape_text
from tui.exchange_log import Exchange
from tui.memory import DEFAULT_MEMORY, MemoryReading, MemorySplit, give_back, resident_bytes
from tui.messages import CaptureStatus, EngineUpdate, FilterApplied, KeylogLoaded
from tui.screens.help import HelpScreen
from tui.search import NO_EXCHANGES, Query, Search, Snapshot, scan
from tui.store import (
    FINISHED_STATES,
    TrafficStore,
    exchange_log_bytes,
    lists_transactions,
    tls_summary,
)
from tui.widgets.connections import ConnectionsTable
from tui.widgets.footer import Footer
from tui.widgets.http import ExchangesTable, HttpView
from tui.widgets.packets import PacketsView, prepare
from tui.widgets.stats import StatsView, group_filter, shown_copy
from tui.widgets.status import StatusBar
from tui.widgets.stream import StreamView
from tui.widgets.table import VirtualTable
from tui.widgets.transactions import title

SWITCH_INTERVAL = 0.0005  # seconds; see on_mount
STATS_EVERY = 2.0  # seconds between two counts of new exchanges while the Stats tab is shown
OSC52_LIMIT = 100_000  # bytes copied by OSC 52 at most (terminals and tmux cap what they take)
KEY_HOLD = 0.05  # seconds the capture thread may wait for a key to be answered, at most
ROWS_BUDGET = 0.02  # seconds of row updates per engine update, at most
MORE_ROWS_AFTER = 0.03  # seconds before rows left over are drawn when no update comes
# Seconds between redraws while a file is read, or while a live capture's thread is behind
# the traffic: updates then come as fast as the screen takes them, and a redraw of every one
# was half of the app's CPU on a big file, and under heavy live traffic held the interpreter
# (the GIL) from the capture thread for as long.
BUSY_REDRAW = 0.25
# The same while a file is read: the screen (a redraw of a full table took ~40 ms at 120x40)
# shares the two cores with the capture thread and the HTTP helpers, which the load waits for.
FILE_REDRAW = 0.5


class Searched(Message):
    """A search of the whole store, made in a worker thread, is ready."""

    def __init__(self, search: Search, generation: int) -> None:
        super().__init__()
        self.search = search
        self.generation = generation


def _alarming(before: CaptureStatus | None, after: CaptureStatus) -> bool:
    """Whether the status bar must say at once what changed, even between redraws: packets lost
    (the kernel's drops, the backlog's skips), an error, the end of a file."""
    if before is None:
        return True
    lost = [(s.capture.dropped + s.capture.if_dropped if s.capture else 0, s.skipped)
            for s in (before, after)]
    return (lost[1] != lost[0] or after.error != before.error
            or after.finished != before.finished or after.shedding != before.shedding
            or [h.state for h in after.hosts] != [h.state for h in before.hosts])


# What the first tab can be named: the footer and help name its key the same.
FIRST_TAB_NAMES = ("HTTP", *dict.fromkeys(title(p.name) for p in PROTOCOLS))


def is_tls(info: ConnectionInfo) -> bool:
    """Whether a connection is TLS (a hello of it was seen, or it was tried with a key log)."""
    return (info.protocol == "tls" or info.tls_random is not None or info.sni is not None
            or info.server_hello is not None or info.tls_decryption is not None)


class WirepeekApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "wirepeek"

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("f", "edit_capture_filter", "Capture filter"),
        Binding("slash", "edit_display_filter", "Find", key_display="/"),
        Binding("p", "pause", "Pause", show=False),
        # Priority: the tab keys work wherever the focus is (but not while typing in a prompt).
        # The first tab's key is named after what the tab lists (HTTP exchanges, or a protocol's
        # transactions): one binding per name, only the one that fits shown (check_action).
        *(Binding("1", f"show_tab('tab-http', {name!r})", name, priority=True)
          for name in FIRST_TAB_NAMES),
        Binding("2", "show_tab('tab-stream')", "Stream", priority=True),
        Binding("3", "show_tab('tab-packets')", "Packets", priority=True),
        Binding("4", "show_tab('tab-stats')", "Stats", priority=True),
        Binding("g", "group_stats", "Stats: group by endpoint, host or status", show=False),
        Binding("z", "zoom", "Zoom"),
        Binding("w", "write_pcap", "Write pcap", show=False),
        Binding("W", "write_shown", "Write all shown", show=False),
        Binding("e", "export_har", "HAR of the selected connection's exchanges shown", show=False),
        Binding("E", "export_har_shown", "HAR of every exchange shown", show=False),
        Binding("c", "copy_curl", "Copy the exchange as a curl command (OSC 52)", show=False),
        Binding("C", "copy_raw", "Copy the exchange as raw HTTP (OSC 52)", show=False),
        Binding("b", "save_body", "Save the exchange's body, decoded, to a file", show=False),
        Binding("x", "toggle_hex", "Text/hex"),
        Binding("F", "toggle_frames", "HTTP/2 frames in the stream", show=False),
        Binding("t", "toggle_times", "Clock/relative times", show=False),
        Binding("K", "load_keylog", "Load a TLS key log", show=False),
        Binding("r", "toggle_records", "TLS: plaintext or records", show=False),
        Binding("escape", "back", "Back to the connections", show=False, key_display="Escape"),
    ]

    # The connection whose details are shown (None: none). The panes watch it.
    selected: reactive[int | None] = reactive(None, init=False)
    # Times in the Stream and Packets tabs: the wall clock, or since the connection's first packet.
    relative_times: reactive[bool] = reactive(False, init=False)

    def __init__(self, spec: SourceSpec, bpf: str = "", bounds: Bounds | None = None,
                 memory: MemorySplit | None = None, jobs: int | None = None) -> None:
        """memory: the shares of --memory (tui.memory) for the packet ring and the store; the
        engine's is bounds.memory_budget, which the caller sets from it (tui.cli). jobs: the
        processes that parse a capture file's HTTP (tui.capture.CaptureDriver)."""
        super().__init__()
        bounds = bounds or Bounds()
        self.memory = memory or MemorySplit.of(DEFAULT_MEMORY)
        self.store = TrafficStore(budget=self.memory.store, log_bytes=exchange_log_bytes(bounds))
        self.driver = CaptureDriver(spec, bpf, bounds, self.post_message, self.memory.ring, jobs)
        self.read_resident = resident_bytes  # tests that need the same screen every run set it
        self.resident: int | None = None  # read once a second
        self.resident_at_start: int | None = None
        self._evicted: tuple[int, ...] = ()
        self.search: Search | None = None  # what `/` found, once its scan is done
        # The Stats tab's counts, and how far each connection's exchanges were counted.
        self._stats: Stats | None = None
        self._stats_shown: Stats | None = None  # the copy of it that the Stats tab shows
        self._stats_seen: dict[int, tuple[object, int]] = {}
        self._stats_grouping = "endpoint"
        self._stats_running = False
        self.searching: Query | None = None  # a scan under way
        self._since_scan: set[int] = set()  # connections that changed while it ran
        self.paused = False
        self._more_rows_due = False  # a timer will draw the rows left over
        self._drawn_at = 0.0  # when the rows were last redrawn (time.monotonic)
        self._stream_plain = False  # the Stream tab shows a TLS connection's plaintext
        self.first_tab = "HTTP"  # what the first tab is named (and the key 1 in the footer)
        self.generation = 0
        self.status: CaptureStatus | None = None
        self.stats: Stats | None = None
        self.file_done = asyncio.Event()  # a capture file has been read to its end (for tests)
        self.collector = Collector()
        self._switch_interval = sys.getswitchinterval()

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield ConnectionsTable(self.store, hosts=bool(self.driver.hosts),
                                   processes=self.driver.attribution is not None, id="connections")
            with TabbedContent(id="detail", initial="tab-http"):
                with TabPane("HTTP (1)", id="tab-http"):
                    yield HttpView(id="http")
                with TabPane("Stream (2)", id="tab-stream"):
                    yield StreamView(id="stream")
                with TabPane("Packets (3)", id="tab-packets"):
                    yield PacketsView(id="packets")
                with TabPane("Stats (4)", id="tab-stats"):
                    yield StatsView(id="stats")
        with Vertical(id="prompt"):
            yield Label("", id="prompt-error")
            yield Input(id="capture-filter", placeholder="BPF capture filter, e.g. tcp port 80")
            yield Input(id="display-filter", placeholder="find: words, or status >= 500, dur > 1s, path ~ ^/api, header.x-id = abc (? for all)")
            yield Input(id="write-path", placeholder="write the selected connection's packets to")
            yield Input(id="write-all-path", placeholder="write the packets of every connection shown to")
            yield Input(id="har-path", placeholder="write the selected connection's exchanges shown as HAR to")
            yield Input(id="har-all-path", placeholder="write every exchange shown as HAR to")
            yield Input(id="body-path", placeholder="save the selected exchange's body (decoded) to")
            yield Input(id="keylog-path", placeholder="TLS key log file to decrypt with (the SSLKEYLOGFILE format)")
        yield StatusBar(id="status")
        yield Footer()

    def on_load(self) -> None:
        # Full garbage collections wait until no key has come for a while (tui.collector).
        self.collector.start(time.monotonic())
        self.driver.start_early()

    def on_mount(self) -> None:
        self.set_interval(STATS_EVERY, self._refresh_stats)
        self.query_one("#prompt").display = False
        self.query_one(Tabs).can_focus = False  # Tab goes from the list to the tab's content
        self._stream_shown()
        self.query_one("#connections").focus()
        # The capture thread runs Python flat out under load. Each time the event loop waits (it
        # does many times per key) it gives up the GIL and must win it back, by default after up
        # to 5 ms: dozens of such waits made a key take hundreds of ms. A shorter switch interval
        # costs the engine a little and keeps keys quick.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.set_interval(1.0, self._collect)
        self.resident = self.resident_at_start = self.read_resident()
        self.set_interval(1.0, self._sample_memory)
        self.run_capture()

    def on_unmount(self) -> None:
        self.driver.drop_early()  # (if the capture thread never took them)
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
        try:
            self._show_status()
            if self.stats is not None:
                self.query_one(StatusBar).tooltip = self._memory_reading(self.stats).describe()
        except NoMatches:
            pass  # the app is closing: the timer fired as its widgets went

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
            if self.search is not None:
                self.search = Search(self.search.query)
            self.query_one(ConnectionsTable).clear()
            self.selected = None
            self._show_detail()
        before = self.status
        self.store.apply(update.events)
        if update.exchanges:
            self.store.apply_encoded(update.exchanges)
        if update.processes:
            self.store.set_processes(update.processes)
        self.status, self.stats = update.status, update.stats
        self._tell_followed()
        if update.stream_id is not None and update.stream_id == self.selected:
            stream = self.query_one(StreamView)
            if update.stream_reset:
                self._stream_plain = update.stream_plain
                endpoints, sent, live = self._stream_facts(update.stream_id)
                stream.reset(endpoints, (0, 0) if update.stream_plain else sent, live,
                             update.stream_note or self._stream_note(update.stream_id))
                stream.set_marks(self._marks(update.stream_id))
            if update.stream:
                stream.add(update.stream)
        if not self._redraw_due_in():
            if not self.paused:
                self._redraw()
            self._show_status()
        elif _alarming(before, update.status):
            self._show_status()
        self._rows_left()

    def _redraw_due_in(self) -> float:
        """Seconds before rows and status may be redrawn: none for a live capture that keeps
        up, nor once the capture is read to its end (its last rows are not held back), else
        BUSY_REDRAW (a file: FILE_REDRAW) after the last redraw."""
        status = self.status
        if status is None or status.finished or (status.live and not status.behind):
            return 0.0
        every = BUSY_REDRAW if status.live else FILE_REDRAW
        return max(0.0, self._drawn_at + every - time.monotonic())

    def _rows_left(self) -> None:
        """Rows that did not fit in an update's time are drawn soon after, whether or not
        another update comes (a file read to its end sends none); then a file is done."""
        if self.store.changed and not self.paused:
            if not self._more_rows_due:
                self._more_rows_due = True
                self.set_timer(max(MORE_ROWS_AFTER, self._redraw_due_in()), self._more_rows)
        elif self.status is not None and self.status.finished and not self.status.live:
            self.file_done.set()

    def _more_rows(self) -> None:
        self._more_rows_due = False
        try:
            self._redraw()
            self._show_status()
        except NoMatches:
            return  # the app is closing
        self._rows_left()

    def _redraw(self) -> None:
        self._drawn_at = time.monotonic()  # (paused, the status bar is still drawn)
        changed, removed = self.store.take_changes()
        if self.searching is not None:
            self._since_scan |= changed
        table = self.query_one(ConnectionsTable)
        # Rows that did not fit in this update's time wait for the next one (keys come first).
        self.store.changed |= table.update_rows(changed, removed, budget=ROWS_BUDGET)
        if self.selected is not None and self.selected in changed:
            self._show_http()
            self.query_one(StreamView).set_marks(self._marks(self.selected))
        exchanges = self.query_one(ExchangesTable)
        exchanges.tick(self._now())

    def _marks(self, conn_id: int | None) -> Sequence[Exchange]:
        """The exchanges whose starts the Stream tab marks: a TLS connection's only when it
        shows the decrypted plaintext (their offsets are in it), not its records; none of
        another protocol's transactions (they have no offsets)."""
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        if info is None or lists_transactions(info.protocol):
            return []
        tls = info.tls_decryption is not None or info.server_hello is not None
        if tls and not self._stream_plain:
            return []
        return self.store.http.get(info.id, [])

    def action_toggle_records(self) -> None:
        """The Stream tab of a decrypted TLS connection: its plaintext, or its records. On a
        connection that is not TLS it says so and changes nothing."""
        info = self.store.connections.get(self.selected) if self.selected is not None else None
        if info is not None and not is_tls(info):
            name = {"http": "HTTP", "http2": "HTTP/2"}.get(info.protocol or "", title(info.protocol))
            what = (f"{name or 'a flow'} over {info.transport.upper()}, which has no byte stream"
                    if info.transport != "tcp" else
                    f"{name or 'plain TCP'}, not TLS: its stream is shown as captured")
            self.notify(f"r is for TLS connections (plaintext or records): connection {info.id} is "
                        + what, severity="warning", timeout=3, markup=False)
            return
        driver = self.driver
        driver.plaintext = not driver.plaintext
        driver.resend()
        self.notify("Stream tab: " + ("decrypted plaintext (when there is a key log's)"
                                      if driver.plaintext else "TLS records as captured"),
                    timeout=2)

    def _now(self) -> float:
        """The time a pending request's wait runs to: the wall clock when live, else the last
        packet's time."""
        if self.status is not None and self.status.live:
            return time.time()
        return self.stats.ts if self.stats is not None and self.stats.ts is not None else 0.0

    def _show_status(self) -> None:
        if self.status is None or self.stats is None:
            return
        shown = self.query_one(ConnectionsTable).row_count
        found = None
        if self.searching is not None:
            found = "searching…"
        elif self.search is not None:
            n = self.search.matched
            found = f"{n:,} match{'es' if n != 1 else ''}"  # (exchanges and transactions)
        self.query_one(StatusBar).show(self.status, self.stats, self.paused, time.monotonic(), shown,
                                       self._memory_reading(self.stats), found)

    def _stream_facts(self, conn_id: int | None) -> tuple[tuple[str, str], tuple[int, int], bool]:
        """What StreamView.reset needs: endpoints, each side's stream length, whether open."""
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        if info is None:
            return ("client", "server"), (0, 0), False
        sent = (info.bytes[0] + info.missing_bytes[0], info.bytes[1] + info.missing_bytes[1])
        # Open: neither closed nor reset (a closed connection lingers in the engine's table for a
        # while before it leaves it, so the store's closed set is not enough).
        live = conn_id not in self.store.closed and info.state not in FINISHED_STATES
        return (info.client, info.server), sent, live

    def _stream_note(self, conn_id: int | None) -> str:
        """What the Stream tab says of a connection that has no byte stream (a UDP flow)."""
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        if info is None or info.transport == "tcp":
            return ""
        transport = info.transport.upper()
        where = "its datagrams are in the Packets tab (3)"
        if lists_transactions(info.protocol):
            where += f",\nits {title(info.protocol)} transactions in the {title(info.protocol)} tab (1)"
        return f"A {transport} flow has no byte stream to show:\n{where}."

    # ------------------------------------------------------------------ selection

    @on(VirtualTable.Selected, "#connections")
    def select_connection(self, event: VirtualTable.Selected) -> None:
        self.selected = event.row

    def watch_selected(self) -> None:
        try:
            self._show_detail()
        except NoMatches:
            pass  # the app is closing: the first rows of a capture came as its widgets went

    def _show_detail(self) -> None:
        conn_id = self.selected
        self._tell_followed()
        self.driver.follow = conn_id
        endpoints, _sent, live = self._stream_facts(conn_id)
        stream = self.query_one(StreamView)
        # The driver's next update brings what is kept.
        stream.reset(endpoints, live=live, note=self._stream_note(conn_id))
        stream.set_marks(self._marks(conn_id))
        self._show_http()
        self._show_times()
        if self.query_one(TabbedContent).active == "tab-packets":
            self.load_packets()

    def _show_http(self) -> None:
        conn_id = self.selected
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        search = self.search
        positions = None
        if search is not None and conn_id is not None:
            positions = search.exchanges.setdefault(conn_id, [])
        # The tab is named after what it lists: HTTP exchanges, or another protocol's transactions.
        protocol = info.protocol if info is not None else None
        name = title(protocol) if lists_transactions(protocol) else "HTTP"
        label = f"{name} (1)"
        tab = self.query_one(TabbedContent).get_tab("tab-http")
        if str(tab.label) != label:
            tab.label = label
        first = name if name in FIRST_TAB_NAMES else "HTTP"
        if first != self.first_tab:
            self.first_tab = first  # the footer and help name the key 1 the same
            self.refresh_bindings()
        self.query_one(HttpView).show(
            conn_id, self.store.exchanges(conn_id) if conn_id is not None else [],
            self.store.pending.get(conn_id) if conn_id is not None else None,
            info.protocol if info else None, positions, search.query.text if search else "",
            self.store.dropped.get(conn_id, 0) if conn_id is not None else 0,
            tls=tls_summary(info) if info is not None and info.tls_decryption else "")

    @on(VirtualTable.Opened, "#connections")
    def open_detail(self) -> None:
        self._focus_detail()

    def _focus_detail(self) -> None:
        """Focus the content of the tab shown (not the tab strip)."""
        tab = self.query_one(TabbedContent).active
        target = {"tab-stream": "#stream", "tab-packets": "#packets-list",
                  "tab-stats": "#stats-table"}
        if tab in target:
            self.query_one(target[tab]).focus()
        else:
            self.query_one(HttpView).table.focus()  # the exchanges, or the transactions

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        seen = []
        for binding in [*self.BINDINGS, *VirtualTable.BINDINGS]:
            assert isinstance(binding, Binding)
            if binding.action.startswith("show_tab('tab-http', ") and binding.description != self.first_tab:
                continue  # (the key 1 as the connection open names it)
            seen.append((binding.key_display or binding.key, binding.description))
        seen += [("Tab", "Next pane"), ("← → h l", "Scroll sideways (lists, stream, message)"),
                 ("mouse drag, Ctrl+C", "Select text and copy it")]
        self.push_screen(HelpScreen(seen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_tab" and isinstance(self.focused, Input):
            return False  # a digit typed in a prompt is text
        if action == "show_tab" and len(parameters) > 1:
            return parameters[1] == self.first_tab  # the key 1 named as its tab is
        return True

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._redraw()
            self._rows_left()
        self._show_status()

    @on(TabbedContent.TabActivated)
    def tab_shown(self) -> None:
        self._stream_shown()
        if self.query_one(TabbedContent).active == "tab-stats":
            self._refresh_stats()

    # ------------------------------------------------------------------ statistics

    def _refresh_stats(self) -> None:
        """While the Stats tab is shown, count in the exchanges that came since (in a worker
        thread, reading them from the exchange log), every STATS_EVERY seconds."""
        if self.query_one(TabbedContent).active != "tab-stats" or self._stats_running:
            return
        store = self.store
        snapshot = [(info, txs, len(txs)) for conn_id, info in store.connections.items()
                    for txs in (store.http.get(conn_id, NO_EXCHANGES),)]  # fmt: skip
        self._stats_running = True
        self.count_stats(snapshot, self._stats, self._stats_shown, self._stats_seen, self.generation)

    @work(thread=True, exclusive=True, group="stats", exit_on_error=False)
    def count_stats(self, snapshot: Snapshot, stats: Stats | None, shown: Stats | None,
                    seen: dict[int, tuple[object, int]], generation: int) -> None:
        """Count in what came since (into `stats`, which only this worker changes), and give
        the Stats tab a copy of the counts that the next round leaves as they are: the groups
        it shows keep the numbers of their order until the next refresh sorts them again."""
        try:
            fresh = stats is None or any(
                conn_id in seen and seen[conn_id][0] is not txs for conn_id, txs in
                ((info.id, txs) for info, txs, _ in snapshot))  # fmt: skip
            if fresh:  # (exchanges were evicted: counted again from what is kept)
                stats, seen = Stats(self._stats_grouping), {}
            assert stats is not None
            counted: set[str] = set()
            for info, txs, length in snapshot:
                start = seen.get(info.id, (txs, 0))[1]
                for i in range(start, length):
                    counted.add(stats.add(txs[i], info))
                seen[info.id] = (txs, length)
            shown = shown_copy(stats, None if fresh else shown, counted)
        except Exception:
            self.call_from_thread(self._stats_counted, None, None, {}, generation)
            raise
        self.call_from_thread(self._stats_counted, stats, shown, seen, generation)

    def _stats_counted(self, stats: Stats | None, shown: Stats | None,
                       seen: dict[int, tuple[object, int]], generation: int) -> None:
        self._stats_running = False
        if (stats is None or shown is None or generation != self.generation
                or stats.grouping != self._stats_grouping):
            self._stats, self._stats_shown, self._stats_seen = None, None, {}
            return
        self._stats, self._stats_shown, self._stats_seen = stats, shown, seen
        gone = self.store.evicted_exchanges or any(self.store.dropped.values())
        self.query_one(StatsView).show(shown, "exchanges no longer kept (evicted) are not counted" if gone else "")

    def action_group_stats(self) -> None:
        order = list(GROUPINGS)
        self._stats_grouping = order[(order.index(self._stats_grouping) + 1) % len(order)]
        self._stats, self._stats_shown, self._stats_seen = None, None, {}
        self.query_one(StatsView).show(None)
        self.action_show_tab("tab-stats")
        self._refresh_stats()

    @on(VirtualTable.Opened, "#stats-table")
    def open_stats_group(self, event: VirtualTable.Opened) -> None:
        view = self.query_one(StatsView)
        if view.stats is None or event.row is None:
            return
        expression = group_filter(view.stats.grouping, event.row)
        if expression is None:
            self.notify("no filter can name this group", severity="warning")
            return
        self._apply_query(expression)
        self.notify(escape_text(f"showing the exchanges of {event.row} (/ shows the filter)"),
                    markup=False)  # fmt: skip

    def _stream_shown(self) -> None:
        """The Stream tab indexes bytes only while it is shown (tui.widgets.stream), and a
        file's stream is read again only then (tui.follow)."""
        shown = self.query_one(TabbedContent).active == "tab-stream"
        self.query_one(StreamView).set_shown(shown)
        self.driver.stream_shown = shown

    def _tell_followed(self) -> None:
        """Give the driver the selected connection as the store has it now (a file's stream
        is read again up to its last packet: tui.follow)."""
        conn_id = self.selected
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        told = self.driver.follow_info
        if info is None or (told is not None and told[0] is info):
            return
        self.driver.follow_info = (info, conn_id in self.store.closed, self.generation)

    @on(StreamView.Stale)
    def resend_stream(self) -> None:
        self.driver.resend()

    def action_show_tab(self, tab: str, name: str = "") -> None:
        """Show a tab (name: what the footer calls the first one, HTTP or a protocol's)."""
        tabs = self.query_one(TabbedContent)
        detail = self.focused is not None and tabs in self.focused.ancestors
        tabs.active = tab
        self._stream_shown()
        if detail:
            self._focus_detail()  # the focus was in the old tab, now hidden: take it along
        if tab == "tab-packets":
            self.load_packets()

    def action_zoom(self) -> None:
        """The detail pane takes the whole screen, or gives the list its share back."""
        connections = self.query_one("#connections")
        connections.display = not connections.display
        if not connections.display:
            self._focus_detail()

    # ------------------------------------------------------------------ packets

    @work(thread=True, exclusive=True, group="packets", exit_on_error=False)
    def load_packets(self) -> None:
        """The selected connection's packets from the ring, by its own packet numbers."""
        conn_id, generation = self.selected, self.generation
        info = self.store.connections.get(conn_id) if conn_id is not None else None
        if info is None:
            return
        self.post_message(PacketsView.Loading(info.id))
        picked = self.driver.packets.pick([info], generation)
        if picked.error is not None:
            self.post_message(PacketsView.Failed(info.id, picked.error))
        elif not picked.reread:  # else the app is about to show the new reading instead
            self.post_message(PacketsView.Loaded(prepare(info, picked)))

    def on_packets_view_loading(self, loading: PacketsView.Loading) -> None:
        if loading.conn_id == self.selected:
            self.query_one(PacketsView).show_loading(loading.conn_id)

    def on_packets_view_failed(self, failed: PacketsView.Failed) -> None:
        if failed.conn_id == self.selected:
            self.query_one(PacketsView).show_error(failed.conn_id, failed.reason)

    def on_packets_view_loaded(self, loaded: PacketsView.Loaded) -> None:
        if loaded.packets.conn_id == self.selected:
            self.query_one(PacketsView).show(loaded.packets)

    def action_write_pcap(self) -> None:
        if self.selected is None:
            self.notify("select a connection first", severity="warning")
            return
        info = self.store.connections.get(self.selected)
        # A decrypted connection's keys go with it into a pcapng file (pcap has no place for them).
        kind = "pcapng" if info is not None and info.tls_decryption == DECRYPTED else "pcap"
        self._open_prompt("#write-path", f"wirepeek-connection-{self.selected}.{kind}")

    @on(Input.Submitted, "#write-path")
    def write_pcap(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        info = self.store.connections.get(self.selected) if self.selected is not None else None
        if not path or info is None:
            return
        self._close_prompt()
        self.write_connections([info], path, "", self.generation)

    def action_write_shown(self) -> None:
        if not self.query_one(ConnectionsTable).row_count:
            self.notify("no connection is shown", severity="warning")
            return
        keys = self.driver.keys
        self._open_prompt("#write-all-path",
                          "wirepeek-shown.pcapng" if keys is not None and keys.given else "wirepeek-shown.pcap")

    @on(Input.Submitted, "#write-all-path")
    def write_shown(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            return
        self._close_prompt()
        connections = self.store.connections
        shown = [info for conn_id in self.query_one(ConnectionsTable).order
                 if (info := connections.get(conn_id)) is not None]
        self.write_connections(shown, path,
                               f" of {len(shown)} connection{'s' if len(shown) != 1 else ''}",
                               self.generation)

    # ------------------------------------------------------------------ export and copy

    def _shown_positions(self, conn_id: int) -> list[int]:
        """The positions of a connection's exchanges that are shown (under a search: those that
        matched)."""
        txs = self.store.http.get(conn_id, NO_EXCHANGES)
        if self.search is not None:
            return list(self.search.exchanges.get(conn_id, ()))
        return list(range(len(txs)))

    def action_export_har(self) -> None:
        """The exchange under the cursor when the exchanges have the focus, else the selected
        connection's exchanges (as shown)."""
        if self.selected is None:
            self.notify("select a connection first", severity="warning")
            return
        if self._not_http(self.selected):
            return
        if not self._shown_positions(self.selected):
            self.notify("this connection shows no HTTP exchange: nothing to write as HAR",
                        severity="warning")
            return
        table = self.query_one(ExchangesTable)
        row = table.selected_id() if self.focused is table else None
        self._har_rows = [row] if row is not None and row >= 0 else None
        name = (f"wirepeek-exchange-{self.selected}-{row}.har" if self._har_rows
                else f"wirepeek-connection-{self.selected}.har")  # fmt: skip
        self._open_prompt("#har-path", name)

    def action_export_har_shown(self) -> None:
        if not self._http_exchanges_shown():
            self.notify("no HTTP exchange is shown: nothing to write as HAR (Redis, PostgreSQL, "
                        "MySQL and DNS transactions have no place in it)", severity="warning",
                        markup=False)  # fmt: skip
            return
        self._open_prompt("#har-all-path", "wirepeek-shown.har")

    def _http_exchanges_shown(self) -> bool:
        """Whether a connection shown has an HTTP exchange shown (what E would write)."""
        connections = self.store.connections
        for conn_id in self.query_one(ConnectionsTable).order:
            info = connections.get(conn_id)
            if info is None or lists_transactions(info.protocol):
                continue
            txs = self.store.http.get(conn_id, NO_EXCHANGES)
            if self.search is not None:
                if self.search.exchanges.get(conn_id):
                    return True
            elif len(txs):
                return True
        return False

    @on(Input.Submitted, "#har-path")
    def export_har(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path or self.selected is None:
            return
        self._close_prompt()
        rows = getattr(self, "_har_rows", None) or self._shown_positions(self.selected)
        self.write_har([(self.selected, rows)], path)

    @on(Input.Submitted, "#har-all-path")
    def export_har_shown(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            return
        self._close_prompt()
        order = self.query_one(ConnectionsTable).order
        self.write_har([(conn_id, self._shown_positions(conn_id)) for conn_id in order], path)

    @work(thread=True, exclusive=True, group="write", exit_on_error=False)
    def write_har(self, wanted: list[tuple[int, list[int]]], path: str) -> None:
        """Write these exchanges (connection, positions in its list) as HAR 1.2, reading each
        from the exchange log as it goes."""
        store = self.store
        entries = []
        for conn_id, positions in wanted:
            info = store.connections.get(conn_id)
            if info is not None and lists_transactions(info.protocol):
                continue  # another protocol's transactions: HAR has no place for them
            txs = store.http.get(conn_id, NO_EXCHANGES)
            for i in positions:
                if i < len(txs):
                    tx = txs[i]
                    record = har_entry(tx, info) if isinstance(tx, HttpTransaction) else None
                    if record is not None:
                        entries.append(record)
        if not entries:
            self.call_from_thread(self.notify, "nothing written: no HTTP exchange to write as HAR",
                                  severity="warning")
            return
        try:
            with open(path, "wb") as f:
                f.write(dumps(har(entries)) + b"\n")
        except OSError as e:
            self.call_from_thread(self.notify, escape_text(f"nothing written: {path}: {e.strerror or e}"),
                                  severity="error", markup=False)  # fmt: skip
            return
        said = f"wrote {len(entries)} exchange{'s' if len(entries) != 1 else ''} to {path} (HAR 1.2)"
        self.call_from_thread(self.notify, escape_text(said), markup=False)

    def _selected_exchange(self) -> HttpTransaction | None:
        """The HTTP exchange under the HTTP tab's cursor, for c, C and b (which say why not)."""
        if self.selected is not None and self._not_http(self.selected):
            return None
        table = self.query_one(ExchangesTable)
        row = table.selected_id()
        tx = table.transaction(row) if row is not None else None
        if tx is None:
            self.notify("select an exchange first (Enter, then ↑ ↓ in the HTTP tab)", severity="warning")
        return tx

    def _not_http(self, conn_id: int) -> bool:
        """Whether the connection lists another protocol's transactions, which HAR, curl, raw
        HTTP and body saving cannot take: then say so."""
        info = self.store.connections.get(conn_id)
        if info is None or not lists_transactions(info.protocol):
            return False
        what = title(info.protocol)
        self.notify(f"not an HTTP exchange: a {what} transaction (HAR, curl, raw HTTP and body "
                    "saving are for HTTP)", severity="warning", markup=False)  # fmt: skip
        return True

    def action_copy_curl(self) -> None:
        tx = self._selected_exchange()
        if tx is None:
            return
        info = self.store.connections.get(tx.connection)
        command = curl_command(tx, info)
        if command is None:
            self.notify("its request was not captured: no curl command", severity="warning")
            return
        self._copy(command + "\n", "the curl command")

    def action_copy_raw(self) -> None:
        tx = self._selected_exchange()
        if tx is not None:
            self._copy(raw_http(tx).decode("latin-1"), "the exchange as raw HTTP")

    def action_save_body(self) -> None:
        tx = self._selected_exchange()
        if tx is None:
            return
        message = body_message(tx)
        if message is None:
            self.notify("this exchange has no body", severity="warning")
            return
        content_type = next((v for n, v in message.headers if n.lower() == "content-type"), "")
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
        number = tx.index if tx.stream is None else f"s{tx.stream}"
        self._saving = tx
        self._open_prompt("#body-path", f"wirepeek-body-{tx.connection}-{number}{extension}")

    @on(Input.Submitted, "#body-path")
    def save_body(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        tx = getattr(self, "_saving", None)
        if not path or tx is None:
            return
        self._close_prompt()
        message = body_message(tx)
        assert message is not None
        decoded = decode_message_body(message, len(message.body) * 64 + (1 << 20))
        try:
            with open(path, "wb") as f:
                f.write(decoded.data)
        except OSError as e:
            self.notify(escape_text(f"nothing written: {path}: {e.strerror or e}"), severity="error",
                        markup=False)  # fmt: skip
            return
        which = "response" if message is tx.response else "request"
        facts = [f"{len(decoded.data):,} bytes"]
        if decoded.encodings:
            facts.append("decoded " + "+".join(decoded.encodings))
        if len(message.body) < message.body_bytes:
            facts.append(f"of {message.body_bytes:,} sent: only the first {len(message.body):,} were kept")
        if decoded.error:
            facts.append(decoded.error)
        self.notify(escape_text(f"saved the {which} body to {path} ({', '.join(facts)})"), markup=False)

    def _copy(self, text: str, what: str) -> None:
        """To the terminal's clipboard by OSC 52 (which reaches the local terminal through SSH,
        and through tmux with set-clipboard on); past OSC52_LIMIT, to a file instead."""
        size = len(text.encode("utf-8"))
        if size <= OSC52_LIMIT:
            self.copy_to_clipboard(text)
            self.notify(f"{what}: {size:,} bytes copied by OSC 52 to the terminal's clipboard "
                        "(tmux: set-clipboard on)", markup=False)  # fmt: skip
            return
        path = os.path.abspath(f"wirepeek-copy-{int(time.time())}.txt")
        try:
            with open(path, "w", encoding="utf-8", errors="replace") as f:
                f.write(text)
        except OSError as e:
            self.notify(escape_text(f"not copied: {size:,} bytes is too much for OSC 52, and "
                                    f"{path}: {e.strerror or e}"), severity="error", markup=False)  # fmt: skip
            return
        self.notify(escape_text(f"{what}: {size:,} bytes, too much for OSC 52: written to {path}"),
                    markup=False)  # fmt: skip

    @work(thread=True, exclusive=True, group="write", exit_on_error=False)
    def write_connections(self, connections: list[ConnectionInfo], path: str, what: str,
                          generation: int) -> None:
        """Write the packets of these connections that the ring still holds (each connection's
        own, by its packet numbers: not those of another that reused its ports), and say how it
        went ("wrote N packets{what} to PATH")."""
        picked = self.driver.packets.pick(connections, generation)
        if picked.error is not None:
            self.call_from_thread(self.notify, escape_text(f"nothing written: {picked.error}"),
                                  severity="error", markup=False)
            return
        if picked.reread:
            self.call_from_thread(self.notify, "the capture was read again meanwhile: nothing written",
                                  severity="warning")
            return
        # The TLS secrets of the sessions written, from the key logs in use: a pcapng file carries
        # them, so that it opens decrypted (here, in Wireshark) without the key log.
        keys, secrets, sessions = self.driver.keys, b"", 0
        randoms = [info.tls_random for info in connections if info.tls_random is not None]
        if keys is not None and randoms:
            secrets, sessions = keys.lines_for(randoms)
        pcapng = sources.is_pcapng_name(path)
        try:
            written = sources.write_packet_list(picked.packets, path, secrets if pcapng else b"")
        except sources.CaptureError as e:
            self.call_from_thread(self.notify, escape_text(str(e)), severity="error", markup=False)
            return
        older = "" if picked.complete else " (older packets are no longer held)"
        said = f"wrote {written} packets{what} to {path}{older}"
        if sessions and pcapng:
            said += f", with the TLS keys of {sessions} session{'s' if sessions != 1 else ''}"
        elif sessions:
            said += " (a .pcapng name would carry their TLS keys)"
        self.call_from_thread(self.notify, escape_text(said), markup=False)

    def action_load_keylog(self) -> None:
        self._open_prompt("#keylog-path", os.environ.get("SSLKEYLOGFILE", ""))

    @on(Input.Submitted, "#keylog-path")
    def load_keylog(self, event: Input.Submitted) -> None:
        path = os.path.expanduser(event.value.strip())
        if not path:
            return
        self.query_one("#prompt-error", Label).update(Text("reading…", "dim"))
        self.driver.load_keylog(path)

    def on_keylog_loaded(self, message: KeylogLoaded) -> None:
        if not self.is_running:
            return
        if message.error is not None:
            self.query_one("#prompt-error", Label).update(Text(escape_text(message.error), "bold red"))
            return
        self._close_prompt()
        sessions = f"{message.sessions:,} session{'s' if message.sessions != 1 else ''}"
        words = f"key log {message.path}: keys of {sessions}"
        if message.live:  # their records were let go at their close; the spool has the packets
            words += ("; connections closed before stay encrypted (w writes one to a file that "
                      "opens decrypted with --keylog)")
        self.notify(escape_text(words), timeout=6 if message.live else 3, markup=False)

    def action_toggle_times(self) -> None:
        self.relative_times = not self.relative_times

    def watch_relative_times(self) -> None:
        self._show_times()

    def _show_times(self) -> None:
        """Give the time panes the start their times count from (None: the wall clock)."""
        info = self.store.connections.get(self.selected) if self.selected is not None else None
        start = info.first_ts if self.relative_times and info is not None else None
        self.query_one(PacketsView).set_relative(start)
        self.query_one(StreamView).set_relative(start)

    def action_toggle_hex(self) -> None:
        stream = self.query_one(StreamView)
        stream.toggle_hex()
        self.query_one(TabbedContent).active = "tab-stream"
        self._stream_shown()
        stream.focus()  # Home, End and the arrows now move through the stream

    def action_toggle_frames(self) -> None:
        stream = self.query_one(StreamView)
        found = stream.toggle_frames()
        self.query_one(TabbedContent).active = "tab-stream"
        self._stream_shown()
        stream.focus()
        if stream.frames and not found:
            self.notify("No HTTP/2 frames in this stream (from its start, in the bytes kept).")

    def action_back(self) -> None:
        if self.query_one("#prompt").display:
            self._close_prompt()
        else:
            connections = self.query_one("#connections")
            if not connections.display:  # (setting it anyway lays the screen out again)
                connections.display = True
            connections.focus()

    def action_edit_capture_filter(self) -> None:
        self._open_prompt("#capture-filter", self.status.filter if self.status else self.driver.bpf)

    def action_edit_display_filter(self) -> None:
        query = self.searching or (self.search.query if self.search else None)
        self._open_prompt("#display-filter", query.text if query else "")

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
        self._apply_query(event.value)

    def _apply_query(self, text: str) -> None:
        try:
            query = Query(text)
        except FilterError as e:
            # The filter shown stays; say what is wrong and where, and leave the input open.
            where = Text(escape_text(e.message) + f" (column {e.column})\n", "bold red")
            where.append(escape_text(e.text) + "\n" + " " * (e.column - 1) + "^", "red")
            self.query_one("#prompt-error", Label).update(where)
            field = self.query_one("#display-filter", Input)
            field.cursor_position = min(e.column - 1, len(field.value))
            return
        self._close_prompt()
        if not query:
            self.searching, self.search = None, None
            self.query_one(ConnectionsTable).rebuild(None)
            self._show_http()
        else:
            # Every exchange of every connection is looked at, bodies too: in a worker thread,
            # on a snapshot of the store. What changes meanwhile is matched when it is done.
            self.searching = query
            self._since_scan = set()
            store = self.store
            snapshot = [(info, txs, len(txs)) for conn_id, info in store.connections.items()
                        for txs in (store.http.get(conn_id, NO_EXCHANGES),)]
            self.run_search(query, snapshot, self.generation)
        self._show_status()

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def run_search(self, query: Query, snapshot: Snapshot, generation: int) -> None:
        self.post_message(Searched(scan(query, snapshot), generation))

    def on_searched(self, message: Searched) -> None:
        if message.search.query is not self.searching or message.generation != self.generation:
            return  # another search replaced it, or the capture started again
        self.searching, self.search = None, message.search
        table = self.query_one(ConnectionsTable)
        table.rebuild(message.search)
        since, self._since_scan = self._since_scan, set()
        self.store.changed |= since
        self._redraw()
        self._show_http()
        self._show_status()
