"""Provides `Writer`: the one thread that commits a store's queued writes in batched transactions."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from dsl.errors import FlowError
from runner.batch_policy import run_as_batch
from runner.testing import fault_point

if TYPE_CHECKING:
    from runner.store.base import StoreBase


BUSY_TIMEOUT_MS = 30_000
"""How long a connection waits for another process's write lock before it reports the store busy."""

WriteOp = Callable[[sqlite3.Connection], object]
"""A queued write: statements on the writer's connection, inside its transaction (any return is ignored)."""


class Writer:
    """One thread committing queued writes in batched transactions, and a helper that may write some.

    The queue is a deque plus an event set only when the writer may be asleep: a `queue.Queue` costs a
    lock round trip per item, and the scheduler queues several writes per step. Once woken, the writer
    lets writes gather for `BATCH_WINDOW` seconds (unless a flush or stop is waiting), so a burst of tiny
    steps costs one commit per window instead of one per step.

    `help` lets another thread apply queued writes meanwhile, one at a time, into a transaction it
    opens and the writer thread commits at the window's end. For a thread that would otherwise spin: in
    `flow run` the scheduler polls while a worker runs a chain's next step, both cores busy, and a
    writer thread that wakes to write then takes one of them; a polling step of a chain waited 2-4 ms
    for it every few dozen steps, a third of a 1,000-step chain's time.
    """

    BATCH_WINDOW = 0.005

    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._items: deque[WriteOp | threading.Event | None] = deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._count_lock = threading.Lock()
        self._error: BaseException | None = None
        self._submitted = 0
        self._applied = 0
        """Writes committed (or lost to `_error`)."""
        self._lock = threading.Lock()
        """Held while the connection is in use: by the writer thread for a batch, by a helper for a write."""
        self._conn: sqlite3.Connection | None = None
        """The writer thread's connection while it runs (a helper writes on it too)."""
        self._helped = 0
        """Writes a helper applied in the open transaction, not yet committed."""
        self._gave_up = False
        self._thread = threading.Thread(target=self._loop, name="flow-store-writer", daemon=True)
        self._thread.start()

    def _put(self, item: WriteOp | threading.Event | None) -> None:
        self._items.append(item)
        if not callable(item):
            self._urgent.set()
        if not self._wake.is_set():
            self._wake.set()

    def put(self, op: WriteOp) -> None:
        with self._count_lock:
            self._submitted += 1
        self._put(op)

    def help(self) -> bool:
        """Apply the oldest queued write on the calling thread, if that needs no waiting: into the open
        transaction, or one begun now (and then the writer thread is woken to commit it once its
        window has passed). Return whether a write was applied. Never blocks: another process's write
        lock, the writer thread busy with a batch, or a flush or stop next in the queue answer False,
        and the writer thread writes as it would have."""
        if not self._items or self._error is not None or not self._lock.acquire(blocking=False):
            return False
        try:
            conn, op = self._conn, self._items[0] if self._items else None
            if conn is None or self._error is not None or not callable(op):
                return False
            if not conn.in_transaction:
                if not self._begin_now(conn):
                    return False
                self._wake.set()
            self._items.popleft()
            try:
                op(conn)
            except BaseException as exc:
                self._failed(conn, exc)
                return False
            self._helped += 1
            return True
        finally:
            self._lock.release()

    def flush(self) -> None:
        if self._applied == self._submitted and self._error is None:
            return
        done = threading.Event()
        self._put(done)
        done.wait()
        if self._error is not None:
            # Sticky: once a batch is lost, nothing after it is written (so no later row can claim
            # a result whose artifact row was in the lost batch), and every flush reports it.
            error = self._error
            if isinstance(error, sqlite3.DatabaseError):
                raise FlowError(f"cannot write to the store at {self._store.root}: {error}") from None
            raise error

    def stop(self) -> None:
        self._put(None)
        self._thread.join()

    def _loop(self) -> None:
        # Woken by the scheduler's writes, the writer was placed on the scheduler's core and took it
        # for the 1-2 ms of a commit while the other core sat idle (seen with `perf sched`): a
        # 1,000-step chain's cold run went from 0.118-0.122 to 0.104-0.114 ms a step.
        run_as_batch()
        conn = self._conn = self._store._connect()
        stop = False
        while not stop:
            self._wake.wait()
            if not self._urgent.is_set() and len(self._items) < 256:
                self._urgent.wait(self.BATCH_WINDOW)
            self._urgent.clear()
            self._wake.clear()
            with self._lock:
                items = []
                while self._items:
                    items.append(self._items.popleft())
                ops = [i for i in items if i is not None and not isinstance(i, threading.Event)]
                if ops or conn.in_transaction:
                    self._apply(conn, ops)
                    self._applied += len(ops) + self._helped
                    self._helped = 0
                if self._error is not None and not self._gave_up:
                    self._gave_up = True
                    self._give_up(conn)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                elif item is None:
                    stop = True
        with self._lock:
            self._conn = None
        conn.close()

    def _apply(self, conn: sqlite3.Connection, ops: Iterable[WriteOp]) -> None:
        if self._error is not None:
            return
        try:
            if not conn.in_transaction:  # else a helper began it (`help`)
                self._begin(conn)
            for op in ops:
                op(conn)
            fault_point("commit")
            conn.execute("COMMIT")
        except BaseException as exc:
            self._failed(conn, exc)

    def _failed(self, conn: sqlite3.Connection, exc: BaseException) -> None:
        """A write failed: the open transaction is lost, and every write after it (`_error`). The
        writer thread then gives up (`_give_up`), which may wait for the database."""
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if self._error is None:
            self._error = exc
            self._urgent.set()
            self._wake.set()

    @staticmethod
    def _begin_now(conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE unless another process holds the write lock (then False, at once)."""
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting out other processes' write locks however long they last (nothing
        has been applied yet, so retrying is safe; giving up would lose the batch)."""
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            time.sleep(0.05)

    def _give_up(self, conn: sqlite3.Connection) -> None:
        """A batch could not be written (full disk, read-only, I/O error): try to mark this process's
        running runs failed, so the history does not show them running; if even that fails, the next
        open marks them interrupted."""
        mine = "SELECT id FROM runs WHERE pid=? AND host=? AND status='running'"
        me = (os.getpid(), self._store.host)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE steps SET status='failed', error=? WHERE status IN ('pending', 'running') "
                f"AND run_id IN ({mine})",
                (f"the store could not be written: {self._error}", *me),
            )
            conn.execute(
                f"UPDATE runs SET status='failed', finished_at=? WHERE id IN ({mine})", (time.time(), *me)
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
