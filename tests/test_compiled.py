"""The mypyc build of the engine (scripts/compile.py) and its fallback to plain Python.

`make test` runs the whole suite on both; these tests check that each run really runs what it
says, that a stale build is never used, and that both give the same records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine import http
from tests.captures import capture

ROOT = Path(__file__).parent.parent
BUILT = (ROOT / "engine" / "native.json").exists()
needs_build = pytest.mark.skipif(not BUILT, reason="no compiled build (no C compiler, or make compile not run)")


def imported(env: dict[str, str], cwd: Path = ROOT) -> list[str]:
    code = "import engine, engine.http, engine.tcp; print(engine.COMPILED, engine.http.__file__, engine.tcp.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, check=True)
    return proc.stdout.split()


def test_this_run_uses_what_its_environment_asks_for():
    pure = bool(os.environ.get("WIREPEEK_PURE"))
    assert engine.COMPILED == (BUILT and not pure)
    assert http.__file__.endswith(".py") == (not engine.COMPILED)


@needs_build
def test_compiled_modules_are_used_unless_the_plain_code_is_asked_for():
    compiled = imported({"WIREPEEK_PURE": ""})
    assert compiled[0] == "True" and all(p.endswith(".so") for p in compiled[1:])
    pure = imported({"WIREPEEK_PURE": "1"})
    assert pure[0] == "False" and all(p.endswith(".py") for p in pure[1:])


@needs_build
def test_a_build_older_than_its_sources_is_not_used(tmp_path):
    copy = tmp_path / "engine"
    shutil.copytree(ROOT / "engine", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert imported({"WIREPEEK_PURE": ""}, tmp_path)[0] == "True"
    with open(copy / "bounds.py", "a") as f:
        f.write("\n# changed after the build\n")
    found = imported({"WIREPEEK_PURE": ""}, tmp_path)
    assert found[0] == "False" and all(p.endswith(".py") for p in found[1:])
    assert found[1].startswith(str(copy))


@needs_build
@pytest.mark.parametrize("name", ["zeek/http__methods.pcap", "arkime/tcp-reassembly-synthetic.pcap"])
def test_compiled_and_plain_give_the_same_records(name):
    def run(pure: str) -> bytes:
        proc = subprocess.run([sys.executable, "-m", "tui.cli", "-r", capture(name), "--json", "--jobs", "1"],
                              capture_output=True, cwd=ROOT, env={**os.environ, "WIREPEEK_PURE": pure})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert run("") == run("1")
