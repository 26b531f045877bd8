"""Provides `StoreRecorder`: the subscriber that turns the engine's events into run-store rows.

Log lines and finished steps' rows are buffered and written in batches (many rows per statement),
so a step printing a million lines costs a few thousand transactions, not a million, and a
1,000-step run a few dozen statements for its results, not a thousand.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from dsl.errors import FlowError
from runner.events import Event, RunFinished, RunStarted, StepFinished, StepLog, StepRetrying, StepStarted
from runner.records import dumps_json
from runner.store.base import StoreBase
from runner.store.sources import text_hash, write_sources

LOG_BACKLOG = 20_000
"""Log lines buffered for the store before the scheduler waits for the writer (bounds memory)."""


@dataclass
class _StepBatch:
    rows: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    """("started" or "finished", the row), in the order the events came."""
    metrics: list[tuple[int, str, str, float]] = field(default_factory=list)
    outputs_before: int = 0
    """How many outputs the store had queued when this batch's write was queued: a finished row whose
    output was queued after that must go to a later batch (see `_add_step_row`)."""


class StoreRecorder:
    """Persists runs, steps, metrics and logs as events arrive (writes are queued, batched)."""

    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._logs: list[tuple[int, str, float, str, str]] = []
        self._lock = threading.Lock()
        self._open: _StepBatch | None = None
        """Steps' started and finished rows waiting for the write already queued for them."""
        self._details: dict[tuple[int, str], tuple[dict[str, object], str]] = {}
        self._sources_kept: set[str] = set()
        """Hashes of the source rows this recorder wrote (or found written): each is written once."""
        self._file_hashes: dict[str, tuple[str, str]] = {}
        """Path -> (the text last seen, its hash): a re-run of an unchanged load hashes nothing."""

    def __call__(self, event: Event) -> None:
        if type(event) is StepLog:  # the bulk of the events: as few steps as possible per line
            row = (event.run_id, event.step, event.ts, event.stream, event.line)
            with self._lock:
                logs = self._logs
                logs.append(row)
                backlog = len(logs)
            if backlog == 1:
                self._store._write(self._write_logs)
            elif backlog >= LOG_BACKLOG:
                try:
                    self._store.flush()  # back-pressure: a step printing faster than SQLite writes waits
                except FlowError:
                    pass  # a failed write is sticky: the run's final flush reports it
            return
        if type(event) is StepFinished:
            self._finished(event)
            return
        if type(event) is StepStarted:
            parent = event.step.partition("[")[0] if event.step.endswith("]") else None
            started = (
                event.run_id,
                event.step,
                parent,
                "running",
                event.attempt,
                event.ts,
                event.reason,
                event.fingerprint,
            )
            self._add_step_row("started", started, [])
            return
        self._seal()
        submit = self._store._write
        if isinstance(event, RunStarted):
            rows = [(event.run_id, name) for name in event.steps]
            submit(
                lambda c: c.executemany(
                    "INSERT OR IGNORE INTO steps(run_id, name, status) VALUES (?, ?, 'pending')", rows
                )
            )
        elif isinstance(event, StepRetrying):
            submit(
                lambda c: c.execute(
                    "UPDATE steps SET error=? WHERE run_id=? AND name=?",
                    (f"attempt {event.attempt} failed: {event.error}", event.run_id, event.step),
                )
            )
        elif isinstance(event, RunFinished):
            self._write_details(event.run_id)
            submit(self._write_logs)
            if event.outputs:
                outputs = dumps_json({name: asdict(output) for name, output in event.outputs.items()})
                submit(lambda c: c.execute("UPDATE runs SET outputs=? WHERE id=?", (outputs, event.run_id)))
            submit(
                lambda c: c.execute(
                    "UPDATE runs SET status=?, finished_at=? WHERE id=?",
                    (str(event.status), event.ts, event.run_id),
                )
            )

    def _finished(self, event: StepFinished) -> None:
        parent = event.step.partition("[")[0] if event.step.endswith("]") else None
        detail = self._details.pop((event.run_id, event.step), None)
        row = (
            event.run_id,
            event.step,
            parent,
            str(event.status),  # a plain str: SQLite binds it without looking for an adapter
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
            detail[0] if detail else None,
            detail[1] if detail else None,
        )
        metrics = [(event.run_id, event.step, k, v) for k, v in event.metrics.items()]
        self._add_step_row("finished", row, metrics)

    def _add_step_row(
        self, kind: str, row: tuple[object, ...], metrics: list[tuple[int, str, str, float]]
    ) -> None:
        with self._lock:
            batch = self._open
            stale = batch is not None and batch.outputs_before != self._store.outputs_queued
            if stale and kind == "finished":
                # The batch's write was queued before this step's output row: if the writer took the
                # batch already, the two land in different transactions, and a kill between them would
                # leave a step claiming an artifact the store does not have.
                batch = self._open = None
            if batch is None:
                batch = self._open = _StepBatch(outputs_before=self._store.outputs_queued)
                new = True
            else:
                new = False
            batch.rows.append((kind, row))
            batch.metrics += metrics
        if new:
            self._store._write(lambda c: self._write_steps(c, batch))

    def _write_steps(self, conn: sqlite3.Connection, batch: _StepBatch) -> None:
        """Write a batch of step rows in order. A step that started and finished within the batch
        needs only its finished row (which carries everything), so a chain of quick steps costs a
        statement per batch instead of two per step."""
        with self._lock:
            if self._open is batch:
                self._open = None  # rows that come now go to a new batch, written after this one
        finished_later: set[tuple[object, object]] = set()
        kept: list[tuple[str, tuple[object, ...]]] = []
        for kind, row in reversed(batch.rows):
            key = (row[0], row[1])
            if kind == "finished":
                finished_later.add(key)
                if row[14] is not None:
                    row = (*row[:14], dumps_json(row[14]), row[15])
            elif key in finished_later:
                continue
            kept.append((kind, row))
        kept.reverse()
        start = 0
        while start < len(kept):
            kind = kept[start][0]
            end = start
            while end < len(kept) and kept[end][0] == kind:
                end += 1
            rows = [row for _, row in kept[start:end]]
            (insert_finished if kind == "finished" else insert_started)(conn, rows)
            start = end
        if batch.metrics:
            insert_metrics(conn, batch.metrics)

    def _seal(self) -> None:
        """Another step-row write is queued: finished rows after it must not join a batch before it
        (a `StepStarted` written after the same step's `StepFinished` would make it look running)."""
        with self._lock:
            self._open = None

    def record_detail(self, run_id: int, step: str, detail: dict[str, object], where: str) -> None:
        """Keep the fingerprint parts of an execution (what the next run compares against): they are
        written with the step's finished row, or when its run ends (a step stopped meanwhile)."""
        self._details[(run_id, step)] = (detail, where)

    def record_sources(
        self, run_id: int, files: Mapping[str, str], parts: Iterable[Mapping[str, str]]
    ) -> None:
        """Keep the source behind a run (see `runner.store.sources`): the files it loaded (path ->
        text) and its steps' fingerprint parts (hash -> normalised text). Texts the store already
        has are not written again; a run of an unchanged load writes one small map."""
        new: list[tuple[str, str]] = []
        kept = self._sources_kept
        hashes: dict[str, str] = {}
        for path, text in files.items():
            known = self._file_hashes.get(path)
            if known is None or known[0] is not text:
                known = self._file_hashes[path] = (text, text_hash(text))
            digest = hashes[path] = known[1]
            if digest not in kept:
                kept.add(digest)
                new.append((digest, text))
        for texts in parts:
            for digest, text in texts.items():
                if digest not in kept:
                    kept.add(digest)
                    new.append((digest, text))
        listing = dumps_json(hashes)

        def write(conn: sqlite3.Connection) -> None:
            if new:
                write_sources(conn, new)
            conn.execute("UPDATE runs SET sources=? WHERE id=?", (listing, run_id))

        self._store._write(write)

    def _write_details(self, run_id: int) -> None:
        left = [(key, value) for key, value in self._details.items() if key[0] == run_id]
        for key, _ in left:
            del self._details[key]
        if left:
            self._store._write(
                lambda c: c.executemany(
                    "UPDATE steps SET detail=?, where_ran=? WHERE run_id=? AND name=?",
                    [(dumps_json(detail), where, rid, name) for (rid, name), (detail, where) in left],
                )
            )

    def _write_logs(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            rows, self._logs = self._logs, []
        insert_logs(conn, rows)


LOG_CHUNK = 128
"""Log rows per INSERT statement (640 parameters: under SQLite's smallest limit of 999)."""


class MultiRowInsert:
    """One INSERT of many rows per statement, rows kept in order.

    `executemany` runs one statement per row, and releases and re-takes the GIL around each: with a
    flood of rows that hands the GIL back and forth thousands of times a second and stalls every
    other thread (the scheduler, the TUI's key handling). A statement of many rows does it once per
    chunk. Chunks are `chunk` rows, the tail in power-of-two pieces, so a handful of statements are
    ever compiled (the connection caches them).
    """

    def __init__(self, head: str, width: int, chunk: int, tail: str = "") -> None:
        group = "(" + ", ".join(["?"] * width) + ")"
        sizes = [chunk] + [2**i for i in range(chunk.bit_length() - 1, -1, -1) if 2**i < chunk]
        self._sql = {size: f"{head} VALUES {', '.join([group] * size)}{tail}" for size in sizes}

    def __call__(self, conn: sqlite3.Connection, rows: Sequence[Sequence[object]]) -> None:
        start, total = 0, len(rows)
        for size, sql in self._sql.items():
            while total - start >= size:
                chunk = rows[start : start + size]
                conn.execute(sql, [value for row in chunk for value in row])
                start += size


insert_logs = MultiRowInsert("INSERT INTO logs(run_id, step, ts, stream, line)", 5, LOG_CHUNK)
"""Insert log rows `(run_id, step, ts, stream, line)` in order, many per statement."""

_FINISHED_COLUMNS = (
    "run_id, name, parent, status, attempts, started_at, finished_at, duration_s, reason, error, "
    "traceback, fingerprint, output_hash, preview, detail, where_ran"
)
insert_finished = MultiRowInsert(
    f"INSERT INTO steps({_FINISHED_COLUMNS})",
    16,
    32,
    " ON CONFLICT(run_id, name) DO UPDATE SET "
    "status=excluded.status, attempts=excluded.attempts, "
    "started_at=COALESCE(steps.started_at, excluded.started_at), "
    "finished_at=excluded.finished_at, duration_s=excluded.duration_s, "
    "reason=excluded.reason, error=excluded.error, traceback=excluded.traceback, "
    "fingerprint=excluded.fingerprint, output_hash=excluded.output_hash, "
    "preview=excluded.preview, detail=COALESCE(excluded.detail, steps.detail), "
    "where_ran=COALESCE(excluded.where_ran, steps.where_ran)",
)
"""Upsert finished steps' rows (with the fingerprint parts of those that executed)."""
insert_started = MultiRowInsert(
    "INSERT INTO steps(run_id, name, parent, status, attempts, started_at, reason, fingerprint)",
    8,
    64,
    " ON CONFLICT(run_id, name) DO UPDATE SET status='running', attempts=excluded.attempts, "
    "started_at=excluded.started_at, reason=excluded.reason, fingerprint=excluded.fingerprint",
)
"""Upsert started steps' rows (status `running`)."""
insert_metrics = MultiRowInsert("INSERT OR REPLACE INTO metrics(run_id, step, key, value)", 4, 128)
