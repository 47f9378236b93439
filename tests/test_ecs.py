"""--json --schema ecs: the records in Elastic Common Schema names, saying what the native
records say; Community IDs as tshark computes them."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import ecs
from engine.events import ConnectionClosed, HttpTransaction
from engine.filter import OpenConnections
from engine.records import connection_record, dumps, http_record
from tests.captures import PCAPS, all_captures, replay_file

WIREPEEK = [sys.executable, "-m", "tui.cli"]
ROOT = Path(__file__).parent.parent
CAPTURES = [str(PCAPS / name) for name in all_captures()]
SOME = [str(PCAPS / p) for p in ("zeek/http__get.pcap", "zeek/http__pipelined-requests.pcap",
                                 "zeek/http__proxy.pcap", "h2-loopback.pcap",
                                 "zeek/ipv6-http-atomic-frag.pcap")]


def _date(text: str) -> float:
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _native(path: str) -> list[dict]:
    opened = OpenConnections()
    out = []
    replay = replay_file(path)
    opened.batch(replay.events)
    for e in replay.events:
        if isinstance(e, ConnectionClosed):
            out.append(connection_record(e.info))
        elif isinstance(e, HttpTransaction):
            out.append(http_record(e))
    return out


def _check_connection(native: dict, r: dict) -> None:
    (cip, cport), (sip, sport) = (ep.rsplit(":", 1) for ep in (native["client"], native["server"]))
    assert ipaddress.ip_address(r["source"]["ip"]) == ipaddress.ip_address(cip.strip("[]"))
    assert ipaddress.ip_address(r["destination"]["ip"]) == ipaddress.ip_address(sip.strip("[]"))
    assert (r["source"]["port"], r["destination"]["port"]) == (int(cport), int(sport))
    assert r["source"]["bytes"] == native["bytes"]["client"]
    assert r["destination"]["packets"] == native["packets"]["server"]
    assert r["network"]["community_id"] == native["community_id"]
    assert r["network"]["type"] == ("ipv6" if cip.startswith("[") else "ipv4")
    assert abs(_date(r["event"]["start"]) - native["first_ts"]) < 1e-5
    assert r["event"]["duration"] == round((native["last_ts"] - native["first_ts"]) * 1e9)
    assert r["wirepeek"]["connection"]["id"] == native["id"]
    assert r["wirepeek"]["connection"]["history"] == native["history"]
    if "tls" in native and native["tls"]["sni"]:
        assert r["tls"]["client"]["server_name"] == native["tls"]["sni"]


def _check_http(native: dict, r: dict) -> None:
    request, response = native["request"], native["response"]
    assert r["wirepeek"]["connection"] == native["connection"]
    assert r["wirepeek"]["index"] == native["index"]
    if request is not None:
        assert r["http"]["request"]["method"] == request["method"]
        assert r["url"]["original"] == request["target"]
        assert r["http"]["request"]["body"]["bytes"] == request["body_bytes"]
        assert r["wirepeek"]["request"]["headers"] == request["headers"]
        if request["target"].startswith("/"):
            assert r["url"]["path"] == request["target"].split("?")[0]
    if response is not None:
        assert r["http"]["response"]["status_code"] == response["status"]
        assert r["http"]["version"] == response["version"]
        expected = "failure" if response["status"] >= 400 else "success"
        assert r["event"]["outcome"] == ("unknown" if native["error"] else expected)
    else:
        assert r["event"]["outcome"] == "unknown" and "response" not in r["http"]
    if native["duration"] is not None:
        assert r["event"]["duration"] == round(native["duration"] * 1e9)
    if native["error"]:
        assert r["error"]["message"] == native["error"]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.rsplit("/", 2)[-1])
def test_every_record_of_every_capture_says_what_the_native_one_says(path: str) -> None:
    for native in _native(path):
        r = ecs.record(native)
        assert r["ecs"]["version"] == ecs.ECS_VERSION
        json.dumps(r)  # plain JSON types only
        if native["type"] == "connection":
            _check_connection(native, r)
        else:
            _check_http(native, r)


def test_the_command_line_writes_ecs_the_same_in_one_process_or_two(tmp_path: Path) -> None:
    path = str(PCAPS / "zeek" / "http__1000-requests-one-dropped-response.pcap")
    runs = {}
    for jobs in ("1", "2"):
        out = subprocess.run([*WIREPEEK, "-r", path, "--json", "--schema", "ecs", "--jobs", jobs],
                             capture_output=True, timeout=120, cwd=ROOT, check=True).stdout
        runs[jobs] = sorted(out.splitlines())
    assert runs["1"] == runs["2"]
    records = [json.loads(line) for line in runs["1"]]
    assert sum(r["event"]["dataset"] == "wirepeek.http" for r in records) == 1000
    native = subprocess.run([*WIREPEEK, "-r", path, "--json"], capture_output=True, timeout=120,
                            cwd=ROOT, check=True).stdout.splitlines()
    assert sorted(dumps(ecs.record(json.loads(line))) for line in native) == runs["1"]


def test_where_applies_before_the_schema() -> None:
    path = str(PCAPS / "zeek" / "http__methods.pcap")
    out = subprocess.run([*WIREPEEK, "-r", path, "--json", "--schema", "ecs", "--where", "method = PUT"],
                         capture_output=True, timeout=60, cwd=ROOT, check=True).stdout
    methods = [json.loads(line)["http"]["request"]["method"] for line in out.splitlines()
               if b'"wirepeek.http"' in line]
    assert methods == ["PUT"]


@pytest.mark.parametrize("argv", [["--schema", "ecs"], ["--schema", "ecs", "--stats", "--json"],
                                  ["--schema", "otel", "--json"]])
def test_schema_usage_errors(argv: list[str]) -> None:
    result = subprocess.run([*WIREPEEK, "-r", str(PCAPS / "zeek" / "http__get.pcap"), *argv],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        ("/a/b?x=1&y", "example.com", {"path": "/a/b", "query": "x=1&y", "domain": "example.com"}),
        ("/", "example.com:8080", {"path": "/", "domain": "example.com", "port": 8080}),
        ("/", "[::1]:8443", {"path": "/", "domain": "::1", "port": 8443}),
        ("http://proxy.test:3128/p?q", None,
         {"full": "http://proxy.test:3128/p?q", "scheme": "http", "path": "/p", "query": "q",
          "domain": "proxy.test", "port": 3128}),
        ("example.com:443", None, {"domain": "example.com", "port": 443}),
        ("*", "example.com", {"domain": "example.com"}),
        ("http://[bad", None, {}),
    ],
)
def test_urls(target: str, host: str | None, expected: dict) -> None:
    assert ecs._url(target, host) == {"original": target, **expected}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", SOME, ids=lambda p: p.rsplit("/", 1)[-1])
def test_community_ids_are_tsharks(path: str) -> None:
    """Wireshark's own Community ID dissector, over the same captures: the same set of IDs."""
    out = subprocess.run(["tshark", "-r", path, "--enable-protocol", "communityid", "-Y", "tcp",
                          "-T", "fields", "-e", "communityid"],
                         capture_output=True, text=True, timeout=120).stdout
    theirs = {line.strip() for line in out.splitlines() if line.strip()}
    ours = {r["community_id"] for r in _native(path) if r["type"] == "connection"}
    assert ours and ours == theirs


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_dates_are_isos_to_the_microsecond(ts: float) -> None:
    micros = round(ts * 1_000_000)
    expected = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
    assert ecs._time(ts) == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
