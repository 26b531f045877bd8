"""Provides `DaskExecutor`: runs tasks on a Dask `distributed` cluster.

The way a flow outgrows one machine. The planner, the cache and the store do not change: tasks go to
the cluster, results come back to the runner, which stores them exactly as the local executor's.

How a task travels, and why:

- **Lanes.** A task normally goes to a *lane*: a Dask future (`dask_worker.run_lane`) that holds
  one worker thread and runs the runner's tasks one at a time, taking each from its own
  `distributed.Queue` and putting small results on a results queue the runner long-polls. Queue
  messages are RPC replies, so a step costs two messages through the scheduler instead of a future's
  client -> scheduler -> worker -> scheduler -> client trip, each hop waiting out its stream's batching
  interval. The lane's side is one request a step: a handler the runner adds to the scheduler
  (`dask_worker.exchange_installer`) takes its answer and waits for its next task (a scheduler that
  runs no functions for clients gets two requests, a put and a get). Dask still places every lane
  (on the least busy worker), and the runner never has more lanes than `slots`: a task starts as
  soon as it is submitted, as with a future per task. A lane idle for `LANE_IDLE_S` gives its
  thread back. A task with scattered inputs or `resources=` gets a future of its own
  (`dask_worker.run_on_worker`), placed by Dask like any other.
- **Code and inputs by value.** `Task.code` (cloudpickled, flow-file functions and local helpers
  included) is sent with the task, so workers need flow installed but not the flow file; a lane
  keeps the last `LANE_CODES` codes, and the runner leaves out the ones it knows the lane has. Inputs
  that live as files in the runner's artifact store are read on the runner (a remote worker cannot see
  that path); inputs over `INLINE_MAX` are `scatter`ed under a content-addressed key, so a large
  upstream output shared by a fan-out crosses the network once per worker (`dask_inputs`).
- **A killable process per step.** See `runner.executors.dask_worker`: when the runner cancels a
  task's future (stop, timeout, a reload) the step's whole process group is killed within ~0.1 s,
  and a step that crashes its interpreter fails alone without taking the Dask worker down. Cancelling
  a lane's task cancels the lane.
- **Outputs inline.** The step's pickled output comes back with its `TaskResult`; the runner writes
  outputs over `INLINE_MAX` into the artifact store itself (temp file, fsync, rename) before handing the
  result to flow's scheduler, so the store sees exactly what the local executor produces. Cost: a large
  output crosses the network once more than a shared file system would need.
- **Live logs through the scheduler's event log.** The step's lines are batched (every 50 ms) and
  published with `Worker.log_event` under a topic private to this executor; the runner subscribes. A
  result says how many batches went before it, and is held back until they have arrived (or 2 s
  passed), so the last lines of a step are never dropped after the step finished.
- **A dead worker fails the step.** Dask would silently re-run a future whose worker died; flow owns
  retries, so when the scheduler reports that a worker left while one of our futures had started on it
  (or a future starts a second time), the executor cancels the future and reports its task failed with
  "the Dask worker running this step died"; the scheduler then retries or fails it.

`distributed` is imported lazily: `flow` without the `dask` extra never needs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import pickle
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from dsl.errors import FlowError
from runner.artifacts import ArtifactError
from runner.executors.base import Task, TaskDone, TaskEvent, TaskLog, TaskResult
from runner.executors.dask_inputs import Shipper
from runner.executors.dask_outcomes import died, failure, store_large, topic_truncator
from runner.executors.dask_setup import dask_resources, scheduler_address, spawn_path
from runner.executors.dask_worker import LANE_CODES, exchange_installer, run_lane, run_on_worker

if TYPE_CHECKING:
    from dask.typing import Key
    from distributed import Client, Future

__all__ = ["CONNECT_TIMEOUT_S", "DaskExecutor", "dask_resources", "scheduler_address"]

CONNECT_TIMEOUT_S = 5.0
"""How long constructing an executor waits for an external scheduler before it gives up."""

LANE_IDLE_S = 2.0
"""A lane with no task for this long ends, giving its worker thread back to the cluster."""

_LOG_GRACE_S = 2.0
"""How long a finished task's result waits for log batches still in flight through the scheduler."""

_RESULT_RETRY_S = 1.0
"""How long a long-poll of the results queue waits before it asks again after an error."""
_RESULT_POLLERS = 4
"""Long-polls of the results queue at once, at most (each brings back one result per round trip)."""

