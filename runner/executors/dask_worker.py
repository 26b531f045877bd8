"""Provides the Dask worker's half of `DaskExecutor`: the functions its futures run, `run_on_worker`
(one task) and `run_lane` (task after task, fed through a queue on the scheduler).

Both run a task the same way: in a warm `runner.executors.worker` process driven by a per-thread
`LocalExecutor` (a Python function in a Dask worker thread cannot be interrupted; a process can be
killed), polling the Dask task's own state so a cancelled future kills the step's process group
within `POLL_S`. Log lines go back in batches through the scheduler's event log.

Why lanes: a Dask future costs a client -> scheduler -> worker -> scheduler -> client round trip
with the scheduler's task transitions on both ends, and every hop waits for its stream's batching
interval (10 ms from a client): several milliseconds per step. A lane is one future that keeps its
worker thread and takes the runner's next task from its own `distributed.Queue`, answering on a
shared results queue: a step then costs two queue messages, which travel as RPC replies, not as
batched stream messages; the lane sends its answer with its wait for the next task, in one request
(`exchange_installer`). The lane runs one task at a time, exactly like a future per task would.

`distributed` is imported inside the functions only: the runner imports this module without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner.artifacts import INLINE_MAX
from runner.executors.base import InputRef, Task, TaskDone, TaskLog, TaskLogs, TaskResult
from runner.executors.execute import printable

if TYPE_CHECKING:
    from dask.typing import Key

POLL_S = 0.1
"""How often a task on a worker checks whether it was cancelled (the bound on stop latency)."""

LOG_FLUSH_S = 0.05
LOG_BATCH_LINES = 1000

EVENT_RESULT_MAX = 64 * 1024
"""A single-task future's result up to this many pickled bytes travels as an event (the scheduler keeps
events for a while); a larger one as the future's value."""

LANE_RESULT_MAX = INLINE_MAX
"""A lane's result up to this many pickled bytes travels on the results queue (gone from the scheduler
once taken). A larger one ends the lane, as its future's value: the runner may have to write its output
to the artifact store, which it does off the client's event loop."""

TIMEOUT_GRACE_S = 2.0
"""A worker kills a step this long after its timeout even if the runner never cancelled it (runner gone)."""

LANE_WAIT_S = 10.0
"""How long a lane waits for its next task before it looks whether its future is still wanted.

The runner ends a lane it no longer needs with a stop message; this bounds how long a lane outlives a
runner that died without sending it (each expiry is logged as an error by the scheduler)."""

LANE_CODES = 64
"""Step code a lane keeps by `code_key`, with the modules sent with it (the runner mirrors the same
LRU to know what it may omit)."""

BLOB_MARK = "dask-blob:"

EXCHANGE_OP = "flow_lane_exchange"
"""The scheduler handler `exchange_installer` adds: a lane's answer and its wait for the next task."""

_thread_local = threading.local()


def _thread_executor() -> Any:
    """This Dask worker thread's own warm `runner.executors.worker` process (a one-slot `LocalExecutor`)."""
    executor = getattr(_thread_local, "executor", None)
    if executor is None:
        from runner.executors.local import LocalExecutor

        executor = _thread_local.executor = LocalExecutor(workers=1)
    return executor


def _restore(ref: InputRef, blobs: dict[str, bytes]) -> InputRef:
    if ref.parts is not None:
        return dataclasses.replace(ref, parts=tuple(_restore(p, blobs) for p in ref.parts))
    if ref.path is not None and ref.path.startswith(BLOB_MARK):
        return InputRef(hash=ref.hash, data=blobs[ref.path[len(BLOB_MARK) :]])
    return ref


def _cancelled(worker: Any, key: Key) -> bool:
    """True once the task is no longer wanted here: the client cancelled it, or the worker is closing.

    A closing worker (it lost the scheduler, or is being shut down) waits for its running tasks, so a
    step left running would hold it open until the step ends on its own.
    """
    state = worker.state.tasks.get(key)
    if state is None or state.state in ("cancelled", "released", "forgotten"):
        return True
    return getattr(worker.status, "name", "") in ("closing", "closed", "failed", "stopping", "stopped")


def _run(worker: Any, key: Key, task: Task, topic: str) -> tuple[TaskResult, int, bool]:
    """Run `task` in this thread's step process, publishing its log lines as they come.

    Returns:
        How the task ended (`where` = this worker), how many log batches were published, and whether
        it ran to its end (False: cancelled or timed out here, its process killed).
    """
    local = _thread_executor()
    local.submit(task)
    started = time.monotonic()
    deadline = started + task.timeout + TIMEOUT_GRACE_S if task.timeout else None
    lines: list[list[Any]] = []
    batches = 0
    flushed = started
    result: TaskResult | None = None
    try:
        while True:
            for event in local.events(POLL_S):
                # printable: msgpack fails the worker's whole connection on a lone surrogate.
                if isinstance(event, TaskLogs):
                    lines.extend([stream, printable(line), ts] for stream, line, ts in event.lines)
                elif isinstance(event, TaskLog):
                    lines.append([event.stream, printable(event.line), event.ts])
                elif isinstance(event, TaskDone) and event.task_id == task.id:
                    result = event.result
            now = time.monotonic()
            due = result is not None or now - flushed >= LOG_FLUSH_S or len(lines) >= LOG_BATCH_LINES
            while lines and due:
                batches += 1
                worker.log_event(topic, {"t": task.id, "n": batches, "lines": lines[:LOG_BATCH_LINES]})
                del lines[:LOG_BATCH_LINES]
                flushed = now
            if result is not None:
                return dataclasses.replace(result, where=worker.address), batches, True
            if _cancelled(worker, key):
                cancelled = TaskResult(ok=False, error="cancelled on the cluster", where=worker.address)
                return cancelled, batches, False
            if deadline is not None and now >= deadline:
                error = f"timed out after {task.timeout:g}s; the step's process was killed"
                return TaskResult(ok=False, error=error, where=worker.address), batches, False
    finally:
        if result is None:  # cancelled, timed out, or this function itself failed: never leave it running
            local.cancel(task.id)


