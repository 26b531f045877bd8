"""The cache entries a flow's last run found, kept in one row for the next process's run
(`runner.store.last_hits`): read instead of joining every step row with the cache, equal to that join,
and never stale, whoever changes the cache or the artifacts behind it."""

from __future__ import annotations

import marshal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.artifacts import content_hash
from runner.store import Store, last_hits
from runner.store.api import KeptHits
from tests.conftest import EngineHarness
from tests.helpers_core import calls_to, executed, flow_source, reset, set_schema, statuses, steps_of
from tests.test_cache import CHAIN as ABCD

BIG = """
    @step
    def big():
        mark("big")
        return b"x" * (2 << 20)
"""
"""A file artifact (over `INLINE_MAX`)."""

CHAIN = ABCD + BIG
"""Inline artifacts (`a` -> `b` -> `c`, and `d`), and one file artifact."""

KINDS = (
    """
    @step
    def a():
        mark("a")
        return 1

    @step(foreach="a_items")
    def each(a_items, a):
        mark("each")
        return a_items * a

    @step
    def a_items(a):
        return [1, 2, 3, 2]

    @step(cache=False)
    def uncached(a):
        mark("uncached")
        return a + 5

    @step
    def after_uncached(uncached):
        mark("after_uncached")
        return uncached * 2

    @step
    def fails(a):
        mark("fails")
        raise ValueError("no")
"""
    + BIG
)
"""A fan-out (with two equal items), a `cache=False` step and its downstream, a failing step, a file
artifact."""


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executed.log"


def run_once(store_dir: Path, path: Path, **options: Any) -> Any:
    """A run by a new engine (what a new `flow run` does)."""
    engine = EngineHarness(store_dir)
    try:
        return engine.run(path, **options)
    finally:
        engine.close()


def kept(store_dir: Path, flow: str) -> tuple[int, dict[str, Any]] | None:
    """The kept row of `flow` as another process reads it: (run id, entries)."""
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        row = conn.execute("SELECT run_id, hits FROM last_hits WHERE flow=?", (flow,)).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], marshal.loads(row[1]))


def queried(store_dir: Path, run_id: int) -> dict[str, Any]:
    """What the join of the run's step rows with the cache says (`last_hits.hits_of_run`)."""
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        return last_hits.hits_of_run(conn, run_id)
    finally:
        conn.close()


def current(store_dir: Path, fingerprints: Any) -> dict[str, Any]:
    """The cache's rows for `fingerprints` now, as entries (`runner.store.api.Hit`)."""
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        rows = [
            conn.execute(
                "SELECT c.fingerprint, c.output_hash, c.run_id, c.preview, a.data FROM cache c "
                "LEFT JOIN artifacts a ON a.hash = c.output_hash WHERE c.fingerprint = ?",
                (fingerprint,),
            ).fetchone()
            for fingerprint in fingerprints
        ]
    finally:
        conn.close()
    return {
        row[0]: (row[1], row[2], row[3], row[4] is not None and content_hash(bytes(row[4])) == row[1])
        for row in rows
        if row is not None
    }


