"""Provides `main`, the `flow` console script's first code: it starts the first worker process of a
`flow run` on local workers (or of `flow tui FILE`) before importing the rest of the CLI
(`runner.executors.spawn`), then hands over to `runner.cli.exits.main`.

Only the standard library is imported before the worker starts: the worker's start-up then overlaps
the CLI's imports, the flow's loading and the run's planning.
"""

from __future__ import annotations

import os
import sys

_NOT_LOCAL = ("--executor", "--pdb", "--help")
"""Options after which `flow run` may not run on local workers now (or at all)."""


def starts_local_workers(argv: list[str]) -> bool:
    """Whether this command line is a `flow run` on the default local executor, or a `flow tui` of a
    flow file (a guess that only costs an unused worker when wrong: `runner.executors.spawn.adopt`
    checks before using it). The TUI's first run may come much later; its worker is then ready, with
    the flow's libraries imported."""
    if len(argv) < 2 or argv[0] not in ("run", "tui"):
        return False
    if argv[0] == "tui" and flow_file_of(argv) is None:
        return False  # a directory of flows: which one runs first is the user's choice
    if os.environ.get("FLOW_EXECUTOR", "local") != "local":
        return False
    return not any(arg.partition("=")[0] in _NOT_LOCAL for arg in argv[1:])


def flow_file_of(argv: list[str]) -> str | None:
    """The Python flow file a `flow run` (or `flow tui`) command line names, if it names one (a guess:
    it only decides which libraries the early worker imports ahead, `runner.executors.preload`)."""
    return next((arg for arg in argv[1:] if arg.endswith(".py") and not arg.startswith("-")), None)


def main() -> None:
    """Start the early worker when it will be wanted, then run the command."""
    if starts_local_workers(sys.argv[1:]):
        from runner.executors import spawn

        spawn.start_early(flow_file_of(sys.argv[1:]))
    from runner import dataclass_cache

    dataclass_cache.install()  # before the imports below create their dataclasses; saved at exit
    from runner.cli.exits import main as run_command

    run_command()
