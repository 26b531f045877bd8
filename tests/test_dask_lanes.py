"""Lanes: how the Dask executor keeps a step's round trip short (`runner.executors.dask`).

Against the real two-worker cluster of `tests/dask_fixtures.py`, one thread per worker.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from runner.executors import dask as dask_module  # noqa: E402
from runner.executors.base import Task  # noqa: E402
from runner.executors.dask import DaskExecutor  # noqa: E402
from tests.dask_fixtures import DaskCluster, dask_cluster_fixture  # noqa: E402, F401  (the fixture)
from tests.test_dask import session, step_of  # noqa: E402

pytestmark = pytest.mark.dask


def _count_submits(executor: DaskExecutor) -> list[str]:
    """Record the key of every future the executor submits from now on."""
    keys: list[str] = []
    client: Any = executor._client
    real = client.submit

    def submit(*args: Any, **kwargs: Any) -> Any:
        future = real(*args, **kwargs)
        keys.append(future.key)
        return future

    client.submit = submit
    return keys


CHAIN = """
from dsl import step

@step
def s0():
    return 0

@step
def s1(s0):
    print("one")
    return s0 + 1

@step
def s2(s1):
    return bytes(200_000), s1 + 1  # a result too large for an event, not for the results queue

@step
def s3(s2):
    print("three")
    return s2[1] + 1
"""
"""Four steps on one lane: logs, and a result of 200 kB."""


def _run_chain(dask: Any, path: Path) -> tuple[Any, dict[str, list[str]], Any]:
    """Run `CHAIN`: its record, the log lines of `s1` and `s3`, and `s3`'s output."""
    record = dask.run(path)
    logs = {name: [line.line for line in dask.store.get_logs(record.id, name)] for name in ("s1", "s3")}
    last = pickle.loads(dask.store.read_artifact(step_of(record, "s3").output_hash))
    return record, logs, last


