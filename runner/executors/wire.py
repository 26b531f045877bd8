"""Provides the protocol between the runner and its worker processes: typed frames, length-prefixed pickles.

Runner to worker: `RunTask`, then `Exit` (or end of file). Worker to runner: `TaskStarted` (a slow start
is over: the step's timeout counts from here), `TaskLogs` (a batch of lines) or `TaskLog` (one line, from
a process the step forked or after the task ended), and last for each task `Finished`.
"""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass

from runner.executors.base import Task, TaskDone, TaskLog, TaskLogs, TaskStarted

_HEADER = struct.Struct("!I")


@dataclass(frozen=True)
class RunTask:
    """Runner to worker: run this task (its code travels only the first time the worker needs it)."""

    task: Task


@dataclass(frozen=True)
class Exit:
    """Runner to worker: finish now (an idle worker holds nothing worth more)."""


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


ToWorker = RunTask | Exit
FromWorker = TaskStarted | TaskLogs | TaskLog | Finished


def encode(message: ToWorker | FromWorker) -> bytes:
    """One frame: 4-byte big-endian length, then the pickled message."""
    body = pickle.dumps(message, protocol=5)
    return _HEADER.pack(len(body)) + body


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
            messages.append(pickle.loads(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages


def read_frame(fd: int) -> ToWorker | None:
    """Block until one whole frame arrives on `fd`; None at end of file."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    body = _read_exactly(fd, length)
    if body is None:
        return None
    message: ToWorker = pickle.loads(body)
    return message


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
