"""What the interactive app captures from (`SourceSpec`), in a module of its own so that the
command line can describe it, and start what the app will need, before Textual is imported."""

from __future__ import annotations

from dataclasses import dataclass

from engine import sources
from tui.sharded import default_jobs


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What to capture from, so the driver can (re)open it, e.g. with a new filter."""

    files: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    replay: bool = False  # play the files in real time, looping (the demo)
    # Opened before the app started (so errors and privileges are dealt with first): the driver
    # reads it first, and reopens from files/interfaces only when a file must be read again.
    opened: sources.Source | None = None
    keylog: str | None = None  # a key log's path: TLS is decrypted with it (engine.tlsdecrypt)

    @property
    def rereadable(self) -> bool:
        """Files that can be read again (not a pipe, not the demo's replay)."""
        return bool(self.files) and not self.replay and "-" not in self.files

    @property
    def live(self) -> bool:
        """A live capture opened on this host."""
        return isinstance(self.opened, sources.LiveCapture)

    def helper_jobs(self, jobs: int | None) -> int:
        """The HTTP helper processes (tui.http_helpers) the app runs for this source, given
        --jobs (None: one per core): for files it can read again and for a live capture on this
        host; none for a pipe, the demo's replay or other hosts' captures."""
        if not (self.rereadable or self.live):
            return 0
        return default_jobs() if jobs is None else jobs
