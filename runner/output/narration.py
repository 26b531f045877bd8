"""Provides the wording of a run's narration: `Narrator` turns events into `Line`s, the one story that
every headless view tells (plain lines in `runner.output.plain`, the live terminal view in
`runner.output.live`), so a terminal and a pipe say the same.

Every user- or step-supplied string passes through `runner.text.visible`: a step's bytes never drive
the reader's terminal. Statuses are shown with `runner.status.SYMBOLS`, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from runner.events import (
    Event,
    FlowReloaded,
    JobUpdated,
    LoadFailed,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
    StepRetrying,
    StepStarted,
)
from runner.status import SYMBOLS, StepStatus
from runner.text import visible

STARTED = "▶"
"""The mark of a step's start line: an event, not a status (a running step is `SYMBOLS["running"]`)."""

RETRY = "↻"
"""The mark of a retry line and of a reload line: something happens again."""

JOB = "⇄"
"""The mark of an external job's line (`dsl.jobs`): what the job elsewhere is doing."""


def summary_counts(counts: dict[str, int]) -> str:
    """`3 succeeded, 2 cached`: a run's steps by final status, the ones it has, in a fixed order."""
    order = [
        StepStatus.SUCCEEDED,
        StepStatus.CACHED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
    ]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


RAN_NAMED = 10
"""Steps a run's summary line names at most, the rest counted: a 5,000-step run named every one, a
line of 40 KB that pushed the run's last steps off any terminal."""


def ran_names(ran: list[str]) -> str:
    """`load, total`: the steps a run executed, in the order they finished; past `RAN_NAMED` + 2,
    the first `RAN_NAMED` and how many more (never "and 1 more" where the name would fit)."""
    if len(ran) <= RAN_NAMED + 2:
        return ", ".join(ran)
    return f"{', '.join(ran[:RAN_NAMED])} and {len(ran) - RAN_NAMED:,} more"


def output_lines(event: RunFinished) -> list[str]:
    """The flow outputs a run produced, one `name = value` line each (values shown as text)."""
    return [f"  {name} = {visible(output.preview, newlines=False)}" for name, output in event.outputs.items()]


class Line(NamedTuple):
    """One line of a run's narration: its words (already safe to show) and what kind of line it is.

    The wording is decided once, here; each view renders it its own way (`PlainReporter` writes the
    text, the live terminal view styles it by `kind`), so a terminal shows what a pipe shows.
    """

    text: str
    kind: str
    """`run`, `started`, `log`, `retry`, a step status (`succeeded`, `failed`, …), `traceback`,
    `finished_ok`, `finished_bad`, `reload`, `load_failed` or `note`."""
    prefix: int = 0
    """How many leading characters are a label rather than content (the `step |` of a log line)."""


def _safe(text: str) -> str:
    """Control characters shown as symbols; tabs and the newlines of a multi-line message kept."""
    return visible(text)


