"""Provides the symbols, labels and time formats every widget uses for statuses, and the two states
only the TUI shows (`IDLE`, `RETRYING`).

Each status has a symbol as well as a colour, so the DAG reads without colour too; the symbols are
`runner.status.SYMBOLS`, the ones `flow show` and the live output use. `MASK_TIMES` exists for
snapshot tests: it replaces wall-clock times and durations with fixed placeholders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from runner import status

MASK_TIMES = False
"""When True, durations and timestamps render as fixed placeholders (deterministic snapshots)."""

IDLE = "idle"
"""A step with no run to show it in (before the first run, or not part of the viewed run)."""

RETRYING = "retrying"
"""A step between a failed attempt and its next one (the engine's `StepRetrying`)."""

SYMBOLS: dict[str, str] = {IDLE: "·", **status.SYMBOLS, RETRYING: "↻"}
"""The runner's symbol of each status, and the TUI's own states'."""

SPINNER = "◐◓◑◒"
"""The running symbol's frames (the first is `runner.status`'s)."""

STATUSES = tuple(SYMBOLS)


def symbol(state: str, tick: int = 0) -> str:
    """The one-cell symbol of a status (a spinner frame while running)."""
    if state == status.StepStatus.RUNNING:
        return SPINNER[tick % len(SPINNER)]
    return SYMBOLS.get(state, "?")


def duration(seconds: float | None) -> str:
    """`0.4s`, `12s`, `3m05s`, `1h02m`; empty for None."""
    if seconds is None:
        return ""
    if MASK_TIMES:
        return "0.0s"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def when(ts: float | None) -> str:
    """A start time: `HH:MM:SS` today, `Mon DD HH:MM` before."""
    if ts is None:
        return ""
    if MASK_TIMES:
        return "00:00:00"
    now = time.localtime()
    then = time.localtime(ts)
    if then[:3] == now[:3]:
        return time.strftime("%H:%M:%S", then)
    return time.strftime("%b %d %H:%M", then)


def value(v: object, width: int = 24) -> str:
    """A parameter or metric value, short."""
    if isinstance(v, float):
        text = f"{v:.4g}"
    else:
        text = str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def params_line(params: Mapping[str, object], width: int = 40) -> str:
    """`lr=0.1 epochs=200` cut to `width`."""
    text = " ".join(f"{k}={value(v, 16)}" for k, v in params.items())
    return text if len(text) <= width else text[: width - 1] + "…"
