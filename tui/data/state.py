"""Provides `RunState`: one run as the TUI shows it, built from engine events or a stored record, and
`StepLogs`, a step's consecutive log events as the event bridge queues them.

Textual-free so it is unit-testable. Log lines live in a `LogBuffer` per step: a plain list of
strings plus a parallel bytearray of stream flags, so a million lines cost one string each. A
fan-out instance `name[i]` rolls up into its parent `name`: its lines are prefixed with `[i]` and
counted on the parent's box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from runner.events import (
    Event,
    JobUpdated,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
    StepRetrying,
    StepStarted,
)
from runner.records import RunRecord
from runner.status import FINAL, RunStatus, StepStatus
from runner.text import visible
from tui.data.format import RETRYING

_ERROR = re.compile(r"\b(Error|Exception|Traceback|FAILED|failed)\b")
_line_of, _stream_of = attrgetter("line"), attrgetter("stream")


_CACHED_FROM = re.compile(r"\brun #(\d+)")


def cached_from(reason: str) -> int | None:
    """The run a cached step's result came from, as its reason names it (`... as run #3`)."""
    found = _CACHED_FROM.search(reason)
    return int(found.group(1)) if found else None


def split_instance(name: str) -> tuple[str, int | None]:
    """`train[3]` -> (`train`, 3); `train` -> (`train`, None)."""
    if name.endswith("]") and "[" in name:
        base, _, index = name[:-1].partition("[")
        if index.isdigit():
            return base, int(index)
    return name, None


class LogBuffer:
    """A step's captured lines, append-only.

    Attributes:
        lines: the text of each line (tabs expanded, control characters shown as symbols: a step's
            output never drives the terminal).
        stderr: 1 where the line came from stderr, else 0.
        width: the longest line's length (the view's virtual width).
        complete: False while older lines are still being read from the store.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stderr = bytearray()
        self.width = 0
        self.complete = True

    def __len__(self) -> int:
        return len(self.lines)

    def append(self, stream: str, line: str) -> None:
        text = visible(line.rstrip("\n").expandtabs(4), newlines=False)
        self.lines.append(text)
        self.stderr.append(1 if stream == "stderr" else 0)
        if len(text) > self.width:
            self.width = len(text)

    def extend(self, streams: list[str], lines: list[str]) -> None:
        """Append many lines at once (what `append` does for each, without Python code per line)."""
        if not " ".join(lines).isprintable():  # rare (a tab, newline or control): look at each line
            lines = [visible(text.rstrip("\n").expandtabs(4), newlines=False) for text in lines]
        self.lines += lines
        self.stderr += bytes(map("stderr".__eq__, streams))
        longest = max(map(len, lines), default=0)
        if longest > self.width:
            self.width = longest

    def find(self, needle: str, start: int, backwards: bool = False) -> int | None:
        """The index of the next line containing `needle` (case-insensitive), wrapping around."""
        if not needle or not self.lines:
            return None
        needle = needle.lower()
        count = len(self.lines)
        order = range(1, count + 1)
        for step in order:
            index = (start - step) % count if backwards else (start + step) % count
            if needle in self.lines[index].lower():
                return index
        return None

    def error_line(self) -> int | None:
        """The first line of a traceback, else the first line that looks like an error, else stderr."""
        first_stderr = None
        first_error = None
        for index, text in enumerate(self.lines):
            if text.startswith("Traceback (most recent call last)") or "Traceback (most recent" in text:
                return index
            if first_error is None and _ERROR.search(text):
                first_error = index
            if first_stderr is None and self.stderr[index]:
                first_stderr = index
        return first_error if first_error is not None else first_stderr


@dataclass
class StepInfo:
    """One step's state within a run (what the DAG box and the details panel show)."""

    name: str
    status: str = StepStatus.PENDING
    attempts: int = 0
    reason: str = ""
    duration_s: float | None = None
    error: str | None = None
    traceback: str | None = None
    fingerprint: str | None = None
    output_hash: str | None = None
    preview: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None
    retry_error: str | None = None
    instances: int = 0
    instances_done: int = 0
    job: str | None = None
    """An external job step's latest word (`dsl.jobs`): status, polls, handle, why it ended."""


def job_text(event: JobUpdated) -> str:
    """`running · 3 polls · {'pid': 12}` / `killed · the run was stopped`: a job's state in one line."""
    parts = [event.status]
    if event.polls:
        parts.append(f"{event.polls} poll{'' if event.polls == 1 else 's'}")
    if event.detail:
        parts.append(event.detail)
    if event.handle:
        parts.append(event.handle)
    return " · ".join(parts)


