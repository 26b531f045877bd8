"""Provides the engine's model: what a caller asks (`RunRequest`) and gets (`RunHandle`), a step's state
within one run (`StepState`), and the scheduler's own records of a run, a shared execution, a probe and
the planning of a selection's upstream steps. Plain data: the scheduler (`runner.engine.scheduler`)
owns and mutates them on its thread.
"""

from __future__ import annotations

import pickle
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dsl.loader import LoadedFlow
from runner.events import Event
from runner.executors.base import Task
from runner.fingerprint import StaticPrint, value_hash
from runner.store.api import Hit

Subscriber = Callable[[Event], None]

READY = "ready"
"""A step whose upstream steps are final, waiting in its run's `ready` queue (the scheduler's own phase,
never in an event or the store)."""
ASKING = "asking"
"""A step waiting for a probe's answer (its `when=` predicate or `foreach` items): the scheduler's own."""


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


NONE_OUTPUT_HASH = "none"
"""The output hash of an upstream step that produced no output (skipped, or returned nothing stored)."""


@dataclass(slots=True)
class Output:
    """A step's output as the runner holds it: a hash, and bytes, a file, or fan-out parts (slotted, as
    `StepState`)."""

    hash: str
    data: bytes | None = None
    path: str | None = None
    parts: tuple[Output, ...] | None = None


@dataclass(slots=True)
class StepState:
    """A step's progress within one run (slotted: a run makes one per step, and reads them all the time)."""

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
class Run:
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
    prefetched: dict[str, Hit] = field(default_factory=dict)
    """Cache entries of the fingerprints the flow's last run used, read at the start (see `start`)."""
    found: dict[str, Hit] | None = None
    """The cache entries this run reused or stored, by fingerprint, kept for the flow's next process
    (`runner.store.last_hits`); None for a run that keeps none from memory: a later run of its engine,
    or one that took an entry the engine remembered from before it."""
    generation: int | None = None
    """The store's count of changes to cache entries when the run read `prefetched`."""
    cancelled: bool = False
    failure: str | None = None
    """Set when the runner itself failed the run (an internal error): the run ends `failed`."""
    urgent: frozenset[str] = frozenset()
    """`prioritise` and its upstream steps: put at the front of `ready`."""

    param_hashes: dict[str, str] = field(default_factory=dict)
    """Each parameter's `value_hash`, computed once per run (not once per step that reads it)."""
    param_pickles: dict[str, bytes] = field(default_factory=dict)
    """Each parameter's pickled value, made once per run for every task that takes it."""
    graph: Any = field(init=False, repr=False)
    """The request's flow graph (read twice a step: an attribute, not a property)."""

    def __post_init__(self) -> None:
        self.graph = self.request.loaded.graph

    def param_hash(self, name: str) -> str:
        """The parameter's value hash (once per run).

        Raises:
            Untrusted: the value cannot be hashed with confidence (asked again by each step, so each
                step is marked untrusted with the reason).
        """
        digest = self.param_hashes.get(name)
        if digest is None:
            digest = self.param_hashes[name] = value_hash(self.request.params[name])
        return digest

    def param_pickle(self, name: str) -> bytes:
        """The parameter's pickled value (once per run)."""
        data = self.param_pickles.get(name)
        if data is None:
            data = self.param_pickles[name] = pickle.dumps(self.request.params[name], protocol=5)
        return data

    def make_ready(self, name: str) -> None:
        if name in self.urgent:
            self.ready.appendleft(name)
        else:
            self.ready.append(name)


@dataclass
class JobState:
    """A job step's progress (`dsl.jobs`, driven by `runner.engine.jobs`).

    Attributes:
        start_task: the task that calls `start` (a retry starts over from it).
        phase: the method the execution's current task calls: start, status or result.
        handle: the pickled handle `start` returned (None before).
        handle_text: its short repr, as shown.
        polls: `status` answers so far.
        interval: seconds to the next `status` call (grows up to `max_poll`).
        timeout: the step's `timeout`: seconds the whole job may take, from `start`.
        deadline: when the job as a whole times out (monotonic), once started.
        began: when `start` was called (monotonic): the step's duration is the job's.
        rows: the (run id, step) pairs whose stored job rows hold this job.
        announced: StepStarted was emitted (once per attempt, not at every poll).
        killing: a kill is under way (its process runs in a thread).
    """

    start_task: Task
    phase: str = "start"
    handle: bytes | None = None
    handle_text: str = ""
    polls: int = 0
    interval: float = 1.0
    timeout: float | None = None
    deadline: float | None = None
    began: float = 0.0
    rows: list[tuple[int, str]] = field(default_factory=list)
    announced: bool = False
    killing: bool = False


Timed = dict["Execution", None]
"""The executions that wait on a moment (a `deadline` or a `retry_at`), in the order they began to:
the scheduler looks at these each cycle, not at every execution (a 10,000-wide fan-out queues 10,000,
and scanning them all per result made it quadratic)."""


@dataclass(eq=False)
class Execution:
    """One task (with its retries) that one or more runs wait on, keyed by fingerprint.

    Setting `deadline` or `retry_at` keeps the execution's entry in `timed` (the engine's) up to date.
    """

    key: str
    task: Task
    retries: int
    retry_delay: float
    waiters: list[tuple[Run, str]]
    loaded: LoadedFlow | None = None
    submitted: bool = False
    started: float = 0.0
    job: JobState | None = None
    """Set for a job step: its task is one call of the job's methods (see `JobState`)."""
    timed: Timed | None = field(default=None, repr=False)
    _deadline: float | None = field(default=None, repr=False)
    _retry_at: float | None = field(default=None, repr=False)

    @property
    def deadline(self) -> float | None:
        """When the running task times out (monotonic), if it has a timeout."""
        return self._deadline

    @deadline.setter
    def deadline(self, moment: float | None) -> None:
        self._deadline = moment
        self._index_moments()

    @property
    def retry_at(self) -> float | None:
        """When the execution goes back on the queue (a retry's delay, a job's next poll)."""
        return self._retry_at

    @retry_at.setter
    def retry_at(self, moment: float | None) -> None:
        self._retry_at = moment
        self._index_moments()

    def _index_moments(self) -> None:
        if self.timed is None:
            return
        if self._deadline is None and self._retry_at is None:
            self.timed.pop(self, None)
        else:
            self.timed[self] = None


@dataclass
class Probe:
    """A question user code must answer before a step is decided (see `runner.probes`): a `when=`
    predicate (`kind` "when") or a `foreach` iteration ("foreach"), run as a task like a step."""

    kind: str
    run: Run
    name: str
    task: Task
    cache_only: bool
    planning: Planning | None = None
    submitted: bool = False
    deadline: float | None = None


class Follow(NamedTuple):
    """A task chained to task `after`, of step `upstream` (`runner.engine.chaining`)."""

    task: Task
    after: str
    upstream: str
    inputs: tuple[str, ...]
    """The task's arguments that take `upstream`'s output."""


@dataclass
class Planning:
    """`start` resolving the steps upstream of a selection (`--only`/`--from`) whose decision needs
    a probe: that runs on the scheduler thread, and `start` waits for `done`."""

    run: Run
    todo: deque[str]
    done: threading.Event = field(default_factory=threading.Event)
    advanced: set[str] = field(default_factory=set)
    error: BaseException | None = None
