"""Provides `RowBatches`: a run's step outputs and step rows, gathered into one write per batch, and
`MultiRowInsert` (many rows per statement).

A step's result is three writes: its artifact row, its cache entry and its finished row (and a
`started` row when it began, and the `pending` row every step of a run gets as the run starts).
Queued one by one, a 1,000-step chain made four statements and two queued
writes a step, the writer thread's whole cost (a fifth of the runner's CPU). Gathered, consecutive steps'
rows share one queued write and one statement per table.

The order the rows would have had as separate writes is kept where it matters: a batch takes only rows
that come one after another, since any other write queued meanwhile closes it (`seal`: a lease released,
an artifact forgotten, a run finished must not be overtaken), and it is written in one transaction,
so a step's finished row never commits before its output's artifact and cache rows. Log lines, which
nothing orders against, do not close it. Of a step's rows within one batch (pending, started,
finished) only the last is written: a fully cached run of 1,000 steps so writes 1,000 finished rows,
not 1,000 pending rows before them (2 ms of the writer's 8, all of it waited for by the run's last flush).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain, groupby, repeat
from operator import itemgetter
from typing import Any, cast

from runner.records import dumps_detail

sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
"""None binds as NULL, as before, but found in the adapters' table: unregistered, sqlite3 looks for a
`__adapt__` and a `__conform__` on every None it binds (two failed attribute lookups: ~1 µs a value
here, against 0.15 for an int), and a step's row binds up to six of them. `{}.get(None)` is None, in C."""


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
                conn.execute(sql, list(chain.from_iterable(chunk)))
                start += size


insert_artifacts = MultiRowInsert(
    "INSERT INTO artifacts(hash, size, data, created_at, stamp)",
    5,
    64,
    " ON CONFLICT(hash) DO UPDATE SET stamp = excluded.stamp, data = excluded.data",
)
"""Artifact rows `(hash, size, data, created_at, stamp)`; one already there (same hash, so the same
bytes) takes the new stamp, since the file was written again (a new inode) and the old stamp no longer
describes it, and the new inline bytes: the same, unless the row's had been damaged, which they
repair (and which counts as a change for the entries kept of the cache: `runner.store.schema`)."""
insert_cache = MultiRowInsert(
    "INSERT OR REPLACE INTO cache(fingerprint, output_hash, step, run_id, created_at, preview)", 6, 64
)
"""Cache entries `(fingerprint, output_hash, step, run_id, created_at, preview)`, a later one replacing."""

_FINISHED_COLUMNS = (
    "run_id, name, parent, status, attempts, started_at, finished_at, duration_s, reason, error, "
    "traceback, fingerprint, output_hash, preview, detail, where_ran"
)
_FINISHED_UPSERT = (
    " ON CONFLICT(run_id, name) DO UPDATE SET "
    "status=excluded.status, attempts=excluded.attempts, "
    "started_at=COALESCE(steps.started_at, excluded.started_at), "
    "finished_at=excluded.finished_at, duration_s=excluded.duration_s, "
    "reason=excluded.reason, error=excluded.error, traceback=excluded.traceback, "
    "fingerprint=excluded.fingerprint, output_hash=excluded.output_hash, "
    "preview=excluded.preview, detail=COALESCE(excluded.detail, steps.detail), "
    "where_ran=COALESCE(excluded.where_ran, steps.where_ran)"
)
insert_finished = MultiRowInsert(f"INSERT INTO steps({_FINISHED_COLUMNS})", 16, 32, _FINISHED_UPSERT)
"""Upsert finished steps' rows (with the fingerprint parts of those that executed)."""
insert_started = MultiRowInsert(
    "INSERT INTO steps(run_id, name, parent, status, attempts, started_at, reason, fingerprint)",
    8,
    64,
    " ON CONFLICT(run_id, name) DO UPDATE SET status='running', attempts=excluded.attempts, "
    "started_at=excluded.started_at, reason=excluded.reason, fingerprint=excluded.fingerprint",
)
"""Upsert started steps' rows (status `running`)."""
insert_cached = MultiRowInsert(
    f"INSERT INTO steps({_FINISHED_COLUMNS}) SELECT column1, column2, column3, 'cached', 0, column4, "
    "column4, 0.0, column5, NULL, NULL, column6, column7, column8, NULL, NULL FROM (",
    8,
    32,
    ") WHERE true" + _FINISHED_UPSERT,
)
"""Upsert cached steps' finished rows `(run_id, name, parent, finished_at, reason, fingerprint,
output_hash, preview)`: the row `insert_finished` writes for a step taken from the cache, its constant
columns in the statement. Binding a value costs more than SQLite's work for it (16 values a row: 9 µs,
8: 4), and a fully cached run's rows are all of this kind. (`WHERE true`: an upsert's SELECT needs a
WHERE, or SQLite reads its ON as a join's.)"""
insert_pending = MultiRowInsert(
    "INSERT OR IGNORE INTO steps(run_id, name, status) SELECT column1, column2, 'pending' FROM (", 2, 64, ")"
)
"""A starting run's step rows `(run_id, name)`, each `pending`; a row already there is kept."""
insert_sources = MultiRowInsert("INSERT OR IGNORE INTO sources(hash, text)", 2, 64)
"""Source rows `(hash, text)` (`runner.store.sources`); a hash already there is kept as it is."""
insert_metrics = MultiRowInsert("INSERT OR REPLACE INTO metrics(run_id, step, key, value)", 4, 128)

DETAIL = 14
"""Where a finished row holds its fingerprint parts (a dict, written as JSON)."""
PENDING = "pending run"
"""The kind of a batch entry that stands for every step of a starting run (`RowBatches.pending`)."""