@dataclass
class RunState:
    """A run: its steps' states and (for runs this TUI started) their logs.

    Attributes:
        live: True when built from this process's events (logs are complete in memory).
    """

    run_id: int
    flow: str
    file: str
    status: str = RunStatus.RUNNING
    params: dict[str, Any] = field(default_factory=dict)
    trigger: str = ""
    started_at: float | None = None
    duration_s: float | None = None
    scope: tuple[str, ...] = ()
    steps: dict[str, StepInfo] = field(default_factory=dict)
    logs: dict[str, LogBuffer] = field(default_factory=dict)
    log_sources: dict[str, int] = field(default_factory=dict)
    """Cached step -> the run whose logs `logs` holds for it."""
    live: bool = True
    outputs: dict[str, str] = field(default_factory=dict)
    """The run's flow outputs, name -> preview (once it finished)."""

    @classmethod
    def from_started(cls, event: RunStarted) -> RunState:
        state = cls(
            run_id=event.run_id,
            flow=event.flow,
            file=event.file,
            params=dict(event.params),
            trigger=event.trigger,
            started_at=event.ts,
            scope=tuple(event.steps),
        )
        for name in event.steps:
            state.steps[name] = StepInfo(name)
        return state

    @classmethod
    def from_record(cls, record: RunRecord) -> RunState:
        state = cls(
            run_id=record.id,
            flow=record.flow,
            file=record.file,
            status=record.status,
            params=dict(record.params),
            trigger=record.trigger,
            started_at=record.started_at,
            duration_s=record.duration_s,
            live=False,
            outputs={name: output.preview for name, output in record.outputs.items()},
        )
        for step in record.steps:
            base, index = split_instance(step.name)
            if index is not None and step.parent:
                parent = state.steps.setdefault(base, StepInfo(base))
                parent.instances += 1
                parent.instances_done += step.status in FINAL
                continue
            state.steps[step.name] = StepInfo(
                name=step.name,
                status=step.status,
                attempts=step.attempts,
                reason=step.reason,
                duration_s=step.duration_s,
                error=step.error,
                traceback=step.traceback,
                fingerprint=step.fingerprint,
                output_hash=step.output_hash,
                preview=step.preview,
                metrics=dict(step.metrics),
                started_at=step.started_at,
            )
        state.scope = tuple(state.steps)
        return state

    def step(self, name: str) -> StepInfo:
        info = self.steps.get(name)
        if info is None:
            info = self.steps[name] = StepInfo(name)
        return info

    def focus_step(self) -> str | None:
        """The step a viewer following the run looks at: the latest started of those running,
        else the first that failed, else None."""
        running = [i for i in self.steps.values() if i.status in (StepStatus.RUNNING, RETRYING)]
        if running:
            return max(running, key=lambda i: i.started_at or 0.0).name
        return next((i.name for i in self.steps.values() if i.status == StepStatus.FAILED), None)

    def log(self, name: str) -> LogBuffer:
        buffer = self.logs.get(name)
        if buffer is None:
            buffer = self.logs[name] = LogBuffer()
        return buffer

    def apply(self, event: Event) -> str | None:
        """Fold one event in; return the (parent) step it changed, if any."""
        if isinstance(event, StepLog):
            return self.add_logs(event.step, [event])
        if isinstance(event, StepStarted):
            base, index = split_instance(event.step)
            info = self.step(base)
            if index is not None:
                info.instances = max(info.instances, index + 1)
                if info.status not in FINAL:
                    info.status = StepStatus.RUNNING
                    info.started_at = info.started_at or event.ts
                return base
            info.status = StepStatus.RUNNING
            info.attempts = event.attempt
            info.reason = event.reason
            info.fingerprint = event.fingerprint
            info.started_at = event.ts
            info.retry_error = None
            return base
        if isinstance(event, StepRetrying):
            base, _ = split_instance(event.step)
            info = self.step(base)
            info.status = RETRYING
            info.retry_error = f"attempt {event.attempt} failed: {event.error}"
            return base
        if isinstance(event, StepFinished):
            base, index = split_instance(event.step)
            info = self.step(base)
            if index is not None:
                info.instances = max(info.instances, index + 1)
                info.instances_done += 1
                if info.status not in FINAL:
                    info.status = StepStatus.RUNNING
                return base
            info.status = event.status
            info.attempts = event.attempts
            info.duration_s = event.duration_s
            info.reason = event.reason
            info.error = event.error
            info.traceback = event.traceback
            info.fingerprint = event.fingerprint
            info.output_hash = event.output_hash
            info.preview = event.preview
            info.metrics = dict(event.metrics)
            info.retry_error = None
            if event.status == StepStatus.FAILED:
                self.add_failure(base)
            return base
        if isinstance(event, JobUpdated):
            base, _ = split_instance(event.step)
            self.step(base).job = job_text(event)
            return base
        if isinstance(event, RunFinished):
            self.status = event.status
            self.duration_s = event.duration_s
            self.outputs = {name: output.preview for name, output in event.outputs.items()}
            return None
        return None

    def add_logs(self, step: str, events: list[StepLog]) -> str:
        """Append lines one step (or fan-out instance) logged; return the step whose log grew."""
        base, index = split_instance(step)
        lines = list(map(_line_of, events))
        if index is not None:
            lines = [f"[{index}] {line}" for line in lines]
        self.log(base).extend(list(map(_stream_of, events)), lines)
        return base

    def add_failure(self, name: str, buffer: LogBuffer | None = None) -> None:
        """Append a failed step's traceback (or error) to its log, as a terminal would show it."""
        info = self.steps.get(name)
        if info is None or info.status != StepStatus.FAILED:
            return
        text = info.traceback or info.error or ""
        target = buffer if buffer is not None else self.log(name)
        for line in text.rstrip().splitlines():
            target.append("stderr", line)

    @property
    def metrics(self) -> dict[str, float]:
        """Every step's metrics, as `metric` or `step.metric` when the name repeats."""
        counts: dict[str, int] = {}
        for info in self.steps.values():
            for key in info.metrics:
                counts[key] = counts.get(key, 0) + 1
        merged: dict[str, float] = {}
        for info in self.steps.values():
            for key, value in info.metrics.items():
                merged[key if counts[key] == 1 else f"{info.name}.{key}"] = value
        return merged


@dataclass
class StepLogs:
    """Consecutive `StepLog` events of one step in one run, queued by the event bridge as one item."""

    run_id: int
    step: str
    events: list[StepLog]
