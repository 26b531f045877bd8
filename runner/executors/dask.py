"""Provides `DaskExecutor`: runs each task as a future on a Dask `distributed` cluster.

The way a flow outgrows one machine. The planner, the cache and the store do not change: tasks go to
the cluster, results come back to the runner, which stores them exactly as the local executor's.

How a task travels, and why:

- **Code and inputs by value.** `Task.code` (cloudpickled, flow-file functions and local helpers
  included) is always sent, so workers need flow installed but not the flow file. Inputs that live as
  files in the runner's artifact store are read on the runner (a remote worker cannot see that path);
  inputs over `INLINE_MAX` are `scatter`ed under a content-addressed key instead of riding in the task
  graph, so a large upstream output shared by a fan-out crosses the network once per worker.
- **A killable process per step.** A Python function running in a Dask worker thread cannot be
  interrupted, so the future's function (`run_on_worker`) drives a warm `runner.executors.worker`
  process through a per-thread `LocalExecutor`. It polls the worker's own task state: when the runner
  cancels the future (stop, timeout, a reload) the step's whole process group is killed within ~0.1 s,
  and a step that crashes its interpreter fails alone without taking the Dask worker down.
- **Outputs inline.** The step's pickled output comes back inside its `TaskResult`; the runner writes
  outputs over `INLINE_MAX` into the artifact store itself (temp file, fsync, rename) before handing the
  result to flow's scheduler, so the store sees exactly what the local executor produces. Cost: a large
  output crosses the network once more than a shared file system would need.
- **Live logs through the scheduler's event log.** The step's lines are batched (every 50 ms) and
  published with `Worker.log_event` under a topic private to this executor; the runner subscribes. A
  small result (the common case) is published on the same ordered stream right after the last batch,
  so it needs no `gather` round trip and can never overtake its logs. A large result is the future's
  return value; it is held back until the log batches it reports having sent have arrived (or 2 s
  passed), so the last lines of a step are never dropped after the step finished.
- **A dead worker fails the step.** Dask would silently re-run a task whose worker died; flow owns
  retries, so when the scheduler reports that a worker left while one of our tasks had started on it
  (or a task starts a second time), the executor cancels the future and reports the step failed with
  "the Dask worker running this step died"; the scheduler then retries or fails it.

`distributed` is imported lazily, here only: `flow` without the `dask` extra never needs it. That is
also why this module is longer than ~500 lines: both halves (the Dask worker's `run_on_worker` and the
runner's `DaskExecutor`) stay behind that one lazy import, and tests reach both through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.errors import FlowError
from runner.artifacts import (
    INLINE_MAX,
    ArtifactError,
    artifact_path,
    read_file_checked,
    write_file_atomic,
)
from runner.executors.base import InputRef, Task, TaskDone, TaskEvent, TaskLog, TaskLogs, TaskResult
from runner.executors.execute import printable

if TYPE_CHECKING:
    from dask.typing import Key
    from distributed import Client, Future

CONNECT_TIMEOUT_S = 5.0
"""How long constructing an executor waits for an external scheduler before it gives up."""

_POLL_S = 0.1
"""How often a task on a worker checks whether it was cancelled (the bound on stop latency)."""

_LOG_FLUSH_S = 0.05
_LOG_BATCH_LINES = 1000
_LOG_GRACE_S = 2.0
"""How long a finished task's result waits for log batches still in flight through the scheduler."""

_EVENT_RESULT_MAX = 64 * 1024
"""Results up to this many pickled bytes travel as an event behind the step's logs; larger by `gather`."""

_TIMEOUT_GRACE_S = 2.0
"""A worker kills a step this long after its timeout even if the runner never cancelled it (runner gone)."""

_SLOTS_REFRESH_S = 5.0
_TRUNCATE_EVERY = 10_000
"""Events received between two truncations of this executor's topic on the scheduler."""
_BLOB_CACHE = 64
"""Large inputs kept scattered on the cluster for reuse by later tasks (most recently used first)."""
_BLOB_MARK = "dask-blob:"
_BLOB_KEY = "flow-blob-"
_TOPIC_PREFIX = "flow-logs-"


