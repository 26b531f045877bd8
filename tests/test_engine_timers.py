"""The scheduler's moments (timeouts, retry delays, job polls) are kept in an index of the executions
that wait on one, so a result never costs a scan of every queued execution (a 10,000-wide fan-out queues
10,000): the index must follow every change of a moment, and drop what finished."""

from __future__ import annotations

from pathlib import Path

from runner.engine.model import Execution, Timed
from runner.executors.base import Task
from tests.helpers_core import flow_source, statuses


def _execution(timed: Timed) -> Execution:
    task = Task(id="t1", step="s", code_key="k", code=b"", kwargs={})
    return Execution(key="fp", task=task, retries=0, retry_delay=0.0, waiters=[], timed=timed)


def test_an_execution_is_indexed_exactly_while_it_waits_on_a_moment() -> None:
    timed: Timed = {}
    execution = _execution(timed)
    assert execution not in timed
    execution.deadline = 10.0
    assert list(timed) == [execution]
    execution.retry_at = 5.0
    execution.deadline = None
    assert list(timed) == [execution], "a retry moment is still pending"
    execution.retry_at = None
    assert execution not in timed
    execution.retry_at = 1.0
    assert list(timed) == [execution]


def test_timeouts_and_retries_fire_among_many_queued_steps_and_leave_no_entry(
    harness, write_flow, tmp_path: Path
) -> None:
    """A timeout and a retry delay in a wide fan-out whose other steps are queued behind two workers."""
    flag = tmp_path / "failed-once"
    width = 120
    wide = "\n".join(f"@step\ndef m{i}():\n    return {i}\n" for i in range(width))
    body = f"""
        @step(timeout=1)
        def hangs():
            time.sleep(60)

        @step(retries=1, retry_delay=0.2)
        def flaky():
            if not os.path.exists({str(flag)!r}):
                open({str(flag)!r}, "w").close()
                raise RuntimeError("first attempt fails")
            return "second"
    """
    source = flow_source(tmp_path / "executed.log", body) + "\n" + wide
    run = harness.run(write_flow(source))
    st = statuses(run)
    assert st["hangs"] == "failed"
    assert st["flaky"] == "succeeded"
    assert all(st[f"m{i}"] == "succeeded" for i in range(width))
    assert harness.engine._timed_executions() == []
    assert not harness.engine._timed, "a finished execution stays in the index"
