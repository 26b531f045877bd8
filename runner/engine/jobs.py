"""Provides `Jobs`: how the scheduler drives a job step (`dsl.jobs`) — start, poll with backoff, result,
kill — as a series of short tasks of one execution, holding no worker between polls.

A job step's execution runs one call at a time through the executor: `start` (its result is the
handle, never stored as the step's output), then `status` calls spaced by a growing interval (the
execution waits on `retry_at` like a retry does, so the slot is free meanwhile), then `result`, whose
output is the step's, persisted and cached like any step's. Each call is bounded by the job's
`call_timeout`; the job as a whole by the step's `timeout`, from `start`.

Why tasks through the executor rather than a poller thread in the runner: `status` is user code, and
user code runs where steps run (isolation, logs, redaction, the flow's imports) — a poll is one warm
worker round trip. `kill` is the exception: it must run when the executor cannot be relied on (the run
is stopping, the engine closing, every slot busy), so it runs in a process of its own
(`runner.executors.oneshot`), in a thread; `Engine.close` waits for those threads, so a stopped run's
job is killed before the process exits.

The handle is stored (committed) as soon as `start` returns (`runner.store.control`): `flow resume` of
a run whose runner died finds the job still `running` and polls it again instead of starting it twice,
if the step's fingerprint is the same (otherwise the old job is killed and a new one started).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import sys
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsl.jobs import HANDLE, PHASE, JobOptions
from runner.engine.finishing import Finishing
from runner.engine.model import Execution, JobState, Run
from runner.events import JobUpdated
from runner.executors.base import InputRef, Task, TaskResult
from runner.executors.oneshot import run_once

BACKOFF = 1.5
"""Each wait between two `status` calls is this much longer than the one before (up to `max_poll`)."""
KILL_WAIT_SLACK_S = 5.0
"""`Engine.close` waits for a kill this long beyond the kill's own `call_timeout`."""


def _value(value: Any) -> InputRef:
    data = pickle.dumps(value, protocol=5)
    return InputRef(hash=hashlib.sha256(data).hexdigest(), data=data)


