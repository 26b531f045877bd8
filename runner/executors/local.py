"""Provides `LocalExecutor`: warm worker processes on this machine, each running one task at a time.

Isolation is per process: a step that raises, calls `os._exit`, segfaults or hangs fails alone; a
cancel kills the worker and every process below it (`kill_tree`: so processes the step spawned die
too, even in a session of their own) and a fresh worker replaces it on demand, as it does a worker
that retires after a step left state it cannot undo (`runner.executors.isolation`).

Workers start as `runner.executors.spawn` says (the first may have started before the CLI's imports).
A task goes only to a worker that has reported its start-up done (`wire.Preloaded`): one started for a
flow file imports the flow's libraries first (`preload_for`), which takes seconds for pandas with
scikit-learn, and the ready workers take the tasks meanwhile instead of waiting for it.

In `flow run` (`poll`), while tasks are quick (`_quick`: each of the last few took under 2 ms), up to
`QUEUE_DEPTH` wait in a busy worker's pipe behind its current one, so it starts each the moment the one
before ends, and neither it nor the runner is woken for it: a fan-out of 1,000 quick steps ran in 0.15-
0.17 ms a step instead of 0.21-0.26. A queued task carries a deadline (`wire.RunTask.until`): one
stuck behind a step that turned out long is taken back for a free worker (`_take_back`), and the
worker's claim-then-clock rule means it never runs twice. A cancelled one is revoked (`wire.Revoke`),
not killed with the step before it; those of a worker that dies or retires go back to the queue.

A chain's next steps go to the worker of the step before them while it runs (`follow`, up to
`QUEUE_DEPTH` tasks in all): the worker starts each the moment the one before it succeeds, with its
output, and the runner adopts it as its step's task once it has decided the step (`adopt`); it is
dropped unstarted if the step before it fails, or the worker dies or retires first. The scheduler
chains a task only where deciding its step can only execute it (`runner.engine.chaining`). A 1,000-step
chain's cold run went from 0.161-0.214 ms a step (a round trip per step) to 0.120-0.147 (medians of 5
runs, trees alternating, on a noisy machine).

The scheduler thread drives everything through `events()`, which is a `select` over the workers'
pipes, so a result reaches the scheduler without a thread hand-off. Asked to (`poll`: `flow run`'s
executor), after sending a task it polls for a moment before it sleeps there, and tells the worker to do
the same for its next task, while a core is free for each poller, on the machine as a whole too
(`wire.SPIN_S`, `_core_free`): a chain of quick steps then never pays for waking either side; the
moment is spent on the work it was given first (`work_while_polling`: the store's writes). Not where
another thread of the process must answer promptly: a polling scheduler holds the GIL in turns with it
(the TUI's keys took twice as long during a chain of quick steps; a Dask worker's lanes ran 25% slower).
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable

from dsl.interpreters import usable_cores
from runner.executors import spawn, wire
from runner.executors.base import InputRef, Task, TaskDone, TaskEvent, TaskLog, TaskResult, TaskStarted
from runner.executors.execute import admit_modules, keep_code
from runner.executors.proctree import kill_tree

READ_SIZE = 1 << 16
"""Bytes asked of a worker's pipe per read: what a pipe holds. A larger buffer (it was 1 MiB) is
allocated with mmap and shrunk with mremap on every read: three syscalls and page faults per
message, a tenth of a trivial step's round trip."""


