"""Provides `Sources`: the source text behind fingerprints and runs, kept so that a later plan,
`flow diff` and `flow debug` can show or run the code a result came from.

One table, content-addressed: one row per distinct hash, written once (by the recorder, with the rest of
a run's rows) and never updated. Two kinds of rows share it:

- a fingerprint part's source: the normalised text behind a step's `code` hash or one of its helpers'
  hashes, keyed by that hash as the step's fingerprint detail holds it (so no detail grows);
- a whole file the flow loaded (the flow file, each local module), keyed by the SHA-256 of its text;
  each run keeps the map path -> file hash of what it loaded (`runs.sources`).

`flow gc` removes the rows no kept run refers to (`unreferenced_sources`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from runner.store.base import StoreBase

_IN_CHUNK = 500
"""Hashes per `IN (...)` query (under SQLite's smallest limit of 999 parameters)."""


def text_hash(text: str) -> str:
    """The key of a whole file's text in the `sources` table."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Sources(StoreBase):
    """Reading the source texts kept in the store."""

    def source_texts(self, hashes: Iterable[str]) -> dict[str, str]:
        """The texts stored under these hashes (those the store does not have are left out)."""
        wanted = sorted(set(hashes))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT hash, text FROM sources WHERE hash IN ({marks})", chunk)
            found.update(dict(rows.fetchall()))
        return found

    def run_files(self, run_id: int) -> dict[str, str] | None:
        """The files a run loaded, path -> text; None when the run kept none (it predates schema 8,
        or `flow gc` collected them). A file whose text is gone maps to nothing (left out)."""
        row = self._conn.execute("SELECT sources FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return None
        hashes: dict[str, str] = json.loads(row[0])
        texts = self.source_texts(hashes.values())
        if len(texts) < len(set(hashes.values())):
            return None
        return {path: texts[digest] for path, digest in hashes.items()}

    def run_details(self, run_id: int) -> dict[str, dict[str, Any]]:
        """Each step's fingerprint parts in a run (a cached step: those of the execution it reused)."""
        rows = self._conn.execute(
            "SELECT s.name, COALESCE(s.detail, (SELECT d.detail FROM steps d WHERE "
            "d.fingerprint = s.fingerprint AND d.detail IS NOT NULL ORDER BY d.run_id DESC LIMIT 1)) "
            "FROM steps s WHERE s.run_id=?",
            (run_id,),
        )
        return {name: json.loads(detail) for name, detail in rows if detail}


def unreferenced_sources(conn: sqlite3.Connection, kept: set[int]) -> list[str]:
    """The source rows no kept run refers to: neither a file it loaded, nor the code or a helper of a
    step in it (a cached step: of the execution whose result it reused, found by fingerprint)."""
    referenced: set[str] = set()
    fingerprints: set[str] = set()
    for run_id, files in conn.execute("SELECT id, sources FROM runs"):
        if run_id in kept and files:
            referenced.update(json.loads(files).values())
    for run_id, fingerprint in conn.execute("SELECT run_id, fingerprint FROM steps"):
        if run_id in kept and fingerprint:
            fingerprints.add(fingerprint)
    for fingerprint, detail in conn.execute("SELECT fingerprint, detail FROM steps WHERE detail IS NOT NULL"):
        if fingerprint in fingerprints:
            parts = json.loads(detail)
            referenced.add(parts.get("code", ""))
            referenced.update(parts.get("helpers", {}).values())
    return [digest for (digest,) in conn.execute("SELECT hash FROM sources") if digest not in referenced]
