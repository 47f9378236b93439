"""Tests of engine.content: content-codings undone within a bound, text and JSON detection."""

from __future__ import annotations

import gzip
import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from functools import partial

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.content import MAX_CODINGS, DecodedBody, decode_body, looks_textual, pretty_json
from tests.captures import compress

TEXT = b"".join(b"line %d of a body that compresses well\n" % i for i in range(2000))
GIB = 1 << 30
MIB = 1 << 20

# --- encoders ------------------------------------------------------------------------------------


# One gzip member with a fixed mtime: the bytes, and so the test ids pytest makes of them, are the
# same in every run and in each xdist worker (which must collect the same tests).
gzip_member: Callable[[bytes], bytes] = partial(compress, kind="gzip")


def zlib_deflate(data: bytes) -> bytes:
    return zlib.compress(data)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip_member,
    "x-gzip": gzip_member,
    "deflate": zlib_deflate,
    "br": brotli.compress,
    "identity": lambda data: data,
}


def encode(data: bytes, header: str) -> bytes:
    """Apply the codings of a Content-Encoding value, first listed first, as a server would."""
    for coding in header.split(","):
        if coding.strip():
            data = ENCODERS[coding.strip().lower()](data)
    return data


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "undone"),
    [
        (None, ()),
        ("", ()),
        ("identity", ()),
        ("gzip", ("gzip",)),
        ("x-gzip", ("x-gzip",)),
        ("GZip", ("gzip",)),
        ("deflate", ("deflate",)),
        ("br", ("br",)),
        ("gzip, deflate", ("deflate", "gzip")),
        ("deflate,gzip", ("gzip", "deflate")),
        ("br, gzip", ("gzip", "br")),
        ("gzip, identity, br", ("br", "gzip")),
        (" gzip ,\tbr , ", ("br", "gzip")),
        ("gzip, gzip", ("gzip", "gzip")),
    ],
)
@pytest.mark.parametrize("data", [b"", b"x", TEXT, bytes(range(256)) * 64])
def test_round_trip(header: str | None, undone: tuple[str, ...], data: bytes) -> None:
    body = encode(data, header or "")
    assert decode_body(body, header) == DecodedBody(data, undone, False, None)


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (zlib_deflate(TEXT), "deflate"),  # RFC 9110's deflate: zlib-wrapped
        (raw_deflate(TEXT), "deflate"),  # what some servers send instead
        (raw_deflate(zlib_deflate(TEXT)), "deflate, deflate"),
        (gzip_member(TEXT[:1000]) + gzip_member(TEXT[1000:]), "gzip"),  # two members
        (gzip_member(b"") + gzip_member(TEXT) + gzip_member(b""), "gzip"),
        (b"".join(gzip_member(TEXT[i : i + 7]) for i in range(0, len(TEXT), 7)), "gzip"),
        (gzip_member(TEXT) + bytes(512), "gzip"),  # zero padding after the last member
    ],
    ids=["zlib", "raw", "raw-over-zlib", "two-members", "empty-members", "many-members", "padded"],
)
def test_deflate_variants_and_gzip_members_decode_whole(body: bytes, header: str) -> None:
    decoded = decode_body(body, header)
    assert decoded.data == TEXT
    assert (decoded.truncated, decoded.error) == (False, None)


@pytest.mark.parametrize("header", ["gzip", "deflate", "br", "gzip, br"])
def test_an_empty_body_with_a_coding_is_empty_not_an_error(header: str) -> None:
    assert decode_body(b"", header) == DecodedBody(
        b"", tuple(reversed(header.split(", "))), False, None
    )


# --- truncated input -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["gzip", "deflate", "br", "gzip, deflate", "br, gzip"])
def test_a_body_cut_anywhere_decodes_to_a_prefix(header: str) -> None:
    data = TEXT[:3000]
    body = encode(data, header)
    for cut in range(len(body)):
        decoded = decode_body(body[:cut], header, body_complete=False)
        assert data.startswith(decoded.data), cut
        assert decoded.truncated, cut
        assert decoded.error is None, cut


