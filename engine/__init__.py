"""wirepeek's engine: capture sources, decoding, TCP reassembly and stream consumers.

Everything here except `engine.sources` is sans-IO: bytes and packet timestamps go in, events
come out. Nothing in this package may import textual or rich (a test enforces it), start a
thread, or read the wall clock.

The hot modules may also be compiled with mypyc (scripts/compile.py, run by `make install`):
their extension modules sit beside the sources and are imported instead of them, unless
WIREPEEK_PURE is set or a source changed since the build (native.json holds each source's
digest then), in which case every module here is imported from its source.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)

_HERE = os.path.dirname(os.path.abspath(__file__))
STAMP = os.path.join(_HERE, "native.json")


def _compiled_is_current() -> bool:
    """Were the compiled modules built from the sources as they are now?"""
    try:
        with open(STAMP, encoding="utf-8") as f:
            digests = json.load(f)
        for name, digest in digests.items():
            with open(os.path.join(_HERE, name + ".py"), "rb") as src:
                if hashlib.sha256(src.read()).hexdigest() != digest:
                    return False
    except (OSError, ValueError, AttributeError):
        return False
    return bool(digests)


COMPILED = not os.environ.get("WIREPEEK_PURE") and _compiled_is_current()
"""True when this process runs the mypyc-compiled modules."""

if not COMPILED:
    # Look up this package's modules with a finder that knows only sources and bytecode.
    for _entry in __path__:
        sys.path_importer_cache[_entry] = FileFinder(
            _entry,
            (SourceFileLoader, SOURCE_SUFFIXES),
            (SourcelessFileLoader, BYTECODE_SUFFIXES),
        )
