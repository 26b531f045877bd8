"""Provides the worker process: `python -P -m runner.executors.worker IN_FD OUT_FD`.

A worker stays warm across tasks and runs: it receives tasks as frames, keeps each step's unpickled
code by `code_key`, and sends back log lines and results. It never outlives the runner: a watchdog
thread kills every process below it (the step's own children, those in a session of their own
included) and its process group once the parent is gone. `-P`: the working directory is not put on
`sys.path`, so a user's `runner.py` there cannot shadow this package.

Steps do not leak into each other (`runner.executors.isolation`): after each step the worker puts
back what the step changed, or, when that cannot be done cheaply, says so in its result and exits.

The protocol is `runner.executors.wire`'s typed frames: `RunTask`/`Exit` in, `TaskStarted`, `TaskLogs`/
`TaskLog` and `Finished` out.

Log lines travel in batches (`LogSender`): a step printing 100,000 lines would otherwise cost the
runner a frame, an unpickle, a wake-up and an event object per line, all holding the runner's GIL.
"""

from __future__ import annotations

import array
import faulthandler
import fcntl
import os
import signal
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

# Imported for the first task: its code, pickled by value, names cloudpickle's functions, so unpickling
# it imports cloudpickle (with platform and uuid), ~5 ms on the first step's path. Imported here, that
# happens while the runner is still starting, before any task is sent.
import cloudpickle  # noqa: F401

from runner import dataclass_cache
from runner.batch_policy import run_as_batch

# First: the imports below create the dataclasses of the wire format and of the DSL (~90 methods to
# compile at every worker start without the cache). Hence E402 is off for this file.
dataclass_cache.install()

from runner.executors import wire
from runner.executors.base import InputRef, Task, TaskDone, TaskLog, TaskLogs, TaskResult, TaskStarted
from runner.executors.execute import execute, install_roots, keep_code, resolve_code
from runner.executors.isolation import Isolation
from runner.executors.limits import limit_memory, memory_limit, restore_memory
from runner.executors.proctree import become_subreaper, continue_when_parent_dies, kill_tree, outlives_step
from runner.testing import kill_parent_on_fault


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


_SPARED: set[int] = set()
"""Children seen marked `FLOW_OUTLIVES_STEP`: spared until they end (while one exits, its environment
reads empty for a moment, which must not make it fair game)."""


def _spared(pid: int) -> bool:
    """Whether child `pid` is a marked process (see `kill_leftovers`); one that ended is reaped."""
    if pid not in _SPARED:
        if not outlives_step(pid):
            return False
        _SPARED.add(pid)
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        reaped = pid
    if reaped:
        _SPARED.discard(pid)
    return True


def kill_leftovers() -> int:
    """Kill (and reap) every process a finished step left behind; return how many were alive.

    A process marked `FLOW_OUTLIVES_STEP=1` is spared (a job's process, `dsl.jobs.spawn`): it is meant
    to outlive the call that started it, and its job's `kill` ends it. Once it exits it is reaped here
    like any other (a zombie's environment reads empty, so it is no longer marked)."""
    try:
        # One syscall answers the common case: ECHILD means no child at all, alive or zombie
        # (orphans re-parented to this subreaper included), so /proc need not be walked.
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return 0
    alive = 0
    for _ in range(50):
        pids = [pid for pid in _children() if not _spared(pid)]
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


def _raw_output_unread() -> bool:
    """Whether bytes written to fds 1/2 (C code, child processes) wait unread in the runner's pipes.

    Sent with each result: the runner reads those pipes before taking the result only if so, which
    saves a trivial step two reads on the runner's side.
    """
    count = array.array("i", [0])
    for fd in (1, 2):
        try:
            fcntl.ioctl(fd, termios.FIONREAD, count, True)
        except OSError:
            return True  # the step closed or replaced the fd: let the runner look
        if count[0]:
            return True
    return False


FLUSH_INTERVAL_S = 0.005
"""Longest a printed line waits in the worker before it is sent (while lines keep coming)."""

MAX_BATCH = 1000
"""Most lines in one frame (bounds the frame's size and the worker's buffer)."""

_real_exit = os._exit


