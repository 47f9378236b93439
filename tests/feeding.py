"""Test helpers: feed TCP segments straight into the connection table and collect what comes out."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.bounds import Bounds
from engine.connections import ConnectionTable
from engine.events import ConnectionClosed, Event, Gap
from engine.tcp import ACK, FIN, PSH, RST, SYN, Connection

CLIENT = (0x0A000001, 40000)  # 10.0.0.1:40000
SERVER = (0x0A000002, 80)  # 10.0.0.2:80
FLAGS = {"S": SYN, "A": ACK, "F": FIN, "R": RST, "P": PSH}


def key(from_client: bool, client: tuple[int, int] = CLIENT, server: tuple[int, int] = SERVER) -> int:
    (sa, sp), (da, dp) = (client, server) if from_client else (server, client)
    return (((sa << 32) | da) << 32) | (sp << 16) | dp


def flags(text: str) -> int:
    out = 0
    for ch in text:
        out |= FLAGS[ch]
    return out


@dataclass
class Recorder:
    """A stream consumer that keeps everything it is given."""

    data: dict[bool, bytearray] = field(default_factory=lambda: {True: bytearray(), False: bytearray()})
    gaps: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})
    ends: list[bool] = field(default_factory=list)
    closed: int = 0

    def on_data(
        self, conn: Connection, from_client: bool, ts: float, offset: int, data: bytes, ack: int
    ) -> None:
        self.data[from_client] += data

    def on_gap(
        self, conn: Connection, from_client: bool, ts: float, offset: int, size: int, reason: str
    ) -> None:
        self.gaps[from_client].append(size)

    def on_end(self, conn: Connection, from_client: bool, ts: float) -> None:
        self.ends.append(from_client)

    def on_close(self, conn: Connection, ts: float) -> None:
        self.closed += 1


@dataclass
class Fed:
    table: ConnectionTable
    events: list[Event]
    recorders: dict[int, Recorder]

    def closed(self) -> list[ConnectionClosed]:
        return [e for e in self.events if isinstance(e, ConnectionClosed)]

    def info(self, conn_id: int = 0):  # type: ignore[no-untyped-def]
        return next(e.info for e in self.closed() if e.info.id == conn_id)

    def gaps(self) -> list[Gap]:
        return [e for e in self.events if isinstance(e, Gap)]

    def stream(self, from_client: bool, conn_id: int = 0) -> bytes:
        return bytes(self.recorders[conn_id].data[from_client])


Segment = tuple[bool, str, int, int, bytes]  # (from_client, flags, seq, ack, payload)


def feed(segments: list[Segment], bounds: Bounds | None = None, wire_lens: dict[int, int] | None = None,
         finish: bool = True, times: dict[int, float] | None = None) -> Fed:
    """Feed segments (one per batch) at 1 ms intervals (or at 1000 + times[i] seconds for the
    segments named in `times`); finish the capture at the end."""
    recorders: dict[int, Recorder] = {}

    def factory(conn: Connection, emit: object) -> Recorder:
        recorders[conn.id] = Recorder()
        return recorders[conn.id]

    table = ConnectionTable(bounds or Bounds(), {None: [factory]})
    events: list[Event] = []
    ts = 1000.0
    for i, (from_client, fl, seq, ack, payload) in enumerate(segments):
        ts = 1000.0 + times[i] if times and i in times else ts + 0.001
        wire = (wire_lens or {}).get(i, len(payload))
        table.segment(ts, key(from_client), seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags(fl), 65535, payload, wire)
        table.end_batch(ts)
        events += table.take_events()
    if finish:
        table.finish_all(ts)
        events += table.take_events()
    return Fed(table, events, recorders)


def handshake(cisn: int = 1000, sisn: int = 5000) -> list[Segment]:
    return [
        (True, "S", cisn, 0, b""),
        (False, "SA", sisn, cisn + 1, b""),
        (True, "A", cisn + 1, sisn + 1, b""),
    ]


def segments_of(data: bytes, seq: int, cuts: list[int], from_client: bool = True, ack: int = 0) -> list[Segment]:
    """Split data at the given offsets into PA segments starting at seq."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    return [(from_client, "PA", seq + a, ack, data[a:b]) for a, b in zip(bounds, bounds[1:])]
