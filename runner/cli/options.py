"""Provides the arguments and options several commands share, as `Annotated` aliases (as hamilton's
CLI does): one help text per option, whichever command takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

FileArg = Annotated[Path, typer.Argument(help="The flow file (.py, .yaml or .yml).", show_default=False)]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="The run store directory (default: $FLOW_STORE, else the nearest .flow/ from the working "
        "directory upwards, else ./.flow).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
JsonLinesOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="local (worker processes), inline (in-process, for --pdb), dask, or dask://HOST:PORT "
        "(default: $FLOW_EXECUTOR or local).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Steps run in parallel (default: CPU cores).", show_default=False),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("-p", "--param", help="Set a parameter: -p name=value (repeatable)."),
]
ParamsFileOpt = Annotated[
    Path | None,
    typer.Option("--params", help="Parameters from a TOML or JSON file.", show_default=False),
]
StepsOpt = list[str] | None
"""The type of --only/--from/--to (their help says what each command does with the steps)."""
