"""Provides `Loop`: run a flow again and again (`flow run FILE --loop`, `Flow(loop=...)`).

Each iteration is an ordinary run (trigger `loop`), so the cache applies: an iteration whose inputs
did not change is all cached. Without an interval the next iteration starts when the previous one
ends; with `every` iterations start that far apart (start to start), never overlapping: an iteration
that takes longer than the interval is followed at once. The loop stops after `max_iterations`, or
when asked: `stop()` lets the iteration in flight finish, `cancel()` stops it too (its finished
steps keep their results); Ctrl-C in `flow run --loop` cancels. Iterations run the code loaded
when the loop began: `--watch` is the mode that follows edits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dsl.errors import FlowError
from dsl.loader import LoadedFlow
from dsl.operating import parse_duration
from runner.engine import Engine, RunHandle
from runner.session import FlowSession
from runner.status import RunStatus

POLL_S = 0.1
"""How often a waiting loop looks at a stop request (the command's Ctrl-C): acted on within this."""


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
        interrupted: Callable[[], bool] | None = None,
    ) -> None:
        self._start = start
        self._engine = engine
        self.every = every
        self.max_iterations = max_iterations
        self.say = say or (lambda text: None)
        self._interrupted = interrupted or (lambda: False)
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
                self.current.wait(POLL_S)
                if self._interrupted() and not self.current.done:
                    self.say("stopping the loop (Ctrl-C again to exit at once)")
                    self.cancel()
                    self.current.wait()
            self.statuses.append(self.current.status)
            if self.current.status == RunStatus.CANCELLED and not self._stop.is_set():
                self.say("loop: the iteration was stopped (flow stop); ending the loop")
                break
            if self.max_iterations is not None and len(self.statuses) >= self.max_iterations:
                break
            if self.every is not None:
                wait = began + self.every - time.monotonic()
                if wait > 0 and not self._stop.is_set():
                    self.say(f"loop: next iteration in {wait:.1f}s (Ctrl-C to stop)")
                    until = time.monotonic() + wait
                    while not self._stop.wait(min(POLL_S, max(0.0, until - time.monotonic()))):
                        if self._interrupted():
                            self.stop()
                        elif time.monotonic() >= until:
                            break
        return self.statuses


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
    interrupted: Callable[[], bool],
) -> str:
    """`flow run --loop`: iterate `session`'s flow with `settings` from `loop_settings`.

    `interrupted` is the command's stop request (the first Ctrl-C or SIGTERM, or the output's reader
    gone): the iteration in flight is stopped cleanly (recorded as cancelled) and the loop ends; a
    second Ctrl-C exits at once, as in every mode (`runner.cli.interrupts`).

    Returns:
        "succeeded" if every iteration succeeded, else the status of the first that did not.
    """

    def start() -> RunHandle:
        return session.run(trigger="loop", force=force, **options)

    every, max_iterations = settings
    loop = Loop(start, engine, every=every, max_iterations=max_iterations, say=say, interrupted=interrupted)
    statuses = loop.run()
    failed = [status for status in statuses if status != "succeeded"]
    say(
        f"loop: {len(statuses)} iteration{'' if len(statuses) == 1 else 's'}"
        + (f", {len(failed)} not succeeded" if failed else "")
    )
    if not statuses:
        return "cancelled"
    return failed[0] if failed else "succeeded"
