"""Provides `plain`: text a user or a step supplied, as Textual content that is never markup.

Flow and step names, load errors, log lines, parameter values and exception messages are data:
`[/data/x]` in a `KeyError` must show as written, not close a markup tag (and crash the app), and
`[columns]` must not vanish as an unknown style. Control characters are shown as symbols
(`runner.text.visible`), so a step's output can never drive the terminal.
"""

from __future__ import annotations

from textual.content import Content

from runner.text import visible


def plain(text: object, style: str = "", *, newlines: bool = True) -> Content:
    """`text` (str() of anything) as literal content, optionally styled; control characters made
    visible (newlines too when `newlines` is False: a one-line title or cell)."""
    content = Content(visible(str(text), newlines=newlines))
    return content.stylize(style) if style else content
