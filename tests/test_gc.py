"""`flow gc` frees what no kept run uses, reports it, and never leaves a cache entry without its artifact.

Before, cache rows were never deleted and gc spared everything the cache referenced: deleting every
run and running gc freed nothing. Each test runs real `flow` processes on a store on disk; a
side-effect log proves which steps executed again after a gc.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import EngineHarness
from tests.helpers_core import executed, flow_source, reset

FLOW = """
@step
def small(x: int = 1):
    mark("small")
    return [x] * 10

@step
def big(x: int = 1):
    mark("big")
    return bytes([x % 256]) * (2 << 20)

@step
def total(small, big):
    mark("total")
    return sum(small) + len(big)
"""
"""Per value of `x`: two inline artifacts and one 2 MiB file artifact."""


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executed.log"


@pytest.fixture
def path(write_flow, log) -> Path:
    return write_flow(flow_source(log, FLOW))


def counts(store_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        found = {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("cache", "artifacts")
        }
        found["dangling"] = conn.execute(
            "SELECT COUNT(*) FROM cache WHERE output_hash NOT IN (SELECT hash FROM artifacts)"
        ).fetchone()[0]
    finally:
        conn.close()
    found["files"] = sum(1 for p in (store_dir / "artifacts").rglob("*") if p.is_file())
    return found


def test_deleting_every_run_then_gc_frees_every_result(flow_cli, path, log, store_dir) -> None:
    assert flow_cli("run", str(path)).code == 0
    before = counts(store_dir)
    assert before["artifacts"] == 3 and before["files"] == 1
    assert flow_cli("delete", "1").code == 0
    done = flow_cli("gc", "--json")
    assert done.code == 0, done
    report = done.json()
    assert len(report["artifacts"]) == 3 and report["cache_entries"] == 3
    assert report["bytes"] > 2 << 20
    assert counts(store_dir) == {"cache": 0, "artifacts": 0, "dangling": 0, "files": 0}
    assert flow_cli("doctor").code == 0
    reset(log)
    assert flow_cli("run", str(path)).code == 0
    assert sorted(executed(log)) == ["big", "small", "total"]  # recomputed, not a dangling cache hit


def test_gc_keeps_the_last_runs_of_each_flow_and_pinned_runs(flow_cli, path, log, store_dir) -> None:
    for x in (1, 2, 3, 4):
        assert flow_cli("run", str(path), "-p", f"x={x}").code == 0
    assert flow_cli("pin", "1").code == 0
    dry = flow_cli("gc", "--keep-last", "2", "--dry-run", "--json").json()
    assert counts(store_dir)["artifacts"] == 12  # a dry run changes nothing
    done = flow_cli("gc", "--keep-last", "2")
    assert done.code == 0, done
    assert "freed the results of 1 run(s): #2" in done.stdout, done.stdout
    assert "3 artifact(s), 3 cache entries" in done.stdout
    assert dry["runs"] == [2] and len(dry["artifacts"]) == 3
    assert counts(store_dir)["dangling"] == 0
    assert flow_cli("doctor").code == 0  # run #2 keeps its history; its freed outputs are not a problem
    shown = flow_cli("show", "2", "--json").json()
    assert shown["status"] == "succeeded" and len(shown["steps"]) == 3

    reset(log)
    for x in (1, 3, 4):
        assert flow_cli("run", str(path), "-p", f"x={x}").code == 0
    assert executed(log) == []  # pinned #1 and the last two runs: all cached
    assert flow_cli("run", str(path), "-p", "x=2").code == 0
    assert sorted(executed(log)) == ["big", "small", "total"]


def test_gc_older_than_spares_recent_runs_and_max_size_drops_the_oldest_first(
    flow_cli, path, store_dir
) -> None:
    for x in (1, 2, 3):
        assert flow_cli("run", str(path), "-p", f"x={x}").code == 0
    spared = flow_cli("gc", "--keep-last", "0", "--older-than", "1h", "--json").json()
    assert spared["runs"] == [] and spared["artifacts"] == []
    capped = flow_cli("gc", "--max-size", "5MB", "--json").json()
    assert capped["runs"] == [1] and not capped["over_max_size"]
    assert capped["kept_bytes"] <= 5_000_000 < capped["kept_bytes"] + capped["bytes"]
    tiny = flow_cli("gc", "--max-size", "1KB")
    assert tiny.code == 0 and "still over --max-size" in tiny.stderr  # a flow's last run always stays
    assert counts(store_dir)["files"] == 1
    bad = flow_cli("gc", "--older-than", "soon")
    assert bad.code == 2 and "--older-than must be a duration" in bad.stderr


def test_a_live_engine_recomputes_results_gc_freed_under_it(path, log, store_dir, flow_cli) -> None:
    """The TUI and --watch keep an engine (and its memory of the cache) across runs."""
    harness = EngineHarness(store_dir)
    try:
        assert harness.run(path).status == "succeeded"
        done = flow_cli("gc", "--keep-last", "0")
        assert done.code == 0 and "freed" in done.stdout, done
        reset(log)
        again = harness.run(path)
        assert again.status == "succeeded", [(s.name, s.status, s.error) for s in again.steps]
        assert sorted(executed(log)) == ["big", "small", "total"]
    finally:
        harness.close()


def test_delete_help_says_what_gc_does(flow_cli) -> None:
    text = " ".join(flow_cli("delete", "--help").stdout.split())
    assert "stay reusable until" not in text
    assert "flow gc" in text and "frees" in text
