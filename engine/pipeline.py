"""The engine's entry point: batches of captured packets in, events out.

    pipeline = Pipeline(bounds)
    events = pipeline.feed(batch)      # as often as batches come
    events = pipeline.flush(now)       # live: expire idle connections by packet or wall time
    events = pipeline.finish()         # end of capture: every connection reported final

The pipeline is fed; it never pulls, reads a clock, or starts a thread. Time is the packets'
timestamps, so a capture file replays to the same events every time.

The loop below is the hot path: Ethernet + IPv4 + TCP without fragments is decoded inline, byte
by byte from the batch buffer; everything else (other link types, VLAN tags, IPv6,
fragments, tunnels) goes through `engine.decode` and `_transport`. A tunnel (IP-in-IP, GRE,
ERSPAN, VXLAN, Geneve: see `engine.decode`) is opened in `_tunnel` and what it carries goes
through `_ipv4`/`_ipv6` again, fragments and all, at most `MAX_ENCAPSULATION` levels deep.
Malformed packets are counted and skipped; nothing a packet holds can raise out of `feed`.
"""

from __future__ import annotations

import struct
import sys
from typing import TYPE_CHECKING, Final

from engine.batch import META, Batch
from engine.bounds import Bounds
from engine.connections import ConnectionTable, ConsumerFactory, KeptSlice
from engine.decode import (
    CARRIERS,
    CUT,
    ETHERNET,
    MALFORMED,
    MAX_ENCAPSULATION,
    NOT_A_TUNNEL,
    TCP,
    UDP,
    decapsulate,
    ipv6_payload,
    network_offset,
)
from engine.detect import HTTP2, TLS
from engine.dns import DnsFlows
from engine.events import Event, Stats
from engine.http import DEFAULT_MAX_BODY, http_parser_factory, inner_http_factory
from engine.http2 import http2_parser_factory
from engine.ipfrag import Defragmenter
from engine.keylog import KeyLog
from engine.protocols import PROTOCOLS
from engine.spool import Spool
from engine.tcp import HOST_SHIFT, V6_TAG, reverse_key

if TYPE_CHECKING:
    from mypy_extensions import i64

_UNBOUNDED = sys.maxsize  # no enclosing packet: only the capture bounds a header
_ipv4_head = struct.Struct("!BxHHHxB").unpack_from  # ver/ihl, total length, id, flags/frag, proto
_tcp_head = struct.Struct("!IIIBBH").unpack_from  # ports, seq, ack, data offset, flags, window
_addrs4 = struct.Struct("!Q").unpack_from
_frag6 = struct.Struct("!BxHI").unpack_from  # next header, offset/flags, identification


def _u16(buf: bytes, at: i64) -> i64:
    """The big-endian 16-bit number at buf[at:]."""
    return buf[at] << 8 | buf[at + 1]


def _u32(buf: bytes, at: i64) -> i64:
    """The big-endian 32-bit number at buf[at:]."""
    return buf[at] << 24 | buf[at + 1] << 16 | buf[at + 2] << 8 | buf[at + 3]


def _shard_of(addrs: int, ports: int, shards: int) -> int:
    """The same number for both directions of a connection (a sum does not care about order).

    addrs is both addresses as one number (IPv6 ones carry a tag bit above their 256 bits).
    The sum is mixed (Fibonacci hashing) before the modulo: its low bits alone would follow the
    client port's parity, and Linux gives connect() even ports, so on one host every connection
    fell in the same shard of two.
    """
    if addrs >> 64:
        addrs &= _M256
        src, dst = addrs >> 128, addrs & _M128
    else:
        src, dst = addrs >> 32, addrs & 0xFFFFFFFF
    mixed = (((ports >> 16) + (ports & 0xFFFF) + src + dst) * _GOLDEN) & _M64
    return (mixed >> 32) % shards


def _shard4(src: i64, dst: i64, ports: i64, shards: i64) -> i64:
    """_shard_of for IPv4 addresses, in machine words (compiled, no Python number is made: the
    hot loop decides a packet of another shard before it builds the connection's key).
    (sum * _GOLDEN mod 2**64) >> 32 is taken 16 bits of _GOLDEN at a time, so that no product
    passes 63 bits: the sum has at most 34."""
    s: i64 = (ports >> 16) + (ports & 0xFFFF) + src + dst
    middle: i64 = s * 0x7F4A  # _GOLDEN's bits 16-31
    carry: i64 = (s * 0x7C15 + ((middle & 0xFFFF) << 16)) >> 32  # bits 0-15
    high: i64 = carry + (middle >> 16) + s * 0x79B9 + (((s * 0x9E37) & 0xFFFF) << 16)
    return (high & 0xFFFFFFFF) % shards


