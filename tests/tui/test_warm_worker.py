"""Opening a flow in the TUI starts a worker that imports the flow's libraries (`Engine.warm`): the
flow's first run, whenever the user starts it, finds it ready. Real TUI, real workers, a library made
real by its `*.dist-info/RECORD` on the path."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from runner.store import Store
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
    assert log.read_text().split() == [warmed]  # no other worker imported it
