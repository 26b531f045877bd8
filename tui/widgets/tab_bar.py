"""Provides `TabBar`: the row of tab labels (Logs, Details, History) over a pane's `ContentSwitcher`.

Textual's `TabbedContent` builds a dozen widgets for three tabs (a scrolling tab strip, a widget per
label, an animated underline, a pane per tab) and restyles several of them on every switch; that was
most of the time between a key press and the switched screen, and the underline's animation kept
repainting for 0.3 s after it. This bar is one widget that paints its two rows itself, so a switch
costs one small repaint besides showing the other pane. It looks the same: dim labels, the active
one bright, and a bar under it.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget


class TabBar(Widget):
    """Tab labels with the active one highlighted; clicking a label selects it.

    Args:
        tabs: (id, label) of each tab, left to right.
        active: the id of the tab shown first.
    """

    DEFAULT_CSS = """
    TabBar {
        width: 1fr;
        height: 2;
        & > .tab-bar--tab { color: $foreground 50%; }
        & > .tab-bar--active { color: $foreground; }
        & > .tab-bar--bar { color: $block-cursor-background; background: $foreground 10%; }
    }
    """

    COMPONENT_CLASSES = {"tab-bar--tab", "tab-bar--active", "tab-bar--bar"}

    class Selected(Message):
        """The user clicked a tab."""

        def __init__(self, bar: TabBar, tab: str) -> None:
            super().__init__()
            self.bar = bar
            self.tab = tab

        @property
        def control(self) -> TabBar:
            return self.bar

    active: reactive[str] = reactive("", init=False)

    def __init__(self, tabs: list[tuple[str, str]], *, active: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tabs = tabs
        self.set_reactive(TabBar.active, active)
        self._strips: dict[tuple[int, str, int], Strip] = {}
        """Painted rows by (row, active tab, width): a switch between tabs repaints from here."""
        self._spans: dict[str, tuple[int, int]] = {}
        """Tab id -> the cells of its label (without padding)."""
        x = 0
        for tab, label in tabs:
            self._spans[tab] = (x + 1, x + 1 + len(label))
            x += len(label) + 2

    def watch_active(self) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        for tab, (start, end) in self._spans.items():
            if start - 1 <= event.x <= end:
                self.post_message(self.Selected(self, tab))
                return

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        key = (y, self.active, width)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._render_row(y, width)
        return strip

    def _render_row(self, y: int, width: int) -> Strip:
        base = self.rich_style
        if y == 0:
            dim = self.get_component_rich_style("tab-bar--tab")
            bright = self.get_component_rich_style("tab-bar--active")
            segments: list[Segment] = []
            for tab, label in self.tabs:
                segments += [Segment(" ", base), Segment(label, bright if tab == self.active else dim)]
                segments.append(Segment(" ", base))
            return Strip(segments).crop(0, width).extend_cell_length(width, base)
        if y == 1:
            return self._bar(width)
        return Strip.blank(width, base)

    def _bar(self, width: int) -> Strip:
        """The underline: `━` across, the active label's cells in the highlight colour, with half
        bars at its ends (what Textual's `Underline` draws)."""
        base = self.rich_style
        colours = self.get_component_rich_style("tab-bar--bar")
        highlight = base + Style.from_color(colours.color)
        background = base + Style.from_color(colours.bgcolor)
        start, end = self._spans.get(self.active, (0, 0))
        start, end = min(start, width), min(end, width)
        if start >= end:
            return Strip([Segment("━" * width, background)], width)
        segments = [Segment("━" * (start - 1), background)] if start > 1 else []
        if start > 0:
            segments.append(Segment("╸", background))
        segments.append(Segment("━" * (end - start), highlight))
        if end < width:
            segments.append(Segment("╺" + "━" * (width - end - 1), background))
        return Strip(segments, width)
