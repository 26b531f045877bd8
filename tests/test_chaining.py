"""A chain's next step, handed to the worker while the step before it runs (`runner.engine.chaining`,
`LocalExecutor.follow`): the worker starts it the moment that step succeeds, with its output.

What that must never cost: a step run with the wrong input, a step run the runner would not have run
(after a failure, a stop, or a result the cache already holds: "never needless"), a step lost or run
twice when a worker dies or retires. Real worker processes and a real store throughout.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from runner.executors import local, wire
from runner.executors.base import InputRef, Task, TaskDone, TaskResult
from runner.executors.local import LocalExecutor
from runner.shipping import pickle_code
from tests.helpers_core import (
    calls_to,
    executed,
    flow_source,
    ran,
    ready_executor,
    reset,
    statuses,
    steps_of,
    task_results,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("quiet_machine")

STEP = """
def step(spec, before=None):
    import os
    import time

    while spec.get("gate") and not os.path.exists(spec["gate"]):
        time.sleep(0.005)
    with open(spec["log"], "a") as handle:
        handle.write(spec["id"] + "\\n")
    if spec.get("exit") is not None:
        os._exit(spec["exit"])
    if spec.get("fail"):
        raise ValueError("failed on purpose")
    if spec.get("linger"):
        import threading

        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    return (before or 0) + spec.get("add", 1)
