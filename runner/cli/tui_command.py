"""Provides `flow tui`, the one command that imports the TUI (Textual), inside the command itself.

Kept in a module of its own so the import-linter contract can name the only place in `runner` that
may import `tui`, and so every other command starts without Textual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsl.errors import FlowError
from runner.cli.common import ExitWith
from runner.cli.hosting import host_runs
from runner.cli.options import StoreOpt, WorkersOpt


def tui(
    target: Annotated[Path, typer.Argument(help="A flow file, or a directory of flows.")] = Path("."),
    workers: WorkersOpt = None,
    store_dir: StoreOpt = None,
) -> None:
    """The terminal UI: the DAG, live logs, run history, hot reload."""
    host_runs()
    from tui.app import run_tui

    if not target.exists():
        raise FlowError("no such file or directory", file=str(target))
    raise ExitWith(run_tui(target, store_dir, workers))
