"""While tasks are quick, `flow run`'s executor queues tasks behind a busy worker's (in its pipe, with a
deadline: `runner.executors.wire.RunTask.until`), so the worker starts each the moment the one before it
ends. What that must never cost: a task run twice, a task stuck behind a long one while another worker
idles, a cancelled task started, a task lost with its worker. Real worker processes throughout.

Whether tasks count as quick depends on how long the last ones took (`LocalExecutor._quick`); the tests
feed that record directly (`_took`), so the machine's speed does not decide what they see.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from runner.executors import local, wire
from runner.executors.base import InputRef, Task, TaskDone, TaskLog
from runner.executors.local import QUICK_SAMPLES, LocalExecutor
from runner.shipping import pickle_code
from tests.helpers_core import ran, ready_executor, task_results

pytestmark = pytest.mark.usefixtures("quiet_machine")


@pytest.fixture(autouse=True)
def young(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task counts as just begun for 10 s, not 2 ms: whether one queues behind another must not
    depend on how fast this machine submits them (`LocalExecutor._queue_behind`)."""
    monkeypatch.setattr(local, "QUICK_S", 10.0)


def _untils(sent: list[wire.RunTask]) -> list[tuple[str, float]]:
    """(task id, `RunTask.until`) of each task sent: 0 for one sent to a free worker."""
    return [(message.task.id, message.until) for message in sent]


STEP = """
def step(spec):
    import os
    import time

    while spec.get("gate") and not os.path.exists(spec["gate"]):
        time.sleep(0.005)
    with open(spec["log"], "a") as handle:
        handle.write(spec["id"] + "\\n")
    if spec.get("raw"):
        os.write(1, ("raw " + spec["id"] + "\\n").encode())
    if spec.get("exit") is not None:
        os._exit(spec["exit"])
    return 1
"""
"""Every test task: waits for `spec["gate"]` (if any), appends its id to `spec["log"]`, writes a line
straight to fd 1 (if `spec["raw"]`), then exits with `spec["exit"]` (if any). One function for all, so
one code bundle: a worker that has it is sent a task without it, and only such a task may queue
(`LocalExecutor._queue_behind`)."""


def _code() -> bytes:
    namespace: dict[str, Any] = {}
    exec(STEP, namespace)  # noqa: S102 - a function pickled by value
    return pickle_code({"step": namespace["step"]})


_CODE = _code()


def _task(
    task_id: str,
    log: Path,
    *,
    gate: Path | None = None,
    exit: int | None = None,
    timeout: float | None = None,
    raw: bool = False,
) -> Task:
    spec = {"id": task_id, "log": str(log), "gate": str(gate) if gate else None, "exit": exit, "raw": raw}
    data = pickle.dumps(spec)
    kwargs = {"spec": InputRef(hash=hashlib.sha256(data).hexdigest(), data=data)}
    return Task(
        id=task_id, step="step", code_key="k-queue", code=_CODE, kwargs=kwargs, entry="step", timeout=timeout
    )


def test_quick_tasks_queue_behind_a_busy_worker_and_each_runs_once(
    sent_tasks: list[wire.RunTask], tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    with ready_executor(1, quick=True) as executor:
        assert executor.slots == local.QUEUE_DEPTH
        ids = [f"t{i}" for i in range(6)]
        for task_id in ids:
            executor.submit(_task(task_id, log))
        # The first went to the idle worker; the rest were sent at once, queued behind it.
        assert [task_id for task_id, until in _untils(sent_tasks) if until == 0] == ["t0"]
        assert [task_id for task_id, until in _untils(sent_tasks) if until > 0] == ids[1:]
        results = task_results(executor, set(ids))
        assert all(result.ok for result in results.values())
        assert sorted(ran(log)) == ids  # each exactly once


def test_a_task_queued_behind_a_long_one_is_taken_back_for_an_idle_worker(
    sent_tasks: list[wire.RunTask], tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    gates = {"a": tmp_path / "gate-a", "b": tmp_path / "gate-b"}
    with ready_executor(2, quick=True) as executor:
        executor.submit(_task("a", log, gate=gates["a"]))
        executor.submit(_task("b", log, gate=gates["b"]))
        executor.submit(_task("q", log))
        assert ("q", 0.0) not in _untils(sent_tasks)  # queued behind a or b
        holder = executor._by_task["q"]
        long_one = holder.tasks[0].id
        other = "b" if long_one == "a" else "a"
        gates[other].touch()
        # q does not wait for the long one: it is taken back, and the worker that is free runs it.
        results = task_results(executor, {other, "q"}, timeout=20)
        assert results["q"].ok and results[other].ok
        assert long_one not in ran(log)
        assert [task_id for task_id, _ in _untils(sent_tasks)].count("q") == 2  # sent queued, then again
        gates[long_one].touch()
        assert task_results(executor, {long_one})[long_one].ok
        assert sorted(ran(log)) == ["a", "b", "q"]  # each exactly once


def test_a_task_taken_back_and_sent_again_to_the_same_worker_runs_once(
    sent_tasks: list[wire.RunTask], tmp_path: Path
) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1, quick=True) as executor:
        executor.submit(_task("a", log, gate=gate))
        executor.submit(_task("q", log))
        deadline = time.monotonic() + 20
        while not any(t.id == "q" for t in executor._queue):  # taken back: its deadline passed
            assert time.monotonic() < deadline, "q was not taken back"
            executor.events(0.05)
        gate.touch()
        # The worker still claims the first send of q, finds it expired and says so; then it runs the
        # second: neither the stale claim nor the stale expiry is taken for the second's.
        results = task_results(executor, {"a", "q"})
        assert results["a"].ok and results["q"].ok
        assert ran(log) == ["a", "q"]
        assert [task_id for task_id, _ in _untils(sent_tasks)] == ["a", "q", "q"]


def test_a_cancelled_queued_task_never_runs_and_the_step_before_it_is_not_killed(tmp_path: Path) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1, quick=True) as executor:
        executor.submit(_task("a", log, gate=gate))
        executor.submit(_task("q", log))
        (worker,) = executor._workers
        assert [t.id for t in worker.tasks] == ["a", "q"]
        executor.cancel("q")
        gate.touch()
        assert task_results(executor, {"a"})["a"].ok
        executor.submit(_task("next", log))
        assert task_results(executor, {"next"})["next"].ok
        assert ran(log) == ["a", "next"]
        assert executor._workers == [worker]  # the same process ran all: not killed


