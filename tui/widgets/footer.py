"""The footer: Textual's, rebuilt once for bindings that change several times in a row."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Textual's footer rebuilds its keys (recompose) after each change of the screen's
    bindings. As the app starts they change three times within 40 ms (the focus, the screen
    stack, the first tab's name), and each rebuild took 15 ms of the UI thread and a layout of
    the screen while the first rows of a file were coming. Here a change that comes while a
    rebuild is already due is left to it: the rebuild reads the bindings as they are then."""

    _rebuild_due = False

    def bindings_changed(self, screen: Screen) -> None:
        if not self._rebuild_due:
            super().bindings_changed(screen)

    def call_after_refresh(self, callback: Any, *args: Any, **kwargs: Any) -> bool:
        if callback == self.recompose:
            self._rebuild_due = True
        return super().call_after_refresh(callback, *args, **kwargs)

    async def recompose(self) -> None:
        self._rebuild_due = False
        await super().recompose()
