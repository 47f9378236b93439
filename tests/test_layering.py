"""engine/ must not import the UI toolkit, and only engine.sources may import pcapy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.captures import capture

ROOT = Path(__file__).parent.parent
ENGINE_MODULES = sorted(p.stem for p in (ROOT / "engine").glob("*.py") if p.stem != "__init__")


def test_engine_imports_neither_textual_nor_rich():
    code = (
        "import sys\n"
        + "".join(f"import engine.{name}\n" for name in ENGINE_MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        + "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_only_sources_imports_pcapy():
    offenders = [
        p.name
        for p in (ROOT / "engine").glob("*.py")
        if p.name != "sources.py" and "import pcapy" in p.read_text()
    ]
    assert offenders == []


def test_the_pipeline_does_not_import_scapy():
    code = "import sys, engine.pipeline; print('scapy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False"


def test_cryptography_is_loaded_only_with_keys_to_decrypt_with():
    """The app and a pipeline without a key log leave cryptography unloaded (~6 MB of every
    process: the app's and each HTTP helper's); a key log loads it."""
    code = (
        "import sys\n"
        "import tui.app, tui.cli, tui.http_helpers\n"
        "from engine.pipeline import Pipeline\n"
        "from engine.keylog import KeyLog\n"
        "Pipeline()\n"
        "print('cryptography' in sys.modules)\n"
        "Pipeline(keylog=KeyLog())\n"
        "print('cryptography' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_the_headless_command_line_does_not_import_textual():
    """--json, --follow and the summary never show the inspector: Textual (about a tenth of a
    second to import) stays unloaded."""
    code = (
        "import sys\n"
        "from tui import cli\n"
        f"status = cli.main(['-r', {capture('zeek/http__get.pcap')!r}, '--json'])\n"
        "print(status, 'textual' in sys.modules, 'tui.capture' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert '"type": "http"' in proc.stdout or '"type":"http"' in proc.stdout
    assert proc.stderr.split() == ["0", "False", "False"]


INSPECTOR_ORDER = """
import importlib.abc, importlib.util, sys
from tui import cli, http_helpers
from tui.spec import SourceSpec
seen = []
http_helpers.prepare = lambda: seen.append("fork server")

class App:  # the app, as far as the command line sees it: made, then run
    def __init__(self, spec, bpf, *bounds, jobs=None):
        seen.append("app")
    def run(self):
        pass

class Watch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # Notes when Textual is imported; tui.app imports it and gives App.
    def find_spec(self, name, path=None, target=None):
        if name == "textual" and "textual" not in seen:
            seen.append("textual")
        if name == "tui.app":
            return importlib.util.spec_from_loader(name, self)
        return None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        import textual
        module.WirepeekApp = App

sys.meta_path.insert(0, Watch())
path = sys.argv[1]
args = cli.build_parser().parse_args(["-r", path])
cli.interactive(args, SourceSpec(files=(path,), replay=sys.argv[2] == "replay"), "")
print(", ".join(seen))
"""


@pytest.mark.parametrize(("how", "expected"), [
    ("read", "fork server, textual, app"),
    ("replay", "textual, app"),  # the demo's replay is read once, by the capture thread
])
def test_the_inspector_starts_its_helpers_fork_server_before_importing_textual(how, expected):
    """The fork server that starts the HTTP helpers imports the engine (about 0.2 s) while the
    inspector's process imports Textual, so that the helpers start at once when the app reads
    the file; none is started for a source that has no helpers."""
    path = capture("zeek/http__get.pcap")
    proc = subprocess.run([sys.executable, "-c", INSPECTOR_ORDER, path, how], capture_output=True,
                          text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