class Narrator:
    """Turns events into the lines a person reads: the one wording of every headless view.

    It remembers, per run, which steps ran (rather than came from the cache), for the run's last line.
    """

    def __init__(self, *, show_logs: bool = True) -> None:
        self._show_logs = show_logs
        self._ran: dict[int, list[str]] = {}
        self._jobs: dict[tuple[int, str], str] = {}
        self._wording: dict[type[Event], Callable[[Any], list[Line]]] = {
            StepLog: self._log,
            RunStarted: self._run_started,
            StepStarted: self._step_started,
            StepRetrying: self._retrying,
            StepFinished: self._step_finished,
            RunFinished: self._run_finished,
            FlowReloaded: lambda event: [Line(_safe(reload_line(event)), "reload")],
            LoadFailed: self._load_failed,
            JobUpdated: self._job,
        }

    def lines(self, event: Event) -> list[Line]:
        """The lines `event` reads as (none for an event a person need not see)."""
        wording = self._wording.get(type(event))
        return wording(event) if wording is not None else []

    def _log(self, event: StepLog) -> list[Line]:
        if not self._show_logs:
            return []
        prefix = f"    {event.step} | "
        return [Line(_safe(prefix + event.line), "log", len(_safe(prefix)))]

    def _run_started(self, event: RunStarted) -> list[Line]:
        self._ran[event.run_id] = []
        params = ", ".join(f"{k}={v!r}" for k, v in event.params.items())
        count = len(event.steps)
        text = (
            f"run #{event.run_id} of {event.flow} ({count} step{'' if count == 1 else 's'})"
            + (f" [{event.trigger}]" if event.trigger not in ("cli", "") else "")
            + (f" with {params}" if params else "")
        )
        return [Line(_safe(text), "run")]

    def _step_started(self, event: StepStarted) -> list[Line]:
        return [Line(_safe(f"  {STARTED} {event.step} started ({event.reason})"), "started")]

    def _retrying(self, event: StepRetrying) -> list[Line]:
        text = (
            f"  {RETRY} {event.step} attempt {event.attempt} failed: {event.error}; "
            f"retrying in {event.delay_s:g}s"
        )
        return [Line(_safe(text), "retry")]

    def _step_finished(self, event: StepFinished) -> list[Line]:
        failed = event.status == StepStatus.FAILED
        if (failed or event.status == StepStatus.SUCCEEDED) and not event.step.endswith("]"):
            self._ran.setdefault(event.run_id, []).append(event.step)
        lines = [Line(_safe(step_line(event)), event.status)]
        if failed and event.traceback:
            lines += [Line(_safe(f"      {t}"), "traceback") for t in event.traceback.rstrip().splitlines()]
        return lines

    def _job(self, event: JobUpdated) -> list[Line]:
        """A job's line when its status changes (not at every poll that says "running" again)."""
        key = (event.run_id, event.step)
        if self._jobs.get(key) == event.status and not event.detail:
            return []
        self._jobs[key] = event.status
        polls = f" after {event.polls} poll{'' if event.polls == 1 else 's'}" if event.polls else ""
        detail = f" ({event.detail})" if event.detail else ""
        handle = f": {event.handle}" if event.status == "running" and event.handle else ""
        return [Line(_safe(f"  {JOB} {event.step} job {event.status}{polls}{detail}{handle}"), "job")]

    def _run_finished(self, event: RunFinished) -> list[Line]:
        ran = self._ran.pop(event.run_id, [])
        for key in [k for k in self._jobs if k[0] == event.run_id]:
            del self._jobs[key]
        text = (
            f"run #{event.run_id} {event.status} in {event.duration_s:.2f}s: "
            f"{summary_counts(event.counts)}" + (f" (ran: {ran_names(ran)})" if ran else "")
        )
        finished = Line(_safe(text), "finished_ok" if event.status == "succeeded" else "finished_bad")
        return [finished, *(Line(line, "output") for line in output_lines(event))]

    def _load_failed(self, event: LoadFailed) -> list[Line]:
        keeping = "keeping the last good graph; waiting for the next save"
        text = f"{SYMBOLS[StepStatus.FAILED]} {event.error} ({keeping})"
        return [Line(_safe(text), "load_failed")]


def step_line(event: StepFinished) -> str:
    """`  ✓ train succeeded in 1.20s [loss=0.25]`: how a finished step is shown."""
    symbol = SYMBOLS.get(event.status, "?")
    metrics = ", ".join(f"{k}={v:g}" for k, v in event.metrics.items())
    return f"  {symbol} {event.step} {event.status}{_tail(event)}" + (f" [{metrics}]" if metrics else "")


def _tail(event: StepFinished) -> str:
    """What follows a finished step's status: how long it took, why it failed, or why it did not run."""
    if event.status == StepStatus.SUCCEEDED:
        return f" in {event.duration_s:.2f}s" + (f" (attempt {event.attempts})" if event.attempts > 1 else "")
    if event.status == StepStatus.FAILED:
        return f": {event.error}" + (f" (after {event.attempts} attempts)" if event.attempts > 1 else "")
    if event.status in (StepStatus.SKIPPED, StepStatus.CANCELLED, StepStatus.CACHED):
        reason = event.reason.removeprefix("cached: ") if event.status == StepStatus.CACHED else event.reason
        return f" ({reason})" if reason else ""
    return ""


def reload_line(event: FlowReloaded) -> str:
    """`↻ train.py saved; changed: train; may re-run: train, evaluate; 4 cached`: what *may* re-run
    (a downstream step whose inputs come out the same is cached after all; the run says what ran)."""
    what = []
    if event.changed:
        what.append(f"changed: {_names(event.changed)}")
    if event.added:
        what.append(f"added: {_names(event.added)}")
    if event.removed:
        what.append(f"removed: {_names(event.removed)}")
    if event.rerun:
        what.append(f"may re-run: {_names(event.rerun)}")
        what.append(f"{event.cached} cached")
    return f"{RETRY} {event.changed_file} saved; " + ("; ".join(what) if what else "no step changed")


def _names(names: tuple[str, ...], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
