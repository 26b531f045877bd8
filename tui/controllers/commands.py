"""Provides `FlowCommands`: what a user can do to a flow — run it, re-run a step, force, stop, resume
or re-run a past run, delete a run, change its parameters, compare two runs, toggle hot reload, see
the code change behind a step's next re-run, debug a step of a run (`flow debug`, in the terminal).

A part of `FlowController` (its `commands`), apart because the commands change little of its state:
they start runs through the session, and the runs' events come back through `FlowController.apply`.
A command that needs the user's answer first comes in two halves — a check that returns what to ask
(`deletable`, `param_form`) and the act (`delete_run`, `set_params`) — so the screen, not the
controller or a widget, shows the dialog.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.errors import FlowError
from runner.review.compare import Comparison
from runner.review.sources import CodeChange
from runner.session import FlowSession
from runner.status import RunStatus, StepStatus
from runner.text import visible
from tui.controllers import reads
from tui.controllers.host import Change
from tui.controllers.views import ParamForm
from tui.data.state import RunState

if TYPE_CHECKING:
    from tui.controllers.flow import FlowController

RESUMABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})
"""Runs `resume` takes up: those that ended without finishing."""
DEBUGGABLE = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CACHED})
"""Steps `flow debug` can re-execute: those that got their inputs in the run."""


class FlowCommands:
    """The commands on one flow (`cursor`, where taken: the history row under the cursor when the
    history is shown, else None for the viewed run)."""

    def __init__(self, flow: FlowController) -> None:
        self.flow = flow
        self.host = flow.host

    def toggle_watch(self) -> None:
        """Hot reload on or off."""
        watcher, session = self.flow.watcher, self.flow.session
        watcher.on = not watcher.on
        if not watcher.on:
            watcher.stop()
        elif session is not None:
            watcher.start(session)
        self.host.notify(f"watch {'on: saving the file re-runs what changed' if watcher.on else 'off'}")
        self.host.changed(Change(title=True))

    def start_run(self, **options: Any) -> None:
        """Start a run through the session (in the background: planning reads the store)."""
        flow = self.flow
        session = flow.session
        if session is None or session.loaded is None:
            self.host.notify("the flow has not loaded; fix the error and save", severity="error")
            return
        flow.follow_live = True
        flow.pinned = False
        self.host.background(
            partial(_start, session, options), self._not_started, group="start", description="start a run"
        )

    def _not_started(self, error: FlowError | None) -> None:
        if error is not None:
            self.host.notify(visible(str(error)), title="cannot start the run", severity="error", timeout=8)

    def run_flow(self) -> None:
        self.start_run(trigger="tui")

    def rerun_step(self) -> None:
        step = self.flow.selected
        if step is None:
            self.host.notify("select a step first", severity="warning")
            return
        self.start_run(trigger=f"re-run {step}", from_steps=(step,), force_steps=(step,))

    def force_run(self) -> None:
        self.start_run(trigger="force re-run", force=True)

    def stop(self, cursor: int | None = None) -> None:
        """Stop this TUI's runs of the flow; with none in flight, the running run under the history
        cursor (or viewed) that another process runs — a loop's iteration (which ends the loop), a
        served run, a `flow run` — through the store, as `flow stop` does."""
        active = sorted(self.flow.active)
        if active:
            for run_id in active:
                self.flow.engine.cancel(run_id)
            self.host.notify(f"stopping run {', '.join(f'#{r}' for r in active)}")
            return
        state = self.target_run(cursor)
        if state is None or state.status != RunStatus.RUNNING:
            self.host.notify("no run of this flow is in flight", severity="warning")
            return
        run_id = state.run_id
        self.host.background(
            partial(self.flow.store.request_stop, run_id, f"the TUI (pid {os.getpid()})"),
            lambda _: self.host.notify(
                f"asked the process running run #{run_id} to stop it (a loop ends with it)"
            ),
            group="stop",
            description=f"asking run #{run_id}'s runner to stop it",
        )

    def target_run(self, cursor: int | None) -> RunState | None:
        """The run an action on 'a run' means: the history row `cursor`, else the viewed run."""
        flow = self.flow
        if cursor is not None:
            record = next((r for r in flow.history if r.id == cursor), None)
            if record is not None:
                return flow.runs.get(cursor) or RunState.from_record(record)
        return flow.viewed_state

    def resume(self, cursor: int | None = None) -> None:
        state = self.target_run(cursor)
        if state is None or state.status not in RESUMABLE:
            self.host.notify("resume needs a failed, stopped or interrupted run", severity="warning")
            return
        run_id = state.run_id
        self.start_run(trigger=f"resume of #{run_id}", resume_of=run_id, params=dict(state.params))

    def rerun_past(self, cursor: int | None = None) -> None:
        state = self.target_run(cursor)
        if state is None:
            self.host.notify("no run to repeat", severity="warning")
            return
        self.start_run(trigger=f"re-run of #{state.run_id}", params=dict(state.params))

    def deletable(self, cursor: int | None = None) -> int | None:
        """The run 'delete' means, if it may go (else None, and the user is told why)."""
        state = self.target_run(cursor)
        if state is None:
            self.host.notify("no run to delete", severity="warning")
            return None
        if state.run_id in self.flow.active:
            self.host.notify(f"run #{state.run_id} is in flight; stop it first", severity="warning")
            return None
        return state.run_id

    def delete_run(self, run_id: int) -> None:
        """Delete a run and its logs from the store (the user was asked: `deletable`)."""
        self.host.background(
            partial(self.flow.store.delete_run, run_id),
            lambda _: self._deleted(run_id),
            group="delete",
            description="delete a run",
        )

    def _deleted(self, run_id: int) -> None:
        flow = self.flow
        flow.runs.pop(run_id, None)
        if flow.viewed == run_id:
            flow.viewed = None
            flow.follow_live = True
            self.host.changed(Change(view=True))
        self.host.notify(f"deleted run #{run_id}")
        flow.load_history()

    def param_form(self) -> ParamForm | None:
        """What the parameters dialog edits (None before a good load, and the user is told)."""
        session = self.flow.session
        if session is None or session.loaded is None:
            self.host.notify("the flow has not loaded", severity="warning")
            return None
        loaded = session.loaded
        return ParamForm(loaded.graph.params, dict(session.overrides), loaded.name)

    def set_params(self, values: dict[str, str], *, run: bool = False) -> None:
        """The one way the TUI changes the flow's parameters (`-p` strings, as the dialog gives them):
        through the session, so every later run uses them, the watcher's too; `run` starts one now."""
        session = self.flow.session
        if session is None:
            return
        session.set_overrides(values)
        self.host.changed(Change(details=True))
        self.flow.load_plan()
        if run:
            self.run_flow()
        else:
            self.host.notify("parameters saved for the next runs")

    def compare(self, first: int, second: int, show: Callable[[Comparison], None]) -> None:
        """Compare runs `first` and `second` as `flow diff` does and `show` them (the screen's
        comparison dialog)."""

        def read(compared: Comparison | None) -> None:
            if compared is None:
                self.host.notify("a run to compare is gone from the store", severity="warning")
            else:
                show(compared)

        self.host.background(
            partial(reads.read_comparison, self.flow.store, first, second),
            read,
            group="compare",
            description="compare runs",
            exclusive=True,
        )

    def code_diff(self, show: Callable[[str, list[CodeChange]], None]) -> None:
        """Read the code change behind the selected step's next re-run and `show` it (title, diffs);
        tell the user when its next run changes no code."""
        flow = self.flow
        step, plan = flow.selected, flow.plan
        planned = next((s for s in plan.steps if s.step == step), None) if plan and step else None
        if step is None or plan is None or planned is None:
            self.host.notify("no plan for this step yet (is the flow loaded?)", severity="warning")
            return

        def read(changes: list[CodeChange]) -> None:
            if not changes:
                why = f"{planned.action}: {planned.reason}"
                self.host.notify(visible(f"no code change behind {step}'s next run ({why})"))
            else:
                show(f"{step}: the code its last result was computed from → the code now", changes)

        self.host.background(
            partial(reads.read_code_diff, flow.store, plan, step),
            read,
            group="code-diff",
            description="read the code diff",
            exclusive=True,
        )

    def debug_target(self) -> tuple[int, str] | None:
        """The viewed run and selected step to re-execute under pdb (`flow debug RUN STEP`), or None
        (the user told why) when that step did not run there."""
        flow = self.flow
        state, step = flow.viewed_state, flow.selected
        info = state.steps.get(step) if state is not None and step is not None else None
        if state is None or step is None or info is None:
            self.host.notify("select a step of a run to debug", severity="warning")
            return None
        if info.status not in DEBUGGABLE:
            self.host.notify(
                visible(f"{step} did not run in run #{state.run_id} ({info.status}): nothing to debug"),
                severity="warning",
            )
            return None
        return state.run_id, step


def _start(session: FlowSession, options: dict[str, Any]) -> FlowError | None:
    """Start a run (blocking: planning reads the store); the error when it cannot start."""
    try:
        session.run(**options)
    except FlowError as exc:
        return exc
    return None


def debug_command(store: Path, run_id: int, step: str, break_first: bool = False) -> list[str]:
    """The `flow debug` command line the TUI runs in the terminal while it is suspended."""
    return [
        sys.executable,
        "-m",
        "runner",
        "debug",
        str(run_id),
        step,
        "--store",
        str(store),
        *(["--break"] if break_first else []),
    ]
