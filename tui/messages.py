"""Provides the messages that carry news from other threads into the UI, and `EventBridge`.

The engine calls its subscribers on its scheduler thread (or the watcher's thread), sometimes
thousands of times a second while a step prints. `EventBridge` queues every event and posts one
`EventsReady` only when none is pending, so the UI drains a batch per message instead of handling a
message per log line (toolong's coalescing, without dropping anything). The screen releases the
bridge a moment after each drain, so a flood is painted at most ~10 times a second while a lone
event (a step finishing) is still shown at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual.message import Message
from textual.message_pump import MessagePump

from runner.events import Event, StepLog
from tui.data.state import StepLogs


class EventsReady(Message):
    """Events are queued in the bridge: drain them."""


class FlowFileChanged(Message):
    """A listed flow file was saved."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


class EventBridge:
    """An engine subscriber that hands events to the UI thread in batches.

    Log lines are grouped as they arrive (on the engine's thread): consecutive lines of one step
    become one `StepLogs`, so the UI thread handles a flood a batch at a time, never line by line.
    """

    def __init__(self, target: MessagePump) -> None:
        self._target = target
        self._queue: list[Event | StepLogs] = []
        self._lock = threading.Lock()
        self._pending = False

    def __call__(self, event: Event) -> None:
        with self._lock:
            queue = self._queue
            if type(event) is StepLog:
                last = queue[-1] if queue else None
                if type(last) is StepLogs and last.step == event.step and last.run_id == event.run_id:
                    last.events.append(event)
                    return  # the queue was not empty: its message is pending already
                queue.append(StepLogs(event.run_id, event.step, [event]))
            else:
                queue.append(event)
            if self._pending:
                return
            self._pending = True
        self._target.post_message(EventsReady())

    def drain(self) -> list[Event | StepLogs]:
        """Take every queued item. Until `release()`, new events queue without a message."""
        with self._lock:
            items, self._queue = self._queue, []
        return items

    def release(self) -> None:
        """Allow the next `EventsReady` (posted now if events arrived since the last drain)."""
        with self._lock:
            if not self._queue:
                self._pending = False
                return
        self._target.post_message(EventsReady())
