"""Provides `HookRunner`: calls a flow's and its steps' hooks when runs succeed, fail or retry.

A hook is the user's plain callable, so it may raise, hang, or call `sys.exit`. It therefore never
runs on the scheduler thread or in the runner's process: the runner subscribes to the engine's
events (recording what a hook needs to know, which costs a dict update), and a small thread pool
starts each hook in its own process (`runner.operate.hook_worker`) with a time limit. A hook that raises,
exits non-zero or passes its limit is reported (`HookFinished` event, plus the `report` callback)
and stopped; the run's status, exit code and timing never depend on a hook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cloudpickle

from dsl.loader import LoadedFlow
from runner.engine import Engine
from runner.events import Event, RunFinished, RunStarted, StepFinished, StepRetrying
from runner.shipping import pickle_code
from runner.status import OK, RunStatus, StepStatus
from runner.text import visible

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

DEFAULT_HOOK_TIMEOUT_S = 30.0
"""A hook's time limit unless `Flow(hook_timeout=...)` says otherwise: a webhook or a command that
takes longer is stuck, and `flow run` should not wait longer than this to exit."""

HOOK_THREADS = 4
"""Hooks running at once: each is a process; more would only compete with the steps."""


_RUN_HOOKS: dict[str, str] = {RunStatus.SUCCEEDED: "success", RunStatus.FAILED: "failure"}
"""A finished run's status -> which of the flow's hooks it calls (`on_success`, `on_failure`)."""


@dataclass(frozen=True)
class HookFinished(Event):
    """A hook ran: `ok`, `failed` (raised or exited non-zero) or `timed out` (stopped)."""

    run_id: int
    hook: str
    on: str
    step: str | None
    outcome: str
    error: str | None
    duration_s: float
    ts: float
    kind: str = field(init=False, default="hook_finished")


@dataclass
class _Tracked:
    """What the hooks of one run need: its flow, parameters and each step's end."""

    loaded: LoadedFlow
    flow: str
    file: str
    params: dict[str, Any]
    trigger: str
    steps: dict[str, StepFinished] = field(default_factory=dict)


def hook_name(hook: Any) -> str:
    """A function's name, or a built-in hook's repr (`post_json($TEAM_HOOK)`)."""
    name = getattr(hook, "__name__", None)
    return name if isinstance(name, str) else repr(hook)


def has_hooks(loaded: LoadedFlow) -> bool:
    """Whether the flow or any of its steps declares a hook."""
    declaration = loaded.declaration
    if declaration is not None and (declaration.on_success or declaration.on_failure or declaration.on_retry):
        return True
    return any(
        node.step.on_success or node.step.on_failure or node.step.on_retry
        for node in loaded.graph.nodes.values()
    )


