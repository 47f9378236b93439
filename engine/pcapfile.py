"""pcap and pcapng files, framed and written by wirepeek itself, without libpcap.

`CaptureParser` frames packets out of the bytes of a pcap or pcapng file, fed in chunks of any
size; `Decompressor` in front of it undoes gzip or zstd; `PcapWriter` writes packets as a classic
pcap file to a stream it is handed. libpcap (in `engine.sources`) reads plain regular files
faster, but cannot do what these are here for:

- pcapng files whose interfaces have different link types (an Ethernet capture beside a loopback
  one): libpcap 1.9 refuses the whole file; the parser gives each packet its interface's type;
- pipes and stdin (`tcpdump -U -w - | wirepeek -r -`): libpcap blocks in its read, so a source
  waiting on a slow stream could not keep its timeout, notice a cancellation or take a new filter;
  the parser is fed whatever `select()` said was ready and frames only complete packets;
- partial and broken files: libpcap loses the packets of the batch it was reading when it hits a
  truncation; the parser keeps every packet before the break, counts them (`records`), and says
  where it broke in libpcap's own words (`end()`, `broken`), so the user learns which file broke,
  after how many packets, and why;
- compressed captures (capture.pcap.gz, capture.pcapng.zst, a compressed stream on stdin), which
  libpcap cannot open at all: `Decompressor` tells them by their first bytes, not their names, as
  tshark does; a truncated one gives every packet that its bytes hold, a corrupt one every packet
  before the place where decompression failed.

Packets come out with libpcap's DLT link-type numbers and microsecond timestamps, as libpcap
hands them out, so that every `Batch` speaks one language whoever read it.

This module never opens a file, a device or a socket, never blocks and never imports pcapy: bytes
go in, packets come out (and the writer writes to the stream it was given).
"""

from __future__ import annotations

import importlib
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

SNAPLEN = 262144
"""libpcap's default snapshot length: whole packets on every common link type."""

MAX_RECORD = 16 * 1024 * 1024
"""Largest pcap record or pcapng block we accept, as libpcap does; anything bigger is corruption."""

PARSE_LIMIT = 4096
"""Most packets one `CaptureParser.parse` call returns unless told otherwise (a batch's worth)."""

ETHERNET = 1

# pcap files store LINKTYPE_* numbers; libpcap hands out DLT_* numbers, which differ for these few.
# Packets read by our own parser are given the DLT numbers too, so every Batch speaks one language.
_LINKTYPE_TO_DLT = {100: 11, 101: 12, 102: 15, 103: 16, 106: 19}
_DLT_TO_LINKTYPE = {dlt: linktype for linktype, dlt in _LINKTYPE_TO_DLT.items()}


class CaptureError(Exception):
    """A problem the user must be told about in one line (str(e) is that line)."""


class Packet(NamedTuple):
    """One packet with everything a capture file keeps about it (the slow path; see `Batch`)."""

    sec: int
    usec: int
    linktype: int
    wire_len: int
    data: bytes


# --- reading ----------------------------------------------------------------------------------

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1),
    b"\xa1\xb2\xc3\xd4": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\x3c\x4d": (">", 1000),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_SHB, _IDB, _OPB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_DSB = 0x0000000A  # Decryption Secrets Block
SECRETS_TLS_KEY_LOG = 0x544C534B  # "TLSK": its secrets are an NSS key log
_IF_TSRESOL, _IF_TSOFFSET = 9, 14
_MAX_SEC = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_second: int
    offset_seconds: int


