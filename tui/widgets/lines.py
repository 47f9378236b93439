"""A read-only view of styled lines, drawn only where they are on screen, with text selection.

The HTTP tab shows one message pair at a time, with bodies up to the display bound: thousands of
lines. A Static would lay all of them out on every change of exchange; this view turns a line
into segments only when it is drawn. Text can be selected with the mouse and copied (Ctrl+C).
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip


class LinesView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    LinesView {
        background: $surface;
    }
    """

    BINDINGS = [
        ("up,k", "scroll_up", "Scroll up"),
        ("down,j", "scroll_down", "Scroll down"),
        ("pageup", "page_up", "Page up"),
        ("pagedown", "page_down", "Page down"),
        ("home", "scroll_home", "Top"),
        ("end", "scroll_end", "Bottom"),
        ("left,h", "scroll_left", "Left"),
        ("right,l", "scroll_right", "Right"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[Text] = []

    def set_text(self, text: Text) -> None:
        """Show this text from its top (its lines are split once, here)."""
        self.lines = text.split("\n", allow_blank=True)
        if self.lines and not self.lines[-1].plain:
            self.lines.pop()
        width = max((cell_len(line.plain) for line in self.lines[:5000]), default=0)
        self.virtual_size = Size(width, len(self.lines))
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    @property
    def plain(self) -> str:
        return "\n".join(line.plain for line in self.lines)

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        return selection.extract(self.plain), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        style = self.rich_style
        index = scroll_y + y
        if index >= len(self.lines):
            return Strip.blank(width, style)
        line = self.lines[index].copy()
        line.no_wrap = True
        line.stylize_before(style)
        selection = self.text_selection
        if selection is not None:
            span = selection.get_span(index)
            if span is not None:
                start, end = span
                if end == -1:
                    end = len(line)
                line.stylize(self.screen.get_component_rich_style("screen--selection"), start, end)
        strip = Strip(line.render(self.app.console), cell_len(line.plain))
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
