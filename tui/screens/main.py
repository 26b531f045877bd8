"""Provides `MainScreen`: the flow list (for a directory), one `FlowPane` per open flow, and the
actions on the current flow, bound to keys (shown in the footer) and listed in the command palette.

The screen subscribes an `EventBridge` to the engine and routes each drained batch of events to the
controller of the flow it belongs to, so several flows can run at once, each with its own live
status. Actions go to the current flow's controller (commands) or pane (what is shown); every dialog
— confirm, parameters, compare, help — is shown here, in response to a key or a widget's message.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from textual import on
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Header, OptionList

from runner.engine import Engine
from runner.review.compare import Comparison
from runner.review.sources import CodeChange
from runner.session import FlowSession
from runner.store import Store
from tui.controllers import reads
from tui.controllers.commands import debug_command
from tui.controllers.flow import FlowController
from tui.controllers.pacer import Pacer
from tui.controllers.router import EventRouter, flow_key
from tui.data import format as fmt
from tui.keys import screen_bindings
from tui.messages import EventBridge, EventsReady, FlowFileChanged
from tui.screens.code_diff import CodeDiffScreen
from tui.screens.compare import CompareScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.params import ParamsScreen
from tui.widgets.flow_list import FlowList
from tui.widgets.flow_pane import HISTORY_LOOK_S, FlowPane
from tui.widgets.history import RunHistory
from tui.widgets.host import run_in_background, run_loop

DRAIN_INTERVAL_S = 0.1
"""Least time between two batches of engine events (bounds repaints while logs stream)."""

KEY_GRACE_S = 0.05
"""How long after a key press a batch of engine events waits (the key's own repaint goes first)."""


def run_in_terminal(command: list[str]) -> int:
    """Run a command attached to the terminal (the app suspended meanwhile); its exit status."""
    return subprocess.run(command, check=False).returncode


class MainScreen(Screen[None]):
    """The screen a user lives in."""

    BINDINGS = [
        *screen_bindings(),
        Binding("escape", "close_search", "Close search", show=False),
    ]

    def __init__(
        self,
        flows: list[Path],
        engine: Engine,
        store: Store,
        *,
        watch: bool,
        listing: bool,
        preloaded: dict[str, FlowSession] | None = None,
    ) -> None:
        super().__init__()
        self.flows = flows
        self.engine = engine
        self.store = store
        self.hot_reload = watch
        self.listing = listing
        self.preloaded = dict(preloaded or {})
        self.bridge = EventBridge(self)
        self.router = EventRouter()
        self.panes: dict[str, FlowPane] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._flows_stop = threading.Event()
        self._last_key = 0.0
        self._statuses_look = Pacer()

    def compose(self) -> ComposeResult:
        yield Header(icon="≋")
        with Horizontal(id="body"):
            if self.listing:
                yield FlowList(self.flows, id="flows")
            # The first flow's pane is composed with the screen (not mounted afterwards), so the
            # screen's first layout has the DAG in it and focus lands there once.
            first = self._new_pane(self.flows[0]) if self.flows else None
            with ContentSwitcher(id="panes", initial=first.id if first is not None else None):
                if first is not None:
                    yield first
        yield Footer()

    def on_mount(self) -> None:
        self._unsubscribe = self.engine.subscribe(self.bridge)
        if self.flows:
            self.open_flow(self.flows[0])
        else:
            self.notify("no flow files here (a .py file that imports dsl)", severity="warning")
        if self.listing:
            self.query_one(FlowList).focus()
            if self.flows:
                run_loop(
                    self,
                    self._watch_flows,
                    name="watch the flow files",
                    failed="saves of the listed flows are no longer seen",
                    severity="warning",
                )
                self._look_at_statuses()
                self.set_interval(HISTORY_LOOK_S, self._look_at_statuses)

    def on_unmount(self) -> None:
        self.stop_watching()
        if self._unsubscribe is not None:
            self._unsubscribe()

    def stop_watching(self) -> None:
        """Stop the watcher of the listed flow files (idempotent)."""
        self._flows_stop.set()

    def _watch_flows(self) -> None:
        """Tell the screen when a listed flow file is saved (the pane of a flow not shown may not
        exist yet, so no session watches it)."""
        from watchfiles import watch

        files = {path.resolve() for path in self.flows}
        directories = sorted({str(path.parent) for path in files})
        stop = self._flows_stop
        for changes in watch(
            *directories,
            stop_event=stop,
            recursive=False,
            raise_interrupt=False,
            step=50,
            debounce=200,
            rust_timeout=200,
        ):
            for path in {Path(p).resolve() for _, p in changes} & files:
                self.post_message(FlowFileChanged(path))

    def _look_at_statuses(self) -> None:
        """Read the status of each listed flow's newest run (in the background). The list shows it for
        each flow whose pane is not on screen, running or failing to load here (the pane says those):
        runs of earlier sessions and of other processes (`flow serve`, a `flow run` in another shell)
        show too, not only what this TUI ran."""
        if not self._statuses_look.start():
            return

        run_in_background(
            self,
            partial(reads.read_latest_statuses, self.store),
            self._statuses_read,
            group="flow-statuses",
            description="read the statuses of the listed flows",
            failed=self._statuses_look.done,
        )

    def _statuses_read(self, statuses: dict[str, str] | None) -> None:
        self._statuses_look.done()
        if statuses is None:
            return
        listed = self.query_one(FlowList)
        shown = self.pane
        for path in self.flows:
            key = flow_key(path)
            pane = self.panes.get(key)
            if pane is not None and (pane is shown or pane.controller.active or pane.controller.error):
                continue  # its pane's own status (`FlowPane.StatusChanged`)
            listed.set_status(key, statuses.get(key, fmt.IDLE))

    @on(FlowFileChanged)
    def _flow_file_changed(self, message: FlowFileChanged) -> None:
        key = flow_key(message.path)
        pane = self.pane
        if pane is None or flow_key(pane.path) != key:
            self.query_one(FlowList).set_changed(key, True)
        elif pane is not None:
            pane.refresh_title()

    # ----- flows -----------------------------------------------------------------------------

    @property
    def pane(self) -> FlowPane | None:
        """The current flow's pane (None until the screen is composed or when no flow is open)."""
        try:
            switcher = self.query_one(ContentSwitcher)
        except NoMatches:
            return None
        current = switcher.current
        return switcher.get_child_by_id(current, FlowPane) if current else None

    def _new_pane(self, path: Path) -> FlowPane:
        key = flow_key(path)
        pane = FlowPane(
            path,
            self.engine,
            self.store,
            watch=self.hot_reload,
            session=self.preloaded.pop(key, None),
            id=f"pane-{len(self.panes)}",
        )
        self.panes[key] = pane
        return pane

    def open_flow(self, path: Path, *, focus: bool = False) -> FlowPane:
        """Show the flow's pane (made and mounted the first time); `focus`: and focus its DAG."""
        pane = self.panes.get(flow_key(path))
        if pane is None:
            pane = self._new_pane(path)
            self.query_one(ContentSwitcher).mount(pane)
        if pane.is_mounted:
            self._show(pane, focus)
        else:  # not composed yet (highlighted a moment ago): shown once it is
            self.call_after_refresh(self._show, pane, focus)
        self.app.sub_title = path.name
        return pane

    def _show(self, pane: FlowPane, focus: bool = False) -> None:
        self.query_one(ContentSwitcher).current = pane.id
        if self.listing:
            self.query_one(FlowList).set_changed(flow_key(pane.path), False)
        pane.refresh_title()
        pane.controller.look_for_other_runs()  # hidden, it did not look
        if focus or not self.listing or not self.query_one(FlowList).has_focus:
            pane.query_one("#dag").focus()

    @on(OptionList.OptionSelected, "#flows")
    @on(OptionList.OptionHighlighted, "#flows")
    def _flow_chosen(self, event: OptionList.OptionSelected | OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.open_flow(Path(event.option.id), focus=isinstance(event, OptionList.OptionSelected))

    @on(FlowPane.StatusChanged)
    def _status(self, event: FlowPane.StatusChanged) -> None:
        if self.listing:
            self.query_one(FlowList).set_status(flow_key(event.pane.path), event.status)

    # ----- engine events ---------------------------------------------------------------------

    def on_key(self) -> None:
        self._last_key = time.monotonic()

    @on(EventsReady)
    def _events_ready(self) -> None:
        wait = self._last_key + KEY_GRACE_S - time.monotonic()
        if wait > 0:
            # A key was just pressed: its frame goes out before the next batch of events is painted.
            self.set_timer(wait, self._drain)
        else:
            self._drain()

    def _drain(self) -> None:
        self.set_timer(DRAIN_INTERVAL_S, self.bridge.release)
        for key, events in self.router.route(self.bridge.drain()).items():
            pane = self.panes.get(key)
            if pane is not None:
                pane.controller.apply(events)

    # ----- actions: commands on the current flow ------------------------------------------------

    def _flow(self) -> FlowController | None:
        """The current flow's controller (None, and the user told, when no flow is open)."""
        pane = self.pane
        if pane is None:
            self.notify("no flow is open", severity="warning")
            return None
        return pane.controller

    def _command(self, name: str, *args: object) -> None:
        flow = self._flow()
        if flow is not None:
            getattr(flow.commands, name)(*args)

    def _on_pane(self, method: str, *args: object) -> None:
        pane = self.pane
        if pane is None:
            self.notify("no flow is open", severity="warning")
            return
        getattr(pane, method)(*args)

    def _history_cursor(self) -> int | None:
        pane = self.pane
        return pane.history_cursor() if pane is not None else None

    def action_run(self) -> None:
        self._command("run_flow")

    def action_rerun_step(self) -> None:
        self._command("rerun_step")

    def action_force(self) -> None:
        self._command("force_run")

    def action_stop(self) -> None:
        self._command("stop", self._history_cursor())

    def action_resume(self) -> None:
        self._command("resume", self._history_cursor())

    def action_rerun_past(self) -> None:
        self._command("rerun_past", self._history_cursor())

    def action_toggle_watch(self) -> None:
        self._command("toggle_watch")

    def action_view_live(self) -> None:
        flow = self._flow()
        if flow is not None:
            flow.view_run(None)

    def action_toggle_pin(self) -> None:
        flow = self._flow()
        if flow is not None:
            flow.toggle_pin()

    # ----- actions: dialogs --------------------------------------------------------------------

    def action_delete_run(self) -> None:
        flow = self._flow()
        run_id = flow.commands.deletable(self._history_cursor()) if flow is not None else None
        if flow is None or run_id is None:
            return
        commands = flow.commands

        def answered(yes: bool | None) -> None:
            if yes:
                commands.delete_run(run_id)

        self.app.push_screen(ConfirmScreen(f"Delete run #{run_id} and its logs?", "Delete"), answered)

    def action_edit_params(self) -> None:
        flow = self._flow()
        form = flow.commands.param_form() if flow is not None else None
        if flow is None or form is None:
            return
        commands = flow.commands

        def done(result: tuple[dict[str, str], bool] | None) -> None:
            if result is not None:
                values, run = result
                commands.set_params(values, run=run)

        self.app.push_screen(ParamsScreen(form.specs, form.values, form.flow), done)

    @on(RunHistory.CompareRequested)
    def _compare(self, message: RunHistory.CompareRequested) -> None:
        message.stop()
        flow = self._flow()
        if flow is not None:
            flow.commands.compare(message.first, message.second, self._show_compare)

    def _show_compare(self, compared: Comparison) -> None:
        self.app.push_screen(CompareScreen(compared.a, compared.b, compared))

    def action_code_diff(self) -> None:
        flow = self._flow()
        if flow is not None:
            flow.commands.code_diff(self._show_code_diff)

    def _show_code_diff(self, title: str, changes: list[CodeChange]) -> None:
        self.app.push_screen(CodeDiffScreen(title, changes))

    def action_debug_step(self) -> None:
        """`flow debug RUN STEP` in the terminal: the app is suspended while pdb has it, then back."""
        flow = self._flow()
        target = flow.commands.debug_target() if flow is not None else None
        if flow is None or target is None:
            return
        command = debug_command(flow.store.root, *target)
        try:
            with self.app.suspend():
                print(f"flow: debugging {target[1]} of run #{target[0]} (the TUI is back when pdb ends)")
                code = run_in_terminal(command)
        except SuspendNotSupported:
            self.notify("this terminal cannot hand the screen to a debugger", severity="error")
            return
        self.notify(f"back from flow debug (exit {code})", severity="information" if code == 0 else "warning")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen.of(self))

    # ----- actions: what the current flow's pane shows -----------------------------------------

    def action_search(self) -> None:
        self._on_pane("open_search")

    def action_search_next(self) -> None:
        self._on_pane("search_next", False)

    def action_search_previous(self) -> None:
        self._on_pane("search_next", True)

    def action_jump_to_error(self) -> None:
        self._on_pane("jump_to_error")

    def action_toggle_follow(self) -> None:
        self._on_pane("toggle_follow")

    def action_close_search(self) -> None:
        self._on_pane("close_search")

    def action_focus_dag(self) -> None:
        pane = self.pane
        if pane is not None:
            pane.query_one("#dag").focus()

    def action_tab(self, tab: str) -> None:
        pane = self.pane
        if pane is not None:
            pane.show_tab(tab)
            if tab == "history-tab":
                pane.query_one("#history").focus()

    def action_toggle_edges(self) -> None:
        self._on_pane("toggle_edges")

    def action_mark_run(self) -> None:
        self.action_tab("history-tab")
        self._on_pane("history_action", "mark")

    def action_compare_runs(self) -> None:
        self.action_tab("history-tab")
        self._on_pane("history_action", "compare")

    def action_zoom(self) -> None:
        """The DAG alone on the screen (the flow list and the tabs below hidden), or back."""
        pane = self.pane
        if pane is None:
            return
        zoomed = not pane.zoomed
        if self.listing:
            self.query_one(FlowList).display = not zoomed
        pane.set_zoom(zoomed)
        pane.query_one("#dag").focus()