class CaptureParser:
    """Frames packets out of pcap or pcapng bytes, fed in chunks of any size.

    `feed` bytes as they come, take the complete packets with `parse`, and at the end of the
    input ask `end` whether it ended cleanly. Once the data stops making sense `broken` says why,
    and nothing after that point is read. Timestamps come out in microseconds, as libpcap gives
    them, and link types as libpcap's DLT numbers.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._pcapng = False
        self._started = False
        self._order = "<"
        self._ts_divisor = 1
        self._linktype = ETHERNET
        self._interfaces: list[_Interface] = []
        self._last_ts = (0, 0)
        self.records = 0
        """Packet records framed so far, whether or not a filter keeps them."""
        self.broken: str | None = None
        """Set when the data stopped making sense; nothing after that point is read."""
        self.linktypes: set[int] = set()

    def feed(self, data: bytes) -> None:
        self._buf = self._buf[self._pos :] + data
        self._pos = 0

    @property
    def started(self) -> bool:
        """The file header has been read, so the link type of what follows is known."""
        return self._started and bool(self.linktypes)

    def parse(self, limit: int = PARSE_LIMIT) -> list[Packet]:
        """The complete packets available, at most `limit`; stops early once `broken`."""
        out: list[Packet] = []
        if self.broken is not None:
            return out
        if not self._started and not self._parse_file_header():
            return out
        if self._pcapng:
            self._parse_blocks(out, limit)
        else:
            self._parse_records(out, limit)
        return out

    def end(self) -> str | None:
        """At the end of the input: what was wrong with it, or None if it ended cleanly."""
        if self.broken is not None:
            return self.broken
        left = len(self._buf) - self._pos
        if left == 0:
            return None
        if not self._started:
            # libpcap reads the 4-byte magic first and counts only what came after it.
            if left < 4:
                return f"truncated dump file; tried to read 4 file header bytes, only got {left}"
            return f"truncated dump file; tried to read 24 file header bytes, only got {left - 4}"
        if self._pcapng:
            # Worded as libpcap words it: the 8-byte block header, then the rest of the block.
            if left < 8:
                return f"truncated pcapng dump file; tried to read 8 bytes, only got {left}"
            length = struct.unpack_from(self._order + "I", self._buf, self._pos + 4)[0]
            return (
                f"truncated pcapng dump file; tried to read {length - 8} bytes, only got {left - 8}"
            )
        if left < 16:
            return f"truncated dump file; tried to read 16 header bytes, only got {left}"
        caplen = struct.unpack_from(self._order + "I", self._buf, self._pos + 8)[0]
        return f"truncated dump file; tried to read {caplen} captured bytes, only got {left - 16}"

    def _parse_file_header(self) -> bool:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return False
        magic = buf[pos : pos + 4]
        if magic == _PCAPNG_MAGIC:
            # A pcapng file starts with a section header block, read like any other block.
            self._pcapng = True
            self._started = True
            return True
        if magic not in PCAP_MAGICS:
            self.broken = "unknown file format"
            return False
        if len(buf) - pos < 24:
            return False
        self._order, self._ts_divisor = PCAP_MAGICS[magic]
        major, minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack_from(
            self._order + "HHiIII", buf, pos + 4
        )
        if major != 2:
            self.broken = f"pcap file version {major}.{minor} is not supported"
            return False
        # The top bits of the link type field carry FCS information, not the link type.
        self._linktype = _dlt(linktype & 0x03FFFFFF)
        self.linktypes.add(self._linktype)
        self._pos = pos + 24
        self._started = True
        return True

    def _parse_records(self, out: list[Packet], limit: int) -> None:
        buf, pos, end = self._buf, self._pos, len(self._buf)
        record = struct.Struct(self._order + "IIII")
        divisor, linktype = self._ts_divisor, self._linktype
        while len(out) < limit and end - pos >= 16:
            sec, frac, caplen, wire_len = record.unpack_from(buf, pos)
            if caplen > MAX_RECORD:
                self.broken = (
                    f"invalid packet capture length {caplen}, bigger than maximum of {MAX_RECORD}"
                )
                break
            if end - pos - 16 < caplen:
                break
            start = pos + 16
            out.append(
                Packet(sec, frac // divisor, linktype, wire_len, buf[start : start + caplen])
            )
            pos = start + caplen
            self.records += 1
        self._pos = pos

    def _parse_blocks(self, out: list[Packet], limit: int) -> None:
        buf, end = self._buf, len(self._buf)
        while len(out) < limit and end - self._pos >= 12:
            pos = self._pos
            if buf[pos : pos + 4] == _PCAPNG_MAGIC:
                # A new section may switch byte order; its byte-order magic says which.
                bom = buf[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    self._order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    self._order = ">"
                else:
                    self.broken = "pcapng section header has an unknown byte-order magic"
                    return
            block_type, length = struct.unpack_from(self._order + "II", buf, pos)
            if length < 12 or length % 4 or length > MAX_RECORD:
                self.broken = f"pcapng block of type {block_type:#x} has an invalid length {length}"
                return
            if end - pos < length:
                return
            body, body_end = pos + 8, pos + length - 4
            if block_type == _SHB:
                self._interfaces = []
            elif block_type == _IDB:
                self._read_interface(body, body_end)
            elif block_type in (_EPB, _OPB, _SPB):
                packet = self._read_packet_block(block_type, body, body_end)
                if packet is None:
                    return
                out.append(packet)
                self.records += 1
            if self.broken is not None:
                return
            self._pos = pos + length

    def _read_interface(self, body: int, body_end: int) -> None:
        if body_end - body < 8:
            self.broken = "pcapng interface description block is too short"
            return
        linktype, _reserved, snaplen = struct.unpack_from(self._order + "HHI", self._buf, body)
        units, offset = 1_000_000, 0
        for code, value in self._options(body + 8, body_end):
            if code == _IF_TSRESOL and len(value) == 1:
                exponent = value[0] & 0x7F
                units = 2**exponent if value[0] & 0x80 else 10**exponent
            elif code == _IF_TSOFFSET and len(value) == 8:
                offset = struct.unpack(self._order + "q", value)[0]
        interface = _Interface(_dlt(linktype), snaplen, units, offset)
        self._interfaces.append(interface)
        self.linktypes.add(interface.linktype)

    def _options(self, pos: int, end: int) -> list[tuple[int, bytes]]:
        found = []
        while end - pos >= 4:
            code, length = struct.unpack_from(self._order + "HH", self._buf, pos)
            if code == 0:
                break
            value = self._buf[pos + 4 : pos + 4 + length]
            found.append((code, value))
            pos += 4 + (length + 3) // 4 * 4
        return found

    def _read_packet_block(self, block_type: int, body: int, body_end: int) -> Packet | None:
        buf, order = self._buf, self._order
        if block_type == _SPB:
            if body_end - body < 4:
                self.broken = "pcapng simple packet block is too short"
                return None
            index = 0
            wire_len = struct.unpack_from(order + "I", buf, body)[0]
            start = body + 4
            caplen = min(wire_len, body_end - start)
        else:
            if body_end - body < 20:
                self.broken = "pcapng packet block is too short"
                return None
            if block_type == _EPB:
                index, high, low, caplen, wire_len = struct.unpack_from(order + "IIIII", buf, body)
            else:
                index, _drops, high, low, caplen, wire_len = struct.unpack_from(
                    order + "HHIIII", buf, body
                )
            start = body + 20
            if caplen > body_end - start:
                self.broken = f"pcapng packet block holds {caplen} bytes in a block too short"
                return None
        if index >= len(self._interfaces):
            self.broken = f"pcapng packet refers to interface {index}, which was not described"
            return None
        interface = self._interfaces[index]
        if block_type == _SPB:
            if interface.snaplen:
                caplen = min(caplen, interface.snaplen)
            # A simple packet block carries no timestamp: keep the previous one, so that time
            # never jumps back to 1970 in the middle of a capture.
            sec, usec = self._last_ts
        else:
            ticks = (high << 32) | low
            units = interface.units_per_second
            sec = ticks // units + interface.offset_seconds
            usec = (ticks % units) * 1_000_000 // units
            if not 0 <= sec <= _MAX_SEC:
                sec, usec = (0, 0) if sec < 0 else (_MAX_SEC, 999_999)
            self._last_ts = (sec, usec)
        return Packet(sec, usec, interface.linktype, wire_len, buf[start : start + caplen])


def _dlt(linktype: int) -> int:
    """libpcap's DLT number for a LINKTYPE number found in a file."""
    return _LINKTYPE_TO_DLT.get(linktype, linktype)


