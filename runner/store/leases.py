"""Provides `Leases`: one process computes a fingerprint, others on the same store wait for its result."""

from __future__ import annotations

import os
import time
from typing import Any

from runner.store.api import LeaseHolder
from runner.store.owners import Owners

LEASE_TTL_S = 6 * 3600.0
"""A lease older than this is void even if its holder's pid is alive (guards against pid reuse)."""


class Leases(Owners):
    """Atomic leases on fingerprints, and who else is computing what."""

    def _holder(self, row: tuple[Any, ...] | None, now: float) -> LeaseHolder | None:
        """The live holder in a `leases` row (pid, host, acquired_at, expires, owner), or None if the
        row is ours, void (expired, or its holder is gone) or absent."""
        if row is None:
            return None
        pid, host, acquired_at, expires, owner = row
        if expires < now or self._mine(owner, pid, host):
            return None
        if not self._verdict(owner, pid, host, self._owners()).alive:
            return None
        return LeaseHolder(pid, host, acquired_at)

    def acquire_lease(self, fingerprint: str, ttl: float = LEASE_TTL_S) -> LeaseHolder | None:
        """Claim `fingerprint` for this process before computing it.

        Returns None when this process now holds the lease (or already did); otherwise the other
        live process that holds it, whose result (`lookup`) or release (`lease_holder` → None) the
        caller should wait for instead of computing the same thing. A lease whose holder died is taken over.
        """

        owner = self._register()

        def claim() -> LeaseHolder | None:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = conn.execute(
                    "SELECT pid, host, acquired_at, expires, owner FROM leases WHERE fingerprint=?",
                    (fingerprint,),
                ).fetchone()
                holder = self._holder(row, now)
                if holder is None:
                    conn.execute(
                        "INSERT OR REPLACE INTO leases(fingerprint, pid, host, acquired_at, expires, owner) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (fingerprint, os.getpid(), self.host, now, now + ttl, owner),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return holder

        return self._guard(claim)

    def other_live_runs(self) -> bool:
        """Whether a run of another live process is in progress on this store."""
        return any(h.kind == "run" and h.verdict.alive for h in self.held())

    def other_live_leases(self) -> bool:
        """Whether another live process holds a lease on this store."""
        rows = self._conn.execute(
            "SELECT pid, host, owner FROM leases WHERE expires >= ?", (time.time(),)
        ).fetchall()
        owners = None
        for pid, host, owner in rows:
            if self._mine(owner, pid, host):
                continue
            owners = self._owners() if owners is None else owners
            if self._verdict(owner, pid, host, owners).alive:
                return True
        return False

    def running_elsewhere(self, fingerprint: str) -> int | None:
        """The id of another live process's run whose step with this fingerprint is executing now."""
        rows = self._conn.execute(
            "SELECT r.id, r.pid, r.host, r.owner FROM steps s JOIN runs r ON r.id = s.run_id "
            "WHERE s.fingerprint=? AND s.status='running' AND r.status='running'",
            (fingerprint,),
        ).fetchall()
        owners = None
        for run_id, pid, host, owner in rows:
            if self._mine(owner, pid, host):
                continue
            owners = self._owners() if owners is None else owners
            if self._verdict(owner, pid, host, owners).alive:
                return int(run_id)
        return None

    def lease_holder(self, fingerprint: str) -> LeaseHolder | None:
        """The other live process holding `fingerprint`, if any (None: free, void, or ours)."""
        row = self._conn.execute(
            "SELECT pid, host, acquired_at, expires, owner FROM leases WHERE fingerprint=?", (fingerprint,)
        ).fetchone()
        return self._holder(row, time.time())

    def release_lease(self, fingerprint: str) -> None:
        """Give up this process's lease on `fingerprint`.

        Queued like every write, so it commits together with or after the result's cache entry
        (queue it after `_persist_output`): a waiter never sees the lease gone without the result.
        """
        owner = self.owner_id
        self._write(
            lambda c: c.execute("DELETE FROM leases WHERE fingerprint=? AND owner=?", (fingerprint, owner))
        )

    def release_all_leases(self) -> None:
        """Drop every lease this process holds (on close; a killed process's leases die with its pid)."""
        if self.owner_id is not None:
            owner = self.owner_id
            self._guard(lambda: self._conn.execute("DELETE FROM leases WHERE owner=?", (owner,)))
