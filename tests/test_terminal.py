"""The app in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.captures import capture

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def wait_for(session: str, text: str, timeout: float = 15.0) -> str:
    """Read the screen until it shows `text` (a real terminal can only be polled)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")


def wait_gone(session: str, text: str, timeout: float = 15.0) -> str:
    """Read the screen until it no longer shows `text`."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text not in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never went; the screen was:\n{screen}")


@pytest.fixture
def session():
    name = f"wirepeek-test-{time.monotonic_ns()}"
    for attempt in range(5):  # (a server still exiting after the last test's session refuses)
        made = subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30"],
                              capture_output=True, text=True)  # fmt: skip
        if made.returncode == 0:
            break
        time.sleep(0.2 * (attempt + 1))
    else:
        raise AssertionError(f"tmux new-session failed: {made.stderr}")
    tmux("set-option", "-t", name, "allow-rename", "on")
    tmux("select-pane", "-t", name, "-T", "untouched-title")
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_escape_capture_in_a_real_terminal_keeps_the_title(session):
    command = f"cd {ROOT} && {sys.executable} -m tui.cli -r {capture('escapes.pcap')}; echo EXITED $?"
    tmux("send-keys", "-t", session, command, "Enter")
    wait_for(session, "done ")  # the status bar: the file was read to its end
    tmux("send-keys", "-t", session, "j")
    screen = wait_for(session, "X-Comment")
    assert "\\x1b]2;title\\x07" in screen
    tmux("send-keys", "-t", session, "2")  # the stream, escaped too, from its start
    wait_for(session, "┄┄ request 0: GET /profile")  # (a line only the stream shows)
    wait_for(session, "X-Comment: hello \\x1b]2;title\\x07world")
    tmux("send-keys", "-t", session, "x")
    wait_for(session, "|GET /profile HTT|")  # x shows the same bytes as hex, and focuses them
    tmux("send-keys", "-t", session, "End")
    wait_for(session, "|8....profile.|")  # the last bytes, in the hex dump
    tmux("send-keys", "-t", session, "x")
    wait_for(session, "X-Reply: ok\\x1b]2;title\\x07")  # the end, as text
    assert tmux("display-message", "-p", "-t", session, "#{pane_title}").strip() == "untouched-title"
    tmux("send-keys", "-t", session, "q")
    wait_for(session, "EXITED 0")
    assert tmux("display-message", "-p", "-t", session, "#{pane_title}").strip() == "untouched-title"


def test_capture_on_a_pipe_while_keys_come_from_the_terminal(session):
    command = (f"cd {ROOT} && cat {capture('zeek/http__pipelined-requests.pcap')} | "
               f"{sys.executable} -m tui.cli -r -; echo EXITED $?")
    tmux("send-keys", "-t", session, command, "Enter")
    wait_for(session, "/style/enhanced.css")
    tmux("send-keys", "-t", session, "?")  # the keyboard works although stdin is the pipe
    wait_for(session, "wirepeek keys")
    tmux("send-keys", "-t", session, "q")  # closes the help
    wait_for(session, "Accept-Language")
    tmux("send-keys", "-t", session, "q")
    wait_for(session, "EXITED 0")


SGR = re.compile(r"\x1b\[([0-9;:]*)m|([^\x1b])")
# Lines and blocks that draw borders, tab underlines and scrollbars: not text to be read.
DRAWING = set("─━│┃┄┅╸╺╹╻▁▂▃▄▅▆▇█▉▊▋▌▍▎▏▔▕▐ ")


def cell_colours(screen: str) -> tuple[set[int], list[tuple[str, int, int]]]:
    """The SGR parameters a screen dump (capture-pane -e) uses, and each text cell with its
    foreground and background as 16-colour indexes; the terminal's defaults count as a dark
    terminal's (white on black)."""
    params: set[int] = set()
    cells = []
    for line in screen.split("\n"):
        fg, bg = 7, 0
        for m in SGR.finditer(line):
            if m.group(1) is None:
                if m.group(2) not in DRAWING:
                    cells.append((m.group(2), fg, bg))
                continue
            values = [int(v) if v else 0 for v in re.split("[;:]", m.group(1))]
            params.update(values)
            for p in values:
                if p == 0:
                    fg, bg = 7, 0
                elif 30 <= p <= 37 or 90 <= p <= 97:
                    fg = p % 10 + (8 if p >= 90 else 0)
                elif p == 39:
                    fg = 7
                elif 40 <= p <= 47 or 100 <= p <= 107:
                    bg = p % 10 + (8 if p >= 100 else 0)
                elif p == 49:
                    bg = 0
    return params, cells


def test_a_16_colour_terminal_gets_16_colours_and_no_text_in_its_background_colour(session):
    """With TERM=xterm-16color and no COLORTERM, every view uses the 16 basic colours only
    (no 256-colour or RGB sequences), and no text is drawn in the colour of its background."""
    command = (f"cd {ROOT} && env -u COLORTERM -u NO_COLOR TERM=xterm-16color {sys.executable} "
               f"-m tui.cli -r {capture('zeek/http__get.pcap')}; echo EXITED $?")
    tmux("send-keys", "-t", session, command, "Enter")
    wait_for(session, "done ")
    views = {}
    for keys, shows in [((), "GET /download/CHANGES.bro-aux.txt"),
                        (("2",), "── client 141.142.228.5:59856"),
                        (("x", "End"), "00001380  38 2e 20 28 4a 6f 6e 20  53 69 77"), (("x",), "Initial import"),
                        (("3",), "###[ Ethernet ]###"),
                        (("f",), "BPF capture filter"), (("Escape", "?"), "wirepeek keys")]:
        for key in keys:
            tmux("send-keys", "-t", session, key)
            time.sleep(0.3)  # an Escape followed at once by a key would read as Alt+key
        wait_for(session, shows)
        time.sleep(0.3)  # let the frame settle: colours may follow the text by one refresh
        views[shows] = tmux("capture-pane", "-e", "-p", "-t", session)
    tmux("send-keys", "-t", session, "q")
    wait_gone(session, "wirepeek keys")  # the help closed (and the list is back)
    wait_for(session, "done ")
    tmux("send-keys", "-t", session, "q")
    wait_for(session, "EXITED 0")
    for shows, screen in views.items():
        params, cells = cell_colours(screen)
        assert params & {38, 48} == set(), f"{shows}: colours beyond 16 in use"
        assert len(cells) > 200, shows
        unreadable = "".join(ch for ch, fg, bg in cells if fg == bg)
        assert unreadable == "", f"{shows}: text in its background colour: {unreadable!r}"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root (CI runs as root)")
