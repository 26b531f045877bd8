"""Provides `History`: runs, their steps, metrics, logs and flow outputs, as the public records
(`runner.records`) that `--json`, the reporter and the TUI read."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time
from collections.abc import Collection
from typing import Any

from dsl.errors import FlowError
from runner.artifacts import ArtifactError
from runner.records import FlowOutput, LogLine, RunRecord, StepRecord, dumps_json
from runner.status import RunStatus, StepStatus
from runner.store.cache import Cache
from runner.store.owners import Owners

_PREVIOUS_DETAILS = (
    "SELECT s.name, COALESCE(s.detail, (SELECT d.detail FROM steps d WHERE d.fingerprint = s.fingerprint "
    "AND d.detail IS NOT NULL ORDER BY d.run_id DESC LIMIT 1)) FROM steps s JOIN ("
    "SELECT s2.name AS name, MAX(s2.run_id) AS run_id FROM steps s2 JOIN runs r ON r.id = s2.run_id "
    "WHERE r.flow=? AND s2.fingerprint IS NOT NULL AND (s2.detail IS NOT NULL OR s2.status = 'cached') "
    "GROUP BY s2.name) last ON last.name = s.name AND last.run_id = s.run_id"
)
"""Per step of a flow, its fingerprint parts in the latest run that executed it or took it from the cache."""

_RUN_DETAILS = (
    "SELECT s.name, COALESCE(s.detail, (SELECT d.detail FROM steps d WHERE d.fingerprint = s.fingerprint "
    "AND d.detail IS NOT NULL ORDER BY d.run_id DESC LIMIT 1)) FROM steps s WHERE s.run_id=? ORDER BY s.rowid"
)
"""Each step of a run with its fingerprint parts (a cached step: those of the execution it reused)."""

_LAST_EXECUTION_DETAILS = (
    "SELECT s.name, s.detail FROM steps s JOIN ("
    "SELECT s2.name AS name, MAX(s2.run_id) AS run_id FROM steps s2 JOIN runs r ON r.id = s2.run_id "
    "WHERE r.flow=? AND s2.detail IS NOT NULL GROUP BY s2.name) last "
    "ON last.name = s.name AND last.run_id = s.run_id"
)

_NEWEST_BY_FILE = (
    "WITH RECURSIVE files(file) AS (SELECT MIN(file) FROM runs UNION ALL "
    "SELECT (SELECT MIN(file) FROM runs WHERE file > files.file) FROM files WHERE file IS NOT NULL) "
    "SELECT file, (SELECT status FROM runs WHERE runs.file = files.file ORDER BY id DESC LIMIT 1) "
    "FROM files WHERE file IS NOT NULL"
)
"""Each flow file's newest run's status, a lookup in `runs_file` per file: `GROUP BY file` read the
whole index, every run of every file (SQLite does no skip scan here), which the TUI asked for
every few seconds."""

_NEWEST_OF_FLOW = (
    "SELECT * FROM runs WHERE id IN ("
    "SELECT id FROM (SELECT id FROM runs WHERE flow=? ORDER BY id DESC LIMIT ?) UNION "
    "SELECT id FROM (SELECT id FROM runs WHERE file=? ORDER BY id DESC LIMIT ?)) ORDER BY id DESC LIMIT ?"
)
"""The newest runs of a flow by name or file, each side read newest first from its index and cut at
the limit (`flow=? OR file=?` with both indexed collected every run of the flow, then sorted them)."""

_RUNS_SIGNATURE = (
    "SELECT (SELECT value FROM meta WHERE key = 'runs_deleted'), "
    "MAX(COALESCE((SELECT MAX(id) FROM runs WHERE flow=?), 0), "
    "COALESCE((SELECT MAX(id) FROM runs WHERE file=?), 0)), "
    "(SELECT COUNT(*) FROM runs INDEXED BY runs_running WHERE status = 'running' AND (flow=? OR file=?))"
)
"""`History.runs_signature`: three index lookups and the runs running now (`runs_running` holds only
those), whatever the number of the flow's runs."""

_IDS_PER_QUERY = 500
"""Run ids bound in one query (SQLite allows at least 999 parameters)."""


