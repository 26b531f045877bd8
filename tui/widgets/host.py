"""Provides `WidgetHost`: a controller's `Host` on a widget — the controller's blocking work runs in
the widget's thread workers, its changes are painted by the widget, its notices are toasts.

An adapter rather than methods of the widget itself: `notify` and friends would otherwise shadow the
widget's own, and the view keeps a namespace of its own actions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from textual.widget import Widget

from tui.controllers.host import Change, Severity

T = TypeVar("T")


def _tell_later(widget: Widget, message: str, severity: Severity) -> None:
    """Show `message` as a notice (plain text, never markup), from any thread."""
    widget.call_later(lambda: widget.app.notify(message, severity=severity, markup=False))


def run_loop(
    widget: Widget, work: Callable[[], None], *, name: str, failed: str, severity: Severity = "error"
) -> None:
    """Run `work`, a blocking loop that ends only when its own stop event is set (a watcher), on a
    thread of its own, not in Textual's worker pool (see `tui.controllers.host.Host.loop`). If it
    fails, the user is told `failed: <the error>` (as text, never markup) and the app goes on."""

    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - told to the user, as a failed worker would be
            _tell_later(widget, f"{failed}: {exc!r}", severity)

    threading.Thread(target=run, name=name, daemon=True).start()


def run_in_background(
    widget: Widget,
    work: Callable[[], T],
    then: Callable[[T], None] | None = None,
    *,
    group: str,
    description: str,
    exclusive: bool = False,
    failed: Callable[[], None] | None = None,
) -> None:
    """`work` in one of `widget`'s thread workers; `then(result)` back on the UI thread, as a message to
    the widget (`post_message` is thread-safe and does not wait). If `work` raises, the user is told
    `<description> failed: <the error>` (as text) and `failed()` is called back instead: before, the
    worker just ended, silently, and a paced look waiting for its answer never looked again."""

    def run() -> None:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - told to the user, and the caller called back
            _tell_later(widget, f"{description} failed: {exc!r}", "error")
            if failed is not None:
                widget.call_later(failed)
            return
        if then is not None:
            widget.call_later(then, result)

    widget.run_worker(
        run, thread=True, group=group, description=description, exclusive=exclusive, exit_on_error=False
    )


class WidgetHost:
    """Hosts a controller on `widget`, which paints each `Change` with `paint`."""

    def __init__(self, widget: Widget, paint: Callable[[Change], None]) -> None:
        self.widget = widget
        self.paint = paint

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
        run_in_background(
            self.widget, work, then, group=group, description=description, exclusive=exclusive, failed=failed
        )

    def loop(self, work: Callable[[], None], *, name: str) -> None:
        run_loop(self.widget, work, name=name, failed=f"{name} stopped")

    def soon(self, callback: Callable[[], None]) -> None:
        self.widget.call_later(callback)

    def after_paint(self, callback: Callable[[], None]) -> None:
        self.widget.call_after_refresh(callback)

    def changed(self, change: Change) -> None:
        self.paint(change)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Severity = "information",
        timeout: float | None = None,
    ) -> None:
        self.widget.app.notify(message, title=title, severity=severity, timeout=timeout, markup=False)
