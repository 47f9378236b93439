"""HTTP/2 exchanges (engine.http2) from conversations between real HTTP/2 peers (the h2 library,
tests.h2_sessions), captured in every interleaving of the two directions and cut into segments
anywhere: each stream is one exchange whose fields are what the peers sent, whatever the order
and the cuts. Then the hard cases: trailers, gRPC, resets, padding, a capture that starts late,
gaps, malformed frames, bounds, and HTTP/2 inside decrypted TLS."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import http2
from engine.batch import Batch
from engine.events import HttpRequestSeen, HttpTransaction
from engine.pipeline import Pipeline
from tests.conversations import build, causal, interleavings
from tests.h2_sessions import Call, grpc_message, run

BIG = bytes((i * 31 + 7) % 256 for i in range(150_000))


def exchanges(packets: list, batch: int = 7, **options: object) -> list[HttpTransaction]:
    """The exchanges the pipeline finds, by stream id."""
    pipeline = Pipeline(http_body_limit=1 << 20, **options)  # type: ignore[arg-type]
    events = []
    for i in range(0, len(packets), batch):
        events += pipeline.feed(Batch.from_packets(1, packets[i : i + batch]))
    events += pipeline.finish()
    found = [e for e in events if isinstance(e, HttpTransaction)]
    return sorted(found, key=lambda t: (t.connection, t.stream or 0))


def untimed(tx: HttpTransaction) -> HttpTransaction:
    req = tx.request and tx.request._replace(ts=0.0, end_ts=0.0)
    resp = tx.response and tx.response._replace(
        ts=0.0, end_ts=0.0, interim=tuple((s, r, 0.0) for s, r, _ in tx.response.interim))
    return tx._replace(request=req, response=resp)


def mixed_calls() -> list[Call]:
    return [
        Call("GET", "/a?id=1", [("accept", "*/*"), ("user-agent", "curl/8.5")],
             response_headers=[("content-type", "text/plain"), ("x-request-id", "r-1")],
             response_body=b"alpha" * 20),
        Call("POST", "/upload/7", [("content-type", "application/json")],
             request_body=b'{"k": "' + b"v" * 70_000 + b'"}', status=201,
             response_headers=[("location", "/upload/7")], response_body=b'{"id": 7}'),
        Call("GET", "/big", response_headers=[("content-type", "application/octet-stream")],
             response_body=BIG),
        Call("GET", "/empty", status=204),
        Call("GET", "/trailers", response_body=b"with trailers",
             trailers=[("x-checksum", "abc123"), ("x-done", "1")]),
        Call("GET", "/early", interim=[103], response_headers=[("link", "</s.css>; rel=preload")],
             response_body=b"after hints"),
    ]


def check(found: list[HttpTransaction], calls: list[Call]) -> None:
    assert [t.stream for t in found] == [c.stream_id for c in calls]
    for tx, call in zip(found, calls, strict=True):
        assert tx.error is None and tx.notes == (), tx
        assert tx.index == call.stream_id >> 1
        req, resp = tx.request, tx.response
        assert req is not None and resp is not None
        assert (req.method, req.target, req.version) == (call.method, call.path, "2")
        assert tuple(req.headers) == tuple(call.request_fields())
        assert req.body == call.request_body and req.body_bytes == len(call.request_body)
        assert req.complete and resp.complete and req.body_missing == resp.body_missing == 0
        assert (resp.status, resp.version) == (call.status, "2")
        assert tuple(resp.headers) == tuple(call.response_fields())
        assert resp.body == call.response_body and resp.body_bytes == len(call.response_body)
        assert resp.trailers == tuple(call.trailers)
        assert [s for s, _, _ in resp.interim] == call.interim
        assert req.ts <= req.end_ts and resp.ts <= resp.end_ts and req.ts <= resp.ts


@pytest.mark.parametrize("concurrent", [True, False])
def test_each_stream_is_an_exchange_with_what_the_peers_sent(concurrent):
    script, calls = run(mixed_calls(), concurrent=concurrent)
    client, server = build(script)
    check(exchanges(causal(client, server)), calls)


def test_the_exchanges_do_not_depend_on_the_interleaving():
    script, calls = run(mixed_calls()[:4] + mixed_calls()[4:], chunk=3000)
    client, server = build(script, mss=4000)
    reference = None
    for n, packets in enumerate(interleavings(client, server, limit=40, seed=3)):
        found = exchanges(packets, batch=5)
        check(found, calls)
        found = [untimed(t) for t in found]
        if reference is None:
            reference = found
        assert found == reference
    assert n >= 40


def small_calls() -> list[Call]:
    return [
        Call("GET", "/a?id=1", [("accept", "*/*")], response_body=b"alpha" * 20,
             response_headers=[("content-type", "text/plain"), ("x-request-id", "r-1")]),
        Call("POST", "/upload/7", [("content-type", "application/json")],
             request_body=b'{"k": "' + b"v" * 3000 + b'"}', status=201, response_body=b"{}"),
        Call("GET", "/trailers", response_body=BIG[:5000], trailers=[("x-checksum", "abc123")]),
        Call("GET", "/early", interim=[103], response_body=b"after hints"),
    ]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(7, 1500), seed=st.integers(0, 2**32 - 1))
def test_the_exchanges_do_not_depend_on_how_the_segments_were_cut(cut, seed):
    script, calls = run(small_calls(), chunk=2000)
    rng = random.Random(seed)
    cuts = {i: sorted(rng.sample(range(1, len(d)), min(3, len(d) - 1))) if len(d) > 1 else []
            for i, (_, d) in enumerate(script)}  # fmt: skip
    client, server = build(script, mss=cut, cuts=cuts if seed % 2 else None)
    for packets in interleavings(client, server, limit=2, seed=seed):
        check(exchanges(packets, batch=1 + seed % 9), calls)


def test_grpc_calls_say_service_method_status_and_messages():
    grpc = [("content-type", "application/grpc"), ("te", "trailers")]
    unary = Call("POST", "/helloworld.Greeter/SayHello", grpc,
                 request_body=grpc_message(b"\x0a\x05world"),
                 response_headers=[("content-type", "application/grpc")],
                 response_body=grpc_message(b"\x0a\x0bhello world"),
                 trailers=[("grpc-status", "0")])
    stream_out = b"".join(grpc_message(bytes([i]) * (i * 100), compressed=i % 3 == 0)
                          for i in range(1, 40))  # fmt: skip
    streaming = Call("POST", "/route.Guide/ListFeatures", grpc,
                     request_body=grpc_message(b"rect") + grpc_message(b"more", compressed=True),
                     response_headers=[("content-type", "application/grpc+proto")],
                     response_body=stream_out,
                     trailers=[("grpc-status", "13"), ("grpc-message", "boom%3A caf%C3%A9 %25")])
    failed = Call("POST", "/helloworld.Greeter/Fail", grpc, request_body=grpc_message(b""),
                  response_headers=[("content-type", "application/grpc"), ("grpc-status", "5"),
                                    ("grpc-message", "not found")])  # trailers-only
    script, calls = run([unary, streaming, failed], chunk=700)
    found = exchanges(causal(*build(script)))
    assert [t.grpc for t in found] == [
        http2.GrpcCall("helloworld.Greeter", "SayHello", 0, None, 1, 1, 7, 13, (0, 0)),
        http2.GrpcCall("route.Guide", "ListFeatures", 13, "boom: café %", 2, 39,
                       8, sum(i * 100 for i in range(1, 40)), (1, 13)),
        http2.GrpcCall("helloworld.Greeter", "Fail", 5, "not found", 1, 0, 0, 0, (0, 0)),
    ]
    assert found[1].response.trailers == (("grpc-status", "13"), ("grpc-message", "boom%3A caf%C3%A9 %25"))


def test_a_stream_the_client_resets_is_reported_reset_whatever_the_interleaving():
    calls = [Call("GET", "/slow", response_body=BIG[:60_000], reset_after=20_000),
             Call("GET", "/fine", response_body=b"fine")]
    script, calls = run(calls, chunk=5000)
    client, server = build(script, mss=3000)
    reference = None
    for packets in interleavings(client, server, limit=30, seed=1):
        found = exchanges(packets)
        slow, fine = found
        assert slow.notes == ("reset by the client: CANCEL",)
        assert not slow.response.complete and slow.response.body_bytes == 20_000
        assert slow.response.body == BIG[:20_000]
        assert fine.response.body == b"fine" and fine.notes == ()
        found = [untimed(t) for t in found]
        if reference is None:
            reference = found
        assert found == reference


def test_padding_is_not_body():
    script, calls = run([Call("GET", "/padded", response_body=BIG[:40_000], padding=200)])
    assert sum(len(d) for w, d in script if w == "s") > 40_000 + 200 * 3
    check(exchanges(causal(*build(script))), calls)


def test_frames_of_16_mib_less_one_are_read_as_they_come():
    """A peer that allows big frames: DATA is read piece by piece, never held whole."""
    body = bytes(3 << 20)
    script, calls = run([Call("GET", "/huge", response_body=body)], frame_size=(1 << 24) - 1,
                        chunk=1 << 30)  # fmt: skip
    found = exchanges(causal(*build(script)))
    assert found[0].response.body_bytes == len(body) and len(found[0].response.body) == 1 << 20


def test_a_capture_that_starts_late_still_shows_the_streams_with_unknown_fields():
    """Without the preface and the first header blocks, HPACK's dynamic table is unknown:
    the fields that name its entries read as unknown; statuses from the static table, paths
    sent as literals, bodies and times still show, with a note."""
    first = [Call("GET", "/one", [("x-custom", "same-value")], response_body=b"1",
                  response_headers=[("x-served-by", "web-3")])]  # fmt: skip
    later = [Call("GET", path, [("x-custom", "same-value"), ("x-new", path)], response_body=b"22",
                  response_headers=[("x-served-by", "web-3")]) for path in ("/two", "/three")]  # fmt: skip
    script, calls = run(first + later, concurrent=False)
    client, server = build(script)
    everything = causal(client, server)
    # The client's packet that opens stream 3: a HEADERS frame (type 1) on stream 3 (the TCP
    # payload starts past 14 + 20 + 20 bytes of headers).
    stream_3 = next(i for i, (_, frame) in enumerate(everything)
                    if len(frame) > 63 and frame[54 + 3] == 1 and frame[54 + 5 : 54 + 9] == b"\0\0\0\x03")  # fmt: skip
    two, three = exchanges(everything[stream_3:])
    for tx, path in ((two, "/two"), (three, "/three")):
        assert tx.request.target == path and tx.response.status == 200, tx
        assert tx.response.body == b"22" and tx.response.complete
    assert (two.stream, three.stream) == (3, 5)
    # x-custom was indexed by stream 1's block, not captured: unknown. /two's x-new was not.
    assert tuple(two.request.headers)[-2:] == (("(unknown)", ""), ("x-new", "/two"))
    assert any("HPACK" in n for n in two.notes), two.notes
    assert tuple(two.response.headers) == ((":status", "200"), ("(unknown)", ""))


def gap_case(which: str) -> tuple[HttpTransaction, HttpTransaction]:
    """Two calls, the first one's body 20 DATA frames of 5,009 bytes each sent as 1,000-byte
    segments; one segment lost: the first of a frame (its header with it) or one inside."""
    script, calls = run([Call("GET", "/big", response_body=BIG[:100_000]),
                         Call("GET", "/after", response_body=b"after")], concurrent=False)
    client, server = build(script, mss=1000)
    packets = causal(client, server)
    full = [i for i, (_, frame) in enumerate(packets) if len(frame) == 1054]
    firsts = [i for i in full if i - 1 not in full]
    inside = [i for i in full if i - 1 in full]
    lost = (firsts if which == "header" else inside)[10]
    big, after = exchanges(packets[:lost] + packets[lost + 1 :])
    assert after.response.body == b"after" and after.response.complete and after.notes == ()
    return big, after


def test_a_gap_inside_a_body_counts_missing_bytes_and_the_rest_goes_on():
    big, _ = gap_case("inside")
    assert big.response.body_missing == 1000 and big.response.body_bytes == 100_000
    [(at, size)] = big.response.body_gaps
    assert size == 1000 and big.response.body == BIG[:at] + BIG[at + 1000 : 100_000]
    assert big.response.complete and big.notes == ()


def test_a_gap_over_a_frame_header_says_the_open_messages_may_miss_bytes():
    """Frames are found again after the loss; the bytes lost cannot be given to a stream, so
    every message of that side still open is marked incomplete, with a note."""
    big, _ = gap_case("header")
    assert not big.response.complete
    assert big.response.body_bytes < 100_000 and big.response.body_missing == 0
    assert big.notes == ("1000 server bytes lost where frames could not be told: this message may miss some",)


def test_a_malformed_frame_ends_the_connection_with_a_note_not_the_program():
    script, _ = run([Call("GET", "/a", response_body=b"x")])
    bad = [("c", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ("c", b"\x00\x00\x04\x00\x08\x00\x00\x00\x01\x09abc")]
    found = exchanges(causal(*build(bad)))
    assert found and found[0].error is not None and "padding" in found[0].error


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_any_bytes_after_the_preface_never_raise(client_bytes, server_bytes):
    script = [("c", http2.H2_PREFACE + client_bytes), ("s", server_bytes or b"\0")]
    exchanges(causal(*build(script)))


def test_streams_open_at_once_are_bounded():
    def small(conn, emit):
        parser = http2.Http2Parser(conn, emit)
        parser.max_streams = 3
        return parser

    script, calls = run([Call("GET", f"/{i}", response_body=b"x") for i in range(6)])
    pipeline = Pipeline(consumers={"http2": [small]}, http_body_limit=None)
    events = pipeline.feed(Batch.from_packets(1, causal(*build(script)))) + pipeline.finish()
    found = [e for e in events if isinstance(e, HttpTransaction)]
    assert sorted(t.stream for t in found) == [c.stream_id for c in calls]
    cut = [t for t in found if any("over 3 streams" in n for n in t.notes)]
    assert cut and all(t.response is None for t in cut)


def test_waiting_requests_are_announced_for_live_views():
    script, calls = run([Call("GET", "/a", response_body=b"x"), Call("GET", "/b")])
    pipeline = Pipeline(http_body_limit=0, live_updates=True)
    events = pipeline.feed(Batch.from_packets(1, causal(*build(script)))) + pipeline.finish()
    seen = [e for e in events if isinstance(e, HttpRequestSeen)]
    done = [e for e in events if isinstance(e, HttpTransaction)]
    assert [s.request.target for s in seen] == ["/a", "/b"]
    assert {s.request.offset for s in seen} == {t.request.offset for t in done}


def test_http2_inside_decrypted_tls_is_parsed_like_h2c(tmp_path):
    """The plaintext of a TLS session (OpenSSL, through Python's ssl) that carries HTTP/2:
    with the key log, the connection is labelled http2 and its streams are exchanges."""
    from tests.synth import write_pcap
    from tests.test_cli import records, wirepeek
    from tests.tls_sessions import session

    script, calls = run(small_calls(), concurrent=False)
    turns: list[list[bytes]] = []  # [client bytes, server bytes] in turn
    for who, data in script:
        if who == "c" and (not turns or turns[-1][1]):
            turns.append([b"", b""])
        turns[-1][0 if who == "c" else 1] += data
    made = session("TLSv1.3", "TLS_AES_128_GCM_SHA256", [(c, s) for c, s in turns])
    write_pcap(tmp_path / "h2.pcap", made.packets())
    (tmp_path / "keys.log").write_text(made.keylog)
    proc = wirepeek("-r", str(tmp_path / "h2.pcap"), "--keylog", str(tmp_path / "keys.log"),
                    "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    [conn] = records(proc.stdout, "connection")
    assert conn["protocol"] == "http2" and conn["tls"]["decrypted"] is True
    http = records(proc.stdout, "http")
    assert [(r["stream"], r["request"]["target"], r["request"]["version"]) for r in http] == [
        (c.stream_id, c.path, "2") for c in calls]
    assert [r["response"]["body_bytes"] for r in http] == [len(c.response_body) for c in calls]
    assert [r["response"].get("trailers", []) for r in http] == [
        [list(t) for t in c.trailers] for c in calls]


@pytest.mark.asyncio
async def test_the_inspector_lists_the_streams_and_shows_grpc_and_trailers(tmp_path):
    """Through the app (its HTTP helpers, its exchange log): the HTTP tab lists the streams by
    id; an exchange shows its stream, its gRPC call and its trailers."""
    from tests.synth import write_pcap
    from tests.test_app import SIZE, read_all
    from tests.test_inspector import file_app, message
    from tui.widgets.http import ExchangesTable

    grpc = [("content-type", "application/grpc")]
    calls = [*small_calls(),
             Call("POST", "/shop.Cart/Add", grpc, request_body=grpc_message(b"\x08\x01"),
                  response_headers=grpc, response_body=grpc_message(b""),
                  trailers=[("grpc-status", "9"), ("grpc-message", "out%20of%20stock")])]  # fmt: skip
    script, calls = run(calls)
    write_pcap(tmp_path / "h2c.pcap", causal(*build(script)))
    app = file_app(tmp_path / "h2c.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        table = app.query_one(ExchangesTable)
        assert table.row_count == len(calls)
        assert [table.cells(row)[0] for row in table.order] == [f"s{c.stream_id}" for c in calls]
        assert [table.cells(row)[3] for row in table.order] == [c.path for c in calls]
        await pilot.press("enter", "end")
        text = message(app)
        assert "HTTP/2 stream 9" in text
        assert "gRPC shop.Cart/Add: status 9 (out of stock); messages 1 sent (2B), 1 answered (0B)" in text
        assert "trailers\ngrpc-status: 9\ngrpc-message: out%20of%20stock" in text


def test_h2c_by_upgrade_answers_the_http1_request_on_stream_1():
    from tests.h2_sessions import run_upgrade

    script, calls = run_upgrade(Call("GET", "/first", response_body=b"first answer",
                                     response_headers=[("content-type", "text/plain")]),
                                [Call("POST", "/next", request_body=b"data", response_body=b"ok")])  # fmt: skip
    client, server = build(script, mss=700)
    reference = None
    for packets in interleavings(client, server, limit=30, seed=5):
        pipeline = Pipeline(http_body_limit=1 << 20)
        events = pipeline.feed(Batch.from_packets(1, packets)) + pipeline.finish()
        found = sorted((e for e in events if isinstance(e, HttpTransaction)), key=lambda t: t.index)
        upgrade, first, after = found
        assert (upgrade.index, upgrade.response.status, upgrade.tunnel) == (0, 101, True)
        assert upgrade.notes == ("upgraded to HTTP/2 (h2c): stream 1 answers this request",)
        assert (first.index, first.stream, first.request.version) == (1, 1, "1.1")
        assert first.request.target == "/first" and first.response.body == b"first answer"
        assert first.response.version == "2" and first.response.complete
        assert (after.index, after.stream, after.request.body) == (2, 3, b"data")
        assert after.response.body == b"ok"
        [closed] = [e for e in events if type(e).__name__ == "ConnectionClosed"]
        assert closed.info.protocol == "http2"
        found = [untimed(t) for t in found]
        if reference is None:
            reference = found
        assert found == reference


def test_follow_stream_prints_one_streams_body_exactly(tmp_path):
    """--follow ID --stream N: the body bytes as sent (padding left out), each direction on
    its own; a missing stream or a connection that is not HTTP/2 is an error."""
    from tests.synth import write_pcap
    from tests.test_cli import capture, wirepeek

    calls = [Call("POST", "/up", request_body=BIG[:30_000], response_body=b"stored"),
             Call("GET", "/padded", response_body=BIG[:50_000], padding=100)]
    script, calls = run(calls, chunk=4000)
    path = tmp_path / "h2c.pcap"
    write_pcap(path, causal(*build(script)))
    got = wirepeek("-r", str(path), "--follow", "0", "--stream", "3", "--dir", "server")
    assert got.returncode == 0 and got.stdout == BIG[:50_000], got.stderr
    got = wirepeek("-r", str(path), "--follow", "0", "--stream", "1", "--dir", "client")
    assert got.stdout == BIG[:30_000]
    assert wirepeek("-r", str(path), "--follow", "0", "--stream", "1", "--dir", "server").stdout == b"stored"
    missing = wirepeek("-r", str(path), "--follow", "0", "--stream", "7")
    assert missing.returncode == 1 and b"has no HTTP/2 stream 7" in missing.stderr
    http1 = wirepeek("-r", capture("zeek/http__get.pcap"), "--follow", "0", "--stream", "1")
    assert http1.returncode == 1 and b"is not HTTP/2 (it is http)" in http1.stderr
    assert b"Traceback" not in http1.stderr + missing.stderr


def test_the_frame_scanner_marks_every_frame_however_the_bytes_come():
    from engine.http2 import FrameScanner

    script, _ = run(small_calls(), chunk=2000)
    for who in ("c", "s"):
        stream = b"".join(d for w, d in script if w == who)
        whole = FrameScanner(who == "c")
        whole.feed(0, stream)
        assert whole.frames and not whole.stopped
        rng = random.Random(7)
        for _ in range(20):
            pieces = FrameScanner(who == "c")
            at = 0
            while at < len(stream):
                n = rng.randint(1, 40)
                pieces.feed(at, stream[at : at + n])
                at += n
            assert pieces.frames == whole.frames
    client = b"".join(d for w, d in script if w == "c")
    scanner = FrameScanner(True)
    scanner.feed(0, client)
    labels = [label for _, label in scanner.frames]
    assert labels[0] == "HTTP/2 connection preface" and labels[1].startswith("SETTINGS stream 0 ")
    assert "HEADERS stream 1 END_STREAM|END_HEADERS" in " ".join(labels)
    frames = dict(scanner.frames)
    cut = FrameScanner(True)
    cut.feed(0, client[:100])
    cut.feed(200, client[200:])  # bytes not seen: frames are looked for again
    again = [i for i, (_, label) in enumerate(cut.frames) if "(frames found again here)" in label]
    assert len(again) == 1 and not cut.stopped
    k = again[0]
    at, label = cut.frames[k]
    assert cut.frames[:k] == [f for f in scanner.frames if f[0] < 100]
    assert label == frames[at] + " (frames found again here)"  # where a frame really starts
    assert cut.frames[k + 1 :] == [f for f in scanner.frames if f[0] > at]
    late = FrameScanner(True)
    late.feed(500, client[500:])  # the start not kept: frames found from somewhere
    at, label = late.frames[0]
    assert label == frames[at] + " (frames found here)"
    assert late.frames[1:] == [f for f in scanner.frames if f[0] > at]
    few = FrameScanner(False, limit=8)  # the newest frames are kept
    server = b"".join(d for w, d in script if w == "s")
    few.feed(0, server)
    every = FrameScanner(False)
    every.feed(0, server)
    assert 8 <= len(few.frames) <= 10 and few.frames == every.frames[-len(few.frames) :]
    assert few.total == every.total == len(every.frames)
    http1 = FrameScanner(True)
    http1.feed(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert http1.stopped and http1.frames == []


@pytest.mark.asyncio
async def test_the_stream_tab_marks_http2_frames_on_F(tmp_path):
    from tests.synth import write_pcap
    from tests.test_app import SIZE, read_all
    from tests.test_inspector import file_app
    from tui.widgets.stream import StreamView

    script, calls = run(small_calls(), chunk=2000)
    write_pcap(tmp_path / "h2c.pcap", causal(*build(script)))
    app = file_app(tmp_path / "h2c.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        view = app.query_one(StreamView)

        def lines() -> list[str]:
            return [view.index.line(y)[0] for y in range(len(view.index))]

        assert not any("HEADERS stream" in line for line in lines())
        await pilot.press("F")
        await pilot.pause()
        text = "\n".join(lines())
        assert "┄┄ HTTP/2 connection preface" in text
        assert "┄┄ request s1: GET /a?id=1 · HEADERS stream 1 END_STREAM|END_HEADERS" in text
        assert "DATA stream 5 " in text and "┄┄ SETTINGS stream 0 " in text
        await pilot.press("F")
        await pilot.pause()
        assert not any("DATA stream" in line for line in lines())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_huffman_decodes_what_hpack_encodes(text):
    """engine.huffman against hpack's own encoder and decoder (the RFC's code)."""
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    from hpack.huffman_table import decode_huffman

    from engine import huffman

    coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(text)
    assert huffman.decode(coded) == text == decode_huffman(coded)


def test_huffman_refuses_what_the_rfc_refuses():
    from engine import huffman

    with pytest.raises(ValueError, match="padding"):
        huffman.decode(b"\x00")  # '0' then 3 zero bits of padding: not the EOS prefix
    with pytest.raises(ValueError, match="padding"):
        huffman.decode(b"\x1f\xff")  # 'a' (00011), then 11 one bits: padding over 7 bits
    with pytest.raises(ValueError, match="end-of-string"):
        huffman.decode(b"\xff\xff\xff\xff")  # the 30-bit EOS symbol itself
    assert huffman.decode(b"\x1f") == b"a"  # 00011 then 111
    assert huffman.decode(b"") == b""


def test_header_blocks_decode_as_hpack_decodes_them():
    """decode_block against hpack's Decoder on blocks of hpack's Encoder, table state and all:
    indexed fields, literals with and without indexing, never-indexed, size updates."""
    import hpack
    rng = random.Random(3)
    encoder, decoder, table = hpack.Encoder(), hpack.Decoder(), http2.PartialTable()
    for n in range(300):
        fields = [(":method", rng.choice(["GET", "POST"])), (":path", f"/x/{rng.randint(0, 40)}"),
                  ("cookie", f"id={rng.getrandbits(20)}"), ("x-same", "same"),
                  hpack.NeverIndexedHeaderTuple("authorization", f"Bearer {rng.getrandbits(30)}")]
        if n == 150:
            encoder.header_table_size = 256  # a size update in the next block
        block = encoder.encode(fields, huffman=bool(n % 2))
        assert http2.decode_block(table, block, 1 << 16, 1 << 16) == decoder.decode(block, raw=True)


def test_every_split_point_of_each_direction_gives_the_same_exchanges():
    calls = [Call("POST", "/p", [("content-type", "text/plain")], request_body=b"hello",
                  interim=[100], response_body=b"world" * 3, trailers=[("x-t", "1")])]
    script, calls = run(calls)
    client, server = build(script)
    reference = [untimed(t) for t in exchanges(causal(client, server))]
    check(exchanges(causal(client, server)), calls)
    for who in ("c", "s"):
        steps = [i for i, (w, _) in enumerate(script) if w == who]
        for i in steps:
            for k in range(1, len(script[i][1])):
                packets = causal(*build(script, cuts={i: [k]}))
                assert [untimed(t) for t in exchanges(packets, batch=3)] == reference, (who, i, k)


def test_a_header_block_in_continuation_frames():
    big = "v" * 40_000  # past the 16 KiB frame: HEADERS, then CONTINUATION frames
    script, calls = run([Call("GET", "/long", [("x-big", big)], response_body=b"ok",
                              response_headers=[("x-echo", big[:20_000])])])  # fmt: skip
    scanner = http2.FrameScanner(True)
    scanner.feed(0, b"".join(d for w, d in script if w == "c"))
    assert any(label.startswith("CONTINUATION stream 1") for _, label in scanner.frames)
    check(exchanges(causal(*build(script))), calls)


def test_server_push_is_an_exchange_of_its_own():
    from tests.h2_sessions import Pair

    pair = Pair()
    c, s = pair.client, pair.server
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "api.test"),
                       (":path", "/page")], end_stream=True)  # fmt: skip
    pair.flush()
    s.push_stream(1, 2, [(":method", "GET"), (":scheme", "http"), (":authority", "api.test"),
                         (":path", "/style.css")])  # fmt: skip
    s.send_headers(1, [(":status", "200")])
    s.send_data(1, b"<html>", end_stream=True)
    s.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    s.send_data(2, b"body{}", end_stream=True)
    pair.flush()
    page, pushed = exchanges(causal(*build(pair.script)))
    assert (page.stream, page.request.target, page.response.body) == (1, "/page", b"<html>")
    assert (pushed.stream, pushed.index) == (2, page.index)
    assert pushed.request.target == "/style.css" and pushed.response.body == b"body{}"
    assert pushed.notes == ("pushed by the server, promised on stream 1",)


def test_goaway_and_server_resets_are_noted():
    import h2.errors

    from tests.h2_sessions import Pair

    pair = Pair()
    c, s = pair.client, pair.server
    for sid, path in ((1, "/a"), (3, "/b"), (5, "/c")):
        c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                             (":path", path)], end_stream=True)  # fmt: skip
    pair.flush()
    s.send_headers(1, [(":status", "200")], end_stream=True)
    s.reset_stream(3, h2.errors.ErrorCodes.REFUSED_STREAM)
    s.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=3)
    pair.flush()
    a, b, refused = exchanges(causal(*build(pair.script)))
    assert a.response.status == 200 and a.notes == ()
    assert b.notes == ("reset by the server: REFUSED_STREAM",) and b.response is None
    assert refused.response is None
    assert refused.notes == ("GOAWAY from the server: NO_ERROR, last stream 3: this stream was not processed",)
