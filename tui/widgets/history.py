"""Provides `RunHistory`: the table of a flow's past runs, newest first.

Columns fit their values; where parameters and metrics do not fit they end in `…`, and the run under
the cursor is posted whole (`RowShown`) for the line below the table.

Enter (or a click) views a run; `m` marks a run and `c` compares the marked run with the one under
the cursor. The widget only shows records pushed down to it and posts what the user chose.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable

from runner.records import RunRecord
from runner.status import RunStatus
from tui.data import format as fmt
from tui.keys import pane_bindings
from tui.text import plain

STATUS_STYLE: dict[str, str] = {
    RunStatus.SUCCEEDED: "$success",
    RunStatus.FAILED: "$error",
    RunStatus.RUNNING: "$accent",
    RunStatus.CANCELLED: "$warning",
    RunStatus.INTERRUPTED: "$warning",
}


LABELS = ("run", "when", "trigger", "status", "time", "parameters", "metrics")
KEYS = ("id", "when", "trigger", "status", "duration", "params", "metrics")
FIXED = (0, 1, 3, 4)
SHRINKS = {2: 7, 5: 10, 6: 10}
"""Column -> the fewest cells it is cut to when the table is narrow."""


def cut(text: str, width: int) -> str:
    """`text` in `width` cells, ending in `…` when shortened."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class RunHistory(DataTable[Content]):
    """Past runs: id, when, trigger, status, duration, parameters, key metrics."""

    BINDINGS = [
        Binding("down,j", "cursor_down", "Down", show=False, tooltip="Next (older) run"),
        Binding("up,k", "cursor_up", "Up", show=False, tooltip="Previous (newer) run"),
        Binding("enter", "select_cursor", "View", tooltip="View the run's DAG, logs and details"),
        Binding("m", "mark", "Mark", tooltip="Mark the run under the cursor to compare it"),
        Binding("c", "compare", "Compare", tooltip="Compare the marked run with the one under the cursor"),
        *pane_bindings("resume", "rerun_past", "delete_run", quiet=("rerun_past",)),
    ]

    class RunChosen(Message):
        """The user chose a run to view."""

        def __init__(self, run_id: int) -> None:
            super().__init__()
            self.run_id = run_id

    class CompareRequested(Message):
        """The user asked to compare two runs."""

        def __init__(self, first: int, second: int) -> None:
            super().__init__()
            self.first = first
            self.second = second

    class RowShown(Message):
        """The cursor is on a run: its parameters and metrics in full (the table may cut them)."""

        def __init__(self, text: Content) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.records: dict[int, RunRecord] = {}
        self.marked: int | None = None
        self.viewed: int | None = None
        self._widths: list[int] = []
        self.narrow = False
        """Too narrow for every column whole: statuses show as their symbols."""

    def _cells(self, record: RunRecord, narrow: bool = False) -> list[str]:
        """A run's cells as text, whole (the run id cell with its marker; the status as its symbol
        only when `narrow`)."""
        mark = "*" if record.id == self.marked else ("▸" if record.id == self.viewed else " ")
        symbol = fmt.SYMBOLS.get(record.status, "?")
        return [
            f"{mark}#{record.id}",
            fmt.when(record.started_at),
            record.trigger,
            symbol if narrow else f"{symbol} {record.status}",
            fmt.duration(record.duration_s),
            fmt.params_line(record.params, 10_000),
            fmt.params_line(record.metrics, 10_000),
        ]

    def _widths_for(self, rows: list[list[str]]) -> list[int]:
        """Each column as wide as its longest cell; when the table is too narrow, the trigger,
        parameters and metrics give up cells, the widest first (cut cells end in `…`, and the row
        under the cursor is shown whole below the table)."""
        wanted = [max([len(label), *(len(r[i]) for r in rows)]) for i, label in enumerate(LABELS)]
        width = self.size.width or max(40, self.app.size.width - 24)
        room = width - 2 * len(LABELS) - 3 - sum(wanted[i] for i in FIXED)  # padding, a scrollbar
        self.narrow = room < sum(SHRINKS.values())
        if self.narrow:  # the status as its symbol only: ten more cells for the rest
            room += wanted[3] - len(LABELS[3])
            wanted[3] = len(LABELS[3])
        flexible = {i: wanted[i] for i in SHRINKS}
        while sum(flexible.values()) > room:
            widest = max(flexible, key=lambda i: flexible[i] - SHRINKS[i])
            if flexible[widest] <= SHRINKS[widest]:
                break  # as narrow as they go: the table scrolls sideways
            flexible[widest] -= 1
        return [flexible.get(i, wanted[i]) for i in range(len(LABELS))]

    def _row(self, record: RunRecord) -> list[Content]:
        texts = self._cells(record, self.narrow)
        cells = [cut(text, width) for text, width in zip(texts, self._widths, strict=True)]
        style = STATUS_STYLE.get(record.status, "")
        return [  # never a str: DataTable parses one as Rich markup (and imports its emoji codes)
            plain(cells[0], newlines=False),
            plain(cells[1], newlines=False),
            plain(cells[2], newlines=False),
            Content.styled(cells[3], style),
            plain(cells[4], newlines=False),
            plain(cells[5], newlines=False),
            plain(cells[6], newlines=False),
        ]

    def set_runs(self, records: list[RunRecord]) -> None:
        """Replace the rows (keeps the cursor on the same run when it is still there)."""
        current = self.cursor_run if self.cursor_row > 0 else None
        self.records = {r.id: r for r in records}
        narrow = self.narrow
        widths = self._widths_for([self._cells(r) for r in records])
        if widths != self._widths or narrow != self.narrow or not self.columns:
            self._widths = widths
            self.clear(columns=True)
            for (label, key), width in zip(zip(LABELS, KEYS, strict=True), widths, strict=True):
                self.add_column(Text(label), key=key, width=width)  # not a str: see `_row`
        else:
            self.clear()
        for record in records:
            self.add_row(*self._row(record), key=str(record.id))
        if current in self.records:
            self.move_cursor(row=self.get_row_index(str(current)), animate=False)
        self._show_row()

    def on_resize(self) -> None:
        if self.records:
            self.set_runs(list(self.records.values()))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_row()

    def _show_row(self) -> None:
        record = self.records.get(self.cursor_run or -1)
        if record is None:
            self.post_message(self.RowShown(Content("no runs yet")))
            return
        cells = self._cells(record)
        text = Content.assemble(
            (f"#{record.id} ", "bold"),
            plain(record.trigger, newlines=False),
            ("  params ", "bold"),
            plain(cells[5] or "—", newlines=False),
            ("  metrics ", "bold"),
            plain(cells[6] or "—", newlines=False),
        )
        self.post_message(self.RowShown(text))

    @property
    def cursor_run(self) -> int | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def set_viewed(self, run_id: int | None) -> None:
        previous, self.viewed = self.viewed, run_id
        for rid in (previous, run_id):
            self._update_mark(rid)

    def _update_mark(self, run_id: int | None) -> None:
        if run_id is None or run_id not in self.records:
            return
        cells = self._row(self.records[run_id])
        self.update_cell(str(run_id), "id", cells[0])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.RunChosen(int(event.row_key.value)))

    def action_mark(self) -> None:
        run = self.cursor_run
        previous = self.marked
        self.marked = None if run == self.marked else run
        self._update_mark(previous)
        self._update_mark(run)
        if self.marked is not None:
            self.notify(f"run #{self.marked} marked; move to another run and press c to compare")

    def action_compare(self) -> None:
        run = self.cursor_run
        if self.marked is None or run is None or run == self.marked:
            self.notify("mark a run with m, move to another and press c", severity="warning")
            return
        self.post_message(self.CompareRequested(self.marked, run))
