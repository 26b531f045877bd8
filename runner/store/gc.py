"""Provides `collect_garbage` (`flow gc`) and its `Policy`.

`collect_garbage` frees the results no kept run uses (`Policy`: each flow's last runs, pinned runs,
runs in progress, recent runs, a size cap): their cache entries and artifacts, plus artifact files no
row knows. It holds the store's write lock throughout and refuses to run beside a live run, so a run
can neither start nor finish while it decides what to free.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from runner.store.doctor import artifact_files, file_size
from runner.store.sources import unreferenced_sources
from runner.store.sqlite import Store


@dataclass(frozen=True)
class Policy:
    """What `flow gc` keeps.

    Attributes:
        keep_last: the results of each flow's last N runs (a run's results are the outputs its
            succeeded and cached steps used; a later run that reused an output keeps it alive).
        older_than_s: with it, results of runs that ended less than this long ago are kept too.
        max_size: then, while the kept artifacts exceed this many bytes, the oldest kept runs are
            dropped too, down to each flow's last run (pinned runs and runs in progress always stay).
    """

    keep_last: int = 10
    older_than_s: float | None = None
    max_size: int | None = None


@dataclass
class Collected:
    """What `flow gc` removed (or would remove, with `dry_run`)."""

    dry_run: bool
    runs: list[int] = field(default_factory=list)
    """Runs whose results were freed (their history stays; `flow show` still lists their steps)."""
    cache_entries: int = 0
    artifacts: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    sources: int = 0
    """Source texts (`runner.store.sources`) no kept run refers to any more."""
    kept_runs: int = 0
    kept_bytes: int = 0
    over_max_size: bool = False
    """`max_size` could not be met without dropping a pinned run, a run in progress or a flow's last run."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "runs": self.runs,
            "cache_entries": self.cache_entries,
            "artifacts": self.artifacts,
            "files": self.files,
            "bytes": self.bytes,
            "sources": self.sources,
            "kept_runs": self.kept_runs,
            "kept_bytes": self.kept_bytes,
            "over_max_size": self.over_max_size,
        }


def _kept_runs(conn: sqlite3.Connection, policy: Policy, now: float) -> tuple[list[int], set[int], set[int]]:
    """(every run id, oldest first; the runs the policy keeps; the kept runs `max_size` may not drop:
    pinned ones, those in progress, each flow's last run)."""
    rows = conn.execute(
        "SELECT id, flow, status, COALESCE(finished_at, started_at), pinned FROM runs ORDER BY id DESC"
    ).fetchall()
    kept: set[int] = set()
    fixed: set[int] = set()
    per_flow: dict[str, int] = {}
    for run_id, flow, status, ended, pinned in rows:
        rank = per_flow[flow] = per_flow.get(flow, 0) + 1
        always = bool(pinned) or status == "running"
        recent = policy.older_than_s is not None and ended > now - policy.older_than_s
        if always or rank <= policy.keep_last or recent:
            kept.add(run_id)
            if always or rank == 1:
                fixed.add(run_id)
    return [row[0] for row in reversed(rows)], kept, fixed


def collect_garbage(store: Store, policy: Policy | None = None, *, dry_run: bool = False) -> Collected:
    """Free the results no kept run uses: cache entries, artifacts (rows and files), and artifact
    files no row knows. The runs whose results go keep their history, marked `collected`.

    A cache entry is removed with its artifact, so a later run recomputes that step (never a cache
    entry naming a missing artifact). Holds the store's write lock throughout, so no run starts or
    finishes while it decides.

    Raises:
        FlowError: a live run is in progress on this store (gc would race it).
    """
    policy = policy or Policy()
    done = Collected(dry_run=dry_run)
    conn = store._conn
    store.mark_interrupted()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise FlowError(f"the store at {store.root} cannot be used: {exc}") from None
    try:
        for item in store.held():
            if item.kind == "run" and item.verdict.alive:
                raise FlowError(
                    f"run #{item.key} is in progress ({item.verdict.why}); run flow gc when no run is in "
                    "flight (if that process is gone: flow doctor --clear-stuck)"
                )
        now = time.time()
        order, kept, fixed = _kept_runs(conn, policy, now)
        outputs: dict[int, set[str]] = {}
        for run_id, digest in conn.execute(
            "SELECT run_id, output_hash FROM steps WHERE status IN ('succeeded', 'cached') "
            "AND output_hash IS NOT NULL"
        ):
            outputs.setdefault(run_id, set()).add(digest)
        sizes = {h: int(size or 0) for h, size in conn.execute("SELECT hash, size FROM artifacts")}
        uses: dict[str, int] = {}
        for run_id in kept:
            for digest in outputs.get(run_id, ()):
                uses[digest] = uses.get(digest, 0) + 1
        kept_bytes = sum(sizes.get(h, 0) for h in uses)
        if policy.max_size is not None:
            for run_id in order:
                if kept_bytes <= policy.max_size:
                    break
                if run_id not in kept or run_id in fixed:
                    continue
                kept.discard(run_id)
                for digest in outputs.get(run_id, ()):
                    uses[digest] -= 1
                    if not uses[digest]:
                        del uses[digest]
                        kept_bytes -= sizes.get(digest, 0)
            done.over_max_size = kept_bytes > policy.max_size
        done.kept_runs, done.kept_bytes = len(kept), kept_bytes
        done.artifacts = sorted(h for h in sizes if h not in uses)
        done.bytes = sum(sizes[h] for h in done.artifacts)
        freed = set(done.artifacts)
        collected = {r for (r,) in conn.execute("SELECT id FROM runs WHERE collected IS NOT NULL")}
        done.runs = [
            r for r in order if r not in kept and r not in collected and outputs.get(r, set()) & freed
        ]
        stale_cache = [
            (f,)
            for f, digest in conn.execute("SELECT fingerprint, output_hash FROM cache")
            if digest not in uses
        ]
        done.cache_entries = len(stale_cache)
        known = set(sizes) - freed
        for name, path in sorted(artifact_files(store).items()):
            if name not in known:
                done.files.append(str(path))
                if name not in freed:
                    done.bytes += file_size(path)
        stale_sources = unreferenced_sources(conn, kept)
        done.sources = len(stale_sources)
        if dry_run:
            conn.execute("ROLLBACK")
            return done
        conn.executemany("DELETE FROM cache WHERE fingerprint=?", stale_cache)
        conn.executemany("DELETE FROM artifacts WHERE hash=?", [(h,) for h in done.artifacts])
        conn.executemany("UPDATE runs SET collected=? WHERE id=?", [(now, r) for r in done.runs])
        conn.executemany("DELETE FROM sources WHERE hash=?", [(h,) for h in stale_sources])
        if stale_cache or done.artifacts:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('gc_generation', ?)", (repr(now),))
            # The deletes were counted (`runner.store.schema`): no kept row is read again; free them.
            conn.execute("DELETE FROM last_hits")
        # Files go while the write lock is held: no run can start (create_run waits) and re-create one.
        for file in done.files:
            Path(file).unlink(missing_ok=True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done
