"""Provides `flow check` and `flow graph`: a flow examined without running it, and without a store."""

from __future__ import annotations

from typing import Annotated

import typer

from dsl.errors import FlowError
from runner.cli.common import cell
from runner.cli.options import FileArg
from runner.text import visible


def graph(
    file: FileArg,
    fmt: Annotated[str, typer.Option("--format", help="text, mermaid or dot.")] = "text",
) -> None:
    """Print the flow's DAG as text, Mermaid or Graphviz DOT."""
    from dsl.loader import load_flow
    from runner.output.graph import FORMATS

    if fmt not in FORMATS:
        raise FlowError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    typer.echo(visible(FORMATS[fmt](load_flow(file))))


def check(
    file: FileArg,
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="Also check these values.")] = None,
) -> None:
    """Validate a flow without running it: syntax, imports, graph, parameters."""
    from dsl.loader import load_flow
    from runner.operate.schedule import schedule_of
    from runner.params import parse_assignments, resolve_flow_params

    loaded = load_flow(file)
    schedule_of(loaded)
    values = resolve_flow_params(loaded, parse_assignments(param or []))
    steps, params = len(loaded.graph.nodes), len(values)
    typer.echo(
        f"ok: {cell(loaded.name)} has {steps} step{'' if steps == 1 else 's'} and {params} "
        f"parameter{'' if params == 1 else 's'} "
        f"({cell(', '.join(f'{k}={v!r}' for k, v in values.items())) or 'none'})"
    )
