"""Provides the engine's typed events: the one stream the store writer, the reporter and the TUI read.

Every event is a frozen dataclass with a `kind` and `as_dict()` (what `flow run --json` prints).
Subscribers must accept events they do not know: new kinds may be added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from runner.filled_init import filled_init
from runner.records import FlowOutput
from runner.status import RunStatus, StepStatus


@dataclass(frozen=True)
class Event:
    """Base of all events."""

    kind: str = field(init=False, default="event")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = data.pop("kind")
        return data


@dataclass(frozen=True)
class RunStarted(Event):
    """A run began: the steps it covers, its parameters and what triggered it."""

    run_id: int
    flow: str
    file: str
    params: dict[str, Any]
    steps: tuple[str, ...]
    trigger: str
    ts: float
    kind: str = field(init=False, default="run_started")


@filled_init
@dataclass(frozen=True)
class StepStarted(Event):
    """A step (or one fan-out instance, `name[i]`) was submitted to an executor."""

    run_id: int
    step: str
    attempt: int
    reason: str
    fingerprint: str
    ts: float
    kind: str = field(init=False, default="step_started")


@filled_init
@dataclass(frozen=True)
class StepLog(Event):
    """One captured line of a step's stdout, stderr or logging output."""

    run_id: int
    step: str
    stream: str
    line: str
    ts: float
    kind: str = field(init=False, default="step_log")


@dataclass(frozen=True)
class StepRetrying(Event):
    """An attempt failed and another will start after `delay_s`."""

    run_id: int
    step: str
    attempt: int
    error: str
    delay_s: float
    ts: float
    kind: str = field(init=False, default="step_retrying")


@filled_init
@dataclass(frozen=True)
class StepFinished(Event):
    """A step reached a final status: succeeded, cached, failed, skipped or cancelled."""

    run_id: int
    step: str
    status: StepStatus
    attempts: int
    duration_s: float
    reason: str
    error: str | None
    traceback: str | None
    fingerprint: str | None
    output_hash: str | None
    preview: str | None
    metrics: dict[str, float]
    ts: float
    kind: str = field(init=False, default="step_finished")


@dataclass(frozen=True)
class RunFinished(Event):
    """A run ended with `status` (succeeded, failed or cancelled); `counts` is steps per status."""

    run_id: int
    status: RunStatus
    duration_s: float
    counts: dict[str, int]
    ts: float
    outputs: dict[str, FlowOutput] = field(default_factory=dict)
    """The flow outputs the run produced, by name."""
    kind: str = field(init=False, default="run_finished")


@dataclass(frozen=True)
class FlowReloaded(Event):
    """A watched file changed and the flow loaded again; what changed since the last good load."""

    file: str
    changed_file: str
    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    ts: float
    rerun: tuple[str, ...] = ()
    """What the next run will execute: the changed and added steps and everything downstream of them
    (a downstream step whose inputs come out the same is then taken from the cache after all)."""
    cached: int = 0
    """How many steps the next run takes from the cache (if they have a result)."""
    kind: str = field(init=False, default="flow_reloaded")


@dataclass(frozen=True)
class LoadFailed(Event):
    """A (re)load failed; the last good graph is kept."""

    file: str
    error: str
    ts: float
    kind: str = field(init=False, default="load_failed")


@dataclass(frozen=True)
class JobUpdated(Event):
    """An external job a step runs (`dsl.jobs`) changed: started (with its handle), answered a poll,
    succeeded, failed, was re-attached after a crash, or killed.

    `status` is the job's (`running`, `succeeded`, `failed`, `killed`, `kill failed`); `polls` counts
    `status` answers; `detail` says why, when there is more to say."""

    run_id: int
    step: str
    status: str
    handle: str
    polls: int
    detail: str
    ts: float
    kind: str = field(init=False, default="job_updated")
