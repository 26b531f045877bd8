"""Opening a flow in the TUI starts a worker that imports the flow's libraries (`Engine.warm`): the
flow's first run, whenever the user starts it, finds it ready. Real TUI, real workers, a library made
real by its `*.dist-info/RECORD` on the path."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import pytest

from runner.store import Store
from tests.helpers_core import worker_pids
from tests.tui.conftest import pane_of, ready, run_done, wait_for, write_flow

LIBRARY = """
import os
import sys

if "runner.executors.worker" in sys.orig_argv:
    with open(os.environ["FLOWTEST_WARM_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
"""

FLOW = """
import os

import flowtest_warm
from dsl import step


@step
def where():
    return os.getpid()
"""


async def test_opening_a_flow_of_a_directory_starts_a_worker_with_its_libraries(
    app_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = tmp_path / "libs"
    (libs / "flowtest_warm-1.0.dist-info").mkdir(parents=True)
    (libs / "flowtest_warm-1.0.dist-info" / "RECORD").write_text("flowtest_warm.py,,\n")
    (libs / "flowtest_warm.py").write_text(LIBRARY)
    log = tmp_path / "importers"
    monkeypatch.setenv("FLOWTEST_WARM_LOG", str(log))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(libs), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.syspath_prepend(str(libs))
    directory = tmp_path / "flows"
    directory.mkdir()
    write_flow(directory / "warm.py", FLOW)
    app = app_for(directory)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await ready(pilot, app)
        # No run yet: a worker is up and has imported the flow's library.
        await wait_for(pilot, lambda: log.exists() and log.read_text().split(), what="a worker importing it")
        (warmed,) = log.read_text().split()
        await pilot.press("r")
        await run_done(pilot, pane_of(app))
        assert pane.controller.error is None
    store = Store(tmp_path / "store")
    try:
        record = store.get_run(1)
        assert record is not None and record.status == "succeeded"
        (step,) = record.steps
        assert step.output_hash is not None
        assert pickle.loads(store.read_artifact(step.output_hash)) == int(warmed)
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
