"""Pilot tests: the next run's plan in Details, the code diff key, the debug key (`flow debug` in the
terminal while the app is suspended) and the compare view's changed steps, against a real engine,
worker processes and store."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.app import App

from tests.tui.conftest import ready, run_done, screen_text, wait_for
from tui.controllers.commands import debug_command
from tui.screens import main as main_screen
from tui.screens.code_diff import CodeDiffScreen
from tui.screens.compare import CompareScreen
from tui.widgets.dag import DagView
from tui.widgets.history import RunHistory

SIZE = (120, 36)


def _planned(flow, step: str) -> str | None:  # type: ignore[no-untyped-def]
    planned = next((s for s in flow.plan.steps if s.step == step), None) if flow.plan else None
    return f"{planned.action}: {planned.reason}" if planned is not None else None


async def test_details_show_why_the_selected_step_will_run(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await wait_for(
            pilot, lambda: _planned(flow, "train") == "run: no earlier result", what="the first plan"
        )
        await pilot.press("r")
        await run_done(pilot, pane)
        assert _planned(flow, "train") == "cached: cached: same fingerprint as run #1"
        flow.commands.set_params({"lr": "0.75"})
        await wait_for(
            pilot, lambda: _planned(flow, "train") == "run: parameter changed: lr", what="the plan"
        )
        pane.query_one(DagView).select("train")
        await pilot.press("2")
        await wait_for(
            pilot,
            lambda: "next run    run: parameter changed: lr" in screen_text(app),
            what=lambda: screen_text(app),
        )
        assert _planned(flow, "report") == "run: upstream will re-run: train"
        assert _planned(flow, "load") == "cached: cached: same fingerprint as run #1"


async def test_code_diff_key_shows_the_change_behind_the_next_rerun(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        pane.query_one(DagView).select("train")
        await pilot.press("D")  # nothing changed: said so, no dialog
        await wait_for(
            pilot,
            lambda: any("no code change behind train" in n.message for n in app._notifications),
            what="the notice",
        )
        assert not isinstance(app.screen, CodeDiffScreen)
        simple_flow.write_text(simple_flow.read_text().replace("sum(load) * lr", "sum(load) * lr * 2"))
        assert flow.session is not None and flow.session.reload()
        await wait_for(pilot, lambda: _planned(flow, "train") == "run: code changed", what="the new plan")
        await pilot.press("D")
        await wait_for(pilot, lambda: isinstance(app.screen, CodeDiffScreen), what="the diff")
        shown = screen_text(app)
        assert "-    score = sum(load) * lr" in shown
        assert "+    score = sum(load) * lr * 2" in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, CodeDiffScreen)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[list[str], str]]]:
    """`flow debug` really runs, with what a user would type on its stdin; the app is suspended as
    a terminal would allow (Textual's headless driver cannot hand the screen over)."""
    ran: list[tuple[list[str], str]] = []

    def in_terminal(command: list[str]) -> int:
        done = subprocess.run(command, input="p prepare\nq\n", capture_output=True, text=True, timeout=60)
        ran.append((command, done.stdout + done.stderr))
        return done.returncode

    monkeypatch.setattr(main_screen, "run_in_terminal", in_terminal)
    monkeypatch.setattr(App, "suspend", lambda self: contextlib.nullcontext())
    yield ran


async def test_debug_key_runs_flow_debug_on_the_viewed_step_and_comes_back(
    failing_flow: Path, app_for, terminal: list[tuple[list[str], str]]
):
    app = app_for(failing_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("b")  # no run yet: nothing to debug
        assert not terminal
        await pilot.press("r")
        await run_done(pilot, pane)
        pane.query_one(DagView).select("fragile")
        await pilot.press("b")
        await wait_for(pilot, lambda: terminal, what="flow debug")
        command, output = terminal[0]
        assert command == debug_command(flow.store.root, 1, "fragile")
        assert 'raise ValueError(f"boom: cannot use input {prepare}")' in output
        assert "(Pdb) 3" in output  # `p prepare`: the input fragile received in run #1
        await wait_for(
            pilot,
            lambda: any("back from flow debug (exit 1)" in n.message for n in app._notifications),
            what="the return",
        )


async def test_compare_view_shows_changed_steps_with_their_code_diff(simple_flow, app_for):
    app = app_for(simple_flow)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        simple_flow.write_text(simple_flow.read_text().replace("sum(load) * lr", "sum(load) * lr * 2"))
        assert flow.session is not None and flow.session.reload()
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        await pilot.press("3")
        assert pane.query_one(RunHistory).has_focus
        await pilot.press("m", "down", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="the comparison")
        compare = app.screen
        steps = {name: (left, right) for kind, name, left, right in compare.compared if kind == "step"}
        assert steps == {
            "load": ("cached · [0, 1, 2, 3, 4]", "succeeded · [0, 1, 2, 3, 4]"),
            "train": ("succeeded · 10.0", "succeeded · 5.0"),
            "report": ("succeeded · 10.0", "succeeded · 5.0"),
        }
        row = next(i for i, r in enumerate(compare.compared) if r[:2] == ("step", "train"))
        compare.query_one("#compare").move_cursor(row=row)
        await wait_for(
            pilot,
            lambda: (
                "-    score = sum(load) * lr * 2" in screen_text(app)  # run #2 (marked) against run #1
                and "fingerprint changed: code changed" in screen_text(app)
            ),
            what=lambda: screen_text(app),
        )
        metric = next(i for i, r in enumerate(compare.compared) if r[:2] == ("metric", "score"))
        compare.query_one("#compare").move_cursor(row=metric)
        await wait_for(pilot, lambda: "score: #2 10  #1 5  (Δ -5)" in screen_text(app), what="the delta")