@pytest.mark.parametrize(
    ("header", "ends_early"),
    [
        ("gzip", "gzip: compressed body ends early"),
        ("deflate", "deflate: compressed body ends early"),
        ("br", "br: compressed body ends early"),
    ],
)
def test_a_stream_that_stops_in_a_complete_body_is_an_error(header: str, ends_early: str) -> None:
    body = encode(TEXT, header)
    # Cut well into the stream, so the missing end is not just the checksum.
    decoded = decode_body(body[: len(body) // 2], header, body_complete=True)
    assert decoded.truncated
    assert decoded.error == ends_early
    assert len(decoded.data) > 0 and TEXT.startswith(decoded.data)


def test_a_gzip_stream_without_its_trailer_keeps_all_its_data() -> None:
    decoded = decode_body(gzip_member(TEXT)[:-8], "gzip")
    assert decoded == DecodedBody(TEXT, ("gzip",), True, "gzip: compressed body ends early")


def test_an_incomplete_identity_body_is_truncated_without_error() -> None:
    assert decode_body(b"abc", None, body_complete=False) == DecodedBody(b"abc", (), True, None)


# --- corrupt input -------------------------------------------------------------------------------


def flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]


@pytest.mark.parametrize(
    ("body", "header", "error_starts"),
    [
        (b"this is not gzip", "gzip", "gzip: corrupt data"),
        (flip(gzip_member(TEXT), 20), "gzip", "gzip: corrupt data"),
        (flip(gzip_member(TEXT), -6), "gzip", "gzip: corrupt data"),  # CRC mismatch
        (b"\xff" * 40, "deflate", "deflate: corrupt data"),
        (flip(zlib_deflate(TEXT), -2), "deflate", "deflate: corrupt data"),  # adler32 mismatch
        (b"\xff" * 40, "br", "br: corrupt data"),
        (gzip_member(TEXT) + b"junk", "gzip", "gzip: 4 bytes of trailing data"),
        (zlib_deflate(TEXT) + b"junk", "deflate", "deflate: 4 bytes of trailing data"),
        (brotli.compress(TEXT) + b"junk", "br", "br: 4 bytes of trailing data"),
        (b"\xff" * 40, "gzip, br", "br: corrupt data"),
        (brotli.compress(b"not gzip"), "gzip, br", "gzip: corrupt data"),
    ],
)
def test_corrupt_input_is_an_error_never_an_exception(
    body: bytes, header: str, error_starts: str
) -> None:
    decoded = decode_body(body, header)
    assert decoded.error is not None and decoded.error.startswith(error_starts)
    assert "\n" not in decoded.error


@pytest.mark.parametrize("header", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("junk", [b"j", b"junk", b"\x1f" * 3000, bytes(range(1, 256)) * 40])
def test_trailing_data_keeps_the_whole_decoded_stream(header: str, junk: bytes) -> None:
    decoded = decode_body(encode(TEXT, header) + junk, header)
    assert decoded.data == TEXT
    if header == "gzip" and junk[0] == 0x1F:
        # That reads as the start of another gzip member, a corrupt one, which may have held data.
        assert decoded.truncated
        assert decoded.error is not None and decoded.error.startswith("gzip: corrupt data")
    else:
        assert not decoded.truncated
        assert decoded.error == f"{header}: {len(junk)} bytes of trailing data"


def test_a_flood_of_trailing_data_is_not_counted_to_its_end() -> None:
    decoded = decode_body(gzip_member(TEXT) + b"j" * 10 * MIB, "gzip")
    assert decoded.data == TEXT
    assert decoded.error is not None and decoded.error.startswith("gzip: at least ")


def test_brotli_keeps_what_decoded_before_a_corrupt_byte() -> None:
    compressor = brotli.Compressor()
    first = compressor.process(TEXT) + compressor.flush()  # TEXT is decodable from these alone
    second = compressor.process(TEXT[::-1]) + compressor.finish()
    body = first + bytes(b ^ 0x55 for b in second)
    decoded = decode_body(body, "br")
    assert decoded.data.startswith(TEXT)
    assert decoded.truncated
    assert decoded.error is not None and decoded.error.startswith("br: corrupt data")


@pytest.mark.parametrize("header", ["gzip", "deflate", "br"])
def test_a_single_byte_body_ends_early(header: str) -> None:
    decoded = decode_body(encode(TEXT, header)[:1], header)
    assert decoded == DecodedBody(b"", (header,), True, f"{header}: compressed body ends early")


def test_data_before_a_corrupt_gzip_member_is_kept() -> None:
    body = gzip_member(TEXT) + b"\x1f\x8b" + b"\xff" * 30
    decoded = decode_body(body, "gzip")
    assert decoded.data == TEXT
    assert decoded.truncated
    assert decoded.error is not None and decoded.error.startswith("gzip: corrupt data")


# --- unknown codings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        (b"raw", "compress", DecodedBody(b"raw", (), False, "unknown content-coding 'compress'")),
        (b"raw", "gzip, zstd", DecodedBody(b"raw", (), False, "unknown content-coding 'zstd'")),
        (
            gzip_member(b"inner"),
            "x-foo, gzip",
            DecodedBody(b"inner", ("gzip",), False, "unknown content-coding 'x-foo'"),
        ),
        (b"raw", "\x1b[31m", DecodedBody(b"raw", (), False, "unknown content-coding '\x1b[31m'")),
        (b"0123456789", "zstd", DecodedBody(b"0123", (), True, "unknown content-coding 'zstd'")),
    ],
    ids=["compress", "unknown-last", "unknown-first", "control-bytes-as-sent", "cut-at-limit"],
)
def test_an_unknown_coding_stops_decoding_there(
    body: bytes, header: str, expected: DecodedBody
) -> None:
    limit = 4 if expected.truncated else 1024
    assert decode_body(body, header, limit=limit) == expected


