"""Provides `LiveReporter`: `flow run` on a terminal — the narration scrolls, a small live panel
of the running steps stays at the bottom.

Why a thread of its own: the engine calls subscribers on its scheduler thread, and a terminal can
block (a slow link, a paused tmux pane) or vanish. So the subscriber only records what happened and
queues the lines, under a lock that guards plain data and is never held while anything else is
called; one writer thread is the only code that prints and redraws (Rich's `Live` runs without its
own refresh thread). No thread ever waits for a lock while holding another one of ours, so the
scheduler, the writer and a signal handler cannot deadlock, which the old design (the scheduler
printing through `Live` under a lock the refresh thread's render also took) did.

What scrolls is exactly what `runner.output.plain.PlainReporter` writes to a pipe (`Narrator` lines),
styled; every string goes out as text (Rich segments, or written directly until the panel first
comes up), never as markup.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Any

from runner.events import Event, RunFinished, RunStarted, StepFinished, StepStarted
from runner.output.narration import Line, Narrator
from runner.status import StepStatus
from runner.text import visible

REFRESH_S = 1 / 12
"""The panel's redraw period: smooth spinners, and at most 12 redraws a second whatever the log rate."""

BATCH_S = 0.01
"""How long the writer lets lines gather after the first one arrives: a step printing 100,000 lines
costs a few hundred prints and redraws instead of one each."""

BACKLOG = 5_000
"""Lines queued for the terminal before the scheduler waits for the writer: bounds memory when a
step prints faster than the terminal can show (the plain reporter blocks the same way, on write)."""

PANEL_AFTER_S = 0.3
"""How long runs go on before the panel of running steps comes up. A shorter run never shows it, and
its lines are written without Rich (`_write_plain`): importing Rich (30-70 ms) was most of what a
short `flow run` on a terminal cost over one into a pipe."""

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36"}
"""The SGR code of each word of a style in `STYLES`: what Rich writes for them on any colour terminal."""

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
"""One frame per redraw, from the clock (a `rich.spinner.Spinner` made afresh per redraw never turns)."""

PANEL_ROWS = 10
"""Running steps listed in the panel at most (fewer on a short terminal); the rest are counted."""

STYLES: dict[str, str] = {
    "run": "bold",
    "started": "",
    "log": "",
    "retry": "yellow",
    "job": "magenta",
    StepStatus.SUCCEEDED: "green",
    StepStatus.CACHED: "cyan",
    StepStatus.FAILED: "red",
    StepStatus.SKIPPED: "dim",
    StepStatus.CANCELLED: "yellow",
    "traceback": "red",
    "finished_ok": "bold green",
    "finished_bad": "bold red",
    "reload": "bold",
    "load_failed": "red",
    "note": "yellow",
}


