"""Log lines from real worker processes: batched, complete, in order, timestamped, before the result.

A worker sends a step's lines in frames of many lines (`runner.executors.worker.LogSender`); these tests
drive a real `LocalExecutor` (worker processes, pipes, pickled frames) and a real engine and store, and check
that batching loses nothing: not the order between stdout and stderr, not the per-line timestamps,
not the last lines of a step that ends with `os._exit` or dies in native code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from runner.events import StepFinished, StepLog
from runner.executors.base import Task, TaskDone, TaskLog, TaskLogs
from runner.executors.local import LocalExecutor
from runner.store import Store
from runner.store.recorder import insert_logs
from tests.conftest import EngineHarness


def run_task(fn: Callable[[], Any], timeout: float = 60) -> tuple[list[object], TaskDone, float, float]:
    """Run `fn` in a real worker; return the log records, the result and the run's time bounds."""
    executor = LocalExecutor(1)
    task = Task(id="t1", step="s", code_key="k1", code=cloudpickle.dumps(fn), kwargs={})
    records: list[object] = []
    try:
        started = time.time()
        executor.submit(task)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in executor.events(1.0):
                records.append(event)
                if isinstance(event, TaskDone):
                    logs = [r for r in records if isinstance(r, TaskLog | TaskLogs)]
                    assert records[-1] is event, "a log record arrived after the task's result"
                    return logs, event, started, time.time()
        raise AssertionError(f"no result within {timeout}s")
    finally:
        executor.close()


def lines_of(records: list[object]) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    for record in records:
        if isinstance(record, TaskLogs):
            out.extend(record.lines)
        elif isinstance(record, TaskLog):
            out.append((record.stream, record.line, record.ts))
    return out


def test_a_flood_of_lines_arrives_batched_complete_in_order_and_timestamped() -> None:
    def spew() -> str:
        import sys

        for i in range(5000):
            print(f"line {i}")
            if i % 1000 == 999:
                print(f"err {i}", file=sys.stderr)
        return "done"

    records, done, started, finished = run_task(spew)
    assert done.result.ok, done.result.error
    lines = lines_of(records)
    expected: list[tuple[str, str]] = []
    for i in range(5000):
        expected.append(("stdout", f"line {i}"))
        if i % 1000 == 999:
            expected.append(("stderr", f"err {i}"))
    assert [(stream, line) for stream, line, _ in lines] == expected
    stamps = [ts for _, _, ts in lines]
    assert stamps == sorted(stamps) and started <= stamps[0] and stamps[-1] <= finished
    # Batched: far fewer records (frames) than lines.
    assert len(records) < len(lines) / 10, len(records)


def test_lines_printed_right_before_os_exit_all_arrive_before_the_failure() -> None:
    def exits() -> None:
        import os

        for i in range(3000):
            print(f"line {i}")
        os._exit(3)

    records, done, _, _ = run_task(exits)
    assert not done.result.ok and "exited with code 3" in (done.result.error or "")
    assert [line for _, line, _ in lines_of(records)] == [f"line {i}" for i in range(3000)]


def test_the_last_words_of_a_step_that_segfaults_arrive() -> None:
    def segfaults() -> None:
        import ctypes
        import time

        print("working")
        time.sleep(0.05)
        print("about to call native code")
        ctypes.string_at(0)

    records, done, _, _ = run_task(segfaults)
    assert not done.result.ok and "SIGSEGV" in (done.result.error or "")
    # (The interpreter's crash report comes through the stderr pipe, in no fixed order with these.)
    printed = [line for stream, line, _ in lines_of(records) if stream == "stdout"]
    assert printed == ["working", "about to call native code"]


def test_a_line_after_a_quiet_moment_is_sent_at_once() -> None:
    """The batching window never delays a lone line: it leaves the worker when it is printed."""

    def slow() -> float:
        import time

        print("tick")
        printed = time.time()
        time.sleep(1.0)
        return printed

    executor = LocalExecutor(1)
    task = Task(id="t1", step="s", code_key="k1", code=cloudpickle.dumps(slow), kwargs={})
    try:
        executor.submit(task)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = executor.events(1.0)
            logs = [e for e in events if isinstance(e, TaskLog | TaskLogs)]
            if logs:
                received = time.time()
                assert not any(isinstance(e, TaskDone) for e in events), "the line waited for the result"
                assert [line for _, line, _ in lines_of(logs)] == ["tick"]
                assert received - lines_of(logs)[0][2] < 0.5
                return
        raise AssertionError("the line never arrived")
    finally:
        executor.close()


@pytest.mark.workers(1)
def test_the_engine_still_emits_one_step_log_per_line_before_the_step_finishes(
    harness: EngineHarness, write_flow: Callable[..., Path], store_dir: Path
) -> None:
    path = write_flow(
        """
        import logging
        import sys

        from dsl import step

        @step
        def chatty():
            for i in range(2000):
                print(f"out {i}")
            print("to stderr", file=sys.stderr)
            logging.getLogger("mine").warning("a warning")
            return 1
        """
    )
    run = harness.run(path)
    assert run.status == "succeeded"
    events = [e for e in harness.events if getattr(e, "step", None) == "chatty"]
    logs = [e for e in events if isinstance(e, StepLog)]
    finished = next(i for i, e in enumerate(events) if isinstance(e, StepFinished))
    assert all(events.index(e) < finished for e in logs)
    expected = [("stdout", f"out {i}") for i in range(2000)]
    expected += [("stderr", "to stderr"), ("log", "WARNING mine: a warning")]
    assert [(e.stream, e.line) for e in logs] == expected
    assert [e.as_dict() for e in logs[:1]] == [
        {
            "run_id": run.id,
            "step": "chatty",
            "stream": "stdout",
            "line": "out 0",
            "ts": logs[0].ts,
            "event": "step_log",
        }
    ]
    harness.store.flush()
    stored = Store(store_dir).get_logs(run.id, "chatty")
    assert [(line.stream, line.line, line.ts) for line in stored] == [(e.stream, e.line, e.ts) for e in logs]


@pytest.mark.parametrize("count", [0, 1, 63, 128, 129, 1000, 4097])
def test_log_rows_are_stored_in_order_whatever_their_number(store_dir: Path, count: int) -> None:
    store = Store(store_dir)
    try:
        rows = [
            (7, f"step{i % 3}", 1_700_000_000.123456 + i / 7, ("stdout", "stderr")[i % 2], f"line {i} ✓")
            for i in range(count)
        ]
        store._write(lambda conn: insert_logs(conn, rows))  # the statement itself, without a recorder
        store.flush()
        stored = store.get_logs(7)
        assert [(line.step, line.ts, line.stream, line.line) for line in stored] == [row[1:] for row in rows]
    finally:
        store.close()
