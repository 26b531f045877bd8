"""Provides `Watcher`: a flow's hot reload, on or off — the session's watch loop (re-load and re-run on
every save) on a thread of its own (`Host.loop`), stopped by an event.
"""

from __future__ import annotations

import threading
from functools import partial

from runner.session import FlowSession
from tui.controllers.host import Host


class Watcher:
    """Hot reload of one flow.

    Attributes:
        on: hot reload is wanted (the watcher runs once the session exists).
        armed: the watch loop is running (tests wait for it before editing the file).
    """

    def __init__(self, host: Host, name: str, *, on: bool) -> None:
        self.host = host
        self.name = name
        self.on = on
        self.armed = False
        self._stop: threading.Event | None = None

    @property
    def running(self) -> bool:
        """The watch loop was started and not stopped (it may not be armed yet)."""
        return self._stop is not None

    def start(self, session: FlowSession) -> None:
        """(Re)start the watch loop on `session` (until `stop`)."""
        self.stop()
        stop = self._stop = threading.Event()

        def armed() -> None:
            self.armed = True

        self.host.loop(
            partial(session.watch, stop, on_ready=armed, run_options=None), name=f"watch {self.name}"
        )

    def stop(self) -> None:
        """Stop the watch loop, if any (idempotent)."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self.armed = False