def run_on_worker(task: Task, topic: str, blobs: dict[str, bytes]) -> tuple[TaskResult | None, int]:
    """The function of a future that runs one task (one with scattered inputs, or resources).

    Returns:
        The task's result, or None when it was small enough to be published as an event after the
        last log batch (on the same ordered stream: it can never overtake its logs); and how many log
        batches were published, so the runner can wait for batches still in flight.
    """
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    worker.log_event(topic, {"start": worker.address, "key": key})
    if blobs:
        task = dataclasses.replace(task, kwargs={n: _restore(r, blobs) for n, r in task.kwargs.items()})
    result, batches, _ = _run(worker, key, task, topic)
    payload = pickle.dumps(result, protocol=5)
    if len(payload) <= EVENT_RESULT_MAX:
        worker.log_event(topic, {"t": task.id, "result": payload})
        return None, batches
    return result, batches


def run_lane(
    inbox: str, results: str, topic: str, merged: bool = False
) -> tuple[str, TaskResult, int] | None:
    """The function of a lane's future: run the tasks the runner puts in queue `inbox`, one at a time.

    Each message is a pickled `Task` (its `code` left empty when this lane already had that
    `code_key`), or None: stop. A small result is put on the `results` queue with the number of log
    batches published before it (the runner holds it until those have arrived). The lane ends with a
    result it cannot put there (too large, or the task was cancelled or timed out here): that is its
    future's value, as `(task id, result, batches)`. It also ends, returning None, when its future is
    cancelled, the runner says stop, or the scheduler no longer knows the queue (the runner closed).

    `merged`: the scheduler has `EXCHANGE_OP` (`exchange_installer`), so an answer and the wait for
    the next task are one request, not two.
    """
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()
    key = worker.get_current_task()
    worker.log_event(topic, {"start": worker.address, "key": key})
    codes: OrderedDict[str, tuple[bytes, tuple[tuple[str, str, bytes], ...]]] = OrderedDict()
    answer: dict[str, Any] | None = None
    while True:
        try:
            record = sync(worker.loop, _exchange, worker.scheduler, inbox, results, answer, merged)
        except TimeoutError:  # from the wait for a task: the answer before it was put
            answer = None
            if _cancelled(worker, key):
                return None
            continue
        except Exception:  # a queue is gone: the runner closed, or dropped this lane
            return None
        answer = None
        message = record.get("value")
        if message is None or _cancelled(worker, key):
            return None
        task: Task = pickle.loads(message)
        if task.code:
            codes[task.code_key] = (task.code, task.modules)
            if len(codes) > LANE_CODES:
                codes.popitem(last=False)
        else:
            code, modules = codes[task.code_key]
            object.__setattr__(task, "code", code)
            object.__setattr__(task, "modules", modules)
        codes.move_to_end(task.code_key)
        result, batches, finished = _run(worker, key, task, topic)
        payload = pickle.dumps(result, protocol=5)
        if not finished or len(payload) > LANE_RESULT_MAX:
            return task.id, result, batches
        answer = {"t": task.id, "result": payload, "n": batches}


async def _exchange(
    scheduler: Any, inbox: str, results: str, answer: dict[str, Any] | None, merged: bool
) -> Any:
    """Put the last task's answer (if any) on the results queue and wait for the next task.

    One hand-off from the lane's thread to the worker's event loop per task, not two; and the wait is
    on the scheduler before the runner, which sends the next task as soon as it has the answer, could
    send it (waiting for the put's reply first would put a round trip on every step's path)."""
    if merged:
        exchange = getattr(scheduler, EXCHANGE_OP)
        return await exchange(inbox=inbox, results=results, answer=answer, timeout=LANE_WAIT_S)
    wait = scheduler.queue_get(name=inbox, timeout=LANE_WAIT_S)
    if answer is None:
        return await wait
    _, record = await asyncio.gather(scheduler.queue_put(name=results, data=answer), wait)
    return record


def exchange_installer() -> Callable[..., bool]:
    """A function for `run_on_scheduler` that adds the handler `EXCHANGE_OP` to the scheduler: put a
    lane's answer on the results queue, then wait on its inbox, in one request.

    Why: a step on a lane cost the worker two requests to the scheduler (the answer, the wait for the
    next task), each a message each way that the worker and the scheduler (in the runner's process,
    for a local cluster) serialise and read; one request halves that. The queues are Dask's own, so
    the runner's side does not change. Defined inside a function so cloudpickle ships it by value: the
    scheduler need not have flow installed. Returns True once the handler is there.
    """

    op = EXCHANGE_OP

    def install(dask_scheduler: Any = None) -> bool:
        queues = dask_scheduler.extensions["queues"]

        async def exchange(
            inbox: str | None = None,
            results: str | None = None,
            answer: dict[str, Any] | None = None,
            timeout: float | None = None,
        ) -> Any:
            if answer is not None:
                await queues.put(name=results, data=answer)
            return await queues.get(name=inbox, timeout=timeout)

        dask_scheduler.handlers[op] = exchange
        return True

    return install
