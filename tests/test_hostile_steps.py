"""Hostile predicates and values never hang a run: the step fails with the reason, the run ends.

A `when=` predicate, a `foreach` iteration and the unpickling of the upstream values they read are
user code. Each test runs a real flow through the real engine (worker processes, the store on disk)
with one hostile step beside an independent sibling, and waits for the run with a deadline: before,
the scheduler thread died ("Exception in thread flow-scheduler") and the run stayed `running` for ever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from dsl import load_flow
from runner.engine import Engine, RunRequest
from runner.executors.inline import InlineExecutor
from runner.executors.local import LocalExecutor
from runner.params import resolve_params
from runner.store import Store
from tests.helpers_core import wait_for

HEADER = '''
import sys
import time

from dsl import step


class ExitOnLoad:
    """Unpickling this calls sys.exit(0) wherever it happens."""

    def __reduce__(self):
        return (sys.exit, (0,))


def _explode():
    raise RuntimeError("cannot rebuild this value")


class FailsOnLoad:
    def __reduce__(self):
        return (_explode, ())


class BadIter:
    def __iter__(self):
        raise ValueError("no items for you")


class Fatal(BaseException):
    """Not an Exception: only `except BaseException` catches it."""


@step
def sibling():
    return "fine"
'''

HOSTILE = {
    "when_sys_exit": (
        """
        @step
        def up():
            return 1

        @step(when=lambda up: sys.exit(3))
        def bad(up):
            return up
        """,
        "the when= predicate failed: it called sys.exit(3)",
    ),
    "when_reads_value_whose_reduce_is_sys_exit": (
        """
        @step
        def up():
            return ExitOnLoad()

        @step(when=lambda up: True)
        def bad():
            return 1
        """,
        "the when= predicate failed: it called sys.exit(0)",
    ),
    "when_raises_base_exception": (
        """
        @step
        def up():
            return 1

        def predicate(up):
            raise Fatal("deep trouble")

        @step(when=predicate)
        def bad(up):
            return up
        """,
        "the when= predicate failed: Fatal: deep trouble",
    ),
    "when_bool_raises": (
        """
        class NoTruth:
            def __bool__(self):
                raise TypeError("no truth value")

        @step
        def up():
            return 1

        @step(when=lambda up: NoTruth())
        def bad(up):
            return up
        """,
        "the when= predicate failed: TypeError: no truth value",
    ),
    "foreach_iter_raises": (
        """
        @step
        def items():
            return BadIter()

        @step(foreach="items")
        def bad(items):
            return items
        """,
        "foreach 'items' failed: ValueError: no items for you",
    ),
    "foreach_unpickling_raises": (
        """
        @step
        def items():
            return FailsOnLoad()

        @step(foreach="items")
        def bad(items):
            return items
        """,
        "foreach 'items' failed: RuntimeError: cannot rebuild this value",
    ),
    "foreach_over_value_whose_reduce_is_sys_exit": (
        """
        @step
        def items():
            return ExitOnLoad()

        @step(foreach="items")
        def bad(items):
            return items
        """,
        "foreach 'items' failed: it called sys.exit(0)",
    ),
    "foreach_not_iterable": (
        """
        @step
        def items():
            return 42

        @step(foreach="items")
        def bad(items):
            return items
        """,
        "foreach 'items' failed: TypeError: 'int' object is not iterable",
    ),
}


def start_run(store_dir: Path, path: Path, executor: Any = None, **options: Any) -> tuple[Engine, Any]:
    store = Store(store_dir)
    engine = Engine(store, executor or LocalExecutor(2))
    loaded = load_flow(path)
    handle = engine.start(RunRequest(loaded, resolve_params(loaded.graph.params, {}), **options))
    return engine, handle


def finish(engine: Engine, handle: Any, within: float = 60.0) -> Any:
    """Wait for the run with a deadline (a hung scheduler fails the test instead of hanging it)."""
    status = handle.wait(within)
    assert handle.done, f"run #{handle.id} still {status} after {within}s: the scheduler hung"
    record = engine.store.get_run(handle.id)
    assert record is not None
    return record


def write(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return path


@pytest.mark.parametrize("executor", ["local", "inline"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_predicate_or_value_fails_its_step_and_the_run_finishes(
    tmp_path: Path, kind: str, executor: str
) -> None:
    body, reason = HOSTILE[kind]
    path = write(tmp_path / "project" / "hostile.py", body)
    engine, handle = start_run(
        tmp_path / "store", path, LocalExecutor(2) if executor == "local" else InlineExecutor()
    )
    try:
        run = finish(engine, handle)
        steps = {s.name: s for s in run.steps}
        assert run.status == "failed"
        assert steps["bad"].status == "failed"
        assert reason in (steps["bad"].error or ""), steps["bad"].error
        assert steps["sibling"].status in ("succeeded", "cached")
        assert all(s.status not in ("running", "pending") for s in run.steps), [
            (s.name, s.status) for s in run.steps
        ]
        # The scheduler survived: the same engine runs the flow again, reusing what it can.
        again = finish(engine, engine.start(RunRequest(load_flow(path), {})))
        assert {s.name: s.status for s in again.steps}["sibling"] == "cached"
    finally:
        engine.close()
        engine.store.close()


def test_a_foreach_item_that_cannot_be_pickled_fails_the_step_naming_the_item(tmp_path: Path) -> None:
    path = write(
        tmp_path / "project" / "items.py",
        """
        import threading

        class Items:
            def __iter__(self):
                yield 1
                yield threading.Lock()

            def __reduce__(self):
                return (Items, ())

        @step
        def items():
            return Items()

        @step(foreach="items")
        def bad(items):
            return items
        """,
    )
    engine, handle = start_run(tmp_path / "store", path)
    try:
        run = finish(engine, handle)
        bad = {s.name: s for s in run.steps}["bad"]
        assert bad.status == "failed"
        assert "foreach 'items' failed: item 1 cannot be pickled" in (bad.error or ""), bad.error
    finally:
        engine.close()
        engine.store.close()


def test_a_predicate_that_hangs_is_killed_at_the_steps_timeout(tmp_path: Path) -> None:
    path = write(
        tmp_path / "project" / "slow.py",
        """
        @step
        def up():
            return 1

        @step(timeout=1, when=lambda up: time.sleep(60) or True)
        def bad(up):
            return up
        """,
    )
    engine, handle = start_run(tmp_path / "store", path)
    started = time.monotonic()
    try:
        run = finish(engine, handle, within=30)
        bad = {s.name: s for s in run.steps}["bad"]
        assert bad.status == "failed"
        assert bad.error == "the when= predicate failed: timed out after 1s; its process was killed"
        assert time.monotonic() - started < 20
    finally:
        engine.close()
        engine.store.close()


def test_stopping_a_run_kills_a_predicate_that_blocks(tmp_path: Path) -> None:
    marker = tmp_path / "predicate-started"
    path = write(
        tmp_path / "project" / "blocked.py",
        f"""
        def blocking(up):
            open({str(marker)!r}, "w").close()
            time.sleep(60)
            return True

        @step
        def up():
            return 1

        @step(when=blocking)
        def bad(up):
            return up
        """,
    )
    engine, handle = start_run(tmp_path / "store", path)
    try:
        wait_for(marker.exists, timeout=30)
        engine.cancel(handle.id)
        run = finish(engine, handle, within=10)
        assert run.status == "cancelled"
        assert {s.name: s.status for s in run.steps}["bad"] == "cancelled"
    finally:
        engine.close()
        engine.store.close()


def test_an_internal_error_in_the_engine_fails_the_run_instead_of_hanging_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "project" / "plain.py",
        """
        @step
        def up():
            return 1

        @step
        def down(up):
            return up + 1
        """,
    )

    def broken(self: Engine, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the engine")

    store_dir = tmp_path / "store"
    monkeypatch.setattr(Engine, "_persist_output", broken)
    engine, handle = start_run(store_dir, path)
    try:
        run = finish(engine, handle, within=30)
        assert run.status == "failed"
        errors = [s.error or "" for s in run.steps if s.status == "failed"]
        assert errors and all(
            "internal error in the runner: RuntimeError: a bug in the engine" in e for e in errors
        )
        assert all(s.status not in ("running", "pending") for s in run.steps)
        assert "a bug in the engine" in capfd.readouterr().err
        monkeypatch.undo()
        again = finish(engine, engine.start(RunRequest(load_flow(path), {})))
        assert again.status == "succeeded"
    finally:
        engine.close()
        engine.store.close()


def test_ctrl_c_under_watch_stops_a_run_blocked_in_a_predicate(tmp_path: Path) -> None:
    """`flow run --watch`, a predicate that sleeps 40 s: one SIGINT ends the process within seconds."""
    marker = tmp_path / "predicate-started"
    path = write(
        tmp_path / "project" / "watched.py",
        f"""
        def blocking(up):
            open({str(marker)!r}, "w").close()
            time.sleep(40)
            return True

        @step
        def up():
            return 1

        @step(when=blocking)
        def bad(up):
            return up
        """,
    )
    env = {
        **os.environ,
        "FLOW_STORE": str(tmp_path / "store"),
        "PYTHONPATH": str(Path(__file__).parent.parent),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--watch"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker.exists, timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    store = Store(tmp_path / "store", create=False)
    try:
        run = store.get_run(store.latest_run_id() or 0)
        assert run is not None and run.status == "cancelled"
    finally:
        store.close()


def test_a_selection_below_a_conditional_step_decides_it_through_its_probe(tmp_path: Path) -> None:
    """`--only report` with `train(when=...)` upstream: the predicate is asked of a worker before
    the run starts, the cached `train` is reused, and a false predicate gives `report` None."""
    path = write(
        tmp_path / "project" / "gated.py",
        """
        @step
        def check(ok: bool = True):
            return {"ok": ok}

        @step(when=lambda check: check["ok"])
        def train(check):
            return "model"

        @step(trigger="all_done")
        def report(train):
            return f"report on {train}"
        """,
    )
    store_dir = tmp_path / "store"
    for ok in (True, False):
        store = Store(store_dir)
        engine = Engine(store, LocalExecutor(2))
        loaded = load_flow(path)
        try:
            params = resolve_params(loaded.graph.params, {"ok": ok})
            finish(engine, engine.start(RunRequest(loaded, params)))
            handle = engine.start(RunRequest(loaded, params, only=("report",), force=True))
            run = finish(engine, handle)
            assert run.status == "succeeded"
            report = {s.name: s for s in run.steps}["report"]
            assert report.preview == ("'report on model'" if ok else "'report on None'")
        finally:
            engine.close()
            store.close()


def test_an_executor_that_raises_fails_the_runs_in_flight_and_the_engine_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception outside any one run's code (here: the executor's event wait) fails every run in
    flight, kills their steps, and the next run works."""
    path = write(
        tmp_path / "project" / "plain.py",
        """
        @step
        def up():
            time.sleep(0.5)
            return 1
        """,
    )
    armed: list[bool] = []
    shots = [1]  # the executor fails once, after the first step was submitted
    real_submit, real_events = LocalExecutor.submit, LocalExecutor.events

    def submit(self: LocalExecutor, task: Any) -> None:
        armed.append(True)
        real_submit(self, task)

    def events(self: LocalExecutor, timeout: float | None) -> Any:
        if armed and shots:
            shots.pop()
            raise OSError("select failed")
        return real_events(self, timeout)

    monkeypatch.setattr(LocalExecutor, "submit", submit)
    monkeypatch.setattr(LocalExecutor, "events", events)
    engine, handle = start_run(tmp_path / "store", path)
    try:
        run = finish(engine, handle, within=30)
        assert run.status == "failed"
        up = {s.name: s for s in run.steps}["up"]
        assert up.status == "failed" and "internal error in the runner: OSError: select failed" in (
            up.error or ""
        )
        again = finish(engine, engine.start(RunRequest(load_flow(path), {})))
        assert again.status == "succeeded"
    finally:
        engine.close()
        engine.store.close()
