"""Provides `find_flows`: the flow files in a directory (what `flow tui DIR` lists)."""

from __future__ import annotations

import re
from pathlib import Path

_MARKER = re.compile(r"^\s*(from\s+dsl\s+import|import\s+dsl\b|@step\b)", re.MULTILINE)


def find_flows(directory: Path) -> list[Path]:
    """Python files directly in `directory` that import `dsl` or use `@step`, sorted by name."""
    found = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith(("_", ".")) or path.name.startswith("test_"):
            continue
        try:
            head = path.read_text(encoding="utf-8", errors="replace")[:20_000]
        except OSError:
            continue
        if _MARKER.search(head):
            found.append(path)
    return found