def test_too_many_codings_are_refused_without_work() -> None:
    header = ", ".join(["gzip"] * (MAX_CODINGS + 1))
    decoded = decode_body(b"body", header)
    assert decoded.data == b"body" and decoded.encodings == ()
    assert decoded.error is not None and "too many content-codings" in decoded.error


# --- the output bound ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["gzip", "deflate", "br", "identity", "gzip, br"])
@pytest.mark.parametrize("limit", [0, 1, 100, len(TEXT) - 1])
def test_output_is_cut_at_the_limit(header: str, limit: int) -> None:
    decoded = decode_body(encode(TEXT, header), header, limit=limit)
    assert decoded.data == TEXT[:limit]
    assert decoded.truncated
    assert decoded.error is None


@pytest.mark.parametrize("header", ["gzip", "deflate", "br"])
def test_output_exactly_at_the_limit_is_not_truncated(header: str) -> None:
    assert decode_body(encode(TEXT, header), header, limit=len(TEXT)) == DecodedBody(
        TEXT, (header,), False, None
    )


def deflate_bomb(size: int, wrap: str) -> bytes:
    """`size` zero bytes (a multiple of 1 MiB) compressed, built without holding them.

    A full flush ends each MiB on a byte boundary with a fresh dictionary, so every MiB compresses
    to the same bytes: compress one, repeat it.
    """
    block = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(piece) == block
    stream = piece * (size // MIB) + compressor.flush()
    crc = adler = 1 if wrap == "zlib" else 0
    for _ in range(size // MIB):
        if wrap == "gzip":
            crc = zlib.crc32(block, crc)
        else:
            adler = zlib.adler32(block, adler)
    if wrap == "gzip":
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        return header + stream + struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"\x78\xda" + stream + struct.pack(">I", adler)


def brotli_bomb(size: int) -> bytes:
    compressor = brotli.Compressor(quality=1)
    block = bytes(MIB)
    return b"".join(compressor.process(block) for _ in range(size // MIB)) + compressor.finish()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {
        "gzip": deflate_bomb(GIB, "gzip"),
        "deflate": deflate_bomb(GIB, "zlib"),
        "br": brotli_bomb(GIB),
        "gzip, gzip": gzip_member(deflate_bomb(GIB, "gzip")),
    }


def test_the_gzip_bomb_is_what_it_claims() -> None:
    # A smaller one built the same way, checked end to end with the standard library.
    assert gzip.decompress(deflate_bomb(8 * MIB, "gzip")) == bytes(8 * MIB)
    assert zlib.decompress(deflate_bomb(8 * MIB, "zlib")) == bytes(8 * MIB)


@pytest.mark.parametrize("header", ["gzip", "deflate", "br", "gzip, gzip"])
def test_a_decompression_bomb_stays_within_the_limit(bombs: dict[str, bytes], header: str) -> None:
    body = bombs[header]
    assert len(body) < 2 * MIB  # a 1 GiB expansion from a small body
    limit = 4 * MIB
    tracemalloc.start()
    try:
        decoded = decode_body(body, header, limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.data == bytes(limit)
    assert decoded.truncated
    assert decoded.error is None
    # The output is held at most twice (the buffer, then the bytes made of it) plus slack, and
    # nothing else grows with what the body expands to.
    assert peak < 2 * limit + MIB


def test_inner_codings_that_make_much_and_give_out_little_are_stopped() -> None:
    # A gzip body that inflates to a gigabyte of empty gzip members: every one decodes to
    # nothing, so the output bound never stops the work; the meter on the inner decoder does.
    member = gzip_member(b"")
    block = member * (MIB // len(member))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    body = header + piece * 1024 + compressor.flush()
    decoded = decode_body(body, "gzip, gzip", limit=64 * 1024)
    assert decoded == DecodedBody(
        b"",
        ("gzip", "gzip"),
        True,
        "decoding stopped: inner content-codings made far more than came out",
    )


# --- random input --------------------------------------------------------------------------------

CODINGS = st.sampled_from(["gzip", "x-gzip", "deflate", "br", "identity", "gzip, br", "zstd"])


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=2000),
    header=CODINGS,
    limit=st.integers(0, 3000),
    complete=st.booleans(),
)
def test_random_bytes_never_raise_and_stay_within_the_limit(
    body: bytes, header: str, limit: int, complete: bool
) -> None:
    decoded = decode_body(body, header, limit=limit, body_complete=complete)
    assert len(decoded.data) <= limit
    assert decoded.error is None or "\n" not in decoded.error
    if not complete:
        assert decoded.truncated


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000) | st.text(max_size=1000).map(str.encode),
    header=st.sampled_from(["gzip", "deflate", "br", "gzip, deflate", "deflate, br"]),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
    limit=st.integers(0, 4000),
)
def test_mutated_streams_never_raise_and_stay_within_the_limit(
    data: bytes, header: str, flips: list[tuple[int, int]], limit: int
) -> None:
    body = bytearray(encode(data, header))
    for at, mask in flips:
        body[at % len(body)] ^= mask
    decoded = decode_body(bytes(body), header, limit=limit)
    assert len(decoded.data) <= limit
    if not flips:
        assert decoded.data == data[:limit]
        assert decoded.truncated == (len(data) > limit)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=5000),
    header=st.sampled_from(["gzip", "deflate", "br"]),
    cut=st.integers(0, 10**6),
)
def test_random_data_cut_anywhere_decodes_to_a_prefix(data: bytes, header: str, cut: int) -> None:
    body = encode(data, header)
    decoded = decode_body(body[: cut % (len(body) + 1)], header, body_complete=False)
    assert data.startswith(decoded.data)
    assert decoded.error is None


