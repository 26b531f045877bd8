"""Provides `CodeDiffScreen`: the code change behind a step's next re-run (what `flow plan --diff`
prints under it), or a step's code change between two runs, as a unified diff: removed lines red,
added lines green. Every line is the user's text, shown, never interpreted.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from runner.review.render import change_lines
from runner.review.sources import CodeChange
from tui.text import plain


def diff_content(changes: list[CodeChange]) -> Content:
    """The diffs as styled text (pure): `-` lines in the error colour, `+` lines in the success one."""
    lines: list[Content] = []
    for change in changes:
        for line in change_lines(change, indent=""):
            if line.startswith(("+++", "---")):
                style = "bold"
            elif line.startswith("+"):
                style = "$text-success"
            elif line.startswith("-"):
                style = "$text-error"
            elif line.startswith("@@"):
                style = "$text-muted"
            else:
                style = ""
            lines.append(plain(line, style, newlines=False))
        lines.append(Content(""))
    return Content("\n").join(lines)


class CodeDiffScreen(ModalScreen[None]):
    """Shows `changes` under `title`."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, title: str, changes: list[CodeChange]) -> None:
        super().__init__()
        self.title_text = title
        self.changes = changes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog code-diff-dialog"):
            yield Label(plain(self.title_text, newlines=False), classes="dialog-title")
            with VerticalScroll(id="code-diff"):
                yield Static(diff_content(self.changes), id="code-diff-text")
            yield Label("↑↓ scroll · esc: close", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#code-diff", VerticalScroll).focus()
