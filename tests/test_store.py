"""The run store on disk: location, WAL, versioned schema, atomic content-addressed artifacts,
interrupted runs, several processes sharing one store."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dsl import load_flow
from dsl.errors import FlowError
from runner import store as store_module
from runner.artifacts import ArtifactError, content_hash, write_file_atomic
from runner.engine import RunRequest
from runner.store import Store
from tests.helpers_core import (
    executed,
    files_open_under,
    flow_source,
    reset,
    set_schema,
    step_status_in_db,
    wait_for,
)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executed.log"


SIMPLE = """
    @step
    def one():
        mark("one")
        return 1

    @step
    def two(one):
        mark("two")
        return one + 1
"""


def test_a_new_store_is_private_wal_and_versioned(store_dir):
    store = Store(store_dir)
    try:
        assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
        assert (store_dir / "artifacts").is_dir()
        mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode.lower() == "wal"
        version = store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == store_module.SCHEMA_VERSION
    finally:
        store.close()


def test_opening_without_create_refuses_a_missing_store(tmp_path):
    with pytest.raises(FlowError):
        Store(tmp_path / "absent", create=False)


def test_a_store_from_a_newer_version_is_refused(store_dir):
    Store(store_dir).close()
    set_schema(store_dir, 999)
    with pytest.raises(FlowError) as info:
        Store(store_dir)
    assert "999" in str(info.value)


def test_an_old_schema_is_migrated_forward(store_dir):
    if store_module.SCHEMA_VERSION < 2:
        pytest.skip("no migration yet")
    Store(store_dir).close()
    set_schema(store_dir, 1, "DROP TABLE IF EXISTS leases")
    store = Store(store_dir)
    try:
        version = store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == store_module.SCHEMA_VERSION
    finally:
        store.close()


def index_entries(store_dir: Path) -> dict[str, int]:
    """Entries in each of the steps table's indexes, counted in the database's pages (`dbstat`)."""
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        names = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='steps'")
        ]
        counts = {name: 0 for name in names}
        try:
            marks = ",".join("?" * len(names))
            rows = conn.execute(
                f"SELECT name, SUM(ncell) FROM dbstat WHERE name IN ({marks}) GROUP BY name", names
            )
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table")
        counts.update(dict(rows.fetchall()))
        return counts
    finally:
        conn.close()


def test_only_executions_and_running_steps_are_indexed_by_fingerprint(harness, write_flow, log, store_dir):
    """A cached step's row is in no fingerprint index (each dirtied a page: half of a cached run's
    writes); a cached step still finds the run that executed it (where its logs are)."""
    path = write_flow(flow_source(log, SIMPLE))
    first = harness.run(path)
    second = harness.run(path)
    harness.store.flush()
    assert {s.status for s in second.steps} == {"cached"}
    counts = index_entries(store_dir)
    assert counts == {"sqlite_autoindex_steps_1": 4, "steps_executed": 2, "steps_running": 0}, counts
    for step in second.steps:
        assert harness.store.computed_by(step.fingerprint, second.id) == (first.id, step.name)


def test_a_schema_10_store_trades_its_full_step_indexes_for_the_partial_ones(
    harness, write_flow, log, store_dir
):
    path = write_flow(flow_source(log, SIMPLE))
    first = harness.run(path)
    harness.store.flush()
    set_schema(
        store_dir,
        10,
        "DROP INDEX steps_executed",
        "DROP INDEX steps_running",
        "CREATE INDEX steps_name ON steps(name, run_id)",
        "CREATE INDEX steps_fingerprint ON steps(fingerprint)",
    )
    assert set(index_entries(store_dir)) == {"sqlite_autoindex_steps_1", "steps_name", "steps_fingerprint"}
    store = Store(store_dir)
    try:
        fingerprint = store.get_run(first.id).steps[0].fingerprint
        assert store.computed_by(fingerprint, first.id + 1) == (first.id, "one")
    finally:
        store.close()
    assert index_entries(store_dir) == {
        "sqlite_autoindex_steps_1": 2,
        "steps_executed": 2,
        "steps_running": 0,
    }


def test_a_file_that_is_not_a_database_is_a_clear_error(flow_cli, store_dir, write_flow, log):
    store_dir.mkdir()
    (store_dir / "flow.db").write_bytes(b"this is not sqlite" * 100)
    path = write_flow(flow_source(log, SIMPLE))
    result = flow_cli("run", str(path))
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "store" in result.stderr


def test_flow_store_env_and_store_option_and_default_dot_flow(flow_cli, write_flow, log, tmp_path):
    path = write_flow(flow_source(log, SIMPLE))
    other = tmp_path / "other_store"
    assert flow_cli("run", str(path), "--store", str(other)).code == 0
    assert (other / "flow.db").exists()
    env_store = tmp_path / "env_store"
    assert flow_cli("run", str(path), env={"FLOW_STORE": str(env_store)}).code == 0
    assert (env_store / "flow.db").exists()
    env = {k: v for k, v in os.environ.items() if k != "FLOW_STORE"}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / ".flow" / "flow.db").exists()


def test_artifacts_are_content_addressed_and_verified(store_dir, tmp_path):
    data = b"some bytes" * 10
    digest = content_hash(data)
    target = store_dir / "artifacts" / digest[:2] / digest
    write_file_atomic(target, data)
    assert target.read_bytes() == data
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")]
    store = Store(store_dir)
    try:
        store._conn.execute(
            "INSERT INTO artifacts(hash, size, data, created_at) VALUES (?, ?, NULL, 0)", (digest, len(data))
        )
        assert store.read_artifact(digest) == data
        target.write_bytes(b"X" * len(data))
        with pytest.raises(ArtifactError):
            store.read_artifact(digest)
        target.write_bytes(data[:-1])
        with pytest.raises(ArtifactError):
            store.read_artifact(digest)
        target.unlink()
        with pytest.raises(ArtifactError):
            store.read_artifact(digest)
        with pytest.raises(ArtifactError):
            store.read_artifact("0" * 64)
    finally:
        store.close()


def test_large_outputs_go_to_files_small_ones_inline(harness, write_flow, log, store_dir):
    path = write_flow(
        flow_source(
            log,
            """
        @step
        def small():
            return "tiny"

        @step
        def large():
            return bytes(3 << 20)
    """,
        )
    )
    run = harness.run(path)
    harness.store.flush()
    hashes = {s.name: s.output_hash for s in run.steps}
    rows = dict(harness.store._conn.execute("SELECT hash, data IS NULL FROM artifacts").fetchall())
    assert rows[hashes["small"]] == 0
    assert rows[hashes["large"]] == 1
    assert (store_dir / "artifacts" / hashes["large"][:2] / hashes["large"]).stat().st_size > 3 << 20


def test_mark_interrupted_only_touches_runs_of_dead_processes(store_dir):
    store = Store(store_dir)
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        alive_id = store.create_run("f", "/f.py", {}, "cli", "local")
        dead_id = store.create_run("f", "/f.py", {}, "cli", "local")
        # A row as schema 3 wrote it (no owner): judged by its pid on this host.
        store._conn.execute("UPDATE runs SET pid=?, owner=NULL WHERE id=?", (dead.pid, dead_id))
        conn = store._conn
        conn.execute("INSERT INTO steps(run_id, name, status) VALUES (?, 'a', 'running')", (dead_id,))
        conn.execute("INSERT INTO steps(run_id, name, status) VALUES (?, 'b', 'succeeded')", (dead_id,))
        assert store.mark_interrupted() == [dead_id]
        assert store.get_run(alive_id).status == "running"
        run = store.get_run(dead_id)
        assert run.status == "interrupted" and run.finished_at is not None
        assert {s.name: s.status for s in run.steps} == {"a": "cancelled", "b": "succeeded"}
        assert store.mark_interrupted() == []
    finally:
        store.close()


def test_delete_run_keeps_cached_results(harness, write_flow, log):
    path = write_flow(flow_source(log, SIMPLE))
    run = harness.run(path)
    harness.store.flush()
    assert harness.store.delete_run(run.id)
    assert harness.store.get_run(run.id) is None
    assert not harness.store.delete_run(run.id)
    reset(log)
    again = harness.run(path)
    assert executed(log) == []
    assert {s.status for s in again.steps} == {"cached"}


def test_the_runs_signature_changes_when_a_run_of_the_flow_starts_ends_or_is_deleted(
    harness, write_flow, log
):
    """What the TUI compares to tell its history is out of date (another process's runs send it no
    event): by name or by file, as `list_runs` selects. Another flow's runs starting or ending leave
    it alone; a deletion anywhere changes it (one more read of the history, nothing missed)."""
    path = write_flow(flow_source(log, SIMPLE))
    store = harness.store
    name = path.stem
    empty = store.runs_signature(name)
    assert empty == (0, 0, 0)
    run = harness.run(path)
    store.flush()
    done = store.runs_signature(name)
    assert done[1:] == (run.id, 0) and done == store.runs_signature(str(path)) != empty
    other = store.create_run("other", "/elsewhere/other.py", {}, "cli", "local")
    store.abandon_run(other, "stopped")
    store.flush()
    assert store.runs_signature(name) == done
    running = store.create_run(name, str(path), {}, "cli", "local")
    started = store.runs_signature(name)
    assert started[1:] == (running, 1)
    store.abandon_run(running, "stopped")
    store.flush()
    ended = store.runs_signature(name)
    assert ended[1:] == (running, 0) and ended not in (done, started)
    assert store.delete_run(running)
    deleted = store.runs_signature(name)
    assert deleted[1:] == (run.id, 0) and deleted not in (done, started, ended)
    assert store.delete_run(other)
    assert store.runs_signature(name) != deleted
    assert store.delete_run(run.id)
    assert store.runs_signature(name)[1:] == (0, 0)


def test_the_runs_signature_costs_the_same_for_a_thousand_runs_as_for_ten(store_dir):
    """The TUI looks every second, at a flow `flow serve` may have run for months: the look reads the
    runs running now and a few index entries, not every run of the flow (with 100,000 runs it took
    14 ms). Counted in SQLite's virtual machine steps, which do not vary with the machine's speed."""
    store = Store(store_dir)
    try:
        steps = []
        for added in (10, 990):
            with store._conn:  # finished runs, as another process records them
                store._conn.executemany(
                    "INSERT INTO runs(flow, file, status, started_at, params) "
                    "VALUES ('grows', '/p/grows.py', 'succeeded', 0, '{}')",
                    [()] * added,
                )
            store.create_run("grows", "/p/grows.py", {}, "cli", "local")  # and one more running
            counted = [0]

            def count(counted: list[int] = counted) -> int:
                counted[0] += 1
                return 0

            store._conn.set_progress_handler(count, 1)
            try:
                signature = store.runs_signature("grows")
            finally:
                store._conn.set_progress_handler(None, 0)
            assert signature[2] == len(steps) + 1
            steps.append(counted[0])
    finally:
        store.close()
    assert steps[1] <= steps[0] + 20, steps


def test_a_flows_runs_and_each_files_newest_run_are_read_through_indexes(store_dir):
    """What the TUI asks every second or so of a store that may hold months of served runs: a flow's
    runs by name or file, their signature, and each file's newest run. Each is answered as a plain
    filter of every run would, and no query reads every run (`SCAN runs`)."""
    store = Store(store_dir)
    statements: list[str] = []
    try:
        files = {"a": "/p/a.py", "b": "/p/b.py", "c": "/q/c.py"}
        runs: list[tuple[int, str]] = []
        for i in range(30):
            key = "abcab"[i % 5]
            run_id = store.create_run(key, files[key], {}, "cli", "local")
            if i % 3:
                store.abandon_run(run_id, "stopped")
            runs.append((run_id, key))
        renamed = store.create_run("a2", files["a"], {}, "cli", "local")  # the flow renamed, same file
        runs.append((renamed, "a"))
        store.flush()
        status = {r.id: r.status for r in store.list_runs(limit=100)}
        store._conn.set_trace_callback(statements.append)

        newest = {files[key]: status[max(i for i, k in runs if k == key)] for key in files}
        assert store.latest_statuses() == newest
        assert newest == {"/p/a.py": "running", "/p/b.py": "failed", "/q/c.py": "running"}
        by_file = [i for i, k in reversed(runs) if k == "a"]
        assert [r.id for r in store.list_runs(files["a"], limit=5)] == by_file[:5]
        by_name = [i for i, k in reversed(runs) if k == "a" and i != renamed]
        assert [r.id for r in store.list_runs("a", limit=4)] == by_name[:4]
        running = sum(1 for i in by_file if status[i] == "running")
        assert store.runs_signature(files["a"])[1:] == (renamed, running)
    finally:
        store._conn.set_trace_callback(None)
        store.close()
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) >= 4
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        for statement in reads:
            plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
            # The index of the runs running now may be read whole: it holds nothing else.
            scans = [p for p in plan if p.startswith("SCAN runs") and not p.endswith("INDEX runs_running")]
            assert not scans, (statement, plan)
    finally:
        conn.close()


def test_a_schema_12_store_gets_what_the_runs_signature_reads(store_dir):
    """The index of running runs and the count of deleted runs (schema 13) are added to a store of
    schema 12, and the count moves from the first deletion on."""
    Store(store_dir).close()
    set_schema(store_dir, 12, "DROP INDEX runs_running", "DROP TRIGGER runs_deleted")
    store = Store(store_dir)
    try:
        run = store.create_run("f", "/p/f.py", {}, "cli", "local")
        before = store.runs_signature("f")
        assert before == (0, run, 1)
        assert store.delete_run(run)
        assert store.runs_signature("f") == (1, 0, 0)
    finally:
        store.close()
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'runs'")}
    finally:
        conn.close()
    assert {"runs_running", "runs_deleted"} <= names


def test_a_schema_11_store_gets_its_runs_indexed_by_file(store_dir):
    Store(store_dir).close()
    set_schema(store_dir, 11, "DROP INDEX runs_file")
    Store(store_dir).close()
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'runs'")}
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    finally:
        conn.close()
    assert "runs_file" in indexes
    assert int(version) == store_module.SCHEMA_VERSION


def test_two_processes_share_one_store(flow_cli, write_flow, log, store_dir, tmp_path):
    """Two `flow run`s of different flows at the same time into one store: both succeed, both recorded."""
    a = write_flow(flow_source(log, SIMPLE), name="a.py")
    b = write_flow(flow_source(log, SIMPLE.replace("one", "uno").replace("two", "dos")), name="b.py")
    env = {**os.environ, "FLOW_STORE": str(store_dir)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", "run", str(p)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (a, b)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
    runs = flow_cli("runs", "--json").json()
    assert sorted(r["flow"] for r in runs) == ["a", "b"]
    assert all(r["status"] == "succeeded" for r in runs)
    assert sorted(executed(log)) == ["dos", "one", "two", "uno"]


def test_the_store_is_consistent_after_every_run(harness, write_flow, log, store_dir):
    path = write_flow(flow_source(log, SIMPLE))
    harness.run(path)
    harness.run(path, force=True)
    harness.store.flush()
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dangling = conn.execute(
            "SELECT COUNT(*) FROM cache c LEFT JOIN artifacts a ON a.hash = c.output_hash "
            "WHERE a.hash IS NULL"
        ).fetchone()[0]
        assert dangling == 0
        for digest, data in conn.execute("SELECT hash, data FROM artifacts WHERE data IS NOT NULL"):
            assert content_hash(bytes(data)) == digest
    finally:
        conn.close()


def test_many_processes_creating_one_store_at_once_all_succeed(tmp_path):
    """Creating a store races: the directory, the switch to WAL and the schema must each tolerate
    another process doing the same at the same moment."""
    go = tmp_path / "go"
    script = (
        "import sys, pathlib\n"
        "from runner.store import Store\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): pass\n"
        "Store(sys.argv[1]).close()\n"
    )
    for attempt in range(5):
        store = tmp_path / f"store{attempt}"
        go.unlink(missing_ok=True)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(store), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        go.touch()
        results = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 6, results


def test_every_finished_step_row_is_written_whole(harness, write_flow, log, store_dir):
    """Finished steps' rows go to SQLite many per statement: each one must still carry its status,
    timings, fingerprint parts, worker and metrics, and a cached re-run must update them all."""
    body = "from dsl import log_metric\n" + "".join(
        f"\n@step\ndef s{i}({f's{i - 1}' if i else ''}):\n    log_metric('m', {i})\n    return {i}\n"
        for i in range(150)
    )
    path = write_flow(flow_source(log, body))
    first = harness.run(path)
    second = harness.run(path)
    harness.store.flush()
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        rows = conn.execute(
            "SELECT name, status, finished_at, detail, where_ran FROM steps WHERE run_id=?", (first.id,)
        ).fetchall()
        assert len(rows) == 150
        assert all(s == "succeeded" and done and detail and where for _, s, done, detail, where in rows)
        metrics = dict(conn.execute("SELECT step, value FROM metrics WHERE run_id=?", (first.id,)).fetchall())
        assert metrics == {f"s{i}": float(i) for i in range(150)}
        by_status = "SELECT status, COUNT(*) FROM steps WHERE run_id=? GROUP BY status"
        assert conn.execute(by_status, (second.id,)).fetchall() == [("cached", 150)]
    finally:
        conn.close()


def test_a_running_step_shows_as_running_in_the_store_while_it_runs(
    harness, write_flow, log, store_dir, tmp_path
):
    """Started rows are written in batches too: another process (`flow runs`, a TUI) must still see
    a step as running while it runs, not only once it finished."""
    release = tmp_path / "release"
    body = f"""
        import pathlib, time

        @step(cache=False)
        def slow():
            while not pathlib.Path({str(release)!r}).exists():
                time.sleep(0.01)
            return 1
    """
    path = write_flow(flow_source(log, body))
    loaded = load_flow(path)
    handle = harness.engine.start(RunRequest(loaded, {}))
    try:
        wait_for(lambda: step_status_in_db(store_dir, "slow") == ["running"], timeout=30)
    finally:
        release.touch()
    assert handle.wait(30) == "succeeded"
    harness.store.flush()
    assert step_status_in_db(store_dir, "slow") == ["succeeded"]


def test_closing_a_store_closes_the_connections_of_threads_that_outlive_it(tmp_path: Path) -> None:
    """A thread pool's threads read the store (the TUI's reads do): each thread has its own
    connection, and those threads live on; closing the store must close them all."""
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        barrier = threading.Barrier(4)

        def read(_: int) -> None:
            barrier.wait()  # four threads at once: four connections
            store.get_run(1)

        list(pool.map(read, range(4)))
        assert len([f for f in files_open_under(store_dir) if f.endswith("flow.db")]) >= 4
        store.close()
        gc.collect()  # a connection let go is freed by the collector (it is in a cycle with its cache)
        assert files_open_under(store_dir) == []


def test_no_commit_checkpoints_the_wal_and_the_heartbeat_does(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that takes the WAL past SQLite's threshold (1,000 pages) no longer copies it into the
    database file inside the commit (a run's end waited 2-16 ms for that); the owner's heartbeat
    checkpoints it instead, without stopping the writes."""
    from runner.store import owners

    monkeypatch.setattr(owners, "CHECKPOINT_S", 0.05)
    store = Store(store_dir)
    wal = Path(f"{store.db_path}-wal")
    try:
        text = "x" * 4000
        for batch in range(40):  # 40 commits of 50 rows: ~8 MB, 2,000 pages
            rows = [(f"wal-{batch}-{i}", text) for i in range(50)]
            store._write(
                lambda c, rows=rows: c.executemany("INSERT INTO sources(hash, text) VALUES (?, ?)", rows)
            )
            store.flush()
        assert wal.stat().st_size > 8_000_000  # every commit appended: none checkpointed
        before = Path(store.db_path).stat().st_size
        store._register()  # an owner: its heartbeat thread starts
        wait_for(lambda: Path(store.db_path).stat().st_size > before + 7_000_000, timeout=30)
        assert store._write(lambda c: c.execute("DELETE FROM sources WHERE hash LIKE 'wal-%'")) is None
        store.flush()
    finally:
        store.close()


def test_a_failing_checkpoint_does_not_stop_the_heartbeat(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat's thread checkpoints the WAL every second and beats every five. A checkpoint that
    fails (an I/O error) is tried again at the next second; the beat goes on meanwhile, or the runs of
    a live process would read as interrupted to every other one once the heartbeat expired."""
    from runner.store import owners

    class FailingCheckpoints:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if "wal_checkpoint" in sql:
                raise sqlite3.OperationalError("disk I/O error")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

    monkeypatch.setattr(owners, "CHECKPOINT_S", 0.02)
    monkeypatch.setattr(owners, "HEARTBEAT_S", 0.05)
    store = Store(store_dir)
    try:
        connect = store._connect
        monkeypatch.setattr(store, "_connect", lambda: FailingCheckpoints(connect()))
        owner = store._register()

        def heartbeat() -> float:
            return float(
                store._conn.execute("SELECT heartbeat_at FROM owners WHERE id=?", (owner,)).fetchone()[0]
            )

        first = heartbeat()
        wait_for(lambda: heartbeat() > first, timeout=10)
    finally:
        store.close()
