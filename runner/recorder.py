"""Provides `StoreRecorder`: the subscriber that turns the engine's events into run-store rows.

Log lines are buffered and written in batches (`insert_logs`: many rows per statement), so a step
printing a million lines costs a few thousand transactions, not a million.
"""

from __future__ import annotations

import sqlite3
import threading

from dsl.errors import FlowError
from runner.events import Event, RunFinished, RunStarted, StepFinished, StepLog, StepRetrying, StepStarted
from runner.records import dumps_json
from runner.store import Store

LOG_BACKLOG = 20_000
"""Log lines buffered for the store before the scheduler waits for the writer (bounds memory)."""


class StoreRecorder:
    """Persists runs, steps, metrics and logs as events arrive (writes are queued, batched)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._logs: list[tuple[int, str, float, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if type(event) is StepLog:  # the bulk of the events: as few steps as possible per line
            row = (event.run_id, event.step, event.ts, event.stream, event.line)
            with self._lock:
                logs = self._logs
                logs.append(row)
                backlog = len(logs)
            if backlog == 1:
                self._store.submit(self._write_logs)
            elif backlog >= LOG_BACKLOG:
                try:
                    self._store.flush()  # back-pressure: a step printing faster than SQLite writes waits
                except FlowError:
                    pass  # a failed write is sticky: the run's final flush reports it
            return
        submit = self._store.submit
        if isinstance(event, RunStarted):
            rows = [(event.run_id, name) for name in event.steps]
            submit(
                lambda c: c.executemany(
                    "INSERT OR IGNORE INTO steps(run_id, name, status) VALUES (?, ?, 'pending')", rows
                )
            )
        elif isinstance(event, StepStarted):
            parent = event.step.partition("[")[0] if event.step.endswith("]") else None
            submit(
                lambda c: c.execute(
                    "INSERT INTO steps(run_id, name, parent, status, attempts, started_at, reason, "
                    "fingerprint)"
                    " VALUES (?, ?, ?, 'running', ?, ?, ?, ?) ON CONFLICT(run_id, name) DO UPDATE SET "
                    "status='running', attempts=excluded.attempts, started_at=excluded.started_at, "
                    "reason=excluded.reason, fingerprint=excluded.fingerprint",
                    (
                        event.run_id,
                        event.step,
                        parent,
                        event.attempt,
                        event.ts,
                        event.reason,
                        event.fingerprint,
                    ),
                )
            )
        elif isinstance(event, StepRetrying):
            submit(
                lambda c: c.execute(
                    "UPDATE steps SET error=? WHERE run_id=? AND name=?",
                    (f"attempt {event.attempt} failed: {event.error}", event.run_id, event.step),
                )
            )
        elif isinstance(event, StepFinished):
            self._finished(event)
        elif isinstance(event, RunFinished):
            submit(self._write_logs)
            submit(
                lambda c: c.execute(
                    "UPDATE runs SET status=?, finished_at=? WHERE id=?",
                    (event.status, event.ts, event.run_id),
                )
            )

    def _finished(self, event: StepFinished) -> None:
        parent = event.step.partition("[")[0] if event.step.endswith("]") else None
        row = (
            event.run_id,
            event.step,
            parent,
            event.status,
            event.attempts,
            event.ts - event.duration_s,
            event.ts,
            event.duration_s,
            event.reason,
            event.error,
            event.traceback,
            event.fingerprint,
            event.output_hash,
            event.preview,
        )
        metrics = [(event.run_id, event.step, k, v) for k, v in event.metrics.items()]

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO steps(run_id, name, parent, status, attempts, started_at, finished_at, "
                "duration_s, reason, error, traceback, fingerprint, output_hash, preview) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, name) DO UPDATE SET "
                "status=excluded.status, attempts=excluded.attempts, "
                "started_at=COALESCE(steps.started_at, excluded.started_at), "
                "finished_at=excluded.finished_at, duration_s=excluded.duration_s, "
                "reason=excluded.reason, error=excluded.error, traceback=excluded.traceback, "
                "fingerprint=excluded.fingerprint, output_hash=excluded.output_hash, "
                "preview=excluded.preview",
                row,
            )
            if metrics:
                c.executemany(
                    "INSERT OR REPLACE INTO metrics(run_id, step, key, value) VALUES (?, ?, ?, ?)", metrics
                )

        self._store.submit(write)

    def record_detail(self, run_id: int, step: str, detail: dict[str, object], where: str) -> None:
        """Store the fingerprint parts of an execution (what the next run compares against)."""
        self._store.submit(  # serialised on the writer thread, off the scheduler's path
            lambda c: c.execute(
                "UPDATE steps SET detail=?, where_ran=? WHERE run_id=? AND name=?",
                (dumps_json(detail), where, run_id, step),
            )
        )

    def _write_logs(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            rows, self._logs = self._logs, []
        insert_logs(conn, rows)


LOG_CHUNK = 128
"""Log rows per INSERT statement (640 parameters: under SQLite's smallest limit of 999)."""


def _insert_sql(count: int) -> str:
    return "INSERT INTO logs(run_id, step, ts, stream, line) VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * count)


_INSERT_SQL = {size: _insert_sql(size) for size in (LOG_CHUNK, 64, 32, 16, 8, 4, 2, 1)}


def insert_logs(conn: sqlite3.Connection, rows: list[tuple[int, str, float, str, str]]) -> None:
    """Insert log rows in order, many per statement.

    `executemany` runs one statement per row, and releases and re-takes the GIL around each: with a
    flood of lines that hands the GIL back and forth thousands of times a second and stalls every
    other thread (the TUI's key handling among them). A statement of many rows does it once per
    chunk. Chunks are LOG_CHUNK rows, the tail in power-of-two pieces, so a handful of statements
    are ever compiled (the connection caches them).
    """
    start, total = 0, len(rows)
    for size in _INSERT_SQL:
        sql = _INSERT_SQL[size]
        while total - start >= size:
            chunk = rows[start : start + size]
            conn.execute(sql, [value for row in chunk for value in row])
            start += size
