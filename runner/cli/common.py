"""Provides what several commands need: `ExitWith`, the store opened the way every command opens it,
a run found by its id or `last`, a user's text fit for a table cell, and a remark on stderr.

Nothing here imports the store or the engine at module level: `flow --help` and `flow check` should
not pay for SQLite.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dsl.errors import FlowError
from runner.text import visible

if TYPE_CHECKING:
    from runner.records import RunRecord
    from runner.store import Store


class ExitWith(Exception):
    """Leave a command with an exit code (after its output is printed); `runner.cli.exits.main`
    turns it into the process's exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def open_store(path: Path | None, *, create: bool = True) -> Store:
    """Open the store; runs whose runner died (kill -9, crash) are marked interrupted first."""
    from runner.store import Store

    store = Store(path, create=create)
    store.mark_interrupted()
    return store


def run_id(store: Store, text: str) -> int:
    """The run `text` names: a number (`7`, `#7`), or `last`/`latest`.

    Raises:
        FlowError: neither, or `last` in a store without runs.
    """
    if text in ("last", "latest"):
        found = store.latest_run_id()
        if found is None:
            raise FlowError("there are no runs in this store yet")
        return found
    try:
        return int(text.lstrip("#"))
    except ValueError:
        raise FlowError(f"run id must be a number or 'last', got {text!r}") from None


def get_run(store: Store, text: str) -> RunRecord:
    """The run `text` names (see `run_id`).

    Raises:
        FlowError: no such run in this store.
    """
    number = run_id(store, text)
    run = store.get_run(number)
    if run is None:
        raise FlowError(f"no run #{number} in the store at {store.root}")
    return run


def cell(text: str) -> str:
    """A user-supplied value in a one-line place (a table cell): every control character, newline
    included, shown as a symbol."""
    return visible(text, newlines=False)


def note(text: str) -> None:
    """A remark for the user (progress, a warning, a word about the output), on stderr: stdout stays
    the command's output, so a pipe gets only that."""
    print(f"flow: {text}", file=sys.stderr, flush=True)