class LiveReporter:
    """Live progress for a terminal: narration above, the running steps in a panel below.

    Args:
        console: a Rich console (tests pass one writing to a file); default: the terminal.
    """

    def __init__(self, console: Any = None) -> None:
        self._given = console
        # Bound to the terminal now: `--executor inline` swaps `sys.stdout` to capture a step's prints.
        self._file = console.file if console is not None else sys.stdout
        self._console: Any = None
        self._live: Any = None
        """Rich's console and live display, made by the writer thread (`_open`)."""
        self._narrator = Narrator()
        self._lock = threading.Condition(threading.Lock())
        """Guards the fields below. A leaf: nothing is called while it is held."""
        self._queue: deque[Line] = deque()
        self._running: dict[tuple[int, str], float] = {}
        self._runs: dict[int, list[Any]] = {}
        """Run id -> [title, steps, finished steps]."""
        self._busy_since = 0.0
        """When the runs under way began (the first of them to start while none was)."""
        self._stopping = False
        self._wake = threading.Event()
        self.closed = threading.Event()
        """Set once the terminal cannot be written to any more (closed, hung up)."""
        self._colour = (  # as Rich decides it (as the given console has)
            console.is_terminal and not console.no_color and not console.is_dumb_terminal
            if console is not None
            else os.environ.get("NO_COLOR", "") == ""
            and os.environ.get("TERM") not in ("dumb", "unknown")
            and self._file.isatty()
        )
        self._panel_up = False
        """Whether the panel is on the terminal; only the writer thread reads or sets it."""
        self._parsed: dict[str, Any] | None = None
        """`STYLES` as Rich styles (see `_styles`); only the writer thread uses it."""
        self._thread = threading.Thread(target=self._write_loop, name="flow-terminal", daemon=True)
        self._thread.start()

    # ----- any thread: record and queue, never touch the terminal ------------------------------

    def __call__(self, event: Event) -> None:
        if not self._thread.is_alive():
            return  # the writer died of a bug (its traceback is on stderr): queue nothing for nobody
        lines = self._narrator.lines(event)
        with self._lock:
            if isinstance(event, RunStarted):
                if not self._runs:
                    self._busy_since = time.monotonic()
                self._runs[event.run_id] = [f"run #{event.run_id} of {event.flow}", len(event.steps), 0]
            elif isinstance(event, StepStarted):
                self._running[(event.run_id, event.step)] = time.monotonic()
            elif isinstance(event, StepFinished):
                self._running.pop((event.run_id, event.step), None)
                run = self._runs.get(event.run_id)
                if run is not None:
                    run[2] += 1
            elif isinstance(event, RunFinished):
                self._runs.pop(event.run_id, None)
                for key in [k for k in self._running if k[0] == event.run_id]:
                    del self._running[key]
            self._queue.extend(lines)
            while len(self._queue) > BACKLOG and not self.closed.is_set() and self._thread.is_alive():
                self._wake.set()
                self._lock.wait(0.5)
        self._wake.set()

    def note(self, text: str) -> None:
        """A message from the command itself (stopping, watching), shown above the panel."""
        with self._lock:
            self._queue.append(Line(visible(text), "note"))
        self._wake.set()

    def close(self) -> None:
        """Write what is queued, take the panel down and end the writer thread."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(5)

    def abort(self) -> None:
        """The process is about to end at once (a second Ctrl-C): give the cursor back, print nothing
        else. Safe from a signal handler: no lock, one `write` on the terminal's descriptor."""
        try:
            os.write(self._file.fileno(), b"\x1b[?25h\r\n")
        except (OSError, ValueError, AttributeError):
            pass

    # ----- the writer thread: the only code that prints or redraws ------------------------------

    def _open(self) -> None:
        """Make Rich's console and live display, once the panel is first wanted. On this thread:
        importing Rich takes 30-70 ms, which the engine need not wait for (it only queues lines)."""
        from rich.console import Console
        from rich.live import Live

        self._console = self._given or Console(file=self._file, highlight=False, emoji=False, markup=False)
        self._live = Live(
            console=self._console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=True,  # a stray print (a flow's import, an inline step) lands above the panel
            redirect_stderr=os.isatty(2),  # but `2>err.log` keeps its messages
            get_renderable=self._render,
        )

    def _write_loop(self) -> None:
        while True:
            if self._wake.wait(REFRESH_S) and not self._stopping:
                time.sleep(BATCH_S)  # let a burst of log lines gather: one print and redraw for many
            self._wake.clear()
            with self._lock:
                lines = list(self._queue)
                self._queue.clear()
                wanted = (
                    bool(self._runs)
                    and not self._stopping
                    and (self._panel_up or time.monotonic() - self._busy_since >= PANEL_AFTER_S)
                )
                stopping = self._stopping
                self._lock.notify_all()
            if self.closed.is_set():
                if stopping:
                    return
                continue
            try:
                self._draw(lines, wanted)
            except (OSError, ValueError):
                self.closed.set()  # the terminal is gone: drop output from now on
                self._give_back()
                continue
            if stopping:
                with self._lock:
                    if not self._queue:
                        return

    def _draw(self, lines: list[Line], wanted: bool) -> None:
        """Print `lines` above the panel, put the panel up or take it down as `wanted`, redraw it."""
        if lines:
            if self._live is None:
                self._write_plain(lines)
            else:
                self._print(lines)
        if wanted and not self._panel_up:
            if self._live is None:
                self._open()
            self._live.start()
            self._panel_up = True
        elif self._panel_up and not wanted:
            self._live.stop()
            self._panel_up = False
        if self._panel_up:
            self._live.refresh()

    def _give_back(self) -> None:
        """Undo the panel's hold on `sys.stdout`/`sys.stderr` once the terminal is gone, so another
        thread's stray print does not fail through it."""
        if self._panel_up:
            self._panel_up = False
            try:
                self._live.stop()  # restores the streams in a `finally`, even when its last write fails
            except (OSError, ValueError):
                pass

    def _write_plain(self, lines: list[Line]) -> None:
        """Write `lines` as `_print` does, without Rich (no panel is up): the same text, styled with the
        same SGR codes Rich writes (none under `NO_COLOR`)."""
        parts = []
        for line in lines:
            if line.prefix:
                parts += [self._styled(line.text[: line.prefix], "dim"), line.text[line.prefix :], "\n"]
            else:
                parts += [self._styled(line.text, STYLES.get(line.kind, "")), "\n"]
        self._file.write("".join(parts))
        self._file.flush()

    def _styled(self, text: str, style: str) -> str:
        if not style or not self._colour or not text:
            return text
        return f"\x1b[{';'.join(_SGR[word] for word in style.split())}m{text}\x1b[0m"

    def _print(self, lines: list[Line]) -> None:
        """Print `lines` above the panel as Rich segments, one style a line (the label of a log line
        dim). Not as a `Text`: Rich wraps a `Text` line by line, which `soft_wrap` leaves to the
        terminal anyway, and that work on this thread kept the engine's thread from the GIL: a cold
        run of a 1,000-step fan-out took 1.5-3.6 s on a terminal against 0.9-1.4 s piped. The lines
        are already safe to show (`Narrator`), so nothing is lost by not filtering them again."""
        from rich.segment import Segment, Segments

        styles = self._styles()
        segments: list[Segment] = []
        add = segments.append
        newline = Segment.line()
        for line in lines:
            if line.prefix:
                add(Segment(line.text[: line.prefix], styles["dim"]))
                add(Segment(line.text[line.prefix :]))
            else:
                add(Segment(line.text, styles.get(line.kind)))
            add(newline)
        self._console.print(Segments(segments), soft_wrap=True, highlight=False, markup=False, emoji=False)

    def _styles(self) -> dict[str, Any]:
        """`STYLES` (and `dim`) parsed, once: Rich parses a style named by a string at every use."""
        if self._parsed is None:
            from rich.style import Style

            self._parsed = {
                kind: Style.parse(name) for kind, name in {**STYLES, "dim": "dim"}.items() if name
            }
        return self._parsed

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        with self._lock:
            running = sorted(self._running.items(), key=lambda item: item[1])
            runs = [list(r) for r in self._runs.values()]
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1, no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        table.add_column(no_wrap=True, justify="right", style="dim")
        rows = max(1, min(PANEL_ROWS, self._console.height - 3))
        spin = SPINNER[int(now / REFRESH_S) % len(SPINNER)]
        for (_, name), since in running[:rows]:
            table.add_row(spin, Text(visible(name, newlines=False)), f"{now - since:.1f}s")
        if len(running) > rows:
            table.add_row("", Text(f"… and {len(running) - rows} more running", style="dim"), "")
        for title, total, finished in runs:
            table.add_row("", Text(visible(title, newlines=False), style="bold"), f"{finished}/{total}")
        return table
