"""Provides `preload`: a worker started for a flow file imports the libraries the file imports before
its first task, while the runner is still importing them itself to load the flow.

A flow's libraries are imported twice on a cold `flow run`: by the runner, which executes the flow
file, then by the worker, when it unpickles the first step's code (which refers to them). On the 2
cores of MEASUREMENTS.md pandas with two scikit-learn modules take 1.4-3 s to import, so an ML flow's
first step waited for that import after the runner had done its own. The early worker
(`runner.executors.spawn.start_early`) is started before the CLI's own imports, with the flow file's
path: it reads the file's top-level import statements and imports those that resolve to a library
on the other core meanwhile.

Only libraries, as `dsl.locality` tells them from the user's code (the standard library, installed
distributions): a worker must not import the user's own modules (it runs the code the runner
shipped, `runner.engine.bundles`). A library the flow's directory shadows (`pandas.py` beside the
flow) is left alone, and `drop_shadowed` forgets one that a project root the first task installs
shadows, so a step body's `import` finds the user's module as it would have. A library that fails
to import is skipped: the step that needs it reports the error as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys

from dsl.locality import is_user_file

_IMPORT = re.compile(r"^(?:import[ \t]+([\w. \t,]+)|from[ \t]+([\w.]+)[ \t]+import\b)", re.MULTILINE)
"""A top-level `import a.b, c as d` or `from a.b import c` (one at column 0: not one inside an `if`,
a `try` or a function, which may never run)."""
_OWN = frozenset({"dsl", "runner", "tui", "__future__"})


def imported_modules(source: str) -> list[str]:
    """The absolute module names the top-level import statements of `source` import, in order."""
    found: dict[str, None] = {}
    for match in _IMPORT.finditer(source):
        names = [match.group(2)] if match.group(2) else match.group(1).split(",")
        for name in names:
            words = name.split()
            if words and not words[0].startswith(".") and words[0].partition(".")[0] not in _OWN:
                found[words[0]] = None
    return list(found)


def _is_library(top: str) -> bool:
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    return bool(spec.origin) and not is_user_file(spec.origin)  # a namespace package has no origin


def _shadowed(top: str, directory: str) -> bool:
    return os.path.exists(os.path.join(directory, f"{top}.py")) or os.path.isdir(os.path.join(directory, top))


def preload(flow_file: str) -> tuple[list[str], dict[str, str | None]]:
    """Import the libraries `flow_file` imports at its top level (read from its text: nothing of the
    file runs). Returns the top-level names imported, and the variables of the environment those
    imports changed (None: removed)."""
    before = dict(os.environ)
    imported = _import_libraries(flow_file)
    after = dict(os.environ)
    changed = {
        name: after.get(name) for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    }
    return imported, changed


def _import_libraries(flow_file: str) -> list[str]:
    try:
        with open(flow_file, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError):
        return []
    directory = os.path.dirname(os.path.abspath(flow_file))
    imported: dict[str, None] = {}
    for name in imported_modules(source):
        top = name.partition(".")[0]
        if name in sys.modules or _shadowed(top, directory) or not _is_library(top):
            continue
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # noqa: S112 - the step that needs it reports the error
            continue
        imported[top] = None
    return list(imported)


def drop_shadowed(preloaded: list[str], roots: tuple[str, ...]) -> None:
    """Forget each preloaded library a module under one of `roots` shadows (a project root the
    worker just put on `sys.path`): a step body's import must find the user's module."""
    for top in list(preloaded):
        if any(_shadowed(top, root) for root in roots):
            preloaded.remove(top)
            for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
                del sys.modules[name]
