"""Provides the Typer `app` of the `flow` command, with every command registered in the order
`flow --help` lists them.

Each command is a plain function in the module of its group; registering them all here keeps the
whole command line readable on one screen. The command modules are small and import what is heavy
(the engine, the store, Rich, Textual) inside the commands, so building the app stays cheap:
`benchmarks.startup` times it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner.cli import check, control, history, maintenance, operate, review, run, tui_command
from runner.cli.common import ExitWith

app = typer.Typer(
    name="flow",
    help="Workflow-as-code for ML and data pipelines: run, watch and inspect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            shown = version("flowdsl")
        except PackageNotFoundError:
            shown = "unknown (not installed as a distribution)"
        typer.echo(f"flow {shown}")
        raise ExitWith(0)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Workflow-as-code for ML and data pipelines: run, watch and inspect flows."""


for command in (
    run.run,
    review.plan,
    history.runs,
    history.show,
    history.logs,
    review.diff,
    review.debug,
    run.resume,
    control.stop,
    history.delete,
    check.graph,
    check.check,
    tui_command.tui,
    maintenance.doctor,
    maintenance.gc,
    maintenance.pin,
    operate.serve,
    operate.schedules,
    operate.release,
    operate.releases,
):
    app.command()(command)
