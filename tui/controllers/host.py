"""Provides `Host`, what a flow's controller needs from the view that shows it, and `Change`, what the
controller tells it to repaint.

The controller is plain Python: it never touches a widget. Blocking work (store reads, starting a run,
the file watcher) goes to the host, which runs it off the UI thread and calls the continuation back on
the UI thread, so the controller's state is only ever changed there. The TUI's `FlowPane` is a host
built on thread workers; the tests use one that does everything at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from tui.data.state import LogBuffer

T = TypeVar("T")

Severity = Literal["information", "warning", "error"]


class Host(Protocol):
    """The view side of a controller."""

    def background(
        self,
        work: Callable[[], T],
        then: Callable[[T], None] | None = None,
        *,
        group: str,
        description: str,
        exclusive: bool = False,
        failed: Callable[[], None] | None = None,
    ) -> None:
        """Run `work` off the UI thread, then `then(result)` on it. `exclusive`: a newer job of the
        same group cancels this one; a read already under way still finishes and reports, so each
        continuation checks that what it read is still wanted (a newer history read, the step
        still selected). If `work` raises, the user is told what failed and `failed()` is called
        on the UI thread instead of `then`."""

    def loop(self, work: Callable[[], None], *, name: str) -> None:
        """Run `work`, a blocking loop that ends only when its own stop event is set (a watcher), on a
        thread of its own. Never in `background`'s workers: they share a small pool (cores + 4
        threads), and a loop holds its thread for good, so a few open flows' watchers left no thread
        for anything else (a run never started)."""

    def soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the UI thread once the messages queued before it are handled."""

    def after_paint(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the UI thread once what is queued now has been painted on screen (work
        nobody waits for stays out of the way of the first paint)."""

    def changed(self, change: Change) -> None:
        """Repaint what `change` names (called on the UI thread)."""

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Severity = "information",
        timeout: float | None = None,
    ) -> None:
        """Tell the user something (plain text, never markup)."""


@dataclass(frozen=True)
class Change:
    """What changed in a flow's controller, so its view repaints only that.

    Attributes:
        graph: a new good load: lay the DAG out again.
        error: the load error appeared, changed or went away.
        view: the viewed run (or what it shows) changed: repaint everything below the title.
        steps: steps of the viewed run whose status changed (their boxes; the details if selected).
        lines: steps of the viewed run whose logs grew.
        details: what the details panel shows may differ (the parameters were changed).
        log: the selected step's lines were read from the store: show this buffer, with this
            placeholder while it is empty.
        log_status: the line above the logs may read differently (pinned or not).
        follow: the viewed run moved on to this step: select it (not as the user's choice).
        headline: the flow's headline status (`FlowController.headline`) may have changed.
        history: the run history was read again.
        title: the title may read differently (watch toggled, a run viewed or ended).
    """

    graph: bool = False
    error: bool = False
    view: bool = False
    steps: frozenset[str] = frozenset()
    lines: frozenset[str] = frozenset()
    details: bool = False
    log: tuple[LogBuffer, str] | None = None
    log_status: bool = False
    follow: str | None = None
    headline: bool = False
    history: bool = False
    title: bool = False
