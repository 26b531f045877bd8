"""Provides `FlowList`: the flows found in a directory, each with its live status symbol."""

from __future__ import annotations

from pathlib import Path

from textual.binding import Binding
from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.data import format as fmt

STATUS_STYLE = {
    "running": "$accent",
    "succeeded": "$success",
    "failed": "$error",
    "cancelled": "$warning",
    "interrupted": "$warning",
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
        super().__init__(*(Option(self._prompt(f, "idle"), id=str(f.resolve())) for f in flows), id=id)
        # As wide as the names need (status, name, marker, borders): every column given back is
        # the DAG's.
        self.styles.width = min(MAX_WIDTH, max(14, max((len(f.stem) for f in flows), default=0) + 7))

    @staticmethod
    def _prompt(path: Path, status: str) -> Content:
        return Content.assemble((fmt.symbol(status), STATUS_STYLE.get(status, "$text-muted")), " ", path.stem)

    def set_status(self, key: str, status: str) -> None:
        if self.statuses.get(key) == status:
            return
        self.statuses[key] = status
        try:
            self.replace_option_prompt(key, self._prompt(Path(key), status))
        except Exception:
            return
