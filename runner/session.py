"""Provides `FlowSession`: one flow file kept loaded — load, diff, plan, run — with hot reload.

This is the edit-save-rerun loop as an API: `flow run --watch` and the TUI are thin views over it.
On a save the flow is re-loaded in a fresh namespace (its local modules re-imported from their new
source), the load-time fingerprints are diffed against the last good load, and a new run starts that
supersedes the one in flight: executions whose fingerprint is unchanged keep running and are joined,
the rest are killed. A broken save (syntax error, import error, cycle) keeps the last good graph.
"""

from __future__ import annotations

import fnmatch
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl import flowcode
from dsl.errors import FlowError
from dsl.loader import LoadedFlow, load_flow
from runner.engine import Engine, RunHandle, RunRequest
from runner.events import FlowReloaded, LoadFailed
from runner.fingerprint import StaticPrint, Untrusted, value_hash
from runner.fingerprint.declared import declared_inputs, watched_paths
from runner.fingerprint.imports import text_sha
from runner.fingerprint.prints import read_ahead
from runner.params import resolve_flow_params

WATCH_STEP_MS = 2
"""Quiet time that ends a burst of writes: an editor's save (write, rename, chmod) is one reload. An
editor's writes follow each other within microseconds; 2 ms of quiet still groups a save, where 10 ms
added ~10 ms to every reload. A save caught half way is reloaded again when the rest of it lands (a
load that fails meanwhile is shown only after `WATCH_SETTLE_MS`), as it was at 10 ms."""

WATCH_DEBOUNCE_MS = 300
"""Longest a continuous stream of writes is grouped before reloading anyway."""

WATCH_SETTLE_MS = 150
"""A failed reload (or a deleted file) is reported only if no watched file changes for this long:
a reload that read a file in the middle of its save (truncated, half written, renamed away) is not
shown as an error. Good loads are not delayed."""


@dataclass(frozen=True)
class Diff:
    """How a reload changed the flow, step by step."""

    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.changed or self.added or self.removed)


