"""Provides `spawn`, how a worker process starts, and the early worker: one `flow run` starts before its
own imports, which the first `LocalExecutor` that needs a worker adopts.

A worker's interpreter start and imports take ~60 ms, the CLI's imports ~70 ms more: started first
thing, the worker is ready about when the run is planned, instead of ~60 ms after. Given the flow
file, it also imports the flow's libraries meanwhile (`runner.executors.preload`). An early worker
is adopted only if nothing it inherited has changed since it started (the environment, the working
directory, the interpreter) but what those imports changed alike in both processes; otherwise it is
ended and a fresh one started, so a step never sees a difference. Nothing here imports more than
the standard library before a worker is adopted: it runs before everything else.

Workers start as `python -P -m runner.executors.worker`: without `-P`, `-m` puts the working directory
first on `sys.path`, and a user's own `runner.py` (or `dsl.py`, `runner/`) there shadowed this package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


class Spawned:
    """A worker process just started, with the runner's ends of its two pipes and what it inherited.

    A plain class: `dataclasses` (with `inspect` below it) would cost the CLI's first milliseconds.
    """

    __slots__ = ("proc", "to_worker", "from_worker", "inherited", "preloading", "reported", "started")

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        to_worker: int,
        from_worker: int,
        inherited: tuple[str, str | None, dict[str, str]],
        preloading: bool = False,
    ) -> None:
        self.proc = proc
        self.to_worker = to_worker
        self.from_worker = from_worker
        self.inherited = inherited
        self.preloading = preloading
        """It imports a flow file's libraries first, then reports its environment (`wire.Preloaded`)."""
        self.reported = False
        """Its `wire.Preloaded` report (every worker's first frame) has been read: it is ready."""
        self.started = time.monotonic()


def _inherited() -> tuple[str, str | None, dict[str, str]]:
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    return sys.executable, cwd, dict(os.environ)


def spawn(flow_file: str | None = None) -> Spawned:
    """Start a worker process (see the module's docstring for its command line); with `flow_file`, it
    imports the libraries that file imports before it takes a task (`runner.executors.preload`)."""
    inherited = _inherited()
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "runner.executors.worker",
                str(to_r),
                str(from_w),
                *([flow_file] if flow_file else []),
            ],
            pass_fds=(to_r, from_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
    finally:
        os.close(to_r)
        os.close(from_w)
    return Spawned(proc, to_w, from_r, inherited, preloading=bool(flow_file))


_early: Spawned | None = None


def start_early(flow_file: str | None = None) -> None:
    """Start the early worker now (the CLI calls this first thing when the run will use local workers),
    preloading `flow_file`'s libraries."""
    global _early
    if _early is None:
        _early = spawn(flow_file)


MIN_PRELOAD_WAIT_S = 1.0
"""The least `adopt` waits for a preloading early worker's report (see `_environ_after_preload`)."""


def pending_early() -> bool:
    """Whether an early worker waits to be adopted."""
    return _early is not None


def adopt() -> Spawned | None:
    """The early worker, if one was started and it has exactly what a worker started now would
    inherit (else None, and the early one is ended).

    A worker that preloaded a flow's libraries is compared by the environment it reports once done,
    which the libraries may have changed, as they did the runner's when it loaded the flow (scikit-
    learn sets two variables). A variable the flow itself set differs, so that worker is not used:
    the libraries it imported did not see that variable, which may have been meant for them
    (`OMP_NUM_THREADS`).
    """
    global _early
    early, _early = _early, None
    if early is None:
        return None
    executable, cwd, environ = _inherited()
    if early.proc.poll() is None and early.inherited[:2] == (executable, cwd):
        if (_environ_after_preload(early) if early.preloading else early.inherited[2]) == environ:
            return early
    discard(early)
    return None


def _environ_after_preload(early: Spawned) -> dict[str, str] | None:
    """The environment the early worker inherited, with the changes its preload reports (None: it
    reported nothing in time)."""
    import select

    from runner.executors import wire

    # As long again as it has run so far (the runner imported the same libraries meanwhile), at least
    # `MIN_PRELOAD_WAIT_S`: a library that hangs only in a worker must not hold the run for long.
    wait = max(MIN_PRELOAD_WAIT_S, time.monotonic() - early.started)
    ready, _, _ = select.select([early.from_worker], [], [], wait)
    report = wire.read_preloaded(early.from_worker) if ready else None
    if report is None:
        return None
    early.reported = True
    environ = dict(early.inherited[2])
    for name, value in report.changed.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


def discard_early() -> None:
    """End the early worker if nobody adopted it (the command failed, or chose another executor)."""
    global _early
    early, _early = _early, None
    if early is not None:
        discard(early)


def discard(spawned: Spawned) -> None:
    """End a worker that never ran a task: its group is killed, its pipes closed, the process reaped."""
    try:
        os.killpg(spawned.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for closable in (spawned.proc.stdout, spawned.proc.stderr):
        if closable is not None:
            closable.close()
    for fd in (spawned.to_worker, spawned.from_worker):
        try:
            os.close(fd)
        except OSError:
            pass
    spawned.proc.wait()
