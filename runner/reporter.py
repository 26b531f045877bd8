"""Provides the wording of a run's narration (`Narrator`) and the headless views: plain lines, JSON lines.

Each reporter is just a subscriber of the engine's events. The live terminal view (`runner.live`) renders
the same `Narrator` lines, so a terminal and a pipe tell the same story; Rich is imported only there, so
`flow run` in CI (not a terminal) starts without it. Every user- or step-supplied string passes through
`runner.text.visible`: a step's bytes never drive the reader's terminal.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, NamedTuple

from runner.events import (
    Event,
    FlowReloaded,
    LoadFailed,
    RunFinished,
    RunStarted,
    StepFinished,
    StepLog,
    StepRetrying,
    StepStarted,
)
from runner.text import visible

SYMBOLS = {
    "pending": "·",
    "running": "▶",
    "succeeded": "✓",
    "cached": "●",
    "failed": "✗",
    "skipped": "–",
    "cancelled": "⊘",
}


def summary_counts(counts: dict[str, int]) -> str:
    order = ["succeeded", "cached", "failed", "skipped", "cancelled"]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


def output_lines(event: RunFinished) -> list[str]:
    """The flow outputs a run produced, one `name = value` line each (values shown as text)."""
    from runner.text import visible

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
    """Turns events into the lines a person reads: the one wording of every headless view."""

    def __init__(self, *, show_logs: bool = True) -> None:
        self._show_logs = show_logs
        self._ran: dict[int, list[str]] = {}

    def lines(self, event: Event) -> list[Line]:
        if isinstance(event, StepLog):
            if not self._show_logs:
                return []
            prefix = f"    {event.step} | "
            return [Line(_safe(prefix + event.line), "log", len(_safe(prefix)))]
        if isinstance(event, RunStarted):
            self._ran[event.run_id] = []
            params = ", ".join(f"{k}={v!r}" for k, v in event.params.items())
            count = len(event.steps)
            text = (
                f"run #{event.run_id} of {event.flow} ({count} step{'' if count == 1 else 's'})"
                + (f" [{event.trigger}]" if event.trigger not in ("cli", "") else "")
                + (f" with {params}" if params else "")
            )
            return [Line(_safe(text), "run")]
        if isinstance(event, StepStarted):
            return [Line(_safe(f"  {SYMBOLS['running']} {event.step} started ({event.reason})"), "started")]
        if isinstance(event, StepRetrying):
            text = (
                f"  ↻ {event.step} attempt {event.attempt} failed: {event.error}; "
                f"retrying in {event.delay_s:g}s"
            )
            return [Line(_safe(text), "retry")]
        if isinstance(event, StepFinished):
            if event.status in ("succeeded", "failed") and not event.step.endswith("]"):
                self._ran.setdefault(event.run_id, []).append(event.step)
            lines = [Line(_safe(step_line(event)), event.status)]
            if event.status == "failed" and event.traceback:
                lines += [
                    Line(_safe(f"      {t}"), "traceback") for t in event.traceback.rstrip().splitlines()
                ]
            return lines
        if isinstance(event, RunFinished):
            ran = self._ran.pop(event.run_id, [])
            text = (
                f"run #{event.run_id} {event.status} in {event.duration_s:.2f}s: "
                f"{summary_counts(event.counts)}" + (f" (ran: {', '.join(ran)})" if ran else "")
            )
            finished = Line(_safe(text), "finished_ok" if event.status == "succeeded" else "finished_bad")
            return [finished, *(Line(line, "output") for line in output_lines(event))]
        if isinstance(event, FlowReloaded):
            return [Line(_safe(reload_line(event)), "reload")]
        if isinstance(event, LoadFailed):
            text = f"✗ {event.error} (keeping the last good graph; waiting for the next save)"
            return [Line(_safe(text), "load_failed")]
        return []


def step_line(event: StepFinished) -> str:
    """`  ✓ train succeeded in 1.20s [loss=0.25]`: how a finished step is shown."""
    symbol = SYMBOLS.get(event.status, "?")
    tail = ""
    if event.status == "succeeded":
        tail = f" in {event.duration_s:.2f}s"
        if event.attempts > 1:
            tail += f" (attempt {event.attempts})"
    elif event.status == "failed":
        tail = f": {event.error}"
        if event.attempts > 1:
            tail += f" (after {event.attempts} attempts)"
    elif event.status in ("skipped", "cancelled", "cached"):
        reason = event.reason.removeprefix("cached: ") if event.status == "cached" else event.reason
        tail = f" ({reason})" if reason else ""
    metrics = ", ".join(f"{k}={v:g}" for k, v in event.metrics.items())
    return f"  {symbol} {event.step} {event.status}{tail}" + (f" [{metrics}]" if metrics else "")


class PlainReporter:
    """One line per event (run header, step start with its reason, log line, finish); for CI and pipes.

    Writing never raises: once the reader has gone (a closed pipe, `| head`), output stops quietly
    and `closed` is set, so the command can stop the run and exit the way Unix tools do on SIGPIPE.
    """

    def __init__(self, out: IO[str] | None = None, *, show_logs: bool = True) -> None:
        self._out = out or sys.stdout
        self._narrator = Narrator(show_logs=show_logs)
        self._lock = threading.Lock()
        self.closed = threading.Event()
        """Set once a write failed because nobody reads the output any more."""

    def _print(self, text: str) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            try:
                self._out.write(text + "\n")
                self._out.flush()
            except (OSError, ValueError):
                self.closed.set()

    def __call__(self, event: Event) -> None:
        for line in self._narrator.lines(event):
            self._print(line.text)

    def note(self, text: str) -> None:
        """A message from the command itself (stopping, watching): on stderr, so pipes carry only the run."""
        try:
            print(_safe(text), file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Nothing to release: every line is written when its event arrives."""


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
    return f"↻ {event.changed_file} saved; " + ("; ".join(what) if what else "no step changed")


def _names(names: tuple[str, ...], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


class JsonReporter(PlainReporter):
    """One JSON object per event, one per line (`flow run --json`)."""

    def __call__(self, event: Event) -> None:
        self._print(json.dumps(event.as_dict(), default=repr))
