"""The TUI and operating flows: an external job's live status and the run's flow outputs in the details
panel, a scheduled flow's next due time in the pane's subtitle, and stopping a loop another process
runs (its running iteration, under the history cursor) — the controller driven as the screen drives
it, and the app itself through Pilot, on real engines, workers, stores and processes."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dsl.jobs import process_alive
from dsl.loader import load_flow
from runner.events import JobUpdated
from tests.conftest import SAMPLE_FLOWS
from tests.test_jobs import job_flow  # noqa: F401 - a fixture
from tests.test_loops import BLOCKING, runs_of, start_flow_run
from tests.tui.conftest import SIMPLE, ready, run_done, screen_text, wait_for, write_flow
from tests.tui.test_controller import controller_for, engine, events, run  # noqa: F401 - fixtures
from tui.controllers.views import due_text, subtitle
from tui.widgets.dag import DagView
from tui.widgets.details import describe
from tui.widgets.flow_list import FlowList
from tui.widgets.history import RunHistory

SIZE = (120, 36)


def test_a_jobs_live_status_and_the_runs_flow_outputs_reach_the_details(engine, events):  # noqa: F811
    controller, host = controller_for(SAMPLE_FLOWS / "external_job.py", engine)
    seen = run(controller, host, events, controller.commands.run_flow)
    assert seen  # painted
    state = controller.viewed_state
    assert state is not None and state.steps["train"].status == "succeeded"
    job = state.steps["train"].job
    assert job is not None and job.startswith("succeeded · ") and "poll" in job
    assert state.outputs == {"accuracy": "0.875"}
    assert controller.select("train", user=True)
    view = controller.step_view()
    assert view is not None
    text = describe(view).plain
    assert "job         succeeded · " in text
    assert "run outputs accuracy=0.875" in text
    assert "job=yes" in text  # a job step says so among its options


def test_job_updates_fold_into_the_step_as_they_come(engine, events):  # noqa: F811
    controller, host = controller_for(SAMPLE_FLOWS / "external_job.py", engine)
    run(controller, host, events, controller.commands.run_flow)
    state = controller.viewed_state
    assert state is not None
    state.apply(JobUpdated(state.run_id, "train", "running", "{'pid': 7}", 3, "", time.time()))
    assert state.steps["train"].job == "running · 3 polls · {'pid': 7}"
    state.apply(JobUpdated(state.run_id, "train", "killed", "{'pid': 7}", 0, "the run was stopped", 0.0))
    assert state.steps["train"].job == "killed · the run was stopped · {'pid': 7}"


def test_a_past_run_read_from_the_store_shows_its_flow_outputs(engine, events):  # noqa: F811
    first, host = controller_for(SAMPLE_FLOWS / "external_job.py", engine)
    run(first, host, events, first.commands.run_flow)
    again, host = controller_for(SAMPLE_FLOWS / "external_job.py", engine)  # nothing in memory
    assert again.viewed_state is not None and not again.viewed_state.live
    assert again.viewed_state.outputs == {"accuracy": "0.875"}


def test_the_next_due_time_of_a_scheduled_flow_reads_in_its_time_zone(tmp_path):
    nightly = write_flow(
        tmp_path / "nightly.py",
        'from dsl import Flow, step\nflow = Flow("n", schedule="0 3 * * *", timezone="Europe/Berlin")\n'
        "@step\ndef work():\n    return 1\n",
    )
    now = datetime(2026, 12, 1, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert due_text(load_flow(nightly), now) == "serve: next 2026-12-02 03:00 CET"
    ticker = write_flow(
        tmp_path / "ticker.py", nightly.read_text().replace('schedule="0 3 * * *"', 'every="30s"')
    )
    assert due_text(load_flow(ticker), now) == "serve: every 30s"
    broken = write_flow(tmp_path / "broken.py", nightly.read_text().replace("0 3 * * *", "99 * * * *"))
    assert due_text(load_flow(broken), now) == "schedule invalid (flow check says why)"
    assert due_text(load_flow(write_flow(tmp_path / "plain.py", SIMPLE)), now) is None
    assert subtitle(1, 0, False, "serve: every 30s") == "1 step · watch off · serve: every 30s"


async def test_the_pane_subtitle_shows_when_flow_serve_runs_the_flow_next(tmp_path, app_for):
    path = write_flow(
        tmp_path / "ticker.py",
        SIMPLE.replace("from dsl import", "from dsl import Flow,") + '\nflow = Flow("ticker", every="30s")\n',
    )
    app = app_for(path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        assert "serve: every 30s" in pane.query_one(DagView).border_subtitle
    path.write_text(path.read_text().replace('every="30s"', 'schedule="0 3 * * *", timezone="UTC"'))
    app = app_for(path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        assert re.search(r"serve: next \d{4}-\d\d-\d\d 03:00 UTC$", pane.query_one(DagView).border_subtitle)


@pytest.mark.parametrize("loop", [True, False], ids=["a loop", "a plain flow run"])
async def test_stop_on_another_processs_running_run_in_the_history_stops_it(tmp_path, app_for, loop):
    """`s` with no run of this TUI in flight asks the process running the run under the history cursor
    to stop it, through the store: a loop's iteration (the loop ends with it) or a plain `flow run`."""
    path = write_flow(tmp_path / "gate.py", BLOCKING)
    runner = start_flow_run(path, tmp_path / "store", tmp_path, *(["--loop"] if loop else []))
    try:
        app = app_for(path)
        async with app.run_test(size=SIZE) as pilot:
            pane = await ready(pilot, app)
            flow = pane.controller

            await wait_for(
                pilot,
                lambda: flow.history and flow.history[0].status == "running",
                what="the loop's iteration in the history (the pane looks for other processes' runs)",
            )
            await pilot.press("3")  # the history tab: the cursor is on the running iteration
            await pilot.press("s")
            await wait_for(pilot, lambda: runner.poll() is not None, what="the runner to end")
        out, err = runner.communicate(timeout=30)
    finally:
        runner.kill()
    assert runner.returncode == 1, (out, err)
    assert ("ending the loop" in err) == loop
    trigger = "loop" if loop else "cli"
    assert [(r.trigger, r.status) for r in runs_of(tmp_path / "store")] == [(trigger, "cancelled")]


