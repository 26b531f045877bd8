"""Fixtures for the TUI tests: real flow files in tmp_path, a real store, a real local executor.

Tests wait on conditions (`wait_for`), never on fixed sleeps: each loop turn is a `pilot.pause()`.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tui.app import FlowApp, make_app
from tui.widgets.flow_pane import FlowPane

SIMPLE = """
from dsl import log_metric, param, step


@step
def load(rows: int = 5):
    print(f"loading {rows} rows")
    return list(range(rows))


@step
def train(load, lr: float = param(0.5, help="learning rate")):
    print("training")
    score = sum(load) * lr
    log_metric("score", score)
    return score


@step
def report(train):
    print(f"score {train}")
    return train
"""

FAILING = """
from pathlib import Path

from dsl import step

FIXED = Path(__file__).with_name("fixed")


@step
def prepare(size: int = 3):
    print(f"preparing {size}")
    return size


@step
def fragile(prepare):
    print("about to check the input")
    if not FIXED.exists():
        raise ValueError(f"boom: cannot use input {prepare}")
    print("fixed now")
    return prepare * 2
"""

SLOW = """
import time

from dsl import step


@step
def quick():
    return 1


@step
def sleepy(quick, seconds: float = 60.0):
    print("sleeping", flush=True)
    time.sleep(seconds)
    return quick
"""


def write_flow(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def simple_flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "simple.py", SIMPLE)


@pytest.fixture
def failing_flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "fragile.py", FAILING)


@pytest.fixture
def slow_flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "slow.py", SLOW)


@pytest.fixture
def app_for(tmp_path: Path) -> Callable[..., FlowApp]:
    def build(target: Path, *, watch: bool = False) -> FlowApp:
        return make_app(target, tmp_path / "store", 2, watch=watch)

    return build


async def wait_for(pilot, condition: Callable[[], object], timeout: float = 30.0, what: object = "") -> None:  # type: ignore[no-untyped-def]
    """Pause the pilot until `condition()` is true (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what or condition}")
        await pilot.pause(0.02)


def pane_of(app: FlowApp) -> FlowPane:
    assert app.main is not None
    pane = app.main.pane
    assert pane is not None
    return pane


async def ready(pilot, app: FlowApp) -> FlowPane:  # type: ignore[no-untyped-def]
    """Wait until the first flow's pane has loaded its flow (or failed to) and read its history."""
    await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="the pane")
    pane = pane_of(app)
    flow = pane.controller
    await wait_for(pilot, lambda: flow.session is not None and flow.history_loaded, what="the first load")
    return pane


async def run_done(pilot, pane: FlowPane, count: int = 1, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until `count` runs were seen, none is in flight, history shows them, the next run is planned."""
    flow = pane.controller

    def describe() -> str:
        runs = {i: (r.status, {n: s.status for n, s in r.steps.items()}) for i, r in flow.runs.items()}
        history = [(r.id, r.status) for r in flow.history]
        return f"{count} finished run(s); runs={runs} active={flow.active} history={history}"

    await wait_for(
        pilot,
        lambda: (
            len([r for r in flow.runs.values() if r.live]) >= count
            and not flow.active
            and len(flow.history) >= count
            and all(r.status != "running" for r in flow.history)
            and flow.plan_current
        ),
        timeout,
        what=describe,
    )


def screen_lines(app: FlowApp) -> list[str]:
    """The text of each row of the current screen, as the compositor would paint it now."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def screen_text(app: FlowApp) -> str:
    """`screen_lines` as one string."""
    return "\n".join(screen_lines(app))
