"""Provides the store's schema: its tables, its version, and the migrations that bring an older store
forward (`open_schema`). A store from a newer version is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dsl.errors import FlowError

SCHEMA_VERSION = 14

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
"""Schema 3's index of every step row by fingerprint; schema 11 replaced it (`_STEP_INDEXES`)."""

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
"""The processes that own runs and leases, judged alive by `runner.store.liveness` (schema 6)."""
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

_SOURCES = [
    "CREATE TABLE IF NOT EXISTS sources (hash TEXT PRIMARY KEY, text TEXT NOT NULL)",
    "ALTER TABLE runs ADD COLUMN sources TEXT",
]
"""Source texts by hash, and per run the files it loaded, path -> hash (`runner.store.sources`,
schema 8)."""
_SCHEMA.extend(_SOURCES)

_CONTROL = [
    """CREATE TABLE IF NOT EXISTS stop_requests (
        run_id INTEGER PRIMARY KEY,
        requested_at REAL NOT NULL,
        requested_by TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS jobs (
        run_id INTEGER NOT NULL,
        step TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        handle BLOB NOT NULL,
        handle_text TEXT NOT NULL,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        polls INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, step)
    )""",
]
"""`flow stop RUN` requests that the process owning the run picks up, and the external jobs steps
started: their pickled handle, so `flow resume` re-attaches instead of starting a job twice (schema 9)."""
_SCHEMA.extend(_CONTROL)

_ARTIFACT_STAMPS = "ALTER TABLE artifacts ADD COLUMN stamp TEXT"
"""A file artifact's `runner.artifacts.Stamp` as the worker that wrote it saw it, `dev:ino:size:mtime:ctime`
(nanoseconds): a process reading the file later hashes it only if `stat` shows another (schema 10)."""
_SCHEMA.append(_ARTIFACT_STAMPS)

_STEP_INDEXES = [
    "DROP INDEX IF EXISTS steps_fingerprint",
    "DROP INDEX IF EXISTS steps_name",
    "CREATE INDEX IF NOT EXISTS steps_executed ON steps(fingerprint, run_id) WHERE detail IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS steps_running ON steps(fingerprint) WHERE status = 'running'",
]
"""Step rows by fingerprint, only where a query looks for them (schema 11): the executions (the rows
with fingerprint parts: where a cached step's parts and logs are) and the steps running now (what
another process may be computing). A cached step's row is in neither: indexing every row by its
random fingerprint dirtied a page per row, half of what writing a fully cached run cost. Queries that
use one say its condition (`detail IS NOT NULL`, `status = 'running'`), as SQLite requires. The
index by name no query used went with it."""
_SCHEMA.extend(_STEP_INDEXES[2:])

_RUNS_BY_FILE = "CREATE INDEX IF NOT EXISTS runs_file ON runs(file, id)"
"""Runs by flow file (schema 12): the TUI asks every second or so for a flow's runs by name or file
(`Store.runs_signature`) and for each listed file's newest run (`Store.latest_statuses`), and a
store that serves flows for months holds hundreds of thousands of runs; without it both read every
run (12 and 54 ms with 200,000 runs; with it 6 and 0.04)."""
_SCHEMA.append(_RUNS_BY_FILE)

_RUNS_SIGNATURE = [
    "CREATE INDEX IF NOT EXISTS runs_running ON runs(flow, file) WHERE status = 'running'",
    """CREATE TRIGGER IF NOT EXISTS runs_deleted AFTER DELETE ON runs BEGIN
        INSERT INTO meta(key, value) VALUES ('runs_deleted', '1')
        ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1;
    END""",
]
"""What `Store.runs_signature` reads instead of every run of a flow (schema 13): the runs running now,
and a count of the runs ever deleted, kept by SQLite itself whoever deletes one. With it the look the
TUI takes every second reads a handful of rows however many runs a served flow has piled up (with
100,000 runs of one flow it read them all: 14 ms a look)."""
_SCHEMA.extend(_RUNS_SIGNATURE)

_HITS_CHANGED = (
    "INSERT INTO meta(key, value) VALUES ('hits_generation', '1') "
    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1;"
)
"""Count a change that may make a kept entry (`_LAST_HITS`) stale."""
_LAST_HITS = [
    """CREATE TABLE IF NOT EXISTS last_hits (
        flow TEXT PRIMARY KEY,
        run_id INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        hits BLOB NOT NULL
    )""",
    f"CREATE TRIGGER IF NOT EXISTS cache_changed AFTER UPDATE ON cache BEGIN {_HITS_CHANGED} END",
    f"CREATE TRIGGER IF NOT EXISTS cache_deleted AFTER DELETE ON cache BEGIN {_HITS_CHANGED} END",
    "CREATE TRIGGER IF NOT EXISTS artifact_changed AFTER UPDATE OF hash, data ON artifacts "
    f"WHEN OLD.hash IS NOT NEW.hash OR OLD.data IS NOT NEW.data BEGIN {_HITS_CHANGED} END",
    f"CREATE TRIGGER IF NOT EXISTS artifact_deleted AFTER DELETE ON artifacts BEGIN {_HITS_CHANGED} END",
]
"""Per flow, the cache entries its last finished run's steps found (`runner.store.last_hits`), kept
in one row (schema 14): a new process's re-run reads one row instead of joining every step of that
run with the cache and the artifacts (1,000 steps: ~0.2 ms against ~3.5). SQLite itself counts, in
`meta`'s `hits_generation`, every change that could make an entry stale: a cache entry updated or
deleted (replaced, too, by flow's connections: `recursive_triggers`), an artifact's bytes changed or
deleted, whoever does it with UPDATE or DELETE. A row is read only at the count it was kept at. A
cache entry added since is missing from it, which costs a lookup, never a stale result. A new row
costs no trigger: a cold run's thousands of inserts pay nothing for this."""
_SCHEMA.extend(_LAST_HITS)

_MIGRATIONS: dict[int, list[str]] = {
    2: [_LEASES],
    3: [_STEPS_BY_FINGERPRINT],
    5: [_RUN_OUTPUTS],
    6: _OWNERS + _GC_COLUMNS,
    7: _OPERATING,
    8: _SOURCES,
    9: _CONTROL,
    10: [_ARTIFACT_STAMPS],
    11: _STEP_INDEXES,
    12: [_RUNS_BY_FILE],
    13: _RUNS_SIGNATURE,
    14: _LAST_HITS,
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


def open_schema(conn: sqlite3.Connection, root: Path) -> None:
    """Create the schema, or migrate it forward, in one transaction (another process may be opening
    the same store: the version is read again under the write lock).

    Raises:
        FlowError: the store is from a newer version of flow.
    """
    row = None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.OperationalError:
        row = None
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise FlowError(
            f"the store at {root} has schema version {version}, newer than this flow "
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