# --- looks_textual -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "textual"),
    [
        (b"", True),
        (b"hello, world\n", True),
        (TEXT, True),
        ("gr\u00fc\u00dfe, \u4e16\u754c\n".encode(), True),
        ("\u4e16\u754c".encode()[:-1], True),  # a character cut at the end of the body
        (b"caf\xe9 au lait, cr\xe8me br\xfbl\xe9e", True),  # latin-1, not UTF-8
        (b"\x1b[31mred\x1b[0m and plain text in a log line\n", True),
        (b'{"a": [1, 2, 3]}', True),
        (b"text\x00with a NUL", False),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", False),
        (gzip_member(TEXT), False),
        (bytes(range(1, 32)) * 4, False),  # valid UTF-8, all control characters
        (bytes(range(128, 256)), False),  # invalid UTF-8, no printable ASCII
        (bytes(range(256))[1:], False),
    ],
)
def test_looks_textual(data: bytes, textual: bool) -> None:
    assert looks_textual(data) is textual


# --- pretty_json ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a":1,"b":[true,null]}', '{\n  "a": 1,\n  "b": [\n    true,\n    null\n  ]\n}'),
        (b"[]", "[]"),
        (b" 42 ", "42"),
        (b'"text"', '"text"'),
        ('{"name":"gr\u00fc\u00dfe"}'.encode(), '{\n  "name": "gr\u00fc\u00dfe"\n}'),
        (b'\xef\xbb\xbf{"bom": 1}', '{\n  "bom": 1\n}'),
        # Escapes that could act on a terminal stay escapes.
        (b'["\\u001b[2J"]', '[\n  "\\u001b[2J"\n]'),
        (b'["\\u009b2J", "\\u202e"]', '[\n  "\\u009b2J",\n  "\\u202e"\n]'),
        ('["\u009b\u2028"]'.encode(), '[\n  "\\u009b\\u2028"\n]'),
        (b"", None),
        (b"not json", None),
        (b'{"a": 1', None),  # cut
        (b"{'a': 1}", None),
        (b"\xff\xfe", None),
        (b"[" * 100_000 + b"]" * 100_000, None),  # deeper than the parser goes
        (b"1" * 5000, None),  # an integer longer than Python converts
    ],
)
def test_pretty_json(data: bytes, expected: str | None) -> None:
    assert pretty_json(data, limit=10_000) == expected


