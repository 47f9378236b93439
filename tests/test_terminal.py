"""The app in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

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


@pytest.fixture
def session():
    name = f"wirepeek-test-{time.monotonic_ns()}"
    tmux("new-session", "-d", "-s", name, "-x", "100", "-y", "30")
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
    tmux("send-keys", "-t", session, "2")
    screen = wait_for(session, "── server")
    assert "X-Reply: ok\\x1b]2;title\\x07" in screen  # the stream, escaped too
    tmux("send-keys", "-t", session, "x")
    wait_for(session, "|8....profile.|")  # the last bytes, in the hex dump
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
