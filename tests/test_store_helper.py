"""A thread that would otherwise spin (`flow run`'s scheduler, polling for a worker's result) writes
the store's queued writes itself (`runner.store.writer.Writer.help`), into a transaction the writer
thread commits at its window's end, on a real store.

The writer thread's window is made long here, so it commits only when a flush asks it to: what each
test sees is decided by the order of its calls, not by timing.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsl import load_flow
from dsl.errors import FlowError
from runner.engine import Engine, RunRequest
from runner.executors.local import LocalExecutor
from runner.store import Store
from runner.store.writer import Writer
from tests.test_faults import REPO


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(Writer, "BATCH_WINDOW", 30.0)
    store = Store(tmp_path / "store")
    store._write(lambda conn: None)
    store.flush()  # the writer thread runs, its connection open
    try:
        yield store
    finally:
        store.close()


def _meta(store: Store, key: str) -> list[tuple[str]]:
    """What another connection sees of `key` in the store's `meta` table (committed rows only)."""
    conn = sqlite3.connect(store.db_path)
    try:
        return conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchall()
    finally:
        conn.close()


def _insert(key: str, threads: list[str]) -> object:
    def op(conn: sqlite3.Connection) -> None:
        threads.append(threading.current_thread().name)
        conn.execute("INSERT INTO meta(key, value) VALUES (?, 'x')", (key,))

    return op


def test_a_helper_writes_the_oldest_write_on_its_thread_and_the_writer_commits_it(store: Store) -> None:
    threads: list[str] = []
    store._write(_insert("first", threads))
    store._write(_insert("second", threads))
    assert store.help_write()
    assert threads == [threading.current_thread().name]  # the oldest, here
    assert _meta(store, "first") == []  # in the open transaction: not committed yet
    store.flush()
    assert threads[1] == "flow-store-writer"
    assert _meta(store, "first") == [("x",)] and _meta(store, "second") == [("x",)]


def test_a_flush_waits_for_the_commit_of_what_a_helper_wrote(store: Store) -> None:
    threads: list[str] = []
    store._write(_insert("helped", threads))
    assert store.help_write()
    store.flush()  # every queued write is applied: it still waits for the commit
    assert _meta(store, "helped") == [("x",)]


def test_what_a_helper_wrote_commits_within_the_writers_window_without_a_flush(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Writer, "BATCH_WINDOW", 0.005)
    threads: list[str] = []
    store._write(_insert("helped", threads))
    assert store.help_write()
    deadline = time.monotonic() + 10
    while not _meta(store, "helped") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _meta(store, "helped") == [("x",)]


