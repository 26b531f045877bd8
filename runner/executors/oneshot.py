"""Provides `run_once`: one task in a fresh process of its own, time-limited, outside any executor.

A job step's `kill` (`dsl.jobs`) must run when the executor cannot be relied on: the run is being
stopped, the engine is closing and its workers are going away, or every worker is busy. So it runs
here: `python -P -m runner.executors.oneshot RESULT` reads the pickled task on stdin, runs it through
the same `execute` as every executor (capture, redaction), and writes the pickled `TaskResult` to the
file RESULT. The caller waits up to `timeout` seconds, then kills the process and everything below it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from runner.executors.base import Task, TaskResult
from runner.executors.proctree import continue_when_parent_dies, kill_tree

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


def run_once(task: Task, timeout: float) -> TaskResult:
    """Run `task` in a new process and return how it ended (never raises for the task's failure)."""
    import tempfile  # here: only a step with a timeout runs one-shot

    fd, result_path = tempfile.mkstemp(prefix="flow-oneshot-", suffix=".pickle")
    os.close(fd)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    try:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "runner.executors.oneshot", result_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        try:
            _, stderr = process.communicate(pickle.dumps(task, protocol=5), timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            process.kill()
            process.communicate()
            return TaskResult(ok=False, error=f"did not return within {timeout:g}s; its process was killed")
        data = Path(result_path).read_bytes()
        if process.returncode != 0 or not data:
            tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            return TaskResult(
                ok=False, error=f"its process exited with code {process.returncode}: {' '.join(tail)}"
            )
        result: TaskResult = pickle.loads(data)
        return result
    except OSError as exc:
        return TaskResult(ok=False, error=f"cannot start a process for it: {exc}")
    finally:
        Path(result_path).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    from runner.executors.execute import execute, install_roots, resolve_code

    continue_when_parent_dies()
    task: Task = pickle.loads(sys.stdin.buffer.read())
    install_roots(task)
    try:
        fn = resolve_code(task, {})
    except Exception as exc:  # noqa: BLE001 - reported as the task's failure
        result = TaskResult(ok=False, error=f"cannot load the step's code: {type(exc).__name__}: {exc}")
    else:
        result = execute(task, fn, lambda stream, line, ts: None)
    Path(argv[1]).write_bytes(pickle.dumps(result, protocol=5))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
