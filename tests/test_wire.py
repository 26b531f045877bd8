"""The runner <-> worker frames (`runner.executors.wire`): every message and every field comes back
equal, through a real pipe and through the runner's chunked reader."""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any

import pytest

from runner.executors import wire
from runner.executors.base import InputRef, Task, TaskDone, TaskLog, TaskLogs, TaskResult, TaskStarted


def _not_default(instance: Any) -> None:
    """Every field of `instance` is set to something other than its default, so a field the codec
    dropped or swapped cannot come back equal by luck (a field added later must be set here too)."""
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if field.default is not dataclasses.MISSING:
            assert value != field.default, field.name
        if field.default_factory is not dataclasses.MISSING:
            assert value != field.default_factory(), field.name


def _task() -> Task:
    gathered = InputRef(
        hash="h-parts",
        parts=(InputRef(hash="h-a", data=b"a"), InputRef(hash="h-b", path="/store/artifacts/b")),
    )
    task = Task(
        id="t7",
        step="train[3]",
        code_key="load:0+4",
        code=b"\x80\x05code",
        kwargs={
            "data": InputRef(hash="h-data", data=pickle.dumps([1, 2])),
            "model": InputRef(
                hash="h-model", path="/store/artifacts/m", stamp=(2049, 77, 5, 10**18, 10**18 + 1)
            ),
            "parts": gathered,
            "empty": InputRef(hash="none", none=True),
        },
        run_id=12,
        attempt=2,
        timeout=3.5,
        artifact_dir="/store/artifacts",
        sys_path=("/project", "/project/src"),
        resources={"GPU": 1, "memory": "2G"},
        entry="train",
        expect={"/project/helpers.py": "sha-helpers"},
        modules=(("load:module:helpers:1", "helpers", b"\x80\x05namespace"),),
    )
    _not_default(task)
    for ref in (task.kwargs["data"], task.kwargs["model"], gathered):
        assert ref.data is not None or ref.path is not None or ref.parts is not None
    return task


def _result() -> TaskResult:
    result = TaskResult(
        ok=True,
        hash="h-out",
        data=b"out",
        path="/store/artifacts/out",
        size=3,
        preview="'out'",
        error="none really",
        traceback="Traceback ...",
        metrics={"loss": 0.25},
        duration_s=1.5,
        where="pid 42",
        stale_code=("/project/helpers.py",),
        stamp=(2049, 78, 3, 10**18, 10**18 + 2),
    )
    _not_default(result)
    return result


FROM_WORKER: list[wire.FromWorker] = [
    TaskStarted("t7", 1.25),
    TaskLogs("t7", [("stdout", "first", 1.0), ("stderr", "second ✓", 2.0)]),
    TaskLog("t7", "stderr", "\x1b[31mnot markup [b]\x1b[0m", 3.0),
    wire.Finished(TaskDone("t7", _result()), raw_output_unread=False, retiring=True),
    wire.Finished(TaskDone("t8", TaskResult(ok=False, error="boom"))),
    wire.Preloaded({"KMP_INIT_AT_FORK": "FALSE", "GONE": None}),  # every worker's first frame
]


def test_a_task_crosses_a_pipe_whole() -> None:
    task = _task()
    read, write = os.pipe()
    try:
        wire.write_all(write, wire.encode(wire.RunTask(task)) + wire.encode(wire.Exit()))
        os.close(write)
        assert wire.read_frame(read) == wire.RunTask(task)
        assert wire.read_frame(read) == wire.Exit()
        assert wire.read_frame(read) is None  # end of file
    finally:
        os.close(read)


def test_a_task_without_its_code_is_the_same_task_without_it() -> None:
    task = _task()
    frame = wire.encode(wire.RunTask(task), code=False)
    assert wire.decode_to_worker(frame[4:]) == wire.RunTask(task.without_code())
    assert task.code not in frame and task.modules[0][2] not in frame
    assert task.code in wire.encode(wire.RunTask(task))


def test_every_worker_message_comes_back_from_chunked_reads() -> None:
    frames = b"".join(wire.encode(message) for message in FROM_WORKER)
    reader = wire.FrameReader()
    received = []
    for index in range(len(frames)):  # a byte at a time: every frame split everywhere
        received.extend(reader.feed(frames[index : index + 1]))
    assert received == FROM_WORKER
    assert [type(m) for m in received] == [type(m) for m in FROM_WORKER]


def test_a_rebuilt_result_behaves_like_one_made_here() -> None:
    (message,) = wire.FrameReader().feed(wire.encode(FROM_WORKER[3]))
    assert isinstance(message, wire.Finished)
    result = message.done.result
    object.__setattr__(result, "where", "pid 43")  # what the runner does to a fresh result
    assert dataclasses.replace(result, where="pid 42") == _result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]


def test_a_frame_of_the_wrong_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="not a message from a worker"):
        wire.FrameReader().feed(wire.encode(wire.RunTask(_task())))
    with pytest.raises(ValueError, match="not a message to a worker"):
        wire.decode_to_worker(wire.encode(TaskStarted("t1", 0.0))[4:])


def test_a_preloaded_report_crosses_a_pipe_and_nothing_else_passes_for_one() -> None:
    report = wire.Preloaded({"KMP_DUPLICATE_LIB_OK": "True", "GONE": None})
    read, write = os.pipe()
    try:
        wire.write_all(write, wire.encode(report) + wire.encode(FROM_WORKER[0]))
        os.close(write)
        assert wire.read_preloaded(read) == report
        assert wire.read_preloaded(read) is None  # another message
        assert wire.read_preloaded(read) is None  # end of file
    finally:
        os.close(read)
