"""One line per TCP packet, as `tcpdump -nn` prints it (tcpdump 4.99, without -v).

    IP 127.0.0.1.41234 > 127.0.0.1.8080: Flags [P.], seq 1:79, ack 1, win 512,
        options [nop,nop,TS val 1 ecr 2], length 78            (on one line)

The Packets tab shows a connection's packets this way because it is the form people who debug
networks read without thinking. The header is found with `engine.decode` (the same walk through
link layers and tunnels as `tcp_key`, so a tunnelled segment is shown by its inner header), and
the line is built from the header fields: this module never calls scapy, which is far too slow
to summarise thousands of packets.

Sequence numbers are relative, as tcpdump prints them by default: `SequenceBases` keeps
tcpdump's table of initial sequence numbers per conversation, and its rules, quirks included
(the packet that records a conversation's numbers prints them absolute; a packet without ACK is
always absolute; SACK blocks are relative to the numbers of the direction they acknowledge).
What follows the length (tcpdump's protocol printers: ": HTTP: GET / HTTP/1.1") is not made.

Pure functions of the packet's bytes, and a small table: no I/O, no clock, nothing from the
terminal. Everything in a line is made of numbers and addresses formatted here; no byte of a
payload reaches it.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from engine.decode import ETHERNET, TCP, innermost_tcp

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
# tcpdump's letters, in its order (bittok2str over its table of flags).
_FLAG_LETTERS = (
    (FIN, "F"),
    (SYN, "S"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "."),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "W"),
)
_M32 = 0xFFFFFFFF

_u16 = struct.Struct("!H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_tcp = struct.Struct("!HHIIBBHxxH").unpack_from  # ports, seq, ack, offset, flags, window, urgent
_tcp_numbers = struct.Struct("!HHIIBB").unpack_from
_eth_ipv4 = struct.Struct("!12xHB5xHxB").unpack_from  # Ethernet type, ver/IHL, fragment, protocol

# Option kinds and the names tcpdump gives them (CC.ECHO's empty name is tcpdump's own).
EOL, NOP, MSS, WSCALE, SACK_OK, SACK, ECHO, ECHO_REPLY, TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7, 8
CC, CC_NEW, CC_ECHO, SIGNATURE, SCPS, UTO, TCP_AO, MPTCP, FASTOPEN = (
    11,
    12,
    13,
    19,
    20,
    28,
    29,
    30,
    34,
)
EXPERIMENT2 = 254
_OPTION_NAMES = {
    EOL: "eol",
    NOP: "nop",
    MSS: "mss",
    WSCALE: "wscale",
    SACK_OK: "sackOK",
    SACK: "sack",
    ECHO: "echo",
    ECHO_REPLY: "echoreply",
    TIMESTAMP: "TS",
    CC: "cc",
    CC_NEW: "ccnew",
    CC_ECHO: "",
    SIGNATURE: "md5",
    SCPS: "scps",
    UTO: "uto",
    TCP_AO: "tcp-ao",
    MPTCP: "mptcp",
    FASTOPEN: "tfo",
    EXPERIMENT2: "exp",
}


class TcpHeader(NamedTuple):
    """What a tcpdump line says about one TCP segment."""

    ipv6: bool
    src: bytes  # the addresses as on the wire (4 or 16 bytes)
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int
    header_len: int  # the data offset, in bytes
    options: bytes  # the option bytes that were captured (fewer than header_len - 20 if cut)
    length: int  # the TCP length on the wire, header included (from the IP header)
    cut: bool  # the fixed 20-byte header was not all captured (only the ports are sure)


def tcp_header(linktype: int, data: bytes) -> TcpHeader | None:
    """The TCP header of a captured packet (inside tunnels, as the pipeline opens them), or None
    if it is not TCP, is an IP fragment, or its ports were not captured."""
    at = innermost_tcp(linktype, data, 0, len(data))
    if at is None:
        return None
    ip = at.ip
    if at.version == 4:
        src, dst = data[ip + 12 : ip + 16], data[ip + 16 : ip + 20]
    else:
        src, dst = data[ip + 8 : ip + 24], data[ip + 24 : ip + 40]
    return _segment(at.version == 6, src, dst, data, at.l4, at.wire_end, at.end)


def _segment(
    ipv6: bool, src: bytes, dst: bytes, data: bytes, l4: int, wire_end: int, end: int
) -> TcpHeader | None:
    if l4 + 4 > end:
        return None
    length = max(0, wire_end - l4)
    if l4 + 20 > end:
        sport, dport = _u16(data, l4)[0], _u16(data, l4 + 2)[0]
        return TcpHeader(ipv6, src, dst, sport, dport, 0, 0, 0, 0, 0, 0, b"", length, True)
    sport, dport, seq, ack, offset, flags, window, urgent = _tcp(data, l4)
    header_len = (offset >> 4) << 2
    options = data[l4 + 20 : min(l4 + header_len, end)] if header_len > 20 else b""
    return TcpHeader(
        ipv6,
        src,
        dst,
        sport,
        dport,
        seq,
        ack,
        flags,
        window,
        urgent,
        header_len,
        options,
        length,
        False,
    )


class Offsets(NamedTuple):
    """What to subtract (modulo 2**32) from a packet's numbers to print them as tcpdump does."""

    seq: int
    ack: int
    sack: int  # from the edges of SACK blocks


