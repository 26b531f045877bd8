"""Provides `Store`: the embedded run store (SQLite in WAL mode) and artifact store under `.flow/`.
Writes go through one writer thread that batches whatever is queued into one transaction, so a burst
of tiny steps costs one commit, not one fsync each. Reads use a connection per thread. The schema is
versioned in `meta` and migrated forward on open; a store from a newer version is refused.

Crash consistency: a step's result row, its cache entry and its inline artifact commit in one
transaction; file artifacts are written (fsync + rename) by the worker before that transaction. So
after `kill -9` at any moment, every step recorded as finished has its artifact, and runs left
`running` by a dead process are marked `interrupted` the next time the store opens.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dsl.errors import FlowError
from runner.store.control import Control
from runner.store.discovery import find_store
from runner.store.history import History
from runner.store.leases import Leases
from runner.store.operating import Operating
from runner.store.recorder import StoreRecorder
from runner.store.sources import Sources


def default_store_dir() -> Path:
    """`$FLOW_STORE`, else the nearest store from the working directory upwards, else `./.flow`
    (absolute; see `runner.store.discovery`)."""
    return find_store()[0]


class Store(History, Leases, Operating, Sources, Control):
    """The run store at `root`: run history, cache and artifacts, leases and owners, releases, sources,
    stop requests and external jobs.

    Attributes:
        root: the store's directory, absolute (`runner.store.discovery.find_store` when not given).
        found: how it was chosen, for `flow doctor`: `--store`, `$FLOW_STORE`, found upwards, or new.
    """

    def close(self) -> None:
        self.rows.release()  # a batch of rows held since a run began is written like any other
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        try:
            self.release_all_leases()
        except FlowError:
            pass
        self._deregister()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        # Other threads' connections (a pool's threads outlive the store) are let go with their slots,
        # not closed from here: that could pull the database from under a statement another thread
        # still runs. A connection is in a reference cycle with its statement cache, so the collector
        # frees it (and closes its files) once no statement holds it.
        self._local = threading.local()

    def recorder(self) -> StoreRecorder:
        """A subscriber that records a run's events in this store (the engine puts it first)."""
        return StoreRecorder(self)