def generation(store_dir: Path) -> int:
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        return int(conn.execute(f"SELECT {last_hits.GENERATION}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def chain(write_flow: Any, log: Path, store_dir: Path) -> Iterator[tuple[Path, Any]]:
    """The chain's flow file, run once by its own engine (its row kept from that engine's memory)."""
    path = write_flow(flow_source(log, CHAIN), name="flow_file.py")
    first = run_once(store_dir, path)
    assert first.status == "succeeded"
    reset(log)
    yield path, first


def test_a_new_engine_reads_the_kept_row_instead_of_every_step_row(chain, store_dir, log, monkeypatch):
    path, first = chain
    assert kept(store_dir, first.flow) == (first.id, queried(store_dir, first.id))
    assert kept(store_dir, first.flow)[1][steps_of(first)["big"].fingerprint][3] is False  # a file: stat
    joins = calls_to(monkeypatch, last_hits, "hits_of_run")
    second = run_once(store_dir, path)
    assert statuses(second) == dict.fromkeys(["a", "b", "c", "d", "big"], "cached")
    assert executed(log) == []
    # Read from the row, and the row carried over to the new run as it was: no join on either side.
    assert joins == []
    assert kept(store_dir, first.flow) == (second.id, queried(store_dir, second.id))


def test_the_kept_row_equals_the_join_after_every_kind_of_run(write_flow, log, store_dir):
    """Kept from an engine's memory (its first run of the flow) or carried (a fully cached re-run, a
    partial one): every entry of the join of the run's own step rows, each as the cache has it. A
    later run of the same engine that executed steps keeps nothing (it would have to join): the next
    process joins instead, once."""
    path = write_flow(flow_source(log, KINDS), name="flow_file.py")

    def check(run: Any) -> dict[str, Any]:
        found = kept(store_dir, run.flow)
        assert found is not None and found[0] == run.id
        joined = queried(store_dir, run.id)
        assert {fingerprint: found[1].get(fingerprint) for fingerprint in joined} == joined
        assert found[1] == current(store_dir, found[1])  # what a carried row holds beyond is still so
        return found[1]

    engine = EngineHarness(store_dir)
    try:
        first = engine.run(path)
        assert steps_of(first)["fails"].status == "failed"
        check(first)
        path.write_text(flow_source(log, KINDS.replace("return a + 5", "return a + 6")), encoding="utf-8")
        engine.run(path)
        assert kept(store_dir, first.flow)[0] == first.id
        check(engine.run(path, only=["each"]))
    finally:
        engine.close()
    check(run_once(store_dir, path))
    last = run_once(store_dir, path)
    entries = check(last)
    items = [s.fingerprint for s in last.steps if s.name.startswith("each[")]
    assert len(items) == 4 and set(items) <= set(entries)
    assert steps_of(last)["after_uncached"].fingerprint in entries
    assert steps_of(last)["uncached"].fingerprint not in entries
    assert steps_of(last)["fails"].fingerprint not in entries


def test_an_entry_changed_behind_the_kept_row_is_taken_from_the_cache(chain, store_dir, log):
    """Another process points b's cache entry at another stored output: the next run takes what the
    cache says now, not what was kept."""
    path, first = chain
    b, c = steps_of(first)["b"], steps_of(first)["c"]
    before = generation(store_dir)
    with sqlite3.connect(store_dir / "flow.db") as conn:
        conn.execute("UPDATE cache SET output_hash=? WHERE fingerprint=?", (c.output_hash, b.fingerprint))
    assert generation(store_dir) == before + 1
    second = run_once(store_dir, path)
    assert steps_of(second)["b"].status == "cached"
    assert steps_of(second)["b"].output_hash == c.output_hash


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM cache WHERE output_hash = :b",
        "DELETE FROM artifacts WHERE hash = :b",
        "UPDATE artifacts SET data = x'80044b002e' WHERE hash = :b",
    ],
    ids=["cache entry deleted", "artifact deleted", "artifact damaged"],
)
def test_a_result_gone_or_damaged_behind_the_kept_row_is_computed_again(chain, store_dir, log, change):
    path, first = chain
    digest = steps_of(first)["b"].output_hash
    before = generation(store_dir)
    with sqlite3.connect(store_dir / "flow.db") as conn:
        assert conn.execute(change, {"b": digest}).rowcount == 1
    assert generation(store_dir) > before
    second = run_once(store_dir, path)
    assert second.status == "succeeded"
    assert executed(log) == ["b"]  # c is reused: b's output is the same again
    assert steps_of(second)["b"].output_hash == digest


