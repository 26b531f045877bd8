"""Provides the run store: every SQL statement of flow lives in this package, behind one API.

By part: `schema` (tables, version, migrations), `base` (directory, privacy, connections, the write
queue), `writer` (the thread that commits it), `owners` and `liveness` (which processes hold runs and
leases, alive or not), `leases`, `cache` (cache entries and artifacts), `history` (runs, steps, logs,
metrics), `operating` (releases, schedule state), `recorder` (events to rows: an ordinary subscriber),
`doctor` and `gc` (`flow doctor`, `flow gc`), `discovery` (which store a command uses), `sqlite`
(`Store`, all of them together) and `api` (the protocols the engine depends on).
"""

from __future__ import annotations

from runner.store.api import (
    ArtifactStore,
    CacheHit,
    CacheStore,
    EngineStore,
    LeaseHolder,
    LeaseStore,
    RunStore,
)
from runner.store.doctor import Diagnosis, diagnose, held_lines, human_size
from runner.store.gc import Collected, Policy, collect_garbage
from runner.store.leases import LEASE_TTL_S
from runner.store.owners import Held
from runner.store.schema import SCHEMA_VERSION
from runner.store.sqlite import Store, default_store_dir

__all__ = [
    "LEASE_TTL_S",
    "SCHEMA_VERSION",
    "ArtifactStore",
    "CacheHit",
    "CacheStore",
    "Collected",
    "Diagnosis",
    "EngineStore",
    "Held",
    "LeaseHolder",
    "LeaseStore",
    "Policy",
    "RunStore",
    "Store",
    "collect_garbage",
    "default_store_dir",
    "diagnose",
    "held_lines",
    "human_size",
]