def test_pretty_json_output_is_valid_json_of_the_same_value() -> None:
    value = {"k": ["\u009b", "\u202e", "\x1b", "\u00e9", 1.5, None], "n": {"m": []}}
    rendered = pretty_json(json.dumps(value).encode(), limit=10_000)
    assert rendered is not None and json.loads(rendered) == value
    assert all(not (0x7F <= ord(ch) < 0xA0) and ch not in "\x1b\u202e" for ch in rendered)


@pytest.mark.parametrize("limit", [0, 1, 50, 1000])
def test_pretty_json_is_cut_at_the_limit(limit: int) -> None:
    # 400 levels of nesting: indenting it whole would take about 2 * 400**2 characters.
    data = b"[" * 400 + b"]" * 400
    rendered = pretty_json(data, limit)
    assert rendered is not None and len(rendered) == limit
    assert rendered == json.dumps(json.loads(data), indent=2)[:limit]


def test_decoded_body_of_a_real_gzip_response():
    from engine.content import decode_message_body
    from engine.events import HttpTransaction
    from tests.captures import replay

    [tx] = [e for e in replay("zeek/http__get-gzip.pcap").events if isinstance(e, HttpTransaction)]
    assert tx.response is not None
    decoded = decode_message_body(tx.response)
    assert decoded.encodings == ("gzip",) and decoded.error is None and not decoded.truncated
    assert len(decoded.data) > tx.response.body_bytes  # it was compressed
    assert looks_textual(decoded.data)


def test_decoded_body_is_marked_truncated_when_bytes_were_missing():
    from engine.content import decode_message_body
    from engine.events import HttpResponse

    raw = gzip_member(b"x" * 1000)
    response = HttpResponse(0.0, 1.0, 200, "OK", "1.1", (("Content-Encoding", "gzip"),),
                            len(raw), 10, raw[:-10], True)
    decoded = decode_message_body(response)
    assert decoded.truncated and decoded.error is None