class Jobs(Finishing):
    """Job steps' executions (see the module docstring and `runner.engine.state`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._job_kills: list[threading.Thread] = []

    @abstractmethod
    def _execution_outcome(self, execution: Execution, result: TaskResult) -> None:
        """Retry, persist and finish an execution's result (`runner.engine.executing`)."""

    # ----- starting -----------------------------------------------------------------------------

    def _job_begin(self, run: Run, name: str, execution: Execution, timeout: float | None) -> None:
        """Make a new execution of a job step call `start` (or, resuming a run whose job is still in
        flight with the same fingerprint, poll that job)."""
        step = run.graph.nodes[run.states[name].parent or name].step
        options: JobOptions = step.job
        task = dataclasses.replace(
            execution.task,
            kwargs={**execution.task.kwargs, PHASE: _value("start")},
            timeout=options.call_timeout,
        )
        execution.task = task
        execution.job = JobState(start_task=task, interval=options.poll, timeout=timeout)
        resumed = run.request.resume_of
        if resumed is None:
            return
        found = self.store.job_in_flight(resumed, name)
        if found is None:
            return
        if found.fingerprint != execution.key:
            self._kill_in_background(
                self._job_task(execution, "kill", found.handle),
                options.call_timeout,
                lambda error: self._job_recorded(
                    [(resumed, name)], found.handle_text, error, "its code changed since; a new job starts"
                ),
            )
            return
        job = execution.job
        job.handle, job.handle_text, job.polls, job.phase = (
            found.handle,
            found.handle_text,
            found.polls,
            "status",
        )
        job.began = time.monotonic() - max(0.0, time.time() - found.started_at)
        if timeout is not None:
            job.deadline = time.monotonic() + max(0.0, timeout - (time.time() - found.started_at))
        execution.task = self._job_task(execution, "status", found.handle)
        self.store.record_job(run.id, name, execution.key, found.handle, found.handle_text, "running")
        job.rows = [(run.id, name)]
        self.store.update_job(resumed, name, "adopted", detail=f"re-attached by run #{run.id}")
        self._job_event(execution, "running", f"re-attached to the job run #{resumed} started")

    def _job_announce(self, execution: Execution) -> bool:
        """Whether dispatching this execution's task starts the step (StepStarted): its first call of
        an attempt, not each poll."""
        job = execution.job
        if job is None:
            return True
        first, job.announced = not job.announced, True
        return first

    # ----- a call ended ------------------------------------------------------------------------

    def _job_task_done(self, execution: Execution, result: TaskResult) -> TaskResult | None:
        """Take a job call's result: None when the job goes on (a poll is scheduled, or a kill is
        under way), else the result for the step (the output of `result`, or a failure)."""
        job = execution.job
        assert job is not None
        if job.phase == "start":
            if not result.ok:
                return self._job_restart(execution, result)
            self._job_started(execution, result)
            return None
        if job.phase == "result":
            self._job_update(execution, "succeeded" if result.ok else "failed", result.error or "")
            if not result.ok:
                result = dataclasses.replace(
                    result, error=f"the job succeeded but result() failed: {result.error}"
                )
                return self._job_restart(execution, result)
            return dataclasses.replace(result, duration_s=time.monotonic() - job.began)
        if not result.ok:
            self._job_fail(execution, f"status() failed: {result.error}")
            return None
        answer = pickle.loads(result.data) if result.data is not None else None
        job.polls += 1
        if answer == "succeeded":
            self._job_update(execution, "succeeded")
            job.phase = "result"
            execution.task = self._job_task(execution, "result", job.handle)
            self._queue.append(execution)
            return None
        if answer == "failed":
            self._job_update(execution, "failed")
            failure = TaskResult(
                ok=False, error=f"the job failed (its status() said 'failed'; handle {job.handle_text})"
            )
            return self._job_restart(execution, failure)
        now = time.monotonic()
        if job.deadline is not None and now >= job.deadline:
            self._job_fail(execution, f"timed out after {job.timeout:g}s; the job was killed")
            return None
        self._job_update(execution, "running")
        execution.task = self._job_task(execution, "status", job.handle)
        execution.retry_at = now + job.interval
        if job.deadline is not None:
            execution.retry_at = min(execution.retry_at, job.deadline)
        step = self._job_step(execution)
        ceiling = step.job.max_poll if step is not None and step.job is not None else job.interval
        job.interval = min(job.interval * BACKOFF, ceiling)
        return None

    def _job_started(self, execution: Execution, result: TaskResult) -> None:
        """`start` returned the handle: store it (committed), then poll after the first interval."""
        job = execution.job
        assert job is not None
        handle = result.data if result.data is not None else Path(str(result.path)).read_bytes()
        job.handle, job.handle_text, job.phase = handle, result.preview or "", "status"
        job.began = execution.started
        if job.timeout is not None:
            job.deadline = execution.started + job.timeout
        job.rows = [(run.id, name) for run, name in execution.waiters]
        for run_id, name in job.rows:
            self.store.record_job(run_id, name, execution.key, handle, job.handle_text, "running")
        self._job_event(execution, "running", "started")
        execution.task = self._job_task(execution, "status", handle)
        execution.retry_at = time.monotonic() + job.interval

    def _job_restart(self, execution: Execution, failure: TaskResult) -> TaskResult:
        """The job failed: the step fails with `failure`, or a retry starts it over from `start`."""
        job = execution.job
        assert job is not None
        task = execution.task
        execution.task = dataclasses.replace(job.start_task, id=task.id, attempt=task.attempt)
        job.phase, job.handle, job.handle_text, job.polls, job.announced = "start", None, "", 0, False
        job.rows = []
        job.deadline = None
        step = self._job_step(execution)
        if step is not None and step.job is not None:
            job.interval = step.job.poll
        return failure

    # ----- killing -----------------------------------------------------------------------------

    def _job_fail(self, execution: Execution, message: str) -> None:
        """Kill the job (in the background), then fail the step with `message` (and the kill's error)."""
        job = execution.job
        assert job is not None and job.handle is not None
        job.killing = True
        runs = list({run.id: run for run, _ in execution.waiters}.values())
        text, rows = job.handle_text, list(job.rows)

        def killed(error: str | None) -> None:
            self._job_recorded(rows, text, error, message)
            self._command(lambda: self._guarded(runs, self._job_killed, execution, message, error))

        self._kill_in_background(
            self._job_task(execution, "kill", job.handle), self._call_timeout(execution), killed
        )

    def _job_killed(self, execution: Execution, message: str, error: str | None) -> None:
        job = execution.job
        assert job is not None
        job.killing = False
        if not execution.waiters:
            return
        if error is not None:
            message += (
                f"; kill() failed too ({error}): the job may still be running, handle {job.handle_text}"
            )
        self._execution_outcome(execution, self._job_restart(execution, TaskResult(ok=False, error=message)))

    def _kill_job(self, execution: Execution) -> None:
        """The execution is being killed (its run stopped): kill its job too, if it has one running."""
        job = execution.job
        if job is None or job.handle is None or job.killing or job.phase == "result":
            return
        job.killing = True
        text, rows = job.handle_text, list(job.rows)
        self._kill_in_background(
            self._job_task(execution, "kill", job.handle),
            self._call_timeout(execution),
            lambda error: self._job_recorded(rows, text, error, "the run was stopped"),
        )

    def _kill_in_background(self, task: Task, timeout: float, done: Callable[[str | None], None]) -> None:
        def kill() -> None:
            result = run_once(task, timeout)
            try:
                done(None if result.ok else result.error or "kill() failed")
            except Exception as exc:  # noqa: BLE001 - reported: a kill's bookkeeping must not die silently
                print(f"flow: after killing a job: {exc!r}", file=sys.stderr)

        thread = threading.Thread(target=kill, name=f"flow-kill-{task.step}", daemon=True)
        self._job_kills.append(thread)
        thread.start()

    def _job_recorded(self, rows: list[tuple[int, str]], text: str, error: str | None, why: str) -> None:
        """A kill ended (any thread): record it for each (run, step) that holds the job; tell the
        subscribers."""
        status = "killed" if error is None else "kill failed"
        detail = why if error is None else f"{why}; kill() failed: {error}"
        for run_id, name in rows:
            self.store.update_job(run_id, name, status, detail=detail)
            self.publish(JobUpdated(run_id, name, status, text, 0, detail, time.time()))

    def _wait_job_kills(self) -> None:
        """Wait for the kills under way (`Engine.close`: no job is left running unseen)."""
        for thread in self._job_kills:
            thread.join()
        self._job_kills.clear()

    # ----- helpers -----------------------------------------------------------------------------

    def _job_task(self, execution: Execution, phase: str, handle: bytes | None) -> Task:
        """A task calling the job's `phase` method on `handle` (registered under its new id)."""
        job = execution.job
        assert job is not None and handle is not None
        base = job.start_task
        kwargs = {
            PHASE: _value(phase),
            HANDLE: InputRef(hash=hashlib.sha256(handle).hexdigest(), data=handle),
        }
        task = dataclasses.replace(
            base, id=f"t{next(self._task_ids)}", kwargs=kwargs, attempt=execution.task.attempt
        )
        self._by_task[task.id] = execution
        return task

    def _job_step_name(self, execution: Execution) -> str:
        run, name = execution.waiters[0]
        return run.states[name].parent or name

    def _job_step(self, execution: Execution) -> Any:
        if not execution.waiters:
            return None
        run, _ = execution.waiters[0]
        return run.graph.nodes[self._job_step_name(execution)].step

    def _call_timeout(self, execution: Execution) -> float:
        return float(execution.job.start_task.timeout or 60.0) if execution.job is not None else 60.0

    def _job_update(self, execution: Execution, status: str, detail: str = "") -> None:
        job = execution.job
        assert job is not None
        for run, name in execution.waiters:
            self.store.update_job(run.id, name, status, polls=job.polls, detail=detail)
        self._job_event(execution, status, detail)

    def _job_event(self, execution: Execution, status: str, detail: str) -> None:
        job = execution.job
        assert job is not None
        now = time.time()
        for run, name in execution.waiters:
            self._emit(JobUpdated(run.id, name, status, job.handle_text, job.polls, detail, now))
