"""Our widgets must not reuse the names of Textual's own attributes by accident.

Twice a method of ours silently replaced one of Textual's: `_render` (Widget._render) made
copying from the Stream tab crash, and `loading` (Widget.loading, a reactive) took the Packets
tab's list out of the focus chain, so Tab never reached it. Only the hooks Textual means to be
overridden may share a name with it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from textual.app import App
from textual.widget import Widget

import tui.app
import tui.screens.help
import tui.widgets

# What Textual's metaclass and class arguments (can_focus=...) set on every class.
MADE_BY_TEXTUAL = {
    "_computes", "_css_type_name", "_css_type_names", "_decorated_handlers", "_inherit_bindings",
    "_inherit_component_classes", "_inherit_css", "_merged_bindings", "_reactives", "can_focus",
    "can_focus_children",
}
# The hooks Textual documents for subclasses to fill in.
HOOKS = {
    "BINDINGS", "COMPONENT_CLASSES", "DEFAULT_CSS", "CSS_PATH", "TITLE", "compose",
    "render_line", "get_selection", "selection_updated", "check_action", "on_event",
}
# Methods of Textual's that a widget of ours replaces on purpose, calling Textual's.
MEANT = {
    "Footer.bindings_changed",  # several changes in a row share one rebuild (tui.widgets.footer)
}


def our_textual_classes() -> list[type]:
    modules = [importlib.import_module(f"tui.widgets.{m.name}")
               for m in pkgutil.iter_modules(tui.widgets.__path__)]
    modules += [tui.app, tui.screens.help]
    found = []
    for module in modules:
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, (Widget, App)):
                found.append(cls)
    return found


def test_no_widget_of_ours_replaces_a_textual_attribute_by_accident():
    classes = our_textual_classes()
    assert len(classes) >= 8
    clashes = []
    for cls in classes:
        textual = [base for base in cls.__mro__ if base.__module__.startswith("textual")]
        for name in cls.__dict__:
            if name.startswith("__") or name in MADE_BY_TEXTUAL or name in HOOKS:
                continue
            if name.startswith(("action_", "on_", "watch_")):
                continue  # Textual's naming conventions for handlers
            meant = f"{cls.__name__}.{name}" in MEANT
            if any(name in base.__dict__ for base in textual) and not meant:
                clashes.append(f"{cls.__name__}.{name}")
    assert clashes == []
