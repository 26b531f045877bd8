"""Provides `FlowApp`, its factory `make_app`, and `run_tui` (what `flow tui` calls).

The app is thin: it owns the engine and the store for its lifetime, pushes `MainScreen`, adds the
screen's actions to the command palette, switches themes, and asks before quitting while a run is in
flight (then stops the runs and waits for them to end, so the store records them as cancelled).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from dsl.gcpause import gc_paused
from runner.engine import Engine, collect_less, freeze_heap
from runner.executors.local import LocalExecutor
from runner.flow_files import find_flows
from runner.session import FlowSession
from runner.store import Store
from tui.controllers.reads import open_session
from tui.controllers.router import flow_key
from tui.keys import ACTIONS
from tui.screens.confirm import ConfirmScreen
from tui.screens.main import MainScreen

SWITCH_INTERVAL_S = 0.001
"""The interpreter's thread switch interval while the app runs (the default is 0.005)."""

QUIT_WAIT_S = 10.0
"""How long quitting waits for stopped runs to record their end."""


class FlowApp(App[int]):
    """flow's terminal UI.

    Args:
        flows: the flow files to offer (the first is opened).
        engine: runs the flows; closed when the app exits.
        store: the run store the engine writes.
        watch: hot reload on at start.
        listing: show the flow list (`flow tui DIR`).
    """

    CSS_PATH = "app.tcss"
    TITLE = "flow"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("t", "toggle_theme", "Theme", show=False, tooltip="Switch between the light and dark theme"),
    ]

    def __init__(
        self, flows: list[Path], engine: Engine, store: Store, *, watch: bool = True, listing: bool = False
    ) -> None:
        super().__init__()
        self.flows = flows
        self.engine = engine
        self.store = store
        self.hot_reload = watch
        self.listing = listing
        self.main: MainScreen | None = None
        self.preloaded: dict[str, FlowSession] = {}
        """Sessions loaded before the app started, by flow key (the panes take them)."""
        self._closed = False
        self._switch_interval = sys.getswitchinterval()
        self._gc_threshold = gc.get_threshold()

    def on_mount(self) -> None:
        # The engine's threads can hold the GIL for the default 5 ms at a time while a step streams
        # thousands of lines a second; a shorter interval keeps key presses snappy.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # A step streaming logs allocates an event per line; with the default thresholds the
        # collector runs hundreds of times and its full passes walk every widget. Freezing what
        # start-up built and collecting less often keeps those pauses out of key handling.
        self._gc_threshold = gc.get_threshold()
        collect_less()
        self.call_after_refresh(freeze_heap)

    def get_default_screen(self) -> MainScreen:
        # The main screen is the first screen, not pushed over a blank one: each screen switch at
        # start-up makes the footer rebuild its keys, which delayed the first paint.
        self.main = MainScreen(
            self.flows,
            self.engine,
            self.store,
            watch=self.hot_reload,
            listing=self.listing,
            preloaded=self.preloaded,
        )
        return self.main

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        main = self.main
        if main is None:
            return
        for entry in ACTIONS:
            shown = entry.display or self.get_key_display(Binding(entry.key.split(",")[0], entry.action))
            name, _, arg = entry.action.partition("(")
            method = getattr(main, f"action_{name}")
            callback = partial(method, arg.rstrip(")").strip("'")) if arg else method
            # The palette reads titles as markup: a key in brackets would be a tag (`[/]` crashed it).
            yield SystemCommand(f"{entry.label} ({shown})", entry.help, callback)
        yield SystemCommand(
            "Toggle light/dark theme (t)", "Switch between the light and dark theme", self.action_toggle_theme
        )

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    async def action_quit(self) -> None:
        active = self.engine.active_runs
        if not active:
            self.exit(0)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.engine.cancel(None)
                self.notify("stopping the runs in flight…")
                self._wait_and_exit(0.0)

        runs = ", ".join(f"#{r}" for r in active)
        question = f"Run {runs} is in flight. Stop it and quit?"
        self.push_screen(ConfirmScreen(question, "Stop and quit"), answered)

    def _wait_and_exit(self, waited: float) -> None:
        if not self.engine.active_runs or waited >= QUIT_WAIT_S:
            self.exit(0)
            return
        self.set_timer(0.05, partial(self._wait_and_exit, waited + 0.05))

    def on_unmount(self) -> None:
        self.close_engine()
        sys.setswitchinterval(self._switch_interval)
        gc.set_threshold(*self._gc_threshold)
        gc.unfreeze()

    def close_engine(self) -> None:
        """Stop watchers and runs, the scheduler and the workers, and close the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.main is not None:
            self.main.stop_watching()
            for pane in self.main.panes.values():
                pane.controller.watcher.stop()
        self.engine.close()
        self.store.close()


def make_app(
    target: Path,
    store_dir: Path | None = None,
    workers: int | None = None,
    *,
    watch: bool = True,
) -> FlowApp:
    """Build the app for a flow file or a directory of flows (the store and engine with it)."""
    target = Path(target)
    listing = target.is_dir()
    flows = find_flows(target) if listing else [target]
    store = Store(store_dir)
    executor = LocalExecutor(workers)
    executor.keep_spare()  # a stop or a save that kills a running step's worker leaves one ready
    engine = Engine(store, executor)
    app = FlowApp(flows, engine, store, watch=watch, listing=listing)
    if flows:
        # Load the first flow before the UI starts: its first paint is then one layout away,
        # instead of competing for the GIL with the app's start-up in a worker. What it loads is
        # frozen at once (as the app freezes its start-up after the first paint): the collection
        # that would otherwise follow the load walks every object it made (~20 ms at 10,000 steps).
        with gc_paused():
            app.preloaded[flow_key(flows[0])] = open_session(flows[0], engine)
            freeze_heap()
    return app


def run_tui(target: Path, store_dir: Path | None, workers: int | None) -> int:
    """Run the TUI until the user quits; return the exit code."""
    app = make_app(target, store_dir, workers)
    try:
        app.run()
    finally:
        app.close_engine()
    return app.return_code or 0
