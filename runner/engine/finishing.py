"""Provides `Finishing`: how steps and runs end — a step's final status and its event, a fan-out's
gathered output, a run's status and flow outputs, stopping runs (killing only the executions no other
run waits for), and failing runs when the engine's own code fails."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from dsl.errors import FlowError
from runner import flow_outputs
from runner.artifacts import content_hash
from runner.engine.inputs import plain_value
from runner.engine.model import ASKING, NONE_OUTPUT_HASH, READY, Execution, Output, Run
from runner.engine.state import SchedulerState
from runner.events import Event, RunFinished, StepFinished
from runner.status import FINAL, OK, RunStatus, StepStatus
from runner.store.api import KeptHits


class Finishing(SchedulerState):
    """Ending steps and runs (see `runner.engine.state` for why this is a part of one object)."""

    def _guarded(self, runs: list[Run], fn: Callable[..., None], *args: Any) -> None:
        """Call `fn`; an exception from it fails `runs` (not every run in flight)."""
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - see `_internal_error`
            self._internal_error(exc, runs)

    def _internal_error(self, exc: BaseException, runs: list[Run] | None) -> None:
        """A bug (or a broken environment) surfaced in the engine's code: fail the runs concerned
        (None: every run in flight) so they are recorded `failed`, their steps killed, and their
        handles released; print the traceback, since this is not the user's mistake."""
        try:
            detail = "".join(traceback.format_exception(exc)).rstrip()
            print(f"flow: internal error in the scheduler:\n{detail}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - a closed stderr must not stop the runs from ending
            pass
        error = f"internal error in the runner: {type(exc).__name__}: {exc}"
        for run in list(self._runs.values()) if runs is None else runs:
            try:
                self._cancel(run.id, reason="failed", failure=error)
            except BaseException:  # noqa: BLE001 - the last resort below still ends the run
                pass
            if not run.handle.done:
                self._abandon(run, error)

    def _abandon(self, run: Run, error: str) -> None:
        """The last resort when even failing a run raised: record it failed and release its handle."""
        self._runs.pop(run.id, None)
        now = time.time()
        records: tuple[Callable[[], object], ...] = (
            lambda: self._emit(RunFinished(run.id, RunStatus.FAILED, now - run.started, {}, now)),
            lambda: self.store.abandon_run(run.id, error),
        )
        for record in records:
            try:
                record()
            except BaseException:  # noqa: BLE001 - the handle is released whatever happens
                pass
        try:
            self._release_held()
        except BaseException:  # noqa: BLE001 - the handle is released whatever happens
            pass
        run.handle._finish(RunStatus.FAILED)

    def _finish(
        self,
        run: Run,
        name: str,
        status: StepStatus,
        *,
        reason: str = "",
        error: str | None = None,
        traceback: str | None = None,
        duration: float = 0.0,
        preview_text: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        state = run.states[name]
        if state.status in FINAL:
            return
        state.status = status
        state.error = error
        state.preview = preview_text
        if reason:
            state.reason = reason
        if self._parked:
            self._release_parked(run, name)
        if name not in run.inside and (state.parent is None or state.parent not in run.inside):
            return
        output = state.output
        self._emit(
            StepFinished(
                run.id,
                name,
                status,
                state.attempts,
                duration,
                state.reason,
                error,
                traceback,
                state.fingerprint,
                output.hash if output else None,
                preview_text,
                dict(metrics) if metrics else {},
                time.time(),
            )
        )
        if state.parent is not None:
            parent = run.states[state.parent]
            parent.pending -= 1
            if parent.pending == 0 and parent.status not in FINAL:
                self._finish_fan_out(run, state.parent)
            return
        run.remaining -= 1
        for child in run.graph.nodes[name].downstream:
            if child in run.inside:
                waiting = run.states[child]
                waiting.pending -= 1
                if waiting.pending == 0 and waiting.status == StepStatus.PENDING:
                    waiting.status = READY
                    run.make_ready(child)
        if run.remaining <= 0:
            self._maybe_finish(run)

    def _finish_fan_out(self, run: Run, name: str) -> None:
        state = run.states[name]
        instances = [run.states[i] for i in state.instances or []]
        failed = [s for s in instances if s.status == StepStatus.FAILED]
        if failed:
            self._finish(
                run,
                name,
                StepStatus.FAILED,
                error=f"{len(failed)} of {len(instances)} items failed: {failed[0].error}",
            )
            return
        if any(s.status == StepStatus.CANCELLED for s in instances):
            self._finish(run, name, StepStatus.CANCELLED, reason="stopped")
            return
        parts = tuple(s.output or Output(NONE_OUTPUT_HASH) for s in instances)
        digest = content_hash("".join(p.hash for p in parts).encode())
        state.output = Output(digest, parts=parts)
        status = (
            StepStatus.CACHED
            if instances and all(s.status == StepStatus.CACHED for s in instances)
            else StepStatus.SUCCEEDED
        )
        ran = sum(1 for s in instances if s.status == StepStatus.SUCCEEDED)
        self._finish(
            run, name, status, reason=f"{len(instances)} items: {ran} ran, {len(instances) - ran} cached"
        )

    def _maybe_finish(self, run: Run) -> None:
        if run.remaining > 0 or run.id not in self._runs:
            return
        statuses = [run.states[n].status for n in run.scope]
        if run.failure is not None:
            status = RunStatus.FAILED
        elif run.cancelled or StepStatus.CANCELLED in statuses:
            status = RunStatus.CANCELLED
        elif StepStatus.FAILED in statuses:
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        counts: dict[str, int] = {}
        for value in statuses:
            counts[value] = counts.get(value, 0) + 1
        del self._runs[run.id]
        if self._parked:
            self._release_parked(run)
        now = time.time()
        outputs = flow_outputs.collect(run.request.loaded, run.states, partial(plain_value, self.store))
        kept = self._hits_kept_for(run, executed=StepStatus.SUCCEEDED in counts)
        if kept is not None:
            self._recorder.keep_hits(run.id, run.request.loaded.name, kept)
        self._emit(RunFinished(run.id, status, now - run.started, counts, now, outputs))
        self._release_held()
        run.handle._finish(status)

    def _hits_kept_for(self, run: Run, *, executed: bool) -> KeptHits | None:
        """What the store is to keep of the cache entries this run found (`runner.store.last_hits`),
        or None: nothing.

        - A run that executed nothing and found only entries the row kept for an earlier run holds:
          that row, carried over as it is (a fully cached re-run).
        - An engine's first run of the flow, which read the last run's entries with the store's
          count of changes: the entries it found, kept if nothing was counted since.
        - Otherwise nothing: a later run of a long-lived engine (`--watch`, the TUI) took results it
          remembered, and gathering the entries from its step rows would cost its end ~3 µs a step.
          The next process reads them from the step rows, once, and keeps its own."""
        flow = run.request.loaded.name
        found = {s.fingerprint for s in run.states.values() if s.status in OK and s.fingerprint}
        kept_run, kept = self._kept_hits.get(flow, (None, frozenset()))
        if kept_run is not None and not executed and found <= kept:
            self._kept_hits[flow] = (run.id, kept)
            return KeptHits(kept_run)
        if run.found is not None:
            self._kept_hits[flow] = (run.id, frozenset(found))
            return KeptHits(None, run.found, run.generation)
        return None

    def _cancel(
        self,
        run_id: int | None,
        reason: str = "stopped",
        keep_for: Run | None = None,
        *,
        failure: str | None = None,
    ) -> None:
        """Stop runs. With `keep_for` (the run superseding this one), a running execution of a step that
        run has not decided yet is parked instead of killed: the step's upstream may be re-running and
        return the same output, and then the new run joins it by fingerprint. With `failure` (an
        internal error), unfinished steps and the run end `failed` with that error."""
        runs = (
            list(self._runs.values())
            if run_id is None
            else [r for r in self._runs.values() if r.id == run_id]
        )
        for run in runs:
            run.cancelled = True
            run.failure = run.failure or failure
            run.ready.clear()
            for probe in [p for p in self._probes.values() if p.run is run]:
                self._drop_probe(probe)
            for execution in list(self._executions.values()) + list(self._queue):
                before = len(execution.waiters)
                execution.waiters = [(r, n) for r, n in execution.waiters if r is not run]
                if before and not execution.waiters:
                    if keep_for is not None and execution.submitted and self._undecided(keep_for, execution):
                        self._parked[execution.key] = keep_for.id
                    else:
                        self._kill(execution)
            for name in [*run.scope, *(i for n in run.scope for i in run.states[n].instances or [])]:
                if run.states[name].status not in FINAL:
                    if failure is not None:
                        self._finish(run, name, StepStatus.FAILED, error=failure)
                    else:
                        self._finish(
                            run, name, StepStatus.CANCELLED, reason=reason, error=f"the run was {reason}"
                        )

    @staticmethod
    def _undecided(run: Run, execution: Execution) -> bool:
        state = run.states.get(execution.task.step)
        return state is None or state.status in (StepStatus.PENDING, READY, ASKING)

    def _kill(self, execution: Execution) -> None:
        self._parked.pop(execution.key, None)
        if execution.submitted:
            self.executor.cancel(execution.task.id)
            self._busy -= 1
            execution.submitted = False
        if execution.job is not None:
            self._kill_job(execution)
        self._by_task.pop(execution.task.id, None)
        self._drop(execution)

    def _drop(self, execution: Execution) -> None:
        self._by_task.pop(execution.task.id, None)
        if self._executions.get(execution.key) is execution:
            del self._executions[execution.key]
        self._claims.release(execution.key)

    def _release_parked(self, run: Run, name: str | None = None) -> None:
        """Kill parked executions `run` no longer needs: of step `name` (now decided), or all of them."""
        for key, owner in list(self._parked.items()):
            execution = self._executions.get(key)
            if execution is None or execution.waiters:
                self._parked.pop(key, None)
            elif owner == run.id and (name is None or execution.task.step == name):
                self._kill(execution)

    def publish(self, event: Event) -> None:
        """Send an event that did not come from a run (a reload, a load error) to every subscriber."""
        with self._lock:
            self._emit(event)

    def _emit(self, event: Event) -> None:
        held = self._held
        if held is not None:
            held.append(event)
            return
        self._deliver(event)

    def _release_held(self) -> None:
        """Deliver the events held so far, in order (before a run's handle is released, or a caller
        that waits on the scheduler is woken: what it waits for must have been recorded and seen)."""
        held = self._held
        if not held:
            return
        index = 0
        while index < len(held):  # a subscriber's `publish` meanwhile is held too, and follows in order
            self._deliver(held[index])
            index += 1
        held.clear()

    def _deliver(self, event: Event) -> None:
        self._recorder(event)
        if isinstance(event, RunFinished):
            try:
                self.store.flush()
            except FlowError as exc:
                print(f"flow: {exc}", file=sys.stderr)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception as exc:
                print(f"flow: a subscriber failed on {event.kind}: {exc!r}", file=sys.stderr)
