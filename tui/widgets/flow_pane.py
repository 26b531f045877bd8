"""Provides `FlowPane`: everything about one flow — its DAG, the selected step's logs and details,
its run history, its hot-reload watcher — and the actions on it.

The pane owns the flow's `FlowSession` and the states of the runs it shows. Events reach it in
batches from the screen (`apply`); store reads and run starts happen in thread workers and come
back as messages. Children get data pushed down and post what the user did.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from dsl.errors import FlowError
from dsl.loader import LoadedFlow
from runner.engine import Engine
from runner.events import Event, FlowReloaded, LoadFailed, RunFinished, RunStarted
from runner.records import RunRecord
from runner.session import FlowSession
from runner.store import Store
from runner.text import visible
from tui.data import format as fmt
from tui.data.state import LogBuffer, RunState, cached_from
from tui.messages import HistoryLoaded, LogsLoaded, RunLoaded, SessionReady, StepLogs
from tui.text import plain
from tui.widgets.dag import BoxState, DagView
from tui.widgets.details import StepDetails, describe
from tui.widgets.history import RunHistory
from tui.widgets.logs import LogView
from tui.widgets.tab_bar import TabBar

TABS = [("logs-tab", "Logs"), ("details-tab", "Details"), ("history-tab", "History")]

BELOW_DAG = ("#tab-bar", "#log-status", "#log", "#log-search", "#details", "#history", "#history-row")
"""The widgets under the DAG (zooming hides them)."""

LOWER_ROWS = 8
"""Rows the DAG always leaves below it: the tab bar, the log status line and five log lines."""

KEEP_RUNS = 4
"""Finished runs whose states (and in-memory logs) are kept besides the viewed and active ones."""


class FlowPane(Vertical):
    """One flow's view and actions.

    Attributes:
        path: the flow file.
        session: the flow's session once created (its first load may have failed).
        runs: run id -> state, for runs started while the TUI is open and past runs being viewed.
        viewed: the run whose statuses and logs are shown.
        follow_live: view each new run as it starts.
        active: runs of this flow in flight.
        watching: hot reload on.
        watch_armed: the watcher is running (tests wait for it before editing the file).
    """

    class StatusChanged(Message):
        """The flow's headline status changed (for the flow list)."""

        def __init__(self, pane: FlowPane, status: str) -> None:
            super().__init__()
            self.pane = pane
            self.status = status

    def __init__(
        self,
        path: Path,
        engine: Engine,
        store: Store,
        *,
        watch: bool = True,
        session: FlowSession | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, classes="flow-pane")
        self.path = path
        self.engine = engine
        self.store = store
        self.session: FlowSession | None = None
        self._preloaded = session
        self.loaded: LoadedFlow | None = None
        self.error: str | None = None
        self.runs: dict[int, RunState] = {}
        self.viewed: int | None = None
        self.follow_live = True
        self.active: set[int] = set()
        self.selected: str | None = None
        self.watching = watch
        self.watch_armed = False
        self._stop: threading.Event | None = None
        self.history: list[RunRecord] = []
        self.history_loaded = False
        self._history_seq = 0
        self._history_shown = 0
        self._log_status = ""
        self._tab = "logs-tab"
        self._searching = False
        self.zoomed = False
        self.pinned = False
        """The logs stay on the selected step; else they follow the step that is running."""

    def compose(self) -> ComposeResult:
        yield Static(id="load-error")
        yield DagView(id="dag")
        yield TabBar(TABS, active="logs-tab", id="tab-bar")
        yield Static(id="log-status")
        yield LogView(id="log")
        yield Input(placeholder="search the logs (enter: next match, esc: close)", id="log-search")
        yield StepDetails(id="details")
        yield RunHistory(id="history")
        yield Static(id="history-row")

    @property
    def tab(self) -> str:
        """The tab shown below the DAG: `logs-tab`, `details-tab` or `history-tab`."""
        return self._tab

    def show_tab(self, tab: str) -> None:
        """Show a tab's widgets and hide the others'.

        The tabs' widgets are the pane's own children, toggled here, rather than pages of a
        `ContentSwitcher`: two fewer containers to lay out and paint on every switch.
        """
        if tab == self._tab and not self.zoomed:
            return
        self._tab = tab
        if self.zoomed:
            self.set_zoom(False)
            return
        logs = tab == "logs-tab"
        self.query_one("#log-status").display = logs
        self.query_one(LogView).display = logs
        self.query_one("#log-search").display = logs and self._searching
        self.query_one(StepDetails).display = tab == "details-tab"
        self.query_one(RunHistory).display = tab == "history-tab"
        self.query_one("#history-row").display = tab == "history-tab"
        self.query_one(TabBar).active = tab

    def set_zoom(self, zoomed: bool) -> None:
        """Give the DAG the whole pane (the tabs below hidden), or give the tabs their rows back."""
        self.zoomed = zoomed
        tab = self._tab
        for widget in BELOW_DAG:
            self.query_one(widget).display = False
        if not zoomed:
            self.query_one("#tab-bar").display = True
            self._tab = ""
            self.show_tab(tab)
        self.query_one(DagView).styles.height = "1fr" if zoomed else "auto"
        self._fit_dag()

    def on_resize(self) -> None:
        self._fit_dag()

    def _fit_dag(self) -> None:
        """Tell the DAG how many rows it may take: what the pane has, less the rows below it."""
        if not self.size.height:
            return
        error = self.query_one("#load-error")
        reserved = 2 + (0 if self.zoomed else LOWER_ROWS) + (error.outer_size.height if error.display else 0)
        rows = max(3, self.size.height - reserved)
        dag = self.query_one(DagView)
        dag.styles.max_height = rows + 2
        dag.set_room(rows)

    @on(TabBar.Selected)
    def _tab_clicked(self, message: TabBar.Selected) -> None:
        message.stop()
        self.show_tab(message.tab)

    def on_mount(self) -> None:
        self.query_one("#load-error").display = False
        for hidden in ("#log-search", "#details", "#history", "#history-row"):
            self.query_one(hidden).display = False
        self.query_one(DagView).border_title = plain(self.path.name, newlines=False)
        if self._preloaded is not None:
            self.post_message(SessionReady(self.path, self._preloaded))
            self._preloaded = None
        else:
            self._load_session()
        self.load_history()

    def on_unmount(self) -> None:
        self.stop_watch()

    # ----- loading ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False, description="load the flow")
    def _load_session(self) -> None:
        self.post_message(SessionReady(self.path, open_session(self.path, self.engine)))

    @on(SessionReady)
    def _session_ready(self, message: SessionReady) -> None:
        message.stop()
        self.session = message.session
        if self.session.loaded is not None:
            self._set_graph(self.session.loaded)
        if self.session.error is not None:
            self._show_error(str(self.session.error))
        if self.watching:
            self.start_watch()
        self._refresh_all()

    def _set_graph(self, loaded: LoadedFlow) -> None:
        self.loaded = loaded
        graph = loaded.graph
        dag = self.query_one(DagView)
        dag.set_graph(
            graph.layers(),
            {name: list(node.upstream) for name, node in graph.nodes.items()},
            {name for name, node in graph.nodes.items() if node.conditional},
        )
        if self.selected not in graph.nodes:
            self.selected = dag.selected
        self._update_title()

    def _show_error(self, error: str | None) -> None:
        self.error = error
        panel = self.query_one("#load-error", Static)
        panel.display = error is not None
        if error is not None:
            keeping = "showing the last good graph" if self.loaded is not None else "fix it and save"
            panel.border_title = f"load error — {keeping}"
            panel.update(plain(error))
        self._update_title()
        self.call_after_refresh(self._fit_dag)

    # ----- watching --------------------------------------------------------------------------

    def start_watch(self) -> None:
        if self.session is None:
            return
        self.stop_watch()
        stop = self._stop = threading.Event()
        session = self.session

        def armed() -> None:
            self.watch_armed = True

        def watch() -> None:
            session.watch(stop, on_ready=armed, run_options=None)

        self.run_worker(watch, thread=True, exclusive=True, group="watch", exit_on_error=False,
                        description=f"watch {self.path.name}")

    def stop_watch(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self.watch_armed = False

    def toggle_watch(self) -> None:
        self.watching = not self.watching
        if self.watching:
            self.start_watch()
        else:
            self.stop_watch()
        self.notify(f"watch {'on: saving the file re-runs what changed' if self.watching else 'off'}")
        self._update_title()

    # ----- events ----------------------------------------------------------------------------

    def apply(self, events: list[Event | StepLogs]) -> None:
        """Fold a batch of this flow's events in and repaint what they touched."""
        view_changed = status_changed = history_dirty = False
        log_steps: set[str] = set()
        status_steps: set[str] = set()
        for event in events:
            if isinstance(event, StepLogs):
                logged = self.runs.get(event.run_id)
                if logged is not None:
                    step = logged.add_logs(event.step, event.events)
                    if event.run_id == self.viewed:
                        log_steps.add(step)
            elif isinstance(event, RunStarted):
                self.runs[event.run_id] = RunState.from_started(event)
                self.active.add(event.run_id)
                if self.follow_live or self.viewed is None:
                    self.viewed = event.run_id
                    view_changed = True
                history_dirty = status_changed = True
            elif isinstance(event, FlowReloaded):
                if self.session is not None and self.session.loaded is not None:
                    self._set_graph(self.session.loaded)
                    view_changed = True
                self._show_error(None)
                what = ", ".join(event.changed + event.added) or "nothing"
                self.notify(visible(f"{event.changed_file} reloaded; changed: {what}"), timeout=3,
                            markup=False)
            elif isinstance(event, LoadFailed):
                self._show_error(event.error)
            else:
                run_id = getattr(event, "run_id", None)
                state = self.runs.get(run_id) if run_id is not None else None
                if state is None:
                    continue
                step = state.apply(event)
                if isinstance(event, RunFinished):
                    self.active.discard(event.run_id)
                    history_dirty = status_changed = True
                    view_changed |= run_id == self.viewed
                elif run_id == self.viewed and step is not None:
                    status_steps.add(step)
        if view_changed:
            self._refresh_all()
        else:
            if status_steps:
                self._refresh_dag()
                if self.selected in status_steps:
                    self._refresh_details()
            if self.selected in log_steps:
                self.query_one(LogView).refresh_lines()
                self._update_log_status()
        if status_steps or view_changed:
            self._follow_running()
        if status_changed:
            self._evict()
            self.post_message(self.StatusChanged(self, self.headline))
            self._update_title()
        if history_dirty:
            self.load_history()

    def _follow_running(self) -> None:
        """Unless pinned, select the step the viewed run is running (or the one that failed)."""
        state = self.viewed_state
        if self.pinned or state is None or not state.live:
            return
        step = state.focus_step()
        if step is not None and step != self.selected:
            self.query_one(DagView).select(step, user=False)

    def toggle_pin(self) -> None:
        self.pinned = not self.pinned
        self.notify("logs pinned to the selected step" if self.pinned else "logs follow the running step")
        self._follow_running()
        self._update_log_status()

    def toggle_edges(self) -> None:
        dag = self.query_one(DagView)
        dag.show_all_edges(not dag.all_edges)
        self._update_title()

    def history_action(self, name: str) -> None:
        """Run a history table action (`mark`, `compare`) on the row under its cursor."""
        getattr(self.query_one(RunHistory), f"action_{name}")()

    @property
    def headline(self) -> str:
        """The status the flow list shows: running, or the latest run's status."""
        if self.active:
            return "running"
        if self.error is not None:
            return "failed"
        latest = max(self.runs) if self.runs else None
        if latest is not None:
            return self.runs[latest].status
        if self.history:
            return self.history[0].status
        return "idle"

    def _evict(self) -> None:
        finished = sorted(r for r in self.runs if r not in self.active and r != self.viewed)
        for run_id in finished[:-KEEP_RUNS]:
            del self.runs[run_id]

    # ----- painting --------------------------------------------------------------------------

    @property
    def viewed_state(self) -> RunState | None:
        return self.runs.get(self.viewed) if self.viewed is not None else None

    def _refresh_all(self) -> None:
        self._refresh_dag()
        self._refresh_logs()
        self._refresh_details()
        self._update_title()
        self.query_one(RunHistory).set_viewed(self.viewed)

    def _refresh_dag(self) -> None:
        state = self.viewed_state
        boxes: dict[str, BoxState] = {}
        if state is not None:
            for name, info in state.steps.items():
                note = ""
                if info.status == "cached":
                    note = "cached"
                elif info.status in ("succeeded", "failed") and info.duration_s is not None:
                    note = fmt.duration(info.duration_s)
                elif info.status == "retrying":
                    note = f"retry {info.attempts + 1}"
                if info.instances:
                    note = f"{info.instances_done}/{info.instances} {note}".strip()
                started = info.started_at if info.status in ("running", "retrying") else None
                boxes[name] = BoxState(info.status, note, started)
            for name in state.scope:
                boxes.setdefault(name, BoxState("pending"))
        self.query_one(DagView).set_states(boxes)

    def _refresh_logs(self) -> None:
        log = self.query_one(LogView)
        state = self.viewed_state
        step = self.selected
        info = state.steps.get(step) if state is not None and step is not None else None
        source = cached_from(info.reason) if info is not None and info.status == "cached" else None
        if step is None:
            log.set_buffer(LogBuffer(), "no step selected")
        elif state is None:
            log.set_buffer(LogBuffer(), "no run yet: press r to run the flow")
        elif source is not None and source != state.run_id:
            # A cached step printed nothing in this run: its output is the run's that computed it.
            known = self.runs.get(source)
            if step not in state.log_sources and known is not None and known.live:
                state.logs[step], state.log_sources[step] = known.log(step), source  # still in memory
            if step in state.log_sources:
                log.set_buffer(state.logs[step], f"no output in run #{source}")
            else:
                log.set_buffer(LogBuffer(), "loading…")
                self._load_logs(source, step, state.run_id)
        elif state.live or step in state.logs:
            log.set_buffer(state.log(step), "no output yet" if state.status == "running" else "no output")
        else:
            log.set_buffer(LogBuffer(), "loading…")
            self._load_logs(state.run_id, step)
        self._update_log_status()

    def _update_log_status(self) -> None:
        log = self.query_one(LogView)
        state = self.viewed_state
        parts = [self.selected or "-"]
        if state is not None:
            parts.append(f"run #{state.run_id}")
            source = state.log_sources.get(self.selected or "")
            if source is not None:
                parts.append(f"cached: logs of run #{source}")
            if state.live and state.status == "running":
                parts.append("pinned (P follows the run)" if self.pinned else "following the run (P pins)")
        count = len(log.buffer)
        parts.append(f"{count:,} line{'' if count == 1 else 's'}")
        parts.append("follow" if log.follow else "paused (end: follow)")
        if log.search:
            parts.append(f"search: {log.search}")
        text = " · ".join(parts)
        if text != self._log_status:
            self._log_status = text
            # One row of fixed width: the text never changes the layout.
            self.query_one("#log-status", Static).update(plain(text, newlines=False), layout=False)

    def _refresh_details(self) -> None:
        step = self.selected
        details = self.query_one(StepDetails)
        if step is None or self.loaded is None:
            details.show(describe_missing(self.error))
            return
        state = self.viewed_state
        node = self.loaded.graph.nodes.get(step)
        options: dict[str, Any] = {}
        params: dict[str, Any] = {}
        if node is not None:
            item = node.step
            options = {
                "retries": item.retries, "timeout": item.timeout, "cache": item.cache,
                "trigger": item.trigger, "foreach": item.foreach,
                "when": "yes" if item.when is not None else None,
            }
            source = state.params if state is not None else self._default_params()
            params = {p: source.get(p) for p in node.params}
        info = state.steps.get(step) if state is not None else None
        run_id = state.run_id if state else None
        details.show(describe(step, info, run_id=run_id, options=options, params=params))

    def _default_params(self) -> dict[str, Any]:
        if self.session is None or self.session.loaded is None:
            return {}
        try:
            return self.session.params()
        except FlowError:
            return dict(self.session.overrides)

    def _update_title(self) -> None:
        dag = self.query_one(DagView)
        name = self.loaded.name if self.loaded is not None else self.path.stem
        state = self.viewed_state
        run = "no run"
        if state is not None:
            run = f"run #{state.run_id} {fmt.symbol(state.status)} {state.status}"
        if state is not None and not self.follow_live:
            run += " (past run: v follows live)"
        if state is not None and state.status != "running" and self._saved_after(state):
            run += " · flow changed since: r runs it"
        dag.border_title = plain(f"{name} · {run}", newlines=False)
        watch = "watch on" if self.watching else "watch off"
        count = len(self.loaded.graph.nodes) if self.loaded else 0
        hidden = dag.hidden_edges
        edges = f" · {hidden} implied edge{'' if hidden == 1 else 's'} hidden (E)" if hidden else ""
        dag.border_subtitle = f"{count} step{'' if count == 1 else 's'}{edges} · {watch}"

    def refresh_title(self) -> None:
        """Repaint the title (the flow file may have been saved since the viewed run)."""
        self._update_title()

    def _saved_after(self, state: RunState) -> bool:
        try:
            return state.started_at is not None and self.path.stat().st_mtime > state.started_at
        except OSError:
            return False

    # ----- children's messages ---------------------------------------------------------------

    @on(DagView.StepSelected)
    def _step_selected(self, message: DagView.StepSelected) -> None:
        message.stop()
        if message.user and self.active:
            self.pinned = True  # the user looks at another step while a run goes on: stay there
        if message.step == self.selected:
            return
        self.selected = message.step
        self._refresh_logs()
        self._refresh_details()

    @on(LogView.FollowChanged)
    def _follow_changed(self, message: LogView.FollowChanged) -> None:
        message.stop()
        self._update_log_status()

    @on(RunHistory.RunChosen)
    def _run_chosen(self, message: RunHistory.RunChosen) -> None:
        message.stop()
        self.view_run(message.run_id)

    @on(RunHistory.RowShown)
    def _history_row(self, message: RunHistory.RowShown) -> None:
        message.stop()
        self.query_one("#history-row", Static).update(message.text)

    @on(RunHistory.CompareRequested)
    def _compare(self, message: RunHistory.CompareRequested) -> None:
        message.stop()
        self._load_compare(message.first, message.second)

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
            self._refresh_all()
        else:
            self._load_run(run_id)

    # ----- store reads (thread workers) ------------------------------------------------------

    def load_history(self) -> None:
        """Re-read the run history (in a worker; a stale read never overwrites a newer one)."""
        self._history_seq += 1
        self._read_history(self._history_seq)

    @work(thread=True, group="history", exit_on_error=False, description="read run history")
    def _read_history(self, seq: int) -> None:
        name = self.loaded.name if self.loaded is not None else None
        records = self.store.list_runs(name or str(self.path.resolve()), limit=200)
        if name is None:
            records = [r for r in records if Path(r.file).resolve() == self.path.resolve()] or records
        self.post_message(HistoryLoaded(records, seq))

    @on(HistoryLoaded)
    def _history_loaded(self, message: HistoryLoaded) -> None:
        message.stop()
        if message.seq < self._history_shown:
            return
        self._history_shown = message.seq
        first = not self.history_loaded
        self.history = message.records
        self.history_loaded = True
        table = self.query_one(RunHistory)
        table.viewed = self.viewed
        table.set_runs(message.records)
        if first and self.viewed is None and message.records:
            self._load_run(message.records[0].id, follow=True)
        self.post_message(self.StatusChanged(self, self.headline))

    @work(thread=True, exclusive=True, group="run", exit_on_error=False, description="read a run")
    def _load_run(self, run_id: int, follow: bool = False) -> None:
        self.store.flush()
        record = self.store.get_run(run_id)
        if record is None:
            self.app.notify(f"run #{run_id} is not in the store", severity="warning")
            return
        state = RunState.from_record(record)
        self.post_message(RunLoaded(state))

    @on(RunLoaded)
    def _run_loaded(self, message: RunLoaded) -> None:
        message.stop()
        state = message.state
        if state.run_id in self.runs and self.runs[state.run_id].live:
            state = self.runs[state.run_id]
        self.runs[state.run_id] = state
        self.viewed = state.run_id
        self._evict()
        self._refresh_all()

    @work(thread=True, exclusive=True, group="logs", exit_on_error=False, description="read logs")
    def _load_logs(self, run_id: int, step: str, into: int | None = None) -> None:
        """Read a step's stored lines of `run_id` for the view of run `into` (default: the same)."""
        self.store.flush()  # lines the engine recorded moments ago are in the store
        buffer = LogBuffer()
        after = 0
        prefix = f"{step}["
        while True:
            lines = self.store.get_logs(run_id, None, after=after, limit=50_000)
            if not lines:
                break
            for line in lines:
                if line.step == step:
                    buffer.append(line.stream, line.line)
                elif line.step.startswith(prefix):
                    index = line.step[len(prefix):-1]
                    buffer.append(line.stream, f"[{index}] {line.line}")
            after = lines[-1].id
        state = self.runs.get(run_id)
        if state is not None and into is None:
            state.add_failure(step, buffer)
        self.post_message(LogsLoaded(into or run_id, step, buffer, None if into is None else run_id))

    @on(LogsLoaded)
    def _logs_loaded(self, message: LogsLoaded) -> None:
        message.stop()
        state = self.runs.get(message.run_id)
        if state is None:
            return
        state.logs[message.step] = message.buffer
        if message.source is not None:
            state.log_sources[message.step] = message.source
        if message.run_id == self.viewed and message.step == self.selected:
            empty = f"no output in run #{message.source}" if message.source is not None else "no output"
            self.query_one(LogView).set_buffer(message.buffer, empty)
            self._update_log_status()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False, description="compare runs")
    def _load_compare(self, first: int, second: int) -> None:
        from tui.screens.compare import CompareScreen

        a, b = self.store.get_run(first), self.store.get_run(second)
        if a is None or b is None:
            self.app.notify("a run to compare is gone from the store", severity="warning")
            return
        self.app.call_from_thread(self.app.push_screen, CompareScreen(a, b))

    # ----- actions ---------------------------------------------------------------------------

    def start_run(self, **options: Any) -> None:
        """Start a run through the session (in a worker: planning reads the store)."""
        if self.session is None or self.session.loaded is None:
            self.notify("the flow has not loaded; fix the error and save", severity="error")
            return
        self.follow_live = True
        self.pinned = False
        self._start(options)

    @work(thread=True, group="start", exit_on_error=False, description="start a run")
    def _start(self, options: dict[str, Any]) -> None:
        assert self.session is not None
        try:
            self.session.run(**options)
        except FlowError as exc:
            self.app.notify(visible(str(exc)), title="cannot start the run", severity="error", timeout=8,
                            markup=False)

    def run_flow(self) -> None:
        self.start_run(trigger="tui")

    def rerun_step(self) -> None:
        step = self.selected
        if step is None:
            self.notify("select a step first", severity="warning")
            return
        self.start_run(trigger=f"re-run {step}", from_steps=(step,), force_steps=(step,))

    def force_run(self) -> None:
        self.start_run(trigger="force re-run", force=True)

    def stop(self) -> None:
        if not self.active:
            self.notify("no run of this flow is in flight", severity="warning")
            return
        for run_id in sorted(self.active):
            self.engine.cancel(run_id)
        self.notify(f"stopping run {', '.join(f'#{r}' for r in sorted(self.active))}")

    def _target_run(self) -> RunState | None:
        """The run an action on 'a run' means: the history row under the cursor, else the viewed run."""
        if self.tab == "history-tab":
            run_id = self.query_one(RunHistory).cursor_run
            if run_id is not None:
                record = next((r for r in self.history if r.id == run_id), None)
                if record is not None:
                    return self.runs.get(run_id) or RunState.from_record(record)
        return self.viewed_state

    def resume(self) -> None:
        state = self._target_run()
        if state is None or state.status not in ("failed", "cancelled", "interrupted"):
            self.notify("resume needs a failed, stopped or interrupted run", severity="warning")
            return
        run_id = state.run_id
        self.start_run(trigger=f"resume of #{run_id}", resume_of=run_id, params=dict(state.params))

    def rerun_past(self) -> None:
        state = self._target_run()
        if state is None:
            self.notify("no run to repeat", severity="warning")
            return
        self.start_run(trigger=f"re-run of #{state.run_id}", params=dict(state.params))

    def delete_run(self) -> None:
        from tui.screens.confirm import ConfirmScreen

        state = self._target_run()
        if state is None:
            self.notify("no run to delete", severity="warning")
            return
        if state.run_id in self.active:
            self.notify(f"run #{state.run_id} is in flight; stop it first", severity="warning")
            return
        run_id = state.run_id

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(run_id)

        self.app.push_screen(ConfirmScreen(f"Delete run #{run_id} and its logs?", "Delete"), confirmed)

    @work(thread=True, group="delete", exit_on_error=False, description="delete a run")
    def _delete(self, run_id: int) -> None:
        self.store.delete_run(run_id)
        self.app.call_from_thread(self._deleted, run_id)

    def _deleted(self, run_id: int) -> None:
        self.runs.pop(run_id, None)
        if self.viewed == run_id:
            self.viewed = None
            self.follow_live = True
            self._refresh_all()
        self.notify(f"deleted run #{run_id}")
        self.load_history()

    def edit_params(self) -> None:
        from tui.screens.params import ParamsScreen

        if self.session is None or self.session.loaded is None:
            self.notify("the flow has not loaded", severity="warning")
            return
        session = self.session

        def done(result: tuple[dict[str, str], bool] | None) -> None:
            if result is None:
                return
            overrides, run = result
            session.overrides = dict(overrides)
            self._refresh_details()
            if run:
                self.run_flow()
            else:
                self.notify("parameters saved for the next runs")

        loaded = session.loaded
        self.app.push_screen(ParamsScreen(loaded.graph.params, session.overrides, loaded.name), done)

    # ----- logs: search and errors -----------------------------------------------------------

    def open_search(self) -> None:
        self.show_tab("logs-tab")
        self._searching = True
        search = self.query_one("#log-search", Input)
        search.display = True
        search.focus()

    @on(Input.Submitted, "#log-search")
    def _search(self, message: Input.Submitted) -> None:
        message.stop()
        found = self.query_one(LogView).find(message.value)
        if found is None and message.value:
            self.notify(f"'{message.value}' not found", severity="warning", timeout=2, markup=False)
        self._update_log_status()

    def search_next(self, backwards: bool = False) -> None:
        log = self.query_one(LogView)
        if log.search:
            log.find(log.search, backwards)
            self._update_log_status()

    def close_search(self) -> None:
        self._searching = False
        self.query_one("#log-search", Input).display = False
        self.query_one(LogView).focus()

    def jump_to_error(self) -> None:
        self.show_tab("logs-tab")
        log = self.query_one(LogView)
        if log.jump_to_error() is None:
            self.notify("no error in this step's logs", severity="information", timeout=2)
        else:
            log.focus()
        self._update_log_status()

    def toggle_follow(self) -> None:
        log = self.query_one(LogView)
        log.follow = not log.follow


def open_session(path: Path, engine: Engine) -> FlowSession:
    """A session on `path` after its first load (blocking: call it from a worker or before the app
    starts); a failed load leaves `session.error` set and no graph."""
    session = FlowSession(path, engine)
    try:
        session.load()
    except FlowError as exc:
        session.error = exc
    return session


def describe_missing(error: str | None):  # type: ignore[no-untyped-def]
    from textual.content import Content

    if error:
        return Content.styled("the flow has no good load yet; see the error above", "$text-muted")
    return Content.styled("loading…", "$text-muted")

