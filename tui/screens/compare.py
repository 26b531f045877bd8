"""Provides `CompareScreen`: two runs side by side — status, duration, parameters, metrics, and
the steps that changed (what `flow diff` shows: status, output, the code diff behind a changed
fingerprint).

Rows whose values differ are highlighted, so "what changed between the good run and the bad one"
reads at a glance. Columns are as wide as their values (up to a share of the screen); a value cut
to fit ends in `…`, and the row under the cursor is shown in full below the table (a changed step:
why its fingerprint changed and its code diff).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from runner.records import RunRecord
from runner.review.compare import Comparison, StepChange
from tui.data import format as fmt
from tui.screens.code_diff import diff_content
from tui.text import plain

MISSING = "—"


def pair(a: object, b: object) -> tuple[str, str]:
    """Two values as text that differs exactly when the values differ: floats that round to the
    same short form get more digits (0.86123 vs 0.86124 must not read `0.8612` twice)."""
    if isinstance(a, float) and isinstance(b, float) and a != b:
        for digits in (4, 6, 8, 12, 17):
            left, right = f"{a:.{digits}g}", f"{b:.{digits}g}"
            if left != right:
                return left, right
        return repr(a), repr(b)
    return fmt.value(a, 10_000), fmt.value(b, 10_000)


def step_value(change: StepChange, side: int) -> str:
    """A changed step in one run: its status and its output's preview (or `—`: not in that run)."""
    status = change.status[side]
    if status is None:
        return MISSING
    shown = change.preview[side]
    return f"{status} · {shown}" if shown is not None else str(status)


def rows(a: RunRecord, b: RunRecord, compared: Comparison | None = None) -> list[tuple[str, str, str, str]]:
    """(kind, name, value in a, value in b) for every compared field, then each step that changed
    (pure; values never cut)."""
    result = [
        ("run", "status", a.status, b.status),
        ("run", "trigger", a.trigger, b.trigger),
        ("run", "duration", fmt.duration(a.duration_s), fmt.duration(b.duration_s)),
    ]
    for name in sorted(set(a.params) | set(b.params)):
        result.append(("param", name, *pair(a.params.get(name, MISSING), b.params.get(name, MISSING))))
    ma, mb = a.metrics, b.metrics
    for name in sorted(set(ma) | set(mb)):
        result.append(("metric", name, *pair(ma.get(name, MISSING), mb.get(name, MISSING))))
    for change in compared.steps if compared is not None else []:
        result.append(("step", change.step, step_value(change, 0), step_value(change, 1)))
    return result


def cut(text: str, width: int) -> str:
    """`text` in at most `width` cells, ending in `…` when shortened."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class CompareScreen(ModalScreen[None]):
    """Compares run `a` with run `b`."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, a: RunRecord, b: RunRecord, comparison: Comparison | None = None) -> None:
        super().__init__()
        self.a = a
        self.b = b
        self.comparison = comparison
        self.compared = rows(a, b, comparison)
        self.changes = {c.step: c for c in comparison.steps} if comparison is not None else {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog compare-dialog"):
            title = f"Run #{self.a.id} vs run #{self.b.id} (differences highlighted)"
            yield Label(title, classes="dialog-title")
            yield DataTable(id="compare", cursor_type="row")
            with VerticalScroll(id="compare-full-scroll"):
                yield Static(id="compare-full")
            yield Label("↑↓ a row in full · esc: close", classes="dialog-hint")

    def column_widths(self, room: int) -> list[int]:
        """Cells per column: each as wide as its longest value, the two value columns sharing what
        the kind and name columns leave of `room` when they do not all fit."""
        headers = ("", "name", f"#{self.a.id}", f"#{self.b.id}")
        wanted = [max([len(h), *(len(row[i]) for row in self.compared)]) for i, h in enumerate(headers)]
        wanted[1] = min(wanted[1], max(12, room // 4))
        spare = room - wanted[0] - wanted[1] - 4 * 2  # DataTable pads each cell by one on both sides
        for i in (2, 3):
            wanted[i] = min(wanted[i], max(6, spare // 2))
        return wanted

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        widths = self.column_widths(max(40, self.app.size.width * 95 // 100 - 8))
        for header, width in zip(("", "name", f"#{self.a.id}", f"#{self.b.id}"), widths, strict=True):
            table.add_column(Text(header), width=width)  # not a str: DataTable parses it as Rich markup
        for kind, name, left, right in self.compared:
            style = "bold $warning" if left != right else ""
            table.add_row(
                plain(kind, "$text-muted"),
                plain(cut(name, widths[1]), newlines=False),
                plain(cut(left, widths[2]), style, newlines=False),
                plain(cut(right, widths[3]), style, newlines=False),
            )
        table.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        kind, name, left, right = self.compared[event.cursor_row]
        text = Content.assemble(
            (f"{name}: ", "bold"), f"#{self.a.id} ", plain(left), f"  #{self.b.id} ", plain(right)
        )
        metric = self.comparison.metrics.get(name) if kind == "metric" and self.comparison else None
        if metric is not None and metric.delta is not None:
            text = Content.assemble(text, (f"  (Δ {metric.delta:+g})", "bold"))  # as `flow diff` shows it
        change = self.changes.get(name) if kind == "step" else None
        if change is not None:
            output = {"equal": "outputs equal", "different": "outputs differ"}.get(change.output, "")
            why = f"fingerprint changed: {change.why}" if change.fingerprint_changed and change.why else ""
            said = " · ".join(part for part in (output, why) if part)
            if said:
                text = Content("\n").join([text, plain(said, "$text-muted")])
            if change.code:
                text = Content("\n").join([text, diff_content(change.code)])
        self.query_one("#compare-full", Static).update(text)
