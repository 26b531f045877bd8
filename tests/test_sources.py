"""The source behind fingerprints and runs (store schema 8): written once per distinct text, kept per
run, shown by `flow plan --diff`, bounded by `flow gc`, and added to a schema-7 store on open."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.store import SCHEMA_VERSION, Store
from runner.store.sources import text_hash
from tests.conftest import CLIResult
from tests.helpers_core import set_schema

FLOW = """
from dsl import step

THRESHOLD = 0.5

def keep(x):
    return x > THRESHOLD

@step
def fetch():
    return [0.1, 0.6, 0.9]

@step
def kept(fetch):
    return [x for x in fetch if keep(x)]
"""


def _sources(store_dir: Path) -> dict[str, str]:
    conn = sqlite3.connect(store_dir / "flow.db")
    try:
        return dict(conn.execute("SELECT hash, text FROM sources").fetchall())
    finally:
        conn.close()


def test_each_run_keeps_its_files_and_each_distinct_source_is_stored_once(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(FLOW)
    assert flow_cli("run", str(path)).code == 0
    first = _sources(store_dir)
    assert text_hash(path.read_text()) in first
    assert "THRESHOLD = 0.5" in first.values()
    assert "def keep(x):\n    return x > THRESHOLD" in first.values()
    assert flow_cli("run", str(path)).code == 0
    assert _sources(store_dir) == first  # an unchanged flow writes no text again
    store = Store(store_dir, create=False)
    try:
        assert store.run_files(1) == store.run_files(2) == {str(path): path.read_text()}
    finally:
        store.close()


def test_plan_diff_shows_a_changed_constant_and_gc_bounds_the_texts(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(FLOW)
    assert flow_cli("run", str(path)).code == 0
    path.write_text(path.read_text().replace("THRESHOLD = 0.5", "THRESHOLD = 0.7"))
    planned = flow_cli("plan", str(path), "--diff")
    assert planned.code == 0, planned
    lines = planned.stdout.splitlines()
    assert "  ▶ kept   run      helper changed: THRESHOLD" in lines
    assert "      -THRESHOLD = 0.5" in lines and "      +THRESHOLD = 0.7" in lines
    assert flow_cli("run", str(path)).code == 0
    before = _sources(store_dir)
    assert {"THRESHOLD = 0.5", "THRESHOLD = 0.7"} <= set(before.values())
    report = flow_cli("gc", "--keep-last", "1", "--json")
    assert report.code == 0, report
    assert json.loads(report.stdout)["sources"] == 2  # the first run's flow file and its old constant
    after = _sources(store_dir)
    assert "THRESHOLD = 0.5" not in after.values() and "THRESHOLD = 0.7" in after.values()
    assert text_hash(path.read_text()) in after
    diff = flow_cli("diff", "1", "2", "--json").json()
    change = next(s for s in diff["steps"] if s["step"] == "kept")["code"][0]
    assert change["part"] == "THRESHOLD" and change["diff"] == [] and "flow gc" in change["note"]


def test_a_schema_7_store_gains_the_sources_on_open(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(FLOW)
    assert flow_cli("run", str(path)).code == 0
    set_schema(store_dir, 7, "DROP TABLE sources", "ALTER TABLE runs DROP COLUMN sources")
    assert flow_cli("run", str(path)).code == 0
    store = Store(store_dir, create=False)
    try:
        version = store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION
        assert store.run_files(1) is None  # run before the migration: no source kept
        assert store.run_files(2) == {str(path): path.read_text()}
    finally:
        store.close()
    no_source = flow_cli("debug", "1", "fetch")
    assert no_source.code == 0, no_source
    assert "run #1 kept no source" in no_source.stderr


def test_one_engine_records_the_sources_of_each_load_it_runs(tmp_path: Path) -> None:
    """A session's engine runs the same load again (a re-run in the TUI or under `--watch`) and then
    an edited one: every run keeps its files, and the edited load's new part texts are stored too
    (the engine gives the recorder a load's parts only once; a new load's always)."""
    from runner.engine import Engine
    from runner.executors.fake import FakeExecutor
    from runner.session import FlowSession

    path = tmp_path / "flow.py"
    path.write_text(FLOW, encoding="utf-8")
    store = Store(tmp_path / "store")
    engine = Engine(store, FakeExecutor())
    try:
        session = FlowSession(path, engine)
        session.load()
        for _ in range(2):
            assert session.run().wait(30) == "succeeded"
        edited = FLOW.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7")
        path.write_text(edited, encoding="utf-8")
        assert session.reload()
        assert session.run().wait(30) == "succeeded"
        engine.close()
        assert store.run_files(1) == store.run_files(2) == {str(path): FLOW}
        assert store.run_files(3) == {str(path): edited}
        texts = set(_sources(tmp_path / "store").values())
        assert {"THRESHOLD = 0.5", "THRESHOLD = 0.7", edited} <= texts
    finally:
        engine.close()
        store.close()


def test_only_a_step_that_executes_writes_its_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's part texts are kept by the run that executes it. A new engine's run of an unchanged
    flow, every step cached, writes none of them again (only the file's text: its recorder is new);
    after an edit, the step that re-runs writes its texts and the cached one does not."""
    from runner.engine import Engine
    from runner.executors.fake import FakeExecutor
    from runner.session import FlowSession
    from runner.store import recorder as recorder_module
    from runner.store import rows as rows_module

    written: list[str] = []
    for module in (rows_module, recorder_module):
        real = module.insert_sources

        def spy(conn: sqlite3.Connection, rows: list[tuple[str, str]], real: Any = real) -> None:
            written.extend(text for _, text in rows)
            real(conn, rows)

        monkeypatch.setattr(module, "insert_sources", spy)
    path = tmp_path / "flow.py"

    def run(text: str) -> list[str]:
        path.write_text(text, encoding="utf-8")
        written.clear()
        store = Store(tmp_path / "store")
        engine = Engine(store, FakeExecutor())
        try:
            session = FlowSession(path, engine)
            session.load()
            assert session.run().wait(30) == "succeeded"
        finally:
            engine.close()
            store.close()
        return [t for t in written if t != text]

    first = run(FLOW)
    assert any("def fetch" in t for t in first) and "THRESHOLD = 0.5" in first
    assert run(FLOW) == [] and written == [FLOW]
    edited = FLOW.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7")
    texts = run(edited)
    assert "THRESHOLD = 0.7" in texts and not any("def fetch" in t for t in texts)
    assert "THRESHOLD = 0.7" in _sources(tmp_path / "store").values()
