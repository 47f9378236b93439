"""Real tunnels made by the kernel: two network namespaces joined by a veth pair, a tunnel device
(VXLAN, GRE, IPIP, Geneve) between them, Python's http.server in one and a client in the other
over the tunnel's addresses. `wirepeek -i VETH --json` captures the outer packets on the veth and
must report the inner HTTP exchanges.

Every packet stays inside the two namespaces made here, which are deleted afterwards. Needs root
(network namespaces, capture); each tunnel type is skipped when the kernel has no such device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import end_process, wait_for_line
from tests.test_cli import ROOT, records

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and live capture need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's ip command is not installed"),
]

UNDERLAY = ("192.0.2.1", "192.0.2.2")
OVERLAY = ("10.9.0.1", "10.9.0.2")
PORT = 8080
BODY = bytes(range(256)) * 80  # 20480 bytes: many segments through the tunnel

# kind -> (the `ip link add ... type` arguments after the name, BPF for the outer packets)
TUNNELS = {
    "vxlan": ("vxlan id 42 dstport 4789 local {local} remote {remote} dev {dev}", "udp port 4789"),
    "gre": ("gre local {local} remote {remote}", "proto gre"),
    "ipip": ("ipip local {local} remote {remote}", "ip proto 4"),
    "geneve": ("geneve id 42 remote {remote}", "udp port 6081"),
}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Pair:
    namespaces: tuple[str, str]
    veth: tuple[str, str]
    kind: str


@pytest.fixture(params=sorted(TUNNELS))
def tunnel(request: pytest.FixtureRequest) -> Iterator[Pair]:
    kind = request.param
    tag = f"{os.getpid() % 1_000_000}"
    names = (f"wpk{tag}a", f"wpk{tag}b")
    veth = (f"wpv{tag}a", f"wpv{tag}b")
    made: list[str] = []
    try:
        for ns in names:
            result = ip("netns", "add", ns, check=False)
            if result.returncode:
                pytest.skip(f"cannot make a network namespace: {result.stderr.strip()}")
            made.append(ns)
        result = ip("link", "add", veth[0], "netns", names[0], "type", "veth",
                    "peer", "name", veth[1], "netns", names[1], check=False)
        if result.returncode:
            pytest.skip(f"cannot make a veth pair: {result.stderr.strip()}")
        for ns, dev, local, remote, inner in zip(names, veth, UNDERLAY, UNDERLAY[::-1], OVERLAY,
                                                 strict=True):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{local}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            spec = TUNNELS[kind][0].format(local=local, remote=remote, dev=dev).split()
            result = ip("-n", ns, "link", "add", "wptun", "type", *spec, check=False)
            if result.returncode:
                pytest.skip(f"the kernel here makes no {kind} devices: {result.stderr.strip()}")
            ip("-n", ns, "addr", "add", f"{inner}/24", "dev", "wptun")
            ip("-n", ns, "link", "set", "wptun", "up")
        yield Pair(names, veth, kind)
    finally:
        for ns in made:
            ip("netns", "del", ns, check=False)


def _in(ns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


CLIENT = """
import sys, urllib.error, urllib.request
url = sys.argv[1]
for path in ("/page.bin", "/missing"):
    try:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            sys.stdout.buffer.write(b"%d %d\\n" % (r.status, len(r.read())))
    except urllib.error.HTTPError as e:
        sys.stdout.buffer.write(b"%d %d\\n" % (e.code, len(e.read())))
"""


def test_http_inside_a_kernel_tunnel_is_found(tunnel: Pair, tmp_path: Path) -> None:
    (tmp_path / "page.bin").write_bytes(BODY)
    client_ns, server_ns = tunnel.namespaces
    server = subprocess.Popen(
        _in(server_ns, sys.executable, "-u", "-m", "http.server", str(PORT), "--bind", OVERLAY[1],
            "--directory", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    capture = subprocess.Popen(
        _in(client_ns, sys.executable, "-m", "tui.cli", "-i", tunnel.veth[0], "--json",
            "--duration", "6", *TUNNELS[tunnel.kind][1].split()),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert server.stdout is not None and capture.stderr is not None
        wait_for_line(server, b"Serving HTTP", timeout=30, stdout=True)
        wait_for_line(capture, b"capturing on", timeout=30)
        client = subprocess.run(
            _in(client_ns, sys.executable, "-c", CLIENT, f"http://{OVERLAY[1]}:{PORT}"),
            capture_output=True, timeout=60)
        out, err = capture.communicate(timeout=30)
    finally:
        for proc in (capture, server):
            end_process(proc)
    assert client.returncode == 0, client.stderr
    missing_size = int(client.stdout.split()[3])
    assert client.stdout.split() == [b"200", str(len(BODY)).encode(), b"404",
                                     str(missing_size).encode()]
    assert capture.returncode == 0, err
    assert b"Traceback" not in err

    connections = sorted(records(out, "connection"), key=lambda r: r["id"])
    exchanges = sorted(records(out, "http"), key=lambda r: r["connection"])
    assert [c["server"] for c in connections] == [f"{OVERLAY[1]}:{PORT}"] * 2
    assert all(c["client"].startswith(f"{OVERLAY[0]}:") for c in connections)
    for c in connections:
        assert (c["protocol"], c["conn_state"]) == ("http", "SF")
        assert c["missing_bytes"] == {"client": 0, "server": 0}
    assert [(x["request"]["method"], x["request"]["target"], x["response"]["status"],
             x["response"]["body_bytes"]) for x in exchanges] == [
        ("GET", "/page.bin", 200, len(BODY)), ("GET", "/missing", 404, missing_size)]
