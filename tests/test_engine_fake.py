"""The engine's logic with `FakeExecutor`: retries, stopping, timeouts, joining, fan-out, no processes.

The engine, its real store (on disk in tmp_path) and real loaded flows; only the executor is the
in-process test double, so each test decides how each task ends and sees what the engine asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsl.loader import load_flow
from runner.engine import Engine, RunRequest
from runner.events import Event, StepFinished, StepRetrying, StepStarted
from runner.executors.base import Task, TaskResult
from runner.executors.fake import FakeExecutor, failed, ok
from runner.store import Store

FLOW = """
from dsl import step


@step(retries=2, retry_delay=0)
def flaky():
    return 1


@step(timeout=0.3)
def slow(flaky):
    return flaky + 1
"""

FAN_OUT = """
from dsl import step


@step
def numbers():
    return [1, 2, 3]


@step(foreach="numbers")
def square(numbers):
    return numbers * numbers


@step
def total(square):
    return sum(square)
"""


class Rig:
    """An engine over a real store and a `FakeExecutor`, with every event it emitted."""

    def __init__(self, store_dir: Path, answer: Callable[[Task], TaskResult | None] | None) -> None:
        self.executor = FakeExecutor(answer)
        self.store = Store(store_dir)
        self.events: list[Event] = []
        self.changed = threading.Condition()
        self.engine = Engine(self.store, self.executor, [self._seen])

    def _seen(self, event: Event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), f"not within {timeout}s: {self.events}"

    def finished(self, step: str) -> list[StepFinished]:
        return [e for e in self.events if isinstance(e, StepFinished) and e.step == step]

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[[Callable[[Task], TaskResult | None] | None], Rig]]:
    made: list[Rig] = []

    def make(answer: Callable[[Task], TaskResult | None] | None = None) -> Rig:
        made.append(Rig(tmp_path / "store", answer))
        return made[-1]

    yield make
    for each in made:
        each.close()


def flow(tmp_path: Path, text: str, name: str = "fake_flow.py") -> RunRequest:
    path = tmp_path / "project" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return RunRequest(load_flow(path), {})


def test_a_failed_attempt_is_retried_as_a_new_task(tmp_path: Path, rig: Callable[..., Rig]) -> None:
    def answer(task: Task) -> TaskResult:
        if task.step == "flaky" and task.attempt < 3:
            return failed(f"attempt {task.attempt} broke")
        return ok(1) if task.step == "flaky" else ok(2)

    r = rig(answer)
    handle = r.engine.run(flow(tmp_path, FLOW))
    assert handle.status == "succeeded"
    assert [t.attempt for t in r.executor.submitted if t.step == "flaky"] == [1, 2, 3]
    assert len({t.id for t in r.executor.submitted}) == len(r.executor.submitted), "one id per attempt"
    retried = [e for e in r.events if isinstance(e, StepRetrying)]
    assert [(e.attempt, e.error) for e in retried] == [(1, "attempt 1 broke"), (2, "attempt 2 broke")]
    assert r.finished("flaky")[0].attempts == 3


def test_retries_run_out(tmp_path: Path, rig: Callable[..., Rig]) -> None:
    r = rig(lambda task: failed("always"))
    handle = r.engine.run(flow(tmp_path, FLOW))
    assert handle.status == "failed"
    assert [t.attempt for t in r.executor.submitted] == [1, 2, 3]
    (flaky,) = r.finished("flaky")
    assert (flaky.status, flaky.error) == ("failed", "always")
    (slow,) = r.finished("slow")
    assert slow.status == "skipped", "its upstream failed"


def test_a_step_that_overruns_its_timeout_is_cancelled_and_fails(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    r = rig(lambda task: ok(1) if task.step == "flaky" else None)  # `slow` never ends by itself
    handle = r.engine.run(flow(tmp_path, FLOW))
    assert handle.status == "failed"
    (slow,) = r.finished("slow")
    assert slow.error == "timed out after 0.3s; the step's process was killed"
    slow_task = next(t for t in r.executor.submitted if t.step == "slow")
    assert r.executor.cancelled == [slow_task.id]
    assert r.store.get_run(handle.id).status == "failed"


def test_stopping_a_run_cancels_its_running_task(tmp_path: Path, rig: Callable[..., Rig]) -> None:
    r = rig(lambda task: None)  # nothing ends by itself
    handle = r.engine.start(flow(tmp_path, FLOW))
    r.wait_for(lambda: any(isinstance(e, StepStarted) and e.step == "flaky" for e in r.events))
    r.engine.cancel(handle.id)
    assert handle.wait(10) == "cancelled"
    assert r.executor.cancelled == [r.executor.submitted[0].id]
    assert not r.executor.running
    statuses = {e.step: e.status for e in r.events if isinstance(e, StepFinished)}
    assert statuses == {"flaky": "cancelled", "slow": "cancelled"}


def test_two_runs_needing_one_fingerprint_share_one_execution(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    r = rig(lambda task: None)
    request = flow(tmp_path, FLOW)
    first = r.engine.start(request)
    r.wait_for(lambda: len(r.executor.submitted) == 1)
    second = r.engine.start(request)
    r.wait_for(
        lambda: any(
            isinstance(e, StepStarted) and e.run_id == second.id and "joined the execution" in e.reason
            for e in r.events
        )
    )
    r.executor.finish(r.executor.submitted[0].id, ok(1))
    r.wait_for(lambda: len(r.executor.submitted) == 2)
    assert [t.step for t in r.executor.submitted] == ["flaky", "slow"], "each step executed once"
    r.executor.finish(r.executor.submitted[1].id, ok(2))
    assert first.wait(10) == "succeeded" and second.wait(10) == "succeeded"


def test_stopping_one_of_two_runs_keeps_the_shared_execution(tmp_path: Path, rig: Callable[..., Rig]) -> None:
    r = rig(lambda task: None)
    request = flow(tmp_path, FLOW)
    first = r.engine.start(request)
    r.wait_for(lambda: len(r.executor.submitted) == 1)
    second = r.engine.start(request)
    r.wait_for(lambda: any(isinstance(e, StepStarted) and e.run_id == second.id for e in r.events))
    r.engine.cancel(first.id)
    assert first.wait(10) == "cancelled"
    assert r.executor.cancelled == [], "the second run still waits for it"
    r.executor.finish(r.executor.submitted[0].id, ok(1))
    r.wait_for(lambda: len(r.executor.submitted) == 2)
    r.executor.finish(r.executor.submitted[1].id, ok(2))
    assert second.wait(10) == "succeeded"


def test_a_fan_out_over_objects_asks_a_probe_task_and_over_plain_data_reads_the_same_items(
    tmp_path: Path, rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Iterating objects is user code (their unpickling, their `__iter__`): a probe task does it. A
    list of plain data is read in the runner (`Probing._plain_items`) into the very bytes a probe
    makes: a run whose items a probe made is re-run from the cache, every instance, without one."""
    from runner.engine.probing import Probing

    objects = FAN_OUT.replace("return [1, 2, 3]", "return [Fraction(1), Fraction(2), Fraction(3)]")
    objects = objects.replace(
        "from dsl import step", "from fractions import Fraction\n\nfrom dsl import step"
    )
    r = rig()
    assert r.engine.run(flow(tmp_path, objects, name="objects_flow.py")).status == "succeeded"
    assert [t.entry for t in r.executor.submitted].count("foreach") == 1
    # A set is plain data, but pickled in the hash order of the process that pickles it: a worker's
    # is fixed (`PYTHONHASHSEED=0`), the runner's is not, so a probe makes such items.
    sets = FAN_OUT.replace("return [1, 2, 3]", "return [{'a', 'b'}, {'c'}, ({'d', 'e'},)]")
    sets = sets.replace("return numbers * numbers", "return len(numbers)")
    r = rig()
    assert r.engine.run(flow(tmp_path, sets, name="sets_flow.py")).status == "succeeded"
    assert [t.entry for t in r.executor.submitted].count("foreach") == 1

    with monkeypatch.context() as patched:
        patched.setattr(Probing, "_plain_items", lambda *_: None)  # as before: every iteration a probe
        first = rig()
        assert first.engine.run(flow(tmp_path, FAN_OUT)).status == "succeeded"
        assert [t.entry for t in first.executor.submitted].count("foreach") == 1
    second = rig()  # a new engine: nothing in memory
    again = second.engine.run(flow(tmp_path, FAN_OUT))
    assert again.status == "succeeded" and second.executor.submitted == []
    assert {e.status for e in second.events if isinstance(e, StepFinished)} == {"cached"}


def test_a_fan_out_runs_one_task_per_item_and_joins_them_in_order(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    r = rig()  # the default answer runs each task's code in this process
    handle = r.engine.run(flow(tmp_path, FAN_OUT))
    assert handle.status == "succeeded"
    entries = [t.entry for t in r.executor.submitted]
    assert entries.count("foreach") == 0, "a plain list's items are read in the runner, no probe task"
    assert sorted(t.step for t in r.executor.submitted if t.entry == "square") == [
        "square[0]",
        "square[1]",
        "square[2]",
    ]
    assert r.finished("total")[0].preview == "14"
    again = r.engine.run(flow(tmp_path, FAN_OUT))
    assert again.status == "succeeded"
    assert {e.step: e.status for e in r.events if isinstance(e, StepFinished) and e.run_id == again.id} == {
        "numbers": "cached",
        "square[0]": "cached",
        "square[1]": "cached",
        "square[2]": "cached",
        "square": "cached",
        "total": "cached",
    }
