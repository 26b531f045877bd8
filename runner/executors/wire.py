"""Provides the protocol between the runner and its worker processes: typed frames, length-prefixed pickles.

Runner to worker: `RunTask` (several may wait in the pipe: `RunTask.until`), `Revoke`, then `Exit` (or
end of file). Worker to runner: `TaskStarted` (a slow start is over: the step's timeout counts from here;
for a queued task, its claim), `TaskLogs` (a batch of lines) or `TaskLog` (one line, from a process the
step forked or after the task ended), and last for each task `Finished`.

A frame's body is a pickled tuple of plain values, not the pickled dataclasses: pickle spends most
of a small frame on reducing and rebuilding dataclass instances (a `Finished` took 5 µs to encode and
5 µs to decode, a `RunTask` 8 µs and 6 µs; as tuples ~1, 2.5, 3 and 4), and a chain pays all four on
every step, while the worker waits. Both ends run the same code, so the tuples' layout is private.
Instances are rebuilt as unpickling rebuilds them: `__dict__` filled in, `__init__` not called.

Waking a process blocked on a pipe costs ~30 µs on a virtual machine (the waker pays for the other CPU's
interrupt, the sleeper for its return); a chain step pays it twice, in both directions, while the other
side's answer is often a fraction of that away. So each side may poll for a moment before it blocks
(`await_frame`, `SPIN_S`): the worker after a task the runner flagged (`RunTask.spin`), the runner after
sending a task (`runner.executors.local`). Each does so only while a core is free for it: polling
processes that outnumber the cores take the CPU the others are waiting for.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import pickle
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from runner.executors.base import InputRef, Task, TaskDone, TaskLog, TaskLogs, TaskResult, TaskStarted
from runner.filled_init import filled_init

_HEADER = struct.Struct("!I")

SPIN_S = 0.0005
"""How long a side polls for the other's next frame before it blocks: a trivial step's round of the
runner (~0.15 ms) or of the worker (~0.07 ms), with room for a slower machine. Spent at most once per
task on each side; a step that runs longer is waited for asleep."""


@filled_init
@dataclass(frozen=True)
class RunTask:
    """Runner to worker: run this task (its code travels only the first time the worker needs it).

    `spin`: once the task is done, poll for the next frame for up to this many seconds before blocking
    (0: block at once). The runner sets it while a core is free for the worker to poll on.

    `until`: set for a task queued behind the worker's current one (`runner.executors.local`): the
    worker claims it (`TaskStarted`) before it starts it, then starts it only if `time.monotonic()` is
    still before `until`; else it reports it expired, and the runner, which may have taken it back
    (only if no claim came by then), runs it elsewhere. Claim first, clock second: a task is never
    run twice.

    `after`: set for a task chained to the worker's current one (`runner.executors.local`'s `follow`),
    the next step of a chain: the worker runs it right after `after` if that task succeeded there,
    passing `after`'s output as each argument named in `inputs`, and the runner takes the result as
    its own step's. Otherwise it reports it expired and the runner decides the step as usual."""

    task: Task
    spin: float = 0.0
    until: float = 0.0
    after: str = ""
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Revoke:
    """Runner to worker: do not start this queued task (a cancel): a worker skips it, unless it has
    claimed it already (then the runner kills it, as it kills any running task it cancels)."""

    task_id: str


@dataclass(frozen=True)
class Exit:
    """Runner to worker: finish now (an idle worker holds nothing worth more)."""


@filled_init
@dataclass(frozen=True)
class Finished:
    """Worker to runner, last for each task: its result.

    Attributes:
        done: the task's result.
        raw_output_unread: bytes the step wrote to fds 1/2 may wait unread in the runner's pipes (the
            runner reads them before taking the result only then).
        retiring: the worker takes no further task (the step left state that cannot be undone) and is
            exiting: the runner reaps it and starts a fresh worker on demand.
    """

    done: TaskDone
    raw_output_unread: bool = True
    retiring: bool = False
    expired: bool = False
    """A queued task not started: its deadline had passed, or it was revoked (`done` says nothing)."""


@dataclass(frozen=True)
class Preloaded:
    """Worker to runner, first: the worker is ready for tasks. One started for a flow file imported the
    file's libraries first (`runner.executors.preload`), which changed these variables of its
    environment (None: removed), for `runner.executors.spawn.adopt`."""

    changed: dict[str, str | None]


ToWorker = RunTask | Revoke | Exit
FromWorker = TaskStarted | TaskLogs | TaskLog | Finished | Preloaded


_T = TypeVar("_T")
_new = object.__new__