# --- compressed captures ----------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_PACKAGE = "backports.zstd"
"""What to install for zstd before Python 3.14, whose standard library has `compression.zstd`."""

_INFLATE_STEP = 16 * 1024
"""Plain bytes made per decompressor call. A zstd decompressor that fails keeps nothing of the
call, so a corrupt zstd frame loses at most these before its break."""

_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _FRESERVED = 0x02, 0x04, 0x08, 0x10, 0xE0


def compression_of(head: bytes) -> str | None:
    """The compression of a file that starts with these bytes (4 are enough): gzip, zstd or None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def _zstd_module() -> Any:
    """The zstd module of the standard library (3.14+) or its backport; None if neither is there."""
    for name in ("compression.zstd", ZSTD_PACKAGE):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


class _Corrupt(Exception):
    """Compressed data that makes no sense, with the plain bytes it gave before that point."""

    def __init__(self, reason: str, salvaged: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.salvaged = salvaged


def _gzip_header_length(buf: bytes) -> int | None:
    """How long the header of the gzip member that `buf` starts is; None until all of it came."""
    if buf[:2] != GZIP_MAGIC[: len(buf[:2])]:
        raise _Corrupt("incorrect header check")  # zlib's words for it
    if len(buf) < 10:
        return None
    if buf[2] != 8:
        raise _Corrupt("unknown compression method")
    flags = buf[3]
    if flags & _FRESERVED:
        raise _Corrupt("unknown header flags set")
    pos = 10
    if flags & _FEXTRA:
        if len(buf) < pos + 2:
            return None
        pos += 2 + int.from_bytes(buf[pos : pos + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            zero = buf.find(b"\0", pos)
            if zero < 0:
                return None
            pos = zero + 1
    if flags & _FHCRC:
        pos += 2
    return pos if len(buf) >= pos else None


def _zlib_reason(e: zlib.error) -> str:
    # "Error -3 while decompressing data: invalid block type" -> "invalid block type"
    return str(e).rpartition(": ")[2]


def _salvage(before: Any, data: bytes, size: int) -> bytes:
    """What a deflate stream gives, from its state `before` a call that failed, of the input
    that comes before the bad data: found by halving the input, since an error only ever comes
    from bytes already given (asking for fewer output bytes would not do: zlib reads past the
    last byte it returns, and fails on that call)."""
    view = memoryview(data)
    good, bad, best = 0, len(data), b""
    while bad - good > 1:
        mid = (good + bad) // 2
        try:
            got: bytes = before.copy().decompress(view[:mid], size)
        except zlib.error:
            bad = mid
        else:
            good, best = mid, got
    return best


class _GzipMember:
    """One gzip member: its header, its deflate data, and its trailer, checked here.

    The checksum is checked here and not by zlib, so that a member whose checksum is wrong
    still hands out all its bytes before it is reported corrupt, as `gzip -d` does.
    """

    def __init__(self) -> None:
        self._deflate: Any = None  # made once the header is read
        self._crc = 0
        self._size = 0
        self.done = False

    def decompress(self, data: bytes, size: int) -> tuple[bytes, bytes]:
        """(Up to `size` plain bytes, the input left over); raises _Corrupt."""
        if self._deflate is None:
            length = _gzip_header_length(data)
            if length is None:
                return b"", data
            self._deflate = zlib.decompressobj(-zlib.MAX_WBITS)
            data = data[length:]
        deflate = self._deflate
        out = b""
        if not deflate.eof:
            before = deflate.copy()
            try:
                out = deflate.decompress(data, size)
            except zlib.error as e:
                raise _Corrupt(_zlib_reason(e), _salvage(before, data, size)) from None
            self._crc = zlib.crc32(out, self._crc)
            self._size += len(out)
            if not deflate.eof:
                return out, deflate.unconsumed_tail
            data = deflate.unused_data
        if len(data) < 8:
            return out, data
        crc, length = struct.unpack_from("<II", data)
        if crc != self._crc:
            raise _Corrupt("incorrect data check", out)
        if length != self._size & 0xFFFFFFFF:
            raise _Corrupt("incorrect length check", out)
        self.done = True
        return out, data[8:]


class Decompressor:
    """Undoes the gzip or zstd compression of a capture, found by its first bytes, as tshark does.

    Bytes that do not start like gzip or zstd pass through unchanged. `feed` the bytes as they
    come, take the plain bytes with `read`, call `finish` at the end of the input and then `end`
    to learn whether the compressed data ended where it should. Several gzip members or zstd frames
    one after the other are read as one stream, as gzip -d and zstd -d read them.

    A compressed file can expand a thousandfold, so `read` makes plain bytes a slice at a time,
    however much compressed input is waiting. Once the compressed data stops making sense,
    `broken` says why. Every plain byte before the break is handed out first: all that a
    truncated stream holds, all that gzip decodes before bad data or a bad checksum. zstd is less
    exact: it decodes whole blocks, so a corrupt block is lost whole, and so are the last plain
    bytes made (at most `_INFLATE_STEP`) before a frame whose checksum is wrong.
    """

    def __init__(self) -> None:
        self.kind: str | None = None
        """"gzip", "zstd", or "" for an uncompressed capture; None until the first bytes came."""
        self.broken: str | None = None
        self._input = b""
        self._finished = False
        self._zstd: Any = None
        self._frame: Any = None  # the gzip member or zstd frame being read, if inside one

    def feed(self, data: bytes) -> None:
        self._input += data

    def finish(self) -> None:
        """The input has ended: what is still waiting is all there is."""
        self._finished = True

    def read(self, size: int) -> bytes:
        """Up to `size` plain bytes (more if the input is not compressed), b"" if none are ready."""
        if self.kind is None and not self._detect():
            return b""
        if self.kind == "":
            data, self._input = self._input, b""
            return data
        pieces: list[bytes] = []
        made = 0
        while made < size and self.broken is None:
            piece = self._inflate(min(size - made, _INFLATE_STEP))
            if not piece:
                break
            pieces.append(piece)
            made += len(piece)
        return b"".join(pieces)

    def end(self) -> str | None:
        """Once finished and read dry: what was wrong with the compressed data, or None."""
        if self.broken is not None:
            return self.broken
        if self.kind and (self._frame is not None or self._input):
            return f"truncated {self.kind} data; the compressed stream ends early"
        return None

    def _detect(self) -> bool:
        head = self._input[:4]
        kind = compression_of(head)
        partial = GZIP_MAGIC.startswith(head) or ZSTD_MAGIC.startswith(head)
        if kind is None and partial and not self._finished:
            return False  # too few bytes yet to tell
        if kind == "zstd":
            self._zstd = _zstd_module()
            if self._zstd is None:
                self.broken = (
                    f"zstd-compressed, and reading zstd needs the {ZSTD_PACKAGE} package"
                    f" (pip install {ZSTD_PACKAGE})"
                )
                return False
        self.kind = kind or ""
        return True

    def _inflate(self, size: int) -> bytes:
        while True:
            if self._frame is None:
                if self.kind == "gzip":
                    # gzip files may be padded with zeros after their last member.
                    self._input = self._input.lstrip(b"\0")
                if not self._input:
                    return b""
                self._frame = (
                    _GzipMember() if self.kind == "gzip" else self._zstd.ZstdDecompressor()
                )
            try:
                data = self._gzip(size) if self.kind == "gzip" else self._zstd_frame(size)
            except _Corrupt as e:
                self.broken = f"corrupt {self.kind} data ({e.reason})"
                return e.salvaged
            if data or self._frame is not None:
                return data
            # A member or frame ended without a byte more: go on with the next one, if any.

    def _gzip(self, size: int) -> bytes:
        member = self._frame
        data, self._input = member.decompress(self._input, size)
        if member.done:
            self._frame = None
        return data

    def _zstd_frame(self, size: int) -> bytes:
        frame = self._frame
        try:
            data: bytes = frame.decompress(self._input, size)
        except self._zstd.ZstdError as e:
            raise _Corrupt(str(e).rpartition(": ")[2]) from None
        self._input = b""  # the decompressor keeps what it did not use yet
        if frame.eof:
            self._input = frame.unused_data
            self._frame = None
        return data


# --- writing ----------------------------------------------------------------------------------


class PcapWriter:
    """Writes a classic pcap file: microsecond timestamps, native byte order, as libpcap does.

    The file header, which names the one link type of the file, is written with the first packet.
    """

    def __init__(self, out: BinaryIO, name: str, owned: bool = True) -> None:
        self._out = out
        self._name = name
        self._owned = owned  # closed at the end; standard output is only flushed
        self._record = struct.Struct("=IIII")
        self.linktype: int | None = None
        self.written = 0

    def _write_header(self, linktype: int) -> None:
        self.linktype = linktype
        field = _DLT_TO_LINKTYPE.get(linktype, linktype)
        self._out.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, field))

    def write(self, p: Packet) -> None:
        if self.linktype is None:
            self._write_header(p.linktype)
        elif p.linktype != self.linktype:
            raise CaptureError(
                f"{self._name}: a pcap file holds one link type, and after {self.written} packets"
                f" of link type {self.linktype} came one of link type {p.linktype}"
            )
        self._out.write(self._record.pack(p.sec, p.usec, len(p.data), p.wire_len))
        self._out.write(p.data)
        self.written += 1

    def close(self, linktype_if_empty: int) -> None:
        # Even without a packet the output is a valid capture, as with tcpdump -w.
        if self.linktype is None:
            self._write_header(linktype_if_empty)
        if self._owned:
            self._out.close()
        else:
            self._out.flush()


class PcapngWriter:
    """Writes a pcapng file (one section, little-endian, microsecond timestamps), which unlike
    pcap may hold packets of several link types (an interface block for each, as they come)
    and the TLS key log that opens its connections: a Decryption Secrets Block before the
    packets, where Wireshark and `engine.keylog` look for it. Same use as `PcapWriter`."""

    def __init__(self, out: BinaryIO, name: str, secrets: bytes = b"") -> None:
        self._out = out
        self._name = name
        self._interfaces: dict[int, int] = {}  # link type (DLT) -> interface number
        self.linktype: int | None = None  # of the first packet
        self.written = 0
        self._block(_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))  # length of section unknown
        self.secrets(secrets)

    def secrets(self, key_log: bytes) -> None:
        """Embed TLS key log lines (a Decryption Secrets Block): before the packets they open."""
        if key_log:
            self._block(_DSB, struct.pack("<II", SECRETS_TLS_KEY_LOG, len(key_log)) + key_log)

    def _block(self, kind: int, body: bytes) -> None:
        body += b"\0" * (-len(body) % 4)
        length = struct.pack("<I", 12 + len(body))
        self._out.write(struct.pack("<I", kind) + length + body + length)

    def write(self, p: Packet) -> None:
        interface = self._interfaces.get(p.linktype)
        if interface is None:
            interface = self._interfaces[p.linktype] = len(self._interfaces)
            field = _DLT_TO_LINKTYPE.get(p.linktype, p.linktype)
            self._block(_IDB, struct.pack("<HHI", field, 0, SNAPLEN))
            if self.linktype is None:
                self.linktype = p.linktype
        stamp = p.sec * 1_000_000 + p.usec
        header = struct.pack("<IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF, len(p.data),
                             p.wire_len)  # fmt: skip
        self._block(_EPB, header + p.data)
        self.written += 1

    def close(self, linktype_if_empty: int) -> None:
        if not self._interfaces:  # a valid capture without packets still names its link type
            field = _DLT_TO_LINKTYPE.get(linktype_if_empty, linktype_if_empty)
            self._block(_IDB, struct.pack("<HHI", field, 0, SNAPLEN))
        self._out.close()


def tls_key_logs(data: Any) -> bytes:
    """The TLS key logs that a pcapng file's Decryption Secrets Blocks hold (as editcap
    --inject-secrets writes them, before the packets they open), joined in file order; empty
    for a pcap file or one without. `data`: the file's bytes (or a memory map of them). Block
    headers only are looked at; it stops where the blocks stop making sense."""
    out: list[bytes] = []
    pos, size, order = 0, len(data), "<"
    if data[:4] != _PCAPNG_MAGIC:
        return b""
    while size - pos >= 12:
        if data[pos : pos + 4] == _PCAPNG_MAGIC:
            bom = data[pos + 8 : pos + 12]
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
            if not order:
                break
        block_type, length = struct.unpack_from(order + "II", data, pos)
        if length < 12 or length % 4 or length > size - pos:
            break
        if block_type == _DSB and length >= 20:
            kind, secrets = struct.unpack_from(order + "II", data, pos + 8)
            if kind == SECRETS_TLS_KEY_LOG and 16 + secrets <= length - 4:
                out.append(bytes(data[pos + 16 : pos + 16 + secrets]))
        pos += length
    return b"\n".join(out)
