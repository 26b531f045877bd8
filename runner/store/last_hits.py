"""Provides what a new process's run reads of the cache first: the entries of the fingerprints the
flow's last finished run used (`read`), kept in one row per flow by the run that found them, as it
ends (`keep`: a new process's run, or a fully cached re-run, which carries the row over).

Joining every step row of the last run with the cache and the artifacts (and hashing each inline
artifact) was the largest part of a new process's fully cached re-run: ~3.5 µs of its ~20 a step. The
kept row is read and decoded in ~0.2.

An entry is the cache's row for its fingerprint, with whether its inline artifact matched its hash,
as the run found it or stored it. SQLite's triggers (`runner.store.schema`) count every change that
could make one stale (`hits_generation`): a row is read only at the count it was kept at, and kept
from the engine's memory only if the count did not move since the run read the entries it reused.
An entry the cache gained since is missing from it: that step asks the cache (`Cache.lookup`). A
kept row can make a step slower, never stale. One that cannot be decoded is ignored.
"""

from __future__ import annotations

import marshal
import sqlite3

from runner.artifacts import intact_inline
from runner.store.api import Hit, KeptHits, LastHits

HITS_OF_RUN = (
    "SELECT c.fingerprint, c.output_hash, c.run_id, c.preview, a.data FROM steps s "
    "JOIN cache c ON c.fingerprint = s.fingerprint "
    "LEFT JOIN artifacts a ON a.hash = c.output_hash "
    "WHERE s.run_id = ?"
)
"""The cache entries of one run's steps' fingerprints, each with its inline artifact's bytes."""

GENERATION = "(SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'hits_generation')"
"""The count of changes that may make a kept entry stale (`runner.store.schema`)."""

MARSHAL_VERSION = 4
"""`marshal`'s format for the kept rows: read by every Python since 3.4 (a store outlives a venv)."""


def hits_of_run(conn: sqlite3.Connection, run_id: int) -> dict[str, Hit]:
    """The entries of `HITS_OF_RUN`, inline artifacts verified against their hash."""
    return {
        fingerprint: (digest, source, preview, intact_inline(data, digest))
        for fingerprint, digest, source, preview, data in conn.execute(HITS_OF_RUN, (run_id,))
    }


def read(conn: sqlite3.Connection, flow: str) -> LastHits:
    """The entries of the flow's last finished run: its kept row, or the query when there is none.
    The generation is read before the entries (by the same statement as a kept row): if it moved
    meanwhile, the run keeps no row from what it read (`keep`)."""
    run_id, generation, kept = conn.execute(
        "SELECT r.id, g.value, h.hits "
        "FROM (SELECT MAX(id) AS id FROM runs WHERE flow=? AND status != 'running') r "
        f"JOIN (SELECT {GENERATION} AS value) g "
        "LEFT JOIN last_hits h ON h.flow = ? AND h.run_id = r.id AND h.generation = g.value",
        (flow, flow),
    ).fetchone()
    if run_id is None:
        return LastHits({}, generation, None)
    hits = _decoded(kept) if kept is not None else None
    if hits is not None:
        return LastHits(hits, generation, run_id)
    return LastHits(hits_of_run(conn, run_id), generation, None)


def _decoded(blob: bytes) -> dict[str, Hit] | None:
    try:
        hits = marshal.loads(blob)
    except (EOFError, ValueError, TypeError):
        return None
    return hits if type(hits) is dict else None


def keep(conn: sqlite3.Connection, flow: str, run_id: int, kept: KeptHits) -> None:
    """Keep entries for run `run_id` of `flow` as `kept` says (the writer calls this as the run ends,
    in its transaction); if what they rest on was counted as changed meanwhile, keep nothing (the next
    process reads the run's step rows instead)."""
    now = conn.execute(f"SELECT {GENERATION}").fetchone()[0]
    if kept.carry_from is not None:
        conn.execute(
            "UPDATE last_hits SET run_id=? WHERE flow=? AND run_id=? AND generation=?",
            (run_id, flow, kept.carry_from, now),
        )
    elif kept.found is not None and kept.generation == now:
        conn.execute(
            "INSERT OR REPLACE INTO last_hits(flow, run_id, generation, hits) VALUES (?, ?, ?, ?)",
            (flow, run_id, now, marshal.dumps(kept.found, MARSHAL_VERSION)),
        )
