"""Remote capture over SSH (engine.remote, wirepeek --ssh) against real hosts: network
namespaces with sshd and an HTTP server each (tests.remote_hosts), real ssh, real tcpdump."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.remote import RemoteCaptures, RemoteTarget, remote_command
from engine.sources import FilterError
from tests.remote_hosts import Hosts, missing, wait_for_line

WIREPEEK = [sys.executable, "-m", "tui.cli"]
WHY = missing()
live = pytest.mark.skipif(WHY is not None, reason=f"remote hosts: {WHY}")


@pytest.fixture(scope="module")
def hosts():
    made = Hosts(3)
    yield made
    made.close()


def _start(hosts: Hosts, tmp_path: Path, targets: list[str], *extra: str) -> tuple[subprocess.Popen, Path]:
    err = tmp_path / "stderr"
    argv = [*WIREPEEK, "--ssh-command", hosts.ssh_command(), *extra]
    for t in targets:
        argv += ["--ssh", t]
    proc = subprocess.Popen([*argv, "tcp port 8080"], stdout=subprocess.PIPE,
                            stderr=err.open("wb"), cwd=Path(__file__).parent.parent)
    return proc, err


def _records(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@live
def test_connections_of_every_host_carry_their_host(hosts: Hosts, tmp_path: Path) -> None:
    proc, err = _start(hosts, tmp_path, ["web1:lo", "web2:lo", "web3:lo"], "--json", "--duration", "8")
    try:
        for name in hosts.names:
            assert wait_for_line(err, f"{name}: capturing on lo"), err.read_text()
        for i, name in enumerate(hosts.names):
            hosts.get(i, [f"/{name}/{n}" for n in range(3)])
        out, _ = proc.communicate(timeout=40)
    finally:
        proc.kill()
    records = _records(out)
    exchanges = [r for r in records if r["type"] == "http"]
    assert len(exchanges) == 9
    for r in exchanges:
        assert r["request"]["target"].startswith(f"/{r['host']}/")  # the host that served it
        assert r["response"]["status"] == 404
    connections = [r for r in records if r["type"] == "connection"]
    assert sorted(r["host"] for r in connections) == sorted(hosts.names * 3)
    assert all(r["community_id"].startswith("1:") and r["conn_state"] == "SF" for r in connections)
    assert proc.returncode == 0
    text = err.read_text()
    for name in hosts.names:
        assert f"{name}: " in text and "received by the filter" in text


@live
def test_a_host_going_down_is_said_and_the_others_go_on(hosts: Hosts, tmp_path: Path) -> None:
    spare = Hosts(1)  # this one dies
    try:
        spare_config = spare.config.read_text().replace("Host web1", "Host spare")
        config = tmp_path / "config"
        config.write_text(hosts.config.read_text() + spare_config)
        argv = [*WIREPEEK, "--ssh-command", f"ssh -F {config}", "--ssh", "web1:lo", "--ssh", "spare:lo",
                "--json", "--duration", "9", "tcp port 8080"]
        err = tmp_path / "stderr"
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err.open("wb"),
                                cwd=Path(__file__).parent.parent)
        try:
            assert wait_for_line(err, "web1: capturing on lo"), err.read_text()
            assert wait_for_line(err, "spare: capturing on lo"), err.read_text()
            lines: list[bytes] = []
            reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
            reader.start()
            hosts.get(0, ["/before"])
            spare.get(0, ["/spare-before"])
            deadline = time.monotonic() + 10
            while not any(b"/spare-before" in line for line in lines) and time.monotonic() < deadline:
                time.sleep(0.05)  # its packets came before it went (those still on the way would not)
            spare.kill(0)  # sshd, the session and its tcpdump
            assert wait_for_line(err, "spare: capture lost"), err.read_text()
            hosts.get(0, ["/after"])
            proc.wait(timeout=40)
            reader.join(timeout=10)
        finally:
            proc.kill()
    finally:
        spare.close()
    text = err.read_text()
    targets = [(r["host"], r["request"]["target"]) for r in _records(b"".join(lines)) if r["type"] == "http"]
    assert ("web1", "/after") in targets and ("web1", "/before") in targets
    assert ("spare", "/spare-before") in targets
    # Tried again, refused (its sshd is gone), and said so with ssh's own words.
    assert "trying again in" in text and "Connection refused" in text
    assert "Traceback" not in text
    assert proc.returncode == 0  # one host captured before it went: not a failure of the run


@live
def test_headers_only_sends_no_body_over_the_link(hosts: Hosts, tmp_path: Path) -> None:
    (hosts.dir / "body.bin").write_bytes(b"secret!!" * 65536)  # 512 KiB the link must not carry
    proc, err = _start(hosts, tmp_path, ["web2:lo"], "--headers-only", "--json", "--duration", "5")
    try:
        assert wait_for_line(err, "web2: capturing on lo"), err.read_text()
        hosts.get(1, ["/body.bin"])
        out, _ = proc.communicate(timeout=40)
    finally:
        proc.kill()
    assert b"secret!!secret!!" not in out
    [exchange] = [r for r in _records(out) if r["type"] == "http"]
    assert exchange["request"]["target"] == "/body.bin"  # the heads' first lines came
    assert exchange["response"]["status"] == 200
    [conn] = [r for r in _records(out) if r["type"] == "connection"]
    assert conn["missing_bytes"]["server"] > 500_000  # and the body is said to be missing
    assert conn["bytes"]["server"] < 16_000


@live
def test_a_host_that_never_answers_fails_the_run_with_why(hosts: Hosts, tmp_path: Path) -> None:
    config = tmp_path / "config"
    # web1's address, on a port where nothing listens: refused (no packet leaves the test's hosts)
    config.write_text(hosts.config.read_text() + f"Host ghost\n  HostName {hosts.address(0)}\n  Port 2222\n")
    result = subprocess.run(
        [*WIREPEEK, "--ssh-command", f"ssh -F {config}", "--ssh", "web1:lo", "--ssh", "ghost",
         "--json", "--duration", "3"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 1
    assert "ghost: no capture:" in result.stderr and "Traceback" not in result.stderr
    assert "web1: capturing on lo" in result.stderr


@live
def test_a_new_filter_restarts_every_hosts_tcpdump(hosts: Hosts) -> None:
    targets = [RemoteTarget.parse(f"{name}:lo") for name in hosts.names[:2]]
    source = RemoteCaptures(targets, "tcp port 9", hosts.ssh_command())
    try:
        seen: list[tuple[int, bytes]] = []

        def read(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                batch = source.next_batch(0.2)
                assert batch is not None
                seen.extend((batch.host, data) for _, data in batch.packets())

        def capturing() -> bool:
            return all(s.state == "capturing" for s in source.host_status())

        for _ in range(100):
            read(0.1)
            if capturing():
                break
        hosts.get(0, ["/not-captured"])
        read(0.5)
        assert not seen  # port 9 only
        with pytest.raises(FilterError):
            source.set_filter("tcp port banana")
        assert source.filter == "tcp port 9"
        source.set_filter("tcp port 8080")
        assert [s.starts for s in source.host_status()] == [2, 2]
        for _ in range(100):
            read(0.1)
            if capturing():
                break
        hosts.get(0, ["/captured"])
        hosts.get(1, ["/captured-too"])
        read(1.0)
        assert {host for host, _ in seen} == {1, 2}
        assert any(b"GET /captured " in data for host, data in seen if host == 1)
        assert any(b"GET /captured-too " in data for host, data in seen if host == 2)
    finally:
        source.close()


# --- without hosts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web3", ("web3", "any", "web3")),
        ("ops@web3:eth0", ("ops@web3", "eth0", "web3")),
        ("10.0.0.5:lo", ("10.0.0.5", "lo", "10.0.0.5")),
        ("root@[fd00::5]:eth1", ("root@fd00::5", "eth1", "fd00::5")),
        ("[fd00::5]", ("fd00::5", "any", "fd00::5")),
    ],
)
def test_targets(text: str, expected: tuple[str, str, str]) -> None:
    t = RemoteTarget.parse(text)
    assert (t.destination, t.interface, t.name) == expected


@pytest.mark.parametrize("text", ["", "@web", "web:", "ops@", "[fd00::5", "-oProxyCommand=x", "a b"])
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError):
        RemoteTarget.parse(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["--ssh", "-oProxyCommand=touch /tmp/x"],
        ["--ssh", "web1:"],
        ["--ssh-sudo", "-r", "x.pcap"],
        ["--snaplen", "100", "-i", "lo"],
        ["--ssh", "web1", "-i", "lo"],
        ["--ssh", "web1", "--snaplen", "10"],
        ["--headers-only", "-i", "lo"],
        ["--ssh", "web1", "--headers-only", "--snaplen", "512"],
    ],
)
def test_usage_errors(argv: list[str]) -> None:
    result = subprocess.run([*WIREPEEK, *argv, "--json"], capture_output=True, text=True, timeout=30,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "wirepeek: error:" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or WHY == "tcpdump is not installed", reason="tcpdump as root")
def test_the_remote_command_runs_tcpdump_with_the_filter_as_given() -> None:
    """The command each host runs, run here by sh as a login shell would: a filter with quotes
    and shell syntax reaches tcpdump as one argument (a wrong one would make it complain)."""
    bad = remote_command("lo", "tcp port 8080 and not host 10.9.9.9 && echo $HOME '\"", 96, False)
    result = subprocess.run(["sh", "-c", bad], capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"unknown host 'echo'" in result.stderr  # tcpdump read it all as its filter
    good = remote_command("lo", "tcp port 8080 and not host 10.9.9.9", 96, False)
    proc = subprocess.Popen(["sh", "-c", good], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        header = proc.stdout.read(24)  # tcpdump's pcap file header: it runs, with snaplen 96
        assert header[:4] == bytes.fromhex("d4c3b2a1") and int.from_bytes(header[16:20], "little") == 96
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)
    assert shlex.split(good)[:3] == ["exec", "sh", "-c"]
    # --ssh-sudo: the same script under sudo, which must not ask for a password (-n).
    sudo = remote_command("lo", "tcp port 8080 and not host 10.9.9.9", 96, True)
    assert shlex.split(sudo)[:5] == ["exec", "sudo", "-n", "sh", "-c"]
    assert shlex.split(sudo)[5] == shlex.split(good)[3]


@live
@pytest.mark.asyncio
async def test_the_inspector_shows_each_connections_host(hosts: Hosts) -> None:
    """The host column, `host = web2` in /, each host's state in the status bar, and f giving
    every host a new filter while the connections stay."""
    from textual.widgets import Input

    from engine.bounds import Bounds
    from tests.test_app_live import until
    from tui.app import WirepeekApp
    from tui.capture import SourceSpec
    from tui.widgets.connections import ConnectionsTable
    from tui.widgets.status import StatusBar

    targets = [RemoteTarget.parse(f"{name}:lo") for name in hosts.names[:2]]
    source = RemoteCaptures(targets, "tcp port 8080", hosts.ssh_command())
    app = WirepeekApp(SourceSpec(opened=source), "tcp port 8080", Bounds(keep_after_close=True))
    async with app.run_test(size=(120, 36)) as pilot:
        table = app.query_one(ConnectionsTable)
        bar = app.query_one(StatusBar)
        await until(pilot, lambda: "web1 ✓" in str(bar.shown) and "web2 ✓" in str(bar.shown), 20)
        assert table.COLUMNS[0].key == "host"
        hosts.get(0, ["/one"])
        hosts.get(1, ["/two", "/three"])
        await until(pilot, lambda: len(table.order) == 3 and len(app.store.http) == 3)
        rows = [table.row_text(i) for i in table.order]
        assert sorted(r.split()[0] for r in rows) == ["web1", "web2", "web2"]

        await pilot.press("slash")
        app.query_one("#display-filter", Input).value = "host = web2"
        await pilot.press("enter")
        await until(pilot, lambda: len(table.order) == 2)
        assert all(table.row_text(i).startswith("web2 ") for i in table.order)
        await pilot.press("slash", "ctrl+u", "enter")
        await until(pilot, lambda: len(table.order) == 3)

        await pilot.press("f")
        app.query_one("#capture-filter", Input).value = "tcp port 8080 and tcp[tcpflags] & tcp-syn != 0"
        await pilot.press("enter")
        await until(pilot, lambda: [s.starts for s in source.host_status()] == [2, 2])
        await until(pilot, lambda: "web1 ✓" in str(bar.shown) and "web2 ✓" in str(bar.shown), 20)
        assert len(table.order) == 3  # the connections stay
        hosts.get(1, ["/four"])
        await until(pilot, lambda: len(table.order) == 4)


def test_one_host_twice_is_named_by_its_users() -> None:
    targets = [RemoteTarget.parse(t) for t in ("ops@web1", "root@web1:lo", "web2")]
    source = RemoteCaptures(targets, "", "true")  # (no ssh needed to name them)
    try:
        assert source.hosts == ("ops@web1", "root@web1", "web2")
    finally:
        source.close()
