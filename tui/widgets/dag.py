"""Provides `DagView`: the flow's DAG drawn with box-drawing characters, live status per step.

Virtualised: the layout (`tui.data.layout`) is computed once per graph, and `render_line` paints
only the visible rows, so a 500-step flow paints as fast as a 5-step one. Status changes bump a
version that invalidates the line cache. Colours come from component classes styled with theme
variables, and every status also has a symbol, so the drawing reads without colour.
"""

from __future__ import annotations

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
from textual.timer import Timer

from runner.status import StepStatus
from tui.data import format as fmt
from tui.data.boxes import BoxState
from tui.data.layout import LEFT, Box, DagLayout, clip, fit_layout, reduce_edges
from tui.data.layout import Style as Drawing
from tui.keys import pane_bindings
from tui.widgets.styling import component_style


class DagView(ScrollView, can_focus=True):
    """The DAG of one flow. Arrow keys move the selection; a click selects a box."""

    BINDINGS = [
        Binding("left,h", "move(-1, 0)", "Left", show=False, tooltip="Select the step to the left"),
        Binding("down,j", "move(0, 1)", "Down", show=False, tooltip="Select the step below"),
        Binding("up,k", "move(0, -1)", "Up", show=False, tooltip="Select the step above"),
        Binding("right,l", "move(1, 0)", "Right", show=False, tooltip="Select the step to the right"),
        Binding("home", "first", "First step", show=False, tooltip="Select the first step"),
        Binding("enter", "screen.tab('logs-tab')", "Logs", show=False, tooltip="Show the step's logs"),
        *pane_bindings("rerun_step", "zoom", "toggle_pin", "toggle_edges", quiet=("toggle_edges",)),
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
        & > .dag--running { color: $text-accent; text-style: bold; }
        & > .dag--retrying { color: $text-warning; text-style: bold; }
        & > .dag--succeeded { color: $text-success; }
        & > .dag--cached { color: $text-secondary; }
        & > .dag--failed { color: $text-error; text-style: bold; }
        & > .dag--skipped { color: $text-muted; text-style: italic; }
        & > .dag--cancelled { color: $text-warning; }
        & > .dag--interrupted { color: $text-warning; }
        & > .dag--selected { background: $boost; text-style: reverse; }
    }
    """

    class StepSelected(Message):
        """The user selected a step."""

        def __init__(self, dag: DagView, step: str, user: bool = True) -> None:
            super().__init__()
            self.dag = dag
            self.step = step
            self.user = user
            """Chosen by the user (a key or a click), not by the pane following a run."""

        @property
        def control(self) -> DagView:
            return self.dag

    selected: reactive[str | None] = reactive(None, init=False)
    tick: reactive[int] = reactive(0, init=False, repaint=False)

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.layout_: DagLayout = DagLayout()
        self._graph: tuple[list[list[str]], dict[str, list[str]], set[str]] | None = None
        self._room: tuple[int, int] | None = None
        self._layouts: dict[Drawing, DagLayout] = {}
        self._reduced: dict[str, list[str]] | None = None
        """Drawings of the current graph per style (resizing picks among them again)."""
        self.max_rows = 1000
        self.all_edges = False
        self._selecting_for_pane = False
        self.hidden_edges = 0
        """Data edges not drawn because another path implies them (`E` draws them)."""
        """Draw every data edge, not only those the run order needs (`E` toggles)."""
        """The most rows the drawing may take before a more compact style is chosen."""
        self.states: dict[str, BoxState] = {}
        self._spinner: Timer | None = None
        """Turns the running boxes' spinners while any box runs."""
        self._version = 0
        self._cache: LRUCache[tuple[int, int, int, int, int], Strip] = LRUCache(1024)
        self._styles: dict[tuple[str, str | None], Style] = {}
        """(component class, the selected step's status for the selection) -> its style."""
        self._spinning: set[int] = set()
        """Rows with a running box's spinner (the rows a spinner frame repaints)."""
        self.painted = False
        """True once a frame with boxes has been rendered (the benchmark waits for it)."""

    # ----- data pushed down -----------------------------------------------------------------

    def set_graph(
        self, layers: list[list[str]], upstream: dict[str, list[str]], conditional: set[str]
    ) -> None:
        """Lay out a (new or reloaded) graph; keeps the selection when the step still exists."""
        self._graph = (layers, upstream, conditional)
        self._room = None
        self._layouts.clear()
        self._reduced = None
        self._relayout()
        if self.selected not in self.layout_.boxes:
            first = next((c[0] for c in self.layout_.columns if c), None)
            self.selected = first

    def set_room(self, rows: int) -> None:
        """The most rows the drawing may take (the pane keeps the rest for the logs)."""
        if rows != self.max_rows:
            self.max_rows = rows
            self._relayout()

    def on_resize(self) -> None:
        self._relayout()

    def _relayout(self) -> None:
        """Lay the graph out again in the roomiest style that fits, if the room changed."""
        if self._graph is None:
            return
        width = self.size.width  # the content area: borders excluded (no scrollbar when it fits)
        if width <= 0:  # not laid out on screen yet: guess from the app's size (resizing corrects it)
            width = max(20, self.app.size.width - 28)
        room = (width, self.max_rows)
        if room == self._room:
            return
        self._room = room
        layers, upstream, conditional = self._graph
        if not self.all_edges:
            if self._reduced is None:
                self._reduced = reduce_edges(layers, upstream)
                self.hidden_edges = sum(len(upstream.get(n, ())) - len(u) for n, u in self._reduced.items())
            upstream = self._reduced
        else:
            self.hidden_edges = 0
        self.layout_ = fit_layout(
            layers, upstream, conditional, width=width, height=self.max_rows, cache=self._layouts
        )
        self.virtual_size = Size(self.layout_.width, self.layout_.height)
        self._invalidate()
        self._show_selected()

    def _show_selected(self) -> None:
        box = self.layout_.boxes.get(self.selected) if self.selected is not None else None
        if box is not None:
            region = Region(box.x - 1, box.y, box.width + 2, box.height)
            self.call_after_refresh(self.scroll_to_region, region, animate=False, immediate=True)

    def set_states(self, states: dict[str, BoxState]) -> None:
        """Replace every box's status (steps not in `states` show as idle)."""
        self.states = states
        boxes = self.layout_.boxes
        running = StepStatus.RUNNING
        self._spinning = {boxes[n].mid for n, s in states.items() if s.status == running and n in boxes}
        self._invalidate()
        if any(s.status in (StepStatus.RUNNING, fmt.RETRYING) for s in states.values()):
            if self._spinner is None:
                self._spinner = self.set_interval(0.25, self._spin)
        elif self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    def _spin(self) -> None:
        """Next spinner frame: only the label rows of running boxes are painted again."""
        self.tick += 1
        for row in self._spinning:
            self.refresh_line(row)

    def notify_style_update(self) -> None:
        """The theme or CSS changed: cached rows and styles carry the old colours."""
        super().notify_style_update()
        self._styles.clear()
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
            self.scroll_to_region(Region(box.x - 1, box.y, box.width + 2, box.height), animate=False)
            self.post_message(self.StepSelected(self, new, not self._selecting_for_pane))

    def select(self, step: str, user: bool = True) -> None:
        """Select a step (`user` False: the pane follows a run; the user did not choose it)."""
        if step in self.layout_.boxes:
            self._selecting_for_pane = not user
            try:
                self.selected = step
            finally:
                self._selecting_for_pane = False

    def show_all_edges(self, on: bool) -> None:
        """Draw every data edge, or only those the run order needs (the transitive reduction)."""
        self.all_edges = on
        self._room = None
        self._layouts.clear()
        self._reduced = None
        self._relayout()

    def action_first(self) -> None:
        first = next((c[0] for c in self.layout_.columns if c), None)
        if first:
            self.selected = first

    def action_move(self, dx: int, dy: int) -> None:
        """Arrow keys: across the layers (the direction edges run) or along one layer."""
        layout = self.layout_
        if layout.style.down:
            dx, dy = dy, dx
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
            down, here = layout.style.down, box.across(layout.style.down)
            self.selected = min(layout.columns[c], key=lambda n: abs(layout.boxes[n].across(down) - here))

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

    def _label(self, name: str, width: int) -> str:
        """A box's middle line (or a compact node's row): status glyph and name, `width` cells."""
        state = self.states.get(name, BoxState())
        mark = fmt.symbol(state.status, self.tick)
        room = width - 4 - 2 if self.layout_.style.boxed else width - 4
        return f" {mark} {clip(name, room)} ".ljust(width - 2 if self.layout_.style.boxed else width)

    def _box_text(self, box: Box, part: int) -> tuple[str, int, int]:
        """One row of a box: its text, and the span of it that shows the selection."""
        if not self.layout_.style.boxed:
            label = f" {fmt.symbol(self.states.get(box.name, BoxState()).status, self.tick)} "
            label += clip(box.name, min(self.layout_.style.max_name, box.width - 4)) + " "
            fill = "─" if box.name in self.layout_.outgoing and not self.layout_.style.down else " "
            return label + fill * (box.width - len(label)), 0, len(label)
        inner = box.width - 2
        if part == 0:
            return "╭" + "─" * inner + "╮", 0, 0
        if part == 1:
            right = "├" if self.layout_.edges.mask(box.x + box.width, box.mid) & LEFT else "│"
            return "│" + self._label(box.name, box.width)[:inner] + right, 1, box.width - 1
        note = self.states.get(box.name, BoxState()).note
        if note:
            note = f" {note} "[: inner - 1]
            return "╰" + "─" * (inner - len(note) - 1) + note + "─╯", 0, 0
        return "╰" + "─" * inner + "╯", 0, 0

    def _render_row(self, row: int, scroll_x: int, width: int) -> Strip:
        layout = self.layout_
        end = scroll_x + width
        cells: list[str] = [" "] * width
        styles: list[str] = ["dag--edge"] * width
        for x, char in layout.edge_cells(row, scroll_x, end):
            cells[x - scroll_x] = char
        for box in layout.rows.get(row, ()):
            if box.x >= end or box.x + box.width <= scroll_x:
                continue
            state = self.states.get(box.name, BoxState())
            text, first, last = self._box_text(box, row - box.y)
            style = f"dag--{state.status}"
            selected = box.name == self.selected
            for i, char in enumerate(text):
                x = box.x + i - scroll_x
                if 0 <= x < width:
                    cells[x] = char
                    if selected and first <= i < last:
                        styles[x] = "dag--selected"
                    elif char == "─" and not layout.style.boxed:
                        styles[x] = "dag--edge"
                    else:
                        styles[x] = style
        segments: list[Segment] = []
        start = 0
        for i in range(1, width + 1):
            if i == width or styles[i] != styles[start]:
                segments.append(Segment("".join(cells[start:i]), self._style(styles[start])))
                start = i
        return Strip(segments, width)

    def _style(self, name: str) -> Style:
        """Component class `name` as painted (the selection in the selected step's status colour);
        kept until the styles change (resolving one walks the widget's ancestors)."""
        selected = self.states.get(self.selected) if name == "dag--selected" and self.selected else None
        key = (name, selected.status if selected is not None else None)
        style = self._styles.get(key)
        if style is None:
            style = self.rich_style
            if selected is not None:
                style += component_style(self, f"dag--{selected.status}")
            style = self._styles[key] = style + component_style(self, name)
        return style