def scheduler_address(address: str) -> str:
    """The `distributed` address for what a user typed: `dask://h:p` and `h:p` become `tcp://h:p`."""
    address = address.strip()
    if address.startswith("dask://"):
        return "tcp://" + address[len("dask://") :]
    if "://" not in address:
        return "tcp://" + address
    return address


def dask_resources(resources: dict[str, Any]) -> dict[str, float]:
    """A step's `resources=` as Dask worker resources: numbers stay, sizes like "4GB" become bytes.

    Raises:
        ValueError: a value is neither a number nor a size string.
    """
    from dask.utils import parse_bytes

    converted: dict[str, float] = {}
    for name, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"resource {name!r} must be a number or a size like '4GB', got {value!r}")
        if isinstance(value, str):
            try:
                converted[name] = float(parse_bytes(value))
            except ValueError:
                raise ValueError(f"resource {name!r}: cannot read {value!r} as a size like '4GB'") from None
        else:
            converted[name] = float(value)
    return converted


_OWN_PACKAGES = ("runner", "dsl", "tui")
_OWN_ROOT = Path(__file__).resolve().parents[2]


def _shadows(entry: str) -> bool:
    """Whether a `sys.path` entry holds a user's own `runner`, `dsl` or `tui` (module or package)."""
    try:
        base = Path(entry or os.getcwd()).resolve()
        if base == _OWN_ROOT or not base.is_dir():
            return False
        return any((base / name).is_dir() or (base / f"{name}.py").is_file() for name in _OWN_PACKAGES)
    except OSError:
        return False


@contextlib.contextmanager
def _spawn_path() -> Iterator[None]:
    """`sys.path` without the directories that would shadow this package, while a local cluster starts.

    A Dask worker process is spawned with a copy of this process's `sys.path` (the flow's directory
    first, once the flow is loaded; the working directory under `python -m`) and imports `runner`
    from it before anything else (its main module, then `run_on_worker`): a user's `runner.py` there
    made every worker fail to start. The worker process needs none of those directories (a step's
    code travels by value; its `runner.executors.worker` processes get the flow's root with each task).
    Limitation: a worker process the cluster restarts later (after it died) is spawned with the
    `sys.path` of that moment.
    """
    saved = list(sys.path)
    kept = [entry for entry in saved if not _shadows(entry)]
    if len(kept) == len(saved):
        yield
        return
    sys.path[:] = kept
    try:
        yield
    finally:
        sys.path[:] = saved + [entry for entry in sys.path if entry not in saved]


# ----- worker side ------------------------------------------------------------------------------

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
    if ref.path is not None and ref.path.startswith(_BLOB_MARK):
        return InputRef(hash=ref.hash, data=blobs[ref.path[len(_BLOB_MARK) :]])
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


