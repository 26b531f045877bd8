"""Provides `Cache`: the cache (fingerprint -> output) and the artifacts it names, verified against
their content hash before anything unpickles them."""

from __future__ import annotations

import sqlite3
import time

from runner.artifacts import (
    ArtifactError,
    Stamp,
    artifact_path,
    content_hash,
    format_stamp,
    intact_inline,
    parse_stamp,
    read_file_checked,
    trusted_stamp,
    verify_file,
)
from runner.store import last_hits
from runner.store.api import CacheHit, LastHits
from runner.store.base import StoreBase


class Cache(StoreBase):
    """Cache entries and artifacts."""

    def lookup(self, fingerprint: str, *, verify: bool = False) -> CacheHit | None:
        """The cache entry for a fingerprint; with `verify`, check an inline artifact in the same query."""
        if not verify:
            row = self._conn.execute(
                "SELECT output_hash, run_id, preview FROM cache WHERE fingerprint=?", (fingerprint,)
            ).fetchone()
            return CacheHit(row[0], row[1], row[2]) if row else None
        row = self._conn.execute(
            "SELECT c.output_hash, c.run_id, c.preview, a.data FROM cache c "
            "LEFT JOIN artifacts a ON a.hash = c.output_hash WHERE c.fingerprint=?",
            (fingerprint,),
        ).fetchone()
        if row is None:
            return None
        return CacheHit(row[0], row[1], row[2], intact_inline(row[3], row[0]))

    def cache_hits_of_last_run(self, flow: str) -> LastHits:
        """The cache entries of every fingerprint the flow's last finished run used, inline artifacts
        verified as `lookup(verify=True)` does (`runner.store.last_hits`): a re-run of an unchanged or
        slightly edited flow finds nearly every step here instead of asking once per step."""
        return last_hits.read(self._conn, flow)

    def cache_rows_after(self, rowid: int, limit: int) -> tuple[list[tuple[str, str]], int] | None:
        """(fingerprint, step) of the cache rows newer than `rowid`, and the newest rowid; None if
        there are more than `limit` (the caller then asks `lookup` instead of loading them)."""
        newest = self._conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM cache").fetchone()[0]
        if newest - rowid > limit:
            return None
        rows = self._conn.execute("SELECT fingerprint, step FROM cache WHERE rowid > ?", (rowid,)).fetchall()
        return rows, newest

    def artifact_location(self, digest: str, *, keep_stamp: bool = False) -> tuple[bytes | None, str | None]:
        """(inline bytes, None) or (None, file path) for an artifact, verified against its hash.

        `keep_stamp` (the engine, which writes to the store anyway): a file whose row has no stamp, or
        another (a store from before schema 10, a file copied back), and that this process could hash
        and trust, gets the stamp in its row, so later processes do not hash it again.

        Raises:
            ArtifactError: missing, or the content does not match the hash.
        """
        row = self._conn.execute("SELECT data, size, stamp FROM artifacts WHERE hash=?", (digest,)).fetchone()
        if row is None:
            raise ArtifactError(f"artifact {digest[:12]} is not in the store")
        data, size, stamp = row
        if data is not None:
            blob = bytes(data)
            if content_hash(blob) != digest:
                raise ArtifactError(f"artifact {digest[:12]} is corrupt (content hash mismatch)")
            return blob, None
        path = artifact_path(self.artifact_dir, digest)
        if not path.exists():
            raise ArtifactError(f"artifact {digest[:12]} is missing from {path}")
        verify_file(path, digest, size, stamp=parse_stamp(stamp))
        known = trusted_stamp(path, digest) if keep_stamp else None
        if known is not None and format_stamp(known) != stamp:
            text = format_stamp(known)
            self._write(
                lambda c: c.execute("UPDATE artifacts SET stamp=? WHERE hash=?", (text, digest)), seal=False
            )
        return None, str(path)

    def read_artifact(self, digest: str) -> bytes:
        data, path = self.artifact_location(digest)
        return data if data is not None else read_file_checked(path or "", digest)

    def forget_cache(self, fingerprint: str) -> None:
        """Drop a cache entry whose artifact turned out missing or corrupt, and the bad artifact row
        with it, so the re-run's good bytes replace it (artifact rows are written INSERT OR IGNORE)."""
        artifact_dir = self.artifact_dir

        def forget(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT output_hash FROM cache WHERE fingerprint=?", (fingerprint,)).fetchone()
            c.execute("DELETE FROM cache WHERE fingerprint=?", (fingerprint,))
            if row is None:
                return
            digest = row[0]
            found = c.execute("SELECT data, size FROM artifacts WHERE hash=?", (digest,)).fetchone()
            if found is None:
                return
            try:
                if found[0] is not None:
                    if content_hash(bytes(found[0])) != digest:
                        raise ArtifactError("corrupt")
                else:
                    verify_file(artifact_path(artifact_dir, digest), digest, found[1])
            except ArtifactError:
                c.execute("DELETE FROM artifacts WHERE hash=?", (digest,))

        self._write(forget)

    def gc_generation(self) -> str:
        """Changes each time `flow gc` removes cache entries (engines then forget what they remember)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key='gc_generation'").fetchone()
        return str(row[0]) if row else ""

    def record_output(
        self,
        digest: str,
        size: int,
        data: bytes | None,
        *,
        cache_as: str | None,
        step: str,
        run_id: int,
        preview: str | None,
        stamp: Stamp | None = None,
    ) -> None:
        """Store a step's output: its artifact row (with the bytes when they are inline; a file
        artifact was written by the worker already, which says what `stat` showed of it: `stamp`)
        and, with `cache_as`, its cache entry under that fingerprint. Batched with steps' rows
        (`runner.store.rows`): the step's own row never commits before them."""
        now = time.time()
        self.rows.output(
            (digest, size, data, now, None if stamp is None else format_stamp(stamp)),
            (cache_as, digest, step, run_id, now, preview) if cache_as is not None else None,
        )
