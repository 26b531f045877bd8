"""Provides `diagnose` (`flow doctor`) and `collect_garbage` (`flow gc`): verify and tidy a run store.

`diagnose` checks what the store promises (docs/guarantees.md): SQLite's own integrity check, that
every cache entry and every step recorded as finished points at an artifact whose bytes match its
hash, and it lists what a crash leaves behind — runs that were interrupted, artifact files no row
knows (written by a worker just before the runner died), artifacts nothing references any more.
Problems (exit 1) are things the store promised would not happen; notes are expected leftovers.

`collect_garbage` frees the results no kept run uses (`Policy`: each flow's last runs, pinned runs,
runs in progress, recent runs, a size cap): their cache entries and artifacts, plus artifact files no
row knows. It holds the store's write lock throughout and refuses to run beside a live run, so a run
can neither start nor finish while it decides what to free.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from runner.artifacts import ArtifactError, content_hash, verify_file
from runner.store import Held, Store

_REFERENCED = (
    "SELECT output_hash FROM cache UNION "
    "SELECT output_hash FROM steps WHERE output_hash IS NOT NULL AND status IN ('succeeded', 'cached')"
)


@dataclass
class Diagnosis:
    """What `flow doctor` found. `healthy` is False when any `problems` were found."""

    store: str
    integrity: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted_runs: list[int] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    orphan_bytes: int = 0
    unreferenced_artifacts: list[str] = field(default_factory=list)
    unreferenced_bytes: int = 0
    bad_artifacts: list[str] = field(default_factory=list)
    checked_artifacts: int = 0
    checked_steps: int = 0
    in_progress: list[str] = field(default_factory=list)
    """Runs and leases of live processes."""
    stuck: list[str] = field(default_factory=list)
    """Runs and leases whose holder is not proven alive (`flow doctor --clear-stuck` gives them up)."""

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "healthy": self.healthy,
            "integrity": self.integrity,
            "problems": self.problems,
            "notes": self.notes,
            "interrupted_runs": self.interrupted_runs,
            "orphan_files": self.orphan_files,
            "orphan_bytes": self.orphan_bytes,
            "unreferenced_artifacts": self.unreferenced_artifacts,
            "unreferenced_bytes": self.unreferenced_bytes,
            "bad_artifacts": self.bad_artifacts,
            "checked_artifacts": self.checked_artifacts,
            "checked_steps": self.checked_steps,
            "in_progress": self.in_progress,
            "stuck": self.stuck,
        }


def _artifact_files(store: Store) -> dict[str, Path]:
    """Every file under `artifacts/`, by name (hash, or `.tmp-…` for an unfinished write)."""
    found: dict[str, Path] = {}
    root = store.artifact_dir
    if not root.is_dir():
        return found
    for directory, _, files in os.walk(root):
        for name in files:
            found[name] = Path(directory) / name
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fan_out_parents(conn: sqlite3.Connection) -> set[tuple[int, str]]:
    """(run, step) of fan-out steps: their output hash names the list of their instances' outputs."""
    rows = conn.execute("SELECT DISTINCT run_id, parent FROM steps WHERE parent IS NOT NULL")
    return {(run_id, parent) for run_id, parent in rows}