@dataclasses.dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    to_worker: int
    from_worker: int
    reader: wire.FrameReader = dataclasses.field(default_factory=wire.FrameReader)
    tasks: deque[Task] = dataclasses.field(default_factory=deque)
    """Sent and not finished, in the order sent: the first runs (or is about to), the rest are queued."""
    until: dict[str, float] = dataclasses.field(default_factory=dict)
    """Queued tasks not claimed yet (`wire.RunTask.until`): their deadlines."""
    revoked: set[str] = dataclasses.field(default_factory=set)
    """Queued tasks cancelled (`wire.Revoke`) whose claim may still come."""
    stale: dict[str, int] = dataclasses.field(default_factory=dict)
    """Sends of queued tasks taken back (`_take_back`): each still brings a claim, then its expiry."""
    follows: set[str] = dataclasses.field(default_factory=set)
    """Chained tasks (`LocalExecutor.follow`) not claimed yet."""
    last_ok: str = ""
    """The task it finished last, if that succeeded: a task may still be chained to it (`follow`)."""
    with_code: set[str] = dataclasses.field(default_factory=set)
    """Chained tasks sent with their code (`LocalExecutor.follow`: one at a time may wait in the pipe)."""
    since: float = 0.0
    """When its first task began, roughly (sent to it idle, or its task before finished)."""
    ready: bool = False
    """It has reported its start-up done (`wire.Preloaded`): it takes tasks now."""
    preloading: str | None = None
    """The flow file whose libraries it imports before it is ready."""
    codes: dict[str, None] = dataclasses.field(default_factory=dict)
    """The code bundles the worker keeps, as its `keep_code` keeps them."""
    modules: dict[str, None] = dataclasses.field(default_factory=dict)
    """The shipped modules the worker keeps, as its `install_modules` keeps them."""
    raw: dict[str, bytes] = dataclasses.field(default_factory=dict)
    stderr_tail: deque[str] = dataclasses.field(default_factory=lambda: deque(maxlen=30))

    @property
    def task(self) -> Task | None:
        """The task it runs, or is about to."""
        return self.tasks[0] if self.tasks else None

    @property
    def where(self) -> str:
        return f"pid {self.proc.pid}"


QUEUE_DEPTH = 8
"""Tasks a busy worker may hold: its own and those queued behind it in its pipe, while tasks are quick."""
QUICK_S = 0.002
"""Tasks are quick while each of the last `QUICK_SAMPLES` took less than this."""
QUICK_SAMPLES = 8
QUEUE_WAIT_S = 0.01
"""How long a queued task may wait behind the worker's current one before it may be taken back."""
QUEUE_INPUT_MAX = 2048
"""The most input data a queued task's frame may carry (`QUEUE_DEPTH` of them fit a pipe's 64 KiB)."""
FOLLOW_CODE_MAX = 32 * 1024
"""The most code a chained task's frame may carry (`follow`): with `QUEUE_DEPTH` small frames it still
fits a pipe's 64 KiB, so the write never waits for the step the worker runs (a chunk of 64 trivial
steps' code is ~11 KiB)."""
TAKE_BACK_S = 0.005
"""Past a queued task's deadline, how long the runner waits before it takes it back: a claim a worker
wrote just before the deadline is in the pipe by then (it is read to its end first anyway)."""

LOADAVG = "/proc/loadavg"
"""Its fourth field counts the threads runnable on the whole machine right now (`3/456`: 3 of 456)."""
LOAD_CHECK_S = 0.1
"""How often the executor looks at the machine's load (a file read, ~5 µs) while it polls."""


