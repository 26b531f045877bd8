"""Provides `Operating`: releases (frozen sources, immutable rows), the release each run used, and the
last due time `flow serve` handled per served flow."""

from __future__ import annotations

import json
import time
from typing import Any

from runner.records import dumps_json
from runner.store.base import StoreBase


class Operating(StoreBase):
    """Releases and schedule state (`flow release`, `flow serve`)."""

    def add_release(
        self, name: str, flow: str, file: str, digest: str, sources: dict[str, str], params: dict[str, Any]
    ) -> int:
        """Insert the next version of release `name` and return its number (rows are never updated)."""

        def insert() -> int:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT MAX(version) FROM releases WHERE name=?", (name,)).fetchone()
                version = int(row[0] or 0) + 1
                conn.execute(
                    "INSERT INTO releases(name, version, flow, file, created_at, digest, sources, params)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, version, flow, file, time.time(), digest, json.dumps(sources), dumps_json(params)),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return version

        return int(self._guard(insert))

    def get_release(self, name: str, version: int | None = None) -> dict[str, Any] | None:
        """One release (the newest when `version` is None) with its frozen sources and parameters."""
        query = (
            "SELECT name, version, flow, file, created_at, digest, sources, params "
            "FROM releases WHERE name=? "
        )
        if version is None:
            row = self._conn.execute(query + "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
        else:
            row = self._conn.execute(query + "AND version=?", (name, version)).fetchone()
        if row is None:
            return None
        keys = ("name", "version", "flow", "file", "created_at", "digest", "sources", "params")
        release = dict(zip(keys, row, strict=True))
        release["sources"] = json.loads(release["sources"])
        release["params"] = json.loads(release["params"])
        return release

    def list_releases(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every release (or every version of `name`), newest first, without their sources."""
        query = "SELECT name, version, flow, file, created_at, digest FROM releases "
        args: tuple[Any, ...] = ()
        if name is not None:
            query += "WHERE name=? "
            args = (name,)
        rows = self._conn.execute(query + "ORDER BY name, version DESC", args).fetchall()
        keys = ("name", "version", "flow", "file", "created_at", "digest")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def link_run_release(self, run_id: int, name: str, version: int) -> None:
        """Record that run `run_id` ran release `name@version` (queued with the run's own rows)."""
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO run_releases(run_id, name, version) VALUES (?, ?, ?)",
                (run_id, name, version),
            )
        )

    def run_release(self, run_id: int) -> str | None:
        """`name@version` of the release a run used, if it ran one."""
        row = self._conn.execute(
            "SELECT name, version FROM run_releases WHERE run_id=?", (run_id,)
        ).fetchone()
        return f"{row[0]}@{row[1]}" if row else None

    def last_due(self, key: str) -> float | None:
        """The last due time `flow serve` handled for a served flow (`key`), as a Unix time."""
        row = self._conn.execute("SELECT last_due FROM schedule_state WHERE key=?", (key,)).fetchone()
        return float(row[0]) if row else None

    def set_last_due(self, key: str, due: float | None) -> None:
        """Remember that the due time `due` of a served flow has been handled (run or skipped);
        None forgets it (the flow is then new to the next server)."""
        if due is None:
            self._guard(lambda: self._conn.execute("DELETE FROM schedule_state WHERE key=?", (key,)))
            return
        self._guard(
            lambda: self._conn.execute(
                "INSERT OR REPLACE INTO schedule_state(key, last_due, updated_at) VALUES (?, ?, ?)",
                (key, due, time.time()),
            )
        )
