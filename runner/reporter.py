"""Provides the headless views of a run: plain lines, JSON lines, and live Rich progress on a terminal.

Each reporter is just a subscriber of the engine's events. Rich is imported only by the live reporter,
so `flow run` in CI (not a terminal) starts without it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any

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


class PlainReporter:
    """One line per step start, finish and log line; for logs, CI and pipes."""

    def __init__(self, out: IO[str] | None = None, *, show_logs: bool = True) -> None:
        self._out = out or sys.stdout
        self._show_logs = show_logs
        self._lock = threading.Lock()
        self._ran: dict[int, list[str]] = {}

    def _print(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._ran[event.run_id] = []
            params = ", ".join(f"{k}={v!r}" for k, v in event.params.items())
            count = len(event.steps)
            self._print(
                f"run #{event.run_id} of {event.flow} ({count} step{'' if count == 1 else 's'})"
                + (f" [{event.trigger}]" if event.trigger not in ("cli", "") else "")
                + (f" with {params}" if params else "")
            )
        elif isinstance(event, StepStarted):
            self._print(f"  {SYMBOLS['running']} {event.step} started ({event.reason})")
        elif isinstance(event, StepLog) and self._show_logs:
            self._print(f"    {event.step} | {event.line}")
        elif isinstance(event, StepRetrying):
            self._print(
                f"  ↻ {event.step} attempt {event.attempt} failed: {event.error}; "
                f"retrying in {event.delay_s:g}s"
            )
        elif isinstance(event, StepFinished):
            if event.status in ("succeeded", "failed") and not event.step.endswith("]"):
                self._ran.setdefault(event.run_id, []).append(event.step)
            self._print(self.step_line(event))
            if event.status == "failed" and event.traceback:
                for line in event.traceback.rstrip().splitlines():
                    self._print(f"      {line}")
        elif isinstance(event, RunFinished):
            ran = self._ran.pop(event.run_id, [])
            self._print(
                f"run #{event.run_id} {event.status} in {event.duration_s:.2f}s: "
                f"{summary_counts(event.counts)}" + (f" (ran: {', '.join(ran)})" if ran else "")
            )
        elif isinstance(event, FlowReloaded):
            self._print(reload_line(event))
        elif isinstance(event, LoadFailed):
            self._print(f"✗ {event.error} (keeping the last good graph; waiting for the next save)")

    @staticmethod
    def step_line(event: StepFinished) -> str:
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
            tail = f" ({event.reason})" if event.reason else ""
        metrics = ", ".join(f"{k}={v:g}" for k, v in event.metrics.items())
        return f"  {symbol} {event.step} {event.status}{tail}" + (f" [{metrics}]" if metrics else "")


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


class JsonReporter:
    """One JSON object per event, one per line (`flow run --json`)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.as_dict(), default=repr)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


class LiveReporter:
    """Live Rich progress for a terminal: a table of steps that updates in place, logs above it."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = console or Console()
        self._steps: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._title = ""
        self._live = Live(
            console=self._console, refresh_per_second=12, transient=True, get_renderable=self._render
        )
        self._started = False

    def _render(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table

        styles = {
            "succeeded": "green",
            "cached": "cyan",
            "failed": "red",
            "skipped": "dim",
            "cancelled": "yellow",
            "running": "bold",
            "pending": "dim",
        }
        table = Table.grid(padding=(0, 1))
        table.add_column(width=2)
        table.add_column()
        table.add_column()
        table.add_column(style="dim")
        now = time.monotonic()
        with self._lock:
            rows = list(self._steps.items())
        shown = rows if len(rows) <= 30 else [r for r in rows if r[1]["status"] == "running"][:30]
        for name, info in shown:
            status = info["status"]
            symbol: Any = Spinner("dots", style="bold") if status == "running" else SYMBOLS.get(status, "?")
            elapsed = f"{now - info['t0']:.1f}s" if status == "running" else info.get("tail", "")
            table.add_row(symbol, f"[{styles.get(status, '')}]{name}[/]", status, elapsed)
        done = sum(1 for _, i in rows if i["status"] not in ("pending", "running"))
        table.add_row("", f"[bold]{self._title}[/]", f"{done}/{len(rows)}", "")
        return table

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self._title = f"run #{event.run_id} of {event.flow}"
                self._steps = {n: {"status": "pending", "t0": 0.0} for n in event.steps}
                if not self._started:
                    self._live.start()
                    self._started = True
            elif isinstance(event, StepStarted):
                self._steps[event.step] = {"status": "running", "t0": time.monotonic()}
            elif isinstance(event, StepLog):
                self._console.print(
                    f"[dim]{event.step} |[/] {event.line}", markup=True, highlight=False, soft_wrap=True
                )
            elif isinstance(event, StepRetrying):
                self._console.print(
                    f"[yellow]↻ {event.step} attempt {event.attempt} failed:[/] {event.error}"
                )
            elif isinstance(event, StepFinished):
                tail = (
                    f"{event.duration_s:.2f}s"
                    if event.status == "succeeded"
                    else (event.error or event.reason)
                )
                self._steps[event.step] = {"status": event.status, "t0": 0.0, "tail": tail}
                if event.status != "cached" or len(self._steps) <= 30:
                    self._console.print(PlainReporter.step_line(event), highlight=False, markup=False)
                if event.status == "failed" and event.traceback:
                    self._console.print(event.traceback.rstrip(), style="red", highlight=False, markup=False)
            elif isinstance(event, RunFinished):
                if self._started:
                    self._live.stop()
                    self._started = False
                style = "green" if event.status == "succeeded" else "red"
                self._console.print(
                    f"[{style}]run #{event.run_id} {event.status}[/] in {event.duration_s:.2f}s: "
                    f"{summary_counts(event.counts)}"
                )
            elif isinstance(event, FlowReloaded):
                self._console.print(f"[bold]{reload_line(event)}[/]")
            elif isinstance(event, LoadFailed):
                self._console.print(f"[red]✗ {event.error}[/] (keeping the last good graph)", markup=True)

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._live.stop()
                self._started = False
