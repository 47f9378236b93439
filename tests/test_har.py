"""HAR 1.2 export (engine.har, --har): read back with haralyzer (a HAR reader from PyPI) and
checked against the fields the HAR 1.2 spec requires, on a capture whose exchanges carry
cookies, query strings, a gzip body, binary bodies both ways, and a request left unanswered."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from tests.conversations import build, causal
from tests.synth import write_pcap
from tests.test_cli import wirepeek

haralyzer = pytest.importorskip("haralyzer", reason="haralyzer (a test dependency) is not installed")

JSON_BODY = b'{"results": [1, 2, 3], "query": "wire peek"}'
BINARY = bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


def http1(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


SCRIPT = [
    ("c", http1("GET /search?q=wire+peek&page=2&empty= HTTP/1.1\nHost: shop.test\n"
                "Cookie: sid=abc; theme=dark\n")),
    ("s", http1(f"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Encoding: gzip\n"
                f"Set-Cookie: sid=new; Path=/; HttpOnly; Secure\n"
                f"Content-Length: {len(gzip.compress(JSON_BODY, mtime=0))}\n",
                gzip.compress(JSON_BODY, mtime=0))),
    ("c", http1(f"POST /upload?kind=raw HTTP/1.1\nHost: shop.test\nContent-Type: application/octet-stream\n"
                f"Content-Length: {len(BINARY)}\n", BINARY)),
    ("s", http1(f"HTTP/1.1 201 Created\nContent-Type: image/png\nLocation: /files/9\n"
                f"Content-Length: {len(PNG)}\n", PNG)),
    ("c", http1("GET /never-answered HTTP/1.1\nHost: shop.test\n")),
    ("c-fin",),
]  # fmt: skip

REQUIRED = {
    "request": {"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize",
                "bodySize"},
    "response": {"status", "statusText", "httpVersion", "cookies", "headers", "content",
                 "redirectURL", "headersSize", "bodySize"},
    "entry": {"startedDateTime", "time", "request", "response", "cache", "timings"},
}  # fmt: skip


@pytest.fixture
def har_file(tmp_path):
    write_pcap(tmp_path / "shop.pcap", causal(*build(SCRIPT)))
    proc = wirepeek("-r", str(tmp_path / "shop.pcap"), "--har", str(tmp_path / "shop.har"))
    assert proc.returncode == 0, proc.stderr
    assert b"3 exchanges written" in proc.stderr
    return tmp_path / "shop.har"


def test_the_har_has_what_the_spec_requires_and_reads_back(har_file):
    doc = json.loads(har_file.read_text())
    log = doc["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "wirepeek"
    entries = log["entries"]
    assert len(entries) == 3
    for e in entries:
        assert REQUIRED["entry"] <= e.keys()
        assert REQUIRED["request"] <= e["request"].keys()
        assert REQUIRED["response"] <= e["response"].keys()
        assert {"size", "mimeType"} <= e["response"]["content"].keys()
        assert {"send", "wait", "receive"} <= e["timings"].keys()
        assert e["startedDateTime"].endswith("Z")
        assert e["time"] == pytest.approx(sum(t for t in (e["timings"]["send"], e["timings"]["wait"],
                                                          e["timings"]["receive"]) if t >= 0), abs=0.01)  # fmt: skip
    read = [haralyzer.HarEntry(e) for e in entries]
    assert [(x.request.method, x.url, x.status) for x in read] == [
        ("GET", "http://shop.test/search?q=wire+peek&page=2&empty=", 200),
        ("POST", "http://shop.test/upload?kind=raw", 201),
        ("GET", "http://shop.test/never-answered", 0),
    ]


def test_bodies_cookies_and_queries(har_file):
    search, upload, unanswered = json.loads(har_file.read_text())["log"]["entries"]
    assert search["request"]["queryString"] == [
        {"name": "q", "value": "wire peek"}, {"name": "page", "value": "2"},
        {"name": "empty", "value": ""}]  # fmt: skip
    assert search["request"]["cookies"] == [{"name": "sid", "value": "abc"},
                                            {"name": "theme", "value": "dark"}]  # fmt: skip
    assert search["response"]["cookies"] == [
        {"name": "sid", "value": "new", "path": "/", "httpOnly": True, "secure": True}]
    content = search["response"]["content"]
    assert content["text"] == JSON_BODY.decode() and content["size"] == len(JSON_BODY)
    assert content["mimeType"] == "application/json" and "encoding" not in content
    assert search["response"]["bodySize"] == len(gzip.compress(JSON_BODY, mtime=0))
    assert content["compression"] == search["response"]["bodySize"] - len(JSON_BODY)
    post = upload["request"]["postData"]
    assert post["mimeType"] == "application/octet-stream"
    assert base64.b64decode(post["text"]) == BINARY and post["_encoding"] == "base64"
    png = upload["response"]["content"]
    assert png["encoding"] == "base64" and base64.b64decode(png["text"]) == PNG
    assert upload["response"]["redirectURL"] == "/files/9"
    assert unanswered["response"]["status"] == 0 and unanswered["response"]["_error"]
    assert unanswered["_wirepeek"]["complete"] == {"request": True, "response": False}
    assert search["_wirepeek"]["client"] == "10.1.0.1:43210" and search["serverIPAddress"] == "10.1.0.2"


def test_har_follows_where_and_writes_to_stdout(tmp_path):
    write_pcap(tmp_path / "shop.pcap", causal(*build(SCRIPT)))
    proc = wirepeek("-r", str(tmp_path / "shop.pcap"), "--har", "-", "--where", "method = POST")
    entries = json.loads(proc.stdout)["log"]["entries"]
    assert [e["request"]["url"] for e in entries] == ["http://shop.test/upload?kind=raw"]
    bad = wirepeek("-r", str(tmp_path / "shop.pcap"), "--har", str(tmp_path / "no" / "such" / "dir.har"))
    assert bad.returncode == 2 and b"--har: cannot write" in bad.stderr and b"Traceback" not in bad.stderr


# ---------------------------------------------------------------------------- copy as curl / raw


def test_a_curl_command_sends_the_same_request_again(tmp_path):
    """The command is run (by bash, with the real curl) against a server on loopback that
    records what it receives: method, target, headers and body come back as captured."""
    import shutil
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from engine.events import HttpRequest, HttpTransaction
    from engine.export import curl_command

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    got: list[tuple[str, str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append((self.command, self.path, dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_port}"
    try:
        cases = [
            ("GET", "/search?q=a%20b&x=1", [("Cookie", "sid=abc; t='x'"), ("X-Quote", "it's $HOME `id`")], b""),
            ("POST", "/upload", [("Content-Type", "application/octet-stream")], BINARY),
            ("PUT", "/doc/7", [("Content-Type", "application/json")], '{"name": "café"}'.encode()),
        ]
        for method, target, headers, body in cases:
            fields = tuple([("Host", host), *headers, ("Content-Length", str(len(body)))])
            request = HttpRequest(1.0, 1.0, method, target, "1.1", fields, len(body), 0, body, True, 0)
            command = curl_command(HttpTransaction(0, 0, request, None))
            assert command is not None
            subprocess.run(["bash", "-c", command + " -s -o /dev/null"], check=True, timeout=20)
            sent_method, sent_path, sent_headers, sent_body = got[-1]
            assert (sent_method, sent_path, sent_body) == (method, target, body)
            for name, value in headers:
                assert sent_headers[name] == value
    finally:
        server.shutdown()


def test_raw_http_is_the_exchange_as_sent():
    from engine.events import HttpRequest, HttpResponse, HttpTransaction
    from engine.export import raw_http

    request = HttpRequest(1.0, 1.0, "POST", "/x", "1.1", (("Host", "a"), ("Content-Length", "2")),
                          2, 0, b"hi", True, 0)  # fmt: skip
    response = HttpResponse(2.0, 2.0, 200, "OK", "1.1", (("Content-Length", "3"),), 3, 0, b"yes", True)
    assert raw_http(HttpTransaction(0, 0, request, response)) == (
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")


@pytest.mark.asyncio
async def test_the_inspector_exports_har_and_copies_curl(tmp_path):
    from textual.widgets import Input

    from engine.export import curl_command
    from tests.test_app import SIZE, read_all, workers_done
    from tests.test_inspector import file_app

    write_pcap(tmp_path / "shop.pcap", causal(*build(SCRIPT)))
    app = file_app(tmp_path / "shop.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("enter", "down")  # the second exchange: the POST
        tx = app.store.http[0][1]
        await pilot.press("c")
        assert app.clipboard == curl_command(tx, app.store.connections[0]) + "\n"
        assert "printf '%b'" in app.clipboard and "--data-binary @-" in app.clipboard
        assert [n.message for n in app._notifications][-1].startswith("the curl command: ")
        await pilot.press("C")
        assert app.clipboard.startswith("POST /upload?kind=raw HTTP/1.1\r\n")
        await pilot.press("e")  # the exchanges have the focus: the one under the cursor
        field = app.query_one("#har-path", Input)
        assert field.value == "wirepeek-exchange-0-1.har"
        field.value = str(tmp_path / "one.har")
        await pilot.press("enter")
        await workers_done(app, "write")
        await pilot.pause()
        [one] = json.loads((tmp_path / "one.har").read_text())["log"]["entries"]
        assert one["request"]["method"] == "POST"
        await pilot.press("e")  # the connections have the focus now: the whole connection
        assert field.value == "wirepeek-connection-0.har"
        field.value = str(tmp_path / "conn.har")
        await pilot.press("enter")
        await workers_done(app, "write")
        await pilot.pause()
        entries = json.loads((tmp_path / "conn.har").read_text())["log"]["entries"]
        assert [haralyzer.HarEntry(e).url for e in entries] == [
            "http://shop.test/search?q=wire+peek&page=2&empty=", "http://shop.test/upload?kind=raw",
            "http://shop.test/never-answered"]  # fmt: skip
        # Under a search, only what it shows.
        await pilot.press("escape", "slash", *"method = POST", "enter")
        from tests.test_app import until

        await until(pilot, lambda: app.search is not None)
        await pilot.press("E")
        app.query_one("#har-all-path", Input).value = str(tmp_path / "shown.har")
        await pilot.press("enter")
        await workers_done(app, "write")
        await pilot.pause()
        shown = json.loads((tmp_path / "shown.har").read_text())["log"]["entries"]
        assert [e["request"]["method"] for e in shown] == ["POST"]


@pytest.mark.asyncio
async def test_b_saves_the_body_decoded(tmp_path, monkeypatch):
    from textual.widgets import Input

    from tests.test_app import SIZE, read_all
    from tests.test_inspector import file_app

    monkeypatch.chdir(tmp_path)
    write_pcap(tmp_path / "shop.pcap", causal(*build(SCRIPT)))
    app = file_app(tmp_path / "shop.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await read_all(app, pilot)
        await pilot.press("enter", "b")  # the search: a gzip JSON answer
        field = app.query_one("#body-path", Input)
        assert field.value == "wirepeek-body-0-0.json"
        await pilot.press("enter")
        assert (tmp_path / "wirepeek-body-0-0.json").read_bytes() == JSON_BODY
        said = [n.message for n in app._notifications][-1]
        assert said == f"saved the response body to wirepeek-body-0-0.json ({len(JSON_BODY)} bytes, decoded gzip)"
        await pilot.press("enter", "down", "b")  # the upload: its response is a PNG
        assert field.value == "wirepeek-body-0-1.png"
        await pilot.press("enter")
        assert (tmp_path / "wirepeek-body-0-1.png").read_bytes() == PNG
