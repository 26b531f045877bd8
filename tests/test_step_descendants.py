"""Every process a step starts dies with the step, even one in a session of its own (issue 15, item 6).

A step starts a child with `subprocess.Popen(..., start_new_session=True)`, a shell in its own session
that keeps a grandchild, and a grandchild whose own parent exits at once (re-parented to the worker,
the child subreaper). Then the step times out, the run is stopped with SIGINT to `flow run`, the
runner is killed outright, or the step simply returns: afterwards no process of the step is alive.
Each is checked by pid, waiting with a deadline for the pid to go (a zombie counts as gone).

The one process meant to outlive a killed step is its own cleanup guard, marked with
`FLOW_OUTLIVES_STEP=1` (a container step's guard removes its container once the worker is gone): the
step here starts one too, and it must get to clean up every time the step is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.executors.proctree import OUTLIVES_STEP, outlives_step
from tests.conftest import CLIResult
from tests.helpers_core import pid_alive, wait_for
from tests.test_faults import assert_no_orphans, flow_env, marked_processes, start_flow

SPAWNER = """
import os
import subprocess
import sys
import time
from dsl import step

PIDS = {pids!r}
GUARD = (
    "import sys\\n"
    "if not sys.stdin.buffer.read():\\n"
    "    open(sys.argv[1], 'w').write('cleaned up')\\n"
)


@step(timeout={timeout})
def spawner():
    own_session = subprocess.Popen(["sleep", "300"], start_new_session=True)
    # a shell in its own session that stays, with a grandchild below it
    keeper = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo $!; wait"], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    kept_grandchild = int(keeper.stdout.readline())
    # a grandchild in its own session whose parent exits at once: re-parented to the worker
    helper = subprocess.Popen(
        ["setsid", "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE, text=True
    )
    orphan = int(helper.stdout.readline())
    helper.wait()
    # the step's cleanup guard: end of file on its stdin (the worker is gone) makes it clean up
    read_end, write_end = os.pipe()
    guard = subprocess.Popen(
        [sys.executable, "-c", GUARD, PIDS + ".cleaned"],
        stdin=read_end,
        start_new_session=True,
        env={{**os.environ, "FLOW_OUTLIVES_STEP": "1"}},
    )
    os.close(read_end)
    pids = [own_session.pid, keeper.pid, kept_grandchild, orphan, guard.pid]
    with open(PIDS + ".tmp", "w") as handle:
        handle.write(" ".join(map(str, pids)))
    os.rename(PIDS + ".tmp", PIDS)
    if {linger}:
        time.sleep(300)
    return "spawned"  # the guard still waits: a normal end kills it like the rest
"""


def _flow(tmp_path: Path, *, timeout: float | None, linger: bool) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    project = tmp_path / "project"
    project.mkdir()
    path = project / "spawning.py"
    path.write_text(textwrap.dedent(SPAWNER.format(pids=str(pids), timeout=timeout, linger=linger)))
    return path, pids


def _spawned(pids: Path) -> list[int]:
    """The step's processes: the last one is its cleanup guard."""
    found = [int(pid) for pid in wait_for(lambda: pids.exists() and pids.read_text().split(), timeout=60)]
    assert len(found) == 5
    return found


def _killed_and_cleaned_up(pids: Path) -> None:
    """Every process of the killed step is gone, and its guard cleaned up (then went too)."""
    spawned = _spawned(pids)
    cleaned = Path(str(pids) + ".cleaned")
    # The guard creates the file, then writes it: wait for the words, not for the file.
    wait_for(lambda: cleaned.exists() and cleaned.read_text() == "cleaned up", timeout=10)
    _all_gone(spawned)


def _all_gone(pids: list[int]) -> None:
    """Wait (deadline 10 s) until no pid is alive; fail naming the survivors."""
    try:
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)
    except AssertionError:
        survivors = [pid for pid in pids if pid_alive(pid)]
        for pid in survivors:  # do not leave them behind after the failure
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes of the step survived: {survivors}") from None


def _start_flow(path: Path, store_dir: Path, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path)],
        env={**os.environ, "FLOW_STORE": str(store_dir)},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_a_timeout_kills_children_in_their_own_session(flow_cli, tmp_path: Path, executor: str) -> None:
    if executor == "dask":
        pytest.importorskip("distributed")
    path, pids = _flow(tmp_path, timeout=5, linger=True)
    result: CLIResult = flow_cli("run", str(path), "--executor", executor, "--workers", "1")
    assert result.code == 1 and "timed out after 5s" in result.stdout, result
    _killed_and_cleaned_up(pids)


def test_ctrl_c_on_flow_run_kills_children_in_their_own_session(store_dir: Path, tmp_path: Path) -> None:
    path, pids = _flow(tmp_path, timeout=None, linger=True)
    proc = _start_flow(path, store_dir, tmp_path)
    try:
        _spawned(pids)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, (out, err)
    _killed_and_cleaned_up(pids)


def test_killing_the_runner_kills_children_in_their_own_session(store_dir: Path, tmp_path: Path) -> None:
    """The runner dies without a word (SIGKILL): the worker's watchdog takes the step's tree down."""
    path, pids = _flow(tmp_path, timeout=None, linger=True)
    proc = _start_flow(path, store_dir, tmp_path)
    try:
        _spawned(pids)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    _killed_and_cleaned_up(pids)


def test_a_runner_killed_while_it_kills_a_step_leaves_nothing_stopped(
    store_dir: Path, tmp_path: Path
) -> None:
    """The runner dies (SIGKILL) after stopping a timed-out step's worker and its tree, before killing
    them: the worker, stopped, is continued by the kernel and its watchdog takes the tree down. Before,
    it stayed stopped for ever, an orphan of pid 1 (seen in `test_faults`' campaign)."""
    path, pids = _flow(tmp_path, timeout=5, linger=True)
    marker = f"tree-stopped-{os.getpid()}"
    env = flow_env(store_dir, marker, FLOW_FAULT_KILL="tree-stopped")
    proc = start_flow(["run", str(path)], env, tmp_path)
    try:
        _spawned(pids)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    try:
        assert proc.returncode == -signal.SIGKILL, (out, err)
        _killed_and_cleaned_up(pids)
        assert_no_orphans(marker, within=10)  # the worker itself
    finally:
        for survivor in marked_processes(marker):  # do not leave a stopped worker behind a failure
            survivor.kill()


def test_a_step_that_returns_leaves_no_process_behind(flow_cli, tmp_path: Path) -> None:
    path, pids = _flow(tmp_path, timeout=None, linger=False)
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    _all_gone(_spawned(pids))


def test_a_marked_process_is_seen_marked_the_moment_popen_returns() -> None:
    """`Popen` returns when the child's close-on-exec descriptors close, before the kernel publishes its
    new environment: read then, /proc/PID/environ is empty (1 read in 10 here). A job's trainer,
    spawned marked, was killed as a leftover in that window ("its status() said 'failed'")."""
    env = {**os.environ, OUTLIVES_STEP: "1"}
    unmarked = 0
    for _ in range(300):
        child = subprocess.Popen(["sleep", "5"], env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        try:
            unmarked += not outlives_step(child.pid)
        finally:
            child.kill()
            child.wait()
    assert unmarked == 0