def diagnose(store: Store) -> Diagnosis:
    """Verify a store (reads every artifact; marks runs whose runner died as interrupted first)."""
    report = Diagnosis(store=str(store.root))
    for problem in store.permission_problems(files=True):
        fix = f"chmod -R go-w {store.root}" if "writable" in problem else f"chown -R $USER {store.root}"
        report.problems.append(f"{problem}; anyone who can write there can plant a pickle (fix: {fix})")
    conn = store.conn
    try:
        store.mark_interrupted()
    except sqlite3.DatabaseError as exc:
        report.notes.append(f"could not mark dead runs interrupted (store not writable?): {exc}")
    try:
        report.integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        report.integrity = [str(exc)]
        report.problems.append(f"the database cannot be read: {exc}")
        return report
    if report.integrity != ["ok"]:
        report.problems.append("PRAGMA integrity_check: " + "; ".join(report.integrity[:5]))

    rows = {h: (size, data) for h, size, data in conn.execute("SELECT hash, size, data FROM artifacts")}
    files = _artifact_files(store)
    bad: dict[str, str] = {}
    for digest, (size, data) in rows.items():
        report.checked_artifacts += 1
        try:
            if data is not None:
                if content_hash(bytes(data)) != digest:
                    raise ArtifactError(f"artifact {digest[:12]} is corrupt (content hash mismatch)")
            else:
                path = files.get(digest)
                if path is None:
                    raise ArtifactError(f"artifact {digest[:12]} is missing (no file)")
                verify_file(path, digest, size)
        except ArtifactError as exc:
            bad[digest] = str(exc)

    referenced = {h for (h,) in conn.execute(_REFERENCED)}
    fan_outs = _fan_out_parents(conn)
    for fingerprint, digest, step in conn.execute("SELECT fingerprint, output_hash, step FROM cache"):
        if digest not in rows:
            report.problems.append(
                f"cache entry of step '{step}' ({fingerprint[:12]}) has no artifact {digest[:12]}"
            )
        elif digest in bad:
            report.problems.append(f"cache entry of step '{step}' ({fingerprint[:12]}): {bad[digest]}")
    for run_id, name, status, digest in conn.execute(
        "SELECT run_id, name, status, output_hash FROM steps "
        "WHERE status IN ('succeeded', 'cached') AND output_hash IS NOT NULL "
        "AND run_id NOT IN (SELECT id FROM runs WHERE collected IS NOT NULL)"  # results freed by gc
    ):
        report.checked_steps += 1
        if (run_id, name) in fan_outs or digest == "none":
            continue
        if digest not in rows:
            report.problems.append(
                f"run #{run_id} step '{name}' is {status} but its artifact {digest[:12]} is gone"
            )
        elif digest in bad:
            report.problems.append(f"run #{run_id} step '{name}' is {status} but {bad[digest]}")
    for digest, message in bad.items():
        if digest in referenced:
            report.bad_artifacts.append(digest)
        else:
            report.notes.append(f"unreferenced {message} (flow gc removes it)")

    for name, path in files.items():
        if name not in rows:
            report.orphan_files.append(str(path))
            report.orphan_bytes += _size(path)
    for digest, (size, _) in rows.items():
        if digest not in referenced:
            report.unreferenced_artifacts.append(digest)
            report.unreferenced_bytes += int(size or 0)
    if report.orphan_files:
        report.notes.append(
            f"{len(report.orphan_files)} artifact file(s) no row knows ({_human(report.orphan_bytes)}), "
            "left by a run that was killed while writing; flow gc removes them"
        )
    if report.unreferenced_artifacts:
        report.notes.append(
            f"{len(report.unreferenced_artifacts)} artifact(s) no run or cache entry references "
            f"({_human(report.unreferenced_bytes)}); flow gc removes them"
        )
    interrupted = conn.execute("SELECT id FROM runs WHERE status='interrupted' ORDER BY id")
    report.interrupted_runs = [rid for (rid,) in interrupted]
    if report.interrupted_runs:
        shown = ", ".join(f"#{r}" for r in report.interrupted_runs[-10:])
        report.notes.append(
            f"{len(report.interrupted_runs)} run(s) were interrupted (runner killed or crashed): {shown}; "
            "their finished steps are kept and reused"
        )
    for line, stuck in held_lines(store.held()):
        (report.stuck if stuck else report.in_progress).append(line)
        report.notes.append(line)
    return report


def held_lines(held: list[Held]) -> list[tuple[str, bool]]:
    """One line per run in progress or lease held elsewhere, and whether it may be stuck."""
    lines = []
    for item in held:
        what = f"run #{item.key} of {item.step}" if item.kind == "run" else f"the lease on step '{item.step}'"
        if not item.verdict.alive:
            continue
        if item.verdict.proven:
            lines.append((f"{what} is in progress: {item.verdict.why}", False))
        else:
            lines.append(
                (
                    f"{what} may be stuck: {item.verdict.why}; "
                    "if that process is gone: flow doctor --clear-stuck",
                    True,
                )
            )
    return lines


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
    conn = store.conn
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
        for name, path in sorted(_artifact_files(store).items()):
            if name not in known:
                done.files.append(str(path))
                if name not in freed:
                    done.bytes += _size(path)
        if dry_run:
            conn.execute("ROLLBACK")
            return done
        conn.executemany("DELETE FROM cache WHERE fingerprint=?", stale_cache)
        conn.executemany("DELETE FROM artifacts WHERE hash=?", [(h,) for h in done.artifacts])
        conn.executemany("UPDATE runs SET collected=? WHERE id=?", [(now, r) for r in done.runs])
        if stale_cache or done.artifacts:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('gc_generation', ?)", (repr(now),))
        # Files go while the write lock is held: no run can start (create_run waits) and re-create one.
        for path in done.files:
            Path(path).unlink(missing_ok=True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


def _human(size: int) -> str:
    """1234567 -> '1.2 MB'."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


human_size = _human
