"""Build the compiled engine: the hot modules of engine/ compiled with mypyc, in place.

`make install` runs this when it can: each module gets an extension module beside its .py
(engine/http.cpython-*.so and so on, sharing engine/native__mypyc.*.so), which Python imports
instead of the source. The code is the same; only its speed differs. Without mypy's compiler
or a C compiler, or when the build fails, nothing compiled is left behind and the engine runs
as plain Python. `python scripts/compile.py --clean` removes the compiled modules;
WIREPEEK_PURE=1 makes a process ignore them (engine/__init__.py), which is how `make test`
also runs the suite on the plain Python code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
# Everything the headless and interactive paths run per packet or per exchange. Left out:
# sources.py and content.py (they call into libpcap and the decompressors, and gain nothing),
# keylog.py (read once a line; its tests subclass it), and the modules that run once per file
# or per spool record.
MODULES = [
    "batch", "bounds", "events", "decode", "ipfrag", "tcpstate", "tcp", "reassembly",
    "connections", "detect", "http", "records", "pipeline", "spool", "tlsdecrypt", "huffman",
    "http2", "encoded",
]


def clean() -> None:
    (ENGINE / "native.json").unlink(missing_ok=True)
    for path in ENGINE.glob("*.so"):
        path.unlink()


def build() -> int:
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("compile: mypyc is not installed; the engine runs as plain Python")
        return 0
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        print("compile: no C compiler; the engine runs as plain Python")
        return 0
    clean()
    with tempfile.TemporaryDirectory() as tmp:
        setup = Path(tmp) / "setup.py"
        setup.write_text(
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='wirepeek-native', py_modules=[], ext_modules=mypycify("
            f"{[f'engine/{m}.py' for m in MODULES]!r}, group_name='engine.native', opt_level='3',"
            f" target_dir={str(Path(tmp) / 'c')!r}))\n"
        )
        proc = subprocess.run(
            [sys.executable, str(setup), "-q", "build_ext", "--inplace", "--build-temp", tmp],
            cwd=ROOT, capture_output=True, text=True,
        )
    if proc.returncode != 0:
        clean()
        print("compile: the build failed; the engine runs as plain Python")
        print(proc.stderr[-2000:], file=sys.stderr)
        return 0
    digests = {m: hashlib.sha256((ENGINE / f"{m}.py").read_bytes()).hexdigest() for m in MODULES}
    (ENGINE / "native.json").write_text(json.dumps(digests, indent=1) + "\n")
    print(f"compile: {len(MODULES)} engine modules compiled with mypyc")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--clean"]:
        clean()
        sys.exit(0)
    sys.exit(build())
