"""Provides `plain_run`: the command line of a plain `flow run`, parsed without Typer.

Importing Typer (with click, `inspect`, `datetime`, `difflib`, ...) and building the app of every
command costs a `flow run` ~30 ms of its start, a quarter of what the whole run may take. This parser
knows `flow run`'s options (the same names, values and types as `runner.cli.run.run` declares; a test
compares the two on many command lines) and nothing else: any command line it is not sure to read as
click would (`--help`, an unknown or misspelt option, `--`, `-pVALUE`, a value that looks like an
option, an invalid number, a path click would refuse) is left to Typer, which parses it, or reports the
mistake, as it always has.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_FLAGS = {"--force": "force", "--watch": "watch", "--json": "json_lines", "--pdb": "pdb", "--loop": "loop"}
_VALUES: dict[str, tuple[str, type]] = {
    "--params": ("params_file", Path),
    "--executor": ("executor", str),
    "--workers": ("workers", int),
    "--every": ("every", str),
    "--max-iterations": ("max_iterations", int),
    "--store": ("store_dir", Path),
}
_LISTS = {"-p": "param", "--param": "param", "--only": "only", "--from": "from_step", "--to": "to_step"}
"""Repeatable options: every value, in order."""


def plain_run(argv: list[str]) -> dict[str, Any] | None:
    """`run_flow`'s keyword arguments for `argv` (the arguments after `flow`), or None when it is not
    a `flow run` this parser reads exactly as Typer would."""
    if not argv or argv[0] != "run":
        return None
    found: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    files: list[str] = []
    rest = iter(argv[1:])
    for token in rest:
        if not token:
            return None
        if not token.startswith("-"):
            files.append(token)
            continue
        name, equals, attached = token.partition("=")
        if name in _FLAGS and not equals and _FLAGS[name] not in found:
            found[_FLAGS[name]] = True
            continue
        if name not in _VALUES and name not in _LISTS:
            return None
        if name == "-p" and equals:
            return None  # click reads `-p=x` as the value "=x"
        value = attached if equals else next(rest, None)
        if not value or value.startswith("-"):
            return None
        if name in _LISTS:
            lists.setdefault(_LISTS[name], []).append(value)
            continue
        key, kind = _VALUES[name]
        converted = _convert(value, kind)
        if converted is None or key in found:
            return None
        found[key] = converted
    if len(files) != 1:
        return None
    file = _convert(files[0], Path)
    if file is None:
        return None
    args: dict[str, Any] = {"file": file}
    args.update(dict.fromkeys(_LISTS.values()))
    args.update(lists)
    args.update(dict.fromkeys(_FLAGS.values(), False))
    args.update({key: None for key, _ in _VALUES.values()})
    args.update(found)
    return args


def _convert(value: str, kind: type) -> object | None:
    """`value` as click converts it to `kind`, or None where click would refuse it (and say why)."""
    if kind is int:
        try:
            return int(value)
        except ValueError:
            return None
    if kind is Path:
        if os.path.exists(value) and not os.access(value, os.R_OK):
            return None  # click: "... is not readable"
        return Path(value)
    return value
