"""Provides `StopWatch`: the engine's ear for `flow stop RUN` requests from other processes.

A request is a row in the store (`runner.store.control`). While this engine has runs in flight, one
thread reads the requests for them every `POLL_S` (one indexed SELECT on its own connection) and
stops each requested run the way the engine's own `cancel` does. With no run in flight the thread
sleeps until the next run starts, so an idle TUI or `flow serve` costs nothing.

The thread starts `POLL_S` after the first run watched began, if a run is then still in flight (the
scheduler calls `start_if_due` at `due`): when it would have read the requests for the first time. A
run over sooner never needs it. Started with every engine's first run, it cost a short run 0.3-0.5 ms
(a fully cached re-run of 1,000 steps, about a fortieth), its start taking the GIL from the scheduler
as the run's first decisions began.

A thread rather than a signal to the owner: one process may host many runs (the TUI, `flow serve`),
and a signal would stop them all; a row names exactly one, and works across hosts sharing a store.
"""

from __future__ import annotations

import sys
import threading
import time
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
        self._due: float | None = None
        """When the thread is to start (`time.monotonic()`); None once it has, or with nothing to watch."""

    @property
    def due(self) -> float | None:
        """When `start_if_due` starts the thread (None: started, or nothing watched yet)."""
        return self._due

    def watch(self, handle: Handle) -> None:
        """A run started: read requests for it until it ends (from `POLL_S` on: see `start_if_due`)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._runs[handle.id] = handle
            if self._thread is None and self._due is None:
                self._due = time.monotonic() + POLL_S
        self._wake.set()

    def start_if_due(self, now: float) -> None:
        """Start the thread if `due` has come and a run watched is still in flight (none is: the next
        run watched sets a new `due`)."""
        if self._due is None or now < self._due:
            return
        with self._lock:  # not while `close` takes the thread: it may be joined once started
            if self._due is None or self._closed.is_set():
                return
            self._due = None
            if all(handle.done for handle in self._runs.values()):
                self._runs.clear()
                return
            self._thread = threading.Thread(target=self._loop, name="flow-stop-requests", daemon=True)
            self._thread.start()

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
        wait = False  # started `POLL_S` into a run (`start_if_due`): its first look is now
        while not self._closed.is_set():
            self._wake.clear()  # before looking: a run watched from now on sets it again
            if not self._in_flight():
                self._wake.wait()
                wait = True
                continue
            if wait and self._closed.wait(POLL_S):
                return
            wait = True
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
