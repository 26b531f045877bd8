"""Provides the fault-injection hooks of flow's crash tests: testing support, not a feature.

`FLOW_FAULT_KILL=commit:3` SIGKILLs the runner the 3rd time this process reaches the point `commit`.
Points: `commit` (the store's writer, mid-transaction), `artifact-write` and `artifact-rename` (a worker
writing a file artifact), `step-start` and `step-finish` (a worker, around the step call),
`tree-stopped` (`kill_tree`, between stopping a process tree and killing it). In a worker
(`kill_parent_on_fault`), a fault kills the worker's parent, the runner. `tests/test_faults.py` and
`tests/test_step_descendants.py` drive them; nothing else should set the variable.

The variable is read at the first fault point a process reaches, not at import, and while it is unset
a fault point costs a dictionary check.

`FLOW_TEST_TRACE=FILE` makes each process append a line `<pid> <point> <detail>` to FILE at each
`trace` point it passes: `hash-file <digest>` when it hashes a file artifact whole (what the tests of
`runner.artifacts`' stamps count, in the runner and its workers alike).
"""

from __future__ import annotations

import os
import time

_faults: dict[str, int] | None = None
"""Point -> how many more times it may be reached before the kill; None until first asked."""
_kill_parent = False


def kill_parent_on_fault() -> None:
    """This process is a worker: a fault kills its parent (the runner), as a crash of the runner would."""
    global _kill_parent
    _kill_parent = True


def fault_point(name: str) -> None:
    """Kill the runner here if `FLOW_FAULT_KILL` asks for it (see the module's docstring)."""
    faults = _faults if _faults is not None else _arm()
    if not faults or name not in faults:
        return
    faults[name] -= 1
    if faults[name] == 0:
        if _kill_parent:
            os.kill(os.getppid(), 9)
            time.sleep(0.5)
        else:
            os.kill(os.getpid(), 9)
            time.sleep(10)


def _arm() -> dict[str, int]:
    global _faults
    faults: dict[str, int] = {}
    for spec in filter(None, os.environ.get("FLOW_FAULT_KILL", "").split(",")):
        name, _, count = spec.partition(":")
        faults[name] = int(count or 1)
    _faults = faults
    return faults


def trace(point: str, detail: str) -> None:
    """Note in `FLOW_TEST_TRACE`'s file, if set, that this process passed `point` (read on every call:
    the points are on slow paths only)."""
    path = os.environ.get("FLOW_TEST_TRACE")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {point} {detail}\n")