class LogBatch:
    """One task's log lines not sent yet. Closed when the task ends: later lines (a thread the step
    left running) are sent one per frame, as the runner drops lines of a finished task anyway."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.lines: list[tuple[str, str, float]] = []
        self.since = 0.0
        self.closed = False


class LogSender:
    """Sends each task's log lines to the runner in frames of many lines, in order.

    A line waits at most `FLUSH_INTERVAL_S`: the thread that prints sends the batch once its oldest
    line is that old (or the batch is full), and a flusher thread sends what is left when printing
    stops. A line printed after a quiet moment is sent at once, so the last words of a step that
    then dies in native code reach the runner. Every line is sent before the task's result
    (`close`), and before `os._exit` ends the process (the worker routes it through `exit`). A line
    can only be lost if the process dies from a signal (a segfault, SIGKILL) within
    `FLUSH_INTERVAL_S` of printing it while lines stream faster than that.

    In a process forked by the step (multiprocessing), lines go out one per frame, as before:
    the child has no flusher, and the lines it inherited in its buffer belong to the parent.
    """

    def __init__(self, send: Callable[[wire.FromWorker], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        """Guards the current batch's lines."""
        self._sending = threading.Lock()
        """Held from taking a batch's lines until they are written: batches leave in order."""
        self._current: LogBatch | None = None
        self._last_sent = 0.0
        self._wake = threading.Event()
        self._child = False
        os.register_at_fork(after_in_child=self._forked)
        threading.Thread(target=self._flusher, name="flow-log-flusher", daemon=True).start()

    def _forked(self) -> None:
        # Another thread (the flusher) may have held a lock at the fork: the child starts afresh.
        self._child = True
        self._lock = threading.Lock()
        self._sending = threading.Lock()

    def start(self, task_id: str) -> LogBatch:
        """A batch for the task about to run (the previous one must be closed)."""
        batch = self._current = LogBatch(task_id)
        return batch

    def emit(self, batch: LogBatch, stream: str, line: str, ts: float) -> None:
        now = time.monotonic()
        with self._lock:
            single = batch.closed or self._child
            if not single:
                first = not batch.lines
                if first:
                    batch.since = now
                batch.lines.append((stream, line, ts))
                due = (
                    len(batch.lines) >= MAX_BATCH
                    or now - batch.since >= FLUSH_INTERVAL_S
                    or (first and now - self._last_sent >= FLUSH_INTERVAL_S)
                )
                if first and not due:
                    self._wake.set()
        if single:
            self._send(TaskLog(batch.task_id, stream, line, ts))
        elif due:
            self.flush(batch)

    def flush(self, batch: LogBatch, *, close: bool = False, timeout: float = -1) -> None:
        """Send the batch's waiting lines; with `close`, later lines go out one by one."""
        if not self._sending.acquire(timeout=timeout):
            return
        try:
            with self._lock:
                lines, batch.lines = batch.lines, []
                batch.closed = batch.closed or close
            if lines:
                self._send(TaskLogs(batch.task_id, lines))
                self._last_sent = time.monotonic()
        finally:
            self._sending.release()

    def close(self, batch: LogBatch) -> None:
        """The task ended: send its last lines (before its result)."""
        self.flush(batch, close=True)
        if self._current is batch:
            self._current = None

    def exit(self, code: int) -> None:
        """`os._exit` in the worker: send the lines printed so far, then end the process."""
        batch = self._current
        if batch is not None and not self._child:
            try:
                self.flush(batch, timeout=1.0)
            except OSError:
                pass
        _real_exit(code)

    def _flusher(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(FLUSH_INTERVAL_S)
            batch = self._current
            if batch is not None:
                self.flush(batch)


class Inbox:
    """The runner's frames in the order sent: tasks, queued ones among them (`wire.RunTask.until`), and
    revokes of queued tasks, applied before a queued task is taken."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._tasks: deque[wire.RunTask] = deque()
        self._revoked: set[str] = set()

    def next(self, spin: float) -> tuple[wire.RunTask, bool] | None:
        """The next task, and whether it was revoked (polling for up to `spin` seconds first if none
        waits); None once the runner says to exit or closes the pipe."""
        while True:
            while not self._tasks:  # a revoke may come alone: of a task this worker has passed already
                if spin:
                    wire.await_frame(self._fd, spin)
                    spin = 0.0
                if not self._take(wire.read_frame(self._fd)):
                    return None
            # A queued or chained task may have been revoked by a frame sent after it: read what waits first.
            while (self._tasks[0].until or self._tasks[0].after) and wire.readable(self._fd):
                if not self._take(wire.read_frame(self._fd)):
                    return None
            message = self._tasks.popleft()
            revoked = message.task.id in self._revoked
            self._revoked.discard(message.task.id)
            return message, revoked

    def _take(self, message: wire.ToWorker | None) -> bool:
        if isinstance(message, wire.RunTask):
            self._tasks.append(message)
        elif isinstance(message, wire.Revoke):
            self._revoked.add(message.task_id)
        else:
            return False
        return True


def _chain_inputs(task: Task, names: tuple[str, ...], result: TaskResult) -> None:
    """Pass the output of the task this worker just ran to a task chained to it (`wire.RunTask.after`),
    as the runner would have: its pickled bytes, or the artifact file the worker wrote (and its stamp).
    The task's arguments were decoded for this worker alone: they are its to fill in."""
    ref = InputRef(hash=result.hash or "", data=result.data, path=result.path, stamp=result.stamp)
    for name in names:
        task.kwargs[name] = ref


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            try:
                kill_tree(os.getpid(), include_root=False)
                os.killpg(0, signal.SIGKILL)
            finally:
                _real_exit(1)


def main(argv: list[str]) -> int:
    """`argv`: the program, the fds to read tasks from and write replies to, and optionally a flow file
    whose libraries to import before the first task (`runner.executors.preload`)."""
    in_fd, out_fd = int(argv[1]), int(argv[2])
    # First, so the threads started below inherit it. Woken by the runner's frame or by its own
    # watchdog, a worker took the runner's core mid-cycle, and the runner waited for it (the tail of
    # its `os.write`s to workers: 20-50 µs, a tenth of them). `benchmarks.cold`, 3 alternations on
    # 2 cores: the fan-out read 0.138, 0.130, 0.138 ms a step, against 0.140, 0.159, 0.181 before.
    run_as_batch()
    faulthandler.enable()
    kill_parent_on_fault()
    become_subreaper()
    continue_when_parent_dies()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    lock = threading.Lock()

    def send(message: wire.FromWorker) -> None:
        frame = wire.encode(message)
        with lock:
            wire.write_all(out_fd, frame)

    def forked() -> None:
        nonlocal lock
        lock = threading.Lock()  # the flusher may have been writing a frame at the fork

    os.register_at_fork(after_in_child=forked)

    def fail(task_id: str, error: str) -> None:
        send(wire.Finished(TaskDone(task_id, TaskResult(ok=False, error=error))))

    dataclass_cache.save()  # the worker's imports are done
    logs = LogSender(send)
    os._exit = logs.exit  # type: ignore[assignment]  # a step's os._exit still sends its last lines
    codes: dict[str, Any] = {}
    preloaded: list[str] = []
    changed: dict[str, str | None] = {}
    if len(argv) > 3:
        from runner.executors.preload import drop_shadowed, preload

        preloaded, changed = preload(argv[3])
    # First: the runner sends tasks only to a ready worker, and adopts an early one only if its own
    # environment changed alike.
    send(wire.Preloaded(changed))
    isolation = Isolation()  # last: the worker's own threads and handlers are part of a clean state
    inbox = Inbox(in_fd)
    spin = 0.0
    last: tuple[str, TaskResult] | None = None
    """The task this worker ran last and its result, if it succeeded: a chained task's input."""
    unread = False
    """The last task's raw fd output was not all read by the runner when its result was sent: the
    runner reads it as it takes that result, and would take a next task's output for that task's."""
    while True:
        taken = inbox.next(spin)
        if taken is None:
            return 0  # `Exit`, or the runner closed the pipe
        message, skip = taken
        task, spin = message.task, message.spin
        if message.until and not skip:
            send(TaskStarted(task.id, time.time()))  # the claim: before the clock is read (`RunTask.until`)
            if unread or time.monotonic() >= message.until:
                skip = True
                send(wire.Finished(TaskDone(task.id, TaskResult(ok=False)), expired=True))
        if message.after and not skip:
            if unread or last is None or last[0] != message.after:
                skip = True  # the task before it failed, or did not run here: the runner decides anew
                send(wire.Finished(TaskDone(task.id, TaskResult(ok=False)), expired=True))
            else:
                _chain_inputs(task, message.inputs, last[1])
                send(TaskStarted(task.id, time.time()))  # the claim: a revoke read after it is too late
        last = None
        fresh = task.code_key not in codes
        try:
            # Kept even for a task skipped: the runner counts its code as sent (`keep_code`).
            fn = resolve_code(task, codes)
        except Exception as exc:
            if not skip:
                fail(task.id, f"cannot load the step's code: {exc}")
            continue
        keep_code(codes, task.code_key)
        if skip:
            continue
        if fresh or task.timeout:
            send(TaskStarted(task.id, time.time()))  # the step's timeout counts from here, not a cold start

        batch = logs.start(task.id)

        def emit(stream: str, line: str, ts: float, batch: LogBatch = batch) -> None:
            logs.emit(batch, stream, line, ts)

        try:
            limit = memory_limit(task)
        except ValueError as exc:
            logs.close(batch)
            fail(task.id, f"invalid memory limit: {exc}")
            continue
        if install_roots(task):
            if preloaded:
                drop_shadowed(preloaded, task.sys_path)
            isolation.rebase()
        state = isolation.begin(fn, task.sys_path)
        old_limit = limit_memory(limit) if limit else None
        try:
            result = execute(task, fn, emit, keep_log_level=True)
        finally:
            restore_memory(old_limit)
        leftovers = kill_leftovers()
        if leftovers:
            emit("stderr", f"flow: killed {leftovers} process(es) the step left running", time.time())
        retire = isolation.end(state)
        if retire:
            reasons = "; ".join(retire)
            emit("stderr", f"flow: {reasons}: this worker is replaced, so no later step sees it", time.time())
        logs.close(batch)
        unread = _raw_output_unread()
        send(wire.Finished(TaskDone(task.id, result), unread, bool(retire)))
        if retire:
            _real_exit(0)  # now: a thread the step left must not run on, nor print, nor finalize
        if result.ok:
            last = (task.id, result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
