"""Provides `EventRouter`, which sorts the app's engine events by the flow they belong to, and
`flow_key`, how flows are named for it.

The app subscribes to the engine once (the screen's `EventBridge`), not once per flow: one queue, one
drain per repaint, whatever the number of open flows. A run's events name only its id; the router
learns each run's flow from its `RunStarted`, reloads name their file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from runner.events import Event, FlowReloaded, LoadFailed, RunStarted
from tui.data.state import StepLogs


def flow_key(path: str | Path) -> str:
    """How controllers and events name a flow file: its resolved path."""
    return str(Path(path).resolve())


class EventRouter:
    """Batches of engine events, split by flow.

    Attributes:
        run_flows: run id -> the key of its flow, for every run started since the app did.
    """

    def __init__(self) -> None:
        self.run_flows: dict[int, str] = {}

    def route(self, items: Iterable[Event | StepLogs]) -> dict[str, list[Event | StepLogs]]:
        """Flow key -> its events, in order (events of runs started before the app are dropped)."""
        batches: dict[str, list[Event | StepLogs]] = {}
        for event in items:
            if isinstance(event, RunStarted):
                key = flow_key(event.file)
                self.run_flows[event.run_id] = key
            elif isinstance(event, FlowReloaded | LoadFailed):
                key = flow_key(event.file)
            else:
                run_id = getattr(event, "run_id", None)
                found = self.run_flows.get(run_id) if run_id is not None else None
                if found is None:
                    continue
                key = found
            batches.setdefault(key, []).append(event)
        return batches
