"""Provides `Executing`: executions on the executor — dispatching queued tasks into free slots, timeouts
and retries, a task's result (persisted, then the waiting steps finished), and splitting a code bundle
that failed to load where it ran."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

from runner.artifacts import intact_inline, trust
from runner.engine.decide import Reusable
from runner.engine.jobs import Jobs
from runner.engine.model import Execution, Output, Run
from runner.events import StepRetrying, StepStarted
from runner.executors.base import TaskResult
from runner.fingerprint.declared import declared_inputs
from runner.status import StepStatus

START_GRACE_S = 60.0
"""How long a worker may take to start a task (interpreter start, imports) before its timeout counts."""


class Executing(Jobs):
    """Running tasks and taking their results (see `runner.engine.state`)."""

    def _listeners(self, task_id: str) -> list[tuple[Run, str]]:
        """(run, step) pairs a task's log lines belong to."""
        execution = self._by_task.get(task_id)
        if execution is not None:
            return execution.waiters
        probe = self._probes.get(task_id)
        return [(probe.run, probe.name)] if probe is not None else []

    def _task_started(self, task_id: str) -> None:
        """The task's function starts now: its timeout counts from here (see `START_GRACE_S`)."""
        execution = self._by_task.get(task_id)
        if execution is not None:
            timeout = execution.task.timeout
            if execution.submitted and timeout:
                execution.deadline = time.monotonic() + timeout
            return
        probe = self._probes.get(task_id)
        if probe is not None and probe.submitted and probe.task.timeout:
            probe.deadline = time.monotonic() + probe.task.timeout

    def _dispatch(self) -> None:
        while (self._queue or self._probe_queue) and self._busy >= self.executor.slots and self._parked:
            parked = self._executions.get(next(iter(self._parked)))
            if parked is None or parked.waiters:
                self._parked.pop(next(iter(self._parked)))
            else:
                self._kill(parked)  # a parked execution never holds a slot that wanted work needs
        while self._probe_queue and self._busy < self.executor.slots:
            self._submit_probe(self._probe_queue.popleft())
        while self._queue and self._busy < self.executor.slots:
            execution = self._queue.popleft()
            if not execution.waiters:
                self._drop(execution)
                continue
            self._busy += 1
            self._submitted(execution)
            self.executor.submit(execution.task)
            self._chain(execution)

    def _submitted(self, execution: Execution) -> None:
        """The execution's task goes to the executor now (or went, chained to the one before it): its
        clock starts, and its steps are said started."""
        execution.submitted = True
        execution.started = time.monotonic()
        timeout = execution.task.timeout
        if timeout and getattr(self.executor, "reports_start", False):
            timeout += START_GRACE_S  # tightened to `timeout` when the worker says it started
        execution.deadline = execution.started + timeout if timeout else None
        for run, name in execution.waiters if self._job_announce(execution) else ():
            state = run.states[name]
            state.attempts = execution.task.attempt
            self._emit(
                StepStarted(run.id, name, state.attempts, state.reason, state.fingerprint or "", time.time())
            )

    def _timers(self) -> None:
        now = time.monotonic()
        self._stops.start_if_due(now)
        for probe in list(self._probes.values()):
            if probe.deadline is not None and now >= probe.deadline and probe.submitted:
                self.executor.cancel(probe.task.id)
                error = f"timed out after {probe.task.timeout:g}s; its process was killed"
                self._task_done(probe.task.id, TaskResult(ok=False, error=error))
        for execution in self._timed_executions():
            if execution.deadline is not None and now >= execution.deadline and execution.submitted:
                self.executor.cancel(execution.task.id)
                timeout = execution.task.timeout
                self._task_done(
                    execution.task.id,
                    TaskResult(
                        ok=False, error=f"timed out after {timeout:g}s; the step's process was killed"
                    ),
                )
            elif execution.retry_at is not None and now >= execution.retry_at:
                execution.retry_at = None
                self._queue.append(execution)

    def _timed_executions(self) -> list[Execution]:
        """The executions of `_executions` that wait on a moment. An entry of `_timed` no longer in
        `_executions` is dropped: an execution enters `_executions` only when it is created, so it
        cannot come back (and setting a moment on it again would re-index it anyway)."""
        live = []
        for execution in list(self._timed):
            if self._executions.get(execution.key) is execution:
                live.append(execution)
            else:
                del self._timed[execution]
        return live

    def _task_done(self, task_id: str, result: TaskResult) -> None:
        probe = self._probes.pop(task_id, None)
        if probe is not None:
            self._guarded([probe.run], self._probe_done, probe, result)
            return
        execution = self._by_task.pop(task_id, None)
        if execution is None:
            return
        runs = list({run.id: run for run, _ in execution.waiters}.values())
        self._guarded(runs, self._execution_done, execution, result)

    def _execution_done(self, execution: Execution, result: TaskResult) -> None:
        self._busy -= 1
        execution.submitted = False
        execution.deadline = None
        if self._unbundle(execution, result):
            return
        if execution.job is not None:
            outcome = self._job_task_done(execution, result)
            if outcome is None:
                return  # the job goes on: a poll is scheduled, or a kill is under way
            result = outcome
        self._execution_outcome(execution, result)

    def _execution_outcome(self, execution: Execution, result: TaskResult) -> None:
        """A result for the step: retry, or persist the output and finish the steps waiting for it."""
        task = execution.task
        if not result.ok and task.attempt <= execution.retries and execution.waiters:
            delay = execution.retry_delay
            for run, name in execution.waiters:
                self._emit(StepRetrying(run.id, name, task.attempt, result.error or "", delay, time.time()))
            execution.task = dataclasses.replace(
                task, id=f"t{next(self._task_ids)}", attempt=task.attempt + 1
            )
            self._by_task[execution.task.id] = execution
            execution.retry_at = time.monotonic() + delay
            return
        moved = self._moved(execution, result)
        if result.ok:
            assert result.hash is not None
            output = Output(result.hash, data=result.data, path=result.path)
            if result.path is not None and result.stamp is not None:
                trust(result.path, result.hash, result.stamp)
            self._persist_output(result, task.step, task.run_id, execution, cacheable=moved is None)
        self._drop(execution)  # after the output's writes: a lease is released only once they are queued
        for run, name in execution.waiters:
            state = run.states[name]
            state.attempts = task.attempt
            if moved is not None:
                state.fingerprint = f"untrusted-{uuid.uuid4().hex}"  # never reused, not even by resume
                state.reason = f"{state.reason}; not cached: {moved}"
            if (
                state.detail is not None
                and state.fingerprint
                and not state.fingerprint.startswith("untrusted")
            ):
                self._recorder.record_detail(run.id, name, state.detail, result.where)
                self._index.remember_detail(run, name, state.detail)
            if result.ok:
                state.output = output
                self._finish(
                    run,
                    name,
                    StepStatus.SUCCEEDED,
                    reason=state.reason,
                    duration=result.duration_s,
                    preview_text=result.preview,
                    metrics=result.metrics,
                )
            else:
                self._finish(
                    run,
                    name,
                    StepStatus.FAILED,
                    reason=state.reason,
                    error=result.error,
                    traceback=result.traceback,
                    duration=result.duration_s,
                    metrics=result.metrics,
                )

    def _unbundle(self, execution: Execution, result: TaskResult) -> bool:
        """A bundle of steps' code failed to load where it ran: ship this step's code alone and retry.

        One step's unpicklable global must fail only that step, not the others pickled beside it.
        """
        task = execution.task
        loaded = execution.loaded
        if (
            result.ok
            or loaded is None
            or not (result.error or "").startswith("cannot load the step's code")
            or task.code_key.endswith(f":{task.entry}")
        ):
            return False
        self._bundles.mark_broken(task.code_key)
        bundle = self._bundles.code(loaded, task.entry)
        execution.task = dataclasses.replace(
            task,
            id=f"t{next(self._task_ids)}",
            code_key=bundle.key,
            code=bundle.code,
            entry=bundle.entry,
            modules=bundle.modules,
        )
        self._by_task[execution.task.id] = execution
        self._queue.appendleft(execution)
        return True

    def _moved(self, execution: Execution, result: TaskResult) -> str | None:
        """Why a finished execution's result must not be stored under its fingerprint: what it read
        moved while it ran (a module it imported, a declared input file), else None."""
        if not result.ok:
            return None
        if result.stale_code:
            return f"{Path(result.stale_code[0]).name} was edited while the step ran"
        for run, name in execution.waiters[:1]:
            state = run.states[name]
            before = (state.detail or {}).get("declared")
            if before:
                step = run.graph.nodes[state.parent or name].step
                now = declared_inputs(step, run.request.loaded.root)
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                if changed:
                    return f"{changed[0].partition(':')[2]} changed while the step ran"
        return None

    def _persist_output(
        self, result: TaskResult, step: str, run_id: int, execution: Execution, *, cacheable: bool = True
    ) -> None:
        digest, data, size = result.hash, result.data, result.size
        fingerprint = execution.key
        cacheable = (
            cacheable
            and not fingerprint.startswith("untrusted")
            and any(
                run.graph.nodes[run.states[name].parent or name].step.cache for run, name in execution.waiters
            )
        )
        preview_text = result.preview
        assert digest is not None
        self.store.record_output(
            digest,
            size,
            data,
            cache_as=fingerprint if cacheable else None,
            step=step,
            run_id=run_id,
            preview=preview_text,
            stamp=result.stamp,
        )
        if cacheable:
            self._index.remember(fingerprint, Reusable(digest, run_id, preview_text), result.path, step)
            keeping = [run.found for run, _ in execution.waiters if run.found is not None]
            if keeping:  # runs that keep their entries for the next process (`Run.found`)
                kept = (digest, run_id, preview_text, intact_inline(data, digest))
                for found in keeping:
                    found[fingerprint] = kept
