"""The TUI while steps stream logs: batching in the bridge, the log view's growth, tabs, the spinner.

Real app, real engine and worker processes (Pilot); the bridge test feeds a real message pump.
"""

from __future__ import annotations

import asyncio
import html
import re

from textual.message_pump import MessagePump

from runner.events import RunFinished, StepLog
from tests.tui.conftest import ready, run_done, wait_for, write_flow
from tui.data.state import LogBuffer, RunState, StepLogs
from tui.messages import EventBridge, EventsReady
from tui.widgets.dag import DagView
from tui.widgets.details import StepDetails
from tui.widgets.history import RunHistory
from tui.widgets.logs import LogView
from tui.widgets.tab_bar import TabBar

SIZE = (100, 30)


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    """The text of the screen as the app would paint it now (one string per row of SVG runs)."""
    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


STREAMS = """
import time

from dsl import step


@step(cache=False)
def stream():
    for i in range(10):
        print(f"line {i:03d}")
    time.sleep(0.5)
    for i in range(10, 300):
        print(f"line {i:03d}")
        if i % 50 == 0:
            time.sleep(0.05)
    return 300


@step(cache=False)
def other():
    for i in range(200):
        print(f"other {i:03d}")
    return 200
"""


def test_the_bridge_groups_consecutive_lines_of_a_step_and_keeps_the_order() -> None:
    pump = MessagePump()
    bridge = EventBridge(pump)
    events = [
        StepLog(1, "a", "stdout", "a0", 1.0),
        StepLog(1, "a", "stderr", "a1", 2.0),
        StepLog(1, "b", "stdout", "b0", 3.0),
        StepLog(1, "a", "stdout", "a2", 4.0),
        StepLog(2, "a", "stdout", "other run", 5.0),
        RunFinished(1, "succeeded", 1.0, {}, 6.0),
        StepLog(1, "a", "stdout", "a3", 7.0),
    ]
    for event in events:
        bridge(event)
    assert pump._message_queue.qsize() == 1  # one EventsReady for the whole burst
    assert isinstance(pump._message_queue.get_nowait(), EventsReady)
    items = bridge.drain()
    shape = [
        (item.run_id, item.step, [e.line for e in item.events]) if isinstance(item, StepLogs) else item.kind
        for item in items
    ]
    assert shape == [
        (1, "a", ["a0", "a1"]),
        (1, "b", ["b0"]),
        (1, "a", ["a2"]),
        (2, "a", ["other run"]),
        "run_finished",
        (1, "a", ["a3"]),
    ]
    bridge(StepLog(1, "a", "stdout", "a4", 8.0))
    assert pump._message_queue.qsize() == 0  # held until the UI releases the bridge
    bridge.release()
    assert pump._message_queue.qsize() == 1
    assert [e.line for item in bridge.drain() for e in item.events] == ["a4"]  # type: ignore[union-attr]


async def test_streamed_lines_land_in_their_steps_and_the_view_follows_the_end(tmp_path, app_for):
    app = app_for(write_flow(tmp_path / "streams.py", STREAMS))
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        dag = pane.query_one(DagView)
        dag.select("stream")
        await pilot.press("r")
        log = pane.query_one(LogView)
        await wait_for(pilot, lambda: len(log.buffer) >= 10, what="the first lines")
        assert not log.show_vertical_scrollbar  # ten lines fit
        await run_done(pilot, pane)
        await pilot.pause()
        state = flow.viewed_state
        assert state is not None
        assert state.log("stream").lines == [f"line {i:03d}" for i in range(300)]
        assert state.log("other").lines == [f"other {i:03d}" for i in range(200)]
        # The view grew without a layout per batch, yet the scrollbar appeared and tracks the size.
        assert log.virtual_size.height == 300
        assert log.show_vertical_scrollbar
        assert log.vertical_scrollbar.window_virtual_size == 300
        assert log.follow and log.scroll_y == log.max_scroll_y > 0
        shown = screen_text(app)
        assert "line 299" in shown and "line 000" not in shown
        assert "stream · run #1 · 300 lines · follow" in shown


async def test_tabs_switch_by_key_and_by_click(simple_flow, app_for) -> None:
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        log, details = pane.query_one(LogView), pane.query_one(StepDetails)
        history = pane.query_one(RunHistory)
        assert pane.tab == "logs-tab" and log.display and not details.display and not history.display
        await pilot.press("i")
        assert pane.tab == "details-tab" and details.display and not log.display
        assert pane.query_one(TabBar).active == "details-tab"
        await pilot.click(TabBar, offset=(len(" Logs  Details  ") + 2, 0))  # on "History"
        assert pane.tab == "history-tab" and history.display and not details.display
        await pilot.click(TabBar, offset=(2, 0))  # on "Logs"
        assert pane.tab == "logs-tab" and log.display and not history.display
        await pilot.press("slash")  # the search box belongs to the logs tab
        search = pane.query_one("#log-search")
        assert search.display
        await pilot.press("escape", "i")
        assert not search.display
        await pilot.press("1")
        assert pane.tab == "logs-tab" and not search.display


async def test_the_spinner_of_a_running_step_turns(slow_flow, app_for) -> None:
    app = app_for(slow_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: flow.viewed_state is not None and flow.viewed_state.steps["sleepy"].status == "running",
            what="sleepy running",
        )

        def sleepy_row() -> str:
            return next((row for row in screen_text(app).split("\n") if "sleepy" in row), "")

        first = sleepy_row()
        await asyncio.sleep(0.6)
        await pilot.pause()
        assert sleepy_row() != first
        await pilot.press("s")
        await wait_for(pilot, lambda: not flow.active, what="the run to stop")


def test_a_batch_of_lines_is_buffered_as_one_line_at_a_time_would_be() -> None:
    streams = ["stdout", "stderr", "log", "stdout", "stderr"]
    lines = ["plain", "tab\tseparated", "trailing newline\n", "", "wide ✓ and tab\t!"]
    one_by_one, batched = LogBuffer(), LogBuffer()
    for stream, line in zip(streams, lines, strict=True):
        one_by_one.append(stream, line)
    batched.extend(streams[:2], lines[:2])
    batched.extend(streams[2:], lines[2:])
    assert batched.lines == one_by_one.lines
    assert batched.stderr == one_by_one.stderr and batched.width == one_by_one.width
    state = RunState(1, "flow", "flow.py")
    state.add_logs("train[2]", [StepLog(1, "train[2]", "stderr", "fan-out line", 1.0)])
    assert state.log("train").lines == ["[2] fan-out line"] and list(state.log("train").stderr) == [1]