"""
"""Every executor-level test task: waits for `gate`, logs its id, then exits, raises, or returns its
input `before` (the output of the task it is chained to) plus `add` (leaving a thread running, which
retires its worker, if `linger`)."""


def _code() -> bytes:
    namespace: dict[str, Any] = {}
    exec(STEP, namespace)  # noqa: S102 - a function pickled by value
    return pickle_code({"step": namespace["step"]})


_CODE = _code()


def _task(task_id: str, log: Path, *, gate: Path | None = None, **spec: Any) -> Task:
    data = pickle.dumps({"id": task_id, "log": str(log), "gate": str(gate) if gate else None, **spec})
    kwargs = {"spec": InputRef(hash=hashlib.sha256(data).hexdigest(), data=data)}
    return Task(id=task_id, step="step", code_key="k-chain", code=_CODE, kwargs=kwargs, entry="step")


def _value(result: TaskResult) -> Any:
    assert result.ok, result.error
    assert result.data is not None
    return pickle.loads(result.data)


def _drain(executor: LocalExecutor, seconds: float) -> list[Any]:
    """Every event for `seconds` (to see that nothing more comes)."""
    events: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events += executor.events(0.05)
    return events


def test_a_chained_task_runs_after_its_predecessor_with_its_output(tmp_path: Path) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1) as executor:
        executor.submit(_task("a", log, gate=gate, add=41))
        assert executor.follow(_task("b", log), "a", ("before",))
        assert executor.follow(_task("c", log, add=100), "b", ("before",))
        gate.touch()
        results = task_results(executor, {"a", "b", "c"})
    assert [_value(results[t]) for t in "abc"] == [41, 42, 142]
    assert ran(log) == ["a", "b", "c"]


def test_an_adopted_chained_task_whose_worker_retires_first_runs_elsewhere_with_its_input(
    tmp_path: Path,
) -> None:
    """Adopted, a chained task is the scheduler's: if its worker retires before taking it, it runs in
    another worker, with the argument the runner filled in (the first had it from the step before)."""
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(2) as executor:
        executor.submit(_task("a", log, gate=gate, linger=True))
        first = executor._by_task["a"].proc.pid
        assert executor.follow(_task("b", log), "a", ("before",))
        full = _task("b", log)
        full.kwargs["before"] = InputRef(
            hash=hashlib.sha256(pickle.dumps(10)).hexdigest(), data=pickle.dumps(10)
        )
        assert executor.adopt(full)
        gate.touch()
        results = task_results(executor, {"a", "b"})
    assert _value(results["a"]) == 1
    assert _value(results["b"]) == 11, "the runner's input, not the first worker's"
    assert results["b"].where != f"pid {first}"


def test_a_task_chained_to_one_that_fails_does_not_run(tmp_path: Path) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1) as executor:
        executor.submit(_task("a", log, gate=gate, fail=True))
        assert executor.follow(_task("b", log), "a", ("before",))
        assert executor.follow(_task("c", log), "b", ("before",))
        gate.touch()
        results = task_results(executor, {"a"})
        assert not results["a"].ok
        later = _drain(executor, 0.5)
        assert not [e for e in later if isinstance(e, TaskDone)], "no result for a chained task not run"
        assert not executor.adopt(_task("b", log)), "dropped: the scheduler sends it anew if it must"
        assert not executor.adopt(_task("c", log))
        pid = executor._workers[0].proc.pid
        executor.cancel("b")  # as the scheduler does: the revoke reaches a worker that passed b already
        executor.cancel("c")
        executor.submit(_task("d", log))
        assert _value(task_results(executor, {"d"})["d"]) == 1, "the worker takes new tasks"
        assert [w.proc.pid for w in executor._workers] == [pid], "the same worker: it read the revokes"
    assert ran(log) == ["a", "d"]


def test_a_cancelled_chained_task_never_runs_and_the_step_before_it_is_not_killed(tmp_path: Path) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1) as executor:
        executor.submit(_task("a", log, gate=gate))
        assert executor.follow(_task("b", log), "a", ("before",))
        assert executor.follow(_task("c", log), "b", ("before",))
        executor.cancel("b")
        executor.cancel("c")
        pid = executor._by_task["a"].proc.pid
        gate.touch()
        assert _value(task_results(executor, {"a"})["a"]) == 1
        assert not [e for e in _drain(executor, 0.5) if isinstance(e, TaskDone)]
        assert [w.proc.pid for w in executor._workers if w.proc.pid == pid], "its worker lives on"
    assert ran(log) == ["a"]


def test_tasks_chained_on_a_worker_that_dies_are_dropped_not_run_elsewhere(tmp_path: Path) -> None:
    """Not adopted yet, a chained task lacks its input: it can run only where its predecessor ran."""
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(2) as executor:
        executor.submit(_task("a", log, gate=gate, exit=5))
        assert executor.follow(_task("b", log), "a", ("before",))
        gate.touch()
        results = task_results(executor, {"a"})
        assert "exited with code 5" in (results["a"].error or "")
        assert not [e for e in _drain(executor, 0.5) if isinstance(e, TaskDone)]
        assert not executor.adopt(_task("b", log))
        assert len(executor._by_task) == 0, "nothing left holding a slot"
    assert ran(log) == ["a"]


def test_a_task_may_be_chained_to_the_last_one_an_idle_worker_finished(tmp_path: Path) -> None:
    """The runner may chain a task after its predecessor already ended (the worker ran ahead): the
    worker still holds that output, as long as nothing else ran there since."""
    log = tmp_path / "ran"
    with ready_executor(1) as executor:
        executor.submit(_task("a", log, add=7))
        assert _value(task_results(executor, {"a"})["a"]) == 7
        assert executor.follow(_task("b", log), "a", ("before",))
        assert _value(task_results(executor, {"b"})["b"]) == 8
        executor.submit(_task("c", log))
        task_results(executor, {"c"})
        assert not executor.follow(_task("d", log), "b", ("before",)), "c ran there since"


def test_a_chained_task_carries_its_code_only_one_at_a_time_and_not_a_big_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chained frame waits in the pipe while the step before it runs: its size is bounded, so the
    runner's write never waits for a long step."""
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1) as executor:
        executor.submit(_task("a", log, gate=gate))
        fresh = _task("b", log)
        object.__setattr__(fresh, "code_key", "k-other")
        assert executor.follow(fresh, "a", ("before",))
        again = _task("c", log)
        object.__setattr__(again, "code_key", "k-third")
        assert not executor.follow(again, "b", ("before",)), "b's code still waits in the pipe"
        monkeypatch.setattr(local, "FOLLOW_CODE_MAX", len(_CODE) - 1)
        assert not executor.follow(again, "b", ("before",)), "too big anyway"
        monkeypatch.setattr(local, "FOLLOW_CODE_MAX", len(_CODE))
        gate.touch()
        results = task_results(executor, {"a", "b"})
        assert _value(results["b"]) == 2
        assert executor.follow(again, "b", ("before",)), "b's frame was read: c may carry code"
        assert _value(task_results(executor, {"c"})["c"]) == 3


def test_a_task_with_a_timeout_is_never_chained(tmp_path: Path) -> None:
    log, gate = tmp_path / "ran", tmp_path / "gate"
    with ready_executor(1) as executor:
        executor.submit(_task("a", log, gate=gate))
        timed = _task("b", log)
        object.__setattr__(timed, "timeout", 5.0)
        assert not executor.follow(timed, "a", ("before",))
        gate.touch()
        task_results(executor, {"a"})


def test_the_wire_carries_a_chained_tasks_predecessor_and_inputs() -> None:
    task = _task("b", Path("/nowhere"))
    frame = wire.encode(wire.RunTask(task, 0.0, 0.0, "a", ("before", "other")), code=False)
    message = wire.decode_to_worker(frame[4:])
    assert isinstance(message, wire.RunTask)
    assert (message.after, message.inputs) == ("a", ("before", "other"))


# ----- the engine -------------------------------------------------------------------------------


CHAIN = """
@step
def s0():
    mark("s0")
    return 0
"""


def _chain(n: int, *, step_body: str = "") -> str:
    steps = [CHAIN]
    for i in range(1, n):
        steps.append(
            f"\n@step\ndef s{i}(s{i - 1}):\n    mark('s{i}')\n"
            f"{step_body.format(i=i)}    return s{i - 1} + {i}\n"
        )
    return "".join(steps)


