"""Provides the run store: every SQL statement of flow lives in this package, behind one API.

By part: `schema` (tables, version, migrations), `base` (directory, privacy, connections, the write
queue), `writer` (the thread that commits it), `owners` and `liveness` (which processes hold runs and
leases, alive or not), `leases`, `cache` (cache entries and artifacts), `history` (runs, steps, logs,
metrics), `operating` (releases, schedule state), `recorder` (events to rows: an ordinary subscriber),
`rows` (steps' rows and their outputs', batched into one write), `doctor` and `gc` (`flow doctor`,
`flow gc`), `discovery` (which store a command uses), `sqlite` (`Store`, all of them together) and
`api` (the protocols the engine depends on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.store.api import (
    ArtifactStore,
    CacheHit,
    CacheStore,
    EngineStore,
    LeaseHolder,
    LeaseStore,
    RunStore,
)
from runner.store.leases import LEASE_TTL_S
from runner.store.owners import Held
from runner.store.schema import SCHEMA_VERSION
from runner.store.sqlite import Store, default_store_dir

if TYPE_CHECKING:
    from runner.store.doctor import Diagnosis, diagnose, held_lines, human_size
    from runner.store.gc import Collected, Policy, collect_garbage

_LAZY = {
    "Diagnosis": "doctor",
    "diagnose": "doctor",
    "held_lines": "doctor",
    "human_size": "doctor",
    "Collected": "gc",
    "Policy": "gc",
    "collect_garbage": "gc",
}
"""What `flow doctor`, `flow gc` and `flow runs` use, imported on first use: a run needs none of it."""


def __getattr__(name: str) -> object:
    part = _LAZY.get(name)
    if part is None:
        raise AttributeError(f"module 'runner.store' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"runner.store.{part}"), name)
    globals()[name] = value
    return value


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
