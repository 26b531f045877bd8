"""Provides how the Dask executor words and stores what came back: `failure` (a future that raised),
`died` (a worker that left), `store_large` (an output for the artifact store) and `topic_truncator`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from runner.artifacts import INLINE_MAX, artifact_path, file_stamp, write_file_atomic
from runner.executors.base import Task, TaskResult


def store_large(task: Task, result: TaskResult) -> TaskResult:
    """Write an output over `INLINE_MAX` into the artifact store, as a local worker would have."""
    if not result.ok or result.data is None or len(result.data) <= INLINE_MAX or not task.artifact_dir:
        return result
    assert result.hash is not None
    path = artifact_path(task.artifact_dir, result.hash)
    stamp = None
    try:
        if not path.exists():
            write_file_atomic(path, result.data)
            stamp = file_stamp(os.stat(path))  # the bytes the worker hashed: no reader need hash them
    except OSError as exc:
        return TaskResult(
            ok=False,
            error=f"the output cannot be written to the artifact store: {exc}",
            metrics=result.metrics,
            duration_s=result.duration_s,
            where=result.where,
        )
    return dataclasses.replace(result, data=None, path=str(path), stamp=stamp)


def died(address: str | None, detail: str) -> str:
    """The error of a step whose worker left the cluster (or whose future Dask started twice)."""
    return f"the Dask worker running this step died ({address or 'unknown worker'}: {detail})"


def failure(exc: BaseException) -> TaskResult:
    """A future that raised instead of returning a result: why, in the user's terms."""
    kind = type(exc).__name__
    if kind == "KilledWorker":
        return TaskResult(ok=False, error=f"the Dask worker running this step died: {kind}: {exc}")
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in ("runner", "dsl"):
        return TaskResult(
            ok=False,
            error=f"flow is not installed on the Dask workers ({exc}); install the same flowdsl there",
        )
    return TaskResult(ok=False, error=f"the Dask task failed: {kind}: {exc}")


def topic_truncator() -> Callable[..., None]:
    """A function for `run_on_scheduler` that forgets a topic's stored events.

    The scheduler keeps the last `distributed.scheduler.events-log-length` (100,000) events of every
    topic; ours are log lines and results nobody reads again once delivered. Defined inside a function
    so cloudpickle ships it by value: the scheduler need not have flow installed.
    """

    def truncate(topic: str, dask_scheduler: Any = None) -> None:
        broker = getattr(dask_scheduler, "_broker", None)
        if broker is not None:
            broker.truncate(topic)

    return truncate
