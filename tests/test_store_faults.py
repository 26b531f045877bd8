"""Store faults: missing or corrupt artifacts, a newer schema, a read-only store, a full disk, a
deleted `.flow/`. Real `flow run` subprocesses on a real store; the disk faults use a small tmpfs
(skipped where mounting is not allowed)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.store import SCHEMA_VERSION, Store
from tests.helpers_core import set_schema
from tests.test_faults import assert_no_orphans, assert_store_sound

FLOW = """
import os
from dsl import step

def mark(name):
    with open(os.environ["EFFECTS"], "a") as handle:
        handle.write(name + "\\n")

@step
def small(size: int = 10):
    mark("small")
    return list(range(size))

@step
def big(small):
    mark("big")
    return bytes(range(256)) * (8 << 10)   # 2 MiB: a file artifact

@step
def total(small, big):
    mark("total")
    return sum(small) + len(big)
"""

TOTAL = sum(range(10)) + 256 * (8 << 10)


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    return tmp_path / "effects.txt"


@pytest.fixture
def run_flow(flow_cli, write_flow, effects):
    path = write_flow(FLOW)

    def run(*args: str, store: Path | None = None):
        extra = {"EFFECTS": str(effects)}
        if store is not None:
            extra["FLOW_STORE"] = str(store)
        return flow_cli("run", str(path), "--json", *args, env=extra)

    return run


def executed(effects: Path) -> list[str]:
    names = effects.read_text().split() if effects.exists() else []
    effects.write_text("")
    return names


def final(result) -> dict:
    return {e["step"]: e for e in result.events() if e.get("event") == "step_finished"}


def test_a_missing_file_artifact_is_recomputed_never_used(run_flow, effects, store_dir) -> None:
    first = run_flow()
    assert first.code == 0, first
    assert executed(effects) == ["small", "big", "total"]
    for path in (store_dir / "artifacts").rglob("*"):
        if path.is_file():
            path.unlink()
    second = run_flow("--force")  # total must read big's output: it is gone, so big re-runs
    assert second.code == 0, second
    assert "big" in executed(effects)
    third = run_flow()
    assert third.code == 0, third
    steps = final(third)
    assert steps["big"]["status"] == "cached" and steps["total"]["status"] == "cached"
    assert steps["total"]["preview"] == str(TOTAL)
    assert_store_sound(store_dir)


@pytest.mark.parametrize("where", ["inline", "file"])
def test_a_corrupt_artifact_is_recomputed_never_used(run_flow, effects, store_dir, where) -> None:
    assert run_flow().code == 0
    executed(effects)
    conn = sqlite3.connect(store_dir / "flow.db")
    if where == "inline":
        digest, data = conn.execute(
            "SELECT a.hash, a.data FROM artifacts a JOIN cache c ON c.output_hash = a.hash "
            "WHERE c.step='small'"
        ).fetchone()
        conn.execute("UPDATE artifacts SET data=? WHERE hash=?", (bytes(data)[:-1] + b"X", digest))
        conn.commit()
        victim = "small"
    else:
        path = next(p for p in (store_dir / "artifacts").rglob("*") if p.is_file())
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        victim = "big"
    conn.close()
    second = run_flow()
    assert second.code == 0, second
    assert victim in executed(effects)
    assert final(second)["total"]["preview"] == str(TOTAL)
    third = run_flow()
    assert third.code == 0
    assert executed(effects) == [], "healed: the good bytes replaced the corrupt ones"
    assert_store_sound(store_dir)


def test_a_store_from_a_newer_schema_is_refused_with_exit_2(run_flow, effects, store_dir, flow_cli) -> None:
    assert run_flow().code == 0
    set_schema(store_dir, SCHEMA_VERSION + 7)
    executed(effects)
    result = run_flow()
    assert result.code == 2, result
    assert "newer than this flow understands" in result.stderr
    assert "Traceback" not in result.stderr
    assert executed(effects) == []
    for command in (("runs",), ("doctor",), ("gc", "--dry-run")):
        other = flow_cli(*command)
        assert other.code == 2 and "newer" in other.stderr, (command, other)


def test_a_version_1_store_is_migrated_to_the_current_schema(run_flow, effects, store_dir) -> None:
    assert run_flow().code == 0
    set_schema(store_dir, 1, "DROP TABLE leases")
    executed(effects)
    result = run_flow()
    assert result.code == 0, result
    assert executed(effects) == [], "the cache survives the migration"
    store = Store(store_dir)
    try:
        assert store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
        assert store.acquire_lease("f" * 64) is None
    finally:
        store.close()


def test_a_deleted_store_starts_fresh(run_flow, effects, store_dir) -> None:
    import shutil

    assert run_flow().code == 0
    shutil.rmtree(store_dir)
    executed(effects)
    result = run_flow()
    assert result.code == 0, result
    assert executed(effects) == ["small", "big", "total"]
    assert (store_dir.stat().st_mode & 0o777) == 0o700
    assert_store_sound(store_dir)


# ----- disk faults on a small tmpfs -------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def test_a_read_only_store_is_a_clear_error(run_flow, effects, tmp_path) -> None:
    with tmpfs(tmp_path / "ro", "20m") as mount:
        store = mount / "store"
        assert run_flow(store=store).code == 0
        executed(effects)
        remount(mount, "ro")
        result = run_flow(store=store)
        assert result.code == 2, result
        assert "store" in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert executed(effects) == [], "nothing runs against a store it cannot write"
        remount(mount, "rw")
        assert_store_sound(store)
        again = run_flow(store=store)
        assert again.code == 0 and executed(effects) == []


def test_a_full_disk_fails_the_step_clearly_and_nothing_half_written_is_believed(
    run_flow, effects, tmp_path, flow_cli, write_flow
) -> None:
    with tmpfs(tmp_path / "full", "1m") as mount:
        store = mount / "store"
        marker = f"flowfault-{uuid.uuid4().hex}"
        result = run_flow(store=store)
        # small fits; big's 2 MiB artifact does not. Usually the step fails with the OS error and total
        # is skipped (exit 1). If the store commits while big's temporary file holds the last free bytes,
        # the store write fails instead: a clear store error (exit 2). Either way nothing is believed.
        assert result.code in (1, 2), result
        assert "Traceback" not in result.stderr, result.stderr
        if result.code == 1:
            steps = final(result)
            assert steps["small"]["status"] == "succeeded"
            assert steps["big"]["status"] == "failed"
            assert "No space left on device" in steps["big"]["error"], steps["big"]["error"]
            assert steps["total"]["status"] != "succeeded"
        else:
            assert "disk is full" in result.stderr, result.stderr
        assert not [p for p in (store / "artifacts").rglob(".tmp-*")], "no temp file is left behind"
        assert_no_orphans(marker)
        report = assert_store_sound(store)
        runs = Store(store, create=False)
        try:
            run = runs.get_run(runs.latest_run_id())
            assert run.status in ("failed", "interrupted"), run.status
        finally:
            runs.close()
        assert report.healthy
        # The disk is freed: the next run computes what failed, reuses what succeeded.
        remount(mount, "size=20m")
        ran_before = executed(effects)
        again = run_flow(store=store)
        assert again.code == 0, again
        if result.code == 1:
            assert executed(effects) == ["big", "total"]
        else:
            assert {"big", "total"} <= set(executed(effects)) and "small" in ran_before
        assert final(again)["total"]["preview"] == str(TOTAL)


def test_a_full_database_fails_the_run_clearly(flow_cli, write_flow, tmp_path) -> None:
    """The SQLite file itself cannot grow: the store writer stops (nothing after the lost batch is
    written), the run is reported failed (or interrupted at the next open), never succeeded."""
    path = write_flow(
        """
        from dsl import step

        @step
        def fill(n: int = 0):
            return bytes(range(256)) * (3000 + n)   # ~770 KB, inline in SQLite
        """,
        name="fill.py",
    )
    with tmpfs(tmp_path / "dbfull", "1500k") as mount:
        store = mount / "store"
        codes = []
        for n in range(4):
            result = flow_cli("run", str(path), "-p", f"n={n}", env={"FLOW_STORE": str(store)})
            codes.append(result.code)
            if result.code != 0:
                break
        assert codes[-1] != 0, f"the tmpfs never filled: {codes}"
        assert "cannot write to the store" in result.stderr or "full" in result.stderr, result
        assert "Traceback" not in result.stderr, result.stderr
        remount(mount, "size=20m")
        report = assert_store_sound(store)
        assert report.healthy
        check = Store(store, create=False)
        try:
            runs = check.list_runs()
        finally:
            check.close()
        # a run is recorded succeeded only if `flow run` said so; the failed one is failed,
        # interrupted, or was never recorded (the store could not even insert it)
        assert sum(r.status == "succeeded" for r in runs) == codes.count(0), (codes, runs)
        assert all(r.status in ("succeeded", "failed", "interrupted") for r in runs)
        print(f"\nfull database: exit codes {codes}; stderr: {result.stderr.strip()[:200]}")


def test_a_write_that_fills_the_disk_mid_run_fails_the_run(flow_cli, write_flow, tmp_path) -> None:
    """The run is recorded, then a step's inline output does not fit: the store writer gives up on
    that batch and everything after it, marks the run failed, and `flow run` exits non-zero."""
    path = write_flow(
        """
        from dsl import step

        @step
        def first():
            return 1

        @step
        def heavy(first):
            return bytes(range(256)) * 3900   # ~1 MB, inline in SQLite
        """,
        name="heavy.py",
    )
    with tmpfs(tmp_path / "midrun", "700k") as mount:
        store = mount / "store"
        result = flow_cli("run", str(path), env={"FLOW_STORE": str(store)})
        assert result.code != 0, result
        assert "cannot write to the store" in result.stderr and "full" in result.stderr, result
        assert "Traceback" not in result.stderr, result.stderr
        remount(mount, "size=20m")
        assert_store_sound(store)
        check = Store(store, create=False)
        try:
            check.mark_interrupted()
            (run,) = check.list_runs()
            heavy = {s.name: s for s in run.steps}.get("heavy")
        finally:
            check.close()
        assert run.status in ("failed", "interrupted"), run.status
        assert heavy is None or heavy.status != "succeeded"
        print(f"\nmid-run full disk: exit {result.code}, run {run.status}: {result.stderr.strip()[:160]}")
        again = flow_cli("run", str(path), env={"FLOW_STORE": str(store)})
        assert again.code == 0, again


KILL_BETWEEN_COMMITS = """
import sys, threading, time
from pathlib import Path
from runner.events import StepFinished, StepStarted
from runner.status import StepStatus
from runner.store import Store

