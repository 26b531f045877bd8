"""Provides the worker process: `python -m runner.worker IN_FD OUT_FD`.

A worker stays warm across tasks and runs: it receives tasks as frames, keeps each step's unpickled
code by `code_key`, and sends back log lines and results. It never outlives the runner: a watchdog
thread kills its whole process group (the step's own children included) once the parent is gone.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from runner.executors import wire
from runner.executors.base import Task, TaskResult
from runner.executors.execute import execute, resolve_code

_CODE_CACHE_SIZE = 4096


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
        try:
            fn = resolve_code(task, codes)
        except Exception as exc:
            send(("done", task.id, TaskResult(ok=False, error=f"cannot load the step's code: {exc}")))
            continue
        if len(codes) > _CODE_CACHE_SIZE:
            codes.popitem(last=False)

        def emit(stream: str, line: str, ts: float, task_id: str = task.id) -> None:
            send(("log", task_id, stream, line, ts))

        result = execute(task, fn, emit)
        send(("done", task.id, result))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
