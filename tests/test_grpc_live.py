"""gRPC as real services speak it: a server and a client made with grpcio (Google's own gRPC
library, over its C core and HTTP/2 stack) on loopback, captured live. The calls come out as
HTTP/2 exchanges carrying service, method, status, message and the messages each way. Needs root
for the capture (CI runs as root)."""

from __future__ import annotations

import os
import subprocess
from concurrent import futures

import pytest

from tests.live import end_process, wait_for_line
from tests.test_cli import ROOT, WIREPEEK, records

grpc = pytest.importorskip("grpc", reason="grpcio (a test dependency) is not installed")
root = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)")


def add(request: bytes, context: object) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item: café")  # type: ignore[attr-defined]
    return b"added " + request


def listing(request: bytes, context: object):  # type: ignore[no-untyped-def]
    for i in range(int(request)):
        yield b"item %d " % i + b"x" * (i * 100)


def upload(requests, context: object) -> bytes:  # type: ignore[no-untyped-def]
    return b"%d bytes" % sum(len(r) for r in requests)


def serve() -> tuple[object, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Add": grpc.unary_unary_rpc_method_handler(add),
        "List": grpc.unary_stream_rpc_method_handler(listing),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("shop.Cart", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@root
def test_grpc_calls_captured_live_say_what_they_did():
    server, port = serve()
    proc = subprocess.Popen([*WIREPEEK, "-i", "lo", "--json", "--duration", "5", f"tcp port {port}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for_line(proc, b"capturing on", 20)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call_add = channel.unary_unary("/shop.Cart/Add")
            assert call_add(b"apple", timeout=5) == b"added apple"
            with pytest.raises(grpc.RpcError) as failed:
                call_add(b"missing", timeout=5)
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            items = list(channel.unary_stream("/shop.Cart/List")(b"7", timeout=5))
            assert len(items) == 7
            sent = channel.stream_unary("/shop.Cart/Upload")(iter([b"a" * 10, b"b" * 300, b""]),
                                                              timeout=5)  # fmt: skip
            assert sent == b"310 bytes"
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
        server.stop(0)  # type: ignore[attr-defined]
    assert proc.returncode == 0, err.decode()
    [conn] = records(out, "connection")
    assert conn["protocol"] == "http2"
    calls = [r for r in records(out, "http") if "grpc" in r]
    by_method = {(r["grpc"]["method"], r["grpc"]["status"]): r for r in calls}
    assert sorted(by_method) == [("Add", 0), ("Add", 5), ("List", 0), ("Upload", 0)]
    ok = by_method[("Add", 0)]
    assert ok["grpc"]["service"] == "shop.Cart" and ok["request"]["version"] == "2"
    assert ok["grpc"]["messages"] == {"request": 1, "response": 1}
    assert ok["grpc"]["message_bytes"] == {"request": 5, "response": 11}
    missing = by_method[("Add", 5)]
    assert missing["grpc"]["message"] == "no such item: café"
    assert missing["grpc"]["messages"] == {"request": 1, "response": 0}
    listed = by_method[("List", 0)]["grpc"]
    assert listed["messages"] == {"request": 1, "response": 7}
    assert listed["message_bytes"]["response"] == sum(len(b"item %d " % i) + i * 100 for i in range(7))
    assert by_method[("Upload", 0)]["grpc"]["messages"] == {"request": 3, "response": 1}
    assert all(r["response"]["status"] == 200 and r["error"] is None for r in calls)
