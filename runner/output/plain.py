"""Provides the `Reporter` interface of every headless view, and two of them: `PlainReporter` (one
line per event, for CI and pipes) and `JsonReporter` (`flow run --json`).

Each reporter is just a subscriber of the engine's events, wording them with `Narrator`. Neither
imports Rich, so `flow run` in CI (not a terminal) starts without it.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Protocol

from runner.events import Event
from runner.output.narration import Narrator
from runner.text import visible


class Reporter(Protocol):
    """What a command hosting runs needs of its view (`runner.cli.hosting`)."""

    closed: threading.Event
    """Set once the output cannot be written any more (a closed pipe, a terminal gone)."""

    def __call__(self, event: Event) -> None:
        """Show one event (called on the engine's scheduler thread: never block for long)."""

    def note(self, text: str) -> None:
        """Show a message from the command itself (stopping, watching)."""

    def close(self) -> None:
        """Write what is pending and release the output."""

    def abort(self) -> None:
        """The process ends now (a second Ctrl-C): give the terminal back. Safe in a signal handler."""


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
            print(visible(text), file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Nothing to release: every line is written when its event arrives."""

    def abort(self) -> None:
        """Nothing to give back: plain lines leave the terminal as they found it."""


class JsonReporter(PlainReporter):
    """One JSON object per event, one per line (`flow run --json`)."""

    def __call__(self, event: Event) -> None:
        self._print(json.dumps(event.as_dict(), default=repr))
