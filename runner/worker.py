"""Provides the worker process: `python -m runner.worker IN_FD OUT_FD`.

A worker stays warm across tasks and runs: it receives tasks as frames, keeps each step's unpickled
code by `code_key`, and sends back log lines and results. It never outlives the runner: a watchdog
thread kills its whole process group (the step's own children included) once the parent is gone.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from runner import artifacts
from runner.executors import wire
from runner.executors.base import Task, TaskResult
from runner.executors.execute import execute, resolve_code

_CODE_CACHE_SIZE = 4096

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(value: Any) -> int:
    """Bytes from a number or a size like "512MB", "2GiB".

    Raises:
        ValueError: not a size.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '512MB', '2GiB')")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _become_subreaper() -> None:
    """Orphaned descendants of a step are re-parented to this worker, so it can find and kill them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _children() -> list[int]:
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as handle:
                    pids.extend(int(pid) for pid in handle.read().split())
            except OSError:
                continue
    except OSError:
        return []
    return pids


def kill_leftovers() -> int:
    """Kill (and reap) every process a finished step left behind; return how many were alive."""
    alive = 0
    for _ in range(50):
        pids = _children()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        for pid in pids:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                alive += 1
    return alive


def _memory_limit(task: Task) -> int | None:
    """The step's memory limit in bytes: `resources={"memory": "2GB"}`, else `$FLOW_MEMORY_LIMIT`."""
    value = (task.resources or {}).get("memory") or os.environ.get("FLOW_MEMORY_LIMIT")
    return parse_size(value) if value else None


def _limit_memory(limit: int) -> tuple[int, int] | None:
    """Cap this process's address space at its current size + `limit`; return the old limits."""
    try:
        import resource

        old = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = current + limit
        if old[1] != resource.RLIM_INFINITY:
            cap = min(cap, old[1])
        resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
        return old
    except (OSError, ValueError, ImportError):
        return None


def _restore_memory(old: tuple[int, int] | None) -> None:
    if old is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, old)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            try:
                os.killpg(0, signal.SIGKILL)
            finally:
                os._exit(1)


def main(argv: list[str]) -> int:
    in_fd, out_fd = int(argv[1]), int(argv[2])
    faulthandler.enable()
    artifacts.IN_WORKER = True
    _become_subreaper()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    lock = threading.Lock()

    def send(message: Any) -> None:
        frame = wire.encode(message)
        with lock:
            wire.write_all(out_fd, frame)

    codes: OrderedDict[str, Any] = OrderedDict()
    while True:
        message = wire.read_frame(in_fd)
        if message is None or message[0] == "exit":
            return 0
        task: Task = message[1]
        fresh = task.code_key not in codes
        try:
            fn = resolve_code(task, codes)
        except Exception as exc:
            send(("done", task.id, TaskResult(ok=False, error=f"cannot load the step's code: {exc}")))
            continue
        if len(codes) > _CODE_CACHE_SIZE:
            codes.popitem(last=False)
        if fresh or task.timeout:
            send(("started", task.id))  # the step's timeout counts from here, not from a cold start

        def emit(stream: str, line: str, ts: float, task_id: str = task.id) -> None:
            send(("log", task_id, stream, line, ts))

        try:
            limit = _memory_limit(task)
        except ValueError as exc:
            send(("done", task.id, TaskResult(ok=False, error=f"invalid memory limit: {exc}")))
            continue
        old_limit = _limit_memory(limit) if limit else None
        try:
            result = execute(task, fn, emit)
        finally:
            _restore_memory(old_limit)
        leftovers = kill_leftovers()
        if leftovers:
            emit("stderr", f"flow: killed {leftovers} process(es) the step left running", time.time())
        send(("done", task.id, result))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
