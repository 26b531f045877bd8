"""Provides `diagnose` (`flow doctor`): verify a run store.

`diagnose` checks what the store promises (docs/guarantees.md): SQLite's own integrity check, that
every cache entry and every step recorded as finished points at an artifact whose bytes match its
hash, and it lists what a crash leaves behind — runs that were interrupted, artifact files no row
knows (written by a worker just before the runner died), artifacts nothing references any more.
Problems (exit 1) are things the store promised would not happen; notes are expected leftovers.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.artifacts import ArtifactError, content_hash, verify_file
from runner.store.owners import Held
from runner.store.sqlite import Store

REFERENCED = (
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


def artifact_files(store: Store) -> dict[str, Path]:
    """Every file under `artifacts/`, by name (hash, or `.tmp-…` for an unfinished write)."""
    found: dict[str, Path] = {}
    root = store.artifact_dir
    if not root.is_dir():
        return found
    for directory, _, files in os.walk(root):
        for name in files:
            found[name] = Path(directory) / name
    return found


def file_size(path: Path) -> int:
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
    conn = store._conn
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
    files = artifact_files(store)
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
                verify_file(path, digest, size, recheck=True)
        except ArtifactError as exc:
            bad[digest] = str(exc)

    referenced = {h for (h,) in conn.execute(REFERENCED)}
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
            report.orphan_bytes += file_size(path)
    for digest, (size, _) in rows.items():
        if digest not in referenced:
            report.unreferenced_artifacts.append(digest)
            report.unreferenced_bytes += int(size or 0)
    if report.orphan_files:
        report.notes.append(
            f"{len(report.orphan_files)} artifact file(s) no row knows ({human_size(report.orphan_bytes)}), "
            "left by a run that was killed while writing; flow gc removes them"
        )
    if report.unreferenced_artifacts:
        report.notes.append(
            f"{len(report.unreferenced_artifacts)} artifact(s) no run or cache entry references "
            f"({human_size(report.unreferenced_bytes)}); flow gc removes them"
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


def human_size(size: int) -> str:
    """1234567 -> '1.2 MB'."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