_LOCAL_CLUSTER_CONFIG = {
    # The statistical profiler samples worker threads every 10 ms; ours only wait on a pipe, and on a
    # small machine its CPU is taken from the steps.
    "distributed.worker.profile.enabled": False,
    # Only a dashboard reads these samples of CPU, memory, disk and network use, and there is none.
    "distributed.admin.system-monitor.interval": "5s",
}
"""Dask settings for the cluster `--executor dask` starts. It also gets no memory limit
(`memory_limit=0`): steps run in processes of their own that a worker's memory monitor does not see
(`resources={"memory": ...}` caps them), and the workers hold no data of flow's worth spilling, so the
nannies' monitors, in the runner's own process, would only cost it CPU every 100 ms."""

_SLOTS_REFRESH_S = 5.0
_TRUNCATE_EVERY = 10_000
"""Events received between two truncations of this executor's topic on the scheduler."""
_TOPIC_PREFIX = "flow-logs-"


@dataclasses.dataclass(eq=False)
class _Lane:
    """A future on the cluster and the task it runs now (None: a lane waiting for its next task).

    `inbox` is the lane's `distributed.Queue`; None for a future that runs a single task. `codes`
    mirrors the lane's own cache of step code (same keys, same order, same size)."""

    future: Future[Any]
    inbox: Any = None
    task_id: str | None = None
    worker: str | None = None
    starts: int = 0
    idle_since: float = 0.0
    dropped: bool = False
    codes: OrderedDict[str, None] = dataclasses.field(default_factory=OrderedDict)


@dataclasses.dataclass(eq=False)
class _Pending:
    """A submitted task as the runner tracks it."""

    task: Task
    lane: _Lane
    blobs: list[Future[Any]]
    batches: int = 0
    result: TaskResult | None = None
    expected: int = 0
    hold_until: float = 0.0


