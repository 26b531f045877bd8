"""The log pane's status line counts lines in words a person writes: `1 line`, `2 lines` (issue 14)."""

from __future__ import annotations

from textual.widgets import Static

from tests.tui.conftest import ready, run_done, wait_for
from tui.widgets.logs import LogView


async def test_the_log_status_says_one_line_not_one_lines(simple_flow, app_for):  # type: ignore[no-untyped-def]
    app = app_for(simple_flow)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        # The logs followed whichever step ran last (how events were batched decides it): show load.
        await pilot.press("g", "home")
        log = pane.query_one(LogView)
        await wait_for(pilot, lambda: log.buffer.lines == ["loading 5 rows"], what=lambda: log.buffer.lines)
        status = pane.query_one("#log-status", Static)
        await wait_for(pilot, lambda: "run #1" in str(status.content), what=lambda: str(status.content))
        assert " 1 line " in f" {status.content} ".replace(" · ", " "), str(status.content)
        assert "1 lines" not in str(status.content)
