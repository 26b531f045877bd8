"""A dead run from another host, another hostname, a pid namespace or a reused pid blocks nothing.

Each case was a hang before: `flow run` waited for ever on "run #1 is computing the same step",
and `flow delete 1` / `flow gc` refused for ever, because liveness was judged by pid on the same
hostname. Now a run's process is an owner with a kernel lock and a heartbeat (`runner.store.liveness`).
The cross-host rows are written as another machine's runner writes them; the container cases run a
real `flow run` under `unshare -u` (another hostname) and `unshare -pf` (recorded as pid 1), kill it
with SIGKILL mid-step, and run the same flow on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store
from runner.store.liveness import HEARTBEAT_EXPIRY_S, LATE_S
from tests.helpers_core import wait_for

REPO = Path(__file__).resolve().parent.parent

FLOW = """
import os
import time
from pathlib import Path

from dsl import step

@step
def work():
    marker = os.environ.get("STEP_MARKER")
    if marker:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)
    return 42

@step
def after(work):
    return work + 1
"""


def env_for(store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(FLOW_STORE=str(store), PYTHONPATH=str(REPO), **extra)
    return env


def flow(args: list[str], store: Path, cwd: Path, timeout: float = 60, **extra: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env=env_for(store, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "leased.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    return path


def fingerprint_of(store: Path, step: str) -> str:
    """Learn a step's fingerprint from a finished run, then forget its result (cache and history)."""
    conn = sqlite3.connect(store / "flow.db")
    with conn:
        (fingerprint,) = conn.execute(
            "SELECT fingerprint FROM steps WHERE name=? ORDER BY run_id DESC LIMIT 1", (step,)
        ).fetchone()
        for table in ("cache", "steps", "runs", "artifacts", "metrics", "logs"):
            conn.execute(f"DELETE FROM {table}")
    conn.close()
    return str(fingerprint)


def plant_foreign_run(store: Path, fingerprint: str, heartbeat_age: float) -> int:
    """The rows a runner on another machine writes while it computes `work`: its owner, its
    running run and step, and its lease on the step's fingerprint."""
    owner = uuid.uuid4().hex
    now = time.time()
    conn = sqlite3.connect(store / "flow.db")
    with conn:
        conn.execute(
            "INSERT INTO owners(id, pid, host, boot_id, pid_ns, started, heartbeat_at) VALUES (?, 1, "
            "'build-box-7', 'another-machines-boot-id', 'pid:[4026531836]', '123', ?)",
            (owner, now - heartbeat_age),
        )
        run_id = conn.execute(
            "INSERT INTO runs(flow, file, status, started_at, params, trigger, executor, pid, host, owner) "
            "VALUES ('leased', '/elsewhere/leased.py', 'running', ?, '{}', 'cli', 'local', 1, "
            "'build-box-7', ?)",
            (now - 600, owner),
        ).lastrowid
        conn.execute(
            "INSERT INTO steps(run_id, name, status, fingerprint) VALUES (?, 'work', 'running', ?)",
            (run_id, fingerprint),
        )
        conn.execute(
            "INSERT INTO leases(fingerprint, pid, host, acquired_at, expires, owner) "
            "VALUES (?, 1, 'build-box-7', ?, ?, ?)",
            (fingerprint, now - 600, now + 3600, owner),
        )
    conn.close()
    assert run_id is not None
    return int(run_id)


