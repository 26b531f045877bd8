"""The TUI gives back what it opened: after the app exits, no file of its store is left open (its
reads run on pooled threads, each with its own SQLite connection, and those threads outlive it)."""

from __future__ import annotations

import gc

from tests.helpers_core import files_open_under
from tests.tui.conftest import ready, run_done


async def test_no_store_file_stays_open_after_the_app_exits(tmp_path, app_for, simple_flow) -> None:  # type: ignore[no-untyped-def]
    app = app_for(simple_flow)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        assert files_open_under(tmp_path / "store")
    gc.collect()  # connections other threads used are let go, then freed by the collector
    assert files_open_under(tmp_path / "store") == []
