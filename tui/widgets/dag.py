"""Provides `DagView`: the flow's DAG drawn with box-drawing characters, live status per step.

Virtualised: the layout (`tui.data.layout`) is computed once per graph, and `render_line` paints
only the visible rows, so a 500-step flow paints as fast as a 5-step one. Status changes bump a
version that invalidates the line cache. Colours come from component classes styled with theme
variables, and every status also has a symbol, so the drawing reads without colour.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.data import format as fmt
from tui.data.layout import BOX_HEIGHT, LEFT, DagLayout, layout_dag


@dataclass(frozen=True)
class BoxState:
    """What a box shows: its status and the text on its bottom border (duration, `3/8`, ...)."""

    status: str = "idle"
    note: str = ""
    started_at: float | None = None


class DagView(ScrollView, can_focus=True):
    """The DAG of one flow. Arrow keys move the selection; a click selects a box."""

    BINDINGS = [
        Binding("up", "move(0, -1)", "Up", show=False),
        Binding("down", "move(0, 1)", "Down", show=False),
        Binding("left", "move(-1, 0)", "Left", show=False),
        Binding("right", "move(1, 0)", "Right", show=False),
        Binding("home", "first", "First step", show=False),
    ]

    COMPONENT_CLASSES = {
        "dag--edge",
        "dag--selected",
        *(f"dag--{status}" for status in fmt.STATUSES),
    }

    DEFAULT_CSS = """
    DagView {
        background: $surface;
        scrollbar-size: 1 1;
        & > .dag--edge { color: $text-muted; }
        & > .dag--idle { color: $text-disabled; }
        & > .dag--pending { color: $text-muted; }
        & > .dag--ready { color: $text-muted; }
        & > .dag--running { color: $accent; text-style: bold; }
        & > .dag--retrying { color: $warning; text-style: bold; }
        & > .dag--succeeded { color: $success; }
        & > .dag--cached { color: $text-secondary; }
        & > .dag--failed { color: $error; text-style: bold; }
        & > .dag--skipped { color: $text-muted; text-style: italic; }
        & > .dag--cancelled { color: $warning; }
        & > .dag--interrupted { color: $warning; }
        & > .dag--selected { background: $boost; text-style: reverse; }
    }
    """

    class StepSelected(Message):
        """The user selected a step."""

        def __init__(self, dag: DagView, step: str) -> None:
            super().__init__()
            self.dag = dag
            self.step = step

        @property
        def control(self) -> DagView:
            return self.dag

    selected: reactive[str | None] = reactive(None, init=False)
    tick: reactive[int] = reactive(0, init=False, repaint=False)

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.layout_: DagLayout = DagLayout()
        self.states: dict[str, BoxState] = {}
        self._version = 0
        self._cache: LRUCache[tuple[int, int, int, int, int], Strip] = LRUCache(1024)
        self._spinning: set[int] = set()
        """Rows with a running box's spinner (the rows a spinner frame repaints)."""
        self.painted = False
        """True once a frame with boxes has been rendered (the benchmark waits for it)."""

    # ----- data pushed down -----------------------------------------------------------------

    def set_graph(
        self, layers: list[list[str]], upstream: dict[str, list[str]], conditional: set[str]
    ) -> None:
        """Lay out a (new or reloaded) graph; keeps the selection when the step still exists."""
        notes = {name: 6 for layer in layers for name in layer}
        self.layout_ = layout_dag(layers, upstream, conditional, notes)
        self.virtual_size = Size(self.layout_.width, self.layout_.height)
        if self.selected not in self.layout_.boxes:
            first = next((c[0] for c in self.layout_.columns if c), None)
            self.selected = first
        self._invalidate()

    def set_states(self, states: dict[str, BoxState]) -> None:
        """Replace every box's status (steps not in `states` show as idle)."""
        self.states = states
        boxes = self.layout_.boxes
        self._spinning = {boxes[n].mid for n, s in states.items() if s.status == "running" and n in boxes}
        self._invalidate()
        if any(s.status in ("running", "retrying") for s in states.values()):
            if not hasattr(self, "_spinner") or self._spinner is None:
                self._spinner = self.set_interval(0.25, self._spin)
        elif getattr(self, "_spinner", None) is not None:
            self._spinner.stop()
            self._spinner = None

    def _spin(self) -> None:
        """Next spinner frame: only the label rows of running boxes are painted again."""
        self.tick += 1
        for row in self._spinning:
            self.refresh_line(row)

    def notify_style_update(self) -> None:
        """The theme or CSS changed: cached rows carry the old colours."""
        super().notify_style_update()
        self._invalidate()

    def _invalidate(self) -> None:
        self._version += 1
        self._cache.clear()
        self.refresh()

    # ----- navigation ----------------------------------------------------------------------

    def watch_selected(self, old: str | None, new: str | None) -> None:
        self._invalidate()
        if new is not None and new in self.layout_.boxes:
            box = self.layout_.boxes[new]
            self.scroll_to_region(Region(box.x - 1, box.y, box.width + 2, BOX_HEIGHT), animate=False)
            self.post_message(self.StepSelected(self, new))

    def select(self, step: str) -> None:
        if step in self.layout_.boxes:
            self.selected = step

    def action_first(self) -> None:
        first = next((c[0] for c in self.layout_.columns if c), None)
        if first:
            self.selected = first

    def action_move(self, dx: int, dy: int) -> None:
        layout = self.layout_
        if self.selected not in layout.boxes:
            self.action_first()
            return
        box = layout.boxes[self.selected]
        column = layout.columns[box.column]
        if dy:
            index = column.index(box.name) + dy
            if 0 <= index < len(column):
                self.selected = column[index]
            return
        c = box.column + dx
        while 0 <= c < len(layout.columns) and not layout.columns[c]:
            c += dx
        if 0 <= c < len(layout.columns):
            target = min(layout.columns[c], key=lambda n: abs(layout.boxes[n].y - box.y))
            self.selected = target

    def on_click(self, event: events.Click) -> None:
        offset = self.scroll_offset
        name = self.layout_.box_at(event.x + offset.x, event.y + offset.y)
        if name is not None:
            self.selected = name
            self.focus()

    # ----- painting ------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        row = y + scroll_y
        key = (row, scroll_x, width, self._version, self.tick if row in self._spinning else 0)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        strip = self._render_row(row, scroll_x, width)
        self._cache[key] = strip
        if self.layout_.boxes:
            self.painted = True
        return strip

    def _label(self, name: str, width: int) -> tuple[str, str]:
        """The middle line text and the bottom-border note of a box."""
        state = self.states.get(name, BoxState())
        mark = fmt.symbol(state.status, self.tick)
        room = width - 4 - 2
        text = name if len(name) <= room else name[: room - 1] + "…"
        return f" {mark} {text}".ljust(width - 2), state.note

    def _render_row(self, row: int, scroll_x: int, width: int) -> Strip:
        layout = self.layout_
        end = scroll_x + width
        cells: list[str] = [" "] * width
        styles: list[str] = ["dag--edge"] * width
        edge_row = layout.edges.get(row)
        if edge_row:
            for x in edge_row:
                if scroll_x <= x < end:
                    cells[x - scroll_x] = layout.edge_char(x, row) or " "
        for box in layout.rows.get(row, ()):
            if box.x >= end or box.x + box.width <= scroll_x:
                continue
            state = self.states.get(box.name, BoxState())
            part = row - box.y
            inner = box.width - 2
            if part == 0:
                text = "╭" + "─" * inner + "╮"
            elif part == 1:
                label, _ = self._label(box.name, box.width)
                right = "├" if edge_row and edge_row.get(box.x + box.width, 0) & LEFT else "│"
                text = "│" + label[:inner] + right
            else:
                note = state.note
                if note:
                    note = f" {note} "[: inner - 1]
                    text = "╰" + "─" * (inner - len(note) - 1) + note + "─╯"
                else:
                    text = "╰" + "─" * inner + "╯"
            style = f"dag--{state.status}"
            selected = box.name == self.selected
            for i, char in enumerate(text):
                x = box.x + i - scroll_x
                if 0 <= x < width:
                    cells[x] = char
                    styles[x] = "dag--selected" if selected and part == 1 and 0 < i < len(text) - 1 else style
        segments: list[Segment] = []
        base = self.rich_style
        resolved: dict[str, Style] = {}
        start = 0
        for i in range(1, width + 1):
            if i == width or styles[i] != styles[start]:
                name = styles[start]
                style = resolved.get(name)
                if style is None:
                    style = resolved[name] = base + self.get_component_rich_style(name, partial=True)
                    if name == "dag--selected" and self.selected in self.states:
                        status_style = self.get_component_rich_style(
                            f"dag--{self.states[self.selected].status}", partial=True
                        )
                        style = resolved[name] = base + status_style + self.get_component_rich_style(
                            name, partial=True
                        )
                segments.append(Segment("".join(cells[start:i]), style))
                start = i
        return Strip(segments, width)
