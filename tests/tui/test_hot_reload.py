"""Hot reload driven by real file edits: a save re-runs what changed, a broken save shows the error
and keeps the last good graph, the next good save clears it.
"""

from __future__ import annotations

from tests.tui.conftest import SIMPLE, ready, wait_for, write_flow
from tui.widgets.dag import DagView

SIZE = (120, 36)


async def test_saving_reruns_what_changed_and_survives_a_broken_save(simple_flow, app_for):
    app = app_for(simple_flow, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await wait_for(pilot, lambda: flow.watcher.armed, what="the watcher")
        dag = pane.query_one(DagView)
        await pilot.press("r")
        await wait_for(pilot, lambda: flow.history and flow.history[0].status == "succeeded", what="run #1")

        # 1. Change train's code: train re-runs, load is reused from the cache.
        write_flow(simple_flow, SIMPLE.replace('print("training")', 'print("training v2")'))
        await wait_for(
            pilot,
            lambda: len(flow.history) >= 2 and flow.history[0].status != "running" and not flow.active,
            what="the run the save started",
        )
        run = flow.viewed_state
        assert run.trigger == "watch: simple.py changed"
        assert run.steps["load"].status == "cached"
        assert run.steps["train"].status == "succeeded"
        assert "code" in run.steps["train"].reason

        # 2. A broken save: the error shows, the last good graph stays.
        write_flow(simple_flow, SIMPLE + "\ndef broken(:\n")
        error = pane.query_one("#load-error")
        await wait_for(pilot, lambda: error.display, what="the load error panel")
        assert "syntax error" in flow.error
        assert "last good graph" in error.border_title
        assert set(dag.layout_.columns[0]) == {"load"} and len(dag.layout_.boxes) == 3

        # 3. The next good save (with a new step) clears it and draws the new step.
        write_flow(simple_flow, SIMPLE + '\n\n@step\ndef publish(report):\n    print("published")\n')
        await wait_for(pilot, lambda: not error.display, what="the error to clear")
        await wait_for(pilot, lambda: "publish" in dag.layout_.boxes, what="the new step")
        await wait_for(
            pilot,
            lambda: flow.history[0].status != "running" and not flow.active and len(flow.history) >= 3,
            what="the run after the fix",
        )
        assert flow.viewed_state.steps["publish"].status == "succeeded"
        assert flow.viewed_state.steps["load"].status == "cached"


async def test_a_flow_that_never_loaded_shows_the_error_then_loads_on_save(tmp_path, app_for):
    path = write_flow(tmp_path / "late.py", "from dsl import step\n\n@step\ndef a(:\n")
    app = app_for(path, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        assert flow.error and "syntax error" in flow.error
        assert flow.loaded is None
        await pilot.press("r")  # nothing to run: a clear notification, no crash
        await wait_for(pilot, lambda: flow.watcher.armed, what="the watcher")
        write_flow(path, SIMPLE)
        await wait_for(pilot, lambda: flow.loaded is not None, what="the good load")
        assert not pane.query_one("#load-error").display
        assert set(pane.query_one(DagView).layout_.boxes) == {"load", "train", "report"}
