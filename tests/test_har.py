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
