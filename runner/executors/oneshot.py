"""Provides `run_once`: one task in a fresh process of its own, time-limited, outside any executor.

A job step's `kill` (`dsl.jobs`) must run when the executor cannot be relied on: the run is being
stopped, the engine is closing and its workers are going away, or every worker is busy. So it runs
here: `python -P -m runner.executors.oneshot RESULT` reads the pickled task on stdin, runs it through
the same `execute` as every executor (capture, redaction), and writes the pickled `TaskResult` to the
file RESULT. The caller waits up to `timeout` seconds for the call, then kills the process and everything
below it. The call's time starts when the process says it is making the call (a byte on its stdout):
starting an interpreter, importing flow and the libraries the step's code names is flow's time, not the
call's (`call_timeout` of a job). On a busy machine that start took more than a test's 1 s, and a kill
that did kill its job was recorded as failed. The start has a limit of its own, `START_TIMEOUT_S`.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import time
from pathlib import Path

from runner.executors.base import Task, TaskResult
from runner.executors.proctree import continue_when_parent_dies, kill_tree

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)

START_TIMEOUT_S = 60.0
"""How long the process may take to start and load the step's code, before the call's own timeout."""


def run_once(task: Task, timeout: float) -> TaskResult:
    """Run `task` in a new process and return how it ended (never raises for the task's failure)."""
    import tempfile  # here: only a step with a timeout runs one-shot

    fd, result_path = tempfile.mkstemp(prefix="flow-oneshot-", suffix=".pickle")
    os.close(fd)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    try:
        with tempfile.TemporaryFile() as stdin:  # the task, read by the process at its own pace
            stdin.write(pickle.dumps(task, protocol=5))
            stdin.seek(0)
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", "runner.executors.oneshot", result_path],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=env,
            )
        assert process.stdout is not None
        if not _started(process.stdout.fileno(), START_TIMEOUT_S):
            _kill(process)
            return TaskResult(
                ok=False, error=f"its process did not start within {START_TIMEOUT_S:g}s; it was killed"
            )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
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


def _started(fd: int, limit: float) -> bool:
    """Wait until the process writes its start byte, or ends (its result says why), for `limit` seconds
    at most; False if neither happened by then."""
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            os.read(fd, 1)  # the byte, or b"" when the process ended before the call
            return True
    return False


def _kill(process: subprocess.Popen[bytes]) -> None:
    kill_tree(process.pid)
    process.kill()
    process.communicate()


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
        os.write(sys.stdout.fileno(), b"\n")  # the call starts now: the caller's clock starts with it
        result = execute(task, fn, lambda stream, line, ts: None)
    Path(argv[1]).write_bytes(pickle.dumps(result, protocol=5))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