store = Store(Path(sys.argv[1]))
run_id = store.create_run("f", "f.py", {}, "manual", "local")
store.flush()
record = store.recorder()
taken, go = threading.Event(), threading.Event()
write = store.rows._write

def pausing(conn, batch):  # the writer has written the batch's rows and not committed them yet
    write(conn, batch)
    taken.set()
    go.wait()

store.rows._write = pausing
record(StepStarted(run_id, "a", 1, "no earlier result", "fp-a", time.time()))
taken.wait()  # the started row's batch is written: the output and finished rows go to the next one
store.record_output("d" * 64, 3, b"abc", cache_as="fp-a", step="a", run_id=run_id, preview="abc")
record(StepFinished(run_id, "a", StepStatus.SUCCEEDED, 1, 0.1, "no earlier result", None, None,
                    "fp-a", "d" * 64, "abc", {}, time.time()))
go.set()  # first commit: the started row; the second (output and finished rows) is killed
time.sleep(30)
"""


def test_a_runner_killed_between_commits_never_leaves_a_step_without_its_artifact(tmp_path: Path) -> None:
    """A step's rows are batched with its output's (`runner.store.rows`): when the writer has already
    written the batch its started row is in, the output's rows and its finished row go to the next
    batch together. Killed between the two commits, the store has the step running and nothing that
    claims a missing artifact."""
    store = tmp_path / "store"
    script = tmp_path / "kill.py"
    script.write_text(KILL_BETWEEN_COMMITS)
    env = {**os.environ, "FLOW_FAULT_KILL": "commit:2", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, str(script), str(store)], env=env, timeout=60, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    conn = sqlite3.connect(store / "flow.db")
    try:  # as the kill left it (opening the store marks the run interrupted)
        steps = conn.execute("SELECT name, status FROM steps").fetchall()
        artifacts = conn.execute("SELECT hash FROM artifacts").fetchall()
    finally:
        conn.close()
    assert steps == [("a", "running")]
    assert artifacts == []
    assert_store_sound(store)
