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

import json
import os
import pickle
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from runner.artifacts import (
    ArtifactError,
    artifact_path,
    content_hash,
    fault_point,
    read_file_checked,
    verify_file,
)
from runner.discovery import find_store
from runner.liveness import (
    HEARTBEAT_S,
    Owner,
    OwnerLock,
    Verdict,
    judge,
    judge_legacy,
    lock_held,
    pid_alive,
    this_process,
)
from runner.records import FlowOutput, LogLine, RunRecord, StepRecord, dumps_json

SCHEMA_VERSION = 7

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        flow TEXT NOT NULL,
        file TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        params TEXT NOT NULL,
        trigger TEXT NOT NULL DEFAULT '',
        executor TEXT NOT NULL DEFAULT '',
        pid INTEGER,
        host TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS runs_flow ON runs(flow, id)""",
    """CREATE TABLE IF NOT EXISTS steps (
        run_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        parent TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at REAL,
        finished_at REAL,
        duration_s REAL,
        reason TEXT NOT NULL DEFAULT '',
        error TEXT,
        traceback TEXT,
        fingerprint TEXT,
        detail TEXT,
        output_hash TEXT,
        preview TEXT,
        where_ran TEXT,
        PRIMARY KEY (run_id, name)
    )""",
    """CREATE INDEX IF NOT EXISTS steps_name ON steps(name, run_id)""",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id INTEGER NOT NULL,
        step TEXT NOT NULL,
        key TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run_id, step, key)
    )""",
    """CREATE TABLE IF NOT EXISTS logs (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        step TEXT NOT NULL,
        ts REAL NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS logs_run_step ON logs(run_id, step, id)""",
    """CREATE TABLE IF NOT EXISTS cache (
        fingerprint TEXT PRIMARY KEY,
        output_hash TEXT NOT NULL,
        step TEXT NOT NULL,
        run_id INTEGER,
        created_at REAL NOT NULL,
        preview TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS artifacts (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data BLOB,
        created_at REAL NOT NULL
    )""",
]

_LEASES = """CREATE TABLE IF NOT EXISTS leases (
        fingerprint TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        acquired_at REAL NOT NULL,
        expires REAL NOT NULL
    )"""
_SCHEMA.append(_LEASES)
_STEPS_BY_FINGERPRINT = "CREATE INDEX IF NOT EXISTS steps_fingerprint ON steps(fingerprint)"
_SCHEMA.append(_STEPS_BY_FINGERPRINT)

_RUN_OUTPUTS = "ALTER TABLE runs ADD COLUMN outputs TEXT"
"""A run's flow outputs: JSON name -> {step, key, preview} (see `runner.flow_outputs`)."""
_SCHEMA.append(_RUN_OUTPUTS)

_OWNERS = [
    """CREATE TABLE IF NOT EXISTS owners (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        pid_ns TEXT NOT NULL,
        started TEXT NOT NULL,
        heartbeat_at REAL NOT NULL
    )""",
    "ALTER TABLE runs ADD COLUMN owner TEXT",
    "ALTER TABLE leases ADD COLUMN owner TEXT",
]
"""The processes that own runs and leases, judged alive by `runner.liveness` (schema 6)."""
_SCHEMA.extend(_OWNERS)
_GC_COLUMNS = [
    "ALTER TABLE runs ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN collected REAL",
]
"""`flow pin` keeps a run's results through `flow gc`; `collected` is when gc freed them (schema 6)."""
_SCHEMA.extend(_GC_COLUMNS)

