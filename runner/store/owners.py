"""Provides `Owners`: which processes own runs and leases on a store, and whether each is alive
(`runner.store.liveness`); runs whose owner died are marked interrupted."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from runner.store.base import StoreBase
from runner.store.liveness import (
    HEARTBEAT_S,
    Owner,
    OwnerLock,
    Verdict,
    judge,
    judge_legacy,
    lock_held,
    this_process,
)

CHECKPOINT_S = 1.0
"""How often the heartbeat's thread checkpoints the WAL (bounding it to about a second of writes)."""


@dataclass(frozen=True)
class Held:
    """A run in progress or a lease, held by another process: who, and whether it is alive."""

    kind: str
    """"run" or "lease"."""
    key: str
    """The run id, or the lease's fingerprint."""
    step: str
    """The step a lease is for, or a run's flow."""
    verdict: Verdict


class Owners(StoreBase):
    """Owner rows, their lock files and heartbeat; runs and leases held by other processes."""

    @property
    def owner_dir(self) -> Path:
        return self.root / "owners"

    def _register(self) -> str:
        """Register this store as an owner (once): its lock, its row, its heartbeat thread."""
        if self.owner_id is not None:
            return self.owner_id
        with self._writer_lock:
            if self.owner_id is not None:
                return self.owner_id
            owner_id = uuid.uuid4().hex
            me = this_process()
            try:
                lock = OwnerLock(self.owner_dir, owner_id)
            except OSError as exc:
                raise FlowError(f"cannot write to the store at {self.root}: {exc.strerror}") from None
            row = (owner_id, me.pid, me.host, me.boot_id, me.pid_ns, me.started)
            self._guard(
                lambda: self._conn.execute(
                    "INSERT INTO owners(id, pid, host, boot_id, pid_ns, started, heartbeat_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*row, time.time()),
                )
            )
            self._owner_lock = lock
            self._heartbeat = threading.Event()
            threading.Thread(
                target=self._beat, args=(row, self._heartbeat), name="flow-heartbeat", daemon=True
            ).start()
            self.owner_id = owner_id
            return owner_id

    def _beat(self, row: tuple[Any, ...], stop: threading.Event) -> None:
        """Refresh the heartbeat every `HEARTBEAT_S` (re-registering if `--clear-stuck` removed it),
        and checkpoint the WAL every `CHECKPOINT_S`: no commit does (see `StoreBase._connect`). A
        passive checkpoint waits for no reader or writer, so the engine's writes carry on meanwhile.

        Its connection opens at the first checkpoint, not as the thread starts: a process's first run
        starts it, and a short run was over before the connection was needed (opening one took
        0.3-0.5 ms, with the GIL for part of it, from that run)."""
        conn: sqlite3.Connection | None = None
        beat_at = time.monotonic() + HEARTBEAT_S
        try:
            while not stop.wait(CHECKPOINT_S):
                try:
                    if conn is None:
                        conn = self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass  # the next one tries again; a failing checkpoint must not stop the heartbeat
                if time.monotonic() < beat_at:
                    continue
                beat_at = time.monotonic() + HEARTBEAT_S
                if conn is None:
                    continue  # it could not be opened: the next second tries again
                try:
                    now = time.time()
                    beat = conn.execute("UPDATE owners SET heartbeat_at=? WHERE id=?", (now, row[0]))
                    if not beat.rowcount:
                        conn.execute(
                            "INSERT OR REPLACE INTO owners(id, pid, host, boot_id, pid_ns, started, "
                            "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (*row, now),
                        )
                except sqlite3.Error:
                    pass  # busy or full: the next beat tries again (expiry allows six misses)
        finally:
            if conn is not None:
                conn.close()

    def _deregister(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()
            self._heartbeat = None
        if self.owner_id is not None:
            owner_id, self.owner_id = self.owner_id, None
            try:
                self._guard(lambda: self._conn.execute("DELETE FROM owners WHERE id=?", (owner_id,)))
            except FlowError:
                pass  # a read-only or broken store: the lock below still says we are gone
        if self._owner_lock is not None:
            self._owner_lock.release()
            self._owner_lock = None

    def _owners(self) -> dict[str, Owner]:
        return {row[0]: Owner(*row) for row in self._conn.execute("SELECT * FROM owners")}

    def _verdict(self, owner: str | None, pid: int, host: str, owners: dict[str, Owner]) -> Verdict:
        if owner is None:
            return judge_legacy(pid, host)
        return judge(owners.get(owner), self.owner_dir)

    def _mine(self, owner: str | None, pid: int, host: str) -> bool:
        if owner is not None:
            return owner == self.owner_id
        return pid == os.getpid() and host == self.host

    def held(self) -> list[Held]:
        """Every run in progress and every lease held by another owner, with its verdict."""
        owners = self._owners()
        found = []
        for rid, flow, pid, host, owner in self._conn.execute(
            "SELECT id, flow, pid, host, owner FROM runs WHERE status='running'"
        ):
            if not self._mine(owner, pid, host):
                found.append(Held("run", str(rid), flow, self._verdict(owner, pid, host, owners)))
        for fingerprint, pid, host, owner, step in self._conn.execute(
            "SELECT l.fingerprint, l.pid, l.host, l.owner, "
            "COALESCE((SELECT s.name FROM steps s WHERE s.fingerprint = l.fingerprint "
            "AND s.status = 'running' LIMIT 1), (SELECT s.name FROM steps s "
            "WHERE s.fingerprint = l.fingerprint AND s.detail IS NOT NULL LIMIT 1)) FROM leases l"
        ):
            if not self._mine(owner, pid, host):
                found.append(Held("lease", fingerprint, step or "?", self._verdict(owner, pid, host, owners)))
        return found

    def run_verdict(self, run_id: int) -> Verdict | None:
        """Whether the process running `run_id` is alive (None: the run is not in progress)."""
        row = self._conn.execute(
            "SELECT pid, host, owner FROM runs WHERE id=? AND status='running'", (run_id,)
        ).fetchone()
        if row is None:
            return None
        if self._mine(row[2], row[0], row[1]):
            return Verdict(True, True, "this process")
        return self._verdict(row[2], row[0], row[1], self._owners())

    def mark_interrupted(self) -> list[int]:
        """Mark runs whose runner process is gone (`runner.store.liveness`: on any host, in any pid
        namespace) as `interrupted`, drop the leases of dead processes and their owner rows; return
        the ids of the runs marked. A store this process can only read is left as it is (its dead
        runs are marked by the next process that can write): reading history needs no write."""
        try:
            return self._interrupt(lambda verdict: not verdict.alive)
        except sqlite3.OperationalError:
            return []

    def clear_stuck(self) -> tuple[list[int], list[str]]:
        """`flow doctor --clear-stuck`: like `mark_interrupted`, but also give up every run and lease
        whose holder is not proven alive now (a heartbeat late but not yet expired, a row from before
        heartbeats). Returns the runs marked interrupted and the fingerprints released."""
        released: list[str] = []
        runs = self._interrupt(lambda verdict: not verdict.proven or not verdict.alive, released)
        return runs, released

    def _interrupt(self, gone: Callable[[Verdict], bool], released: list[str] | None = None) -> list[int]:
        held = [h for h in self.held() if gone(h.verdict)]
        owners = self._owners()
        dead_owners = [
            o.id for o in owners.values() if o.id != self.owner_id and gone(judge(o, self.owner_dir))
        ]
        if not held and not dead_owners:
            self._forget_stray_locks(owners)
            return []
        now = time.time()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        dead: list[int] = []
        try:
            for item in held:
                if item.kind == "lease":
                    conn.execute("DELETE FROM leases WHERE fingerprint=?", (item.key,))
                    if released is not None:
                        released.append(item.key)
                    continue
                rid = int(item.key)
                changed = conn.execute(
                    "UPDATE runs SET status='interrupted', finished_at=COALESCE(finished_at, ?) "
                    "WHERE id=? AND status='running'",
                    (now, rid),
                ).rowcount
                if changed:
                    dead.append(rid)
                conn.execute(
                    "UPDATE steps SET status='cancelled', finished_at=?, "
                    "error='the runner stopped (killed or crashed) before this step finished' "
                    "WHERE run_id=? AND status IN ('running', 'pending')",
                    (now, rid),
                )
            conn.executemany("DELETE FROM owners WHERE id=?", [(o,) for o in dead_owners])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for owner in dead_owners:
            (self.owner_dir / f"{owner}.lock").unlink(missing_ok=True)
        return dead

    def _forget_stray_locks(self, owners: dict[str, Owner]) -> None:
        """Remove lock files no process holds and no owner row names (a process killed between
        taking its lock and registering leaves one)."""
        old = time.time() - 60  # a lock file created just now may not be locked yet
        try:
            names = [
                e.name
                for e in os.scandir(self.owner_dir)
                if e.name.endswith(".lock")
                and e.name[: -len(".lock")] not in owners
                and e.stat().st_mtime < old
            ]
        except OSError:
            return
        for name in names:
            path = self.owner_dir / name
            if lock_held(path) is False:
                path.unlink(missing_ok=True)