class DaskExecutor:
    """Runs tasks on a Dask cluster: a `LocalCluster` it starts, or an existing scheduler.

    Over the ~300 lines a class should be, for a reason: the `Executor` interface on one side and
    Dask's futures, queues and topics on the other meet here, under one lock. Around it: the worker's
    half (`dask_worker`), inputs (`dask_inputs`), outcomes (`dask_outcomes`), set-up (`dask_setup`).

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
                with dask.config.set(_LOCAL_CLUSTER_CONFIG), spawn_path():
                    self._cluster = LocalCluster(
                        n_workers=max(1, workers or os.cpu_count() or 1),
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                        memory_limit=0,
                        # The workers connect over TCP; this process's client, in-process (below).
                        # With no dashboard the scheduler still serves its HTTP routes (health,
                        # metrics), on port 8787 unless told otherwise: on any free port instead, so
                        # a second cluster (another `flow run`, a notebook's) prints no warning.
                        scheduler_kwargs={
                            "protocol": ["tcp://", "inproc://"],
                            "host": ["127.0.0.1", None],
                            "port": [0, None],
                            "dashboard_address": "127.0.0.1:0",
                        },
                    )
            except Exception as exc:
                raise FlowError(f"cannot start a local Dask cluster: {type(exc).__name__}: {exc}") from None
            # The scheduler runs in this process: over `inproc` the client's messages to it are handed
            # over as objects, not serialised and sent through a socket (every step costs two).
            inproc = [
                listener.contact_address
                for listener in self._cluster.scheduler.listeners
                if listener.contact_address.startswith("inproc://")
            ]
            self._client: Client = Client(inproc[0] if inproc else self._cluster, set_as_default=False)
        else:
            target = scheduler_address(address)
            try:
                self._client = Client(target, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise FlowError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
        assert self._client.scheduler is not None and self._client.loop is not None
        cluster = self._cluster
        self.address = str(cluster.scheduler_address if cluster else self._client.scheduler.address)
        self._loop = self._client.loop
        self._scheduler: Any = self._client.scheduler  # its RPCs: the queue_* ones `distributed.Queue` makes
        self._fixed_slots = workers
        self._slots = max(1, workers or 0)
        self._worker_resources: list[dict[str, float]] = []
        self._refreshed = 0.0
        self._refresh()
        self._uid = uuid.uuid4().hex[:12]
        self._topic = _TOPIC_PREFIX + self._uid
        self._cond = threading.Condition()
        self._tasks: dict[str, _Pending] = {}
        self._lanes: dict[Key, _Lane] = {}
        self._idle: list[_Lane] = []
        # Futures of their own (scattered inputs, resources) not started yet. Meanwhile lanes give their
        # threads back after each task rather than keep them, so that Dask can start those futures.
        self._waiting: set[Key] = set()
        self._lane_ids = itertools.count()
        self._shipper = Shipper(self._client)
        self._ready: deque[TaskEvent] = deque()
        self._finished: deque[Future[Any]] = deque()
        self._died: deque[tuple[_Lane, str]] = deque()
        self._held: dict[str, _Pending] = {}
        self._woken = False
        self._closed = False
        self._published = 0
        self._client.subscribe_topic(self._topic, self._on_task_event)
        self._client.subscribe_topic("all", self._on_cluster_event)
        self._results = self._queue(f"flow-results-{self._uid}")
        self._merged = self._results is not None and self._install_exchange()
        self._pollers = min(_RESULT_POLLERS, max(2, self._slots)) if self._results is not None else 0
        for _ in range(self._pollers):
            self._loop.add_callback(self._poll_results, self._results.name)

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
            kwargs = {name: self._shipper.ship(ref, blob_futures) for name, ref in task.kwargs.items()}
            shipped = dataclasses.replace(task, kwargs=kwargs, artifact_dir="")
            if resources:
                self._warn_unmatched(task, resources)
            if blob_futures or resources or self._results is None:
                future = self._client.submit(
                    run_on_worker,
                    shipped,
                    self._topic,
                    blob_futures,
                    key=f"{task.step}-{self._uid}-{task.id}",
                    pure=False,
                    resources=resources or None,
                )
                lane = _Lane(future)
            else:
                lane = self._idle_lane() or self._new_lane(self._results.name)
        except ArtifactError as exc:
            self._fail_now(task, f"an input could not be read: {exc}")
            return
        except Exception as exc:  # the scheduler is gone, or the task cannot be serialised
            self._fail_now(task, f"cannot submit the step to the Dask cluster: {type(exc).__name__}: {exc}")
            return
        with self._cond:
            lane.task_id = task.id
            self._tasks[task.id] = _Pending(task, lane, list(blob_futures.values()))
            new = lane.future.key not in self._lanes
            self._lanes[lane.future.key] = lane
            if lane.inbox is None:
                self._waiting.add(lane.future.key)
                for idle in list(self._idle):
                    self._drop_lane(idle)
        if lane.inbox is not None:
            self._send(lane, shipped)
        if new:
            lane.future.add_done_callback(self._on_done)

    def cancel(self, task_id: str) -> None:
        with self._cond:
            pending = self._forget(task_id)
            if pending is not None:
                self._drop_lane(pending.lane)
        if pending is not None and not pending.lane.future.done():
            self._cancel_future(pending.lane.future, "stopped by flow")

    def events(self, timeout: float | None) -> list[TaskEvent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._ready or self._finished or self._died or self._woken):
                waits = [] if deadline is None else [deadline]
                waits += [p.hold_until for p in self._held.values()]
                waits += [lane.idle_since + LANE_IDLE_S for lane in self._idle]
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
        for lane, reason in died:
            with self._cond:
                self._drop_lane(lane)
                pending = self._tasks.get(lane.task_id or "")
                if pending is not None and pending.lane is lane and pending.result is None:
                    self._forget(pending.task.id)
                    result = TaskResult(ok=False, error=reason, where=lane.worker or "")
                    self._ready.append(TaskDone(pending.task.id, result))
            if not lane.future.done():
                self._cancel_future(lane.future, "its worker died")
        if finished:
            self._collect(finished)
        now = time.monotonic()
        with self._cond:
            for task_id, pending in list(self._held.items()):
                if now >= pending.hold_until:
                    self._release(task_id, pending)
            for lane in [lane for lane in self._idle if now >= lane.idle_since + LANE_IDLE_S]:
                self._drop_lane(lane)  # its queue is gone: the lane ends at its next look
            events = list(self._ready)
            self._ready.clear()
        if self._cluster is None and now >= self._refreshed + _SLOTS_REFRESH_S:
            self._refresh()
        if self._published >= _TRUNCATE_EVERY:
            self._published = 0
            try:
                self._client.run_on_scheduler(topic_truncator(), self._topic)
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
            lanes = list(self._lanes.values())
            futures = [lane.future for lane in lanes] + self._shipper.drop()
            inboxes = [lane.inbox for lane in lanes if lane.inbox is not None and not lane.dropped]
            for lane in lanes:
                lane.dropped = True
            self._lanes.clear()
            self._idle.clear()
            self._tasks.clear()
            self._held.clear()
        try:
            if futures:
                self._client.cancel(futures, reason="the runner closed")
            if self._results is not None:
                self._client.sync(self._retire, [self._results], self._pollers)
            self._client.sync(self._retire, inboxes)
            self._client.unsubscribe_topic(self._topic)
            self._client.unsubscribe_topic("all")
            self._client.run_on_scheduler(topic_truncator(), self._topic)
        except Exception:  # the cluster may already be gone; closing must still finish
            pass
        for closable in (self._client, self._cluster):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass

    # ----- lanes ---------------------------------------------------------------------------------

    def _queue(self, name: str) -> Any:
        """A `distributed.Queue` on the scheduler, or None if the scheduler has no queues (then every
        task gets a future of its own)."""
        from distributed import Queue

        try:
            return Queue(name, client=self._client)
        except Exception:
            return None

    def _install_exchange(self) -> bool:
        """Whether the scheduler now answers `dask_worker.EXCHANGE_OP` (a scheduler that refuses to run
        functions, `distributed.scheduler.blocked-handlers`, leaves lanes two requests a step)."""
        try:
            return self._client.run_on_scheduler(exchange_installer()) is True
        except Exception:
            return False

    def _idle_lane(self) -> _Lane | None:
        """The lane that went idle last (the others may then reach `LANE_IDLE_S` and end); none while a
        future of its own waits for a thread (see `_waiting`)."""
        with self._cond:
            return self._idle.pop() if self._idle and not self._waiting else None

    def _new_lane(self, results: str) -> _Lane:
        """Start a lane: its queue exists on the scheduler before the lane can ask it for work, so a
        lane Dask re-runs elsewhere (its worker died) finds no task it already ran."""
        name = f"flow-lane-{self._uid}-{next(self._lane_ids)}"
        inbox = self._queue(name)
        if inbox is None:
            raise RuntimeError(f"the scheduler did not create queue {name}")
        future = self._client.submit(run_lane, name, results, self._topic, self._merged, key=name, pure=False)
        return _Lane(future, inbox)

    def _send(self, lane: _Lane, task: Task) -> None:
        """Put `task` in the lane's queue, without its code if the lane has that code already."""
        codes = lane.codes
        if task.code_key in codes:
            codes.move_to_end(task.code_key)
            task = task.without_code()
        else:
            codes[task.code_key] = None
            if len(codes) > LANE_CODES:
                codes.popitem(last=False)
        payload = pickle.dumps(task, protocol=5)
        # The RPC `distributed.Queue.put` makes, without waiting for its reply on this thread.
        self._loop.add_callback(self._put, lane, lane.inbox.name, task.id, payload)

    async def _put(self, lane: _Lane, inbox: str, task_id: str, payload: bytes) -> None:
        try:
            await self._scheduler.queue_put(name=inbox, data=payload)
        except Exception as exc:  # the scheduler is gone, or the lane was dropped meanwhile
            with self._cond:
                if lane.task_id == task_id:
                    error = f"cannot submit the step to the Dask cluster: {type(exc).__name__}: {exc}"
                    self._died.append((lane, error))
                    self._cond.notify_all()

    async def _poll_results(self, name: str) -> None:
        """Take small results off the results queue as lanes put them there (the client's event loop).

        The wait has no timeout: a timed-out queue RPC is logged as an error on the scheduler. `close`
        puts one None per poller, which ends it."""
        while not self._closed:
            try:
                record = await self._scheduler.queue_get(name=name)
            except Exception:  # the scheduler is unreachable for now, or the queue is gone (closed)
                if self._closed:
                    return
                await asyncio.sleep(_RESULT_RETRY_S)
                continue
            message = record.get("value") if isinstance(record, dict) else None
            if not isinstance(message, dict):
                return
            self._on_result(message["t"], message["result"], message["n"])

    def _on_result(self, task_id: str, payload: bytes, expected: int) -> None:
        with self._cond:
            pending = self._tasks.get(task_id)
            if pending is None:
                return
            pending.result, pending.expected = pickle.loads(payload), expected
            if pending.batches >= expected:
                self._release(task_id, pending)
            else:
                pending.hold_until = time.monotonic() + _LOG_GRACE_S
                self._held[task_id] = pending

    def _drop_lane(self, lane: _Lane) -> None:
        """Stop using a lane (lock held); one waiting for work ends (`_retire`)."""
        self._lanes.pop(lane.future.key, None)
        self._waiting.discard(lane.future.key)
        if lane in self._idle:
            self._idle.remove(lane)
        if lane.inbox is not None and not lane.dropped:
            self._loop.add_callback(self._retire, [lane.inbox])
        lane.dropped = True

    async def _retire(self, queues: list[Any], stops: int = 1) -> None:
        """Put `stops` Nones (stop) in each queue, then release it on the scheduler.

        In this order: a lane waiting for work would otherwise wait on the released queue until its
        `dask_worker.LANE_WAIT_S` runs out."""
        for queue in queues:
            try:
                for _ in range(stops):
                    await self._scheduler.queue_put(name=queue.name, data=None)
                queue.close()
            except Exception:  # the scheduler or the client is gone: so is the queue
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
        """Turn futures that ended with a task still on them into results: one `gather` for the values."""
        with self._cond:
            tracked: list[tuple[Future[Any], _Pending]] = []
            for future in futures:
                lane = self._lanes.get(future.key)
                if lane is None:
                    continue
                self._drop_lane(lane)
                pending = self._tasks.get(lane.task_id or "")
                if pending is not None and pending.lane is lane:
                    tracked.append((future, pending))
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
        for future, pending in tracked:
            value: Any = values.get(future.key)
            expected = 0
            if future.status == "finished" and not isinstance(value, BaseException):
                if pending.lane.inbox is None:
                    result, expected = value
                    if result is None:  # it came as an event, which already reported it
                        continue
                elif value is None:
                    result = TaskResult(ok=False, error="the Dask worker closed before it ran this step")
                else:
                    _, result, expected = value
                result = store_large(pending.task, result)
            elif future.status == "cancelled":
                error = "the Dask scheduler dropped this step (it restarted, or the runner lost it)"
                result = TaskResult(ok=False, error=error)
            else:
                result = failure(self._exception(future) if value is None else value)
            with self._cond:
                task_id = pending.task.id
                if self._tasks.get(task_id) is not pending:
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

    def _release(self, task_id: str, pending: _Pending) -> None:
        """Report a task's result (lock held): its log lines are in `_ready` ahead of it. A lane that is
        still in use waits for the next task; a future that ran a single task is done with."""
        self._forget(task_id)
        lane = pending.lane
        if lane.task_id == task_id:
            lane.task_id = None
            if lane.inbox is not None and not lane.dropped and not self._waiting:
                lane.idle_since = time.monotonic()
                self._idle.append(lane)
            else:
                self._drop_lane(lane)
        assert pending.result is not None
        self._ready.append(TaskDone(task_id, pending.result))
        self._cond.notify_all()

    def _forget(self, task_id: str) -> _Pending | None:
        """Stop tracking a task (lock held): later events and results for it are ignored."""
        self._held.pop(task_id, None)
        return self._tasks.pop(task_id, None)

    # ----- callbacks (the client's event loop: never block) -------------------------------------------

    def _on_done(self, future: Future[Any]) -> None:
        """A future finished, failed or was cancelled: a task still on it is for `events` to report."""
        with self._cond:
            lane = self._lanes.get(future.key)
            if lane is None:  # its task came back as a message, or it was cancelled
                return
            if lane.task_id is None:  # a lane that ended between tasks (its worker is closing)
                self._drop_lane(lane)
                return
            self._finished.append(future)
            self._cond.notify_all()

    def _on_task_event(self, event: tuple[float, Any]) -> None:
        """A future's start, a batch of log lines, or a single-task future's small result."""
        message = event[1]
        with self._cond:
            self._published += 1
            if "start" in message:
                lane = self._lanes.get(message.get("key"))
                self._waiting.discard(message.get("key"))
                if lane is not None:
                    lane.starts += 1
                    if lane.starts > 1:
                        self._died.append((lane, died(lane.worker, "Dask started the task again")))
                    lane.worker = message["start"]
                    self._cond.notify_all()
                return
            task_id = message.get("t")
            pending = self._tasks.get(task_id)
            if pending is None:
                return
            if "result" in message:
                pending.result = pickle.loads(message["result"])
                self._release(task_id, pending)
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
            for lane in self._lanes.values():
                # A start event can die with the worker's send buffer: a future the scheduler had on that
                # worker counts as started there, even if its re-run elsewhere already reported a start.
                if lane.worker == address or lane.future.key in processing:
                    self._died.append((lane, died(address, "it left the cluster")))
            self._cond.notify_all()