_OPERATING = [
    """CREATE TABLE IF NOT EXISTS releases (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        flow TEXT NOT NULL,
        file TEXT NOT NULL,
        created_at REAL NOT NULL,
        digest TEXT NOT NULL,
        sources TEXT NOT NULL,
        params TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    """CREATE TABLE IF NOT EXISTS run_releases (
        run_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS schedule_state (
        key TEXT PRIMARY KEY,
        last_due REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
]
"""Releases (frozen sources, immutable rows), the release each run used, and per served flow the
last due time `flow serve` handled (what its catch-up policy starts from)."""
_SCHEMA.extend(_OPERATING)

_MIGRATIONS: dict[int, list[str]] = {
    2: [_LEASES],
    3: [_STEPS_BY_FINGERPRINT],
    5: [_RUN_OUTPUTS],
    6: _OWNERS + _GC_COLUMNS,
    7: _OPERATING,
}
"""version -> statements that bring a store from `version - 1` to `version`."""

def _apply(conn: sqlite3.Connection, statement: str) -> None:
    """Run a migration statement; adding a column the table already has is a no-op, like the
    `IF NOT EXISTS` of the other statements (SQLite has no `ADD COLUMN IF NOT EXISTS`)."""
    try:
        conn.execute(statement)
    except sqlite3.OperationalError as exc:
        if not statement.startswith("ALTER TABLE") or "duplicate column name" not in str(exc):
            raise


LEASE_TTL_S = 6 * 3600.0
"""A lease older than this is void even if its holder's pid is alive (guards against pid reuse)."""


@dataclass(frozen=True)
class LeaseHolder:
    """Another live process computing a fingerprint right now."""

    pid: int
    host: str
    acquired_at: float


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


@dataclass(frozen=True)
class CacheHit:
    """A cached output: its hash and where its bytes are."""

    output_hash: str
    run_id: int | None
    preview: str | None
    intact: bool = False
    """True when the lookup already verified an inline artifact against its hash."""


_PREVIOUS_DETAILS = (
    "SELECT s.name, COALESCE(s.detail, (SELECT d.detail FROM steps d WHERE d.fingerprint = s.fingerprint "
    "AND d.detail IS NOT NULL ORDER BY d.run_id DESC LIMIT 1)) FROM steps s JOIN ("
    "SELECT s2.name AS name, MAX(s2.run_id) AS run_id FROM steps s2 JOIN runs r ON r.id = s2.run_id "
    "WHERE r.flow=? AND s2.fingerprint IS NOT NULL AND (s2.detail IS NOT NULL OR s2.status = 'cached') "
    "GROUP BY s2.name) last ON last.name = s.name AND last.run_id = s.run_id"
)
"""Per step of a flow, its fingerprint parts in the latest run that executed it or took it from the cache."""

_RUN_DETAILS = (
    "SELECT s.name, COALESCE(s.detail, (SELECT d.detail FROM steps d WHERE d.fingerprint = s.fingerprint "
    "AND d.detail IS NOT NULL ORDER BY d.run_id DESC LIMIT 1)) FROM steps s WHERE s.run_id=? ORDER BY s.rowid"
)
"""Each step of a run with its fingerprint parts (a cached step: those of the execution it reused)."""

_LAST_EXECUTION_DETAILS = (
    "SELECT s.name, s.detail FROM steps s JOIN ("
    "SELECT s2.name AS name, MAX(s2.run_id) AS run_id FROM steps s2 JOIN runs r ON r.id = s2.run_id "
    "WHERE r.flow=? AND s2.detail IS NOT NULL GROUP BY s2.name) last "
    "ON last.name = s.name AND last.run_id = s.run_id"
)


def default_store_dir() -> Path:
    """`$FLOW_STORE`, else the nearest store from the working directory upwards, else `./.flow`
    (absolute; see `runner.discovery`)."""
    return find_store()[0]


_pid_alive = pid_alive


class Store:
    """The run store at `root` (created, private to the user, on first use).

    Attributes:
        root: the store's directory, absolute (`runner.discovery.find_store` when not given).
        found: how it was chosen, for `flow doctor`: `--store`, `$FLOW_STORE`, found upwards, or new.
    """

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
        self._writer: _Writer | None = None
        self._writer_lock = threading.Lock()
        self._guard(self._open_schema)
        self.host = this_process().host
        self.owner_id: str | None = None
        """This store's owner row (`runner.liveness`), registered when it first creates a run or lease."""
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

    def _guard(self, fn: Callable[[], Any]) -> Any:
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
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _open_schema(self) -> None:
        conn = self.conn
        row = None
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            row = None
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise FlowError(
                f"the store at {self.root} has schema version {version}, newer than this flow "
                f"understands ({SCHEMA_VERSION}); upgrade flowdsl or use another --store"
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have created or migrated the
            # store since the first read (a migration applied twice would fail).
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            except sqlite3.OperationalError:
                row = None
            version = int(row[0]) if row else 0
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
            else:
                for step_version in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS.get(step_version, []):
                        _apply(conn, statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ----- writes -------------------------------------------------------------------------

    def submit(self, op: Callable[[sqlite3.Connection], None]) -> None:
        """Queue a write; it commits with whatever else is queued, in order."""
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = _Writer(self)
        self._writer.put(op)

    def flush(self) -> None:
        """Wait until every queued write has committed; raise the first write error, if any."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
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
            self._local.conn = None

    def create_run(self, flow: str, file: str, params: dict[str, Any], trigger: str, executor: str) -> int:
        """Insert a run synchronously (so `flow runs` sees it at once) and return its id."""

        owner = self._register()

        def insert() -> int:
            cursor = self.conn.execute(
                "INSERT INTO runs(flow, file, status, started_at, params, trigger, executor, pid, host, "
                "owner) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (flow, file, time.time(), dumps_json(params), trigger, executor, os.getpid(), self.host)
                + (owner,),
            )
            return int(cursor.lastrowid or 0)

        return int(self._guard(insert))

    def mark_interrupted(self) -> list[int]:
        """Mark runs whose runner process is gone (`runner.liveness`: on any host, in any pid
        namespace) as `interrupted`, drop the leases of dead processes and their owner rows; return
        the ids of the runs marked."""
        return self._interrupt(lambda verdict: not verdict.alive)

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
        conn = self.conn
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

    # ----- owners: who holds runs and leases, and whether it is alive ----------------------------

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
                lambda: self.conn.execute(
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
        """Refresh the heartbeat every `HEARTBEAT_S` (re-registering if `--clear-stuck` removed it)."""
        conn = self._connect()
        try:
            while not stop.wait(HEARTBEAT_S):
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
                    continue  # busy or full: the next beat tries again (expiry allows six misses)
        finally:
            conn.close()

    def _deregister(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()
            self._heartbeat = None
        if self.owner_id is not None:
            owner_id, self.owner_id = self.owner_id, None
            try:
                self._guard(lambda: self.conn.execute("DELETE FROM owners WHERE id=?", (owner_id,)))
            except FlowError:
                pass  # a read-only or broken store: the lock below still says we are gone
        if self._owner_lock is not None:
            self._owner_lock.release()
            self._owner_lock = None

    def _owners(self) -> dict[str, Owner]:
        return {row[0]: Owner(*row) for row in self.conn.execute("SELECT * FROM owners")}

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
        for rid, flow, pid, host, owner in self.conn.execute(
            "SELECT id, flow, pid, host, owner FROM runs WHERE status='running'"
        ):
            if not self._mine(owner, pid, host):
                found.append(Held("run", str(rid), flow, self._verdict(owner, pid, host, owners)))
        for fingerprint, pid, host, owner, step in self.conn.execute(
            "SELECT l.fingerprint, l.pid, l.host, l.owner, "
            "(SELECT s.name FROM steps s WHERE s.fingerprint = l.fingerprint LIMIT 1) FROM leases l"
        ):
            if not self._mine(owner, pid, host):
                found.append(Held("lease", fingerprint, step or "?", self._verdict(owner, pid, host, owners)))
        return found

    def run_verdict(self, run_id: int) -> Verdict | None:
        """Whether the process running `run_id` is alive (None: the run is not in progress)."""
        row = self.conn.execute(
            "SELECT pid, host, owner FROM runs WHERE id=? AND status='running'", (run_id,)
        ).fetchone()
        if row is None:
            return None
        if self._mine(row[2], row[0], row[1]):
            return Verdict(True, True, "this process")
        return self._verdict(row[2], row[0], row[1], self._owners())

    def abandon_run(self, run_id: int, error: str) -> None:
        """Record a run the engine could not finish normally as `failed`, its unfinished steps with
        `error` (queued like every write, so it lands after the run's earlier rows)."""
        now = time.time()

        def fail(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE steps SET status='failed', finished_at=?, error=? "
                "WHERE run_id=? AND status IN ('running', 'pending')",
                (now, error, run_id),
            )
            conn.execute(
                "UPDATE runs SET status='failed', finished_at=COALESCE(finished_at, ?) WHERE id=?",
                (now, run_id),
            )

        self.submit(fail)

    # ----- artifacts and cache --------------------------------------------------------------

    def lookup(self, fingerprint: str, *, verify: bool = False) -> CacheHit | None:
        """The cache entry for a fingerprint; with `verify`, check an inline artifact in the same query."""
        if not verify:
            row = self.conn.execute(
                "SELECT output_hash, run_id, preview FROM cache WHERE fingerprint=?", (fingerprint,)
            ).fetchone()
            return CacheHit(row[0], row[1], row[2]) if row else None
        row = self.conn.execute(
            "SELECT c.output_hash, c.run_id, c.preview, a.data FROM cache c "
            "LEFT JOIN artifacts a ON a.hash = c.output_hash WHERE c.fingerprint=?",
            (fingerprint,),
        ).fetchone()
        if row is None:
            return None
        intact = row[3] is not None and content_hash(bytes(row[3])) == row[0]
        return CacheHit(row[0], row[1], row[2], intact)

    def cache_hits_of_last_run(self, flow: str) -> dict[str, CacheHit]:
        """The cache entries of every fingerprint the flow's last finished run used (one query),
        inline artifacts verified as `lookup(verify=True)` does: a re-run of an unchanged or
        slightly edited flow finds nearly every step here instead of asking once per step."""
        rows = self.conn.execute(
            "SELECT c.fingerprint, c.output_hash, c.run_id, c.preview, a.data FROM steps s "
            "JOIN cache c ON c.fingerprint = s.fingerprint "
            "LEFT JOIN artifacts a ON a.hash = c.output_hash "
            "WHERE s.run_id = (SELECT MAX(id) FROM runs WHERE flow=? AND status != 'running')",
            (flow,),
        ).fetchall()
        return {
            fingerprint: CacheHit(
                digest, run_id, preview, data is not None and content_hash(bytes(data)) == digest
            )
            for fingerprint, digest, run_id, preview, data in rows
        }

    def cache_rows_after(self, rowid: int, limit: int) -> tuple[list[str], int] | None:
        """Fingerprints of the cache rows newer than `rowid`, and the newest rowid; None if there
        are more than `limit` (the caller then asks `lookup` instead of loading them)."""
        newest = self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM cache").fetchone()[0]
        if newest - rowid > limit:
            return None
        rows = self.conn.execute("SELECT fingerprint FROM cache WHERE rowid > ?", (rowid,)).fetchall()
        return [row[0] for row in rows], newest

    def artifact_location(self, digest: str) -> tuple[bytes | None, str | None]:
        """(inline bytes, None) or (None, file path) for an artifact, verified against its hash.

        Raises:
            ArtifactError: missing, or the content does not match the hash.
        """
        row = self.conn.execute("SELECT data, size FROM artifacts WHERE hash=?", (digest,)).fetchone()
        if row is None:
            raise ArtifactError(f"artifact {digest[:12]} is not in the store")
        data, size = row
        if data is not None:
            blob = bytes(data)
            if content_hash(blob) != digest:
                raise ArtifactError(f"artifact {digest[:12]} is corrupt (content hash mismatch)")
            return blob, None
        path = artifact_path(self.artifact_dir, digest)
        try:
            actual = path.stat().st_size
        except OSError:
            raise ArtifactError(f"artifact {digest[:12]} is missing from {path}") from None
        if actual != size:
            raise ArtifactError(f"artifact {digest[:12]} is truncated ({actual} of {size} bytes)")
        verify_file(path, digest, size)
        return None, str(path)

    def read_artifact(self, digest: str) -> bytes:
        data, path = self.artifact_location(digest)
        return data if data is not None else read_file_checked(path or "", digest)

    def forget_cache(self, fingerprint: str) -> None:
        """Drop a cache entry whose artifact turned out missing or corrupt, and the bad artifact row
        with it, so the re-run's good bytes replace it (artifact rows are written INSERT OR IGNORE)."""
        artifact_dir = self.artifact_dir

        def forget(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT output_hash FROM cache WHERE fingerprint=?", (fingerprint,)).fetchone()
            c.execute("DELETE FROM cache WHERE fingerprint=?", (fingerprint,))
            if row is None:
                return
            digest = row[0]
            found = c.execute("SELECT data, size FROM artifacts WHERE hash=?", (digest,)).fetchone()
            if found is None:
                return
            try:
                if found[0] is not None:
                    if content_hash(bytes(found[0])) != digest:
                        raise ArtifactError("corrupt")
                else:
                    verify_file(artifact_path(artifact_dir, digest), digest, found[1])
            except ArtifactError:
                c.execute("DELETE FROM artifacts WHERE hash=?", (digest,))

        self.submit(forget)

    # ----- leases: one process computes a fingerprint, others wait for its result ---------------

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
            conn = self.conn
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

        return self._guard(claim)  # type: ignore[no-any-return]

    def other_live_runs(self) -> bool:
        """Whether a run of another live process is in progress on this store."""
        return any(h.kind == "run" and h.verdict.alive for h in self.held())

    def other_live_leases(self) -> bool:
        """Whether another live process holds a lease on this store."""
        rows = self.conn.execute(
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
        rows = self.conn.execute(
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
        row = self.conn.execute(
            "SELECT pid, host, acquired_at, expires, owner FROM leases WHERE fingerprint=?", (fingerprint,)
        ).fetchone()
        return self._holder(row, time.time())

    def release_lease(self, fingerprint: str) -> None:
        """Give up this process's lease on `fingerprint`.

        Queued like every write, so it commits together with or after the result's cache entry
        (queue it after `_persist_output`): a waiter never sees the lease gone without the result.
        """
        owner = self.owner_id
        self.submit(
            lambda c: c.execute("DELETE FROM leases WHERE fingerprint=? AND owner=?", (fingerprint, owner))
        )

    def release_all_leases(self) -> None:
        """Drop every lease this process holds (on close; a killed process's leases die with its pid)."""
        if self.owner_id is not None:
            owner = self.owner_id
            self._guard(lambda: self.conn.execute("DELETE FROM leases WHERE owner=?", (owner,)))

    def wait_for(self, fingerprint: str, timeout: float | None = None, poll: float = 0.1) -> CacheHit | None:
        """Block until the result for `fingerprint` is cached (return it) or nobody else holds its
        lease any more (return None: compute it yourself). For callers that can block; the engine's
        scheduler should instead poll `lookup` and `lease_holder` from its timers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            hit = self.lookup(fingerprint)
            if hit is not None:
                return hit
            if self.lease_holder(fingerprint) is None:
                return self.lookup(fingerprint)
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll)

    # ----- reads --------------------------------------------------------------------------

    def previous_details(self, flow: str) -> dict[str, dict[str, Any]]:
        """For every step of `flow`, the fingerprint parts it had in the latest run that decided it:
        executed there, or cached (then the parts of the execution that stored that result); the
        parts of its last execution when neither is known."""
        rows = self.conn.execute(_PREVIOUS_DETAILS, (flow,)).fetchall()
        found = {name: json.loads(detail) for name, detail in rows if detail is not None}
        if len(found) < len(rows) or not rows:
            for name, detail in self.conn.execute(_LAST_EXECUTION_DETAILS, (flow,)):
                found.setdefault(name, json.loads(detail))
        return found

    def declared_inputs(self, run_id: int) -> dict[str, list[str]]:
        """Per step of a run, its declared inputs as it saw them: `file:PATH`, `pattern:P` (nothing
        matched) and `env:NAME` (a cached step: those of the execution that stored its result)."""
        found: dict[str, list[str]] = {}
        for name, detail in self.conn.execute(_RUN_DETAILS, (run_id,)):
            declared = json.loads(detail).get("declared") if detail else None
            if declared:
                kinds = ("file", "pattern", "env")
                found[name] = sorted(declared, key=lambda k: kinds.index(k.partition(":")[0]))
        return found

    def list_runs(self, flow: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, each with its steps."""
        if flow is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT * FROM runs WHERE flow=? OR file=? ORDER BY id DESC LIMIT ?",
                (flow, flow, limit),
            ).fetchall()
        return [self._run(row) for row in rows]

    def get_run(self, run_id: int) -> RunRecord | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return self._run(row) if row else None

    def latest_run_id(self, flow: str | None = None) -> int | None:
        runs = self.list_runs(flow, limit=1)
        return runs[0].id if runs else None

    def _run(self, row: tuple[Any, ...]) -> RunRecord:
        columns = (
            "id",
            "flow",
            "file",
            "status",
            "started_at",
            "finished_at",
            "params",
            "trigger",
            "executor",
        )
        data = dict(zip(columns, row[: len(columns)], strict=True))
        data["params"] = json.loads(data["params"])
        run_id = int(data["id"])
        return RunRecord(**data, steps=tuple(self.get_steps(run_id)), outputs=self.run_outputs(run_id))

    def run_outputs(self, run_id: int) -> dict[str, FlowOutput]:
        """A run's flow outputs by name (empty for a flow that declares none)."""
        row = self.conn.execute("SELECT outputs FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return {}
        return {name: FlowOutput(**fields) for name, fields in json.loads(row[0]).items()}

    def flow_output(self, run_id: int, name: str) -> Any:
        """A flow output of a run as the Python object (for a command step's output: its text).

        Raises:
            FlowError: the run has no such output, or its step's output is no longer in the store.
        """
        from runner.flow_outputs import pick

        output = self.run_outputs(run_id).get(name)
        if output is None:
            raise FlowError(f"run #{run_id} has no flow output '{name}'")
        row = self.conn.execute(
            "SELECT output_hash FROM steps WHERE run_id=? AND name=?", (run_id, output.step)
        ).fetchone()
        if row is None or not row[0]:
            raise FlowError(f"run #{run_id}: step '{output.step}' left no output")
        try:
            value = pickle.loads(self.read_artifact(row[0]))
            return pick(value, output.key)
        except (ArtifactError, KeyError) as exc:
            raise FlowError(f"run #{run_id}: flow output '{name}' cannot be read ({exc})") from None

    def run_metrics(self, run_id: int) -> dict[str, dict[str, float]]:
        """Step -> metrics recorded in one run (cached steps carry them into later runs)."""
        metrics: dict[str, dict[str, float]] = {}
        for step, key, value in self.conn.execute(
            "SELECT step, key, value FROM metrics WHERE run_id=?", (run_id,)
        ):
            metrics.setdefault(step, {})[key] = value
        return metrics

    def metrics_by_fingerprint(self, run_id: int) -> dict[str, dict[str, float]]:
        """Fingerprint -> metrics recorded in one run: what a cached step reuses. By fingerprint, not
        by name: a fan-out item may have had another index (so another name) in that run."""
        metrics: dict[str, dict[str, float]] = {}
        for fingerprint, key, value in self.conn.execute(
            "SELECT s.fingerprint, m.key, m.value FROM metrics m "
            "JOIN steps s ON s.run_id=m.run_id AND s.name=m.step "
            "WHERE m.run_id=? AND s.fingerprint IS NOT NULL",
            (run_id,),
        ):
            metrics.setdefault(fingerprint, {})[key] = value
        return metrics

    def computed_by(self, fingerprint: str | None, before: int) -> tuple[int, str] | None:
        """The latest run up to `before` that executed a step with `fingerprint`, and the step's name
        there: where a cached step's logs are."""
        if not fingerprint:
            return None
        row = self.conn.execute(
            "SELECT run_id, name FROM steps WHERE fingerprint=? AND run_id<=? "
            "AND status IN ('succeeded', 'failed') ORDER BY run_id DESC LIMIT 1",
            (fingerprint, before),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def get_steps(self, run_id: int) -> list[StepRecord]:
        metrics = self.run_metrics(run_id)
        records = []
        for row in self.conn.execute(
            "SELECT name, status, attempts, duration_s, error, reason, traceback, started_at, "
            "finished_at, fingerprint, output_hash, preview, where_ran, parent "
            "FROM steps WHERE run_id=? ORDER BY rowid",
            (run_id,),
        ):
            records.append(StepRecord(*row, metrics=metrics.get(row[0], {})))
        return records

    def get_logs(
        self, run_id: int, step: str | None = None, *, after: int = 0, limit: int = 100_000
    ) -> list[LogLine]:
        """Log lines of a run (or one step), in order, with ids greater than `after`."""
        if step is None:
            rows = self.conn.execute(
                "SELECT id, run_id, step, ts, stream, line FROM logs WHERE run_id=? AND id>? "
                "ORDER BY id LIMIT ?",
                (run_id, after, limit),
            )
        else:
            rows = self.conn.execute(
                "SELECT id, run_id, step, ts, stream, line FROM logs WHERE run_id=? AND step=? "
                "AND id>? ORDER BY id LIMIT ?",
                (run_id, step, after, limit),
            )
        return [LogLine(*row) for row in rows]

    def pin_run(self, run_id: int, pinned: bool = True) -> bool:
        """Keep (or stop keeping) a run's results through `flow gc`; False if there is no such run."""
        return bool(
            self._guard(
                lambda: (
                    self.conn.execute("UPDATE runs SET pinned=? WHERE id=?", (int(pinned), run_id)).rowcount
                )
            )
        )

    def gc_generation(self) -> str:
        """Changes each time `flow gc` removes cache entries (engines then forget what they remember)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='gc_generation'").fetchone()
        return str(row[0]) if row else ""

    def delete_run(self, run_id: int, *, reuse_id: bool = False) -> bool:
        """Remove a run, its steps, metrics and logs (artifacts stay until `flow gc`).

        `reuse_id`: the run never started (its plan was rejected): if it is the newest, its number
        is given back, so the next run is not numbered as if one had happened in between.
        """

        def delete() -> bool:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("DELETE FROM runs WHERE id=?", (run_id,)).rowcount > 0
                for table in ("steps", "metrics", "logs"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
                if reuse_id:
                    conn.execute(
                        "UPDATE sqlite_sequence SET seq=(SELECT COALESCE(MAX(id), 0) FROM runs) "
                        "WHERE name='runs' AND seq=?",
                        (run_id,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return found

        return bool(self._guard(delete))


    # ----- releases and schedules (flow release, flow serve) ----------------------------------

    def add_release(
        self, name: str, flow: str, file: str, digest: str, sources: dict[str, str], params: dict[str, Any]
    ) -> int:
        """Insert the next version of release `name` and return its number (rows are never updated)."""

        def insert() -> int:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT MAX(version) FROM releases WHERE name=?", (name,)).fetchone()
                version = int(row[0] or 0) + 1
                conn.execute(
                    "INSERT INTO releases(name, version, flow, file, created_at, digest, sources, params)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, version, flow, file, time.time(), digest, json.dumps(sources), dumps_json(params)),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return version

        return int(self._guard(insert))

    def get_release(self, name: str, version: int | None = None) -> dict[str, Any] | None:
        """One release (the newest when `version` is None) with its frozen sources and parameters."""
        query = (
            "SELECT name, version, flow, file, created_at, digest, sources, params "
            "FROM releases WHERE name=? "
        )
        if version is None:
            row = self.conn.execute(query + "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
        else:
            row = self.conn.execute(query + "AND version=?", (name, version)).fetchone()
        if row is None:
            return None
        keys = ("name", "version", "flow", "file", "created_at", "digest", "sources", "params")
        release = dict(zip(keys, row, strict=True))
        release["sources"] = json.loads(release["sources"])
        release["params"] = json.loads(release["params"])
        return release

    def list_releases(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every release (or every version of `name`), newest first, without their sources."""
        query = "SELECT name, version, flow, file, created_at, digest FROM releases "
        args: tuple[Any, ...] = ()
        if name is not None:
            query += "WHERE name=? "
            args = (name,)
        rows = self.conn.execute(query + "ORDER BY name, version DESC", args).fetchall()
        keys = ("name", "version", "flow", "file", "created_at", "digest")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def link_run_release(self, run_id: int, name: str, version: int) -> None:
        """Record that run `run_id` ran release `name@version` (queued with the run's own rows)."""
        self.submit(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO run_releases(run_id, name, version) VALUES (?, ?, ?)",
                (run_id, name, version),
            )
        )

    def run_release(self, run_id: int) -> str | None:
        """`name@version` of the release a run used, if it ran one."""
        row = self.conn.execute("SELECT name, version FROM run_releases WHERE run_id=?", (run_id,)).fetchone()
        return f"{row[0]}@{row[1]}" if row else None

    def last_due(self, key: str) -> float | None:
        """The last due time `flow serve` handled for a served flow (`key`), as a Unix time."""
        row = self.conn.execute("SELECT last_due FROM schedule_state WHERE key=?", (key,)).fetchone()
        return float(row[0]) if row else None

    def set_last_due(self, key: str, due: float | None) -> None:
        """Remember that the due time `due` of a served flow has been handled (run or skipped);
        None forgets it (the flow is then new to the next server)."""
        if due is None:
            self._guard(lambda: self.conn.execute("DELETE FROM schedule_state WHERE key=?", (key,)))
            return
        self._guard(
            lambda: self.conn.execute(
                "INSERT OR REPLACE INTO schedule_state(key, last_due, updated_at) VALUES (?, ?, ?)",
                (key, due, time.time()),
            )
        )

class _Writer:
    """One thread applying queued writes in batched transactions.

    The queue is a deque plus an event set only when the writer may be asleep: a `queue.Queue` costs a
    lock round trip per item, and the scheduler queues several writes per step. Once woken, the writer
    lets writes gather for `BATCH_WINDOW` seconds (unless a flush or stop is waiting), so a burst of tiny
    steps costs one commit per window instead of one per step.
    """

    BATCH_WINDOW = 0.005

    def __init__(self, store: Store) -> None:
        self._store = store
        self._items: deque[Callable[[sqlite3.Connection], None] | threading.Event | None] = deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._count_lock = threading.Lock()
        self._error: BaseException | None = None
        self._submitted = 0
        self._applied = 0
        self._thread = threading.Thread(target=self._loop, name="flow-store-writer", daemon=True)
        self._thread.start()

    def _put(self, item: Callable[[sqlite3.Connection], None] | threading.Event | None) -> None:
        self._items.append(item)
        if not callable(item):
            self._urgent.set()
        if not self._wake.is_set():
            self._wake.set()

    def put(self, op: Callable[[sqlite3.Connection], None]) -> None:
        with self._count_lock:
            self._submitted += 1
        self._put(op)

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
        conn = self._store._connect()
        stop = False
        while not stop:
            self._wake.wait()
            if not self._urgent.is_set() and len(self._items) < 256:
                self._urgent.wait(self.BATCH_WINDOW)
            self._urgent.clear()
            self._wake.clear()
            items = []
            while self._items:
                items.append(self._items.popleft())
            ops = [i for i in items if i is not None and not isinstance(i, threading.Event)]
            if ops:
                self._apply(conn, ops)  # type: ignore[arg-type]
                self._applied += len(ops)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
                elif item is None:
                    stop = True
        conn.close()

    def _apply(self, conn: sqlite3.Connection, ops: Iterable[Callable[[sqlite3.Connection], None]]) -> None:
        if self._error is not None:
            return
        try:
            self._begin(conn)
            for op in ops:
                op(conn)
            fault_point("commit")
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if self._error is None:
                self._error = exc
                self._give_up(conn)

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