async def test_runs_another_process_records_show_up_in_the_history_as_they_start_and_end(tmp_path, app_for):
    """No event reaches the TUI from a `flow run` in another shell on the same store: the pane on
    screen notices the store's runs changed, and re-reads its history (the run while it runs, then
    how it ended, with nothing run or pressed here); the flow list's status follows the newest run."""
    path = write_flow(tmp_path / "gate.py", BLOCKING)
    gate = tmp_path / "go"
    app = app_for(path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        gate.touch()
        await pilot.press("r")
        await run_done(pilot, pane)
        assert flow.headline == "succeeded"
        await pilot.press("3")
        gate.unlink()
        runner = start_flow_run(path, tmp_path / "store", tmp_path)

        def seen() -> list[tuple[int, str, str]]:
            return [(r.id, r.trigger, r.status) for r in flow.history]

        try:
            await wait_for(
                pilot, lambda: seen() == [(2, "cli", "running"), (1, "tui", "succeeded")], what=seen
            )
            assert flow.headline == "running"
            await wait_for(pilot, lambda: "◐ running" in screen_text(app), what=lambda: screen_text(app))
            await pilot.press("enter")  # view it: the cursor is on the newest run

            def step() -> str | None:
                state = flow.viewed_state
                return state.steps["wait_for_data"].status if state and state.run_id == 2 else None

            await wait_for(pilot, lambda: step() == "running", what=step)
            gate.touch()  # the blocking step finishes
            out, err = runner.communicate(timeout=60)
            assert runner.returncode == 0, (out, err)
            await wait_for(pilot, lambda: seen()[0] == (2, "cli", "succeeded"), what=seen)
            await wait_for(pilot, lambda: step() == "succeeded", what=step)  # the view follows it
            await wait_for(pilot, lambda: flow.headline == "succeeded", what=lambda: flow.headline)
            dag = pane.query_one(DagView)
            await wait_for(
                pilot, lambda: "run #2 ✓ succeeded" in str(dag.border_title), what=lambda: dag.border_title
            )
        finally:
            runner.kill()


async def test_the_next_runs_plan_follows_what_another_process_computed(tmp_path, app_for, flow_cli):
    """The details' `next run` and the title read the plan: a `flow run` in another shell that computed
    every step makes the next run here a cached one, without a run or a key press here."""
    path = write_flow(tmp_path / "simple.py", SIMPLE)
    app = app_for(path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await wait_for(pilot, lambda: flow.plan is not None and flow.plan_current, what="the first plan")
        assert [s.step for s in flow.plan.would_run] == ["load", "train", "report"]
        assert flow_cli("run", str(path)).code == 0
        await wait_for(pilot, lambda: [r.trigger for r in flow.history] == ["cli"], what="the other run")
        await wait_for(
            pilot,
            lambda: flow.plan_current and flow.plan is not None and not flow.plan.would_run,
            what=lambda: flow.plan and [(s.step, s.action) for s in flow.plan.steps],
        )


ASKED_TO_FAIL = """
from dsl import step


@step
def work(fail: bool = False):
    if fail:
        raise RuntimeError("asked to fail")
    return 1
"""


async def test_the_flow_list_shows_each_flows_newest_run_from_the_store(tmp_path, app_for, flow_cli):
    """Flows run before the TUI opened, and while another flow is on screen, by other processes: the
    list shows each one's newest run, not `·` (never run) until it is opened and run here."""
    flows = tmp_path / "flows"
    flows.mkdir()
    alpha = write_flow(flows / "alpha.py", SIMPLE)
    beta = write_flow(flows / "beta.py", ASKED_TO_FAIL)
    gamma = write_flow(flows / "gamma.py", ASKED_TO_FAIL)
    assert flow_cli("run", str(beta)).code == 0
    assert flow_cli("run", str(gamma), "-p", "fail=true").code == 1
    app = app_for(flows)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        listed = app.main.query_one(FlowList)

        def statuses() -> dict[str, str]:
            return {Path(key).stem: status for key, status in listed.statuses.items()}

        want = {"beta": "succeeded", "gamma": "failed"}
        await wait_for(pilot, lambda: statuses().items() >= want.items(), what=statuses)
        assert statuses().get("alpha", "idle") == "idle" and app.main.pane.path == alpha
        assert "✓ beta" in screen_text(app) and "✗ gamma" in screen_text(app)
        assert flow_cli("run", str(beta), "-p", "fail=true").code == 1  # while alpha is shown
        await wait_for(pilot, lambda: statuses().get("beta") == "failed", what=statuses)


def details(pane) -> str:  # type: ignore[no-untyped-def]
    return str(pane.query_one("#details-text").render())


async def outputs_shown(pilot, pane) -> None:  # type: ignore[no-untyped-def]
    """Wait until the details panel (repainted as events land) shows the sample's flow output."""
    await wait_for(
        pilot,
        lambda: "run outputs accuracy=0.875" in details(pane),
        what=lambda: f"the run's flow outputs in the details: {details(pane)!r}",
    )


async def test_the_details_show_the_flow_outputs_of_the_selected_run(app_for):
    app = app_for(SAMPLE_FLOWS / "external_job.py")
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("i")
        await outputs_shown(pilot, pane)
    again = app_for(SAMPLE_FLOWS / "external_job.py")  # a past run, read back from the store
    async with again.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, again)
        await pilot.press("3")
        history = pane.query_one(RunHistory)
        await wait_for(pilot, lambda: history.row_count > 0, what="the history read from the store")
        await pilot.press("enter", "i")  # view the history row under the cursor, then its details
        await wait_for(pilot, lambda: pane.controller.viewed == 1, what="run #1 viewed")
        await outputs_shown(pilot, pane)


async def test_a_running_jobs_status_shows_live_and_stop_kills_its_trainer(job_flow, app_for):  # noqa: F811
    path = job_flow()
    path.write_text(path.read_text().replace("epochs: int = 3", "epochs: int = 300"))
    app = app_for(path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        assert pane.controller.selected == "train"
        await pilot.press("r", "i")
        await wait_for(
            pilot,
            lambda: "job         running · " in details(pane) and " polls · " in details(pane),
            what=lambda: f"the job's live status polled twice in the details: {details(pane)}",
        )
        # its handle, as stored; the trainer may not have started far enough to write the ledger yet
        handle = re.search(r"'pid': (\d+)", details(pane))
        assert handle, details(pane)
        pid = int(handle.group(1))
        assert process_alive(pid)
        await pilot.press("s")
        await run_done(pilot, pane)
        await wait_for(  # the kill runs in the background; its word may come after the run's end
            pilot,
            lambda: "job         killed · the run was stopped" in details(pane),
            what=lambda: f"the job killed in the details: {details(pane)}",
        )
    assert not process_alive(pid)