def _waits_at(step: int, gate: Path, then: str = "") -> str:
    """A `_chain` step body: step `step` waits for the file `gate`, then does `then`."""
    wait = f"        while not os.path.exists({str(gate)!r}):\n            time.sleep(0.005)\n"
    return f"    if {{i}} == {step}:\n" + wait + then


@pytest.fixture
def follows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(step, accepted) of every task the engine chains from now on."""
    seen: list[tuple[str, bool]] = []
    real = LocalExecutor.follow

    def spy(self: LocalExecutor, task: Task, after: str, inputs: tuple[str, ...]) -> bool:
        accepted = real(self, task, after, inputs)
        seen.append((task.step, accepted))
        return accepted

    monkeypatch.setattr(LocalExecutor, "follow", spy)
    return seen


def test_a_chain_runs_chained_and_every_step_gets_its_upstream_output(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    log = tmp_path / "log"
    n = 40
    run = harness.run(write_flow(flow_source(log, _chain(n))))
    assert run.status == "succeeded"
    assert executed(log) == [f"s{i}" for i in range(n)], "each step once, in order"
    assert sum(accepted for _, accepted in follows) >= n // 2, follows
    record = steps_of(run)[f"s{n - 1}"]
    assert record.preview == repr(sum(range(n))), "each step got its upstream's output"
    assert not harness.engine._follows and not harness.engine._follow_after
    assert harness.engine._busy == 0


def test_a_step_whose_result_the_cache_may_hold_is_never_chained(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    """Never needless: `s0` is edited so that it returns the same value. Its successor's fingerprint
    is then the cached one, and `s1` must not run, chained or not; nor anything after it."""
    log = tmp_path / "log"
    path = write_flow(flow_source(log, _chain(6)))
    assert harness.run(path).status == "succeeded"
    reset(log)
    follows.clear()
    path.write_text(path.read_text().replace("    return 0\n", "    return 1 - 1\n", 1))
    run = harness.run(path)
    assert run.status == "succeeded"
    assert executed(log) == ["s0"]
    assert statuses(run) == {"s0": "succeeded", **{f"s{i}": "cached" for i in range(1, 6)}}
    assert follows == [], "no step with a result in the cache is chained"


def test_a_failure_in_a_chain_runs_nothing_after_it(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    """`s5` fails once `s6` is chained to it (it waits for that): `s6` is dropped, never run."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    body = _waits_at(5, gate, then="        raise RuntimeError('boom')\n")
    from dsl import load_flow
    from runner.engine import RunRequest

    handle = harness.engine.start(
        RunRequest(load_flow(write_flow(flow_source(log, _chain(12, step_body=body)))), {})
    )
    wait_for(lambda: ("s6", True) in follows)
    gate.touch()
    handle.wait()
    run = harness.store.get_run(handle.id)
    assert run.status == "failed"
    assert executed(log) == [f"s{i}" for i in range(6)]
    assert statuses(run)["s5"] == "failed"
    assert {statuses(run)[f"s{i}"] for i in range(6, 12)} == {"skipped"}
    assert not harness.engine._follows and harness.engine._busy == 0