def test_a_helper_never_waits_for_another_processs_write_lock(store: Store) -> None:
    threads: list[str] = []
    store._write(_insert("waited", threads))
    blocker = sqlite3.connect(store.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert not store.help_write()
        assert time.monotonic() - started < 5  # not the 30 s a connection waits for the lock
        assert threads == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.flush()
    assert threads == ["flow-store-writer"] and _meta(store, "waited") == [("x",)]


def test_a_write_failing_in_a_helper_fails_the_store_as_in_the_writer(store: Store) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    threads: list[str] = []
    store._write(_insert("before", threads))
    store._write(broken)
    store._write(_insert("after", threads))
    assert store.help_write()
    assert not store.help_write()  # the broken write: the open transaction is rolled back
    assert not store.help_write()  # and nothing is written after it
    with pytest.raises(FlowError, match="cannot write to the store"):
        store.flush()
    assert _meta(store, "before") == [] and _meta(store, "after") == []


CHAIN = "from dsl import step\n\n\n@step\ndef s0():\n    return 0\n" + "".join(
    f"\n\n@step\ndef s{i}(s{i - 1}):\n    return s{i - 1} + 1\n" for i in range(1, 12)
)


def _run_chain(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, poll: bool) -> list[str]:
    """Run a 12-step chain on `store` with a `LocalExecutor(1, poll=poll)` on a quiet machine; return
    the threads that wrote a queued write as helpers (`help_write`)."""
    helped: list[str] = []
    help_write = store.help_write

    def spy() -> bool:
        wrote = help_write()
        if wrote:
            helped.append(threading.current_thread().name)
        return wrote

    monkeypatch.setattr(store, "help_write", spy)
    (tmp_path / "chain.py").write_text(CHAIN)
    executor = LocalExecutor(1, poll=poll)
    executor._cores = 2  # a core for the runner, one for the worker: both poll
    engine = Engine(store, executor)
    try:
        handle = engine.run(RunRequest(load_flow(tmp_path / "chain.py"), {}))
    finally:
        engine.close()
    assert handle.status == "succeeded"
    record = store.get_run(handle.id)
    assert record is not None and record.status == "succeeded"
    assert [s.status for s in record.steps] == ["succeeded"] * 12
    return helped


@pytest.mark.usefixtures("quiet_machine")
@pytest.mark.parametrize("poll", [True, False])
def test_flow_runs_scheduler_writes_the_store_while_it_polls(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poll: bool
) -> None:
    helped = _run_chain(store, tmp_path, monkeypatch, poll=poll)
    if poll:
        assert helped and set(helped) == {"flow-scheduler"}
    else:
        assert helped == []  # the TUI's executor: the writer thread writes, as before


@pytest.mark.usefixtures("quiet_machine")
def test_the_scheduler_leaves_the_writes_to_the_writer_while_another_process_uses_the_store(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from runner.store import Store
        store = Store({str(store.root)!r})
        assert store.acquire_lease({"b" * 64!r}) is None
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        # Its leases would wait for a helper's open transaction, as this run's would for its.
        assert _run_chain(store, tmp_path, monkeypatch, poll=True) == []
    finally:
        proc.kill()
        proc.wait()


GATED_PAIR = """
import os
import time

from dsl import step


@step
def a():
    return 1


@step
def b(a):
    return a + 1


@step
def gate():
    while not os.path.exists({gate!r}):
        time.sleep(0.01)
    return 0
"""


def test_a_result_reused_before_its_rows_commit_is_handed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started while the last one is in flight (a save's, under `--watch`) reuses a step that
    has just finished there, whose artifact row may still wait in the writer's batch: the step that
    reads it gets it, not "an input could not be read: artifact ... is not in the store" (seen in CI).
    The writer here commits only when asked, so the row waits for as long as the test needs."""
    monkeypatch.setattr(Writer, "BATCH_WINDOW", 30.0)
    gate = tmp_path / "gate"
    path = tmp_path / "pair.py"
    path.write_text(GATED_PAIR.format(gate=str(gate)), encoding="utf-8")
    store = Store(tmp_path / "store")
    events: list[object] = []
    engine = Engine(store, LocalExecutor(2), [events.append])
    first = None
    try:
        loaded = load_flow(path)
        first = engine.start(RunRequest(loaded, {}, only=("a", "gate")))
        deadline = time.monotonic() + 60
        while not any(getattr(e, "step", None) == "a" and hasattr(e, "output_hash") for e in events):
            assert time.monotonic() < deadline, events
            time.sleep(0.01)
        second = engine.start(RunRequest(loaded, {}, to_steps=("b",)))
        status = second.wait(60)
        finished = {
            (e.step, e.status, e.error)
            for e in events
            if getattr(e, "run_id", None) == second.id and hasattr(e, "error")
        }
        assert status == "succeeded", finished
        assert ("a", "cached", None) in finished
    finally:
        gate.write_text("open", encoding="utf-8")
        if first is not None:
            first.wait(60)
        engine.close()
        store.close()


def test_the_writer_thread_never_preempts_the_scheduler(tmp_path: Path) -> None:
    """`SCHED_BATCH`: woken by a write, the writer thread waits for its turn instead of taking the core
    the scheduler (or a chain's worker) runs on (`runner.store.writer`)."""
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no scheduling policies on this system")
    store = Store(tmp_path / "store")
    try:
        store._enqueue(lambda conn: None)  # the writer thread starts with the first queued write
        store.flush()
        writer = store._writer
        assert writer is not None
        assert os.sched_getscheduler(writer._thread.native_id) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) != os.SCHED_BATCH, "only the writer's own thread"
    finally:
        store.close()
