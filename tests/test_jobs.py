"""External job steps (`dsl.jobs`) with real processes: a local "trainer" (sample_flows/_trainer.py) that
a job starts, the runner polls through its workers and kills on stop, timeout or a failing `status`;
and a runner SIGKILLed mid-job whose `flow resume` re-attaches to the same trainer (started once).

Waits are on the store, the ledger the trainer writes when it starts, or the processes themselves."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dsl.jobs import process_alive
from runner.store import Store
from tests.conftest import SAMPLE_FLOWS
from tests.test_stop import start as start_flow

DEADLINE_S = 30.0
STATUS = """\
alive = process_alive(handle["pid"])  # first: a trainer that ends now has written its status by then
done = Path(handle["workdir"], "status")
if done.exists():
    return done.read_text().strip()
return "running" if alive else "failed"
"""
FLOW = """\
import json, os, signal, sys, tempfile, time
from pathlib import Path

from dsl import Job, job, step
from dsl.jobs import process_alive, spawn

TRAINER = Path(__file__).with_name("_trainer.py")
LEDGER = str(Path(__file__).with_name("ledger"))


@job(timeout={timeout}, poll=0.1, max_poll=0.3, call_timeout={call_timeout})
class Train(Job):
    def start(self, epochs: int = 3, epoch_s: float = 0.1, fail_at: int = 0):
        workdir = tempfile.mkdtemp(prefix="flow-test-trainer-")
        Path(workdir, "data.json").write_text("[1, 2, 3]")
        argv = [sys.executable, str(TRAINER), workdir, str(epochs), str(epoch_s), str(fail_at), LEDGER]
        return {{"pid": spawn(argv), "workdir": workdir}}

    def status(self, handle):
{status}
    def kill(self, handle):
{kill}        os.killpg(handle["pid"], signal.SIGTERM)

    def result(self, handle):
        return json.loads(Path(handle["workdir"], "model.json").read_text())


@step
def report(train):
    return train["loss"]