ABSOLUTE = Offsets(0, 0, 0)


class SequenceBases:
    """tcpdump's table of initial sequence numbers, one entry per conversation (both directions).

    Feed it every packet in capture order (`offsets`), as tcpdump sees them, to print the same
    numbers: a packet with ACK whose conversation is new, or any SYN with ACK, records the
    conversation's numbers (and is itself printed absolute); later packets with ACK print theirs
    relative to those. A packet without ACK is printed absolute and changes nothing.
    """

    def __init__(self) -> None:
        self.table: dict[tuple[bytes, bytes, int], tuple[int, int]] = {}

    def offsets(self, h: TcpHeader) -> Offsets:
        if h.cut:
            return ABSOLUTE
        return self._offsets(h.src, h.dst, h.sport, h.dport, h.seq, h.ack, h.flags)

    def packet_offsets(self, linktype: int, data: bytes) -> Offsets:
        """`offsets` for a captured packet (ABSOLUTE if it is not a whole TCP segment), quicker
        than decoding its header for Ethernet, IPv4 and TCP: for a pass over a whole connection."""
        if linktype == ETHERNET and len(data) >= 54:
            ethertype, vihl, frag, proto = _eth_ipv4(data, 0)
            l4 = 14 + ((vihl & 15) << 2)
            if (
                ethertype == 0x0800
                and vihl >> 4 == 4
                and proto == TCP
                and not frag & 0x3FFF
                and 34 <= l4 <= len(data) - 20
            ):
                sport, dport, seq, ack, _offset, flags = _tcp_numbers(data, l4)
                if not flags & ACK:
                    return ABSOLUTE
                return self._offsets(data[26:30], data[30:34], sport, dport, seq, ack, flags)
        header = tcp_header(linktype, data)
        return ABSOLUTE if header is None else self.offsets(header)

    def _offsets(
        self, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int
    ) -> Offsets:
        if not flags & ACK:
            return ABSOLUTE
        # tcpdump's collating order: the side with the lower port first (then the lower address).
        rev = sport > dport or (sport == dport and src > dst)
        key = (dst, src, dport << 16 | sport) if rev else (src, dst, sport << 16 | dport)
        known = self.table.get(key)
        if known is None or flags & SYN:
            # The numbers of the conversation's first side (seq) and second side (ack).
            first = (ack - 1) & _M32 if rev else seq
            second = seq if rev else (ack - 1) & _M32
            self.table[key] = (first, second)
            return Offsets(0, 0, first if rev else second)
        first, second = known
        return Offsets(second, first, first) if rev else Offsets(first, second, second)


