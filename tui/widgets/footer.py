"""The footer: Textual's, rebuilt once for bindings that change several times in a row."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Textual's footer rebuilds its keys (recompose) after each change of the screen's
    bindings. As the app starts they change three times within 80 ms (the focus, the screen
    stack, the first tab's name), and each rebuild took 15 ms of the UI thread and a layout of
    the screen while the first rows of a file were coming. Here the changes that come before
    the next refresh share one rebuild, which reads the bindings as they are then."""

    _rebuild_due = False

    def bindings_changed(self, screen: Screen) -> None:
        if not self._rebuild_due:
            self._rebuild_due = True
            self.call_after_refresh(self._keys_changed, screen)

    def _keys_changed(self, screen: Screen) -> None:
        self._rebuild_due = False
        super().bindings_changed(screen)