def _fields(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    names = tuple(f.name for f in dataclasses.fields(cls))
    return names, operator.attrgetter(*names)


_TASK, _task_values = _fields(Task)
_RESULT, _result_values = _fields(TaskResult)
_REF, _ref_values = _fields(InputRef)
_KWARGS = _TASK.index("kwargs")
_CODE = _TASK.index("code")
_MODULES = _TASK.index("modules")
_PARTS = _REF.index("parts")
_RUN, _EXIT, _FINISHED, _STARTED, _LOGS, _LOG, _PRELOADED, _REVOKE = range(8)


def _build(cls: type[_T], names: tuple[str, ...], values: tuple[Any, ...]) -> _T:
    instance: _T = _new(cls)
    instance.__dict__.update(zip(names, values, strict=True))
    return instance


def _ref_out(ref: InputRef) -> tuple[Any, ...]:
    values = _ref_values(ref)
    if ref.parts is None:
        return values
    return (*values[:_PARTS], tuple(map(_ref_out, ref.parts)), *values[_PARTS + 1 :])


def _ref_in(values: tuple[Any, ...]) -> InputRef:
    parts = values[_PARTS]
    if parts is not None:
        values = (*values[:_PARTS], tuple(map(_ref_in, parts)), *values[_PARTS + 1 :])
    return _build(InputRef, _REF, values)


def _body(message: ToWorker | FromWorker, *, code: bool) -> tuple[Any, ...]:
    if isinstance(message, RunTask):
        values = list(_task_values(message.task))
        values[_KWARGS] = {name: _ref_out(ref) for name, ref in values[_KWARGS].items()}
        if not code:
            values[_CODE] = b""
            values[_MODULES] = ()
        return (_RUN, tuple(values), message.spin, message.until, message.after, message.inputs)
    if isinstance(message, Finished):
        done = message.done
        result = _result_values(done.result)
        return (_FINISHED, done.task_id, result, message.raw_output_unread, message.retiring, message.expired)
    if isinstance(message, TaskLogs):
        return (_LOGS, message.task_id, message.lines)
    if isinstance(message, TaskLog):
        return (_LOG, message.task_id, message.stream, message.line, message.ts)
    if isinstance(message, TaskStarted):
        return (_STARTED, message.task_id, message.ts)
    if isinstance(message, Exit):
        return (_EXIT,)
    if isinstance(message, Revoke):
        return (_REVOKE, message.task_id)
    if isinstance(message, Preloaded):
        return (_PRELOADED, message.changed)
    raise TypeError(f"not a wire message: {message!r}")


def encode(message: ToWorker | FromWorker, *, code: bool = True) -> bytes:
    """One frame: 4-byte big-endian length, then the message as a pickled tuple. `code=False` leaves
    a `RunTask`'s code and modules out (for a worker that has its `code_key` already)."""
    body = pickle.dumps(_body(message, code=code), protocol=5)
    return _HEADER.pack(len(body)) + body


def decode_to_worker(body: bytes) -> ToWorker:
    """The runner's message in one frame's body (as `encode` wrote it)."""
    values = pickle.loads(body)
    if values[0] == _RUN:
        fields = list(values[1])
        fields[_KWARGS] = {name: _ref_in(ref) for name, ref in fields[_KWARGS].items()}
        return RunTask(_build(Task, _TASK, tuple(fields)), values[2], values[3], values[4], values[5])
    if values[0] == _EXIT:
        return Exit()
    if values[0] == _REVOKE:
        return Revoke(values[1])
    raise ValueError(f"not a message to a worker: kind {values[0]!r}")


def decode_from_worker(body: bytes) -> FromWorker:
    """A worker's message in one frame's body (as `encode` wrote it)."""
    values = pickle.loads(body)
    kind = values[0]
    if kind == _FINISHED:
        _, task_id, result, unread, retiring, expired = values
        return Finished(TaskDone(task_id, _build(TaskResult, _RESULT, result)), unread, retiring, expired)
    if kind == _LOGS:
        return TaskLogs(values[1], values[2])
    if kind == _LOG:
        return TaskLog(*values[1:])
    if kind == _STARTED:
        return TaskStarted(values[1], values[2])
    if kind == _PRELOADED:
        return Preloaded(values[1])
    raise ValueError(f"not a message from a worker: kind {kind!r}")


def read_preloaded(fd: int) -> Preloaded | None:
    """Block until a worker's `Preloaded` frame arrives on `fd`; None at end of file or for another
    message."""
    body = _read_body(fd)
    if body is None:
        return None
    message = decode_from_worker(body)
    return message if isinstance(message, Preloaded) else None


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to a blocking file descriptor."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameReader:
    """Reassembles frames from the chunks a non-blocking read returns."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[FromWorker]:
        """Add bytes; return every message completed by them."""
        self._buffer += chunk
        messages: list[FromWorker] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            messages.append(decode_from_worker(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages


def poll_for(check: Callable[[], _T], seconds: float) -> _T:
    """Ask `check()` again and again, without sleeping, until it answers something true or `seconds`
    have passed; return its last answer. See the module's docstring for why."""
    deadline = time.perf_counter() + seconds
    while True:
        answer = check()
        if answer or time.perf_counter() >= deadline:
            return answer


def await_frame(fd: int, seconds: float) -> None:
    """Poll `fd` for up to `seconds` without sleeping; return once it is readable or the time is up
    (the caller's read then blocks as usual)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poll_for(lambda: poller.poll(0), seconds)


def readable(fd: int) -> bool:
    """Whether a frame (or end of file) waits on `fd` now."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def read_frame(fd: int) -> ToWorker | None:
    """Block until one whole frame arrives on `fd`; None at end of file."""
    body = _read_body(fd)
    return None if body is None else decode_to_worker(body)


def _read_body(fd: int) -> bytes | None:
    """One whole frame's body from a blocking `fd`; None at end of file."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    return _read_exactly(fd, length)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