def address(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def flag_letters(flags: int) -> str:
    letters = "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)
    return letters or "none"


def tcp_line(h: TcpHeader, offsets: Offsets = ABSOLUTE) -> str:
    """The line tcpdump -nn prints for this segment after the time, up to its length.

    With `offsets` from a `SequenceBases` fed the packets before it, the numbers are relative
    as tcpdump prints them by default; with none, they are absolute (tcpdump -S)."""
    src, dst = address(h.src), address(h.dst)
    line = f"{'IP6' if h.ipv6 else 'IP'} {src}.{h.sport} > {dst}.{h.dport}: "
    if h.cut:
        return line + " [|tcp]"
    if h.header_len < 20:
        return line + (
            f" tcp {(h.length - h.header_len) & _M32} [bad hdr length {h.header_len} - too short, < 20]"
        )
    line += f"Flags [{flag_letters(h.flags)}]"
    if h.header_len > h.length:
        return line + f" [bad hdr length {h.header_len} - too long, > {h.length}]"
    seq, ack = (h.seq - offsets.seq) & _M32, (h.ack - offsets.ack) & _M32
    length = h.length - h.header_len
    if length > 0 or h.flags & (SYN | FIN | RST):
        line += f", seq {seq}"
        if length > 0:
            line += f":{(seq + length) & _M32}"
    if h.flags & ACK:
        line += f", ack {ack}"
    line += f", win {h.window}"
    if h.flags & URG:
        line += f", urg {h.urgent}"
    if h.header_len > 20:
        shown, complete = _options(h, offsets.sack)
        line += ", options [" + shown
        if not complete:
            return line
        line += "]"
    return line + f", length {length}"


class _Stop(Exception):
    """tcpdump stops printing inside an option: `text` is what it printed of the option."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Bad(_Stop):
    """The option's length contradicts the header (tcpdump: [bad opt])."""


class _Cut(_Stop):
    """The capture ends inside the option's data (tcpdump: [|tcp])."""


def _options(h: TcpHeader, sack_base: int) -> tuple[str, bool]:
    """tcpdump's list of options, and whether the line goes on after it (not after a bad or cut
    option: tcpdump stops there, with its marks as it prints them)."""
    raw, left = h.options, h.header_len - 20
    out = ""
    sep = ""  # tcpdump's `ch`: a comma once an option has been printed
    at = 0
    while left > 0:
        out += sep
        if at + (1 if at < len(raw) and raw[at] in (EOL, NOP) else 2) > len(raw):
            return out + " [|tcp]", False  # the kind or length byte itself was not captured
        kind = raw[at]
        at += 1
        if kind in (EOL, NOP):
            size = 1
        else:
            size = raw[at]
            at += 1
            if size < 2 or size > left:
                return out + "[bad opt]" + ("]" if sep else ""), False
            left -= 1
        left -= 1
        try:
            text, used = _option(kind, size, raw, at, left, sack_base)
        except _Bad as stop:
            return out + stop.text + "[bad opt]" + ("]" if sep else ""), False
        except _Cut as stop:
            return out + stop.text + " [|tcp]" + (">" if sep else ""), False
        at += used
        left -= used
        used += 1 if kind in (EOL, NOP) else 2
        if used != size:
            text += f"[len {size}]"
        out += text
        sep = ","
        if kind == EOL:
            break
    return out, True


def _option(
    kind: int, size: int, raw: bytes, at: int, left: int, sack_base: int
) -> tuple[str, int]:
    """One option's text after its kind (and length) bytes, and how many data bytes it used."""

    def need(n: int, printed: str) -> None:
        if n > left:
            raise _Bad(printed)
        if at + n > len(raw):
            raise _Cut(printed)

    name = _OPTION_NAMES.get(kind, f"unknown-{kind}")
    if kind in (EOL, NOP, SACK_OK):
        return name, 0
    if kind in (MSS, SCPS, UTO):
        need(2, name)
        if kind == MSS:
            return f"{name} {_u16(raw, at)[0]}", 2
        if kind == SCPS:
            return f"{name} cap {raw[at]:02x} id {raw[at + 1]}", 2
        value = _u16(raw, at)[0]
        seconds = (value >> 1) * 60 if value & 1 else value >> 1
        return f"{name} 0x{value:x} {seconds}", 2
    if kind == WSCALE:
        need(1, name)
        return f"{name} {raw[at]}", 1
    if kind in (CC, CC_NEW, CC_ECHO, ECHO, ECHO_REPLY):
        need(4, name)
        return f"{name} {_u32(raw, at)[0]}", 4
    if kind == TIMESTAMP:
        need(8, name)
        return f"{name} val {_u32(raw, at)[0]} ecr {_u32(raw, at + 4)[0]}", 8
    data_len = size - 2
    if kind == SACK:
        if data_len % 8:
            return f"{name} invalid sack", data_len
        text = f"{name} {data_len // 8} "
        for i in range(0, data_len, 8):
            need(i + 8, text)
            start, end = _u32(raw, at + i)[0], _u32(raw, at + i + 4)[0]
            text += f"{{{(start - sack_base) & _M32}:{(end - sack_base) & _M32}}}"
        return text, data_len
    if kind == SIGNATURE:
        # tcpdump built with OpenSSL says it cannot check the digest without the secret (-M);
        # the digest itself is what it shows without OpenSSL.
        need(16, name)
        return f"{name} {raw[at : at + 16].hex()}", 16
    if kind == TCP_AO:
        if data_len < 2:
            return f"{name} (invalid)", data_len
        need(2, name)
        text = f"{name} keyid {raw[at]} rnextkeyid {raw[at + 1]}"
        if data_len > 2:
            need(data_len, text + " mac 0x")
            text += " mac 0x" + raw[at + 2 : at + data_len].hex()
        return text, data_len
    if kind == FASTOPEN:
        need(data_len, name)
        return f"{name} {_fastopen(raw[at : at + data_len])}", data_len
    if kind == EXPERIMENT2:
        need(data_len, name)
        if data_len < 2:
            raise _Bad(name)
        magic = _u16(raw, at)[0]
        if magic == 0xF989:  # TCP Fast Open before it had its own kind (RFC 7413)
            return f"{name}-tfo{_fastopen(raw[at + 2 : at + data_len])}", data_len
        return f"{name}-{magic:04x}", data_len
    prefix = name + (" 0x" if data_len else "")
    need(data_len, prefix + raw[at : at + max(0, min(data_len, left))].hex())
    return prefix + raw[at : at + data_len].hex(), data_len


def _fastopen(cookie: bytes) -> str:
    if not cookie:
        return " cookiereq"
    if len(cookie) % 2 or not 4 <= len(cookie) <= 16:
        return " (invalid)"
    return " cookie " + cookie.hex()


def packet_line(linktype: int, data: bytes, offsets: Offsets = ABSOLUTE) -> str:
    """tcp_line for a captured packet; for one that is not a whole TCP segment, what it is."""
    header = tcp_header(linktype, data)
    if header is None:
        return f"not a TCP segment ({len(data)} bytes captured)"
    return tcp_line(header, offsets)
