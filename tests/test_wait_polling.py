"""The runner and its workers poll for a moment for each other's next frame before they sleep
(`runner.executors.wire.SPIN_S`) when the executor is asked to (`flow run`'s, not the TUI's), only
while a core is free for the poller, and never for longer.

Polling is what lets a chain of quick steps skip the ~30 µs of waking a sleeping process, twice a step
(`benchmarks.cold`); these tests hold what it must not cost: a worker flagged while the cores are
taken, a worker or runner that keeps polling instead of sleeping. Real worker processes throughout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from dsl import interpreters
from runner.executors import local, wire
from runner.executors.base import Task, TaskDone
from runner.executors.local import LocalExecutor
from runner.shipping import pickle_code
from tests.helpers_core import task_result, task_results


def _task(task_id: str, source: str) -> Task:
    namespace: dict[str, Any] = {}
    exec(f"def step():\n{source}\n", namespace)  # noqa: S102 - a function pickled by value
    code = pickle_code({"step": namespace["step"]})
    return Task(id=task_id, step="step", code_key=f"k-{task_id}", code=code, kwargs={}, entry="step")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


pytestmark = pytest.mark.usefixtures("quiet_machine")


def _spins(sent: list[wire.RunTask]) -> list[tuple[str, float]]:
    """(task id, `RunTask.spin`) of each task sent."""
    return [(message.task.id, message.spin) for message in sent]


def test_a_worker_polls_after_its_task_only_while_a_core_is_left_for_it(
    sent_tasks: list[wire.RunTask], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    executor = LocalExecutor(2, poll=True)
    try:
        executor._cores = 2
        executor.submit(_task("alone", "    return 1"))
        assert task_result(executor, "alone").ok
        # Two busy workers and the runner want three cores of two: the second may not poll.
        wait = f"    import os, time\n    while not os.path.exists({str(gate)!r}):\n        time.sleep(0.005)"
        executor.submit(_task("first", wait))
        executor.submit(_task("second", "    return 2"))
        assert task_result(executor, "second").ok
        gate.touch()
        assert task_result(executor, "first").ok
        executor._cores = 1  # the runner alone takes the only core
        executor.submit(_task("single", "    return 3"))
        assert task_result(executor, "single").ok
    finally:
        executor.close()
    assert _spins(sent_tasks) == [
        ("alone", wire.SPIN_S),
        ("first", wire.SPIN_S),
        ("second", 0.0),
        ("single", 0.0),
    ]


def test_a_worker_whose_task_just_ended_keeps_its_core_for_its_moment_of_polling(tmp_path: Path) -> None:
    """A worker told to poll does so for `SPIN_S` after its task: until then its core is not free for
    another poller. In a fan-out the runner could not keep up with, both workers of a 2-core machine
    were told to poll, each while the other was idle, and then polled beside the runner."""
    gate = tmp_path / "gate"
    executor = LocalExecutor(2, poll=True)
    try:
        executor._cores = 2
        executor.submit(_task("first", "    return 1"))
        executor.submit(_task("second", "    return 2"))
        assert all(result.ok for result in task_results(executor, {"first", "second"}).values())
        deadline = time.monotonic() + 30
        while not all(w.ready for w in executor._workers) and time.monotonic() < deadline:
            assert executor.events(0.05) == []  # the second worker's start-up done (`Preloaded`)
        assert len(executor._workers) == 2 and all(w.ready for w in executor._workers)
        wait = f"    import os, time\n    while not os.path.exists({str(gate)!r}):\n        time.sleep(0.005)"
        executor.submit(_task("gated", wait))
        (busy,) = [w for w in executor._workers if w.tasks]
        (idle,) = [w for w in executor._workers if not w.tasks]
        idle.since = time.monotonic() - 60  # its task ended long ago: it sleeps
        assert executor._core_free()  # the runner and the busy worker: one core each
        idle.since = time.monotonic()  # its task ended just now: it may be polling for its next frame
        assert not executor._core_free()
        idle.since = time.monotonic() - 2 * wire.SPIN_S  # its moment is over
        assert executor._core_free()
        gate.touch()
        assert task_result(executor, "gated").ok
    finally:
        executor.close()


def test_an_executor_not_asked_to_poll_sleeps_at_once_on_both_sides(
    sent_tasks: list[wire.RunTask],
) -> None:
    """The TUI's and a Dask worker's executor: another thread of the process must get the GIL."""
    executor = LocalExecutor(1)
    try:
        executor._cores = 4
        executor.submit(_task("quick", "    return 1"))
        assert task_result(executor, "quick").ok
        executor.submit(_task("slow", "    import time\n    time.sleep(0.3)\n    return 1"))
        cpu = time.thread_time()
        assert task_result(executor, "slow").ok
        assert time.thread_time() - cpu <= 0.05
    finally:
        executor.close()
    assert _spins(sent_tasks) == [("quick", 0.0), ("slow", 0.0)]


def test_flow_runs_executor_polls_and_the_tuis_does_not(tmp_path: Path) -> None:
    from runner.executors import make_executor
    from tui.app import make_app

    (tmp_path / "flow.py").write_text("from dsl import step\n\n\n@step\ndef a():\n    return 1\n")
    executor = make_executor("local", 1)
    assert isinstance(executor, LocalExecutor) and executor._polling
    executor.close()
    app = make_app(tmp_path / "flow.py", tmp_path / "store", 1, watch=False)
    try:
        assert isinstance(app.engine.executor, LocalExecutor) and not app.engine.executor._polling
    finally:
        app.close_engine()


def test_a_worker_sleeps_once_its_moment_of_polling_is_over(sent_tasks: list[wire.RunTask]) -> None:
    executor = LocalExecutor(1, poll=True)
    try:
        executor._cores = 2
        executor.submit(_task("quick", "    return 1"))
        assert task_result(executor, "quick").ok
        assert _spins(sent_tasks) == [("quick", wire.SPIN_S)]
        (worker,) = executor._workers
        time.sleep(0.05)  # a hundred times `SPIN_S`
        before = _cpu_seconds(worker.proc.pid)
        time.sleep(0.5)
        # Polling on, it would have used the whole half second; asleep, nothing (a tick at most).
        assert _cpu_seconds(worker.proc.pid) - before <= 0.02
        executor.submit(_task("next", "    return 2"))
        assert task_result(executor, "next").ok  # and it still takes the next task
    finally:
        executor.close()


def test_the_runner_polls_for_a_moment_then_sleeps_while_a_step_runs() -> None:
    executor = LocalExecutor(1, poll=True)
    try:
        executor._cores = 2
        executor.submit(_task("warm", "    return 1"))
        assert task_result(executor, "warm").ok
        executor.submit(_task("slow", "    import time\n    time.sleep(0.5)\n    return 1"))
        cpu, wall = time.thread_time(), time.monotonic()
        events: list[Any] = []
        while not any(isinstance(e, TaskDone) for e in events):
            events += executor.events(5.0)
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        assert wall >= 0.4
        # Polling all along, the scheduler's thread would have spent the half second on the CPU.
        assert cpu <= 0.05, f"{cpu:.3f} s of CPU waiting {wall:.3f} s for a step"
    finally:
        executor.close()


def test_a_frame_that_comes_while_polling_is_read_at_once_and_one_that_does_not_still_arrives() -> None:
    read, write = os.pipe()
    try:
        wire.write_all(write, wire.encode(wire.RunTask(_task("t1", "    return 1"), 0.25)))
        started = time.monotonic()
        wire.await_frame(read, 5.0)
        assert time.monotonic() - started < 1.0  # readable already: no waiting out the 5 s
        message = wire.read_frame(read)
        assert isinstance(message, wire.RunTask) and message.spin == 0.25 and message.task.id == "t1"
        started = time.monotonic()
        wire.await_frame(read, 0.01)  # nothing comes: it gives up after its moment
        assert time.monotonic() - started < 1.0
        wire.write_all(write, wire.encode(wire.Exit()))
        assert wire.read_frame(read) == wire.Exit()
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.parametrize(
    ("loadavg", "polls"), [("0.4 0.3 0.2 2/180 7\n", True), ("3.9 2.0 1.1 4/180 7\n", False)]
)
def test_a_worker_is_not_flagged_to_poll_while_the_machine_is_busy(
    sent_tasks: list[wire.RunTask],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loadavg: str,
    polls: bool,
) -> None:
    """Other programs' threads want the cores too: with more threads runnable than the cores and one
    (the runner's store writer), a poller would take their time."""
    path = tmp_path / "loadavg"
    path.write_text(loadavg)
    monkeypatch.setattr(local, "LOADAVG", str(path))
    executor = LocalExecutor(1, poll=True)
    try:
        executor._cores = 2
        executor.submit(_task("quick", "    return 1"))
        assert task_result(executor, "quick").ok
    finally:
        executor.close()
    assert _spins(sent_tasks) == [("quick", wire.SPIN_S if polls else 0.0)]


@pytest.mark.parametrize(
    ("cpu_max", "quota_cores"), [("max 100000\n", None), ("150000 100000\n", 1), ("", None)]
)
def test_the_cores_counted_are_those_a_containers_cpu_quota_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, quota_cores: int | None
) -> None:
    affinity = len(os.sched_getaffinity(0))
    path = tmp_path / "cpu.max"
    if cpu_max:
        path.write_text(cpu_max)  # else no file: no cgroup v2 quota to read
    monkeypatch.setattr(interpreters, "CPU_MAX", str(path))
    assert interpreters.usable_cores() == (affinity if quota_cores is None else min(affinity, quota_cores))