"""


@pytest.fixture
def job_flow(tmp_path: Path) -> Callable[..., Path]:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    shutil.copy(SAMPLE_FLOWS / "_trainer.py", project / "_trainer.py")

    def write(*, timeout: float = 60, call_timeout: float = 10, status: str = STATUS, kill: str = "") -> Path:
        path = project / "job_flow.py"
        path.write_text(
            FLOW.format(
                timeout=timeout,
                call_timeout=call_timeout,
                status=textwrap.indent(status, " " * 8),
                kill=textwrap.indent(kill, " " * 8),
            )
        )
        return path

    return write


def ledger(path: Path) -> list[int]:
    """The pid of each trainer started (the trainer appends its own when it starts)."""
    file = path.with_name("ledger")
    return [int(line) for line in file.read_text().split()] if file.exists() else []


def jobs_of(store_dir: Path, run_id: int) -> list:
    if not (store_dir / "flow.db").exists():
        return []
    store = Store(store_dir, create=False)
    try:
        return store.jobs_of(run_id)
    finally:
        store.close()


def trainer_pid(store_dir: Path, run_id: int = 1) -> int:
    """The trainer's pid from the job's stored handle (the ledger may not have it yet: a trainer
    killed at once never gets to write it)."""
    (job,) = jobs_of(store_dir, run_id)
    return int(pickle.loads(job.handle)["pid"])


def wait_for(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def steps(flow_cli) -> dict[str, dict]:
    return {s["name"]: s for s in flow_cli("show", "last", "--json").json()["steps"]}


def test_the_sample_job_starts_a_trainer_polls_it_and_takes_its_result(flow_cli, store_dir):
    result = flow_cli("run", str(SAMPLE_FLOWS / "external_job.py"), "--json")
    assert result.code == 0, result
    updates = [e for e in result.events() if e["event"] == "job_updated"]
    assert [u["status"] for u in updates][0] == "running" and updates[-1]["status"] == "succeeded"
    assert "'pid':" in updates[0]["handle"]
    (job,) = jobs_of(store_dir, 1)
    assert (job.step, job.status) == ("train", "succeeded") and job.polls >= 1
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"accuracy": "0.875"}
    assert (
        "job succeeded after" in flow_cli("run", str(SAMPLE_FLOWS / "external_job.py"), "-p", "rows=3").stdout
    )


def test_two_jobs_run_at_once_on_one_worker_because_polls_hold_none(job_flow, flow_cli, store_dir):
    path = job_flow()
    text = path.read_text()
    second = text[text.index("@job") : text.index("@step")].replace("class Train", "class TrainAgain")
    path.write_text(text + "\n\n" + second)
    result = flow_cli("run", str(path), "--workers", "1", "-p", "epochs=8", "-p", "epoch_s=0.15")
    assert result.code == 0, (result.stdout, steps(flow_cli))
    timing = steps(flow_cli)
    first, again = timing["train"], timing["train_again"]
    assert first["status"] == again["status"] == "succeeded"
    store = Store(store_dir, create=False)
    try:
        rows = {s.name: s for s in store.get_run(1).steps}
    finally:
        store.close()
    a, b = rows["train"], rows["train_again"]
    assert a.started_at < b.finished_at and b.started_at < a.finished_at, "the jobs never overlapped"
    assert len(ledger(path)) == 2


def test_a_job_whose_status_says_failed_fails_the_step(job_flow, flow_cli, store_dir):
    path = job_flow()
    result = flow_cli("run", str(path), "-p", "fail_at=1")
    assert result.code == 1, result
    train = steps(flow_cli)["train"]
    assert train["status"] == "failed"
    assert train["error"].startswith("the job failed (its status() said 'failed'; handle {'pid': ")
    assert [j.status for j in jobs_of(store_dir, 1)] == ["failed"]


def test_flow_stop_kills_the_trainer_and_cancels_the_run(job_flow, flow_cli, store_dir, tmp_path):
    path = job_flow()
    process = start_flow(["run", str(path), "-p", "epochs=300"], store_dir, tmp_path)
    try:
        wait_for(lambda: ledger(path) and jobs_of(store_dir, 1), "the trainer to start")
        (pid,) = ledger(path)
        assert process_alive(pid)
        stopped = flow_cli("stop", "1")
        assert stopped.code == 0, stopped
        assert process.wait(timeout=DEADLINE_S) == 1
    finally:
        process.kill()
    assert not process_alive(pid)  # killed before the runner exited: no orphan
    (job,) = jobs_of(store_dir, 1)
    assert (job.status, job.detail) == ("killed", "the run was stopped")
    assert steps(flow_cli)["train"]["status"] == "cancelled"


def test_a_job_past_its_timeout_is_killed_and_fails_the_step(job_flow, flow_cli, store_dir):
    path = job_flow(timeout=1)
    result = flow_cli("run", str(path), "-p", "epochs=300")
    assert result.code == 1, result
    assert steps(flow_cli)["train"]["error"] == "timed out after 1s; the job was killed"
    pid = trainer_pid(store_dir)
    wait_for(lambda: not process_alive(pid), "the trainer to die")
    assert [j.status for j in jobs_of(store_dir, 1)] == ["killed"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (
            'raise ConnectionError("the cluster is down")\n',
            "status() failed: ConnectionError: the cluster is down",
        ),
        ('return "pending"\n', "status() failed: ValueError: status() returned 'pending'; return one of"),
        ("time.sleep(3600)\n", "status() failed: timed out after 1s"),
    ],
)
def test_a_status_that_raises_lies_or_hangs_kills_the_job_and_fails_the_step(
    job_flow, flow_cli, store_dir, status, error
):
    path = job_flow(call_timeout=1, status=status)
    result = flow_cli("run", str(path), "-p", "epochs=300")
    assert result.code == 1, result
    train = steps(flow_cli)["train"]
    assert train["error"].startswith(error), train["error"]
    pid = trainer_pid(store_dir)
    wait_for(lambda: not process_alive(pid), "the trainer to die")
    assert [j.status for j in jobs_of(store_dir, 1)] == ["killed"]


def test_a_kills_call_timeout_counts_the_call_not_the_start_of_its_process(
    job_flow, flow_cli, store_dir, tmp_path
):
    """A kill runs in a fresh process (`runner.executors.oneshot`), which starts an interpreter and
    imports what the job's code names: here a library that takes 2 s to import, against a
    `call_timeout` of 1 s. The kill itself is instant and must be recorded as done (on a busy machine
    the start alone once took more than 1 s, and the kill of a dead trainer was "kill failed")."""
    libs = tmp_path / "libs"
    (libs / "flowtest_slowlib-1.0.dist-info").mkdir(parents=True)
    (libs / "flowtest_slowlib-1.0.dist-info" / "RECORD").write_text("flowtest_slowlib.py,,\n")
    (libs / "flowtest_slowlib.py").write_text("import time\n\ntime.sleep(2)\nREADY = True\n")
    path = job_flow(
        call_timeout=1, status='raise ConnectionError("down")\n', kill="assert flowtest_slowlib.READY\n"
    )
    path.write_text("import flowtest_slowlib\n" + path.read_text())
    env = {"PYTHONPATH": os.pathsep.join([str(libs), os.environ.get("PYTHONPATH", "")])}
    result = flow_cli("run", str(path), "-p", "epochs=300", env=env)
    assert result.code == 1, result
    assert steps(flow_cli)["train"]["error"].startswith("status() failed: ConnectionError: down")
    pid = trainer_pid(store_dir)
    wait_for(lambda: not process_alive(pid), "the trainer to die")
    (job,) = jobs_of(store_dir, 1)
    assert job.status == "killed", job.detail


def test_a_kill_that_hangs_is_stopped_after_its_call_timeout(job_flow, flow_cli, store_dir):
    path = job_flow(call_timeout=1, status='raise ConnectionError("down")\n', kill="time.sleep(3600)\n")
    result = flow_cli("run", str(path), "-p", "epochs=20")
    assert result.code == 1, result
    (job,) = jobs_of(store_dir, 1)
    assert job.status == "kill failed" and "did not return within 1s" in job.detail, job.detail


def test_a_kill_that_raises_is_reported_with_the_handle(job_flow, flow_cli, store_dir):
    path = job_flow(status='raise ConnectionError("down")\n', kill='raise PermissionError("not yours")\n')
    result = flow_cli("run", str(path), "-p", "epochs=20")
    assert result.code == 1, result
    error = steps(flow_cli)["train"]["error"]
    assert "status() failed: ConnectionError: down; kill() failed too (PermissionError: not yours)" in error
    assert "the job may still be running, handle {'pid': " in error
    (job,) = jobs_of(store_dir, 1)
    assert job.status == "kill failed" and "PermissionError: not yours" in job.detail
    try:
        os.killpg(trainer_pid(store_dir), signal.SIGKILL)
    except ProcessLookupError:
        pass  # the test's own clean-up: the flow could not kill it


def test_after_the_runner_is_sigkilled_flow_resume_reattaches_to_the_same_trainer(
    job_flow, flow_cli, store_dir, tmp_path
):
    path = job_flow()
    process = start_flow(["run", str(path), "-p", "epochs=25"], store_dir, tmp_path)
    try:
        wait_for(lambda: ledger(path) and jobs_of(store_dir, 1), "the trainer to start, its handle stored")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE_S)
    finally:
        process.kill()
    (pid,) = ledger(path)
    assert process_alive(pid)  # the trainer outlives the runner and its workers
    resumed = flow_cli("resume", "1")
    assert resumed.code == 0, resumed
    assert "re-attached to the job run #1 started" in resumed.stdout
    assert ledger(path) == [pid]  # started once
    show = flow_cli("show", "last", "--json").json()
    assert show["status"] == "succeeded"
    assert {s["name"]: s["status"] for s in show["steps"]} == {"train": "succeeded", "report": "succeeded"}
    assert [(j.status, j.detail) for j in jobs_of(store_dir, 1)] == [
        ("adopted", f"re-attached by run #{show['id']}")
    ]
    assert [j.status for j in jobs_of(store_dir, show["id"])] == ["succeeded"]


def test_a_job_class_missing_a_method_is_an_invalid_flow(job_flow, flow_cli):
    path = job_flow()
    path.write_text(path.read_text().replace("    def kill(self, handle):", "    def stop(self, handle):"))
    result = flow_cli("run", str(path))
    assert result.code == 2, result
    assert "job_flow.py:13: step 'train': the job class must define kill(self, ...)" in result.stderr


def test_the_trainer_script_is_no_flow_and_runs_alone(tmp_path):
    (tmp_path / "data.json").write_text("[1]")
    done = subprocess.run(
        [sys.executable, str(SAMPLE_FLOWS / "_trainer.py"), str(tmp_path), "1", "0", "0"], check=True
    )
    assert done.returncode == 0 and (tmp_path / "status").read_text() == "succeeded"
