"""Loops (`flow run --loop`, `Flow(loop=...)`): real `flow` processes, real time, the real store.

Each iteration is a run with trigger `loop` and the cache applies; Ctrl-C stops the iteration in
flight cleanly (recorded as cancelled) and ends the loop, as it stops a run in every other mode.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.store import Store
from tests.conftest import SAMPLE_FLOWS

FLOW = """
from dsl import Flow, step

flow = Flow("looping"{options})

@step
def fetch(n: int = 3):
    return list(range(n))

@step
def total(fetch):
    return sum(fetch)
"""


def runs_of(store_dir: Path) -> list:
    store = Store(store_dir, create=False)
    try:
        return sorted(store.list_runs(limit=1000), key=lambda r: r.id)
    finally:
        store.close()


def test_a_loop_of_three_iterations_records_three_runs_and_reuses_the_cache(write_flow, flow_cli, store_dir):
    path = write_flow(FLOW.format(options=""))
    result = flow_cli("run", str(path), "--loop", "--max-iterations", "3")
    assert result.code == 0, result
    runs = runs_of(store_dir)
    assert [r.trigger for r in runs] == ["loop", "loop", "loop"]
    assert all(r.status == "succeeded" for r in runs)
    assert {s.status for s in runs[0].steps} == {"succeeded"}
    assert {s.status for r in runs[1:] for s in r.steps} == {"cached"}
    assert "loop: 3 iterations" in result.stderr


def test_every_spaces_iterations_by_the_interval_start_to_start(write_flow, flow_cli, store_dir):
    path = write_flow(FLOW.format(options=""))
    result = flow_cli("run", str(path), "--every", "1s", "--max-iterations", "3")
    assert result.code == 0, result
    starts = [r.started_at for r in runs_of(store_dir)]
    assert len(starts) == 3
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0.95 <= gap < 4.0 for gap in gaps), gaps  # an iteration never starts early


def test_a_flow_can_declare_its_own_loop(write_flow, flow_cli, store_dir):
    path = write_flow(FLOW.format(options=', loop="200ms", max_iterations=2'))
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert [r.trigger for r in runs_of(store_dir)] == ["loop", "loop"]
    again = flow_cli("run", str(path), "--max-iterations", "1")  # the command line wins
    assert again.code == 0 and len(runs_of(store_dir)) == 3


def test_a_failing_iteration_does_not_end_the_loop_but_fails_the_exit_code(write_flow, flow_cli, store_dir):
    path = write_flow(
        """
        from dsl import step

        @step(cache=False)
        def flaky():
            raise RuntimeError("no data yet")
        """
    )
    result = flow_cli("run", str(path), "--loop", "--max-iterations", "2")
    assert result.code == 1, result
    assert [r.status for r in runs_of(store_dir)] == ["failed", "failed"]
    assert "2 not succeeded" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "5 parsecs"], "--every: '5 parsecs' is not a duration"),
        (["--loop", "--max-iterations", "0"], "--max-iterations must be 1 or more"),
        (["--loop", "--watch"], "--watch follows edits of a file"),
    ],
)
def test_bad_loop_options_exit_2_before_anything_runs(write_flow, flow_cli, store_dir, args, message):
    path = write_flow(FLOW.format(options=""))
    result = flow_cli("run", str(path), *args)
    assert result.code == 2, result
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not store_dir.exists() or runs_of(store_dir) == []


BLOCKING = """
import time
from pathlib import Path
from dsl import step

@step(cache=False)
def wait_for_data():
    gate = Path(__file__).with_name("go")
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return gate.exists()
"""


def start_flow_run(path: Path, store_dir: Path, cwd: Path, *options: str) -> subprocess.Popen[str]:
    """`flow run PATH OPTIONS` on `store_dir`, as another shell would start it (output piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), *options],
        env={**os.environ, "FLOW_STORE": str(store_dir)},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_step_runs(store_dir: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if store_dir.exists():
            runs = runs_of(store_dir)
            if runs and any(s.status == "running" for s in runs[-1].steps):
                return
        time.sleep(0.05)
    raise AssertionError("the first iteration never started its step")


def _read_until(process: subprocess.Popen[str], text: str) -> None:
    """Read the loop's stderr until `text` (the signal was handled); fail if it ends first."""
    assert process.stderr is not None
    for line in process.stderr:
        if text in line:
            return
    raise AssertionError(f"the process ended without saying {text!r}")


def test_ctrl_c_stops_the_iteration_in_flight_and_ends_the_loop(write_flow, store_dir, tmp_path):
    path = write_flow(BLOCKING)
    process = start_flow_run(path, store_dir, tmp_path, "--loop")
    try:
        _wait_until_step_runs(store_dir, process)
        process.send_signal(signal.SIGINT)
        _read_until(process, "stopping the loop")
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, (out, err)
    runs = runs_of(store_dir)
    assert [(r.trigger, r.status) for r in runs] == [("loop", "cancelled")]
    assert runs[0].steps[0].status == "cancelled"


def test_ctrl_c_between_iterations_ends_the_loop_at_once(write_flow, store_dir, tmp_path):
    path = write_flow(FLOW.format(options=""))
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--every", "1h"],
        env={**os.environ, "FLOW_STORE": str(store_dir)},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _read_until(process, "next iteration in")  # the first iteration is over; the loop waits
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)  # not an hour: the wait ends at once
    finally:
        process.kill()
    assert process.returncode == 0, (out, err)
    assert [(r.trigger, r.status) for r in runs_of(store_dir)] == [("loop", "succeeded")]
    assert "loop: 1 iteration" in err


def test_the_inbox_sample_loops_and_reuses_files_it_already_parsed(flow_cli, store_dir, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("1\n2\n3\n")
    sample = str(SAMPLE_FLOWS / "inbox_loop.py")
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", sample, "--every", "1s", "--max-iterations", "3"]
        + ["-p", f"inbox={inbox}"],
        env={**os.environ, "FLOW_STORE": str(store_dir)},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (store_dir.exists() and any(r.status == "succeeded" for r in runs_of(store_dir))):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        (inbox / "b.csv").write_text("4\nbad\n")  # data arriving between iterations
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    runs = runs_of(store_dir)
    readings = [r.metrics["readings"] for r in runs]
    assert readings[0] == 3 and readings[-1] == 4
    arrived = next(r for r in runs if r.metrics["readings"] == 4)
    parsed = {s.name: s.status for s in arrived.steps}
    assert parsed["parse_file[0]"] == "cached" and parsed["parse_file[1]"] == "succeeded"