def test_tasks_queued_on_a_worker_that_dies_run_in_another(tmp_path: Path) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1, quick=True) as executor:
        executor.submit(_task("dies", log, gate=gate, exit=3))
        executor.submit(_task("q1", log))
        executor.submit(_task("q2", log))
        gate.touch()
        results = task_results(executor, {"dies", "q1", "q2"})
        assert not results["dies"].ok and "exited with code 3" in (results["dies"].error or "")
        assert results["q1"].ok and results["q2"].ok  # never started there: run again, not failed
        assert sorted(ran(log)) == ["dies", "q1", "q2"]


def test_a_task_with_a_timeout_waits_for_a_free_worker(
    sent_tasks: list[wire.RunTask], tmp_path: Path
) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1, quick=True) as executor:
        executor.submit(_task("a", log, gate=gate))
        executor.submit(_task("timed", log, timeout=30))
        assert [task_id for task_id, _ in _untils(sent_tasks)] == ["a"]  # its clock must start when it does
        gate.touch()
        assert all(r.ok for r in task_results(executor, {"a", "timed"}).values())
        assert _untils(sent_tasks) == [("a", 0.0), ("timed", 0.0)]


def test_tasks_queue_only_in_flow_runs_executor_and_while_recent_ones_were_quick() -> None:
    executor = LocalExecutor(2, poll=True)
    tui = LocalExecutor(2)
    try:
        assert executor.slots == 2  # nothing known yet
        for _ in range(QUICK_SAMPLES - 1):
            executor._took(local.QUICK_S / 10)
        assert executor.slots == 2
        executor._took(local.QUICK_S / 10)
        assert executor.slots == 2 * local.QUEUE_DEPTH
        executor._took(local.QUICK_S * 5)  # one slow task: a sweep's balance comes first
        assert executor.slots == 2
        for _ in range(QUICK_SAMPLES):
            tui._took(local.QUICK_S / 10)
        assert tui.slots == 2
    finally:
        executor.close()
        tui.close()


def test_a_worker_claims_a_queued_task_and_skips_it_once_its_deadline_has_passed(tmp_path: Path) -> None:
    """The worker's side of the deadline (`runner.executors.worker.main`), frame by frame."""
    from runner.executors.base import TaskStarted
    from runner.executors.spawn import spawn

    log = tmp_path / "ran"
    started = spawn(None)
    try:
        assert isinstance(wire.read_preloaded(started.from_worker), wire.Preloaded)
        late = _task("late", log)
        fresh = _task("fresh", log)
        frames = wire.encode(wire.RunTask(late, 0.0, time.monotonic() - 1))
        frames += wire.encode(wire.RunTask(fresh, 0.0, time.monotonic() + 60))
        wire.write_all(started.to_worker, frames)
        reader, seen = wire.FrameReader(), []
        deadline = time.monotonic() + 60
        while not any(isinstance(m, wire.Finished) and m.done.task_id == "fresh" for m in seen):
            assert time.monotonic() < deadline
            seen += reader.feed(os.read(started.from_worker, 1 << 16))
        kinds = [(type(m).__name__, getattr(m, "task_id", None) or m.done.task_id) for m in seen]
        assert kinds[:2] == [("TaskStarted", "late"), ("Finished", "late")]  # claimed, then skipped
        assert isinstance(seen[0], TaskStarted) and seen[1].expired
        assert ("TaskStarted", "fresh") in kinds and kinds[-1] == ("Finished", "fresh")
        assert not seen[-1].expired and seen[-1].done.result.ok
        assert ran(log) == ["fresh"]
    finally:
        started.proc.kill()
        started.proc.communicate()
        os.close(started.to_worker)
        os.close(started.from_worker)


def test_raw_output_of_queued_tasks_is_each_tasks_own(sent_tasks: list[wire.RunTask], tmp_path: Path) -> None:
    """A task's bytes written straight to fd 1 reach the runner through a pipe apart from its result,
    while the worker already runs the task queued behind it: each line stays with its own task."""
    log = tmp_path / "ran"
    ids = [f"t{i}" for i in range(8)]
    lines: dict[str, list[str]] = {}
    done: set[str] = set()
    with ready_executor(1, quick=True) as executor:
        for task_id in ids:
            executor.submit(_task(task_id, log, raw=True))
        assert [task_id for task_id, until in _untils(sent_tasks) if until > 0], "some queued behind"
        deadline = time.monotonic() + 60
        while done != set(ids):
            assert time.monotonic() < deadline, f"no result for {sorted(set(ids) - done)}"
            for event in executor.events(0.2):
                if isinstance(event, TaskLog):
                    lines.setdefault(event.task_id, []).append(event.line)
                elif isinstance(event, TaskDone):
                    assert event.result.ok, event.result.error
                    done.add(event.task_id)
    assert lines == {task_id: [f"raw {task_id}"] for task_id in ids}
