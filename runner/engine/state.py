"""Provides `SchedulerState`: everything the scheduler thread owns, in one place.

The scheduler's transitions (`runner.engine.finishing`, `.executing`, `.probing`, `.deciding`, and the
loop in `.scheduler`) are methods on one object, because they are mutually recursive (a step that finishes
makes its children ready, deciding a child may finish it at once, a probe's answer decides its step
again) and all mutate this state on one thread. They build on each other in that order; the few calls
that go back up the chain are declared here, abstract. What needs none of this state lives apart and
never calls back: the pure decisions (`decide`), the cache memory (`cache_index`), cross-process
leases (`leases`), code bundles (`bundles`), and the model (`model`).
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from runner.engine.bundles import CodeBundles
from runner.engine.cache_index import CacheIndex
from runner.engine.leases import Claims
from runner.engine.model import Execution, Follow, Planning, Probe, Run, Subscriber, Timed
from runner.engine.stops import STOPPED_BY, StopWatch
from runner.events import Event
from runner.executors.base import Chains, Executor, TaskResult
from runner.fingerprint import StaticPrint
from runner.store.api import EngineStore


class SchedulerState(ABC):
    """The state of the scheduler: runs in flight, executions by fingerprint, queues, timers.

    Args:
        store: the run store (any `EngineStore`).
        executor: where steps run.
        subscribers: receive every event (from the scheduler thread; keep them quick).
    """

    def __init__(
        self, store: EngineStore, executor: Executor, subscribers: Iterable[Subscriber] = ()
    ) -> None:
        self.store = store
        self._lock = threading.RLock()
        self.executor = executor
        self._recorder = store.recorder()
        self._subscribers: list[Subscriber] = list(subscribers)
        self._held: list[Event] | None = None
        """Events emitted while a batch of results is taken, delivered once the steps those results
        made ready are on their way (`Finishing._emit`); None: events are delivered at once."""
        self._commands: deque[Callable[[], None]] = deque()
        self._runs: dict[int, Run] = {}
        self._executions: dict[str, Execution] = {}
        self._timed: Timed = {}
        """The executions waiting on a moment (see `Timed`)."""
        self._parked: dict[str, int] = {}
        self._remote: list[tuple[float, tuple[Any, ...]]] = []
        self._index = CacheIndex(store, self._lock)
        self._claims = Claims(store)
        self._bundles = CodeBundles()
        self._flows_seen: set[str] = set()
        self._kept_hits: dict[str, tuple[int | None, frozenset[str]]] = {}
        """Flow -> the run whose cache entries the store keeps for it (`runner.store.last_hits`), as
        far as this engine knows, and their fingerprints."""
        self._by_task: dict[str, Execution] = {}
        self._queue: deque[Execution] = deque()
        self._busy = 0
        self._chains: Chains | None = executor if hasattr(executor, "follow") else None  # type: ignore[assignment]
        self._follows: dict[tuple[int, str], Follow] = {}
        """Tasks chained to a running one (`runner.engine.chaining`), by run and step, until adopted."""
        self._follow_after: dict[str, tuple[int, str]] = {}
        """The run and step of the task chained to each task (by its id)."""
        self._statics: dict[str, dict[str, StaticPrint]] = {}
        self._statics_lock = threading.Lock()
        """Held while a load's static fingerprints are computed: a view's threads (the plan, the
        watcher, a run being started) ask for the same load's at once, and one computes them."""
        self._task_ids = itertools.count(1)
        self._probes: dict[str, Probe] = {}
        self._probe_queue: deque[Probe] = deque()
        self._plannings: list[Planning] = []
        self._closing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stops = StopWatch(store, lambda run_id: self._command(lambda: self._cancel(run_id, STOPPED_BY)))
        store.mark_interrupted()
        work_while_polling = getattr(executor, "work_while_polling", None)
        if work_while_polling is not None:  # `LocalExecutor`: its moments of polling write the store
            work_while_polling(self._write_while_polling)

    def _write_while_polling(self) -> bool:
        """The store's next queued write, on the scheduler thread while it polls (`Writer.help`); not
        while another process uses the store. A helper's transaction stays open until the writer's
        window ends, and that process's leases, taken as its steps start, would wait for it (two
        `flow run`s of 400 steps on one store took 3.3 s each instead of 0.2)."""
        return not self._claims.others_seen and self.store.help_write()

    @abstractmethod
    def _command(self, fn: Callable[[], None]) -> bool:
        """Hand `fn` to the scheduler thread (`runner.engine.scheduler`)."""

    @abstractmethod
    def _cancel(self, run_id: int | None, reason: str = "stopped") -> None:
        """Stop runs (`runner.engine.finishing`)."""

    @abstractmethod
    def _kill_job(self, execution: Execution) -> None:
        """Kill the external job of a job step's execution being killed (`runner.engine.jobs`)."""

    @abstractmethod
    def _advance(
        self,
        run: Run,
        name: str,
        *,
        cache_only: bool = False,
        when_checked: bool = False,
        items: list[bytes] | None = None,
    ) -> None:
        """Decide a step whose upstream steps are final (`runner.engine.deciding`)."""

    @abstractmethod
    def _chain(self, execution: Execution) -> None:
        """The execution's task was just sent: chain the next step's to it (`runner.engine.chaining`)."""

    @abstractmethod
    def _submit_probe(self, probe: Probe) -> None:
        """Hand a probe to the executor (`runner.engine.probing`)."""

    @abstractmethod
    def _drop_probe(self, probe: Probe) -> None:
        """Forget a probe whose run stopped (`runner.engine.probing`)."""

    @abstractmethod
    def _probe_done(self, probe: Probe, result: TaskResult) -> None:
        """A probe's answer arrived (`runner.engine.probing`)."""
