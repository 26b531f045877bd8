"""Provides `usable_cores` and `start_helper`: how many cores this process may keep busy, and another
interpreter started to take a share of a large piece of CPU work meanwhile (`dsl.splitcompile`'s second
half of a flow file's compile, `runner.fingerprint.texthelp`'s share of its functions' texts).

A helper is `python -I -S`: no site, no user paths, no environment's PYTHONPATH (it starts in ~11 ms);
it imports only what its script asks for, and reads its work from a file on its standard input, at its
own pace (a pipe written by this side would block it once full, while this side is busy too).
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import subprocess

T = TypeVar("T")

CPU_MAX = "/sys/fs/cgroup/cpu.max"
"""A container's CPU quota (cgroup v2: "<quota> <period>" in µs, or "max <period>")."""


def usable_cores() -> int:
    """The cores this process may keep busy: those it may run on, fewer under a container's CPU
    quota (`docker run --cpus=1` on an 8-core host leaves one: a poller there takes another's time,
    and a helper interpreter only takes turns with this one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open(CPU_MAX) as handle:
            quota, period = handle.read().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cores


def start_helper(
    script: str, args: list[str], data: bytes, *, warnings: str
) -> subprocess.Popen[bytes] | None:
    """Another interpreter running `script` with `args`, `data` on its standard input and its standard
    output piped back (its errors dropped: the caller falls back on doing the work itself), under the
    `-W` action `warnings`; None if it cannot start."""
    import subprocess
    import tempfile

    command = [sys.executable, "-I", "-S", "-W", warnings, "-c", script, *args]
    try:
        with tempfile.TemporaryFile() as stdin:
            stdin.write(data)
            stdin.seek(0)
            return subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except (OSError, ValueError):
        return None


def meanwhile(child: subprocess.Popen[bytes], work: Callable[[], T]) -> tuple[T, object]:
    """`work()` here while the helper `child` works; then (its result, what the helper answered,
    marshalled on its standard output, or None if it failed or answered garbage). If `work` raises,
    the helper is killed and the exception goes on."""
    with child:
        try:
            result = work()
        except BaseException:
            child.kill()
            raise
        assert child.stdout is not None
        data = child.stdout.read()
        failed = child.wait() != 0
    if failed:
        return result, None
    try:
        return result, marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return result, None
