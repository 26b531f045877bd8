"""Provides `RunHistory`: the table of a flow's past runs, newest first.

Enter (or a click) views a run; `m` marks a run and `c` compares the marked run with the one under
the cursor. The widget only shows records pushed down to it and posts what the user chose.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable

from runner.records import RunRecord
from tui.data import format as fmt
from tui.keys import pane_bindings
from tui.text import plain

STATUS_STYLE = {
    "succeeded": "$success",
    "failed": "$error",
    "running": "$accent",
    "cancelled": "$warning",
    "interrupted": "$warning",
}


class RunHistory(DataTable[str | Content]):
    """Past runs: id, when, trigger, status, duration, parameters, key metrics."""

    BINDINGS = [
        Binding("down,j", "cursor_down", "Down", show=False, tooltip="Next (older) run"),
        Binding("up,k", "cursor_up", "Up", show=False, tooltip="Previous (newer) run"),
        Binding("enter", "select_cursor", "View", tooltip="View the run's DAG, logs and details"),
        Binding("m", "mark", "Mark", tooltip="Mark the run under the cursor to compare it"),
        Binding("c", "compare", "Compare", tooltip="Compare the marked run with the one under the cursor"),
        *pane_bindings("resume", "rerun_past", "delete_run"),
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

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.records: dict[int, RunRecord] = {}
        self.marked: int | None = None
        self.viewed: int | None = None

    def on_mount(self) -> None:
        for label, key, width in (
            ("run", "id", None),
            ("when", "when", None),
            ("trigger", "trigger", None),
            ("status", "status", 13),
            ("time", "duration", None),
            ("parameters", "params", None),
            ("metrics", "metrics", None),
        ):
            self.add_column(label, key=key, width=width)

    def _row(self, record: RunRecord) -> list[str | Content]:
        mark = "*" if record.id == self.marked else ("▸" if record.id == self.viewed else " ")
        style = STATUS_STYLE.get(record.status, "")
        return [
            f"{mark}#{record.id}",
            fmt.when(record.started_at),
            plain(fmt.value(record.trigger, 22), newlines=False),
            Content.styled(f"{fmt.SYMBOLS.get(record.status, '?')} {record.status}", style),
            fmt.duration(record.duration_s),
            plain(fmt.params_line(record.params, 34), newlines=False),
            plain(fmt.params_line(record.metrics, 40), newlines=False),
        ]

    def set_runs(self, records: list[RunRecord]) -> None:
        """Replace the rows (keeps the cursor on the same run when it is still there)."""
        current = self.cursor_run if self.cursor_row > 0 else None
        self.records = {r.id: r for r in records}
        self.clear()
        for record in records:
            self.add_row(*self._row(record), key=str(record.id))
        if current in self.records:
            self.move_cursor(row=self.get_row_index(str(current)), animate=False)

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
