"""Steps' rows and their outputs' rows share one queued write (`runner.store.rows`), on a real store.

The writer is held in `BEGIN IMMEDIATE` by a second connection, so what each queued write holds is
decided before any of it runs: no timing decides what these tests see.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runner.events import RunStarted, StepFinished, StepLog, StepStarted
from runner.status import StepStatus
from runner.store import Store
from runner.store.recorder import StoreRecorder


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "store")
    try:
        yield store
    finally:
        store.close()


@contextmanager
def writer_held(store: Store) -> Iterator[None]:
    """The writer takes the first write queued inside, then waits for the database until the end."""
    blocker = sqlite3.connect(store.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.flush()


def queued(store: Store) -> int:
    writer = store._writer
    return writer._submitted if writer is not None else 0


def begin_run(store: Store) -> tuple[int, StoreRecorder]:
    """A run's row, committed, and a recorder for its events."""
    run_id = store.create_run("f", "f.py", {}, "manual", "local")
    store.flush()
    return run_id, store.recorder()


def taken(store: Store) -> None:
    """Wait until the writer holds the first write (and waits for the database: `writer_held`)."""
    while store._writer is not None and store._writer._items:
        time.sleep(0.001)


def output(store: Store, run_id: int, name: str, index: int) -> None:
    store.record_output(digest(index), 1, b"1", cache_as=f"fp-{name}", step=name, run_id=run_id, preview="1")


