"""Snapshot tests of the main screens at 80×24 (the minimum) and 120×36, and of every sample flow's
DAG after a run as `flow tui sample_flows` shows it.

Deterministic: flows live at fixed paths (tracebacks name them), every store is fresh (run ids start
at 1), durations and timestamps are masked, notifications are cleared before the picture.
Regenerate with `--snapshot-update` and look at `snapshot_report.html` before committing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tui.conftest import FAILING, SIMPLE, pane_of, ready, run_done, wait_for, write_flow
from tui.app import make_app
from tui.data import format as fmt
from tui.widgets.dag import DagView

ROOT = Path("/tmp/flow-tui-snapshots")
SAMPLES = Path(__file__).resolve().parents[2] / "sample_flows"
SAMPLE_NAMES = sorted(p.stem for p in SAMPLES.glob("*.py") if not p.name.startswith("_"))  # as find_flows
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]


@pytest.fixture(autouse=True)
def masked_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "MASK_TIMES", True)


def fresh(name: str, source: str, *, watch: bool = False):  # type: ignore[no-untyped-def]
    """An app on a flow written to a fixed path, with an empty store."""
    directory = ROOT / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    path = write_flow(directory / ("fragile.py" if source is FAILING else "pipeline.py"), source)
    return make_app(path, directory / "store", 2, watch=watch), path


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    pilot.app.clear_notifications()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_main_screen_after_a_run(snap_compare, size):
    """The DAG with three succeeded steps (✓, green), `train` selected, its logs below."""
    app, _ = fresh(f"main-{size[0]}", SIMPLE)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("home", "right")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_failed_step_with_traceback(snap_compare, size):
    """`fragile` failed (✗, red); the details tab shows the error, attempts and the traceback."""
    app, _ = fresh(f"failed-{size[0]}", FAILING)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("home", "right", "2")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_cached_rerun(snap_compare, size):
    """A second run: every box is cached (≡) and the details say which run the result came from."""
    app, _ = fresh(f"cached-{size[0]}", SIMPLE)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        pane = await ready(pilot, app)
        await pilot.press("r")
        await run_done(pilot, pane)
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        await pilot.press("home", "right", "2")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_history_table(snap_compare, size):
    """Three runs (one with lr=2.0, one failed by a bad parameter choice is not possible, so a
    forced one): id, when (masked), trigger, status, time, parameters, metrics."""
    app, _ = fresh(f"history-{size[0]}", SIMPLE)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        flow.commands.set_params({"lr": "2.0"})
        await pilot.press("r")
        await run_done(pilot, pane, 2)
        await pilot.press("f")
        await run_done(pilot, pane, 3)
        await pilot.press("home", "3")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_load_error_keeps_the_last_good_graph(snap_compare, size):
    """A broken save: the red load-error panel names file and line; the last good DAG stays."""
    app, path = fresh(f"error-{size[0]}", SIMPLE, watch=True)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        pane = await ready(pilot, app)
        flow = pane.controller
        await pilot.press("r")
        await run_done(pilot, pane)
        await wait_for(pilot, lambda: flow.watcher.armed, what="the watcher")
        await pilot.press("home")
        write_flow(path, SIMPLE + "\ndef broken(:\n")
        await wait_for(pilot, lambda: pane_of(app).controller.error is not None, what="the load error")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


def test_light_theme_params_dialog(snap_compare):
    """The parameters dialog in the light theme, with a validation error under the form."""
    app, _ = fresh("params-light", SIMPLE)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await ready(pilot, app)
        await pilot.press("t", "p")
        await pilot.pause()
        field = app.screen.query_one("#param-rows")
        field.value = "many"
        # Its cursor is part of the picture: drawn only while the field has the focus, and by a blink
        # every 0.5 s. A run of the whole suite once took the snapshot without it; the field's focus
        # is waited for, and the cursor does not blink.
        field.cursor_blink = False
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: field.has_focus and field.has_class("-invalid"), what="the field marked"
        )
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flow", SAMPLE_NAMES)
def test_sample_flow_after_a_run(snap_compare, size, flow):
    """`flow tui sample_flows`, the flow chosen in the list and run: its whole DAG, every step ✓
    (or ⊘ where a `when=` skipped it), the last step selected with its logs."""
    directory = ROOT / f"samples-{size[0]}-{flow}"  # a directory per test: xdist runs them at once
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(SAMPLES, directory / "flows", ignore=shutil.ignore_patterns("*.md", "__pycache__"))
    app = make_app(directory / "flows", directory / f"store-{flow}", 2, watch=False)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await wait_for(pilot, lambda: app.main is not None and app.main.pane is not None, what="a pane")
        for _ in range(SAMPLE_NAMES.index(flow)):
            await pilot.press("down")
        await wait_for(
            pilot,
            lambda: pane_of(app).path.stem == flow and pane_of(app).controller.loaded is not None,
            what=f"{flow} loaded",
        )
        pane = pane_of(app)
        controller = pane.controller
        await pilot.press("enter", "r")
        await run_done(pilot, pane)
        # The logs followed whichever step ran last (a race between parallel steps): show the last.
        last = controller.loaded.graph.layers()[-1][0]
        pane.query_one(DagView).select(last)
        await wait_for(pilot, lambda: controller.selected == last, what="the last step selected")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("flow", ["model_chain", "sweep"])
def test_light_theme_dag(snap_compare, flow):
    """The light theme: edges, arrowheads and the status colours of the DAG read on a light
    background (they were near-white before)."""
    directory = ROOT / f"light-{flow}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    path = directory / f"{flow}.py"
    shutil.copy(SAMPLES / f"{flow}.py", path)
    app = make_app(path, directory / "store", 2, watch=False)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        pane = await ready(pilot, app)
        controller = pane.controller
        await pilot.press("t", "r")
        await run_done(pilot, pane)
        last = controller.loaded.graph.layers()[-1][0]
        pane.query_one(DagView).select(last)
        await wait_for(pilot, lambda: controller.selected == last, what="the last step selected")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 36))
