"""The TUI's inner boundaries, checked on the source and at run time: widgets never import screens
(the screen shows every dialog), and the controllers and `tui.data` never import Textual (they run,
and are tested, without an app). import-linter states the same as contracts; these hold without it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TUI = Path(__file__).resolve().parents[2] / "tui"


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def test_widgets_never_import_screens() -> None:
    found = {
        f"{path.name} imports {name}"
        for path in sorted((TUI / "widgets").glob("*.py"))
        for name in imported(path)
        if name == "tui.screens" or name.startswith("tui.screens.")
    }
    assert not found


def test_controllers_and_data_never_import_textual_or_widgets() -> None:
    found = {
        f"{path.parent.name}/{path.name} imports {name}"
        for package in ("controllers", "data")
        for path in sorted((TUI / package).glob("*.py"))
        for name in imported(path)
        if name.split(".")[0] in ("textual", "rich")
        or name.startswith(("tui.widgets", "tui.screens", "tui.app"))
    }
    assert not found


def test_a_controller_runs_without_textual_loaded() -> None:
    code = (
        "import sys\n"
        "import tui.controllers.flow, tui.controllers.commands, tui.controllers.router, tui.data.boxes\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'textual')\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
