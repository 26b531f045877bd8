"""Provides `component_style`: a widget's component class as a Rich style, its colours resolved
against the widget's own background.

Textual resolves a component class on its own, outside the DOM: `auto 60%` (what `$text-muted`
is) and colours with alpha are worked out against no background, so muted text came out white in
both themes — the light theme's DAG edges were near-invisible. Here `auto` picks the contrasting
colour for the widget's background and alpha blends into it, as it would for a real widget.
"""

from __future__ import annotations

from rich.style import Style
from textual.widget import Widget


def component_style(widget: Widget, name: str) -> Style:
    """The Rich style of `widget`'s component class `name` (colours solid, text style kept)."""
    styles = widget.get_component_styles(name)
    _, background = widget.background_colors
    if styles.has_rule("background"):
        background = background + styles.background
    color = None
    if styles.has_rule("color"):
        wanted = styles.color
        color = background.get_contrast_text(wanted.a) if styles.auto_color else background + wanted
    bgcolor = background.rich_color if styles.has_rule("background") else None
    return Style(color=color.rich_color if color is not None else None, bgcolor=bgcolor) + styles.text_style
