"""Provides `CompareScreen`: two runs side by side — status, duration, parameters, metrics.

Rows whose values differ are highlighted, so "what changed between the good run and the bad one"
reads at a glance.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from runner.records import RunRecord
from tui.data import format as fmt


def rows(a: RunRecord, b: RunRecord) -> list[tuple[str, str, str, str]]:
    """(kind, name, value in a, value in b) for every compared field (pure)."""
    result = [
        ("run", "status", a.status, b.status),
        ("run", "trigger", a.trigger, b.trigger),
        ("run", "duration", fmt.duration(a.duration_s), fmt.duration(b.duration_s)),
    ]
    for name in sorted(set(a.params) | set(b.params)):
        result.append(("param", name, fmt.value(a.params.get(name, "—")), fmt.value(b.params.get(name, "—"))))
    ma, mb = a.metrics, b.metrics
    for name in sorted(set(ma) | set(mb)):
        result.append(("metric", name, fmt.value(ma.get(name, "—")), fmt.value(mb.get(name, "—"))))
    return result


class CompareScreen(ModalScreen[None]):
    """Compares run `a` with run `b`."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, a: RunRecord, b: RunRecord) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog compare-dialog"):
            title = f"Run #{self.a.id} vs run #{self.b.id} (differences highlighted)"
            yield Label(title, classes="dialog-title")
            yield DataTable(id="compare", cursor_type="row")
            yield Label("esc: close", classes="dialog-hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "name", f"#{self.a.id}", f"#{self.b.id}")
        for kind, name, left, right in rows(self.a, self.b):
            style = "bold $warning" if left != right else ""
            table.add_row(
                Content.styled(kind, "$text-muted"),
                Content(name),
                Content.styled(left, style),
                Content.styled(right, style),
            )
        table.focus()
