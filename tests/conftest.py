"""Fixtures shared by wirepeek's tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.synth import LINKTYPE_ETHERNET, Packet, write_pcap

# The inspector shows packet times as local wall-clock times: the same zone on every machine keeps
# the snapshots the same.
os.environ["TZ"] = "UTC"
time.tzset()


@pytest.fixture
def pcap_file(tmp_path: Path) -> Callable[..., Path]:
    """Write packets to a fresh classic pcap file under tmp_path and return its path:
    `pcap_file(packets, linktype=1, name="capture.pcap")`."""
    counter = 0

    def write(packets: Iterable[Packet], linktype: int = LINKTYPE_ETHERNET,
              name: str | None = None) -> Path:
        nonlocal counter
        counter += 1
        path = tmp_path / (name or f"capture-{counter}.pcap")
        write_pcap(path, packets, linktype)
        return path

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that drive real servers, hosts and terminals, and the app's screens,
    `integration`: `make test` runs them once, on the compiled engine, and every other test on
    the plain-Python engine too (the code is the same; what the second pass checks is that the
    fallback gives the same results, which the engine's unit and capture tests show)."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module.endswith("_live") or module in SCREENS or "real_server" in item.name:
            item.add_marker(pytest.mark.integration)


# The modules that drive the app (Textual's pilot, or a real terminal).
SCREENS = frozenset({
    "test_terminal", "test_app", "test_app_packets", "test_app_transactions", "test_inspector",
    "test_stream", "test_snapshots", "test_views",
})
