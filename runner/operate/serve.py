"""Provides `Server` (`flow serve [DIR]`) and `list_schedules` (`flow schedules [DIR]`).

The server keeps every flow file in DIR loaded (one `FlowSession` each) and starts a run (trigger
`schedule`) whenever a flow's schedule is due, as `runner.operate.schedule.decide` says, including the
catch-up of due times missed while it was down. The last due time handled per flow is kept in the
store, so a restarted server knows what it missed. It watches DIR: an edited file is reloaded (a
broken save is reported and the last good version stays scheduled), a new file is picked up, a
broken new file is retried on its next save, a deleted one is no longer scheduled. It never starts
a run of a flow while that flow's previous run is still going, unless the flow says `overlap=True`.
`stop` (SIGTERM, Ctrl-C) stops the runs in flight and puts their due times back, so the next start
catches them up.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dsl.errors import FlowError
from dsl.loader import LoadedFlow, load_flow
from runner.engine import Engine, RunHandle, RunRequest
from runner.events import Event, LoadFailed, RunFinished
from runner.flow_files import find_flows, is_flow_file
from runner.operate.releases import load_release
from runner.operate.schedule import Schedule, decide, schedule_of
from runner.session import FlowSession
from runner.store import Store
from runner.text import visible

IDLE_WAKE_S = 1.0
"""Longest the server sleeps without a due time or a file change: a bound on how late it notices
a clock jump (suspend, NTP step)."""
WATCH_DEBOUNCE_MS = 300
"""Writes to DIR within this window are one change (an editor's save is several writes)."""
WATCH_ARM_S = 10.0
"""Longest the server waits for its file watcher to be in place before it starts scheduling."""


@dataclass
class ServedFlow:
    """One flow the server schedules: a file in DIR, or a release.

    Attributes:
        key: what its schedule state is stored under (the file's path, or `release:NAME@V`).
        label: how it is named in messages.
        session: keeps it loaded; None until it first loads.
        error: why it does not load (or is not scheduled), if so.
        schedule: None when it declares none (it is then only listed).
        handles: its runs in flight.
        next_due: when to decide for it again.
        restore: the due time handled before the one a run in flight was started for.
    """

    key: str
    label: str
    path: Path | None = None
    release: str | None = None
    session: FlowSession | None = None
    error: str | None = None
    schedule: Schedule | None = None
    handles: list[RunHandle] = field(default_factory=list)
    next_due: float = 0.0
    served_since: float = 0.0
    restore: dict[int, float | None] = field(default_factory=dict)
    attempted: dict[Path, str | None] = field(default_factory=dict)
    """The text of files as the last failed load read them: only a change to them retries it."""

    @property
    def loaded(self) -> LoadedFlow | None:
        return self.session.loaded if self.session is not None else None

    @property
    def busy(self) -> bool:
        """Whether a run of this flow is in flight (finished ones are forgotten here)."""
        for handle in self.handles:
            if handle.done:
                self.restore.pop(handle.id, None)
        self.handles = [h for h in self.handles if not h.done]
        return bool(self.handles)


def _stamp(moment: float, zone: str | None = None) -> str:
    """`2026-12-02 03:00:00 CET`: in `zone`, else in the machine's local time."""
    when = (
        datetime.fromtimestamp(moment, ZoneInfo(zone))
        if zone
        else datetime.fromtimestamp(moment).astimezone()
    )
    return when.strftime("%Y-%m-%d %H:%M:%S %Z")


class Server:
    """Schedules the flows in `directory` (and `releases`) on `engine` until `stop` is set.

    Args:
        directory: the directory whose flow files are served (None: only releases).
        store: the run store (schedule state, releases).
        engine: runs the flows.
        releases: release references (`NAME@latest`, `NAME@3`) to serve as well.
        say: where progress lines go.
        clock: the time (Unix seconds); tests may inject one.
    """

    def __init__(
        self,
        directory: Path | None,
        store: Store,
        engine: Engine,
        *,
        releases: tuple[str, ...] = (),
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory.resolve() if directory is not None else None
        self.store = store
        self.engine = engine
        self.release_refs = releases
        self._say: Callable[[str], None] = (lambda text: say(visible(text))) if say else (lambda text: None)
        self._clock = clock
        self.flows: dict[str, ServedFlow] = {}
        self._changes: queue.SimpleQueue[set[Path]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._runs: dict[int, ServedFlow] = {}
        engine.subscribe(self._on_event)

    # ----- flows ----------------------------------------------------------------------------

    def loaded_for(self, file: str) -> LoadedFlow | None:
        """The loaded flow a run's file belongs to (for hooks)."""
        for served in list(self.flows.values()):
            loaded = served.loaded
            if loaded is not None and str(loaded.path) == file:
                return loaded
        return None

    def _add_file(self, path: Path) -> None:
        served = ServedFlow(key=str(path), label=path.name, path=path, served_since=self._clock())
        self.flows[served.key] = served
        self._load(served)

    def _add_release(self, ref: str) -> None:
        """Serve a release; one that does not exist (or does not load) is refused at start."""
        served = ServedFlow(key=f"release:{ref}", label=ref, release=ref, served_since=self._clock())
        load_release(self.store, ref)
        self.flows[served.key] = served
        self._load(served)

    def _load(self, served: ServedFlow, changed: str | None = None) -> None:
        """(Re)load a served flow; report a failure (the last good version stays scheduled)."""
        try:
            if served.release is not None:
                loaded, frozen = load_release(self.store, served.release)
                if served.session is None or served.loaded is None or served.loaded.path != loaded.path:
                    served.session = FlowSession(loaded.path, self.engine, overrides=frozen)
                    served.session.load(loaded)
            elif served.session is None or served.session.loaded is None:
                assert served.path is not None
                served.session = FlowSession(served.path, self.engine)
                served.session.load()
            elif not served.session.reload(changed):
                raise served.session.error or FlowError("does not load", file=served.label)
            assert served.loaded is not None
            served.session.params()  # a required parameter without a default cannot be scheduled
            schedule = schedule_of(served.loaded)
        except FlowError as exc:
            kept = " (the last good version stays scheduled)" if served.schedule is not None else ""
            served.error = str(exc)
            watched = served.session.watched_files() if served.session is not None else set()
            served.attempted = {p: _text(p) for p in watched | ({served.path} if served.path else set())}
            self._say(f"{served.label}: {visible(served.error)}{kept}; retried on its next save")
            return
        previous, served.error = served.schedule, None
        served.schedule = schedule
        if schedule != previous:
            served.next_due = 0.0  # decide again now
            if schedule is None:
                self._say(f"{served.label}: no schedule (add schedule= or every= to its Flow(...))")
            else:
                self._say(f"{served.label}: {schedule.describe()}")

    # ----- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until `stop` is set; then stop the runs in flight (their due times are put back).

        Raises:
            FlowError: another server already serves the same flows with this store, or a
                release to serve does not exist.
        """
        with _only_server(self.store, str(self.directory or sorted(self.release_refs))):
            self._serve(stop, on_ready)

    def _serve(self, stop: threading.Event, on_ready: Callable[[], None] | None) -> None:
        for ref in self.release_refs:
            self._add_release(ref)
        if self.directory is not None:
            for path in find_flows(self.directory):
                self._add_file(path)
            armed = threading.Event()
            watcher = threading.Thread(
                target=self._watch, args=(stop, armed), name="flow-serve-watch", daemon=True
            )
            watcher.start()
            armed.wait(WATCH_ARM_S)
            # A file saved between its first load and the watcher's start is caught up now.
            self._changes.put(set(self.directory.iterdir()))
        scheduled = sum(1 for f in self.flows.values() if f.schedule is not None)
        where = str(self.directory) if self.directory is not None else "releases"
        self._say(f"serving {scheduled} scheduled flow(s) from {where} (Ctrl-C to stop)")
        if on_ready is not None:
            on_ready()
        while not stop.is_set():
            self._wake.clear()  # before looking: a wake-up from here on is not lost
            self._apply_changes()
            now = self._clock()
            wake = now + IDLE_WAKE_S
            for served in list(self.flows.values()):
                busy = served.busy
                if served.schedule is None:
                    continue
                if served.next_due <= now:
                    if busy and not served.schedule.overlap:
                        continue  # due, but its run is still going: its end wakes this loop
                    self._decide(served, now)
                wake = min(wake, max(served.next_due, now + 0.01))
            self._wake.wait(max(0.0, wake - self._clock()))
        self._shutdown()

    def _decide(self, served: ServedFlow, now: float) -> None:
        assert served.schedule is not None
        last = self.store.last_due(served.key)
        decision = decide(served.schedule, last, now, served.served_since)
        served.next_due = decision.next_due
        if decision.handled is not None:
            self.store.set_last_due(served.key, decision.handled)
        if decision.note:
            self._say(f"{served.label}: {decision.note}")
        if decision.run:
            if served.release is not None:
                self._load(served)  # NAME@latest: a newer release is picked up at its next due time
            trigger = "schedule" if decision.missed <= 1 else f"schedule (catch-up of {decision.missed})"
            self._start(served, trigger, last)

    def _start(self, served: ServedFlow, trigger: str, restore: float | None) -> None:
        assert served.session is not None and served.loaded is not None
        try:
            request = RunRequest(loaded=served.loaded, params=served.session.params(), trigger=trigger)
            handle = self.engine.start(request)
        except FlowError as exc:
            self._say(f"{served.label}: cannot start a run: {visible(str(exc))}")
            return
        served.handles.append(handle)
        served.restore[handle.id] = restore
        self._runs[handle.id] = served
        self._say(f"{served.label}: run #{handle.id} started ({trigger})")

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            served = self._runs.pop(event.run_id, None)
            if served is not None:
                self._say(f"{served.label}: run #{event.run_id} {event.status} in {event.duration_s:.2f}s")
                self._wake.set()  # a due time that came while it ran may be waiting
        elif isinstance(event, LoadFailed):
            self._wake.set()

    def _shutdown(self) -> None:
        """Stop the runs in flight and put back their due times: the next start catches them up."""
        for served in self.flows.values():
            for handle in list(served.handles):
                if handle.done:
                    continue
                previous = served.restore.get(handle.id)
                self.engine.cancel(handle.id)
                handle.wait(30)
                if handle.status != "cancelled":
                    continue
                self.store.set_last_due(served.key, previous)
                self._say(f"{served.label}: run #{handle.id} stopped; it runs again when served next")

    # ----- watching DIR -----------------------------------------------------------------------

    def _watch(self, stop: threading.Event, armed: threading.Event) -> None:
        from watchfiles import watch

        assert self.directory is not None
        for changes in watch(
            self.directory,
            stop_event=stop,
            debounce=WATCH_DEBOUNCE_MS,
            step=50,
            raise_interrupt=False,
            rust_timeout=200,
            yield_on_timeout=True,
        ):
            armed.set()  # the first (empty) yield comes once the watch is in place
            paths = {Path(p).resolve() for _, p in changes if Path(p).suffix in (".py", ".yaml", ".yml")}
            if paths:
                self._changes.put(paths)
                self._wake.set()

    def _apply_changes(self) -> None:
        changed: set[Path] = set()
        while True:
            try:
                changed |= self._changes.get_nowait()
            except queue.Empty:
                break
        if not changed:
            return
        for served in list(self.flows.values()):
            if served.path is None:
                continue
            if not served.path.exists():
                self._say(f"{served.label}: deleted; no longer scheduled")
                del self.flows[served.key]
                continue
            watched = served.session.watched_files() if served.session is not None else {served.path}
            touched = {p for p in changed & (watched | {served.path}) if self._differs(served, p)}
            if touched:
                self._load(served, ", ".join(sorted(p.name for p in touched)))
        assert self.directory is not None
        for path in sorted(changed):
            if str(path) not in self.flows and path.parent == self.directory and is_flow_file(path):
                self._say(f"{path.name}: new flow file")
                self._add_file(path)

    @staticmethod
    def _differs(served: ServedFlow, path: Path) -> bool:
        """Whether `path` changed since the served flow's last load (good or failed): the tail of a
        save already loaded, or a touch that changed nothing, reloads nothing."""
        loaded = served.loaded
        if loaded is None or served.error is not None:
            return path not in served.attempted or _text(path) != served.attempted[path]
        return _text(path) != loaded.sources.get(str(path))


@contextlib.contextmanager
def _only_server(store: Store, what: str) -> Iterator[None]:
    """Hold a lock for serving `what` with `store`: two servers would start every due run twice."""
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    path = store.root / f"serve-{digest}.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held for the server's lifetime
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise FlowError(
                f"another `flow serve` (pid {holder}) is already serving {what} with the store at "
                f"{store.root}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def serve_in_terminal(server: Server) -> int:
    """Run `server` until SIGTERM or Ctrl-C (a second Ctrl-C exits at once); return the exit code."""
    stop = threading.Event()
    presses = 0

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses > 1 and signum == signal.SIGINT:
            os._exit(130)
        print("flow: serve is stopping", file=sys.stderr, flush=True)
        stop.set()
        server._wake.set()

    previous = signal.signal(signal.SIGINT, on_signal)
    previous_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        server.run(stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    print("flow: serve stopped", file=sys.stderr, flush=True)
    return 0


@dataclass(frozen=True)
class ScheduleRow:
    """One line of `flow schedules`."""

    file: str
    flow: str | None
    schedule: str | None
    next_due: float | None
    catch_up: str | None
    last_due: float | None
    error: str | None = None
    timezone: str | None = None
    """The zone `next_due_text` is shown in: the cron expression's, else the machine's."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "flow": self.flow,
            "schedule": self.schedule,
            "next_due": self.next_due,
            "next_due_text": _stamp(self.next_due, self.timezone) if self.next_due is not None else None,
            "catch_up": self.catch_up,
            "last_due": self.last_due,
            "error": self.error,
        }


def list_schedules(directory: Path, store: Store | None, now: float | None = None) -> list[ScheduleRow]:
    """Each flow file in `directory` with its schedule and next due time (as a server started `now`
    would see it: a due time missed while no server ran is due at once under `catch_up="once"`)."""
    now = time.time() if now is None else now
    rows = []
    for path in find_flows(directory):
        try:
            loaded = load_flow(path)
            schedule = schedule_of(loaded)
        except FlowError as exc:
            rows.append(ScheduleRow(str(path), None, None, None, None, None, error=str(exc)))
            continue
        if schedule is None:
            rows.append(ScheduleRow(str(path), loaded.name, None, None, None, None))
            continue
        last = store.last_due(str(path)) if store is not None else None
        decision = decide(schedule, last, now, now)
        due = now if decision.run else decision.next_due
        zone = schedule.timezone if schedule.cron is not None else None
        rows.append(
            ScheduleRow(
                str(path), loaded.name, schedule.describe(), due, schedule.catch_up, last, timezone=zone
            )
        )
    return rows
