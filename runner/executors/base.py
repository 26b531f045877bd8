"""Provides the one executor interface: `Executor`, with the `Task` it runs and what comes back.

The scheduler (`runner.engine`) is the only caller. It submits tasks, cancels them, and pulls
`TaskLog`/`TaskDone` records with `events()`; it never knows whether a task ran in a local worker
process, in-process, or on a Dask cluster.

A task's inputs are `InputRef`s, not values: the runner ships pickled bytes (or a path into the
artifact store) and the executor's side unpickles them where the function runs, so the runner never
has to unpickle user objects just to pass them along.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

from runner.filled_init import filled_init


@filled_init
@dataclass(frozen=True)
class InputRef:
    """One argument for a step call, in a form that crosses process boundaries.

    Exactly one of `data`, `path` or `parts` is set: pickled bytes, a file in the artifact store
    (pickled bytes, content hash `hash`), or the ordered parts of a fan-out's gathered output
    (unpickled into a list). `none` passes None (an upstream that did not produce an output).
    `stamp`: the file's `runner.artifacts.Stamp` when the runner or the worker that wrote it knew its
    content (the reader then hashes it only if `os.stat` shows another).
    """

    hash: str
    data: bytes | None = None
    path: str | None = None
    parts: tuple[InputRef, ...] | None = None
    none: bool = False
    stamp: tuple[int, int, int, int, int] | None = None


@filled_init
@dataclass(frozen=True)
class Task:
    """One execution of one step function.

    Attributes:
        id: unique per attempt.
        step: the step's name (`name[i]` for a fan-out instance).
        code_key: identifies `code` (a load of the flow plus the step): executors cache code by it.
        code: cloudpickled `Step.fn`, sent to a worker only the first time it needs `code_key`.
        kwargs: argument name -> input.
        run_id: for the step context.
        attempt: 1-based.
        timeout: seconds; the scheduler enforces it by cancelling, executors may also use it.
        artifact_dir: where a worker writes an output too large to send back inline.
        sys_path: directories the worker puts on `sys.path` (the flow's project root).
        resources: the step's abstract resources (e.g. `{"GPU": 1}`), for executors that honour them.
        entry: when set, `code` unpickles to a dict of functions (one load's steps, pickled together
            because one cloudpickle call for many functions costs a fraction of one call each) and this
            names the task's function in it. Use `runner.executors.execute.resolve_code`.
        expect: absolute path -> SHA-256 of the text the fingerprint hashed, for each of the user's
            modules the step imports at run time: the worker imports exactly these texts or reports
            the difference (`runner.freshness`).
        modules: (key, module name, pickled namespace) of each of the flow's local modules `code`
            refers to by key (`runner.shipping.pickle_shipped`): sent with `code`, the namespace
            left empty for those the process has already (`runner.executors.execute.install_modules`).
    """

    id: str
    step: str
    code_key: str
    code: bytes
    kwargs: dict[str, InputRef]
    run_id: int = 0
    attempt: int = 1
    timeout: float | None = None
    artifact_dir: str = ""
    sys_path: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    entry: str = ""
    expect: dict[str, str] = field(default_factory=dict)
    modules: tuple[tuple[str, str, bytes], ...] = ()

    def without_code(self) -> Task:
        """This task with its code left out, for a process that was sent that `code_key` already (a
        shallow copy: ~10x cheaper than `dataclasses.replace`)."""
        task = copy.copy(self)
        object.__setattr__(task, "code", b"")
        object.__setattr__(task, "modules", ())
        return task

    def with_modules(self, modules: tuple[tuple[str, str, bytes], ...]) -> Task:
        """This task with `modules` instead of its own (some namespaces left out: the process has them)."""
        task = copy.copy(self)
        object.__setattr__(task, "modules", modules)
        return task


@filled_init
@dataclass(frozen=True)
class TaskResult:
    """How a task ended.

    Attributes:
        ok: the function returned.
        hash: content hash of the pickled output (when ok).
        data: the pickled output, when small enough to send back inline.
        path: the artifact file the worker wrote, when the output was large.
        size: bytes of the pickled output.
        preview: a short `repr` of the output.
        error: one line: the exception, or why the process died.
        traceback: the formatted traceback, if any.
        metrics: what `log_metric` recorded.
        duration_s: wall time of the function call.
        where: which worker ran it (process id, or a Dask worker address).
        stale_code: modules of `Task.expect` the step ran with a text other than the fingerprinted one
            (edited during the run): its result must not be cached under that fingerprint.
        stamp: the `runner.artifacts.Stamp` of `path` once written (its readers need not hash it).
    """

    ok: bool
    hash: str | None = None
    data: bytes | None = None
    path: str | None = None
    size: int = 0
    preview: str | None = None
    error: str | None = None
    traceback: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    where: str = ""
    stale_code: tuple[str, ...] = ()
    stamp: tuple[int, int, int, int, int] | None = None


@filled_init
@dataclass(frozen=True)
class TaskLog:
    """A line the task printed or logged."""

    task_id: str
    stream: str
    line: str
    ts: float


@filled_init
@dataclass(frozen=True)
class TaskLogs:
    """Lines the task printed or logged, in order: `(stream, line, timestamp)` each.

    Executors whose workers send lines in batches report them so: one record per batch instead of
    one per line keeps a step that prints a flood cheap for the scheduler."""

    task_id: str
    lines: list[tuple[str, str, float]]


@filled_init
@dataclass(frozen=True)
class TaskDone:
    """A task finished (or its process died): its result."""

    task_id: str
    result: TaskResult


@filled_init
@dataclass(frozen=True)
class TaskStarted:
    """The task's function is about to run after a slow start (a new process, new code): its timeout
    counts from here. Executors whose start-up is negligible never send it."""

    task_id: str
    ts: float


TaskEvent = TaskLog | TaskLogs | TaskDone | TaskStarted


class Executor(Protocol):
    """What runs tasks. Implementations: `LocalExecutor`, `InlineExecutor`, `DaskExecutor`.

    `submit`, `cancel` and `events` are called from the scheduler thread only; `wakeup` from any thread.
    An executor may also have `prestart(count)` (start workers ahead of the first task),
    `preload_for(flow_file)` (the scheduler calls it, on its thread, as a run of that file begins) and
    `keep_spare()` (an edit session keeps an idle worker ready beside the busy ones).
    """

    name: str

    @property
    def slots(self) -> int:
        """How many tasks may run at once."""
        ...

    def submit(self, task: Task) -> None:
        """Start `task`; its logs and result arrive through `events()`."""
        ...

    def cancel(self, task_id: str) -> None:
        """Stop `task_id` now (kill its process); no `TaskDone` is reported for it afterwards."""
        ...

    def events(self, timeout: float | None) -> list[TaskEvent]:
        """Wait up to `timeout` seconds (None: forever) for logs and results; return what arrived."""
        ...

    def wakeup(self) -> None:
        """Make a blocked `events()` return early (thread-safe)."""
        ...

    def close(self) -> None:
        """Stop all workers."""
        ...


class Chains(Protocol):
    """An executor that runs a task chained to another in the worker that has it, the moment that one
    succeeds (`LocalExecutor`; see `runner.engine.chaining`)."""

    def follow(self, task: Task, after: str, inputs: tuple[str, ...]) -> bool:
        """Chain `task` to task `after`, its arguments `inputs` to take `after`'s output; False if not."""
        ...

    def adopt(self, task: Task) -> bool:
        """The scheduler takes the chained task as its step's (with every argument): False if it was
        dropped unstarted."""
        ...
