"""Opening many flows with hot reload on: each open flow's watcher is a loop that lasts as long as the
app, so none may hold a thread of the pool that every background job (planning, starting a run,
reading history) shares. Before, after browsing cores + 4 flows (6 on two cores) a run never started."""

from __future__ import annotations

import os
from pathlib import Path

from tests.tui.conftest import pane_of, wait_for, write_flow


def _flow(index: int) -> str:
    return f"from dsl import step\n\n\n@step\ndef only_{index}():\n    return {index}\n"


async def test_a_run_starts_after_more_flows_are_open_than_the_worker_pool_has_threads(
    app_for, tmp_path: Path
):
    count = (os.cpu_count() or 1) + 6
    directory = tmp_path / "flows"
    directory.mkdir()
    for index in range(count):
        write_flow(directory / f"flow_{index:02d}.py", _flow(index))
    app = app_for(directory, watch=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(
            pilot, lambda: app.main is not None and app.main.pane is not None, what="the first pane"
        )
        for index in range(1, count):
            await pilot.press("down")
            await wait_for(
                pilot,
                lambda index=index: (
                    pane_of(app).path.name == f"flow_{index:02d}.py" and pane_of(app).controller.watcher.armed
                ),
                what=lambda index=index: f"flow {index} open and watched",
            )
        pane = pane_of(app)
        await pilot.press("enter")
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: any(run.status == "succeeded" for run in pane.controller.runs.values()),
            timeout=60,
            what=lambda: f"a run of {pane.path.name}; runs={pane.controller.runs}",
        )


async def test_a_loop_that_fails_is_told_as_text(app_for, tmp_path: Path):
    """`run_loop` (the flow list's watcher, each flow's): an error, whatever it says, reaches the user
    as a notice in plain text (never Rich markup), with the severity asked for."""
    from tui.widgets.host import run_loop

    path = write_flow(tmp_path / "flow.py", _flow(0))
    app = app_for(path, watch=False)

    def fails() -> None:
        raise OSError("[Errno 2] gone: [bold]/tmp/x[/bold]")

    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.main is not None, what="the main screen")
        run_loop(app.main, fails, name="a loop", failed="saves are no longer seen", severity="warning")
        await wait_for(pilot, lambda: bool(app._notifications), what="the notice")
        (notice,) = list(app._notifications)
        assert notice.message == "saves are no longer seen: OSError('[Errno 2] gone: [bold]/tmp/x[/bold]')"
        assert notice.severity == "warning" and not notice.markup


async def test_a_background_read_that_fails_is_told_as_text_and_the_looks_go_on(
    app_for, tmp_path: Path, monkeypatch
):
    """The flow list's look at the store raises something unexpected (not a `FlowError`): the user is
    told what failed, in plain text, and the next look still comes. Before, the worker ended
    silently and the look's pacer waited for its answer for good: no flow's status was read again."""
    from tui.controllers import reads

    real = reads.read_latest_statuses
    calls: list[int] = []

    def flaky(store):  # noqa: ANN001, ANN202 - stands in for `reads.read_latest_statuses`
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("[bold]no such table[/bold]")
        return real(store)

    monkeypatch.setattr(reads, "read_latest_statuses", flaky)
    directory = tmp_path / "flows"
    directory.mkdir()
    for index in range(2):
        write_flow(directory / f"flow_{index}.py", _flow(index))
    app = app_for(directory, watch=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: bool(app._notifications), what="the notice")
        (notice,) = list(app._notifications)
        assert notice.message == (
            "read the statuses of the listed flows failed: RuntimeError('[bold]no such table[/bold]')"
        )
        assert notice.severity == "error" and not notice.markup
        await wait_for(pilot, lambda: len(calls) >= 2, timeout=10, what=lambda: f"another look ({calls})")
