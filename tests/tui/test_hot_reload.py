"""Hot reload driven by real file edits: a save re-runs what changed, a broken save shows the error
and keeps the last good graph, the next good save clears it.
"""

from __future__ import annotations

from tests.tui.conftest import SIMPLE, ready, run_done, wait_for, write_flow
from tui.widgets.dag import DagView

SIZE = (120, 36)


async def first_run_watched(pilot, app):  # type: ignore[no-untyped-def]
    """The pane once its watcher is armed and run #1 (started with `r`) has succeeded."""
    pane = await ready(pilot, app)
    flow = pane.controller
    await wait_for(pilot, lambda: flow.watcher.armed, what="the watcher")
    await pilot.press("r")
    await wait_for(pilot, lambda: flow.history and flow.history[0].status == "succeeded", what="run #1")
    return pane


async def test_saving_reruns_what_changed_and_survives_a_broken_save(simple_flow, app_for):
    app = app_for(simple_flow, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        pane = await first_run_watched(pilot, app)
        flow = pane.controller
        dag = pane.query_one(DagView)

        # 1. Change train's code: train re-runs, load is reused from the cache.
        write_flow(simple_flow, SIMPLE.replace('print("training")', 'print("training v2")'))
        await run_done(pilot, pane, 2)  # the run the save started (seen by its events, not just listed)
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
        await run_done(pilot, pane, 3)  # the run after the fix
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


def _title(pane) -> str:  # type: ignore[no-untyped-def]
    return str(pane.query_one(DagView).border_title)


async def test_a_save_that_leaves_nothing_to_rerun_does_not_say_the_flow_changed(simple_flow, app_for):
    """A comment, and then a broken save put right again, are saves after the run; but the plan of
    the file as saved runs nothing, so the title does not ask for a run (as it did by the file's
    modification time alone)."""
    app = app_for(simple_flow, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        pane = await first_run_watched(pilot, app)
        flow = pane.controller

        write_flow(simple_flow, SIMPLE.replace('print("training")', 'print("training")  # louder?'))
        await wait_for(pilot, lambda: flow.steps_to_rerun() == 0, what="the plan of the saved file")
        await wait_for(pilot, lambda: _title(pane).endswith("run #1 ✓ succeeded"), what=lambda: _title(pane))

        write_flow(simple_flow, SIMPLE + "\ndef broken(:\n")
        await wait_for(pilot, lambda: flow.error is not None, what="the load error")
        write_flow(simple_flow, SIMPLE)
        await wait_for(pilot, lambda: flow.error is None and flow.steps_to_rerun() == 0, what="the good load")
        await wait_for(pilot, lambda: _title(pane).endswith("run #1 ✓ succeeded"), what=lambda: _title(pane))
        assert [r.id for r in flow.history] == [1] and not flow.active


async def test_a_save_with_steps_to_rerun_says_how_many(tmp_path, app_for):
    """A step that is never cached runs at every run: after a save that changes no step (so the
    watcher starts no run), the title says what `r` would run."""
    never_cached = SIMPLE.replace("@step\ndef report", "@step(cache=False)\ndef report")
    path = write_flow(tmp_path / "fresh.py", never_cached)
    app = app_for(path, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        pane = await first_run_watched(pilot, app)
        flow = pane.controller

        path.write_text(path.read_text(encoding="utf-8") + "# a comment\n", encoding="utf-8")
        await wait_for(pilot, lambda: flow.steps_to_rerun() == 1, what="the plan of the saved file")
        await wait_for(
            pilot,
            lambda: _title(pane).endswith("run #1 ✓ succeeded · flow changed since: r runs 1 step"),
            what=lambda: _title(pane),
        )
        assert [r.id for r in flow.history] == [1]
