"""Provides `FlowPane`: the view of one flow — its DAG, the selected step's logs and details, its run
history — over the flow's `FlowController`.

The pane renders what the controller holds and hands it what the user did (a step selected, a run
chosen); it shows no dialog (the screen does) and reads no store. Through a `WidgetHost` it hosts the
controller: blocking work runs in thread workers of the pane, and the controller's `Change`s come back
here to be painted (`paint`), each repainting only what it names.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Static

from runner.engine import Engine
from runner.session import FlowSession
from runner.status import RunStatus
from runner.store import Store
from tui.controllers.flow import FlowController
from tui.controllers.host import Change
from tui.controllers.views import log_status, run_title, subtitle
from tui.data.boxes import box_states
from tui.data.state import RunState
from tui.text import plain
from tui.widgets.dag import DagView
from tui.widgets.details import StepDetails, describe
from tui.widgets.history import RunHistory
from tui.widgets.host import WidgetHost
from tui.widgets.logs import LogView
from tui.widgets.tab_bar import TabBar

TABS = [("logs-tab", "Logs"), ("details-tab", "Details"), ("history-tab", "History")]

BELOW_DAG = ("#tab-bar", "#log-status", "#log", "#log-search", "#details", "#history", "#history-row")
"""The widgets under the DAG (zooming hides them)."""

LOWER_ROWS = 8
"""Rows the DAG always leaves below it: the tab bar, the log status line and five log lines."""

HISTORY_LOOK_S = 1.0
"""How often the pane on screen looks for runs of its flow that another process recorded or ended
(`FlowController.look_for_other_runs`: one count of the store's runs)."""


class FlowPane(Vertical):
    """One flow's view.

    Attributes:
        controller: the flow's state and commands.
        zoomed: the DAG has the whole pane.
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
        host = WidgetHost(self, self.paint)
        self.controller = FlowController(path, engine, store, host, watch=watch, session=session)
        self._log_status = ""
        self._tab = "logs-tab"
        self._searching = False
        self.zoomed = False

    @property
    def path(self) -> Path:
        return self.controller.path

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

    def on_mount(self) -> None:
        self.query_one("#load-error").display = False
        for hidden in ("#log-search", "#details", "#history", "#history-row"):
            self.query_one(hidden).display = False
        self.query_one(DagView).border_title = plain(self.path.name, newlines=False)
        self.controller.start()
        self.set_interval(HISTORY_LOOK_S, self._look_for_other_runs)

    def _look_for_other_runs(self) -> None:
        if self.display:  # the pane on screen: the flow list's switcher hides the others
            self.controller.look_for_other_runs()

    def on_unmount(self) -> None:
        self.controller.watcher.stop()

    # ----- the controller's changes ------------------------------------------------------------

    def paint(self, change: Change) -> None:
        """Paint what the controller says changed."""
        if change.graph:
            self._set_graph()
        if change.error:
            self._show_error()
        if change.view:
            self._refresh_all()
        else:
            if change.steps:
                self._refresh_dag()
            if change.details or self.controller.selected in change.steps:
                self._refresh_details()
            if self.controller.selected in change.lines:
                self.query_one(LogView).buffer_grew()
                self._update_log_status()
        if change.log is not None:
            self.query_one(LogView).set_buffer(*change.log)
            self._update_log_status()
        elif change.log_status:
            self._update_log_status()
        if change.follow is not None:
            self.query_one(DagView).select(change.follow, user=False)
        if change.history:
            table = self.query_one(RunHistory)
            table.viewed = self.controller.viewed
            table.set_runs(self.controller.history)
        if change.headline:
            self.post_message(self.StatusChanged(self, self.controller.headline))
        if change.title:
            self._update_title()

    # ----- tabs and zoom -----------------------------------------------------------------------

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

    def history_cursor(self) -> int | None:
        """The history row under the cursor while the history is shown (what run actions mean)."""
        return self.query_one(RunHistory).cursor_run if self._tab == "history-tab" else None

    def history_action(self, name: str) -> None:
        """Run a history table action (`mark`, `compare`) on the row under its cursor."""
        getattr(self.query_one(RunHistory), f"action_{name}")()

    def toggle_edges(self) -> None:
        dag = self.query_one(DagView)
        dag.show_all_edges(not dag.all_edges)
        self._update_title()

    # ----- painting ----------------------------------------------------------------------------

    def _set_graph(self) -> None:
        loaded = self.controller.loaded
        if loaded is None:
            return
        graph = loaded.graph
        dag = self.query_one(DagView)
        dag.set_graph(
            graph.layers(),
            {name: list(node.upstream) for name, node in graph.nodes.items()},
            {name for name, node in graph.nodes.items() if node.conditional},
        )
        self.controller.graph_shown(dag.selected)
        self._update_title()

    def _show_error(self) -> None:
        error = self.controller.error
        panel = self.query_one("#load-error", Static)
        panel.display = error is not None
        if error is not None:
            keeping = (
                "showing the last good graph" if self.controller.loaded is not None else "fix it and save"
            )
            panel.border_title = f"load error — {keeping}"
            panel.update(plain(error))
        self._update_title()
        self.call_after_refresh(self._fit_dag)

    def _refresh_all(self) -> None:
        self._refresh_dag()
        self._refresh_logs()
        self._refresh_details()
        self._update_title()
        self.query_one(RunHistory).set_viewed(self.controller.viewed)

    def _refresh_dag(self) -> None:
        self.query_one(DagView).set_states(box_states(self.controller.viewed_state))

    def _refresh_logs(self) -> None:
        self.query_one(LogView).set_buffer(*self.controller.log_source())
        self._update_log_status()

    def _update_log_status(self) -> None:
        log = self.query_one(LogView)
        flow = self.controller
        text = log_status(
            flow.selected, flow.viewed_state, flow.pinned, len(log.buffer), log.follow, log.search
        )
        if text != self._log_status:
            self._log_status = text
            # One row of fixed width: the text never changes the layout.
            self.query_one("#log-status", Static).update(plain(text, newlines=False), layout=False)

    def _refresh_details(self) -> None:
        view = self.controller.step_view()
        details = self.query_one(StepDetails)
        if view is None:
            details.show(describe_missing(self.controller.error))
            return
        details.show(describe(view))

    def _update_title(self) -> None:
        dag = self.query_one(DagView)
        flow = self.controller
        name = flow.loaded.name if flow.loaded is not None else self.path.stem
        state = flow.viewed_state
        saved_after = state is not None and state.status != RunStatus.RUNNING and self._saved_after(state)
        rerun = flow.steps_to_rerun() if saved_after else None
        dag.border_title = plain(run_title(name, state, flow.follow_live, saved_after, rerun), newlines=False)
        count = len(flow.loaded.graph.nodes) if flow.loaded is not None else 0
        dag.border_subtitle = subtitle(count, dag.hidden_edges, flow.watcher.on, flow.due)

    def refresh_title(self) -> None:
        """Repaint the title (the flow file may have been saved since the viewed run)."""
        self._update_title()

    def _saved_after(self, state: RunState) -> bool:
        """The flow file was saved after `state` started (a run now may differ: `steps_to_rerun`)."""
        try:
            return state.started_at is not None and self.path.stat().st_mtime > state.started_at
        except OSError:
            return False

    # ----- what the user did -------------------------------------------------------------------

    @on(DagView.StepSelected)
    def _step_selected(self, message: DagView.StepSelected) -> None:
        message.stop()
        if self.controller.select(message.step, user=message.user):
            self._refresh_logs()
            self._refresh_details()

    @on(LogView.FollowChanged)
    def _follow_changed(self, message: LogView.FollowChanged) -> None:
        message.stop()
        self._update_log_status()

    @on(RunHistory.RunChosen)
    def _run_chosen(self, message: RunHistory.RunChosen) -> None:
        message.stop()
        self.controller.view_run(message.run_id)

    @on(RunHistory.RowShown)
    def _history_row(self, message: RunHistory.RowShown) -> None:
        message.stop()
        self.query_one("#history-row", Static).update(message.text)

    # ----- logs: search, errors, follow --------------------------------------------------------

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
            self.notify(f"'{message.value}' not found", severity="warning", timeout=2)
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


def describe_missing(error: str | None) -> Content:
    """The details panel before a step can be shown: no good load yet, or still loading."""
    if error:
        return Content.styled("the flow has no good load yet; see the error above", "$text-muted")
    return Content.styled("loading…", "$text-muted")
