"""Provides the store as the engine sees it: five small protocols, so a second backend can follow.

`runner.store.sqlite.Store` (SQLite in WAL mode plus artifact files under `.flow/`) implements all five
and stays the zero-set-up default. A team store would implement them over PostgreSQL (runs, cache,
leases) and an S3-compatible object store (artifacts) without touching the engine, which depends on
`EngineStore` only (and the plain records here: `CacheHit`, `LeaseHolder`). Reads for people
(`flow runs`, `flow show`, the TUI) use the `History` part of the concrete store and return the
public records of `runner.records`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from runner.events import Event
from runner.records import RunRecord


class CacheHit(NamedTuple):
    """A cached output: its hash and where its bytes are (a tuple: a new engine's first run makes
    one per step of the flow's last run: 0.15 µs, against 0.38 for a frozen dataclass)."""

    output_hash: str
    run_id: int | None
    preview: str | None
    intact: bool = False
    """True when the lookup already verified an inline artifact against its hash."""


Hit = tuple[str, int | None, str | None, bool]
"""A cache entry as `CacheHit` holds it, `(output_hash, run_id, preview, intact)`, as a plain tuple: a
new process's cached re-run reads one per step of the flow (a `CacheHit` made of each cost 0.3 µs)."""


class KeptHits(NamedTuple):
    """What the store is to keep of a run's cache entries as it ends (`runner.store.last_hits.keep`)."""

    carry_from: int | None
    """A run whose kept entries hold every one this run found: its row becomes this run's as it is."""
    found: dict[str, Hit] | None = None
    """Else the entries the run reused or stored, from the engine's memory."""
    generation: int | None = None
    """The store's count of changes when the run read the entries it reused: `found` is kept only if
    the count has not moved since."""


class LastHits(NamedTuple):
    """The cache entries of the fingerprints a flow's last finished run used, by fingerprint
    (`runner.store.last_hits`)."""

    hits: dict[str, Hit]
    generation: int
    """The store's count of changes that may make a kept entry stale, read before the entries."""
    kept_run: int | None
    """That run, if the entries were read from the row kept for it (None: joined from its step rows,
    or the flow has no finished run)."""


@dataclass(frozen=True)
class LeaseHolder:
    """Another live process computing a fingerprint right now."""

    pid: int
    host: str
    acquired_at: float


class Recorder(Protocol):
    """Records a run's events in the store (an ordinary subscriber, called before any other)."""

    def __call__(self, event: Event) -> None: ...

    def record_detail(self, run_id: int, step: str, detail: dict[str, object], where: str) -> None:
        """Keep an execution's fingerprint parts (written with the step's row, or at the run's end)."""
        ...

    def record_sources(self, run_id: int, files: Mapping[str, str]) -> None:
        """Keep the files a run loaded (`runner.store.sources`)."""
        ...

    def record_texts(self, texts: Mapping[str, str]) -> None:
        """Keep the part sources of a step about to execute (its code's, its helpers'), by hash."""
        ...

    def write_held(self) -> None:
        """Queue the rows held since a run began (the scheduler calls it before it waits): a run's
        first decisions are written with its steps' pending rows, as one batch."""
        ...

    def keep_hits(self, run_id: int, flow: str, kept: KeptHits) -> None:
        """As the run ends, keep the cache entries its steps found, for the flow's next process
        (`CacheStore.cache_hits_of_last_run`)."""
        ...


class RunStore(Protocol):
    """Runs and their steps as the engine writes them (through `recorder`) and reads them back."""

    def create_run(self, flow: str, file: str, params: dict[str, Any], trigger: str, executor: str) -> int:
        """Insert a run now (visible to `flow runs` at once); return its id."""
        ...

    def get_run(self, run_id: int) -> RunRecord | None: ...

    def delete_run(self, run_id: int, *, reuse_id: bool = False) -> bool: ...

    def abandon_run(self, run_id: int, error: str) -> None:
        """Record a run the engine could not finish normally as failed."""
        ...

    def mark_interrupted(self) -> list[int]:
        """Mark runs whose process is gone as interrupted; return their ids."""
        ...

    def previous_details(self, flow: str) -> dict[str, dict[str, Any]]:
        """Per step, its fingerprint parts in the flow's latest run that decided it (for `explain`)."""
        ...

    def metrics_by_fingerprint(self, run_ids: Collection[int]) -> dict[int, dict[str, dict[str, float]]]:
        """Per run asked for, fingerprint -> metrics recorded in it (what a cached step reuses)."""
        ...

    def recorder(self) -> Recorder:
        """The subscriber that records events (the engine calls it before any other subscriber)."""
        ...

    def help_write(self) -> bool:
        """Apply one queued write on the calling thread if that needs no waiting; return whether one
        was (the scheduler's work while it polls for a worker's result)."""
        ...

    def flush(self) -> None:
        """Wait until every queued write is durable; raise the first write error."""
        ...

    def close(self) -> None: ...


class CacheStore(Protocol):
    """Fingerprint -> output: what makes a step `cached`."""

    def lookup(self, fingerprint: str, *, verify: bool = False) -> CacheHit | None: ...

    def cache_hits_of_last_run(self, flow: str) -> LastHits: ...

    def cache_rows_after(self, rowid: int, limit: int) -> tuple[list[tuple[str, str]], int] | None: ...

    def forget_cache(self, fingerprint: str) -> None: ...

    def gc_generation(self) -> str: ...

    def record_output(
        self,
        digest: str,
        size: int,
        data: bytes | None,
        *,
        cache_as: str | None,
        step: str,
        run_id: int,
        preview: str | None,
        stamp: tuple[int, int, int, int, int] | None = None,
    ) -> None: ...


class ArtifactStore(Protocol):
    """Outputs by content hash. Workers write large ones as files under `artifact_dir` themselves."""

    artifact_dir: Path

    def artifact_location(
        self, digest: str, *, keep_stamp: bool = False
    ) -> tuple[bytes | None, str | None]: ...

    def read_artifact(self, digest: str) -> bytes: ...


class LeaseStore(Protocol):
    """Who else computes what: one process computes a fingerprint, the others wait for it."""

    def other_live_runs(self) -> bool: ...

    def other_live_leases(self) -> bool: ...

    def running_elsewhere(self, fingerprint: str) -> int | None: ...

    def acquire_lease(self, fingerprint: str) -> LeaseHolder | None: ...

    def release_lease(self, fingerprint: str) -> None: ...


@dataclass(frozen=True)
class JobRecord:
    """An external job a step started.

    Attributes:
        run_id, step: the run and step that started (or adopted) it.
        fingerprint: the step's fingerprint then (a resumed run adopts the job only if it is the same).
        handle: the pickled handle `start` returned.
        handle_text: its short repr, as shown (secrets masked).
        status: see `JOB_RUNNING`.
        detail: why it ended, when it did not succeed.
        polls: `status` calls answered so far.
        started_at, updated_at: epoch seconds.
    """

    run_id: int
    step: str
    fingerprint: str
    handle: bytes
    handle_text: str
    status: str
    detail: str
    polls: int
    started_at: float
    updated_at: float


class ControlStore(Protocol):
    """Stop requests from other processes, and the handles of external jobs (`runner.store.control`)."""

    def stop_requests(self, run_ids: Iterable[int]) -> list[int]: ...

    def record_job(
        self, run_id: int, step: str, fingerprint: str, handle: bytes, handle_text: str, status: str
    ) -> None: ...

    def update_job(
        self, run_id: int, step: str, status: str, *, polls: int | None = None, detail: str = ""
    ) -> None: ...

    def job_in_flight(self, run_id: int, step: str) -> JobRecord | None: ...


class EngineStore(RunStore, CacheStore, ArtifactStore, LeaseStore, ControlStore, Protocol):
    """Everything the engine needs of a store."""
