"""engine/ must not import the UI toolkit, and only engine.sources may import pcapy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
