"""Provides `main`, the `flow` console script: the one place that maps how a command ended to the
process's exit status.

0 the command (or run) succeeded, 1 a step failed or the run was stopped, 2 the flow or the command
line is invalid (a `FlowError` carries its code, as click's exceptions do), 130 interrupted before a
command installed its own Ctrl-C handling, 141 killed by SIGPIPE when the reader went away. A
user's mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from dsl.errors import FlowError
from runner import dataclass_cache
from runner.cli.common import ExitWith
from runner.cli.interrupts import EXIT_INTERRUPTED
from runner.executors import spawn
from runner.text import visible


def _exit_now(code: int) -> None:
    """Exit once a command has closed its engine and store, without joining stray threads.

    A flow file may start non-daemon threads at import; a normal interpreter exit would wait for them
    for ever after the run is over.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    spawn.discard_early()
    dataclass_cache.save()
    os._exit(code)


def _code_of(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else 1


def main() -> None:
    """Entry point: run the command; map user errors to one line on stderr and exit code 2.

    A plain `flow run` is parsed by `runner.cli.run_args`, without importing Typer; every other
    command line goes to the Typer app.

    A command that only prints (`flow runs | head`) dies of SIGPIPE as `cat` does when its reader
    goes away: quietly, status 141. Commands hosting a run opt out (`runner.cli.hosting.host_runs`).
    """
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    from runner.cli.run_args import plain_run

    run_args = plain_run(sys.argv[1:])
    try:
        if run_args is not None:
            _run_plain(run_args)
        else:
            _run_app()
    except ExitWith as done:
        _exit_now(done.code)
    except FlowError as exc:
        print(f"flow: error: {visible(str(exc))}", file=sys.stderr)
        _exit_now(exc.exit_code)
    except SystemExit as exc:
        _exit_now(_code_of(exc))
    except Exception as exc:
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):  # a click usage error: its message, its code (2)
            show()
            _exit_now(code)
        raise
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handling
        print("flow: interrupted", file=sys.stderr)
        _exit_now(EXIT_INTERRUPTED)


def _run_plain(run_args: dict[str, Any]) -> None:
    """`flow run` as `runner.cli.run_args` parsed it; end of input on stdin ends it as under click
    (a newline on stderr, then as Ctrl-C)."""
    from runner.cli.running import run_flow

    try:
        run_flow(**run_args)
    except EOFError:
        print(file=sys.stderr)
        raise KeyboardInterrupt from None


def _run_app() -> None:
    """The Typer app on `sys.argv`, with click's own ways of ending turned into Python's: `Abort` (what
    click makes of end of input) into `KeyboardInterrupt`, an exit code into `SystemExit`.

    Outside standalone mode click returns an `Exit`'s code (`--help`, `--version`) instead of raising
    it, and Typer makes Ctrl-C such an exit (130). No command returns a number of its own (they end
    with `ExitWith`)."""
    import typer

    from runner.cli.commands import app

    try:
        ended = app(standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt from None
    if ended == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if isinstance(ended, int) and not isinstance(ended, bool) and ended:
        raise SystemExit(ended)
