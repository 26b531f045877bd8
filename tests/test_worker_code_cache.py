"""A worker keeps `KEPT_CODES` bundles of step code, least recently used out, and the runner's
`LocalExecutor` knows which: it sends a bundle again exactly when the worker dropped it.

A watch session makes new bundles at every save, each holding its load's copy of the user's modules;
a worker that kept 4,096 of them grew by gigabytes over a long session. A real worker process here.
"""

from __future__ import annotations

from typing import Any

from runner.executors import wire
from runner.executors.base import Task, TaskResult
from runner.executors.execute import KEPT_CODES, resolve_code
from runner.executors.local import LocalExecutor
from runner.shipping import pickle_code
from tests.helpers_core import calls_to, task_result


def _code(value: int) -> bytes:
    namespace: dict[str, Any] = {}
    exec(f"def step():\n    return {value}\n", namespace)  # noqa: S102 - a function pickled by value
    return pickle_code({"step": namespace["step"]})


def test_a_worker_keeps_the_code_it_was_sent_last_and_the_runner_knows_which() -> None:
    executor = LocalExecutor(1)
    codes = {i: _code(i) for i in range(KEPT_CODES + 10)}
    try:

        def run(n: int, key: int) -> TaskResult:
            task = Task(id=f"t{n}", step="step", code_key=f"k{key}", code=codes[key], kwargs={}, entry="step")
            executor.submit(task)
            return task_result(executor, task.id)

        for i in range(KEPT_CODES + 10):
            assert run(i, i).ok
        (worker,) = executor._workers
        assert list(worker.codes) == [f"k{i}" for i in range(10, KEPT_CODES + 10)]

        # The worker dropped k0..k9 too: sent without its code, k0 is unknown there.
        task = Task(id="bare", step="step", code_key="k0", code=b"", kwargs={}, entry="step")
        worker.tasks.append(task)
        executor._by_task[task.id] = worker
        wire.write_all(worker.to_worker, wire.encode(wire.RunTask(task), code=False))
        missing = task_result(executor, "bare")
        assert not missing.ok and "no code for k0" in (missing.error or "")

        assert run(1000, 0).ok  # the runner sends k0 again
        assert run(1001, 12).ok  # k12 is still there: sent without code, and it runs
        assert list(worker.codes)[-2:] == ["k0", "k12"] and len(worker.codes) == KEPT_CODES
    finally:
        executor.close()


def test_the_users_modules_are_forgotten_once_per_load_not_at_every_chunk_of_its_code(monkeypatch) -> None:
    """A new load's code makes the worker forget the user's modules that earlier tasks imported (so
    `import helpers` in a step sees the saved text); the further chunks of one load's code do not walk
    `sys.modules` again (120-350 µs each, on a chain's critical path). Back to an earlier load: again."""
    from runner.executors import execute

    walks = calls_to(monkeypatch, execute, "_forget_project_modules")
    monkeypatch.setattr(execute, "_FORGOTTEN_FOR", [""], raising=False)
    cache: dict[str, Any] = {}
    keys = ["L1:s0", "L1:1+2", "L1:3+4", "L2:s0", "L2:1+2", "L1:7+8"]
    for key in keys:
        code = _code(1)
        task = Task(id=key, step="step", code_key=key, code=code, kwargs={}, entry="step", sys_path=("/p",))
        assert resolve_code(task, cache)() == 1
    assert walks == [("/p",)] * 3  # L1, L2, and L1 again
