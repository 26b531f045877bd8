"""Provides `find_flows` and `is_flow_file`: which files in a directory are flows (`flow serve`, `flow tui`).

A Python file is a flow if it imports `dsl` or uses `@step`; a YAML file (`.yaml`/`.yml`) if it has a
top-level `steps:` key, so a config file beside the flows is not mistaken for a broken flow. Names
starting with `_`, `.` or `test_` are skipped, and so is anything but a regular file (a FIFO named
`*.py` would block the reader for ever).
"""

from __future__ import annotations

import re
from pathlib import Path

_PY_MARKER = re.compile(r"^\s*(from\s+dsl\s+import|import\s+dsl\b|@step\b)", re.MULTILINE)
_YAML_MARKER = re.compile(r"^steps\s*:", re.MULTILINE)
SUFFIXES = (".py", ".yaml", ".yml")
HEAD_BYTES = 20_000
"""How much of a file is read to recognise it: imports and the first `@step` come early."""


def is_flow_file(path: Path) -> bool:
    """Whether `path` looks like a flow file (see the module docstring)."""
    if path.suffix not in SUFFIXES or path.name.startswith(("_", ".", "test_")):
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return False
    marker = _PY_MARKER if path.suffix == ".py" else _YAML_MARKER
    return marker.search(head) is not None


def find_flows(directory: Path) -> list[Path]:
    """The flow files directly in `directory`, sorted by name, as absolute paths."""
    return [p.resolve() for p in sorted(directory.iterdir()) if p.is_file() and is_flow_file(p)]
