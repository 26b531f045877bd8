"""Provides what Ctrl-C, SIGTERM and SIGHUP do to a command that hosts runs (`flow run`, `--watch`,
`resume`), and how such a command leaves when nobody reads its output any more.

The first signal asks for a clean stop: the command's own loop (which checks `requested` every
`POLL_S`) cancels the run, so it is recorded as cancelled. The handler itself only sets an event:
a Python signal handler runs in the main thread between two bytecodes, possibly in the middle of a
print or while that thread holds a lock, so it must neither print nor wait for anything. The second
signal exits at once, in every mode: the workers are killed (given at most `KILL_WAIT_S`), the
terminal gets its cursor back, and the process ends with 130 without waiting for the scheduler,
which may be the very thing that is stuck.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
"""What `signal.signal` returns and takes back: a function, SIG_DFL/SIG_IGN, or None (set outside Python)."""

POLL_S = 0.1
"""How often a waiting command looks at a stop request: Ctrl-C is acted on within this."""

KILL_WAIT_S = 0.5
"""How long a second Ctrl-C waits for the workers to be killed before the process ends anyway."""

EXIT_INTERRUPTED = 130
"""128 + SIGINT: the shell's convention for a command ended by Ctrl-C."""


class StopOnSignal:
    """SIGINT/SIGTERM handlers for the lifetime of a `with` block.

    Args:
        kill: called (in a helper thread, for at most `KILL_WAIT_S`) when a second signal ends the
            process at once: kill the workers, give the terminal back.
    """

    def __init__(self, kill: Callable[[], None]) -> None:
        self.requested = threading.Event()
        """Set by the first signal: the command should stop its run (or its watch) cleanly."""
        self._kill = kill
        self._previous: dict[int, Handler] = {}
        """The handlers in place before, restored on exit (Python's own for SIGINT and SIGTERM)."""

    def __enter__(self) -> StopOnSignal:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:  # `nohup` stays nohup
            self._previous[hangup] = signal.signal(hangup, self._handle)  # the terminal was closed
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            exit_at_once(self._kill)
        self.requested.set()


def exit_at_once(kill: Callable[[], None]) -> None:
    """End the process now, after giving `kill` at most `KILL_WAIT_S`."""

    def quietly() -> None:
        try:
            kill()
        except BaseException:
            pass  # the process ends either way (a worker may be gone already): nothing to report to

    helper = threading.Thread(target=quietly, name="flow-kill", daemon=True)
    helper.start()
    helper.join(KILL_WAIT_S)
    os._exit(EXIT_INTERRUPTED)


def die_of_sigpipe() -> None:
    """Leave as a well-behaved Unix tool does when its reader has gone: killed by SIGPIPE (status
    141 in a shell), nothing printed. Standard output is pointed at /dev/null first, so no flush
    on the way out can fail or block."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    except OSError:
        pass
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + 13)
