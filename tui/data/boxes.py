"""Provides `BoxState`, what one box of the DAG shows, and `box_states`, every box's for a run.

Textual-free: the controller's view data, unit-testable on a `RunState`.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.status import StepStatus
from tui.data import format as fmt
from tui.data.format import RETRYING
from tui.data.state import RunState


@dataclass(frozen=True)
class BoxState:
    """What a box shows: its status and the text on its bottom border (duration, `3/8`, ...)."""

    status: str = fmt.IDLE
    note: str = ""
    started_at: float | None = None


def box_states(state: RunState | None) -> dict[str, BoxState]:
    """Each step's box in run `state` (none without a run; steps in its scope not yet seen pending)."""
    boxes: dict[str, BoxState] = {}
    if state is None:
        return boxes
    for name, info in state.steps.items():
        note = ""
        if info.status == StepStatus.CACHED:
            note = "cached"
        elif info.status in (StepStatus.SUCCEEDED, StepStatus.FAILED) and info.duration_s is not None:
            note = fmt.duration(info.duration_s)
        elif info.status == RETRYING:
            note = f"retry {info.attempts + 1}"
        if info.instances:
            note = f"{info.instances_done}/{info.instances} {note}".strip()
        started = info.started_at if info.status in (StepStatus.RUNNING, RETRYING) else None
        boxes[name] = BoxState(info.status, note, started)
    for name in state.scope:
        boxes.setdefault(name, BoxState(StepStatus.PENDING))
    return boxes
