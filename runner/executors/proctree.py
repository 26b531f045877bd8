"""Provides `kill_tree`: SIGKILL a process and every descendant, those in a session of their own included.

Killing a worker's process group is not enough: a step's child started with
`subprocess.Popen(..., start_new_session=True)` (or one that calls `setsid`, like any daemon) is in
another group and would outlive a stop or a timeout as an orphan of pid 1. A worker is a child
subreaper (`PR_SET_CHILD_SUBREAPER`), so while it lives every descendant of its steps stays below it
in the process tree, orphans re-parented to it included. So the tree is killed from the top while it
is whole: each process found is stopped (SIGSTOP: a stopped process cannot fork or exit, so the walk
converges even against a fork loop), the tree is walked again until nothing new appears, then all are
killed at once. Killing the worker first would hand its children to pid 1, out of reach.

One exception, on purpose: a process started with `FLOW_OUTLIVES_STEP=1` in its environment is left
alone, with everything below it. That is how a step's own cleanup survives the kill it exists for —
a container step's guard, which removes the container once its worker is gone (`dsl.external`).
At a normal end of a step, its worker kills every process the step left but those marked (a job's
process, `dsl.jobs.spawn`, lives on until its job's `kill`).

Linux only (`/proc`); elsewhere `kill_tree` kills the root alone and callers fall back on `killpg`.
"""

from __future__ import annotations

import os
import signal
import time

from runner.testing import fault_point

OUTLIVES_STEP = "FLOW_OUTLIVES_STEP"
"""The environment variable (value "1") that spares a process and its descendants from `kill_tree`."""
_MARK = f"{OUTLIVES_STEP}=1".encode()

_MAX_ROUNDS = 100
"""Walks of the tree before giving up on stopping a tree that keeps growing (each round stops what it
found, so only a tree whose new processes outrun one walk needs more than two)."""
_EXEC_READS = 50
"""Reads of an empty environment before a live process counts as unmarked (see `outlives_step`)."""
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants of this process are re-parented to it (not to pid 1), so it can find and kill
    them."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def continue_when_parent_dies() -> None:
    """Have the kernel send this process SIGCONT when its parent dies.

    `kill_tree` stops a process before it kills it. A caller that dies between the two (SIGKILLed, out
    of memory) would leave it stopped for ever: no thread of it can run to notice (a worker's watchdog),
    and a process in a session of its own has a process group orphaned from the start, so the kernel's
    SIGCONT to newly orphaned groups never comes. With this, it runs again and ends as it would have had
    its parent died while it ran. A SIGCONT to a running process does nothing, so the ones the kernel
    also sends when the parent's thread that started this process ends are harmless.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGCONT)


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux: nothing to ask for
        pass


def children(pid: int) -> list[int]:
    """The direct children of `pid` (empty if it is gone)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except FileNotFoundError:
            return _children_by_scan(pid)  # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return found


def _children_by_scan(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before their children, but for those marked `OUTLIVES_STEP`
    (and what is below them)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children(pending.pop()):
            if outlives_step(child):
                continue
            found.append(child)
            pending.append(child)
    return found


def outlives_step(pid: int) -> bool:
    """Whether process `pid` is marked `OUTLIVES_STEP` (a zombie's environment reads empty: not marked).

    A process in the middle of `exec` also reads empty: the kernel closes its close-on-exec descriptors,
    which is when `subprocess.Popen` returns, before it publishes the new environment. Measured here,
    1 read in 10 right after `Popen` returned saw nothing, so an empty read of a live process is
    taken again until the exec is through (microseconds; bounded at ~50 ms).
    """
    for _ in range(_EXEC_READS):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            return False
        if environ or _state(pid) in (None, "Z", "X"):
            return _MARK in environ.split(b"\0")
        time.sleep(0.001)
    return False


def _state(pid: int) -> str | None:
    """Process `pid`'s state letter from /proc (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def kill_tree(root: int, *, include_root: bool = True) -> list[int]:
    """Stop `root`'s whole tree, then SIGKILL every process in it; return the pids signalled.

    With `include_root=False` (a worker cleaning up below itself) the root is neither stopped nor
    killed. The caller reaps what is its own child.
    """
    stopped: list[int] = []
    seen: set[int] = set()
    if include_root:
        if _signal(root, signal.SIGSTOP):
            stopped.append(root)
        seen.add(root)
    for _ in range(_MAX_ROUNDS):
        new = [pid for pid in descendants(root) if pid not in seen]
        if not new:
            break
        for pid in new:
            seen.add(pid)
            if _signal(pid, signal.SIGSTOP):
                stopped.append(pid)
    fault_point("tree-stopped")
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    return stopped


def _signal(pid: int, number: int) -> bool:
    try:
        os.kill(pid, number)
    except (ProcessLookupError, PermissionError):
        return False
    return True
