"""Provides `StoreBase`: a store's directory, its privacy check, a SQLite connection per thread, and the
queue of writes the writer thread commits in batches. The store's parts (`owners`, `leases`, `cache`,
`history`, `operating`) build on it; `runner.store.sqlite.Store` combines them."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dsl.errors import FlowError
from runner.store.discovery import find_store
from runner.store.liveness import OwnerLock, this_process
from runner.store.rows import RowBatches
from runner.store.schema import open_schema
from runner.store.writer import BUSY_TIMEOUT_MS, WriteOp, Writer

T = TypeVar("T")


class StoreBase:
    """The run store at `root` (created, private to the user, on first use): what every part shares."""

    def __init__(
        self, root: str | Path | None = None, *, create: bool = True, verify_private: bool = True
    ) -> None:
        """Open (or create) the store.

        Args:
            verify_private: refuse a store other users could write to (`permission_problems`);
                only `flow doctor`, which unpickles nothing, opens one anyway to report it.

        Raises:
            FlowError: no store and not `create`, it cannot be created, or it is not private.
        """
        # Absolute from here on: a step's `os.chdir` must not move where results are written.
        self.root, self.found = find_store(root)
        self.db_path = self.root / "flow.db"
        self.artifact_dir = self.root / "artifacts"
        if not self.root.exists():
            if not create:
                raise FlowError(f"no flow store at {self.root} (nothing has run here yet)")
            try:
                # exist_ok: another process may create the same store at the same moment.
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.artifact_dir.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise FlowError(f"cannot create the store at {self.root}: {exc.strerror}") from None
        if not self.root.is_dir():
            raise FlowError(f"the store at {self.root} is not a directory; use --store or FLOW_STORE")
        if verify_private:
            self._check_private()
        if not self.db_path.exists():
            # SQLite creates the database (and gives its -wal/-shm files the same mode) with the
            # umask's permissions: 0664 under a common umask of 002, writable by the user's group.
            try:
                os.close(os.open(self.db_path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError:
                pass  # a read-only store: SQLite reports it below
        self._local = threading.local()
        self._writer: Writer | None = None
        self._writer_lock = threading.Lock()
        self.rows = RowBatches(self._enqueue)
        """Steps' output and step rows, batched into one write (`runner.store.rows`)."""
        self._guard(self._open_schema)
        self.host = this_process().host
        self.owner_id: str | None = None
        """This store's owner row (`runner.store.liveness`), registered at its first run or lease."""
        self._owner_lock: OwnerLock | None = None
        self._heartbeat: threading.Event | None = None

    def _check_private(self) -> None:
        """Refuse a store someone else could have planted pickles in (see `permission_problems`)."""
        problems = self.permission_problems()
        if problems:
            raise FlowError(
                f"the store at {self.root} is not private: {'; '.join(problems[:4])}"
                + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
                + f". Artifacts are unpickled, so anyone who can write there can run code as you; "
                f"fix: chmod -R go-w {self.root}"
                + ("" if all("writable" in p for p in problems) else " and chown it to yourself")
            )

    def permission_problems(self, *, files: bool = False) -> list[str]:
        """Where the store is not private to this user: a path another user owns, or one its group
        or every user may write to. Empty when the store is sound (or not created yet).

        Checked on every open (every command): the root, `flow.db` and its `-wal`/`-shm` files
        (inline artifacts live there), `artifacts/` and each of its shard directories (`artifacts/ab/`,
        at most 256): nobody else can then add, replace or rename a file anywhere in the store. That
        is a few `stat` calls and one listing of `artifacts/` (measured: 0.02 ms for a new store,
        1.2 ms with all 256 shards). The artifact files themselves are visited only with `files`
        (`flow doctor`): a store holds thousands, and a file someone else could rewrite can only
        change bytes that are checked against their content hash before anything unpickles them.
        """
        if not hasattr(os, "getuid"):
            return []
        uid = os.getuid()
        root = str(self.root)
        db = str(self.db_path)
        checks: list[tuple[str, os.stat_result]] = []
        for name, path in (("the store", root), ("flow.db", db), ("flow.db-wal", f"{db}-wal")):
            try:
                checks.append((name, os.stat(path)))
            except OSError:
                continue
        for name in ("flow.db-shm", "artifacts"):
            try:
                checks.append((name, os.stat(os.path.join(root, name))))
            except OSError:
                continue
        try:
            with os.scandir(self.artifact_dir) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        checks.append((f"artifacts/{entry.name}", entry.stat(follow_symlinks=False)))
                        if files:
                            checks.extend(self._file_modes(entry.path, f"artifacts/{entry.name}"))
        except OSError:
            pass
        problems = []
        for name, info in checks:
            mode = info.st_mode & 0o777
            if info.st_uid != uid:
                problems.append(f"{name} is owned by uid {info.st_uid}, not by you (uid {uid})")
            elif mode & 0o002:
                problems.append(f"{name} is writable by every user (mode {mode:o})")
            elif mode & 0o020:
                problems.append(f"{name} is writable by its group (mode {mode:o})")
        return problems

    @staticmethod
    def _file_modes(directory: str, name: str) -> list[tuple[str, os.stat_result]]:
        try:
            with os.scandir(directory) as entries:
                return [(f"{name}/{e.name}", e.stat(follow_symlinks=False)) for e in entries]
        except OSError:
            return []

    def _guard(self, fn: Callable[[], T]) -> T:
        """`fn()`, with a database error reported as a `FlowError` naming the store."""
        try:
            return fn()
        except sqlite3.DatabaseError as exc:
            raise FlowError(f"the store at {self.root} cannot be used: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
        deadline = time.monotonic() + 30
        while True:
            try:
                # Switching a new database to WAL can report "locked" at once, without waiting, while
                # another process creates the same store: retry like the busy timeout would.
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # No commit checkpoints the WAL: the one that crossed SQLite's threshold (1,000 pages) copied
        # them to the database file and synced it, 2-16 ms inside a run's last commit, which the run's
        # end waits for (a 10,000-step run's). The heartbeat checkpoints instead (`Owners._beat`), and
        # a process's last connection to close does, as SQLite always does.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # A REPLACE of a cache entry fires the trigger that counts the change (`runner.store.schema`).
        conn.execute("PRAGMA recursive_triggers=ON")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _open_schema(self) -> None:
        open_schema(self._conn, self.root)

    def _write(self, op: WriteOp, *, seal: bool = True) -> None:
        """Queue a write; it commits with whatever else is queued, in order. It closes the open batch
        of rows (see `runner.store.rows`), unless nothing is ordered against it (`seal=False`)."""
        if seal:
            self.rows.seal()
        self._enqueue(op)

    def _enqueue(self, op: WriteOp) -> None:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = Writer(self)
        self._writer.put(op)

    def help_write(self) -> bool:
        """Apply the oldest queued write on the calling thread if that needs no waiting; return whether
        one was (`Writer.help`: for a thread that would otherwise spin)."""
        writer = self._writer
        return writer is not None and writer.help()

    def flush(self) -> None:
        """Wait until every queued write has committed (a held batch of rows queued first); raise the
        first write error, if any."""
        self.rows.release()
        if self._writer is not None:
            self._writer.flush()
