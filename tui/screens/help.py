"""The help screen: every key binding with its description, and the display filter's syntax."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

DISPLAY_FILTER_HELP = """\
Find (/): words separated by spaces, case ignored. An HTTP exchange matches when every word
appears in it (method, target, status, header names and values, bodies as decoded for display)
or in its connection (client or server address and port, state such as ESTABLISHED or RESET,
Zeek conn_state such as SF or REJ, protocol http/http2/tls, TLS server name). The list shows the
connections that match or have an exchange that matches; the HTTP tab shows only the exchanges
that match. Examples:  ":443"   "http 404"   "10.0.0.5 500"   "limit=3"   "x-request-id abc"
Capture filter (f): a BPF expression as for tcpdump, checked by libpcap before it is applied.
"""


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
