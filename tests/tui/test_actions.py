"""Pilot tests: every action of `flow tui`, against a real engine, worker processes and store."""

from __future__ import annotations

from textual import events
from textual.widgets import Input

from tests.tui.conftest import pane_of, ready, run_done, wait_for
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.params import ParamsScreen
from tui.widgets.dag import DagView
from tui.widgets.history import RunHistory
from tui.widgets.logs import LogView

SIZE = (120, 36)


def statuses(pane) -> dict[str, str]:  # type: ignore[no-untyped-def]
    state = pane.controller.viewed_state
    return {name: info.status for name, info in state.steps.items()} if state else {}


async def test_open_shows_every_step_and_details(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        dag = pane.query_one(DagView)
        assert set(dag.layout_.columns[0]) == {"load"}
        assert [c for c in dag.layout_.columns] == [["load"], ["train"], ["report"]]
        assert dag.selected == "load"
        assert flow.selected == "load"
        assert flow.viewed is None


async def test_run_shows_statuses_logs_and_history(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        assert statuses(pane) == {"load": "succeeded", "train": "succeeded", "report": "succeeded"}
        assert flow.viewed_state.log("load").lines == ["loading 5 rows"]
        log = pane.query_one(LogView)
        assert log.buffer is flow.viewed_state.log(flow.selected)  # the step the run left selected
        history = pane.query_one(RunHistory)
        assert history.row_count == 1
        assert flow.history[0].status == "succeeded" and flow.history[0].trigger == "tui"
        assert flow.history[0].metrics == {"score": 5.0}


async def test_second_run_is_cached_and_says_why(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        assert set(statuses(pane).values()) == {"cached"}
        assert "same fingerprint" in flow.viewed_state.steps["train"].reason
        await pilot.press("i")
        assert pane.tab == "details-tab"
        text = str(pane.query_one("#details-text").render())
        assert "cached" in text


async def test_rerun_selected_step_and_descendants(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("home", "right")
        assert flow.selected == "train"
        await pilot.press("e")
        await run_done(pilot, pane, 2)
        state = flow.viewed_state
        assert state.trigger == "re-run train"
        assert state.steps["train"].status == "succeeded"
        assert state.steps["train"].reason == "forced"
        assert state.steps["report"].status in ("cached", "succeeded")
        assert "load" not in state.scope


async def test_force_rerun_all(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("f")
        await run_done(pilot, pane, 2)
        assert set(statuses(pane).values()) == {"succeeded"}
        assert {i.reason for i in flow.viewed_state.steps.values()} == {"forced"}


async def test_stop_kills_the_running_step(slow_flow, app_for):
    app = app_for(slow_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await wait_for(pilot, lambda: statuses(pane).get("sleepy") == "running", what="sleepy running")
        await pilot.press("s")
        await run_done(pilot, pane)
        assert flow.viewed_state.status == "cancelled"
        assert statuses(pane)["sleepy"] == "cancelled"
        assert flow.history[0].status == "cancelled"


async def test_failed_step_shows_error_and_traceback_then_resume(failing_flow, app_for):
    app = app_for(failing_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        assert statuses(pane) == {"prepare": "succeeded", "fragile": "failed"}
        await pilot.press("right")
        info = flow.viewed_state.steps["fragile"]
        assert "boom" in (info.error or "")
        assert "Traceback" in (info.traceback or "")
        await pilot.press("i")
        details = str(pane.query_one("#details-text").render())
        assert "boom" in details and "traceback" in details
        (failing_flow.parent / "fixed").write_text("yes")
        await pilot.press("u")
        await run_done(pilot, pane, 2)
        state = flow.viewed_state
        assert state.trigger == "resume of #1"
        assert statuses(pane) == {"prepare": "cached", "fragile": "succeeded"}


async def test_logs_jump_to_error_and_search(failing_flow, app_for):
    app = app_for(failing_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("right")
        log = pane.query_one(LogView)
        await wait_for(pilot, lambda: len(log.buffer) > 0, what="fragile's logs")
        assert log.buffer.lines[0] == "about to check the input"
        await pilot.press("x")
        assert log.current is not None
        assert "Traceback" in log.buffer.lines[log.current] or "boom" in log.buffer.lines[log.current]
        assert not log.follow
        await pilot.press("slash")
        search = pane.query_one("#log-search", Input)
        assert search.has_focus
        await pilot.press(*"ABOUT", "enter")
        assert log.search == "ABOUT"
        assert log.current == 0
        await pilot.press("escape")
        assert not search.display
        await pilot.press("end")
        assert log.follow


async def test_edit_params_validates_then_runs_with_them(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, ParamsScreen), what="the params dialog")
        dialog = app.screen
        rows = dialog.query_one("#param-rows", Input)
        rows.value = "lots"
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ParamsScreen)
        error = str(dialog.query_one("#param-error").render())
        assert error == "rows: 'lots' is not a whole number, e.g. 5"
        assert rows.has_class("-invalid")
        rows.value = ""
        lr = dialog.query_one("#param-lr", Input)
        lr.value = "fast"
        await pilot.press("ctrl+s")
        error = str(dialog.query_one("#param-error").render())
        assert error == "rows: empty — enter a whole number, e.g. 5\nlr: 'fast' is not a number, e.g. 0.5"
        assert rows.has_class("-invalid") and lr.has_class("-invalid")
        lr.value = "0.5"
        rows.value = "3"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not isinstance(app.screen, ParamsScreen), what="the dialog to close")
        assert flow.session.params()["rows"] == 3
        await run_done(pilot, pane)
        assert flow.history[0].params["rows"] == 3
        assert flow.viewed_state.log("load").lines == ["loading 3 rows"]


async def test_history_view_past_run_compare_and_rerun_it(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        flow.commands.set_params({"lr": "2.0"})
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        await pilot.press("3")
        table = pane.query_one(RunHistory)
        assert table.has_focus and table.cursor_run == 2
        await pilot.press("m", "down")
        assert table.cursor_run == 1
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="the comparison")
        compared = app.screen
        assert (compared.a.id, compared.b.id) == (2, 1)
        await pilot.press("escape")
        await pilot.press("enter")
        await wait_for(pilot, lambda: flow.viewed == 1, what="run #1 viewed")
        assert not flow.follow_live
        assert flow.viewed_state.params["lr"] == 0.5
        await pilot.press("a")
        await run_done(pilot, pane, 3)
        assert flow.history[0].trigger == "re-run of #1"
        assert flow.history[0].params["lr"] == 0.5
        assert flow.viewed == 3


async def test_delete_run_asks_first(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("3", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")
        assert app.store.get_run(1) is not None
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: not flow.history, what="the run to disappear")
        assert app.store.get_run(1) is None
        assert pane.query_one(RunHistory).row_count == 0


async def test_toggle_watch(simple_flow, app_for):
    app = app_for(simple_flow, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await wait_for(pilot, lambda: flow.watcher.armed, what="the watcher")
        await pilot.press("w")
        assert not flow.watcher.on and not flow.watcher.armed
        assert "watch off" in pane.query_one(DagView).border_subtitle
        await pilot.press("w")
        await wait_for(pilot, lambda: flow.watcher.armed, what="the watcher again")
        assert flow.watcher.on


async def test_quit_during_a_run_asks_then_stops_it(slow_flow, app_for):
    app = app_for(slow_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("r")
        await wait_for(pilot, lambda: statuses(pane).get("sleepy") == "running", what="sleepy running")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")
        assert app.is_running and app.engine.active_runs
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
    assert app.store.get_run(1).status == "cancelled"


async def test_quit_when_idle_exits_at_once(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")


async def test_keyboard_and_mouse_select_steps(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        dag = pane.query_one(DagView)
        await pilot.press("right", "right")
        assert flow.selected == "report"
        await pilot.press("left")
        assert flow.selected == "train"
        box = dag.layout_.boxes["report"]
        await pilot.click(DagView, offset=(box.x + 3 + 1, box.y + 1 + 1))
        assert flow.selected == "report"


async def test_theme_toggle_and_palette_commands(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        before = app.theme
        await pilot.press("t")
        assert app.theme != before
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in (
            "Run (r)",
            "Re-run step (e)",
            "Force (f)",
            "Stop (s)",
            "Resume (u)",
            "Re-run past (a)",
            "Delete run (d)",
            "Params (p)",
            "Watch (w)",
        ):
            assert expected in titles


async def test_directory_lists_flows_and_runs_two_at_once(tmp_path, app_for, simple_flow, slow_flow):
    app = app_for(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        flows = app.main.query_one("#flows")
        assert flows.option_count == 2
        first = pane_of(app)
        assert first.path.name == "simple.py"
        await wait_for(pilot, lambda: first.controller.session is not None, what="simple loaded")
        await pilot.press("down")
        await wait_for(pilot, lambda: pane_of(app).path.name == "slow.py", what="slow.py open")
        slow = pane_of(app)
        await wait_for(pilot, lambda: slow.controller.session is not None, what="slow loaded")
        await pilot.press("r")
        await wait_for(pilot, lambda: statuses(slow).get("sleepy") == "running", what="sleepy running")
        await pilot.press("up")
        await wait_for(pilot, lambda: pane_of(app) is first, what="back to simple")
        await pilot.press("r")
        await run_done(pilot, first)
        assert slow.controller.active, "the slow flow keeps running while the other one ran"
        assert flows.statuses[str(slow_flow.resolve())] == "running"
        await wait_for(
            pilot,
            lambda: flows.statuses[str(simple_flow.resolve())] == "succeeded",
            what="simple's status in the list",
        )
        await pilot.press("down")
        await wait_for(pilot, lambda: pane_of(app) is slow, what="slow again")
        await pilot.press("s")
        await wait_for(pilot, lambda: not slow.controller.active, what="slow stopped")


async def test_a_flow_chosen_in_the_list_right_after_moving_to_it_opens(
    tmp_path, app_for, simple_flow, slow_flow
):
    """`down` then `enter` as fast as a terminal delivers them: the pane `down` made is not composed
    yet when `enter` asks for its DAG (that crashed the app); it is shown, its DAG focused."""
    app = app_for(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        await wait_for(pilot, lambda: pane_of(app).controller.session is not None, what="simple loaded")
        for key in ("down", "enter"):
            app._driver.send_message(events.Key(key, None))  # as the terminal delivers keys: no waiting
        await wait_for(pilot, lambda: pane_of(app).path.name == "slow.py", what="slow.py open")
        await wait_for(pilot, lambda: isinstance(app.focused, DagView), what="its DAG focused")
        assert app.is_running and app.focused is pane_of(app).query_one(DagView)
