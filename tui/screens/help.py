"""The help screen: every key binding with its description, and the display filter's syntax."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.filter import help_text

DISPLAY_FILTER_HELP = (
    "Find (/): the display filter, as --where takes it (engine.filter; wirepeek --help-filter).\n"
    + help_text()
    + "\nCapture filter (f): a BPF expression as for tcpdump, checked by libpcap before it is "
    "applied.\n"
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        text = Text("wirepeek keys\n\n", "bold")
        for keys, description in self.bindings:
            text.append(f"  {keys:<16}", "bold")
            text.append(description + "\n")
        text.append("\n" + DISPLAY_FILTER_HELP)
        with VerticalScroll(id="help-body"):
            yield Static(text)