def run_status(store: Path, run_id: int) -> str | None:
    conn = sqlite3.connect(store / "flow.db")
    try:
        row = conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def test_a_dead_run_from_another_machine_blocks_nothing(project: Path, tmp_path: Path) -> None:
    """Its heartbeat stopped long ago: the step runs here, the run reads interrupted, delete and gc work."""
    store = tmp_path / "store"
    assert flow(["run", str(project)], store, tmp_path).returncode == 0
    foreign = plant_foreign_run(store, fingerprint_of(store, "work"), heartbeat_age=HEARTBEAT_EXPIRY_S + 60)
    done = flow(["run", str(project), "--json"], store, tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "waiting" not in done.stdout
    assert run_status(store, foreign) == "interrupted"
    assert flow(["gc"], store, tmp_path).returncode == 0
    deleted = flow(["delete", str(foreign)], store, tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert run_status(store, foreign) is None


def test_a_run_whose_heartbeat_is_late_is_shown_stuck_and_can_be_cleared(
    project: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert flow(["run", str(project)], store, tmp_path).returncode == 0
    foreign = plant_foreign_run(store, fingerprint_of(store, "work"), heartbeat_age=LATE_S + 5)

    runs = flow(["runs"], store, tmp_path)
    assert f"note: run #{foreign} of leased may be stuck: pid 1 on host build-box-7" in runs.stdout, (
        runs.stdout
    )
    assert "flow doctor --clear-stuck" in runs.stdout
    assert "the lease on step 'work' may be stuck" in runs.stdout
    refused = flow(["delete", str(foreign)], store, tmp_path)
    assert refused.returncode == 2 and "still running" in refused.stderr
    assert "flow doctor --clear-stuck" in refused.stderr
    gc = flow(["gc"], store, tmp_path)
    assert gc.returncode == 2 and "--clear-stuck" in gc.stderr, gc.stderr
    doctor = flow(["doctor", "--json"], store, tmp_path)
    report = __import__("json").loads(doctor.stdout)
    assert len(report["stuck"]) == 2, report

    cleared = flow(["doctor", "--clear-stuck"], store, tmp_path)
    assert f"cleared 1 stuck run(s) #{foreign} and 1 stuck lease(s)" in cleared.stdout, cleared.stdout
    assert run_status(store, foreign) == "interrupted"
    done = flow(["run", str(project), "--json"], store, tmp_path, timeout=30)
    assert done.returncode == 0 and "waiting" not in done.stdout
    assert flow(["delete", str(foreign)], store, tmp_path).returncode == 0
    assert flow(["gc"], store, tmp_path).returncode == 0


def test_a_waiting_step_takes_over_once_the_holders_heartbeat_expires(project: Path, tmp_path: Path) -> None:
    """A live holder on another machine is waited for (said once, not at every poll); when its
    heartbeat stops, the step is computed here."""
    store = tmp_path / "store"
    assert flow(["run", str(project)], store, tmp_path).returncode == 0
    foreign = plant_foreign_run(store, fingerprint_of(store, "work"), heartbeat_age=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(project), "--json"],
        env=env_for(store),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "waiting: run #" in line:
                break
        time.sleep(1.0)  # polls happen every 0.1 s: a second of waiting must not print ten lines
        conn = sqlite3.connect(store / "flow.db")
        with conn:
            conn.execute("UPDATE owners SET heartbeat_at = heartbeat_at - ?", (HEARTBEAT_EXPIRY_S + 1,))
        conn.close()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    text = "".join(lines) + out
    assert text.count("waiting: run #") == 1, text
    assert run_status(store, foreign) == "interrupted"


def _unshare_works(*flags: str) -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    done = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True)
    return (
        None
        if done.returncode == 0
        else f"unshare {' '.join(flags)} is not permitted here: {done.stderr.strip()}"
    )


CONTAINERS = {
    "another hostname (unshare -u)": ["unshare", "-u", "sh", "-c", 'hostname a-container && exec "$@"', "sh"],
    "a pid namespace, recorded as pid 1 (unshare -pf)": ["unshare", "-pf", "--mount-proc", "--kill-child"],
}


@pytest.mark.parametrize("case", sorted(CONTAINERS))
def test_a_runner_killed_in_a_container_blocks_nothing_on_the_host(
    project: Path, tmp_path: Path, case: str
) -> None:
    prefix = CONTAINERS[case]
    why_not = _unshare_works(*prefix[1:2]) if "-u" in prefix else _unshare_works("-pf", "--mount-proc")
    if why_not:
        pytest.skip(why_not)
    store = tmp_path / "store"
    marker = tmp_path / "step-started"
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "runner", "run", str(project)],
        env=env_for(store, STEP_MARKER=str(marker)),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(marker.exists, timeout=30)
        recorded = Store(store, create=False)
        try:
            (pid, host) = recorded._conn.execute("SELECT pid, host FROM runs").fetchone()
        finally:
            recorded.close()
        if "-pf" in prefix:
            assert pid == 1
        else:
            assert host == "a-container"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    started = time.monotonic()
    done = flow(["run", str(project), "--json"], store, tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "waiting" not in done.stdout
    assert time.monotonic() - started < 15
    assert run_status(store, 1) == "interrupted"
    assert flow(["delete", "1"], store, tmp_path).returncode == 0
    assert flow(["gc"], store, tmp_path).returncode == 0
