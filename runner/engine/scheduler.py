"""Provides `Engine`: plans runs, consults the cache, drives an executor and emits events.

One scheduler thread owns all mutable state. Callers (`flow run`, the watcher, the TUI) hand it runs
and stop requests through a command queue; it pulls task logs and results from the executor and
emits events to subscribers. Several runs may be in flight at once (the TUI, a save during a run):
an execution is shared by fingerprint, so a run that needs a result another run is computing joins
it instead of starting it twice, and stopping a run kills only executions no other run waits for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from dsl.errors import FlowError
from dsl.loader import LoadedFlow
from runner.engine.deciding import Deciding
from runner.engine.model import Planning, Run, RunHandle, RunRequest, StepState, Subscriber
from runner.events import RunStarted, StepLog
from runner.executors.base import TaskDone, TaskEvent, TaskLog, TaskLogs, TaskStarted
from runner.fingerprint import StaticPrint, static_prints
from runner.selection import external_inputs, select_steps
from runner.status import OK, RunStatus

CRASHES_IN_A_ROW = 3
"""Internal errors in consecutive scheduler cycles after which the scheduler gives up (each one
already failed every run in flight; an error that recurs with no run in flight would spin)."""


class Engine(Deciding):
    """Runs flows: planning, cache, execution through an `Executor`, events, persistence.

    The public API (`start`, `run`, `cancel`, `close`, `subscribe`, `publish`) may be called from any
    thread; the rest runs on the scheduler thread (see `runner.engine.state`).

    Args:
        store: the run store (any `runner.store.api.EngineStore`).
        executor: where steps run.
        subscribers: receive every event (from the scheduler thread; keep them quick).
    """

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; return a function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def static_prints(self, loaded: LoadedFlow) -> dict[str, StaticPrint]:
        """The load-time fingerprint parts of every step (computed once per load)."""
        with self._statics_lock:
            prints = self._statics.get(loaded.load_id)
            if prints is None:
                prints = self._statics[loaded.load_id] = static_prints(loaded)
                if len(self._statics) > 8:
                    self._statics.pop(next(iter(self._statics)))
        return prints

    def start(self, request: RunRequest) -> RunHandle:
        """Plan and start a run; return at once.

        Raises:
            FlowError: the selection names no step, or a step upstream of the selection has no
                cached result for the current code and parameters. Nothing has run then.
        """
        graph = request.loaded.graph
        scope = select_steps(graph, request.only, request.from_steps, request.to_steps)
        static = self.static_prints(request.loaded)
        first = request.loaded.name not in self._flows_seen
        if first:
            # This engine's first run of the flow: its in-memory index (`CacheIndex`) knows nothing of
            # it. Read before the run's first write starts the store's writer thread, which, opening
            # its connection meanwhile, took the GIL each time the query gave it up for a row (a new
            # engine's cached re-run of 1,000 steps used ~1 µs a step more CPU).
            last = self.store.cache_hits_of_last_run(request.loaded.name)
            prefetched = last.hits
            # Their metrics too, here: asked by the scheduler thread, the first query opened its own
            # connection to the store (~0.3 ms of a fully cached re-run, which needs none otherwise).
            sources = {hit[1] for hit in prefetched.values() if hit[1] is not None}
            source_metrics = self.store.metrics_by_fingerprint(sources)
        run_id = self.store.create_run(
            request.loaded.name, str(request.loaded.path), request.params, request.trigger, self.executor.name
        )
        self._recorder.record_sources(run_id, request.loaded.sources)
        run = Run(
            id=run_id,
            request=request,
            static=static,
            scope=scope,
            inside=frozenset(scope),
            states={name: StepState(name) for name in graph.order},
            handle=RunHandle(run_id),
            started=time.time(),
        )
        if request.resume_of is not None:
            old = self.store.get_run(request.resume_of)
            if old is not None:
                run.resume = {
                    s.name: (s.fingerprint, s.output_hash)
                    for s in old.steps
                    if s.status in OK and s.fingerprint and s.output_hash
                }
        self._index.refresh(len(scope))
        if first:
            self._flows_seen.add(request.loaded.name)
            self._kept_hits.setdefault(request.loaded.name, (last.kept_run, frozenset(prefetched)))
            run.prefetched = prefetched
            run.found = {}
            run.generation = last.generation
            run.source_metrics = source_metrics
        external = external_inputs(graph, scope)
        try:
            if any(graph.nodes[n].step.when is not None or graph.nodes[n].step.foreach for n in external):
                if threading.current_thread() is self._thread:
                    raise RuntimeError("Engine.start cannot wait for its own scheduler (from a subscriber)")
                planning = Planning(run, deque(external))
                if not self._command(lambda: self._plan_external(planning)):
                    run.handle._finish(RunStatus.CANCELLED)
                    return run.handle
                planning.done.wait()
                if planning.error is not None:
                    raise planning.error
            else:
                with self._lock:
                    for name in external:
                        self._advance(run, name, cache_only=True)
        except BaseException:
            self.store.delete_run(run_id, reuse_id=True)
            raise
        run.remaining = len(scope)
        self._stops.watch(run.handle)
        if not self._command(lambda: self._guarded([run], self._begin, run)):
            run.handle._finish(RunStatus.CANCELLED)  # its row is marked interrupted when the store next opens
        return run.handle

    def warm(self, flow_file: Path) -> None:
        """Have a worker ready for a run of `flow_file`: with none started yet, one starts now and
        imports the file's libraries (the TUI calls this as a flow opens: its first run, whenever the
        user starts it, does not wait for them)."""

        def warm_up() -> None:
            self._preload_for(flow_file)
            prestart = getattr(self.executor, "prestart", None)
            if prestart is not None:
                prestart(1)

        self._command(warm_up)

    def _preload_for(self, flow_file: Path) -> None:
        """Workers started from now on import `flow_file`'s libraries first (executors that can)."""
        preload_for = getattr(self.executor, "preload_for", None)
        if preload_for is not None:
            preload_for(str(flow_file))

    def run(self, request: RunRequest) -> RunHandle:
        """Start a run and wait for it to end."""
        handle = self.start(request)
        handle.wait()
        return handle

    def cancel(self, run_id: int | None = None, *, reason: str = "stopped") -> None:
        """Stop a run (or every run): running steps are killed, finished results kept; each step not
        finished is recorded as "the run was {reason}"."""
        self._command(lambda: self._cancel(run_id, reason))

    def close(self) -> None:
        """Stop every run, then the scheduler and the executor's workers."""
        with self._lock:
            self._closed = True  # from now on no scheduler thread starts (see `_command`)
        self._stops.close()
        if self._thread is not None:
            done = threading.Event()

            def stop() -> None:
                self._cancel(None)
                for planning in list(self._plannings):
                    self._end_planning(planning, FlowError("the engine closed before the run started"))
                self._closing = True
                done.set()

            self._command(stop)
            self._thread.join()
            self._thread = None
        self._wait_job_kills()
        self.executor.close()
        self.store.flush()

    @property
    def active_runs(self) -> list[int]:
        return list(self._runs)

    def _command(self, fn: Callable[[], None]) -> bool:
        """Hand `fn` to the scheduler thread (started on first use); False once the engine is closed
        and its scheduler gone (a run started while the app quits then never starts)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    if self._closed:
                        return False
                    self._thread = threading.Thread(target=self._loop, name="flow-scheduler", daemon=True)
                    self._thread.start()
        self._commands.append(fn)
        self.executor.wakeup()
        return True

    def _loop(self) -> None:
        """Run scheduler cycles until closed. An exception in the engine's own code fails the runs it
        concerns (recorded, handles released, reported on stderr) and the scheduler carries on."""
        crashes = 0
        while not self._closing:
            try:
                self._cycle()
                crashes = 0
            except BaseException as exc:  # noqa: BLE001 - whatever it is, no run may hang on it
                crashes += 1
                with self._lock:
                    self._internal_error(exc, None)
                if crashes >= CRASHES_IN_A_ROW and not self._runs:
                    with self._lock:
                        self._closed = True  # `_command` now refuses: a new run is cancelled, not lost
                        self._thread = None
                        for planning in list(self._plannings):
                            self._end_planning(planning, FlowError(f"the scheduler failed: {exc!r}"))
                    return

    def _cycle(self) -> None:
        with self._lock:
            while self._commands:
                self._commands.popleft()()
            if self._closing:
                return
            self._drain_ready()
            self._timers()
            if self._remote:
                self._poll_remote()
            self._dispatch()
            wait = self._next_wait()
            self._recorder.write_held()  # about to wait: a starting run's first rows go to the writer
        events = self.executor.events(wait)
        with self._lock:
            self._held = []
            try:
                self._take(events)
            finally:
                try:
                    self._release_held()
                finally:
                    self._held = None

    def _take(self, events: list[TaskEvent]) -> None:
        """Take what the executor reported. The steps its results made ready are decided and handed to
        free workers before the events of the batch are delivered (recorded, shown): on a chain, the
        worker runs the next step while the runner records the last one. A command queued meanwhile
        (a stop) goes first: those steps then wait for the next cycle, as before."""
        results = False
        for event in events:
            if isinstance(event, TaskLogs):
                for run, name in self._listeners(event.task_id):
                    for stream, line, ts in event.lines:
                        self._emit(StepLog(run.id, name, stream, line, ts))
            elif isinstance(event, TaskLog):
                for run, name in self._listeners(event.task_id):
                    self._emit(StepLog(run.id, name, event.stream, event.line, event.ts))
            elif isinstance(event, TaskDone):
                self._task_done(event.task_id, event.result)
                results = True
            elif isinstance(event, TaskStarted):
                self._task_started(event.task_id)
        if results and not self._commands and not self._closing:
            self._drain_ready()
            self._dispatch()

    def _next_wait(self) -> float | None:
        if self._commands or any(run.ready for run in self._runs.values()):
            return 0.0
        timed = self._timed_executions()
        moments = [e.deadline for e in timed if e.deadline is not None]
        moments += [p.deadline for p in self._probes.values() if p.deadline is not None]
        moments += [due for due, _ in self._remote]
        moments += [e.retry_at for e in timed if e.retry_at is not None]
        if self._stops.due is not None:
            moments.append(self._stops.due)
        if not moments:
            return None
        return max(0.0, min(moments) - time.monotonic())

    def _begin(self, run: Run) -> None:
        self._runs[run.id] = run
        request = run.request
        self._preload_for(request.loaded.path)
        self._emit(
            RunStarted(
                run.id,
                request.loaded.name,
                str(request.loaded.path),
                dict(request.params),
                tuple(run.scope),
                request.trigger,
                run.started,
            )
        )
        graph = run.graph
        urgent = {name for name in request.prioritise if name in run.inside}
        for name in list(urgent):
            urgent |= graph.ancestors(name) & run.inside
        run.urgent = frozenset(urgent)
        whole = len(run.inside) == len(graph.nodes)  # then every upstream step is in the run
        for name in run.scope:
            state = run.states[name]
            upstream = graph.nodes[name].upstream
            state.pending = len(upstream) if whole else sum(1 for u in upstream if u in run.inside)
            if state.pending == 0:
                run.make_ready(name)
        if not run.scope:
            self._maybe_finish(run)
        self._decide_ready(run)
        if request.supersedes is not None:
            self._cancel(request.supersedes, reason=f"superseded by run #{run.id}", keep_for=run)

    def _drain_ready(self) -> None:
        for run in list(self._runs.values()):
            if run.ready:
                self._guarded([run], self._decide_ready, run)

    def _decide_ready(self, run: Run) -> None:
        """Decide the ready steps; an execution starts as soon as it is decided (a free worker
        need not wait for the rest of a big flow's cached steps to be checked). Once a decision
        queues an execution with a slot's worth waiting already, the rest wait for the next cycle
        (`_drain_ready`): the workers' results are taken first. A 1,000-wide fan-out's workers
        otherwise sat idle while its last ~980 steps were decided (~20 ms)."""
        queue = self._queue
        while run.ready and not run.cancelled:
            queued = len(queue)
            self._advance(run, run.ready.popleft())
            if (queue or self._probe_queue) and self._busy < self.executor.slots:
                self._dispatch()
            if len(queue) > queued and len(queue) >= self.executor.slots:
                return
