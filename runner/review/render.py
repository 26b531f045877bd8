"""Provides `comparison_lines`: `flow diff` as lines of text, shared by the CLI and the TUI's compare
view (which shows values in full). Every value a user or a step supplied goes through
`runner.text.visible`: it is shown, never interpreted.
"""

from __future__ import annotations

from typing import Any

from runner.review.compare import Comparison
from runner.review.sources import CodeChange
from runner.text import visible

SHORT_VALUE = 60
"""Characters of a parameter value or output preview `flow diff` shows on one line (`full`: all)."""


def _short(value: Any, full: bool) -> str:
    text = visible(value if isinstance(value, str) else repr(value), newlines=False)
    if full or len(text) <= SHORT_VALUE:
        return text
    return text[: SHORT_VALUE - 1] + "…"


def change_lines(change: CodeChange, *, indent: str) -> list[str]:
    """One code change: its diff's lines (or its note)."""
    if not change.diff:
        return [f"{indent}{visible(change.part, newlines=False)}: {change.note or ''}"]
    return [f"{indent}{visible(line, newlines=False)}" for line in change.diff]


def comparison_lines(c: Comparison, *, full: bool = False) -> list[str]:
    """Run A against run B: parameters, metrics with deltas, changed steps with their code diffs."""
    a, b = f"#{c.a.id}", f"#{c.b.id}"
    lines = [f"run {a} → run {b} of {visible(c.a.flow, newlines=False)}"]
    lines.append("params:" if c.params else "params: the same")
    for name, p in c.params.items():
        label = visible(name, newlines=False)
        if p.change == "added":
            lines.append(f"  + {label} = {_short(p.b, full)}")
        elif p.change == "removed":
            lines.append(f"  - {label} = {_short(p.a, full)}")
        else:
            lines.append(f"  ~ {label}: {_short(p.a, full)} → {_short(p.b, full)}")
    lines.append("metrics:" if c.metrics else "metrics: none")
    for name, m in c.metrics.items():
        left = "-" if m.a is None else f"{m.a:g}"
        right = "-" if m.b is None else f"{m.b:g}"
        delta = "" if m.delta is None else f"  ({m.delta:+g})"
        lines.append(f"  {visible(name, newlines=False)}: {left} → {right}{delta}")
    lines.append("steps:" if c.steps else "steps: the same")
    for s in c.steps:
        before, after = (x or "absent" for x in s.status)
        status = f"{before} → {after}" if before != after else before
        parts = [status]
        if s.fingerprint_changed:
            parts.append(f"fingerprint changed ({s.why})" if s.why else "fingerprint changed")
        if s.output == "equal":
            parts.append("output equal")
        elif s.output == "different":
            parts.append(f"output {_short(s.preview[0], full)} → {_short(s.preview[1], full)}")
        else:
            parts.append("no output to compare")
        lines.append(f"  {visible(s.step, newlines=False)}: " + "; ".join(parts))
        for change in s.code:
            lines += change_lines(change, indent="      ")
    if c.unchanged:
        lines.append(f"  ({c.unchanged} other step{'s' if c.unchanged != 1 else ''} the same)")
    return lines