class FlowSession:
    """A flow file, its last good load and its runs.

    Over the ~300 lines a class should be, for a reason: loading, running and watching share the
    last good load, its parameters and the run in flight under one lock, and the watcher's decisions
    (reload? re-run?) read all three.

    Parameters are resolved once per load (`load`, a reload) and kept as typed values: every run of
    that load takes them as they are (`params`), and the engine hashes and pickles each once per run.
    `set_overrides` changes the `-p` values for the next runs (the TUI's parameters screen).

    Args:
        path: the flow file.
        engine: runs the flow; reload events are published through its subscribers.
        overrides: `-p` values (strings or typed values) applied to every run.
        file_values: values from `--params FILE`.
    """

    def __init__(
        self,
        path: str | Path,
        engine: Engine,
        overrides: dict[str, Any] | None = None,
        file_values: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.engine = engine
        self._overrides = dict(overrides or {})
        self.file_values = dict(file_values or {})
        self._values: dict[str, Any] | None = None
        """The parameters of the last good load, resolved (None: to resolve at the next run)."""
        self.loaded: LoadedFlow | None = None
        self.error: FlowError | None = None
        self.current: RunHandle | None = None
        self.last_diff = Diff((), (), ())
        self._signature: dict[str, tuple[Any, ...]] | None = {}
        """What the next reload compares with; None while the last load's is deferred (`load`)."""
        self._deferred: tuple[LoadedFlow, dict[str, Any]] | None = None
        """The load (and its parameter values) whose signature is still to be computed."""
        self._lock = threading.RLock()
        self._warmed: dict[tuple[int, int, str], types.CodeType] | None = None
        """The (empty) parts of the flow file `_warm_parts` last tried to fill (`dsl.flowcode`)."""

    # ----- loading ------------------------------------------------------------------------------

    def load(self, loaded: LoadedFlow | None = None, *, defer_baseline: bool = False) -> LoadedFlow:
        """The first load (or adopt `loaded`, already loaded from `path`): raises `FlowError` (there
        is no last good graph to fall back on).

        `defer_baseline`: leave the reload baseline (every step's static fingerprint: 18 ms for 500
        steps, 0.55 s for 10,000) to `baseline()`, so a view can show the graph first. The flow's
        own text and its local modules are as loaded either way; what the fingerprints read from
        disk (modules a step imports in its body, declared input files) is read when they are
        computed, as it always was some time after the load. A reload that comes first computes
        the baseline itself and counts every step that reads such files as changed (`_diff`).
        """
        if loaded is None:
            loaded = load_flow(self.path)
        params = resolve_flow_params(loaded, self._overrides, self.file_values)
        with self._lock:
            self.loaded, self.error = loaded, None
            self._values = params
            if defer_baseline:
                self._signature, self._deferred = None, (loaded, params)
            else:
                self._signature, self._deferred = self._signatures(loaded, params), None
        return loaded

    def baseline(self) -> None:
        """Compute the reload baseline `load(defer_baseline=True)` left (blocking; a no-op after)."""
        deferred = self._deferred
        if deferred is not None:  # the slow part (kept per load by the engine) outside the lock
            self.engine.static_prints(deferred[0])
        with self._lock:
            self._baseline()

    @property
    def baseline_ready(self) -> bool:
        """Whether the reload baseline of the last good load is computed."""
        return self._signature is not None

    def _baseline(self) -> dict[str, tuple[Any, ...]]:
        """The signature a reload compares with (under `_lock`): computed now if it was deferred,
        from the load and parameter values it was deferred with."""
        if self._signature is None:
            assert self._deferred is not None
            self._signature = self._signatures(*self._deferred)
            self._deferred = None
        return self._signature

    def reload(self, changed_file: str | None = None) -> bool:
        """Load the flow again; publish `FlowReloaded` or `LoadFailed`. Return True if the load is good."""
        failure = self._reload(changed_file)
        if failure is not None:
            self.engine.publish(LoadFailed(str(self.path), str(failure), time.time()))
        return failure is None

    def _reload(self, changed_file: str | None) -> FlowError | None:
        """`reload` without publishing a failure: return it (the watcher reports it once settled)."""
        shown = changed_file or self.path.name
        try:
            loaded = load_flow(self.path)
            params = resolve_flow_params(loaded, self._overrides, self.file_values)
        except FlowError as exc:
            with self._lock:
                self.error = exc
            return exc
        self.engine.static_prints(loaded)  # the slow part of `_diff` (kept per load) outside the lock
        with self._lock:
            diff = self._diff(loaded, params)
            self.loaded, self.error = loaded, None
            self._values = params
        targets = set(diff.changed + diff.added)
        for name in diff.changed + diff.added:
            targets |= loaded.graph.descendants(name)
        rerun = tuple(name for name in loaded.graph.order if name in targets)
        self.engine.publish(
            FlowReloaded(
                str(self.path),
                shown,
                diff.changed,
                diff.added,
                diff.removed,
                time.time(),
                rerun=rerun,
                cached=len(loaded.graph.nodes) - len(rerun),
            )
        )
        self.last_diff = diff
        return None

    def _signatures(self, loaded: LoadedFlow, params: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
        """Per step, what a reload compares: load-time fingerprint, upstreams, parameter values, options."""
        prints: dict[str, StaticPrint] = self.engine.static_prints(loaded)
        signature: dict[str, tuple[Any, ...]] = {}
        for name, node in loaded.graph.nodes.items():
            values: tuple[object, ...]
            try:
                values = tuple(value_hash(params[p]) for p in node.params)
            except Untrusted:
                values = (time.time(),)
            step = node.step
            declared = declared_inputs(step, loaded.root) if step.inputs or step.env else None
            signature[name] = (
                prints[name],
                tuple(node.upstream),
                values,
                step.cache,
                step.trigger,
                step.foreach,
                declared,
            )
        return signature

    def _diff(self, loaded: LoadedFlow, params: dict[str, Any]) -> Diff:
        # A baseline computed only now read the files a step imports in its body and its declared
        # inputs after this save: a step that reads any counts as changed (the run's fingerprints
        # still decide what executes).
        late = self._signature is None
        old = self._baseline()
        new = self._signatures(loaded, params)
        self._signature = new

        def moved(name: str) -> bool:
            before, now = old[name], new[name]
            return before != now or now[0].untrusted or (late and bool(before[0].files or before[-1]))

        return Diff(
            changed=tuple(n for n in new if n in old and moved(n)),
            added=tuple(n for n in new if n not in old),
            removed=tuple(n for n in old if n not in new),
        )

    # ----- running ------------------------------------------------------------------------------

    @property
    def overrides(self) -> dict[str, Any]:
        """The `-p` values applied to every run (a copy: change them with `set_overrides`)."""
        return dict(self._overrides)

    def set_overrides(self, overrides: Mapping[str, Any]) -> None:
        """Replace the `-p` values for the next runs. They are resolved against the last good load at
        the next run (`params`), where a value that does not fit raises `FlowError`, as `-p` would."""
        with self._lock:
            self._overrides = dict(overrides)
            self._values = None

    def params(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every parameter's typed value for the next run (session overrides, then `extra`).

        Raises:
            FlowError: a value that does not fit its parameter, or a required one missing.
        """
        with self._lock:
            loaded, values = self.loaded, self._values
        assert loaded is not None
        if extra:
            return resolve_flow_params(loaded, {**self._overrides, **extra}, self.file_values)
        if values is None:
            values = resolve_flow_params(loaded, self._overrides, self.file_values)
            with self._lock:
                if self.loaded is loaded:
                    self._values = values
        return dict(values)

    def run(
        self,
        *,
        trigger: str = "manual",
        force: bool = False,
        force_steps: Sequence[str] = (),
        only: Sequence[str] = (),
        from_steps: Sequence[str] = (),
        to_steps: Sequence[str] = (),
        params: dict[str, Any] | None = None,
        resume_of: int | None = None,
        prioritise: Sequence[str] = (),
    ) -> RunHandle:
        """Start a run of the last good graph; it supersedes this session's run in flight, if any.

        Raises:
            FlowError: no good load yet, a bad parameter, or a selection naming no step.
        """
        with self._lock:
            if self.loaded is None:
                raise self.error or FlowError("the flow has not loaded", file=str(self.path))
            previous = self.current
            request = RunRequest(
                loaded=self.loaded,
                params=self.params(params),
                only=tuple(only),
                from_steps=tuple(from_steps),
                to_steps=tuple(to_steps),
                force=force,
                force_steps=tuple(force_steps),
                trigger=trigger,
                resume_of=resume_of,
                prioritise=tuple(prioritise),
                supersedes=previous.id if previous is not None and not previous.done else None,
            )
            self.current = self.engine.start(request)
            return self.current

    # ----- watching -----------------------------------------------------------------------------

    def watched_files(self) -> set[Path]:
        """The flow file, every local module the last good load imported, every module of the user's
        a step imports in its body, and the steps' declared input files (and the directories new
        ones would appear in)."""
        files = {self.path.resolve()}
        loaded = self.loaded
        if loaded is not None:
            files |= {p.resolve() for p in loaded.watch_paths}
            for name, static in self.engine.static_prints(loaded).items():
                files |= {Path(p) for p in static.files}
                step = loaded.graph.nodes[name].step
                if step.inputs:
                    files |= {p.resolve() for p in watched_paths(step, loaded.root)}
        return files

    def _declared_patterns(self) -> list[str]:
        """Absolute glob patterns of the declared input files: a new file matching one counts."""
        loaded = self.loaded
        if loaded is None:
            return []
        return [
            str(Path(pattern) if Path(pattern).is_absolute() else loaded.root / pattern)
            for node in loaded.graph.nodes.values()
            for pattern in node.step.inputs
        ]

    def watch(
        self,
        stop_event: threading.Event,
        *,
        on_ready: Callable[[], None] | None = None,
        run_options: dict[str, Any] | None = None,
    ) -> None:
        """Block, re-loading and re-running on every save until `stop_event` is set.

        Watches the directories of the watched files (not the files: a save by rename replaces the
        inode), reacts only to changes of watched files, and coalesces a burst of writes into one
        reload: a load that fails is reported only once no watched file has changed for
        `WATCH_SETTLE_MS` (it may have read a half-written file), and a change that leaves every
        touched file exactly as last loaded is the tail of a save already handled. Once the watcher
        is (re-)armed, files that changed while it was not (a save during the first run, or while it
        restarted to watch a newly imported module) are reloaded. `on_ready` is called once the
        watcher is armed (tests wait on it).
        """
        from watchfiles import watch

        pending: tuple[FlowError, float] | None = None  # a failure not reported yet, and when to
        while not stop_event.is_set():
            files = self.watched_files()
            patterns = self._declared_patterns()
            directories = sorted({str(f if f.is_dir() else f.parent) for f in files})
            restart = False
            armed = False
            for changes in watch(
                *directories,
                stop_event=stop_event,
                step=WATCH_STEP_MS,
                debounce=WATCH_DEBOUNCE_MS,
                recursive=False,
                raise_interrupt=False,
                yield_on_timeout=True,
                rust_timeout=50,
            ):
                touched = {
                    path
                    for path in (Path(p).resolve() for _, p in changes)
                    if path in files or any(fnmatch.fnmatch(str(path), pattern) for pattern in patterns)
                }
                if not armed:
                    armed = True
                    if on_ready is not None:
                        on_ready()
                        on_ready = None
                    if self.loaded is not None and self.error is None:
                        touched |= self._changed_since_load(files)
                if not touched:
                    if pending is not None and time.monotonic() >= pending[1]:
                        self.engine.publish(LoadFailed(str(self.path), str(pending[0]), time.time()))
                        pending = None
                    self._warm_parts()
                    continue
                pending = None
                settle = time.monotonic() + WATCH_SETTLE_MS / 1000
                changed_file = ", ".join(sorted(p.name for p in touched))
                if not self.path.exists():
                    deleted = FlowError("the file was deleted; waiting for it", file=str(self.path))
                    with self._lock:
                        self.error = deleted
                    pending = (deleted, settle)
                    continue
                settled = self.current is not None and not self._last_run_failed()
                if settled and not self._changed_since_load(touched):
                    continue  # the rest of a save already loaded (and run): nothing to do
                failure = self._reload(changed_file)
                if failure is not None:
                    pending = (failure, settle)
                    continue
                if not self.last_diff.empty or self._last_run_failed() or self.current is None:
                    try:
                        diff = self.last_diff
                        self.run(
                            trigger=f"watch: {changed_file} changed",
                            prioritise=diff.changed + diff.added,
                            **(run_options or {}),
                        )
                    except FlowError as exc:
                        self.engine.publish(LoadFailed(str(self.path), str(exc), time.time()))
                if self.watched_files() != files:
                    restart = True
                    break
            if not restart:
                return

    def _warm_parts(self) -> None:
        """While the watcher waits: if the flow file was last compiled whole (its first load, or a
        load that failed), cut the last good load's text into the parts a reload compiles
        (`dsl.flowcode.warm`) and scan their functions, so the next save compiles only what it
        changed. Tried once each time the file's parts are emptied."""
        loaded = self.loaded
        if loaded is None or loaded.path.suffix.lower() != ".py":
            return
        path = str(loaded.path)
        parts = flowcode.parts_of(path)
        source = loaded.sources.get(path)
        if parts is None or parts or parts is self._warmed or source is None:
            return
        self._warmed = parts
        kept = flowcode.warm(path, source)
        if kept is not None:
            read_ahead(kept.values())

    def _last_run_failed(self) -> bool:
        current = self.current
        return current is not None and current.done and current.status != "succeeded"

    def _changed_since_load(self, files: set[Path]) -> set[Path]:
        """Those of `files` that differ from the last good load (all of them after a failed one): a
        module's text, a module a step imports in its body, or (any other watched path) a declared
        input of some step."""
        with self._lock:
            loaded, error = self.loaded, self.error
        if loaded is None or error is not None:
            return set(files)
        imported = {
            path: sha
            for static in self.engine.static_prints(loaded).values()
            for path, sha in static.files.items()
        }
        declared_moved: bool | None = None
        changed = set()
        for path in files:
            key = str(path)
            if key in loaded.sources or key in imported:
                try:
                    text: str | None = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    text = None
                if key in loaded.sources:
                    moved = text != loaded.sources[key]
                else:
                    moved = text is None or text_sha(text) != imported[key]
            else:
                if declared_moved is None:
                    declared_moved = self._declared_moved(loaded)
                moved = declared_moved
            if moved:
                changed.add(path)
        return changed

    def _declared_moved(self, loaded: LoadedFlow) -> bool:
        """Whether any step's declared input files or variables differ from the last good load."""
        with self._lock:
            signature = dict(self._baseline())
        for name, node in loaded.graph.nodes.items():
            step = node.step
            if (step.inputs or step.env) and name in signature:
                if declared_inputs(step, loaded.root) != signature[name][-1]:
                    return True
        return False
