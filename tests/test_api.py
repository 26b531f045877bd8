"""The read-only Python API (`runner.api`) and `flow show RUN STEP --output`: real runs, the real store
on disk, and a reader beside a run in progress in another process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsl.errors import FlowError
from runner.api import Run, latest, run, runs
from tests.conftest import CLIResult
from tests.helpers_core import readable_within, step_status_in_db, wait_for

FLOW = """
from dsl import log_metric, step
from helpers import Model

@step
def fetch(rows: int = 3):
    print("fetching", rows)
    return list(range(rows))

@step
def train(fetch, lr: float = 0.1):
    log_metric("loss", 1.0 - lr)
    return Model(sum(fetch) * lr)

@step
def text(fetch):
    return "rows: " + ",".join(map(str, fetch))

@step
def broken(fetch):
    raise ValueError("no")

class Handle:
    # Unpickles by importing a module this environment lacks (as an object of an uninstalled library).

    def __reduce__(self):
        import importlib

        return (importlib.import_module, ("module_only_where_it_ran",))

@step
def handle():
    return Handle()
"""

HELPERS = """
class Model:
    def __init__(self, weight):
        self.weight = weight
"""


@pytest.fixture
def project(write_flow: Callable[..., Path]) -> Path:
    path = write_flow(FLOW)
    (path.parent / "helpers.py").write_text(HELPERS)
    return path


def test_runs_latest_params_metrics_reasons_outputs_and_logs(
    project: Path, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    assert flow_cli("run", str(project)).code == 1
    assert flow_cli("run", str(project), "-p", "lr=0.5").code == 1
    found = runs("flow_file", store=store_dir)
    assert [r.id for r in found] == [2, 1]
    assert [r.id for r in runs(project, store=store_dir)] == [2, 1]
    newest = latest("flow_file", store=store_dir)
    assert newest.id == 2 and newest.status == "failed"
    assert newest.params == {"rows": 3, "lr": 0.5}
    assert newest.metrics == {"loss": 0.5}
    assert newest["train"].reason == "parameter changed: lr"
    assert newest["fetch"].status == "cached"
    assert newest["train"].output.weight == 1.5
    assert newest["fetch"].output == [0, 1, 2]
    assert newest["text"].output == "rows: 0,1,2"
    assert newest["fetch"].logs() == ["fetching 3"]  # a cached step: the lines of the run that computed it
    assert run(1, store=store_dir)["train"].output.weight == pytest.approx(0.3)
    with pytest.raises(FlowError, match=r"step 'broken' in run #2 has no output \(it is failed\)"):
        _ = newest["broken"].output
    assert "ValueError: no" in (newest["broken"].traceback or "")
    with pytest.raises(FlowError, match=r"run #2 has no step 'nope'"):
        newest["nope"]
    with pytest.raises(FlowError, match=r"no run #9 in the store"):
        run(9, store=store_dir)


def test_an_output_that_cannot_be_unpickled_here_is_one_clear_error(
    project: Path, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    assert flow_cli("run", str(project)).code == 1
    with pytest.raises(
        FlowError, match=r"the output of step 'handle' in run #1 cannot be unpickled here: Mod"
    ):
        _ = latest(store=store_dir)["handle"].output
    shown = flow_cli("show", "1", "handle", "--output")
    assert shown.code == 2 and "cannot be unpickled here" in shown.stderr and "Traceback" not in shown.stderr


def test_show_output_prints_or_writes_one_output(
    project: Path, flow_cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    assert flow_cli("run", str(project)).code == 1
    assert flow_cli("show", "last", "text", "--output").stdout == "rows: 0,1,2\n"
    assert flow_cli("show", "1", "fetch", "--output").stdout == "[0, 1, 2]\n"
    target = tmp_path / "fetch.pickle"
    written = flow_cli("show", "1", "fetch", "--output", "--to", str(target))
    assert written.code == 0, written
    assert pickle.loads(target.read_bytes()) == [0, 1, 2]
    assert flow_cli("show", "1", "text", "--output", "--to", str(tmp_path / "t.txt")).code == 0
    assert (tmp_path / "t.txt").read_text() == "rows: 0,1,2"
    for args, message in [
        (("1", "nope", "--output"), "run #1 has no step 'nope'"),
        (("7", "fetch", "--output"), "no run #7"),
        (("1", "broken", "--output"), "has no output (it is failed)"),
        (("1", "--output"), "give both a STEP and --output"),
    ]:
        bad = flow_cli("show", *args)
        assert bad.code == 2 and message in bad.stderr, bad
        assert "Traceback" not in bad.stderr


def test_an_output_collected_by_gc_is_one_clear_error(
    project: Path, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    assert flow_cli("run", str(project)).code == 1
    project.write_text(FLOW.replace("range(rows)", "range(rows + 1)"))
    assert flow_cli("run", str(project)).code == 1
    assert flow_cli("gc", "--keep-last", "1").code == 0
    with pytest.raises(FlowError, match=r"no longer in the store"):
        _ = run(1, store=store_dir)["fetch"].output
    bad = flow_cli("show", "1", "fetch", "--output")
    assert bad.code == 2 and "no longer in the store" in bad.stderr


SLOW = """
import os
from dsl import step

@step
def first():
    return {"ready": True}

@step
def second(first):
    fd = os.open(os.environ["STARTED_FIFO"], os.O_WRONLY)
    os.write(fd, b"x")
    os.close(fd)
    fd = os.open(os.environ["GO_FIFO"], os.O_RDONLY)
    os.read(fd, 2)
    return "done"
"""


def _second_recorded_running(store_dir: Path) -> Run:
    """The run once the store shows `second` running. The store commits rows in the order events
    happen, from a writer thread that batches them, and tells no one: this is the one wait here with
    no event to wait on, so it polls, bounded (a few milliseconds in practice)."""
    wait_for(lambda: step_status_in_db(store_dir, "second") == ["running"])
    return latest(store=store_dir)


@pytest.fixture
def fifos(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    started, go = tmp_path / "started", tmp_path / "go"
    os.mkfifo(started)
    os.mkfifo(go)
    yield started, go


def test_outputs_are_read_while_another_process_runs_the_flow(
    write_flow: Callable[..., Path], store_dir: Path, tmp_path: Path, fifos: tuple[Path, Path]
) -> None:
    started, go = fifos
    path = write_flow(SLOW)
    listen = os.open(started, os.O_RDONLY | os.O_NONBLOCK)
    env = {**os.environ, "FLOW_STORE": str(store_dir), "STARTED_FIFO": str(started), "GO_FIFO": str(go)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert readable_within(listen, 60), "the second step never started"
        assert os.read(listen, 1) == b"x"
        during = _second_recorded_running(store_dir)
        assert during.status == "running"
        assert during["first"].status == "succeeded"
        assert during["first"].output == {"ready": True}
        assert during["second"].status == "running"
        with pytest.raises(FlowError, match="has no output"):
            _ = during["second"].output
        release = os.open(go, os.O_RDWR)
        os.write(release, b"go")
        assert proc.wait(timeout=60) == 0
        os.close(release)
    finally:
        os.close(listen)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = during.refresh()
    assert after.status == "succeeded"
    assert after["second"].output == "done"
