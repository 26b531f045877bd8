"""Provides the plain data a flow's controller hands its view and the screen's dialogs — `StepView`
(what the details panel shows of a step), `ParamForm` (what the parameters dialog edits) — and the
pane's one-line texts: its title and subtitle, the line above the logs.

Textual-free: what a pane reads is unit-testable without an app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dsl.errors import FlowError
from dsl.graph import ParamSpec
from dsl.loader import LoadedFlow
from runner.review.plan import PlannedStep
from runner.status import RunStatus
from tui.data import format as fmt
from tui.data.state import RunState, StepInfo


@dataclass(frozen=True)
class StepView:
    """One step as the details panel shows it.

    Attributes:
        step: its name.
        info: its state in the viewed run (None: not part of it, or no run viewed).
        run_id: the viewed run.
        options: its declared options (retries, timeout, cache, ...).
        params: the values of the parameters it reads, in the viewed run (else the next run's).
        planned: what the next run would do with it and why (`flow plan`), once planned.
        outputs: the viewed run's flow outputs, name -> preview (once it finished).
    """

    step: str
    info: StepInfo | None
    run_id: int | None
    options: dict[str, Any]
    params: dict[str, Any]
    planned: PlannedStep | None = None
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamForm:
    """The parameters dialog's input: each parameter's spec, the values set, the flow's name."""

    specs: dict[str, ParamSpec]
    values: dict[str, Any]
    flow: str


def step_view(
    loaded: LoadedFlow | None,
    state: RunState | None,
    step: str | None,
    next_params: Callable[[], dict[str, Any]],
    planned: PlannedStep | None = None,
) -> StepView | None:
    """`step` of the last good load as seen in run `state` (None: no step, or no good load yet);
    `next_params` gives the parameters when no run is viewed; `planned`, the next run's plan of it."""
    if step is None or loaded is None:
        return None
    node = loaded.graph.nodes.get(step)
    options: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if node is not None:
        item = node.step
        options = {
            "retries": item.retries,
            "timeout": item.timeout,
            "cache": item.cache,
            "trigger": item.trigger,
            "foreach": item.foreach,
            "when": "yes" if item.when is not None else None,
        }
        source = state.params if state is not None else next_params()
        params = {p: source.get(p) for p in node.params}
    if node is not None and node.step.job is not None:
        options["job"] = "yes"
    info = state.steps.get(step) if state is not None else None
    outputs = dict(state.outputs) if state is not None else {}
    run_id = state.run_id if state is not None else None
    return StepView(step, info, run_id, options, params, planned, outputs)


def run_title(
    flow: str, state: RunState | None, follow_live: bool, saved_after: bool, rerun: int | None = None
) -> str:
    """`name · run #3 ✓ succeeded`, saying when the run is a past one and when the flow file was
    saved after it (`saved_after`) with something to re-run: `rerun` steps a run now would run
    (None: not known yet; 0: the save changed nothing a run would redo, so nothing is said)."""
    if state is None:
        return f"{flow} · no run"
    run = f"run #{state.run_id} {fmt.symbol(state.status)} {state.status}"
    if not follow_live:
        run += " (past run: v follows live)"
    if saved_after and rerun is None:
        run += " · flow changed since: r runs it"
    elif saved_after and rerun:
        run += f" · flow changed since: r runs {rerun} step{'' if rerun == 1 else 's'}"
    return f"{flow} · {run}"


def subtitle(steps: int, hidden_edges: int, watching: bool, due: str | None = None) -> str:
    """`12 steps · 3 implied edges hidden (E) · watch on`, and the flow's next due time if it has a
    schedule (`due`, from `due_text`)."""
    edges = (
        f" · {hidden_edges} implied edge{'' if hidden_edges == 1 else 's'} hidden (E)" if hidden_edges else ""
    )
    text = f"{steps} step{'' if steps == 1 else 's'}{edges} · {'watch on' if watching else 'watch off'}"
    return f"{text} · {due}" if due else text


def due_text(loaded: LoadedFlow | None, now: float | None = None) -> str | None:
    """When `flow serve` runs the flow next, for a scheduled flow: `next 2026-12-02 03:00 CET` (a cron
    schedule, in its time zone) or `every 30s` (an interval counts from the server's start); None for
    a flow without a schedule, `schedule invalid` for a bad cron expression."""
    from runner.operate.schedule import schedule_of  # the cron library: only for a flow on screen

    try:
        schedule = schedule_of(loaded) if loaded is not None else None
    except FlowError:
        return "schedule invalid (flow check says why)"
    if schedule is None:
        return None
    if schedule.cron is None:
        return f"serve: {schedule.describe()}"
    moment = schedule.next_after(time.time() if now is None else now)
    when = datetime.fromtimestamp(moment, ZoneInfo(schedule.timezone))
    return f"serve: next {'HH:MM' if fmt.MASK_TIMES else when.strftime('%Y-%m-%d %H:%M %Z')}"


def log_status(
    step: str | None, state: RunState | None, pinned: bool, lines: int, follow: bool, search: str
) -> str:
    """The line above the logs: the step, the run (and where a cached step's lines come from),
    following or pinned, the line count, follow mode, the search."""
    parts = [step or "-"]
    if state is not None:
        parts.append(f"run #{state.run_id}")
        source = state.log_sources.get(step or "")
        if source is not None:
            parts.append(f"cached: logs of run #{source}")
        if state.live and state.status == RunStatus.RUNNING:
            parts.append("pinned (P follows the run)" if pinned else "following the run (P pins)")
    parts.append(f"{lines:,} line{'' if lines == 1 else 's'}")
    parts.append("follow" if follow else "paused (end: follow)")
    if search:
        parts.append(f"search: {search}")
    return " · ".join(parts)
