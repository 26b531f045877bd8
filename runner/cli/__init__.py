"""Provides the `flow` command line: `app` (Typer) and `main`, the console script (`runner.cli:main`).

The package, one module per group of commands:

- `commands`: the Typer app and the list of its commands, in `flow --help` order;
- `exits`: `main`, the one place that maps how a command ended to the exit status;
- `run`: `flow run` (once, `--watch`, `--loop`) and `flow resume`, on `hosting` (engine, reporter,
  Ctrl-C, hooks) and `interrupts` (the signals);
- `history`: `flow runs`, `show`, `logs`, `delete`;
- `check`: `flow check` and `flow graph`;
- `maintenance`: `flow doctor`, `gc`, `pin`;
- `operate`: `flow serve`, `schedules`, `release`, `releases`;
- `tui_command`: `flow tui`, the only importer of the TUI;
- `options`, `common`: what the commands share.
"""

from runner.cli.commands import app
from runner.cli.exits import main

__all__ = ["app", "main"]