class History(Owners, Cache):
    """Run history: create, read, pin and delete runs."""

    def create_run(self, flow: str, file: str, params: dict[str, Any], trigger: str, executor: str) -> int:
        """Insert a run synchronously (so `flow runs` sees it at once) and return its id."""

        owner = self._register()

        def insert() -> int:
            cursor = self._conn.execute(
                "INSERT INTO runs(flow, file, status, started_at, params, trigger, executor, pid, host, "
                "owner) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (flow, file, time.time(), dumps_json(params), trigger, executor, os.getpid(), self.host)
                + (owner,),
            )
            return int(cursor.lastrowid or 0)

        return int(self._guard(insert))

    def abandon_run(self, run_id: int, error: str) -> None:
        """Record a run the engine could not finish normally as `failed`, its unfinished steps with
        `error` (queued like every write, so it lands after the run's earlier rows)."""
        now = time.time()

        def fail(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE steps SET status='failed', finished_at=?, error=? "
                "WHERE run_id=? AND status IN ('running', 'pending')",
                (now, error, run_id),
            )
            conn.execute(
                "UPDATE runs SET status='failed', finished_at=COALESCE(finished_at, ?) WHERE id=?",
                (now, run_id),
            )

        self._write(fail)

    def previous_details(self, flow: str) -> dict[str, dict[str, Any]]:
        """For every step of `flow`, the fingerprint parts it had in the latest run that decided it:
        executed there, or cached (then the parts of the execution that stored that result); the
        parts of its last execution when neither is known."""
        rows = self._conn.execute(_PREVIOUS_DETAILS, (flow,)).fetchall()
        found = {name: json.loads(detail) for name, detail in rows if detail is not None}
        if len(found) < len(rows) or not rows:
            for name, detail in self._conn.execute(_LAST_EXECUTION_DETAILS, (flow,)):
                found.setdefault(name, json.loads(detail))
        return found

    def declared_inputs(self, run_id: int) -> dict[str, list[str]]:
        """Per step of a run, its declared inputs as it saw them: `file:PATH`, `pattern:P` (nothing
        matched) and `env:NAME` (a cached step: those of the execution that stored its result)."""
        found: dict[str, list[str]] = {}
        for name, detail in self._conn.execute(_RUN_DETAILS, (run_id,)):
            declared = json.loads(detail).get("declared") if detail else None
            if declared:
                kinds = ("file", "pattern", "env")
                found[name] = sorted(declared, key=lambda k: kinds.index(k.partition(":")[0]))
        return found

    def list_runs(self, flow: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, each with its steps."""
        if flow is None:
            rows = self._conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._conn.execute(_NEWEST_OF_FLOW, (flow, limit, flow, limit, limit)).fetchall()
        return [self._run(row) for row in rows]

    def runs_signature(self, flow: str) -> tuple[int, int, int]:
        """(runs ever deleted from the store, the newest id, how many are running) of `flow`'s runs,
        by name or file as `list_runs` selects them: it changes whenever any process records, ends
        or deletes one, so a view can tell cheaply that its history is out of date (the TUI looks
        every second). Each part is an index lookup (`runs_running`, `runs_deleted`: schema 13), not
        a read of every run of the flow. A database error is a `FlowError` naming the store."""
        deleted, newest, running = self._guard(
            lambda: self._conn.execute(_RUNS_SIGNATURE, (flow,) * 4).fetchone()
        )
        return int(deleted or 0), int(newest or 0), int(running or 0)

    def latest_statuses(self) -> dict[str, str]:
        """The status of the newest run of each flow file, by the file's path as its runs record it:
        what the TUI's flow list shows of a flow it does not follow by its events. A database error is
        a `FlowError` naming the store."""
        rows = self._guard(lambda: self._conn.execute(_NEWEST_BY_FILE).fetchall())
        return dict(rows)

    def get_run(self, run_id: int) -> RunRecord | None:
        row = self._conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return self._run(row) if row else None

    def latest_run_id(self, flow: str | None = None) -> int | None:
        runs = self.list_runs(flow, limit=1)
        return runs[0].id if runs else None

    def _run(self, row: tuple[Any, ...]) -> RunRecord:
        columns = (
            "id",
            "flow",
            "file",
            "status",
            "started_at",
            "finished_at",
            "params",
            "trigger",
            "executor",
        )
        data = dict(zip(columns, row[: len(columns)], strict=True))
        data["params"] = json.loads(data["params"])
        data["status"] = RunStatus(data["status"])
        run_id = int(data["id"])
        return RunRecord(**data, steps=tuple(self.get_steps(run_id)), outputs=self.run_outputs(run_id))

    def run_outputs(self, run_id: int) -> dict[str, FlowOutput]:
        """A run's flow outputs by name (empty for a flow that declares none)."""
        row = self._conn.execute("SELECT outputs FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return {}
        return {name: FlowOutput(**fields) for name, fields in json.loads(row[0]).items()}

    def flow_output(self, run_id: int, name: str) -> Any:
        """A flow output of a run as the Python object (for a command step's output: its text).

        Raises:
            FlowError: the run has no such output, or its step's output is no longer in the store.
        """
        from runner.flow_outputs import pick

        output = self.run_outputs(run_id).get(name)
        if output is None:
            raise FlowError(f"run #{run_id} has no flow output '{name}'")
        row = self._conn.execute(
            "SELECT output_hash FROM steps WHERE run_id=? AND name=?", (run_id, output.step)
        ).fetchone()
        if row is None or not row[0]:
            raise FlowError(f"run #{run_id}: step '{output.step}' left no output")
        try:
            value = pickle.loads(self.read_artifact(row[0]))
            return pick(value, output.key)
        except (ArtifactError, KeyError) as exc:
            raise FlowError(f"run #{run_id}: flow output '{name}' cannot be read ({exc})") from None

    def run_metrics(self, run_id: int) -> dict[str, dict[str, float]]:
        """Step -> metrics recorded in one run (cached steps carry them into later runs)."""
        metrics: dict[str, dict[str, float]] = {}
        for step, key, value in self._conn.execute(
            "SELECT step, key, value FROM metrics WHERE run_id=?", (run_id,)
        ):
            metrics.setdefault(step, {})[key] = value
        return metrics

    def metrics_by_fingerprint(self, run_ids: Collection[int]) -> dict[int, dict[str, dict[str, float]]]:
        """Per run asked for (each has an entry), fingerprint -> metrics recorded in it: what a cached
        step reuses. By fingerprint, not by name: a fan-out item may have had another index (so another
        name) in that run."""
        metrics: dict[int, dict[str, dict[str, float]]] = {run_id: {} for run_id in run_ids}
        ids = list(metrics)
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            for run_id, fingerprint, key, value in self._conn.execute(
                "SELECT m.run_id, s.fingerprint, m.key, m.value FROM metrics m "
                "JOIN steps s ON s.run_id=m.run_id AND s.name=m.step "
                f"WHERE m.run_id IN ({', '.join('?' * len(chunk))}) AND s.fingerprint IS NOT NULL",
                chunk,
            ):
                metrics[run_id].setdefault(fingerprint, {})[key] = value
        return metrics

    def computed_by(self, fingerprint: str | None, before: int) -> tuple[int, str] | None:
        """The latest run up to `before` that executed a step with `fingerprint`, and the step's name
        there: where a cached step's logs are."""
        if not fingerprint:
            return None
        row = self._conn.execute(
            "SELECT run_id, name FROM steps WHERE fingerprint=? AND run_id<=? AND detail IS NOT NULL "
            "AND status IN ('succeeded', 'failed') ORDER BY run_id DESC LIMIT 1",
            (fingerprint, before),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def get_steps(self, run_id: int) -> list[StepRecord]:
        metrics = self.run_metrics(run_id)
        records = []
        for row in self._conn.execute(
            "SELECT name, status, attempts, duration_s, error, reason, traceback, started_at, "
            "finished_at, fingerprint, output_hash, preview, where_ran, parent "
            "FROM steps WHERE run_id=? ORDER BY rowid",
            (run_id,),
        ):
            name, status, attempts, duration, error, reason, trace, started, finished, *rest = row
            fingerprint, output_hash, preview, where, parent = rest
            records.append(
                StepRecord(
                    name,
                    StepStatus(status),
                    attempts,
                    duration,
                    error,
                    reason,
                    trace,
                    started,
                    finished,
                    fingerprint,
                    output_hash,
                    preview,
                    where,
                    parent,
                    metrics=metrics.get(name, {}),
                )
            )
        return records

    def get_logs(
        self, run_id: int, step: str | None = None, *, after: int = 0, limit: int = 100_000
    ) -> list[LogLine]:
        """Log lines of a run (or one step), in order, with ids greater than `after`."""
        if step is None:
            rows = self._conn.execute(
                "SELECT id, run_id, step, ts, stream, line FROM logs WHERE run_id=? AND id>? "
                "ORDER BY id LIMIT ?",
                (run_id, after, limit),
            )
        else:
            rows = self._conn.execute(
                "SELECT id, run_id, step, ts, stream, line FROM logs WHERE run_id=? AND step=? "
                "AND id>? ORDER BY id LIMIT ?",
                (run_id, step, after, limit),
            )
        return [LogLine(*row) for row in rows]

    def pin_run(self, run_id: int, pinned: bool = True) -> bool:
        """Keep (or stop keeping) a run's results through `flow gc`; False if there is no such run."""
        return bool(
            self._guard(
                lambda: (
                    self._conn.execute("UPDATE runs SET pinned=? WHERE id=?", (int(pinned), run_id)).rowcount
                )
            )
        )

    def delete_run(self, run_id: int, *, reuse_id: bool = False) -> bool:
        """Remove a run, its steps, metrics and logs (artifacts stay until `flow gc`).

        `reuse_id`: the run never started (its plan was rejected): if it is the newest, its number
        is given back, so the next run is not numbered as if one had happened in between.
        """

        def delete() -> bool:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("DELETE FROM runs WHERE id=?", (run_id,)).rowcount > 0
                for table in ("steps", "metrics", "logs"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
                if reuse_id:
                    conn.execute(
                        "UPDATE sqlite_sequence SET seq=(SELECT COALESCE(MAX(id), 0) FROM runs) "
                        "WHERE name='runs' AND seq=?",
                        (run_id,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return found

        return bool(self._guard(delete))
