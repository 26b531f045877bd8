"""What opening a flow in the TUI imports: no more than drawing it needs (each import is start-up time)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path

    from tui.app import make_app
    from tui.widgets.history import RunHistory


    async def main() -> None:
        app = make_app(Path(sys.argv[1]), Path(sys.argv[2]), 1, watch=False)
        async with app.run_test(size=(120, 36)) as pilot:
            while app.main is None or app.main.pane is None or not app.main.pane.controller.history:
                await pilot.pause(0.01)
            while not app.main.pane.query_one(RunHistory).columns:
                await pilot.pause(0.01)
        print("\\n".join(sys.modules))


    asyncio.run(main())
    """
)


def test_the_history_table_does_not_import_rich_emoji_codes(write_flow, tmp_path: Path) -> None:
    """The run history's column labels are text, not markup: a `str` label is parsed as Rich markup,
    whose emoji codes (`rich._emoji_codes`, ~7 ms) are then imported on the first paint's path."""
    path = write_flow("from dsl import step\n\n@step\ndef a():\n    return 1\n")
    store = tmp_path / "store"
    command = [sys.executable, "-m", "runner", "run", str(path), "--store", str(store)]
    run = subprocess.run(command, capture_output=True, timeout=99)
    assert run.returncode == 0, run.stderr
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(store)], capture_output=True, text=True, timeout=99
    )
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "tui.widgets.history" in modules  # the listing works
    assert "rich._emoji_codes" not in modules
