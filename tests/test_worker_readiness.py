"""A `LocalExecutor` sends a task only to a worker that has reported its start-up done (its first frame,
`wire.Preloaded`); until then the task waits in the executor. Real worker processes throughout."""

from __future__ import annotations

import os
import pickle
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest

from runner.executors import spawn
from runner.executors.base import Task, TaskDone, TaskEvent
from runner.executors.local import LocalExecutor
from tests.conftest import EngineHarness
from tests.helpers_core import calls_to, importers, worker_pids


def _task(task_id: str, fn: object) -> Task:
    return Task(id=task_id, step=task_id, code_key=task_id, code=cloudpickle.dumps(fn), kwargs={})


def _until_done(executor: LocalExecutor, count: int, timeout: float = 60) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    deadline = time.monotonic() + timeout
    while sum(isinstance(e, TaskDone) for e in events) < count:
        assert time.monotonic() < deadline, f"fewer than {count} results within {timeout}s: {events}"
        events.extend(executor.events(1.0))
    return events


@pytest.mark.parametrize("spare", [False, True], ids=["plain", "keeping-a-spare"])
def test_a_worker_that_cannot_start_fails_one_waiting_task_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spare: bool
) -> None:
    """Every worker process ends before it is ready (a broken interpreter start): each task fails with
    the reason and what the process said, and no worker is started beyond one per task, not even
    the spare of an edit session (it would be started again at each death)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        'if "runner.executors.worker" in sys.orig_argv:\n'
        '    print("no start here", file=sys.stderr, flush=True)\n'
        "    os._exit(5)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    started = calls_to(monkeypatch, spawn, "spawn", lambda *args: args)
    executor = LocalExecutor(2)
    if spare:
        executor.keep_spare()
    try:
        executor.submit(_task("t1", lambda: 1))
        executor.submit(_task("t2", lambda: 2))
        done = [e for e in _until_done(executor, 2) if isinstance(e, TaskDone)]
    finally:
        executor.close()
    assert sorted(d.task_id for d in done) == ["t1", "t2"]
    for result in (d.result for d in done):
        assert not result.ok and "exited with code 5" in (result.error or "")
        assert "no start here" in (result.traceback or "")
    assert len(started) == 2


def test_a_task_cancelled_while_waiting_for_a_worker_never_runs(tmp_path: Path) -> None:
    """`t1` waits for the worker's start-up and is cancelled: no result comes for it, and the worker
    runs the next task."""
    ran = tmp_path / "ran"
    ran.mkdir()

    def touch(name: str) -> object:
        return lambda: (ran / name).touch()

    executor = LocalExecutor(1)
    try:
        executor.submit(_task("t1", touch("t1")))
        executor.cancel("t1")
        executor.submit(_task("t2", touch("t2")))
        events = _until_done(executor, 1)
    finally:
        executor.close()
    assert [e.task_id for e in events if isinstance(e, TaskDone)] == ["t2"]
    assert sorted(p.name for p in ran.iterdir()) == ["t2"]


RETIRING = """
import os
import threading
import time

import flowtest_importers
from dsl import step


def leave_a_thread():
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # its worker retires


@step
def first():
    leave_a_thread()
    return os.getpid()


@step
def second(first):
    leave_a_thread()
    deadline = time.monotonic() + 60
    while len(open(os.environ["FLOWTEST_IMPORTERS"]).read().split()) < 3:
        assert time.monotonic() < deadline, "no spare started while this step ran"
        time.sleep(0.01)
    return os.getpid()


@step
def third(second):
    return os.getpid()
"""


def test_once_a_worker_retires_a_spare_starts_while_the_next_step_runs(
    harness: EngineHarness, write_flow: Callable[..., Path], importers_log: Path
) -> None:
    """Steps that leave a thread retire each worker they run in: after the first retirement, a spare
    imports the flow's libraries while `second` runs (which waits for it), and `third` runs in it at
    once. Before, each next step waited for a new worker's start and imports (an ML flow's: seconds)."""
    run = harness.run(write_flow(RETIRING))
    assert run.status == "succeeded", [(s.name, s.error) for s in run.steps]
    outputs = {s.name: pickle.loads(harness.store.read_artifact(s.output_hash)) for s in run.steps}
    workers = importers(importers_log)
    assert outputs == {"first": workers[0], "second": workers[1], "third": workers[2]}


def test_a_spare_that_dies_idle_is_not_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that dies with no task of its own (here killed from outside; a library could end it a
    while after its import) turns the spare off: else one such library would have an edit session
    start workers until it ends."""
    marker, gate = uuid.uuid4().hex, tmp_path / "gate"
    monkeypatch.setenv("FLOW_TEST_MARKER", marker)

    def hold() -> int:
        while not gate.exists():
            time.sleep(0.01)
        return os.getpid()

    executor = LocalExecutor(2)
    executor.keep_spare()
    try:
        executor.submit(_task("held", hold))  # the first worker: busy until the end
        executor.submit(_task("quick", os.getpid))  # runs in the spare, which is then idle and ready
        (quick,) = [e for e in _until_done(executor, 1) if isinstance(e, TaskDone)]
        spare = pickle.loads(quick.result.data or b"")
        os.kill(spare, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{spare}").exists():  # reaped once the executor has seen it die
            assert time.monotonic() < deadline, "the executor never saw the spare die"
            executor.events(0.05)
        assert spare not in worker_pids(marker) and len(worker_pids(marker)) == 1
    finally:
        gate.touch()
        executor.close()
