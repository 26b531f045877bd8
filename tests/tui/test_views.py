"""What a pane reads, as pure functions of a run's state: the boxes' statuses and notes, the title,
the subtitle and the line above the logs (no app: `tui.controllers.views` and `tui.data.boxes`)."""

from __future__ import annotations

from runner.events import RunStarted, StepFinished, StepRetrying, StepStarted
from runner.status import StepStatus
from tui.controllers.views import log_status, run_title, subtitle
from tui.data.boxes import BoxState, box_states
from tui.data.state import RunState


def started(*steps: str) -> RunState:
    return RunState.from_started(RunStarted(3, "etl", "/flows/etl.py", {}, steps, "tui", 100.0))


def finished(step: str, status: StepStatus, duration_s: float, reason: str = "") -> StepFinished:
    return StepFinished(
        run_id=3,
        step=step,
        status=status,
        attempts=1,
        duration_s=duration_s,
        reason=reason,
        error=None,
        traceback=None,
        fingerprint="f",
        output_hash="h",
        preview=None,
        metrics={},
        ts=105.0,
    )


def test_boxes_show_cached_durations_retries_and_fan_out_progress() -> None:
    state = started("load", "train", "fit", "fan", "later")
    state.apply(finished("load", StepStatus.CACHED, 0.0, "same fingerprint as run #1"))
    state.apply(StepStarted(3, "train", 1, "changed", "f2", 102.0))
    state.apply(StepStarted(3, "fit", 1, "changed", "f4", 102.0))
    state.apply(StepRetrying(3, "fit", 1, "boom", 0.5, 103.0))
    state.apply(StepStarted(3, "fan[0]", 1, "", "f3", 104.0))
    state.apply(StepStarted(3, "fan[1]", 1, "", "f3", 104.5))
    state.apply(finished("fan[0]", StepStatus.SUCCEEDED, 0.2))
    state.apply(finished("train", StepStatus.FAILED, 12.5))

    boxes = box_states(state)

    assert boxes["load"] == BoxState("cached", "cached")
    assert boxes["train"] == BoxState("failed", "12s")
    assert boxes["fit"] == BoxState("retrying", "retry 2", 102.0)
    assert boxes["fan"] == BoxState("running", "1/2", 104.0)
    assert boxes["later"] == BoxState("pending")
    assert box_states(None) == {}


def test_the_title_says_which_run_is_shown_and_when_the_flow_changed_since() -> None:
    state = started("load")
    assert run_title("etl", None, True, False) == "etl · no run"
    assert run_title("etl", state, True, False) == "etl · run #3 ◐ running"
    state.status = "succeeded"
    assert run_title("etl", state, False, True) == (
        "etl · run #3 ✓ succeeded (past run: v follows live) · flow changed since: r runs it"
    )
    assert run_title("etl", state, True, True, 0) == "etl · run #3 ✓ succeeded"
    assert run_title("etl", state, True, True, 1) == (
        "etl · run #3 ✓ succeeded · flow changed since: r runs 1 step"
    )
    assert run_title("etl", state, True, True, 4).endswith("flow changed since: r runs 4 steps")
    assert run_title("etl", state, True, False, 4) == "etl · run #3 ✓ succeeded"


def test_the_subtitle_counts_steps_and_hidden_edges_in_words() -> None:
    assert subtitle(1, 0, True) == "1 step · watch on"
    assert subtitle(12, 1, False) == "12 steps · 1 implied edge hidden (E) · watch off"
    assert subtitle(12, 3, False) == "12 steps · 3 implied edges hidden (E) · watch off"


def test_the_log_status_names_the_step_the_run_where_cached_lines_come_from_and_the_mode() -> None:
    state = started("load")
    assert log_status("load", state, False, 1, True, "") == (
        "load · run #3 · following the run (P pins) · 1 line · follow"
    )
    assert log_status("load", state, True, 2, False, "loss") == (
        "load · run #3 · pinned (P follows the run) · 2 lines · paused (end: follow) · search: loss"
    )
    state.status = "succeeded"
    state.log_sources["load"] = 1
    assert (
        log_status("load", state, False, 0, True, "")
        == "load · run #3 · cached: logs of run #1 · 0 lines · follow"
    )
    assert log_status(None, None, False, 0, True, "") == "- · 0 lines · follow"