def run_on_worker(task: Task, topic: str, blobs: dict[str, bytes]) -> tuple[TaskResult | None, int]:
    """The function each Dask future runs: one task in a killable process, logs published live.

    Returns:
        The task's result (`where` = this worker's address), or None when it was small enough to be
        published as an event after the last log batch; and how many log batches were published,
        so the runner can wait for batches still in flight before it reports a returned result.
    """
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    worker.log_event(topic, {"t": task.id, "start": worker.address})
    if blobs:
        task = dataclasses.replace(task, kwargs={n: _restore(r, blobs) for n, r in task.kwargs.items()})
    local = _thread_executor()
    local.submit(task)
    started = time.monotonic()
    deadline = started + task.timeout + _TIMEOUT_GRACE_S if task.timeout else None
    lines: list[list[Any]] = []
    batches = 0
    flushed = started
    result: TaskResult | None = None
    try:
        while True:
            for event in local.events(_POLL_S):
                # printable: msgpack fails the worker's whole connection on a lone surrogate.
                if isinstance(event, TaskLogs):
                    lines.extend([stream, printable(line), ts] for stream, line, ts in event.lines)
                elif isinstance(event, TaskLog):
                    lines.append([event.stream, printable(event.line), event.ts])
                elif isinstance(event, TaskDone) and event.task_id == task.id:
                    result = event.result
            now = time.monotonic()
            due = result is not None or now - flushed >= _LOG_FLUSH_S or len(lines) >= _LOG_BATCH_LINES
            while lines and due:
                batches += 1
                worker.log_event(topic, {"t": task.id, "n": batches, "lines": lines[:_LOG_BATCH_LINES]})
                del lines[:_LOG_BATCH_LINES]
                flushed = now
            if result is not None:
                result = dataclasses.replace(result, where=worker.address)
                payload = pickle.dumps(result, protocol=5)
                if len(payload) <= _EVENT_RESULT_MAX:
                    # Behind the log batches on the same ordered stream, and no `gather` round trip.
                    worker.log_event(topic, {"t": task.id, "result": payload})
                    return None, batches
                return result, batches
            if _cancelled(worker, key):
                return TaskResult(ok=False, error="cancelled on the cluster", where=worker.address), batches
            if deadline is not None and now >= deadline:
                error = f"timed out after {task.timeout:g}s; the step's process was killed"
                return TaskResult(ok=False, error=error, where=worker.address), batches
    finally:
        if result is None:  # cancelled, timed out, or this function itself failed: never leave it running
            local.cancel(task.id)


# ----- runner side ------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Pending:
    """A submitted task as the runner tracks it."""

    task: Task
    future: Future[Any]
    blobs: list[Future[Any]]
    worker: str | None = None
    starts: int = 0
    batches: int = 0
    result: TaskResult | None = None
    expected: int = 0
    hold_until: float = 0.0


