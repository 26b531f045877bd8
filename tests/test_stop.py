"""`flow stop RUN` from another shell, with real processes and the real store: it stops a plain
`flow run`, a loop's iteration (and ends the loop), a run `flow serve` started (the server carries on)
and a run of an engine hosted in-process (as the TUI hosts one), within about a second; exit 0 when
stopped, 2 for an unknown run or one that is not running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from runner.engine import RunRequest
from runner.params import resolve_params
from tests.helpers_core import set_schema
from tests.test_loops import BLOCKING, runs_of
from tests.test_serve import flows, serve  # noqa: F401 - fixtures

DEADLINE_S = 30.0
STOP_BUDGET_S = 3.0
"""The brief's budget is ~1 s (0.2 s polling plus killing a worker); a loaded 2-core machine gets slack."""


def start(args: list[str], store_dir: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        env={**os.environ, "FLOW_STORE": str(store_dir)},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_running(store_dir: Path, process: subprocess.Popen[str] | None = None) -> int:
    """The id of the newest run once one of its steps is running."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if process is not None:
            assert process.poll() is None, process.communicate()
        if store_dir.exists():
            runs = runs_of(store_dir)
            if runs and runs[-1].status == "running" and any(s.status == "running" for s in runs[-1].steps):
                return int(runs[-1].id)
        time.sleep(0.05)
    raise AssertionError("no step started running")


def stop(flow_cli, run: str) -> tuple[object, float]:
    began = time.monotonic()
    result = flow_cli("stop", run)
    return result, time.monotonic() - began


def test_flow_stop_stops_a_plain_flow_run_from_another_shell(write_flow, flow_cli, store_dir, tmp_path):
    path = write_flow(BLOCKING)
    process = start(["run", str(path)], store_dir, tmp_path)
    try:
        run_id = wait_running(store_dir, process)
        result, took = stop(flow_cli, str(run_id))
        assert result.code == 0, result
        assert f"run #{run_id} (flow_file) stopped: cancelled" in result.stdout
        assert took < STOP_BUDGET_S, took
        assert process.wait(timeout=DEADLINE_S) == 1
    finally:
        process.kill()
    (run,) = runs_of(store_dir)
    assert run.status == "cancelled"
    assert run.steps[0].status == "cancelled"
    assert run.steps[0].error == "the run was stopped by flow stop"


def test_flow_stop_ends_a_loop_whose_iteration_it_stops(write_flow, flow_cli, store_dir, tmp_path):
    path = write_flow(BLOCKING)
    process = start(["run", str(path), "--loop"], store_dir, tmp_path)
    try:
        wait_running(store_dir, process)
        result, _ = stop(flow_cli, "last")
        assert result.code == 0, result
        out, err = process.communicate(timeout=DEADLINE_S)
    finally:
        process.kill()
    assert process.returncode == 1, (out, err)
    assert "ending the loop" in err
    assert [(r.trigger, r.status) for r in runs_of(store_dir)] == [("loop", "cancelled")]


def test_flow_stop_stops_a_served_run_and_the_server_carries_on(flows, serve, flow_cli, store_dir):  # noqa: F811
    path = flows(
        "gated.py",
        BLOCKING.replace(
            "from dsl import step", 'from dsl import Flow, step\nflow = Flow("gated", every="1h")'
        ),
    )
    served = serve(path.parent)
    run_id = wait_running(store_dir)
    result, took = stop(flow_cli, str(run_id))
    assert result.code == 0, result
    assert took < STOP_BUDGET_S, took
    assert served.process.poll() is None  # still serving
    assert served.terminate() == 0
    assert [(r.id, r.status) for r in runs_of(store_dir)] == [(run_id, "cancelled")]


def test_flow_stop_reaches_an_engine_hosted_in_process_like_the_tuis(
    harness, write_flow, flow_cli, store_dir
):
    from dsl.loader import load_flow

    loaded = load_flow(write_flow(BLOCKING))
    handle = harness.engine.start(RunRequest(loaded, resolve_params(loaded.graph.params, {})))
    wait_running(store_dir)
    result, took = stop(flow_cli, str(handle.id))
    assert result.code == 0, result
    assert handle.wait(DEADLINE_S) == "cancelled"
    assert took < STOP_BUDGET_S, took


def test_a_run_over_before_the_first_look_at_stop_requests_starts_no_thread_to_read_them(
    harness, write_flow, monkeypatch
):
    """The thread that reads `flow stop` requests starts when a run has lasted `POLL_S`, when it would
    first read them (through it the tests above stop longer runs). A run over sooner starts none:
    started with the run, it cost a short run 0.3-0.5 ms. When the moment comes with no run in flight,
    none starts, and the next run sets a new moment."""
    from runner.engine import stops

    monkeypatch.setattr(stops, "POLL_S", 3600.0)
    path = write_flow("from dsl import step\n\n@step\ndef one():\n    return 1\n")
    for _ in range(2):  # executed, then cached
        assert harness.run(path).status == "succeeded"
    watch = harness.engine._stops
    assert watch._thread is None
    due = watch.due
    assert due is not None
    watch.start_if_due(due)
    assert watch._thread is None and watch.due is None
    assert harness.run(path).status == "succeeded"
    assert watch._thread is None and watch.due is not None


def test_flow_stop_of_an_unknown_or_finished_run_exits_2(write_flow, flow_cli, store_dir):
    path = write_flow(BLOCKING.replace("deadline = time.monotonic() + 60", "deadline = 0"))
    assert flow_cli("run", str(path)).code == 0
    unknown = flow_cli("stop", "42")
    assert unknown.code == 2 and "no run #42" in unknown.stderr, unknown
    finished = flow_cli("stop", "last")
    assert finished.code == 2, finished
    assert "run #1 is not running (it ended succeeded)" in finished.stderr
    assert "Traceback" not in unknown.stderr + finished.stderr


def test_a_store_of_schema_7_gains_the_stop_requests_and_jobs_tables(store_dir):
    """Schema 9 adds `stop_requests` and `jobs`: an older store is migrated when opened."""
    from runner.store import SCHEMA_VERSION, Store

    Store(store_dir).close()
    set_schema(store_dir, 7, "DROP TABLE stop_requests", "DROP TABLE jobs")
    store = Store(store_dir)
    try:
        version = store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION
        run_id = store.create_run("f", "f.py", {}, "manual", "local")
        store.flush()
        store.request_stop(run_id, "a test")
        assert store.stop_requests([run_id]) == [run_id]
        assert store.jobs_of(run_id) == []
    finally:
        store.close()


class _Handle:
    id = 7
    done = False


def test_an_engine_closing_while_a_run_is_watched_joins_the_watch_once_it_started(monkeypatch):
    """`close` (the app quitting) from another thread while the watch's thread is made but not
    started yet (`start_if_due`, a run `POLL_S` in): `close` waits for it and joins it, instead of
    failing with "cannot join thread before it is started" (seen when the TUI quit as a run began)."""
    import threading

    from runner.engine import stops

    watch = stops.StopWatch(store=None, stop=lambda run_id: None)  # type: ignore[arg-type]
    real_start = threading.Thread.start
    errors: list[BaseException] = []
    closing = threading.Event()

    def close() -> None:
        closing.set()
        try:
            watch.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    closer = threading.Thread(target=close)

    def start_late(thread: threading.Thread) -> None:
        if thread.name == "flow-stop-requests":
            real_start(closer)
            closing.wait()
            time.sleep(0.05)  # `close` is now waiting (or, unfixed, has failed already)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_late)
    watch.watch(_Handle())
    assert watch.due is not None
    watch.start_if_due(watch.due)
    closer.join(DEADLINE_S)
    assert not closer.is_alive() and errors == []
    assert watch._thread is None
