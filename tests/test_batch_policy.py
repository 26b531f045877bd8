"""Worker processes and the store's writer thread run as batch threads (Linux's `SCHED_BATCH`,
`runner.batch_policy.run_as_batch`): woken, they take no core from the runner's scheduler. Real worker
processes, a real store's writer thread; the policy as the OS reports it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runner.batch_policy import run_as_batch
from runner.store import Store
from tests.conftest import EngineHarness
from tests.helpers_core import flow_source, steps_of

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="the OS has no batch policy")

POLICIES = """
    import os
    import subprocess
    import sys
    import threading

    @step
    def policies():
        seen = []
        thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
        thread.start()
        thread.join()
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True, text=True, check=True,
        )
        return [os.sched_getscheduler(0), seen[0], int(child.stdout)]
"""


def test_a_step_its_threads_and_its_processes_run_as_batch(harness: EngineHarness, write_flow, tmp_path):
    path = write_flow(flow_source(tmp_path / "log", POLICIES))
    run = harness.run(path)
    assert run.status == "succeeded"
    assert steps_of(run)["policies"].preview == repr([os.SCHED_BATCH] * 3)


def _policy_after_run_as_batch(start: int) -> int:
    """The policy of a thread that had `start`, after it calls `run_as_batch` (a thread of its own: the
    policy is a thread's, and the test's stays as it is)."""
    found: list[int] = []

    def thread() -> None:
        os.sched_setscheduler(0, start, os.sched_param(0))
        run_as_batch()
        found.append(os.sched_getscheduler(0))

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    return found[0]


def test_only_the_default_policy_becomes_batch() -> None:
    assert _policy_after_run_as_batch(os.SCHED_OTHER) == os.SCHED_BATCH
    assert _policy_after_run_as_batch(os.SCHED_IDLE) == os.SCHED_IDLE  # the user's choice stays


def test_the_store_writer_keeps_a_policy_the_user_chose(tmp_path: Path) -> None:
    """A store's writer thread inherits the policy of the thread whose first write starts it, and
    `run_as_batch` leaves a policy other than the default as it is (the default one becoming batch:
    `tests/test_store_helper.py`, `test_the_writer_thread_never_preempts_the_scheduler`)."""
    found: list[int] = []

    def user_thread() -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # as under `chrt --idle 0`
        store = Store(tmp_path / "store")
        try:
            store._write(lambda conn: None)
            store.flush()  # the writer thread has set its policy: it does so before its first write
            assert store._writer is not None
            native_id = store._writer._thread.native_id
            assert native_id is not None
            found.append(os.sched_getscheduler(native_id))
        finally:
            store.close()

    thread = threading.Thread(target=user_thread)
    thread.start()
    thread.join()
    assert found == [os.SCHED_IDLE]
