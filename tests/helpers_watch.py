"""Helpers for the hot-reload tests: an event log to wait on, a watching session in a thread,
editor-style saves, and the side-effect log that proves which steps truly executed.

Nothing here sleeps for a fixed time: every wait is on an event (or a file the test itself is
waiting for) and is bounded by a timeout that fails the test with what was seen so far.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runner.events import Event, FlowReloaded, LoadFailed, RunFinished, RunStarted, StepStarted
from runner.session import FlowSession

TIMEOUT = 30.0
"""Upper bound of any single wait; generous for a loaded CI machine, never reached when all is well."""

E = TypeVar("E", bound=Event)


def describe(event: Event) -> str:
    data = event.as_dict()
    data.pop("ts", None)
    kind = data.pop("event")
    if kind == "step_finished":
        keep = ("step", "status", "reason", "error")
        data = {k: data[k] for k in keep if data.get(k)}
    return f"{kind} {data}"


class EventLog:
    """An engine subscriber that keeps every event and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._changed:
            self.items.append(event)
            self._changed.notify_all()

    def mark(self) -> int:
        """A position in the log: later waits and queries look only at events after it."""
        with self._changed:
            return len(self.items)

    def since(self, mark: int, kind: type[E] | None = None) -> list[Any]:
        with self._changed:
            items = self.items[mark:]
        return [e for e in items if kind is None or isinstance(e, kind)]

    def wait_until(
        self, what: str, found: Callable[[list[Event]], Any], since: int = 0, timeout: float = TIMEOUT
    ) -> Any:
        """Block until `found(events since the mark)` is truthy; return it. Fail the test on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = found(self.items[since:])
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n  ".join(describe(e) for e in self.items[since:] if e.kind != "step_log")
                    pytest.fail(f"timed out after {timeout:g}s waiting for {what}; events seen:\n  {seen}")
                self._changed.wait(remaining)

    def wait_for(
        self,
        kind: type[E],
        since: int = 0,
        match: Callable[[E], bool] = lambda e: True,
        what: str = "",
        timeout: float = TIMEOUT,
    ) -> E:
        """The first event of `kind` after the mark that `match`es."""

        def first(items: list[Event]) -> E | None:
            return next((e for e in items if isinstance(e, kind) and match(e)), None)

        return self.wait_until(what or kind.__name__, first, since, timeout)

    def wait_reload(self, since: int, what: str = "the reload") -> FlowReloaded | LoadFailed:
        """The first FlowReloaded or LoadFailed after the mark."""
        return self.wait_until(
            what,
            lambda items: next((e for e in items if isinstance(e, (FlowReloaded, LoadFailed))), None),
            since,
        )

    def wait_run(
        self, since: int, trigger_prefix: str = "watch:", what: str = ""
    ) -> tuple[RunStarted, RunFinished]:
        """The first run after the mark whose trigger starts with `trigger_prefix`, once it has finished."""
        started = self.wait_for(
            RunStarted,
            since,
            lambda e: e.trigger.startswith(trigger_prefix),
            what or f"a run triggered by {trigger_prefix!r}",
        )
        finished = self.wait_for(
            RunFinished, since, lambda e: e.run_id == started.run_id, f"the end of run #{started.run_id}"
        )
        return started, finished

    def started_steps(self, run_id: int) -> list[str]:
        return [e.step for e in self.since(0, StepStarted) if e.run_id == run_id]


class Executions:
    """The side-effect log: each step appends one line when (and only when) it truly executes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return self.path.read_text(encoding="utf-8").splitlines()

    def mark(self) -> int:
        return len(self.lines())

    def since(self, mark: int) -> list[str]:
        return self.lines()[mark:]


@contextmanager
def watching(session: FlowSession, run_options: dict[str, Any] | None = None) -> Iterator[threading.Thread]:
    """Run `session.watch` in a thread; return once the watcher is armed; stop it (bounded) on exit."""
    stop = threading.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            session.watch(stop, on_ready=ready.set, run_options=run_options)
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=target, name="test-watcher", daemon=True)
    thread.start()
    try:
        if not ready.wait(TIMEOUT):
            pytest.fail(f"the watcher was not armed within {TIMEOUT:g}s")
        if failure:
            raise failure[0]
        yield thread
    finally:
        stop.set()
        thread.join(TIMEOUT)
        if thread.is_alive():
            pytest.fail(f"session.watch did not return within {TIMEOUT:g}s of stop_event being set")
    if failure:
        raise failure[0]


# ----- editor-style saves ---------------------------------------------------------------------------


def save_in_place(path: Path, text: str) -> None:
    """Truncate and rewrite the file (most editors' default, `echo > file`). The text is encoded first,
    so the truncate and the write are two system calls back to back, as an editor's are: written
    through a Python file object, the write waited for the close, and a busy machine could run the
    watcher in between (it saw the file empty, and a test its first reload)."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def save_by_rename(path: Path, text: str) -> None:
    """vim / VS Code style atomic save: write a temporary file in the same directory, rename it over."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def save_jetbrains(path: Path, text: str) -> None:
    """JetBrains "safe write": write name___jb_tmp___, move the original to name___jb_old___,
    move the temporary file into place, delete the old one."""
    temp = path.with_name(path.name + "___jb_tmp___")
    old = path.with_name(path.name + "___jb_old___")
    temp.write_text(text, encoding="utf-8")
    os.rename(path, old)
    os.rename(temp, path)
    os.remove(old)


SAVES = {"in_place": save_in_place, "rename": save_by_rename, "jetbrains": save_jetbrains}


def wait_for_file(path: Path, what: str, timeout: float = TIMEOUT) -> str:
    """Wait (bounded) until a file a step writes exists and is not empty; return its text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text(encoding="utf-8")
            if text:
                return text
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} ({path})")


def pid_gone(pid: int) -> bool:
    """True if the process has exited (or is a zombie awaiting its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")
