"""Provides `Loop`: run a flow again and again (`flow run FILE --loop`, `Flow(loop=...)`).

Each iteration is an ordinary run (trigger `loop`), so the cache applies: an iteration whose inputs
did not change is all cached. Without an interval the next iteration starts when the previous one
ends; with `every` iterations start that far apart (start to start), never overlapping: an iteration
that takes longer than the interval is followed at once. The loop stops after `max_iterations`, or
when asked: `stop()` lets the iteration in flight finish, `cancel()` stops it too (its finished
steps keep their results). Iterations run the code loaded when the loop began: `--watch` is the
mode that follows edits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dsl.errors import FlowError
from dsl.loader import LoadedFlow
from dsl.operating import parse_duration
from runner.engine import Engine, RunHandle
from runner.session import FlowSession


class Loop:
    """Drives the iterations of a loop.

    Args:
        start: starts one iteration and returns its handle (e.g. `FlowSession.run(trigger="loop")`).
        engine: the engine the runs belong to (to cancel one).
        every: seconds from one iteration's start to the next's; None runs them back to back.
        max_iterations: stop after this many; None runs until stopped.
        say: where progress lines go (stderr in the CLI).
    """

    def __init__(
        self,
        start: Callable[[], RunHandle],
        engine: Engine,
        *,
        every: float | None = None,
        max_iterations: int | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self._start = start
        self._engine = engine
        self.every = every
        self.max_iterations = max_iterations
        self.say = say or (lambda text: None)
        self._stop = threading.Event()
        self.current: RunHandle | None = None
        self.statuses: list[str] = []

    def stop(self) -> None:
        """End the loop once the iteration in flight (if any) has finished."""
        self._stop.set()

    def cancel(self) -> None:
        """End the loop and stop the iteration in flight."""
        self._stop.set()
        current = self.current
        if current is not None and not current.done:
            self._engine.cancel(current.id)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> list[str]:
        """Run iterations until done or stopped; return each iteration's status."""
        while not self._stop.is_set():
            number = len(self.statuses) + 1
            of = f" of {self.max_iterations}" if self.max_iterations else ""
            self.say(f"loop: iteration {number}{of}")
            began = time.monotonic()
            self.current = self._start()
            while not self.current.done:
                self.current.wait(0.2)
            self.statuses.append(self.current.status)
            if self.max_iterations is not None and len(self.statuses) >= self.max_iterations:
                break
            if self.every is not None:
                wait = began + self.every - time.monotonic()
                if wait > 0 and not self._stop.is_set():
                    self.say(f"loop: next iteration in {wait:.1f}s (Ctrl-C to stop)")
                    self._stop.wait(wait)
        return self.statuses


def run_loop_in_terminal(loop: Loop) -> int:
    """Run `loop` with the CLI's signal handling; return the exit code (0: every iteration succeeded).

    Ctrl-C once: no new iteration starts, the one in flight finishes. Twice: it is stopped too.
    Three times: exit at once. SIGTERM: stop the iteration in flight and end.
    """
    presses = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses == 1 and loop.current is not None and not loop.current.done:
            print(
                "\nflow: the loop ends after this iteration (Ctrl-C again to stop it now)",
                file=sys.stderr,
                flush=True,
            )
            loop.stop()
        elif presses <= 2:
            print("\nflow: stopping the loop", file=sys.stderr, flush=True)
            loop.cancel()
        else:
            os._exit(130)

    def on_term(signum: int, frame: Any) -> None:
        loop.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, on_term)
    try:
        statuses = loop.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    failed = sum(1 for s in statuses if s != "succeeded")
    summary = f"loop: {len(statuses)} iteration(s)" + (f", {failed} not succeeded" if failed else "")
    loop.say(summary)
    return 0 if statuses and not failed else 1


def loop_settings(
    loaded: LoadedFlow, loop: bool, every: str | None, max_iterations: int | None
) -> tuple[float | None, int | None] | None:
    """`(every, max_iterations)` if this `flow run` loops (`--loop`, `--every`, `--max-iterations`
    or `Flow(loop=...)`), else None. The command line wins over the flow's declaration.

    Raises:
        FlowError: an invalid `--every` or `--max-iterations`.
    """
    declaration = loaded.declaration
    declared = declaration is not None and declaration.loop
    if not (loop or every is not None or max_iterations is not None or declared):
        return None
    try:
        seconds = parse_duration(every) if every is not None else None
    except ValueError as exc:
        raise FlowError(f"--every: {exc}") from None
    if max_iterations is not None and max_iterations < 1:
        raise FlowError(f"--max-iterations must be 1 or more, got {max_iterations}")
    if declaration is not None:
        seconds = seconds if every is not None else declaration.loop_every
        max_iterations = max_iterations if max_iterations is not None else declaration.max_iterations
    return seconds, max_iterations


def loop_session(
    session: FlowSession,
    engine: Engine,
    settings: tuple[float | None, int | None],
    *,
    force: bool,
    options: dict[str, Any],
    say: Callable[[str], None],
) -> int:
    """`flow run --loop`: iterate `session`'s flow with `settings` from `loop_settings`; the exit code."""

    def start() -> RunHandle:
        return session.run(trigger="loop", force=force, **options)

    every, max_iterations = settings
    return run_loop_in_terminal(Loop(start, engine, every=every, max_iterations=max_iterations, say=say))
