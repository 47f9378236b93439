"""The moments the app writes a frame to its terminal: how the UI benchmarks tell that a key
has been answered on screen."""

from __future__ import annotations

import time
from typing import Any

from tui.app import WirepeekApp


def record_frames(app: WirepeekApp) -> list[float]:
    """A list that gets the perf_counter time of every frame the app writes from now on."""
    frames: list[float] = []
    display = app._display

    def timed_display(*args: Any, **kwargs: Any) -> Any:
        result = display(*args, **kwargs)
        frames.append(time.perf_counter())
        return result

    app._display = timed_display  # type: ignore[method-assign]
    return frames