def test_a_chain_runs_on_one_lane(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """Step after step goes to the lane that ran the last one: one future for the whole chain, logs
    and a result of 200 kB included."""
    executor = DaskExecutor(dask_cluster.address)
    keys = _count_submits(executor)
    with session(tmp_path / "store", executor) as dask:
        record, logs, last = _run_chain(dask, write_flow(CHAIN))
    assert record.status == "succeeded" and last == 3
    assert logs == {"s1": ["one"], "s3": ["three"]}
    assert len(keys) == 1 and keys[0].startswith("flow-lane-"), keys
    assert {step_of(record, f"s{i}").where for i in range(4)} <= set(dask_cluster.workers())


def test_a_lane_is_sent_each_steps_code_once(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """The instances of a foreach share their code: only the first task on a lane carries it."""
    path = write_flow(
        """
        from dsl import step

        @step
        def items():
            return list(range(6))

        @step(foreach="items")
        def double(items):
            return items * 2

        @step
        def total(double):
            return sum(double)
        """
    )
    executor = DaskExecutor(dask_cluster.address)
    sent: list[tuple[str, str, Task]] = []
    real_put = executor._put

    async def put(lane: Any, inbox: str, task_id: str, payload: bytes) -> None:
        sent.append((inbox, task_id, pickle.loads(payload)))
        await real_put(lane, inbox, task_id, payload)

    executor._put = put  # type: ignore[method-assign]
    with session(tmp_path / "store", executor) as dask:
        record = dask.run(path)
        total = pickle.loads(dask.store.read_artifact(step_of(record, "total").output_hash))
    assert record.status == "succeeded" and total == 30
    seen: set[tuple[str, str]] = set()
    for inbox, _, task in sent:
        first = (inbox, task.code_key) not in seen
        seen.add((inbox, task.code_key))
        assert bool(task.code) == first, (inbox, task.step)
    assert len(sent) > len(seen), "no task went without its code"


def test_an_idle_lane_gives_its_thread_back(
    dask_cluster: DaskCluster,
    tmp_path: Path,
    write_flow: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dask_module, "LANE_IDLE_S", 0.2)
    dask_cluster.wait_for_workers(2)
    path = write_flow(
        """
        from dsl import step

        @step
        def one():
            return 1
        """
    )
    from distributed import Client

    def processing(dask_scheduler: Any = None) -> int:
        return sum(len(ws.processing) for ws in dask_scheduler.workers.values())

    with (
        Client(dask_cluster.address, timeout=10, set_as_default=False) as client,
        session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask,
    ):
        record = dask.run(path)
        assert record.status == "succeeded"
        deadline = time.monotonic() + 10
        while client.run_on_scheduler(processing) and time.monotonic() < deadline:
            time.sleep(0.1)  # the scheduler's state, in another process: nothing to wait on
        assert client.run_on_scheduler(processing) == 0, "the idle lane still holds a worker thread"


def test_idle_lanes_make_way_for_a_step_with_its_own_future(
    dask_cluster: DaskCluster,
    tmp_path: Path,
    write_flow: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both threads are held by idle lanes when a step with a scattered input is submitted: they end
    at once instead of after `LANE_IDLE_S`, so Dask can start it."""
    monkeypatch.setattr(dask_module, "LANE_IDLE_S", 60.0)
    dask_cluster.wait_for_workers(2)
    path = write_flow(
        """
        import time
        from dsl import step

        @step
        def big():
            return bytes(2 << 20)

        @step
        def p():
            time.sleep(0.3)
            return "p"

        @step
        def q():
            time.sleep(0.3)
            return "q"

        @step
        def size(big):
            return len(big)

        big >> [p, q]
        [p, q] >> size
        """
    )
    started = time.monotonic()
    with session(tmp_path / "store", DaskExecutor(dask_cluster.address)) as dask:
        record = dask.run(path)
        size = pickle.loads(dask.store.read_artifact(step_of(record, "size").output_hash))
    assert record.status == "succeeded" and size == 2 << 20
    assert time.monotonic() - started < 30


def _count_on_scheduler(executor: DaskExecutor) -> Callable[[], dict[str, int]]:
    """Count, on the scheduler, the answers of this executor's lanes that came with the exchange
    (`dask_worker.EXCHANGE_OP`) and the plain puts on its results queue; return the reader (which also
    puts the scheduler's handlers back)."""
    results = executor._results.name

    def wrap(dask_scheduler: Any = None) -> None:
        counts = dask_scheduler.flow_test_counts = {"exchanged": 0, "put": 0}
        exchange, put = dask_scheduler.handlers["flow_lane_exchange"], dask_scheduler.handlers["queue_put"]
        dask_scheduler.flow_test_handlers = exchange, put

        async def counted_exchange(**kwargs: Any) -> Any:
            counts["exchanged"] += kwargs.get("results") == results and kwargs.get("answer") is not None
            return await exchange(**kwargs)

        async def counted_put(**kwargs: Any) -> Any:
            counts["put"] += kwargs.get("name") == results
            return await put(**kwargs)

        dask_scheduler.handlers["flow_lane_exchange"] = counted_exchange
        dask_scheduler.handlers["queue_put"] = counted_put

    def read(dask_scheduler: Any = None) -> dict[str, int]:
        exchange, put = dask_scheduler.flow_test_handlers
        dask_scheduler.handlers["flow_lane_exchange"] = exchange
        dask_scheduler.handlers["queue_put"] = put
        return dict(dask_scheduler.flow_test_counts)

    executor._client.run_on_scheduler(wrap)
    return lambda: executor._client.run_on_scheduler(read)


def test_a_lane_answers_and_waits_for_its_next_task_in_one_request(
    dask_cluster: DaskCluster, tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """Each step's answer goes to the scheduler with the lane's wait for its next task (one request,
    `dask_worker.EXCHANGE_OP`), never as a put of its own: a step on a lane was two requests."""
    executor = DaskExecutor(dask_cluster.address)
    assert executor._merged
    counts = _count_on_scheduler(executor)
    with session(tmp_path / "store", executor) as dask:
        record, logs, last = _run_chain(dask, write_flow(CHAIN))
        seen = counts()
    assert record.status == "succeeded" and last == 3
    assert logs == {"s1": ["one"], "s3": ["three"]}
    assert seen == {"exchanged": 4, "put": 0}


def test_lanes_answer_in_two_requests_where_the_scheduler_runs_no_function(
    tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """A scheduler that refuses to run functions (`blocked-handlers`) cannot be given the exchange:
    the lanes put their answers and wait for tasks as two requests, and the flow runs the same."""
    import dask

    with dask.config.set({"distributed.scheduler.blocked-handlers": ["run_function"]}):
        executor = DaskExecutor(None, workers=1)
    assert not executor._merged
    with session(tmp_path / "store", executor) as run:
        record, logs, last = _run_chain(run, write_flow(CHAIN))
    assert record.status == "succeeded" and last == 3
    assert logs == {"s1": ["one"], "s3": ["three"]}
    assert {step_of(record, f"s{i}").status for i in range(4)} == {"succeeded"}
