"""Provides `StopWatch`: the engine's ear for `flow stop RUN` requests from other processes.

A request is a row in the store (`runner.store.control`). While this engine has runs in flight, one
thread reads the requests for them every `POLL_S` (one indexed SELECT on its own connection) and
stops each requested run the way the engine's own `cancel` does. With no run in flight the thread
sleeps until the next run starts, so an idle TUI or `flow serve` costs nothing.

A thread rather than a signal to the owner: one process may host many runs (the TUI, `flow serve`),
and a signal would stop them all; a row names exactly one, and works across hosts sharing a store.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

POLL_S = 0.2
"""How often requests are read while runs are in flight: `flow stop` returns within ~this plus the
time the run takes to stop (the brief's budget is 1 s)."""

STOPPED_BY = "stopped by flow stop"
"""How a run stopped by request is told apart: each unfinished step's error reads "the run was ..."."""


class StopRequestStore(Protocol):
    """What `StopWatch` reads (`runner.store.control.Control`)."""

    def stop_requests(self, run_ids: Iterable[int]) -> list[int]: ...


class Handle(Protocol):
    """A started run as `StopWatch` sees it (`runner.engine.RunHandle`)."""

    id: int

    @property
    def done(self) -> bool: ...


class StopWatch:
    """Reads stop requests for the engine's runs in flight and stops them.

    Args:
        store: where requests are recorded.
        stop: stops one run (thread-safe: the engine's `cancel`).
    """

    def __init__(self, store: StopRequestStore, stop: Callable[[int], object]) -> None:
        self._store = store
        self._stop = stop
        self._runs: dict[int, Handle] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, handle: Handle) -> None:
        """A run started: read requests for it until it ends (the thread starts on first use)."""
        with self._lock:  # not while `close` takes the thread: it may be joined once started
            if self._closed.is_set():
                return
            self._runs[handle.id] = handle
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="flow-stop-requests", daemon=True)
                self._thread.start()
        self._wake.set()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _in_flight(self) -> list[int]:
        with self._lock:
            for run_id in [i for i, h in self._runs.items() if h.done]:
                del self._runs[run_id]
            return list(self._runs)

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.clear()  # before looking: a run watched from now on sets it again
            if not self._in_flight():
                self._wake.wait()
                continue
            if self._closed.wait(POLL_S):
                return
            try:
                requested = self._store.stop_requests(self._in_flight())
            except Exception as exc:  # noqa: BLE001 - a busy or broken store must not end the watch
                print(f"flow: could not read stop requests: {exc}", file=sys.stderr)
                continue
            for run_id in requested:
                with self._lock:
                    known = self._runs.pop(run_id, None) is not None
                if known:
                    self._stop(run_id)
