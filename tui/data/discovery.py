"""Provides `find_flows`: the flow files in a directory (what `flow tui DIR` lists)."""

from __future__ import annotations

import re
from pathlib import Path

_MARKER = re.compile(r"^\s*(from\s+dsl\s+import|import\s+dsl\b|@step\b)", re.MULTILINE)
_YAML_MARKER = re.compile(r"^steps:", re.MULTILINE)
"""A YAML flow has a top-level `steps:` key (other YAML files in a project, CI configs, do not)."""


def find_flows(directory: Path) -> list[Path]:
    """Python files directly in `directory` that import `dsl` or use `@step`, and YAML files with a
    top-level `steps:`, sorted by name."""
    found = []
    candidates = [*directory.glob("*.py"), *directory.glob("*.yaml"), *directory.glob("*.yml")]
    for path in sorted(candidates):
        if path.name.startswith(("_", ".")) or path.name.startswith("test_"):
            continue
        if not path.is_file():
            continue  # a FIFO (or a device) named *.py: reading it would block for ever
        try:
            with path.open(encoding="utf-8", errors="replace") as file:
                head = file.read(20_000)
        except OSError:
            continue
        marker = _MARKER if path.suffix == ".py" else _YAML_MARKER
        if marker.search(head):
            found.append(path)
    return found