def test_a_retried_step_in_a_chain_hands_its_output_on(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    log, tries = tmp_path / "log", tmp_path / "tries"
    source = _chain(8).replace(
        "@step\ndef s4(s3):\n    mark('s4')\n",
        f"@step(retries=2)\ndef s4(s3):\n    mark('s4')\n"
        f"    with open({str(tries)!r}, 'a') as handle:\n        handle.write('x')\n"
        f"    if len(open({str(tries)!r}).read()) < 2:\n        raise RuntimeError('first try fails')\n",
    )
    run = harness.run(write_flow(flow_source(log, source)))
    assert run.status == "succeeded", statuses(run)
    assert executed(log) == ["s0", "s1", "s2", "s3", "s4", "s4", "s5", "s6", "s7"]
    assert steps_of(run)["s7"].preview == repr(sum(range(8)))
    assert steps_of(run)["s4"].attempts == 2


def test_stopping_a_chain_runs_no_step_after_the_stopped_one(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    log, gate = tmp_path / "log", tmp_path / "gate"
    body = _waits_at(3, gate)
    loaded_path = write_flow(flow_source(log, _chain(8, step_body=body)))
    from dsl import load_flow
    from runner.engine import RunRequest

    handle = harness.engine.start(RunRequest(load_flow(loaded_path), {}))
    wait_for(lambda: "s3" in executed(log))
    wait_for(lambda: any(step == "s4" and accepted for step, accepted in follows))
    harness.engine.cancel(handle.id)
    handle.wait()
    gate.touch()
    assert handle.status == "cancelled"
    time.sleep(0.3)  # a wrongly started s4 would have written its mark by now
    assert executed(log) == ["s0", "s1", "s2", "s3"]
    assert not harness.engine._follows and harness.engine._busy == 0


def test_a_forced_rerun_chains_its_steps(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    """`--force` executes every step whatever the cache holds: its decisions cannot depend on it."""
    log = tmp_path / "log"
    path = write_flow(flow_source(log, _chain(10)))
    harness.run(path)
    reset(log)
    follows.clear()
    run = harness.run(path, force=True)
    assert run.status == "succeeded"
    assert executed(log) == [f"s{i}" for i in range(10)]
    assert sum(accepted for _, accepted in follows) >= 5


def test_a_worker_that_retires_after_a_step_leaves_its_chained_successor_to_run_elsewhere(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    """A step that leaves a thread running retires its worker: the step chained to it never starts
    there, and the runner sends it anew, with the same input."""
    log = tmp_path / "log"
    body = (
        "    if {i} == 2:\n        import threading\n"
        "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    )
    run = harness.run(write_flow(flow_source(log, _chain(6, step_body=body))))
    assert run.status == "succeeded", statuses(run)
    assert executed(log) == [f"s{i}" for i in range(6)]
    assert steps_of(run)["s5"].preview == repr(sum(range(6)))
    assert harness.engine._busy == 0


def test_a_large_output_reaches_the_chained_step_through_its_file(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    log = tmp_path / "log"
    source = """
    @step
    def first():
        return 1

    @step
    def second(first):
        return first + 1

    @step
    def big(second):
        mark("big")
        return b"x" * 5_000_000

    @step
    def size(big):
        mark("size")
        return len(big)

    @step
    def half(size):
        mark("half")
        return size // 2
    """
    run = harness.run(write_flow(flow_source(log, source)))
    assert run.status == "succeeded"
    assert steps_of(run)["half"].preview == "2500000"
    assert ("size", True) in follows


def test_chaining_reads_the_cache_listing_deciding_reads_once_per_run(
    harness: Any, write_flow: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which step names have a cached result comes with the cache's fingerprints, in the one listing
    a run reads (`CacheIndex.never_cached`): chaining asks the store nothing of its own."""
    from runner.store import Store

    asked = calls_to(monkeypatch, Store, "cache_rows_after", lambda store, *args: args)
    log = tmp_path / "log"
    path = write_flow(flow_source(log, _chain(30)))
    harness.run(path)
    assert len(asked) == 1
    path.write_text(path.read_text().replace("    return 0\n", "    return 100\n", 1))
    run = harness.run(path)
    assert executed(log).count("s29") == 2, "every step ran again (none of them chained: all cached once)"
    assert len(asked) == 2, "and once for the next run"
    assert run.status == "succeeded"


def test_raw_output_of_chained_steps_is_each_steps_own(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    """Bytes a step writes straight to fds 1 and 2 reach the runner through pipes apart from its
    result: with the next step already running, they must still be told apart (frames are read
    first, and a worker whose last output is unread starts no chained step)."""
    log = tmp_path / "log"
    body = (
        "    os.write(1, b'raw out {i}\\n')\n    os.write(2, b'raw err {i}\\n')\n    print('printed {i}')\n"
    )
    path = write_flow(flow_source(log, _chain(30, step_body=body)))
    run = harness.run(path)
    assert run.status == "succeeded"
    assert sum(accepted for _, accepted in follows) >= 10
    for i in range(1, 30):
        lines = sorted(line.line for line in harness.store.get_logs(run.id, f"s{i}"))
        assert lines == sorted([f"raw out {i}", f"raw err {i}", f"printed {i}"]), f"s{i}"


def test_a_join_of_many_is_not_chained(
    harness: Any, write_flow: Any, tmp_path: Path, follows: list[tuple[str, bool]]
) -> None:
    """A wide join whose every other input is ready as its last upstream step starts could be chained
    to it: its task, with every other input, would outgrow a chained frame, and is not even made."""
    log = tmp_path / "log"
    width = 40
    names = [f"w{i}" for i in range(width)]
    source = "\n".join(f"@step\ndef {name}():\n    return {i}\n" for i, name in enumerate(names[:-1]))
    source += f"\n@step\ndef barrier({', '.join(names[:-1])}):\n    return 0\n"
    source += f"\n@step\ndef {names[-1]}(barrier):\n    return {width - 1}\n"
    source += f"\n@step\ndef total({', '.join(names)}):\n    return {' + '.join(names)}\n"
    run = harness.run(write_flow(flow_source(log, source)))
    assert run.status == "succeeded"
    assert steps_of(run)["total"].preview == repr(sum(range(width)))
    assert (names[-1], True) in follows, "the step before the join was chained"
    assert [step for step, _ in follows if step == "total"] == []
