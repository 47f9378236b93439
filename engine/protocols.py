"""The protocols beyond HTTP: how one is added (the consumer interface).

A protocol is three things (four when its server speaks first), registered in `PROTOCOLS`:

- `name`: what connections are labelled with (`protocol` in records, the proto column) and the
  `protocol` of its transaction records.
- `client_start(prefix) -> bool | None`: whether a client's first bytes (up to 8 KiB, from the
  stream's first byte) are this protocol: True, False, or None while too few bytes have come to
  tell. The sniffer (`engine.detect.Sniffer`) asks every registered protocol, in order, after
  TLS and HTTP/2 and before HTTP/1; detection is by content first, so a protocol is told by
  what its client sends first when the capture saw it.
- `server_start(prefix) -> bool | None`, optional: the same for a server's first bytes, for a
  protocol whose server speaks first (MySQL's greeting). The sniffer asks it of the server's
  first bytes, before HTTP/1's responses are looked for; as for every protocol, the server's
  verdict counts only when the client's first bytes said nothing known (they answer the
  greeting), or the client sent nothing, so the verdict does not depend on which direction the
  capture showed first.
- `ports`, optional: the server ports it is taken to be on when the content said nothing known
  (the second hint, after the content): how a connection the capture joined in its middle (a
  pool's long-lived connection to PostgreSQL, whose startup went by long before) is still
  read, and how Redis's inline commands (`PING`), which no content test can tell, are.
- `consumer(conn, emit)`: makes the consumer of one connection (the parser's class), a
  `engine.tcp.StreamConsumer`. It is given, from each stream's first
  byte, `on_data(conn, from_client, ts, offset, data, ack)` for each direction's bytes in order
  and once (retransmissions and overlaps already resolved), `on_gap(...)` for bytes never
  captured, `on_end` when a direction is complete and `on_close` when the connection leaves
  the table. Nothing orders the two directions against each other: the capture's order is not
  causal, so a consumer pairs requests with responses by their order within each direction, or
  by acknowledgments (`ack`), never by arrival. It emits `engine.events.Transaction`s through
  `emit`: request and response sides (`engine.events.Message`: first and last byte times, size),
  short wire-text summaries, `status` ("ok", "error" or None), `error`, notes. Those become
  `{"type": "transaction", "protocol": name, ...}` records (engine.records) in --json and ECS.
  A connection the capture joined after its start (no SYN seen either way) is announced to it
  before any bytes by an empty gap at offset 0 of each side (reason `engine.tcp.MIDSTREAM`):
  it reads on as after lost bytes, from the first message it can find, and pairs only what
  the acknowledgments make certain.

DNS is also read over UDP, where there is no stream: `engine.dns.DnsFlows`, which the pipeline
gives every UDP datagram, keeps each client port's flow with a server as a connection of its own
(`transport` "udp", an id from the same sequence as TCP's) and emits the same transactions.

A consumer must bound what it holds whatever the traffic (a value is stepped over, not kept;
waiting requests are capped), must not fail on any bytes (they are fuzzed), and says what it
could not pair instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine import dns, mysql, postgres, redis

if TYPE_CHECKING:
    from engine.connections import ConsumerFactory


@dataclass(frozen=True)
class Protocol:
    name: str
    client_start: Callable[[bytes], bool | None]
    consumer: ConsumerFactory
    server_start: Callable[[bytes], bool | None] | None = None
    ports: tuple[int, ...] = ()


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(redis.PROTOCOL, redis.command_start, redis.RedisParser, ports=(6379,)),
    Protocol(dns.PROTOCOL, dns.query_start, dns.DnsTcpParser, ports=(53,)),
    Protocol(postgres.PROTOCOL, postgres.client_start, postgres.PostgresParser, ports=(5432,)),
    Protocol(
        mysql.PROTOCOL,
        mysql.handshake_response_start,
        mysql.MysqlParser,
        server_start=mysql.greeting_start,
        ports=(3306,),
    ),
)
NAMES = frozenset(protocol.name for protocol in PROTOCOLS)
BY_PORT = {port: protocol.name for protocol in PROTOCOLS for port in protocol.ports}
