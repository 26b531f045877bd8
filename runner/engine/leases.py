"""Provides `Claims`: cross-process coordination, so two processes on one store compute a step once.

While no other live process uses the store, a step costs nothing here. Once one does (checked at most
every `OTHERS_CHECK_S`), a fingerprint about to execute is claimed with an atomic lease, and a step
another process is executing (its `running` row) or holds the lease for is waited for instead.
"""

from __future__ import annotations

import time

from runner.store.api import EngineStore

OTHERS_CHECK_S = 0.25
"""How often the engine looks for another live process on its store (then steps are leased)."""


class Claims:
    """The leases this engine holds, and whether anyone else is using its store."""

    def __init__(self, store: EngineStore) -> None:
        self._store = store
        self._held: set[str] = set()
        self._checked = -1.0
        self._others = False

    def others_live(self) -> bool:
        """Whether another live process uses this store (checked at most every `OTHERS_CHECK_S`)."""
        now = time.monotonic()
        if now - self._checked > OTHERS_CHECK_S:
            self._others = self._store.other_live_runs() or self._store.other_live_leases()
            self._checked = now
        return self._others

    @property
    def others_seen(self) -> bool:
        """Whether another live process used the store at the last check (`others_live`; no query)."""
        return self._others

    def computing_elsewhere(self, fingerprint: str) -> str | None:
        """Who else is computing this fingerprint now (None: this process claims it).

        A process that started alone takes no leases until its next check, so two processes starting
        within `OTHERS_CHECK_S` of each other may both compute a step once; the store keeps one result.
        """
        if not self.others_live():
            return None
        other_run = self._store.running_elsewhere(fingerprint)
        if other_run is not None:
            return f"run #{other_run}"
        holder = self._store.acquire_lease(fingerprint)
        if holder is not None:
            return f"process {holder.pid}"
        self._held.add(fingerprint)
        return None

    def release(self, fingerprint: str) -> None:
        """Give up the lease on `fingerprint`, if held (queued after the result's own writes)."""
        if fingerprint in self._held:
            self._held.discard(fingerprint)
            self._store.release_lease(fingerprint)