@dataclass
class _Batch:
    artifacts: list[tuple[object, ...]] = field(default_factory=list)
    cache: list[tuple[object, ...]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    """Each row's kind ("started", "finished", "cached" or `PENDING`), in the order they came."""
    steps: list[tuple[object, ...]] = field(default_factory=list)
    """The rows (for `PENDING`: the run id and its steps' names), kinds apart: a (kind, row) pair a
    row was one more object per step for the collector to walk."""
    metrics: list[tuple[int, str, str, float]] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)


class RowBatches:
    """The open batch of a store's output and step rows, and its one queued write.

    `queue` is the store's write queue (`StoreBase._write`). A batch is queued when its first row
    comes; rows join it until the writer takes it or another write is queued (`seal`). A batch that a
    starting run's steps opened is held instead, until `release` (see `pending`).
    """

    def __init__(self, queue: Callable[[Callable[[sqlite3.Connection], object]], None]) -> None:
        self._queue = queue
        self._lock = threading.Lock()
        self._open: _Batch | None = None
        self._held: _Batch | None = None
        """The open batch, not queued yet (`pending`)."""

    def output(
        self,
        artifact: tuple[object, ...],
        cache: tuple[object, ...] | None,
    ) -> None:
        """A step's output: its artifact row and, if it is to be reused, its cache entry."""
        with self._lock:
            batch, new = self._batch()
            batch.artifacts.append(artifact)
            if cache is not None:
                batch.cache.append(cache)
        if new:
            self._send(batch)

    def step(self, kind: str, row: tuple[object, ...], metrics: list[tuple[int, str, str, float]]) -> None:
        """A step's `started`, `finished` or `cached` row (and a finished step's metrics)."""
        with self._lock:
            batch, new = self._batch()
            batch.kinds.append(kind)
            batch.steps.append(row)
            if metrics:
                batch.metrics += metrics
        if new:
            self._send(batch)

    def sources(self, rows: list[tuple[str, str]]) -> None:
        """Source texts `(hash, text)` of steps about to execute (`StoreRecorder.record_texts`)."""
        with self._lock:
            batch, new = self._batch()
            batch.sources += rows
        if new:
            self._send(batch)

    def pending(self, run_id: int, names: Sequence[str]) -> None:
        """A starting run's steps: their rows (pending) before any step's. Kept as one entry, made into
        rows by the writer only for the steps that have no later row in the batch (a fully cached run's
        1,000 steps made 2,000 tuples here that lived until the writer dropped them).

        The batch this opens is held until `release`, which the scheduler calls before it waits: the
        rows of the run's first decisions join it, and a step decided then (cached, skipped, started)
        has its own row where its pending row stood, written once. A 10,000-step run decided at once
        from the cache wrote 10,000 pending rows while it decided, then overwrote each (~1 µs a step).
        Another write queued meanwhile, or a flush, queues the held batch first (`seal`)."""
        with self._lock:
            batch, new = self._batch()
            batch.kinds.append(PENDING)
            batch.steps.append((run_id, names))
            if new:
                self._held = batch

    def release(self) -> None:
        """Queue the held batch's write, if a batch is held (see `pending`)."""
        with self._lock:
            batch, self._held = self._held, None
        if batch is not None:
            self._send(batch)

    def seal(self) -> None:
        """Another write is about to be queued: rows that come after it go to a batch after it (a
        held batch is queued now, before it)."""
        with self._lock:
            self._open = None
            batch, self._held = self._held, None
        if batch is not None:
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        """Queue the batch's one write (rows that come until the writer takes it still join it)."""
        self._queue(lambda conn: self._write(conn, batch))

    def _batch(self) -> tuple[_Batch, bool]:
        if self._open is not None:
            return self._open, False
        self._open = _Batch()
        return self._open, True

    def _write(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        """Write a batch (on the writer thread, inside its transaction). Of a step's rows within the
        batch only the last is written (it carries everything), where its first one stood: a run's
        steps are listed in the order their first rows came (`flow show`).

        One dict does both: keyed by step, a key keeps the place it was first given while its value
        is replaced. A starting run's entry gives each of its steps a place (`None`: no row of its
        own yet, a pending row)."""
        with self._lock:
            if self._open is batch:
                self._open = None  # rows that come now go to a new batch, written after this one
        if batch.sources:
            insert_sources(conn, batch.sources)
        if batch.artifacts:
            insert_artifacts(conn, batch.artifacts)
        if batch.cache:
            insert_cache(conn, batch.cache)
        last: dict[tuple[object, object], tuple[str, tuple[object, ...]] | None] = {}
        for kind, row in zip(batch.kinds, batch.steps, strict=True):
            if kind is PENDING:
                run_id, names = row
                for step in zip(repeat(run_id), cast("Sequence[str]", names)):
                    last.setdefault(step)
                continue
            if kind == "finished" and row[DETAIL] is not None:
                row = (*row[:DETAIL], dumps_detail(cast("dict[str, Any]", row[DETAIL])), *row[DETAIL + 1 :])
            last[row[0], row[1]] = (kind, row)
        entries = (("pending", key) if entry is None else entry for key, entry in last.items())
        for kind, group in groupby(entries, key=itemgetter(0)):
            _INSERTS[kind](conn, [row for _, row in group])
        if batch.metrics:
            insert_metrics(conn, batch.metrics)


_INSERTS = {
    "pending": insert_pending,
    "started": insert_started,
    "finished": insert_finished,
    "cached": insert_cached,
}
