"""Provides `LogView`: a step's log lines, virtualised, with follow mode, search and jump to error.

The widget keeps no copy of the lines: it renders from a `LogBuffer` the owner appends to, and
paints only the visible rows through an LRU cache of strips (the pattern of Textual's `Log`), so a
million lines stay smooth. Follow mode keeps the end in view while lines stream in; scrolling up
leaves it, `end` returns to it.

Growing the buffer repaints only this widget: its own size never depends on its content, so the
scrollable area is resized without a screen layout (a layout re-arranges and repaints every widget
on the screen, which costs tens of milliseconds) unless a scrollbar has to appear or disappear.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.data.state import LogBuffer
from tui.keys import pane_bindings
from tui.widgets.styling import component_style


class LogView(ScrollView, can_focus=True):
    """Renders a `LogBuffer`. Call `buffer_grew()` after appending to it."""

    BINDINGS = [
        Binding("end,G", "follow", "End", show=False, tooltip="Go to the end and follow new lines"),
        Binding("home", "top", "Top", show=False, tooltip="Go to the first line"),
        Binding("up,k", "scroll_up", "Up", show=False, tooltip="Scroll up a line"),
        Binding("down,j", "scroll_down", "Down", show=False, tooltip="Scroll down a line"),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        *pane_bindings("search", "search_next", "jump_to_error", "toggle_follow", quiet=("search_next",)),
    ]

    COMPONENT_CLASSES = {"logs--stderr", "logs--match", "logs--current", "logs--empty"}

    DEFAULT_CSS = """
    LogView {
        background: $surface;
        scrollbar-size: 1 1;
        & > .logs--stderr { color: $text-error; }
        & > .logs--match { background: $warning 40%; }
        & > .logs--current { background: $accent 30%; }
        & > .logs--empty { color: $text-muted; text-style: italic; }
    }
    """

    class FollowChanged(Message):
        """Follow mode was turned on or off."""

        def __init__(self, follow: bool) -> None:
            super().__init__()
            self.follow = follow

    follow: reactive[bool] = reactive(True, init=False)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.buffer = LogBuffer()
        self.placeholder = "no output"
        self.search = ""
        self.current: int | None = None
        self._cache: LRUCache[tuple[int, int, int, str, int | None], Strip] = LRUCache(1000)
        self._styles: tuple[Style, Style] | None = None
        self._shown = 0

    def set_buffer(self, buffer: LogBuffer, placeholder: str = "no output") -> None:
        """Show another step's lines (follow mode on)."""
        self.buffer = buffer
        self.placeholder = placeholder
        self.current = None
        self._cache.clear()
        self._shown = -1
        self.follow = True
        self.buffer_grew()

    def buffer_grew(self) -> None:
        """The buffer grew (or changed): resize, keep following, repaint."""
        count = len(self.buffer)
        if count == self._shown:
            return
        self._shown = count
        # Rows past the old end were cached blank (or as the placeholder): they now hold lines.
        self._cache.clear()
        self._resize(Size(self.buffer.width + 1, count))
        if self.follow:
            bottom = max(0, count - self.scrollable_content_region.height)
            self.scroll_to(y=bottom, animate=False, immediate=True)
        self.refresh()

    def _resize(self, size: Size) -> None:
        """Set the scrollable size; lay the screen out again only if a scrollbar appears or goes."""
        if size == self.virtual_size:
            return
        width, height = self.container_size
        vertical, horizontal = self.show_vertical_scrollbar, self.show_horizontal_scrollbar
        wants_vertical = size.height > height - self.scrollbar_size_horizontal
        wants_horizontal = size.width > width - self.scrollbar_size_vertical
        if not self.is_mounted or not height or (wants_vertical, wants_horizontal) != (vertical, horizontal):
            self.virtual_size = size
            return
        self.set_reactive(LogView.virtual_size, size)
        if vertical:
            self.vertical_scrollbar.window_virtual_size = size.height
        if horizontal:
            self.horizontal_scrollbar.window_virtual_size = size.width

    def notify_style_update(self) -> None:
        """The theme or CSS changed: cached lines and styles carry the old colours."""
        super().notify_style_update()
        self._cache.clear()
        self._styles = None

    def _line_styles(self) -> tuple[Style, Style]:
        """The style of a line and of a stderr line (working them out walks the DOM: done once)."""
        if self._styles is None:
            base = self.rich_style
            self._styles = base, base + component_style(self, "logs--stderr")
        return self._styles

    # ----- follow, search, errors -----------------------------------------------------------

    def watch_follow(self, follow: bool) -> None:
        self.post_message(self.FollowChanged(follow))
        if follow:
            self.scroll_end(animate=False, immediate=True)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new < old and self.follow:
            self.follow = False

    def action_follow(self) -> None:
        self.follow = True

    def action_top(self) -> None:
        self.follow = False
        self.scroll_home(animate=False)

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    def go_to(self, index: int) -> None:
        """Show line `index` (highlighted) in the middle of the view; leaves follow mode."""
        self.follow = False
        self.current = index
        self._cache.clear()
        middle = max(0, index - self.scrollable_content_region.height // 2)
        self.scroll_to(y=middle, animate=False, immediate=True)
        self.refresh()

    def find(self, needle: str, backwards: bool = False) -> int | None:
        """Highlight `needle` and move to its next (or previous) occurrence."""
        self.search = needle
        self._cache.clear()
        start = self.current if self.current is not None else (int(self.scroll_y) - 1)
        index = self.buffer.find(needle, start, backwards)
        if index is not None:
            self.go_to(index)
        else:
            self.refresh()
        return index

    def jump_to_error(self) -> int | None:
        index = self.buffer.error_line()
        if index is not None:
            self.go_to(index)
        return index

    # ----- painting ------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = y + scroll_y
        width = self.scrollable_content_region.width
        key = (index, scroll_x, width, self.search, self.current)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        strip = self._render_row(index, scroll_x, width)
        self._cache[key] = strip
        return strip

    def _render_row(self, index: int, scroll_x: int, width: int) -> Strip:
        base, stderr_style = self._line_styles()
        lines = self.buffer.lines
        if not lines:
            if index == 0:
                style = base + component_style(self, "logs--empty")
                return Strip([Segment(self.placeholder[:width], style)]).extend_cell_length(width, base)
            return Strip.blank(width, base)
        if index >= len(lines):
            return Strip.blank(width, base)
        line = lines[index]
        stderr = self.buffer.stderr[index]
        if line.isascii() and line.isprintable() and not self.search and index != self.current:
            # The common line: one cell per character and one style, so no Text to build and render.
            style = stderr_style if stderr else base
            shown = line[scroll_x : scroll_x + width]
            if not shown:
                return Strip.blank(width, base)
            return Strip([Segment(shown, style)], len(shown)).extend_cell_length(width, base)
        text = Text(line, style=base, no_wrap=True, end="")
        if stderr:
            text.stylize(component_style(self, "logs--stderr"))
        if index == self.current:
            text.stylize(component_style(self, "logs--current"))
        if self.search:
            match = component_style(self, "logs--match")
            text.highlight_words([self.search], style=match, case_sensitive=False)
        # `Text.render` leaves the text's own style to the caller: under it goes the widget's style.
        strip = Strip(text.render(self.app.console)).apply_style(base).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, base)