def _runnable() -> int | None:
    """Threads runnable on the machine now (Linux), or None where that cannot be read."""
    try:
        with open(LOADAVG) as handle:
            return int(handle.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _inline_bytes(task: Task) -> int:
    """The bytes of input data a task's frame carries."""

    def size(ref: InputRef) -> int:
        return len(ref.data or b"") + sum(map(size, ref.parts or ()))

    return sum(map(size, task.kwargs.values()))


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    meaning = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed", "SIGABRT": "aborted"}
    return f"{name} ({meaning[name]})" if name in meaning else name


class LocalExecutor:
    """Runs tasks in up to `workers` warm worker processes; `poll`: the runner and the workers poll
    for a moment for each other's next frame before they sleep (see the module)."""

    name = "local"
    reports_start = True
    """Workers send `TaskStarted` for every task with a timeout, so start-up never counts against it."""

    def __init__(self, workers: int | None = None, *, poll: bool = False) -> None:
        self._max = max(1, workers or os.cpu_count() or 1)
        self._selector = selectors.DefaultSelector()
        self._workers: list[_Worker] = []
        self._by_task: dict[str, _Worker] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: list[TaskEvent] = []
        self._queue: deque[Task] = deque()
        """Tasks submitted while no ready worker was idle, oldest first."""
        self._flow_file: str | None = None
        self._preload_failed: set[str] = set()
        self._spare = False
        self._polling = poll
        self._cores = usable_cores()
        self._load_checked = -LOAD_CHECK_S
        self._machine_busy = False
        self._sent = False
        """A task was sent since `events()` last waited: its result may be a moment away."""
        self._idle_work: Callable[[], bool] | None = None
        self._recent: deque[float] = deque(maxlen=QUICK_SAMPLES)
        """How long the last tasks took, roughly (`_took`)."""
        self._unadopted: set[str] = set()
        """Chained tasks (`follow`) the scheduler has not taken as its steps' yet (`adopt`)."""
        self._dropped: set[str] = set()
        """Chained tasks dropped unstarted before the scheduler took them, until it asks (`adopt`)."""
        self._slots = self._max

    @property
    def slots(self) -> int:
        """Tasks it takes at once: one per worker, `QUEUE_DEPTH` per worker while tasks are quick."""
        return self._slots

    def _quick(self) -> bool:
        """Whether tasks may queue behind a busy worker's (`flow run`'s executor, recent tasks quick):
        a quick step then starts the moment the one before it ends, neither side woken for it. Not
        for longer ones: a worker's queue fixed early would undo the balance of a sweep."""
        return self._slots > self._max

    def _took(self, seconds: float) -> None:
        """A task took `seconds`, roughly: update `_quick` (and `slots`, read once per step or more)."""
        self._recent.append(seconds)
        quick = self._polling and len(self._recent) == QUICK_SAMPLES and max(self._recent) < QUICK_S
        self._slots = self._max * QUEUE_DEPTH if quick else self._max

    def prestart(self, count: int) -> None:
        """Start workers ahead of need (their interpreter start overlaps with planning). An early
        worker counts as started: adopting it may wait for its imports, which the first task waits
        for anyway."""
        while len(self._workers) + spawn.pending_early() < min(count, self._max):
            self._spawn()

    def preload_for(self, flow_file: str) -> None:
        """Workers started from now on import `flow_file`'s libraries before they take a task (not
        after a worker so started died before it was ready: its libraries may be what kills it)."""
        self._flow_file = None if flow_file in self._preload_failed else flow_file

    def keep_spare(self) -> None:
        """From now on keep one idle worker beside the busy ones (while fewer than `workers` run),
        started as soon as none is idle. For an edit session (the TUI, `--watch`): a save or a stop
        kills the worker of a step still running, and the next run's step then finds one ready, with
        the flow's libraries imported, instead of waiting for a new worker's start and imports. Only
        sets a flag (any thread may call it): the spare starts at the next task's submission. Any
        executor keeps one from the first time a worker retires (see `_on_message`)."""
        self._spare = True

    def _spawn(self) -> _Worker:
        started = spawn.adopt() or spawn.spawn(self._flow_file)
        proc = started.proc
        worker = _Worker(
            proc=proc,
            to_worker=started.to_worker,
            from_worker=started.from_worker,
            ready=started.reported,
            preloading=self._flow_file if started.preloading and not started.reported else None,
        )
        for fd, tag in ((started.from_worker, "frames"), (proc.stdout, "stdout"), (proc.stderr, "stderr")):
            assert fd is not None
            os.set_blocking(fd if isinstance(fd, int) else fd.fileno(), False)
            self._selector.register(fd, selectors.EVENT_READ, (worker, tag))
        self._workers.append(worker)
        return worker

    def submit(self, task: Task) -> None:
        if len(self._by_task) - len(self._unadopted) + len(self._queue) >= self.slots:
            raise RuntimeError("LocalExecutor.submit called with every worker busy")
        self._queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        """Send queued tasks to idle ready workers, oldest first; start a worker for each task that no
        worker starting up already waits for (and the spare, `keep_spare`)."""
        while self._queue:
            worker = next((w for w in self._workers if w.ready and w.task is None), None)
            if worker is None:
                starting = sum(1 for w in self._workers if not w.ready)
                if len(self._queue) <= starting or len(self._workers) >= self._max:
                    behind = self._queue_behind(self._queue[0])
                    if behind is None:
                        return
                    self._send(behind, self._queue.popleft(), queued=True)
                    continue
                self._spawn()
                continue
            self._send(worker, self._queue.popleft())
        if self._spare and len(self._workers) < self._max and all(w.task is not None for w in self._workers):
            self._spawn()

    def _queue_behind(self, task: Task) -> _Worker | None:
        """The busy worker to queue `task` behind (the least loaded), if tasks are quick, every worker
        is up, and `task` has no timeout (its clock must start when it does). Only behind a task
        begun less than `QUICK_S` ago (one past that is taken for long: what was queued behind it is
        taken back, `_take_back`), and only in a small frame, the worker's code known to it: the
        frames queued in a pipe never fill it, so a write to it never waits for a long step."""
        if task.timeout or not self._quick() or len(self._workers) < self._max:
            return None
        if any(not w.ready for w in self._workers) or _inline_bytes(task) > QUEUE_INPUT_MAX:
            return None
        now = time.monotonic()
        behind = [
            w
            for w in self._workers
            if len(w.tasks) < QUEUE_DEPTH
            and not w.stale
            and now - w.since < QUICK_S
            and task.code_key in w.codes
        ]
        return min(behind, key=lambda w: len(w.tasks), default=None)

    def _take_on(self, worker: _Worker, task: Task) -> tuple[Task, bool]:
        """Count `task` as sent to `worker`, its code and modules as the worker will keep them; return
        the task as its frame carries it, and whether the worker has its code (the frame leaves it out)."""
        known = task.code_key in worker.codes
        keep_code(worker.codes, task.code_key)
        if not worker.tasks:
            worker.since = time.monotonic()
        worker.tasks.append(task)
        self._by_task[task.id] = worker
        sent = task
        if not known and task.modules:
            # The worker's keys all go, so it orders them as `worker.modules` does; a namespace it
            # has already does not.
            fresh = {key for key, _, _ in admit_modules(worker.modules, task.modules, lambda _: None)}
            if len(fresh) < len(task.modules):
                sent = task.with_modules(tuple(m if m[0] in fresh else (*m[:2], b"") for m in task.modules))
        return sent, known

    def _send(self, worker: _Worker, task: Task, *, queued: bool = False) -> None:
        sent, known = self._take_on(worker, task)
        until = 0.0
        if queued:
            until = worker.until[task.id] = time.monotonic() + QUEUE_WAIT_S
        # Busy workers and the runner each want a core: a worker polls after this task only if one is
        # left for it (a fan-out over every core would poll on the cores the runner needs).
        spin = wire.SPIN_S if self._polling and self._core_free() else 0.0
        self._sent = True
        try:
            wire.write_all(worker.to_worker, wire.encode(wire.RunTask(sent, spin, until), code=not known))
        except OSError:
            self._crashed(worker)

    def follow(self, task: Task, after: str, inputs: tuple[str, ...]) -> bool:
        """Chain `task` to task `after` in the worker that has it: the next step of a chain, sent while
        `after` runs, which the worker starts the moment `after` succeeds, with its output as the
        arguments `inputs` (`wire.RunTask.after`). The runner is then not on the chain's critical
        path: neither side waits for the other's round trip between the two steps.

        The scheduler chains a task only when its decision cannot depend on `after`'s output: the step
        executes whatever that output is (`runner.engine.chaining`). Once `after` succeeded it takes
        the task as its step's (`adopt`); otherwise it cancels it.

        Accepted (True) for a task with no timeout (its clock must start when it does); with `after` the
        last task sent to its worker and not queued there, or the last that worker finished, with
        success, and nothing sent to it since; and for a frame that cannot fill the pipe while `after`
        runs: small inputs, and code (a chunk of a load's steps) only if not too big, sent with all of
        its modules already there, and no other chained task's code waiting in the pipe."""
        worker = self._by_task.get(after)
        if worker is None:
            worker = next((w for w in self._workers if w.last_ok == after and not w.tasks), None)
            if worker is None:
                return False
        elif not worker.tasks or worker.tasks[-1].id != after or after in worker.until:
            return False
        if task.timeout or len(worker.tasks) >= QUEUE_DEPTH or _inline_bytes(task) > QUEUE_INPUT_MAX:
            return False
        known = task.code_key in worker.codes
        if not known and (
            len(task.code) > FOLLOW_CODE_MAX
            or any(m[0] not in worker.modules for m in task.modules)
            or any(t.id in worker.with_code for t in worker.tasks if t is not worker.tasks[0])
        ):
            return False
        sent, known = self._take_on(worker, task)
        worker.follows.add(task.id)
        if not known:
            if len(worker.with_code) > QUEUE_DEPTH:
                worker.with_code &= {t.id for t in worker.tasks}
            worker.with_code.add(task.id)
        self._unadopted.add(task.id)
        spin = wire.SPIN_S if self._polling and self._core_free() else 0.0
        try:
            wire.write_all(
                worker.to_worker, wire.encode(wire.RunTask(sent, spin, 0.0, after, inputs), code=not known)
            )
        except OSError:
            # It is exiting (its step retired it): its last frames, then its end, are still to be read,
            # and this task is dropped with it (`_requeue`): the scheduler sends it anew.
            pass
        return True

    def adopt(self, task: Task) -> bool:
        """The scheduler takes chained task `task` (the same id, with every argument now filled in) as
        its step's: True if it still runs, or ran, where it was sent; False if it was dropped unstarted
        (its worker died or retired first). Adopted, a chained task not started when its worker dies
        goes back to the queue as `task`, as any queued task does."""
        if task.id in self._dropped:
            self._dropped.discard(task.id)
            return False
        self._unadopted.discard(task.id)
        worker = self._by_task.get(task.id)
        if worker is not None:
            worker.tasks = deque(task if t.id == task.id else t for t in worker.tasks)
        return True

    def cancel(self, task_id: str) -> None:
        self._dropped.discard(task_id)
        self._unadopted.discard(task_id)
        queued = next((t for t in self._queue if t.id == task_id), None)
        if queued is not None:
            self._queue.remove(queued)
            return
        worker = self._by_task.pop(task_id, None)
        if worker is None:
            return
        if task_id in worker.until or task_id in worker.follows:
            # Queued or chained, not claimed: it must not start. It does not, unless its claim is on
            # its way (then it is killed as it starts, `_on_message`).
            worker.until.pop(task_id, None)
            worker.follows.discard(task_id)
            worker.tasks = deque(t for t in worker.tasks if t.id != task_id)
            worker.revoked.add(task_id)
            try:
                wire.write_all(worker.to_worker, wire.encode(wire.Revoke(task_id)))
            except OSError:
                self._crashed(worker)
            return
        self._kill_running(worker, task_id)

    def _kill_running(self, worker: _Worker, task_id: str) -> None:
        """Kill the worker running `task_id` (and every process below it); the tasks queued behind it
        never started: they go back to the queue."""
        self._requeue(worker, [t for t in worker.tasks if t.id != task_id])
        worker.tasks.clear()
        self._kill(worker)
        self._dispatch()  # the spare, if the killed worker's slot was all that kept it out

    def _requeue(self, worker: _Worker, tasks: list[Task]) -> None:
        """Take `tasks` (queued on `worker`, never started) back: first in the queue, in their order.
        A chained one the scheduler has not adopted is dropped instead: it lacks its input (`follow`)."""
        ids = {task.id for task in tasks}
        for task_id in ids:
            self._by_task.pop(task_id, None)
            worker.until.pop(task_id, None)
            worker.follows.discard(task_id)
            if task_id in self._unadopted:
                self._unadopted.discard(task_id)
                self._dropped.add(task_id)
        worker.tasks = deque(t for t in worker.tasks if t.id not in ids)
        self._queue.extendleft(reversed([t for t in tasks if t.id not in self._dropped]))

    def _kill(self, worker: _Worker) -> None:
        kill_tree(worker.proc.pid)
        try:
            os.killpg(worker.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._forget(worker)
        worker.proc.wait()

    def _forget(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        for fd in (worker.from_worker, worker.proc.stdout, worker.proc.stderr):
            try:
                self._selector.unregister(fd)  # type: ignore[arg-type]  # a pipe, or None: both raise here
            except (KeyError, ValueError):
                pass
        for closable in (worker.proc.stdout, worker.proc.stderr):
            if closable is not None:
                closable.close()
        for fd in (worker.to_worker, worker.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass

    def work_while_polling(self, work: Callable[[], bool]) -> None:
        """Give the moments this executor polls (`poll`) something to do: `work()` does a small piece
        (the store's queued writes, `EngineStore.help_write`) and says whether there was one. Called
        while a worker runs, between looks at its pipe, a piece delays a result by at most its own time
        (a step's rows: ~35 µs). Not when it does not poll: a core is then needed elsewhere."""
        self._idle_work = work

    def wakeup(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def events(self, timeout: float | None) -> list[TaskEvent]:
        if self._pending:
            timeout = 0
        deadlines = [until for w in self._workers for until in w.until.values()]
        if deadlines:
            take_back = max(0.0, min(deadlines) + TAKE_BACK_S - time.monotonic())
            timeout = take_back if timeout is None else min(timeout, take_back)
        ready = self._selector.select(0)
        if not ready and timeout != 0:
            polled = 0.0
            if self._sent and self._polling and self._core_free():
                polled = wire.SPIN_S if timeout is None else min(wire.SPIN_S, timeout)
                ready = self._poll(polled)
            if not ready:
                ready = self._selector.select(None if timeout is None else max(0.0, timeout - polled))
        self._sent = False
        if len(ready) > 1:
            # Frames first: a worker may have gone on to its next task (queued or chained) since its
            # last result, so raw fd output read now belongs to the task current once the frames are
            # taken. A task's own output unread when it ended is read as its result is taken
            # (`Finished.raw_output_unread`), and the worker then starts no queued or chained task
            # before the runner has taken that result (`runner.executors.worker`).
            ready.sort(key=lambda item: not (item[0].data is not None and item[0].data[1] == "frames"))
        for key, _ in ready:
            if key.data is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            worker, tag = key.data
            if worker not in self._workers:
                continue
            if tag == "frames":
                self._read_frames(worker, drain=False)
                continue
            try:
                chunk = os.read(key.fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                self._on_raw(worker, tag, chunk)
        if deadlines:
            self._take_back()
        events, self._pending = self._pending, []
        return events

    def _take_back(self) -> None:
        """Take back the queued tasks whose deadline (and `TAKE_BACK_S`) has passed unclaimed, for
        another worker or this one's next turn: one started after a long step would have waited for
        it. Every frame the worker wrote is read first: a claim among them keeps its task there. One
        it claims later comes with its clock read later still, past the deadline: it does not run it."""
        now = time.monotonic()
        for worker in list(self._workers):
            if not any(now >= until + TAKE_BACK_S for until in worker.until.values()):
                continue
            self._read_frames(worker, drain=True)
            if worker not in self._workers:
                continue
            due = now - TAKE_BACK_S
            late = [t for t in worker.tasks if t.id in worker.until and worker.until[t.id] <= due]
            if late:
                self._requeue(worker, late)
                for task in late:
                    worker.stale[task.id] = worker.stale.get(task.id, 0) + 1
                self._dispatch()

    def _read_frames(self, worker: _Worker, *, drain: bool) -> None:
        """Read the worker's frames: what one read returns, or (`drain`) all that wait in its pipe. End of
        file: it died."""
        while worker in self._workers:
            try:
                chunk = os.read(worker.from_worker, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._crashed(worker)
                return
            for message in worker.reader.feed(chunk):
                self._on_message(worker, message)
            if not drain:
                return

    def _poll(self, seconds: float) -> list[tuple[selectors.SelectorKey, int]]:
        """Poll the pipes for up to `seconds`, doing the idle work (`work_while_polling`) first."""
        deadline = time.perf_counter() + seconds
        while self._idle_work is not None and self._idle_work():
            ready = self._selector.select(0)
            if ready:
                return ready
            if time.perf_counter() >= deadline:
                return []
        return wire.poll_for(lambda: self._selector.select(0), deadline - time.perf_counter())

    def _core_free(self) -> bool:
        """Whether a core is left for a poller: the runner, each busy worker and each one starting
        want one of their own, and the machine is not busy with more threads than that (other
        programs, other runs: a poller would take their time). Beside the runner and a worker, the
        runner's store writer may be runnable too: one more than the cores is not yet busy."""
        now = time.monotonic()
        starting = sum(1 for w in self._workers if not w.ready)
        # A worker counts while it has tasks and for `SPIN_S` after its last one ended: it may be
        # polling for its next frame then. In a fan-out that outran the runner, each worker was told
        # to poll while the other was idle, and both then polled on a 2-core machine's cores while
        # the runner, which was to send them their next tasks, waited for one.
        busy = sum(1 for w in self._workers if w.tasks or now - w.since < wire.SPIN_S)
        if 1 + busy + starting > self._cores:
            return False
        if now - self._load_checked >= LOAD_CHECK_S:
            self._load_checked = now
            runnable = _runnable()
            self._machine_busy = runnable is not None and runnable > self._cores + 1
        return not self._machine_busy

    def _on_message(self, worker: _Worker, message: wire.FromWorker) -> None:
        if isinstance(message, wire.Preloaded):
            worker.ready = True
            self._dispatch()
            return
        if isinstance(message, TaskStarted | wire.Finished) and self._queued_task_frame(worker, message):
            return
        task = worker.task
        if task is None:
            return
        if isinstance(message, wire.Finished):
            done = message.done
            if done.task_id != task.id:
                return
            # What the step wrote to fds 1/2 before returning is in the pipes now. The worker says
            # whether any of it was still unread when it sent the result.
            self._drain_raw(worker, read=message.raw_output_unread)
            worker.tasks.popleft()
            self._by_task.pop(task.id, None)
            now = time.monotonic()
            self._took(now - worker.since)
            worker.since = now
            worker.last_ok = done.task_id if done.result.ok else ""
            object.__setattr__(done.result, "where", worker.where)  # unpickled just now: ours to fill in
            self._pending.append(done)
            if message.retiring:
                self._requeue(worker, list(worker.tasks))  # queued there, never to run there
                self._kill(worker)  # it exits by itself; this reaps it (and anything left)
                # Steps that leave state behind (a library's thread) retire every worker they run in,
                # and each next step would wait for a new worker's start and imports (seconds for an
                # ML flow's libraries): from now on a spare starts while the next step runs.
                self._spare = True
            self._dispatch()
        elif message.task_id == task.id:
            self._pending.append(message)

    def _queued_task_frame(self, worker: _Worker, message: TaskStarted | wire.Finished) -> bool:
        """Handle a queued task's claim or expiry (`wire.RunTask.until`); False for any other frame.
        A worker reports on its tasks in the order they were sent, so the frames of a send taken back
        come before those of the same task sent again."""
        task_id = message.task_id if isinstance(message, TaskStarted) else message.done.task_id
        if isinstance(message, TaskStarted):
            if worker.stale.get(task_id):
                return True  # a send taken back: its expiry follows
            if task_id in worker.revoked:
                worker.revoked.discard(task_id)  # claimed before it read the revoke: kill it
                self._kill_running(worker, task_id)
                return True
            if task_id in worker.until:
                del worker.until[task_id]  # claimed: it runs there now
                return True
            if task_id in worker.follows:
                worker.follows.discard(task_id)  # claimed: it runs there now
                return True
            return False
        if not message.expired:
            return False
        if worker.stale.get(task_id):
            worker.stale[task_id] -= 1
            if not worker.stale[task_id]:
                del worker.stale[task_id]
            return True
        worker.revoked.discard(task_id)
        late = [t for t in worker.tasks if t.id == task_id]
        if late:
            self._requeue(worker, late)
            self._dispatch()
        return True

    def _on_raw(self, worker: _Worker, stream: str, chunk: bytes) -> None:
        """Output written straight to file descriptors 1 and 2 (C code, child processes)."""
        data = worker.raw.get(stream, b"") + chunk
        *lines, rest = data.split(b"\n")
        worker.raw[stream] = rest
        now = time.time()
        for raw_line in lines:
            line = raw_line.decode("utf-8", "replace").rstrip("\r")
            if stream == "stderr":
                worker.stderr_tail.append(line)
            if worker.task is not None:
                self._pending.append(TaskLog(worker.task.id, stream, line, now))

    def _drain_raw(self, worker: _Worker, *, read: bool = True) -> None:
        """Attribute the task's last fd output to it: read what is left in the pipes (unless the
        worker said nothing is), then end any partial last line."""
        for stream, pipe in (("stdout", worker.proc.stdout), ("stderr", worker.proc.stderr)):
            if pipe is None:
                continue
            while read:
                try:
                    chunk = os.read(pipe.fileno(), 1 << 16)
                except (BlockingIOError, OSError, ValueError):
                    break
                if not chunk:
                    break
                self._on_raw(worker, stream, chunk)
            if worker.raw.get(stream):
                self._on_raw(worker, stream, b"\n")

    def _crashed(self, worker: _Worker) -> None:
        """The worker's result pipe closed: it died. Fail its task with the reason.

        One that died starting up had no task. If it was importing a flow's libraries, the queued
        tasks wait for a worker started without them; otherwise (the interpreter cannot start) the
        oldest queued task fails with the reason, as it would have in that worker. No spare is kept
        any more after a worker dies with no task of its own (starting, or idle): a worker is started
        again only for the tasks left. Tasks queued behind its own never started there: they go back
        to the queue (so does its first, if not claimed yet).
        """
        self._requeue(worker, [t for t in worker.tasks if t.id in worker.until or t.id in worker.follows])
        task = worker.task
        try:
            code = worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            code = worker.proc.wait()
        self._drain_raw(worker)
        try:
            os.killpg(worker.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._forget(worker)
        if not worker.ready and worker.preloading is not None:
            self._preload_failed.add(worker.preloading)
            if self._flow_file == worker.preloading:
                self._flow_file = None
        elif task is None:
            self._spare = False  # workers die here by themselves: a spare would be started again and again
            if not worker.ready and self._queue:
                task = self._queue.popleft()
        if task is not None:
            self._by_task.pop(task.id, None)
            if code < 0:
                error = f"the worker process was killed by {_signal_name(-code)}"
            else:
                error = f"the worker process exited with code {code} (os._exit or a crash in native code)"
            tail = "\n".join(worker.stderr_tail) or None
            result = TaskResult(ok=False, error=error, traceback=tail, where=worker.where)
            self._pending.append(TaskDone(task.id, result))
        self._dispatch()

    def close(self) -> None:
        """Kill every worker: idle ones hold nothing worth a graceful exit, busy ones are being stopped."""
        for worker in list(self._workers):
            self._kill(worker)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
