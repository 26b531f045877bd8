"""Provides the liveness rule for the processes that own runs and leases in a store.

A pid and a hostname do not say whether a process is alive: a container has its own hostname, a
pid namespace records its runner as pid 1 (the host's init), pids are reused, and a store may be
copied to another machine. So every process that creates runs or takes leases registers an owner
(`owners` table) holding:

- an exclusive `flock` on `owners/<id>.lock` in the store, for its whole life. On the same kernel
  (same boot id: containers and namespaces included) another process asks the kernel: if it can
  lock the file, the owner is gone — at once, whatever its hostname, pid namespace or reused pid.
- a heartbeat (`HEARTBEAT_S`): on another kernel (another machine, or this one after a reboot) the
  lock says nothing, and an owner whose heartbeat is older than `HEARTBEAT_EXPIRY_S` is gone.
- its pid, process start time and pid namespace: the fallback on this kernel if the lock file is
  missing (the pid answers only in the same pid namespace, and only with the same start time).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_S = 5.0
"""How often an owner refreshes its heartbeat (one tiny SQLite write)."""
HEARTBEAT_EXPIRY_S = 30.0
"""An owner on another kernel whose heartbeat is older than this is dead: six missed beats, so a
busy disk or a store lock held by `flow gc` for a while does not declare a live runner dead."""
LATE_S = 2 * HEARTBEAT_S
"""An owner on another kernel whose heartbeat is older than this is not proven alive: `flow doctor
--clear-stuck` may clear it before it expires."""


@dataclass(frozen=True)
class Identity:
    """What identifies a process beyond its pid."""

    pid: int
    host: str
    boot_id: str
    pid_ns: str
    started: str


@dataclass(frozen=True)
class Owner:
    """A row of the `owners` table."""

    id: str
    pid: int
    host: str
    boot_id: str
    pid_ns: str
    started: str
    heartbeat_at: float


@dataclass(frozen=True)
class Verdict:
    """Whether an owner is alive; `proven` when that is certain now (not a recent heartbeat only)."""

    alive: bool
    proven: bool
    why: str


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if unknown, "zombie" if it exited)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return "zombie"
    return fields[19] if len(fields) > 19 else ""


@functools.lru_cache(maxsize=4)
def _identity(pid: int) -> Identity:
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return Identity(
        pid=pid,
        host=os.uname().nodename,  # what socket.gethostname() returns, without importing socket
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        pid_ns=pid_ns,
        started=start_time(pid),
    )


def this_process() -> Identity:
    """This process's identity (computed once per pid)."""
    return _identity(os.getpid())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OwnerLock:
    """The lock an owner holds for its whole life (released by the kernel when the process dies)."""

    def __init__(self, directory: Path, owner_id: str) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{owner_id}.lock"
        self._fd: int | None = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def lock_held(path: Path) -> bool | None:
    """Whether another process holds the owner lock at `path` (None: no such lock file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return True  # unreadable: assume held (never declare a live owner dead)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # closing drops the shared lock taken just now, if any
    return False


def judge(owner: Owner | None, lock_dir: Path, now: float | None = None) -> Verdict:
    """Whether `owner` (None: its row is gone) is alive, by the rule in this module's docstring."""
    if owner is None:
        return Verdict(False, True, "its process deregistered or was cleared")
    me = this_process()
    where = "this machine" if owner.boot_id == me.boot_id else f"host {owner.host}"
    if owner.boot_id and owner.boot_id == me.boot_id:
        held = lock_held(lock_dir / f"{owner.id}.lock")
        if held is not None:
            if held:
                return Verdict(True, True, f"pid {owner.pid} on {where} holds its lock")
            return Verdict(False, True, f"pid {owner.pid} on {where} is gone (its lock is free)")
        if owner.pid_ns == me.pid_ns:
            started = start_time(owner.pid)
            if pid_alive(owner.pid) and started == owner.started:
                return Verdict(True, True, f"pid {owner.pid} on {where} is running")
            return Verdict(False, True, f"pid {owner.pid} on {where} is gone")
    age = (time.time() if now is None else now) - owner.heartbeat_at
    heard = f"pid {owner.pid} on {where}, last heartbeat {age:.0f}s ago"
    if age > HEARTBEAT_EXPIRY_S:
        return Verdict(False, True, f"{heard} (given up after {HEARTBEAT_EXPIRY_S:.0f}s)")
    return Verdict(True, age <= LATE_S, heard)


def judge_legacy(pid: int, host: str) -> Verdict:
    """A row written before owners existed (schema 3): judged by pid on the same host, as then."""
    if host == this_process().host:
        if pid_alive(pid):
            return Verdict(True, False, f"pid {pid} on this host (recorded before heartbeats)")
        return Verdict(False, True, f"pid {pid} on this host is gone")
    return Verdict(True, False, f"pid {pid} on host {host} (recorded before heartbeats; cannot be checked)")
