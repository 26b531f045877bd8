"""Provides `CacheIndex`: what the engine remembers of the store's cache, so a re-run asks SQLite little.

Three memories, each bounded: the results this engine stored (`recent`, with the path of each file
artifact, checked by its stamp: a cached step costs one `stat`), the fingerprints present in the
store's cache when a run started (`cached`: a miss there skips the lookup), and each step's fingerprint
parts in its latest run (`details`, what `explain` compares against). `flow gc` invalidates all of
them (its generation changes). The index reads and writes the store only through its protocols
(`runner.store.api`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from runner.artifacts import ArtifactError, verify_file
from runner.engine.decide import Reusable
from runner.engine.model import Run
from runner.store.api import EngineStore, Hit

CACHED_ROWS_PER_STEP = 20
"""A run loads the cache's new fingerprints if there are at most this many per step in its scope
(plus 1,000): loading a row costs far less than one SQLite lookup on the scheduler thread."""
RECENT_SIZE = 100_000
"""Results (and step details) remembered; the oldest are forgotten first."""


class CacheIndex:
    """The engine's memory of the cache. Used on the scheduler thread, and by `Engine.start` under the
    engine's lock (`lock`)."""

    def __init__(self, store: EngineStore, lock: threading.RLock) -> None:
        self._store = store
        self._lock = lock
        self._recent: dict[str, Reusable] = {}
        self._files: dict[str, str] = {}
        self._cached: set[int] = set()
        """`hash()` of every fingerprint in the store's cache as of `_cached_rowid` (see `refresh`)."""
        self._cached_rowid = 0
        self._cached_fresh = False
        self._catch_up_for = 0
        """The most steps of a run started since `_cached` last caught up (0: nothing to catch up)."""
        self._gc_generation = store.gc_generation()
        self._unusable: dict[str, str] = {}
        """Fingerprints whose stored result turned out missing or corrupt: why (the re-run's reason)."""
        self._details: dict[str, dict[str, dict[str, Any]]] = {}
        """Flow -> step -> its latest fingerprint parts (`remember_detail`), at most `RECENT_SIZE` a
        flow (by flow, then step: a key tuple per step was a tenth of a cached step's bookkeeping)."""
        self._steps: set[str] = set()
        """Names of the steps with a result in the store's cache as of `_cached_rowid`, or stored by
        this engine since (see `never_cached`)."""

    def refresh(self, steps: int) -> None:
        """A run of `steps` steps starts: forget what `flow gc` has removed since the last one, and
        catch up with the cache rows written meanwhile (by anyone) when the run first needs them.

        A cold run then skips the SQLite lookup of every step whose fingerprint is not among them,
        which is most of a trivial step's cost on the scheduler. Rows are loaded only while there
        are few enough to beat one lookup per step; otherwise every step asks SQLite, as before.
        They are loaded at the first step that neither this engine's results nor the run's
        prefetched hits answer (`reusable`), not as the run starts: a new engine's fully cached
        re-run never needs them (reading the fingerprint of every cache row was ~0.5 µs a step of
        it). Loaded later, they can only be more: a fingerprint not among them is still not in the
        cache as of the run's start.
        """
        generation = self._store.gc_generation()
        with self._lock:
            if generation != self._gc_generation:
                # `flow gc` removed cache entries and artifacts since: what this engine remembers of
                # the cache may name results that are gone (and the cache's rowids may be reused).
                self._gc_generation = generation
                self._recent.clear()
                self._files.clear()
                self._cached.clear()
                self._cached_rowid = 0
            self._cached_fresh = False
            self._catch_up_for = max(self._catch_up_for, steps)

    def _catch_up(self) -> None:
        """Load the cache rows written since `_cached` last caught up (see `refresh`)."""
        steps, self._catch_up_for = self._catch_up_for, 0
        found = self._store.cache_rows_after(self._cached_rowid, CACHED_ROWS_PER_STEP * steps + 1000)
        if found is None:
            self._cached_fresh = False
            return
        rows, self._cached_rowid = found
        self._cached.update(hash(fingerprint) for fingerprint, _ in rows)
        self._steps.update(step for _, step in rows)
        self._cached_fresh = True

    def reusable(
        self, run: Run, name: str, fingerprint: str, cache: bool, others_live: Callable[[], bool]
    ) -> Reusable | None:
        """A stored result for this fingerprint whose artifact is present and intact.

        `cache=False` steps reuse only the result of the run being resumed. `others_live` says whether
        another process uses the store (then a fingerprint unknown at the run's start may have been
        stored since, and SQLite is asked)."""
        recent = self._recent.get(fingerprint) if cache else None
        kept: Hit | None = None
        if not cache:
            resumed = run.resume.get(name)
            if resumed is None or resumed[0] != fingerprint:
                return None
            found = Reusable(resumed[1], run.request.resume_of, None)
        elif recent is not None:
            if self._intact_file(fingerprint, recent.output_hash):
                run.found = None  # an entry from before the run: it keeps none from memory
                return recent
            self._forget(fingerprint, "its artifact file is gone or changed on disk")
            return None
        else:
            kept = run.prefetched.pop(fingerprint, None)
            if kept is None:
                if self._catch_up_for:
                    self._catch_up()
                if self._cached_fresh and hash(fingerprint) not in self._cached and not others_live():
                    return None  # surely not in the store's cache (see `refresh`)
                hit = self._store.lookup(fingerprint, verify=True)
                if hit is None:
                    return None
                kept = (hit.output_hash, hit.run_id, hit.preview, hit.intact)
            found = Reusable(kept[0], kept[1], kept[2])
        if kept is None or not kept[3]:  # not an inline artifact already checked
            try:
                self._store.artifact_location(found.output_hash, keep_stamp=True)
            except ArtifactError as exc:
                self._forget(fingerprint, str(exc))
                return None
        if kept is not None and run.found is not None:
            run.found[fingerprint] = kept
        return found

    def never_cached(self, step: str) -> bool:
        """Whether no result of a step of this name is in the store's cache as of the run's start, nor
        was stored by this engine since: then none of that step's fingerprints can be found there
        (`runner.engine.chaining`). False when that is not known: the rows written since the last
        look were too many to read (the same listing `reusable` reads, read once for both).

        Names only accumulate here: after `flow gc` removed a step's results this may say False where
        True would be right, never the reverse."""
        if self._catch_up_for:
            self._catch_up()
        return self._cached_fresh and step not in self._steps

    def _forget(self, fingerprint: str, why: str) -> None:
        self._recent.pop(fingerprint, None)
        self._store.forget_cache(fingerprint)
        self._unusable[fingerprint] = why

    def pop_unusable(self, fingerprint: str) -> str | None:
        """Why this fingerprint's stored result could not be used (said once, by the re-run's reason)."""
        return self._unusable.pop(fingerprint, None)

    def _intact_file(self, fingerprint: str, digest: str) -> bool:
        """A file artifact this engine stored still holds `digest`: checked by the stamp its worker
        reported (`runner.artifacts.verify_file`; one `stat`), hashed only if the file changed since.

        Cheap enough for every cached step of a re-run; inline artifacts live in SQLite with their row.
        """
        path = self._files.get(fingerprint)
        if path is None:
            return True
        try:
            verify_file(path, digest)
        except ArtifactError:
            return False
        return True

    def remember(self, fingerprint: str, found: Reusable, path: str | None, step: str) -> None:
        """A result step `step` just stored under `fingerprint` (in a file at `path`, or inline)."""
        self._recent[fingerprint] = found
        self._steps.add(step)
        if path is not None:
            self._files[fingerprint] = path
        if len(self._recent) > RECENT_SIZE:
            evicted = next(iter(self._recent))
            self._recent.pop(evicted)
            self._files.pop(evicted, None)

    def remember_detail(self, run: Run, name: str, detail: dict[str, Any]) -> None:
        """What the next run of the flow compares this step against (`explain`): its fingerprint
        parts in this run, whether it executed or came from the cache."""
        details = self._details.get(run.request.loaded.name)
        if details is None:
            details = self._details[run.request.loaded.name] = {}
        details[name] = detail
        if len(details) > RECENT_SIZE:
            details.pop(next(iter(details)))

    def previous_detail(self, run: Run, name: str) -> dict[str, Any] | None:
        """The fingerprint parts of the step in the flow's previous run (this engine's memory, else
        the store): "upstream output changed: X" only when X differs from what the user last saw."""
        flow = run.request.loaded.name
        known = self._details.get(flow, {}).get(name)
        if known is not None:
            return known
        if run.previous is None:
            run.previous = self._store.previous_details(flow)
        return run.previous.get(name)

    def metrics_of(self, run: Run, from_run: int | None, fingerprint: str) -> dict[str, float] | None:
        """The metrics a cached step recorded in the run that computed it (one query per source run),
        found by fingerprint: a fan-out item's index there may differ from its index now."""
        if from_run is None:
            return None
        by_print = run.source_metrics.get(from_run)
        if by_print is None:
            run.source_metrics.update(self._store.metrics_by_fingerprint([from_run]))
            by_print = run.source_metrics[from_run]
        return by_print.get(fingerprint)
