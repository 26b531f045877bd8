"""The Dask executor against a real scheduler and two real workers (`tests/dask_fixtures.py`).

Every test drives the real engine and store; the cluster runs in separate processes on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from dsl import load_flow  # noqa: E402
from dsl.errors import FlowError  # noqa: E402
from runner.artifacts import artifact_path  # noqa: E402
from runner.engine import Engine, RunHandle, RunRequest  # noqa: E402
from runner.events import Event, StepLog, StepRetrying  # noqa: E402
from runner.executors import dask_inputs  # noqa: E402
from runner.executors.base import Executor  # noqa: E402
from runner.executors.dask import DaskExecutor, dask_resources, scheduler_address  # noqa: E402
from runner.executors.local import LocalExecutor  # noqa: E402
from runner.params import resolve_params  # noqa: E402
from runner.records import RunRecord  # noqa: E402
from runner.store import Store  # noqa: E402
from tests.dask_fixtures import DaskCluster, dask_cluster_fixture  # noqa: E402, F401  (the fixture)

pytestmark = pytest.mark.dask

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "sample_flows"
SAMPLE_FLOWS = sorted(  # as find_flows: `_trainer.py` is no flow
    p for p in [*SAMPLE_DIR.glob("*.py"), *SAMPLE_DIR.glob("*.yaml")] if not p.name.startswith("_")
)
WAIT_S = 60.0


class Session:
    """A real engine on `executor` with a store in `store_dir`, recording every event."""

    def __init__(self, store_dir: Path, executor: Executor) -> None:
        self.store = Store(store_dir)
        self.events: list[Event] = []
        self.listeners: list[Callable[[Event], None]] = []
        self.engine = Engine(self.store, executor, [self._on_event])

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    def start(self, path: Path, params: dict[str, Any] | None = None) -> RunHandle:
        loaded = load_flow(path)
        return self.engine.start(RunRequest(loaded, resolve_params(loaded.graph.params, params or {})))

    def run(self, path: Path, params: dict[str, Any] | None = None) -> RunRecord:
        handle = self.start(path, params)
        assert handle.wait(WAIT_S) != "running", "the run did not finish"
        record = self.store.get_run(handle.id)
        assert record is not None
        return record


@contextmanager
def session(store_dir: Path, executor: Executor) -> Iterator[Session]:
    s = Session(store_dir, executor)
    try:
        yield s
    finally:
        s.engine.close()
        s.store.close()


def outcome(record: RunRecord) -> dict[str, tuple[str, str | None]]:
    return {s.name: (s.status, s.output_hash) for s in record.steps}


def step_of(record: RunRecord, name: str) -> Any:
    return next(s for s in record.steps if s.name == name)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # another process's exit: nothing to wait on but the pid
    return True


# ----- without a cluster --------------------------------------------------------------------------


def test_scheduler_address_accepts_dask_and_tcp_forms() -> None:
    assert scheduler_address("dask://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert scheduler_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert scheduler_address("10.0.0.5:8786") == "tcp://10.0.0.5:8786"


def test_resources_become_dask_numbers() -> None:
    converted = dask_resources({"GPU": 1, "memory": "4GB", "slots": 0.5})
    assert converted == {"GPU": 1.0, "memory": 4e9, "slots": 0.5}
    with pytest.raises(ValueError, match="resource 'memory'.*'lots'"):
        dask_resources({"memory": "lots"})
    with pytest.raises(ValueError, match="resource 'GPU' must be a number"):
        dask_resources({"GPU": True})


def test_unreachable_scheduler_is_a_flow_error_before_anything_runs() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(FlowError, match=rf"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:{port}"):
        DaskExecutor(f"dask://127.0.0.1:{port}")
    assert time.monotonic() - started < 15


# ----- on the cluster -----------------------------------------------------------------------------


@pytest.mark.parametrize("flow_file", SAMPLE_FLOWS, ids=lambda p: p.stem)
def test_sample_flow_matches_the_local_executor(
    flow_file: Path, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    with session(tmp_path / "local", LocalExecutor(2)) as local:
        expected = local.run(flow_file)
    with session(tmp_path / "dask", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(flow_file)
    assert record.status == expected.status == "succeeded"
    assert outcome(record) == outcome(expected)
    assert record.executor == "dask"
    fan_outs = {s.parent for s in record.steps if s.parent}
    executed = [s for s in record.steps if s.status == "succeeded" and s.name not in fan_outs]
    assert executed and {s.where for s in executed} <= set(dask_cluster.workers())


def test_logs_and_metrics_come_back(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(REPO / "sample_flows" / "ml_pipeline.py")
        lines = [line.line for line in dask.store.get_logs(record.id, "train")]
    assert record.status == "succeeded"
    assert any("loss" in line for line in lines), lines
    assert step_of(record, "evaluate").metrics["accuracy"] == pytest.approx(0.87, abs=0.01)


def test_logs_stream_while_the_step_runs(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """The step waits for a file the test creates only after it saw the step's first line live."""
    go = tmp_path / "go"
    path = write_flow(
        f"""
        import time
        from pathlib import Path
        from dsl import step

        @step(timeout=30)
        def chatty():
            print("waiting for go", flush=True)
            while not Path({str(go)!r}).exists():
                time.sleep(0.02)
            print("went \\udcff")  # a lone surrogate: msgpack cannot encode it as is
            return "done"
        """
    )
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        dask.listeners.append(
            lambda e: go.touch() if isinstance(e, StepLog) and e.line == "waiting for go" else None
        )
        record = dask.run(path)
        lines = [line.line for line in dask.store.get_logs(record.id, "chatty")]
    assert step_of(record, "chatty").status == "succeeded"
    assert lines == ["waiting for go", "went ?"]


