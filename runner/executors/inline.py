"""Provides `InlineExecutor`: runs each step in the runner's own process, for debugging with `--pdb`.

No isolation and no timeouts: a step that crashes the interpreter takes the runner with it. Logs
are captured as with worker processes.
"""

from __future__ import annotations

import pdb
import sys
import threading
from collections import deque
from typing import Any

from runner.executors.base import Task, TaskDone, TaskEvent, TaskLog, TaskResult
from runner.executors.execute import execute, resolve_code


class InlineExecutor:
    """Runs tasks one at a time in this process when the scheduler asks for events."""

    name = "inline"

    def __init__(self, *, debug: bool = False) -> None:
        self._queue: deque[Task] = deque()
        self._wake = threading.Event()
        self._debug = debug
        self._codes: dict[str, Any] = {}

    @property
    def slots(self) -> int:
        return 1

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def cancel(self, task_id: str) -> None:
        self._queue = deque(t for t in self._queue if t.id != task_id)

    def wakeup(self) -> None:
        self._wake.set()

    def events(self, timeout: float | None) -> list[TaskEvent]:
        if not self._queue:
            self._wake.wait(timeout)
            self._wake.clear()
            return []
        task = self._queue.popleft()
        events: list[TaskEvent] = []

        def emit(stream: str, line: str, ts: float) -> None:
            events.append(TaskLog(task.id, stream, line, ts))

        try:
            fn = resolve_code(task, self._codes)
        except Exception as exc:
            result = TaskResult(ok=False, error=f"cannot load the step's code: {type(exc).__name__}: {exc}")
            return [TaskDone(task.id, result)]
        try:
            result = execute(task, fn, emit, on_exception=self._post_mortem if self._debug else None)
        except KeyboardInterrupt:
            # Raised by the step itself: a Ctrl-C reaches the main thread, never the scheduler's.
            result = TaskResult(ok=False, error="the step raised KeyboardInterrupt")
        events.append(TaskDone(task.id, result))
        return events

    @staticmethod
    def _post_mortem(exc: BaseException) -> None:
        print(f"\n--pdb: {type(exc).__name__}: {exc}", file=sys.stderr)
        pdb.post_mortem(exc.__traceback__)

    def close(self) -> None:
        self._queue.clear()
