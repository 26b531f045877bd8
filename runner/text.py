"""Provides `visible`: user- and step-supplied text made safe to show on a terminal.

Anything a step prints, raises or returns, and anything a user names (a flow, a step, a parameter
value), is text: it must never drive the terminal. A raw ESC can clear the screen, set the window
title or plant an OSC-8 link; a CR can overwrite what a line appears to say. `visible` keeps the
characters and makes control characters visible instead (`\\x1b` -> `␛`), the way `cat -v` does.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_WITH_NEWLINES = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode control pictures: ␀ … ␟
    if code == 0x7F:
        return "␡"
    return f"\\x{code:02x}"  # C1 controls (0x80-0x9f; 0x9b is a one-byte CSI) have no picture


def visible(text: str, *, newlines: bool = True) -> str:
    """`text` with every control character but tab and newline (all of them when `newlines` is
    False: a table cell or a one-line status) shown as a visible symbol. Plain printable text, the
    common case, is returned as it is after one C-level check."""
    if text.isprintable():
        return text
    return (_CONTROL if newlines else _CONTROL_WITH_NEWLINES).sub(_picture, text)
