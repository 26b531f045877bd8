"""The TUI fits the screen and teaches itself (issue 16), driven as a user would (Pilot) on real
flows, a real store and worker processes: every sample flow's DAG whole at 120×36 and 80×24, zoom,
the help screen and the footer for each focused pane, every action in the palette, vim keys, Tab
order, the logs following the running step (and pinned), a cached step's logs from its source run,
and a flow saved while another is shown.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.binding import Binding

from tests.tui.conftest import (
    SIMPLE,
    pane_of,
    ready,
    run_done,
    screen_lines,
    screen_text,
    wait_for,
    write_flow,
)
from tui.keys import ACTIONS
from tui.screens.help import HelpScreen
from tui.widgets.dag import DagView
from tui.widgets.flow_list import FlowList
from tui.widgets.history import RunHistory
from tui.widgets.logs import LogView

SAMPLES = Path(__file__).resolve().parents[2] / "sample_flows"
SIZE = (120, 36)


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
async def test_every_sample_flows_dag_is_whole_on_screen(tmp_path, app_for, size):
    shutil.copytree(SAMPLES, tmp_path / "flows")
    app = app_for(tmp_path / "flows")
    async with app.run_test(size=size) as pilot:
        flows = sorted(p for p in (tmp_path / "flows").glob("*.py") if not p.name.startswith("_"))
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        for index, path in enumerate(flows):
            if index:
                await pilot.press("down")
            await wait_for(
                pilot,
                lambda p=path: pane_of(app).path == p and pane_of(app).controller.loaded is not None,
                what=f"{path.name} loaded",
            )
            pane = pane_of(app)
            flow = pane.controller
            dag = pane.query_one(DagView)
            await wait_for(pilot, lambda d=dag: d.layout_.boxes and d.size.height, what="the DAG laid out")
            await pilot.pause()
            layout = dag.layout_
            fits = layout.width <= dag.size.width and layout.height <= dag.size.height
            assert fits, (path.name, layout.style)
            assert not dag.show_vertical_scrollbar and not dag.show_horizontal_scrollbar
            shown = screen_text(app)
            for name in flow.loaded.graph.nodes:
                assert name in shown, (path.name, name)  # whole, not ellipsised
            assert dag.outer_size.height <= size[1] - 2 - 8, "the logs keep their rows"


async def test_z_gives_the_dag_the_whole_screen_and_back(tmp_path, app_for, simple_flow):
    app = app_for(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        pane = pane_of(app)
        flow = pane.controller
        await wait_for(pilot, lambda: flow.loaded is not None, what="loaded")
        await pilot.press("g", "z")
        await pilot.pause()
        assert pane.zoomed and not app.main.query_one(FlowList).display
        assert not pane.query_one(LogView).display
        assert pane.query_one(DagView).max_rows == 22 - 2
        await pilot.press("z")
        await pilot.pause()
        assert not pane.zoomed and app.main.query_one(FlowList).display and pane.query_one(LogView).display


async def test_help_lists_the_focused_panes_keys_then_the_global_ones(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("g", "question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        sections = dict(app.screen.help_sections)
        assert list(sections)[0] == "DAG (focused)" and list(sections)[-1] == "Everywhere"
        dag_keys = {label: keys for keys, label, _ in sections["DAG (focused)"]}
        assert dag_keys["Left"] == "← h" and dag_keys["Down"] == "↓ j" and dag_keys["Zoom"] == "z"
        assert "All edges" in dag_keys and "Pin step" in dag_keys
        everywhere = {label for _, label, _ in sections["Everywhere"]}
        assert {"Run", "Stop", "Force", "Resume", "Params", "Watch", "Help", "Quit", "History"} <= everywhere
        assert "Search" in screen_text(app) or "Run" in screen_text(app)
        await pilot.press("escape")
        pane.query_one(LogView).focus()
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help again")
        sections = dict(app.screen.help_sections)
        assert list(sections)[0] == "Logs (focused)"
        logs = {label for _, label, _ in sections["Logs (focused)"]}
        assert {"Search", "Error", "Follow end", "Up", "Down"} <= logs
        await pilot.press("escape", "3", "question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help for history")
        sections = dict(app.screen.help_sections)
        assert {"View", "Mark", "Compare", "Resume", "Delete run"} <= {
            label for _, label, _ in sections["History (focused)"]
        }


async def test_the_footer_shows_the_keys_of_what_has_focus(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("g")
        await pilot.pause()
        footer = screen_lines(app)[-1]
        assert "Zoom" in footer and "Re-run step" in footer and "Help" in footer and "Compare" not in footer
        await pilot.press("3")
        await pilot.pause()
        footer = screen_lines(app)[-1]
        assert "Compare" in footer and "Mark" in footer and "Zoom" not in footer
        pane.query_one(LogView).focus()
        await pilot.press("1")
        await pilot.pause()
        footer = screen_lines(app)[-1]
        assert "Search" in footer and "Error" in footer


async def test_every_action_is_in_the_command_palette_with_its_key(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for action in ACTIONS:
            key = action.display or app.get_key_display(Binding(action.key.split(",")[0], action.action))
            assert f"{action.label} ({key})" in titles, action.label


async def test_vim_keys_move_where_arrows_do_and_tab_goes_round_in_order(tmp_path, app_for):
    write_flow(tmp_path / "simple.py", SIMPLE)
    app = app_for(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        pane = pane_of(app)
        flow = pane.controller
        await wait_for(pilot, lambda: flow.loaded is not None, what="loaded")
        flows = app.main.query_one(FlowList)
        assert flows.has_focus
        await pilot.press("tab")
        assert pane.query_one(DagView).has_focus
        await pilot.press("l")
        assert flow.selected == "train"
        await pilot.press("l", "h")
        assert flow.selected == "train"
        await pilot.press("tab")
        assert pane.query_one(LogView).has_focus
        await pilot.press("tab")
        assert flows.has_focus
        await pilot.press("3", "shift+tab")
        assert pane.query_one(DagView).has_focus
        await pilot.press("tab")
        assert pane.query_one(RunHistory).has_focus


GATED = """
import time
from pathlib import Path