class DaskExecutor:
    """Runs tasks on a Dask cluster: a `LocalCluster` it starts, or an existing scheduler.

    Over the ~300 lines a class should be, for a reason: the `Executor` interface on one side and
    Dask's futures, topics and scheduler plugins on the other meet here, under one lock; the
    worker-side half (`run_on_worker`) is already apart, above.

    Args:
        address: None to start a local cluster sized to this machine; else the scheduler's address
            (`tcp://host:8786`, `dask://host:8786` or `host:8786`).
        workers: how many tasks may run at once (default: every thread of the cluster); for a local
            cluster, also how many worker processes it starts.

    Raises:
        FlowError: `distributed` is not installed, or the scheduler cannot be reached within
            `CONNECT_TIMEOUT_S`.
    """

    name = "dask"

    def __init__(self, address: str | None = None, *, workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise FlowError(
                "the dask executor needs the `distributed` package: pip install 'flowdsl[dask]'"
            ) from None
        self._cluster: Any = None
        if address is None:
            import dask

            try:
                # The statistical profiler samples worker threads every 10 ms; ours only wait on a pipe,
                # and on a small machine its CPU is taken from the steps.
                with dask.config.set({"distributed.worker.profile.enabled": False}), _spawn_path():
                    self._cluster = LocalCluster(
                        n_workers=max(1, workers or os.cpu_count() or 1),
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
            except Exception as exc:
                raise FlowError(f"cannot start a local Dask cluster: {type(exc).__name__}: {exc}") from None
            self._client: Client = Client(self._cluster, set_as_default=False)
        else:
            target = scheduler_address(address)
            try:
                self._client = Client(target, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise FlowError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
        assert self._client.scheduler is not None
        self.address = str(self._client.scheduler.address)
        self._fixed_slots = workers
        self._slots = max(1, workers or 0)
        self._worker_resources: list[dict[str, float]] = []
        self._refreshed = 0.0
        self._refresh()
        self._uid = uuid.uuid4().hex[:12]
        self._topic = _TOPIC_PREFIX + self._uid
        self._cond = threading.Condition()
        self._tasks: dict[str, _Pending] = {}
        self._keys: dict[Key, str] = {}
        self._blobs: OrderedDict[str, Future[Any]] = OrderedDict()
        self._ready: deque[TaskEvent] = deque()
        self._finished: deque[Future[Any]] = deque()
        self._died: deque[tuple[str, str]] = deque()
        self._held: dict[str, _Pending] = {}
        self._woken = False
        self._closed = False
        self._published = 0
        self._client.subscribe_topic(self._topic, self._on_task_event)
        self._client.subscribe_topic("all", self._on_cluster_event)

    # ----- Executor protocol ---------------------------------------------------------------------

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, task: Task) -> None:
        """Send `task` to the cluster; never raises (a failure to submit is the task's failure)."""
        try:
            resources = dask_resources(task.resources) if task.resources and self._cluster is None else {}
        except ValueError as exc:
            self._fail_now(task, f"invalid resources: {exc}")
            return
        blob_futures: dict[str, Future[Any]] = {}
        try:
            kwargs = {name: self._ship(ref, blob_futures) for name, ref in task.kwargs.items()}
            shipped = dataclasses.replace(task, kwargs=kwargs, artifact_dir="")
            if resources:
                self._warn_unmatched(task, resources)
            future = self._client.submit(
                run_on_worker,
                shipped,
                self._topic,
                blob_futures,
                key=f"{task.step}-{self._uid}-{task.id}",
                pure=False,
                resources=resources or None,
            )
        except ArtifactError as exc:
            self._fail_now(task, f"an input could not be read: {exc}")
            return
        except Exception as exc:  # the scheduler is gone, or the task cannot be serialised
            self._fail_now(task, f"cannot submit the step to the Dask cluster: {type(exc).__name__}: {exc}")
            return
        with self._cond:
            self._tasks[task.id] = _Pending(task, future, list(blob_futures.values()))
            self._keys[future.key] = task.id
        future.add_done_callback(self._on_done)

    def cancel(self, task_id: str) -> None:
        with self._cond:
            pending = self._forget(task_id)
        if pending is not None and not pending.future.done():
            self._cancel_future(pending.future, "stopped by flow")

    def events(self, timeout: float | None) -> list[TaskEvent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._ready or self._finished or self._died or self._woken):
                waits = [] if deadline is None else [deadline]
                waits += [p.hold_until for p in self._held.values()]
                if self._cluster is None:
                    waits.append(self._refreshed + _SLOTS_REFRESH_S)
                if waits and min(waits) <= time.monotonic():
                    break
                self._cond.wait(None if not waits else min(waits) - time.monotonic())
            self._woken = False
            finished = list(self._finished)
            died = list(self._died)
            self._finished.clear()
            self._died.clear()
        for task_id, reason in died:
            with self._cond:
                pending = self._forget(task_id)
            if pending is not None:
                self._cancel_future(pending.future, "its worker died")
                result = TaskResult(ok=False, error=reason, where=pending.worker or "")
                with self._cond:
                    self._ready.append(TaskDone(task_id, result))
        if finished:
            self._collect(finished)
        now = time.monotonic()
        with self._cond:
            for task_id, pending in list(self._held.items()):
                if now >= pending.hold_until:
                    self._release(task_id, pending)
            events = list(self._ready)
            self._ready.clear()
        if self._cluster is None and now >= self._refreshed + _SLOTS_REFRESH_S:
            self._refresh()
        if self._published >= _TRUNCATE_EVERY:
            self._published = 0
            try:
                self._client.run_on_scheduler(_topic_truncator(), self._topic)
            except Exception:  # memory hygiene only: never fail a run over it
                pass
        return events

    def wakeup(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            futures = [p.future for p in self._tasks.values()] + list(self._blobs.values())
            self._blobs.clear()
            self._tasks.clear()
            self._held.clear()
            self._keys.clear()
        try:
            if futures:
                self._client.cancel(futures, reason="the runner closed")
            self._client.unsubscribe_topic(self._topic)
            self._client.unsubscribe_topic("all")
            self._client.run_on_scheduler(_topic_truncator(), self._topic)
        except Exception:  # the cluster may already be gone; closing must still finish
            pass
        for closable in (self._client, self._cluster):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass

    # ----- runner-side helpers -------------------------------------------------------------------

    def _cancel_future(self, future: Future[Any], reason: str) -> None:
        """Cancel on the cluster; a lost connection has dropped the task already, so that is fine too."""
        try:
            self._client.cancel([future], reason=reason)
        except Exception:
            pass

    def _refresh(self) -> None:
        """Re-read the cluster's threads and resources (an adaptive or shared cluster changes)."""
        self._refreshed = time.monotonic()
        try:
            info = self._client.scheduler_info(n_workers=-1)
        except Exception:
            return
        workers = info.get("workers", {}).values()
        self._worker_resources = [dict(w.get("resources") or {}) for w in workers]
        if self._fixed_slots is None:
            self._slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def _ship(self, ref: InputRef, blobs: dict[str, Future[Any]]) -> InputRef:
        """An input a remote worker can read: files read here, large bytes scattered once per content.

        A large input becomes a placeholder plus a scattered future in `blobs` (Dask then moves it to
        each worker that needs it once, and keeps it there while a task holds it), so a dataset read
        by a 1,000-way fan-out is read, hashed and sent once, not 1,000 times.
        """
        if ref.parts is not None:
            return dataclasses.replace(ref, parts=tuple(self._ship(p, blobs) for p in ref.parts))
        cached = self._blobs.get(ref.hash)
        if cached is not None and cached.status == "finished" and not ref.none:
            self._blobs.move_to_end(ref.hash)
            blobs[ref.hash] = cached
            return InputRef(hash=ref.hash, path=_BLOB_MARK + ref.hash)
        data = ref.data
        if ref.path is not None:
            data = read_file_checked(ref.path, ref.hash)
        if data is None:
            return ref
        if len(data) <= INLINE_MAX:
            return InputRef(hash=ref.hash, data=data)
        [future] = self._client.scatter({_BLOB_KEY + ref.hash: data}, hash=False).values()
        self._blobs[ref.hash] = blobs[ref.hash] = future
        while len(self._blobs) > _BLOB_CACHE:
            self._blobs.popitem(last=False)  # tasks still pending keep their own reference
        return InputRef(hash=ref.hash, path=_BLOB_MARK + ref.hash)

    def _warn_unmatched(self, task: Task, resources: dict[str, float]) -> None:
        """Say why a step waits when no worker (yet) offers what it asks for; Dask would wait silently."""
        fits = any(all(w.get(k, 0) >= v for k, v in resources.items()) for w in self._worker_resources)
        if not fits:
            wanted = ",".join(f"{k}={v:g}" for k, v in resources.items())
            line = (
                f"waiting: no Dask worker offers resources {wanted} yet "
                f'(start workers with `dask worker ... --resources "{wanted}"`)'
            )
            with self._cond:
                self._ready.append(TaskLog(task.id, "log", line, time.time()))

    def _fail_now(self, task: Task, error: str) -> None:
        with self._cond:
            self._ready.append(TaskDone(task.id, TaskResult(ok=False, error=error)))
            self._cond.notify_all()

    def _collect(self, futures: list[Future[Any]]) -> None:
        """Turn finished futures into results: one `gather` for the successful ones."""
        with self._cond:
            tracked = [(f, self._tasks[self._keys[f.key]].task) for f in futures if f.key in self._keys]
        ok = [f for f, _ in tracked if f.status == "finished"]
        values: dict[Key, Any] = {}
        if ok:
            try:
                values = dict(zip((f.key for f in ok), self._client.gather(ok), strict=True))
            except Exception:
                for f in ok:
                    try:
                        values[f.key] = f.result(timeout=CONNECT_TIMEOUT_S)
                    except Exception as exc:
                        values[f.key] = exc
        for future, task in tracked:
            task_id = task.id
            value: Any = values.get(future.key)
            if future.status == "finished" and not isinstance(value, BaseException):
                result, expected = value
                if result is None:  # it came as an event, which already reported it
                    continue
                result = self._store_large(task, result)
            elif future.status == "cancelled":
                error = "the Dask scheduler dropped this step (it restarted, or the runner lost it)"
                result, expected = TaskResult(ok=False, error=error), 0
            else:
                if value is None:
                    value = self._exception(future)
                result, expected = _failure(value), 0
            with self._cond:
                pending = self._tasks.get(task_id)
                if pending is None:
                    continue
                pending.result, pending.expected = result, expected
                if pending.batches >= expected:
                    self._release(task_id, pending)
                else:
                    pending.hold_until = time.monotonic() + _LOG_GRACE_S
                    self._held[task_id] = pending

    def _exception(self, future: Future[Any]) -> BaseException:
        try:
            exc = future.exception(timeout=CONNECT_TIMEOUT_S)
        except Exception as err:
            return err
        return exc if isinstance(exc, BaseException) else RuntimeError(f"the task failed: {exc!r}")

    @staticmethod
    def _store_large(task: Task, result: TaskResult) -> TaskResult:
        """Write an output over `INLINE_MAX` into the artifact store, as a local worker would have."""
        if not result.ok or result.data is None or len(result.data) <= INLINE_MAX or not task.artifact_dir:
            return result
        assert result.hash is not None
        path = artifact_path(task.artifact_dir, result.hash)
        try:
            if not path.exists():
                write_file_atomic(path, result.data)
        except OSError as exc:
            return TaskResult(
                ok=False,
                error=f"the output cannot be written to the artifact store: {exc}",
                metrics=result.metrics,
                duration_s=result.duration_s,
                where=result.where,
            )
        return dataclasses.replace(result, data=None, path=str(path))

    def _release(self, task_id: str, pending: _Pending) -> None:
        """Report a task's result (lock held): its log lines are in `_ready` ahead of it."""
        self._forget(task_id)
        assert pending.result is not None
        self._ready.append(TaskDone(task_id, pending.result))
        self._cond.notify_all()

    def _forget(self, task_id: str) -> _Pending | None:
        """Stop tracking a task (lock held): later events and results for it are ignored."""
        pending = self._tasks.pop(task_id, None)
        self._held.pop(task_id, None)
        if pending is not None:
            self._keys.pop(pending.future.key, None)
        return pending

    # ----- callbacks (Dask's threads) --------------------------------------------------------------

    def _on_done(self, future: Future[Any]) -> None:
        """A future finished, failed or was cancelled (Dask's callback thread): hand it to `events`."""
        with self._cond:
            if future.key not in self._keys:  # its result came as an event, or it was cancelled
                return
            self._finished.append(future)
            self._cond.notify_all()

    def _on_task_event(self, event: tuple[float, Any]) -> None:
        """A start or a batch of log lines from `run_on_worker` (the client's event loop: no blocking)."""
        message = event[1]
        task_id = message.get("t")
        with self._cond:
            self._published += 1
            pending = self._tasks.get(task_id)
            if pending is None:
                return
            if "result" in message:
                pending.result = pickle.loads(message["result"])
                self._release(task_id, pending)
            elif "start" in message:
                pending.starts += 1
                if pending.starts > 1:
                    self._died.append((task_id, _died(pending.worker, "Dask started the task again")))
                pending.worker = message["start"]
            else:
                pending.batches += 1
                self._ready.extend(TaskLog(task_id, s, line, ts) for s, line, ts in message["lines"])
                if task_id in self._held and pending.batches >= pending.expected:
                    self._release(task_id, pending)
            self._cond.notify_all()

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        """The scheduler's "all" topic: a worker that left takes the steps that started on it down."""
        message = event[1]
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        address = message.get("worker")
        processing = set(message.get("processing-tasks") or ())
        with self._cond:
            for task_id, pending in self._tasks.items():
                if pending.result is not None:
                    continue
                # A start event can die with the worker's send buffer: a task the scheduler had on that
                # worker counts as started there, even if its re-run elsewhere already reported a start.
                if pending.worker == address or pending.future.key in processing:
                    self._died.append((task_id, _died(address, "it left the cluster")))
            self._cond.notify_all()


def _died(address: str | None, detail: str) -> str:
    return f"the Dask worker running this step died ({address or 'unknown worker'}: {detail})"


def _failure(exc: BaseException) -> TaskResult:
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


def _topic_truncator() -> Callable[..., None]:
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