def select(store: Store, sql: str) -> list[Any]:
    """What the store holds, read on a connection of its own."""
    conn = sqlite3.connect(store.db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def started(run_id: int, name: str) -> StepStarted:
    return StepStarted(run_id, name, 1, "no earlier result", f"fp-{name}", time.time())


def finished(run_id: int, name: str, digest: str) -> StepFinished:
    return StepFinished(
        run_id, name, StepStatus.SUCCEEDED, 1, 0.01, "no earlier result", None, None,
        f"fp-{name}", digest, "1", {"loss": 0.5}, time.time(),
    )  # fmt: skip


def digest(index: int) -> str:
    return f"{index:064x}"


def test_a_chain_of_steps_rows_and_outputs_share_one_write(store: Store) -> None:
    run_id, record = begin_run(store)
    before = queued(store)
    with writer_held(store):
        for index in range(50):
            name = f"s{index}"
            record(started(run_id, name))
            if index == 0:
                taken(store)
            output(store, run_id, name, index)
            record(finished(run_id, name, digest(index)))
        assert queued(store) - before == 1  # one write for 50 steps (was four writes a step)
    steps = select(store, "SELECT name, status, output_hash, started_at FROM steps")
    cache = dict(select(store, "SELECT fingerprint, output_hash FROM cache"))
    artifacts = {row[0] for row in select(store, "SELECT hash FROM artifacts")}
    ((metrics,),) = select(store, "SELECT count(*) FROM metrics WHERE key='loss'")
    assert sorted((n, s, h) for n, s, h, _ in steps) == sorted(
        (f"s{i}", "succeeded", digest(i)) for i in range(50)
    )
    assert all(at is not None for *_, at in steps)
    assert cache == {f"fp-s{i}": digest(i) for i in range(50)}
    assert artifacts == {digest(i) for i in range(50)}
    assert metrics == 50
    assert store.lookup("fp-s7") is not None


def test_a_write_queued_between_an_output_and_its_step_row_is_not_overtaken(store: Store) -> None:
    """Any other write closes the open batch: the finished row that comes after it goes to a batch
    after it, as if every row were a write of its own (a lease released, an artifact forgotten)."""
    run_id, record = begin_run(store)
    seen: list[tuple[object, ...]] = []

    def look(conn: sqlite3.Connection) -> None:
        step = conn.execute("SELECT status FROM steps WHERE name='a'").fetchone()
        artifact = conn.execute("SELECT count(*) FROM artifacts").fetchone()[0]
        seen.append((step[0] if step else None, artifact))

    with writer_held(store):
        record(started(run_id, "a"))
        taken(store)
        output(store, run_id, "a", 1)
        store._write(look)
        record(finished(run_id, "a", digest(1)))
    assert seen == [("running", 1)]
    assert store.lookup("fp-a") is not None


def test_log_lines_leave_the_batch_open(store: Store) -> None:
    """Nothing is ordered against log lines: a step that prints still shares its batch."""
    run_id, record = begin_run(store)
    before = queued(store)
    with writer_held(store):
        record(started(run_id, "a"))
        taken(store)
        record(StepLog(run_id, "a", "stdout", "hello", time.time()))
        output(store, run_id, "a", 1)
        record(finished(run_id, "a", digest(1)))
        record(started(run_id, "b"))
        assert queued(store) - before == 2  # the batch and the log lines
    rows = dict(select(store, "SELECT name, status FROM steps"))
    lines = [row[0] for row in select(store, "SELECT line FROM logs")]
    assert rows == {"a": "succeeded", "b": "running"}
    assert lines == ["hello"]


def test_a_steps_rows_in_one_write_become_its_last_row_in_the_order_the_run_listed_its_steps(
    store: Store,
) -> None:
    """A run's pending rows, then its steps' started and finished rows, all in one write: each step
    gets one row, its last state, in the run's order (`flow show` lists them so), and the started
    time its finished row gives. A fully cached run writes its finished rows alone this way."""
    run_id, record = begin_run(store)
    names = ("load", "left", "right", "join", "report")
    with writer_held(store):
        record(RunStarted(run_id, "f", "f.py", {}, names, "manual", time.time()))
        taken(store)
        for index, name in enumerate(names[:3]):
            if name != "left":  # a cached step finishes without starting
                record(started(run_id, name))
            output(store, run_id, name, index)
            record(finished(run_id, name, digest(index)))
        record(started(run_id, "join"))
    rows = select(
        store, f"SELECT name, status, started_at, finished_at FROM steps WHERE run_id={run_id} ORDER BY rowid"
    )
    assert [(name, status) for name, status, *_ in rows] == [
        ("load", "succeeded"),
        ("left", "succeeded"),
        ("right", "succeeded"),
        ("join", "running"),
        ("report", "pending"),
    ]
    for name, _, started_at, finished_at in rows[:3]:
        assert finished_at - started_at == pytest.approx(0.01), name  # the finished row's own times
    assert rows[3][2] is not None and rows[4][2] is None


def test_a_cached_steps_row_is_written_in_eight_values_and_reads_as_the_full_row(store: Store) -> None:
    """A step taken from the cache has a row whose other columns are constants: its statement binds
    8 values, not 16 (binding cost more than SQLite's work). The row is the one the full statement
    writes, over a pending row or none, a fan-out item's parent included, its metrics kept."""
    run_id, record = begin_run(store)
    statements: list[str] = []
    at = time.time()

    def cached(name: str, metrics: dict[str, float]) -> StepFinished:
        return StepFinished(
            run_id, name, StepStatus.CACHED, 0, 0.0, "cached: same fingerprint as run #1", None, None,
            f"fp-{name}", digest(7), "7", metrics, at,
        )  # fmt: skip

    record(RunStarted(run_id, "f", "f.py", {}, ("a", "b"), "manual", time.time()))
    store.flush()
    conn = store._writer._conn if store._writer is not None else None
    assert conn is not None
    conn.set_trace_callback(statements.append)
    try:
        for name in ("a", "b[0]", "c"):  # a over its pending row; b[0] and c new rows
            record(cached(name, {"acc": 0.9} if name == "a" else {}))
        record(finished(run_id, "d", digest(8)))  # an executed step: the full statement
        store.flush()
    finally:
        conn.set_trace_callback(None)
    rows = select(
        store,
        "SELECT name, parent, status, attempts, started_at, finished_at, duration_s, reason, error, "
        "traceback, fingerprint, output_hash, preview, detail, where_ran FROM steps "
        f"WHERE run_id={run_id} ORDER BY rowid",
    )
    expected = [
        (
            name,
            parent,
            "cached",
            0,
            at,
            at,
            0.0,
            "cached: same fingerprint as run #1",
            None,
            None,
            f"fp-{name}",
        )
        + (digest(7), "7", None, None)
        for name, parent in (("a", None), ("b[0]", "b"), ("c", None))
    ]
    assert [r for r in rows if r[2] == "cached"] == expected
    assert [(r[0], r[2]) for r in rows if r[2] != "cached"] == [("b", "pending"), ("d", "succeeded")]
    assert select(store, f"SELECT step, key, value FROM metrics WHERE run_id={run_id}") == [
        ("a", "acc", 0.9),
        ("d", "loss", 0.5),
    ]
    inserts = [s for s in statements if s.lstrip().startswith("INSERT INTO steps")]
    assert any("SELECT column1, column2, column3, 'cached'" in s for s in inserts), inserts


def test_a_steps_fingerprint_parts_are_stored_as_the_json_readers_parse(store: Store) -> None:
    """An executed step's parts (`combine`'s detail, written with one shared encoder) are the text
    `dumps_json` makes of them, with its `repr` fallback, and read back as the parts."""
    from runner.fingerprint import StaticPrint, combine
    from runner.records import dumps_json

    run_id, record = begin_run(store)
    static = StaticPrint(code="c" * 64, helpers={"flow.helper": "h" * 64, "import mod": "m" * 64})
    _, detail = combine(
        static, {"n": "p" * 64}, {"a": "1" * 64, "b": "2" * 64}, item="i" * 64, declared={"env:É": "e"}
    )
    detail["extra"] = {"when": Path("/tmp/x"), "quote": 'say "hi"\n'}
    record(started(run_id, "s"))
    record.record_detail(run_id, "s", detail, "local")
    record(finished(run_id, "s", digest(1)))
    store.flush()
    ((text,),) = select(store, f"SELECT detail FROM steps WHERE run_id={run_id} AND name='s'")
    assert text == dumps_json(detail)
    parts = json.loads(text)
    assert parts["inputs"] == {"a": "1" * 64, "b": "2" * 64} and parts["declared"] == {"env:É": "e"}
    assert parts["extra"] == {"when": repr(Path("/tmp/x")), "quote": 'say "hi"\n'}


def test_a_starting_runs_rows_wait_for_the_scheduler_and_steps_decided_meanwhile_never_get_a_pending_row(
    store: Store,
) -> None:
    """The batch a run's start opens is held until the scheduler is about to wait (`write_held`), so
    the steps it decided meanwhile have one row each, their own, in the run's order: a fully cached
    run of 10,000 steps wrote 10,000 pending rows while it decided them, then overwrote each. Another
    write queued meanwhile, or a flush, queues the held batch first: nothing is written out of order,
    nothing is lost."""
    conn = sqlite3.connect(store.db_path)
    conn.executescript(
        "CREATE TABLE pending_ever(run_id, name);"
        "CREATE TRIGGER pending_rows AFTER INSERT ON steps WHEN NEW.status = 'pending' "
        "BEGIN INSERT INTO pending_ever VALUES (NEW.run_id, NEW.name); END;"
    )
    conn.close()
    run_id, record = begin_run(store)
    names = ("a", "b", "c")
    before = queued(store)
    record(RunStarted(run_id, "f", "f.py", {}, names, "manual", time.time()))
    for name in ("b", "a"):  # decided in another order than the run lists its steps
        record(
            StepFinished(
                run_id,
                name,
                StepStatus.CACHED,
                0,
                0.0,
                "cached",
                None,
                None,
                f"fp-{name}",
                digest(1),
                "1",
                {},
                time.time(),
            )  # fmt: skip
        )
    assert queued(store) == before  # held
    record.write_held()
    assert queued(store) - before == 1
    store.flush()
    steps = f"SELECT name, status FROM steps WHERE run_id={run_id} ORDER BY rowid"
    assert select(store, steps) == [("a", "cached"), ("b", "cached"), ("c", "pending")]
    assert select(store, f"SELECT name FROM pending_ever WHERE run_id={run_id}") == [("c",)]

    second, _ = begin_run(store)
    seen: list[int] = []
    record(RunStarted(second, "f", "f.py", {}, names, "manual", time.time()))
    store._write(
        lambda c: seen.append(c.execute(f"SELECT count(*) FROM steps WHERE run_id={second}").fetchone()[0])
    )
    store.flush()
    assert seen == [3]  # the held batch went first

    third, _ = begin_run(store)
    record(RunStarted(third, "f", "f.py", {}, names, "manual", time.time()))
    store.flush()
    assert select(store, f"SELECT count(*) FROM steps WHERE run_id={third}") == [(3,)]
