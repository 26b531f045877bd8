"""Provides `StoreRecorder`: the subscriber that turns the engine's events into run-store rows.

Log lines and steps' rows are buffered and written in batches (many rows per statement), so a step
printing a million lines costs a few thousand transactions, not a million, and a 1,000-step run a few
dozen statements for its results, not thousands (steps' rows go in one batch with their outputs' rows:
`runner.store.rows`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial

from dsl.errors import FlowError
from runner.events import Event, RunFinished, RunStarted, StepFinished, StepLog, StepRetrying, StepStarted
from runner.records import dumps_detail, dumps_json
from runner.store import last_hits
from runner.store.api import KeptHits
from runner.store.base import StoreBase
from runner.store.rows import MultiRowInsert, insert_sources
from runner.store.sources import text_hash

LOG_BACKLOG = 20_000
"""Log lines buffered for the store before the scheduler waits for the writer (bounds memory)."""


class StoreRecorder:
    """Persists runs, steps, metrics and logs as events arrive (writes are queued, batched)."""

    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._logs: list[tuple[int, str, float, str, str]] = []
        self._lock = threading.Lock()
        self._details: dict[tuple[int, str], tuple[dict[str, object], str]] = {}
        self._sources_kept: set[str] = set()
        """Hashes of the source rows this recorder wrote (or found written): each is written once."""
        self._file_hashes: dict[str, tuple[str, str]] = {}
        """Path -> (the text last seen, its hash): a re-run of an unchanged load hashes nothing."""
        self._hits: dict[int, tuple[str, KeptHits]] = {}
        """Run id -> the flow and what `keep_hits` said to keep, until the run's end is written."""

    def __call__(self, event: Event) -> None:
        if type(event) is StepLog:  # the bulk of the events: as few steps as possible per line
            row = (event.run_id, event.step, event.ts, event.stream, event.line)
            with self._lock:
                logs = self._logs
                logs.append(row)
                backlog = len(logs)
            if backlog == 1:
                self._store._write(self._write_logs, seal=False)  # nothing is ordered against logs
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
            self._store.rows.step("started", started, [])
            return
        submit = self._store._write
        if isinstance(event, RunStarted):
            self._store.rows.pending(event.run_id, event.steps)
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
            hits = self._hits.pop(event.run_id, None)
            if hits is not None:
                submit(partial(last_hits.keep, flow=hits[0], run_id=event.run_id, kept=hits[1]))

    def _finished(self, event: StepFinished) -> None:
        parent = event.step.partition("[")[0] if event.step.endswith("]") else None
        detail = self._details.pop((event.run_id, event.step), None) if self._details else None
        metrics = (
            [(event.run_id, event.step, k, v) for k, v in event.metrics.items()] if event.metrics else []
        )
        if (
            event.status == "cached"
            and detail is None
            and not event.attempts
            and not event.duration_s
            and event.error is None
            and event.traceback is None
        ):
            cached = (
                event.run_id,
                event.step,
                parent,
                event.ts,
                event.reason,
                event.fingerprint,
                event.output_hash,
                event.preview,
            )
            self._store.rows.step("cached", cached, metrics)  # the same row, in fewer values
            return
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
        self._store.rows.step("finished", row, metrics)

    def write_held(self) -> None:
        self._store.rows.release()

    def keep_hits(self, run_id: int, flow: str, kept: KeptHits) -> None:
        self._hits[run_id] = (flow, kept)

    def record_detail(self, run_id: int, step: str, detail: dict[str, object], where: str) -> None:
        """Keep the fingerprint parts of an execution (what the next run compares against): they are
        written with the step's finished row, or when its run ends (a step stopped meanwhile)."""
        self._details[(run_id, step)] = (detail, where)

    def record_sources(self, run_id: int, files: Mapping[str, str]) -> None:
        """Keep the files a run loaded, path -> text (see `runner.store.sources`). Texts the store
        already has are not written again; a run of an unchanged load writes one small map."""
        new: list[tuple[str, str]] = []
        kept = self._sources_kept
        hashes: dict[str, str] = {}
        for path, text in files.items():
            known = self._file_hashes.get(path)
            if known is None or known[0] != text:  # a new load of the same file: equal, not hashed again
                known = self._file_hashes[path] = (text, text_hash(text))
            digest = hashes[path] = known[1]
            if digest not in kept:
                kept.add(digest)
                new.append((digest, text))
        listing = dumps_json(hashes)

        def write(conn: sqlite3.Connection) -> None:
            if new:
                insert_sources(conn, new)
            conn.execute("UPDATE runs SET sources=? WHERE id=?", (listing, run_id))

        self._store._write(write)

    def record_texts(self, texts: Mapping[str, str]) -> None:
        """Keep the fingerprint parts' normalised sources (hash -> text) of a step about to execute,
        with the next rows written. Only an execution's: a step taken from the cache has the parts of
        the execution that stored its result, whose texts that execution kept (and `flow gc` keeps a
        text exactly while a kept run refers to such an execution). A new process's fully cached run
        so writes none of its steps' texts again (1,000 steps: ~0.9 ms of the run's 20)."""
        kept = self._sources_kept
        new = [(digest, text) for digest, text in texts.items() if digest not in kept]
        if new:
            kept.update(digest for digest, _ in new)
            self._store.rows.sources(new)

    def _write_details(self, run_id: int) -> None:
        left = [(key, value) for key, value in self._details.items() if key[0] == run_id]
        for key, _ in left:
            del self._details[key]
        if left:
            self._store._write(
                lambda c: c.executemany(
                    "UPDATE steps SET detail=?, where_ran=? WHERE run_id=? AND name=?",
                    [(dumps_detail(detail), where, rid, name) for (rid, name), (detail, where) in left],
                )
            )

    def _write_logs(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            rows, self._logs = self._logs, []
        insert_logs(conn, rows)


LOG_CHUNK = 128
"""Log rows per INSERT statement (640 parameters: under SQLite's smallest limit of 999)."""

insert_logs = MultiRowInsert("INSERT INTO logs(run_id, step, ts, stream, line)", 5, LOG_CHUNK)
"""Insert log rows `(run_id, step, ts, stream, line)` in order, many per statement."""
