"""Provides `Engine`: plans runs, consults the cache, drives an executor and emits events.

One scheduler thread owns all mutable state. Callers (`flow run`, the watcher, the TUI) hand it runs
and stop requests through a command queue; it pulls task logs and results from the executor and
emits events to subscribers. Several runs may be in flight at once (the TUI, a save during a run):
an execution is shared by fingerprint, so a run that needs a result another run is computing joins
it instead of starting it twice, and stopping a run kills only executions no other run waits for.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import pickle
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from dsl.errors import FlowError
from dsl.graph import Node
from dsl.loader import LoadedFlow
from runner import flow_outputs
from runner.artifacts import ArtifactError, content_hash
from runner.events import (
    Event,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
    StepRetrying,
    StepStarted,
)
from runner.executors.base import (
    Executor,
    InputRef,
    Task,
    TaskDone,
    TaskLog,
    TaskLogs,
    TaskResult,
    TaskStarted,
)
from runner.fingerprint import StaticPrint, Untrusted, combine, explain, static_prints, value_hash
from runner.fingerprint.declared import declared_inputs
from runner.probes import PROBE_TIMEOUT_S, foreach_probe, plain_loads, when_probe
from runner.selection import external_inputs, select_steps
from runner.shipping import pickle_code
from runner.store import CacheHit, Store

Subscriber = Callable[[Event], None]
FINAL = frozenset({"succeeded", "cached", "failed", "skipped", "cancelled"})
OK = frozenset({"succeeded", "cached"})


@dataclass
class RunRequest:
    """What to run.

    Attributes:
        loaded: the flow, loaded.
        params: every flow parameter's value (see `runner.params.resolve_params`).
        only, from_steps, to_steps: the selection (`--only/--from/--to`).
        force: execute every selected step even when cached.
        force_steps: execute these steps (and so whatever their new outputs invalidate) even when cached.
        trigger: what started the run, shown in the history (`cli`, `watch: train.py`, `resume of #3`).
        resume_of: a run whose successful results are reused where fingerprints still match, even for
            `cache=False` steps.
        supersedes: a run still in flight that this one replaces (a save during a run): once this run
            has joined every execution whose fingerprint is unchanged, the old run is stopped, which
            kills only the executions no longer wanted.
        prioritise: steps to reach first (a save's changed steps): they and their upstream steps are
            decided before the rest, so the step just edited starts as soon as it can.
    """

    loaded: LoadedFlow
    params: dict[str, Any]
    only: tuple[str, ...] = ()
    from_steps: tuple[str, ...] = ()
    to_steps: tuple[str, ...] = ()
    force: bool = False
    force_steps: tuple[str, ...] = ()
    trigger: str = "cli"
    resume_of: int | None = None
    supersedes: int | None = None
    prioritise: tuple[str, ...] = ()


@dataclass
class Output:
    """A step's output as the runner holds it: a hash, and bytes, a file, or fan-out parts."""

    hash: str
    data: bytes | None = None
    path: str | None = None
    parts: tuple[Output, ...] | None = None


NONE_OUTPUT_HASH = "none"
START_GRACE_S = 60.0
"""How long a worker may take to start a task (interpreter start, imports) before its timeout counts."""
CACHED_ROWS_PER_STEP = 20
"""A run loads the cache's new fingerprints if there are at most this many per step in its scope
(plus 1,000): loading a row costs far less than one SQLite lookup on the scheduler thread."""
OTHERS_CHECK_S = 0.25
"""How often the engine looks for another live process on its store (then steps are leased)."""
REMOTE_POLL_S = 0.1
"""How often a step waiting on another process's computation of the same fingerprint checks again."""
CODE_CHUNK = 64
"""Steps pickled together per code bundle (cloudpickle's per-call cost dominates for small functions)."""
CRASHES_IN_A_ROW = 3
"""Internal errors in consecutive scheduler cycles after which the scheduler gives up (each one
already failed every run in flight; an error that recurs with no run in flight would spin)."""


@dataclass
class StepState:
    """A step's progress within one run."""

    name: str
    status: str = "pending"
    attempts: int = 0
    reason: str = ""
    fingerprint: str | None = None
    detail: dict[str, Any] | None = None
    output: Output | None = None
    error: str | None = None
    instances: list[str] | None = None
    parent: str | None = None
    pending: int = 0
    """Fan-out instances, or upstream steps in the run's scope, not yet final."""
    preview: str | None = None
    """The worker's short repr of the output (flow outputs fall back on it for objects)."""


class RunHandle:
    """A started run: its id, and a way to wait for its end."""

    def __init__(self, run_id: int) -> None:
        self.id = run_id
        self.status = "running"
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or `timeout`); return its status."""
        self._done.wait(timeout)
        return self.status

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _finish(self, status: str) -> None:
        self.status = status
        self._done.set()


@dataclass
class _Run:
    id: int
    request: RunRequest
    static: dict[str, StaticPrint]
    scope: list[str]
    states: dict[str, StepState]
    handle: RunHandle
    started: float
    ready: deque[str] = field(default_factory=deque)
    remaining: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, tuple[str, str]] = field(default_factory=dict)
    previous: dict[str, dict[str, Any]] | None = None
    inside: frozenset[str] = frozenset()
    source_metrics: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    prefetched: dict[str, CacheHit] = field(default_factory=dict)
    """Cache entries of the fingerprints the flow's last run used, read at the start (see `start`)."""
    cancelled: bool = False
    failure: str | None = None
    """Set when the runner itself failed the run (an internal error): the run ends `failed`."""
    urgent: frozenset[str] = frozenset()
    """`prioritise` and its upstream steps: put at the front of `ready`."""

    def make_ready(self, name: str) -> None:
        if name in self.urgent:
            self.ready.appendleft(name)
        else:
            self.ready.append(name)

    @property
    def graph(self) -> Any:
        return self.request.loaded.graph


