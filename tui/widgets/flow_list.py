"""Provides `FlowList`: the flows found in a directory, each with its live status symbol and a `*`
on a flow saved while another one was shown."""

from __future__ import annotations

from pathlib import Path

from textual.binding import Binding
from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from runner.status import RunStatus
from tui.data import format as fmt
from tui.data.layout import clip
from tui.text import plain

STATUS_STYLE: dict[str, str] = {
    RunStatus.RUNNING: "$accent",
    RunStatus.SUCCEEDED: "$success",
    RunStatus.FAILED: "$error",
    RunStatus.CANCELLED: "$warning",
    RunStatus.INTERRUPTED: "$warning",
}


MAX_WIDTH = 28
"""The widest the list gets; longer names are cut with `…`."""


class FlowList(OptionList):
    """One option per flow file (option id: the file's resolved path)."""

    BINDINGS = [
        Binding("down,j", "cursor_down", "Down", show=False, tooltip="Next flow"),
        Binding("up,k", "cursor_up", "Up", show=False, tooltip="Previous flow"),
        Binding("enter", "select", "Open", tooltip="Open the flow and focus its DAG"),
    ]

    def __init__(self, flows: list[Path], *, id: str | None = None) -> None:
        self.flows = flows
        self.statuses: dict[str, str] = {}
        self.changed: set[str] = set()
        """Flows saved since they were last shown (marked `*`)."""
        super().__init__(*(Option(self._prompt(f, fmt.IDLE), id=str(f.resolve())) for f in flows), id=id)
        # As wide as the names need (status, name, marker, borders): every column given back is
        # the DAG's.
        self.styles.width = min(MAX_WIDTH, max(14, max((len(f.stem) for f in flows), default=0) + 7))

    @staticmethod
    def _prompt(path: Path, status: str, changed: bool = False) -> Content:
        name = clip(path.stem, MAX_WIDTH - 7)
        return Content.assemble(
            (fmt.symbol(status), STATUS_STYLE.get(status, "$text-muted")),
            " ",
            plain(name, newlines=False),
            (" *" if changed else "", "bold $text-warning"),
        )

    def set_status(self, key: str, status: str) -> None:
        if self.statuses.get(key) == status:
            return
        self.statuses[key] = status
        self._update(key)

    def set_changed(self, key: str, changed: bool) -> None:
        """Mark a flow whose file was saved while another flow was shown (or clear the mark)."""
        if (key in self.changed) == changed:
            return
        if changed:
            self.changed.add(key)
        else:
            self.changed.discard(key)
        self._update(key)

    def _update(self, key: str) -> None:
        try:
            prompt = self._prompt(Path(key), self.statuses.get(key, fmt.IDLE), key in self.changed)
            self.replace_option_prompt(key, prompt)
        except Exception:
            return