def test_a_cache_entry_replaced_through_flows_own_connection_is_counted(chain, store_dir):
    """flow writes cache entries with INSERT OR REPLACE (a forced re-run stores over the old entry):
    its connections have SQLite fire the delete trigger for the row replaced."""
    _, first = chain
    b, c = steps_of(first)["b"], steps_of(first)["c"]
    before = generation(store_dir)
    store = Store(store_dir)
    try:
        store._conn.execute(
            "INSERT OR REPLACE INTO cache(fingerprint, output_hash, step, run_id, created_at, preview) "
            "VALUES (?, ?, 'b', ?, 0, NULL)",
            (b.fingerprint, c.output_hash, first.id),
        )
        store._conn.execute(
            "INSERT OR REPLACE INTO cache(fingerprint, output_hash, step, run_id, created_at, preview) "
            "VALUES ('new', ?, 'b', ?, 0, NULL)",
            (c.output_hash, first.id),
        )
    finally:
        store.close()
    assert generation(store_dir) == before + 1  # the replaced row, not the new one


def test_a_forced_rerun_of_a_changing_step_is_what_the_next_process_reuses(write_flow, log, store_dir):
    body = """
    import uuid

    @step
    def token():
        mark("token")
        return uuid.uuid4().hex
    """
    path = write_flow(flow_source(log, body), name="flow_file.py")
    first = run_once(store_dir, path)
    forced = run_once(store_dir, path, force=True)
    assert steps_of(forced)["token"].output_hash != steps_of(first)["token"].output_hash
    again = run_once(store_dir, path)
    assert steps_of(again)["token"].status == "cached"
    assert steps_of(again)["token"].output_hash == steps_of(forced)["token"].output_hash


def test_a_row_kept_from_memory_needs_the_count_the_run_read(chain, store_dir):
    """`keep` takes the engine's entries only if nothing was counted since the run read the ones it
    reused; otherwise it keeps nothing (the row there stays, and is read only at its own count)."""
    _, first = chain
    now = generation(store_dir)
    made_up = {"not a fingerprint of the run": ("0" * 64, first.id, None, True)}
    conn = sqlite3.connect(store_dir / "flow.db", isolation_level=None)
    try:
        for read_at, expected in ((now - 1, queried(store_dir, first.id)), (now, made_up)):
            conn.execute("BEGIN IMMEDIATE")
            last_hits.keep(conn, first.flow, first.id, KeptHits(None, made_up, read_at))
            conn.execute("COMMIT")
            assert kept(store_dir, first.flow) == (first.id, expected)
    finally:
        conn.close()


def test_a_kept_row_that_cannot_be_read_is_ignored(chain, store_dir, log, monkeypatch):
    path, first = chain
    with sqlite3.connect(store_dir / "flow.db") as conn:
        conn.execute("UPDATE last_hits SET hits = x'00ff'")
    joins = calls_to(monkeypatch, last_hits, "hits_of_run")
    second = run_once(store_dir, path)
    assert statuses(second) == dict.fromkeys(["a", "b", "c", "d", "big"], "cached")
    assert executed(log) == []
    assert len(joins) == 1  # read through the join; kept again from the run's memory
    assert kept(store_dir, first.flow) == (second.id, queried(store_dir, second.id))


def test_a_schema_13_store_gains_the_kept_rows(chain, store_dir, log):
    path, first = chain
    set_schema(
        store_dir,
        13,
        "DROP TABLE last_hits",
        *(
            f"DROP TRIGGER {name}"
            for name in ("cache_changed", "cache_deleted", "artifact_changed", "artifact_deleted")
        ),
    )
    second = run_once(store_dir, path)
    assert executed(log) == []
    assert kept(store_dir, first.flow) == (second.id, queried(store_dir, second.id))
    with sqlite3.connect(store_dir / "flow.db") as conn:
        conn.execute("DELETE FROM cache WHERE output_hash=?", (steps_of(first)["b"].output_hash,))
    assert run_once(store_dir, path).status == "succeeded"
    assert executed(log) == ["b"]


def test_gc_frees_the_kept_rows_its_deletes_made_unreadable(chain, store_dir, flow_cli):
    _, first = chain
    assert kept(store_dir, first.flow) is not None
    assert flow_cli("delete", str(first.id)).code == 0
    done = flow_cli("gc", "--json")
    assert done.code == 0, done
    assert done.json()["cache_entries"] == 5
    assert kept(store_dir, first.flow) is None