def test_interactive_live_capture_without_permission_says_what_to_do(session):
    # The shell in the pane keeps its rights; only the wirepeek process loses them.
    drop = ("import ctypes,os,sys; libc=ctypes.CDLL(None); "
            "[libc.prctl(24, c, 0, 0, 0) for c in (12, 13)]; "
            "os.execv(sys.executable, [sys.executable, '-m', 'tui.cli', '-i', 'lo'])")
    tmux("send-keys", "-t", session, f'cd {ROOT} && {sys.executable} -c "{drop}"; echo EXITED=$?',
         "Enter")
    screen = wait_for(session, "EXITED=1")
    assert "Traceback" not in screen
    assert "no permission to capture on 'lo'" in screen and "setcap" in screen


def test_a_2mb_download_in_a_real_terminal_from_its_first_byte_to_its_last(session):
    """Press 2, x, End, Home on a 2 MB download (tests/data/pcaps/README.md): each shows at once
    (the old view froze for 20-40 s on x and could not reach the request line)."""
    tmux("resize-window", "-t", session, "-x", "120", "-y", "40")
    command = f"cd {ROOT} && {sys.executable} -m tui.cli -r {capture('download-2m.pcap.gz')}; echo EXITED $?"
    tmux("send-keys", "-t", session, command, "Enter")
    wait_for(session, "done ")
    for key, shows in [("2", "GET /big.txt HTTP/1.1"), ("x", "|GET /big.txt HTT|"),
                       ("End", "|654LAST BYTES..|"), ("x", "002654LAST BYTES."),
                       ("Home", "User-Agent: curl/7.88.1")]:
        tmux("send-keys", "-t", session, key)
        wait_for(session, shows, timeout=5)
        time.sleep(0.2)  # the next key after the screen settled (x moves the focus)
    tmux("send-keys", "-t", session, "q")
    wait_for(session, "EXITED 0")


def test_a_connection_of_3000_exchanges_in_a_real_terminal(session, tmp_path):
    """Open it, page through it, sort it, find one exchange in its middle: in tmux, as typed."""
    from tests.bench.workloads import keepalive_http

    path = tmp_path / "keepalive-3000.pcap"
    keepalive_http(path, connections=1, transactions=3000)
    tmux("send-keys", "-t", session, f"cd {ROOT} && {sys.executable} -m tui.cli -r {path}; echo EXITED $?",
         "Enter")
    wait_for(session, "3,000 exchanges")
    tmux("send-keys", "-t", session, "Enter")  # into the exchanges
    time.sleep(0.3)
    for _ in range(3):
        tmux("send-keys", "-t", session, "PageDown")
    screen = wait_for(session, "GET /items/")
    tmux("send-keys", "-t", session, "End")
    wait_for(session, " 2999  ")  # the last exchange's row
    tmux("send-keys", "-t", session, "S")  # reversed: the last first
    screen = wait_for(session, "#▼")
    tmux("send-keys", "-t", session, "Home")
    time.sleep(0.3)
    tmux("send-keys", "-t", session, "/")
    time.sleep(0.3)
    tmux("send-keys", "-t", session, "-l", "/items/1234")
    tmux("send-keys", "-t", session, "Enter")
    wait_for(session, "1 match '/items/1234'")
    wait_for(session, "1 match ")  # the status bar (once the sort's note has gone)
    tmux("send-keys", "-t", session, "q")
    wait_for(session, "EXITED 0")


def test_c_copies_by_osc_52_into_tmux(session):
    """OSC 52 is how the clipboard works over SSH: tmux, with set-clipboard on, takes the
    sequence into its paste buffer (and passes it on to the terminal outside)."""
    from tui.cli import DEMO_CAPTURE

    tmux("set-option", "-s", "set-clipboard", "on")
    subprocess.run(["tmux", "delete-buffer"], capture_output=True)
    tmux("send-keys", "-t", session, f"cd {ROOT} && {sys.executable} -m tui.cli -r {DEMO_CAPTURE}", "Enter")
    wait_for(session, "done")
    tmux("send-keys", "-t", session, "Enter")  # the first connection's exchanges
    wait_for(session, "/api/v1/orders?limit=3")
    tmux("send-keys", "-t", session, "c")
    wait_for(session, "copied by OSC 52")
    deadline = time.monotonic() + 10
    buffer = ""
    while time.monotonic() < deadline and "curl" not in buffer:
        buffer = subprocess.run(["tmux", "show-buffer"], capture_output=True, text=True).stdout
        time.sleep(0.1)
    assert buffer.startswith("curl ") and "/api/v1/orders?limit=3" in buffer, buffer
    tmux("send-keys", "-t", session, "q")
