"""App-wide messages: what the capture worker tells the UI. Immutable and batched: the worker
posts one `EngineUpdate` per tick (every ~75 ms), never one per packet."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine.events import Event, Stats
from engine.remote import HostStatus
from engine.sources import CaptureStats
from engine.tcp import Kept
from tui.exchange_log import EncodedExchanges

# (from_client, ts, stream offset, bytes | gap size | Resent): as the engine keeps them.
StreamChunk = Kept


@dataclass(frozen=True, slots=True)
class CaptureStatus:
    source: str
    filter: str
    live: bool
    finished: bool  # a file was read to its end
    capture: CaptureStats | None  # kernel counters, for live captures
    error: str | None = None
    shedding: bool = False  # the engine is behind: new HTTP connections are not parsed
    progress: tuple[int, int] | None = None  # (bytes read, bytes in all) of the files being read
    # Packets of a live capture that its capture process read but could not keep: what the
    # readers had not read yet filled its disk bound (tui.live_feed).
    skipped: int = 0
    # Packets of a live capture whose HTTP was not parsed: the helpers were too far behind.
    unparsed: int = 0
    # Exchanges of connections the capture thread no longer had (evicted) when a helper sent them.
    unmapped: int = 0
    # The capture thread is a file of the live feed (16 MiB) or more behind the capture process:
    # the screen redraws less often, so that the thread has the interpreter more of the time.
    behind: bool = False
    # Each capture host's state (engine.remote), when the capture is over SSH.
    hosts: tuple[HostStatus, ...] = ()


class EngineUpdate(Message):
    """One tick of the engine: its events, statistics, and the followed connection's new bytes."""

    def __init__(self, events: tuple[Event, ...], stats: Stats, status: CaptureStatus,
                 stream_id: int | None, stream: tuple[StreamChunk, ...], stream_reset: bool,
                 generation: int, exchanges: tuple[EncodedExchanges, ...] = (),
                 stream_plain: bool = False, processes: dict[int, str] | None = None,
                 stream_note: str = "") -> None:
        super().__init__()
        self.events = events
        # The local processes of live connections found since the last update (engine.procs).
        self.processes = processes or {}
        # HTTP exchanges parsed in helper processes (tui.http_helpers), after the events.
        self.exchanges = exchanges
        self.stats = stats
        self.status = status
        self.stream_id = stream_id
        self.stream = stream
        self.stream_reset = stream_reset  # the chunks replace what was shown, not extend it
        self.stream_plain = stream_plain  # they are a TLS connection's decrypted plaintext
        # Said in the Stream tab instead of bytes (with a reset): why there are none to show.
        self.stream_note = stream_note
        self.generation = generation  # bumps when the capture restarts (a file re-read)


class FilterApplied(Message):
    """The answer to a capture filter change: applied, or refused with libpcap's message."""

    def __init__(self, expression: str, error: str | None) -> None:
        super().__init__()
        self.expression = expression
        self.error = error


class KeylogLoaded(Message):
    """The answer to CaptureDriver.load_keylog: the error, or None and the sessions it has keys
    for; live: loaded into a running capture (whose connections closed before stay encrypted)."""

    def __init__(self, path: str, error: str | None, sessions: int, live: bool = False) -> None:
        super().__init__()
        self.path = path
        self.error = error
        self.sessions = sessions
        self.live = live
