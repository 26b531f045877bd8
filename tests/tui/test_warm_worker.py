"""Opening a flow in the TUI starts a worker that imports the flow's libraries (`Engine.warm`): the
flow's first run, whenever the user starts it, finds it ready. Real TUI, real workers, a library made
real by its `*.dist-info/RECORD` on the path (`importers_log`)."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import pytest

from runner.store import Store
from tests.helpers_core import importers, worker_pids
from tests.tui.conftest import pane_of, ready, run_done, wait_for, write_flow

FLOW = """
import os

import flowtest_importers
from dsl import step


@step
def where():
    return os.getpid()
"""


async def test_opening_a_flow_of_a_directory_starts_a_worker_with_its_libraries(
    app_for, tmp_path: Path, importers_log: Path
) -> None:
    directory = tmp_path / "flows"
    directory.mkdir()
    write_flow(directory / "warm.py", FLOW)
    app = app_for(directory)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await ready(pilot, app)
        # No run yet: a worker is up and has imported the flow's library.
        await wait_for(pilot, lambda: importers(importers_log), what="a worker importing it")
        (warmed,) = importers(importers_log)
        await pilot.press("r")
        await run_done(pilot, pane_of(app))
        assert pane.controller.error is None
    store = Store(tmp_path / "store")
    try:
        record = store.get_run(1)
        assert record is not None and record.status == "succeeded"
        (step,) = record.steps
        assert step.output_hash is not None
        assert pickle.loads(store.read_artifact(step.output_hash)) == warmed
    finally:
        store.close()


GATED = """
import os
import time

from dsl import step


@step(cache=False)
def hold():
    with open(os.environ["FLOWTEST_RAN_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    while not os.path.exists(os.environ["FLOWTEST_GATE"]):
        time.sleep(0.01)
    return os.getpid()
"""


async def test_a_stop_leaves_a_spare_worker_for_the_next_run(
    app_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`s` kills the worker of the step running; the next run's step runs at once in the worker that
    waited idle beside it (before: in a new worker, after its start and the flow's imports)."""
    ran, gate, marker = tmp_path / "ran", tmp_path / "gate", uuid.uuid4().hex
    monkeypatch.setenv("FLOW_TEST_MARKER", marker)
    monkeypatch.setenv("FLOWTEST_RAN_LOG", str(ran))
    monkeypatch.setenv("FLOWTEST_GATE", str(gate))
    app = app_for(write_flow(tmp_path / "gated.py", GATED))
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await ready(pilot, app)
        await pilot.press("r")
        await wait_for(pilot, lambda: ran.exists() and ran.read_text().split(), what="hold to start")
        (busy,) = ran.read_text().split()
        await wait_for(
            pilot, lambda: len(worker_pids(marker)) == 2, what=lambda: f"a spare: {worker_pids(marker)}"
        )
        (spare,) = set(worker_pids(marker)) - {int(busy)}
        await pilot.press("s")
        await wait_for(pilot, lambda: not pane.controller.active, what="the stop")
        gate.touch()
        await pilot.press("r")
        await wait_for(pilot, lambda: len(ran.read_text().split()) == 2, what="hold to start again")
        assert ran.read_text().split() == [busy, str(spare)]
        await run_done(pilot, pane_of(app), count=2)
