"""Provides `FakeExecutor`: an in-process test double of the executor interface, for engine tests.

Like httpx's `MockTransport`, it is shipped beside the real executors so the engine's logic (retries,
timeouts, cancelling, joining, fan-out) can be tested without worker processes. A test decides how each
task ends with `answer(task)`: a `TaskResult` (or a value, wrapped by `ok`) ends it at the scheduler's
next `events()` call; `None` leaves it running until the test calls `finish` (from any thread) or the
engine cancels it. The default answer runs the task's code in this process (as `InlineExecutor`
does), so probes and plain steps work unchanged.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from runner.artifacts import dump_output, preview
from runner.executors.base import Task, TaskDone, TaskEvent, TaskResult
from runner.executors.execute import execute, resolve_code

Answer = Callable[[Task], TaskResult | None]


def ok(value: Any) -> TaskResult:
    """A successful result whose output is `value` (stored inline, hashed as a worker would)."""
    digest, data, path, size = dump_output(value, None)
    return TaskResult(ok=True, hash=digest, data=data, path=path, size=size, preview=preview(value))


def failed(error: str) -> TaskResult:
    """A failed result with `error`."""
    return TaskResult(ok=False, error=error)


class FakeExecutor:
    """Runs no process: `answer` decides each task's end (see the module docstring).

    Attributes:
        submitted: every task submitted, in order (retries are new tasks with `attempt` + 1).
        cancelled: the ids of the tasks the engine cancelled.
        running: tasks submitted and neither finished nor cancelled.
    """

    name = "fake"
    reports_start = False

    def __init__(self, answer: Answer | None = None, *, slots: int = 4) -> None:
        self._answer = answer or self.run
        self._slots = slots
        self._codes: dict[str, Any] = {}
        self._new: deque[Task] = deque()
        self._done: deque[TaskEvent] = deque()
        self._wake = threading.Condition()
        self.submitted: list[Task] = []
        self.cancelled: list[str] = []
        self.running: dict[str, Task] = {}

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, task: Task) -> None:
        self.submitted.append(task)
        self.running[task.id] = task
        self._new.append(task)

    def cancel(self, task_id: str) -> None:
        self.cancelled.append(task_id)
        self.running.pop(task_id, None)

    def finish(self, task_id: str, result: TaskResult) -> None:
        """End a running task with `result` (thread-safe; ignored if it was cancelled meanwhile)."""
        with self._wake:
            self._done.append(TaskDone(task_id, result))
            self._wake.notify_all()

    def wakeup(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def events(self, timeout: float | None) -> list[TaskEvent]:
        while self._new:
            task = self._new.popleft()
            result = self._answer(task)
            if result is not None:
                self._done.append(TaskDone(task.id, result))
        with self._wake:
            if not self._done:
                self._wake.wait(timeout)
            events = [e for e in self._done if not isinstance(e, TaskDone) or e.task_id in self.running]
            self._done.clear()
        for event in events:
            if isinstance(event, TaskDone):
                self.running.pop(event.task_id, None)
        return events

    def run(self, task: Task) -> TaskResult:
        """Run the task's code here, now (the default answer)."""
        try:
            fn = resolve_code(task, self._codes)
        except Exception as exc:
            return failed(f"cannot load the step's code: {type(exc).__name__}: {exc}")
        return execute(task, fn, lambda stream, line, ts: None)

    def close(self) -> None:
        self._new.clear()
        self.running.clear()
