"""Provides `HelpScreen`: the keys of the focused pane, then those that work everywhere (`?`, F1).

Built from the screen's active bindings when it opens, so it lists exactly what the keys do at that
moment (a widget's keys only while it has focus) and never drifts from the key map.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

Section = tuple[str, list[tuple[str, str, str]]]
"""(title, [(keys, label, help)])."""

PANES = {
    "DagView": "DAG",
    "LogView": "Logs",
    "RunHistory": "History",
    "StepDetails": "Details",
    "FlowList": "Flow list",
    "Input": "Search box",
}
"""Widget class -> the name the help gives its section."""


def sections(screen: Screen[Any]) -> list[Section]:
    """The active bindings of `screen`, grouped: the focused pane's first, then everywhere."""
    app = screen.app
    grouped: dict[str, dict[tuple[str, str], tuple[list[str], str]]] = {}
    for namespace, binding, _enabled, tooltip in screen.active_bindings.values():
        title = _title(namespace)
        if not binding.description:
            continue
        entries = grouped.setdefault(title, {})
        action = binding.action.removeprefix("screen.")
        keys, _ = entries.setdefault((action, binding.description), ([], tooltip))
        shown = app.get_key_display(binding)
        if shown not in keys:
            keys.append(shown)
    everywhere = grouped.pop("Everywhere", {})
    result: list[Section] = [
        (f"{title} (focused)", [(" ".join(k), label, hint) for (_, label), (k, hint) in entries.items()])
        for title, entries in grouped.items()
    ]
    seen = {label for _, rows in result for _, label, _ in rows}
    rows = [(" ".join(k), label, hint) for (_, label), (k, hint) in everywhere.items() if label not in seen]
    result.append(("Everywhere", rows))
    return result


def _title(node: DOMNode) -> str:
    for cls in type(node).__mro__:
        if cls.__name__ in PANES:
            return PANES[cls.__name__]
    return "Everywhere"


class HelpScreen(ModalScreen[None]):
    """The key list; any of escape, `q`, `?` or F1 closes it."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, help_sections: list[Section]) -> None:
        super().__init__()
        self.help_sections = help_sections

    @classmethod
    def of(cls, screen: Screen[Any]) -> HelpScreen:
        return cls(sections(screen))

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-keys"):
                for title, rows in self.help_sections:
                    if not rows:
                        continue
                    yield Label(title, classes="help-section")
                    width = max(len(keys) for keys, _, _ in rows)
                    labels = max(len(label) for _, label, _ in rows)
                    for keys, label, hint in rows:
                        line = Content.assemble(
                            (f"{keys:>{width}}  ", "bold $accent"),
                            (f"{label:<{labels}}", "bold"),
                            (f"  {hint}" if hint else "", "$text-muted"),
                        )
                        yield Static(line, classes="help-row")
            yield Label("esc: close · ctrl+p: every action by name", classes="dialog-hint")
