"""Provides the public records the store returns: what `--json`, the reporter and the TUI read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from runner.status import RunStatus, StepStatus


@dataclass(frozen=True)
class StepRecord:
    """One step of one run as stored.

    Attributes:
        name: the step's name; a fan-out instance is `name[i]` with `parent` set to `name`.
        status: where it stands (`runner.status.StepStatus`).
        attempts: executions started (0 when cached or skipped).
        duration_s: wall time of the successful (or last) attempt.
        error: one line, when failed, skipped or cancelled.
        reason: why it ran (or why it was cached or skipped).
    """

    name: str
    status: StepStatus
    attempts: int = 0
    duration_s: float | None = None
    error: str | None = None
    reason: str = ""
    traceback: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    fingerprint: str | None = None
    output_hash: str | None = None
    preview: str | None = None
    where: str | None = None
    parent: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FlowOutput:
    """One flow output of a run: where it comes from, and its preview.

    Attributes:
        step: the step whose output it is.
        key: the key of that step's (dict) output, or None for the whole output.
        preview: the value as text (bounded).
    """

    step: str
    key: str | None
    preview: str


@dataclass(frozen=True)
class RunRecord:
    """One run as stored."""

    id: int
    flow: str
    file: str
    status: RunStatus
    started_at: float
    finished_at: float | None
    params: dict[str, Any]
    trigger: str = ""
    executor: str = ""
    steps: tuple[StepRecord, ...] = ()
    outputs: dict[str, FlowOutput] = field(default_factory=dict)
    """The flow's declared outputs, by name (see `runner.flow_outputs`)."""

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def metrics(self) -> dict[str, float]:
        """Every step's metrics, as `step.metric` (or just `metric` where the name is unique)."""
        counts: dict[str, int] = {}
        for record in self.steps:
            for key in record.metrics:
                counts[key] = counts.get(key, 0) + 1
        merged: dict[str, float] = {}
        for record in self.steps:
            for key, value in record.metrics.items():
                merged[key if counts[key] == 1 else f"{record.name}.{key}"] = value
        return merged

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "file": self.file,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "params": self.params,
            "trigger": self.trigger,
            "executor": self.executor,
            "metrics": self.metrics,
            "steps": [s.as_dict() for s in self.steps],
            "outputs": {name: output.preview for name, output in self.outputs.items()},
        }


@dataclass(frozen=True)
class LogLine:
    """One captured line of a step's output."""

    id: int
    run_id: int
    step: str
    ts: float
    stream: str
    line: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dumps_json(value: Any) -> str:
    """JSON for values we store (params may hold non-JSON types: fall back to repr)."""
    return json.dumps(value, sort_keys=True, default=repr)


_DETAIL_ENCODER = json.JSONEncoder(sort_keys=True, default=repr, check_circular=False)


def dumps_detail(detail: dict[str, Any]) -> str:
    """`dumps_json`'s text of a step's fingerprint parts (`runner.fingerprint.combine`: strings and
    dicts of strings, which cannot refer to themselves). One encoder serves every call: a step that
    executes writes one, and making an encoder for each took a third of the 2.6 µs."""
    return _DETAIL_ENCODER.encode(detail)
