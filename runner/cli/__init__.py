"""Provides the `flow` command line: `app` (Typer) and `main`, the console script (`runner.cli:main`).

The package, one module per group of commands:

- `commands`: the Typer app and the list of its commands, in `flow --help` order;
- `entry`: `main`, which starts a `flow run`'s first worker before the rest of the CLI is imported;
- `exits`: the one place that maps how a command ended to the exit status;
- `run`: `flow run` (once, `--watch`, `--loop`) and `flow resume`, on `hosting` (engine, reporter,
  Ctrl-C, hooks) and `interrupts` (the signals); `running` holds what `flow run` does once its
  command line is parsed, and `run_args` parses a plain `flow run` without importing Typer;
- `history`: `flow runs`, `show`, `logs`, `delete`;
- `check`: `flow check` and `flow graph`;
- `maintenance`: `flow doctor`, `gc`, `pin`;
- `operate`: `flow serve`, `schedules`, `release`, `releases`;
- `tui_command`: `flow tui`, the only importer of the TUI;
- `options`, `common`: what the commands share.
"""

from runner.cli.entry import main


def __getattr__(name: str) -> object:
    """`app` is imported on first use: `main` runs before Typer and the commands are imported (nor is
    `typing`, for the same reason)."""
    if name == "app":
        from runner.cli.commands import app

        return app
    raise AttributeError(f"module 'runner.cli' has no attribute {name!r}")


__all__ = ["app", "main"]
