"""Provides `FlowController`: one flow's session, the runs it shows and its history, with no widget in
sight; its `commands` (`tui.controllers.commands`) are what a user can do to the flow.

It owns the flow's `FlowSession` (and with it the hot-reload watcher), the states of the runs started
while the TUI is open and of past runs being viewed, and which run and step are viewed. Engine events
reach it in batches (`apply`) from the screen, which holds the app's one engine subscription and routes
each event to its flow (`tui.controllers.router`). Store reads go to the host's background
(`tui.controllers.host`) and their results come back on the UI thread. Every change ends in one
`Change` to the host, which repaints what it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from dsl.loader import LoadedFlow
from runner.engine import Engine
from runner.events import Event, FlowReloaded, LoadFailed, RunFinished, RunStarted
from runner.records import RunRecord
from runner.review.plan import Plan
from runner.session import FlowSession
from runner.status import RunStatus, StepStatus
from runner.store import Store
from runner.text import visible
from tui.controllers import reads
from tui.controllers.commands import FlowCommands
from tui.controllers.host import Change, Host
from tui.controllers.pacer import Pacer
from tui.controllers.views import StepView, due_text, step_view
from tui.controllers.watcher import Watcher
from tui.data import format as fmt
from tui.data.state import LogBuffer, RunState, StepLogs, cached_from

KEEP_RUNS = 4
"""Finished runs whose states (and in-memory logs) are kept besides the viewed and active ones."""

LOADING = "loading…"
"""The log view's placeholder while a step's lines are read from the store."""


class FlowController:
    """One flow's state and commands.

    Attributes:
        path: the flow file.
        session: the flow's session once created (its first load may have failed).
        loaded: the last good load shown.
        error: the load error shown (None once a load succeeds).
        runs: run id -> state, for runs started while the TUI is open and past runs being viewed.
        viewed: the run whose statuses and logs are shown.
        follow_live: view each new run as it starts.
        active: runs of this flow in flight.
        selected: the step whose logs and details are shown.
        pinned: the logs stay on the selected step; else they follow the step that is running.
        history: the flow's past runs, newest first (`history_loaded` once read).
        plan: what the next run would do with each step (`flow plan`), read again after every run,
            reload and change of parameters; None until read (or while the flow does not load).
        watcher: the flow's hot reload.
        commands: what a user can do to the flow.
    """

    def __init__(
        self,
        path: Path,
        engine: Engine,
        store: Store,
        host: Host,
        *,
        watch: bool = True,
        session: FlowSession | None = None,
    ) -> None:
        self.path = path
        self.engine = engine
        self.store = store
        self.host = host
        self.session: FlowSession | None = None
        self._preloaded = session
        self.loaded: LoadedFlow | None = None
        self.error: str | None = None
        self.runs: dict[int, RunState] = {}
        self.viewed: int | None = None
        self.follow_live = True
        self.active: set[int] = set()
        self.selected: str | None = None
        self.pinned = False
        self.history: list[RunRecord] = []
        self.history_loaded = False
        self._history_seq = 0
        self._history_shown = 0
        self._history_signature: tuple[int, int, int] | None = None
        self._look = Pacer()
        self.plan: Plan | None = None
        self._plan_text: str | None = None
        self._plan_seq = 0
        self._plan_shown = 0
        self.watcher = Watcher(host, path.name, on=watch)
        self.commands = FlowCommands(self)

    # ----- loading -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the flow (or take the session loaded before the app started) and read its history."""
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None:  # shown once the view has handled what its mounting queued
            self.host.soon(partial(self._session_ready, preloaded))
        else:
            self.host.background(
                partial(reads.open_session, self.path, self.engine),
                self._session_ready,
                group="load",
                description="load the flow",
                exclusive=True,
            )
        self.load_history()

    def _session_ready(self, session: FlowSession) -> None:
        self.session = session
        if session.loaded is not None:
            self.loaded = session.loaded
        if session.error is not None:
            self.error = str(session.error)
        self.host.changed(
            Change(graph=session.loaded is not None, error=session.error is not None, view=True)
        )
        # Planning and watching fingerprint every step (the plan first computes the reload baseline
        # the session deferred) and read the store: started with the graph, they took the GIL from
        # the first paint of a large flow (its drawing waited for them).
        self.load_plan(after_paint=True)
        if self.watcher.on:
            self.host.after_paint(partial(self._watch, session))
        if session.loaded is not None:  # after the paint: starting a process holds the GIL for a while
            self.host.after_paint(partial(self.engine.warm, self.path))

    def _watch(self, session: FlowSession) -> None:
        """Start hot reload on `session`, unless it was turned off or the session replaced meanwhile."""
        if self.watcher.on and self.session is session:
            self.watcher.start(session)

    # ----- events ------------------------------------------------------------------------------

    def apply(self, events: Sequence[Event | StepLogs]) -> None:
        """Fold a batch of this flow's events in; tell the host what they changed."""
        graph = error = view = ended = False
        lines: set[str] = set()
        steps: set[str] = set()
        for event in events:
            if isinstance(event, StepLogs):
                logged = self.runs.get(event.run_id)
                if logged is not None:
                    step = logged.add_logs(event.step, event.events)
                    if event.run_id == self.viewed:
                        lines.add(step)
            elif isinstance(event, RunStarted):
                self.runs[event.run_id] = RunState.from_started(event)
                self.active.add(event.run_id)
                if self.follow_live or self.viewed is None:
                    self.viewed = event.run_id
                    view = True
                ended = True
            elif isinstance(event, FlowReloaded):
                if self.session is not None and self.session.loaded is not None:
                    self.loaded = self.session.loaded
                    graph = view = True
                self.error, error = None, True
                what = ", ".join(event.changed + event.added) or "nothing"
                self.host.notify(visible(f"{event.changed_file} reloaded; changed: {what}"), timeout=3)
            elif isinstance(event, LoadFailed):
                self.error, error = event.error, True
            else:
                run_id = getattr(event, "run_id", None)
                state = self.runs.get(run_id) if run_id is not None else None
                if state is None:
                    continue
                moved = state.apply(event)
                if isinstance(event, RunFinished):
                    self.active.discard(event.run_id)
                    ended = True
                    view |= run_id == self.viewed
                elif run_id == self.viewed and moved is not None:
                    steps.add(moved)
        follow = self.follow_step() if steps or view else None
        self.host.changed(
            Change(
                graph=graph,
                error=error,
                view=view,
                steps=frozenset(steps),
                lines=frozenset(lines),
                follow=follow,
                headline=ended,
                title=ended or error,
            )
        )
        if ended:
            self._evict()
            self.load_history()
        if ended or graph:
            self.load_plan()

    @property
    def headline(self) -> str:
        """The status the flow list shows: running, or the latest run's status."""
        if self.active:
            return RunStatus.RUNNING
        if self.error is not None:
            return RunStatus.FAILED
        latest = max(self.runs) if self.runs else None
        newest = self.history[0] if self.history else None
        if newest is not None and (latest is None or newest.id > latest):
            return newest.status  # a run another process recorded since (`look_for_other_runs`)
        if latest is not None:
            return self.runs[latest].status
        return fmt.IDLE

    @property
    def due(self) -> str | None:
        """When `flow serve` runs this flow next (a scheduled flow), as the pane's subtitle says it."""
        return due_text(self.loaded)

    @property
    def viewed_state(self) -> RunState | None:
        return self.runs.get(self.viewed) if self.viewed is not None else None

    def _evict(self) -> None:
        finished = sorted(r for r in self.runs if r not in self.active and r != self.viewed)
        for run_id in finished[:-KEEP_RUNS]:
            del self.runs[run_id]

    # ----- the viewed step ---------------------------------------------------------------------

    def follow_step(self) -> str | None:
        """Unless pinned, the step the viewed live run is running (or the one that failed), when it
        is not the selected one already."""
        state = self.viewed_state
        if self.pinned or state is None or not state.live:
            return None
        step = state.focus_step()
        return step if step is not None and step != self.selected else None

    def select(self, step: str, *, user: bool) -> bool:
        """The view selected `step` (`user`: by a key or a click, not following a run); True when it
        is another step than before (its logs and details are to be shown)."""
        if user and self.active:
            self.pinned = True  # the user looks at another step while a run goes on: stay there
        if step == self.selected:
            return False
        self.selected = step
        return True

    def graph_shown(self, selected: str | None) -> None:
        """The view laid out a new graph with `selected` selected: keep our step unless it is gone."""
        if self.loaded is not None and self.selected not in self.loaded.graph.nodes:
            self.selected = selected

    def toggle_pin(self) -> None:
        self.pinned = not self.pinned
        self.host.notify(
            "logs pinned to the selected step" if self.pinned else "logs follow the running step"
        )
        self.host.changed(Change(follow=self.follow_step(), log_status=True))

    def log_source(self) -> tuple[LogBuffer, str]:
        """The selected step's lines in the viewed run and the placeholder while there are none;
        lines not in memory are read from the store (a `Change.log` brings them)."""
        state = self.viewed_state
        step = self.selected
        info = state.steps.get(step) if state is not None and step is not None else None
        source = cached_from(info.reason) if info is not None and info.status == StepStatus.CACHED else None
        if step is None:
            return LogBuffer(), "no step selected"
        if state is None:
            return LogBuffer(), "no run yet: press r to run the flow"
        if source is not None and source != state.run_id:
            # A cached step printed nothing in this run: its output is the run's that computed it.
            known = self.runs.get(source)
            if step not in state.log_sources and known is not None and known.live:
                state.logs[step], state.log_sources[step] = known.log(step), source  # still in memory
            if step in state.log_sources:
                return state.logs[step], f"no output in run #{source}"
            self._load_logs(source, step, state.run_id)
            return LogBuffer(), LOADING
        if state.live or step in state.logs:
            return state.log(step), "no output yet" if state.status == RunStatus.RUNNING else "no output"
        self._load_logs(state.run_id, step)
        return LogBuffer(), LOADING

    def step_view(self) -> StepView | None:
        """What the details panel shows of the selected step (None: no step, or no good load yet)."""
        planned = None
        if self.plan is not None and self.selected is not None:
            planned = next((s for s in self.plan.steps if s.step == self.selected), None)
        return step_view(self.loaded, self.viewed_state, self.selected, self._default_params, planned)

    def _default_params(self) -> dict[str, Any]:
        """The parameters the next run would use (as set, when they do not resolve)."""
        if self.session is None or self.session.loaded is None:
            return {}
        try:
            return self.session.params()
        except FlowError:
            return dict(self.session.overrides)

    # ----- store reads -------------------------------------------------------------------------

    def view_run(self, run_id: int | None) -> None:
        """Show a run's statuses and logs (None or the newest run: follow live runs again)."""
        newest = max([*self.runs, *(r.id for r in self.history)], default=None)
        self.follow_live = run_id is None or run_id == newest
        if run_id is None:
            run_id = newest
        if run_id is None:
            return
        if run_id in self.runs:
            self.viewed = run_id
            self.host.changed(Change(view=True))
        else:
            self._load_run(run_id)

    def load_history(self) -> None:
        """Re-read the run history (in the background; a stale read never overwrites a newer one)."""
        self._history_seq += 1

        def read() -> reads.HistoryRead:
            # The flow's name as known when the read runs (the first load may land meanwhile).
            return reads.read_history(self.store, self.path, self.loaded.name if self.loaded else None)

        self.host.background(
            read,
            partial(self._history_read, self._history_seq),
            group="history",
            description="read run history",
        )

    def look_for_other_runs(self) -> None:
        """Re-read the history if a run of this flow was recorded, ended or deleted since it was read
        (`Store.runs_signature`): by another process too (a `flow run`, a loop's iteration, a served
        run, another TUI), which sends this one no event. Its runs then show up, and can be viewed or
        stopped, without a run here first. The pane on screen asks every
        `tui.widgets.flow_pane.HISTORY_LOOK_S`; one look at a time, paced (`Pacer`)."""
        if not self.history_loaded or self._history_shown != self._history_seq:
            return  # a read under way brings the news anyway
        if not self._look.start():
            return
        name = self.loaded.name if self.loaded else None
        self.host.background(
            partial(reads.read_runs_signature, self.store, self.path, name),
            self._looked,
            group="history-look",
            description="look for runs recorded since the history was read",
            failed=self._look.done,
        )

    def _looked(self, signature: tuple[int, int, int] | None) -> None:
        self._look.done()
        if signature is None:
            return
        if signature != self._history_signature:
            self.load_history()
        state = self.viewed_state
        if state is not None and not state.live and state.status == RunStatus.RUNNING:
            self.host.background(  # another process runs it: its steps' progress is in the store only
                partial(reads.read_run, self.store, state.run_id),
                partial(self._run_reread, state.run_id),
                group="run-reread",
                description="read the progress of a run another process runs",
            )

    def _run_reread(self, run_id: int, state: RunState | None) -> None:
        """Take a fresh read of a run another process runs (`_looked`), without changing the view: its
        steps' statuses are the new read's; the lines shown stay until a step's new ones are read,
        which happens when its status changed (a running step's lines are read when it ends, not at
        every look: a long log would be read again every second)."""
        known = self.runs.get(run_id)
        if state is None or known is None or known.live:
            return
        state.logs, state.log_sources = known.logs, known.log_sources
        for step in list(state.logs):
            before, after = known.steps.get(step), state.steps.get(step)
            if before is None or after is None or before.status != after.status:
                del state.logs[step]  # read again when shown
                state.log_sources.pop(step, None)
        self.runs[run_id] = state
        if self.viewed == run_id:
            self.host.changed(Change(view=True))

    def load_plan(self, *, after_paint: bool = False) -> None:
        """Plan the next run again (in the background; a stale plan never overwrites a newer one);
        `after_paint`: once the screen shows what is queued now (`plan_current` is False until then)."""
        session = self.session
        if session is None:
            return
        self._plan_seq += 1
        read = partial(
            self.host.background,
            partial(reads.read_plan, self.store, session),
            partial(self._plan_read, self._plan_seq),
            group="plan",
            description="plan the next run",
        )
        if after_paint:
            self.host.after_paint(read)
        else:
            read()

    @property
    def plan_current(self) -> bool:
        """No newer plan is being read than the one shown (tests wait on it before a picture)."""
        return self._plan_shown == self._plan_seq

    def _plan_read(self, seq: int, read: reads.PlanRead | None) -> None:
        if seq < self._plan_shown:
            return
        self._plan_shown = seq
        self.plan, self._plan_text = read if read is not None else (None, None)
        self.host.changed(Change(details=True, title=True))

    def steps_to_rerun(self) -> int | None:
        """How many steps a run now would run (the plan's `would_run`), when the plan shown was made
        from the flow file as it is on disk; None when that is not known: no plan yet, a newer one
        being read, or the file saved since the load the plan was made from (not reloaded yet, or
        watch off). Read from the file, not its modification time: a save that reverts an edit, or
        changes only comments, leaves nothing to re-run."""
        if self.plan is None or not self.plan_current or self._plan_text is None:
            return None
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return len(self.plan.would_run) if text == self._plan_text else None

    def _history_read(self, seq: int, read: reads.HistoryRead) -> None:
        if seq < self._history_shown:
            return
        self._history_shown = seq
        first = not self.history_loaded
        records, self._history_signature = read
        before = {r.id: r.status for r in self.history}
        self.history = records
        self.history_loaded = True
        if first and self.viewed is None and records:
            self._load_run(records[0].id)
        self.host.changed(Change(history=True, headline=True))
        if not first and any(self._elsewhere(r.id) and before.get(r.id) != r.status for r in records):
            self.load_plan()  # another process's run started or ended: what the next run reuses changed

    def _elsewhere(self, run_id: int) -> bool:
        """Whether run `run_id` is not one this TUI follows by its events (another process runs it)."""
        state = self.runs.get(run_id)
        return state is None or not state.live

    def _load_run(self, run_id: int) -> None:
        self.host.background(
            partial(reads.read_run, self.store, run_id),
            partial(self._run_read, run_id),
            group="run",
            description="read a run",
            exclusive=True,
        )

    def _run_read(self, run_id: int, state: RunState | None) -> None:
        if state is None:
            self.host.notify(f"run #{run_id} is not in the store", severity="warning")
            return
        known = self.runs.get(run_id)
        self.runs[run_id] = known if known is not None and known.live else state
        self.viewed = run_id
        self._evict()
        self.host.changed(Change(view=True))

    def _load_logs(self, run_id: int, step: str, into: int | None = None) -> None:
        """Read a step's stored lines of `run_id` for the view of run `into` (default: the same)."""
        failed = self.runs.get(run_id) if into is None else None
        self.host.background(
            partial(reads.read_logs, self.store, run_id, step, failed),
            partial(self._logs_read, into or run_id, step, None if into is None else run_id),
            group="logs",
            description="read logs",
            exclusive=True,
        )

    def _logs_read(self, run_id: int, step: str, source: int | None, buffer: LogBuffer) -> None:
        state = self.runs.get(run_id)
        if state is None:
            return
        state.logs[step] = buffer
        if source is not None:
            state.log_sources[step] = source
        if run_id == self.viewed and step == self.selected:
            empty = f"no output in run #{source}" if source is not None else "no output"
            self.host.changed(Change(log=(buffer, empty)))