from dsl import step

GATE = Path(__file__).with_name("gate")


def wait(name):
    while not (GATE.parent / name).exists():
        time.sleep(0.01)


@step(cache=False)
def first():
    print("first is working", flush=True)
    wait("one")
    return 1


@step(cache=False)
def second(first):
    print("second is working", flush=True)
    wait("two")
    return first + 1


@step(cache=False)
def third(second):
    print("third is working", flush=True)
    wait("three")
    return second + 1
"""


async def test_the_logs_follow_the_running_step_until_pinned(tmp_path, app_for):
    flow = write_flow(tmp_path / "gated.py", GATED)
    app = app_for(flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        log = pane.query_one(LogView)
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: flow.selected == "first" and "first is working" in screen_text(app),
            what="the logs on first",
        )
        assert "following the run (P pins)" in screen_text(app)
        (tmp_path / "one").touch()
        await wait_for(
            pilot,
            lambda: flow.selected == "second" and "second is working" in screen_text(app),
            what="the logs on second",
        )
        await pilot.press("g", "h")  # the user looks at another step: it stays there
        assert flow.selected == "first" and flow.pinned
        await wait_for(pilot, lambda: "pinned (P follows the run)" in screen_text(app), what="pinned")
        (tmp_path / "two").touch()
        await wait_for(pilot, lambda: flow.viewed_state.steps["third"].status == "running", what="third runs")
        await pilot.pause()
        assert flow.selected == "first" and log.buffer.lines == ["first is working"]
        await pilot.press("P")
        await wait_for(
            pilot,
            lambda: flow.selected == "third" and "third is working" in screen_text(app),
            what="back to following",
        )
        (tmp_path / "three").touch()
        await run_done(pilot, pane)


async def test_a_cached_step_shows_the_logs_of_the_run_that_computed_it(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        assert flow.viewed_state.steps["load"].status == "cached"
        await pilot.press("g", "home")
        log = pane.query_one(LogView)
        await wait_for(pilot, lambda: log.buffer.lines == ["loading 5 rows"], what="run #1's lines")
        await wait_for(
            pilot, lambda: "load · run #2 · cached: logs of run #1" in screen_text(app), what="the label"
        )
        assert "loading 5 rows" in screen_text(app)
    again = app_for(simple_flow)  # a new session: run #2 and run #1's lines come from the store
    async with again.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, again)
        flow = pane.controller
        await wait_for(pilot, lambda: flow.viewed == 2 and flow.viewed_state is not None, what="run #2")
        await pilot.press("g", "home")
        await wait_for(
            pilot, lambda: "load · run #2 · cached: logs of run #1" in screen_text(again), what="the label"
        )
        assert pane.query_one(LogView).buffer.lines == ["loading 5 rows"]


async def test_a_flow_saved_while_another_is_shown_is_marked_in_the_list(tmp_path, app_for):
    first = write_flow(tmp_path / "alpha.py", SIMPLE)
    second = write_flow(tmp_path / "beta.py", SIMPLE)
    app = app_for(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        flows = app.main.query_one(FlowList)
        await pilot.press("down")
        await wait_for(
            pilot,
            lambda: pane_of(app).path == second and pane_of(app).controller.loaded is not None,
            what="beta open",
        )
        beta = pane_of(app)
        await pilot.press("r")
        await run_done(pilot, beta)
        await pilot.press("up")
        await wait_for(pilot, lambda: pane_of(app).path == first, what="alpha shown")
        second.write_text(SIMPLE.replace("training", "training harder"), encoding="utf-8")
        key = str(second.resolve())
        await wait_for(pilot, lambda: key in flows.changed, what="beta marked")
        await wait_for(pilot, lambda: any("beta *" in line for line in screen_lines(app)), what="the mark")
        await pilot.press("down")
        await wait_for(pilot, lambda: pane_of(app) is beta, what="beta shown")
        assert key not in flows.changed
        await wait_for(pilot, lambda: "flow changed since: r runs it" in screen_text(app), what="the title")