def test_a_local_cache_is_reused_on_dask(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    flow_file = REPO / "sample_flows" / "model_chain.py"
    with session(store_dir, LocalExecutor(2)) as local:
        first = local.run(flow_file)
    with session(store_dir, DaskExecutor(dask_cluster.address)) as dask:
        second = dask.run(flow_file)
    assert first.status == second.status == "succeeded"
    assert {s.status for s in second.steps} == {"cached"}
    assert {s.name: s.output_hash for s in second.steps} == {s.name: s.output_hash for s in first.steps}


def test_large_outputs_and_inputs_cross_the_cluster(
    dask_cluster: DaskCluster,
    tmp_path: Path,
    write_flow: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3 MiB output lands in the runner's artifact store; its three readers share one scattered copy."""
    path = write_flow(
        """
        import hashlib, random
        from dsl import step

        @step
        def blob():
            return random.Random(1).randbytes(3 << 20)

        @step
        def digest(blob):
            return len(blob), hashlib.sha256(blob).hexdigest()

        @step
        def head(blob):
            return blob[:4]

        @step
        def tail(blob):
            return blob[-4:]
        """
    )
    reads: list[str] = []
    real_read = dask_inputs.read_file_checked
    monkeypatch.setattr(dask_inputs, "read_file_checked", lambda p, h: reads.append(h) or real_read(p, h))
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
        digest = pickle.loads(dask.store.read_artifact(step_of(record, "digest").output_hash))
        head = pickle.loads(dask.store.read_artifact(step_of(record, "head").output_hash))
    expected = random.Random(1).randbytes(3 << 20)
    blob_hash = step_of(record, "blob").output_hash
    assert record.status == "succeeded"
    assert artifact_path(tmp_path / "store" / "artifacts", blob_hash).exists()
    assert digest == (len(expected), hashlib.sha256(expected).hexdigest())
    assert head == expected[:4]
    assert reads == [blob_hash], "the large input was read (and scattered) more than once"


def test_a_failed_attempt_is_retried(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    marker = tmp_path / "attempted"
    path = write_flow(
        f"""
        from pathlib import Path
        from dsl import step

        @step(retries=1)
        def flaky():
            marker = Path({str(marker)!r})
            if not marker.exists():
                marker.touch()
                raise RuntimeError("first attempt fails")
            return "second attempt"
        """
    )
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
        retried = [e for e in dask.events if isinstance(e, StepRetrying)]
    flaky = step_of(record, "flaky")
    assert (record.status, flaky.status, flaky.attempts) == ("succeeded", "succeeded", 2)
    assert flaky.preview == "'second attempt'"
    assert [e.error for e in retried] == ["RuntimeError: first attempt fails"]


def test_a_step_that_exits_the_interpreter_fails_alone(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    path = write_flow(
        """
        import os
        from dsl import step

        @step
        def crash():
            os._exit(3)

        @step(trigger="all_done")
        def after(crash):
            return "the worker is still there"
        """
    )
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
    crash, after = step_of(record, "crash"), step_of(record, "after")
    assert (crash.status, after.status) == ("failed", "succeeded")
    assert "exited with code 3" in (crash.error or "")
    assert crash.where in dask_cluster.workers()


def test_a_timeout_kills_the_step(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    pid_file = tmp_path / "pid"
    path = write_flow(
        f"""
        import os, time
        from pathlib import Path
        from dsl import step

        @step(timeout=2)
        def sleepy():
            Path({str(pid_file)!r}).write_text(str(os.getpid()))
            time.sleep(60)
        """
    )
    started = time.monotonic()
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
    elapsed = time.monotonic() - started
    sleepy = step_of(record, "sleepy")
    assert (record.status, sleepy.status) == ("failed", "failed")
    assert "timed out after 2s" in (sleepy.error or "")
    assert elapsed < 20
    assert wait_until_gone(int(pid_file.read_text())), "the step's process survived its timeout"


def test_stop_cancels_the_running_step(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    pid_file = tmp_path / "pid"
    path = write_flow(
        f"""
        import os, time
        from pathlib import Path
        from dsl import step

        @step
        def long_step():
            Path({str(pid_file)!r}).write_text(str(os.getpid()))
            print("running", flush=True)
            time.sleep(60)
        """
    )
    running = threading.Event()
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        dask.listeners.append(
            lambda e: running.set() if isinstance(e, StepLog) and e.line == "running" else None
        )
        handle = dask.start(path)
        assert running.wait(WAIT_S), "the step never started"
        dask.engine.cancel(handle.id)
        assert handle.wait(WAIT_S) == "cancelled"
        record = dask.store.get_run(handle.id)
    assert record is not None and step_of(record, "long_step").status == "cancelled"
    assert wait_until_gone(int(pid_file.read_text())), "the stopped step's process survived"


def test_steps_with_resources_land_on_a_worker_that_offers_them(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    dask_cluster.wait_for_workers(2)
    path = write_flow(
        """
        from dsl import step

        @step
        def items():
            return list(range(4))

        @step(foreach="items", resources={"GPU": 1, "memory": "4GB"})
        def on_gpu(items):
            return items * 2
        """
    )
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
    instances = [s for s in record.steps if s.parent == "on_gpu"]
    assert record.status == "succeeded" and len(instances) == 4
    assert {s.where for s in instances} == {dask_cluster.gpu_worker()}


def test_a_worker_that_dies_mid_step_fails_the_attempt_with_the_reason(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """The step kills its own Dask worker (its process's parent); the retry runs on a live worker."""
    dask_cluster.wait_for_workers(2)
    marker = tmp_path / "killed"
    path = write_flow(
        f"""
        import os, signal, time
        from pathlib import Path
        from dsl import step

        @step(retries=1)
        def fragile():
            marker = Path({str(marker)!r})
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getppid(), signal.SIGKILL)
                time.sleep(60)
            return "survived"
        """
    )
    try:
        with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
            record = dask.run(path)
            retried = [e for e in dask.events if isinstance(e, StepRetrying)]
        fragile = step_of(record, "fragile")
        assert (record.status, fragile.status, fragile.attempts) == ("succeeded", "succeeded", 2)
        assert len(retried) == 1
        assert retried[0].error.startswith("the Dask worker running this step died"), retried[0].error
        assert wait_until_gone(int(marker.read_text())), "the step outlived its Dask worker"
    finally:
        dask_cluster.wait_for_workers(2)


def test_hostile_predicates_run_on_the_cluster_and_fail_their_step_alone(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """A `when=` predicate calling sys.exit, one that hangs past the step's timeout, and a foreach
    over a value whose unpickling calls sys.exit: each fails its step; the run ends; a sibling runs."""
    dask_cluster.wait_for_workers(2)
    path = write_flow(
        """
        import sys, time
        from dsl import step

        class ExitOnLoad:
            def __reduce__(self):
                return (sys.exit, (0,))

        @step
        def up():
            return ExitOnLoad()

        @step
        def one():
            return 1

        @step(when=lambda one: sys.exit(3))
        def exits(one):
            return 1

        @step(timeout=2, when=lambda one: time.sleep(60) or True)
        def hangs(one):
            return 1

        @step(foreach="up")
        def iterates(up):
            return up

        @step
        def sibling():
            return "fine"
        """
    )
    started = time.monotonic()
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
    assert time.monotonic() - started < 45
    assert record.status == "failed"
    assert step_of(record, "sibling").status == "succeeded"
    assert step_of(record, "exits").error == "the when= predicate failed: it called sys.exit(3)"
    assert "the when= predicate failed: " in (step_of(record, "hangs").error or "")
    assert "timed out after 2s" in (step_of(record, "hangs").error or "")
    assert step_of(record, "iterates").error == "foreach 'up' failed: it called sys.exit(0)"