class HookRunner:
    """Subscribes to an engine and calls hooks for the runs of the flows `resolve` knows.

    Args:
        engine: the engine whose runs to follow; `HookFinished` events are published through it.
        resolve: the loaded flow a run's file belongs to (None: no hooks for that run).
        report: called with one line for every hook that failed or timed out.
    """

    def __init__(
        self,
        engine: Engine,
        resolve: Callable[[str], LoadedFlow | None],
        report: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._resolve = resolve
        self._report = report
        self._runs: dict[int, _Tracked] = {}
        self._pool: ThreadPoolExecutor | None = None  # made for the first hook: most flows have none
        self._closed = False
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._unsubscribe = engine.subscribe(self)

    # ----- events (scheduler thread: keep it quick) --------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            loaded = self._resolve(event.file)
            if loaded is not None and has_hooks(loaded):
                self._runs[event.run_id] = _Tracked(
                    loaded, event.flow, event.file, dict(event.params), event.trigger
                )
            return
        if not isinstance(event, StepFinished | StepRetrying | RunFinished):
            return
        tracked = self._runs.get(event.run_id)
        if tracked is None:
            return
        if isinstance(event, StepFinished):
            self._step_finished(tracked, event)
        elif isinstance(event, StepRetrying):
            self._step_hooks(tracked, event, "retry", event.error, event.attempt)
        else:
            del self._runs[event.run_id]
            self._run_finished(tracked, event)

    def _step_finished(self, tracked: _Tracked, event: StepFinished) -> None:
        tracked.steps[event.step] = event
        if event.step.endswith("]"):
            return  # a fan-out item: the step's hooks run once, when the whole step ends
        if event.status == StepStatus.FAILED:
            self._step_hooks(tracked, event, "failure", event.error, event.attempts)
        elif event.status == StepStatus.SUCCEEDED:
            self._step_hooks(tracked, event, "success", None, event.attempts)

    def _run_finished(self, tracked: _Tracked, event: RunFinished) -> None:
        declaration = tracked.loaded.declaration
        if declaration is None:
            return
        on = _RUN_HOOKS.get(event.status)
        if on is None:
            return  # a stopped run is the user's doing: neither success nor failure
        details = self._details(tracked, event.run_id, event.status, on)
        for hook in getattr(declaration, f"on_{on}"):
            self._submit(tracked.loaded, hook, details, None, declaration.hook_timeout)

    def _step_hooks(
        self, tracked: _Tracked, event: StepFinished | StepRetrying, on: str, error: str | None, attempt: int
    ) -> None:
        node = tracked.loaded.graph.nodes.get(event.step.partition("[")[0])
        hooks: tuple[Any, ...] = ()
        if node is not None:
            hooks = getattr(node.step, f"on_{on}")
        declaration = tracked.loaded.declaration
        if on == "retry" and declaration is not None:
            hooks = (*hooks, *declaration.on_retry)
        if not hooks:
            return
        details = self._details(tracked, event.run_id, "running", on)
        details.update(step=event.step, error=error, attempt=attempt)
        if isinstance(event, StepFinished):
            details["traceback"] = event.traceback
        timeout = declaration.hook_timeout if declaration is not None else DEFAULT_HOOK_TIMEOUT_S
        for hook in hooks:
            self._submit(tracked.loaded, hook, details, event.step, timeout)

    @staticmethod
    def _details(tracked: _Tracked, run_id: int, status: str, on: str) -> dict[str, Any]:
        """The run's details as hooks receive them (a JSON-able dict; see README "Hooks")."""
        finished = tracked.steps.values()
        return {
            "hook": on,
            "run_id": run_id,
            "flow": tracked.flow,
            "file": tracked.file,
            "status": status,
            "trigger": tracked.trigger,
            "params": tracked.params,
            "failed_steps": [
                {"name": s.step, "error": s.error, "traceback": s.traceback}
                for s in finished
                if s.status == StepStatus.FAILED
            ],
            "outputs": {s.step: s.preview for s in finished if s.status in OK},
            "metrics": {s.step: dict(s.metrics) for s in finished if s.metrics},
            "step": None,
            "error": None,
            "attempt": None,
        }

    # ----- calling hooks (pool threads) -------------------------------------------------------

    def _submit(
        self, loaded: LoadedFlow, hook: Any, details: dict[str, Any], step: str | None, timeout: float
    ) -> None:
        with self._lock:
            if self._closed:
                return  # an event that raced `close`: no hook starts after it
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(HOOK_THREADS, thread_name_prefix="flow-hook")
            future = self._pool.submit(self._call, loaded, hook, details, step, timeout)
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _call(
        self, loaded: LoadedFlow, hook: Any, details: dict[str, Any], step: str | None, timeout: float
    ) -> None:
        name = hook_name(hook)
        started = time.monotonic()
        error: str | None
        try:
            payload = self._pickle(loaded, hook, details)
        except Exception as exc:
            outcome, error = "failed", f"cannot send the hook to its process: {type(exc).__name__}: {exc}"
        else:
            outcome, error = self._run_process(payload, timeout)
        event = HookFinished(
            details["run_id"],
            name,
            details["hook"],
            step,
            outcome,
            error,
            time.monotonic() - started,
            time.time(),
        )
        self._engine.publish(event)
        if outcome != "ok" and self._report is not None:
            of = f" of step {step}" if step else ""
            self._report(
                f"hook {visible(name)} (on {details['hook']}{of}, run #{details['run_id']}) "
                f"{outcome}: {visible(error or '')}"
            )

    @staticmethod
    def _pickle(loaded: LoadedFlow, hook: Any, details: dict[str, Any]) -> bytes:
        """The hook by value, as step code travels: the hook process cannot import the flow file."""
        for module_name in [loaded.module.__name__, *loaded.local_modules]:
            if module_name in sys.modules:
                cloudpickle.register_pickle_by_value(sys.modules[module_name])
        return pickle_code({"hook": hook, "details": details})

    @staticmethod
    def _run_process(payload: bytes, timeout: float) -> tuple[str, str | None]:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner.operate.hook_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.communicate()
            return "timed out", f"still running after {timeout:g}s; stopped"
        if process.returncode == 0:
            return "ok", None
        lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
        return "failed", lines[-1].strip() if lines else f"exited with {process.returncode}"

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every hook started so far has finished; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            from concurrent.futures import TimeoutError as FutureTimeout

            try:
                pending[0].exception(timeout=left)
            except FutureTimeout:
                return False

    def close(self) -> None:
        """Stop following the engine; hooks already started still finish (see `drain`)."""
        self._unsubscribe()
        with self._lock:
            self._closed = True
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=False)