@dataclass
class _Execution:
    """One task (with its retries) that one or more runs wait on, keyed by fingerprint."""

    key: str
    task: Task
    retries: int
    retry_delay: float
    waiters: list[tuple[_Run, str]]
    loaded: LoadedFlow | None = None
    submitted: bool = False
    deadline: float | None = None
    retry_at: float | None = None
    started: float = 0.0


@dataclass
class _Probe:
    """A question user code must answer before a step is decided (see `runner.probes`): a `when=`
    predicate (`kind` "when") or a `foreach` iteration ("foreach"), run as a task like a step."""

    kind: str
    run: _Run
    name: str
    task: Task
    cache_only: bool
    planning: _Planning | None = None
    submitted: bool = False
    deadline: float | None = None


@dataclass
class _Planning:
    """`start` resolving the steps upstream of a selection (`--only`/`--from`) whose decision needs
    a probe: that runs on the scheduler thread, and `start` waits for `done`."""

    run: _Run
    todo: deque[str]
    done: threading.Event = field(default_factory=threading.Event)
    advanced: set[str] = field(default_factory=set)
    error: BaseException | None = None


class Engine:
    """Runs flows: planning, cache, execution through an `Executor`, events, persistence.

    Args:
        store: the run store.
        executor: where steps run.
        subscribers: receive every event (from the scheduler thread; keep them quick).
    """

    def __init__(self, store: Store, executor: Executor, subscribers: Iterable[Subscriber] = ()) -> None:
        # Everything alive now (imported modules, a loaded flow, the UI) lives as long as the
        # process: leave it out of every later garbage collection. A full collection of that heap
        # took 40-120 ms and landed in the middle of runs and reloads.
        gc.freeze()
        self.store = store
        self.executor = executor
        self._recorder = store.recorder()
        self._subscribers: list[Subscriber] = list(subscribers)
        self._commands: deque[Callable[[], None]] = deque()
        self._runs: dict[int, _Run] = {}
        self._executions: dict[str, _Execution] = {}
        self._parked: dict[str, int] = {}
        self._remote: list[tuple[float, tuple[Any, ...]]] = []
        self._others_checked = -1.0
        self._others = False
        self._cached: set[int] = set()
        """`hash()` of every fingerprint in the store's cache as of `_cached_rowid` (see `_uncached`)."""
        self._cached_rowid = 0
        self._cached_fresh = False
        self._gc_generation = store.gc_generation()
        self._flows_seen: set[str] = set()
        self._unusable: dict[str, str] = {}
        """Fingerprints whose stored result turned out missing or corrupt: why (the re-run's reason)."""
        self._leases: set[str] = set()
        self._by_task: dict[str, _Execution] = {}
        self._queue: deque[_Execution] = deque()
        self._busy = 0
        self._recent: dict[str, tuple[str, int | None, str | None]] = {}
        self._stamps: dict[str, tuple[str, int, int]] = {}
        self._codes: dict[str, bytes] = {}
        self._broken_bundles: set[str] = set()
        self._orders: dict[str, dict[str, int]] = {}
        self._details: dict[tuple[str, str], dict[str, Any]] = {}
        self._statics: dict[str, dict[str, StaticPrint]] = {}
        self._task_ids = itertools.count(1)
        self._probes: dict[str, _Probe] = {}
        self._probe_queue: deque[_Probe] = deque()
        self._plannings: list[_Planning] = []
        self._closing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        store.mark_interrupted()

    # ----- public API (any thread) ------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; return a function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def static_prints(self, loaded: LoadedFlow) -> dict[str, StaticPrint]:
        """The load-time fingerprint parts of every step (computed once per load)."""
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
        run_id = self.store.create_run(
            request.loaded.name, str(request.loaded.path), request.params, request.trigger, self.executor.name
        )
        run = _Run(
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
        self._refresh_cached(len(scope))
        if request.loaded.name not in self._flows_seen:
            # This engine's first run of the flow: its in-memory index (`_recent`) knows nothing of it.
            self._flows_seen.add(request.loaded.name)
            run.prefetched = self.store.cache_hits_of_last_run(request.loaded.name)
        external = external_inputs(graph, scope)
        try:
            if any(graph.nodes[n].step.when is not None or graph.nodes[n].step.foreach for n in external):
                if threading.current_thread() is self._thread:
                    raise RuntimeError("Engine.start cannot wait for its own scheduler (from a subscriber)")
                planning = _Planning(run, deque(external))
                if not self._command(lambda: self._plan_external(planning)):
                    run.handle._finish("cancelled")
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
        if not self._command(lambda: self._guarded([run], self._begin, run)):
            run.handle._finish("cancelled")  # its row is marked interrupted when the store next opens
        return run.handle

    def run(self, request: RunRequest) -> RunHandle:
        """Start a run and wait for it to end."""
        handle = self.start(request)
        handle.wait()
        return handle

    def cancel(self, run_id: int | None = None) -> None:
        """Stop a run (or every run): running steps are killed, finished results kept."""
        self._command(lambda: self._cancel(run_id))

    def close(self) -> None:
        """Stop every run, then the scheduler and the executor's workers."""
        with self._lock:
            self._closed = True  # from now on no scheduler thread starts (see `_command`)
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
        self.executor.close()
        self.store.flush()

    @property
    def active_runs(self) -> list[int]:
        return list(self._runs)

    # ----- scheduler thread ---------------------------------------------------------------------

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
        events = self.executor.events(wait)
        with self._lock:
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
                elif isinstance(event, TaskStarted):
                    self._task_started(event.task_id)

    def _listeners(self, task_id: str) -> list[tuple[_Run, str]]:
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

    def _guarded(self, runs: list[_Run], fn: Callable[..., None], *args: Any) -> None:
        """Call `fn`; an exception from it fails `runs` (not every run in flight)."""
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - see `_internal_error`
            self._internal_error(exc, runs)

    def _internal_error(self, exc: BaseException, runs: list[_Run] | None) -> None:
        """A bug (or a broken environment) surfaced in the engine's code: fail the runs concerned
        (None: every run in flight) so they are recorded `failed`, their steps killed, and their
        handles released; print the traceback, since this is not the user's mistake."""
        try:
            detail = "".join(traceback.format_exception(exc)).rstrip()
            print(f"flow: internal error in the scheduler:\n{detail}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - a closed stderr must not stop the runs from ending
            pass
        error = f"internal error in the runner: {type(exc).__name__}: {exc}"
        for run in list(self._runs.values()) if runs is None else runs:
            try:
                self._cancel(run.id, reason="failed", failure=error)
            except BaseException:  # noqa: BLE001 - the last resort below still ends the run
                pass
            if not run.handle.done:
                self._abandon(run, error)

    def _abandon(self, run: _Run, error: str) -> None:
        """The last resort when even failing a run raised: record it failed and release its handle."""
        self._runs.pop(run.id, None)
        now = time.time()
        for record in (
            lambda: self._emit(RunFinished(run.id, "failed", now - run.started, {}, now)),
            lambda: self.store.abandon_run(run.id, error),
        ):
            try:
                record()
            except BaseException:  # noqa: BLE001 - the handle is released whatever happens
                pass
        run.handle._finish("failed")

    def _next_wait(self) -> float | None:
        if self._commands or any(run.ready for run in self._runs.values()):
            return 0.0
        moments = [e.deadline for e in self._executions.values() if e.deadline is not None]
        moments += [p.deadline for p in self._probes.values() if p.deadline is not None]
        moments += [due for due, _ in self._remote]
        moments += [e.retry_at for e in self._executions.values() if e.retry_at is not None]
        if not moments:
            return None
        return max(0.0, min(moments) - time.monotonic())

    def _begin(self, run: _Run) -> None:
        self._runs[run.id] = run
        request = run.request
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
        for name in run.scope:
            state = run.states[name]
            state.pending = sum(1 for u in graph.nodes[name].upstream if u in run.inside)
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

    def _decide_ready(self, run: _Run) -> None:
        """Decide every ready step; an execution starts as soon as it is decided (a free worker
        need not wait for the rest of a big flow's cached steps to be checked)."""
        while run.ready and not run.cancelled:
            self._advance(run, run.ready.popleft())
            if (self._queue or self._probe_queue) and self._busy < self.executor.slots:
                self._dispatch()

    # ----- deciding what a step does ------------------------------------------------------------

    def _advance(
        self,
        run: _Run,
        name: str,
        *,
        cache_only: bool = False,
        when_checked: bool = False,
        items: list[bytes] | None = None,
    ) -> None:
        """All upstream steps of `name` are final: skip it, reuse a cached result, or execute it.

        A `when=` predicate or a `foreach` iteration is user code: it is asked of a probe task
        (`_ask`), and the step is advanced again with the answer (`when_checked`, `items`)."""
        node: Node = run.graph.nodes[name]
        item = node.step
        states = run.states
        upstream = [states[u] for u in node.upstream]
        skip = self._trigger_blocks(item.trigger, upstream)
        if skip is not None:
            self._finish(run, name, "skipped" if "cancelled" not in skip else "cancelled", reason=skip)
            return
        if item.when is not None and not when_checked:
            self._ask(run, name, "when", node.when_args, cache_only)
            return
        if item.foreach is not None and items is None:
            self._ask(run, name, "foreach", (item.foreach,), cache_only)
            return
        static = run.static[name]
        params = {}
        try:
            for p in node.params:
                params[p] = value_hash(run.request.params[p])
        except Untrusted as exc:
            static = StaticPrint(code="", untrusted=f"parameter value: {exc}")
        inputs = {u: (states[u].output.hash if states[u].output else NONE_OUTPUT_HASH) for u in node.upstream}
        declared = declared_inputs(item, run.request.loaded.root) if item.inputs or item.env else None
        if items is not None:
            self._fan_out(run, name, node, static, params, inputs, cache_only, items, declared)
            return
        fingerprint, detail = combine(static, params, inputs, declared=declared)
        self._execute_or_reuse(run, name, name, node, static, fingerprint, detail, cache_only, None)

    @staticmethod
    def _trigger_blocks(rule: str, upstream: list[StepState]) -> str | None:
        """None if the trigger rule lets the step run, else why it is skipped (or cancelled)."""
        if not upstream or rule == "all_done":
            return None
        cancelled = [s for s in upstream if s.status == "cancelled"]
        if cancelled:
            return f"upstream '{cancelled[0].name}' was cancelled"
        failed = [s for s in upstream if s.status == "failed"]
        not_ok = [s for s in upstream if s.status not in OK]
        if rule == "all_succeeded" and not_ok:
            first = not_ok[0]
            verb = "failed" if first.status == "failed" else "was skipped"
            return f"upstream '{first.name}' {verb}"
        if rule == "none_failed" and failed:
            return f"upstream '{failed[0].name}' failed"
        if rule == "any_succeeded" and len(not_ok) == len(upstream):
            return "no upstream step succeeded"
        return None

    def _fan_out(
        self,
        run: _Run,
        name: str,
        node: Node,
        static: StaticPrint,
        params: dict[str, str],
        inputs: dict[str, str],
        cache_only: bool,
        pickled: list[bytes],
        declared: dict[str, str] | None,
    ) -> None:
        arg = node.step.foreach
        assert arg is not None
        state = run.states[name]
        state.instances = []
        state.status = "running"
        if not pickled:
            self._finish_fan_out(run, name)
            return
        instances = [f"{name}[{index}]" for index in range(len(pickled))]
        for instance in instances:
            run.states[instance] = StepState(instance, parent=name)
        state.instances = instances
        state.pending = len(instances)
        own_inputs = {k: v for k, v in inputs.items() if k != arg}
        for instance, data in zip(instances, pickled, strict=True):
            item_hash = content_hash(data)
            fingerprint, detail = combine(static, params, own_inputs, item=item_hash, declared=declared)
            self._execute_or_reuse(
                run, instance, name, node, static, fingerprint, detail, cache_only, (arg, item_hash, data)
            )

    # ----- probes: user code that decides a step, run where a timeout and a stop apply -----------

    def _ask(self, run: _Run, name: str, kind: str, args: Iterable[str], cache_only: bool) -> None:
        """Ask a probe task for a step's `when=` answer or `foreach` items; `_probe_done` goes on."""
        node = run.graph.nodes[name]
        what = "when= predicate" if kind == "when" else f"foreach '{node.step.foreach}'"
        kwargs: dict[str, InputRef] = {}
        try:
            for arg in args:
                if arg in run.graph.nodes:
                    kwargs[arg] = self._input_ref(run.states[arg].output)
                else:
                    kwargs[arg] = InputRef(hash="", data=pickle.dumps(run.request.params[arg], protocol=5))
        except ArtifactError as exc:
            self._finish(run, name, "failed", error=f"an input of the {what} could not be read: {exc}")
            return
        except Exception as exc:
            self._finish(run, name, "failed", error=f"a parameter of the {what} cannot be pickled: {exc}")
            return
        try:
            code_key, code = self._probe_code(run.request.loaded, name, kind)
        except Exception as exc:
            self._finish(run, name, "failed", error=f"the {what} cannot be shipped to a worker: {exc}")
            return
        task = Task(
            id=f"t{next(self._task_ids)}",
            step=name,
            code_key=code_key,
            code=code,
            kwargs=kwargs,
            run_id=run.id,
            timeout=node.step.timeout or PROBE_TIMEOUT_S,
            sys_path=(str(run.request.loaded.root),),
            entry=kind,
        )
        probe = _Probe(kind, run, name, task, cache_only)
        if cache_only:
            probe.planning = next((p for p in self._plannings if p.run is run), None)
        run.states[name].status = "asking"
        self._probes[task.id] = probe
        self._probe_queue.append(probe)

    def _probe_code(self, loaded: LoadedFlow, name: str, kind: str) -> tuple[str, bytes]:
        """(code_key, pickled code) of a step's probe: its predicate, or the foreach iteration."""
        key = f"{loaded.load_id}:{kind}:{name}"
        code = self._codes.get(key)
        if code is None:
            step = loaded.graph.nodes[name].step
            for module_name in [loaded.module.__name__, *loaded.local_modules]:
                if module_name in sys.modules:
                    cloudpickle.register_pickle_by_value(sys.modules[module_name])
            assert step.foreach is not None or kind == "when"
            fn = when_probe(step.when) if kind == "when" else foreach_probe(step.foreach or "")
            code = self._codes[key] = pickle_code({kind: fn})
        return key, code

    def _submit_probe(self, probe: _Probe) -> None:
        probe.submitted = True
        timeout = probe.task.timeout or PROBE_TIMEOUT_S
        if getattr(self.executor, "reports_start", False):
            timeout += START_GRACE_S  # tightened to the timeout when the worker says it started
        probe.deadline = time.monotonic() + timeout
        self._busy += 1
        self.executor.submit(probe.task)

    def _drop_probe(self, probe: _Probe) -> None:
        """Forget a probe whose run stopped (killing its task if it runs)."""
        self._probes.pop(probe.task.id, None)
        if probe.submitted:
            probe.submitted = False
            self.executor.cancel(probe.task.id)
            self._busy -= 1
        elif probe in self._probe_queue:
            self._probe_queue.remove(probe)

    def _probe_done(self, probe: _Probe, result: TaskResult) -> None:
        if probe.submitted:
            probe.submitted = False
            self._busy -= 1
        run, name = probe.run, probe.name
        if run.states[name].status != "asking":
            return  # the run stopped meanwhile
        run.states[name].status = "ready"
        planning = probe.planning
        if planning is None:
            self._answer(probe, result)
            return
        try:
            self._answer(probe, result)
        except BaseException as exc:  # noqa: BLE001 - handed to `start`, which raises it
            self._end_planning(planning, exc)
            return
        self._plan_external(planning)

    def _answer(self, probe: _Probe, result: TaskResult) -> None:
        """Go on deciding the step with the probe's answer (or fail it with the probe's failure)."""
        run, name = probe.run, probe.name
        step = run.graph.nodes[name].step
        what = "the when= predicate" if probe.kind == "when" else f"foreach '{step.foreach}'"
        answer: Any = None
        error = result.error or "no answer"
        if result.ok:
            try:
                answer = plain_loads(result.data or b"")
            except Exception as exc:
                error = f"its answer could not be read: {exc}"
        valid = (
            isinstance(answer, bool)
            if probe.kind == "when"
            else isinstance(answer, list) and all(isinstance(i, bytes) for i in answer)
        )
        if not result.ok or not valid:
            error = error.replace("the step called", "it called").replace("the step's process", "its process")
            error = error.removeprefix("ForeachItemUnstorable: ")
            self._finish(run, name, "failed", error=f"{what} failed: {error}", traceback=result.traceback)
        elif probe.kind == "when" and not answer:
            self._finish(run, name, "skipped", reason="condition (when=) is false")
        elif probe.kind == "when":
            self._advance(run, name, cache_only=probe.cache_only, when_checked=True)
        else:
            self._advance(run, name, cache_only=probe.cache_only, when_checked=True, items=answer)

    def _plan_external(self, planning: _Planning) -> None:
        """Decide the steps upstream of a selection in order; a probe pauses this until its answer."""
        if planning not in self._plannings:
            self._plannings.append(planning)
        run = planning.run
        try:
            while planning.todo:
                name = planning.todo[0]
                if run.states[name].status == "asking":
                    return
                if name not in planning.advanced:
                    planning.advanced.add(name)
                    self._advance(run, name, cache_only=True)
                    if run.states[name].status == "asking":
                        return
                planning.todo.popleft()
        except BaseException as exc:  # noqa: BLE001 - handed to `start`, which raises it
            self._end_planning(planning, exc)
            return
        self._end_planning(planning, None)

    def _end_planning(self, planning: _Planning, error: BaseException | None) -> None:
        if planning in self._plannings:
            self._plannings.remove(planning)
        if error is not None:
            for probe in [p for p in self._probes.values() if p.run is planning.run]:
                self._drop_probe(probe)
        planning.error = error
        planning.done.set()

    def _execute_or_reuse(
        self,
        run: _Run,
        name: str,
        step_name: str,
        node: Node,
        static: StaticPrint,
        fingerprint: str,
        detail: dict[str, Any],
        cache_only: bool,
        item: tuple[str, str, bytes] | None,
    ) -> None:
        state = run.states[name]
        request = run.request
        forced = (request.force and step_name in run.inside) or step_name in request.force_steps
        if static.untrusted:
            fingerprint = f"untrusted-{uuid.uuid4().hex}"
        state.fingerprint = fingerprint
        state.detail = detail
        if not forced and not static.untrusted:
            hit = self._reusable(run, name, fingerprint, node.step.cache)
            if hit is not None:
                output_hash, from_run, preview_text = hit
                state.output = Output(output_hash)
                self._remember_detail(run, name, detail)
                where = f"run #{from_run}" if from_run else "the cache"
                self._finish(
                    run,
                    name,
                    "cached",
                    reason=f"cached: same fingerprint as {where}",
                    preview_text=preview_text,
                    metrics=self._metrics_of(run, from_run, fingerprint),
                )
                return
        if cache_only:
            raise FlowError(
                "it is upstream of the selected steps but has no cached result for the "
                "current code and parameters; run it first (or drop --only/--from)",
                step=step_name,
            )
        if not forced and not static.untrusted and fingerprint not in self._executions:
            other = self._computing_elsewhere(fingerprint)
            if other is not None:
                state.status = "running"
                waiting = f"waiting: {other} is computing the same step"
                if state.reason != waiting:  # said once, not at every poll
                    state.reason = waiting
                    self._emit(StepStarted(run.id, name, 0, state.reason, fingerprint, time.time()))
                retry = (run, name, step_name, node, static, fingerprint, detail, item)
                self._remote.append((time.monotonic() + REMOTE_POLL_S, retry))
                return
        if forced:
            reason = "forced"
        elif static.untrusted:
            reason = f"cannot fingerprint ({static.untrusted}); always runs"
        elif not node.step.cache:
            reason = "cache disabled (cache=False)"
        elif fingerprint in self._unusable:
            reason = f"its cached result could not be used: {self._unusable.pop(fingerprint)}"
        else:
            reason = explain(self._previous_detail(run, name), detail)
        state.reason = reason
        state.status = "running"
        execution = self._executions.get(fingerprint)
        if execution is not None and not forced:
            self._parked.pop(fingerprint, None)
            execution.waiters.append((run, name))
            state.attempts = execution.task.attempt
            state.reason = f"{reason} (joined the execution already running)"
            if execution.submitted:
                self._emit(StepStarted(run.id, name, state.attempts, state.reason, fingerprint, time.time()))
            return
        if self._parked:
            self._release_parked(run, name)
        kwargs: dict[str, InputRef] = {}
        try:
            for arg, upstream in node.inputs.items():
                kwargs[arg] = self._input_ref(run.states[upstream].output)
        except ArtifactError as exc:
            self._unclaim(fingerprint)
            self._finish(run, name, "failed", error=f"an input could not be read: {exc}")
            return
        for p in node.params:
            value = request.params[p]
            kwargs[p] = InputRef(hash=detail["params"].get(p, ""), data=pickle.dumps(value, protocol=5))
        if item is not None:
            arg, item_hash, data = item
            kwargs[arg] = InputRef(hash=item_hash, data=data)
        try:
            code_key, code, entry = self._code(request.loaded, step_name)
        except Exception as exc:
            self._unclaim(fingerprint)
            self._finish(run, name, "failed", error=f"the step's code cannot be shipped to a worker: {exc}")
            return
        task = Task(
            id=f"t{next(self._task_ids)}",
            step=name,
            code_key=code_key,
            code=code,
            kwargs=kwargs,
            run_id=run.id,
            attempt=1,
            timeout=node.step.timeout,
            artifact_dir=str(self.store.artifact_dir),
            sys_path=(str(request.loaded.root), *request.loaded.search_paths),
            resources=dict(node.step.resources),
            entry=entry,
            expect=static.files,
        )
        execution = _Execution(
            key=fingerprint,
            task=task,
            retries=node.step.retries,
            retry_delay=node.step.retry_delay,
            waiters=[(run, name)],
            loaded=request.loaded,
        )
        if not forced or fingerprint not in self._executions:
            self._executions[fingerprint] = execution
        self._by_task[task.id] = execution
        self._queue.append(execution)

    def _reusable(
        self, run: _Run, name: str, fingerprint: str, cache: bool
    ) -> tuple[str, int | None, str | None] | None:
        """A stored (output hash, run, preview) for this fingerprint whose artifact is present and intact."""
        recent = self._recent.get(fingerprint) if cache else None
        if not cache:
            resumed = run.resume.get(name)
            if resumed is None or resumed[0] != fingerprint:
                return None
            found: tuple[str, int | None, str | None] = (resumed[1], run.request.resume_of, None)
        elif recent is not None:
            if self._intact_file(fingerprint):
                return recent
            self._recent.pop(fingerprint, None)
            self.store.forget_cache(fingerprint)
            self._unusable[fingerprint] = "its artifact file is gone or changed on disk"
            return None
        else:
            hit = run.prefetched.pop(fingerprint, None)
            if hit is None:
                if self._uncached(fingerprint):
                    return None
                hit = self.store.lookup(fingerprint, verify=True)
            if hit is None:
                return None
            if hit.intact:
                return (hit.output_hash, hit.run_id, hit.preview)
            found = (hit.output_hash, hit.run_id, hit.preview)
        try:
            self.store.artifact_location(found[0])
        except ArtifactError as exc:
            self._recent.pop(fingerprint, None)
            self.store.forget_cache(fingerprint)
            self._unusable[fingerprint] = str(exc)
            return None
        return found

    def _refresh_cached(self, steps: int) -> None:
        """Catch up with the cache rows written since the last run started (by anyone).

        A cold run then skips the SQLite lookup of every step whose fingerprint is not among them,
        which is most of a trivial step's cost on the scheduler. Rows are loaded only while there
        are few enough to beat one lookup per step; otherwise every step asks SQLite, as before.
        """
        generation = self.store.gc_generation()
        if generation != self._gc_generation:
            # `flow gc` removed cache entries and artifacts since: what this engine remembers of the
            # cache may name results that are gone (and the cache's rowids may be reused).
            with self._lock:
                self._gc_generation = generation
                self._recent.clear()
                self._stamps.clear()
                self._cached.clear()
                self._cached_rowid = 0
        found = self.store.cache_rows_after(self._cached_rowid, CACHED_ROWS_PER_STEP * steps + 1000)
        with self._lock:
            if found is None:
                self._cached_fresh = False
                return
            fingerprints, self._cached_rowid = found
            self._cached.update(map(hash, fingerprints))
            self._cached_fresh = True

    def _uncached(self, fingerprint: str) -> bool:
        """Surely not in the store's cache: unknown at the run's start, and not written since.

        Rows this engine writes are in `_recent`; rows another process writes during the run are
        not seen, so the answer is trusted only while no other live process uses the store (then a
        miss here could only cost a needless execution, never a stale result).
        """
        return self._cached_fresh and hash(fingerprint) not in self._cached and not self._others_live()

    def _others_live(self) -> bool:
        """Whether another live process uses this store (checked at most every `OTHERS_CHECK_S`)."""
        now = time.monotonic()
        if now - self._others_checked > OTHERS_CHECK_S:
            self._others = self.store.other_live_runs() or self.store.other_live_leases()
            self._others_checked = now
        return self._others

    def _metrics_of(self, run: _Run, from_run: int | None, fingerprint: str) -> dict[str, float] | None:
        """The metrics a cached step recorded in the run that computed it (one query per source run),
        found by fingerprint: a fan-out item's index there may differ from its index now."""
        if from_run is None:
            return None
        by_print = run.source_metrics.get(from_run)
        if by_print is None:
            by_print = run.source_metrics[from_run] = self.store.metrics_by_fingerprint(from_run)
        return by_print.get(fingerprint)

    def _computing_elsewhere(self, fingerprint: str) -> str | None:
        """Who else is computing this fingerprint now (None: this process claims it).

        Only while another live process uses this store (checked at most once a second) does a step
        cost more than nothing here: then its fingerprint is claimed with an atomic lease, and a step
        another process is executing (its `running` row) or holds the lease for is waited for. A
        process that started alone takes no leases until its next check, so two processes starting
        within `OTHERS_CHECK_S` of each other may both compute a step once; the store keeps one result.
        """
        if not self._others_live():
            return None
        other_run = self.store.running_elsewhere(fingerprint)
        if other_run is not None:
            return f"run #{other_run}"
        holder = self.store.acquire_lease(fingerprint)
        if holder is not None:
            return f"process {holder.pid}"
        self._leases.add(fingerprint)
        return None

    def _poll_remote(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._remote if entry[0] <= now]
        if not due:
            return
        self._remote = [entry for entry in self._remote if entry[0] > now]
        waited = False
        for _, (run, name, step_name, node, static, fingerprint, detail, item) in due:
            if run.cancelled or run.states[name].status in FINAL:
                continue
            run.states[name].status = "ready"
            self._execute_or_reuse(run, name, step_name, node, static, fingerprint, detail, False, item)
            waited = waited or not run.states[name].reason.startswith("waiting:")
        if waited:
            # The other process finished, or died: if it died, its run reads interrupted from now on.
            try:
                self.store.mark_interrupted()
            except (FlowError, sqlite3.Error) as exc:
                print(f"flow: could not mark a dead run interrupted: {exc}", file=sys.stderr)

    def _remember_detail(self, run: _Run, name: str, detail: dict[str, Any]) -> None:
        """What the next run of the flow compares this step against (`explain`): its fingerprint
        parts in this run, whether it executed or came from the cache."""
        self._details[(run.request.loaded.name, name)] = detail
        if len(self._details) > 100_000:
            self._details.pop(next(iter(self._details)))

    def _previous_detail(self, run: _Run, name: str) -> dict[str, Any] | None:
        """The fingerprint parts of the step in the flow's previous run (this engine's memory, else
        the store): "upstream output changed: X" only when X differs from what the user last saw."""
        flow = run.request.loaded.name
        known = self._details.get((flow, name))
        if known is not None:
            return known
        if run.previous is None:
            run.previous = self.store.previous_details(flow)
        return run.previous.get(name)

    def _intact_file(self, fingerprint: str) -> bool:
        """A file artifact this engine wrote is still the file it wrote (same size and mtime).

        Cheap enough for every cached step of a re-run; inline artifacts live in SQLite with their row.
        """
        stamp = self._stamps.get(fingerprint)
        if stamp is None:
            return True
        path, size, mtime = stamp
        try:
            status = os.stat(path)
        except OSError:
            return False
        return status.st_size == size and status.st_mtime_ns == mtime

    def _input_ref(self, output: Output | None) -> InputRef:
        if output is None:
            return InputRef(hash=NONE_OUTPUT_HASH, none=True)
        if output.parts is not None:
            return InputRef(hash=output.hash, parts=tuple(self._input_ref(p) for p in output.parts))
        if output.data is not None or output.path is not None:
            return InputRef(hash=output.hash, data=output.data, path=output.path)
        data, path = self.store.artifact_location(output.hash)
        return InputRef(hash=output.hash, data=data, path=path)

    def _plain_value(self, output: Output) -> Any:
        """An output as plain data (dicts, lists, text, numbers), for flow outputs at a run's end.

        Read with the probes' unpickler, which imports and calls nothing: the runner never runs a
        user's `__reduce__`. An object raises `pickle.UnpicklingError`; its preview is shown instead.
        """
        if output.parts is not None:
            return [self._plain_value(part) for part in output.parts]
        if output.data is None and output.path is None:
            self.store.flush()
            return plain_loads(self.store.read_artifact(output.hash))
        if output.data is not None:
            return plain_loads(output.data)
        assert output.path is not None
        with open(output.path, "rb") as handle:
            return plain_loads(handle.read())

    def _code(self, loaded: LoadedFlow, step_name: str) -> tuple[str, bytes, str]:
        """(code_key, pickled code, entry) for a step: its load's steps are pickled in chunks."""
        order = self._orders.get(loaded.load_id)
        if order is None:
            order = self._orders[loaded.load_id] = {n: i for i, n in enumerate(loaded.graph.order)}
            if len(self._orders) > 8:
                self._orders.pop(next(iter(self._orders)))
        chunk = order[step_name] // CODE_CHUNK
        key = f"{loaded.load_id}:{chunk}"
        alone = key in self._broken_bundles
        if alone:
            key = f"{loaded.load_id}:{step_name}"
        code = self._codes.get(key)
        if code is None:
            start = chunk * CODE_CHUNK
            names = [step_name] if alone else loaded.graph.order[start : start + CODE_CHUNK]
            for module_name in [loaded.module.__name__, *loaded.local_modules]:
                if module_name in sys.modules:
                    cloudpickle.register_pickle_by_value(sys.modules[module_name])
            try:
                code = pickle_code({n: loaded.graph.nodes[n].step.fn for n in names})
            except Exception:
                key = f"{loaded.load_id}:{step_name}"
                code = self._codes.get(key) or pickle_code({step_name: loaded.graph.nodes[step_name].step.fn})
            self._codes[key] = code
            if len(self._codes) > 4096:
                self._codes.pop(next(iter(self._codes)))
        return key, code, step_name

    # ----- executing ----------------------------------------------------------------------------

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
            execution.submitted = True
            execution.started = time.monotonic()
            timeout = execution.task.timeout
            if timeout and getattr(self.executor, "reports_start", False):
                timeout += START_GRACE_S  # tightened to `timeout` when the worker says it started
            execution.deadline = execution.started + timeout if timeout else None
            self._busy += 1
            for run, name in execution.waiters:
                state = run.states[name]
                state.attempts = execution.task.attempt
                self._emit(
                    StepStarted(
                        run.id, name, state.attempts, state.reason, state.fingerprint or "", time.time()
                    )
                )
            self.executor.submit(execution.task)

    def _drop(self, execution: _Execution) -> None:
        self._by_task.pop(execution.task.id, None)
        if self._executions.get(execution.key) is execution:
            del self._executions[execution.key]
        self._unclaim(execution.key)

    def _unclaim(self, fingerprint: str) -> None:
        if fingerprint in self._leases:
            self._leases.discard(fingerprint)
            self.store.release_lease(fingerprint)

    def _timers(self) -> None:
        now = time.monotonic()
        for probe in list(self._probes.values()):
            if probe.deadline is not None and now >= probe.deadline and probe.submitted:
                self.executor.cancel(probe.task.id)
                error = f"timed out after {probe.task.timeout:g}s; its process was killed"
                self._task_done(probe.task.id, TaskResult(ok=False, error=error))
        for execution in list(self._executions.values()):
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

    def _execution_done(self, execution: _Execution, result: TaskResult) -> None:
        self._busy -= 1
        execution.submitted = False
        execution.deadline = None
        task = execution.task
        if self._unbundle(execution, result):
            return
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
                self._remember_detail(run, name, state.detail)
            if result.ok:
                state.output = output
                self._finish(
                    run,
                    name,
                    "succeeded",
                    reason=state.reason,
                    duration=result.duration_s,
                    preview_text=result.preview,
                    metrics=result.metrics,
                )
            else:
                self._finish(
                    run,
                    name,
                    "failed",
                    reason=state.reason,
                    error=result.error,
                    traceback=result.traceback,
                    duration=result.duration_s,
                    metrics=result.metrics,
                )

    def _unbundle(self, execution: _Execution, result: TaskResult) -> bool:
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
        self._broken_bundles.add(task.code_key)
        code_key, code, entry = self._code(loaded, task.entry)
        execution.task = dataclasses.replace(
            task, id=f"t{next(self._task_ids)}", code_key=code_key, code=code, entry=entry
        )
        self._by_task[execution.task.id] = execution
        self._queue.appendleft(execution)
        return True

    def _moved(self, execution: _Execution, result: TaskResult) -> str | None:
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
        self, result: TaskResult, step: str, run_id: int, execution: _Execution, *, cacheable: bool = True
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
        )
        if cacheable:
            self._recent[fingerprint] = (digest, run_id, preview_text)
            if result.path is not None:
                try:
                    status = os.stat(result.path)
                    self._stamps[fingerprint] = (result.path, status.st_size, status.st_mtime_ns)
                except OSError:
                    self._recent.pop(fingerprint, None)
            if len(self._recent) > 100_000:
                evicted = next(iter(self._recent))
                self._recent.pop(evicted)
                self._stamps.pop(evicted, None)

    # ----- finishing ----------------------------------------------------------------------------

    def _finish(
        self,
        run: _Run,
        name: str,
        status: str,
        *,
        reason: str = "",
        error: str | None = None,
        traceback: str | None = None,
        duration: float = 0.0,
        preview_text: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        state = run.states[name]
        if state.status in FINAL:
            return
        state.status = status
        state.error = error
        state.preview = preview_text
        if reason:
            state.reason = reason
        if self._parked:
            self._release_parked(run, name)
        if name not in run.inside and (state.parent is None or state.parent not in run.inside):
            return
        output = state.output
        self._emit(
            StepFinished(
                run.id,
                name,
                status,
                state.attempts,
                duration,
                state.reason,
                error,
                traceback,
                state.fingerprint,
                output.hash if output else None,
                preview_text,
                dict(metrics or {}),
                time.time(),
            )
        )
        if state.parent is not None:
            parent = run.states[state.parent]
            parent.pending -= 1
            if parent.pending == 0 and parent.status not in FINAL:
                self._finish_fan_out(run, state.parent)
            return
        run.remaining -= 1
        for child in run.graph.nodes[name].downstream:
            if child in run.inside:
                waiting = run.states[child]
                waiting.pending -= 1
                if waiting.pending == 0 and waiting.status == "pending":
                    waiting.status = "ready"
                    run.make_ready(child)
        self._maybe_finish(run)

    def _finish_fan_out(self, run: _Run, name: str) -> None:
        state = run.states[name]
        instances = [run.states[i] for i in state.instances or []]
        failed = [s for s in instances if s.status == "failed"]
        if failed:
            self._finish(
                run,
                name,
                "failed",
                error=f"{len(failed)} of {len(instances)} items failed: {failed[0].error}",
            )
            return
        if any(s.status == "cancelled" for s in instances):
            self._finish(run, name, "cancelled", reason="stopped")
            return
        parts = tuple(s.output or Output(NONE_OUTPUT_HASH) for s in instances)
        digest = content_hash("".join(p.hash for p in parts).encode())
        state.output = Output(digest, parts=parts)
        status = "cached" if instances and all(s.status == "cached" for s in instances) else "succeeded"
        ran = sum(1 for s in instances if s.status == "succeeded")
        self._finish(
            run, name, status, reason=f"{len(instances)} items: {ran} ran, {len(instances) - ran} cached"
        )

    def _maybe_finish(self, run: _Run) -> None:
        if run.remaining > 0 or run.id not in self._runs:
            return
        statuses = [run.states[n].status for n in run.scope]
        if run.failure is not None:
            status = "failed"
        elif run.cancelled or "cancelled" in statuses:
            status = "cancelled"
        elif "failed" in statuses:
            status = "failed"
        else:
            status = "succeeded"
        counts: dict[str, int] = {}
        for value in statuses:
            counts[value] = counts.get(value, 0) + 1
        del self._runs[run.id]
        if self._parked:
            self._release_parked(run)
        now = time.time()
        outputs = flow_outputs.collect(run.request.loaded, run.states, self._plain_value)
        self._emit(RunFinished(run.id, status, now - run.started, counts, now, outputs))
        run.handle._finish(status)

    def _cancel(
        self,
        run_id: int | None,
        reason: str = "stopped",
        keep_for: _Run | None = None,
        *,
        failure: str | None = None,
    ) -> None:
        """Stop runs. With `keep_for` (the run superseding this one), a running execution of a step that
        run has not decided yet is parked instead of killed: the step's upstream may be re-running and
        return the same output, and then the new run joins it by fingerprint. With `failure` (an
        internal error), unfinished steps and the run end `failed` with that error."""
        runs = (
            list(self._runs.values())
            if run_id is None
            else [r for r in self._runs.values() if r.id == run_id]
        )
        for run in runs:
            run.cancelled = True
            run.failure = run.failure or failure
            run.ready.clear()
            for probe in [p for p in self._probes.values() if p.run is run]:
                self._drop_probe(probe)
            for execution in list(self._executions.values()) + list(self._queue):
                before = len(execution.waiters)
                execution.waiters = [(r, n) for r, n in execution.waiters if r is not run]
                if before and not execution.waiters:
                    if keep_for is not None and execution.submitted and self._undecided(keep_for, execution):
                        self._parked[execution.key] = keep_for.id
                    else:
                        self._kill(execution)
            for name in [*run.scope, *(i for n in run.scope for i in run.states[n].instances or [])]:
                if run.states[name].status not in FINAL:
                    if failure is not None:
                        self._finish(run, name, "failed", error=failure)
                    else:
                        self._finish(run, name, "cancelled", reason=reason, error=f"the run was {reason}")

    @staticmethod
    def _undecided(run: _Run, execution: _Execution) -> bool:
        state = run.states.get(execution.task.step)
        return state is None or state.status in ("pending", "ready", "asking")

    def _kill(self, execution: _Execution) -> None:
        self._parked.pop(execution.key, None)
        if execution.submitted:
            self.executor.cancel(execution.task.id)
            self._busy -= 1
            execution.submitted = False
        self._by_task.pop(execution.task.id, None)
        self._drop(execution)

    def _release_parked(self, run: _Run, name: str | None = None) -> None:
        """Kill parked executions `run` no longer needs: of step `name` (now decided), or all of them."""
        for key, owner in list(self._parked.items()):
            execution = self._executions.get(key)
            if execution is None or execution.waiters:
                self._parked.pop(key, None)
            elif owner == run.id and (name is None or execution.task.step == name):
                self._kill(execution)

    def publish(self, event: Event) -> None:
        """Send an event that did not come from a run (a reload, a load error) to every subscriber."""
        with self._lock:
            self._emit(event)

    def _emit(self, event: Event) -> None:
        self._recorder(event)
        if isinstance(event, RunFinished):
            try:
                self.store.flush()
            except FlowError as exc:
                print(f"flow: {exc}", file=sys.stderr)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception as exc:
                print(f"flow: a subscriber failed on {event.kind}: {exc!r}", file=sys.stderr)
