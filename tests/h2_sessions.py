"""Real HTTP/2 conversations for the tests: a client and a server made with the `h2` library
(python-hyper's HTTP/2 state machines) talk to each other in memory; every block of bytes one
of them writes is a step of a script for tests.conversations.build, in the order it was written.

The peers obey the protocol as h2 does (settings and their acknowledgments, flow control and
WINDOW_UPDATE, HPACK with a dynamic table, stream states); what each call sent is kept as
`Call`, the truth a parser's exchanges are checked against.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

Fields = list[tuple[str, str]]


@dataclass
class Call:
    """One stream as its peers sent it."""

    method: str
    path: str
    request_headers: Fields = field(default_factory=list)  # besides the pseudo-headers
    request_body: bytes = b""
    status: int = 200
    response_headers: Fields = field(default_factory=list)
    response_body: bytes = b""
    trailers: Fields = field(default_factory=list)  # the response's
    interim: list[int] = field(default_factory=list)  # 1xx statuses before the final one
    stream_id: int = 0  # given when sent
    reset_after: int | None = None  # the client resets the stream after this many body bytes
    padding: int = 0  # pad each response DATA frame by this many bytes

    def request_fields(self) -> Fields:
        return [(":method", self.method), (":scheme", "http"), (":authority", "api.test"),
                (":path", self.path), *self.request_headers]  # fmt: skip

    def response_fields(self) -> Fields:
        return [(":status", str(self.status)), *self.response_headers]


class Pair:
    """An h2 client and server wired together; `script` holds what each wrote, in order."""

    def __init__(self, frame_size: int = 16384) -> None:
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="latin-1"))
        self.script: list[tuple[str, bytes]] = []
        self.client.initiate_connection()
        self.server.initiate_connection()
        if frame_size != 16384:
            self.client.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: frame_size})
        self.flush()

    def _move(self, from_client: bool) -> bool:
        sender, receiver = (self.client, self.server) if from_client else (self.server, self.client)
        data = sender.data_to_send()
        if not data:
            return False
        self.script.append(("c" if from_client else "s", data))
        for event in receiver.receive_data(data):
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                receiver.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        return True

    def flush(self) -> None:
        """Deliver what either side has to send until neither has anything."""
        for _ in range(1000):
            moved = self._move(True)
            moved = self._move(False) or moved
            if not moved:
                return
        raise AssertionError("the peers kept talking")

    def client_flush(self) -> None:
        self._move(True)

    def server_flush(self) -> None:
        self._move(False)

    def send_body(self, from_client: bool, stream_id: int, body: bytes, end: bool,
                  chunk: int = 1 << 30, padding: int = 0) -> None:
        """Send a body within the flow-control windows, in frames of at most `chunk` bytes,
        letting the peer's WINDOW_UPDATEs come back as needed."""
        conn = self.client if from_client else self.server
        at = 0
        while at < len(body) or (end and at == len(body)):
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size,
                       chunk)  # fmt: skip
            if padding:
                room = min(room, conn.max_outbound_frame_size - padding - 1)
            if room <= 0 and at < len(body):
                self._move(from_client)
                self._move(not from_client)  # the peer's WINDOW_UPDATE
                continue
            piece = body[at : at + max(room, 0)]
            last = end and at + len(piece) == len(body)
            conn.send_data(stream_id, piece, end_stream=last, pad_length=padding or None)
            at += len(piece)
            self._move(from_client)
            if last or (end and not body):
                return
        if not end:
            self._move(from_client)


def grpc_message(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(payload)) + payload


def run(calls: list[Call], concurrent: bool = True, chunk: int = 5000,
        frame_size: int = 16384) -> tuple[list[tuple[str, bytes]], list[Call]]:
    """The script of a connection carrying these calls: with `concurrent`, every request is
    sent before any response, and the responses' DATA frames are interleaved (`chunk` bytes a
    turn); otherwise one call after the other. The calls get their stream ids."""
    pair = Pair(frame_size)
    c, s = pair.client, pair.server
    for call in calls:
        call.stream_id = c.get_next_available_stream_id()
        c.send_headers(call.stream_id, call.request_fields(), end_stream=not call.request_body)
        pair.client_flush()
        if call.request_body:
            pair.send_body(True, call.stream_id, call.request_body, True)
        if not concurrent:
            _answer(pair, call, chunk)
            pair.flush()
    if concurrent:
        pair.flush()
        for call in calls:
            for status in call.interim:
                s.send_headers(call.stream_id, [(":status", str(status))])
            s.send_headers(call.stream_id, call.response_fields(),
                           end_stream=not call.response_body and not call.trailers)  # fmt: skip
        pair.server_flush()
        pair.flush()
        left = {call.stream_id: 0 for call in calls if call.response_body}
        while left:
            for call in calls:
                at = left.get(call.stream_id)
                if at is None:
                    continue
                piece = call.response_body[at : at + chunk]
                last = at + len(piece) == len(call.response_body)
                if call.reset_after is not None and at >= call.reset_after:
                    c.reset_stream(call.stream_id, h2.errors.ErrorCodes.CANCEL)
                    pair.client_flush()
                    del left[call.stream_id]
                    continue
                pair.send_body(False, call.stream_id, piece, last and not call.trailers,
                               padding=call.padding)  # fmt: skip
                left[call.stream_id] = at + len(piece)
                if last:
                    del left[call.stream_id]
                    if call.trailers:
                        s.send_headers(call.stream_id, call.trailers, end_stream=True)
                        pair.server_flush()
        pair.flush()
    return pair.script, calls


def _answer(pair: Pair, call: Call, chunk: int) -> None:
    s = pair.server
    for status in call.interim:
        s.send_headers(call.stream_id, [(":status", str(status))])
    s.send_headers(call.stream_id, call.response_fields(),
                   end_stream=not call.response_body and not call.trailers)  # fmt: skip
    pair.server_flush()
    if call.response_body:
        pair.send_body(False, call.stream_id, call.response_body, not call.trailers, chunk,
                       call.padding)  # fmt: skip
    if call.trailers:
        s.send_headers(call.stream_id, call.trailers, end_stream=True)
        pair.server_flush()


def run_upgrade(first: Call, more: list[Call]) -> tuple[list[tuple[str, bytes]], list[Call]]:
    """h2c by Upgrade (RFC 7540 3.2): `first` is an HTTP/1.1 GET asking for h2c, answered by a
    101 and then on stream 1 in HTTP/2; `more` follow as HTTP/2 streams, one after the other."""
    pair = Pair.__new__(Pair)
    pair.client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
    pair.server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="latin-1"))
    pair.script = []
    settings = pair.client.initiate_upgrade_connection()
    upgrade = (f"GET {first.path} HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               f"Upgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n").encode()  # fmt: skip
    pair.script.append(("c", upgrade))
    pair.server.initiate_upgrade_connection(settings)
    pair.script.append(("s", b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             b"Upgrade: h2c\r\n\r\n"))  # fmt: skip
    first.stream_id = 1
    pair.flush()  # the prefaces
    _answer(pair, first, 5000)
    pair.flush()
    for call in more:
        call.stream_id = pair.client.get_next_available_stream_id()
        pair.client.send_headers(call.stream_id, call.request_fields(),
                                 end_stream=not call.request_body)  # fmt: skip
        pair.client_flush()
        if call.request_body:
            pair.send_body(True, call.stream_id, call.request_body, True)
        _answer(pair, call, 5000)
        pair.flush()
    return pair.script, [first, *more]
