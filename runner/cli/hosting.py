"""Provides what the commands that host runs (`flow run`, `--watch`, `--loop`, `flow resume`, `flow
serve`) share: the engine and reporter they build, and one `host` that drives a run to its end.

Hosting a run means: hooks follow it, the first Ctrl-C (or SIGTERM, or the output's reader going
away) stops it cleanly so it is recorded as cancelled, a second Ctrl-C exits at once, and on the way
out the engine is closed before the reporter (the run's last events are still shown) and the store
last. The exit code is the run's: 0 succeeded, 1 anything else.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from dsl.errors import FlowError
from runner.cli.common import ExitWith
from runner.cli.interrupts import POLL_S, StopOnSignal, die_of_sigpipe

if TYPE_CHECKING:
    from dsl.loader import LoadedFlow
    from runner.engine import Engine, RunHandle
    from runner.output.plain import Reporter
    from runner.store import Store


def host_runs() -> None:
    """A command that runs flows survives a closed output (it stops the run and records it, see
    `leave`): writes to a closed pipe must fail with EPIPE, not kill the process at once."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def make_engine(store: Store, executor: str | None, workers: int | None, *, debug: bool = False) -> Engine:
    """The engine on the executor the user chose (`--executor`, else `$FLOW_EXECUTOR`, else local).

    Raises:
        FlowError: `--pdb` with an executor other than inline.
    """
    from runner.engine import Engine, collect_less, freeze_heap
    from runner.executors import make_executor
    from runner.operate.releases import link_releases

    spec = executor or os.environ.get("FLOW_EXECUTOR") or ("inline" if debug else "local")
    if debug and spec != "inline":
        raise FlowError("--pdb needs --executor inline (the debugger runs in this process)")
    freeze_heap()  # what is loaded now (imports, the flow) lives as long as the process
    collect_less()  # a run keeps many of the objects it makes: see `runner.engine.heap`
    engine = Engine(store, make_executor(spec, workers, debug=debug))
    link_releases(engine, store)
    return engine


def make_reporter(json_lines: bool, *, debug: bool = False) -> Reporter:
    """JSON lines, the live view on a terminal, else plain lines (also under `--pdb`: a live panel
    redrawn every 80 ms would scribble over the debugger's session)."""
    from runner.output.plain import JsonReporter, PlainReporter

    if json_lines:
        return JsonReporter()
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not debug:
        from runner.output.live import LiveReporter

        return LiveReporter()
    return PlainReporter()


def host(
    engine: Engine,
    store: Store,
    reporter: Reporter,
    resolve: Callable[[str], LoadedFlow | None],
    drive: Callable[[StopOnSignal], str],
) -> str:
    """Drive runs with `drive` (given the stop request; it returns the last run's status) while
    hooks follow them, then close the engine, the reporter and the store; return that status.

    `resolve` gives the loaded flow a run's file belongs to, for its hooks.
    """
    from runner.operate.hooks import HookRunner

    hooks = HookRunner(engine, resolve, report=lambda text: reporter.note(f"flow: {text}"))
    with StopOnSignal(_kill_now(engine, reporter)) as stop:
        try:
            status = drive(stop)
            hooks.drain()
        finally:
            try:
                engine.close()  # its last events still reach the reporter
            finally:
                reporter.close()
                store.close()
    return status


def _kill_now(engine: Engine, reporter: Reporter) -> Callable[[], None]:
    """What a second Ctrl-C does before the process ends: give the terminal back, kill the workers."""

    def kill() -> None:
        reporter.abort()
        engine.executor.close()

    return kill


def wait(engine: Engine, handle: RunHandle, reporter: Reporter, stop: StopOnSignal) -> str:
    """Wait for a run; stop it cleanly on the first Ctrl-C, or once nobody reads the output (`| head`)."""
    stopped = False
    while not handle.done:
        handle.wait(POLL_S)
        if not stopped and (stop.requested.is_set() or reporter.closed.is_set()):
            stopped = True
            if stop.requested.is_set():
                reporter.note("flow: stopping the run (Ctrl-C again to exit at once)")
            engine.cancel(handle.id)
    return handle.status


def leave(reporter: Reporter, status: str) -> None:
    """Exit with the run's code, or as killed by SIGPIPE when nobody read the output to the end."""
    if reporter.closed.is_set():
        die_of_sigpipe()
    raise ExitWith(0 if status == "succeeded" else 1)