_M64: Final = (1 << 64) - 1
_M128: Final = (1 << 128) - 1
_M256: Final = (1 << 256) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15  # 2**64 / the golden ratio, odd (_shard4 spells it out)

# Pipeline._only: every connection, or none (keys are never negative).
ALL: Final = -1
NONE: Final = -2


class Pipeline:
    def __init__(
        self,
        bounds: Bounds | None = None,
        consumers: dict[str | None, list[ConsumerFactory]] | None = None,
        live_updates: bool = False,
        http_body_limit: int | None = DEFAULT_MAX_BODY,
        shard: tuple[int, int] = (0, 1),
        spool: Spool | None = None,
        announce: bool | None = None,
        keylog: KeyLog | None = None,
        plaintext: list[ConsumerFactory] | None = None,
        hosts: tuple[str, ...] = (),
        only: int | None = None,
        records: bool = False,
    ) -> None:
        """http_body_limit: body bytes kept per HTTP message (0 keeps none; None: no HTTP parsing).

        live_updates: for a live view: a `ConnectionOpened`/`ConnectionUpdated` snapshot of every
        connection a batch changed, and an `HttpRequestSeen` for each request still waiting for
        its answer. Without it, connections are reported when they close and HTTP exchanges
        when they are paired (or found unanswered), which is all a report such as --json needs.

        shard (i, n): track only the connections whose symmetric address/port hash is i modulo n,
        so that n processes can share one capture file; every packet is still counted.

        spool: the follow view's entries go to this file (engine.spool) rather than memory.

        announce: emit `HttpRequestSeen` for requests waiting for their answer (by default when
        live_updates is set; a process that parses HTTP for a live view wants only these).

        keylog: decrypt TLS connections whose secrets it has (engine.tlsdecrypt); their HTTP is
        parsed as that of plain connections (when HTTP is parsed at all). plaintext: consumer
        factories given a decrypted connection's plaintext (None from one: not this connection).

        hosts: the names of the capture hosts whose packets come in batches numbered 1, 2...
        (`Batch.host`); each connection then carries its host's name.

        only: a TCP connection's table key (engine.tcp.endpoints_key, either direction, with its
        host's bits): every other packet is counted and left out, UDP too. For a reader of one
        connection's packets again (tui.follow), fed from the packet that opened it.

        records: HTTP/1.x exchanges come as their records (engine.events.ExchangeRecord), not
        as HttpTransaction, for a process that only sends records (tui.http_helpers); those of
        HTTP/2 and the other protocols come as events still.
        """
        self.shard = shard
        # The key `only` names, both ways; ALL for every connection, NONE for none.
        self._only = (ALL, ALL) if only is None else (only, reverse_key(only))
        self.bounds = bounds or Bounds()
        consumers = dict(consumers or {})
        if http_body_limit is not None:
            consumers["http"] = [
                http_parser_factory(
                    http_body_limit,
                    self.bounds.reorder_window,
                    self.bounds.max_ooo_bytes,
                    announce=live_updates if announce is None else announce,
                    records=records,
                ),
                *consumers.get("http", []),
            ]
            for protocol in PROTOCOLS:  # the protocols beyond HTTP (engine.protocols)
                consumers[protocol.name] = [protocol.consumer, *consumers.get(protocol.name, [])]
            consumers[HTTP2] = [
                http2_parser_factory(
                    http_body_limit, announce=live_updates if announce is None else announce
                ),
                *consumers.get(HTTP2, []),
            ]
        if keylog is not None:
            # Imported only here: cryptography takes ~6 MB, which a capture without keys spares.
            from engine.tlsdecrypt import decryptor_factory

            inner = inner_http_factory(
                http_body_limit if http_body_limit is not None else 0,
                self.bounds.reorder_window,
                self.bounds.max_ooo_bytes,
                announce=live_updates if announce is None else announce,
                records=records,
            )
            parse = http_body_limit is not None
            consumers[TLS] = [
                *consumers.get(TLS, []),
                decryptor_factory(keylog, inner if parse else None, tuple(plaintext or ())),
            ]
        self.table = ConnectionTable(self.bounds, consumers, live_updates, spool)
        self.table.host_names = {i: name for i, name in enumerate(hosts, 1)}
        self.dns = DnsFlows(self.table, live_updates, parse=http_body_limit is not None)
        self._host_bits = 0  # the host of the batch being fed, where keys carry it
        self.defrag = Defragmenter(self.bounds.max_fragment_bytes, self.bounds.fragment_timeout)
        self.last_ts: float | None = None
        self.packets = 0
        self.bytes = 0
        self.tcp_packets = 0
        self.udp_packets = 0
        self.other_packets = 0
        self.malformed = 0
        self.truncated = 0
        self.fragments = 0

    def feed(self, batch: Batch) -> list[Event]:
        """Process one batch; return the events it caused."""
        buf = batch.data
        linktype = batch.linktype
        fast = linktype == ETHERNET
        ts = self.last_ts or 0.0
        tcp = malformed = 0
        table = self.table
        shard, shards = self.shard
        only_a, only_b = self._only
        number = self.packets
        host_bits = self._host_bits = batch.host << HOST_SHIFT
        # Typed, so that the compiled build does native arithmetic on them (unannotated, what
        # struct gives is Any, and every operation below was a call on Python objects).
        sec: i64
        usec: i64
        off: i64
        caplen: i64
        for sec, usec, off, caplen in META.iter_unpack(batch.meta):
            table.packet_number = number
            number += 1
            ts = float(sec) + float(usec) * 1e-6
            end = off + caplen
            if fast and caplen >= 54:
                # The headers are read byte by byte: compiled, a byte is a machine load, where
                # struct.unpack_from made a tuple and an object per field (a no-HTTP pass over
                # the keep-alive benchmark's file: 0.25 s, was 0.39). Interpreted, struct was
                # faster (1.01 s this way, 0.56 with it).
                vihl = buf[off + 14]
                ihl = (vihl & 15) << 2
                if (
                    _u16(buf, off + 12) == 0x0800
                    and vihl >> 4 == 4
                    and buf[off + 23] == TCP
                    and not _u16(buf, off + 20) & 0x3FFF
                    and ihl >= 20
                ):
                    ip = off + 14
                    wire_end = ip + _u16(buf, off + 16)
                    th = ip + ihl
                    if th + 20 <= end and th + 20 <= wire_end:
                        payload = th + ((buf[th + 12] >> 4) << 2)
                        if th + 20 <= payload <= wire_end:
                            tcp += 1
                            ports: i64 = _u32(buf, th)
                            src: i64 = _u32(buf, off + 26)
                            dst: i64 = _u32(buf, off + 30)
                            if shards > 1 and _shard4(src, dst, ports, shards) != shard:
                                continue
                            # As Python ints (an int with an i64 is an i64, compiled): the key
                            # holds 96 bits, past a machine word.
                            high: int = src
                            low: int = dst
                            both: int = ports
                            key: int = (((high << 32) | low) << 32) | both
                            cap_end = min(wire_end, end)
                            if host_bits:
                                key |= host_bits
                            if only_a != ALL and key != only_a and key != only_b:
                                continue
                            table.segment(
                                ts,
                                key,
                                _u32(buf, th + 4),
                                _u32(buf, th + 8),
                                buf[th + 13],
                                _u16(buf, th + 14),
                                buf[payload:cap_end] if cap_end > payload else b"",
                                wire_end - payload,
                            )
                            continue
            try:
                self._packet(ts, linktype, buf, off, end)
            except (IndexError, struct.error, ValueError):
                malformed += 1
        self.packets += len(batch)
        self.bytes += len(buf)
        self.tcp_packets += tcp
        self.malformed += malformed
        if len(batch):
            self.last_ts = ts
            self.table.end_batch(ts)
            self.dns.end_batch(ts)
        return self.table.take_events()

    def skip(self, count: int) -> None:
        """Number `count` packets that this pipeline is not given (a reader left them out), so
        that the packets after them keep the numbers a reader of every packet gives them."""
        self.packets += count

    def ignore_all(self) -> None:
        """From now on, no packet reaches the connections; time still passes for them (their
        idle ones expire as they would). For a reader of one connection, past its last packet."""
        self._only = (NONE, NONE)

    def shed(self, protocols: frozenset[str], keep: int | None = None) -> None:
        """Stop giving new connections of these protocols their parsers (or start again: empty).

        For a reader that cannot keep up: the connections are still tracked and their bytes
        reassembled and kept; only their protocol parsing (HTTP) is skipped. `keep` is a
        connection id that is parsed whatever happens (the one on screen).
        """
        self.table.shedding = frozenset(protocols)
        self.table.always = keep

    def flush(self, now: float) -> list[Event]:
        """Expire connections idle at time `now` (packet time, or wall time for a quiet live capture)."""
        self.table.expire(now)
        self.dns.expire(now)
        return self.table.take_events()

    def finish(self) -> list[Event]:
        """End of the capture: flush every connection; its ConnectionClosed is final."""
        self.table.finish_all(self.last_ts or 0.0)
        self.dns.finish()
        self.defrag.clear()
        return self.table.take_events()

    def kept_since(self, conn_id: int, cursor: int) -> KeptSlice | None:
        """The follow view's entries of a connection added since `cursor` (see
        `ConnectionTable.kept_since`): what a viewer of its stream has not been given yet."""
        return self.table.kept_since(conn_id, cursor)

    def stats(self) -> Stats:
        t = self.table
        return Stats(
            ts=self.last_ts,
            packets=self.packets,
            bytes=self.bytes,
            tcp_packets=self.tcp_packets,
            udp_packets=self.udp_packets,
            other_packets=self.other_packets,
            malformed=self.malformed,
            truncated=self.truncated,
            cut_payloads=t.cut,
            fragments=self.fragments,
            connections_total=t.next_id,
            connections_active=len(t.lru),  # lingering closed ones too: finished indexes them
            evicted_connections=t.evicted,
            dropped_kept_bytes=t.dropped_kept,
            memory_used=t.memory + self.defrag.bytes,
            memory_budget=self.bounds.memory_budget,
            unparsed_connections=t.unparsed,
            ignored_segments=t.ignored,
            fragments_dropped=self.defrag.dropped,
        )

    # ------------------------------------------------------------------ the general path

    def _packet(self, ts: float, linktype: int, buf: bytes, off: int, end: int) -> None:
        found = network_offset(linktype, buf, off, end)
        if found is None:
            self.other_packets += 1
            return
        version, ip = found
        if version == 4:
            self._ipv4(ts, buf, ip, end)
        else:
            self._ipv6(ts, buf, ip, end)

    # An IP packet at buf[ip:], of which buf[:end] was captured. Inside a tunnel, `limit` is where
    # the enclosing packet ends on the wire (an inner header past it is malformed, not cut by the
    # capture) and `depth` counts the tunnels opened so far.

    def _ipv4(
        self, ts: float, buf: bytes, ip: int, end: int, limit: int = _UNBOUNDED, depth: int = 0
    ) -> None:
        if ip + 20 > end or ip + 20 > limit:
            self._bad_or_short(ip + 20, end, limit)
            return
        vihl, total, ident, frag, proto = _ipv4_head(buf, ip)
        ihl = (vihl & 15) << 2
        if vihl >> 4 != 4 or ihl < 20 or (total and total < ihl):
            self.malformed += 1
            return
        # The IP length also trims Ethernet padding. A length of 0 is what a capture of a
        # segmentation-offloaded packet shows: trust the captured length then.
        wire_end = ip + total if total else min(end, limit)
        if wire_end > limit:
            self.malformed += 1
            return
        addrs = _addrs4(buf, ip + 12)[0]
        if frag & 0x3FFF:
            self.fragments += 1
            if wire_end > end:
                self.truncated += 1
                return
            whole = self.defrag.add(
                (buf[ip + 12 : ip + 16], buf[ip + 16 : ip + 20], ident, proto),
                ts,
                (frag & 0x1FFF) << 3,
                bool(frag & 0x2000),
                buf[ip + ihl : wire_end],
            )
            if whole is not None:
                self._transport(ts, proto, addrs, whole, 0, len(whole), len(whole), depth)
            return
        self._transport(ts, proto, addrs, buf, ip + ihl, wire_end, end, depth)

    def _ipv6(
        self, ts: float, buf: bytes, ip: int, end: int, limit: int = _UNBOUNDED, depth: int = 0
    ) -> None:
        walked = ipv6_payload(buf, ip, min(end, limit))
        if walked is None:
            self._bad_or_short(ip + 40, end, limit)
            return
        proto, l4, wire_end, frag_at = walked
        if wire_end > limit:
            self.malformed += 1
            return
        addrs = int.from_bytes(buf[ip + 8 : ip + 40], "big")
        if frag_at is not None:
            self.fragments += 1
            _nh, offflags, ident = _frag6(buf, frag_at)
            if wire_end > end:
                self.truncated += 1
                return
            whole = self.defrag.add(
                (buf[ip + 8 : ip + 24], buf[ip + 24 : ip + 40], ident, proto),
                ts,
                offflags & 0xFFF8,
                bool(offflags & 1),
                buf[l4:wire_end],
            )
            if whole is not None:
                addrs |= V6_TAG >> 32
                self._transport(ts, proto, addrs, whole, 0, len(whole), len(whole), depth)
            return
        self._transport(ts, proto, addrs | V6_TAG >> 32, buf, l4, wire_end, end, depth)

    def _transport(
        self,
        ts: float,
        proto: int,
        addrs: int,
        buf: bytes,
        l4: int,
        wire_end: int,
        end: int,
        depth: int = 0,
    ) -> None:
        """A transport header at buf[l4:wire_end], of which buf[:end] was captured."""
        if proto != TCP:
            if proto in CARRIERS:
                self._tunnel(ts, proto, addrs, buf, l4, wire_end, end, depth)
            else:
                self.other_packets += 1
            return
        if l4 + 20 > wire_end:
            self.malformed += 1
            return
        if l4 + 20 > end:
            self.truncated += 1
            return
        ports, seq, ack, doff, flags, window = _tcp_head(buf, l4)
        payload = l4 + ((doff >> 4) << 2)
        if not l4 + 20 <= payload <= wire_end:
            self.malformed += 1
            return
        self.tcp_packets += 1
        shard, shards = self.shard
        if shards > 1 and _shard_of(addrs, ports, shards) != shard:
            return
        key = (addrs << 32) | ports | self._host_bits
        only_a, only_b = self._only
        if only_a != ALL and key != only_a and key != only_b:
            return
        cap_end = min(wire_end, end)
        self.table.segment(
            ts,
            key,
            seq,
            ack,
            flags,
            window,
            buf[payload:cap_end] if cap_end > payload else b"",
            wire_end - payload,
        )

    def _tunnel(
        self,
        ts: float,
        proto: int,
        addrs: int,
        buf: bytes,
        l4: int,
        wire_end: int,
        end: int,
        depth: int,
    ) -> None:
        """A payload that may hold another IP packet (IP-in-IP, GRE, VXLAN, Geneve): open it and
        decode what it carries like any packet, keyed by its own addresses and ports (so the
        same inner 5-tuple in two tunnels is one connection; see `engine.decode.decapsulate`).
        A packet counts once, as what its innermost packet is."""
        kind, at = (
            decapsulate(proto, buf, l4, min(wire_end, end))
            if depth < MAX_ENCAPSULATION
            else (NOT_A_TUNNEL, 0)
        )
        if kind == 4:
            self._ipv4(ts, buf, at, end, wire_end, depth + 1)
        elif kind == 6:
            self._ipv6(ts, buf, at, end, wire_end, depth + 1)
        elif kind == NOT_A_TUNNEL and proto == UDP:
            self.udp_packets += 1
            if l4 + 8 <= min(wire_end, end):
                self._udp(ts, addrs, buf, l4, min(wire_end, end))
        elif kind == CUT:
            self._bad_or_short(at, end, wire_end)
        elif kind == MALFORMED:
            self.malformed += 1
        else:
            self.other_packets += 1

    def _udp(self, ts: float, addrs: int, buf: bytes, l4: int, end: int) -> None:
        """A UDP datagram, whole or cut at `end`: DNS is looked for in it (engine.dns)."""
        if self._only[0] != ALL:
            return  # (one TCP connection's packets are wanted, or none)
        ports = _addrs4(buf, l4)[0] >> 32
        shard, shards = self.shard
        if shards > 1 and _shard_of(addrs, ports, shards) != shard:
            return
        self.dns.packet(ts, (addrs << 32) | ports | self._host_bits, buf[l4 + 8 : end])

    def _bad_or_short(self, needed: int, end: int, limit: int = _UNBOUNDED) -> None:
        # A header cut by the snapshot length is not the sender's fault; one that runs past the
        # packet that holds it is.
        if needed > end and needed <= limit:
            self.truncated += 1
        else:
            self.malformed += 1
