"""Provides `ParamsScreen`: edit a flow's parameters before a run, validated as `-p` values are.

Each field holds the text a user would pass to `-p name=value`; `resolve_params` checks the whole
set on save, and its one-line error is shown under the form with the offending field marked.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from dsl.errors import FlowError
from dsl.graph import ParamSpec
from runner.params import convert, resolve_params
from tui.text import plain

Result = tuple[dict[str, str], bool]
"""(overrides as `-p` strings, start a run now)."""


def as_text(value: Any) -> str:
    """A parameter value as the text `-p` would take."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict | tuple):
        return json.dumps(value)
    return "" if value is None else str(value)


KINDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a JSON list",
    dict: "a JSON object",
    tuple: "a JSON list",
}
"""How a field's expected type is named to a user (`int` means little to someone who is not one)."""


def field_problem(spec: ParamSpec, text: str) -> str | None:
    """What is wrong with a field's text, in words a user acts on (None when it converts)."""
    kind = KINDS.get(spec.type, f"a {spec.type.__name__}")
    example = "" if spec.required else f", e.g. {as_text(spec.default)}"
    if not text.strip() and spec.type is not str:
        return f"{spec.name}: {'required' if spec.required else 'empty'} — enter {kind}{example}"
    try:
        convert(spec, text)
    except FlowError:
        if spec.choices is not None:
            try:
                convert(replace(spec, choices=None), text)
            except FlowError:
                pass
            else:
                return f"{spec.name}: {text.strip()!r} is not one of {', '.join(map(as_text, spec.choices))}"
        return f"{spec.name}: {text.strip()!r} is not {kind}{example}"
    return None


class ParamsScreen(ModalScreen[Result | None]):
    """A form with one field per flow parameter."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save(False)", "Save"),
        Binding("ctrl+r", "save(True)", "Save and run"),
    ]

    def __init__(self, specs: dict[str, ParamSpec], overrides: dict[str, Any], flow: str) -> None:
        super().__init__()
        self.specs = specs
        self.overrides = overrides
        self.flow = flow

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog params-dialog"):
            yield Label(plain(f"Parameters of {self.flow}", newlines=False), classes="dialog-title")
            with VerticalScroll(id="param-fields"):
                if not self.specs:
                    yield Label("this flow has no parameters")
                for name, spec in self.specs.items():
                    default = "required" if spec.required else f"default {as_text(spec.default)}"
                    hint = f"{name} ({spec.type.__name__}, {default})"
                    if spec.choices:
                        hint += f" one of {', '.join(map(as_text, spec.choices))}"
                    if spec.help:
                        hint += f" — {spec.help}"
                    yield Label(plain(hint), classes="param-label")
                    value = self.overrides.get(name, None if spec.required else spec.default)
                    yield Input(as_text(value), id=f"param-{name}", classes="param-input", compact=True)
            yield Static(id="param-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save and run ^r", variant="primary", id="run", compact=True)
                yield Button("Save ^s", id="save", compact=True)
                yield Button("Cancel esc", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#param-error").display = False
        inputs = self.query(Input)
        if inputs:
            inputs.first().focus()

    def values(self) -> dict[str, str]:
        """The fields that differ from the defaults, as `-p` strings."""
        result: dict[str, str] = {}
        for name, spec in self.specs.items():
            text = self.query_one(f"#param-{name}", Input).value
            if spec.required or text != as_text(spec.default):
                result[name] = text
        return result

    def validate_form(self) -> dict[str, str] | None:
        """The overrides when every field converts; else None, with each problem listed under the
        form and its field marked."""
        values = self.values()
        error = self.query_one("#param-error", Static)
        problems: list[str] = []
        for name, spec in self.specs.items():
            field = self.query_one(f"#param-{name}", Input)
            problem = field_problem(spec, field.value) if name in values else None
            field.set_class(problem is not None, "-invalid")
            if problem is not None:
                problems.append(problem)
        if not problems:
            try:
                resolve_params(self.specs, values)
            except FlowError as exc:
                problems.append(exc.message)
        error.display = bool(problems)
        if problems:
            error.update(plain("\n".join(problems)))
            return None
        return values

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save(False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.action_save(event.button.id == "run")

    def action_save(self, run: bool) -> None:
        values = self.validate_form()
        if values is not None:
            self.dismiss((values, run))

    def action_cancel(self) -> None:
        self.dismiss(None)
