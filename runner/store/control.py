"""Provides `Control`: what one process asks of another through the store, and what must survive a
crash of the runner: `flow stop` requests, and the handles of external jobs (`dsl.jobs`).

A stop request is a row the process that owns the run picks up within a fraction of a second
(`runner.engine.stops`), whatever that process is: `flow run`, a loop, `flow serve`, the TUI. A job's
handle is written (and committed) as soon as its `start` returned, before the first poll: after a
crash, `flow resume` finds the job still `running` here and polls it again instead of starting it twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from runner.store.api import JobRecord
from runner.store.base import StoreBase

JOB_RUNNING = "running"
"""A job's status while it is in flight (the others are `succeeded`, `failed`, `killed`,
`kill failed` and `adopted` for a job a later run re-attached to)."""


_JOB_COLUMNS = "run_id, step, fingerprint, handle, handle_text, status, detail, polls, started_at, updated_at"


class Control(StoreBase):
    """Stop requests and external jobs (`flow stop`, `dsl.jobs`)."""

    def request_stop(self, run_id: int, by: str) -> None:
        """Ask the process running `run_id` to stop it (committed now: another process waits for it)."""
        self._guard(
            lambda: self._conn.execute(
                "INSERT OR REPLACE INTO stop_requests(run_id, requested_at, requested_by) VALUES (?, ?, ?)",
                (run_id, time.time(), by),
            )
        )

    def stop_requests(self, run_ids: Iterable[int]) -> list[int]:
        """Those of `run_ids` someone asked to stop (an older store without the table: none)."""
        ids = list(run_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        try:
            rows = self._conn.execute(f"SELECT run_id FROM stop_requests WHERE run_id IN ({marks})", ids)
            return [int(row[0]) for row in rows]
        except sqlite3.OperationalError:
            return []

    def record_job(
        self, run_id: int, step: str, fingerprint: str, handle: bytes, handle_text: str, status: str
    ) -> None:
        """A job started (or was adopted): its handle, committed before this returns."""
        now = time.time()
        self._write(
            lambda c: c.execute(
                f"INSERT OR REPLACE INTO jobs({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, '', 0, ?, ?)",
                (run_id, step, fingerprint, handle, handle_text, status, now, now),
            )
        )
        self.flush()

    def update_job(
        self, run_id: int, step: str, status: str, *, polls: int | None = None, detail: str = ""
    ) -> None:
        """A job's latest status (queued with the run's other writes)."""
        self._write(
            lambda c: c.execute(
                "UPDATE jobs SET status=?, detail=?, polls=COALESCE(?, polls), updated_at=? "
                "WHERE run_id=? AND step=?",
                (status, detail, polls, time.time(), run_id, step),
            )
        )

    def jobs_of(self, run_id: int) -> list[JobRecord]:
        """The jobs a run started or adopted, by step."""
        try:
            rows = self._conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE run_id=? ORDER BY step", (run_id,)
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [JobRecord(*row) for row in rows]

    def job_in_flight(self, run_id: int, step: str) -> JobRecord | None:
        """The job `step` of run `run_id` started and nobody saw end, if any."""
        return next((j for j in self.jobs_of(run_id) if j.step == step and j.status == JOB_RUNNING), None)
