"""Provides `show_output`: `flow show RUN STEP --output [--to FILE]`, one step's output printed or
written to a file."""

from __future__ import annotations

import pprint
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dsl.errors import FlowError
from runner.cli.common import get_run, note
from runner.text import visible

if TYPE_CHECKING:
    from runner.store import Store


def show_output(store: Store, run_text: str, step_name: str, to_file: Path | None) -> None:
    """Print STEP's output in RUN (text as it is, any other object pretty-printed), or write it to
    `to_file`: a `str` as UTF-8 text, `bytes` as they are, any other object as its pickle (the bytes
    the store holds, so `pickle.load` gives the object back).

    Raises:
        FlowError: no such run or step, no output, collected by `flow gc`, or (printing) an output
            that cannot be unpickled here.
    """
    from runner.api import Run

    chosen = Run(store, get_run(store, run_text))
    found = chosen[step_name]
    data = found.output_bytes()
    if to_file is not None:
        value = found.output
        try:
            if isinstance(value, str):
                to_file.write_text(value, encoding="utf-8")
                kind = "text"
            elif isinstance(value, bytes | bytearray):
                to_file.write_bytes(bytes(value))
                kind = "bytes"
            else:
                to_file.write_bytes(data)
                kind = f"a pickled {type(value).__name__} (pickle.load gives it back)"
        except OSError as exc:
            raise FlowError(f"--to {to_file}: {exc.strerror or exc}") from None
        note(f"wrote the output of {visible(found.name)} in run #{chosen.id} to {to_file}: {kind}")
        return
    value = found.output
    text = value if isinstance(value, str) else pprint.pformat(value, width=100, sort_dicts=False)
    typer.echo(visible(text))
